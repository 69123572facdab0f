//! The Lua scripts of the lock, with the semantics of @sesamecare-oss/redlock key for key.
//!
//! Each script first selects the lock database (`ARGV[1]`; inside a script the SELECT does not
//! change the calling connection's database), then works on every key at once, so a lock on
//! several resources is taken, extended and released all-or-nothing on each node. `ARGV[2]` is
//! the lock's value (32 lowercase hex characters), `ARGV[3]` the time to live in milliseconds.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::{Cmd, Value};

use crate::codec::key_slot;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

/// Sets every key to the value with `PX ttl` when none of them exists; returns how many were set
/// (0 when any key exists).
const ACQUIRE: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
for _, key in ipairs(KEYS) do
  if redis.call("EXISTS", key) == 1 then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call("SET", key, ARGV[2], "PX", ARGV[3])
end
return #KEYS
"#;

/// Resets the time to live of every key when all of them still hold the value; returns how many
/// were extended (0 when any key holds another value or is gone).
const EXTEND: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
for _, key in ipairs(KEYS) do
  if redis.call("GET", key) ~= ARGV[2] then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call("SET", key, ARGV[2], "PX", ARGV[3])
end
return #KEYS
"#;

/// Deletes the keys that hold the value, and only those; returns how many were deleted.
const RELEASE: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
local count = 0
for _, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[2] then
    redis.pcall("DEL", key)
    count = count + 1
  end
end
return count
"#;

/// Counts the keys that hold the value, changing nothing: what a lock handed over inside the
/// process (see `Locker::hand_over`) is checked with, since no release tells about it.
const CHECK: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
local count = 0
for _, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[2] then
    count = count + 1
  end
end
return count
"#;

/// What a script does, which decides how it runs over several cluster slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Acquire,
    Extend,
    Release,
    Check,
}

/// A script and its SHA1, sent by `EVALSHA` with an `EVAL` fallback, or always by `EVAL`.
pub struct Script {
    kind: Kind,
    code: &'static str,
    hash: String,
    /// Sent by `EVALSHA` first. A server that has not cached the script (first use, after a
    /// restart or a `SCRIPT FLUSH`) answers `NOSCRIPT` and it is sent again by `EVAL`: two
    /// commands, so commands sent meanwhile on the connection run before it. The check cannot
    /// afford that (see [`CHECK_SCRIPT`]).
    by_hash: bool,
}

impl Script {
    fn new(kind: Kind, code: &'static str) -> Self {
        Script {
            kind,
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
            by_hash: kind != Kind::Check,
        }
    }

    /// Runs the script for `keys` on `conn` (never waiting for a connection that is down) and
    /// returns its integer result. On a cluster, keys of different slots cannot go in one
    /// script: they run one slot at a time, in slot order (the same order in every process),
    /// and stay all-or-nothing: an acquire that finds one slot taken gives back the slots it
    /// got and returns 0; an extend returns 0 when any slot does; a release or a check adds up.
    ///
    /// # Errors
    /// The connection's errors; `ERR_PROTOCOL` for a non-integer result.
    pub async fn run(
        &self,
        conn: &Connection,
        keys: &[String],
        db: i64,
        value: &str,
        ttl_ms: u64,
    ) -> Result<i64> {
        if !conn.is_cluster() {
            return self.run_one(conn, keys, db, value, ttl_ms).await;
        }
        let mut by_slot: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for key in keys {
            by_slot
                .entry(key_slot(key.as_bytes()))
                .or_default()
                .push(key.clone());
        }
        if by_slot.len() == 1 {
            return self.run_one(conn, keys, db, value, ttl_ms).await;
        }
        let mut total = 0i64;
        let mut first_error = None;
        let mut acquired: Vec<&Vec<String>> = Vec::new();
        for group in by_slot.values() {
            let outcome = self.run_one(conn, group, db, value, ttl_ms).await;
            match (self.kind, outcome) {
                (Kind::Acquire, Ok(n)) if n > 0 => acquired.push(group),
                (Kind::Acquire, failed) => {
                    for got in acquired {
                        let _ = RELEASE_SCRIPT.run_one(conn, got, db, value, ttl_ms).await;
                    }
                    return failed.map(|_| 0);
                }
                (Kind::Extend, Ok(0)) => return Ok(0),
                (Kind::Extend, Err(e)) => return Err(e),
                (_, Ok(n)) => total += n,
                // A release goes on with the other slots, then reports the first failure.
                (Kind::Release | Kind::Check, Err(e)) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if self.kind == Kind::Acquire => Ok(keys.len() as i64),
            None => Ok(total),
        }
    }

    fn command(&self, by_hash: bool, keys: &[String], args: &[&[u8]]) -> Cmd {
        let mut cmd = Cmd::new();
        if by_hash {
            cmd.arg("EVALSHA").arg(&self.hash);
        } else {
            cmd.arg("EVAL").arg(self.code);
        }
        cmd.arg(keys.len()).arg(keys);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// Runs the script once, for keys of one slot.
    async fn run_one(
        &self,
        conn: &Connection,
        keys: &[String],
        db: i64,
        value: &str,
        ttl_ms: u64,
    ) -> Result<i64> {
        let db = db.to_string();
        let ttl = ttl_ms.to_string();
        let args: [&[u8]; 3] = [db.as_bytes(), value.as_bytes(), ttl.as_bytes()];
        let reply = match conn
            .send_with(&self.command(self.by_hash, keys, &args), false)
            .await
        {
            Err(e) if self.by_hash && e.reply_code() == Some("NOSCRIPT") => {
                conn.send_with(&self.command(false, keys, &args), false)
                    .await?
            }
            other => other?,
        };
        match reply {
            Value::Int(n) => Ok(n),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "a lock script returned a non-integer",
            )),
        }
    }
}

/// The acquire script.
pub static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(Kind::Acquire, ACQUIRE));
/// The extend script.
pub static EXTEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(Kind::Extend, EXTEND));
/// The release script.
pub static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(Kind::Release, RELEASE));
/// The check script (read only). Always sent by `EVAL` (the script is short), as one command:
/// the lock's hand-over relies on the check reaching the server before the next holder's
/// release of the same key, which is sent after it on the same connection.
pub static CHECK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(Kind::Check, CHECK));
