//! TLS against a real `redis-server` with a certificate made for the test by the `openssl` CLI.

mod common;

use alova_storage_redis::config::{Addr, ConnectionConfig, TlsConfig};
use common::{cmd, connect, free_port};
use redis::Value;

fn tls_config(port: u16, host: &str, tls: TlsConfig) -> ConnectionConfig {
    ConnectionConfig {
        addr: Addr::Tcp {
            host: host.into(),
            port,
        },
        tls: Some(tls),
        max_retries_per_request: Some(0),
        ..ConnectionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_ca_insecure_mode_and_an_untrusted_certificate() {
    let dir = std::env::temp_dir().join(format!("alova-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::make_certificates(&dir);
    let port = free_port();
    let cert = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let server = common::RedisServer::start(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &cert("server.crt"),
        "--tls-key-file",
        &cert("server.key"),
        "--tls-ca-cert-file",
        &cert("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();

    let trusted = connect(tls_config(
        port,
        "localhost",
        TlsConfig {
            ca: Some(ca),
            reject_unauthorized: true,
            ..TlsConfig::default()
        },
    ));
    assert_eq!(
        trusted.send(&cmd(&["SET", "k", "v"])).await.unwrap(),
        Value::Okay
    );

    let insecure = connect(tls_config(
        port,
        "127.0.0.1",
        TlsConfig {
            reject_unauthorized: false,
            ..TlsConfig::default()
        },
    ));
    assert_eq!(
        insecure.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"v".to_vec())
    );

    // The certificate names localhost; the socket goes to 127.0.0.1.
    let by_servername = connect(tls_config(
        port,
        "127.0.0.1",
        TlsConfig {
            ca: Some(std::fs::read_to_string(dir.join("ca.crt")).unwrap()),
            servername: Some("localhost".into()),
            reject_unauthorized: true,
            ..TlsConfig::default()
        },
    ));
    assert_eq!(
        by_servername.send(&cmd(&["GET", "k"])).await.unwrap(),
        Value::BulkString(b"v".to_vec())
    );

    let untrusted = connect(tls_config(
        port,
        "localhost",
        TlsConfig {
            reject_unauthorized: true,
            ..TlsConfig::default()
        },
    ));
    let err = untrusted.send(&cmd(&["PING"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_CONNECTION", "{err}");
    assert!(err.message().contains("TLS"), "{err}");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
