//! The live links a connection puts its commands on, each keeping them in the order given.
//!
//! - [`Link::Pipe`]: our own pipelined socket (plain TCP, unix socket). A command goes into its
//!   output buffer at once, in the caller's order.
//! - [`Link::Fed`]: a redis-rs connection (TLS to one server, or a cluster), fed by one task per
//!   link. The task starts each command's future in the order the commands were given and polls
//!   it once right there, which puts it in redis-rs's own queue (tokio's bounded channels and
//!   locks are first come, first served), so redis-rs writes them in that order; the same task
//!   then waits for the replies of all of them at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Value};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};

use super::slots::Slots;
use super::Queued;
use crate::pipe::{Command, Pipe};

/// A command handed to a link: whether the pipe it went on must be flushed soon, and that pipe
/// when the caller must flush it or its host may adopt it; or the command given back when the
/// link is already dead.
pub(super) type Given = Result<(bool, Option<Pipe>), Box<dyn Queued>>;

/// A live link.
#[derive(Clone)]
pub(super) enum Link {
    Pipe(Pipe),
    Fed(Fed),
    Slots(Slots),
}

impl Link {
    /// Puts `cmd` on the link, after every command put on it before. `Ok(true)` asks the
    /// caller to flush the pipe soon; a dead link gives the command back.
    pub(super) fn put(&self, cmd: Box<dyn Queued>) -> Given {
        match self {
            Link::Pipe(pipe) => {
                pipe.submit_as(cmd, |cmd| cmd as Box<dyn Command>)
                    .map(|must_flush| {
                        let adopt = must_flush || !pipe.is_external();
                        (must_flush, adopt.then(|| pipe.clone()))
                    })
            }
            Link::Fed(fed) => fed.put(cmd).map(|()| (false, None)),
            Link::Slots(slots) => slots.put(cmd),
        }
    }

    /// Closes the link: every command on it fails as if the socket broke.
    pub(super) fn close(&self) {
        match self {
            Link::Pipe(pipe) => pipe.close(),
            Link::Fed(fed) => fed.close(),
            Link::Slots(slots) => slots.close(),
        }
    }

    /// Resolves once the link is closed and every command it had was finished.
    pub(super) async fn finished(&self) {
        match self {
            Link::Pipe(pipe) => pipe.finished().await,
            Link::Fed(fed) => fed.finished().await,
            Link::Slots(slots) => slots.finished().await,
        }
    }

    /// Sends one command ahead of the queue: for the handshake, before the link is used.
    pub(super) async fn send_now(&self, packed: Vec<u8>) -> redis::RedisResult<Value> {
        match self {
            Link::Pipe(pipe) => pipe.send(packed).await,
            Link::Fed(fed) => fed.backend.send(&packed, None).await,
            Link::Slots(slots) => slots.fed().backend.send(&packed, None).await,
        }
    }

    /// Every pipe of the link.
    pub(super) fn pipes(&self) -> Vec<Pipe> {
        match self {
            Link::Pipe(pipe) => vec![pipe.clone()],
            Link::Fed(_) => Vec::new(),
            Link::Slots(slots) => slots.pipes(),
        }
    }

    /// The cluster connection, for a cluster's link.
    pub(super) fn cluster(&self) -> Option<ClusterConnection> {
        let fed = match self {
            Link::Fed(fed) => fed,
            Link::Slots(slots) => slots.fed(),
            Link::Pipe(_) => return None,
        };
        match &fed.backend {
            Backend::Cluster { conn, .. } => Some(conn.clone()),
            Backend::Single(_) => None,
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
        /// Every keyed command goes to its slot's master (`scaleReads: 'master'`), so it can be
        /// routed here by the slot the gate found, instead of by redis-rs again.
        by_slot: bool,
    },
}

impl Backend {
    /// The future of one command's reply; `slot` is the command's own ([`Backend::gate`]).
    fn send(
        &self,
        packed: &[u8],
        slot: Option<u16>,
    ) -> impl Future<Output = redis::RedisResult<Value>> + Send {
        let cmd = crate::resp::unpack(packed);
        // A transaction on a cluster comes as one entry of several commands (MULTI .. EXEC):
        // one pipeline to its slot's master, answered as an array of all the replies.
        let transaction = match (self, slot) {
            (Backend::Cluster { .. }, Some(slot)) if is_transaction(packed) => {
                crate::resp::commands(packed)
                    .filter(|c| c.len() > 1)
                    .map(|c| {
                        let mut pipe = redis::Pipeline::new();
                        for one in &c {
                            pipe.add_command(crate::resp::unpack(one));
                        }
                        (pipe, c.len(), slot)
                    })
            }
            _ => None,
        };
        let backend = self.clone();
        async move {
            if let (Backend::Cluster { mut conn, .. }, Some((pipe, count, slot))) =
                (backend.clone(), transaction)
            {
                use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                return conn
                    .route_pipeline(pipe, 0, count, route)
                    .await
                    .map(Value::Array);
            }
            match backend {
                Backend::Single(mut conn) => conn.send_packed_command(&cmd).await,
                Backend::Cluster {
                    mut conn,
                    retries,
                    delay,
                    by_slot,
                } => {
                    let mut done = 0;
                    loop {
                        // A multi-key command across slots goes whole to its first key's slot
                        // (the server answers CROSSSLOT); a keyed command to its slot's master,
                        // routed here; anything else as redis-rs routes it.
                        let to = crate::cluster::cross_slot(&cmd).or(slot.filter(|_| by_slot));
                        let reply = match to {
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
            Backend::Cluster { .. } => slot_of(packed),
        }
    }
}

/// The slot of a command (packed as RESP) on a cluster: its first key's, or for a transaction
/// (several commands in one entry), its keys' slot; `None` without a key.
pub(super) fn slot_of(packed: &[u8]) -> Option<u16> {
    if is_transaction(packed) {
        crate::resp::commands(packed)
            .filter(|c| c.len() > 1)?
            .into_iter()
            .find_map(crate::cluster::command_slot)
    } else {
        crate::cluster::command_slot(packed)
    }
}

/// A transaction entry: `MULTI`, its commands and `EXEC`, packed one after the other.
pub(super) fn is_transaction(packed: &[u8]) -> bool {
    packed.starts_with(TRANSACTION_START)
}

/// How a transaction entry starts (`MULTI` as [`crate::resp::encode`] packs it).
pub(crate) const TRANSACTION_START: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";

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
        runtime.spawn(feed(rx, backend.clone(), state.clone()));
        Fed { tx, backend, state }
    }

    pub(super) fn put(&self, cmd: Box<dyn Queued>) -> Result<(), Box<dyn Queued>> {
        if *self.state.closed.borrow() {
            return Err(cmd);
        }
        self.state.outstanding.fetch_add(1, Ordering::AcqRel);
        self.tx.send(cmd).map_err(|e| {
            self.state.done_one();
            e.0
        })
    }

    pub(super) fn close(&self) {
        self.state.closed.send_replace(true);
    }

    pub(super) async fn finished(&self) {
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

/// A command's reply, tagged with the command's number in the feeding task.
type InFlight = Pin<Box<dyn Future<Output = (u64, redis::RedisResult<Value>)> + Send>>;

/// The feeding task of a [`Fed`] link: starts each command in order (see the module doc), one
/// at a time per slot on a cluster ([`Backend::gate`]), and finishes them as their replies come,
/// all in this one task (no task per command).
async fn feed(
    mut rx: mpsc::UnboundedReceiver<Box<dyn Queued>>,
    backend: Backend,
    state: Arc<FedState>,
) {
    let mut closed = state.closed.subscribe();
    // Commands started and not answered, by number, with the slot they hold.
    let mut started: HashMap<u64, (Box<dyn Queued>, Option<u16>)> = HashMap::new();
    let mut replies: FuturesUnordered<InFlight> = FuturesUnordered::new();
    // Busy slots, each with the commands waiting for it.
    let mut busy: HashMap<u16, VecDeque<Box<dyn Queued>>> = HashMap::new();
    let mut next_id = 0u64;
    let mut start = |cmd: Box<dyn Queued>,
                     slot: Option<u16>,
                     started: &mut HashMap<u64, (Box<dyn Queued>, Option<u16>)>,
                     replies: &mut FuturesUnordered<InFlight>| {
        // Unconstrained: tokio's cooperative budget would otherwise make a first poll return
        // before the command is queued, once this task has fed a hundred commands in a row.
        let mut reply = Box::pin(tokio::task::unconstrained(backend.send(cmd.packed(), slot)));
        // The first poll puts the command in redis-rs's queue, in this order (the set of
        // replies polls it again, with a waker of its own).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let id = next_id;
        next_id += 1;
        match reply.as_mut().poll(&mut cx) {
            Poll::Ready(result) => Some((cmd, slot, result)),
            Poll::Pending => {
                started.insert(id, (cmd, slot));
                replies.push(Box::pin(async move { (id, reply.await) }));
                None
            }
        }
    };
    // Finishes a command and starts the next one waiting for its slot (which may finish at
    // once too).
    macro_rules! done {
        ($cmd:expr, $slot:expr, $result:expr) => {{
            let (mut cmd, mut slot, mut result) = ($cmd, $slot, $result);
            loop {
                state.finish(cmd, result);
                let Some(s) = slot else { break };
                let Some(next) = busy.get_mut(&s).and_then(VecDeque::pop_front) else {
                    busy.remove(&s);
                    break;
                };
                match start(next, Some(s), &mut started, &mut replies) {
                    Some((c, sl, r)) => (cmd, slot, result) = (c, sl, r),
                    None => break,
                }
            }
        }};
    }
    loop {
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => break,
            Some((id, result)) = replies.next(), if !replies.is_empty() => {
                if let Some((cmd, slot)) = started.remove(&id) {
                    done!(cmd, slot, result);
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let slot = backend.gate(cmd.packed());
                if let Some(s) = slot {
                    if let Some(waiting) = busy.get_mut(&s) {
                        waiting.push_back(cmd);
                        continue;
                    }
                    busy.insert(s, VecDeque::new());
                }
                if let Some((cmd, slot, result)) = start(cmd, slot, &mut started, &mut replies) {
                    done!(cmd, slot, result);
                }
            }
        }
    }
    state.closed.send_replace(true);
    rx.close();
    drop(replies);
    for (cmd, _) in started.into_values() {
        state.finish(cmd, Err(closed_error()));
    }
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
