//! Redis Sentinel through the core's connection (issue 12): the master the sentinels name,
//! followed through SENTINEL FAILOVER and SIGKILL under a burst (call order kept, every call
//! settled), a replica with role 'slave', and clear errors for a wrong group and dead sentinels.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use alova_storage_redis::config::{ConnectionConfig, Secret, SentinelConfig, SentinelRole};
use alova_storage_redis::connection::Connection;
use common::{cmd, connect, free_port, RedisSentinel};
use redis::Value;

const PASSWORD: &str = "data-pw";
const SENTINEL_PASSWORD: &str = "sentinel-pw";

fn config(topo: &RedisSentinel, extra: impl FnOnce(&mut SentinelConfig)) -> ConnectionConfig {
    let mut sentinel = SentinelConfig {
        sentinels: topo
            .sentinel_ports()
            .into_iter()
            .map(|p| ("127.0.0.1".to_owned(), p))
            .collect(),
        name: topo.name.clone(),
        password: Some(Secret(SENTINEL_PASSWORD.into())),
        update_sentinels: true,
        max_connections: 10,
        ..SentinelConfig::default()
    };
    extra(&mut sentinel);
    ConnectionConfig {
        password: Some(Secret(PASSWORD.into())),
        sentinel: Some(Box::new(sentinel)),
        ..ConnectionConfig::default()
    }
}

async fn port_of(conn: &Connection) -> u16 {
    match conn.send(&cmd(&["CONFIG", "GET", "port"])).await.unwrap() {
        Value::Array(items) => match &items[1] {
            Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// RPUSHes `n` values in one burst; returns the replies in call order.
async fn burst(conn: &Connection, key: &str, from: usize, n: usize) -> Vec<Result<Value, String>> {
    let (tx, rx) = mpsc::channel();
    let mut pipes = Vec::new();
    for i in from..from + n {
        let described = |r: alova_storage_redis::error::Result<Value>| {
            r.map_err(|e| format!("{} {}", e.code(), e.message()))
        };
        if let Some(pipe) = common::submit_rpush(conn, key, i, tx.clone(), described) {
            pipes.push(pipe);
        }
    }
    for pipe in pipes {
        pipe.flush();
    }
    let mut out = vec![Err(String::new()); n];
    for _ in 0..n {
        let (i, reply) = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
            .expect("every call settles");
        out[i - from] = reply;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_follows_the_master_through_failover_and_sigkill() {
    let mut topo = RedisSentinel::start(2, 3, Some(PASSWORD), Some(SENTINEL_PASSWORD));
    let conn = connect(ConnectionConfig {
        command_timeout: Some(Duration::from_secs(2)),
        ..config(&topo, |_| {})
    });
    let (_, master) = topo.master_address();
    assert_eq!(port_of(&conn).await, master);
    let key = "sentinel:list";
    let mut next = 0;
    for fault in 0..2 {
        let (_, before) = topo.master_address();
        let after = if fault == 0 {
            topo.failover().1
        } else {
            topo.server_mut(before).kill();
            topo.wait_master(|p| p != before, Duration::from_secs(60)).1
        };
        // Bursts until one lands on the new master whole.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let replies = burst(&conn, key, next, 50).await;
            next += 50;
            let ok: Vec<i64> = replies
                .iter()
                .filter_map(|r| match r {
                    Ok(Value::Int(n)) => Some(*n),
                    _ => None,
                })
                .collect();
            for r in &replies {
                if let Err(e) = r {
                    assert!(
                        ["ERR_CONNECTION", "ERR_TIMEOUT", "ERR_CLOSED"]
                            .iter()
                            .any(|c| e.starts_with(c)),
                        "{e}"
                    );
                    assert!(
                        !e.contains(PASSWORD) && !e.contains(SENTINEL_PASSWORD),
                        "{e}"
                    );
                }
            }
            if ok.len() == replies.len() && port_of(&conn).await == after {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no recovery after fault {fault}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Call order on the new master; the last write is there.
        let list: Vec<usize> = topo
            .data_cli(after, &["LRANGE", key, "0", "-1"])
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert!(
            list.windows(2).all(|w| w[1] > w[0]),
            "out of call order on the new master"
        );
        assert_eq!(
            list.last(),
            Some(&(next - 1)),
            "the last write is on the new master"
        );
        if fault == 0 {
            // The next failover may take the old master only once it is a replica again.
            let _ = topo.wait_master(|_| true, Duration::from_secs(30));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_role_slave_and_clear_errors() {
    let topo = RedisSentinel::start(1, 3, Some(PASSWORD), Some(SENTINEL_PASSWORD));
    let replica = connect(config(&topo, |s| s.role = SentinelRole::Replica));
    assert_eq!(port_of(&replica).await, topo.replicas[0].port);

    let wrong = connect(ConnectionConfig {
        max_retries_per_request: Some(1),
        ..config(&topo, |s| s.name = "no-such-group".into())
    });
    let err = wrong.send(&cmd(&["GET", "k"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert!(err.message().contains("no-such-group"), "{err}");
    assert!(!err.message().contains(PASSWORD) && !err.message().contains(SENTINEL_PASSWORD));

    let dead = connect(ConnectionConfig {
        max_retries_per_request: Some(1),
        ..config(&topo, |s| {
            s.sentinels = vec![("127.0.0.1".into(), free_port())]
        })
    });
    let err = dead.send(&cmd(&["GET", "k"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert!(err.message().contains("sentinels"), "{err}");

    let refused = connect(ConnectionConfig {
        max_retries_per_request: Some(1),
        ..config(&topo, |s| s.password = Some(Secret("wrong-pw".into())))
    });
    let err = refused.send(&cmd(&["GET", "k"])).await.unwrap_err();
    assert!(!err.message().contains("wrong-pw"), "{err}");
}
