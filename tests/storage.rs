//! The cache operations against a real server.

mod common;

use alova_storage_redis::storage::Storage;
use common::{cmd, RedisServer};
use redis::Value;

fn now_ms() -> f64 {
    alova_storage_redis::codec::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_remove_with_prefix_and_expiry() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let storage = Storage::new(conn.clone(), "alova:".into(), false);

    storage.set("plain", r#"{"a":1}"#, None).await.unwrap();
    assert_eq!(
        storage.get("plain").await.unwrap().as_deref(),
        Some(&br#"{"a":1}"#[..])
    );
    assert_eq!(
        conn.send(&cmd(&["PTTL", "alova:plain"])).await.unwrap(),
        Value::Int(-1)
    );

    storage
        .set("timed", "[1]", Some(now_ms() + 60_000.0))
        .await
        .unwrap();
    let Value::Int(pttl) = conn.send(&cmd(&["PTTL", "alova:timed"])).await.unwrap() else {
        panic!("PTTL is an integer")
    };
    assert!(pttl > 55_000 && pttl <= 60_000, "{pttl}");

    storage
        .set("expired", "[1]", Some(now_ms() - 1.0))
        .await
        .unwrap();
    assert_eq!(storage.get("expired").await.unwrap(), None);
    assert_eq!(
        conn.send(&cmd(&["EXISTS", "alova:expired"])).await.unwrap(),
        Value::Int(0)
    );

    storage.remove("plain").await.unwrap();
    assert_eq!(storage.get("plain").await.unwrap(), None);
    assert_eq!(storage.get("never").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_only_the_prefix() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let mine = Storage::new(conn.clone(), "a*[x]:".into(), false);
    for i in 0..2500 {
        mine.set(&format!("k{i}"), "1", None).await.unwrap();
    }
    // Keys a glob-unaware pattern would also match.
    conn.send(&cmd(&["SET", "ab[x]:other", "1"])).await.unwrap();
    conn.send(&cmd(&["SET", "other", "1"])).await.unwrap();
    assert_eq!(mine.clear().await.unwrap(), 2500);
    assert_eq!(conn.send(&cmd(&["DBSIZE"])).await.unwrap(), Value::Int(2));

    let empty = Storage::new(conn, String::new(), false);
    assert_eq!(empty.clear().await.unwrap_err().code(), "ERR_CLEAR_REFUSED");
}
