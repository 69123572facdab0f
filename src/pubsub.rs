//! Subscriptions of a client, on a connection of their own.
//!
//! A client's connection carries everybody's commands (the adapter's cache traffic among them),
//! so it never enters subscriber mode: `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE` go on one
//! more connection, made on the first subscription, and the client's other commands go on as
//! before (in ioredis a subscribed connection refuses them).
//!
//! That connection speaks RESP3, where messages are pushes beside ordinary replies: redis-rs
//! hands them to us, and on a cluster it also routes `SSUBSCRIBE` to the slot's master and
//! subscribes again after a reconnection or a slot move. For one server this module reconnects
//! and subscribes again itself (ioredis's `autoResubscribe`). RESP3 needs Redis 6 or later;
//! sharded channels need Redis 7.
//!
//! Every request waits at most `commandTimeout` when set; a subscriber connection that cannot be
//! made fails the request with the connection's error at once (there is no offline queue here).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Mutex};

use crate::codec::key_slot;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

/// What a subscription is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel (`SUBSCRIBE`).
    Channel,
    /// A glob-style pattern (`PSUBSCRIBE`).
    Pattern,
    /// A sharded channel (`SSUBSCRIBE`, Redis 7).
    Shard,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
}

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The kind of subscription it came through.
    pub kind: Kind,
    /// The pattern that matched, for [`Kind::Pattern`].
    pub pattern: Option<Vec<u8>>,
    /// The channel it was published on.
    pub channel: Vec<u8>,
    /// What was published.
    pub payload: Vec<u8>,
}

/// Called with each message, on a runtime thread, in the order the server sent them.
pub type OnMessage = Arc<dyn Fn(Message) + Send + Sync>;

/// The subscriptions of one client (cheap to clone; every clone is the same subscriber).
#[derive(Clone)]
pub struct Subscriber {
    shared: Arc<Shared>,
}

struct Shared {
    source: Connection,
    on_message: OnMessage,
    /// Requests one at a time, each with the link and the sets it changes.
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    /// Which link is current: a disconnection of an older one is not news.
    generation: u64,
    /// What is subscribed, by [`Kind::index`].
    sets: [BTreeSet<Vec<u8>>; 3],
}

enum Link {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Link {
    async fn send(
        &mut self,
        kind: Kind,
        subscribe: bool,
        names: &[Vec<u8>],
    ) -> redis::RedisResult<()> {
        match (self, kind, subscribe) {
            (Link::Single(c), Kind::Channel, true) => c.subscribe(names).await,
            (Link::Single(c), Kind::Channel, false) => c.unsubscribe(names).await,
            (Link::Single(c), Kind::Pattern, true) => c.psubscribe(names).await,
            (Link::Single(c), Kind::Pattern, false) => c.punsubscribe(names).await,
            (Link::Single(c), Kind::Shard, _) => {
                // redis-rs's connection to one server has no SSUBSCRIBE of its own; the
                // command's confirmations are pushes like SUBSCRIBE's.
                let mut cmd = redis::cmd(if subscribe {
                    "SSUBSCRIBE"
                } else {
                    "SUNSUBSCRIBE"
                });
                cmd.arg(names);
                c.send_packed_command(&cmd).await.map(|_| ())
            }
            (Link::Cluster(c), Kind::Channel, true) => c.subscribe(names).await,
            (Link::Cluster(c), Kind::Channel, false) => c.unsubscribe(names).await,
            (Link::Cluster(c), Kind::Pattern, true) => c.psubscribe(names).await,
            (Link::Cluster(c), Kind::Pattern, false) => c.punsubscribe(names).await,
            (Link::Cluster(c), Kind::Shard, _) => {
                // One command per slot: its master owns those channels.
                let mut by_slot: std::collections::BTreeMap<u16, Vec<&Vec<u8>>> =
                    std::collections::BTreeMap::new();
                for name in names {
                    by_slot.entry(key_slot(name)).or_default().push(name);
                }
                for group in by_slot.values() {
                    if subscribe {
                        c.ssubscribe(group).await?;
                    } else {
                        c.sunsubscribe(group).await?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The pause before the `n`th attempt to make a lost subscriber connection again (ioredis's
/// default retry strategy).
fn backoff(n: u32) -> Duration {
    Duration::from_millis(u64::from(n.saturating_mul(50)).min(2000))
}

impl Subscriber {
    /// A subscriber for the client of `source` (nothing is connected before the first
    /// subscription); `on_message` gets every message.
    pub fn new(source: Connection, on_message: OnMessage) -> Subscriber {
        Subscriber {
            shared: Arc::new(Shared {
                source,
                on_message,
                state: Mutex::new(State::default()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Subscribes to `names` and resolves with how many subscriptions the client then has, as
    /// Redis counts them: channels and patterns together, sharded channels apart.
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` for no name; `ERR_CLOSED` after [`Subscriber::close`]; the
    /// connection's errors (`ERR_CONNECTION`, `ERR_AUTH`, a server error such as a Redis
    /// older than 6); `ERR_TIMEOUT` after `commandTimeout`.
    pub async fn subscribe(&self, kind: Kind, names: Vec<Vec<u8>>) -> Result<usize> {
        if names.is_empty() {
            return Err(Error::invalid_argument(
                "subscribe needs at least one channel or pattern",
            ));
        }
        self.request(kind, true, names).await
    }

    /// Unsubscribes from `names` (all of the kind when empty) and resolves with how many
    /// subscriptions are left, counted as [`Subscriber::subscribe`] counts them.
    ///
    /// # Errors
    /// As [`Subscriber::subscribe`].
    pub async fn unsubscribe(&self, kind: Kind, names: Vec<Vec<u8>>) -> Result<usize> {
        self.request(kind, false, names).await
    }

    /// How many subscriptions of `kind`'s count the client has (see [`Subscriber::subscribe`]).
    pub async fn count(&self, kind: Kind) -> usize {
        count(&*self.shared.state.lock().await, kind)
    }

    /// Ends every subscription and the connection; later requests fail with `ERR_CLOSED`.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut state = self.shared.state.lock().await;
        state.link = None;
        state.generation += 1;
        for set in &mut state.sets {
            set.clear();
        }
    }

    async fn request(&self, kind: Kind, subscribe: bool, names: Vec<Vec<u8>>) -> Result<usize> {
        let work = async {
            let mut state = self.shared.state.lock().await;
            self.check_open()?;
            let names = if subscribe || !names.is_empty() {
                names
            } else {
                state.sets[kind.index()].iter().cloned().collect()
            };
            if !subscribe && state.link.is_none() {
                // Nothing is subscribed on the server: only the bookkeeping changes.
                for name in &names {
                    state.sets[kind.index()].remove(name);
                }
                return Ok(count(&state, kind));
            }
            if names.is_empty() {
                return Ok(count(&state, kind));
            }
            connect(&self.shared, &mut state).await?;
            let link = state.link.as_mut().expect("connected");
            match link.send(kind, subscribe, &names).await {
                Ok(()) => {
                    let set = &mut state.sets[kind.index()];
                    for name in names {
                        if subscribe {
                            set.insert(name);
                        } else {
                            set.remove(&name);
                        }
                    }
                    Ok(count(&state, kind))
                }
                Err(e) => {
                    let err = Error::from_redis(&e, self.shared.source.addr());
                    if err.kind() == ErrorKind::Connection {
                        // Made again (and everything subscribed again) by the next request.
                        state.link = None;
                        state.generation += 1;
                    }
                    Err(err)
                }
            }
        };
        match self.shared.source.config().command_timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} got no answer within commandTimeout ({} ms)",
                        if subscribe {
                            "subscribe"
                        } else {
                            "unsubscribe"
                        },
                        limit.as_millis()
                    ),
                ))
            }),
            None => work.await,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                "the client is closed (quit() or disconnect() was called)",
            ));
        }
        Ok(())
    }
}

fn count(state: &State, kind: Kind) -> usize {
    match kind {
        Kind::Channel | Kind::Pattern => state.sets[0].len() + state.sets[1].len(),
        Kind::Shard => state.sets[2].len(),
    }
}

/// Makes the link when there is none, and subscribes again to everything of the client.
/// (Boxed: the task it starts may call it again, and a recursive future must be.)
fn connect<'a>(
    shared: &'a Arc<Shared>,
    state: &'a mut State,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(connect_now(shared, state))
}

async fn connect_now(shared: &Arc<Shared>, state: &mut State) -> Result<()> {
    if state.link.is_some() {
        return Ok(());
    }
    let source = &shared.source;
    let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
    state.generation += 1;
    let generation = state.generation;
    let mut link = match source.cluster_target() {
        Some(cluster) => {
            let client = cluster.pubsub_client(tx)?;
            let made = client.get_async_connection();
            let made = match source.config().connect_timeout {
                Some(limit) => tokio::time::timeout(limit, made).await.unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                }),
                None => made.await,
            };
            Link::Cluster(made.map_err(|e| Error::from_redis(&e, source.addr()))?)
        }
        None => {
            let config = source.config();
            let client = crate::settings::build_client_as(config, redis::ProtocolVersion::RESP3)?;
            let async_config = crate::connection::open::async_config(config).set_push_sender(tx);
            let conn = client
                .get_multiplexed_async_connection_with_config(&async_config)
                .await
                .map_err(|e| Error::from_redis(&e, source.addr()))?;
            Link::Single(conn)
        }
    };
    tokio::spawn(deliver(
        Arc::downgrade(shared),
        rx,
        generation,
        link_is_single(&link),
    ));
    for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
        let names: Vec<Vec<u8>> = state.sets[kind.index()].iter().cloned().collect();
        if !names.is_empty() {
            link.send(kind, true, &names)
                .await
                .map_err(|e| Error::from_redis(&e, source.addr()))?;
        }
    }
    state.link = Some(link);
    Ok(())
}

fn link_is_single(link: &Link) -> bool {
    matches!(link, Link::Single(_))
}

/// Hands the pushes of one link to the client in order; when a link to one server is lost,
/// makes it again (and subscribes again) while anything is subscribed.
async fn deliver(
    weak: Weak<Shared>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    generation: u64,
    single: bool,
) {
    while let Some(push) = pushes.recv().await {
        let Some(shared) = weak.upgrade() else { return };
        if push.kind == PushKind::Disconnection {
            if single {
                break;
            }
            continue;
        }
        if let Some(message) = message(push) {
            (shared.on_message)(message);
        }
    }
    if single {
        reconnect(weak, generation).await;
    }
}

/// A lost link to one server: made again with ioredis's default backoff until it is, the
/// client no longer subscribes to anything, or it is closed.
async fn reconnect(weak: Weak<Shared>, lost: u64) {
    let mut attempt = 0u32;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut state = shared.state.lock().await;
            if state.generation != lost && state.link.is_some() {
                return; // a request made it again already
            }
            if shared.closed.load(Ordering::Acquire) || state.sets.iter().all(BTreeSet::is_empty) {
                state.link = None;
                return;
            }
            if state.generation == lost {
                state.link = None;
            }
            if connect(&shared, &mut state).await.is_ok() {
                return;
            }
            state.link = None;
        }
        attempt = attempt.saturating_add(1);
        drop(shared);
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// The message a push carries, if it is one (not a confirmation).
fn message(push: PushInfo) -> Option<Message> {
    let mut data = push.data.into_iter().map(|v| match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    });
    let (kind, pattern) = match push.kind {
        PushKind::Message => (Kind::Channel, None),
        PushKind::SMessage => (Kind::Shard, None),
        PushKind::PMessage => (Kind::Pattern, Some(data.next()??)),
        _ => return None,
    };
    let channel = data.next()??;
    let payload = data.next()??;
    Some(Message {
        kind,
        pattern,
        channel,
        payload,
    })
}
