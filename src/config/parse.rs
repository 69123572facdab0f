//! Parsing options with the table: each object's keys are checked against its [`Place`] (an
//! unknown key, a refused option and a wrong type are errors naming the option), then the rows
//! of that place are applied in table order.

use std::time::Duration;

use serde_json::{Map, Value};

use super::address::{cluster_node, split_host_port};
use super::read::{describe, Reader};
use super::table::{find, names, Apply, Effect, Place, Setter, OPTIONS};
use super::{
    AdapterConfig, Addr, BackendConfig, ClusterConfig, ConnectionConfig, LockConfig, NatMap,
    SentinelConfig, SentinelRole, TlsConfig, DEFAULT_KEY_PREFIX,
};
use crate::error::{Error, Result};

/// Checks every key of `r` against `places` (the first that knows it decides): a refused
/// option and a function that is not one are errors, an unknown key is `unknown(key)`.
fn check_keys(r: &Reader<'_>, places: &[Place], unknown: impl Fn(&str) -> Error) -> Result<()> {
    for key in r.obj.keys() {
        let Some(opt) = places.iter().find_map(|p| find(*p, key)) else {
            return Err(unknown(key));
        };
        match opt.effect {
            Effect::Refused(why) => {
                return Err(Error::config(format!("option `{}`: {why}", r.name(key))))
            }
            Effect::Applied(Apply::Function) => {
                r.function(key)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies the rows of `place` present in `r` to `target`, in table order.
fn apply<T>(
    r: &Reader<'_>,
    place: Place,
    target: &mut T,
    pick: fn(Apply) -> Option<Setter<T>>,
) -> Result<()> {
    for opt in OPTIONS.iter().filter(|o| o.places.contains(&place)) {
        if r.raw(opt.name).is_none() {
            continue;
        }
        if let Effect::Applied(how) = opt.effect {
            if let Some(set) = pick(how) {
                set(target, r, opt.name)?;
            }
        }
    }
    Ok(())
}

fn conn_setter(a: Apply) -> Option<Setter<ConnectionConfig>> {
    match a {
        Apply::Conn(f) => Some(f),
        _ => None,
    }
}

impl ConnectionConfig {
    /// A connection's options at `place` (keys checked by the caller), TLS included.
    fn from_reader(r: &Reader<'_>, place: Place) -> Result<Self> {
        let mut c = ConnectionConfig::default();
        apply(r, place, &mut c, conn_setter)?;
        if let Some(tls) = tls_option(r, "tls")? {
            c.tls = tls;
        }
        if place == Place::Server && r.get("sentinels").is_some() {
            c.sentinel = Some(Box::new(sentinel_config(r)?));
            // ioredis: the data nodes get `tls` only with enableTLSForSentinelMode.
            if r.bool("enableTLSForSentinelMode")? != Some(true) {
                c.tls = None;
            }
        }
        if matches!(c.addr, Addr::Unix(_)) && c.tls.is_some() {
            return Err(Error::config(
                "option `tls` cannot be used with a unix socket `path`",
            ));
        }
        Ok(c)
    }

    /// Parses connection options alone (for a client created without an adapter).
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` naming the first wrong option.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|_| Error::config("options must be a plain object"))?;
        match &value {
            Value::Object(obj) => {
                let r = Reader::new(obj, "");
                check_keys(&r, &[Place::Server], |key| {
                    Error::config(format!("unknown option `{key}`"))
                })?;
                Self::from_reader(&r, Place::Server)
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
        let prefix = format!("redlockNodes[{index}].");
        match value {
            Value::String(url) => {
                let obj = Map::from_iter([("url".to_owned(), Value::String(url.clone()))]);
                Self::from_reader(&Reader::new(&obj, prefix), Place::LockNode)
            }
            Value::Object(obj) => {
                let r = Reader::new(obj, prefix);
                check_keys(&r, &[Place::LockNode], |key| {
                    Error::config(format!("option `{}` is not supported", r.name(key)))
                })?;
                Self::from_reader(&r, Place::LockNode)
            }
            other => Err(Error::config(format!(
                "option `redlockNodes[{index}]` must be RedisOptions or a redis:// URL, got {}",
                describe(other)
            ))),
        }
    }
}

impl TlsConfig {
    fn from_reader(r: &Reader<'_>) -> Result<Self> {
        check_keys(r, &[Place::Tls], |key| {
            Error::config(format!(
                "option `{}` is not supported (supported: {})",
                r.name(key),
                names(Place::Tls).join(", ")
            ))
        })?;
        let mut tls = TlsConfig::enabled();
        apply(r, Place::Tls, &mut tls, |a| match a {
            Apply::Tls(f) => Some(f),
            _ => None,
        })?;
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(Error::config(format!(
                "options `{}` and `{}` must be given together",
                r.name("cert"),
                r.name("key")
            )));
        }
        Ok(tls)
    }
}

impl LockConfig {
    fn from_reader(r: &Reader<'_>) -> Result<Self> {
        check_keys(r, &[Place::Lock], |key| {
            Error::config(format!("unknown option `{}`", r.name(key)))
        })?;
        let mut c = LockConfig::default();
        apply(r, Place::Lock, &mut c, |a| match a {
            Apply::Lock(f) => Some(f),
            _ => None,
        })?;
        Ok(c)
    }
}

/// A `tls` option: `Some(None)` for false, `Some(Some(..))` for true or an object, `None` when
/// absent.
fn tls_option(r: &Reader<'_>, key: &str) -> Result<Option<Option<TlsConfig>>> {
    match r.get(key) {
        None => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(Some(TlsConfig::enabled()))),
        Some(Value::Bool(false)) => Ok(Some(None)),
        Some(Value::Object(o)) => Ok(Some(Some(TlsConfig::from_reader(&Reader::new(
            o,
            r.name(&format!("{key}.")),
        ))?))),
        Some(other) => Err(Error::config(format!(
            "option `{}` must be true or an object {{ ca, cert, key, rejectUnauthorized, servername }}, got {}",
            r.name(key),
            describe(other)
        ))),
    }
}

/// The Sentinel options of a server's options (`sentinels` given).
fn sentinel_config(r: &Reader<'_>) -> Result<SentinelConfig> {
    let Some(Value::Array(list)) = r.get("sentinels") else {
        return Err(Error::config(format!(
            "option `{}` must be an array of {{ host, port }}",
            r.name("sentinels")
        )));
    };
    if list.is_empty() {
        return Err(Error::config(format!(
            "option `{}` needs at least one sentinel",
            r.name("sentinels")
        )));
    }
    let mut sentinels = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(Error::config(format!(
                "option `{}[{i}]` must be {{ host, port }}, got {}",
                r.name("sentinels"),
                describe(item)
            )));
        };
        let one = Reader::new(o, format!("{}[{i}].", r.name("sentinels")));
        let host = one
            .string("host")?
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = one.port("port")?.unwrap_or(26379);
        sentinels.push((host, port));
    }
    let name = r.string("name")?.filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::config(format!(
            "option `{}` (the master group's name, as the sentinels monitor it) is required with `sentinels`",
            r.name("name")
        ))
    })?;
    let role = match r.string("role")?.as_deref() {
        None | Some("master") => SentinelRole::Master,
        Some("slave") => SentinelRole::Replica,
        Some(other) => {
            return Err(Error::config(format!(
                "option `{}` must be 'master' or 'slave', got {other:?}",
                r.name("role")
            )))
        }
    };
    let preferred_replicas = match r.get("preferredSlaves") {
        None => Vec::new(),
        // A function: the binding holds it (`hooks`).
        Some(v) if super::read::is_function(v) => Vec::new(),
        Some(v) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let bad = || {
                    Error::config(format!(
                        "option `{}` must be {{ ip, port, prio }} or an array of them, got {}",
                        r.name("preferredSlaves"),
                        describe(item)
                    ))
                };
                let Value::Object(o) = item else {
                    return Err(bad());
                };
                let one = Reader::new(o, r.name("preferredSlaves."));
                let ip = one.string("ip")?.ok_or_else(bad)?;
                let port = one.port("port")?.ok_or_else(bad)?;
                let prio = one.integer("prio", i64::MIN, i64::MAX)?.unwrap_or(1);
                out.push((ip, port, prio));
            }
            out
        }
    };
    Ok(SentinelConfig {
        sentinels,
        name,
        role,
        username: r.string("sentinelUsername")?,
        password: r.string("sentinelPassword")?.map(super::Secret),
        tls: tls_option(r, "sentinelTLS")?.flatten(),
        command_timeout: r.millis("sentinelCommandTimeout", 1)?,
        // A function: the binding holds it (`hooks`).
        nat_map: match r.get("natMap") {
            Some(v) if super::read::is_function(v) => Vec::new(),
            _ => nat_map(r, "natMap")?,
        },
        update_sentinels: r.bool("updateSentinels")?.unwrap_or(true),
        preferred_replicas,
        failover_detector: r.bool("failoverDetector")?.unwrap_or(false),
        max_connections: r
            .integer("sentinelMaxConnections", 1, 1000)?
            .map_or(10, |n| n as usize),
        hooks: super::SentinelHooks {
            // `sentinelRetryStrategy: null`, as ioredis reads it: no sentinel answering ends the
            // connection ("retry is disabled").
            retry: matches!(r.raw("sentinelRetryStrategy"), Some(Value::Null)).then(|| {
                std::sync::Arc::new(|_| {
                    Box::pin(async { None }) as crate::retry::BoxFuture<Option<Duration>>
                }) as crate::retry::RetryStrategy
            }),
            ..super::SentinelHooks::default()
        },
        functions: super::SentinelFunctions {
            retry: r
                .get("sentinelRetryStrategy")
                .is_some_and(super::read::is_function),
            reconnect: r
                .get("sentinelReconnectStrategy")
                .is_some_and(super::read::is_function),
            pick_replica: r
                .get("preferredSlaves")
                .is_some_and(super::read::is_function),
            nat: r.get("natMap").is_some_and(super::read::is_function),
        },
    })
}

/// `natMap`: `"host:port"` -> `{ host, port }`.
pub(crate) fn nat_map(r: &Reader<'_>, key: &str) -> Result<NatMap> {
    match r.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(from, to)| {
                let bad = || {
                    Error::config(format!(
                        "option `{}` maps \"host:port\" to {{ host, port }}; entry {from:?} is wrong",
                        r.name(key)
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
            .collect(),
        Some(other) => Err(Error::config(format!(
            "option `{}` must be an object, got {}",
            r.name(key),
            describe(other)
        ))),
    }
}

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
        let r = Reader::new(o, "options.");
        check_keys(&r, &[Place::Cluster], |key| {
            Error::config(format!(
                "unknown option `options.{key}` (see README for the ClusterOptions supported)"
            ))
        })?;
        let redis = match r.object("redisOptions")? {
            None => ConnectionConfig::default(),
            Some(ro) => {
                check_keys(&ro, &[Place::Node], |key| {
                    Error::config(format!(
                        "option `{}` is not supported for cluster nodes (supported: {})",
                        ro.name(key),
                        names(Place::Node).join(", ")
                    ))
                })?;
                ConnectionConfig::from_reader(&ro, Place::Node)?
            }
        };
        if redis.db != 0 {
            return Err(Error::config(
                "option `options.redisOptions.db` must be 0: Redis Cluster has only database 0",
            ));
        }
        if redis.tls.as_ref().is_some_and(|t| t.servername.is_some()) {
            // redis-rs connects to each node by the address the cluster announces and checks
            // the node's certificate against that name; it has no other name to check it
            // against, so the option would be silently ignored.
            return Err(Error::config(
                "option `options.redisOptions.tls.servername` is not supported for cluster nodes: each node's certificate is checked against the name the cluster announces for it (use cluster-announce-hostname, or natMap)",
            ));
        }
        let mut c = ClusterConfig {
            nodes,
            redis,
            ..ClusterConfig::default()
        };
        apply(&r, Place::Cluster, &mut c, |a| match a {
            Apply::Cluster(f) => Some(f),
            _ => None,
        })?;
        if c.retry_delay == Duration::MAX {
            c.retry_delay = Duration::from_millis(100);
        }
        Ok(c)
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
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "nodes" | "options"))
                {
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
}

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
        let empty = Map::new();
        let obj = match value {
            Value::Object(obj) => obj,
            Value::Null => &empty,
            other => {
                return Err(Error::config(format!(
                    "options must be an object, got {}",
                    describe(other)
                )))
            }
        };
        let r = Reader::new(obj, "");
        let cluster = obj.contains_key("nodes");
        if cluster {
            check_keys(&r, &[Place::Adapter], |key| {
                Error::config(format!(
                    "option `{key}` does not go beside `nodes`: a cluster takes {{ nodes, options }} (connection settings go in options.redisOptions)"
                ))
            })?;
        } else {
            check_keys(&r, &[Place::Adapter, Place::Server], |key| {
                Error::config(format!(
                    "unknown option `{key}`: expected ioredis RedisOptions, {{ nodes, options }} or {{ client }} (see README)"
                ))
            })?;
            if obj.contains_key("options") {
                return Err(Error::config(
                    "option `options` belongs to the cluster shape { nodes, options }",
                ));
            }
            if shared_client {
                let server_key = obj.keys().find(|k| {
                    find(Place::Adapter, k).is_none()
                        && find(Place::Server, k)
                            .is_some_and(|o| matches!(o.effect, Effect::Applied(_)))
                });
                if let Some(key) = server_key {
                    return Err(Error::config(format!(
                        "option `{key}` cannot be combined with `client`: the client's connection is shared"
                    )));
                }
            }
        }
        if shared_client && cluster {
            return Err(Error::config(
                "options `nodes` and `client` cannot be combined: the client's connection is shared",
            ));
        }
        let lock = match r.object("redlockOptions")? {
            None => LockConfig::default(),
            Some(lr) => LockConfig::from_reader(&lr)?,
        };
        let lock_nodes = match r.get("redlockNodes") {
            None => Vec::new(),
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
                Place::Server,
            )?))
        };
        let has_retry_strategy = if cluster {
            match r.object("options")? {
                Some(o) => o.function("clusterRetryStrategy")?,
                None => false,
            }
        } else {
            r.function("retryStrategy")?
        };
        let mut config = AdapterConfig {
            backend,
            spread_keys: false,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            lock,
            lock_nodes,
            has_retry_strategy,
            has_redlock_filter: r.function("redlockFilter")?,
        };
        apply(&r, Place::Adapter, &mut config, |a| match a {
            Apply::Adapter(f) => Some(f),
            _ => None,
        })?;
        Ok(config)
    }
}
