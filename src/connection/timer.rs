//! `commandTimeout`: one timer per connection for all its commands.
//!
//! Every command of a connection has the same timeout and is issued later than the one before,
//! so deadlines come in order: a FIFO of deadlines and one task sleeping until the first is all
//! it takes (no timer per command). A command that finished leaves a dead entry, dropped when
//! its deadline comes or when a newer command is added behind it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;

/// A command that can be failed when its time runs out.
pub(super) trait Expire: Send + Sync {
    /// Fails the command with `err` unless it finished already.
    fn expire(&self, err: Error);
    /// True once the command finished (or expired).
    fn is_settled(&self) -> bool;
}

struct Shared {
    entries: Mutex<VecDeque<(Instant, Weak<dyn Expire>)>>,
    /// Wakes the task: a first entry was added while it waited with no deadline, or the timer
    /// is dropped.
    wake: Notify,
    /// The task waits with no deadline (it saw no entry). Otherwise it sleeps until a deadline
    /// no later than any new entry's (every entry has the same limit), so an entry added then
    /// needs no wake-up: a burst of commands costs the task nothing.
    idle: std::sync::atomic::AtomicBool,
}

/// The deadlines of one connection's commands.
pub(super) struct Timer {
    limit: Duration,
    shared: Arc<Shared>,
}

impl Timer {
    /// A timer failing each command `limit` after it was added with `error()`; its task runs on
    /// `runtime` while the timer lives.
    pub(super) fn new(
        limit: Duration,
        runtime: &Handle,
        error: Arc<dyn Fn() -> Error + Send + Sync>,
    ) -> Timer {
        let shared = Arc::new(Shared {
            entries: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            idle: std::sync::atomic::AtomicBool::new(false),
        });
        runtime.spawn(run(Arc::downgrade(&shared), error));
        Timer { limit, shared }
    }

    /// Starts the clock of `cmd` now.
    pub(super) fn add(&self, cmd: Weak<dyn Expire>) {
        let deadline = Instant::now() + self.limit;
        let mut entries = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Entries of commands that finished go as new ones come, so the list stays about as
        // long as the commands in flight.
        while entries
            .front()
            .is_some_and(|(_, c)| c.upgrade().is_none_or(|c| c.is_settled()))
        {
            entries.pop_front();
        }
        entries.push_back((deadline, cmd));
        drop(entries);
        if self
            .shared
            .idle
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.shared.wake.notify_one();
    }
}

async fn run(weak: Weak<Shared>, error: Arc<dyn Fn() -> Error + Send + Sync>) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let wake = shared.wake.notified();
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut entries = shared.entries.lock().unwrap_or_else(|p| p.into_inner());
            while let Some((deadline, _)) = entries.front() {
                if *deadline > now {
                    break;
                }
                if let Some((_, cmd)) = entries.pop_front() {
                    due.extend(cmd.upgrade());
                }
            }
            entries.front().map(|(deadline, _)| *deadline)
        };
        for cmd in due {
            cmd.expire(error());
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake => {}
                }
            }
            None => {
                // Idle until an entry comes (set before looking again, so that an entry added
                // meanwhile is seen here or wakes the task).
                shared
                    .idle
                    .store(true, std::sync::atomic::Ordering::Release);
                let empty = shared
                    .entries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                if empty {
                    wake.await;
                }
            }
        }
    }
}

/// `socketTimeout`: while commands are on the link, how long since the link last gave a reply
/// (or since the first of them was put on it). A connection with the option checks it from a
/// task of its own (see `Connection::start`) and gives up a link that stays silent that long.
pub(super) struct SocketWatch {
    pub(super) limit: Duration,
    epoch: std::time::Instant,
    /// Commands put on the link and not finished.
    on_link: std::sync::atomic::AtomicUsize,
    /// Microseconds after `epoch` of the last reply (or of the first command put on a quiet
    /// link).
    heard: std::sync::atomic::AtomicU64,
}

impl SocketWatch {
    pub(super) fn new(limit: Duration) -> Self {
        SocketWatch {
            limit,
            epoch: std::time::Instant::now(),
            on_link: std::sync::atomic::AtomicUsize::new(0),
            heard: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A command was put on the link.
    pub(super) fn placed(&self) {
        use std::sync::atomic::Ordering;
        if self.on_link.fetch_add(1, Ordering::AcqRel) == 0 {
            self.heard.store(self.now(), Ordering::Release);
        }
    }

    /// A command on the link finished: with a reply (`heard`), or with the link's failure.
    pub(super) fn finished(&self, heard: bool) {
        use std::sync::atomic::Ordering;
        self.on_link.fetch_sub(1, Ordering::AcqRel);
        if heard {
            self.heard.store(self.now(), Ordering::Release);
        }
    }

    /// Starts the silence over (the link was given up).
    pub(super) fn reset(&self) {
        self.heard
            .store(self.now(), std::sync::atomic::Ordering::Release);
    }

    /// True when commands wait on the link and it said nothing for `limit`.
    pub(super) fn stalled(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.on_link.load(Ordering::Acquire) > 0
            && self
                .now()
                .saturating_sub(self.heard.load(Ordering::Acquire))
                >= self.limit.as_micros() as u64
    }
}
