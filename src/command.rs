//! Which commands a shared, pipelined connection can carry.
//!
//! Every command of a client travels on one multiplexed socket, shared by every adapter and
//! caller that uses the client. A command that changes the state of that socket (its database,
//! its user, transactions, subscriptions) would silently change every other caller's commands,
//! so it is refused with a clear error instead. Blocking commands (`BLPOP`, `XREAD BLOCK`, ...)
//! go on a connection of their own.

use crate::error::{Error, Result};

/// Commands refused on the shared connection, with what to do instead.
const REFUSED: &[(&str, &str)] = &[
    (
        "MULTI",
        "use client.multi() (MULTI .. EXEC sent together), or EVAL with a script",
    ),
    (
        "EXEC",
        "use client.multi() (MULTI .. EXEC sent together), or EVAL with a script",
    ),
    (
        "DISCARD",
        "use client.multi() (MULTI .. EXEC sent together), or EVAL with a script",
    ),
    (
        "WATCH",
        "WATCH state needs a connection of its own (not supported yet); use EVAL with a script",
    ),
    (
        "UNWATCH",
        "WATCH state needs a connection of its own (not supported yet); use EVAL with a script",
    ),
    (
        "SELECT",
        "it would switch the database of every caller; set the `db` option instead",
    ),
    (
        "AUTH",
        "it would switch the user of every caller; set `username`/`password` instead",
    ),
    ("HELLO", "the protocol is chosen by the client"),
    ("RESET", "it would reset the connection of every caller"),
    ("QUIT", "use client.quit()"),
    (
        "SUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    (
        "PSUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    (
        "SSUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    (
        "UNSUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    (
        "PUNSUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    (
        "SUNSUBSCRIBE",
        "use client.subscribe() and its kin (a connection of their own)",
    ),
    ("MONITOR", "monitor mode needs a connection of its own"),
    ("SYNC", "replication commands are not for clients"),
    ("PSYNC", "replication commands are not for clients"),
    ("REPLCONF", "replication commands are not for clients"),
    ("READONLY", "it changes the state of the shared connection"),
    ("READWRITE", "it changes the state of the shared connection"),
    ("ASKING", "it changes the state of the shared connection"),
];

/// Commands that block their connection until something happens: a client sends them on a
/// connection of their own ([`crate::connection::Connection::side`]), so that they never stall
/// the shared one.
const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "WAIT",
    "WAITAOF",
];

/// True for a command that blocks its connection (`XREAD`/`XREADGROUP` with `BLOCK` too).
pub fn is_blocking(name: &str, args: &[&[u8]]) -> bool {
    BLOCKING.iter().any(|c| c.eq_ignore_ascii_case(name))
        || ((name.eq_ignore_ascii_case("XREAD") || name.eq_ignore_ascii_case("XREADGROUP"))
            && args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK")))
}

/// Checks that `name` (with its first argument, for subcommands) may be sent on the shared
/// connection.
///
/// # Errors
/// `ERR_INVALID_ARG` naming the command and the reason.
pub fn check(name: &str, first_arg: Option<&[u8]>) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument(
            "the command name must not be empty",
        ));
    }
    if let Some((_, why)) = REFUSED.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
        return Err(Error::invalid_argument(format!(
            "{} is not supported on the shared connection: {why}",
            name.to_ascii_uppercase()
        )));
    }
    let sub = first_arg.unwrap_or_default();
    if name.eq_ignore_ascii_case("CLIENT")
        && (sub.eq_ignore_ascii_case(b"REPLY") || sub.eq_ignore_ascii_case(b"TRACKING"))
    {
        return Err(Error::invalid_argument(
            "CLIENT REPLY and CLIENT TRACKING are not supported on the shared connection",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_state_changing_commands() {
        assert!(check("get", None).is_ok());
        assert!(check("CLIENT", Some(b"LIST")).is_ok());
        for name in ["multi", "Select", "subscribe", ""] {
            assert_eq!(
                check(name, None).unwrap_err().code(),
                "ERR_INVALID_ARG",
                "{name}"
            );
        }
        assert!(check("client", Some(b"reply")).is_err());
    }

    #[test]
    fn knows_blocking_commands() {
        assert!(is_blocking("blpop", &[b"l", b"0"]));
        assert!(is_blocking(
            "XREAD",
            &[b"BLOCK", b"0", b"STREAMS", b"s", b"$"]
        ));
        assert!(!is_blocking("XREAD", &[b"STREAMS", b"s", b"0"]));
        assert!(!is_blocking("LPOP", &[b"l"]));
    }
}
