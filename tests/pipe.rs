//! The pipelined socket ([`Connection::submit`] and its pipe) against a real server: bursts that
//! overflow the socket, replies split across reads, order, and failure of commands in flight.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alova_storage_redis::connection::Connection;
use alova_storage_redis::error::{ErrorKind, Result};
use alova_storage_redis::resp::encode;
use common::{cmd, RedisServer};
use redis::Value;
use tokio::sync::oneshot;

/// Submits `packed` the fast way and flushes as the binding does after a burst.
fn submit(conn: &Connection, packed: Vec<u8>) -> oneshot::Receiver<Result<Value>> {
    let (tx, rx) = oneshot::channel();
    if let Some(pipe) = conn.submit(packed, move |r| {
        let _ = tx.send(r);
    }) {
        pipe.flush();
    }
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_socket_buffer_arrives_whole_and_in_order() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    // 2,000 SETs of 4 KB submitted before one flush: about 8 MB, far beyond what the socket takes
    // at once, so the writer task has to finish the write.
    let value = vec![b'v'; 4096];
    let mut sets = Vec::new();
    let mut unflushed = Vec::new();
    for i in 0..2000 {
        let key = format!("k{i}");
        let (tx, rx) = oneshot::channel();
        if let Some(pipe) = conn.submit(encode(&[b"SET", key.as_bytes(), &value]), move |r| {
            let _ = tx.send(r);
        }) {
            unflushed.push(pipe);
        }
        sets.push(rx);
    }
    for pipe in &unflushed {
        pipe.flush();
    }
    for rx in sets {
        assert_eq!(rx.await.unwrap().unwrap(), Value::Okay);
    }
    // Replies come back to the right commands.
    let gets: Vec<_> = (0..2000)
        .map(|i| {
            submit(
                &conn,
                encode(&[b"INCRBY", b"counter", i.to_string().as_bytes()]),
            )
        })
        .collect();
    let mut expected = 0i64;
    for (i, rx) in gets.into_iter().enumerate() {
        expected += i as i64;
        assert_eq!(rx.await.unwrap().unwrap(), Value::Int(expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_split_across_reads() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    conn.send_packed(&encode(&[b"SET", b"big", &big]))
        .await
        .unwrap();
    let reads: Vec<_> = (0..4)
        .map(|_| submit(&conn, encode(&[b"GET", b"big"])))
        .collect();
    for rx in reads {
        assert_eq!(rx.await.unwrap().unwrap(), Value::BulkString(big.clone()));
    }
    // Nested replies and error replies keep their place in the stream.
    conn.send(&cmd(&["RPUSH", "list", "a", "b"])).await.unwrap();
    let range = submit(&conn, encode(&[b"LRANGE", b"list", b"0", b"-1"]));
    let wrong = submit(&conn, encode(&[b"GET", b"list"]));
    let after = submit(&conn, encode(&[b"PING"]));
    assert_eq!(
        range.await.unwrap().unwrap(),
        Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"b".to_vec())
        ])
    );
    let err = wrong.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reply);
    assert!(err.message().starts_with("WRONGTYPE"), "{err}");
    assert_eq!(
        after.await.unwrap().unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_flight_when_the_server_dies_are_sent_again_after_the_restart() {
    let mut server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    // Block the server so that the next commands are in flight when it is killed.
    let blocker = submit(&conn, encode(&[b"DEBUG", b"SLEEP", b"0.3"]));
    let counted: Vec<_> = (0..50)
        .map(|_| submit(&conn, encode(&[b"INCR", b"n"])))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    server.restart();
    // DEBUG SLEEP and every INCR were sent again on the new socket and answered there.
    let _ = blocker.await.unwrap();
    let mut replies = Vec::new();
    for rx in counted {
        replies.push(rx.await.unwrap().unwrap());
    }
    let last = conn.send(&cmd(&["GET", "n"])).await.unwrap();
    assert_eq!(last, Value::BulkString(b"50".to_vec()), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resend_commands_in_flight_fail_with_a_connection_error() {
    let mut server = RedisServer::start(&["--enable-debug-command", "yes"]);
    let mut config = server.config();
    config.resend_unfulfilled = false;
    let conn = common::connect(config);
    conn.send(&cmd(&["PING"])).await.unwrap();
    let blocker = submit(&conn, encode(&[b"DEBUG", b"SLEEP", b"2"]));
    let waiting = submit(&conn, encode(&[b"PING"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    for rx in [blocker, waiting] {
        let err = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("no hang")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitters_on_many_threads_each_get_their_own_replies() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    let wrong = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let conn = conn.clone();
            let wrong = wrong.clone();
            std::thread::spawn(move || {
                let mut rxs = Vec::new();
                for i in 0..500 {
                    let word = format!("t{t}-{i}");
                    let expect = Value::BulkString(word.clone().into_bytes());
                    let (tx, rx) = std::sync::mpsc::channel();
                    let wrong = wrong.clone();
                    let packed = encode(&[b"ECHO", word.as_bytes()]);
                    if let Some(pipe) = conn.submit(packed, move |r| {
                        if r.ok() != Some(expect) {
                            *wrong.lock().unwrap() += 1;
                        }
                        let _ = tx.send(());
                    }) {
                        if i % 7 == 0 {
                            pipe.flush();
                        }
                    }
                    rxs.push(rx);
                }
                // One last command flushed, so that nothing stays in the buffer.
                let (tx, rx) = std::sync::mpsc::channel();
                if let Some(pipe) = conn.submit(encode(&[b"PING"]), move |_| {
                    let _ = tx.send(());
                }) {
                    pipe.flush();
                }
                rxs.push(rx);
                for rx in rxs {
                    rx.recv_timeout(Duration::from_secs(10)).expect("a reply");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*wrong.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_moves_to_an_outside_loop_and_back() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    let (tx, rx) = oneshot::channel();
    let pipe = conn
        .submit(encode(&[b"PING"]), move |r| {
            let _ = tx.send(r);
        })
        .expect("a plain TCP connection takes the fast path");
    pipe.flush();
    rx.await.unwrap().unwrap();

    // An outside "event loop": a thread that reads whenever asked, and counts who answered.
    let reader = pipe.reader();
    reader.set_external(true);
    let stop = Arc::new(AtomicBool::new(false));
    let answered_outside = Arc::new(AtomicUsize::new(0));
    let outside = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                assert!(reader.read_available(), "the pipe stays alive");
                std::thread::sleep(Duration::from_micros(200));
            }
            reader
        })
    };
    for i in 0..200 {
        let answered = answered_outside.clone();
        let here = std::thread::current().id();
        let (tx, rx) = oneshot::channel();
        if let Some(p) = conn.submit(encode(&[b"INCR", b"n"]), move |r| {
            if std::thread::current().id() != here {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.send(r);
        }) {
            p.flush();
        }
        assert_eq!(rx.await.unwrap().unwrap(), Value::Int(i + 1));
    }
    assert!(answered_outside.load(Ordering::Relaxed) > 0);
    stop.store(true, Ordering::Release);
    let reader = outside.join().unwrap();

    // Back to the pipe's own task: replies keep coming with nobody outside reading.
    reader.set_external(false);
    for i in 200..300 {
        assert_eq!(
            submit(&conn, encode(&[b"INCR", b"n"]))
                .await
                .unwrap()
                .unwrap(),
            Value::Int(i + 1)
        );
    }
    // A closed connection shuts the socket: the outside reader learns it is dead.
    conn.disconnect();
    drop(pipe);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!reader.read_available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_outside_reader_does_not_hold_up_commands_sent_from_tasks() {
    let server = RedisServer::start(&[]);
    let conn = server.connect();
    conn.send(&cmd(&["PING"])).await.unwrap();
    let pipe = conn
        .submit(encode(&[b"PING"]), |_| {})
        .expect("a plain TCP connection takes the fast path");
    pipe.flush();
    // The outside loop takes reading over, then never reads (a JavaScript thread stuck in a
    // long computation).
    let reader = pipe.reader();
    reader.set_external(true);
    let started = std::time::Instant::now();
    for i in 0..5 {
        let reply = tokio::time::timeout(Duration::from_secs(2), conn.send(&cmd(&["INCR", "n"])))
            .await
            .expect("the reply is read by the task itself")
            .unwrap();
        assert_eq!(reply, Value::Int(i + 1));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(reader);
}
