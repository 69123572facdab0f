//! Fair turns across processes (issue 10): two lockers on one server stand for two processes.
//! Waiters of every locker wait in one line in Redis, are woken by the release, and a dead
//! waiter holds the line up for a bounded time only.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alova_storage_redis::config::LockConfig;
use alova_storage_redis::connection::Connection;
use alova_storage_redis::lock::waiting::line;
use alova_storage_redis::lock::Locker;
use common::{cmd, RedisCluster, RedisServer};
use redis::Value;

fn locker(voter: Connection, config: LockConfig) -> Locker {
    Locker::new(vec![voter], config, tokio::runtime::Handle::current()).unwrap()
}

fn res(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

async fn int(conn: &Connection, words: &[&str]) -> i64 {
    match conn.send(&cmd(words)).await.unwrap() {
        Value::Int(n) => n,
        other => panic!("{other:?}"),
    }
}

/// `callers` callers of each locker loop lock -> `work` -> unlock on `resource` until `stop`;
/// returns the cycles of each locker. Fails on two holders at once or a failed lock.
async fn contend(
    lockers: &[Locker],
    callers: usize,
    resource: &str,
    work: Duration,
    run_for: Duration,
) -> Vec<u64> {
    let inside = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for (i, l) in lockers.iter().enumerate() {
        for _ in 0..callers {
            let (l, inside, resource) = (l.clone(), inside.clone(), res(resource));
            tasks.push((
                i,
                tokio::spawn(async move {
                    let mut cycles = 0u64;
                    while Instant::now() < stop {
                        l.lock(&resource).await.expect("lock");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        tokio::time::sleep(work).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        let report = l.unlock(&resource).await.unwrap();
                        assert!(report.lost.is_empty(), "{report:?}");
                        cycles += 1;
                    }
                    cycles
                }),
            ));
        }
    }
    let mut per = vec![0u64; lockers.len()];
    for (i, t) in tasks {
        per[i] += t.await.unwrap();
    }
    per
}

fn assert_fair(per: &[u64]) {
    let total: u64 = per.iter().sum();
    assert!(total > 0);
    for (i, n) in per.iter().enumerate() {
        assert!(
            *n * 100 >= total * 25,
            "locker {i} got {n} of {total} cycles: {per:?}"
        );
    }
}

/// Three lockers, each on a connection of its own from `connect`, with 4 callers each, share a
/// hot lock fairly.
async fn three_lockers_share_a_hot_lock_through(connect: impl Fn() -> Connection) {
    let lockers: Vec<Locker> = (0..3)
        .map(|_| locker(connect(), LockConfig::default()))
        .collect();
    let per = contend(
        &lockers,
        4,
        "hot",
        Duration::from_millis(2),
        Duration::from_secs(3),
    )
    .await;
    assert_fair(&per);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_lockers_share_a_hot_lock() {
    let server = RedisServer::start(&[]);
    three_lockers_share_a_hot_lock_through(|| server.connect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_lockers_share_a_hot_lock_on_a_cluster() {
    let cluster = RedisCluster::start(3, 1);
    three_lockers_share_a_hot_lock_through(|| cluster.connect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_of_another_process_is_woken_by_the_release() {
    let server = RedisServer::start(&[]);
    // Polling alone would take five seconds.
    let slow = LockConfig {
        retry_delay: Duration::from_secs(5),
        retry_jitter: Duration::ZERO,
        ..LockConfig::default()
    };
    let a = locker(server.connect(), slow.clone());
    let b = locker(server.connect(), slow);
    for _ in 0..5 {
        a.lock(&res("wake")).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                b.lock(&res("wake")).await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let released = Instant::now();
        a.unlock(&res("wake")).await.unwrap();
        let got = waiter.await.unwrap();
        assert!(
            got.duration_since(released) < Duration::from_secs(1),
            "the waiter took {:?} after the release",
            got.duration_since(released)
        );
        b.unlock(&res("wake")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiter_holds_the_line_up_for_a_bounded_time() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    let config = LockConfig {
        retry_delay: Duration::from_millis(100),
        retry_jitter: Duration::ZERO,
        ..LockConfig::default()
    };
    let a = locker(server.connect(), config.clone());
    a.lock(&res("line")).await.unwrap();
    // A waiter that joins the line and never asks again (its process was killed).
    let l = line("line").unwrap();
    let mut join = cmd(&["EVAL"]);
    join.arg(include_str!("fixtures/join_line.lua"))
        .arg(3)
        .arg(&l.keys)
        .arg("deadbeefdeadbeefdeadbeefdeadbeef")
        .arg(500);
    data.send(&join).await.unwrap();
    assert_eq!(int(&data, &["LLEN", &l.keys[1]]).await, 1);
    let b = locker(server.connect(), config);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock(&res("line")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    a.unlock(&res("line")).await.unwrap();
    waiter
        .await
        .unwrap()
        .expect("the live waiter gets the lock");
    let waited = released.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "held up {waited:?} by a dead waiter"
    );
    b.unlock(&res("line")).await.unwrap();
    // The line's keys expire on their own.
    for key in &l.keys[1..] {
        let ttl = int(&data, &["PTTL", key]).await;
        assert!(ttl == -2 || ttl > 0, "{key} PTTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let server = RedisServer::start(&[]);
    let data = server.connect();
    let a = locker(server.connect(), LockConfig::default());
    let impatient = locker(
        server.connect(),
        LockConfig {
            retry_count: Some(1),
            retry_delay: Duration::from_millis(50),
            retry_jitter: Duration::ZERO,
            ..LockConfig::default()
        },
    );
    a.lock(&res("leave")).await.unwrap();
    let err = impatient.lock(&res("leave")).await.unwrap_err();
    assert_eq!(err.code(), "ERR_LOCK_NOT_ACQUIRED");
    let l = line("leave").unwrap();
    // The leave is sent in the background.
    let deadline = Instant::now() + Duration::from_secs(2);
    while int(&data, &["LLEN", &l.keys[1]]).await != 0 {
        assert!(Instant::now() < deadline, "the waiter stayed in line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.unlock(&res("leave")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_several_voters_every_locker_gets_turns() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(&[])).collect();
    let lockers: Vec<Locker> = (0..3)
        .map(|_| {
            Locker::new(
                servers.iter().map(RedisServer::connect).collect(),
                LockConfig::default(),
                tokio::runtime::Handle::current(),
            )
            .unwrap()
        })
        .collect();
    let per = contend(
        &lockers,
        4,
        "voted",
        Duration::from_millis(2),
        Duration::from_secs(3),
    )
    .await;
    // As fair as the quorum allows: an even race at each release (see `waiting`).
    let total: u64 = per.iter().sum();
    for (i, n) in per.iter().enumerate() {
        assert!(
            *n * 100 >= total * 10,
            "locker {i} got {n} of {total}: {per:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_may_not_publish_or_subscribe_still_takes_turns() {
    let server = RedisServer::start(&[]);
    // Redis 7 gives a new ACL user no channels: PUBLISH and SUBSCRIBE are refused.
    common::redis_cli(
        server.port,
        &["ACL", "SETUSER", "locker", "on", ">secret", "~*", "+@all"],
    );
    let config = alova_storage_redis::config::ConnectionConfig {
        username: Some("locker".into()),
        password: Some(alova_storage_redis::config::Secret("secret".into())),
        ..server.config()
    };
    let quick = LockConfig {
        retry_delay: Duration::from_millis(20),
        retry_jitter: Duration::from_millis(5),
        ..LockConfig::default()
    };
    let lockers: Vec<Locker> = (0..2)
        .map(|_| locker(common::connect(config.clone()), quick.clone()))
        .collect();
    let per = contend(
        &lockers,
        2,
        "acl",
        Duration::from_millis(1),
        Duration::from_secs(1),
    )
    .await;
    assert!(per.iter().all(|n| *n > 0), "{per:?}");
}
