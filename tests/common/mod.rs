//! Real `redis-server` processes for the core's tests: each on a free loopback port, without
//! persistence, in its own temporary directory, killed when dropped (also when a test fails).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alova_storage_redis::config::{Addr, ConnectionConfig};
use alova_storage_redis::connection::{default_retry_strategy, Connection};

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server with extra `redis-server` arguments (e.g. `--requirepass x`).
    pub fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("alova-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Connection settings for this server, tuned so that tests fail fast rather than hang.
    pub fn config(&self) -> ConnectionConfig {
        ConnectionConfig {
            addr: Addr::Tcp {
                host: "127.0.0.1".into(),
                port: self.port,
            },
            ..ConnectionConfig::default()
        }
    }

    /// A connection with the default retry strategy.
    pub fn connect(&self) -> Connection {
        connect(self.config())
    }
}

/// A connection for `config` on the current runtime.
pub fn connect(config: ConnectionConfig) -> Connection {
    Connection::new(
        config,
        default_retry_strategy(),
        tokio::runtime::Handle::current(),
    )
    .unwrap()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command from words.
pub fn cmd(words: &[&str]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for w in words {
        c.arg(*w);
    }
    c
}
