//! The live links a connection puts its commands on, each keeping them in the order given.
//!
//! - [`Link::Pipe`]: our own pipelined socket (plain TCP, unix socket). A command goes into its
//!   output buffer at once, in the caller's order.
//! - [`Link::Fed`]: a redis-rs connection (TLS to one server, or a cluster), fed by one task per
//!   link. The task starts each command's future in the order the commands were given and polls
//!   it once right there, which puts it in redis-rs's own queue (tokio's bounded channels and
//!   locks are first come, first served), so redis-rs writes them in that order; only the wait
//!   for the reply goes on in a task of its own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Value};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};

use super::Queued;
use crate::pipe::{Command, Pipe};

/// A command handed to a link, or given back when the link is already dead.
pub(super) type Given = Result<bool, Box<dyn Queued>>;

/// A live link.
#[derive(Clone)]
pub(super) enum Link {
    Pipe(Pipe),
    Fed(Fed),
}

impl Link {
    /// Puts `cmd` on the link, after every command put on it before. `Ok(true)` asks the
    /// caller to flush the pipe soon; a dead link gives the command back.
    pub(super) fn put(&self, cmd: Box<dyn Queued>) -> Given {
        match self {
            Link::Pipe(pipe) => pipe.submit_as(cmd, |cmd| cmd as Box<dyn Command>),
            Link::Fed(fed) => fed.put(cmd).map(|()| false),
        }
    }

    /// Closes the link: every command on it fails as if the socket broke.
    pub(super) fn close(&self) {
        match self {
            Link::Pipe(pipe) => pipe.close(),
            Link::Fed(fed) => fed.close(),
        }
    }

    /// Resolves once the link is closed and every command it had was finished.
    pub(super) async fn finished(&self) {
        match self {
            Link::Pipe(pipe) => pipe.finished().await,
            Link::Fed(fed) => fed.finished().await,
        }
    }

    /// Sends one command ahead of the queue: for the handshake, before the link is used.
    pub(super) async fn send_now(&self, packed: Vec<u8>) -> redis::RedisResult<Value> {
        match self {
            Link::Pipe(pipe) => pipe.send(packed).await,
            Link::Fed(fed) => fed.backend.send(&packed).await,
        }
    }

    /// The pipe, for a link that is one.
    pub(super) fn pipe(&self) -> Option<&Pipe> {
        match self {
            Link::Pipe(pipe) => Some(pipe),
            Link::Fed(_) => None,
        }
    }

    /// The cluster connection, for a cluster's link.
    pub(super) fn cluster(&self) -> Option<ClusterConnection> {
        match self {
            Link::Fed(Fed {
                backend: Backend::Cluster { conn, .. },
                ..
            }) => Some(conn.clone()),
            _ => None,
        }
    }
}

/// What a fed link sends through.
#[derive(Clone)]
pub(super) enum Backend {
    Single(MultiplexedConnection),
    Cluster {
        conn: ClusterConnection,
        /// Sends of a command the cluster answered `CLUSTERDOWN`, `TRYAGAIN` or `MASTERDOWN`
        /// (a failover under way), after redis-rs's own retries.
        retries: u32,
        /// The pause before each.
        delay: Duration,
    },
}

impl Backend {
    /// The future of one command's reply.
    fn send(&self, packed: &[u8]) -> impl Future<Output = redis::RedisResult<Value>> + Send {
        let cmd = crate::resp::unpack(packed);
        let backend = self.clone();
        async move {
            match backend {
                Backend::Single(mut conn) => conn.send_packed_command(&cmd).await,
                Backend::Cluster {
                    mut conn,
                    retries,
                    delay,
                } => {
                    let mut done = 0;
                    loop {
                        let reply = match crate::cluster::cross_slot(&cmd) {
                            Some(slot) => crate::cluster::send_to_slot(&mut conn, slot, &cmd).await,
                            None => {
                                redis::aio::ConnectionLike::req_packed_command(&mut conn, &cmd)
                                    .await
                            }
                        };
                        let code = match &reply {
                            Ok(Value::ServerError(e)) => Some(e.code()),
                            Ok(_) => None,
                            Err(e) => e.code(),
                        };
                        let transient =
                            matches!(code, Some("CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN"));
                        if !transient || done >= retries {
                            return reply;
                        }
                        done += 1;
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// The slot whose commands must run one after the other on a cluster: redis-rs may reorder
    /// commands in flight together (its queues are bounded, and it retries redirections on its
    /// own), so one slot's next command starts when the one before it was answered. Commands
    /// of other slots go on meanwhile.
    fn gate(&self, packed: &[u8]) -> Option<u16> {
        match self {
            Backend::Single(_) => None,
            Backend::Cluster { .. } => crate::cluster::command_slot(packed),
        }
    }
}

struct FedState {
    /// Set once: the link is closed.
    closed: watch::Sender<bool>,
    /// Commands given to the link and not finished.
    outstanding: AtomicUsize,
    /// Woken when `outstanding` drops to zero.
    idle: Notify,
}

/// A redis-rs connection and the task that feeds it (see the module doc).
#[derive(Clone)]
pub(super) struct Fed {
    tx: mpsc::UnboundedSender<Box<dyn Queued>>,
    backend: Backend,
    state: Arc<FedState>,
}

impl Fed {
    /// A link over `backend`; its task runs on `runtime`.
    pub(super) fn new(backend: Backend, runtime: &Handle) -> Fed {
        let (tx, rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(false);
        let state = Arc::new(FedState {
            closed,
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        runtime.spawn(feed(rx, backend.clone(), state.clone(), runtime.clone()));
        Fed { tx, backend, state }
    }

    fn put(&self, cmd: Box<dyn Queued>) -> Result<(), Box<dyn Queued>> {
        if *self.state.closed.borrow() {
            return Err(cmd);
        }
        self.state.outstanding.fetch_add(1, Ordering::AcqRel);
        self.tx.send(cmd).map_err(|e| {
            self.state.done_one();
            e.0
        })
    }

    fn close(&self) {
        self.state.closed.send_replace(true);
    }

    async fn finished(&self) {
        let mut closed = self.state.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
        loop {
            let idle = self.state.idle.notified();
            if self.state.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl FedState {
    fn done_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Finishes `cmd` with `reply` and counts it done.
    fn finish(&self, cmd: Box<dyn Queued>, reply: redis::RedisResult<Value>) {
        cmd.finish(reply);
        self.done_one();
    }
}

/// The feeding task of a [`Fed`] link: starts each command in order (see the module doc), one
/// at a time per slot on a cluster ([`Backend::gate`]).
async fn feed(
    mut rx: mpsc::UnboundedReceiver<Box<dyn Queued>>,
    backend: Backend,
    state: Arc<FedState>,
    runtime: Handle,
) {
    let mut closed = state.closed.subscribe();
    let (freed_tx, mut freed) = mpsc::unbounded_channel::<u16>();
    // Busy slots, each with the commands waiting for it.
    let mut busy: HashMap<u16, VecDeque<Box<dyn Queued>>> = HashMap::new();
    let start = |cmd: Box<dyn Queued>, slot: Option<u16>| {
        // Unconstrained: tokio's cooperative budget would otherwise make a first poll return
        // before the command is queued, once this task has fed a hundred commands in a row.
        let mut reply = Box::pin(tokio::task::unconstrained(backend.send(cmd.packed())));
        let mut closed = state.closed.subscribe();
        let state = state.clone();
        let freed_tx = freed_tx.clone();
        let end = move |cmd, result| {
            state.finish(cmd, result);
            if let Some(slot) = slot {
                let _ = freed_tx.send(slot);
            }
        };
        // The first poll puts the command in redis-rs's queue, in this order.
        // (Its task polls it again at once, with a waker of its own.)
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match reply.as_mut().poll(&mut cx) {
            Poll::Ready(result) => end(cmd, result),
            Poll::Pending => {
                runtime.spawn(async move {
                    tokio::select! {
                        result = reply => end(cmd, result),
                        _ = closed.wait_for(|c| *c) => end(cmd, Err(closed_error())),
                    }
                });
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => break,
            Some(slot) = freed.recv() => {
                match busy.get_mut(&slot).and_then(VecDeque::pop_front) {
                    Some(next) => start(next, Some(slot)),
                    None => {
                        busy.remove(&slot);
                    }
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match backend.gate(cmd.packed()) {
                    Some(slot) => match busy.get_mut(&slot) {
                        Some(waiting) => waiting.push_back(cmd),
                        None => {
                            busy.insert(slot, VecDeque::new());
                            start(cmd, Some(slot));
                        }
                    },
                    None => start(cmd, None),
                }
            }
        }
    }
    state.closed.send_replace(true);
    rx.close();
    for cmd in busy.into_values().flatten() {
        state.finish(cmd, Err(closed_error()));
    }
    while let Ok(cmd) = rx.try_recv() {
        state.finish(cmd, Err(closed_error()));
    }
}

/// The failure of a command on a link that was closed: a dropped connection, so that the
/// command may be sent again on the next link.
fn closed_error() -> RedisError {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the connection was closed").into()
}
