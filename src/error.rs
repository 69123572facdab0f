//! The errors the core reports, each with a stable `code` that JavaScript sees as `err.code`.
//!
//! Errors are classified by redis-rs predicates and server error codes, never by message text.
//! No message ever contains a password: connection errors name the address, nothing else.

use std::fmt;

/// What went wrong, as a small set of codes programs can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An option has a wrong type or value (raised at construction).
    Config,
    /// An argument of a call is wrong (a non-string key, an unserialisable value).
    InvalidArgument,
    /// The server could not be reached, or the connection broke and did not come back in time.
    Connection,
    /// A connect or command timeout ran out.
    Timeout,
    /// The server refused the credentials.
    Auth,
    /// The client was closed (`quit()`, `disconnect()`, `close()`).
    Closed,
    /// The server answered the command with an error reply.
    Reply,
    /// `clear()` was refused because the key prefix is empty.
    ClearRefused,
    /// A reply had a shape the operation did not expect.
    Protocol,
    /// A lock could not be acquired within its attempts.
    LockNotAcquired,
    /// A defect in this package (a panic caught at the JavaScript boundary).
    Internal,
}

impl ErrorKind {
    /// The string JavaScript sees as `err.code`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Config => "ERR_INVALID_OPTION",
            ErrorKind::InvalidArgument => "ERR_INVALID_ARG",
            ErrorKind::Connection => "ERR_CONNECTION",
            ErrorKind::Timeout => "ERR_TIMEOUT",
            ErrorKind::Auth => "ERR_AUTH",
            ErrorKind::Closed => "ERR_CLOSED",
            ErrorKind::Reply => "ERR_REPLY",
            ErrorKind::ClearRefused => "ERR_CLEAR_REFUSED",
            ErrorKind::Protocol => "ERR_PROTOCOL",
            ErrorKind::Internal => "ERR_INTERNAL",
            ErrorKind::LockNotAcquired => "ERR_LOCK_NOT_ACQUIRED",
        }
    }
}

/// An error of the core: a kind (its code) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A wrong option.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// A wrong argument.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// The kind of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The code JavaScript sees as `err.code`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The message, without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The server's error code (`NOSCRIPT`, `WRONGTYPE`, ...) of an error reply.
    pub fn reply_code(&self) -> Option<&str> {
        (self.kind == ErrorKind::Reply)
            .then(|| self.message.split(' ').next())
            .flatten()
    }

    /// True when the failure is the connection's, so that the same command may succeed on a new
    /// connection.
    pub fn is_connection(&self) -> bool {
        self.kind == ErrorKind::Connection
    }

    /// Maps a redis-rs error met while talking to `addr`.
    pub fn from_redis(err: &redis::RedisError, addr: &str) -> Self {
        use redis::ErrorKind as K;
        if err.is_timeout() {
            return Error::new(ErrorKind::Timeout, format!("timed out talking to {addr}"));
        }
        match err.kind() {
            K::AuthenticationFailed => {
                Error::new(ErrorKind::Auth, format!("authentication failed at {addr}"))
            }
            K::Server(_) | K::Extension => {
                let code = err.code().unwrap_or("ERR");
                if matches!(code, "WRONGPASS" | "NOAUTH") {
                    return Error::new(
                        ErrorKind::Auth,
                        format!("authentication failed at {addr} ({code})"),
                    );
                }
                let detail = err.detail().unwrap_or("");
                Error::new(
                    ErrorKind::Reply,
                    format!("{code} {detail}").trim_end().to_owned(),
                )
            }
            K::Io | K::ClusterConnectionNotFound => Error::new(
                ErrorKind::Connection,
                format!("connection to {addr} failed: {}", io_reason(err)),
            ),
            K::Parse | K::UnexpectedReturnType => {
                Error::new(ErrorKind::Protocol, format!("unexpected reply from {addr}"))
            }
            K::InvalidClientConfig => {
                Error::config(format!("invalid connection settings for {addr}"))
            }
            _ if err.is_connection_dropped() || err.is_unrecoverable_error() => Error::new(
                ErrorKind::Connection,
                format!("connection to {addr} was lost"),
            ),
            _ => Error::new(ErrorKind::Reply, format!("{} from {addr}", err.category())),
        }
    }
}

/// A short reason for an I/O failure that cannot leak credentials.
fn io_reason(err: &redis::RedisError) -> &'static str {
    if err.is_connection_refusal() {
        "connection refused"
    } else if err.is_connection_dropped() {
        "connection lost"
    } else {
        "I/O error"
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(Error::config("x").code(), "ERR_INVALID_OPTION");
        assert_eq!(Error::invalid_argument("x").code(), "ERR_INVALID_ARG");
        assert_eq!(ErrorKind::Timeout.code(), "ERR_TIMEOUT");
        assert_eq!(ErrorKind::ClearRefused.code(), "ERR_CLEAR_REFUSED");
    }

    #[test]
    fn maps_redis_errors_by_kind() {
        let io =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = Error::from_redis(&io, "127.0.0.1:1");
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.message().contains("connection refused"), "{e}");

        let timeout = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(Error::from_redis(&timeout, "a").kind(), ErrorKind::Timeout);

        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "bad"));
        assert_eq!(Error::from_redis(&auth, "a").kind(), ErrorKind::Auth);
    }

    #[test]
    fn display_has_code_and_message() {
        assert_eq!(
            Error::config("port is wrong").to_string(),
            "ERR_INVALID_OPTION: port is wrong"
        );
    }
}
