//! Redis Cluster through redis-rs `cluster_async`: building the client from ioredis options,
//! and what a cluster adds to a connection (its masters, commands to one node, its topology).
//!
//! redis-rs keeps a connection per node, follows MOVED/ASK, refreshes the slot map and retries a
//! command through a failover (`maxRedirections` times, pausing from `retryDelayOnFailover` up
//! to 2 s); [`crate::connection::Connection`] adds the ioredis life around it (lazy connect,
//! offline queue, retry strategy for the first connection, status).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, NodeAddress};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Value};

use crate::config::{ClusterConfig, ScaleReads};
use crate::error::{Error, ErrorKind, Result};

/// A node of the cluster as the last topology read showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Host as the cluster announces it (after `natMap`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// A master that serves slots (else a replica).
    pub master: bool,
}

/// Resolves cluster node host names (ioredis's `dnsLookup`; the binding's calls JavaScript).
pub type Resolver = std::sync::Arc<dyn redis::io::AsyncDNSResolver>;

/// A shared [`Resolver`] as redis-rs takes one.
struct SharedResolver(Resolver);

impl redis::io::AsyncDNSResolver for SharedResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        self.0.resolve(host, port)
    }
}

/// The cluster side of a connection: the redis-rs client and the last topology read.
pub struct ClusterTarget {
    /// The startup nodes.
    pub startup: Vec<(String, u16)>,
    /// Retries of a command the cluster answered `CLUSTERDOWN`/`TRYAGAIN`/`MASTERDOWN`.
    pub max_redirections: u32,
    /// The pause before each of those retries.
    pub retry_delay: Duration,
    /// Settings of one startup node alone, to tell why the cluster could not be reached.
    probe: crate::config::ConnectionConfig,
    client: ClusterClient,
    settings: redis::cluster::ClusterConfig,
    nat: HashMap<(String, u16), (String, u16)>,
    topology: Mutex<Vec<ClusterNode>>,
    /// Topology changes not yet told (see [`ClusterTarget::take_changes`]).
    changes: Mutex<Vec<(bool, ClusterNode)>>,
    scale_reads: ScaleReads,
    config: ClusterConfig,
    resolver: Option<Resolver>,
}

/// The redis-rs client builder for `config` (nodes, credentials, TLS, read routing, NAT, and
/// the host name resolver when given).
fn builder(config: &ClusterConfig, resolver: Option<&Resolver>) -> Result<ClusterClientBuilder> {
    let nodes: Vec<redis::ConnectionInfo> = config
        .nodes
        .iter()
        .map(|(host, port)| {
            let addr = match &config.redis.tls {
                None => redis::ConnectionAddr::Tcp(host.clone(), *port),
                Some(tls) => redis::ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: !tls.reject_unauthorized,
                    tls_params: None,
                },
            };
            redis::IntoConnectionInfo::into_connection_info(addr)
        })
        .collect::<redis::RedisResult<_>>()
        .map_err(|_| Error::config("option `nodes`: invalid node address"))?;
    let r = &config.redis;
    let mut builder = ClusterClientBuilder::new(nodes)
        .retries(config.max_redirections)
        .min_retry_wait(config.retry_delay.as_millis() as u64)
        .max_retry_wait(2000)
        .tcp_settings(crate::settings::tcp_settings(r));
    if let Some(user) = &r.username {
        builder = builder.username(user);
    }
    if let Some(password) = &r.password {
        builder = builder.password(&password.0);
    }
    if let Some(tls) = &r.tls {
        builder = builder.tls(if tls.reject_unauthorized {
            redis::cluster::TlsMode::Secure
        } else {
            redis::cluster::TlsMode::Insecure
        });
        if tls.ca.is_some() || tls.cert.is_some() {
            builder = builder.certs(crate::settings::tls_certificates(tls));
        }
    }
    builder = match config.scale_reads {
        ScaleReads::Master => builder,
        ScaleReads::Replicas => {
            builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy)
        }
        ScaleReads::All => builder.read_routing_strategy(AnyNodeStrategy),
    };
    if !config.nat_map.is_empty() {
        let map = config
            .nat_map
            .iter()
            .map(|((fh, fp), (th, tp))| {
                (
                    NodeAddress::new(fh.as_str(), *fp),
                    NodeAddress::new(th.as_str(), *tp),
                )
            })
            .collect();
        builder = builder.node_address_map(map);
    }
    if let Some(resolver) = resolver {
        builder = builder.async_dns_resolver(SharedResolver(resolver.clone()));
    }
    Ok(builder)
}

impl ClusterTarget {
    /// Builds the client for `config` (nothing is connected yet).
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` when redis-rs refuses the settings (TLS material, nodes).
    pub fn new(config: &ClusterConfig, resolver: Option<Resolver>) -> Result<Self> {
        let r = &config.redis;
        let client = builder(config, resolver.as_ref())?.build().map_err(|_| {
            Error::config("invalid cluster settings (check options.redisOptions.tls and nodes)")
        })?;
        let mut settings = redis::cluster::ClusterConfig::new();
        if let Some(t) = r.connect_timeout {
            settings = settings.set_connection_timeout(t);
        }
        // No response timeout for redis-rs: commandTimeout is the connection's own timer, from
        // the call. redis-rs would retry a command it timed out (and reconnect), and a slot's
        // next command waits for the one before it (see `connection::link`): a server that held
        // one command would then time out every later command of its slots until the retries
        // ran out, instead of until it answers.
        let (host, port) = config.nodes[0].clone();
        Ok(ClusterTarget {
            startup: config.nodes.clone(),
            max_redirections: config.max_redirections,
            retry_delay: config.retry_delay,
            probe: crate::config::ConnectionConfig {
                addr: crate::config::Addr::Tcp { host, port },
                ..config.redis.clone()
            },
            client,
            settings,
            nat: config.nat_map.iter().cloned().collect(),
            topology: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            scale_reads: config.scale_reads,
            config: config.clone(),
            resolver,
        })
    }

    /// A client for subscriptions: RESP3, its pushes (messages, and the library's
    /// disconnections) sent to `pushes`; redis-rs routes `SSUBSCRIBE` to the slot's master and
    /// subscribes again after a reconnection or a slot move.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` when redis-rs refuses the settings.
    pub fn pubsub_client(&self, pushes: impl redis::aio::AsyncPushSender) -> Result<ClusterClient> {
        let mut b = builder(&self.config, self.resolver.as_ref())?
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes);
        if let Some(t) = self.config.redis.connect_timeout {
            b = b.connection_timeout(t);
        }
        b.build()
            .map_err(|_| Error::config("invalid cluster settings"))
    }

    /// Connects to the cluster (reads its slots) and reads its topology.
    ///
    /// # Errors
    /// The connection errors, named for `addr`.
    pub async fn connect(&self, addr: &str) -> Result<ClusterConnection> {
        let mut conn = match self
            .client
            .get_async_connection_with_config(self.settings.clone())
            .await
        {
            Ok(conn) => conn,
            Err(e) => {
                let err = self.diagnose(Error::from_redis(&e, addr)).await;
                if err.kind() != ErrorKind::Connection {
                    return Err(err);
                }
                // ioredis's words first: code written for ioredis may look for them.
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("None of startup nodes is available ({})", err.message()),
                ));
            }
        };
        self.refresh(&mut conn, addr).await?;
        Ok(conn)
    }

    /// redis-rs reports a cluster it could not reach as a lost connection, whatever the cause;
    /// one startup node, asked alone, tells a refused password apart.
    async fn diagnose(&self, err: Error) -> Error {
        if err.kind() != ErrorKind::Connection {
            return err;
        }
        let Ok(client) = crate::settings::build_client(&self.probe) else {
            return err;
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.probe.connect_timeout.or(Some(Duration::from_secs(1))));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Err(probe) if matches!(Error::from_redis(&probe, "").kind(), ErrorKind::Auth) => {
                Error::from_redis(&probe, &self.probe.addr.to_string())
            }
            _ => err,
        }
    }

    /// Reads `CLUSTER NODES` from any node and keeps it as the topology.
    ///
    /// # Errors
    /// The command's errors; `ERR_PROTOCOL` for a reply that is not a node table.
    pub async fn refresh(
        &self,
        conn: &mut ClusterConnection,
        addr: &str,
    ) -> Result<Vec<ClusterNode>> {
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| Error::from_redis(&e, addr))?;
        let text = match reply {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "CLUSTER NODES returned no table",
                ))
            }
        };
        let nodes: Vec<ClusterNode> = parse_cluster_nodes(&text)
            .into_iter()
            .map(|mut n| {
                if let Some((h, p)) = self.nat.get(&(n.host.clone(), n.port)) {
                    n.host = h.clone();
                    n.port = *p;
                }
                n
            })
            .collect();
        if let Ok(mut t) = self.topology.lock() {
            let same = |a: &ClusterNode, b: &ClusterNode| a.host == b.host && a.port == b.port;
            let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            changes.extend(
                nodes
                    .iter()
                    .filter(|n| !t.iter().any(|o| same(o, n)))
                    .map(|n| (true, n.clone())),
            );
            changes.extend(
                t.iter()
                    .filter(|o| !nodes.iter().any(|n| same(o, n)))
                    .map(|o| (false, o.clone())),
            );
            t.clone_from(&nodes);
        }
        Ok(nodes)
    }

    /// The nodes that appeared (`true`) or went (`false`) in the topology reads since the last
    /// call, in order: for ioredis's `+node` and `-node` events.
    pub fn take_changes(&self) -> Vec<(bool, ClusterNode)> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when every command goes to a master (`scaleReads: 'master'`).
    pub fn reads_from_masters(&self) -> bool {
        self.scale_reads == ScaleReads::Master
    }

    /// For a cluster whose commands can go on our own pipes to its masters (plain TCP, no
    /// `dnsLookup`, every command to a master): its `natMap`. `None` otherwise.
    pub(crate) fn direct_lane(&self) -> Option<HashMap<(String, u16), (String, u16)>> {
        let plain = self.config.redis.tls.is_none() && self.resolver.is_none();
        (plain && self.reads_from_masters()).then(|| self.nat.clone())
    }

    /// The topology of the last read.
    pub fn topology(&self) -> Vec<ClusterNode> {
        self.topology.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// ioredis `scaleReads: 'all'`: a read goes to a random node of its slot, master or replica.
#[derive(Debug, Default)]
struct AnyNodeStrategy;

impl redis::cluster_read_routing::ReadRoutingStrategy for AnyNodeStrategy {
    fn route_read<'a>(
        &self,
        candidates: &redis::cluster_read_routing::ReadCandidates<'a>,
    ) -> &'a NodeAddress {
        use redis::cluster_read_routing::ReadCandidates;
        match candidates {
            ReadCandidates::AnyNode(c) => {
                let replicas = c.replicas();
                let pick = crate::lock::random_u64() as usize % (replicas.len().get() + 1);
                if pick == 0 {
                    c.primary()
                } else {
                    replicas.get(pick - 1).unwrap_or_else(|| replicas.first())
                }
            }
            ReadCandidates::ReplicasOnly(c) => c.replicas().choose_random(),
        }
    }
}

/// The commands redis-rs would split by slot, with where their keys are: every argument, or
/// every other one (key-value pairs).
fn split_keys(name: &[u8]) -> Option<usize> {
    const EVERY: &[&[u8]] = &[b"MGET", b"DEL", b"EXISTS", b"UNLINK", b"TOUCH", b"WATCH"];
    if EVERY.iter().any(|c| c.eq_ignore_ascii_case(name)) {
        Some(1)
    } else if name.eq_ignore_ascii_case(b"MSET") {
        Some(2)
    } else {
        None
    }
}

/// For a multi-key command whose keys span slots: the first key's slot. redis-rs would split
/// such a command and send a part to each slot (an `MSET` then half-applied when a node fails);
/// sending it whole to one slot instead makes the server answer `CROSSSLOT`, as Redis and
/// ioredis do.
pub fn cross_slot(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let step = split_keys(args.next()?)?;
    let mut slots = args.step_by(step).map(crate::codec::key_slot);
    let first = slots.next()?;
    slots.any(|s| s != first).then_some(first)
}

/// The slot of a command packed as RESP, as the cluster routes it: its first key (the first
/// argument, or the first of `numkeys` keys for scripts and functions, or the first stream of
/// `XREAD`); `None` for a command without one.
pub fn command_slot(packed: &[u8]) -> Option<u16> {
    const KEYLESS: &[&[u8]] = &[
        b"PING",
        b"INFO",
        b"TIME",
        b"DBSIZE",
        b"RANDOMKEY",
        b"SCAN",
        b"CLUSTER",
        b"CONFIG",
        b"CLIENT",
        b"SCRIPT",
        b"FUNCTION",
        b"QUIT",
        b"ECHO",
        b"COMMAND",
        b"FLUSHALL",
        b"FLUSHDB",
        b"KEYS",
        b"PUBLISH",
        b"SPUBLISH",
    ];
    let args = crate::resp::args(packed)?;
    let name = *args.first()?;
    let is = |words: &[&[u8]]| words.iter().any(|w| w.eq_ignore_ascii_case(name));
    let key: &[u8] = if is(&[
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ]) {
        let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
        if numkeys == 0 {
            return None;
        }
        args.get(3)?
    } else if is(&[b"XREAD", b"XREADGROUP"]) {
        let at = args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
        args.get(at + 1)?
    } else if is(&[b"OBJECT", b"MEMORY", b"XINFO", b"XGROUP", b"BITOP"]) {
        // A subcommand (or operation) first, then the key.
        args.get(2)?
    } else if is(KEYLESS) {
        return None;
    } else {
        args.get(1)?
    };
    Some(crate::codec::key_slot(key))
}

/// Sends `cmd` whole to the master of `slot`.
///
/// # Errors
/// The command's errors.
pub async fn send_to_slot(
    conn: &mut ClusterConnection,
    slot: u16,
    cmd: &Cmd,
) -> redis::RedisResult<Value> {
    use redis::cluster_routing::{Route, SlotAddr};
    conn.route_command(
        cmd.clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        ))),
    )
    .await
}

/// Sends `cmd` to the node at `host:port`.
///
/// # Errors
/// The command's errors.
pub async fn send_to(
    conn: &mut ClusterConnection,
    host: &str,
    port: u16,
    cmd: &Cmd,
) -> redis::RedisResult<Value> {
    conn.route_command(
        cmd.clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        }),
    )
    .await
}

/// The nodes of a `CLUSTER NODES` table that are connected and not failing.
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8 {
                return None;
            }
            let flags = fields[2];
            if flags.contains("fail") || flags.contains("handshake") || flags.contains("noaddr") {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let address = fields[1].split(',').next()?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            let master = flags.split(',').any(|f| f == "master");
            // A master without slots serves nothing.
            if master && fields.len() < 9 {
                return None;
            }
            Some(ClusterNode {
                host: host.to_owned(),
                port,
                master,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_key_commands_across_slots() {
        let cmd = |words: &[&str]| {
            let mut c = Cmd::new();
            for w in words {
                c.arg(*w);
            }
            c
        };
        assert_eq!(cross_slot(&cmd(&["MGET", "{a}1", "{a}2"])), None);
        assert!(cross_slot(&cmd(&["MGET", "a", "b"])).is_some());
        assert_eq!(cross_slot(&cmd(&["MSET", "{a}1", "x", "{a}2", "y"])), None);
        assert!(cross_slot(&cmd(&["mset", "a", "x", "b", "y"])).is_some());
        assert_eq!(cross_slot(&cmd(&["GET", "a"])), None);
        assert_eq!(cross_slot(&cmd(&["DEL", "a"])), None);
    }

    #[test]
    fn the_slot_of_a_command_is_its_first_key() {
        let packed = |words: &[&str]| {
            let words: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
            crate::resp::encode(&words)
        };
        let slot = |k: &str| Some(crate::codec::key_slot(k.as_bytes()));
        assert_eq!(command_slot(&packed(&["SET", "k", "v"])), slot("k"));
        assert_eq!(command_slot(&packed(&["get", "{t}a"])), slot("t"));
        assert_eq!(
            command_slot(&packed(&["EVAL", "x", "2", "a", "b", "v"])),
            slot("a")
        );
        assert_eq!(command_slot(&packed(&["evalsha", "x", "0", "v"])), None);
        assert_eq!(
            command_slot(&packed(&["XREAD", "COUNT", "1", "streams", "s", "0"])),
            slot("s")
        );
        assert_eq!(command_slot(&packed(&["PING"])), None);
        assert_eq!(
            command_slot(&packed(&["OBJECT", "ENCODING", "k"])),
            slot("k")
        );
        assert_eq!(
            command_slot(&packed(&["BITOP", "AND", "{t}d", "{t}s"])),
            slot("t")
        );
        assert_eq!(command_slot(&packed(&["ping", "hello"])), None);
    }

    #[test]
    fn reads_cluster_nodes() {
        let table = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 127.0.0.1:30009@31009 master - 0 0 9 connected
";
        let nodes = parse_cluster_nodes(table);
        let masters: Vec<u16> = nodes.iter().filter(|n| n.master).map(|n| n.port).collect();
        let replicas: Vec<u16> = nodes.iter().filter(|n| !n.master).map(|n| n.port).collect();
        assert_eq!(masters, vec![30002, 30003, 30001]);
        assert_eq!(replicas, vec![30004]);
    }
}
