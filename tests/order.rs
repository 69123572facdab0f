//! Call order (SPEC invariant 1) over the core's connection matrix: bursts of SET, DEL, GET and
//! RPUSH on a few shared keys, submitted from one thread with nothing awaited in between; every
//! reply must be what a replay of the calls in call order says. Over: a connection just made,
//! `lazyConnect`, a server restarted under the burst (offline queue, resent commands),
//! `commandTimeout`, a unix socket, TLS, and a 3+3 cluster (keys of one slot and of several).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use alova_storage_redis::config::{Addr, ConnectionConfig, TlsConfig};
use alova_storage_redis::connection::Connection;
use common::{connect, free_port, RedisCluster, RedisServer};
use redis::Value;

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug)]
enum Op {
    Set(String, String),
    Del(String),
    Get(String),
    Rpush(String, String),
}

impl Op {
    fn packed(&self) -> Vec<u8> {
        let words: Vec<&[u8]> = match self {
            Op::Set(k, v) => vec![b"SET", k.as_bytes(), v.as_bytes()],
            Op::Del(k) => vec![b"DEL", k.as_bytes()],
            Op::Get(k) => vec![b"GET", k.as_bytes()],
            Op::Rpush(k, v) => vec![b"RPUSH", k.as_bytes(), v.as_bytes()],
        };
        alova_storage_redis::resp::encode(&words)
    }
}

/// Issues `bursts` bursts on `conn` and checks every reply against call order. `between` runs
/// after each burst was issued and before its replies are awaited (a restart, for one).
async fn check_order(conn: &Connection, seed: u64, bursts: usize, mut between: impl FnMut(usize)) {
    let mut rng = Rng(seed);
    for burst in 0..bursts {
        // Keys of this burst only, so the model starts empty: three share a slot ({t}).
        let keys: Vec<String> = ["{t}a", "{t}b", "x", "y"]
            .iter()
            .map(|k| format!("order:{seed}:{burst}:{k}"))
            .collect();
        let lists: Vec<String> = ["{t}l", "l"]
            .iter()
            .map(|k| format!("order:{seed}:{burst}:{k}"))
            .collect();
        let size = 30 + rng.below(40) as usize;
        let (tx, rx) = mpsc::channel();
        let mut ops = Vec::with_capacity(size);
        let mut pipes = Vec::new();
        for i in 0..size {
            let key = keys[rng.below(keys.len() as u64) as usize].clone();
            let op = match rng.below(10) {
                0..=3 => Op::Set(key, format!("v{i}")),
                4 => Op::Del(key),
                5..=7 => Op::Get(key),
                _ => Op::Rpush(
                    lists[rng.below(lists.len() as u64) as usize].clone(),
                    i.to_string(),
                ),
            };
            let tx = tx.clone();
            if let Some(pipe) = conn.submit(op.packed(), move |reply| {
                let _ = tx.send((i, reply));
            }) {
                pipes.push(pipe);
            }
            ops.push(op);
        }
        for pipe in pipes {
            pipe.flush();
        }
        between(burst);
        let mut replies: Vec<Option<Value>> = vec![None; size];
        for _ in 0..size {
            let (i, reply) =
                tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(20)))
                    .unwrap_or_else(|_| {
                        panic!("seed {seed}, burst {burst}: a call did not settle")
                    });
            let reply = reply
                .unwrap_or_else(|e| panic!("seed {seed}, burst {burst}, call {i} failed: {e}"));
            replies[i] = Some(reply);
        }
        let mut strings = std::collections::HashMap::<&str, String>::new();
        let mut lengths = std::collections::HashMap::<&str, i64>::new();
        for (i, (op, reply)) in ops.iter().zip(&replies).enumerate() {
            let reply = reply.as_ref().expect("every reply");
            let expected = match op {
                Op::Set(k, v) => {
                    strings.insert(k, v.clone());
                    Value::Okay
                }
                Op::Del(k) => Value::Int(i64::from(strings.remove(k.as_str()).is_some())),
                Op::Get(k) => match strings.get(k.as_str()) {
                    Some(v) => Value::BulkString(v.clone().into_bytes()),
                    None => Value::Nil,
                },
                Op::Rpush(k, _) => {
                    let n = lengths.entry(k).or_insert(0);
                    *n += 1;
                    Value::Int(*n)
                }
            };
            assert_eq!(
                reply, &expected,
                "seed {seed}, burst {burst}, call {i} {op:?}: the reply disagrees with call order"
            );
        }
    }
}

fn seed() -> u64 {
    std::env::var("ORDER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_just_made_keeps_call_order() {
    let server = RedisServer::start(&[]);
    for round in 0..10 {
        // The first burst goes into the offline queue.
        let conn = server.connect();
        check_order(&conn, seed() + round, 2, |_| {}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_connect_keeps_call_order() {
    let server = RedisServer::start(&[]);
    let conn = connect(ConnectionConfig {
        lazy_connect: true,
        ..server.config()
    });
    check_order(&conn, seed(), 10, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_burst_keeps_call_order() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    check_order(&conn, seed(), 1, |_| {}).await;
    // Each burst is on the socket (or in the offline queue) when the server goes away: what was
    // not answered is sent again, in call order, on the next socket.
    check_order(&conn, seed(), 6, |_| server.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_keeps_call_order() {
    let server = RedisServer::start(&[]);
    let conn = connect(ConnectionConfig {
        command_timeout: Some(Duration::from_secs(5)),
        ..server.config()
    });
    check_order(&conn, seed(), 20, |_| {}).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_keeps_call_order() {
    let dir = std::env::temp_dir().join(format!("alova-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("redis.sock");
    let _server = RedisServer::start(&["--unixsocket", path.to_str().unwrap()]);
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conn = connect(ConnectionConfig {
        addr: Addr::Unix(path),
        ..ConnectionConfig::default()
    });
    check_order(&conn, seed(), 20, |_| {}).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_keeps_call_order() {
    let dir = std::env::temp_dir().join(format!("alova-order-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::make_certificates(&dir);
    let port = free_port();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let _server = RedisServer::start(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let conn = connect(ConnectionConfig {
        addr: Addr::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        tls: Some(TlsConfig {
            reject_unauthorized: false,
            ..TlsConfig::default()
        }),
        ..ConnectionConfig::default()
    });
    // Enough commands at once to fill redis-rs's own queue, were it small.
    check_order(&conn, seed(), 40, |_| {}).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_call_order() {
    let cluster = RedisCluster::start(3, 1);
    let conn = cluster.connect();
    check_order(&conn, seed(), 40, |_| {}).await;
}

/// Moves `slot` from the master at `from` to the one at `to`, as `redis-cli --cluster reshard`
/// does: IMPORTING and MIGRATING, its keys moved one MIGRATE at a time (commands for a moved key
/// meanwhile get `ASK`), then the slot given to `to` on every master (then `MOVED`).
fn move_slot(masters: &[u16], slot: u16, from: u16, to: u16) {
    use common::redis_cli;
    let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
    let (from_id, to_id) = (id(from), id(to));
    let slot = slot.to_string();
    redis_cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    redis_cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    loop {
        let keys = redis_cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "10"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        redis_cli(from, &args);
    }
    for port in [to, from] {
        redis_cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    for &port in masters.iter().filter(|p| **p != to && **p != from) {
        redis_cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_between_masters_under_traffic_keeps_call_order() {
    let cluster = RedisCluster::start(3, 0);
    let conn = cluster.connect();
    let key = format!("order:moving:{}", seed());
    let slot = alova_storage_redis::codec::key_slot(key.as_bytes());
    // Connected, and the slot map read (commands go on the pipes to the masters).
    conn.send(&common::cmd(&["SET", "warm", "1"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let masters = cluster.master_ports();
    // The master whose own line in CLUSTER NODES lists the slot.
    let serves = |port: u16| {
        common::redis_cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("myself"))
            .flat_map(|l| l.split(' ').skip(8).map(str::to_owned).collect::<Vec<_>>())
            .any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((&range, &range));
                a.parse::<u16>().is_ok_and(|a| a <= slot)
                    && b.parse::<u16>().is_ok_and(|b| slot <= b)
            })
    };
    let first = masters
        .iter()
        .copied()
        .find(|p| serves(*p))
        .expect("the slot's master");
    let others: Vec<u16> = masters.iter().copied().filter(|p| *p != first).collect();
    // RPUSH answers the list's length: call i must see i + 1, whatever moved meanwhile.
    const CALLS: usize = 6000;
    let (tx, rx) = mpsc::channel();
    let submitter = {
        let conn = conn.clone();
        let key = key.clone();
        tokio::spawn(async move {
            for burst in 0..CALLS / 20 {
                let mut pipes = Vec::new();
                for j in 0..20 {
                    let i = burst * 20 + j;
                    if let Some(pipe) = common::submit_rpush(&conn, &key, i, tx.clone(), |r| r) {
                        pipes.push(pipe);
                    }
                }
                for pipe in pipes {
                    pipe.flush();
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    let path = [
        others[0], others[1], first, others[0], first, others[1], others[0], first,
    ];
    let mover = {
        let masters = masters.clone();
        std::thread::spawn(move || {
            let mut at = first;
            for to in path {
                std::thread::sleep(Duration::from_millis(60));
                move_slot(&masters, slot, at, to);
                at = to;
            }
        })
    };
    submitter.await.unwrap();
    let mut replies = vec![None; CALLS];
    for _ in 0..CALLS {
        let (i, reply) = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
            .expect("every call settles");
        replies[i] = Some(reply.unwrap_or_else(|e| panic!("call {i} failed: {e}")));
    }
    tokio::task::block_in_place(|| mover.join()).unwrap();
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(
            reply,
            Some(Value::Int(i as i64 + 1)),
            "call {i}: RPUSH answered another length than call order gives"
        );
    }
    let list = conn
        .send(&common::cmd(&["LRANGE", &key, "0", "-1"]))
        .await
        .unwrap();
    let expected: Vec<Value> = (0..CALLS)
        .map(|i| Value::BulkString(i.to_string().into_bytes()))
        .collect();
    assert_eq!(list, Value::Array(expected));
}
