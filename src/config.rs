//! Options: ioredis `RedisOptions` (and the adapter's own keys) parsed into the core's settings.
//!
//! The JavaScript face hands the options over as JSON, with functions replaced by
//! `{"$fn": true}` and numbers JSON cannot hold (NaN, Infinity, BigInt) by `{"$number": "..."}`,
//! so that every wrong value is reported here, at construction, with the option's name. Defaults
//! are ioredis's (connection) and @sesamecare-oss/redlock's (locks); this file is their one source.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A TCP host and port.
    Tcp { host: String, port: u16 },
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Addr::Tcp { host, port } => write!(f, "{host}:{port}"),
            Addr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TLS settings (ioredis passes them to `tls.connect`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Trusted CA certificates (PEM); the system's roots when absent.
    pub ca: Option<String>,
    /// Client certificate chain (PEM), for mutual TLS.
    pub cert: Option<String>,
    /// Client private key (PEM), for mutual TLS.
    pub key: Option<String>,
    /// Verify the server's certificate. Default true.
    pub reject_unauthorized: bool,
    /// The name to verify the certificate against, when it is not the host.
    pub servername: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("reject_unauthorized", &self.reject_unauthorized)
            .field("servername", &self.servername)
            .finish()
    }
}

/// A string that never prints.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach one Redis server and how to behave when it goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Address. Default `localhost:6379`.
    pub addr: Addr,
    /// TLS, when the connection is encrypted.
    pub tls: Option<TlsConfig>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (AUTH).
    pub password: Option<Secret>,
    /// Database index. Default 0.
    pub db: i64,
    /// How long a connection attempt may take. Default 10 s (ioredis).
    pub connect_timeout: Option<Duration>,
    /// How long a command may wait for its reply. Default none (ioredis).
    pub command_timeout: Option<Duration>,
    /// `CLIENT SETNAME` after each connect.
    pub connection_name: Option<String>,
    /// TCP keep-alive initial delay; `None` leaves keep-alive off (ioredis `keepAlive: 0`).
    pub keep_alive: Option<Duration>,
    /// TCP_NODELAY. Default true.
    pub no_delay: bool,
    /// Connect on the first command instead of at construction. Default false.
    pub lazy_connect: bool,
    /// Commands issued while disconnected wait for the connection. Default true.
    pub enable_offline_queue: bool,
    /// Reconnection attempts a waiting command sits through before it fails; `None` waits as long
    /// as the client reconnects. Default 20.
    pub max_retries_per_request: Option<u32>,
    /// Commands that failed because the connection dropped are sent again once it is back.
    /// Default true.
    pub resend_unfulfilled: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            addr: Addr::Tcp {
                host: "localhost".into(),
                port: 6379,
            },
            tls: None,
            username: None,
            password: None,
            db: 0,
            connect_timeout: Some(Duration::from_millis(10_000)),
            command_timeout: None,
            connection_name: None,
            keep_alive: None,
            no_delay: true,
            lazy_connect: false,
            enable_offline_queue: true,
            max_retries_per_request: Some(20),
            resend_unfulfilled: true,
        }
    }
}

/// Redlock settings, with @sesamecare-oss/redlock's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LockConfig {
    /// Clock drift allowance as a fraction of the TTL. Default 0.01.
    pub drift_factor: f64,
    /// Attempts after the first; `None` is unlimited (`retryCount: -1`). Default 10.
    pub retry_count: Option<u32>,
    /// Pause between attempts. Default 200 ms.
    pub retry_delay: Duration,
    /// Random +- added to each pause. Default 100 ms.
    pub retry_jitter: Duration,
    /// How long before expiry a held lock is extended. Default 500 ms.
    pub automatic_extension_threshold: Duration,
    /// Database of the lock keys. Default 0.
    pub db: i64,
    /// Lock time to live. Default 5000 ms.
    pub ttl: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            drift_factor: 0.01,
            retry_count: Some(10),
            retry_delay: Duration::from_millis(200),
            retry_jitter: Duration::from_millis(100),
            automatic_extension_threshold: Duration::from_millis(500),
            db: 0,
            ttl: Duration::from_millis(5000),
        }
    }
}

/// Everything `new RedisStorageAdapter(options)` configures.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// The server or cluster; `None` when an existing native client is shared.
    pub backend: Option<BackendConfig>,
    /// `spreadKeys`: put a hash tag of each key in front of it, so that a cluster spreads the
    /// keys over its slots (alova's keys carry `{...}` parameter objects that Redis would take
    /// as hash tags). Default false.
    pub spread_keys: bool,
    /// Prefix of every cache key. Default `alova:`.
    pub key_prefix: String,
    /// Lock settings.
    pub lock: LockConfig,
    /// `redlockNodes`: independent servers that vote on locks instead of the adapter's own
    /// connection (empty: the adapter's connection votes alone).
    pub lock_nodes: Vec<ConnectionConfig>,
    /// A `retryStrategy` function was given (the binding holds it).
    pub has_retry_strategy: bool,
    /// A `redlockFilter` function was given (the binding holds it).
    pub has_redlock_filter: bool,
}

/// A standalone server or a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// One server.
    Standalone(ConnectionConfig),
    /// A Redis Cluster.
    Cluster(ClusterConfig),
}

/// ioredis `scaleReads`: where read-only commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReads {
    /// Every command to the slot's master. Default.
    Master,
    /// Reads to a random replica (`'slave'`).
    Replicas,
    /// Reads to a random node of the slot, master or replica (`'all'`).
    All,
}

/// A Redis Cluster: ioredis `new Cluster(nodes, options)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Startup nodes (host, port); the rest are discovered.
    pub nodes: Vec<(String, u16)>,
    /// `redisOptions`: credentials, TLS, timeouts of every node connection.
    pub redis: ConnectionConfig,
    /// `scaleReads`. Default master.
    pub scale_reads: ScaleReads,
    /// `natMap`: announced address -> reachable address.
    pub nat_map: Vec<((String, u16), (String, u16))>,
    /// `maxRedirections`: retries of a command (MOVED, ASK, TRYAGAIN, failover). Default 16.
    pub max_redirections: u32,
    /// The shortest pause between those retries: the least of `retryDelayOnFailover`,
    /// `retryDelayOnClusterDown` and `retryDelayOnTryAgain`. Default 100 ms.
    pub retry_delay: Duration,
    /// Commands issued before the cluster is reachable wait. Default true.
    pub enable_offline_queue: bool,
    /// Connect on the first command. Default false.
    pub lazy_connect: bool,
}

/// ioredis ClusterOptions with no effect here (README says why).
const CLUSTER_NO_OP_OPTIONS: &[&str] = &[
    "enableReadyCheck",
    "slotsRefreshTimeout",
    "slotsRefreshInterval",
    "enableAutoPipelining",
    "autoPipeliningIgnoredPrefixes",
    "showFriendlyErrorStack",
    "useSRVRecords",
];

/// ClusterOptions we refuse, with what to do instead.
const CLUSTER_UNSUPPORTED_OPTIONS: &[(&str, &str)] = &[
    (
        "dnsLookup",
        "a custom dnsLookup is not supported; use natMap",
    ),
    ("scripts", "scripts (defineCommand) are not supported"),
    (
        "keyPrefix",
        "a connection-level keyPrefix is not supported; set the adapter's keyPrefix",
    ),
    ("resolveSrv", "SRV records are not supported"),
];

/// The redisOptions a cluster node connection takes.
const CLUSTER_REDIS_OPTIONS: &[&str] = &[
    "username",
    "password",
    "tls",
    "db",
    "connectTimeout",
    "commandTimeout",
    "keepAlive",
    "noDelay",
    "maxRetriesPerRequest",
];

/// The keys of the cluster shape beside the adapter's own.
const CLUSTER_SHAPE: &[&str] = &["nodes", "options"];

impl ClusterConfig {
    fn from_parts(nodes: &Value, options: Option<&Value>) -> Result<Self> {
        let nodes = match nodes {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, n)| cluster_node(n, i))
                .collect::<Result<Vec<_>>>()?,
            other => {
                return Err(Error::config(format!(
                    "option `nodes` must be a non-empty array of {{ host, port }}, ports or \"host:port\" strings, got {}",
                    describe(other)
                )))
            }
        };
        let empty = Map::new();
        let o = match options {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `options` must be an object of ioredis ClusterOptions, got {}",
                    describe(other)
                )))
            }
        };
        const KNOWN: &[&str] = &[
            "redisOptions",
            "scaleReads",
            "natMap",
            "maxRedirections",
            "retryDelayOnFailover",
            "retryDelayOnClusterDown",
            "retryDelayOnTryAgain",
            "enableOfflineQueue",
            "lazyConnect",
            "clusterRetryStrategy",
        ];
        for key in o.keys() {
            if let Some((_, why)) = CLUSTER_UNSUPPORTED_OPTIONS.iter().find(|(k, _)| k == key) {
                return Err(Error::config(format!("option `options.{key}`: {why}")));
            }
            if !KNOWN.contains(&key.as_str()) && !CLUSTER_NO_OP_OPTIONS.contains(&key.as_str()) {
                return Err(Error::config(format!(
                    "unknown option `options.{key}` (see README for the ClusterOptions supported)"
                )));
            }
        }
        let r = Reader(o);
        r.named_function("clusterRetryStrategy", "options.")?;
        let redis = match o.get("redisOptions") {
            None | Some(Value::Null) => ConnectionConfig::default(),
            Some(Value::Object(ro)) => {
                for key in ro.keys() {
                    if !CLUSTER_REDIS_OPTIONS.contains(&key.as_str())
                        && !NO_OP_OPTIONS.contains(&key.as_str())
                    {
                        return Err(Error::config(format!(
                            "option `options.redisOptions.{key}` is not supported for cluster nodes (supported: {})",
                            CLUSTER_REDIS_OPTIONS.join(", ")
                        )));
                    }
                }
                ConnectionConfig::from_reader(&Reader(ro))?
            }
            Some(other) => {
                return Err(Error::config(format!(
                    "option `options.redisOptions` must be an object, got {}",
                    describe(other)
                )))
            }
        };
        if redis.db != 0 {
            return Err(Error::config(
                "option `options.redisOptions.db` must be 0: Redis Cluster has only database 0",
            ));
        }
        let scale_reads = match r.string("scaleReads")?.as_deref() {
            None | Some("master") => ScaleReads::Master,
            Some("slave") => ScaleReads::Replicas,
            Some("all") => ScaleReads::All,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `options.scaleReads` must be 'master', 'slave' or 'all', got {other:?}"
                )))
            }
        };
        let nat_map = match o.get("natMap") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(from, to)| {
                    let bad = || {
                        Error::config(format!(
                            "option `options.natMap` maps \"host:port\" to {{ host, port }}; entry {from:?} is wrong"
                        ))
                    };
                    let from = split_host_port(from).ok_or_else(bad)?;
                    let host = to.get("host").and_then(Value::as_str).ok_or_else(bad)?;
                    let port = to
                        .get("port")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(bad)?;
                    Ok((from, (host.to_owned(), port)))
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `options.natMap` must be an object, got {}",
                    describe(other)
                )))
            }
        };
        let named = r.as_named_with("options.");
        let delays = [
            "retryDelayOnFailover",
            "retryDelayOnClusterDown",
            "retryDelayOnTryAgain",
        ]
        .iter()
        .map(|k| named.millis(k, 0))
        .collect::<Result<Vec<_>>>()?;
        let retry_delay = delays
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_millis(100));
        Ok(ClusterConfig {
            nodes,
            redis,
            scale_reads,
            nat_map,
            max_redirections: named
                .integer("maxRedirections", 0, 1000)?
                .map_or(16, |n| n as u32),
            retry_delay,
            enable_offline_queue: named.bool("enableOfflineQueue")?.unwrap_or(true),
            lazy_connect: named.bool("lazyConnect")?.unwrap_or(false),
        })
    }
}

/// `"host:port"` (the last colon splits, so IPv6 hosts keep theirs).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// One startup node: `{ host, port }`, a port, `"host:port"` or a redis:// URL.
fn cluster_node(v: &Value, i: usize) -> Result<(String, u16)> {
    let bad = || {
        Error::config(format!(
            "option `nodes[{i}]` must be {{ host, port }}, a port or \"host:port\", got {}",
            describe(v)
        ))
    };
    match v {
        Value::Number(n) => {
            let port = n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(bad)?;
            Ok(("localhost".to_owned(), port))
        }
        Value::String(s) if s.contains("://") => {
            let mut c = ConnectionConfig::default();
            c.apply_url(s).map_err(|_| bad())?;
            match c.addr {
                Addr::Tcp { host, port } => Ok((host, port)),
                Addr::Unix(_) => Err(bad()),
            }
        }
        Value::String(s) => split_host_port(s)
            .or_else(|| {
                s.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(|p| ("localhost".to_owned(), p))
            })
            .ok_or_else(bad),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "host" | "port")) {
                return Err(Error::config(format!(
                    "option `nodes[{i}].{k}` is not supported (host, port)"
                )));
            }
            let r = Reader(o);
            let in_node = |e: Error| Error::config(format!("option `nodes[{i}]`: {}", e.message()));
            let host = r
                .string("host")
                .map_err(in_node)?
                .unwrap_or_else(|| "localhost".to_owned());
            let port = r.port("port").map_err(in_node)?.unwrap_or(6379);
            Ok((host, port))
        }
        _ => Err(bad()),
    }
}

impl BackendConfig {
    /// A client's options: RedisOptions, or `{ nodes, options }` for a cluster.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` naming the first wrong option.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|_| Error::config("options must be a plain object"))?;
        match &value {
            Value::Object(obj) if obj.contains_key("nodes") => {
                if let Some(k) = obj.keys().find(|k| !CLUSTER_SHAPE.contains(&k.as_str())) {
                    return Err(Error::config(format!(
                        "unknown option `{k}` beside `nodes` (a cluster takes {{ nodes, options }})"
                    )));
                }
                Ok(BackendConfig::Cluster(ClusterConfig::from_parts(
                    &obj["nodes"],
                    obj.get("options"),
                )?))
            }
            _ => ConnectionConfig::from_json(json).map(BackendConfig::Standalone),
        }
    }

    /// A cluster's settings, or `None` for one server.
    pub fn cluster(&self) -> Option<&ClusterConfig> {
        match self {
            BackendConfig::Cluster(c) => Some(c),
            BackendConfig::Standalone(_) => None,
        }
    }
}

/// Default cache key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "alova:";

/// ioredis options that have no effect here, accepted so that existing option objects keep
/// working. README lists each with the reason.
const NO_OP_OPTIONS: &[&str] = &[
    "family",
    "showFriendlyErrorStack",
    "enableReadyCheck",
    "autoResubscribe",
    "enableAutoPipelining",
    "autoPipeliningIgnoredPrefixes",
    "stringNumbers",
    "disconnectTimeout",
    "maxLoadingRetryTime",
    "offlineQueue",
];

/// ioredis options that change behaviour we do not offer: refused with a clear error.
const UNSUPPORTED_OPTIONS: &[(&str, &str)] = &[
    ("sentinels", "Redis Sentinel is not supported"),
    ("name", "Redis Sentinel (name) is not supported"),
    ("role", "Redis Sentinel (role) is not supported"),
    ("sentinelPassword", "Redis Sentinel is not supported"),
    ("Connector", "a custom Connector is not supported"),
    ("reconnectOnError", "reconnectOnError is not supported"),
    ("scripts", "scripts (defineCommand) are not supported"),
    ("monitor", "monitor mode is not supported"),
    (
        "readOnly",
        "readOnly applies to cluster replicas and is not supported here",
    ),
    (
        "socketTimeout",
        "socketTimeout is not supported; use commandTimeout",
    ),
];

/// The adapter's own keys, beside the connection's.
const ADAPTER_OPTIONS: &[&str] = &[
    "keyPrefix",
    "redlockOptions",
    "redlockFilter",
    "redlockTTL",
    "redlockNodes",
    "spreadKeys",
];

const CONNECTION_OPTIONS: &[&str] = &[
    "url",
    "host",
    "port",
    "path",
    "username",
    "password",
    "db",
    "tls",
    "connectTimeout",
    "commandTimeout",
    "connectionName",
    "keepAlive",
    "noDelay",
    "lazyConnect",
    "enableOfflineQueue",
    "maxRetriesPerRequest",
    "retryStrategy",
    "autoResendUnfulfilledCommands",
];

impl AdapterConfig {
    /// Parses the adapter's options from their JSON form (see the module documentation).
    ///
    /// `shared_client` is true when the options carried a native client to share: then no
    /// connection option may be given beside it.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` naming the first wrong option.
    pub fn from_json(json: &str, shared_client: bool) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|_| Error::config("options must be a plain object"))?;
        Self::from_value(&value, shared_client)
    }

    /// Parses the adapter's options from a JSON value.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` naming the first wrong option.
    pub fn from_value(value: &Value, shared_client: bool) -> Result<Self> {
        let obj = match value {
            Value::Object(obj) => obj,
            Value::Null => &Map::new(),
            other => {
                return Err(Error::config(format!(
                    "options must be an object, got {}",
                    describe(other)
                )))
            }
        };
        let cluster = obj.contains_key("nodes");
        for key in obj.keys() {
            if cluster {
                if !CLUSTER_SHAPE.contains(&key.as_str())
                    && !ADAPTER_OPTIONS.contains(&key.as_str())
                {
                    return Err(Error::config(format!(
                        "option `{key}` does not go beside `nodes`: a cluster takes {{ nodes, options }} (connection settings go in options.redisOptions)"
                    )));
                }
                continue;
            }
            if let Some((_, why)) = UNSUPPORTED_OPTIONS.iter().find(|(k, _)| k == key) {
                return Err(Error::config(format!("option `{key}`: {why}")));
            }
            let known = ADAPTER_OPTIONS.contains(&key.as_str())
                || CONNECTION_OPTIONS.contains(&key.as_str())
                || NO_OP_OPTIONS.contains(&key.as_str());
            if !known {
                return Err(Error::config(format!(
                    "unknown option `{key}`: expected ioredis RedisOptions, {{ nodes, options }} or {{ client }} (see README)"
                )));
            }
            if key == "options" {
                return Err(Error::config(
                    "option `options` belongs to the cluster shape { nodes, options }",
                ));
            }
            if shared_client && CONNECTION_OPTIONS.contains(&key.as_str()) {
                return Err(Error::config(format!(
                    "option `{key}` cannot be combined with `client`: the client's connection is shared"
                )));
            }
        }
        let r = Reader(obj);
        let key_prefix = r
            .string("keyPrefix")?
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let mut lock = match obj.get("redlockOptions") {
            None | Some(Value::Null) => LockConfig::default(),
            Some(Value::Object(o)) => LockConfig::from_object(o)?,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `redlockOptions` must be an object, got {}",
                    describe(other)
                )))
            }
        };
        if let Some(ttl) = r.millis("redlockTTL", 1)? {
            lock.ttl = ttl;
        }
        let lock_nodes = match obj.get("redlockNodes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(nodes)) if !nodes.is_empty() => nodes
                .iter()
                .enumerate()
                .map(|(i, node)| ConnectionConfig::lock_node(node, i))
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::config(format!(
                    "option `redlockNodes` must be a non-empty array of RedisOptions or redis:// URLs, got {}",
                    describe(other)
                )))
            }
        };
        if shared_client && cluster {
            return Err(Error::config(
                "options `nodes` and `client` cannot be combined: the client's connection is shared",
            ));
        }
        let backend = if shared_client {
            None
        } else if cluster {
            let config = ClusterConfig::from_parts(&obj["nodes"], obj.get("options"))?;
            if lock.db != 0 {
                return Err(Error::config(
                    "option `redlockOptions.db` must be 0 on a cluster: Redis Cluster has only database 0",
                ));
            }
            Some(BackendConfig::Cluster(config))
        } else {
            Some(BackendConfig::Standalone(ConnectionConfig::from_reader(
                &r,
            )?))
        };
        let retry_key = if cluster { None } else { Some("retryStrategy") };
        Ok(AdapterConfig {
            backend,
            spread_keys: r.bool("spreadKeys")?.unwrap_or(false),
            key_prefix,
            lock,
            lock_nodes,
            has_retry_strategy: match retry_key {
                Some(key) => r.function(key)?,
                None => obj
                    .get("options")
                    .and_then(Value::as_object)
                    .map(|o| Reader(o).function("clusterRetryStrategy"))
                    .transpose()?
                    .unwrap_or(false),
            },
            has_redlock_filter: r.function("redlockFilter")?,
        })
    }
}

impl ConnectionConfig {
    /// Parses connection options alone (for a client created without an adapter).
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` naming the first wrong option.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|_| Error::config("options must be a plain object"))?;
        match &value {
            Value::Object(obj) => {
                for key in obj.keys() {
                    if !CONNECTION_OPTIONS.contains(&key.as_str())
                        && !NO_OP_OPTIONS.contains(&key.as_str())
                    {
                        return Err(Error::config(format!("unknown option `{key}`")));
                    }
                }
                Reader(obj).function("retryStrategy")?;
                Self::from_reader(&Reader(obj))
            }
            Value::Null => Ok(Self::default()),
            other => Err(Error::config(format!(
                "options must be an object, got {}",
                describe(other)
            ))),
        }
    }

    /// One entry of `redlockNodes`: connection options or a URL.
    fn lock_node(value: &Value, index: usize) -> Result<Self> {
        let obj = match value {
            Value::String(url) => {
                return Self::from_reader(&Reader(&Map::from_iter([(
                    "url".to_owned(),
                    Value::String(url.clone()),
                )])))
            }
            Value::Object(obj) => obj,
            other => {
                return Err(Error::config(format!(
                    "option `redlockNodes[{index}]` must be RedisOptions or a redis:// URL, got {}",
                    describe(other)
                )))
            }
        };
        for key in obj.keys() {
            let allowed = (CONNECTION_OPTIONS.contains(&key.as_str()) && key != "retryStrategy")
                || NO_OP_OPTIONS.contains(&key.as_str());
            if !allowed {
                return Err(Error::config(format!(
                    "option `redlockNodes[{index}].{key}` is not supported"
                )));
            }
        }
        Self::from_reader(&Reader(obj))
    }

    fn from_reader(r: &Reader<'_>) -> Result<Self> {
        let mut c = ConnectionConfig::default();
        if let Some(url) = r.string("url")? {
            c.apply_url(&url)?;
        }
        if let Some(host) = r.string("host")? {
            if host.is_empty() {
                return Err(Error::config("option `host` must not be empty"));
            }
            let port = match &c.addr {
                Addr::Tcp { port, .. } => *port,
                Addr::Unix(_) => 6379,
            };
            c.addr = Addr::Tcp { host, port };
        }
        if let Some(port) = r.port("port")? {
            if let Addr::Tcp { port: p, .. } = &mut c.addr {
                *p = port;
            } else {
                c.addr = Addr::Tcp {
                    host: "localhost".into(),
                    port,
                };
            }
        }
        if let Some(path) = r.string("path")? {
            if path.is_empty() {
                return Err(Error::config("option `path` must not be empty"));
            }
            c.addr = Addr::Unix(path.into());
        }
        if let Some(username) = r.string("username")? {
            c.username = Some(username).filter(|u| !u.is_empty());
        }
        if let Some(password) = r.string("password")? {
            c.password = Some(Secret(password)).filter(|p| !p.0.is_empty());
        }
        if let Some(db) = r.integer("db", 0, i64::from(i32::MAX))? {
            c.db = db;
        }
        match r.get("tls") {
            None => {}
            Some(Value::Bool(true)) => c.tls = Some(TlsConfig::enabled()),
            Some(Value::Bool(false)) => c.tls = None,
            Some(Value::Object(o)) => c.tls = Some(TlsConfig::from_object(o)?),
            Some(other) => {
                return Err(Error::config(format!(
                    "option `tls` must be true or an object {{ ca, cert, key, rejectUnauthorized, servername }}, got {}",
                    describe(other)
                )))
            }
        }
        if matches!(c.addr, Addr::Unix(_)) && c.tls.is_some() {
            return Err(Error::config(
                "option `tls` cannot be used with a unix socket `path`",
            ));
        }
        if let Some(t) = r.millis("connectTimeout", 0)? {
            c.connect_timeout = Some(t).filter(|t| !t.is_zero());
        }
        if let Some(t) = r.millis("commandTimeout", 1)? {
            c.command_timeout = Some(t);
        }
        if let Some(name) = r.string("connectionName")? {
            if name.chars().any(|ch| ch == ' ' || ch.is_control()) {
                return Err(Error::config(
                    "option `connectionName` must not contain spaces or control characters",
                ));
            }
            c.connection_name = Some(name).filter(|n| !n.is_empty());
        }
        match r.get("keepAlive") {
            None => {}
            Some(Value::Bool(b)) => c.keep_alive = b.then_some(Duration::ZERO),
            Some(_) => c.keep_alive = r.millis("keepAlive", 0)?.filter(|d| !d.is_zero()),
        }
        if let Some(b) = r.bool("noDelay")? {
            c.no_delay = b;
        }
        if let Some(b) = r.bool("lazyConnect")? {
            c.lazy_connect = b;
        }
        if let Some(b) = r.bool("enableOfflineQueue")? {
            c.enable_offline_queue = b;
        }
        if let Some(b) = r.bool("autoResendUnfulfilledCommands")? {
            c.resend_unfulfilled = b;
        }
        match r.0.get("maxRetriesPerRequest") {
            None => {}
            Some(Value::Null) => c.max_retries_per_request = None,
            Some(_) => {
                c.max_retries_per_request = r
                    .integer("maxRetriesPerRequest", 0, i64::from(u32::MAX))?
                    .map(|n| n as u32)
            }
        }
        Ok(c)
    }

    /// Applies a `redis://`, `rediss://` or `unix://` URL, or a plain unix socket path.
    fn apply_url(&mut self, url: &str) -> Result<()> {
        if url.starts_with('/') {
            self.addr = Addr::Unix(url.into());
            return Ok(());
        }
        let bad =
            || Error::config("option `url` is not a valid redis://, rediss:// or unix:// URL");
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| bad())?;
        match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                self.addr = Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                }
            }
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                self.addr = Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                };
                self.tls = Some(TlsConfig {
                    reject_unauthorized: !insecure,
                    ..TlsConfig::enabled()
                });
            }
            redis::ConnectionAddr::Unix(path) => self.addr = Addr::Unix(path.clone()),
            _ => return Err(bad()),
        }
        let settings = info.redis_settings();
        self.db = settings.db();
        self.username = settings.username().map(str::to_owned);
        self.password = settings.password().map(|p| Secret(p.to_owned()));
        Ok(())
    }
}

impl TlsConfig {
    fn enabled() -> Self {
        TlsConfig {
            reject_unauthorized: true,
            ..TlsConfig::default()
        }
    }

    fn from_object(o: &Map<String, Value>) -> Result<Self> {
        const KNOWN: &[&str] = &["ca", "cert", "key", "rejectUnauthorized", "servername"];
        if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::config(format!(
                "option `tls.{k}` is not supported (supported: ca, cert, key, rejectUnauthorized, servername)"
            )));
        }
        let r = Reader(o);
        let tls = TlsConfig {
            ca: r.pem("ca", "tls.ca")?,
            cert: r.pem("cert", "tls.cert")?,
            key: r.pem("key", "tls.key")?,
            reject_unauthorized: r.bool("rejectUnauthorized")?.unwrap_or(true),
            servername: r.string("servername")?,
        };
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(Error::config(
                "options `tls.cert` and `tls.key` must be given together",
            ));
        }
        Ok(tls)
    }
}

impl LockConfig {
    fn from_object(o: &Map<String, Value>) -> Result<Self> {
        const KNOWN: &[&str] = &[
            "driftFactor",
            "retryCount",
            "retryDelay",
            "retryJitter",
            "automaticExtensionThreshold",
            "db",
        ];
        if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::config(format!(
                "unknown option `redlockOptions.{k}`"
            )));
        }
        let r = Reader(o).named("redlockOptions.");
        let mut c = LockConfig::default();
        if let Some(f) = r.number("driftFactor")? {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::config(
                    "option `redlockOptions.driftFactor` must be a number in [0, 1)",
                ));
            }
            c.drift_factor = f;
        }
        if let Some(n) = r.integer("retryCount", -1, i64::from(u32::MAX))? {
            c.retry_count = u32::try_from(n).ok();
        }
        if let Some(d) = r.millis("retryDelay", 0)? {
            c.retry_delay = d;
        }
        if let Some(d) = r.millis("retryJitter", 0)? {
            c.retry_jitter = d;
        }
        if let Some(d) = r.millis("automaticExtensionThreshold", 0)? {
            c.automatic_extension_threshold = d;
        }
        if let Some(db) = r.integer("db", 0, i64::from(i32::MAX))? {
            c.db = db;
        }
        Ok(c)
    }
}

/// Reads typed options out of a JSON object, naming the option in every error.
struct Reader<'a>(&'a Map<String, Value>);

/// A reader whose option names carry a prefix (`redlockOptions.`).
struct Named<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Reader<'a> {
    fn named(&self, prefix: &'static str) -> Named<'a> {
        Named {
            obj: self.0,
            prefix,
        }
    }

    fn as_named_with(&self, prefix: &'static str) -> Named<'a> {
        Named {
            obj: self.0,
            prefix,
        }
    }

    fn as_named(&self) -> Named<'a> {
        Named {
            obj: self.0,
            prefix: "",
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        self.as_named().string(key)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.as_named().bool(key)
    }

    fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        self.as_named().integer(key, min, max)
    }

    fn millis(&self, key: &str, min: u64) -> Result<Option<Duration>> {
        self.as_named().millis(key, min)
    }

    fn named_function(&self, key: &str, prefix: &str) -> Result<bool> {
        self.function(key).map_err(|_| {
            Error::config(format!(
                "option `{prefix}{key}` must be a function, got {}",
                self.get(key).map_or("nothing".into(), describe)
            ))
        })
    }

    fn function(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if is_function(v) => Ok(true),
            Some(other) => Err(Error::config(format!(
                "option `{key}` must be a function, got {}",
                describe(other)
            ))),
        }
    }

    /// A port: a number or a numeric string in 1..=65535.
    fn port(&self, key: &str) -> Result<Option<u16>> {
        let bad = |v: &Value| {
            Error::config(format!(
                "option `{key}` must be a port number (1-65535) or a numeric string, got {}",
                describe(v)
            ))
        };
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| bad(v))?,
            Value::String(s) if !s.trim().is_empty() => {
                s.trim().parse::<f64>().map_err(|_| bad(v))?
            }
            _ => return Err(bad(v)),
        };
        if n.fract() != 0.0 || !(1.0..=65535.0).contains(&n) {
            return Err(bad(v));
        }
        Ok(Some(n as u16))
    }

    /// PEM text: a string, or several (an array), joined.
    fn pem(&self, key: &str, name: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Some(other) => Err(Error::config(format!(
                "option `{name}` must be PEM text or a Buffer, got {}",
                describe(other)
            ))),
        }
    }
}

impl Named<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::config(format!(
                "option `{}{key}` must be a string, got {}",
                self.prefix,
                describe(other)
            ))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Error::config(format!(
                "option `{}{key}` must be a boolean, got {}",
                self.prefix,
                describe(other)
            ))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(Error::config(format!(
                "option `{}{key}` must be a finite number, got {}",
                self.prefix,
                describe(other)
            ))),
        }
    }

    fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v.as_f64().filter(|n| n.fract() == 0.0);
        match n {
            Some(n) if n >= min as f64 && n <= max as f64 => Ok(Some(n as i64)),
            _ => Err(Error::config(format!(
                "option `{}{key}` must be an integer from {min} to {max}, got {}",
                self.prefix,
                describe(v)
            ))),
        }
    }

    fn millis(&self, key: &str, min: u64) -> Result<Option<Duration>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(n) if n >= min as f64 && n <= 2_147_483_647.0 => {
                Ok(Some(Duration::from_micros((n * 1000.0).round() as u64)))
            }
            _ => Err(Error::config(format!(
                "option `{}{key}` must be a number of milliseconds >= {min}, got {}",
                self.prefix,
                describe(v)
            ))),
        }
    }
}

fn is_function(v: &Value) -> bool {
    v.get("$fn").is_some_and(|f| f == &Value::Bool(true))
}

/// Describes a value for an error message without echoing long or secret content.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 32 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(o) if is_function(v) => "a function".into(),
        Value::Object(o) => match o.get("$number").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => "an object".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AdapterConfig> {
        AdapterConfig::from_json(json, false)
    }

    fn conn(json: &str) -> ConnectionConfig {
        match parse(json).unwrap().backend {
            Some(BackendConfig::Standalone(c)) => c,
            other => panic!("not standalone: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_iorediss_and_redlocks() {
        let c = parse("{}").unwrap();
        assert_eq!(c.key_prefix, "alova:");
        assert_eq!(c.lock, LockConfig::default());
        assert_eq!(c.lock.ttl, Duration::from_millis(5000));
        let Some(BackendConfig::Standalone(conn)) = c.backend else {
            panic!("standalone by default")
        };
        assert_eq!(conn, ConnectionConfig::default());
        assert_eq!(conn.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(conn.max_retries_per_request, Some(20));
    }

    #[test]
    fn port_takes_numbers_and_numeric_strings() {
        let c = conn(r#"{"host":"127.0.0.1","port":"6380"}"#);
        assert_eq!(
            c.addr,
            Addr::Tcp {
                host: "127.0.0.1".into(),
                port: 6380
            }
        );
        assert_eq!(conn(r#"{"port":7000}"#).addr.to_string(), "localhost:7000");
        for bad in [
            r#""abc""#,
            "0",
            "70000",
            "1.5",
            "true",
            r#"{"$number":"NaN"}"#,
            r#""""#,
        ] {
            let e = parse(&format!(r#"{{"port":{bad}}}"#)).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION");
            assert!(e.message().contains("`port`"), "{e}");
        }
    }

    #[test]
    fn wrong_types_are_named() {
        for (json, name) in [
            (r#"{"db":-1}"#, "`db`"),
            (r#"{"db":"x"}"#, "`db`"),
            (r#"{"tls":"yes"}"#, "`tls`"),
            (r#"{"keyPrefix":5}"#, "`keyPrefix`"),
            (r#"{"connectTimeout":-5}"#, "`connectTimeout`"),
            (r#"{"redlockTTL":0}"#, "`redlockTTL`"),
            (r#"{"redlockTTL":-1}"#, "`redlockTTL`"),
            (
                r#"{"redlockOptions":{"retryCount":-2}}"#,
                "`redlockOptions.retryCount`",
            ),
            (r#"{"retryStrategy":5}"#, "`retryStrategy`"),
            (r#"{"foo":1}"#, "`foo`"),
            (r#"{"sentinels":[]}"#, "Sentinel"),
            (r#"{"reconnectOnError":{"$fn":true}}"#, "reconnectOnError"),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{json}");
            assert!(e.message().contains(name), "{json}: {e}");
        }
        assert!(parse("5").is_err());
        assert!(parse("[]").is_err());
    }

    #[test]
    fn url_form() {
        let c = conn(r#"{"url":"redis://user:p%40ss@10.0.0.1:6390/4"}"#);
        assert_eq!(
            c.addr,
            Addr::Tcp {
                host: "10.0.0.1".into(),
                port: 6390
            }
        );
        assert_eq!(c.db, 4);
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password, Some(Secret("p@ss".into())));
        let tls = conn(r#"{"url":"rediss://h:1"}"#);
        assert!(tls.tls.unwrap().reject_unauthorized);
        assert_eq!(
            conn(r#"{"url":"/tmp/r.sock"}"#).addr,
            Addr::Unix("/tmp/r.sock".into())
        );
        assert_eq!(
            conn(r#"{"url":"unix:///tmp/r.sock"}"#).addr,
            Addr::Unix("/tmp/r.sock".into())
        );
        let e = parse(r#"{"url":"http://user:secret@x"}"#).unwrap_err();
        assert!(!e.message().contains("secret"));
    }

    #[test]
    fn tls_forms() {
        assert!(conn(r#"{"tls":true}"#).tls.unwrap().reject_unauthorized);
        let t = conn(r#"{"tls":{"ca":["A","B"],"rejectUnauthorized":false,"servername":"x"}}"#)
            .tls
            .unwrap();
        assert_eq!(t.ca.as_deref(), Some("A\nB"));
        assert!(!t.reject_unauthorized);
        assert!(parse(r#"{"tls":{"cert":"c"}}"#).is_err());
        assert!(parse(r#"{"tls":{"pfx":"c"}}"#).is_err());
        assert!(parse(r#"{"tls":true,"path":"/x"}"#).is_err());
    }

    #[test]
    fn options_and_no_ops() {
        let c = conn(
            r#"{"path":"/tmp/s","password":"pw","connectTimeout":250,"commandTimeout":100,
                "keepAlive":1000,"lazyConnect":true,"enableOfflineQueue":false,
                "maxRetriesPerRequest":null,"connectionName":"app","family":4}"#,
        );
        assert_eq!(c.addr, Addr::Unix("/tmp/s".into()));
        assert_eq!(c.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.command_timeout, Some(Duration::from_millis(100)));
        assert_eq!(c.keep_alive, Some(Duration::from_millis(1000)));
        assert!(c.lazy_connect && !c.enable_offline_queue);
        assert_eq!(c.max_retries_per_request, None);
        assert_eq!(c.connection_name.as_deref(), Some("app"));
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn shared_client_refuses_connection_options() {
        let c = AdapterConfig::from_json(r#"{"keyPrefix":"p:"}"#, true).unwrap();
        assert!(c.backend.is_none());
        assert!(AdapterConfig::from_json(r#"{"port":1}"#, true).is_err());
    }

    fn cluster(json: &str) -> ClusterConfig {
        match parse(json).unwrap().backend {
            Some(BackendConfig::Cluster(c)) => c,
            other => panic!("not a cluster: {other:?}"),
        }
    }

    #[test]
    fn cluster_shape() {
        let c = cluster(
            r#"{"nodes":[{"host":"10.0.0.1","port":7000},7001,"h:7002","redis://u:p@h2:7003"],
                "options":{"redisOptions":{"password":"pw","connectTimeout":500},"scaleReads":"slave",
                "natMap":{"10.0.0.1:7000":{"host":"127.0.0.1","port":17000}},"maxRedirections":5,
                "retryDelayOnFailover":50,"enableReadyCheck":true},"keyPrefix":"c:"}"#,
        );
        assert_eq!(
            c.nodes,
            vec![
                ("10.0.0.1".into(), 7000),
                ("localhost".into(), 7001),
                ("h".into(), 7002),
                ("h2".into(), 7003)
            ]
        );
        assert_eq!(c.redis.password, Some(Secret("pw".into())));
        assert_eq!(c.redis.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.scale_reads, ScaleReads::Replicas);
        assert_eq!(
            cluster(r#"{"nodes":[1],"options":{"scaleReads":"all"}}"#).scale_reads,
            ScaleReads::All
        );
        assert_eq!(
            c.nat_map,
            vec![(("10.0.0.1".into(), 7000), ("127.0.0.1".into(), 17000))]
        );
        assert_eq!(c.max_redirections, 5);
        assert_eq!(c.retry_delay, Duration::from_millis(50));
        let defaults = cluster(r#"{"nodes":[7000]}"#);
        assert_eq!(
            (defaults.max_redirections, defaults.retry_delay),
            (16, Duration::from_millis(100))
        );
        assert!(
            parse(r#"{"nodes":[7000],"options":{"clusterRetryStrategy":{"$fn":true}}}"#)
                .unwrap()
                .has_retry_strategy
        );
    }

    #[test]
    fn cluster_mistakes_are_named() {
        for (json, name) in [
            (r#"{"nodes":[]}"#, "`nodes`"),
            (r#"{"nodes":"x"}"#, "`nodes`"),
            (r#"{"nodes":[{"host":"h","port":"x"}]}"#, "`port`"),
            (r#"{"nodes":[true]}"#, "`nodes[0]`"),
            (r#"{"nodes":[7000],"host":"h"}"#, "`host`"),
            (r#"{"nodes":[7000],"options":{"foo":1}}"#, "`options.foo`"),
            (
                r#"{"nodes":[7000],"options":{"scaleReads":"x"}}"#,
                "scaleReads",
            ),
            (
                r#"{"nodes":[7000],"options":{"redisOptions":{"db":1}}}"#,
                "db",
            ),
            (
                r#"{"nodes":[7000],"options":{"redisOptions":{"host":"x"}}}"#,
                "redisOptions.host",
            ),
            (
                r#"{"nodes":[7000],"options":{"natMap":{"x":{"host":"h","port":1}}}}"#,
                "natMap",
            ),
            (
                r#"{"nodes":[7000],"options":{"dnsLookup":{"$fn":true}}}"#,
                "dnsLookup",
            ),
            (
                r#"{"nodes":[7000],"redlockOptions":{"db":2}}"#,
                "redlockOptions.db",
            ),
            (r#"{"options":{}}"#, "`options`"),
            (r#"{"nodes":[{"port":70000}]}"#, "`nodes[0]`: option `port`"),
            (
                r#"{"nodes":[7000],"options":{"clusterRetryStrategy":5}}"#,
                "`options.clusterRetryStrategy`",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{json}");
            assert!(e.message().contains(name), "{json}: {e}");
        }
        assert!(AdapterConfig::from_json(r#"{"nodes":[7000]}"#, true).is_err());
    }

    #[test]
    fn lock_nodes() {
        let c =
            parse(r#"{"redlockNodes":["redis://127.0.0.1:7001",{"port":7002,"password":"x"}]}"#)
                .unwrap();
        assert_eq!(c.lock_nodes.len(), 2);
        assert_eq!(c.lock_nodes[0].addr.to_string(), "127.0.0.1:7001");
        assert_eq!(c.lock_nodes[1].addr.to_string(), "localhost:7002");
        for bad in [
            r#"[]"#,
            r#"5"#,
            r#"[5]"#,
            r#"[{"foo":1}]"#,
            r#"[{"port":"x"}]"#,
        ] {
            let e = parse(&format!(r#"{{"redlockNodes":{bad}}}"#)).unwrap_err();
            assert!(
                e.message().contains("redlockNodes") || e.message().contains("`port`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn lock_options() {
        let c = parse(
            r#"{"redlockTTL":1000,"redlockOptions":{"retryCount":-1,"retryDelay":50,"db":2}}"#,
        )
        .unwrap();
        assert_eq!(c.lock.ttl, Duration::from_millis(1000));
        assert_eq!(c.lock.retry_count, None);
        assert_eq!(c.lock.retry_delay, Duration::from_millis(50));
        assert_eq!(c.lock.db, 2);
        assert!(parse(r#"{"redlockOptions":{"driftFactor":2}}"#).is_err());
    }
}
