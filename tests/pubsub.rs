//! Subscriptions on real servers: channels, patterns, sharded channels, counts, resubscription
//! after a restart, and a cluster.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alova_storage_redis::connection::Connection;
use alova_storage_redis::pubsub::{Kind, Message, Subscriber};
use common::{cmd, RedisCluster, RedisServer};
use redis::Value;

/// A subscriber whose messages land in a list.
fn subscriber(conn: &Connection) -> (Subscriber, Arc<Mutex<Vec<Message>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let sub = Subscriber::new(
        conn.clone(),
        Arc::new(move |m| sink.lock().unwrap().push(m)),
    );
    (sub, got)
}

fn names(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Waits (within a generous bound) until `got` holds `n` messages.
async fn wait_for(got: &Arc<Mutex<Vec<Message>>>, n: usize) -> Vec<Message> {
    for _ in 0..500 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got.lock().unwrap().clone()
}

async fn publish(conn: &Connection, verb: &str, channel: &str, message: &str) -> i64 {
    match conn.send(&cmd(&[verb, channel, message])).await.unwrap() {
        Value::Int(n) => n,
        other => panic!("{other:?}"),
    }
}

fn msg(kind: Kind, pattern: Option<&str>, channel: &str, payload: &str) -> Message {
    Message {
        kind,
        pattern: pattern.map(|p| p.as_bytes().to_vec()),
        channel: channel.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_patterns_and_shards_deliver_in_order_with_redis_counts() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let (sub, got) = subscriber(&conn);
    assert_eq!(
        sub.subscribe(Kind::Channel, names(&["news", "sport"]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        sub.subscribe(Kind::Pattern, names(&["n*"])).await.unwrap(),
        3
    );
    assert_eq!(
        sub.subscribe(Kind::Shard, names(&["orders"]))
            .await
            .unwrap(),
        1
    );
    // The client's own connection still takes ordinary commands.
    assert_eq!(publish(&conn, "PUBLISH", "news", "a").await, 2);
    assert_eq!(publish(&conn, "PUBLISH", "sport", "b").await, 1);
    assert_eq!(publish(&conn, "SPUBLISH", "orders", "c").await, 1);
    let all = wait_for(&got, 4).await;
    assert_eq!(
        all,
        vec![
            msg(Kind::Channel, None, "news", "a"),
            msg(Kind::Pattern, Some("n*"), "news", "a"),
            msg(Kind::Channel, None, "sport", "b"),
            msg(Kind::Shard, None, "orders", "c"),
        ]
    );
    assert_eq!(
        sub.unsubscribe(Kind::Channel, names(&["news"]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(sub.unsubscribe(Kind::Pattern, vec![]).await.unwrap(), 1);
    assert_eq!(publish(&conn, "PUBLISH", "news", "gone").await, 0);
    assert_eq!(sub.unsubscribe(Kind::Shard, vec![]).await.unwrap(), 0);
    assert_eq!(
        sub.subscribe(Kind::Channel, vec![])
            .await
            .unwrap_err()
            .code(),
        "ERR_INVALID_ARG"
    );
    sub.close().await;
    assert_eq!(
        sub.subscribe(Kind::Channel, names(&["x"]))
            .await
            .unwrap_err()
            .code(),
        "ERR_CLOSED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_the_server_restarts() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    let (sub, got) = subscriber(&conn);
    sub.subscribe(Kind::Channel, names(&["alerts"]))
        .await
        .unwrap();
    sub.subscribe(Kind::Pattern, names(&["log.*"]))
        .await
        .unwrap();
    server.restart();
    // Published until both subscriptions are back (the subscriber reconnects on its own).
    let mut back = false;
    for _ in 0..200 {
        let n = match conn.send(&cmd(&["PUBLISH", "alerts", "x"])).await {
            Ok(Value::Int(n)) => n,
            _ => 0,
        };
        let m = match conn.send(&cmd(&["PUBLISH", "log.disk", "y"])).await {
            Ok(Value::Int(n)) => n,
            _ => 0,
        };
        if n == 1 && m == 1 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "the subscriptions were not made again after the restart"
    );
    // Both were published to a subscriber (the counts said so): both arrive. (Earlier rounds
    // may have delivered one of them more than once, as the subscriptions came back one by one.)
    let wanted = [
        msg(Kind::Channel, None, "alerts", "x"),
        msg(Kind::Pattern, Some("log.*"), "log.disk", "y"),
    ];
    for _ in 0..500 {
        if wanted.iter().all(|m| got.lock().unwrap().contains(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = got.lock().unwrap().clone();
    for m in &wanted {
        assert!(all.contains(m), "{m:?} missing from {all:?}");
    }
    assert_eq!(sub.count(Kind::Channel).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_the_subscription_with_a_connection_error() {
    let mut server = RedisServer::start(&[]);
    let mut config = server.config();
    config.lazy_connect = true;
    server.kill();
    let conn = common::connect(config);
    let (sub, _) = subscriber(&conn);
    let err = sub
        .subscribe(Kind::Channel, names(&["x"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert_eq!(sub.count(Kind::Channel).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_delivers_channels_and_sharded_channels_of_every_slot() {
    let cluster = RedisCluster::start(3, 0);
    let conn = cluster.connect();
    let (sub, got) = subscriber(&conn);
    // Sharded channels that land on different masters.
    let shards = ["s-a", "s-b", "s-c", "s-d", "s-e"];
    assert_eq!(sub.subscribe(Kind::Shard, names(&shards)).await.unwrap(), 5);
    assert_eq!(
        sub.subscribe(Kind::Channel, names(&["all"])).await.unwrap(),
        1
    );
    for s in shards {
        assert_eq!(publish(&conn, "SPUBLISH", s, s).await, 1, "{s}");
    }
    // A plain PUBLISH reaches every node through the cluster bus.
    publish(&conn, "PUBLISH", "all", "hello").await;
    let all = wait_for(&got, 6).await;
    for s in shards {
        assert!(all.contains(&msg(Kind::Shard, None, s, s)), "{s}: {all:?}");
    }
    assert!(
        all.contains(&msg(Kind::Channel, None, "all", "hello")),
        "{all:?}"
    );
    sub.close().await;
}
