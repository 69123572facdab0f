//! Options: ioredis `RedisOptions` (and the adapter's own keys) parsed into the core's settings.
//!
//! The JavaScript face hands the options over as JSON, with functions replaced by
//! `{"$fn": true}` and numbers JSON cannot hold (NaN, Infinity, BigInt) by `{"$number": "..."}`,
//! so that every wrong value is reported here, at construction, with the option's name. Defaults
//! are ioredis's (connection) and @sesamecare-oss/redlock's (locks); this file is their one source.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

mod address;
mod parse;
mod read;
pub(crate) mod table;

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
    /// `socketTimeout`: a link on which commands wait and that says nothing for this long is
    /// given up (and made again). Default none.
    pub socket_timeout: Option<Duration>,
    /// The library name sent with `CLIENT SETINFO LIB-NAME` on each connection (with the
    /// version as `LIB-VER`): `alova-storage-redis`, or `alova-storage-redis(tag)` with
    /// `clientInfoTag`; `None` with `disableClientInfo`.
    pub client_info: Option<String>,
    /// Redis Sentinel: the server is the master (or a replica) the sentinels name, not `addr`.
    pub sentinel: Option<Box<SentinelConfig>>,
}

/// ioredis `role` with Sentinel: what the connection connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SentinelRole {
    /// The group's master. Default.
    #[default]
    Master,
    /// A replica that is up (`'slave'`).
    Replica,
}

/// Redis Sentinel settings (ioredis's `sentinels`, `name` and the `sentinel*` options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelConfig {
    /// `sentinels`: the sentinels to ask, in order.
    pub sentinels: Vec<(String, u16)>,
    /// `name`: the group (as the sentinels' `monitor` names it).
    pub name: String,
    /// `role`.
    pub role: SentinelRole,
    /// `sentinelUsername`.
    pub username: Option<String>,
    /// `sentinelPassword`.
    pub password: Option<Secret>,
    /// `sentinelTLS`: TLS to the sentinels.
    pub tls: Option<TlsConfig>,
    /// `sentinelCommandTimeout`: how long a sentinel may take to answer.
    pub command_timeout: Option<Duration>,
    /// `natMap`: the address a sentinel gives -> the address to connect to.
    pub nat_map: NatMap,
    /// `updateSentinels`: add the sentinels a sentinel names. Default true.
    pub update_sentinels: bool,
    /// `preferredSlaves` (array or object form): host, port, priority (lowest first).
    pub preferred_replicas: Vec<(String, u16, i64)>,
    /// `failoverDetector`: follow a failover as soon as a sentinel announces it. Default false.
    pub failover_detector: bool,
    /// `sentinelMaxConnections`: how many sentinels `failoverDetector` listens to. Default 10.
    pub max_connections: usize,
    /// The options that are functions (the binding's JavaScript ones).
    pub hooks: SentinelHooks,
    /// Which options were given as functions (the binding makes hooks of those only).
    pub functions: SentinelFunctions,
}

/// Which Sentinel options were given as functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentinelFunctions {
    /// `sentinelRetryStrategy`.
    pub retry: bool,
    /// `sentinelReconnectStrategy`.
    pub reconnect: bool,
    /// `preferredSlaves`.
    pub pick_replica: bool,
    /// `natMap`.
    pub nat: bool,
}

/// A replica as `sentinel replicas` describes it: its fields (`ip`, `port`, `flags`, ...).
pub type ReplicaRecord = Vec<(String, String)>;

/// Picks a replica among those that are up (`preferredSlaves` as a function): its address, or
/// `None` for a random one.
pub type PickReplica = std::sync::Arc<
    dyn Fn(Vec<ReplicaRecord>) -> crate::retry::BoxFuture<Option<(String, u16)>> + Send + Sync,
>;

/// Maps `"host:port"` as a sentinel gives it to the address to connect to (`natMap` as a
/// function); `None` keeps it.
pub type MapAddress =
    std::sync::Arc<dyn Fn(String) -> crate::retry::BoxFuture<Option<(String, u16)>> + Send + Sync>;

/// The Sentinel options that are functions. They compare equal whatever they hold (settings
/// are compared for what they say, and a function says nothing comparable).
#[derive(Clone, Default)]
pub struct SentinelHooks {
    /// `sentinelRetryStrategy`: the pause before the next attempt when no sentinel gave an
    /// address (instead of `retryStrategy`); `None` from it gives up.
    pub retry: Option<crate::retry::RetryStrategy>,
    /// `sentinelReconnectStrategy`: the pause before `failoverDetector` listens again to a
    /// sentinel it lost; `None` from it stops listening to that one.
    pub reconnect: Option<crate::retry::RetryStrategy>,
    /// `preferredSlaves` as a function.
    pub pick_replica: Option<PickReplica>,
    /// `natMap` as a function.
    pub nat: Option<MapAddress>,
}

impl PartialEq for SentinelHooks {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SentinelHooks {}

impl fmt::Debug for SentinelHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelHooks")
            .field("retry", &self.retry.is_some())
            .field("reconnect", &self.reconnect.is_some())
            .field("pick_replica", &self.pick_replica.is_some())
            .field("nat", &self.nat.is_some())
            .finish()
    }
}

/// The library name `CLIENT SETINFO` gives (ioredis gives `ioredis`).
pub const LIB_NAME: &str = "alova-storage-redis";

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
            socket_timeout: None,
            client_info: Some(LIB_NAME.to_owned()),
            sentinel: None,
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
    pub nat_map: NatMap,
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

impl Default for ClusterConfig {
    /// No nodes yet; ioredis's ClusterOptions defaults (the retry delay is set by the parser:
    /// the least of those given, 100 ms when none is).
    fn default() -> Self {
        ClusterConfig {
            nodes: Vec::new(),
            redis: ConnectionConfig::default(),
            scale_reads: ScaleReads::Master,
            nat_map: Vec::new(),
            max_redirections: 16,
            retry_delay: Duration::MAX,
            enable_offline_queue: true,
            lazy_connect: false,
        }
    }
}

impl ClusterConfig {
    /// Takes `delay` when it is shorter than the retry delay so far.
    fn lower_retry_delay(&mut self, delay: Option<Duration>) {
        if let Some(d) = delay {
            self.retry_delay = self.retry_delay.min(d);
        }
    }
}

impl ConnectionConfig {
    fn set_host(&mut self, host: String, name: &str) -> Result<()> {
        if host.is_empty() {
            return Err(Error::config(format!("option `{name}` must not be empty")));
        }
        let port = match &self.addr {
            Addr::Tcp { port, .. } => *port,
            Addr::Unix(_) => 6379,
        };
        self.addr = Addr::Tcp { host, port };
        Ok(())
    }

    fn set_port(&mut self, port: u16) {
        if let Addr::Tcp { port: p, .. } = &mut self.addr {
            *p = port;
        } else {
            self.addr = Addr::Tcp {
                host: "localhost".into(),
                port,
            };
        }
    }
}

impl TlsConfig {
    fn enabled() -> Self {
        TlsConfig {
            reject_unauthorized: true,
            ..TlsConfig::default()
        }
    }
}

/// `natMap`: announced (host, port) -> reachable (host, port).
pub type NatMap = Vec<((String, u16), (String, u16))>;

/// Default cache key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "alova:";

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
    fn sentinel_options() {
        let Some(BackendConfig::Standalone(c)) = parse(
            r#"{"sentinels":[{"host":"10.0.0.1","port":26380},{"port":26381}],"name":"g","role":"slave","password":"p","sentinelPassword":"sp","sentinelCommandTimeout":300,"tls":true,"natMap":{"10.0.0.5:6379":{"host":"127.0.0.1","port":7000}},"preferredSlaves":[{"ip":"10.0.0.6","port":"6379","prio":2}]}"#,
        )
        .unwrap()
        .backend
        else {
            panic!("a server")
        };
        let s = c.sentinel.as_deref().expect("sentinel settings");
        assert_eq!(
            s.sentinels,
            vec![
                ("10.0.0.1".to_owned(), 26380),
                ("127.0.0.1".to_owned(), 26381)
            ]
        );
        assert_eq!(s.name, "g");
        assert_eq!(s.role, SentinelRole::Replica);
        assert_eq!(s.password, Some(Secret("sp".into())));
        assert_eq!(c.password, Some(Secret("p".into())));
        assert_eq!(s.command_timeout, Some(Duration::from_millis(300)));
        assert!(s.update_sentinels);
        assert_eq!(s.preferred_replicas, vec![("10.0.0.6".to_owned(), 6379, 2)]);
        assert_eq!(s.nat_map.len(), 1);
        // `tls` is for the data nodes only with enableTLSForSentinelMode.
        assert!(c.tls.is_none());
        for (json, name) in [
            (
                r#"{"sentinels":[{"port":1}],"name":"g","role":"x"}"#,
                "role",
            ),
            (r#"{"sentinels":[5],"name":"g"}"#, "sentinels[0]"),
            (
                r#"{"sentinels":[{"port":1}],"name":"g","failoverDetector":1}"#,
                "failoverDetector",
            ),
            (
                r#"{"sentinels":[{"port":1}],"name":"g","sentinelRetryStrategy":5}"#,
                "sentinelRetryStrategy",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{json}");
            assert!(e.message().contains(name), "{json}: {e}");
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
            (r#"{"sentinels":[]}"#, "sentinels"),
            (r#"{"sentinels":[{"port":26379}]}"#, "name"),
            (r#"{"Connector":{"$fn":true}}"#, "Connector"),
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
                r#"{"nodes":[7000],"options":{"dnsLookup":5}}"#,
                "options.dnsLookup",
            ),
            (
                r#"{"nodes":[7000],"redlockOptions":{"db":2}}"#,
                "redlockOptions.db",
            ),
            (r#"{"options":{}}"#, "`options`"),
            (
                r#"{"nodes":[7000],"options":{"redisOptions":{"tls":{"servername":"x"}}}}"#,
                "tls.servername",
            ),
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
