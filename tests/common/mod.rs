//! Real `redis-server` processes for the core's tests: each on a free loopback port, without
//! persistence, in its own temporary directory, killed when dropped (also when a test fails).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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
    /// Sends `signal` (`"STOP"`, `"CONT"`, ...) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

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

/// A real Redis Cluster of `masters` masters with `replicas` replicas each, made by
/// `redis-cli --cluster create`; its servers are killed when it is dropped.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the servers, creates the cluster and waits until every node sees it whole.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let count = masters * (1 + replicas);
        let servers: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // Replicas sync at once, so that a failover finds them current.
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for s in &servers {
            create.arg(format!("127.0.0.1:{}", s.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = servers.iter().all(|s| {
                let info = redis_cli(s.port, &["CLUSTER", "INFO"]);
                let role = redis_cli(s.port, &["ROLE"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
                    && info.contains("cluster_slots_assigned:16384")
                    && (role.starts_with("master") || role.contains("connected"))
            });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { servers }
    }

    /// Settings for a cluster connection to this cluster (one startup node is enough).
    pub fn config(&self) -> alova_storage_redis::config::ClusterConfig {
        alova_storage_redis::config::ClusterConfig {
            nodes: vec![("127.0.0.1".into(), self.servers[0].port)],
            redis: ConnectionConfig::default(),
            scale_reads: alova_storage_redis::config::ScaleReads::Master,
            nat_map: Vec::new(),
            max_redirections: 16,
            retry_delay: Duration::from_millis(100),
            enable_offline_queue: true,
            lazy_connect: false,
        }
    }

    /// A cluster connection on the current runtime.
    pub fn connect(&self) -> Connection {
        connect_cluster(self.config())
    }

    /// The ports of the servers that are masters now.
    pub fn master_ports(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|s| redis_cli(s.port, &["ROLE"]).starts_with("master"))
            .map(|s| s.port)
            .collect()
    }
}

/// `redis-cli -p port args...`, its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA and a server certificate for localhost / 127.0.0.1, in `dir`.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=alova-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

/// A connection to the cluster `config` describes, on the current runtime.
#[allow(dead_code)] // not every test file uses it
pub fn connect_cluster(config: alova_storage_redis::config::ClusterConfig) -> Connection {
    Connection::new_cluster(
        &config,
        alova_storage_redis::retry::default_cluster_retry_strategy(),
        tokio::runtime::Handle::current(),
        std::sync::Arc::new(alova_storage_redis::connection::Plain),
    )
    .unwrap()
}

/// A holder takes each of `rounds` resources; `ours` (with `retryCount: 0`) gives up on it,
/// then, once it is released, must take it at its first attempt: its old place in the line of
/// waiters is gone before its next lock() is sent.
#[allow(dead_code)] // not every test file uses it
pub async fn give_up_then_lock_at_once(
    holder: &alova_storage_redis::lock::Locker,
    ours: &alova_storage_redis::lock::Locker,
    rounds: usize,
) {
    for round in 0..rounds {
        let resource = vec![format!("gave-up-{round}")];
        holder.lock(&resource).await.unwrap();
        assert_eq!(
            ours.lock(&resource).await.unwrap_err().code(),
            "ERR_LOCK_NOT_ACQUIRED"
        );
        holder.unlock(&resource).await.unwrap();
        ours.lock(&resource)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        ours.unlock(&resource).await.unwrap();
    }
}
