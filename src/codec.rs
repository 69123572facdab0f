//! Keys and expiry: how the adapter's arguments become Redis arguments.

use std::time::{SystemTime, UNIX_EPOCH};

/// What `set` does with an entry's expiry timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry: a plain `SET`.
    Never,
    /// `SET ... PX ms`.
    In(u64),
    /// Already expired (a positive timestamp not after now): nothing is written.
    Passed,
}

impl Expiry {
    /// The expiry of an entry whose timestamp (ms since the epoch) is `expire_at`, at `now_ms`.
    ///
    /// alova stores `[data, expireTimestamp?, tag?]`; a timestamp that is not a finite number
    /// means no expiry, and so does one of 0 or less: alova's rate limiter (`alova/server`,
    /// `createRateLimiter` with `duration: 0`, and `block(key, 0)`) stores `[points, -1]` for
    /// "never expires", as alova's own reads take it. A positive timestamp is an instant: one
    /// not after now has passed. A fraction of a millisecond left rounds up, so that an entry
    /// still valid now is written.
    pub fn at(expire_at: Option<f64>, now_ms: f64) -> Self {
        match expire_at {
            Some(ts) if ts.is_finite() && ts > 0.0 => {
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

/// The Redis key of `key` as the parts it is made of: `prefix + key`; with `spread`,
/// `prefix + {tag} + key`, where the tag is a hash of the key (written into `tag`), so that
/// Redis Cluster hashes every key by a tag of its own (alova's keys hold `{...}` parameter
/// objects that Redis would otherwise take as the hash tag). Parts, not one buffer, so that a
/// command can be encoded with no copy of the key of its own.
pub fn key_parts<'a>(
    prefix: &'a str,
    key: &'a [u8],
    spread: bool,
    tag: &'a mut [u8; TAG_LEN],
) -> [&'a [u8]; 3] {
    let tag: &[u8] = if spread { spread_tag(key, tag) } else { &[] };
    [prefix.as_bytes(), tag, key]
}

/// The length of a spread tag: `{` 8 hex digits `}`.
pub const TAG_LEN: usize = 10;

/// The spread tag of `key` (see [`key_parts`]), written into `buf`.
fn spread_tag<'a>(key: &[u8], buf: &'a mut [u8; TAG_LEN]) -> &'a [u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(key);
    buf[0] = b'{';
    for (i, slot) in buf[1..9].iter_mut().enumerate() {
        *slot = HEX[((hash >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[9] = b'}';
    buf
}

/// 32-bit FNV-1a: a small, stable hash for the spread tag.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
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

    fn prefixed(prefix: &str, key: &str, spread: bool) -> Vec<u8> {
        key_parts(prefix, key.as_bytes(), spread, &mut [0; TAG_LEN]).concat()
    }

    #[test]
    fn expiry_edges() {
        assert_eq!(Expiry::at(None, 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(f64::NAN), 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(f64::INFINITY), 1000.0), Expiry::Never);
        assert_eq!(Expiry::at(Some(1000.0), 1000.0), Expiry::Passed);
        assert_eq!(Expiry::at(Some(999.0), 1000.0), Expiry::Passed);
        assert_eq!(Expiry::at(Some(1000.4), 1000.0), Expiry::In(1));
        assert_eq!(Expiry::at(Some(61_000.0), 1000.0), Expiry::In(60_000));
        assert_eq!(Expiry::at(Some(f64::NEG_INFINITY), 1000.0), Expiry::Never);
    }

    #[test]
    fn non_positive_timestamp_never_expires() {
        // alova's rate limiter writes `[points, -1]` for a lifetime quota or a permanent block.
        let now = 1_700_000_000_000.0;
        assert_eq!(Expiry::at(Some(-1.0), now), Expiry::Never);
        assert_eq!(Expiry::at(Some(0.0), now), Expiry::Never);
        assert_eq!(Expiry::at(Some(-0.0), now), Expiry::Never);
        assert_eq!(Expiry::at(Some(-0.5), now), Expiry::Never);
        assert_eq!(Expiry::at(Some(-1e300), now), Expiry::Never);
        assert_eq!(Expiry::at(Some(-1.0), 0.0), Expiry::Never);
    }

    #[test]
    fn positive_timestamp_in_the_past_writes_nothing() {
        let now = 1_700_000_000_000.0;
        assert_eq!(Expiry::at(Some(now - 1.0), now), Expiry::Passed);
        assert_eq!(Expiry::at(Some(now), now), Expiry::Passed);
        // Positive but long gone (1970), and the smallest positive numbers.
        assert_eq!(Expiry::at(Some(5.0), now), Expiry::Passed);
        assert_eq!(Expiry::at(Some(0.5), now), Expiry::Passed);
        assert_eq!(Expiry::at(Some(f64::MIN_POSITIVE), now), Expiry::Passed);
        // Still valid by a fraction of a millisecond: written, with 1 ms.
        assert_eq!(Expiry::at(Some(now + 0.25), now), Expiry::In(1));
        // Far in the future: clamped, never wraps.
        assert_eq!(Expiry::at(Some(f64::MAX), now), Expiry::In(u64::MAX));
    }

    #[test]
    fn keys_and_patterns() {
        assert_eq!(prefixed("alova:", "k", false), b"alova:k");
        assert_eq!(prefixed("", "ключ", false), "ключ".as_bytes());
        let spread = prefixed("alova:", r#"$a.x["GET","/u",{"page":1},null,{}]"#, true);
        assert!(
            spread.starts_with(b"alova:{") && spread[15] == b'}',
            "{spread:?}"
        );
        let key = r#"$a.x["GET","/u",{"page":1},null,{}]"#;
        let tag = format!("{{{:08x}}}", fnv1a(key.as_bytes()));
        assert_eq!(spread, format!("alova:{tag}{key}").into_bytes());
        assert_ne!(
            key_slot(&spread),
            key_slot(&prefixed(
                "alova:",
                r#"$a.x["GET","/v",{"page":1},null,{}]"#,
                true
            )),
            "keys that share a parameter object get their own slots"
        );
        assert_eq!(prefix_pattern("alova:"), "alova:*");
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// part between the first `{` and the next `}`, when that is not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// CRC16-CCITT (XMODEM), as Redis Cluster hashes keys.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            8363,
            "an empty tag hashes the whole key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(
            key_slot(br#"alova:$a.x["GET","/users",{"page":1},null,{}]"#),
            5378
        );
    }
}
