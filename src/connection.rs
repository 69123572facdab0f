//! A connection to one Redis server that behaves as an ioredis user expects.
//!
//! One multiplexed socket carries every command (concurrent commands are pipelined on it). When
//! the socket breaks, the connection reconnects in the background with the `retryStrategy`
//! backoff; commands issued meanwhile wait (the offline queue) for at most
//! `maxRetriesPerRequest` reconnection attempts, and a command that failed only because the socket
//! broke is sent again on the new socket (`autoResendUnfulfilledCommands`).
//!
//! Plain TCP and unix sockets use the adapter's own [`Pipe`]; [`Connection::submit`] puts a
//! command on it without any task, which is the fast path the binding takes. TLS connections and
//! clusters go through redis-rs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use redis::cluster_async::ClusterConnection;

use crate::cluster::{ClusterNode, ClusterTarget};
use crate::config::{Addr, ClusterConfig, ConnectionConfig, TlsConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Io, Pipe};

/// A boxed future, as the retry strategy returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `times => delay`: how long to wait before reconnection attempt `times` (from 1), or `None` to
/// give up. ioredis's default is `min(times * 50, 2000)` ms.
pub type RetryStrategy = Arc<dyn Fn(u32) -> BoxFuture<Option<Duration>> + Send + Sync>;

/// ioredis's default retry strategy.
pub fn default_retry_strategy() -> RetryStrategy {
    Arc::new(|times| {
        let ms = (u64::from(times) * 50).min(2000);
        Box::pin(async move { Some(Duration::from_millis(ms)) })
    })
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

/// A command as the caller has it: built with redis-rs, or already packed as RESP.
#[derive(Clone, Copy)]
pub enum Request<'a> {
    Cmd(&'a Cmd),
    Packed(&'a [u8]),
}

impl Request<'_> {
    /// The command packed as RESP, in a buffer of its own (the pipe keeps it until the reply).
    fn packed(&self) -> Vec<u8> {
        match self {
            Request::Cmd(cmd) => cmd.get_packed_command(),
            Request::Packed(bytes) => bytes.to_vec(),
        }
    }

    /// The command as redis-rs takes it (for TLS and cluster links, which are redis-rs's).
    fn cmd(&self) -> std::borrow::Cow<'_, Cmd> {
        match self {
            Request::Cmd(cmd) => std::borrow::Cow::Borrowed(*cmd),
            Request::Packed(bytes) => std::borrow::Cow::Owned(crate::resp::unpack(bytes)),
        }
    }
}

/// A live link: our pipe to one server, redis-rs's multiplexed TLS socket, or a cluster's
/// connections.
#[derive(Clone)]
enum Link {
    Pipe(Pipe),
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    async fn send(
        &mut self,
        req: Request<'_>,
        timeout: Option<Duration>,
    ) -> redis::RedisResult<Value> {
        match self {
            Link::Pipe(pipe) => {
                let bytes = req.packed();
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, pipe.send(bytes))
                        .await
                        .unwrap_or_else(|_| {
                            Err(
                                std::io::Error::new(std::io::ErrorKind::TimedOut, "commandTimeout")
                                    .into(),
                            )
                        }),
                    None => pipe.send(bytes).await,
                }
            }
            Link::Single(conn) => conn.send_packed_command(&req.cmd()).await,
            Link::Cluster(conn) => {
                let cmd = req.cmd();
                match crate::cluster::cross_slot(&cmd) {
                    Some(slot) => crate::cluster::send_to_slot(conn, slot, &cmd).await,
                    None => redis::aio::ConnectionLike::req_packed_command(conn, &cmd).await,
                }
            }
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
    },
    Cluster(ClusterTarget),
}

struct State {
    status: Status,
    conn: Option<Link>,
    /// Bumped for every new socket, so that only the first failure on a socket reconnects.
    generation: u64,
    /// Failed connection attempts since the start, for `maxRetriesPerRequest`.
    failed_attempts: u64,
    last_error: Option<Error>,
}

struct Inner {
    config: ConnectionConfig,
    target: Target,
    addr: String,
    retry: RetryStrategy,
    runtime: Handle,
    state: watch::Sender<State>,
    /// Commands issued and not finished (see [`Connection::track`]).
    in_flight: AtomicUsize,
    /// `quit()` was called: no new command is taken.
    closing: AtomicBool,
    /// Woken when the last command in flight finishes.
    idle: tokio::sync::Notify,
}

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
/// socket(s).
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
        let addr = config.addr.to_string();
        let target = Target::Single {
            client: build_client(&config)?,
            async_config: async_config(&config),
        };
        Ok(Self::start(config, target, addr, retry, runtime))
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
    ) -> Result<Self> {
        let target = Target::Cluster(ClusterTarget::new(cluster)?);
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
        Ok(Self::start(config, target, addr, retry, runtime))
    }

    fn start(
        config: ConnectionConfig,
        target: Target,
        addr: String,
        retry: RetryStrategy,
        runtime: Handle,
    ) -> Self {
        let lazy = config.lazy_connect;
        let (state, _) = watch::channel(State {
            status: if lazy {
                Status::Wait
            } else {
                Status::Connecting
            },
            conn: None,
            generation: 0,
            failed_attempts: 0,
            last_error: None,
        });
        let connection = Connection {
            inner: Arc::new(Inner {
                config,
                target,
                addr,
                retry,
                runtime,
                state,
                in_flight: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                idle: tokio::sync::Notify::new(),
            }),
        };
        if !lazy {
            connection.spawn_connect_loop(false);
        }
        connection
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster(_))
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
            Target::Single { .. } => vec![self.inner.config.addr.clone()],
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
        let attempts = self.inner.state.borrow().failed_attempts;
        let (link, _) = self.ready(attempts, true).await?;
        match (&self.inner.target, link) {
            (Target::Cluster(target), Link::Cluster(mut conn)) => Ok(target
                .refresh(&mut conn, &self.inner.addr)
                .await?
                .into_iter()
                .filter(|n| n.master)
                .map(|n| (n.host, n.port))
                .collect()),
            _ => Ok(match &self.inner.config.addr {
                Addr::Tcp { host, port } => vec![(host.clone(), *port)],
                Addr::Unix(_) => vec![(String::new(), 0)],
            }),
        }
    }

    /// Sends `cmd` to the node `host:port` of a cluster; to the server itself otherwise.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_to(&self, host: &str, port: u16, cmd: &Cmd) -> Result<Value> {
        if !self.is_cluster() {
            return self.send(cmd).await;
        }
        let attempts = self.inner.state.borrow().failed_attempts;
        let (link, _) = self.ready(attempts, true).await?;
        let Link::Cluster(mut conn) = link else {
            return self.send(cmd).await;
        };
        match crate::cluster::send_to(&mut conn, host, port, cmd).await {
            Ok(Value::ServerError(err)) => Err(Error::from_redis(&err.into(), &self.inner.addr)),
            Ok(value) => Ok(value),
            Err(err) => Err(Error::from_redis(&err, &format!("{host}:{port}"))),
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

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.state.borrow().status
    }

    /// Sends one command and returns its reply; a server error reply is an `ERR_REPLY` error.
    ///
    /// # Errors
    /// `ERR_CONNECTION` when the server cannot be reached within the offline-queue bound,
    /// `ERR_TIMEOUT` when `commandTimeout` runs out, `ERR_REPLY` for an error reply, `ERR_AUTH`,
    /// `ERR_CLOSED` after `quit()`.
    pub async fn send(&self, cmd: &Cmd) -> Result<Value> {
        self.send_request(Request::Cmd(cmd), true, 0).await
    }

    /// [`Connection::send`] for a command packed as RESP (see [`crate::resp::encode`]).
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_packed(&self, bytes: &[u8]) -> Result<Value> {
        self.send_request(Request::Packed(bytes), true, 0).await
    }

    /// Sends one command; with `offline_queue` false it fails at once with `ERR_CONNECTION` while
    /// the connection is being re-made, instead of waiting (lock votes must not wait on a node
    /// that is down).
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_with(&self, cmd: &Cmd, offline_queue: bool) -> Result<Value> {
        self.send_request(Request::Cmd(cmd), offline_queue, 0).await
    }

    /// Puts the packed command `bytes` on the connection and calls `done` with its outcome (as
    /// [`Connection::send`] would return it), on whichever thread it ends. The command is counted
    /// in flight until then (so `quit()` waits for it).
    ///
    /// When connected to one server without TLS or `commandTimeout`, the command goes straight
    /// into the socket's buffer with no task at all, and `Some(pipe)` is returned: the caller
    /// must call [`Pipe::flush`] on it soon (after a burst of commands, so that they share one
    /// write). Otherwise a task sends it, as `send` would, and `None` is returned.
    pub fn submit<F>(&self, bytes: Vec<u8>, done: F) -> Option<Pipe>
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        let in_flight = match self.track() {
            Ok(t) => t,
            Err(e) => {
                done(Err(e));
                return None;
            }
        };
        if self.inner.config.command_timeout.is_none() {
            let fast = {
                let s = self.inner.state.borrow();
                match (s.status, &s.conn) {
                    (Status::Ready, Some(Link::Pipe(pipe))) => Some((pipe.clone(), s.generation)),
                    _ => None,
                }
            };
            if let Some((pipe, generation)) = fast {
                let must_flush = pipe.submit(Box::new(Submitted {
                    conn: self.clone(),
                    bytes,
                    generation,
                    in_flight,
                    done,
                }));
                return must_flush.then_some(pipe);
            }
        }
        self.spawn_send(bytes, 0, in_flight, done);
        None
    }

    fn spawn_send<F>(&self, bytes: Vec<u8>, resends: u32, in_flight: InFlight, done: F)
    where
        F: FnOnce(Result<Value>) + Send + 'static,
    {
        let conn = self.clone();
        self.inner.runtime.spawn(async move {
            let outcome = conn
                .send_request(Request::Packed(&bytes), true, resends)
                .await;
            done(outcome);
            drop(in_flight);
        });
    }

    /// The send loop: waits for a socket (within the offline-queue rules), sends, and sends again
    /// after a socket failure (`resends` were done already) or a cluster's transient error.
    async fn send_request(
        &self,
        req: Request<'_>,
        offline_queue: bool,
        mut resends: u32,
    ) -> Result<Value> {
        let start_attempts = self.inner.state.borrow().failed_attempts;
        let max_resends = self
            .inner
            .config
            .max_retries_per_request
            .unwrap_or(u32::MAX);
        let timeout = self.inner.config.command_timeout;
        loop {
            let (mut conn, generation) = self.ready(start_attempts, offline_queue).await?;
            match conn.send(req, timeout).await {
                Ok(Value::ServerError(err)) => {
                    let err = Error::from_redis(&err.into(), &self.inner.addr);
                    if let Some(delay) = self.cluster_retry(&err, resends) {
                        resends += 1;
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(err);
                }
                Ok(value) => return Ok(value),
                // A cluster connection has retried through redirections and failovers already.
                Err(err) if is_socket_failure(&err) && !self.is_cluster() => {
                    self.connection_lost(generation);
                    if !self.inner.config.resend_unfulfilled || resends >= max_resends.max(1) {
                        return Err(Error::from_redis(&err, &self.inner.addr));
                    }
                    resends += 1;
                }
                Err(err) => {
                    let err = Error::from_redis(&err, &self.inner.addr);
                    if let Some(delay) = self.cluster_retry(&err, resends) {
                        resends += 1;
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// On a cluster, a command answered `CLUSTERDOWN`, `TRYAGAIN` or `MASTERDOWN` (a failover
    /// under way) is sent again after `retryDelayOnFailover`, up to `maxRedirections` times.
    fn cluster_retry(&self, err: &Error, done: u32) -> Option<Duration> {
        let Target::Cluster(cluster) = &self.inner.target else {
            return None;
        };
        let transient = matches!(
            err.reply_code(),
            Some("CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN")
        );
        (transient && done < cluster.max_redirections).then_some(cluster.retry_delay)
    }

    /// Waits for a usable socket, within the offline-queue rules.
    async fn ready(&self, start_attempts: u64, offline_queue: bool) -> Result<(Link, u64)> {
        // The common case, connected, without subscribing to changes.
        {
            let s = self.inner.state.borrow();
            if let (Status::Ready, Some(conn)) = (s.status, &s.conn) {
                return Ok((conn.clone(), s.generation));
            }
        }
        let mut rx = self.inner.state.subscribe();
        loop {
            let start_lazy = {
                let s = rx.borrow_and_update();
                match s.status {
                    Status::Ready => {
                        if let Some(conn) = &s.conn {
                            return Ok((conn.clone(), s.generation));
                        }
                        false
                    }
                    Status::End => {
                        return Err(s.last_error.clone().unwrap_or_else(|| {
                            Error::new(ErrorKind::Closed, "the connection is closed")
                        }))
                    }
                    Status::Wait => true,
                    Status::Connecting | Status::Reconnecting => {
                        if let Some(err) = s
                            .last_error
                            .as_ref()
                            .filter(|e| e.kind() == ErrorKind::Auth)
                        {
                            return Err(err.clone());
                        }
                        if s.status == Status::Reconnecting && !offline_queue {
                            return Err(Error::new(
                                ErrorKind::Connection,
                                format!("not connected to {} (reconnecting)", self.inner.addr),
                            ));
                        }
                        if !self.inner.config.enable_offline_queue {
                            return Err(Error::new(
                                ErrorKind::Connection,
                                format!(
                                    "not connected to {} and enableOfflineQueue is false",
                                    self.inner.addr
                                ),
                            ));
                        }
                        if let Some(max) = self.inner.config.max_retries_per_request {
                            let waited = s.failed_attempts - start_attempts;
                            if waited > u64::from(max) {
                                return Err(self.gave_up_error(s.last_error.as_ref(), waited));
                            }
                        }
                        false
                    }
                }
            };
            if start_lazy {
                self.start_lazy();
                continue;
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(ErrorKind::Closed, "the connection is closed"));
            }
        }
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

    fn start_lazy(&self) {
        let mut start = false;
        self.inner.state.send_if_modified(|s| {
            if s.status == Status::Wait {
                s.status = Status::Connecting;
                start = true;
            }
            start
        });
        if start {
            self.spawn_connect_loop(false);
        }
    }

    /// Marks the socket of `generation` as broken and starts reconnecting (once per socket).
    fn connection_lost(&self, generation: u64) {
        let mut lost = false;
        self.inner.state.send_if_modified(|s| {
            if s.status == Status::Ready && s.generation == generation {
                s.status = Status::Reconnecting;
                s.conn = None;
                lost = true;
            }
            lost
        });
        if lost {
            self.spawn_connect_loop(true);
        }
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
            return Err(Error::new(
                ErrorKind::Closed,
                "the connection is closed (quit() was called)",
            ));
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
    /// queue before `QUIT`), sends `QUIT` when connected, then closes.
    pub async fn quit(&self) {
        self.begin_quit();
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        let conn = self.inner.state.borrow().conn.clone();
        if let Some(mut conn @ (Link::Pipe(_) | Link::Single(_))) = conn {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                conn.send(Request::Cmd(&redis::cmd("QUIT")), None),
            )
            .await;
        }
        self.disconnect();
    }

    /// Closes at once: waiting commands fail with `ERR_CLOSED`, and reconnection stops.
    pub fn disconnect(&self) {
        self.inner.state.send_modify(|s| {
            s.status = Status::End;
            s.conn = None;
            s.last_error = Some(Error::new(
                ErrorKind::Closed,
                "the connection was closed by the client",
            ));
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The background loop holds only a weak reference: it stops on its own.
        self.state.send_modify(|s| {
            s.status = Status::End;
            s.conn = None;
        });
    }
}

/// A command put on the pipe by [`Connection::submit`].
struct Submitted<F> {
    conn: Connection,
    bytes: Vec<u8>,
    generation: u64,
    in_flight: InFlight,
    done: F,
}

impl<F> crate::pipe::Command for Submitted<F>
where
    F: FnOnce(Result<Value>) + Send + 'static,
{
    fn packed(&self) -> &[u8] {
        &self.bytes
    }

    /// A socket failure sends the command again on the next socket, as `send` would.
    fn finish(self: Box<Self>, reply: redis::RedisResult<Value>) {
        let Submitted {
            conn,
            bytes,
            generation,
            in_flight,
            done,
        } = *self;
        let addr = &conn.inner.addr;
        match reply {
            Ok(Value::ServerError(err)) => done(Err(Error::from_redis(&err.into(), addr))),
            Ok(value) => done(Ok(value)),
            Err(err) if is_socket_failure(&err) => {
                conn.connection_lost(generation);
                if conn.inner.config.resend_unfulfilled {
                    conn.spawn_send(bytes, 1, in_flight, done);
                    return;
                }
                done(Err(Error::from_redis(&err, addr)));
            }
            Err(err) => done(Err(Error::from_redis(&err, addr))),
        }
        drop(in_flight);
    }
}

/// True when the command failed because the socket failed, so it may succeed on a new one.
fn is_socket_failure(err: &redis::RedisError) -> bool {
    !err.is_timeout()
        && (err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error())
}

/// Connects (after a first backoff when the socket dropped), retrying per the strategy, until a
/// socket is up, the strategy gives up, or the connection is closed or dropped.
async fn connect_loop(weak: Weak<Inner>, after_drop: bool) {
    let mut times = 0u32;
    if after_drop && !backoff(&weak, &mut times).await {
        return;
    }
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.state.borrow().status == Status::End {
            return;
        }
        let generation = inner.state.borrow().generation + 1;
        match connect_once(&inner, &weak, generation).await {
            Ok(conn) => {
                inner.state.send_modify(|s| {
                    if s.status != Status::End {
                        s.status = Status::Ready;
                        s.conn = Some(conn);
                        s.generation += 1;
                        s.last_error = None;
                    }
                });
                return;
            }
            Err(err) => {
                inner.state.send_modify(|s| {
                    s.failed_attempts += 1;
                    s.last_error = Some(err);
                });
            }
        }
        drop(inner);
        if !backoff(&weak, &mut times).await {
            return;
        }
    }
}

/// Waits as the retry strategy says before attempt `times + 1`; false when it gave up (the
/// connection then ends) or the connection is gone.
async fn backoff(weak: &Weak<Inner>, times: &mut u32) -> bool {
    *times = times.saturating_add(1);
    let Some(retry) = weak.upgrade().map(|inner| inner.retry.clone()) else {
        return false;
    };
    match retry(*times).await {
        Some(delay) => {
            tokio::time::sleep(delay).await;
            weak.upgrade()
                .is_some_and(|inner| inner.state.borrow().status != Status::End)
        }
        None => {
            if let Some(inner) = weak.upgrade() {
                let attempts = *times;
                inner.state.send_modify(|s| {
                    let reason = s.last_error.as_ref().map_or(String::new(), |e| format!(": {}", e.message()));
                    let kind = match s.last_error.as_ref().map(Error::kind) {
                        Some(ErrorKind::Auth) => ErrorKind::Auth,
                        Some(ErrorKind::Timeout) => ErrorKind::Timeout,
                        _ => ErrorKind::Connection,
                    };
                    s.status = Status::End;
                    s.conn = None;
                    s.last_error = Some(Error::new(
                        kind,
                        format!(
                            "gave up reconnecting to {} after {attempts} attempts (retryStrategy returned no delay){reason}",
                            inner.addr
                        ),
                    ));
                });
            }
            false
        }
    }
}

/// One connection attempt, bounded by `connectTimeout` as a whole (TCP, TLS, AUTH, SELECT).
async fn connect_once(inner: &Inner, weak: &Weak<Inner>, generation: u64) -> Result<Link> {
    let attempt = async {
        let mut conn = match &inner.target {
            Target::Single {
                client,
                async_config,
            } => open(inner, client, async_config, weak, generation).await?,
            Target::Cluster(target) => Link::Cluster(target.connect(&inner.addr).await?),
        };
        // One round trip before the socket counts as connected, so that a server that accepts
        // and never answers is caught by connectTimeout instead of hanging the first command.
        let hello = match &inner.config.connection_name {
            Some(name) => {
                let mut setname = redis::cmd("CLIENT");
                setname.arg("SETNAME").arg(name);
                setname
            }
            None => redis::cmd("PING"),
        };
        match conn.send(Request::Cmd(&hello), None).await {
            Ok(Value::ServerError(err)) => return Err(Error::from_redis(&err.into(), &inner.addr)),
            Err(err) => return Err(Error::from_redis(&err, &inner.addr)),
            Ok(_) => {}
        }
        Ok(conn)
    };
    match inner.config.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {} timed out after {} ms (connectTimeout)",
                        inner.addr,
                        limit.as_millis()
                    ),
                ))
            }),
        None => attempt.await,
    }
}

/// Opens a link (TCP, AUTH, SELECT). Plain TCP and unix sockets get our [`Pipe`], whose driver
/// is watched: when the server goes away the connection starts reconnecting at once (status
/// `reconnecting`), before any command fails. Over TLS redis-rs makes the socket, and a lost
/// server is noticed by the next command.
async fn open(
    inner: &Inner,
    client: &redis::Client,
    async_config: &AsyncConnectionConfig,
    weak: &Weak<Inner>,
    generation: u64,
) -> Result<Link> {
    let io_error = |e: std::io::Error| Error::from_redis(&redis::RedisError::from(e), &inner.addr);
    let io = match (&inner.config.addr, &inner.config.tls) {
        (Addr::Tcp { host, port }, None) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(io_error)?;
            stream
                .set_nodelay(inner.config.no_delay)
                .map_err(io_error)?;
            if let Some(delay) = inner.config.keep_alive {
                let keepalive = redis::io::tcp::socket2::TcpKeepalive::new().with_time(delay);
                redis::io::tcp::socket2::SockRef::from(&stream)
                    .set_tcp_keepalive(&keepalive)
                    .map_err(io_error)?;
            }
            Io::Tcp(stream)
        }
        #[cfg(unix)]
        (Addr::Unix(path), _) => Io::Unix(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(io_error)?,
        ),
        _ => {
            return client
                .get_multiplexed_async_connection_with_config(async_config)
                .await
                .map(Link::Single)
                .map_err(|e| connect_error(&e, inner))
        }
    };
    let (pipe, driver) = Pipe::new(io).map_err(io_error)?;
    let watcher = weak.clone();
    inner.runtime.spawn(async move {
        driver.await;
        if let Some(inner) = watcher.upgrade() {
            Connection { inner }.connection_lost(generation);
        }
    });
    handshake(inner, &pipe).await?;
    Ok(Link::Pipe(pipe))
}

/// AUTH and SELECT on a new pipe, as configured.
async fn handshake(inner: &Inner, pipe: &Pipe) -> Result<()> {
    let config = &inner.config;
    let send = |cmd: Vec<u8>| async move {
        match pipe.send(cmd).await {
            Ok(Value::ServerError(err)) => Err(redis::RedisError::from(err)),
            other => other,
        }
    };
    if let Some(password) = &config.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &config.username {
            args.push(user.as_bytes());
        }
        args.push(password.0.as_bytes());
        match send(crate::resp::encode(&args)).await {
            Ok(_) => {}
            // A password given to a server that needs none: ioredis goes on (with a warning).
            Err(err)
                if config.username.is_none()
                    && err.detail().is_some_and(|d| {
                        d.contains("without any password configured")
                            || d.contains("no password is set")
                    }) => {}
            Err(err) => return Err(Error::from_redis(&err, &inner.addr)),
        }
    }
    if config.db != 0 {
        let db = config.db.to_string();
        send(crate::resp::encode(&[b"SELECT", db.as_bytes()]))
            .await
            .map_err(|e| Error::from_redis(&e, &inner.addr))?;
    }
    Ok(())
}

/// Resolves the TLS `servername` to the addresses of the configured `host`, so that the
/// certificate is verified against the one name while the socket goes to the other (as Node's
/// `tls.connect({ host, servername })` does).
struct ServernameResolver {
    servername: String,
    host: String,
}

impl redis::io::AsyncDNSResolver for ServernameResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        let target = if host == self.servername {
            self.host.as_str()
        } else {
            host
        };
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((target, port)).await?;
            Ok(Box::new(addrs) as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

/// A failed connection attempt; with TLS, an I/O failure that is not a refusal is most often the
/// handshake (an untrusted certificate, a name mismatch, a server without TLS), so say so.
fn connect_error(err: &redis::RedisError, inner: &Inner) -> Error {
    let mapped = Error::from_redis(err, &inner.addr);
    if inner.config.tls.is_some() && err.is_io_error() && !err.is_connection_refusal() {
        return Error::new(
            ErrorKind::Connection,
            format!(
                "TLS connection to {} failed: the handshake did not complete (is the server's certificate trusted by `tls.ca`, and is TLS enabled on that port?)",
                inner.addr
            ),
        );
    }
    mapped
}

/// redis-rs's connection settings: timeouts, and the resolver that makes `tls.servername` work.
fn async_config(config: &ConnectionConfig) -> AsyncConnectionConfig {
    let mut async_config = AsyncConnectionConfig::new()
        .set_connection_timeout(config.connect_timeout)
        .set_response_timeout(config.command_timeout);
    if let (
        Addr::Tcp { host, .. },
        Some(TlsConfig {
            servername: Some(name),
            ..
        }),
    ) = (&config.addr, &config.tls)
    {
        async_config = async_config.set_dns_resolver(ServernameResolver {
            servername: name.clone(),
            host: host.clone(),
        });
    }
    async_config
}

/// Builds the redis-rs client for the settings.
pub(crate) fn build_client(config: &ConnectionConfig) -> Result<redis::Client> {
    let redis_settings = {
        let mut r = redis::RedisConnectionInfo::default()
            .set_db(config.db)
            .set_skip_set_lib_name();
        if let Some(user) = &config.username {
            r = r.set_username(user);
        }
        if let Some(password) = &config.password {
            r = r.set_password(&password.0);
        }
        r
    };
    let addr = match (&config.addr, &config.tls) {
        (Addr::Tcp { host, port }, None) => redis::ConnectionAddr::Tcp(host.clone(), *port),
        (Addr::Tcp { host, port }, Some(tls)) => redis::ConnectionAddr::TcpTls {
            // The certificate is checked against `servername` when given; the resolver in
            // `async_config` still connects to `host`.
            host: tls.servername.clone().unwrap_or_else(|| host.clone()),
            port: *port,
            insecure: !tls.reject_unauthorized,
            tls_params: None,
        },
        (Addr::Unix(path), _) => redis::ConnectionAddr::Unix(path.clone()),
    };
    let mut tcp = redis::io::tcp::TcpSettings::default().set_nodelay(config.no_delay);
    if let Some(delay) = config.keep_alive {
        tcp = tcp.set_keepalive(redis::io::tcp::socket2::TcpKeepalive::new().with_time(delay));
    }
    let info = redis::IntoConnectionInfo::into_connection_info(addr)
        .map_err(|_| Error::config("invalid address"))?
        .set_redis_settings(redis_settings)
        .set_tcp_settings(tcp);
    match &config.tls {
        Some(tls) if tls.ca.is_some() || tls.cert.is_some() => {
            redis::Client::build_with_tls(info, tls_certificates(tls)).map_err(|_| {
                Error::config("option `tls`: the certificates or key could not be read as PEM")
            })
        }
        _ => redis::Client::open(info).map_err(|_| Error::config("invalid connection settings")),
    }
}

/// The TLS material of `tls` as redis-rs takes it.
pub(crate) fn tls_certificates(tls: &TlsConfig) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.as_bytes().to_vec(),
                client_key: key.as_bytes().to_vec(),
            }),
            _ => None,
        },
        root_cert: tls.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}
