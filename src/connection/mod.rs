//! A connection to one Redis server, or to a cluster, that behaves as an ioredis user expects.
//!
//! **One ordered queue.** Every command of a connection, whatever its path (the binding's fast
//! path, a lock script, a `client` command), goes through [`Connection::enqueue`], which under one
//! lock either puts it on the live link (which keeps the order it is given, see [`link`]) or, when
//! there is none, at the end of the offline queue. A new link takes the offline queue, in order,
//! before anything else; a command that failed only because its socket broke goes back into the
//! queue at its place by call order (`autoResendUnfulfilledCommands`), and the new link is not
//! used before every command of the old one came back. So one connection's commands reach
//! Redis in the order they were called, through connecting, reconnecting and resending.
//!
//! **Bounded waits.** A connection attempt is bounded by `connectTimeout` as a whole; a command by
//! `commandTimeout` from its call to its reply ([`timer`]); a command waits for a connection for
//! at most `maxRetriesPerRequest` failed attempts, and not at all after an attempt that reached a
//! server that answered garbage or nothing; `quit()`/`disconnect()` settle everything at once.
//!
//! The supervisor ([`connect_loop`]) makes links with the `retryStrategy` backoff; the state is
//! one [`Phase`], in which "ready" cannot exist without a link.

mod link;
pub(crate) mod open;
mod slots;
mod timer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::{AsyncConnectionConfig, Cmd, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::cluster::{ClusterNode, ClusterTarget};
use crate::config::{Addr, ClusterConfig, ConnectionConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{self, Pipe};

use link::Link;
use timer::{Expire, Timer};

pub use crate::retry::{default_retry_strategy, BoxFuture, RetryStrategy};

/// What happens to a connection, named as ioredis names its events (see [`Connection::events`]).
#[derive(Debug, Clone)]
pub enum Event {
    /// A link is up.
    Connect,
    /// Commands flow (right after `Connect`: the handshake includes the ready check).
    Ready,
    /// A connection attempt failed, or a link broke.
    Error(Error),
    /// A link was lost or closed, or an attempt ended without one.
    Close,
    /// The next attempt comes after this delay.
    Reconnecting(Duration),
    /// An attempt after a pause starts (ioredis's `connecting`; the first one is the client's
    /// own, at construction or `connect()`).
    Connecting,
    /// Closed for good: no more attempts.
    End,
    /// A cluster node appeared in the topology (ioredis's `+node`).
    NodeAdded(ClusterNode),
    /// A cluster node left the topology (ioredis's `-node`).
    NodeRemoved(ClusterNode),
}

/// The connection's life, named as ioredis names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `lazyConnect`: nothing done until the first command.
    Wait,
    /// The first connection is being made.
    Connecting,
    /// Connected; commands flow.
    Ready,
    /// The connection broke and is being made again.
    Reconnecting,
    /// Closed for good (by `quit()`/`disconnect()`, or the retry strategy gave up).
    End,
}

impl Status {
    /// ioredis's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Wait => "wait",
            Status::Connecting => "connecting",
            Status::Ready => "ready",
            Status::Reconnecting => "reconnecting",
            Status::End => "end",
        }
    }
}

/// What a connection connects to. There is one per connection, so the variants' sizes do not
/// matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Single {
        client: redis::Client,
        async_config: AsyncConnectionConfig,
        /// With Sentinel: the server is the one the sentinels name at each attempt.
        sentinel: Option<Arc<crate::sentinel::Sentinels>>,
    },
    Cluster(ClusterTarget),
}

/// Where the connection is in its life. Only `Ready` has a link.
enum Phase {
    /// `lazyConnect`, nothing started.
    Wait,
    /// A first link is being made (`reconnecting`: after a link was lost).
    Connecting { reconnecting: bool },
    /// A live link, of the generation given.
    Ready { link: Link, generation: u64 },
    /// Closed for good, and why.
    End(Error),
}

/// The connection's state, under one lock: the phase, and the commands waiting for a link.
struct Core {
    phase: Phase,
    /// Bumped for every new link, so that only the first failure on a link reconnects.
    generation: u64,
    /// A link that was lost: the next link is used only once it gave back all its commands.
    retiring: Option<Link>,
    /// Failed connection attempts since the start, for `maxRetriesPerRequest`.
    failed_attempts: u64,
    last_error: Option<Error>,
    /// The offline queue, in call order (by `seq`).
    offline: VecDeque<Box<dyn Queued>>,
}

impl Core {
    fn status(&self) -> Status {
        match &self.phase {
            Phase::Wait => Status::Wait,
            Phase::Connecting {
                reconnecting: false,
            } => Status::Connecting,
            Phase::Connecting { reconnecting: true } => Status::Reconnecting,
            Phase::Ready { .. } => Status::Ready,
            Phase::End(_) => Status::End,
        }
    }

    /// Puts `cmd` back in the offline queue at its place by call order.
    fn requeue(&mut self, cmd: Box<dyn Queued>) {
        let seq = cmd.seq();
        let at = self.offline.partition_point(|c| c.seq() < seq);
        self.offline.insert(at, cmd);
    }
}

struct Inner {
    config: ConnectionConfig,
    target: Target,
    addr: String,
    retry: RetryStrategy,
    runtime: Handle,
    host: Arc<dyn Host>,
    core: Mutex<Core>,
    /// The status, for those who wait for a change.
    status: watch::Sender<Status>,
    /// The events, for those who listen (see [`Connection::events`]).
    events: tokio::sync::broadcast::Sender<Event>,
    /// Makes another connection with the same settings (see [`Connection::side`]).
    twin: Twin,
    /// The connection of its own for blocking commands, once one was sent.
    side: std::sync::OnceLock<Connection>,
    /// A listener made at the start, so that the first to ask misses nothing.
    first_events: Mutex<Option<tokio::sync::broadcast::Receiver<Event>>>,
    /// Call order: the next command's number.
    seq: AtomicU64,
    /// `commandTimeout`, when set.
    timer: Option<Timer>,
    /// Commands issued through [`Connection::track`] and not finished.
    in_flight: AtomicUsize,
    /// `quit()` was called: no new command is taken.
    closing: AtomicBool,
    /// Woken when the last command in flight finishes.
    idle: tokio::sync::Notify,
    /// The database selected (`db`, then `select()`): a new link selects it.
    db: std::sync::atomic::AtomicI64,
    /// `socketTimeout`, when set.
    socket_watch: Option<timer::SocketWatch>,
}

impl Inner {
    fn core(&self) -> MutexGuard<'_, Core> {
        // Nothing panics under this lock but a defect; the state is still consistent then.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the status after a change of `core`, and the events the change makes.
    fn publish(&self, core: &Core) {
        let mut before = None;
        self.status.send_if_modified(|s| {
            let now = core.status();
            let changed = *s != now;
            if changed {
                before = Some(*s);
            }
            *s = now;
            changed
        });
        let Some(before) = before else { return };
        match (before, core.status()) {
            (_, Status::Ready) => {
                self.emit(Event::Connect);
                self.emit(Event::Ready);
            }
            (Status::Ready, Status::Reconnecting) => self.emit(Event::Close),
            (before, Status::End) => {
                if before == Status::Ready {
                    self.emit(Event::Close);
                }
                self.emit(Event::End);
            }
            _ => {}
        }
    }

    fn emit(&self, event: Event) {
        // No receiver is no error.
        let _ = self.events.send(event);
    }

    fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Emits `+node`/`-node` for what the last topology reads changed.
    fn tell_node_changes(&self) {
        if let Target::Cluster(target) = &self.target {
            for (added, node) in target.take_changes() {
                self.emit(if added {
                    Event::NodeAdded(node)
                } else {
                    Event::NodeRemoved(node)
                });
            }
        }
    }
}

/// Makes a connection like this one, on the database given; `blocking`: for blocking commands
/// (see [`Connection::side`]), whose replies may rightly take longer than `socketTimeout`.
type Twin = Arc<dyn Fn(i64, bool) -> Result<Connection> + Send + Sync>;

/// What the host of a connection does for it, given at construction: the binding reads replies
/// on the JavaScript thread and writes the commands of one turn of its event loop together.
/// Every method has a default that does nothing, which is what a plain Rust user needs.
pub trait Host: Send + Sync {
    /// A command issued on this thread went on `pipe`, which the pipe's own task still reads:
    /// the host may take reading over ([`Pipe::reader`]).
    fn submitted(&self, _pipe: &Pipe) {}
    /// Takes over writing `pipe` soon (true), or leaves it to the caller, who writes it now.
    fn flush_later(&self, _pipe: &Pipe) -> bool {
        false
    }
    /// True on a thread where the host runs futures and reads its pipes itself, so a future
    /// there never needs to read a pipe for it.
    fn is_host_thread(&self) -> bool {
        false
    }
}

/// The host of a connection used from plain Rust: tokio does everything.
pub struct Plain;

impl Host for Plain {}

/// How many events a slow listener may fall behind by before it misses some.
const EVENTS: usize = 256;

/// How long `quit()` lets the commands issued before it finish, and waits for `QUIT`'s reply.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// A command counted from the moment it was issued until it finished, so that `quit()` lets
/// every command issued before it finish first.
pub struct InFlight {
    inner: Arc<Inner>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

/// A reconnecting connection to one server or to a cluster. Cheap to clone: clones share the
/// link.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Creates the connection and, unless `lazy_connect`, starts connecting on `runtime`.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` when the TLS material cannot be used.
    pub fn new(config: ConnectionConfig, retry: RetryStrategy, runtime: Handle) -> Result<Self> {
        Self::hosted(config, retry, runtime, Arc::new(Plain))
    }

    /// [`Connection::new`] with a [`Host`].
    ///
    /// # Errors
    /// As [`Connection::new`].
    pub fn hosted(
        config: ConnectionConfig,
        retry: RetryStrategy,
        runtime: Handle,
        host: Arc<dyn Host>,
    ) -> Result<Self> {
        let sentinel = config.sentinel.as_ref().map(|s| {
            Arc::new(crate::sentinel::Sentinels::new(
                (**s).clone(),
                config.connect_timeout,
            ))
        });
        let addr = match &sentinel {
            Some(s) => s.label(),
            None => config.addr.to_string(),
        };
        let target = Target::Single {
            client: crate::settings::build_client(&config)?,
            async_config: open::async_config(&config),
            sentinel,
        };
        let twin: Twin = {
            let (config, retry, runtime, host) =
                (config.clone(), retry.clone(), runtime.clone(), host.clone());
            Arc::new(move |db, blocking| {
                Self::hosted(
                    ConnectionConfig {
                        lazy_connect: false,
                        db,
                        socket_timeout: config.socket_timeout.filter(|_| !blocking),
                        ..config.clone()
                    },
                    retry.clone(),
                    runtime.clone(),
                    host.clone(),
                )
            })
        };
        Ok(Self::start(
            config, target, addr, retry, runtime, host, twin,
        ))
    }

    /// A connection to the cluster of `cluster`; unless `lazy_connect`, it starts connecting
    /// on `runtime`.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` when redis-rs refuses the settings.
    pub fn new_cluster(
        cluster: &ClusterConfig,
        retry: RetryStrategy,
        runtime: Handle,
        host: Arc<dyn Host>,
    ) -> Result<Self> {
        Self::new_cluster_resolving(cluster, retry, runtime, host, None)
    }

    /// [`Connection::new_cluster`] with a resolver for the nodes' host names (ioredis's
    /// `dnsLookup`).
    ///
    /// # Errors
    /// As [`Connection::new_cluster`].
    pub fn new_cluster_resolving(
        cluster: &ClusterConfig,
        retry: RetryStrategy,
        runtime: Handle,
        host: Arc<dyn Host>,
        resolver: Option<crate::cluster::Resolver>,
    ) -> Result<Self> {
        let target = Target::Cluster(ClusterTarget::new(cluster, resolver.clone())?);
        let nodes: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        let addr = format!("cluster {}", nodes.join(","));
        let config = ConnectionConfig {
            lazy_connect: cluster.lazy_connect,
            enable_offline_queue: cluster.enable_offline_queue,
            ..cluster.redis.clone()
        };
        let twin: Twin = {
            let (cluster, retry, runtime, host) = (
                cluster.clone(),
                retry.clone(),
                runtime.clone(),
                host.clone(),
            );
            Arc::new(move |_db, blocking| {
                let mut cluster = ClusterConfig {
                    lazy_connect: false,
                    ..cluster.clone()
                };
                if blocking {
                    cluster.redis.socket_timeout = None;
                }
                Self::new_cluster_resolving(
                    &cluster,
                    retry.clone(),
                    runtime.clone(),
                    host.clone(),
                    resolver.clone(),
                )
            })
        };
        Ok(Self::start(
            config, target, addr, retry, runtime, host, twin,
        ))
    }

    fn start(
        config: ConnectionConfig,
        target: Target,
        addr: String,
        retry: RetryStrategy,
        runtime: Handle,
        host: Arc<dyn Host>,
        twin: Twin,
    ) -> Self {
        let lazy = config.lazy_connect;
        let db = config.db;
        let socket_timeout = config.socket_timeout;
        let phase = if lazy {
            Phase::Wait
        } else {
            Phase::Connecting {
                reconnecting: false,
            }
        };
        let timer = config.command_timeout.map(|limit| {
            let ms = limit.as_millis();
            let what = addr.clone();
            Timer::new(
                limit,
                &runtime,
                Arc::new(move || {
                    Error::new(
                        ErrorKind::Timeout,
                        format!("command timed out after {ms} ms (commandTimeout) on {what}"),
                    )
                }),
            )
        });
        let core = Core {
            phase,
            generation: 0,
            retiring: None,
            failed_attempts: 0,
            last_error: None,
            offline: VecDeque::new(),
        };
        let (status, _) = watch::channel(core.status());
        let (events, first_events) = tokio::sync::broadcast::channel(EVENTS);
        let connection = Connection {
            inner: Arc::new(Inner {
                config,
                target,
                addr,
                retry,
                runtime,
                host,
                core: Mutex::new(core),
                status,
                events,
                twin,
                side: std::sync::OnceLock::new(),
                first_events: Mutex::new(Some(first_events)),
                seq: AtomicU64::new(0),
                timer,
                in_flight: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                idle: tokio::sync::Notify::new(),
                db: std::sync::atomic::AtomicI64::new(db),
                socket_watch: socket_timeout.map(timer::SocketWatch::new),
            }),
        };
        if !lazy {
            connection.spawn_connect_loop(false);
        }
        if connection.inner.socket_watch.is_some() {
            let weak = Arc::downgrade(&connection.inner);
            connection.inner.runtime.spawn(watch_socket(weak));
        }
        connection
    }

    /// Gives up the live link and makes a new one (ioredis's `disconnect(true)`, and what
    /// `reconnectOnError` asks for): the commands on it are sent again on the new one as
    /// `autoResendUnfulfilledCommands` says. Nothing happens while no link is live.
    pub fn reconnect(&self) {
        let generation = match &self.inner.core().phase {
            Phase::Ready { generation, .. } => *generation,
            _ => return,
        };
        self.connection_lost(generation);
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.is_cluster()
    }

    /// The nodes this connection was given: the server, or a cluster's startup nodes.
    pub fn given_nodes(&self) -> Vec<Addr> {
        match &self.inner.target {
            Target::Cluster(c) => c
                .startup
                .iter()
                .map(|(host, port)| Addr::Tcp {
                    host: host.clone(),
                    port: *port,
                })
                .collect(),
            Target::Single { .. } => vec![self.server_addr()],
        }
    }

    /// The server of a connection to one server: its address, or with Sentinel the one the
    /// sentinels named last.
    fn server_addr(&self) -> Addr {
        match &self.inner.target {
            Target::Single {
                sentinel: Some(s), ..
            } => s.current().map_or_else(
                || self.inner.config.addr.clone(),
                |(host, port)| Addr::Tcp { host, port },
            ),
            _ => self.inner.config.addr.clone(),
        }
    }

    /// The cluster's nodes as last read (empty before the first connection, and for one server).
    pub fn cluster_nodes(&self) -> Vec<ClusterNode> {
        match &self.inner.target {
            Target::Cluster(c) => c.topology(),
            Target::Single { .. } => Vec::new(),
        }
    }

    /// The masters to scan: the server itself, or the cluster's masters read afresh.
    ///
    /// # Errors
    /// The connection's errors.
    pub async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let Target::Cluster(target) = &self.inner.target else {
            return Ok(match self.server_addr() {
                Addr::Tcp { host, port } => vec![(host, port)],
                Addr::Unix(_) => vec![(String::new(), 0)],
            });
        };
        let mut conn = self.cluster_link().await?;
        let nodes = target.refresh(&mut conn, &self.inner.addr).await?;
        self.inner.tell_node_changes();
        Ok(nodes
            .into_iter()
            .filter(|n| n.master)
            .map(|n| (n.host, n.port))
            .collect())
    }

    /// Sends `cmd` to the node `host:port` of a cluster; to the server itself otherwise.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_to(&self, host: &str, port: u16, cmd: &Cmd) -> Result<Value> {
        if !self.is_cluster() {
            return self.send(cmd).await;
        }
        let mut conn = self.cluster_link().await?;
        match crate::cluster::send_to(&mut conn, host, port, cmd).await {
            Ok(Value::ServerError(err)) => Err(Error::from_redis(&err.into(), &self.inner.addr)),
            Ok(value) => Ok(value),
            Err(err) => Err(Error::from_redis(&err, &format!("{host}:{port}"))),
        }
    }

    /// The cluster's redis-rs connection, once connected (within the offline-queue rules).
    async fn cluster_link(&self) -> Result<redis::cluster_async::ClusterConnection> {
        if let Phase::Ready { link, .. } = &self.inner.core().phase {
            if let Some(conn) = link.cluster() {
                return Ok(conn);
            }
        }
        // Not connected: a PING through the queue waits for the connection as any command
        // does (within the offline-queue rules).
        self.send(&redis::cmd("PING")).await?;
        let core = self.inner.core();
        match &core.phase {
            Phase::Ready { link, .. } => link.cluster().ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "a cluster connection without a cluster link",
                )
            }),
            Phase::End(err) => Err(err.clone()),
            _ => Err(Error::new(
                ErrorKind::Connection,
                format!("not connected to {}", self.inner.addr),
            )),
        }
    }

    /// redis-rs clients for a connection of its own to what this connection reaches (pub/sub
    /// cannot share the pipelined link): the server, or each known node of a cluster (any node
    /// hears every publish), with the same settings.
    pub fn subscriber_clients(&self) -> Vec<redis::Client> {
        let addrs: Vec<Addr> = match &self.inner.target {
            Target::Single { .. } => vec![self.server_addr()],
            Target::Cluster(c) => {
                let known: Vec<(String, u16)> =
                    c.topology().into_iter().map(|n| (n.host, n.port)).collect();
                let nodes = if known.is_empty() {
                    c.startup.clone()
                } else {
                    known
                };
                nodes
                    .into_iter()
                    .map(|(host, port)| Addr::Tcp { host, port })
                    .collect()
            }
        };
        addrs
            .into_iter()
            .filter_map(|addr| {
                let config = ConnectionConfig {
                    addr,
                    ..self.inner.config.clone()
                };
                crate::settings::build_client(&config).ok()
            })
            .collect()
    }

    /// The cluster this connection talks to, if it is a cluster's (for subscriptions, which
    /// get a client of their own: see `crate::pubsub`).
    pub(crate) fn cluster_target(&self) -> Option<&ClusterTarget> {
        match &self.inner.target {
            Target::Cluster(c) => Some(c),
            Target::Single { .. } => None,
        }
    }

    /// The server's address, for messages.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The settings this connection was made with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    /// The events, as ioredis emits them (`connect`, `ready`, `error`, `close`,
    /// `reconnecting`, `end`): the first caller gets every event since the connection was
    /// made, later callers those from now on. A listener that falls far behind misses the
    /// oldest.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        let first = self
            .inner
            .first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        first.unwrap_or_else(|| self.inner.events.subscribe())
    }

    /// Starts connecting when `lazyConnect` left the connection waiting, and resolves once it
    /// is ready.
    ///
    /// # Errors
    /// The error of the first attempt that fails, or `ERR_CLOSED` when the connection ends.
    pub async fn connect(&self) -> Result<()> {
        let mut events = self.inner.events.subscribe();
        let mut status = self.inner.status.subscribe();
        {
            let mut core = self.inner.core();
            match &core.phase {
                Phase::Ready { .. } => return Ok(()),
                Phase::End(err) => return Err(err.clone()),
                _ => self.start_lazy(&mut core),
            }
        }
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(Event::Ready) => return Ok(()),
                    Ok(Event::Error(err)) => return Err(err),
                    Ok(Event::End) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
                    }
                    _ => {}
                },
                // In case the events were missed.
                changed = status.wait_for(|s| matches!(s, Status::Ready | Status::End)) => {
                    return match changed.map(|s| *s) {
                        Ok(Status::Ready) => Ok(()),
                        _ => Err(Error::new(ErrorKind::Closed, "the connection is closed")),
                    };
                }
            }
        }
    }

    /// A connection of its own, with the same settings, for commands that block their
    /// connection (`BLPOP`, `XREAD BLOCK`, ...), so that they never stall this one: made on
    /// first use, closed with this one.
    ///
    /// # Errors
    /// `ERR_CLOSED` once this connection is closed; the settings' errors.
    pub fn side(&self) -> Result<Connection> {
        if self.inner.closing.load(Ordering::Acquire) || self.status() == Status::End {
            return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
        }
        if let Some(side) = self.inner.side.get() {
            return Ok(side.clone());
        }
        let made = (self.inner.twin)(self.db(), true)?;
        // Two callers at once: one connection wins, the other is closed.
        let side = self.inner.side.get_or_init(|| made.clone());
        if !Arc::ptr_eq(&side.inner, &made.inner) {
            made.disconnect();
        }
        Ok(side.clone())
    }

    /// A new connection with this one's settings (connecting at once), closed only by its own
    /// `quit()`/`disconnect()`: for state that must live on a connection of its own (`WATCH`),
    /// and for `duplicate()`.
    ///
    /// # Errors
    /// The settings' errors.
    pub fn twin(&self) -> Result<Connection> {
        (self.inner.twin)(self.db(), false)
    }

    /// The database selected: the `db` option, or the last `select()`.
    pub fn db(&self) -> i64 {
        self.inner.db.load(Ordering::Acquire)
    }

    /// `SELECT db` in call order, kept for every later link (a reconnection selects it again)
    /// and for the connection of its own of blocking commands. For a connection that is nobody
    /// else's: every command after it runs on `db`.
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` on a cluster (database 0 only); the command's errors (an index out of
    /// range is `ERR_REPLY`, and the database stays what it was).
    pub async fn select(&self, db: i64) -> Result<Value> {
        if self.is_cluster() {
            return Err(Error::invalid_argument(
                "select() on a cluster: Redis Cluster has only database 0",
            ));
        }
        let before = self.inner.db.swap(db, Ordering::AcqRel);
        let text = db.to_string();
        let packed = crate::resp::encode(&[b"select", text.as_bytes()]);
        let side = self.inner.side.get();
        if let Some(side) = side {
            // In its call order now, not waited for: a blocking command may hold it.
            side.inner.db.store(db, Ordering::Release);
            if let Some(pipe) = side.submit(packed.clone(), |_| {}) {
                pipe.flush();
            }
        }
        let reply = self.send_bytes(packed, true).await;
        if reply.is_err() {
            for conn in std::iter::once(self).chain(side) {
                let _ =
                    conn.inner
                        .db
                        .compare_exchange(db, before, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        reply
    }

    /// Which link is live: a number that changes with every new link (a reconnection), `None`
    /// while there is none. State a server keeps per connection (`WATCH`) lives as long as one
    /// link.
    pub fn link_generation(&self) -> Option<u64> {
        match &self.inner.core().phase {
            Phase::Ready { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.inner.status.borrow()
    }

    /// Sends one command and returns its reply; a server error reply is an `ERR_REPLY` error.
    ///
    /// # Errors
    /// `ERR_CONNECTION` when the server cannot be reached within the offline-queue bound,
    /// `ERR_TIMEOUT` when `commandTimeout` runs out, `ERR_REPLY` for an error reply, `ERR_AUTH`,
    /// `ERR_CLOSED` after `quit()`.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value> {
        self.send_bytes(cmd.get_packed_command(), true).await
    }

    /// [`Connection::send`] for a command packed as RESP (see [`crate::resp::encode`]).
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_packed(&self, bytes: &[u8]) -> Result<Value> {
        self.send_bytes(bytes.to_vec(), true).await
    }

    /// Sends one command; with `offline_queue` false it fails at once with `ERR_CONNECTION` while
    /// the connection is being re-made, instead of waiting (lock votes must not wait on a node
    /// that is down).
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_with(&self, cmd: &Cmd, offline_queue: bool) -> Result<Value> {
        self.send_bytes(cmd.get_packed_command(), offline_queue)
            .await
    }

    async fn send_bytes(&self, bytes: Vec<u8>, offline_queue: bool) -> Result<Value> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = move |reply: Result<Value>| {
            let _ = tx.send(reply);
        };
        if let Some(pipe) = self.enqueue(self.entry(bytes, done, None), offline_queue) {
            if !self.inner.host.flush_later(&pipe) {
                pipe.flush();
            }
        }
        let closed = |_| Err(Error::new(ErrorKind::Closed, "the connection is closed"));
        if self.inner.host.is_host_thread() {
            return rx.await.unwrap_or_else(closed);
        }
        // Waiting in a task while an outside loop reads the socket (a lock's extension while the
        // JavaScript thread owns it): should that loop be busy (a long synchronous computation),
        // read from here too, so that the reply is not held up behind it.
        let mut rx = rx;
        loop {
            match tokio::time::timeout(pipe::BUSY_READER_WAIT, &mut rx).await {
                Ok(reply) => return reply.unwrap_or_else(closed),
                Err(_) => {
                    let pipes = match &self.inner.core().phase {
                        Phase::Ready { link, .. } => link.pipes(),
                        _ => Vec::new(),
                    };
                    for pipe in pipes.iter().filter(|p| p.is_external()) {
                        pipe.reader().read_available();
                    }
                }
            }
        }
    }

    /// Puts the packed command `bytes` on the connection and calls `done` with its outcome (as
    /// [`Connection::send`] would return it), on whichever thread it ends. The command is counted
    /// in flight until then (so `quit()` waits for it).
    ///
    /// When the link is a pipe, the command goes straight into the socket's buffer with no task
    /// at all, and `Some(pipe)` may be returned: the caller must call [`Pipe::flush`] on it soon
    /// (after a burst of commands, so that they share one write).
    pub fn submit<F>(&self, bytes: Vec<u8>, done: F) -> Option<Pipe>
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        match self.track() {
            Ok(in_flight) => self.enqueue(self.entry(bytes, done, Some(in_flight)), true),
            Err(e) => {
                done(Err(e));
                None
            }
        }
    }

    /// A command entry, numbered in call order, its `commandTimeout` clock started.
    fn entry<F>(&self, packed: Vec<u8>, done: F, in_flight: Option<InFlight>) -> Box<dyn Queued>
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        let done = match &self.inner.timer {
            None => Done::Now(done),
            Some(timer) => {
                let timed = Arc::new(Timed {
                    slot: Mutex::new(Some(done)),
                });
                let weak = Arc::downgrade(&timed);
                timer.add(weak);
                Done::Timed(timed)
            }
        };
        Box::new(Entry {
            conn: self.clone(),
            seq: 0,
            born: 0,
            generation: 0,
            watched: false,
            pinned: false,
            resends: 0,
            packed,
            done,
            _in_flight: in_flight,
        })
    }

    /// The one way in for a command: on the live link, or at the end of the offline queue, in
    /// call order (the number is given under the lock that orders them); refused at once when
    /// the connection cannot queue it. Returns the pipe to flush, if any.
    fn enqueue(&self, cmd: Box<dyn Queued>, offline_queue: bool) -> Option<Pipe> {
        let placed = self.place(&mut self.inner.core(), cmd, offline_queue);
        self.settle(placed)
    }

    /// Puts the packed commands `cmds` on the connection together, with nothing of anybody
    /// else's between them (a transaction's `MULTI` .. `EXEC`), each with its `done`, as
    /// [`Connection::submit`] does for one.
    pub fn submit_all<F>(&self, cmds: Vec<(Vec<u8>, F)>) -> Option<Pipe>
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        self.submit_all_on(cmds, None)
    }

    /// [`Connection::submit_all`], only on the link of `generation` when given (see
    /// [`Connection::link_generation`]): when that link is gone, every command fails with
    /// `ERR_CONNECTION` and none is sent (a transaction whose `WATCH` the server forgot with its
    /// connection must not run unwatched).
    pub fn submit_all_on<F>(&self, cmds: Vec<(Vec<u8>, F)>, generation: Option<u64>) -> Option<Pipe>
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        let mut entries = Vec::with_capacity(cmds.len());
        for (bytes, done) in cmds {
            match self.track() {
                Ok(in_flight) => {
                    let mut entry = self.entry(bytes, done, Some(in_flight));
                    if generation.is_some() {
                        entry.pin();
                    }
                    entries.push(entry)
                }
                Err(e) => done(Err(e)),
            }
        }
        let placed: Vec<Placed> = {
            let mut core = self.inner.core();
            let live = match &core.phase {
                Phase::Ready { generation, .. } => Some(*generation),
                _ => None,
            };
            if generation.is_some() && generation != live {
                drop(core);
                let lost = Error::new(
                    ErrorKind::Connection,
                    "the connection that held the WATCH was lost (and made again): the server forgot the watched keys, so the transaction was not sent; WATCH again",
                );
                for cmd in entries {
                    cmd.fail(lost.clone());
                }
                return None;
            }
            entries
                .into_iter()
                .map(|cmd| self.place(&mut core, cmd, true))
                .collect()
        };
        let mut unflushed = None;
        for p in placed {
            if let Some(pipe) = self.settle(p) {
                unflushed = Some(pipe);
            }
        }
        unflushed
    }

    /// Places `cmd` under the connection's lock (see [`Connection::enqueue`]).
    fn place(&self, core: &mut Core, mut cmd: Box<dyn Queued>, offline_queue: bool) -> Placed {
        let inner = &self.inner;
        cmd.number(
            inner.seq.fetch_add(1, Ordering::Relaxed),
            core.failed_attempts,
        );
        let refused = match &core.phase {
            Phase::Ready { link, generation } => {
                cmd.put_on(*generation);
                return match link.put(cmd) {
                    Ok((must_flush, pipe)) => Placed::OnLink { must_flush, pipe },
                    // The link died and its end is not seen yet: whoever killed it starts the
                    // reconnection, which takes the offline queue (a command pinned to this
                    // link fails instead).
                    Err(cmd) if cmd.pinned() => Placed::Refused(
                        cmd,
                        Error::new(
                            ErrorKind::Connection,
                            "the connection that held the WATCH was lost: the transaction was not sent; WATCH again",
                        ),
                    ),
                    Err(cmd) => {
                        core.offline.push_back(cmd);
                        Placed::Waiting
                    }
                };
            }
            Phase::End(err) => Some(err.clone()),
            Phase::Wait if !inner.config.enable_offline_queue => {
                self.start_lazy(core);
                Some(self.offline_disabled())
            }
            Phase::Wait => {
                self.start_lazy(core);
                None
            }
            Phase::Connecting { reconnecting } => {
                if let Some(err) = core
                    .last_error
                    .as_ref()
                    .filter(|e| e.kind() == ErrorKind::Auth)
                {
                    Some(err.clone())
                } else if *reconnecting && !offline_queue {
                    Some(Error::new(
                        ErrorKind::Connection,
                        format!("not connected to {} (reconnecting)", inner.addr),
                    ))
                } else if !inner.config.enable_offline_queue {
                    Some(self.offline_disabled())
                } else {
                    None
                }
            }
        };
        match refused {
            Some(err) => Placed::Refused(cmd, err),
            None => {
                core.offline.push_back(cmd);
                Placed::Waiting
            }
        }
    }

    /// What follows a placing, outside the lock: the host hears of a pipe used from its thread,
    /// a refused command fails. Returns the pipe to flush, if any.
    fn settle(&self, placed: Placed) -> Option<Pipe> {
        match placed {
            Placed::OnLink { must_flush, pipe } => {
                let pipe = pipe?;
                if !pipe.is_external() {
                    self.inner.host.submitted(&pipe);
                }
                must_flush.then_some(pipe)
            }
            Placed::Waiting => None,
            Placed::Refused(cmd, err) => {
                cmd.fail(err);
                None
            }
        }
    }

    fn offline_disabled(&self) -> Error {
        Error::new(
            ErrorKind::Connection,
            // ioredis's words first: code written for ioredis may look for them.
            format!(
                "Stream isn't writeable and enableOfflineQueue options is false (not connected to {})",
                self.inner.addr
            ),
        )
    }

    fn gave_up_error(&self, last: Option<&Error>, attempts: u64) -> Error {
        let kind = last.map_or(ErrorKind::Connection, |e| match e.kind() {
            ErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Connection,
        });
        let reason = last.map_or(String::new(), |e| format!(": {}", e.message()));
        Error::new(
            kind,
            format!(
                "could not reach {} after {attempts} reconnection attempts (maxRetriesPerRequest){reason}",
                self.inner.addr
            ),
        )
    }

    fn start_lazy(&self, core: &mut Core) {
        if matches!(core.phase, Phase::Wait) {
            core.phase = Phase::Connecting {
                reconnecting: false,
            };
            self.inner.publish(core);
            self.spawn_connect_loop(false);
        }
    }

    /// A command that failed because its link broke (put on it as `generation`): marks that link
    /// lost, then sends the command again on the next link at its place in call order, or fails
    /// it.
    fn link_failed(&self, mut cmd: Box<dyn Queued>, err: &redis::RedisError) {
        let mut core = self.inner.core();
        self.lost_locked(&mut core, cmd.generation());
        let max = self
            .inner
            .config
            .max_retries_per_request
            .unwrap_or(u32::MAX);
        let failure = match &core.phase {
            Phase::End(e) => Some(e.clone()),
            _ if !self.inner.config.resend_unfulfilled
                || cmd.resends() >= max.max(1)
                || cmd.pinned() =>
            {
                Some(Error::from_redis(err, &self.inner.addr))
            }
            _ => None,
        };
        if let Some(failure) = failure {
            drop(core);
            cmd.fail(failure);
            return;
        }
        cmd.resent();
        if let Phase::Ready { link, generation } = &core.phase {
            // A link newer than the one that failed is up already (only when that link gave
            // its commands back late): nothing is lost, but this one goes last.
            cmd.put_on(*generation);
            let link = link.clone();
            match link.put(cmd) {
                Ok((true, Some(pipe))) => {
                    drop(core);
                    pipe.flush();
                }
                Ok(_) => {}
                Err(cmd) => core.requeue(cmd),
            }
            return;
        }
        core.requeue(cmd);
    }

    /// Marks the link of `generation` as lost and starts reconnecting (once per link).
    fn connection_lost(&self, generation: u64) {
        let mut core = self.inner.core();
        self.lost_locked(&mut core, generation);
    }

    fn lost_locked(&self, core: &mut Core, generation: u64) {
        let Phase::Ready {
            link,
            generation: live,
        } = &core.phase
        else {
            return;
        };
        if *live != generation {
            return;
        }
        let link = link.clone();
        core.phase = Phase::Connecting { reconnecting: true };
        self.inner.publish(core);
        // Closing it (a pipe is dead already) gives its commands back; the next link waits for
        // them.
        let closer = link.clone();
        self.inner.runtime.spawn(async move { closer.close() });
        core.retiring = Some(link);
        self.spawn_connect_loop(true);
    }

    fn spawn_connect_loop(&self, after_drop: bool) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.runtime.spawn(connect_loop(weak, after_drop));
    }

    /// Counts a command issued now (call it where the command is issued, in issue order).
    ///
    /// # Errors
    /// `ERR_CLOSED` after `quit()`.
    pub fn track(&self) -> Result<InFlight> {
        if self.inner.closing.load(Ordering::Acquire) {
            // ioredis's words, exactly (quit() was called).
            return Err(Error::new(ErrorKind::Closed, "Connection is closed."));
        }
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight {
            inner: self.inner.clone(),
        })
    }

    /// Stops taking commands: what [`Connection::quit`] does first, for callers that must mark
    /// the point in issue order before the quit itself runs.
    pub fn begin_quit(&self) {
        self.inner.closing.store(true, Ordering::Release);
    }

    /// Stops taking commands, lets every command issued before finish (as ioredis sends its
    /// queue before `QUIT`), sends `QUIT` when connected, then closes. It takes a second at
    /// most: what is still waiting then (for a connection, or for a reply from a server that
    /// does not answer) fails with `ERR_CLOSED`.
    pub async fn quit(&self) {
        self.begin_quit();
        let mut status = self.inner.status.subscribe();
        let finish = async {
            // Commands issued before (a `clear()` under way) finish first.
            loop {
                let idle = self.inner.idle.notified();
                let now = *status.borrow_and_update();
                // Waiting for a connection is worth it only while no attempt has failed yet
                // (a lazy connection being made, or about to be made by a command issued but
                // not yet sent); a server that cannot be reached is not waited for.
                let unreachable = matches!(now, Status::Connecting | Status::Reconnecting)
                    && self.inner.core().last_error.is_some();
                if self.inner.in_flight.load(Ordering::Acquire) == 0
                    || unreachable
                    || now == Status::End
                {
                    break;
                }
                tokio::select! {
                    () = idle => {}
                    _ = status.changed() => {}
                }
            }
            if self.status() == Status::Ready {
                // Behind every command issued before it, in order.
                let _ = self
                    .send_bytes(crate::resp::encode(&[b"quit"]), false)
                    .await;
            }
        };
        let side = self.inner.side.get().cloned();
        let quit_side = async {
            if let Some(side) = &side {
                side.quit_own().await;
            }
        };
        let _ = tokio::join!(tokio::time::timeout(QUIT_WAIT, finish), quit_side);
        self.disconnect();
    }

    /// [`Connection::quit`] for a side connection (which has no side of its own).
    async fn quit_own(&self) {
        self.begin_quit();
        if self.status() == Status::Ready {
            let quit = self.send_bytes(crate::resp::encode(&[b"quit"]), false);
            let _ = tokio::time::timeout(QUIT_WAIT, quit).await;
        }
        self.disconnect();
    }

    /// Closes at once: commands waiting for a connection fail with `ERR_CLOSED`, those on the
    /// socket get `ERR_CLOSED` unless their reply is being handed out, and reconnection stops.
    pub fn disconnect(&self) {
        if let Some(side) = self.inner.side.get() {
            side.disconnect();
        }
        // ioredis's words, exactly: code written for ioredis compares them.
        let closed = Error::new(ErrorKind::Closed, "Connection is closed.");
        let (link, waiting) = {
            let mut core = self.inner.core();
            if matches!(core.phase, Phase::End(_)) {
                return;
            }
            let link = match std::mem::replace(&mut core.phase, Phase::End(closed.clone())) {
                Phase::Ready { link, .. } => Some(link),
                _ => None,
            };
            core.last_error = Some(closed.clone());
            self.inner.publish(&core);
            (link, std::mem::take(&mut core.offline))
        };
        if let Some(link) = link {
            link.close();
        }
        for cmd in waiting {
            cmd.fail(closed.clone());
        }
    }
}

/// `socketTimeout`'s task: gives up a link on which commands wait and that stayed silent for
/// the limit, as ioredis destroys such a socket ("Socket timeout. Expecting data, but didn't
/// receive any in N ms."); the connection then reconnects. Ends with the connection.
async fn watch_socket(weak: std::sync::Weak<Inner>) {
    let every = match weak
        .upgrade()
        .and_then(|i| i.socket_watch.as_ref().map(|w| w.limit))
    {
        Some(limit) => (limit / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(watch) = inner.socket_watch.as_ref() else {
            return;
        };
        if !watch.stalled() {
            continue;
        }
        let generation = match &inner.core().phase {
            Phase::Ready { generation, .. } => *generation,
            Phase::End(_) => return,
            _ => continue,
        };
        watch.reset();
        inner.emit(Event::Error(Error::new(
            ErrorKind::Timeout,
            format!(
                "Socket timeout. Expecting data, but didn't receive any in {} ms (socketTimeout) from {}",
                watch.limit.as_millis(),
                inner.addr
            ),
        )));
        Connection { inner }.connection_lost(generation);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The supervisor holds only a weak reference: it stops on its own.
        let core = self.core.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Phase::Ready { link, .. } = std::mem::replace(&mut core.phase, Phase::Wait) {
            link.close();
        }
        let _ = self.status.send_replace(Status::End);
    }
}

/// Where [`Connection::place`] put a command.
enum Placed {
    /// On the live link; its pipe, when the caller must flush it or its host may adopt it.
    OnLink {
        must_flush: bool,
        pipe: Option<Pipe>,
    },
    /// In the offline queue.
    Waiting,
    /// Refused, and why (failed once the lock is let go).
    Refused(Box<dyn Queued>, Error),
}

/// A command as the connection queues it (see [`Entry`]).
trait Queued: pipe::Command {
    /// Numbers the command: its place in call order, and the failed attempts so far.
    fn number(&mut self, seq: u64, attempts: u64);
    fn seq(&self) -> u64;
    /// Failed attempts when it was issued.
    fn born(&self) -> u64;
    /// Records the link generation it goes on.
    fn put_on(&mut self, generation: u64);
    fn generation(&self) -> u64;
    fn resends(&self) -> u32;
    fn resent(&mut self);
    /// Only for the link it was put on (see [`Connection::submit_all_on`]): never sent again
    /// on another.
    fn pinned(&self) -> bool;
    fn pin(&mut self);
    /// True once it timed out: it is not sent any more.
    fn is_settled(&self) -> bool;
    /// Fails it with `err`.
    fn fail(self: Box<Self>, err: Error);
    /// The command itself, out of whatever a link wrapped it in.
    fn bare(self: Box<Self>) -> Box<dyn Queued>;
}

/// How a command's outcome is delivered: at once, or through a slot that the
/// `commandTimeout` timer may empty first.
enum Done<F> {
    Now(F),
    Timed(Arc<Timed<F>>),
}

struct Timed<F> {
    slot: Mutex<Option<F>>,
}

impl<F> Timed<F> {
    fn take(&self) -> Option<F> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<F> Expire for Timed<F>
where
    F: FnOnce(Result<Value>) + Send + 'static,
{
    fn expire(&self, err: Error) {
        if let Some(done) = self.take() {
            done(Err(err));
        }
    }

    fn is_settled(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

/// One command of a connection: its bytes, its place in call order, how its outcome is
/// delivered. On a pipe it is the pipe's waiter; a socket failure brings it back to the
/// connection ([`Connection::link_failed`]).
struct Entry<F> {
    conn: Connection,
    seq: u64,
    born: u64,
    generation: u64,
    /// Counted by the `socketTimeout` watch as on the link.
    watched: bool,
    /// See [`Queued::pinned`].
    pinned: bool,
    resends: u32,
    packed: Vec<u8>,
    done: Done<F>,
    _in_flight: Option<InFlight>,
}

impl<F> Entry<F>
where
    F: FnOnce(Result<Value>) + Send + 'static,
{
    fn deliver(self, outcome: Result<Value>) {
        match self.done {
            Done::Now(done) => done(outcome),
            Done::Timed(timed) => {
                if let Some(done) = timed.take() {
                    done(outcome);
                }
            }
        }
    }
}

impl<F> pipe::Command for Entry<F>
where
    F: FnOnce(Result<Value>) + Send + 'static,
{
    fn packed(&self) -> &[u8] {
        &self.packed
    }

    fn finish(mut self: Box<Self>, reply: redis::RedisResult<Value>) {
        if self.watched {
            self.watched = false;
            if let Some(watch) = &self.conn.inner.socket_watch {
                watch.finished(reply.is_ok());
            }
        }
        let conn = self.conn.clone();
        let addr = &conn.inner.addr;
        match reply {
            Ok(Value::ServerError(err)) => self.deliver(Err(Error::from_redis(&err.into(), addr))),
            Ok(value) => self.deliver(Ok(value)),
            // A cluster connection has retried through redirections and failovers already.
            Err(err) if is_socket_failure(&err) && !conn.is_cluster() => {
                conn.link_failed(self, &err);
            }
            Err(err) => {
                // A cluster's link closed by `disconnect()`: closed, not a connection failure.
                let ended = match &conn.inner.core().phase {
                    Phase::End(e) if is_socket_failure(&err) => Some(e.clone()),
                    _ => None,
                };
                self.deliver(Err(ended.unwrap_or_else(|| Error::from_redis(&err, addr))));
            }
        }
    }
}

impl<F> Queued for Entry<F>
where
    F: FnOnce(Result<Value>) + Send + 'static,
{
    fn number(&mut self, seq: u64, attempts: u64) {
        self.seq = seq;
        self.born = attempts;
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn born(&self) -> u64 {
        self.born
    }
    fn put_on(&mut self, generation: u64) {
        self.generation = generation;
        if let Some(watch) = &self.conn.inner.socket_watch {
            if !self.watched {
                self.watched = true;
                watch.placed();
            }
        }
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn resends(&self) -> u32 {
        self.resends
    }
    fn resent(&mut self) {
        self.resends += 1;
    }
    fn pinned(&self) -> bool {
        self.pinned
    }
    fn pin(&mut self) {
        self.pinned = true;
    }
    fn is_settled(&self) -> bool {
        match &self.done {
            Done::Now(_) => false,
            Done::Timed(timed) => timed.is_settled(),
        }
    }
    fn fail(self: Box<Self>, err: Error) {
        self.deliver(Err(err));
    }
    fn bare(self: Box<Self>) -> Box<dyn Queued> {
        self
    }
}

/// True when the command failed because the socket failed, so it may succeed on a new one.
fn is_socket_failure(err: &redis::RedisError) -> bool {
    !err.is_timeout()
        && (err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error())
}

/// The supervisor: makes a link (after a first backoff when one was lost), retrying per the
/// strategy, until a link is up, the strategy gives up, or the connection is closed or dropped.
async fn connect_loop(weak: Weak<Inner>, after_drop: bool) {
    let mut times = 0u32;
    // Attempts in which no sentinel gave an address (`sentinelRetryStrategy` counts them).
    let mut sentinel_times = 0u32;
    if after_drop && !backoff(&weak, &mut times, None).await {
        return;
    }
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut status = inner.status.subscribe();
        if *status.borrow_and_update() == Status::End {
            return;
        }
        let generation = inner.core().generation + 1;
        let lost = weak.clone();
        let on_lost = move || {
            if let Some(inner) = lost.upgrade() {
                Connection { inner }.connection_lost(generation);
            }
        };
        if times > 0 {
            inner.emit(Event::Connecting);
        }
        // A close stops the attempt at once.
        let attempt = tokio::select! {
            attempt = open::connect(&inner, on_lost) => attempt,
            _ = status.wait_for(|s| *s == Status::End) => return,
        };
        match attempt {
            Ok(link) => {
                install(&inner, link, generation).await;
                if let Target::Single {
                    sentinel: Some(sentinels),
                    ..
                } = &inner.target
                {
                    if sentinels.detects_failovers() {
                        let (weak, sentinels) = (weak.clone(), sentinels.clone());
                        inner
                            .runtime
                            .spawn(detect_failover(weak, generation, sentinels));
                    }
                }
                return;
            }
            Err(failed) => {
                let strategy = match &inner.target {
                    Target::Single {
                        sentinel: Some(sentinels),
                        ..
                    } if failed.at_sentinels => sentinels.retry_strategy(),
                    _ => None,
                };
                attempt_failed(&inner, failed);
                drop(inner);
                let gave_up = match strategy {
                    Some(strategy) => {
                        !backoff(
                            &weak,
                            &mut sentinel_times,
                            Some((strategy, "sentinelRetryStrategy")),
                        )
                        .await
                    }
                    None => !backoff(&weak, &mut times, None).await,
                };
                if gave_up {
                    return;
                }
                continue;
            }
        }
    }
}

/// `failoverDetector`: while the link of `generation` is live, a sentinel's `+switch-master`
/// for the group gives it up, and the next attempt asks the sentinels again.
async fn detect_failover(
    weak: Weak<Inner>,
    generation: u64,
    sentinels: Arc<crate::sentinel::Sentinels>,
) {
    let Some(mut status) = weak.upgrade().map(|inner| inner.status.subscribe()) else {
        return;
    };
    let live = |s: &Status| *s != Status::Ready;
    tokio::select! {
        () = sentinels.switch_master() => {
            if let Some(inner) = weak.upgrade() {
                Connection { inner }.connection_lost(generation);
            }
        }
        _ = status.wait_for(live) => {}
    }
}

/// Makes `link` the live link: the commands of the lost link come back first, then the offline
/// queue goes on it in call order, then new commands follow.
async fn install(inner: &Arc<Inner>, link: Link, generation: u64) {
    let retiring = inner.core().retiring.take();
    if let Some(old) = retiring {
        old.finished().await;
    }
    let mut core = inner.core();
    if matches!(core.phase, Phase::End(_)) {
        drop(core);
        link.close();
        return;
    }
    let mut to_flush: Vec<Pipe> = Vec::new();
    while let Some(cmd) = core.offline.pop_front() {
        if cmd.is_settled() {
            continue;
        }
        let mut cmd = cmd;
        cmd.put_on(generation);
        match link.put(cmd) {
            Ok((true, Some(pipe))) => {
                if !to_flush.iter().any(|p| p.same(&pipe)) {
                    to_flush.push(pipe);
                }
            }
            Ok(_) => {}
            // Dead already: its end starts the next attempt, which takes the rest.
            Err(cmd) => {
                core.offline.push_front(cmd);
                break;
            }
        }
    }
    core.generation = generation;
    core.last_error = None;
    core.phase = Phase::Ready {
        link: link.clone(),
        generation,
    };
    inner.publish(&core);
    drop(core);
    for pipe in to_flush {
        pipe.flush();
    }
}

/// Counts a failed attempt; fails the commands that waited for as many attempts as
/// `maxRetriesPerRequest` allows, and every waiting command when the server was reached but
/// answered badly or not at all (another attempt would only make them wait as long again).
fn attempt_failed(inner: &Arc<Inner>, failed: open::Failed) {
    let conn = Connection {
        inner: inner.clone(),
    };
    let mut doomed = Vec::new();
    let mut core = inner.core();
    core.failed_attempts += 1;
    let fatal =
        failed.reached || matches!(failed.error.kind(), ErrorKind::Auth | ErrorKind::Protocol);
    let attempts = core.failed_attempts;
    let max = inner.config.max_retries_per_request;
    let waiting = std::mem::take(&mut core.offline);
    for cmd in waiting {
        let waited = attempts - cmd.born();
        if cmd.is_settled() {
            continue;
        }
        if fatal {
            doomed.push((cmd, failed.error.clone()));
        } else if max.is_some_and(|max| waited > u64::from(max)) {
            let err = conn.gave_up_error(Some(&failed.error), waited);
            doomed.push((cmd, err));
        } else {
            core.offline.push_back(cmd);
        }
    }
    core.last_error = Some(failed.error.clone());
    drop(core);
    // Same status, news all the same (for `quit`).
    inner.status.send_modify(|_| {});
    inner.emit(Event::Error(failed.error));
    inner.emit(Event::Close);
    for (cmd, err) in doomed {
        cmd.fail(err);
    }
}

/// Waits as the retry strategy says before attempt `times + 1`; false when it gave up (the
/// connection then ends, failing what waits) or the connection is gone.
/// `strategy`: another strategy than the connection's, and its name for messages.
async fn backoff(
    weak: &Weak<Inner>,
    times: &mut u32,
    strategy: Option<(RetryStrategy, &'static str)>,
) -> bool {
    *times = times.saturating_add(1);
    let Some((retry, mut status)) = weak
        .upgrade()
        .map(|inner| (inner.retry.clone(), inner.status.subscribe()))
    else {
        return false;
    };
    let (retry, name) = strategy.unwrap_or((retry, "retryStrategy"));
    match retry(*times).await {
        Some(delay) => {
            if let Some(inner) = weak.upgrade() {
                inner.emit(Event::Reconnecting(delay));
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = status.wait_for(|s| *s == Status::End) => return false,
            }
            weak.upgrade()
                .is_some_and(|inner| *inner.status.borrow() != Status::End)
        }
        None => {
            if let Some(inner) = weak.upgrade() {
                let attempts = *times;
                let (err, waiting) = {
                    let mut core = inner.core();
                    let reason = core
                        .last_error
                        .as_ref()
                        .map_or(String::new(), |e| format!(": {}", e.message()));
                    let kind = match core.last_error.as_ref().map(Error::kind) {
                        Some(ErrorKind::Auth) => ErrorKind::Auth,
                        Some(ErrorKind::Timeout) => ErrorKind::Timeout,
                        _ => ErrorKind::Connection,
                    };
                    let err = Error::new(
                        kind,
                        format!(
                            "gave up reconnecting to {} after {attempts} attempts ({name} returned no delay){reason}",
                            inner.addr
                        ),
                    );
                    core.phase = Phase::End(err.clone());
                    core.last_error = Some(err.clone());
                    inner.publish(&core);
                    (err, std::mem::take(&mut core.offline))
                };
                for cmd in waiting {
                    cmd.fail(err.clone());
                }
            }
            false
        }
    }
}
