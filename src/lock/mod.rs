//! Redlock, as the Redis distributed-lock page defines it, with what the original lacked: turns
//! shared fairly between callers of every process, automatic extension while held, a validity
//! check after quorum, and a report of every lock lost while held.
//!
//! - `queue`: inside the process, callers of one resource take turns in FIFO order; only the
//!   head of a queue talks to Redis.
//! - `attempt`: across processes, an attempt runs a script on every voting node at once; it
//!   wins with a majority and positive validity (ttl - elapsed - drift), and otherwise releases
//!   what it got and tries again after `retryDelay` +- `retryJitter`.
//! - `waiting`: a lock on one resource through one voter (the default) waits in a line in Redis,
//!   so that the callers of all processes are served in about the order they asked, and is woken
//!   by pub/sub when the lock is released. A process never hands a lock on to its own next
//!   caller: each unlock releases the key (the next caller's acquire follows on the same
//!   connection, one round trip later), so a caller of another process that waits in line is
//!   never overtaken by the holder's process.
//! - `sweeper`: a held lock is extended `automaticExtensionThreshold` before it expires until it
//!   is unlocked.
//! - `unlock` reports a lock lost, whatever the reason (not extendable in time, expired,
//!   replaced, gone after a restart, a failover, an eviction), when its release finds that not
//!   enough voters still held its value (`attempt::lost` gives the rule).
//!
//! Lock keys and values are those of @sesamecare-oss/redlock (the resource name; 16 random
//! bytes as 32 hex characters), so that processes on the original package and on this one
//! exclude each other.

mod attempt;
mod queue;
pub mod scripts;
mod sweeper;
pub mod waiting;

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::LockConfig;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use attempt::{jittered, may_hold};
pub use attempt::{random_hex, random_u64, Vote};
use queue::{Queues, Turn};
use scripts::{
    ACQUIRE_SCRIPT, FAIR_ACQUIRE_SCRIPT, FAIR_RELEASE_SCRIPT, LEAVE_SCRIPT, RELEASE_NOTIFY_SCRIPT,
    RELEASE_SCRIPT,
};
use waiting::{Line, Wakeup, Wakeups};

/// What `unlock` found, for the binding to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnlockReport {
    /// Locks released (each once, whatever the number of its resources).
    pub released: usize,
    /// Resources of locks that had been lost before the unlock: not extendable in time, or found
    /// by the release (or the hand-over check) without enough voters holding their value
    /// (expired, replaced, gone after a restart or failover): when a majority of the voters did
    /// not hold it (one that could not be asked counts as not holding it).
    pub lost: Vec<String>,
    /// Nodes whose release failed (their keys expire after the TTL).
    pub failures: Vec<String>,
}

/// A lock this locker holds.
struct Held {
    resources: Vec<String>,
    value: String,
    /// Its line, when it was taken fairly (see `waiting`).
    line: Option<Line>,
    /// The in-process turns, dropped on unlock to let the next caller go.
    turns: Mutex<Vec<Turn>>,
    lost: AtomicBool,
    stop: watch::Sender<bool>,
    /// When the acquire that won started (validity counts from there).
    started: Instant,
    /// Its extension task was started (see `sweeper`).
    extending: AtomicBool,
    /// Which voters may hold the key: those that did not fail the last acquire or extend. A
    /// release that fails elsewhere is no news (the key was never set there).
    may_hold: Mutex<Vec<bool>>,
}

struct Inner {
    voters: Vec<Connection>,
    config: LockConfig,
    runtime: Handle,
    queues: Queues,
    held: Mutex<HashMap<String, Arc<Held>>>,
    /// Wake-ups of waiting callers (see `waiting`).
    wakeups: Wakeups,
    /// `release_all` ran: no new lock is taken.
    closed: AtomicBool,
    /// The sweeper is running.
    sweeping: AtomicBool,
}

/// A Redlock locker over a set of voting nodes.
#[derive(Clone)]
pub struct Locker {
    inner: Arc<Inner>,
}

impl Locker {
    /// A locker whose votes come from `voters`.
    ///
    /// # Errors
    /// `ERR_INVALID_OPTION` when there is no voter.
    pub fn new(voters: Vec<Connection>, config: LockConfig, runtime: Handle) -> Result<Self> {
        if voters.is_empty() {
            return Err(Error::config("No redis client available"));
        }
        // Releases are heard through the first voter (with several, every voter publishes).
        let wakeups = Wakeups::new(voters[0].clone(), runtime.clone());
        Ok(Locker {
            inner: Arc::new(Inner {
                voters,
                config,
                runtime,
                queues: Queues::default(),
                held: Mutex::new(HashMap::new()),
                wakeups,
                closed: AtomicBool::new(false),
                sweeping: AtomicBool::new(false),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &LockConfig {
        &self.inner.config
    }

    /// How many voting nodes there are.
    pub fn voters(&self) -> usize {
        self.inner.voters.len()
    }

    /// Acquires one lock on all of `resources`, waiting behind callers of this locker that hold
    /// or wait for any of them, and in line behind the waiters of other processes.
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` for an empty list; `ERR_LOCK_NOT_ACQUIRED` naming the resources, the
    /// attempts and each node's last vote when the attempts run out; `ERR_CLOSED` once the
    /// locker was closed.
    pub async fn lock(&self, resources: &[String]) -> Result<()> {
        let resources = normalise(resources)?;
        let deadline = self.budget().and_then(|b| Instant::now().checked_add(b));
        let mut turns = Vec::with_capacity(resources.len());
        for resource in &resources {
            let Some(turn) = self.inner.queues.turn(resource, deadline).await else {
                drop(turns);
                self.inner.queues.forget(&resources);
                return Err(Error::new(
                    ErrorKind::LockNotAcquired,
                    format!(
                        "could not lock {}: other callers of this process held it for longer than the {} ms the retries allow",
                        list(&resources),
                        self.budget().unwrap_or_default().as_millis()
                    ),
                ));
            };
            turns.push(turn);
        }
        if self.inner.closed.load(Ordering::Acquire) {
            drop(turns);
            self.inner.queues.forget(&resources);
            return Err(Error::new(
                ErrorKind::Closed,
                "the locker is closed (the adapter was closed)",
            ));
        }
        let value = random_hex();
        let line = self.line(&resources);
        match self.acquire(&resources, line.as_ref(), &value).await {
            Ok((start, holders)) => {
                let (stop, _) = watch::channel(false);
                let held = Arc::new(Held {
                    resources: resources.clone(),
                    value,
                    line,
                    turns: Mutex::new(turns),
                    lost: AtomicBool::new(false),
                    stop,
                    started: start,
                    extending: AtomicBool::new(false),
                    may_hold: Mutex::new(holders),
                });
                self.inner.hold(&held);
                self.start_sweeper();
                Ok(())
            }
            Err(e) => {
                drop(turns);
                self.inner.queues.forget(&resources);
                Err(e)
            }
        }
    }

    /// The line a lock on `resources` waits in: one resource, one voter.
    fn line(&self, resources: &[String]) -> Option<Line> {
        match resources {
            [only] if self.inner.voters.len() == 1 => waiting::line(only),
            _ => None,
        }
    }

    /// Releases the locks that hold any of `resources`, each once; a resource this locker does
    /// not hold is left alone. Never fails for the server's sake: what went wrong is in the
    /// report (the keys then expire after the TTL).
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` for an empty list.
    pub async fn unlock(&self, resources: &[String]) -> Result<UnlockReport> {
        let resources = normalise(resources)?;
        let locks = self.inner.take_held(&resources);
        let mut report = UnlockReport::default();
        for held in locks {
            self.inner.release(&held, &mut report).await;
        }
        Ok(report)
    }

    fn start_sweeper(&self) {
        if !self.inner.sweeping.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.inner);
            self.inner.runtime.spawn(sweeper::sweep(weak));
        }
    }

    /// Releases every lock this locker holds and takes no new one.
    pub async fn release_all(&self) -> UnlockReport {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wakeups.close();
        let all: Vec<String> = self
            .inner
            .held
            .lock()
            .expect("lock map")
            .keys()
            .cloned()
            .collect();
        let locks = self.inner.take_held(&all);
        let mut report = UnlockReport::default();
        for held in locks {
            self.inner.release(&held, &mut report).await;
        }
        report
    }

    /// Closes the voters' connections (after `release_all`), for voters the locker owns.
    pub async fn close_voters(&self) {
        for conn in &self.inner.voters {
            conn.quit().await;
        }
    }

    /// How long a `lock` may take at most: every attempt and pause; `None` when unlimited.
    fn budget(&self) -> Option<Duration> {
        let c = &self.inner.config;
        c.retry_count.map(|n| {
            (c.retry_delay + c.retry_jitter)
                .checked_mul(n.saturating_add(1))
                .and_then(|d| d.checked_add(c.ttl))
                .unwrap_or(Duration::MAX)
        })
    }

    /// Redlock attempts until one wins or they run out; returns when the winning attempt began.
    /// In `line`, a waiter is woken by the release that makes it first (see `waiting`), and
    /// polls at `retryDelay` all the same.
    async fn acquire(
        &self,
        resources: &[String],
        line: Option<&Line>,
        value: &str,
    ) -> Result<(Instant, Vec<bool>)> {
        let c = &self.inner.config;
        let max_attempts = c.retry_count.map(|n| u64::from(n) + 1);
        let keep = waiting::keep_place(c.retry_delay, c.retry_jitter)
            .as_millis()
            .to_string();
        let mut wakeup: Option<Wakeup> = None;
        // Attempts are counted by the pauses they follow: an attempt made at once because a
        // release woke the waiter does not use up one of `retryCount` (with several voters, every
        // release wakes every waiting process, and most of them lose that race).
        let mut attempt = 0u64;
        let mut woken = false;
        // The next poll, kept across wake-ups so that polls (and so the attempts counted) keep
        // their pace however often releases wake the waiter.
        let mut next_poll: Option<tokio::time::Instant> = None;
        loop {
            if !woken {
                attempt += 1;
            }
            woken = false;
            let start = Instant::now();
            let votes = match line {
                Some(line) => {
                    self.inner
                        .vote_line(&FAIR_ACQUIRE_SCRIPT, line, value, &[keep.as_bytes()])
                        .await
                }
                None => self.inner.vote(&ACQUIRE_SCRIPT, resources, value).await,
            };
            if self.inner.won(&votes, start) {
                return Ok((start, may_hold(&votes)));
            }
            if votes.contains(&Vote::Yes) {
                // Too late to be valid: give back what this attempt got (only our value goes).
                match line {
                    Some(line) => {
                        self.inner
                            .vote_line(
                                &FAIR_RELEASE_SCRIPT,
                                line,
                                value,
                                &[line.channel.as_bytes()],
                            )
                            .await
                    }
                    None => self.inner.vote(&RELEASE_SCRIPT, resources, value).await,
                };
            }
            if max_attempts.is_some_and(|max| attempt >= max) {
                if let Some(line) = line {
                    // Nobody should wait for a waiter that gave up. Its LEAVE is put on the
                    // connection now, in call order, so that this caller's next lock() (which
                    // may follow at once) finds it gone from the line; its reply is not waited
                    // for.
                    let inner = self.inner.clone();
                    let (line, value) = (line.clone(), value.to_owned());
                    let mut leave = Box::pin(async move {
                        inner.vote_line(&LEAVE_SCRIPT, &line, &value, &[]).await;
                    });
                    if poll_once(leave.as_mut()).await.is_none() {
                        self.inner.runtime.spawn(leave);
                    }
                }
                return Err(Error::new(
                    ErrorKind::LockNotAcquired,
                    format!(
                        "could not lock {} after {attempt} attempts; last votes ({} needed): {}",
                        list(resources),
                        self.inner.quorum(),
                        self.inner.describe(&votes)
                    ),
                ));
            }
            let listen = match (line, resources) {
                (Some(line), _) => Some(line.channel.clone()),
                (None, [only]) if self.inner.voters.len() > 1 => Some(waiting::channel(only)),
                _ => None,
            };
            if let (Some(channel), None) = (listen, &wakeup) {
                // Waiting now: listen for the release, then ask once more at once, since it
                // may have come before the subscription did.
                wakeup = Some(self.inner.wakeups.register(&channel, value).await);
                woken = true;
                continue;
            }
            let poll = *next_poll.get_or_insert_with(|| {
                tokio::time::Instant::now() + jittered(c.retry_delay, c.retry_jitter)
            });
            let pause = tokio::time::sleep_until(poll);
            match &wakeup {
                Some(w) => {
                    tokio::select! {
                        () = pause => next_poll = None,
                        () = w.notified() => woken = true,
                    }
                }
                None => {
                    pause.await;
                    next_poll = None;
                }
            }
        }
    }
}

impl Inner {
    /// Records `held` as held on each of its resources.
    fn hold(&self, held: &Arc<Held>) {
        let mut map = self.held.lock().expect("lock map");
        for r in &held.resources {
            map.insert(r.clone(), held.clone());
        }
    }

    /// Takes out of the held map every lock holding any of `resources` (each lock once).
    fn take_held(&self, resources: &[String]) -> Vec<Arc<Held>> {
        let mut map = self.held.lock().expect("lock map");
        let mut locks: Vec<Arc<Held>> = Vec::new();
        for r in resources {
            if let Some(held) = map.get(r).cloned() {
                for other in &held.resources {
                    map.remove(other);
                }
                if !locks.iter().any(|l| Arc::ptr_eq(l, &held)) {
                    locks.push(held);
                }
            }
        }
        locks
    }

    /// Stops extending `held`, deletes its keys, then lets the next caller of this process go.
    async fn release(&self, held: &Held, report: &mut UnlockReport) {
        held.stop.send_replace(true);
        let extra: Vec<&[u8]> = match &held.line {
            Some(line) => vec![line.channel.as_bytes()],
            None => Vec::new(),
        };
        let release: Pin<Box<dyn Future<Output = Vec<Vote>> + Send + '_>> = match &held.line {
            Some(line) => Box::pin(self.vote_line(&FAIR_RELEASE_SCRIPT, line, &held.value, &extra)),
            None if self.voters.len() > 1 && held.resources.len() == 1 => {
                Box::pin(self.vote(&RELEASE_NOTIFY_SCRIPT, &held.resources, &held.value))
            }
            None => Box::pin(self.vote(&RELEASE_SCRIPT, &held.resources, &held.value)),
        };
        let mut release = pin!(release);
        // With one voter, one poll puts the release on the voter's connection; the next caller
        // of this process may then send its acquire right behind it (the connection keeps call
        // order), so the next turn costs one round trip. A caller of another process waiting in
        // line was named by the release, and the acquire finds it first in line.
        let mut votes = None;
        let early = self.voters.len() == 1;
        if early {
            votes = poll_once(release.as_mut()).await;
            self.next_turn(held);
        }
        let votes = match votes {
            Some(v) => v,
            None => release.await,
        };
        self.judge(held, &votes, report);
        report.released += 1;
        if !early {
            self.next_turn(held);
        }
    }

    /// Lets the next caller of this process queued on `held`'s resources go.
    fn next_turn(&self, held: &Held) {
        drop(std::mem::take(&mut *held.turns.lock().expect("turns")));
        self.queues.forget(&held.resources);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(map) = self.held.lock() {
            for held in map.values() {
                held.stop.send_replace(true);
            }
        }
    }
}

/// Polls `fut` once (a vote then has its command on the connection, in call order) and gives
/// its output when that was enough.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Sorted, without duplicates; an empty list is refused.
fn normalise(resources: &[String]) -> Result<Vec<String>> {
    if resources.is_empty() {
        return Err(Error::invalid_argument(
            "the resource list is empty: name at least one resource to lock",
        ));
    }
    let mut out = resources.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn list(resources: &[String]) -> String {
    format!(
        "[{}]",
        resources
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_sorted_and_deduplicated() {
        let r = normalise(&["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(r, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(normalise(&[]).unwrap_err().code(), "ERR_INVALID_ARG");
    }
}
