//! The options table: every option this package takes, declared once.
//!
//! A row names an option, the places it is taken (a [`Place`]: where in the options object it
//! sits), its type and default as the documentation gives them, and its effect: applied (with
//! the function that reads it into the settings), accepted without effect (and why), or refused
//! (and what to do instead). From the table come the parsing (see `parse`), the error for an
//! unknown, refused or wrong option, and the README's option tables (`optionTable()` in the
//! binding; `scripts/options.js` writes them and a test checks README and `index.d.ts` against
//! the table).

use super::read::Reader;
use super::{AdapterConfig, ClusterConfig, ConnectionConfig, LockConfig, ScaleReads, TlsConfig};
use crate::error::{Error, Result};

/// Where in the options an option sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// ioredis `RedisOptions` of one server: a client's or the adapter's top level.
    Server,
    /// `options.redisOptions.*` of a cluster: every node's connection.
    Node,
    /// `redlockNodes[i].*`: an independent lock voter.
    LockNode,
    /// `tls.*`, wherever `tls` is taken.
    Tls,
    /// ioredis `ClusterOptions`: `options.*` of a cluster.
    Cluster,
    /// The adapter's own top-level keys (beside a server's options or a cluster's).
    Adapter,
    /// `redlockOptions.*`.
    Lock,
}

#[cfg_attr(not(feature = "napi"), allow(dead_code))]
impl Place {
    /// How the README and errors name the place.
    pub fn label(self) -> &'static str {
        match self {
            Place::Server => "server",
            Place::Node => "cluster node",
            Place::LockNode => "lock node",
            Place::Tls => "tls",
            Place::Cluster => "cluster",
            Place::Adapter => "adapter",
            Place::Lock => "lock",
        }
    }
}

/// Reads an option (its key given) into settings of type `T`.
pub type Setter<T> = fn(&mut T, &Reader<'_>, &str) -> Result<()>;

/// How an applied option is read.
#[derive(Clone, Copy)]
pub enum Apply {
    /// Into a server's (or node's) connection settings.
    Conn(Setter<ConnectionConfig>),
    /// Into TLS settings.
    Tls(Setter<TlsConfig>),
    /// Into a cluster's settings.
    Cluster(Setter<ClusterConfig>),
    /// Into lock settings.
    Lock(Setter<LockConfig>),
    /// Into the adapter's settings.
    Adapter(Setter<AdapterConfig>),
    /// A function the binding (or the JavaScript face) holds: only checked to be one here.
    Function,
    /// Read where the shape of the options is decided (`nodes`, `options`, `client`,
    /// `redlockOptions`, `redlockNodes`, `redisOptions`, `tls`).
    Shape,
}

/// What an option does.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "napi"), allow(dead_code))]
pub enum Effect {
    /// Applied, as described.
    Applied(Apply),
    /// Accepted without effect (so that existing ioredis option objects keep working), and why.
    NoOp(&'static str),
    /// Refused with `ERR_INVALID_OPTION`, and what to do instead.
    Refused(&'static str),
}

/// One option.
#[cfg_attr(not(feature = "napi"), allow(dead_code))]
pub struct Opt {
    /// Its key (in its place).
    pub name: &'static str,
    /// Where it is taken.
    pub places: &'static [Place],
    /// Its type, as `index.d.ts` gives it.
    pub ty: &'static str,
    /// Its default, as a JavaScript literal (as the `@default` of `index.d.ts`); `None`: none.
    pub default: Option<&'static str>,
    /// What it does.
    pub effect: Effect,
    /// One line for the README.
    pub note: &'static str,
}

use Place::{Adapter, Cluster, Lock, LockNode, Node, Server, Tls};

const SERVERS: &[Place] = &[Server, Node, LockNode];
const OWN_SERVER: &[Place] = &[Server, LockNode];
const EVERYWHERE: &[Place] = &[Server, Node, LockNode, Cluster];

macro_rules! conn {
    (|$c:ident, $r:ident, $k:ident| $body:expr) => {
        Effect::Applied(Apply::Conn(|$c, $r, $k| {
            $body;
            Ok(())
        }))
    };
}

macro_rules! cluster {
    (|$c:ident, $r:ident, $k:ident| $body:expr) => {
        Effect::Applied(Apply::Cluster(|$c, $r, $k| {
            $body;
            Ok(())
        }))
    };
}

macro_rules! lock {
    (|$c:ident, $r:ident, $k:ident| $body:expr) => {
        Effect::Applied(Apply::Lock(|$c, $r, $k| {
            $body;
            Ok(())
        }))
    };
}

macro_rules! tls {
    (|$c:ident, $r:ident, $k:ident| $body:expr) => {
        Effect::Applied(Apply::Tls(|$c, $r, $k| {
            $body;
            Ok(())
        }))
    };
}

/// Every option, in the order they are applied (`url` before what overrides it).
pub static OPTIONS: &[Opt] = &[
    // --- One server's connection -------------------------------------------------------------
    Opt {
        name: "url",
        places: OWN_SERVER,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(url) = r.string(k)? {
            c.apply_url(&url)?
        }),
        note: "`redis://[user:password@]host[:port][/db]`, `rediss://...` (turns on TLS), `unix://...` or a socket path. A string passed to the constructor is a `url`. Other options override it",
    },
    Opt {
        name: "host",
        places: OWN_SERVER,
        ty: "string",
        default: Some("'localhost'"),
        effect: conn!(|c, r, k| if let Some(host) = r.string(k)? {
            c.set_host(host, &r.name(k))?
        }),
        note: "host name or IP address",
    },
    Opt {
        name: "port",
        places: OWN_SERVER,
        ty: "number | string",
        default: Some("6379"),
        effect: conn!(|c, r, k| if let Some(port) = r.port(k)? {
            c.set_port(port)
        }),
        note: "a number or a numeric string (`'6379'`), 1 to 65535",
    },
    Opt {
        name: "path",
        places: OWN_SERVER,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(path) = r.string(k)? {
            if path.is_empty() {
                return Err(Error::config(format!("option `{}` must not be empty", r.name(k))));
            }
            c.addr = super::Addr::Unix(path.into())
        }),
        note: "unix socket path; replaces `host`/`port`; cannot be combined with `tls`",
    },
    Opt {
        name: "username",
        places: SERVERS,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(u) = r.string(k)? {
            c.username = Some(u).filter(|u| !u.is_empty())
        }),
        note: "ACL user (Redis >= 6)",
    },
    Opt {
        name: "password",
        places: SERVERS,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(p) = r.string(k)? {
            c.password = Some(super::Secret(p)).filter(|p| !p.0.is_empty())
        }),
        note: "sent with `AUTH`; never shown in errors or logs",
    },
    Opt {
        name: "db",
        places: SERVERS,
        ty: "number",
        default: Some("0"),
        effect: conn!(|c, r, k| if let Some(db) = r.integer(k, 0, i64::from(i32::MAX))? {
            c.db = db
        }),
        note: "database index (a cluster has only 0)",
    },
    Opt {
        name: "tls",
        places: SERVERS,
        ty: "boolean | RedisTlsOptions",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "`true`, or `{ ca, cert, key, rejectUnauthorized, servername }`; `ca`/`cert`/`key` are PEM strings or Buffers (or arrays of them)",
    },
    Opt {
        name: "connectTimeout",
        places: SERVERS,
        ty: "number",
        default: Some("10000"),
        effect: conn!(|c, r, k| if let Some(t) = r.millis(k, 0)? {
            c.connect_timeout = Some(t).filter(|t| !t.is_zero())
        }),
        note: "ms a whole connection attempt may take (TCP, TLS, `AUTH`, `SELECT`, `CLIENT SETNAME`, the ready check); `0`: no limit",
    },
    Opt {
        name: "commandTimeout",
        places: SERVERS,
        ty: "number",
        default: None,
        effect: conn!(|c, r, k| if let Some(t) = r.millis(k, 1)? {
            c.command_timeout = Some(t)
        }),
        note: "ms from a call to its reply, time spent waiting for a connection included; then `ERR_TIMEOUT` (a command still waiting for a connection is then not sent)",
    },
    Opt {
        name: "connectionName",
        places: OWN_SERVER,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(name) = r.string(k)? {
            if name.chars().any(|ch| ch == ' ' || ch.is_control()) {
                return Err(Error::config(format!(
                    "option `{}` must not contain spaces or control characters",
                    r.name(k)
                )));
            }
            c.connection_name = Some(name).filter(|n| !n.is_empty())
        }),
        note: "`CLIENT SETNAME` on each connection; no spaces",
    },
    Opt {
        name: "keepAlive",
        places: SERVERS,
        ty: "number",
        default: Some("0"),
        effect: conn!(|c, r, k| match r.get(k) {
            None => {}
            Some(serde_json::Value::Bool(b)) => {
                c.keep_alive = b.then_some(std::time::Duration::ZERO)
            }
            Some(_) => c.keep_alive = r.millis(k, 0)?.filter(|d| !d.is_zero()),
        }),
        note: "TCP keep-alive initial delay in ms; `0`: off",
    },
    Opt {
        name: "noDelay",
        places: SERVERS,
        ty: "boolean",
        default: Some("true"),
        effect: conn!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.no_delay = b
        }),
        note: "`TCP_NODELAY`",
    },
    Opt {
        name: "lazyConnect",
        places: OWN_SERVER,
        ty: "boolean",
        default: Some("false"),
        effect: conn!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.lazy_connect = b
        }),
        note: "connect on the first command (`status` is `'wait'` until then)",
    },
    Opt {
        name: "enableOfflineQueue",
        places: OWN_SERVER,
        ty: "boolean",
        default: Some("true"),
        effect: conn!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.enable_offline_queue = b
        }),
        note: "while disconnected, commands wait for the connection; `false`: they fail at once with `ERR_CONNECTION`",
    },
    Opt {
        name: "maxRetriesPerRequest",
        places: SERVERS,
        ty: "number | null",
        default: Some("20"),
        effect: conn!(|c, r, k| match r.raw(k) {
            None => {}
            Some(serde_json::Value::Null) => c.max_retries_per_request = None,
            Some(_) => {
                c.max_retries_per_request =
                    r.integer(k, 0, i64::from(u32::MAX))?.map(|n| n as u32)
            }
        }),
        note: "reconnection attempts a waiting command sits through before `ERR_CONNECTION`; `null`: unlimited (until `close()`/`quit()`/`disconnect()`). An attempt that reached a server that answered garbage or nothing within `connectTimeout` fails the waiting commands at once (`ERR_PROTOCOL`, `ERR_TIMEOUT`)",
    },
    Opt {
        name: "retryStrategy",
        places: &[Server],
        ty: "RetryStrategy",
        default: Some("times => Math.min(times * 50, 2000)"),
        effect: Effect::Applied(Apply::Function),
        note: "ms before reconnection attempt `times`; return `null` to stop reconnecting",
    },
    Opt {
        name: "autoResendUnfulfilledCommands",
        places: OWN_SERVER,
        ty: "boolean",
        default: Some("true"),
        effect: conn!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.resend_unfulfilled = b
        }),
        note: "commands that failed only because the connection dropped are sent again once it is back",
    },
    Opt {
        name: "socketTimeout",
        places: SERVERS,
        ty: "number",
        default: None,
        effect: conn!(|c, r, k| if let Some(t) = r.millis(k, 1)? {
            c.socket_timeout = Some(t)
        }),
        note: "ms a connection on which commands wait may stay silent (no reply at all) before it is given up (an `error` event, `ERR_TIMEOUT`) and made again; its commands are sent again as `autoResendUnfulfilledCommands` says",
    },
    Opt {
        name: "reconnectOnError",
        places: &[Server],
        ty: "(err: Error) => boolean | 1 | 2",
        default: None,
        effect: Effect::Applied(Apply::Function),
        note: "shown every error reply (`ERR_REPLY`) of the client's commands and the adapter's cache operations; truthy: the connection is made again (e.g. on `READONLY` after a failover), `2`: and the failed command is sent again, once",
    },
    Opt {
        name: "disableClientInfo",
        places: SERVERS,
        ty: "boolean",
        default: Some("false"),
        effect: conn!(|c, r, k| if r.bool(k)? == Some(true) {
            c.client_info = None
        }),
        note: "`true`: no `CLIENT SETINFO LIB-NAME alova-storage-redis` / `LIB-VER` on connect (Redis >= 7.2 shows them in `CLIENT LIST`; older servers ignore them)",
    },
    Opt {
        name: "clientInfoTag",
        places: SERVERS,
        ty: "string",
        default: None,
        effect: conn!(|c, r, k| if let Some(tag) = r.string(k)? {
            if tag.chars().any(|ch| ch == ' ' || ch.is_control()) {
                return Err(Error::config(format!(
                    "option `{}` must not contain spaces or control characters",
                    r.name(k)
                )));
            }
            if let Some(info) = &mut c.client_info {
                *info = format!("{}({tag})", super::LIB_NAME);
            }
        }),
        note: "appended to the library name: `alova-storage-redis(tag)`",
    },
    Opt {
        name: "blockingTimeout",
        places: &[Server],
        ty: "number",
        default: None,
        // Checked here, applied by the JavaScript face (a timer per blocking command).
        effect: conn!(|_c, r, k| r.number(k)?),
        note: "a positive number turns on a client-side limit for blocking commands (`BLPOP`, `BZPOPMIN`, `XREAD BLOCK`, ...): their own timeout plus `blockingTimeoutGrace`, or this many ms for one that blocks forever; then the command resolves `null`, as when the server's timeout passes",
    },
    Opt {
        name: "blockingTimeoutGrace",
        places: &[Server],
        ty: "number",
        default: Some("100"),
        effect: conn!(|_c, r, k| r.millis(k, 0)?),
        note: "ms added to a blocking command's own timeout (with `blockingTimeout`)",
    },
    Opt {
        name: "protocol",
        places: SERVERS,
        ty: "2",
        default: Some("2"),
        effect: conn!(|_c, r, k| if r.integer(k, 2, 3)? == Some(3) {
            return Err(Error::config(format!(
                "option `{}`: 3 (RESP3) is not supported: replies are converted as with RESP2 (subscriptions use RESP3 on their own connection)",
                r.name(k)
            )));
        }),
        note: "RESP version of the connection: 2 (subscriptions use RESP3 on their own connection); 3 is refused",
    },
    Opt {
        name: "keyPrefix",
        places: &[Server],
        ty: "string",
        default: Some("''"),
        // Checked here, applied by the JavaScript face (ioredis's key positions). Beside the
        // adapter's options the adapter's own `keyPrefix` (the Adapter place) is the one meant.
        effect: conn!(|_c, r, k| r.string(k)?),
        note: "`new RedisClient`: put in front of every key of the client's commands, as ioredis does (replies are left as they are); for the adapter, `keyPrefix` is the prefix of its cache keys (below) and the client's commands are not prefixed",
    },
    // --- TLS -----------------------------------------------------------------------------
    Opt {
        name: "ca",
        places: &[Tls],
        ty: "string | Buffer | Array<string | Buffer>",
        default: None,
        effect: tls!(|t, r, k| t.ca = r.pem(k)?),
        note: "trusted CA certificates (PEM); the system's roots when absent",
    },
    Opt {
        name: "cert",
        places: &[Tls],
        ty: "string | Buffer | Array<string | Buffer>",
        default: None,
        effect: tls!(|t, r, k| t.cert = r.pem(k)?),
        note: "client certificate chain (PEM), for mutual TLS; with `key`",
    },
    Opt {
        name: "key",
        places: &[Tls],
        ty: "string | Buffer | Array<string | Buffer>",
        default: None,
        effect: tls!(|t, r, k| t.key = r.pem(k)?),
        note: "client private key (PEM), for mutual TLS; with `cert`",
    },
    Opt {
        name: "rejectUnauthorized",
        places: &[Tls],
        ty: "boolean",
        default: Some("true"),
        effect: tls!(|t, r, k| if let Some(b) = r.bool(k)? {
            t.reject_unauthorized = b
        }),
        note: "`false` accepts any certificate (tests only)",
    },
    Opt {
        name: "servername",
        places: &[Tls],
        ty: "string",
        default: None,
        effect: tls!(|t, r, k| t.servername = r.string(k)?),
        note: "the name the certificate is verified against (and SNI), when not the host; the socket still goes to `host`. Not for cluster nodes (refused there: each node's certificate is checked against the name the cluster announces for it)",
    },
    Opt {
        name: "checkServerIdentity",
        places: &[Tls],
        ty: "never",
        default: None,
        effect: Effect::Refused(
            "the TLS handshake runs in Rust and cannot call a JavaScript function during it; use tls.servername for a certificate issued for another name (and a cluster's dnsLookup)",
        ),
        note: "",
    },
    // --- Accepted without effect -------------------------------------------------------------
    Opt {
        name: "family",
        places: SERVERS,
        ty: "number",
        default: Some("4"),
        effect: Effect::NoOp("the address family follows the host name's resolution"),
        note: "",
    },
    Opt {
        name: "showFriendlyErrorStack",
        places: EVERYWHERE,
        ty: "boolean",
        default: Some("false"),
        effect: Effect::NoOp("errors carry a `code` and a plain stack"),
        note: "",
    },
    Opt {
        name: "enableReadyCheck",
        places: EVERYWHERE,
        ty: "boolean",
        default: Some("true"),
        effect: Effect::NoOp("the connection is ready when the server answers"),
        note: "",
    },
    Opt {
        name: "autoResubscribe",
        places: SERVERS,
        ty: "boolean",
        default: Some("true"),
        effect: Effect::NoOp(
            "a client's subscriptions (on their own connection) are always made again after a reconnection",
        ),
        note: "",
    },
    Opt {
        name: "enableAutoPipelining",
        places: EVERYWHERE,
        ty: "boolean",
        default: Some("false"),
        effect: Effect::NoOp("every command is always pipelined on one socket"),
        note: "",
    },
    Opt {
        name: "autoPipeliningIgnoredPrefixes",
        places: EVERYWHERE,
        ty: "string[]",
        default: Some("[]"),
        effect: Effect::NoOp("every command is always pipelined on one socket"),
        note: "",
    },
    Opt {
        name: "autoPipeliningIgnoredCommands",
        places: EVERYWHERE,
        ty: "string[]",
        default: Some("[]"),
        effect: Effect::NoOp("every command is always pipelined on one socket"),
        note: "",
    },
    Opt {
        name: "stringNumbers",
        places: SERVERS,
        ty: "boolean",
        default: Some("false"),
        effect: Effect::NoOp("integer replies are numbers"),
        note: "",
    },
    Opt {
        name: "disconnectTimeout",
        places: SERVERS,
        ty: "number",
        default: Some("2000"),
        effect: Effect::NoOp("`disconnect()` closes at once"),
        note: "",
    },
    Opt {
        name: "maxLoadingRetryTime",
        places: SERVERS,
        ty: "number",
        default: Some("10000"),
        effect: Effect::NoOp("not applicable"),
        note: "",
    },
    Opt {
        name: "offlineQueue",
        places: SERVERS,
        ty: "boolean",
        default: Some("true"),
        effect: Effect::NoOp("use `enableOfflineQueue`"),
        note: "",
    },
    // --- Refused ---------------------------------------------------------------------------
    // --- Redis Sentinel (a server's options) -------------------------------------------------
    Opt {
        name: "sentinels",
        places: &[Server],
        ty: "Array<{ host?: string; port?: number }>",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "Redis Sentinel: the sentinels to ask where the master of `name` is (host defaults to 127.0.0.1, port to 26379); `host`/`port` are then not used",
    },
    Opt {
        name: "name",
        places: &[Server],
        ty: "string",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "the master group's name, as the sentinels monitor it (required with `sentinels`)",
    },
    Opt {
        name: "role",
        places: &[Server],
        ty: "'master' | 'slave'",
        default: Some("'master'"),
        effect: Effect::Applied(Apply::Shape),
        note: "connect to the master, or to a replica that is up",
    },
    Opt {
        name: "sentinelUsername",
        places: &[Server],
        ty: "string",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "ACL user of the sentinels",
    },
    Opt {
        name: "sentinelPassword",
        places: &[Server],
        ty: "string",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "password of the sentinels (`password` is the data nodes')",
    },
    Opt {
        name: "sentinelTLS",
        places: &[Server],
        ty: "boolean | RedisTlsOptions",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "TLS to the sentinels",
    },
    Opt {
        name: "enableTLSForSentinelMode",
        places: &[Server],
        ty: "boolean",
        default: Some("false"),
        effect: Effect::Applied(Apply::Shape),
        note: "use `tls` for the master and replicas too (else `tls` is not used with `sentinels`)",
    },
    Opt {
        name: "sentinelCommandTimeout",
        places: &[Server],
        ty: "number",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "how long a sentinel may take to answer, in ms (without it, `connectTimeout`)",
    },
    Opt {
        name: "updateSentinels",
        places: &[Server],
        ty: "boolean",
        default: Some("true"),
        effect: Effect::Applied(Apply::Shape),
        note: "add the sentinels a sentinel names to those asked",
    },
    Opt {
        name: "preferredSlaves",
        places: &[Server],
        ty: "Array<{ ip: string; port: string | number; prio?: number }> | { ip: string; port: string | number; prio?: number } | ((slaves: Array<Record<string, string>>) => { ip: string; port: string | number } | null)",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "with `role: 'slave'`: the replicas to take first, lowest `prio` first, or a function that picks one of those that are up (else a random one that is up)",
    },
    Opt {
        name: "sentinelRetryStrategy",
        places: &[Server],
        ty: "(times: number) => number | void | null",
        default: Some("times => Math.min(times * 10, 1000)"),
        effect: Effect::Applied(Apply::Function),
        note: "with `sentinels`: the pause before the next attempt when no sentinel gave an address (instead of `retryStrategy`); no number: stop",
    },
    Opt {
        name: "sentinelReconnectStrategy",
        places: &[Server],
        ty: "(times: number) => number | void | null",
        default: Some("() => 60000"),
        effect: Effect::Applied(Apply::Function),
        note: "with `failoverDetector`: the pause before listening again to a sentinel it lost; no number: stop listening to it",
    },
    Opt {
        name: "failoverDetector",
        places: &[Server],
        ty: "boolean",
        default: Some("false"),
        effect: Effect::Applied(Apply::Shape),
        note: "listen for `+switch-master` on the sentinels and reconnect at once when the group fails over (else on the old master's disconnection or failure)",
    },
    Opt {
        name: "sentinelMaxConnections",
        places: &[Server],
        ty: "number",
        default: Some("10"),
        effect: Effect::Applied(Apply::Shape),
        note: "how many sentinels `failoverDetector` listens to",
    },
    Opt {
        name: "Connector",
        places: &[Server],
        ty: "never",
        default: None,
        effect: Effect::Refused("a custom Connector is not supported"),
        note: "",
    },
    Opt {
        name: "scripts",
        places: &[Server, Cluster],
        ty: "never",
        default: None,
        effect: Effect::Refused(
            "scripts (defineCommand) are taken by `new RedisClient` only; on the adapter use client.defineCommand()",
        ),
        note: "",
    },
    Opt {
        name: "monitor",
        places: &[Server],
        ty: "never",
        default: None,
        effect: Effect::Refused("use client.monitor()"),
        note: "",
    },
    Opt {
        name: "readOnly",
        places: &[Server],
        ty: "never",
        default: None,
        effect: Effect::Refused("readOnly applies to cluster replicas and is not supported here"),
        note: "",
    },
    // --- A cluster's ClusterOptions ----------------------------------------------------------
    Opt {
        name: "redisOptions",
        places: &[Cluster],
        ty: "RedisClusterNodeOptions",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "every node connection's options (credentials, TLS, timeouts)",
    },
    Opt {
        name: "scaleReads",
        places: &[Cluster],
        ty: "'master' | 'slave' | 'all'",
        default: Some("'master'"),
        effect: cluster!(|c, r, k| match r.string(k)?.as_deref() {
            None | Some("master") => c.scale_reads = ScaleReads::Master,
            Some("slave") => c.scale_reads = ScaleReads::Replicas,
            Some("all") => c.scale_reads = ScaleReads::All,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `{}` must be 'master', 'slave' or 'all', got {other:?}",
                    r.name(k)
                )))
            }
        }),
        note: "where read-only commands go: the slot's master, a random replica, or any node of the slot",
    },
    Opt {
        name: "natMap",
        places: &[Cluster, Server],
        ty: "Record<string, { host: string; port: number }>",
        default: None,
        effect: cluster!(|c, r, k| c.nat_map = super::parse::nat_map(r, k)?),
        note: "announced `\"host:port\"` -> the address to connect to (a cluster's nodes, or the servers the sentinels name)",
    },
    Opt {
        name: "maxRedirections",
        places: &[Cluster],
        ty: "number",
        default: Some("16"),
        effect: cluster!(|c, r, k| if let Some(n) = r.integer(k, 0, 1000)? {
            c.max_redirections = n as u32
        }),
        note: "retries of a command (MOVED, ASK, TRYAGAIN, failover)",
    },
    Opt {
        name: "retryDelayOnFailover",
        places: &[Cluster],
        ty: "number",
        default: Some("100"),
        effect: cluster!(|c, r, k| c.lower_retry_delay(r.millis(k, 0)?)),
        note: "ms before retrying through a failover (the least of the three `retryDelayOn*` is used)",
    },
    Opt {
        name: "retryDelayOnClusterDown",
        places: &[Cluster],
        ty: "number",
        default: Some("100"),
        effect: cluster!(|c, r, k| c.lower_retry_delay(r.millis(k, 0)?)),
        note: "ms before retrying a `CLUSTERDOWN`",
    },
    Opt {
        name: "retryDelayOnMoved",
        places: &[Cluster],
        ty: "number",
        default: Some("0"),
        effect: Effect::NoOp("a command answered MOVED goes to the node named at once (ioredis's default)"),
        note: "",
    },
    Opt {
        name: "retryDelayOnTryAgain",
        places: &[Cluster],
        ty: "number",
        default: Some("100"),
        effect: cluster!(|c, r, k| c.lower_retry_delay(r.millis(k, 0)?)),
        note: "ms before retrying a `TRYAGAIN`",
    },
    Opt {
        name: "enableOfflineQueue",
        places: &[Cluster],
        ty: "boolean",
        default: Some("true"),
        effect: cluster!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.enable_offline_queue = b
        }),
        note: "commands issued before the cluster is reachable wait for it",
    },
    Opt {
        name: "lazyConnect",
        places: &[Cluster],
        ty: "boolean",
        default: Some("false"),
        effect: cluster!(|c, r, k| if let Some(b) = r.bool(k)? {
            c.lazy_connect = b
        }),
        note: "connect on the first command",
    },
    Opt {
        name: "clusterRetryStrategy",
        places: &[Cluster],
        ty: "RetryStrategy",
        default: Some("times => Math.min(100 + times * 2, 2000)"),
        effect: Effect::Applied(Apply::Function),
        note: "ms before reconnection attempt `times` while no node answers; `null` stops",
    },
    Opt {
        name: "slotsRefreshTimeout",
        places: &[Cluster],
        ty: "number",
        default: Some("1000"),
        effect: Effect::NoOp("the slot map is refreshed by redis-rs on MOVED and after errors"),
        note: "",
    },
    Opt {
        name: "slotsRefreshInterval",
        places: &[Cluster],
        ty: "number",
        default: Some("5000"),
        effect: Effect::NoOp("the slot map is refreshed by redis-rs on MOVED and after errors"),
        note: "",
    },
    Opt {
        name: "useSRVRecords",
        places: &[Cluster],
        ty: "boolean",
        default: Some("false"),
        effect: Effect::NoOp("SRV records are not looked up"),
        note: "",
    },
    Opt {
        name: "shardedSubscribers",
        places: &[Cluster],
        ty: "boolean",
        default: Some("false"),
        effect: Effect::NoOp(
            "sharded subscriptions (ssubscribe) always go to the master of each channel's slot, on the client's subscriber connection",
        ),
        note: "",
    },
    Opt {
        name: "clusterNodeRetryStrategy",
        places: &[Cluster],
        ty: "(times: number) => number | null",
        default: Some("null"),
        effect: Effect::NoOp(
            "redis-rs makes a lost node connection again on the next command for it (its pauses are bounded by the retryDelayOn* options); clusterRetryStrategy paces the cluster's reconnection",
        ),
        note: "",
    },
    Opt {
        name: "dnsLookup",
        places: &[Cluster],
        ty: "(hostname: string, callback: (err: Error | null, address: string) => void) => void",
        default: None,
        effect: Effect::Applied(Apply::Function),
        note: "resolves the nodes' host names instead of the system (as `dns.lookup`); ioredis's recipe for AWS ElastiCache with TLS passes `(address, callback) => callback(null, address)`",
    },
    Opt {
        name: "keyPrefix",
        places: &[Cluster],
        ty: "string",
        default: Some("''"),
        // Checked here, applied by the JavaScript face (ioredis's key positions).
        effect: Effect::Applied(Apply::Cluster(|_c, r, k| r.string(k).map(|_| ()))),
        note: "put in front of every key of the client's commands, as ioredis does (not of the adapter's cache keys: the adapter has its own `keyPrefix`)",
    },
    Opt {
        name: "resolveSrv",
        places: &[Cluster],
        ty: "never",
        default: None,
        effect: Effect::Refused("SRV records are not supported"),
        note: "",
    },
    // --- The adapter's own ---------------------------------------------------------------------
    Opt {
        name: "keyPrefix",
        places: &[Adapter],
        ty: "string",
        default: Some("'alova:'"),
        effect: Effect::Applied(Apply::Adapter(|a, r, k| {
            if let Some(p) = r.string(k)? {
                a.key_prefix = p;
            }
            Ok(())
        })),
        note: "prefix of every cache key; `''` is kept (the original turned it into `'alova:'`), but `clear()` then refuses",
    },
    Opt {
        name: "redlockOptions",
        places: &[Adapter],
        ty: "RedlockOptions",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "the lock's settings (below)",
    },
    Opt {
        name: "redlockFilter",
        places: &[Adapter],
        ty: "(node) => boolean",
        default: None,
        effect: Effect::Applied(Apply::Function),
        note: "which nodes vote on locks (`node => boolean`); every node by default",
    },
    Opt {
        name: "redlockTTL",
        places: &[Adapter],
        ty: "number",
        default: Some("5000"),
        effect: Effect::Applied(Apply::Adapter(|a, r, k| {
            if let Some(ttl) = r.millis(k, 1)? {
                a.lock.ttl = ttl;
            }
            Ok(())
        })),
        note: "lock time to live, ms",
    },
    Opt {
        name: "redlockNodes",
        places: &[Adapter],
        ty: "Array<string | RedlockNode>",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "independent servers that vote on locks instead of the adapter's own: `redis://` URLs or RedisOptions (the lock-node options above)",
    },
    Opt {
        name: "spreadKeys",
        places: &[Adapter],
        ty: "boolean",
        default: Some("false"),
        effect: Effect::Applied(Apply::Adapter(|a, r, k| {
            if let Some(b) = r.bool(k)? {
                a.spread_keys = b;
            }
            Ok(())
        })),
        note: "put a hash tag of each key after the prefix, to spread alova's keys over a cluster's slots",
    },
    Opt {
        name: "client",
        places: &[Adapter],
        ty: "RedisClient | Redis | Cluster",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "an existing client, whose connection the adapter shares; no connection option beside it",
    },
    Opt {
        name: "nodes",
        places: &[Adapter],
        ty: "ClusterNode[]",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "a Redis Cluster's startup nodes (with `options`: ioredis's ClusterOptions); no server option beside them",
    },
    Opt {
        name: "options",
        places: &[Adapter],
        ty: "RedisClusterOptions",
        default: None,
        effect: Effect::Applied(Apply::Shape),
        note: "a cluster's ClusterOptions (beside `nodes`)",
    },
    // --- redlockOptions ------------------------------------------------------------------------
    Opt {
        name: "driftFactor",
        places: &[Lock],
        ty: "number",
        default: Some("0.01"),
        effect: lock!(|c, r, k| if let Some(f) = r.number(k)? {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::config(format!(
                    "option `{}` must be a number in [0, 1)",
                    r.name(k)
                )));
            }
            c.drift_factor = f
        }),
        note: "clock drift allowance: validity = ttl - elapsed - (driftFactor * ttl + 2 ms)",
    },
    Opt {
        name: "retryCount",
        places: &[Lock],
        ty: "number",
        default: Some("10"),
        effect: lock!(|c, r, k| if let Some(n) = r.integer(k, -1, i64::from(u32::MAX))? {
            c.retry_count = u32::try_from(n).ok()
        }),
        note: "attempts after the first; `-1`: unlimited",
    },
    Opt {
        name: "retryDelay",
        places: &[Lock],
        ty: "number",
        default: Some("200"),
        effect: lock!(|c, r, k| if let Some(d) = r.millis(k, 0)? {
            c.retry_delay = d
        }),
        note: "ms between attempts (a waiter woken by a release asks at once)",
    },
    Opt {
        name: "retryJitter",
        places: &[Lock],
        ty: "number",
        default: Some("100"),
        effect: lock!(|c, r, k| if let Some(d) = r.millis(k, 0)? {
            c.retry_jitter = d
        }),
        note: "random ms, plus or minus, added to each pause",
    },
    Opt {
        name: "automaticExtensionThreshold",
        places: &[Lock],
        ty: "number",
        default: Some("500"),
        effect: lock!(|c, r, k| if let Some(d) = r.millis(k, 0)? {
            c.automatic_extension_threshold = d
        }),
        note: "ms before expiry a held lock is extended",
    },
    Opt {
        name: "db",
        places: &[Lock],
        ty: "number",
        default: Some("0"),
        effect: lock!(|c, r, k| if let Some(db) = r.integer(k, 0, i64::from(i32::MAX))? {
            c.db = db
        }),
        note: "database of the lock keys",
    },
];

/// The row of `name` in `place`.
pub fn find(place: Place, name: &str) -> Option<&'static Opt> {
    OPTIONS
        .iter()
        .find(|o| o.name == name && o.places.contains(&place))
}

/// The names of the options `place` takes (applied or without effect), for messages.
pub fn names(place: Place) -> Vec<&'static str> {
    OPTIONS
        .iter()
        .filter(|o| o.places.contains(&place) && !matches!(o.effect, Effect::Refused(_)))
        .map(|o| o.name)
        .collect()
}

/// The table as JSON, for the documentation and its checks (`optionTable()` in the binding).
#[cfg_attr(not(feature = "napi"), allow(dead_code))]
pub fn to_json() -> String {
    let rows: Vec<serde_json::Value> = OPTIONS
        .iter()
        .map(|o| {
            let (effect, why) = match o.effect {
                Effect::Applied(_) => ("applied", ""),
                Effect::NoOp(why) => ("no-op", why),
                Effect::Refused(why) => ("refused", why),
            };
            serde_json::json!({
                "name": o.name,
                "places": o.places.iter().map(|p| p.label()).collect::<Vec<_>>(),
                "type": o.ty,
                "default": o.default,
                "effect": effect,
                "why": why,
                "note": o.note,
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_in_the_json_with_its_places_and_effect() {
        let rows: Vec<serde_json::Value> = serde_json::from_str(&to_json()).unwrap();
        assert_eq!(rows.len(), OPTIONS.len());
        let url = &rows[0];
        assert_eq!(url["name"], "url");
        assert_eq!(url["places"], serde_json::json!(["server", "lock node"]));
        assert_eq!(url["effect"], "applied");
        let refused = rows.iter().find(|r| r["name"] == "Connector").unwrap();
        assert_eq!(refused["effect"], "refused");
        assert!(!refused["why"].as_str().unwrap().is_empty());
        assert!(rows.iter().all(|r| !r["type"].as_str().unwrap().is_empty()));
    }

    #[test]
    fn an_option_is_found_by_its_place() {
        assert!(matches!(
            find(Place::Server, "keepAlive").map(|o| o.effect),
            Some(Effect::Applied(Apply::Conn(_)))
        ));
        assert!(find(Place::Node, "host").is_none());
        assert!(matches!(
            find(Place::Cluster, "lazyConnect").map(|o| o.effect),
            Some(Effect::Applied(Apply::Cluster(_)))
        ));
        assert!(names(Place::Tls).contains(&"servername"));
    }
}
