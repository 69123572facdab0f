//! Connection behaviour against real servers: reconnects, the offline queue, timeouts, errors.

mod common;

use std::time::{Duration, Instant};

use alova_storage_redis::config::{Addr, Secret};
use alova_storage_redis::connection::Status;
use common::{cmd, connect, free_port, RedisServer};
use redis::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart_without_failing_the_next_command() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["SET", "k", "v"])).await.unwrap();
    server.restart();
    // The socket broke under us; the command waits for the reconnect and is sent again.
    assert_eq!(
        conn.send(&cmd(&["SET", "k", "w"])).await.unwrap(),
        Value::Okay
    );
    assert_eq!(conn.status(), Status::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_waits_for_the_server_then_succeeds() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    server.kill();
    let pending = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.send(&cmd(&["SET", "k", "v"])).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    assert_eq!(pending.await.unwrap().unwrap(), Value::Okay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_is_bounded_by_max_retries_per_request() {
    let mut server = RedisServer::start(&[]);
    let mut config = server.config();
    config.max_retries_per_request = Some(2);
    let conn = connect(config);
    conn.send(&cmd(&["PING"])).await.unwrap();
    server.kill();
    let err = conn.send(&cmd(&["GET", "k"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert!(err.message().contains("maxRetriesPerRequest"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_offline_queue_fails_at_once_while_disconnected() {
    let mut server = RedisServer::start(&[]);
    let mut config = server.config();
    config.enable_offline_queue = false;
    let conn = connect(config);
    // The first connect still completes: wait for it.
    while conn.status() != Status::Ready {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    // The first command finds the broken socket; after that the client is reconnecting.
    let _ = conn.send(&cmd(&["PING"])).await;
    let err = conn.send(&cmd(&["PING"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION");
    assert!(err.message().contains("enableOfflineQueue"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_port_fails_with_a_connection_error() {
    let mut config = alova_storage_redis::config::ConnectionConfig {
        addr: Addr::Tcp {
            host: "127.0.0.1".into(),
            port: free_port(),
        },
        ..Default::default()
    };
    config.max_retries_per_request = Some(1);
    let conn = connect(config);
    let err = conn.send(&cmd(&["PING"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert!(err.message().contains("connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_silent_server() {
    // Accepts TCP connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            sockets.push(s);
        }
    });
    let mut config = alova_storage_redis::config::ConnectionConfig {
        addr: Addr::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        password: Some(Secret("pw".into())),
        ..Default::default()
    };
    config.connect_timeout = Some(Duration::from_millis(200));
    config.max_retries_per_request = Some(0);
    let started = Instant::now();
    let err = connect(config).send(&cmd(&["PING"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_TIMEOUT", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout() {
    let server = RedisServer::start(&[]);
    let other = server.connect();
    let mut config = server.config();
    config.command_timeout = Some(Duration::from_millis(100));
    let conn = connect(config);
    conn.send(&cmd(&["PING"])).await.unwrap();
    other
        .send(&cmd(&["CLIENT", "PAUSE", "1000", "ALL"]))
        .await
        .unwrap();
    let err = conn.send(&cmd(&["GET", "k"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_TIMEOUT", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let server = RedisServer::start(&["--requirepass", "right-secret"]);
    let mut config = server.config();
    config.password = Some(Secret("wrong-secret".into()));
    let err = connect(config).send(&cmd(&["PING"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_AUTH", "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");

    let mut config = server.config();
    config.password = Some(Secret("right-secret".into()));
    assert_eq!(
        connect(config).send(&cmd(&["PING"])).await.unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_connect_waits_for_the_first_command_and_quit_closes() {
    let server = RedisServer::start(&[]);
    let mut config = server.config();
    config.lazy_connect = true;
    config.db = 3;
    config.connection_name = Some("alova-test".into());
    let conn = connect(config);
    assert_eq!(conn.status(), Status::Wait);
    conn.send(&cmd(&["SET", "in3", "1"])).await.unwrap();
    assert_eq!(conn.status(), Status::Ready);
    let name = conn.send(&cmd(&["CLIENT", "GETNAME"])).await.unwrap();
    assert_eq!(name, Value::BulkString(b"alova-test".to_vec()));
    let other = server.connect();
    assert_eq!(
        other.send(&cmd(&["EXISTS", "in3"])).await.unwrap(),
        Value::Int(0)
    );
    conn.quit().await;
    assert_eq!(conn.status(), Status::End);
    assert_eq!(
        conn.send(&cmd(&["PING"])).await.unwrap_err().code(),
        "ERR_CLOSED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reply_is_a_reply_error() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["SET", "s", "x"])).await.unwrap();
    let err = conn.send(&cmd(&["INCR", "s"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_REPLY");
    assert!(
        err.message().starts_with("ERR value is not an integer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_a_lost_server_without_traffic_and_comes_back() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.status() != Status::Reconnecting {
        assert!(
            Instant::now() < deadline,
            "status stayed {:?}",
            conn.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.status() != Status::Ready {
        assert!(
            Instant::now() < deadline,
            "status stayed {:?}",
            conn.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        conn.send(&cmd(&["PING"])).await.unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_lets_commands_issued_before_it_finish() {
    let server = RedisServer::start(&[]);
    let mut config = server.config();
    config.lazy_connect = true; // the commands are queued while the connection is made
    let conn = connect(config);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let in_flight = conn.track().unwrap();
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            // Issued (counted) before quit(), sent only after it: quit() must wait for them
            // even though no connection is being made yet.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let reply = conn.send(&cmd(&["SET", &format!("k{i}"), "v"])).await;
            drop(in_flight);
            reply
        }));
    }
    conn.quit().await;
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Value::Okay);
    }
    assert_eq!(conn.track().err().map(|e| e.code()), Some("ERR_CLOSED"));
    assert_eq!(conn.status(), Status::End);
}

/// The next event's name, within a generous bound.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<alova_storage_redis::connection::Event>,
) -> &'static str {
    use alova_storage_redis::connection::Event;
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the event stream");
    match event {
        Event::Connect => "connect",
        Event::Ready => "ready",
        Event::Error(_) => "error",
        Event::Close => "close",
        Event::Reconnecting(_) => "reconnecting",
        Event::End => "end",
        Event::Connecting => "connecting",
        Event::NodeAdded(_) => "+node",
        Event::NodeRemoved(_) => "-node",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_ioredis_order_and_connect_resolves_when_ready() {
    let mut server = RedisServer::start(&[]);
    let mut config = server.config();
    config.lazy_connect = true;
    let conn = connect(config);
    let mut events = conn.events();
    assert_eq!(conn.status(), Status::Wait);
    conn.connect().await.unwrap();
    assert_eq!(conn.status(), Status::Ready);
    assert_eq!(next_event(&mut events).await, "connect");
    assert_eq!(next_event(&mut events).await, "ready");
    // connect() on a ready connection resolves at once.
    conn.connect().await.unwrap();

    server.kill();
    assert_eq!(next_event(&mut events).await, "close");
    assert_eq!(next_event(&mut events).await, "reconnecting");
    // Attempts against the dead port (ioredis's order): connecting, error, close,
    // reconnecting, until it is back.
    assert_eq!(next_event(&mut events).await, "connecting");
    assert_eq!(next_event(&mut events).await, "error");
    assert_eq!(next_event(&mut events).await, "close");
    server.restart();
    let mut last = "close";
    loop {
        let event = next_event(&mut events).await;
        let expected_after = match event {
            "connect" => "connecting",
            "reconnecting" => "close",
            "connecting" => "reconnecting",
            "error" => "connecting",
            "close" => "error",
            other => panic!("unexpected {other}"),
        };
        assert_eq!(last, expected_after, "{event} after {last}");
        last = event;
        if event == "connect" {
            break;
        }
    }
    assert_eq!(next_event(&mut events).await, "ready");
    conn.disconnect();
    assert_eq!(next_event(&mut events).await, "close");
    assert_eq!(next_event(&mut events).await, "end");
    assert_eq!(
        conn.connect().await.unwrap_err().code(),
        "ERR_CLOSED",
        "connect() after the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_holds_for_later_commands_reconnections_and_the_side_connection() {
    let mut server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["SET", "k", "zero"])).await.unwrap();
    // Issued together, not awaited in between: the SET after the SELECT lands on db 1.
    let select = conn.select(1);
    let set_one = cmd(&["SET", "k", "one"]);
    let set = conn.send(&set_one);
    let (selected, set) = tokio::join!(select, set);
    assert_eq!(selected.unwrap(), Value::Okay);
    assert_eq!(set.unwrap(), Value::Okay);
    assert_eq!(conn.db(), 1);
    let side = conn.side().unwrap();
    assert_eq!(
        side.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"one".to_vec())
    );
    // A restart (no persistence: the data is gone) and the connection comes back on db 1.
    server.restart();
    for _ in 0..100 {
        if conn.send(&cmd(&["SET", "k", "again"])).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        conn.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"again".to_vec())
    );
    let mut db1 = server.config();
    db1.db = 1;
    let db1 = common::connect(db1);
    assert_eq!(
        db1.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"again".to_vec())
    );
    // Out of range: the server's error, and the database stays.
    assert_eq!(conn.select(100_000).await.unwrap_err().code(), "ERR_REPLY");
    assert_eq!(conn.db(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_timeout_gives_up_a_silent_link_and_the_command_goes_on_after() {
    let server = RedisServer::start(&[]);
    let mut config = server.config();
    config.socket_timeout = Some(std::time::Duration::from_millis(300));
    let conn = connect(config);
    let mut events = conn.events();
    assert_eq!(
        conn.send(&cmd(&["SET", "k", "before"])).await.unwrap(),
        Value::Okay
    );
    // Idle for longer than the limit: nothing waits, so nothing is given up.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.signal("STOP");
    let set = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.send(&cmd(&["SET", "k", "after"])).await })
    };
    let timed_out = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(alova_storage_redis::connection::Event::Error(e)) => return e,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    server.signal("CONT");
    let err = timed_out.expect("an error event for the silent link");
    assert_eq!(err.code(), "ERR_TIMEOUT");
    assert!(err.message().contains("Socket timeout"), "{err}");
    // Sent again on the new link once the server answers.
    assert_eq!(
        tokio::time::timeout(std::time::Duration::from_secs(10), set)
            .await
            .expect("the SET within 10 s")
            .unwrap()
            .unwrap(),
        Value::Okay
    );
    assert_eq!(
        conn.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"after".to_vec())
    );
}

/// Commands put on one link (`submit_all_on` with its generation: a transaction under WATCH)
/// are never sent again on another when that link is lost; others are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pinned_to_a_link_are_not_sent_again_on_the_next() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    let generation = conn.link_generation().expect("a live link");
    server.signal("STOP");
    let (pinned_tx, pinned_rx) = tokio::sync::oneshot::channel();
    let (free_tx, free_rx) = tokio::sync::oneshot::channel();
    let pinned = alova_storage_redis::resp::encode(&[b"SET", b"pinned", b"1"]);
    let free = alova_storage_redis::resp::encode(&[b"SET", b"free", b"1"]);
    if let Some(pipe) = conn.submit_all_on(
        vec![(
            pinned,
            move |r: alova_storage_redis::error::Result<Value>| {
                let _ = pinned_tx.send(r);
            },
        )],
        Some(generation),
    ) {
        pipe.flush();
    }
    if let Some(pipe) = conn.submit_all_on(
        vec![(free, move |r: alova_storage_redis::error::Result<Value>| {
            let _ = free_tx.send(r);
        })],
        None,
    ) {
        pipe.flush();
    }
    // The link is given up while both wait on it.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    conn.reconnect();
    server.signal("CONT");
    let pinned = tokio::time::timeout(std::time::Duration::from_secs(10), pinned_rx)
        .await
        .expect("the pinned command settles")
        .unwrap();
    assert_eq!(pinned.unwrap_err().code(), "ERR_CONNECTION");
    let free = tokio::time::timeout(std::time::Duration::from_secs(10), free_rx)
        .await
        .expect("the free command settles")
        .unwrap();
    assert_eq!(free.unwrap(), Value::Okay);
    assert_ne!(conn.link_generation(), Some(generation));
}
