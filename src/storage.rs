//! The cache operations alova calls (`set`, `get`, `remove`, `clear`), over one connection.

use redis::{Cmd, Value};

use std::collections::BTreeMap;

use crate::codec::{key_parts, key_slot, prefix_pattern, Expiry, TAG_LEN};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::resp;

/// How many keys one `SCAN` step asks for, and so one `UNLINK` removes at most.
const SCAN_COUNT: usize = 1000;

/// alova's cache storage in Redis: every key is `key_prefix + key`, every value a JSON string.
#[derive(Clone)]
pub struct Storage {
    conn: Connection,
    key_prefix: String,
    spread_keys: bool,
}

impl Storage {
    /// A storage over `conn` with `key_prefix`; `spread_keys` adds a hash tag of each key (see
    /// [`key_parts`]).
    pub fn new(conn: Connection, key_prefix: String, spread_keys: bool) -> Self {
        Storage {
            conn,
            key_prefix,
            spread_keys,
        }
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The command storing the JSON text `json` under `key`, expiring at `expire_at` (ms since
    /// the epoch) when given, packed as RESP; `None` for an entry already expired (nothing is
    /// written). Key and text are the UTF-8 bytes of JavaScript strings.
    pub fn set_command(&self, key: &[u8], json: &[u8], expire_at: Option<f64>) -> Option<Vec<u8>> {
        let mut tag = [0u8; TAG_LEN];
        let key = self.key_parts(key, &mut tag);
        match Expiry::from_timestamp(expire_at) {
            Expiry::Passed => None,
            Expiry::In(ms) => {
                let mut digits = [0u8; 20];
                let ms = resp::decimal(ms, &mut digits);
                Some(resp::encode_parts(&[
                    &[b"SET"],
                    &key,
                    &[json],
                    &[b"PX"],
                    &[ms],
                ]))
            }
            Expiry::Never => Some(resp::encode_parts(&[&[b"SET"], &key, &[json]])),
        }
    }

    /// The command reading `key`, packed as RESP; its reply goes through [`Storage::get_reply`].
    pub fn get_command(&self, key: &[u8]) -> Vec<u8> {
        let mut tag = [0u8; TAG_LEN];
        resp::encode_parts(&[&[b"GET"], &self.key_parts(key, &mut tag)])
    }

    /// The command deleting `key`, packed as RESP.
    pub fn remove_command(&self, key: &[u8]) -> Vec<u8> {
        let mut tag = [0u8; TAG_LEN];
        resp::encode_parts(&[&[b"DEL"], &self.key_parts(key, &mut tag)])
    }

    /// The Redis key of `key` as the parts it is made of (see [`key_parts`]).
    fn key_parts<'a>(&'a self, key: &'a [u8], tag: &'a mut [u8; TAG_LEN]) -> [&'a [u8]; 3] {
        key_parts(&self.key_prefix, key, self.spread_keys, tag)
    }

    /// The JSON text in a `GET` reply, or `None`.
    ///
    /// # Errors
    /// `ERR_PROTOCOL` when the key holds a non-string value.
    pub fn get_reply(reply: Value) -> Result<Option<Vec<u8>>> {
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::SimpleString(s) => Ok(Some(s.into_bytes())),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "GET returned a non-string reply",
            )),
        }
    }

    /// Stores the JSON text `json` under `key`, expiring at `expire_at` (ms since the epoch)
    /// when given; an entry already expired is not written.
    ///
    /// # Errors
    /// The connection's errors.
    pub async fn set(&self, key: &str, json: &str, expire_at: Option<f64>) -> Result<()> {
        match self.set_command(key.as_bytes(), json.as_bytes(), expire_at) {
            Some(cmd) => self.conn.send_packed(&cmd).await.map(drop),
            None => Ok(()),
        }
    }

    /// The JSON text stored under `key`, or `None`.
    ///
    /// # Errors
    /// The connection's errors; `ERR_PROTOCOL` when the key holds a non-string value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Self::get_reply(
            self.conn
                .send_packed(&self.get_command(key.as_bytes()))
                .await?,
        )
    }

    /// Deletes `key`.
    ///
    /// # Errors
    /// The connection's errors.
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.conn
            .send_packed(&self.remove_command(key.as_bytes()))
            .await
            .map(drop)
    }

    /// Removes every key under the prefix, and nothing else, by `SCAN` + `UNLINK` on every
    /// master; returns how many keys were removed.
    ///
    /// # Errors
    /// `ERR_CLEAR_REFUSED` when the prefix is empty (that would empty the whole database); the
    /// connection's errors.
    pub async fn clear(&self) -> Result<u64> {
        if self.key_prefix.is_empty() {
            return Err(Error::new(
                ErrorKind::ClearRefused,
                "clear() refused: keyPrefix is empty, so it would remove every key of the database",
            ));
        }
        let pattern = prefix_pattern(&self.key_prefix);
        let mut removed = 0u64;
        for (host, port) in self.conn.masters().await? {
            let mut cursor = 0u64;
            loop {
                let mut scan = Cmd::new();
                scan.arg("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let (next, keys) = parse_scan(self.conn.send_to(&host, port, &scan).await?)?;
                removed += self.unlink(keys).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Unlinks `keys`: at once on one server, one slot at a time on a cluster (a multi-key
    /// command must stay in one slot there).
    async fn unlink(&self, keys: Vec<Vec<u8>>) -> Result<u64> {
        let batches: Vec<Vec<Vec<u8>>> = if self.conn.is_cluster() {
            let mut by_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
            for key in keys {
                by_slot.entry(key_slot(&key)).or_default().push(key);
            }
            by_slot.into_values().collect()
        } else {
            vec![keys]
        };
        let mut removed = 0u64;
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let mut unlink = Cmd::new();
            unlink.arg("UNLINK").arg(batch);
            if let Value::Int(n) = self.conn.send(&unlink).await? {
                removed += n.max(0) as u64;
            }
        }
        Ok(removed)
    }
}

/// Splits a `SCAN` reply into the next cursor and the keys.
fn parse_scan(reply: Value) -> Result<(u64, Vec<Vec<u8>>)> {
    let bad = || Error::new(ErrorKind::Protocol, "SCAN returned an unexpected reply");
    let Value::Array(mut parts) = reply else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys
            .into_iter()
            .map(|k| match k {
                Value::BulkString(b) => Ok(b),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(bad()),
    };
    let cursor = match parts.pop() {
        Some(Value::BulkString(b)) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok((cursor, keys))
}
