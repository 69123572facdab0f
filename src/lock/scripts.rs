//! The Lua scripts of the lock, with the semantics of @sesamecare-oss/redlock key for key.
//!
//! Each script first selects the lock database (`ARGV[1]`; inside a script the SELECT does not
//! change the calling connection's database), then works on every key at once, so a lock on
//! several resources is taken, extended and released all-or-nothing on each node. `ARGV[2]` is
//! the lock's value (32 lowercase hex characters), `ARGV[3]` the time to live in milliseconds.

use std::collections::BTreeMap;

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

/// A release that also tells the waiters of every other process that the keys are free: the
/// release of a lock with several voters (which has no line, see `waiting`), published on
/// `alova-lock:<key>` with an empty message. Returns how many keys were deleted.
const RELEASE_NOTIFY: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
local count = 0
for _, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[2] then
    redis.pcall("DEL", key)
    redis.pcall("PUBLISH", "alova-lock:" .. key, "")
    count = count + 1
  end
end
return count
"#;

/// The fair acquire of one resource (see `waiting`): `KEYS` are the lock key, its line of
/// waiters (a list of their values, in arrival order) and their deadlines (a hash, value to
/// the server's time in ms by which the waiter must ask again); `ARGV[4]` is how long a waiter
/// keeps its place without asking again. Waiters past their deadline leave the head of the
/// line first. The lock is taken when its key is free and the line is empty or starts with
/// this waiter (who then leaves it); otherwise the waiter joins the end of the line, or keeps
/// its place, and 0 is returned. Both keys expire on their own once nobody asks.
const FAIR_ACQUIRE: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
-- TIME before writes needs effect replication on Redis 3.2 to 4 (the default from 5 on).
pcall(redis.replicate_commands)
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local value = ARGV[2]
while true do
  local head = redis.call("LINDEX", KEYS[2], 0)
  if not head then break end
  local deadline = tonumber(redis.call("HGET", KEYS[3], head) or "0")
  if deadline > now then break end
  redis.call("LPOP", KEYS[2])
  redis.call("HDEL", KEYS[3], head)
end
local head = redis.call("LINDEX", KEYS[2], 0)
if redis.call("EXISTS", KEYS[1]) == 0 and ((not head) or head == value) then
  redis.call("SET", KEYS[1], value, "PX", ARGV[3])
  if head == value then
    redis.call("LPOP", KEYS[2])
    redis.call("HDEL", KEYS[3], value)
  end
  return 1
end
local keep = tonumber(ARGV[4])
if redis.call("HSET", KEYS[3], value, now + keep) == 1 then
  redis.call("RPUSH", KEYS[2], value)
end
redis.call("PEXPIRE", KEYS[2], keep * 2)
redis.call("PEXPIRE", KEYS[3], keep * 2)
return 0
"#;

/// The release of a fairly taken lock: deletes the key when it holds the value, and then tells
/// the first waiter in line, when there is one, on the channel `ARGV[4]` (the message is its
/// value). Returns 1 when the key was deleted. The publish is a `pcall`: a user the server's
/// ACL does not let publish (Redis 7 gives new users no channels) still releases, and its
/// waiters poll.
const FAIR_RELEASE: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
if redis.call("GET", KEYS[1]) ~= ARGV[2] then
  return 0
end
redis.pcall("DEL", KEYS[1])
local head = redis.call("LINDEX", KEYS[2], 0)
if head then
  redis.pcall("PUBLISH", ARGV[4], head)
end
return 1
"#;

/// A waiter that gives up leaves the line (`KEYS[2]`, `KEYS[3]`), so nobody waits for it.
const LEAVE: &str = r#"
redis.pcall("SELECT", tonumber(ARGV[1]))
redis.call("LREM", KEYS[2], 0, ARGV[2])
redis.call("HDEL", KEYS[3], ARGV[2])
return 1
"#;

/// What a script does, which decides how it runs over several cluster slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Acquire,
    Extend,
    Release,
    /// A script on one resource's lock key and line of waiters (always one slot).
    Line,
}

/// A script, always sent whole by `EVAL`: one command, so that it keeps its place in the
/// connection's call order (an `EVALSHA` answered `NOSCRIPT` after a restart or a `SCRIPT
/// FLUSH` would be sent again behind commands issued after it, and a lock's release could land
/// behind the next acquire). The server caches the compiled script by its hash anyway.
pub struct Script {
    kind: Kind,
    code: &'static str,
}

impl Script {
    const fn new(kind: Kind, code: &'static str) -> Self {
        Script { kind, code }
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
                (Kind::Release | Kind::Line, Err(e)) => {
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

    fn command(&self, keys: &[String], args: &[&[u8]]) -> Cmd {
        let mut cmd = Cmd::new();
        cmd.arg("EVAL").arg(self.code).arg(keys.len()).arg(keys);
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
        self.run_with(conn, keys, db, value, ttl_ms, &[]).await
    }

    /// Runs a script of one resource's line (`keys`: the lock key, the line, the deadlines; all
    /// in one slot) with `extra` arguments after the usual three.
    ///
    /// # Errors
    /// The connection's errors; `ERR_PROTOCOL` for a non-integer result.
    pub async fn run_line(
        &self,
        conn: &Connection,
        keys: &[String],
        db: i64,
        value: &str,
        ttl_ms: u64,
        extra: &[&[u8]],
    ) -> Result<i64> {
        debug_assert_eq!(self.kind, Kind::Line);
        self.run_with(conn, keys, db, value, ttl_ms, extra).await
    }

    async fn run_with(
        &self,
        conn: &Connection,
        keys: &[String],
        db: i64,
        value: &str,
        ttl_ms: u64,
        extra: &[&[u8]],
    ) -> Result<i64> {
        let db = db.to_string();
        let ttl = ttl_ms.to_string();
        let mut args: Vec<&[u8]> = vec![db.as_bytes(), value.as_bytes(), ttl.as_bytes()];
        args.extend_from_slice(extra);
        match conn.send_with(&self.command(keys, &args), false).await? {
            Value::Int(n) => Ok(n),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "a lock script returned a non-integer",
            )),
        }
    }
}

/// The acquire script.
pub static ACQUIRE_SCRIPT: Script = Script::new(Kind::Acquire, ACQUIRE);
/// The extend script.
pub static EXTEND_SCRIPT: Script = Script::new(Kind::Extend, EXTEND);
/// The release script.
pub static RELEASE_SCRIPT: Script = Script::new(Kind::Release, RELEASE);
/// The release that tells waiters of other processes (several voters).
pub static RELEASE_NOTIFY_SCRIPT: Script = Script::new(Kind::Release, RELEASE_NOTIFY);
/// The fair acquire of one resource.
pub static FAIR_ACQUIRE_SCRIPT: Script = Script::new(Kind::Line, FAIR_ACQUIRE);
/// The release of a fairly taken lock.
pub static FAIR_RELEASE_SCRIPT: Script = Script::new(Kind::Line, FAIR_RELEASE);
/// A waiter leaving its line.
pub static LEAVE_SCRIPT: Script = Script::new(Kind::Line, LEAVE);
