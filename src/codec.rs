//! Keys and expiry: how the adapter's arguments become Redis arguments.

use std::time::{SystemTime, UNIX_EPOCH};

/// What `set` does with an entry's expiry timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry: a plain `SET`.
    Never,
    /// `SET ... PX ms`.
    In(u64),
    /// Already expired: nothing is written.
    Passed,
}

impl Expiry {
    /// The expiry of an entry whose timestamp (ms since the epoch) is `expire_at`, at `now_ms`.
    ///
    /// alova stores `[data, expireTimestamp?, tag?]`; a timestamp that is not a finite number
    /// means no expiry. A fraction of a millisecond left rounds up, so that an entry still valid
    /// now is written.
    pub fn at(expire_at: Option<f64>, now_ms: f64) -> Self {
        match expire_at {
            Some(ts) if ts.is_finite() => {
                let left = (ts - now_ms).ceil();
                if left <= 0.0 {
                    Expiry::Passed
                } else {
                    Expiry::In(left.min(u64::MAX as f64) as u64)
                }
            }
            _ => Expiry::Never,
        }
    }

    /// The expiry of `expire_at` now.
    pub fn from_timestamp(expire_at: Option<f64>) -> Self {
        Expiry::at(expire_at, now_ms())
    }
}

/// Milliseconds since the epoch, as `Date.now()`.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

/// `prefix + key` as bytes.
pub fn prefixed(prefix: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + key.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// A `SCAN MATCH` pattern that matches exactly the keys starting with `prefix`.
pub fn prefix_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_edges() {
        assert_eq!(Expiry::at(None, 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(f64::NAN), 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(f64::INFINITY), 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(1000.0), 1000.0), Expiry::Passed);
        assert_eq!(Expiry::at(Some(999.0), 1000.0), Expiry::Passed);
        assert_eq!(Expiry::at(Some(1000.4), 1000.0), Expiry::In(1));
        assert_eq!(Expiry::at(Some(61_000.0), 1000.0), Expiry::In(60_000));
    }

    #[test]
    fn keys_and_patterns() {
        assert_eq!(prefixed("alova:", "k"), b"alova:k");
        assert_eq!(prefixed("", "ключ"), "ключ".as_bytes());
        assert_eq!(prefix_pattern("alova:"), "alova:*");
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
