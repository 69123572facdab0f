//! Extension: one sweeper task per locker while locks are held starts the extension of each
//! lock that nears its expiry, and keeps it extended until it is unlocked; a lock that could not
//! be extended before it expired is marked lost.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::attempt::{may_hold, Vote};
use super::scripts::EXTEND_SCRIPT;
use super::{Held, Inner};
use crate::config::LockConfig;

/// Extends `held` before it expires until it is unlocked (or the locker is gone); marks it lost
/// when an extension does not succeed before the lock expires.
/// How often the sweeper looks for locks due for extension: a quarter of the lead it must
/// extend them by, so that it always starts in time.
pub(super) fn sweep_tick(config: &LockConfig) -> Duration {
    let lead = config.automatic_extension_threshold.min(config.ttl / 2);
    (lead / 4).max(Duration::from_millis(5))
}

/// One task per locker, while locks are held (and a while after): it starts the extension task
/// of a lock only when that lock nears its expiry. Most locks are released long before, so taking
/// and releasing a lock costs no task and no thread wake-up.
pub(super) async fn sweep(weak: Weak<Inner>) {
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
            // Unlocked meanwhile: the release stops the extension before it sends its own
            // command, so an extension that reached the server after the release (and found
            // the key gone) is seen here and says nothing. One sent before the release that
            // found the key gone is judged by the release itself, which finds it gone too.
            if *stop.borrow() {
                return;
            }
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
