//! A cluster link that sends each keyed command on our own pipe to its slot's master, with the
//! redis-rs cluster connection ([`Fed`]) beside it for everything else.
//!
//! **The direct lane.** A command with a key goes straight into the output buffer of the pipe to
//! the master that serves its slot (as the slot map read with `cluster slots` says), with no task
//! hop, as a command to one server does (see `crate::pipe`): one pipe per master keeps one slot's
//! commands in call order. Keyless commands, transactions, and every command of a slot that is not
//! on the direct lane go to the [`Fed`] link, which keeps them in order per slot and follows
//! redirections and failovers with redis-rs's retries.
//!
//! **Leaving the direct lane in order.** A reply that says the slot is elsewhere or not served
//! (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`), or a pipe that fails, sends the
//! command again through the fed link. From then on the slot is *draining*: its new commands are
//! held until every command it still has on the pipe came back (each one that must go again goes
//! to the fed link as it comes, in the order sent), then the held ones follow on the fed link, in
//! call order, and the slot is *slow*. When the fed link has answered every command of a slow
//! slot, the slot goes back to the direct lane, on the master the redirection named. A task reads
//! the slot map again after such a change (at most once per `retryDelayOnFailover`), opens pipes to
//! new masters, and moves the slots that changed hands by the same draining.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisResult, Value};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::link::{slot_of, Fed};
use super::Queued;
use crate::config::ConnectionConfig;
use crate::error::Result;
use crate::pipe::{self, Io, Pipe};

/// The number of hash slots.
const SLOTS: usize = 16384;
/// No node serves the slot on the direct lane (yet).
const NO_NODE: u16 = u16::MAX;

/// A node's address.
type Address = (String, u16);

/// Where a slot's commands go, when not straight to its master.
enum Mode {
    /// Commands sent on the pipe have yet to come back: new ones wait in `held`.
    Draining {
        /// Commands on the fed link.
        pending: u32,
        held: VecDeque<Box<dyn Queued>>,
        /// The master named by a redirection, to go back to.
        to: Option<Address>,
    },
    /// Every command goes to the fed link, until it answered them all.
    Slow { pending: u32, to: Option<Address> },
}

struct Node {
    address: Address,
    pipe: Pipe,
}

struct State {
    closed: bool,
    nodes: Vec<Node>,
    /// The node (index into `nodes`) serving each slot on the direct lane.
    owner: Vec<u16>,
    /// Commands of each slot on a pipe, not yet answered.
    in_flight: Vec<u32>,
    /// The slots not on the direct lane.
    modes: HashMap<u16, Mode>,
}

struct Shared {
    state: Mutex<State>,
    fed: Fed,
    /// Asks the refresh task to read the slot map again.
    refresh: Arc<Notify>,
}

/// A cluster link: the direct lane and the fed link (see the module doc).
#[derive(Clone)]
pub(super) struct Slots {
    shared: Arc<Shared>,
}

/// What a node's pipe is opened with.
pub(super) struct Opener {
    /// The settings of every node (credentials, socket options, timeouts).
    pub(super) config: ConnectionConfig,
    /// `natMap`.
    pub(super) nat: HashMap<Address, Address>,
    /// The least pause between two reads of the slot map.
    pub(super) every: Duration,
    pub(super) runtime: Handle,
}

impl Slots {
    /// The link over `fed`. Its task reads the slot map through `conn` and opens a pipe to each
    /// master when the first keyed command comes; until then, and for the slots of a master it
    /// cannot reach, commands go by the fed link.
    pub(super) fn open(fed: Fed, conn: ClusterConnection, opener: Opener) -> Slots {
        let refresh = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                closed: false,
                nodes: Vec::new(),
                owner: vec![NO_NODE; SLOTS],
                in_flight: vec![0; SLOTS],
                modes: HashMap::new(),
            }),
            fed,
            refresh: refresh.clone(),
        });
        let runtime = opener.runtime.clone();
        // The first keyed command asks for the slot map.
        runtime.spawn(refresh_task(Arc::downgrade(&shared), refresh, conn, opener));
        Slots { shared }
    }

    /// Puts `cmd` on its slot's pipe, or on the fed link (see the module doc). Returns whether
    /// the pipe must be flushed, and the pipe when the caller has something to do with it; a
    /// closed link gives the command back.
    pub(super) fn put(&self, cmd: Box<dyn Queued>) -> super::link::Given {
        let packed = cmd.packed();
        let transaction = super::link::is_transaction(packed);
        let Some(slot) = slot_of(packed) else {
            // No key: no order to keep with anything.
            return self.shared.fed.put(cmd).map(|()| (false, None));
        };
        let shared = &self.shared;
        let mut st = shared.state();
        if st.closed {
            return Err(cmd);
        }
        let mut cmd = cmd;
        let direct = !transaction && (st.modes.is_empty() || !st.modes.contains_key(&slot));
        if direct {
            let node = st.owner[usize::from(slot)];
            if let Some(pipe) = st.nodes.get(usize::from(node)).map(|n| n.pipe.clone()) {
                st.in_flight[usize::from(slot)] += 1;
                let on_pipe = |cmd| {
                    Box::new(OnPipe {
                        cmd,
                        slot,
                        shared: shared.clone(),
                    }) as Box<dyn pipe::Command>
                };
                match pipe.submit_as(cmd, on_pipe) {
                    Ok(must_flush) => {
                        let pipe = (must_flush || !pipe.is_external()).then_some(pipe);
                        return Ok((must_flush, pipe));
                    }
                    Err(back) => {
                        st.in_flight[usize::from(slot)] -= 1;
                        cmd = back;
                    }
                }
            }
            // No live pipe for the slot: the slot map is read again.
            shared.refresh.notify_one();
        }
        shared.divert(&mut st, slot, cmd).map(|()| (false, None))
    }

    /// Closes the link: the fed link, then every pipe (whose commands then fail as closed).
    pub(super) fn close(&self) {
        let pipes: Vec<Pipe> = {
            let mut st = self.shared.state();
            st.closed = true;
            st.nodes.iter().map(|n| n.pipe.clone()).collect()
        };
        self.shared.fed.close();
        self.shared.refresh.notify_one();
        for pipe in pipes {
            pipe.close();
        }
    }

    /// Resolves once the link is closed and every command it had was finished.
    pub(super) async fn finished(&self) {
        self.shared.fed.finished().await;
        let pipes: Vec<Pipe> = self
            .shared
            .state()
            .nodes
            .iter()
            .map(|n| n.pipe.clone())
            .collect();
        for pipe in pipes {
            pipe.finished().await;
        }
    }

    /// The fed link.
    pub(super) fn fed(&self) -> &Fed {
        &self.shared.fed
    }

    /// The pipes to the masters.
    pub(super) fn pipes(&self) -> Vec<Pipe> {
        self.shared
            .state()
            .nodes
            .iter()
            .map(|n| n.pipe.clone())
            .collect()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics under this lock but a defect; the state is still consistent then.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `cmd` of `slot` by the fed link, after whatever of its slot is still under way
    /// (under the lock, so that the fed link takes one slot's commands in order). A closed fed
    /// link gives the command back.
    fn divert(
        self: &Arc<Self>,
        st: &mut State,
        slot: u16,
        cmd: Box<dyn Queued>,
    ) -> std::result::Result<(), Box<dyn Queued>> {
        let busy = st.in_flight[usize::from(slot)] > 0;
        match st.modes.get_mut(&slot) {
            Some(Mode::Draining { held, .. }) => {
                held.push_back(cmd);
                Ok(())
            }
            Some(Mode::Slow { pending, .. }) => {
                self.fed.put(self.on_fed(cmd, slot)).map_err(Queued::bare)?;
                *pending += 1;
                Ok(())
            }
            None if busy => {
                st.modes.insert(
                    slot,
                    Mode::Draining {
                        pending: 0,
                        held: VecDeque::from([cmd]),
                        to: None,
                    },
                );
                Ok(())
            }
            None => {
                self.fed.put(self.on_fed(cmd, slot)).map_err(Queued::bare)?;
                st.modes.insert(
                    slot,
                    Mode::Slow {
                        pending: 1,
                        to: None,
                    },
                );
                Ok(())
            }
        }
    }

    fn on_fed(self: &Arc<Self>, cmd: Box<dyn Queued>, slot: u16) -> Box<dyn Queued> {
        Box::new(OnFed {
            cmd,
            slot,
            shared: self.clone(),
        })
    }

    /// A draining slot with nothing left on its pipe: its held commands go to the fed link, in
    /// order. Returns those the closed link gave back.
    fn release(self: &Arc<Self>, st: &mut State, slot: u16) -> Vec<Box<dyn Queued>> {
        if st.in_flight[usize::from(slot)] > 0 {
            return Vec::new();
        }
        if !matches!(st.modes.get(&slot), Some(Mode::Draining { .. })) {
            return Vec::new();
        }
        let Some(Mode::Draining { pending, held, to }) = st.modes.remove(&slot) else {
            return Vec::new();
        };
        let mut pending = pending;
        let mut refused = Vec::new();
        for cmd in held {
            match self.fed.put(self.on_fed(cmd, slot)) {
                Ok(()) => pending += 1,
                Err(back) => refused.push(back.bare()),
            }
        }
        if pending == 0 {
            st.direct(slot, to.as_ref(), &self.refresh);
        } else {
            st.modes.insert(slot, Mode::Slow { pending, to });
        }
        refused
    }
}

impl State {
    /// The slot goes back to the direct lane, on the master at `to` when given.
    fn direct(&mut self, slot: u16, to: Option<&Address>, refresh: &Notify) {
        let Some(to) = to else { return };
        let node = self
            .nodes
            .iter()
            .position(|n| &n.address == to && !n.pipe.is_dead());
        match node.and_then(|n| u16::try_from(n).ok()) {
            Some(n) => self.owner[usize::from(slot)] = n,
            None => {
                self.owner[usize::from(slot)] = NO_NODE;
                refresh.notify_one();
            }
        }
    }
}

/// True for a reply that says the command must go elsewhere, or again later.
fn is_redirection(reply: &RedisResult<Value>) -> bool {
    match reply {
        Ok(Value::ServerError(e)) => matches!(
            e.code(),
            "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN"
        ),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// The node a `MOVED` reply names.
fn moved_to(reply: &RedisResult<Value>) -> Option<Address> {
    let Ok(Value::ServerError(e)) = reply else {
        return None;
    };
    if e.code() != "MOVED" {
        return None;
    }
    // "MOVED <slot> <host>:<port>"
    let (host, port) = e.details()?.split(' ').nth(1)?.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// A command on a master's pipe.
struct OnPipe {
    cmd: Box<dyn Queued>,
    slot: u16,
    shared: Arc<Shared>,
}

impl pipe::Command for OnPipe {
    fn packed(&self) -> &[u8] {
        self.cmd.packed()
    }

    fn finish(self: Box<Self>, reply: pipe::Reply) {
        let OnPipe { cmd, slot, shared } = *self;
        let mut st = shared.state();
        st.in_flight[usize::from(slot)] -= 1;
        let mut refused = Vec::new();
        let mut cmd = Some(cmd);
        if is_redirection(&reply) && !st.closed {
            let to = moved_to(&reply);
            if to.is_some() || reply.is_err() {
                shared.refresh.notify_one();
            }
            let mode = st.modes.entry(slot).or_insert(Mode::Draining {
                pending: 0,
                held: VecDeque::new(),
                to: None,
            });
            let (Mode::Draining { pending, to: t, .. } | Mode::Slow { pending, to: t }) = mode;
            if to.is_some() {
                *t = to;
            }
            if let Some(again) = cmd.take() {
                match shared.fed.put(shared.on_fed(again, slot)) {
                    Ok(()) => *pending += 1,
                    Err(back) => refused.push(back.bare()),
                }
            }
        }
        refused.extend(shared.release(&mut st, slot));
        drop(st);
        if let Some(cmd) = cmd {
            cmd.finish(reply);
        }
        for cmd in refused {
            cmd.finish(Err(closed()));
        }
    }
}

/// A command of a slot sent by the fed link.
struct OnFed {
    cmd: Box<dyn Queued>,
    slot: u16,
    shared: Arc<Shared>,
}

impl pipe::Command for OnFed {
    fn packed(&self) -> &[u8] {
        self.cmd.packed()
    }

    fn finish(self: Box<Self>, reply: pipe::Reply) {
        let OnFed { cmd, slot, shared } = *self;
        {
            let mut st = shared.state();
            let st = &mut *st;
            match st.modes.get_mut(&slot) {
                Some(Mode::Draining { pending, .. }) => *pending = pending.saturating_sub(1),
                Some(Mode::Slow { pending, to }) => {
                    *pending = pending.saturating_sub(1);
                    if *pending == 0 {
                        let to = to.take();
                        st.modes.remove(&slot);
                        st.direct(slot, to.as_ref(), &shared.refresh);
                    }
                }
                None => {}
            }
        }
        cmd.finish(reply);
    }
}

impl Queued for OnFed {
    fn number(&mut self, seq: u64, attempts: u64) {
        self.cmd.number(seq, attempts);
    }
    fn seq(&self) -> u64 {
        self.cmd.seq()
    }
    fn born(&self) -> u64 {
        self.cmd.born()
    }
    fn put_on(&mut self, generation: u64) {
        self.cmd.put_on(generation);
    }
    fn generation(&self) -> u64 {
        self.cmd.generation()
    }
    fn resends(&self) -> u32 {
        self.cmd.resends()
    }
    fn resent(&mut self) {
        self.cmd.resent();
    }
    fn pinned(&self) -> bool {
        self.cmd.pinned()
    }
    fn pin(&mut self) {
        self.cmd.pin();
    }
    fn is_settled(&self) -> bool {
        self.cmd.is_settled()
    }
    fn fail(self: Box<Self>, err: crate::error::Error) {
        self.cmd.fail(err);
    }
    fn bare(self: Box<Self>) -> Box<dyn Queued> {
        self.cmd
    }
}

/// The failure of a command whose link was closed (as the fed link fails it).
fn closed() -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the connection was closed").into()
}

/// Reads the slots again when asked, at most once per `every`, until the link goes.
async fn refresh_task(
    weak: Weak<Shared>,
    asked: Arc<Notify>,
    conn: ClusterConnection,
    opener: Opener,
) {
    loop {
        asked.notified().await;
        let Some(shared) = weak.upgrade() else { return };
        if shared.state().closed {
            return;
        }
        read_slot_map(&shared, &conn, &opener).await;
        drop(shared);
        tokio::time::sleep(opener.every).await;
    }
}

/// Reads `cluster slots`, opens pipes to masters not yet reached, and moves each slot to its
/// master (through draining where commands of the slot are on another pipe).
async fn read_slot_map(shared: &Arc<Shared>, conn: &ClusterConnection, opener: &Opener) {
    let mut conn = conn.clone();
    let mut cmd = redis::Cmd::new();
    cmd.arg("cluster").arg("slots");
    let reply = conn
        .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await;
    let Ok(Value::Array(ranges)) = reply else {
        return;
    };
    let mut map: Vec<(u16, u16, Address)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(port)) = (
            u16::try_from(*start),
            u16::try_from(*end),
            u16::try_from(*port),
        ) else {
            continue;
        };
        if host.is_empty() || host == "?" || usize::from(end) >= SLOTS {
            continue;
        }
        let address = opener
            .nat
            .get(&(host.clone(), port))
            .cloned()
            .unwrap_or((host, port));
        map.push((start, end, address));
    }
    // Pipes to the masters not reached yet.
    let mut wanted: Vec<Address> = map.iter().map(|(_, _, a)| a.clone()).collect();
    wanted.sort();
    wanted.dedup();
    {
        let st = shared.state();
        wanted.retain(|a| {
            !st.nodes
                .iter()
                .any(|n| &n.address == a && !n.pipe.is_dead())
        });
    }
    let mut opened = Vec::new();
    for address in wanted {
        if let Ok(pipe) = open_pipe(shared, opener, &address).await {
            opened.push(Node { address, pipe });
        }
    }
    let mut st = shared.state();
    if st.closed {
        drop(st);
        for node in opened {
            node.pipe.close();
        }
        return;
    }
    st.nodes.extend(opened);
    let index: HashMap<&Address, u16> = st
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.pipe.is_dead())
        .filter_map(|(i, n)| Some((&n.address, u16::try_from(i).ok()?)))
        .collect();
    let mut owner = vec![NO_NODE; SLOTS];
    for (start, end, address) in &map {
        let node = index.get(address).copied().unwrap_or(NO_NODE);
        owner[usize::from(*start)..=usize::from(*end)].fill(node);
    }
    let State {
        nodes,
        owner: current,
        in_flight,
        modes,
        ..
    } = &mut *st;
    for (slot, node) in owner.into_iter().enumerate() {
        if current[slot] == node {
            continue;
        }
        let to = nodes.get(usize::from(node)).map(|n| n.address.clone());
        let slot16 = u16::try_from(slot).unwrap_or_default();
        match modes.get_mut(&slot16) {
            Some(Mode::Draining { to: t, .. } | Mode::Slow { to: t, .. }) => {
                if to.is_some() {
                    *t = to;
                }
            }
            None if in_flight[slot] > 0 && to.is_some() => {
                modes.insert(
                    slot16,
                    Mode::Draining {
                        pending: 0,
                        held: VecDeque::new(),
                        to,
                    },
                );
            }
            None => current[slot] = node,
        }
    }
}

/// Opens a pipe to the master at `address`, with the handshake, within `connectTimeout`.
async fn open_pipe(shared: &Arc<Shared>, opener: &Opener, address: &Address) -> Result<Pipe> {
    let (host, port) = address;
    let label = format!("{host}:{port}");
    let attempt = async {
        let stream = super::open::tcp(&opener.config, host, *port)
            .await
            .map_err(|e| crate::error::Error::from_redis(&e.into(), &label))?;
        let (pipe, driver) = Pipe::new(Io::Tcp(stream))
            .map_err(|e| crate::error::Error::from_redis(&e.into(), &label))?;
        let refresh = shared.refresh.clone();
        opener.runtime.spawn(async move {
            driver.await;
            refresh.notify_one();
        });
        if let Err(err) = super::open::handshake(&opener.config, &label, &pipe).await {
            pipe.close();
            return Err(err);
        }
        // The ready check, which names the connection (`connectionName`) as on every link.
        let hello = match &opener.config.connection_name {
            Some(name) => crate::resp::encode(&[b"client", b"setname", name.as_bytes()]),
            None => crate::resp::encode(&[b"ping"]),
        };
        match pipe.send(hello).await {
            Ok(Value::ServerError(e)) => {
                pipe.close();
                Err(crate::error::Error::from_redis(&e.into(), &label))
            }
            Err(e) => {
                pipe.close();
                Err(crate::error::Error::from_redis(&e, &label))
            }
            Ok(_) => Ok(pipe),
        }
    };
    let limit = opener
        .config
        .connect_timeout
        .unwrap_or(Duration::from_secs(10));
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(crate::error::Error::new(
                crate::error::ErrorKind::Timeout,
                format!("connecting to {label}: timed out (connectTimeout)"),
            ))
        })
}
