//! An entry's expiry timestamp against a real server: 0 or less is "never expires" (alova's rate
//! limiter writes `[points, -1]`), a positive timestamp in the past writes nothing.

mod common;

use alova_storage_redis::storage::Storage;
use common::{cmd, RedisServer};
use redis::Value;

fn now_ms() -> f64 {
    alova_storage_redis::codec::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_positive_expiry_is_stored_without_ttl() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let storage = Storage::new(conn.clone(), "alova:".into(), false);

    for (key, expire) in [("minus-one", -1.0), ("zero", 0.0), ("negative", -123_456.0)] {
        storage.set(key, "[3,-1]", Some(expire)).await.unwrap();
        assert_eq!(
            storage.get(key).await.unwrap().as_deref(),
            Some(&b"[3,-1]"[..]),
            "{key}"
        );
        assert_eq!(
            conn.send(&cmd(&["PTTL", &format!("alova:{key}")]))
                .await
                .unwrap(),
            Value::Int(-1),
            "{key} has no TTL"
        );
    }

    // A record that had a TTL loses it when rewritten as "never expires".
    storage
        .set("rewritten", "[1]", Some(now_ms() + 60_000.0))
        .await
        .unwrap();
    storage
        .set("rewritten", "[4,-1]", Some(-1.0))
        .await
        .unwrap();
    assert_eq!(
        conn.send(&cmd(&["PTTL", "alova:rewritten"])).await.unwrap(),
        Value::Int(-1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positive_expiry_in_the_past_writes_nothing() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let storage = Storage::new(conn.clone(), "alova:".into(), false);

    for (key, expire) in [("just-gone", now_ms() - 1.0), ("in-1970", 5.0)] {
        storage.set(key, "[1]", Some(expire)).await.unwrap();
        assert_eq!(
            conn.send(&cmd(&["EXISTS", &format!("alova:{key}")]))
                .await
                .unwrap(),
            Value::Int(0),
            "{key}"
        );
    }
    // Nothing is written: an entry already there stays as it was.
    storage.set("kept", "[0]", None).await.unwrap();
    storage
        .set("kept", "[1]", Some(now_ms() - 1.0))
        .await
        .unwrap();
    assert_eq!(
        storage.get("kept").await.unwrap().as_deref(),
        Some(&b"[0]"[..])
    );
}
