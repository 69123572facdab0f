//! Storage and locks on a real 3-master + 3-replica cluster.

mod common;

use std::time::Duration;

use alova_storage_redis::codec::key_slot;
use alova_storage_redis::config::LockConfig;
use alova_storage_redis::lock::Locker;
use alova_storage_redis::storage::Storage;
use common::{cmd, redis_cli, RedisCluster};
use redis::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_locks_on_a_cluster() {
    let cluster = RedisCluster::start(3, 1);
    let conn = cluster.connect();

    // Cache operations land on every master; clear() empties only the prefix, everywhere.
    let storage = Storage::new(conn.clone(), "c:".into(), false);
    for i in 0..300 {
        storage.set(&format!("k{i}"), "[1]", None).await.unwrap();
    }
    assert_eq!(
        storage.get("k7").await.unwrap().as_deref(),
        Some(&b"[1]"[..])
    );
    for i in 0..50 {
        conn.send(&cmd(&["SET", &format!("other{i}"), "1"]))
            .await
            .unwrap();
    }
    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3);
    for port in &masters {
        let keys = redis_cli(*port, &["DBSIZE"]);
        assert_ne!(keys.trim(), "0", "every master holds keys (port {port})");
    }
    assert_eq!(storage.clear().await.unwrap(), 300);
    let left: u64 = masters
        .iter()
        .map(|p| redis_cli(*p, &["DBSIZE"]).trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(left, 50, "only the prefix is gone");
    assert_eq!(conn.masters().await.unwrap().len(), 3);
    // Replicas may still be shaking hands with a node right after the cluster formed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.cluster_nodes().len() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            conn.cluster_nodes()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.masters().await.unwrap();
    }

    // A lock over three slots is all-or-nothing against an overlapping one.
    let (a, b, c, d) = ("lock-a", "lock-b", "lock-c", "lock-d");
    let slots = [a, b, c, d].map(|k| key_slot(k.as_bytes()));
    assert!(slots[0] != slots[1] && slots[1] != slots[2], "{slots:?}");
    let quick = LockConfig {
        retry_count: Some(0),
        ..LockConfig::default()
    };
    let one = Locker::new(
        vec![conn.clone()],
        LockConfig::default(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let two = Locker::new(
        vec![cluster.connect()],
        quick,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let res = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    one.lock(&res(&[a, b, c])).await.unwrap();
    let err = two.lock(&res(&[d, c])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_LOCK_NOT_ACQUIRED");
    assert_eq!(
        conn.send(&cmd(&["EXISTS", d])).await.unwrap(),
        Value::Int(0),
        "the free slot was given back"
    );
    let report = one.unlock(&res(&[b])).await.unwrap();
    assert_eq!(report.released, 1);
    for k in [a, b, c] {
        assert_eq!(
            conn.send(&cmd(&["EXISTS", k])).await.unwrap(),
            Value::Int(0),
            "{k} released"
        );
    }
    two.lock(&res(&[c, d])).await.unwrap();
    two.unlock(&res(&[c, d])).await.unwrap();

    // A multi-key command across slots is the server's CROSSSLOT error, as with Redis and
    // ioredis (MGET and MSET are not split and half-applied); within one slot it works.
    for words in [
        &["MGET", a, b][..],
        &["MSET", a, "1", b, "2"],
        &["RENAME", a, b],
    ] {
        let err = conn.send(&cmd(words)).await.unwrap_err();
        assert_eq!(err.code(), "ERR_REPLY");
        assert_eq!(err.reply_code(), Some("CROSSSLOT"), "{words:?}: {err}");
    }
    conn.send(&cmd(&["MSET", "{t}1", "1", "{t}2", "2"]))
        .await
        .unwrap();
    let both = conn.send(&cmd(&["MGET", "{t}1", "{t}2"])).await.unwrap();
    let one = |v: &[u8]| Value::BulkString(v.to_vec());
    assert_eq!(both, Value::Array(vec![one(b"1"), one(b"2")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_resume_after_a_master_fails_over() {
    let mut cluster = RedisCluster::start(3, 1);
    let conn = cluster.connect();
    let storage = Storage::new(conn.clone(), "f:".into(), false);
    for i in 0..100 {
        storage.set(&format!("k{i}"), "1", None).await.unwrap();
    }
    // Kill the master that serves k0's slot.
    let slot = key_slot(b"f:k0");
    let victim = cluster
        .servers
        .iter()
        .position(|s| {
            let shards = redis_cli(s.port, &["CLUSTER", "KEYSLOT", "f:k0"]);
            shards.trim() == slot.to_string()
                && redis_cli(s.port, &["ROLE"]).starts_with("master")
                && {
                    let owner =
                        redis_cli(s.port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
                    owner.trim() != "0"
                }
        })
        .expect("the master of k0's slot");
    // Replication is asynchronous: wait until the victim's replica has every write, or the
    // failover would lose them (as it would for any client).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let role = redis_cli(cluster.servers[victim].port, &["ROLE"]);
        let lines: Vec<&str> = role.lines().collect();
        if lines.len() >= 5 && lines.last() == lines.get(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not catch up: {role}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.servers[victim].kill();

    let started = std::time::Instant::now();
    let mut failed = 0u32;
    let mut codes = std::collections::BTreeSet::new();
    loop {
        match storage.get("k0").await {
            Ok(Some(_)) => break,
            Ok(None) => panic!("k0 was lost in the failover"),
            Err(e) => {
                failed += 1;
                codes.insert(e.code());
                println!("failover read error after {:?}: {e}", started.elapsed());
                assert!(
                    matches!(e.code(), "ERR_CONNECTION" | "ERR_TIMEOUT" | "ERR_REPLY"),
                    "{e}"
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery: {failed} failures {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "failover: recovered after {:?} with {failed} failed reads ({codes:?})",
        started.elapsed()
    );
    // Writes to every slot work again, through the same connection.
    for i in 0..100 {
        storage.set(&format!("k{i}"), "2", None).await.unwrap();
    }
}

/// A transaction entry (MULTI, commands, EXEC packed together) runs on its slot's master as one
/// pipeline; the reply is every command's reply in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_entry_runs_on_its_slots_master() {
    let cluster = RedisCluster::start(3, 0);
    let conn = cluster.connect();
    for tag in ["a", "b", "c", "d"] {
        let key = format!("{{{tag}}}:tx");
        let packed = [
            alova_storage_redis::resp::encode(&[b"MULTI"]),
            alova_storage_redis::resp::encode(&[b"SET", key.as_bytes(), tag.as_bytes()]),
            alova_storage_redis::resp::encode(&[b"GET", key.as_bytes()]),
            alova_storage_redis::resp::encode(&[b"EXEC"]),
        ]
        .concat();
        let reply = conn.send_packed(&packed).await.unwrap();
        let Value::Array(items) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[0], Value::Okay);
        assert_eq!(
            items[3],
            Value::Array(vec![
                Value::Okay,
                Value::BulkString(tag.as_bytes().to_vec())
            ])
        );
    }
}

/// The nodes of the topology are told as they appear and go (ioredis's `+node`, `-node`): a
/// node is never told twice in a row the same way, and what was told adds up to the topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_told_as_they_appear_and_go() {
    use alova_storage_redis::connection::Event;
    use std::collections::BTreeMap;
    let cluster = RedisCluster::start(3, 1);
    let conn = cluster.connect();
    let mut events = conn.events();
    conn.connect().await.unwrap();
    // Reads from random nodes (gossip may lag on a cluster this young) until the topology is
    // whole.
    let mut whole = false;
    for _ in 0..100 {
        conn.masters().await.unwrap();
        if conn.cluster_nodes().len() == 6 {
            whole = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(whole, "the topology never showed 6 nodes");
    let mut told: BTreeMap<u16, bool> = BTreeMap::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
    {
        let (port, added) = match event {
            Event::NodeAdded(n) => (n.port, true),
            Event::NodeRemoved(n) => (n.port, false),
            _ => continue,
        };
        let before = told.insert(port, added);
        assert_ne!(before, Some(added), "port {port} told the same way twice");
        if before.is_none() {
            assert!(added, "port {port} went before it came");
        }
    }
    let now: Vec<u16> = told
        .iter()
        .filter(|(_, added)| **added)
        .map(|(p, _)| *p)
        .collect();
    let mut topology: Vec<u16> = conn.cluster_nodes().iter().map(|n| n.port).collect();
    topology.sort_unstable();
    assert_eq!(now, topology);
}

/// This process's established TCP connections to `ports`, as `ss` shows them (one line each,
/// with `timer:(keepalive,...)` when SO_KEEPALIVE is on).
fn own_sockets_to(ports: &[u16]) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnop", "state", "established"])
        .output()
        .expect("ss");
    let pid = format!("pid={},", std::process::id());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&pid))
        .filter(|l| {
            ports.iter().any(|p| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|peer| peer.ends_with(&format!(":{p}")))
            })
        })
        .map(str::to_owned)
        .collect()
}

/// `keepAlive` reaches every node connection of a cluster (the socket option, seen by `ss`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_set_on_the_node_connections() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.master_ports();
    let plain = cluster.connect();
    for i in 0..30 {
        plain
            .send(&cmd(&["SET", &format!("ka{i}"), "1"]))
            .await
            .unwrap();
    }
    let before = own_sockets_to(&ports);
    assert!(!before.is_empty(), "no connection to the nodes seen");
    assert!(
        before.iter().all(|l| !l.contains("keepalive")),
        "keep-alive is on without the option: {before:?}"
    );
    plain.disconnect();

    let mut config = cluster.config();
    config.redis.keep_alive = Some(Duration::from_secs(30));
    let conn = common::connect_cluster(config);
    for i in 0..30 {
        conn.send(&cmd(&["SET", &format!("ka{i}"), "1"]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: Vec<String> = own_sockets_to(&ports)
        .into_iter()
        .filter(|l| l.contains("keepalive"))
        .collect();
    // One connection per master at least (redis-rs may keep a management connection too).
    let peers: std::collections::BTreeSet<String> = after
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    assert!(peers.len() >= 3, "keep-alive on {peers:?} only: {after:?}");
}

/// On a cluster too: a caller that gave up leaves the line of waiters before its next lock()
/// is sent (its LEAVE is put on the connection in call order, not from a task of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gave_up_is_out_of_the_line_for_its_next_lock_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let handle = tokio::runtime::Handle::current();
    let holder = Locker::new(
        vec![cluster.connect()],
        LockConfig::default(),
        handle.clone(),
    )
    .unwrap();
    let ours = Locker::new(
        vec![cluster.connect()],
        LockConfig {
            retry_count: Some(0),
            ..LockConfig::default()
        },
        handle,
    )
    .unwrap();
    common::give_up_then_lock_at_once(&holder, &ours, 30).await;
}
