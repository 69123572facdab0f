//! Redlock, as the Redis distributed-lock page defines it, with what the original lacked: fair
//! hand-off between callers of one process, automatic extension while held, and a validity
//! check after quorum.
//!
//! - Inside the process, callers of one resource queue in FIFO order (one async mutex per
//!   resource, taken in sorted order so that multi-resource locks cannot deadlock). Only the
//!   head of a queue talks to Redis. With one voter, when the head unlocks a single-resource
//!   lock taken less than half a TTL ago and a caller of this process is waiting, the lock is
//!   handed over as it stands in Redis (same key, same value): the process holds the resource
//!   throughout, and the next caller holds it for at least half a TTL before extensions take
//!   over. The next caller goes on at once; the caller that unlocked waits for one read-only
//!   check of the key, to know whether its lock was lost (see `Locker::hand_over`). Otherwise
//!   the key is deleted and the next caller acquires anew (in the same round trip with one
//!   voter, see `Inner::release`), never after a retry delay.
//! - Across processes, an attempt runs the acquire script on every voting node at once; it wins
//!   with a majority and positive validity (ttl - elapsed - drift), and otherwise releases what
//!   it got and retries after `retryDelay` +- `retryJitter`.
//! - A held lock is extended `automaticExtensionThreshold` before it expires until it is
//!   unlocked; a lock that could not be extended in time is marked lost and reported by
//!   `unlock`.
//! - `unlock` reports a lock lost, whatever the reason (expired, replaced, gone after a restart,
//!   a failover, an eviction), when the release (or the hand-over check) finds that not enough
//!   voters still held its value (the rule, for one voter and for a quorum, is on `fn lost`).

pub mod scripts;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedMutexGuard};

use crate::config::LockConfig;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use scripts::{Script, ACQUIRE_SCRIPT, CHECK_SCRIPT, EXTEND_SCRIPT, RELEASE_SCRIPT};

/// The lock's view of one node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// The script did its work on every key: for a release or a check, every key of the lock
    /// still held its value.
    Yes,
    /// Not on every key: another holder's key stood in the way (acquire), or a key was gone or
    /// held another value (extend, release, check).
    No,
    /// The node could not be asked.
    Failed(String),
}

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

/// One resource's in-process queue: callers of this process take its mutex in turn. The slot
/// carries a lock handed over by the caller that unlocked to the next one (see
/// [`Locker::hand_over`]).
#[derive(Default)]
struct Queue {
    slot: Arc<tokio::sync::Mutex<Option<Handed>>>,
    /// Callers waiting for the mutex. Counted, not read from the `Arc`'s count: a place being
    /// given up (its guard dropped on another thread) unlocks the mutex before it lets go of its
    /// `Arc`, so for a moment the count shows a waiter that is not there, and a lock handed over
    /// to it would lie unclaimed until its queue is forgotten (then released in the background,
    /// where the next caller's acquire can overtake the release, be refused and sleep out a
    /// retry delay).
    waiting: AtomicUsize,
}

/// A caller's place at the head of a queue.
struct QueueGuard {
    slot: OwnedMutexGuard<Option<Handed>>,
    /// Keeps the queue in the queue map (see [`Inner::forget_queues`]).
    queue: Arc<Queue>,
}

/// A caller waiting in a queue, counted in [`Queue::waiting`] until it has its place or gives
/// up (its future dropped, its deadline passed).
struct Waiting(Arc<Queue>);

impl Waiting {
    fn enter(queue: Arc<Queue>) -> Self {
        queue.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(queue)
    }

    /// Waits for the place, until `deadline` when there is one; `None` when it passed.
    async fn place(self, deadline: Option<Instant>) -> Option<QueueGuard> {
        let lock = self.0.slot.clone().lock_owned();
        let slot = match deadline {
            None => lock.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), lock).await.ok()?,
        };
        Some(QueueGuard {
            slot,
            queue: self.0.clone(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A single-resource lock, still held in Redis, left in its queue's slot for the next caller.
/// Dropped unclaimed (its waiter gave up, the queue was forgotten), it is released.
struct Handed {
    held: Option<Arc<Held>>,
    inner: Weak<Inner>,
}

impl Handed {
    fn claim(mut self) -> Option<Arc<Held>> {
        self.held.take()
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let (Some(held), Some(inner)) = (self.held.take(), self.inner.upgrade()) {
            let runtime = inner.runtime.clone();
            runtime.spawn(async move {
                inner.release(&held, &mut UnlockReport::default()).await;
            });
        }
    }
}

/// A lock this locker holds.
struct Held {
    resources: Vec<String>,
    value: String,
    /// The in-process queue places, dropped on unlock to wake the next caller.
    guards: Mutex<Vec<QueueGuard>>,
    lost: AtomicBool,
    stop: watch::Sender<bool>,
    /// When the acquire that won started (validity counts from there).
    started: Instant,
    /// Its extension task was started (see [`sweep`]).
    extending: AtomicBool,
    /// Which voters may hold the key: those that did not fail the last acquire or extend. A
    /// release that fails elsewhere is no news (the key was never set there).
    may_hold: Mutex<Vec<bool>>,
}

/// Whether a caller of this process waits on the queue `guard` holds.
fn waited_for(guard: &QueueGuard) -> bool {
    guard.queue.waiting.load(Ordering::Acquire) > 0
}

/// Which voters may have set the key in answer to `votes`.
fn may_hold(votes: &[Vote]) -> Vec<bool> {
    votes
        .iter()
        .map(|v| !matches!(v, Vote::Failed(_)))
        .collect()
}

/// How many of `voters` make a majority.
fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether a lock is lost, given that `kept` of its `voters` confirmed at its release (or
/// hand-over check) that every one of its keys still held its value.
///
/// A voter that confirms has held the value since the acquire: only this lock sets a key to its
/// value, and a key once gone or replaced never comes back with it (short of reloading an old
/// snapshot, which no client can see). While `kept` voters hold the value, another holder can
/// win at most `voters - kept` votes, and it needs a quorum (`voters / 2 + 1`). So the lock kept
/// its exclusion exactly when `kept > voters - quorum`, and it is lost when the voters that did
/// *not* confirm it are a quorum, i.e. a majority of the voters did not hold its value:
///
/// - one voter: lost unless its key held the value;
/// - odd counts (3, 5): lost when fewer than a quorum confirmed (1 of 3, 2 of 5);
/// - even counts: one less than a quorum still excludes everyone else. With 2 of 4 confirming,
///   nobody else can have had 3 of 4: not lost, although the lock no longer stood on a quorum
///   of its own (an acquire or an extension would not have counted it as won).
///
/// A voter that could not be asked (down, no answer in time) counts as not confirming: it may
/// be down because it restarted without the key, and "not lost" must mean "shown to have kept
/// its exclusion". Such a voter is also named in [`UnlockReport::failures`] when it may hold
/// the key. So with one voter that cannot be reached at `unlock`, the lock is reported lost
/// (and the release failed): the section cannot be shown to have been exclusive.
fn lost(kept: usize, voters: usize) -> bool {
    kept + quorum(voters) <= voters
}

struct Inner {
    voters: Vec<Connection>,
    config: LockConfig,
    runtime: Handle,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    held: Mutex<HashMap<String, Arc<Held>>>,
    /// `release_all` ran: no new lock is taken.
    closed: AtomicBool,
    /// The sweeper (see [`sweep`]) is running.
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
        Ok(Locker {
            inner: Arc::new(Inner {
                voters,
                config,
                runtime,
                queues: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
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
    /// or wait for any of them.
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` for an empty list; `ERR_LOCK_NOT_ACQUIRED` naming the resources, the
    /// attempts and each node's last vote when the attempts run out.
    pub async fn lock(&self, resources: &[String]) -> Result<()> {
        let resources = normalise(resources)?;
        let deadline = self.budget().and_then(|b| Instant::now().checked_add(b));
        let mut guards = Vec::with_capacity(resources.len());
        for resource in &resources {
            let waiting = Waiting::enter(self.inner.queue(resource));
            let Some(guard) = waiting.place(deadline).await else {
                drop(guards);
                self.inner.forget_queues(&resources);
                return Err(Error::new(
                    ErrorKind::LockNotAcquired,
                    format!(
                        "could not lock {}: other callers of this process held it for longer than the {} ms the retries allow",
                        list(&resources),
                        self.budget().unwrap_or_default().as_millis()
                    ),
                ));
            };
            guards.push(guard);
        }
        let mut handed: Vec<Arc<Held>> = guards
            .iter_mut()
            .filter_map(|g| g.slot.take().and_then(Handed::claim))
            .collect();
        let closed = self.inner.closed.load(Ordering::Acquire);
        if !closed && handed.len() == 1 && handed[0].resources == resources {
            let held = handed.pop().expect("one handed lock");
            if self.inner.may_pass(&held) {
                *held.guards.lock().expect("guards") = guards;
                self.inner.hold(&held);
                self.start_sweeper();
                return Ok(());
            }
            handed.push(held);
        }
        // Not for this caller (other resources, too old, closing): give it back to Redis.
        for held in handed {
            self.inner
                .release(&held, &mut UnlockReport::default())
                .await;
        }
        if closed {
            drop(guards);
            self.inner.forget_queues(&resources);
            return Err(Error::new(
                ErrorKind::Closed,
                "the locker is closed (the adapter was closed)",
            ));
        }
        let value = random_hex();
        match self.acquire(&resources, &value).await {
            Ok((start, holders)) => {
                let (stop, _) = watch::channel(false);
                let held = Arc::new(Held {
                    resources: resources.clone(),
                    value,
                    guards: Mutex::new(guards),
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
                drop(guards);
                self.inner.forget_queues(&resources);
                Err(e)
            }
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
            if !self.hand_over(&held, &mut report).await {
                self.inner.release(&held, &mut report).await;
            }
        }
        Ok(report)
    }

    /// Hands `held` (taken out of the held map) to the next caller of this process waiting for
    /// its resource, as it stands in Redis, when it has one resource, was taken less than half a
    /// TTL ago and never extended; reports into `report` what a release would have. Returns
    /// false when it must be released instead.
    ///
    /// Only with one voter, where a release and the next acquire reach the server together
    /// anyway (see [`Inner::release`]), so other processes see no difference: with several
    /// voters the key is free for a round trip between two holders of this process, and a
    /// caller of another process may take it then.
    ///
    /// No release tells whether the key was still ours, so the key is checked (one read-only
    /// script; nothing can know without asking the server). Its age does not help: being under
    /// half a TTL old, the key cannot have expired, but a restart without persistence, a
    /// failover to a replica it had not reached, an eviction, a `FLUSHDB` or a `DEL` can remove
    /// it at any age, and another process may then take it. So this costs the caller that
    /// unlocks one round trip (as a release would); the next caller does not wait for it: the
    /// check is put on the connection first, then the next caller is woken, so that its own
    /// release of the same key reaches the server after the check (the connection keeps call
    /// order) and the check sees the key as this caller left it. Should the check find the key
    /// gone or replaced, the lock is marked lost: the next caller's `unlock` reports it too (its
    /// release would find the key missing anyway), and a caller that has not claimed it yet
    /// takes a lock of its own instead.
    async fn hand_over(&self, held: &Arc<Held>, report: &mut UnlockReport) -> bool {
        if !self.may_hand_over(held) {
            return false;
        }
        let mut check = pin!(self.inner.vote(&CHECK_SCRIPT, &held.resources, &held.value));
        let early = poll_once(check.as_mut()).await;
        if !self.pass_on(held) {
            // The waiter gave up meanwhile: the check (read only) is dropped, the lock released.
            return false;
        }
        let votes = match early {
            Some(v) => v,
            None => check.await,
        };
        if self.inner.judge(held, &votes, report)
            && votes.iter().filter(|v| **v == Vote::No).count() >= self.inner.quorum()
        {
            // Gone for certain (not merely unreachable): no later holder may count on it.
            held.lost.store(true, Ordering::Relaxed);
        }
        report.released += 1;
        true
    }

    /// Whether `held` may be handed over as it stands, by its age and by the voters, and a
    /// caller of this process waits for it.
    fn may_hand_over(&self, held: &Held) -> bool {
        if held.resources.len() != 1
            || self.inner.voters.len() != 1
            || self.inner.closed.load(Ordering::Acquire)
            || !self.inner.may_pass(held)
        {
            return false;
        }
        let guards = held.guards.lock().expect("guards");
        matches!(guards.as_slice(), [guard] if waited_for(guard))
    }

    /// Leaves `held` in its queue's slot and lets the next caller go, when one still waits.
    fn pass_on(&self, held: &Arc<Held>) -> bool {
        let mut guards = held.guards.lock().expect("guards");
        let [guard] = guards.as_mut_slice() else {
            return false;
        };
        if !waited_for(guard) {
            return false;
        }
        *guard.slot = Some(Handed {
            held: Some(held.clone()),
            inner: Arc::downgrade(&self.inner),
        });
        let place = std::mem::take(&mut *guards);
        drop(guards);
        drop(place);
        // Should the waiter have given up meanwhile, the queue goes, and the lock with it.
        self.inner.forget_queues(&held.resources);
        true
    }

    fn start_sweeper(&self) {
        if !self.inner.sweeping.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.inner);
            self.inner.runtime.spawn(sweep(weak));
        }
    }

    /// Releases every lock this locker holds and takes no new one.
    pub async fn release_all(&self) -> UnlockReport {
        self.inner.closed.store(true, Ordering::Release);
        let all: Vec<String> = self
            .inner
            .held
            .lock()
            .expect("lock map")
            .keys()
            .cloned()
            .collect();
        let locks = self.inner.take_held(&all);
        // Locks handed over to callers that have not taken them yet (those callers, seeing the
        // locker closed, would release them too).
        let queues: Vec<Arc<Queue>> = self
            .inner
            .queues
            .lock()
            .expect("queue map")
            .values()
            .cloned()
            .collect();
        let mut unclaimed = Vec::new();
        for queue in queues {
            if let Ok(mut slot) = queue.slot.try_lock() {
                unclaimed.extend(slot.take().and_then(Handed::claim));
            }
        }
        let mut report = UnlockReport::default();
        for held in locks {
            self.inner.release(&held, &mut report).await;
        }
        for held in unclaimed {
            // Whether it was lost is no news: the caller that handed it over was told (its
            // check); nobody held it since.
            let mut own = UnlockReport::default();
            self.inner.release(&held, &mut own).await;
            report.failures.append(&mut own.failures);
            report.released += own.released;
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
    async fn acquire(&self, resources: &[String], value: &str) -> Result<(Instant, Vec<bool>)> {
        let c = &self.inner.config;
        let max_attempts = c.retry_count.map(|n| u64::from(n) + 1);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let start = Instant::now();
            let votes = self.inner.vote(&ACQUIRE_SCRIPT, resources, value).await;
            if self.inner.won(&votes, start) {
                return Ok((start, may_hold(&votes)));
            }
            if votes.iter().any(|v| *v != Vote::No) {
                // Give back what this attempt got (the script deletes only our value).
                self.inner.vote(&RELEASE_SCRIPT, resources, value).await;
            }
            if max_attempts.is_some_and(|max| attempt >= max) {
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
            tokio::time::sleep(jittered(c.retry_delay, c.retry_jitter)).await;
        }
    }
}

impl Inner {
    fn quorum(&self) -> usize {
        quorum(self.voters.len())
    }

    /// Adds to `report` what the release or check `votes` of `held` tell: the voters that may
    /// hold its key but failed, and its resources when it is lost (see [`lost`]), also when an
    /// extension had found it lost before. Returns whether it is lost.
    fn judge(&self, held: &Held, votes: &[Vote], report: &mut UnlockReport) -> bool {
        let holders = held.may_hold.lock().expect("holders").clone();
        for ((conn, vote), may_hold) in self.voters.iter().zip(votes).zip(holders) {
            if let Vote::Failed(why) = vote {
                if may_hold {
                    report.failures.push(format!("{}: {why}", conn.addr()));
                }
            }
        }
        let kept = votes.iter().filter(|v| **v == Vote::Yes).count();
        let lost = held.lost.load(Ordering::Relaxed) || lost(kept, self.voters.len());
        if lost {
            report.lost.extend(held.resources.iter().cloned());
        }
        lost
    }

    /// `held` may pass to another caller as it stands: not lost, never extended, and at least
    /// half its validity left, so that the next holder has time before extensions take over.
    fn may_pass(&self, held: &Held) -> bool {
        !held.lost.load(Ordering::Relaxed)
            && !held.extending.load(Ordering::Acquire)
            && held.started.elapsed() + self.drift() < self.config.ttl / 2
    }

    /// Records `held` as held on each of its resources.
    fn hold(&self, held: &Arc<Held>) {
        let mut map = self.held.lock().expect("lock map");
        for r in &held.resources {
            map.insert(r.clone(), held.clone());
        }
    }

    fn drift(&self) -> Duration {
        self.config.ttl.mul_f64(self.config.drift_factor) + Duration::from_millis(2)
    }

    /// A majority said yes and time is left on the lock.
    fn won(&self, votes: &[Vote], start: Instant) -> bool {
        let yes = votes.iter().filter(|v| **v == Vote::Yes).count();
        yes >= self.quorum() && start.elapsed() + self.drift() < self.config.ttl
    }

    /// How long one node may take to answer: small next to the TTL, as Redlock asks.
    fn vote_timeout(&self) -> Duration {
        (self.config.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Runs `script` on every voter at once; the votes come back in voter order.
    async fn vote(&self, script: &'static Script, resources: &[String], value: &str) -> Vec<Vote> {
        let ttl = self.config.ttl.as_millis() as u64;
        let db = self.config.db;
        let limit = self.vote_timeout();
        let ask = |conn: Connection, keys: Vec<String>, value: String| async move {
            // Every script answers how many keys it did its work on.
            let all = i64::try_from(keys.len()).unwrap_or(i64::MAX);
            match tokio::time::timeout(limit, script.run(&conn, &keys, db, &value, ttl)).await {
                Ok(Ok(n)) if n == all => Vote::Yes,
                Ok(Ok(_)) => Vote::No,
                Ok(Err(e)) => Vote::Failed(e.message().to_owned()),
                Err(_) => Vote::Failed(format!("no answer within {} ms", limit.as_millis())),
            }
        };
        if let [only] = self.voters.as_slice() {
            return vec![ask(only.clone(), resources.to_vec(), value.to_owned()).await];
        }
        let handles: Vec<_> = self
            .voters
            .iter()
            .map(|conn| {
                self.runtime
                    .spawn(ask(conn.clone(), resources.to_vec(), value.to_owned()))
            })
            .collect();
        let mut votes = Vec::with_capacity(handles.len());
        for h in handles {
            votes.push(
                h.await
                    .unwrap_or_else(|_| Vote::Failed("the vote was cancelled".into())),
            );
        }
        votes
    }

    fn describe(&self, votes: &[Vote]) -> String {
        self.voters
            .iter()
            .zip(votes)
            .map(|(conn, vote)| match vote {
                Vote::Yes => format!("{} yes", conn.addr()),
                Vote::No => format!("{} held by another", conn.addr()),
                Vote::Failed(why) => format!("{} failed ({why})", conn.addr()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn queue(&self, resource: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().expect("queue map");
        queues.entry(resource.to_owned()).or_default().clone()
    }

    /// Drops the queues nobody uses any more, so that the map does not grow.
    fn forget_queues(&self, resources: &[String]) {
        let mut queues = self.queues.lock().expect("queue map");
        for r in resources {
            if queues.get(r).is_some_and(|q| Arc::strong_count(q) == 1) {
                queues.remove(r);
            }
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

    /// Stops extending `held`, deletes its keys, then wakes the next caller of this process.
    async fn release(&self, held: &Held, report: &mut UnlockReport) {
        held.stop.send_replace(true);
        let mut release = pin!(self.vote(&RELEASE_SCRIPT, &held.resources, &held.value));
        // With one voter, one poll puts the release on the voter's socket; the next caller of
        // this process may then send its acquire right behind it (the server runs them in
        // order), so a hand-off costs one round trip. Should the release have to wait for a
        // reconnection instead, the acquire may overtake it and is refused, then retried: slower,
        // never unsafe, since a release deletes only its own value.
        let mut votes = None;
        let early = self.voters.len() == 1;
        if early {
            votes = poll_once(release.as_mut()).await;
            self.hand_off(held);
        }
        let votes = match votes {
            Some(v) => v,
            None => release.await,
        };
        self.judge(held, &votes, report);
        report.released += 1;
        if !early {
            self.hand_off(held);
        }
    }

    /// Lets the next caller of this process queued on `held`'s resources go.
    fn hand_off(&self, held: &Held) {
        drop(std::mem::take(&mut *held.guards.lock().expect("guards")));
        self.forget_queues(&held.resources);
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

/// Extends `held` before it expires until it is unlocked (or the locker is gone); marks it lost
/// when an extension does not succeed before the lock expires.
/// How often the sweeper looks for locks due for extension: a quarter of the lead it must
/// extend them by, so that it always starts in time.
fn sweep_tick(config: &LockConfig) -> Duration {
    let lead = config.automatic_extension_threshold.min(config.ttl / 2);
    (lead / 4).max(Duration::from_millis(5))
}

/// One task per locker, while locks are held (and a while after): it starts the extension task
/// of a lock only when that lock nears its expiry. Most locks are released long before, so taking
/// and releasing a lock costs no task and no thread wake-up.
async fn sweep(weak: Weak<Inner>) {
    let mut idle_since: Option<Instant> = None;
    loop {
        let tick = {
            let Some(inner) = weak.upgrade() else { return };
            let tick = sweep_tick(&inner.config);
            let ttl = inner.config.ttl;
            let lead = inner.config.automatic_extension_threshold.min(ttl / 2);
            let now = Instant::now();
            let due: Vec<Arc<Held>> = {
                let map = inner.held.lock().expect("lock map");
                if map.is_empty() {
                    let since = *idle_since.get_or_insert(now);
                    // Idle for long: stop; the next lock starts a new sweeper.
                    if now.duration_since(since) > IDLE_SWEEPER {
                        // Under the map's lock: a lock taken after this sees the flag down and
                        // starts a new sweeper.
                        inner.sweeping.store(false, Ordering::Release);
                        return;
                    }
                } else {
                    idle_since = None;
                }
                map.values()
                    .filter(|h| h.started + ttl - lead <= now + 2 * tick)
                    .filter(|h| !h.extending.swap(true, Ordering::AcqRel))
                    .cloned()
                    .collect()
            };
            for held in due {
                let stop = held.stop.subscribe();
                let start = held.started;
                inner
                    .runtime
                    .spawn(keep_extended(weak.clone(), held, start, stop));
            }
            tick
        };
        tokio::time::sleep(tick).await;
    }
}

/// How long the sweeper stays after the last lock was released.
const IDLE_SWEEPER: Duration = Duration::from_secs(5);

async fn keep_extended(
    weak: Weak<Inner>,
    held: Arc<Held>,
    mut start: Instant,
    mut stop: watch::Receiver<bool>,
) {
    if *stop.borrow_and_update() {
        return;
    }
    let (ttl, lead) = match weak.upgrade() {
        Some(inner) => {
            let ttl = inner.config.ttl;
            (ttl, inner.config.automatic_extension_threshold.min(ttl / 2))
        }
        None => return,
    };
    loop {
        let due = start + ttl - lead;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => return,
        }
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let attempt = Instant::now();
            let votes = inner
                .vote(&EXTEND_SCRIPT, &held.resources, &held.value)
                .await;
            if inner.won(&votes, attempt) {
                *held.may_hold.lock().expect("holders") = may_hold(&votes);
                start = attempt;
                break;
            }
            let taken = votes.iter().filter(|v| **v == Vote::No).count() >= inner.quorum();
            if taken || Instant::now() + inner.drift() >= start + ttl {
                held.lost.store(true, Ordering::Relaxed);
                return;
            }
            drop(inner);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => return,
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

/// `delay` +- a random part of `jitter`.
fn jittered(delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let span = jitter.as_micros() as u64 * 2 + 1;
    let offset = random_u64() % span;
    (delay + Duration::from_micros(offset)).saturating_sub(jitter)
}

/// A random number: SipHash with the process's random keys over a counter and the clock.
/// Lock values need to be unique and unguessable by other holders, not cryptographic.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// 16 random bytes as 32 lowercase hex characters, as @sesamecare-oss/redlock makes its values.
pub fn random_hex() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_32_hex_and_distinct() {
        let a = random_hex();
        let b = random_hex();
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(200), Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(300),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_lock_is_lost_when_a_majority_of_voters_did_not_keep_it() {
        // (voters, the fewest that must confirm the value for the lock not to be lost)
        for (voters, fewest) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)] {
            for kept in 0..=voters {
                assert_eq!(
                    lost(kept, voters),
                    kept < fewest,
                    "{kept} of {voters} kept the value"
                );
                // Lost exactly when those that did not keep it could make a quorum elsewhere.
                assert_eq!(lost(kept, voters), voters - kept >= quorum(voters));
            }
        }
    }

    #[test]
    fn resources_are_sorted_and_deduplicated() {
        let r = normalise(&["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(r, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(normalise(&[]).unwrap_err().code(), "ERR_INVALID_ARG");
    }
}
