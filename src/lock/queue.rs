//! The in-process queue: callers of one locker that want the same resource take turns in FIFO
//! order, so that only the head of each queue talks to Redis. A lock on several resources takes
//! their queues in sorted order, so that two such locks cannot deadlock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

/// One resource's queue.
#[derive(Default)]
pub(super) struct Queue {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Callers waiting for their turn or holding it: the queue is forgotten when none is left.
    users: AtomicUsize,
}

/// A caller's turn at the head of a queue; dropped, it lets the next caller go.
pub(super) struct Turn {
    _turn: OwnedMutexGuard<()>,
    _user: User,
}

/// A caller counted in its queue's users until it is done with it.
struct User(Arc<Queue>);

impl Drop for User {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The queues of one locker, by resource.
#[derive(Default)]
pub(super) struct Queues {
    map: Mutex<HashMap<String, Arc<Queue>>>,
}

impl Queues {
    /// Waits for the turn of `resource`, until `deadline` when there is one; `None` when it
    /// passed.
    pub(super) async fn turn(&self, resource: &str, deadline: Option<Instant>) -> Option<Turn> {
        let user = {
            let mut map = self.map.lock().expect("queue map");
            let queue = map.entry(resource.to_owned()).or_default().clone();
            // Counted under the map's lock, so that `forget` never drops a queue being joined.
            queue.users.fetch_add(1, Ordering::AcqRel);
            User(queue)
        };
        let lock = user.0.turn.clone().lock_owned();
        let turn = match deadline {
            None => lock.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), lock).await.ok()?,
        };
        Some(Turn {
            _turn: turn,
            _user: user,
        })
    }

    /// Drops the queues of `resources` that nobody waits in or holds, so that the map does not
    /// grow.
    pub(super) fn forget(&self, resources: &[String]) {
        let mut map = self.map.lock().expect("queue map");
        for r in resources {
            if map
                .get(r)
                .is_some_and(|q| q.users.load(Ordering::Acquire) == 0)
            {
                map.remove(r);
            }
        }
    }
}
