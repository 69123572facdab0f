//! Redlock against real servers: exclusion, turns inside a process, extension, quorum, loss.

mod common;

use std::time::{Duration, Instant};

use alova_storage_redis::config::LockConfig;
use alova_storage_redis::connection::Connection;
use alova_storage_redis::lock::Locker;
use common::{cmd, RedisServer};
use redis::Value;

fn locker(voters: Vec<Connection>, config: LockConfig) -> Locker {
    Locker::new(voters, config, tokio::runtime::Handle::current()).unwrap()
}

fn res(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn int(conn: &Connection, words: &[&str]) -> i64 {
    match conn.send(&cmd(words)).await.unwrap() {
        Value::Int(n) => n,
        Value::BulkString(b) => String::from_utf8(b).unwrap().parse().unwrap(),
        Value::Nil => 0,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes_callers_of_one_and_of_two_lockers() {
    let server = RedisServer::start(&[]);
    // Two lockers on two connections, as two processes would have.
    let lockers = [
        locker(vec![server.connect()], LockConfig::default()),
        locker(vec![server.connect()], LockConfig::default()),
    ];
    let data = server.connect();
    let mut tasks = Vec::new();
    for l in &lockers {
        for _ in 0..8 {
            let (l, data) = (l.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    l.lock(&res(&["counter-lock"])).await.unwrap();
                    let n = int(&data, &["GET", "counter"]).await;
                    data.send(&cmd(&["SET", "counter", &(n + 1).to_string()]))
                        .await
                        .unwrap();
                    l.unlock(&res(&["counter-lock"])).await.unwrap();
                }
            }));
        }
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(int(&data, &["GET", "counter"]).await, 400);
    assert_eq!(
        int(&data, &["EXISTS", "counter-lock"]).await,
        0,
        "no lock key left behind"
    );
    // A hand-off that slept out retry delays would take minutes; this bounds a stall, not speed.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_resource_lock_is_all_or_nothing_and_released_once() {
    let server = RedisServer::start(&[]);
    let a = locker(vec![server.connect()], LockConfig::default());
    let quick = LockConfig {
        retry_count: Some(1),
        retry_delay: Duration::from_millis(20),
        retry_jitter: Duration::ZERO,
        ..LockConfig::default()
    };
    let b = locker(vec![server.connect()], quick);
    let data = server.connect();

    a.lock(&res(&["x", "y"])).await.unwrap();
    let value = data.send(&cmd(&["GET", "x"])).await.unwrap();
    assert_eq!(value, data.send(&cmd(&["GET", "y"])).await.unwrap());
    let err = b.lock(&res(&["y", "z"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_LOCK_NOT_ACQUIRED");
    assert!(
        err.message().contains("\"y\"") && err.message().contains("2 attempts"),
        "{err}"
    );
    assert!(err.message().contains("held by another"), "{err}");
    assert_eq!(
        int(&data, &["EXISTS", "z"]).await,
        0,
        "a failed attempt leaves nothing"
    );

    let report = a.unlock(&res(&["x", "y"])).await.unwrap();
    assert_eq!(report.released, 1);
    assert!(report.failures.is_empty() && report.lost.is_empty());
    assert_eq!(int(&data, &["EXISTS", "x", "y"]).await, 0);
    b.lock(&res(&["y", "z"])).await.unwrap();
    b.unlock(&res(&["z"])).await.unwrap();
    assert_eq!(
        int(&data, &["EXISTS", "y", "z"]).await,
        0,
        "unlocking one resource frees the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_never_touches_another_holders_key() {
    let server = RedisServer::start(&[]);
    let l = locker(vec![server.connect()], LockConfig::default());
    let data = server.connect();
    // Not held: resolves without effect.
    data.send(&cmd(&["SET", "theirs", "someone-else"]))
        .await
        .unwrap();
    let report = l.unlock(&res(&["theirs"])).await.unwrap();
    assert_eq!(report.released, 0);
    assert_eq!(int(&data, &["EXISTS", "theirs"]).await, 1);
    assert_eq!(l.unlock(&[]).await.unwrap_err().code(), "ERR_INVALID_ARG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_extended_past_its_ttl() {
    let server = RedisServer::start(&[]);
    let config = LockConfig {
        ttl: Duration::from_millis(300),
        automatic_extension_threshold: Duration::from_millis(100),
        ..LockConfig::default()
    };
    let holder = locker(vec![server.connect()], config.clone());
    let other = locker(
        vec![server.connect()],
        LockConfig {
            retry_count: Some(0),
            ..config
        },
    );
    holder.lock(&res(&["long"])).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            other.lock(&res(&["long"])).await.unwrap_err().code(),
            "ERR_LOCK_NOT_ACQUIRED",
            "the lock must hold for the whole section"
        );
    }
    let report = holder.unlock(&res(&["long"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    other.lock(&res(&["long"])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_over_is_reported_lost() {
    let server = RedisServer::start(&[]);
    let config = LockConfig {
        ttl: Duration::from_millis(200),
        automatic_extension_threshold: Duration::from_millis(80),
        ..LockConfig::default()
    };
    let holder = locker(vec![server.connect()], config);
    let data = server.connect();
    holder.lock(&res(&["stolen"])).await.unwrap();
    // Another holder's value replaces ours (as after an expiry during a network split).
    data.send(&cmd(&["SET", "stolen", "someone-else", "PX", "10000"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = holder.unlock(&res(&["stolen"])).await.unwrap();
    assert_eq!(report.lost, res(&["stolen"]));
    let value = data.send(&cmd(&["GET", "stolen"])).await.unwrap();
    assert_eq!(
        value,
        Value::BulkString(b"someone-else".to_vec()),
        "their key stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_independent_nodes() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let config = LockConfig {
        retry_count: Some(2),
        retry_delay: Duration::from_millis(20),
        ..LockConfig::default()
    };
    let l = locker(servers.iter().map(|s| s.connect()).collect(), config);
    l.lock(&res(&["q"])).await.unwrap();
    l.unlock(&res(&["q"])).await.unwrap();

    servers[0].kill();
    l.lock(&res(&["q"])).await.unwrap();
    let report = l.unlock(&res(&["q"])).await.unwrap();
    assert!(
        report.failures.is_empty(),
        "the node that was down never held the key: {report:?}"
    );

    // A node that goes down while the lock is held is reported by the release.
    l.lock(&res(&["q"])).await.unwrap();
    servers[1].kill();
    let report = l.unlock(&res(&["q"])).await.unwrap();
    assert_eq!(report.failures.len(), 1, "{report:?}");
    servers[1].restart();

    servers[1].kill();
    let err = l.lock(&res(&["q"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_LOCK_NOT_ACQUIRED");
    assert!(
        err.message().contains("2 needed") && err.message().contains("failed"),
        "{err}"
    );
    let survivor = servers[2].connect();
    assert_eq!(
        int(&survivor, &["EXISTS", "q"]).await,
        0,
        "the minority's key was given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_live_in_the_lock_db() {
    let server = RedisServer::start(&[]);
    let l = locker(
        vec![server.connect()],
        LockConfig {
            db: 2,
            ..LockConfig::default()
        },
    );
    l.lock(&res(&["in-db-2"])).await.unwrap();
    let mut config = server.config();
    config.db = 2;
    let db2 = common::connect(config);
    let Value::BulkString(v) = db2.send(&cmd(&["GET", "in-db-2"])).await.unwrap() else {
        panic!("the lock key is in db 2")
    };
    assert_eq!(v.len(), 32);
    assert_eq!(int(&server.connect(), &["EXISTS", "in-db-2"]).await, 0);
    l.unlock(&res(&["in-db-2"])).await.unwrap();
    assert_eq!(int(&db2, &["EXISTS", "in-db-2"]).await, 0);
}

async fn value_of(conn: &Connection, key: &str) -> Option<Vec<u8>> {
    match conn.send(&cmd(&["GET", key])).await.unwrap() {
        Value::BulkString(b) => Some(b),
        Value::Nil => None,
        other => panic!("{other:?}"),
    }
}

/// Starts `l.lock(resources)` in a task and gives it time to queue behind the holder.
async fn queued(l: &Locker, resources: &[&str]) -> tokio::task::JoinHandle<()> {
    let (l, resources) = (l.clone(), res(resources));
    let task = tokio::spawn(async move { l.lock(&resources).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !task.is_finished(),
        "the caller did not wait for the holder"
    );
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_caller_of_the_process_takes_a_lock_of_its_own_at_once() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    // A refused acquire would sleep out a whole retry delay: unmistakable.
    let l = locker(
        vec![server.connect()],
        LockConfig {
            retry_delay: Duration::from_secs(5),
            retry_jitter: Duration::ZERO,
            ..LockConfig::default()
        },
    );
    l.lock(&res(&["next"])).await.unwrap();
    let value = value_of(&data, "next").await.expect("the lock key");
    let next = queued(&l, &["next"]).await;
    let unlocked = Instant::now();
    let report = l.unlock(&res(&["next"])).await.unwrap();
    assert_eq!(report.released, 1, "{report:?}");
    assert!(report.lost.is_empty(), "{report:?}");
    next.await.unwrap();
    assert!(
        unlocked.elapsed() < Duration::from_secs(2),
        "{:?}",
        unlocked.elapsed()
    );
    let now = value_of(&data, "next").await;
    assert!(
        now.is_some() && now != Some(value),
        "the key was released and taken anew (a process never passes a lock on to its own callers)"
    );
    assert_eq!(l.unlock(&res(&["next"])).await.unwrap().released, 1);
    assert_eq!(int(&data, &["EXISTS", "next"]).await, 0);

    // A waiter for more resources than the holder had takes a lock of its own too.
    l.lock(&res(&["one"])).await.unwrap();
    let value = value_of(&data, "one").await;
    let next = queued(&l, &["one", "two"]).await;
    l.unlock(&res(&["one"])).await.unwrap();
    next.await.unwrap();
    let (one, two) = (value_of(&data, "one").await, value_of(&data, "two").await);
    assert!(
        one.is_some() && one == two && one != value,
        "{one:?} {two:?}"
    );
    assert_eq!(l.unlock(&res(&["two"])).await.unwrap().released, 1);
    assert_eq!(int(&data, &["EXISTS", "one", "two"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_half_its_ttl_is_taken_anew_by_the_next_caller() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    let l = locker(
        vec![server.connect()],
        LockConfig {
            ttl: Duration::from_millis(600),
            automatic_extension_threshold: Duration::from_millis(100),
            ..LockConfig::default()
        },
    );
    l.lock(&res(&["aged"])).await.unwrap();
    let value = value_of(&data, "aged").await;
    let next = queued(&l, &["aged"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    l.unlock(&res(&["aged"])).await.unwrap();
    next.await.unwrap();
    let now = value_of(&data, "aged").await;
    assert!(
        now.is_some() && now != value,
        "a fresh lock with a full TTL"
    );
    let ttl = int(&data, &["PTTL", "aged"]).await;
    assert!(ttl > 400, "PTTL {ttl}");
    l.unlock(&res(&["aged"])).await.unwrap();
    assert_eq!(int(&data, &["EXISTS", "aged"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_voters_the_next_caller_takes_a_lock_of_its_own() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let l = locker(
        servers.iter().map(RedisServer::connect).collect(),
        LockConfig::default(),
    );
    let data = servers[0].connect();
    l.lock(&res(&["voted"])).await.unwrap();
    let value = value_of(&data, "voted").await;
    let next = queued(&l, &["voted"]).await;
    l.unlock(&res(&["voted"])).await.unwrap();
    next.await.unwrap();
    let now = value_of(&data, "voted").await;
    assert!(
        now.is_some() && now != value,
        "the key was freed between holders"
    );
    l.unlock(&res(&["voted"])).await.unwrap();
    for s in &servers {
        assert_eq!(int(&s.connect(), &["EXISTS", "voted"]).await, 0);
    }
}

/// A locker on `server` and its voter connection (to wait for it to be back after a restart).
fn locker_and_voter(server: &RedisServer, config: LockConfig) -> (Locker, Connection) {
    let voter = server.connect();
    (locker(vec![voter.clone()], config), voter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_key_is_gone_or_replaced_at_unlock_is_reported_lost() {
    let server = RedisServer::start(&[]);
    // The default TTL (5 s): no extension runs during the test, only the release can tell.
    let l = locker(vec![server.connect()], LockConfig::default());
    let data = server.connect();

    // Gone (as after a restart without persistence, an eviction, a FLUSHDB).
    l.lock(&res(&["gone"])).await.unwrap();
    data.send(&cmd(&["DEL", "gone"])).await.unwrap();
    let report = l.unlock(&res(&["gone"])).await.unwrap();
    assert_eq!(report.released, 1, "{report:?}");
    assert_eq!(report.lost, res(&["gone"]), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");

    // Replaced by another holder's value (taken after it was gone).
    l.lock(&res(&["replaced"])).await.unwrap();
    data.send(&cmd(&["SET", "replaced", "someone-else", "PX", "10000"]))
        .await
        .unwrap();
    let report = l.unlock(&res(&["replaced"])).await.unwrap();
    assert_eq!(report.lost, res(&["replaced"]), "{report:?}");
    assert_eq!(
        value_of(&data, "replaced").await,
        Some(b"someone-else".to_vec()),
        "their key stays"
    );

    // One key of a multi-resource lock gone: the whole lock is lost; our other key is deleted.
    l.lock(&res(&["m1", "m2"])).await.unwrap();
    data.send(&cmd(&["DEL", "m1"])).await.unwrap();
    let report = l.unlock(&res(&["m2"])).await.unwrap();
    assert_eq!(report.released, 1, "{report:?}");
    assert_eq!(report.lost, res(&["m1", "m2"]), "{report:?}");
    assert_eq!(int(&data, &["EXISTS", "m1", "m2"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_across_a_restart_then_taken_by_another_is_reported_lost() {
    let mut server = RedisServer::start(&[]);
    let (holder, voter) = locker_and_voter(&server, LockConfig::default());
    holder.lock(&res(&["restart"])).await.unwrap();

    // The server restarts without persistence: the key is gone; another adapter takes the lock.
    server.restart();
    let other = locker(vec![server.connect()], LockConfig::default());
    other.lock(&res(&["restart"])).await.unwrap();
    let data = server.connect();
    let theirs = value_of(&data, "restart").await.expect("their key");

    // The holder's connection is back (so the release gets an answer, not a failure).
    voter.send(&cmd(&["PING"])).await.unwrap();
    let report = holder.unlock(&res(&["restart"])).await.unwrap();
    assert_eq!(report.lost, res(&["restart"]), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(
        value_of(&data, "restart").await,
        Some(theirs),
        "the new holder's key stays"
    );
    let report = other.unlock(&res(&["restart"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    assert_eq!(int(&data, &["EXISTS", "restart"]).await, 0);

    // The only voter cannot be reached at `unlock` (it went down with the key): the lock cannot
    // be shown to have held, so it is reported lost, and the release as failed.
    other.lock(&res(&["restart"])).await.unwrap();
    server.kill();
    let report = other.unlock(&res(&["restart"])).await.unwrap();
    assert_eq!(report.lost, res(&["restart"]), "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_released_normally_is_not_reported_lost() {
    let server = RedisServer::start(&[]);
    let l = locker(vec![server.connect()], LockConfig::default());
    let data = server.connect();
    for resources in [&["plain"][..], &["pair-a", "pair-b"][..]] {
        l.lock(&res(resources)).await.unwrap();
        let report = l.unlock(&res(resources)).await.unwrap();
        assert_eq!(report.released, 1, "{report:?}");
        assert!(
            report.lost.is_empty() && report.failures.is_empty(),
            "{report:?}"
        );
    }
    assert_eq!(
        int(&data, &["EXISTS", "plain", "pair-a", "pair-b"]).await,
        0
    );

    // Several voters.
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let l = locker(
        servers.iter().map(RedisServer::connect).collect(),
        LockConfig::default(),
    );
    l.lock(&res(&["voted"])).await.unwrap();
    let report = l.unlock(&res(&["voted"])).await.unwrap();
    assert!(
        report.lost.is_empty() && report.failures.is_empty(),
        "{report:?}"
    );
}

/// An unlock that comes as the lock's extension starts: the extension may reach the server
/// after the release and find the key gone; that is the release, not a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_released_as_its_extension_starts_is_not_reported_lost() {
    let server = RedisServer::start(&[]);
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let config = LockConfig {
        ttl: Duration::from_millis(200),
        ..LockConfig::default()
    };
    // The extension starts 100 ms (half the TTL) after the acquire: unlock around then.
    for voters in [
        vec![server.connect()],
        servers.iter().map(RedisServer::connect).collect(),
    ] {
        let l = locker(voters, config.clone());
        for step in 0..40u64 {
            l.lock(&res(&["edge"])).await.unwrap();
            tokio::time::sleep(Duration::from_micros(97_000 + step * 100)).await;
            let report = l.unlock(&res(&["edge"])).await.unwrap();
            assert!(
                report.lost.is_empty() && report.failures.is_empty(),
                "released {} ms after the acquire: {report:?}",
                97.0 + step as f64 / 10.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_voters_a_lock_is_lost_when_a_majority_did_not_hold_it() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let l = locker(
        servers.iter().map(RedisServer::connect).collect(),
        LockConfig::default(),
    );
    let data: Vec<Connection> = servers.iter().map(RedisServer::connect).collect();

    // One of three lost the key: the two others kept anyone else from a majority.
    l.lock(&res(&["q"])).await.unwrap();
    data[0].send(&cmd(&["DEL", "q"])).await.unwrap();
    let report = l.unlock(&res(&["q"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");

    // Two of three: another holder could have had a majority.
    l.lock(&res(&["q"])).await.unwrap();
    data[0].send(&cmd(&["DEL", "q"])).await.unwrap();
    data[1]
        .send(&cmd(&["SET", "q", "someone-else", "PX", "10000"]))
        .await
        .unwrap();
    let report = l.unlock(&res(&["q"])).await.unwrap();
    assert_eq!(report.lost, res(&["q"]), "{report:?}");
    assert_eq!(
        value_of(&data[1], "q").await,
        Some(b"someone-else".to_vec())
    );
    assert_eq!(int(&data[2], &["EXISTS", "q"]).await, 0);
    data[1].send(&cmd(&["DEL", "q"])).await.unwrap();

    // Four voters (a quorum of three): two that kept the key still leave nobody else a
    // majority; one alone does not.
    let four: Vec<RedisServer> = (0..4).map(|_| RedisServer::start(&[])).collect();
    let l = locker(
        four.iter().map(RedisServer::connect).collect(),
        LockConfig::default(),
    );
    let data: Vec<Connection> = four.iter().map(RedisServer::connect).collect();
    l.lock(&res(&["q4"])).await.unwrap();
    for d in &data[..2] {
        d.send(&cmd(&["DEL", "q4"])).await.unwrap();
    }
    let report = l.unlock(&res(&["q4"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    l.lock(&res(&["q4"])).await.unwrap();
    for d in &data[..3] {
        d.send(&cmd(&["DEL", "q4"])).await.unwrap();
    }
    let report = l.unlock(&res(&["q4"])).await.unwrap();
    assert_eq!(report.lost, res(&["q4"]), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_key_was_lost_while_a_caller_of_the_process_waits_is_reported_lost() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    let l = locker(vec![server.connect()], LockConfig::default());

    // A normal turn is not lost.
    l.lock(&res(&["handed"])).await.unwrap();
    let next = queued(&l, &["handed"]).await;
    let report = l.unlock(&res(&["handed"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    next.await.unwrap();
    let report = l.unlock(&res(&["handed"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");

    // The key goes while the lock is held and a caller of the process waits for it.
    l.lock(&res(&["handed"])).await.unwrap();
    let next = queued(&l, &["handed"]).await;
    data.send(&cmd(&["DEL", "handed"])).await.unwrap();
    let report = l.unlock(&res(&["handed"])).await.unwrap();
    assert_eq!(report.released, 1, "{report:?}");
    assert_eq!(report.lost, res(&["handed"]), "the holder is told");
    next.await.unwrap();
    // The next caller took a lock of its own.
    let report = l.unlock(&res(&["handed"])).await.unwrap();
    assert!(report.lost.is_empty(), "{report:?}");

    // Another process took the key while the lock was held and a caller of the process waits:
    // the holder is told, and the next caller is refused (the key is another's): never a
    // silent holder.
    let quick = locker(
        vec![server.connect()],
        LockConfig {
            retry_count: Some(1),
            retry_delay: Duration::from_millis(20),
            retry_jitter: Duration::ZERO,
            ..LockConfig::default()
        },
    );
    quick.lock(&res(&["chain"])).await.unwrap();
    let second = {
        let quick = quick.clone();
        tokio::spawn(async move { quick.lock(&res(&["chain"])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !second.is_finished(),
        "the caller did not wait for the holder"
    );
    data.send(&cmd(&["SET", "chain", "someone-else", "PX", "10000"]))
        .await
        .unwrap();
    let report = quick.unlock(&res(&["chain"])).await.unwrap();
    assert_eq!(report.lost, res(&["chain"]), "{report:?}");
    match second.await.unwrap() {
        Ok(()) => {
            let report = quick.unlock(&res(&["chain"])).await.unwrap();
            assert_eq!(report.lost, res(&["chain"]), "{report:?}");
        }
        Err(e) => assert_eq!(e.code(), "ERR_LOCK_NOT_ACQUIRED", "{e}"),
    }
    assert_eq!(
        value_of(&data, "chain").await,
        Some(b"someone-else".to_vec()),
        "their key stays"
    );
}

/// Eight callers of one locker take turns on one resource `cycles` times each, with empty
/// sections, while `meanwhile` runs; returns the longest any of them waited for the lock. Every
/// unlock must report nothing lost and nothing failed.
async fn busy_chain<F: std::future::Future<Output = ()>>(
    l: &Locker,
    cycles: usize,
    meanwhile: F,
) -> Duration {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            for _ in 0..cycles {
                let asked = Instant::now();
                l.lock(&res(&["busy"])).await.unwrap();
                longest = longest.max(asked.elapsed());
                let report = l.unlock(&res(&["busy"])).await.unwrap();
                assert!(
                    report.lost.is_empty() && report.failures.is_empty(),
                    "{report:?}"
                );
            }
            longest
        }));
    }
    meanwhile.await;
    let mut longest = Duration::ZERO;
    for t in tasks {
        longest = longest.max(t.await.unwrap());
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_turns_report_nothing_lost_and_never_stall() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    // A refused acquire would sleep out a whole second: unmistakable.
    let l = locker(
        vec![server.connect()],
        LockConfig {
            retry_delay: Duration::from_secs(1),
            retry_jitter: Duration::ZERO,
            ..LockConfig::default()
        },
    );
    let longest = busy_chain(&l, 300, async {}).await;
    assert!(
        longest < Duration::from_millis(900),
        "a caller waited {longest:?}: an acquire was refused and slept out a retry delay"
    );
    assert_eq!(int(&data, &["EXISTS", "busy"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_are_not_reordered_when_the_server_forgets_its_scripts() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    let l = locker(vec![server.connect()], LockConfig::default());
    // As after a restart that kept the data: every script is unknown again; a release sent by
    // EVALSHA would be answered NOSCRIPT and sent again behind the next caller's acquire.
    busy_chain(&l, 300, async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            data.send(&cmd(&["SCRIPT", "FLUSH"])).await.unwrap();
        }
    })
    .await;
    assert_eq!(int(&data, &["EXISTS", "busy"]).await, 0);
}

/// A caller that gave up (retryCount 0) leaves the line of waiters before its next lock() is
/// sent: once the holder released, that next lock() takes the lock at its first attempt (it
/// would find its own old place first in line otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gave_up_is_out_of_the_line_for_its_next_lock() {
    let server = RedisServer::start(&[]);
    let holder = locker(vec![server.connect()], LockConfig::default());
    let ours = locker(
        vec![server.connect()],
        LockConfig {
            retry_count: Some(0),
            ..LockConfig::default()
        },
    );
    common::give_up_then_lock_at_once(&holder, &ours, 20).await;
}
