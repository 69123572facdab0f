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
    /// A config file in `dir`, given before the other arguments (a sentinel needs one).
    config_file: Option<PathBuf>,
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
        Self::start_inner(None, extra)
    }

    /// Starts a server on a config file with this text, written once to `<dir>/redis.conf` and
    /// given first (the other arguments override it). A sentinel (`--sentinel`) needs one, as it
    /// rewrites it; a restart keeps the rewritten file.
    pub fn start_with_config(config: &str, extra: &[&str]) -> Self {
        Self::start_inner(Some(config), extra)
    }

    fn start_inner(config: Option<&str>, extra: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("alova-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_file = config.map(|text| {
            let file = dir.join("redis.conf");
            std::fs::write(&file, text).unwrap();
            file
        });
        let mut server = RedisServer {
            port,
            dir,
            config_file,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    /// Whether the process was started and not killed since (a SIGSTOPped one still is).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(self.config_file.iter())
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

/// Submits `RPUSH key i` on `conn`, its outcome sent to `tx` with `i`; the pipe to flush, if any.
pub fn submit_rpush<T: Send + 'static>(
    conn: &Connection,
    key: &str,
    i: usize,
    tx: std::sync::mpsc::Sender<(usize, T)>,
    map: fn(alova_storage_redis::error::Result<redis::Value>) -> T,
) -> Option<alova_storage_redis::pipe::Pipe> {
    let packed =
        alova_storage_redis::resp::encode(&[b"RPUSH", key.as_bytes(), i.to_string().as_bytes()]);
    conn.submit(packed, move |reply| {
        let _ = tx.send((i, map(reply)));
    })
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
    redis_cli_auth(port, None, args)
}

/// `redis-cli -p port [-a password --no-auth-warning] args...`, its output (one line per
/// element of an array reply, nested arrays flattened; an error reply as its text).
pub fn redis_cli_auth(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.arg("-p").arg(port.to_string());
    if let Some(password) = password {
        command.args(["-a", password, "--no-auth-warning"]);
    }
    let out = command.args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A master, its replicas and the Redis Sentinels that monitor it as `name`; every process is
/// killed when it is dropped. `master` and `replicas` are the roles at start: after a failover,
/// ask `master_address()` and look the server up with `server(port)`.
pub struct RedisSentinel {
    pub name: String,
    /// The data nodes' password (`requirepass` and `masterauth`; `auth-pass` for the sentinels).
    pub password: Option<String>,
    /// The sentinels' own password (`requirepass` in sentinel mode, and `sentinel-pass`).
    pub sentinel_password: Option<String>,
    pub master: RedisServer,
    pub replicas: Vec<RedisServer>,
    /// `redis-server <dir>/redis.conf --sentinel` processes.
    pub sentinels: Vec<RedisServer>,
}

/// `SENTINEL replicas` / `SENTINEL sentinels` as redis-cli prints them: field and value lines,
/// one record after another, each beginning with `name`.
fn sentinel_records(output: &str) -> Vec<std::collections::HashMap<String, String>> {
    let lines: Vec<&str> = output.lines().collect();
    let mut records = Vec::new();
    let mut record = std::collections::HashMap::new();
    for pair in lines.chunks(2) {
        if let [field, value] = pair {
            if *field == "name" && !record.is_empty() {
                records.push(std::mem::take(&mut record));
            }
            record.insert(field.to_string(), value.to_string());
        }
    }
    if !record.is_empty() {
        records.push(record);
    }
    records
}

/// The record is of an instance that is down or not connected.
fn flagged_down(record: &std::collections::HashMap<String, String>) -> bool {
    match record.get("flags") {
        Some(flags) => flags
            .split(',')
            .any(|f| matches!(f, "s_down" | "o_down" | "disconnected")),
        None => true,
    }
}

impl RedisSentinel {
    /// `sentinel down-after-milliseconds`.
    pub const DOWN_AFTER_MS: u64 = 1000;
    /// `sentinel failover-timeout`.
    pub const FAILOVER_TIMEOUT_MS: u64 = 3000;

    /// Starts 1 master and `replicas` replicas (with `password` on each, if any), waits until
    /// every replica has synced, then starts `sentinels` sentinels (quorum: a majority) with
    /// their own `sentinel_password`, and waits until every sentinel knows every replica and
    /// every other sentinel (at most 30 s).
    pub fn start(
        replicas: usize,
        sentinels: usize,
        password: Option<&str>,
        sentinel_password: Option<&str>,
    ) -> Self {
        let name = "mymaster".to_string();
        let mut data_args = vec!["--repl-diskless-sync-delay", "0"];
        if let Some(password) = password {
            data_args.extend(["--requirepass", password, "--masterauth", password]);
        }
        let master = RedisServer::start(&data_args);
        let master_port = master.port.to_string();
        let replicas: Vec<RedisServer> = (0..replicas)
            .map(|_| {
                let mut args = data_args.clone();
                args.extend(["--replicaof", "127.0.0.1", &master_port]);
                RedisServer::start(&args)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for replica in &replicas {
            while !redis_cli_auth(replica.port, password, &["INFO", "replication"])
                .contains("master_link_status:up")
            {
                assert!(
                    Instant::now() < deadline,
                    "replica {} did not sync with master {}",
                    replica.port,
                    master.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        let mut config = format!(
            "sentinel resolve-hostnames no\n\
             sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
             sentinel down-after-milliseconds {name} {down}\n\
             sentinel failover-timeout {name} {failover}\n\
             sentinel parallel-syncs {name} 1\n",
            quorum = sentinels / 2 + 1,
            down = Self::DOWN_AFTER_MS,
            failover = Self::FAILOVER_TIMEOUT_MS,
        );
        if let Some(password) = password {
            config.push_str(&format!("sentinel auth-pass {name} {password}\n"));
        }
        if let Some(password) = sentinel_password {
            config.push_str(&format!(
                "requirepass {password}\nsentinel sentinel-pass {password}\n"
            ));
        }
        let sentinel_servers: Vec<RedisServer> = (0..sentinels)
            .map(|_| RedisServer::start_with_config(&config, &["--sentinel"]))
            .collect();

        let topology = RedisSentinel {
            name,
            password: password.map(str::to_string),
            sentinel_password: sentinel_password.map(str::to_string),
            master,
            replicas,
            sentinels: sentinel_servers,
        };
        // Replicas come from the master's INFO, other sentinels from their hello messages
        // (published on the master every 2 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut missing = Vec::new();
            for port in topology.sentinel_ports() {
                let known = sentinel_records(
                    &topology.sentinel_cli(port, &["SENTINEL", "replicas", &topology.name]),
                );
                for replica in &topology.replicas {
                    let listed = known.iter().any(|r| {
                        r.get("port") == Some(&replica.port.to_string()) && !flagged_down(r)
                    });
                    if !listed {
                        missing.push(format!(
                            "sentinel {port} does not know replica {}",
                            replica.port
                        ));
                    }
                }
                let peers = sentinel_records(
                    &topology.sentinel_cli(port, &["SENTINEL", "sentinels", &topology.name]),
                );
                let usable = peers.iter().filter(|r| !flagged_down(r)).count();
                if usable != sentinels - 1 {
                    missing.push(format!(
                        "sentinel {port} knows {usable} of {} other sentinels",
                        sentinels - 1
                    ));
                }
                let quorum = topology.sentinel_cli(port, &["SENTINEL", "ckquorum", &topology.name]);
                if !quorum.starts_with("OK") {
                    missing.push(format!("sentinel {port}: {}", quorum.trim()));
                }
            }
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel topology was not ready within 30 s:\n  {}",
                missing.join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        topology
    }

    /// The sentinels' ports (what a client takes as its sentinels, on 127.0.0.1).
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// `redis-cli` on a sentinel, with the sentinels' password.
    pub fn sentinel_cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_auth(port, self.sentinel_password.as_deref(), args)
    }

    /// `redis-cli` on a data node, with the data nodes' password.
    pub fn data_cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_auth(port, self.password.as_deref(), args)
    }

    /// Every data node: the master at start, then the replicas.
    pub fn servers(&self) -> impl Iterator<Item = &RedisServer> {
        std::iter::once(&self.master).chain(&self.replicas)
    }

    /// The data node on `port` (to kill or signal it). Panics when there is none.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// The data node on `port`, to kill or restart it. Panics when there is none.
    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        std::iter::once(&mut self.master)
            .chain(&mut self.replicas)
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// What `sentinel` says of the master, if it knows it.
    fn address_from(&self, sentinel: u16) -> Option<(String, u16)> {
        let out = self.sentinel_cli(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", &self.name],
        );
        let mut lines = out.lines();
        let host = lines.next()?.to_string();
        let port = lines.next()?.parse().ok()?;
        Some((host, port))
    }

    /// `SENTINEL get-master-addr-by-name` on the first running sentinel.
    pub fn master_address(&self) -> (String, u16) {
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.running())
            .expect("a running sentinel");
        self.address_from(sentinel.port)
            .unwrap_or_else(|| panic!("sentinel {} does not know the master", sentinel.port))
    }

    /// Waits until every running sentinel names the same master, `accept` takes its port and
    /// that server answers ROLE master; its address.
    pub fn wait_master(&self, accept: impl Fn(u16) -> bool, timeout: Duration) -> (String, u16) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self
                .sentinels
                .iter()
                .filter(|s| s.running())
                .map(|s| self.address_from(s.port))
                .collect::<Vec<_>>();
            if let Some(Some(first)) = last.first() {
                let agreed = last.iter().all(|a| a.as_ref() == Some(first));
                let serving = self.servers().any(|s| s.port == first.1 && s.running());
                if agreed
                    && accept(first.1)
                    && serving
                    && self.data_cli(first.1, &["ROLE"]).starts_with("master")
                {
                    return first.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels named no new master within {timeout:?} (last: {last:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `SENTINEL FAILOVER` (no agreement needed), then waits (at most 30 s) until every
    /// running sentinel names a new master that answers ROLE master; its address. The other
    /// nodes are moved to it afterwards (the old master some 8 s later).
    pub fn failover(&self) -> (String, u16) {
        let before = self.master_address();
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.running())
            .expect("a running sentinel");
        let reply = self.sentinel_cli(sentinel.port, &["SENTINEL", "FAILOVER", &self.name]);
        assert_eq!(reply.trim(), "OK", "SENTINEL FAILOVER");
        self.wait_master(|port| port != before.1, Duration::from_secs(30))
    }
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
