//! Waiting across processes: a line of waiters in Redis beside the lock key, and a wake-up by
//! pub/sub when the lock is released.
//!
//! **The line.** For a lock on one resource `R` taken through one voter (the default: the
//! adapter's server, or a cluster as one voter), a waiter that finds `R` held joins a list of
//! waiters, `{R}:alova-waiters` (or `R:alova-waiters` when `R` has a hash tag of its own, so that
//! the line always shares `R`'s cluster slot), with a deadline in the hash
//! `{R}:alova-waiters-until`. The acquire script lets a waiter take `R` only when `R` is free and
//! the line is empty or starts with that waiter, so waiters from every process are served in the
//! order they first asked. A waiter must ask again before its deadline (`3 x (retryDelay +
//! retryJitter)`, at least half a second) or it leaves the head of the line: a waiter that died
//! (SIGKILL, a lost connection) holds up the line for that long at most. Both keys expire on
//! their own a little after the last waiter asked. The lock key and its value stay those of
//! @sesamecare-oss/redlock: processes on the original package ignore the line (they may take
//! `R` whenever it is free) and exclusion is never at stake.
//!
//! **The wake-up.** The release script publishes the value of the first waiter in line on the
//! channel `alova-lock:R`. Each locker keeps one subscriber connection of its own (pub/sub cannot
//! share the pipelined link), subscribed to the channels of the resources its callers wait for,
//! and wakes the waiter whose value was published, which asks at once: a hand-off between
//! processes costs about a round trip instead of `retryDelay`. Keyspace notifications would
//! need `notify-keyspace-events` set on the server, which the adapter must not assume; a
//! publish from the release script works on every server and cluster (a cluster forwards it to
//! every node). A wake-up that is missed (the subscriber reconnecting, a release by a process
//! on the original package, a key that expired) costs one poll: a waiter still asks every
//! `retryDelay` +- `retryJitter`.
//!
//! **Several voters** (`redlockNodes`): no line. Each node would keep a line of its own, and
//! when their heads differ (waiters' attempts reach the nodes in different orders) nobody wins a
//! majority and the line stalls. So fairness there is what the quorum allows: a release
//! publishes an empty message on `alova-lock:R` (from every voter; the subscriber listens to the
//! first), every waiting process asks at once, and whoever reaches a majority first wins. No
//! process hands a lock on to its own callers, and its next caller asks only once the release
//! is done, when the others were told too: each release is an even race between the processes
//! that wait, not a turn owed to the first one.
//!
//! Locks on several resources poll without a line (and without a wake-up): still no process
//! keeps a resource for its own callers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_core::Stream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};

use crate::codec::key_slot;
use crate::connection::Connection;

/// The keys and channel of one resource's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The lock key, the line (a list) and the waiters' deadlines (a hash), in that order.
    pub keys: Vec<String>,
    /// Where its releases are published.
    pub channel: String,
}

/// The channel on which the releases of `resource` are published.
pub fn channel(resource: &str) -> String {
    format!("alova-lock:{resource}")
}

/// The line of `resource`, or `None` when its keys could not share the lock key's cluster slot
/// (a name with a `}` but no hash tag of its own).
pub fn line(resource: &str) -> Option<Line> {
    let base = if has_hash_tag(resource) {
        resource.to_owned()
    } else {
        format!("{{{resource}}}")
    };
    let list = format!("{base}:alova-waiters");
    if key_slot(list.as_bytes()) != key_slot(resource.as_bytes()) {
        return None;
    }
    Some(Line {
        keys: vec![
            resource.to_owned(),
            list,
            format!("{base}:alova-waiters-until"),
        ],
        channel: channel(resource),
    })
}

/// True when Redis Cluster hashes only part of `key` (a non-empty `{...}`).
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// How long a waiter keeps its place in line without asking again.
pub fn keep_place(retry_delay: Duration, retry_jitter: Duration) -> Duration {
    ((retry_delay + retry_jitter) * 3).max(Duration::from_millis(500))
}

/// One channel's state in the subscriber.
#[derive(Default)]
struct Channel {
    /// Waiters of this process by their lock value.
    waiters: HashMap<String, Arc<Notify>>,
    /// Subscribed on the current subscriber connection.
    subscribed: bool,
    /// Since when nobody waits (a channel is let go after a while, not at once, so that a hot
    /// lock does not subscribe and unsubscribe for every wait).
    idle_since: Option<Instant>,
}

struct Shared {
    channels: Mutex<HashMap<String, Channel>>,
    /// The subscriber could not connect or subscribe last time: waiters do not wait for a
    /// confirmation that would not come (a server that refuses SUBSCRIBE to this user, say),
    /// they poll.
    down: AtomicBool,
    /// Changes when a subscription is confirmed (for [`Wakeups::register`] to wait on).
    confirmed: watch::Sender<u64>,
}

/// A locker's wake-ups: its subscriber connection and the waiters it wakes.
pub struct Wakeups {
    shared: Arc<Shared>,
    control: Mutex<Option<mpsc::UnboundedSender<String>>>,
    source: Connection,
    runtime: Handle,
}

/// A waiter's registration: woken when its value is published on its channel; dropped, it
/// leaves.
pub struct Wakeup {
    shared: Arc<Shared>,
    channel: String,
    value: String,
    notify: Arc<Notify>,
}

impl Wakeup {
    /// Resolves when this waiter was named by a release (at once if it was since the last
    /// call).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        let mut channels = self.shared.channels.lock().expect("channels");
        if let Some(ch) = channels.get_mut(&self.channel) {
            ch.waiters.remove(&self.value);
            if ch.waiters.is_empty() {
                ch.idle_since = Some(Instant::now());
            }
        }
    }
}

/// How long a channel nobody waits on stays subscribed.
const LINGER: Duration = Duration::from_secs(5);
/// How long a waiter waits for its subscription before it asks anyway (it then relies on
/// polling until the subscription is there).
const CONFIRM_WAIT: Duration = Duration::from_millis(250);

impl Wakeups {
    /// Wake-ups through a subscriber connection to the server (or cluster) of `source`.
    pub fn new(source: Connection, runtime: Handle) -> Self {
        let (confirmed, _) = watch::channel(0);
        Wakeups {
            shared: Arc::new(Shared {
                channels: Mutex::new(HashMap::new()),
                down: AtomicBool::new(false),
                confirmed,
            }),
            control: Mutex::new(None),
            source,
            runtime,
        }
    }

    /// Registers the waiter `value` on `channel`, subscribing when needed, and waits a little
    /// for the subscription to be confirmed.
    pub async fn register(&self, channel: &str, value: &str) -> Wakeup {
        let notify = Arc::new(Notify::new());
        let subscribed = {
            let mut channels = self.shared.channels.lock().expect("channels");
            let ch = channels.entry(channel.to_owned()).or_default();
            ch.waiters.insert(value.to_owned(), notify.clone());
            ch.idle_since = None;
            ch.subscribed
        };
        let wakeup = Wakeup {
            shared: self.shared.clone(),
            channel: channel.to_owned(),
            value: value.to_owned(),
            notify,
        };
        if !subscribed {
            let mut confirmed = self.shared.confirmed.subscribe();
            if self.shared.down.load(Ordering::Relaxed) {
                self.send(channel.to_owned());
                return wakeup;
            }
            self.send(channel.to_owned());
            let wait = confirmed.wait_for(|_| {
                self.shared
                    .channels
                    .lock()
                    .expect("channels")
                    .get(channel)
                    .is_some_and(|c| c.subscribed)
            });
            let _ = tokio::time::timeout(CONFIRM_WAIT, wait).await;
        }
        wakeup
    }

    /// Asks the subscriber task (started on first use) to subscribe to `channel`.
    fn send(&self, channel: String) {
        let mut control = self.control.lock().expect("control");
        if let Some(tx) = control.as_ref() {
            if tx.send(channel.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(channel);
        *control = Some(tx);
        self.runtime.spawn(subscriber(
            Arc::downgrade(&self.shared),
            self.source.clone(),
            rx,
        ));
    }
}

impl Wakeups {
    /// Ends the subscriber task and its connection (the locker is closed; a later `register`
    /// would start a new one).
    pub fn close(&self) {
        self.control.lock().expect("control").take();
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.close();
    }
}

/// The subscriber task: one pub/sub connection at a time (to the server, or to any node of a
/// cluster), subscribed to the channels waiters need; reconnects with a short backoff.
async fn subscriber(
    weak: Weak<Shared>,
    source: Connection,
    mut control: mpsc::UnboundedReceiver<String>,
) {
    let mut round = 0usize;
    let mut pause = Duration::from_millis(50);
    loop {
        if control.is_closed() {
            return;
        }
        let clients = source.subscriber_clients();
        if clients.is_empty() {
            return;
        }
        let client = &clients[round % clients.len()];
        round += 1;
        let limit = source
            .config()
            .connect_timeout
            .unwrap_or(Duration::from_secs(10));
        if let Ok(Ok(pubsub)) = tokio::time::timeout(limit, client.get_async_pubsub()).await {
            pause = Duration::from_millis(50);
            match listen(&weak, pubsub, &mut control).await {
                Listen::Closed => return,
                Listen::Lost => {}
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        shared.down.store(true, Ordering::Relaxed);
        for ch in shared.channels.lock().expect("channels").values_mut() {
            ch.subscribed = false;
        }
        drop(shared);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

enum Listen {
    /// The locker is gone.
    Closed,
    /// The connection broke.
    Lost,
}

/// Serves one pub/sub connection until it breaks or the locker goes.
async fn listen(
    weak: &Weak<Shared>,
    pubsub: redis::aio::PubSub,
    control: &mut mpsc::UnboundedReceiver<String>,
) -> Listen {
    let (mut sink, mut stream) = pubsub.split();
    // Everything wanted now, then what is asked for later.
    let wanted: Vec<String> = match weak.upgrade() {
        Some(shared) => shared
            .channels
            .lock()
            .expect("channels")
            .iter()
            .filter(|(_, c)| !c.waiters.is_empty())
            .map(|(name, _)| name.clone())
            .collect(),
        None => return Listen::Closed,
    };
    for name in wanted {
        if sink.subscribe(&name).await.is_err() {
            return Listen::Lost;
        }
        confirm(weak, &name);
    }
    let mut tick = tokio::time::interval(LINGER);
    loop {
        tokio::select! {
            msg = next(&mut stream) => {
                let Some(msg) = msg else { return Listen::Lost };
                let Some(shared) = weak.upgrade() else { return Listen::Closed };
                let channels = shared.channels.lock().expect("channels");
                let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                if let Some(ch) = channels.get(msg.get_channel_name()) {
                    if payload.is_empty() {
                        // A release for everybody (several voters).
                        ch.waiters.values().for_each(|w| w.notify_one());
                    } else if let Some(waiter) = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|value| ch.waiters.get(value))
                    {
                        waiter.notify_one();
                    }
                }
            }
            name = control.recv() => {
                let Some(name) = name else { return Listen::Closed };
                if sink.subscribe(&name).await.is_err() {
                    return Listen::Lost;
                }
                confirm(weak, &name);
            }
            _ = tick.tick() => {
                let Some(shared) = weak.upgrade() else { return Listen::Closed };
                let idle: Vec<String> = {
                    let mut channels = shared.channels.lock().expect("channels");
                    let idle: Vec<String> = channels
                        .iter()
                        .filter(|(_, c)| c.idle_since.is_some_and(|t| t.elapsed() >= LINGER))
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in &idle {
                        channels.remove(name);
                    }
                    idle
                };
                for name in idle {
                    if sink.unsubscribe(&name).await.is_err() {
                        return Listen::Lost;
                    }
                }
            }
        }
    }
}

/// Marks `name` subscribed and tells the waiters waiting for that.
fn confirm(weak: &Weak<Shared>, name: &str) {
    if let Some(shared) = weak.upgrade() {
        shared.down.store(false, Ordering::Relaxed);
        if let Some(ch) = shared.channels.lock().expect("channels").get_mut(name) {
            ch.subscribed = true;
        }
        shared.confirmed.send_modify(|n| *n += 1);
    }
}

/// The next message of the stream, or `None` when the connection ended.
async fn next(stream: &mut redis::aio::PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| match Pin::new(&mut *stream).poll_next(cx) {
        Poll::Ready(item) => Poll::Ready(item),
        Poll::Pending => Poll::Pending,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shares_its_resources_slot() {
        for resource in ["orders", "{user:1}:cart", "a}b", "x{}y", "default", "{}"] {
            if let Some(line) = line(resource) {
                for key in &line.keys {
                    assert_eq!(
                        key_slot(key.as_bytes()),
                        key_slot(resource.as_bytes()),
                        "{key} of {resource}"
                    );
                }
                assert_eq!(line.keys[0], resource);
            }
        }
        assert_eq!(line("orders").unwrap().keys[1], "{orders}:alova-waiters");
        assert_eq!(line("{u}x").unwrap().keys[1], "{u}x:alova-waiters");
    }
}
