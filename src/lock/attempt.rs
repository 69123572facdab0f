//! One Redlock attempt: a script run on every voting node at once, the votes, the quorum, the
//! validity left, and what a release tells about a lock that was lost.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::scripts::Script;
use super::waiting::Line;
use super::{Held, Inner, UnlockReport};
use crate::connection::Connection;

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

/// Which voters may have set the key in answer to `votes`.
pub(super) fn may_hold(votes: &[Vote]) -> Vec<bool> {
    votes
        .iter()
        .map(|v| !matches!(v, Vote::Failed(_)))
        .collect()
}

/// How many of `voters` make a majority.
pub(super) fn quorum(voters: usize) -> usize {
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
pub(super) fn lost(kept: usize, voters: usize) -> bool {
    kept + quorum(voters) <= voters
}

impl Inner {
    pub(super) fn quorum(&self) -> usize {
        quorum(self.voters.len())
    }

    /// Adds to `report` what the release or check `votes` of `held` tell: the voters that may
    /// hold its key but failed, and its resources when it is lost (see [`lost`]), also when an
    /// extension had found it lost before. Returns whether it is lost.
    pub(super) fn judge(&self, held: &Held, votes: &[Vote], report: &mut UnlockReport) -> bool {
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

    pub(super) fn drift(&self) -> Duration {
        self.config.ttl.mul_f64(self.config.drift_factor) + Duration::from_millis(2)
    }

    /// A majority said yes and time is left on the lock.
    pub(super) fn won(&self, votes: &[Vote], start: Instant) -> bool {
        let yes = votes.iter().filter(|v| **v == Vote::Yes).count();
        yes >= self.quorum() && start.elapsed() + self.drift() < self.config.ttl
    }

    /// How long one node may take to answer: small next to the TTL, as Redlock asks.
    fn vote_timeout(&self) -> Duration {
        (self.config.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Runs `script` on every voter at once; the votes come back in voter order.
    pub(super) async fn vote(
        &self,
        script: &'static Script,
        resources: &[String],
        value: &str,
    ) -> Vec<Vote> {
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

    pub(super) fn describe(&self, votes: &[Vote]) -> String {
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

    /// Runs a script of one resource's line (see `waiting`) on the one voter, with `extra`
    /// arguments; 1 is a yes.
    pub(super) async fn vote_line(
        &self,
        script: &'static Script,
        line: &Line,
        value: &str,
        extra: &[&[u8]],
    ) -> Vec<Vote> {
        let limit = self.vote_timeout();
        let ttl = self.config.ttl.as_millis() as u64;
        let conn = &self.voters[0];
        let run = script.run_line(conn, &line.keys, self.config.db, value, ttl, extra);
        vec![match tokio::time::timeout(limit, run).await {
            Ok(Ok(1)) => Vote::Yes,
            Ok(Ok(_)) => Vote::No,
            Ok(Err(e)) => Vote::Failed(e.message().to_owned()),
            Err(_) => Vote::Failed(format!("no answer within {} ms", limit.as_millis())),
        }]
    }
}

/// `delay` +- a random part of `jitter`.
pub(super) fn jittered(delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let span = jitter.as_micros() as u64 * 2 + 1;
    let offset = random_u64() % span;
    (delay + Duration::from_micros(offset)).saturating_sub(jitter)
}

/// A random number for jitter and routing: SipHash with the process's random keys over a
/// counter and the clock (lock values come from the OS, see [`random_hex`]).
pub fn random_u64() -> u64 {
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

/// A lock's value: 16 bytes from the operating system's random source as 32 lowercase hex
/// characters, as @sesamecare-oss/redlock makes its values (`crypto.randomBytes(16)`). Should
/// the source fail (it does not on any supported system), the process's hash keys over a
/// counter and the clock stand in.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&random_u64().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}
