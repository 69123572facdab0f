//! The Sentinel harness itself: 1 master, 2 replicas and 3 sentinels with passwords, a
//! SENTINEL FAILOVER, then a SIGKILL of the new master that the sentinels notice.

mod common;

use std::time::{Duration, Instant};

use common::{redis_cli, RedisSentinel};

#[test]
fn sentinel_failover_and_sigkill_each_promote_a_replica() {
    let began = Instant::now();
    let mut topo = RedisSentinel::start(2, 3, Some("data-pw"), Some("sentinel-pw"));
    let started = began.elapsed();
    assert_eq!(topo.replicas.len(), 2);
    assert_eq!(topo.sentinel_ports().len(), 3);

    // Both kinds of node want their own password.
    assert!(redis_cli(topo.master.port, &["GET", "k"]).contains("NOAUTH"));
    let sentinel = topo.sentinel_ports()[0];
    assert!(redis_cli(sentinel, &["SENTINEL", "masters"]).contains("NOAUTH"));
    assert!(topo
        .sentinel_cli(sentinel, &["ROLE"])
        .starts_with("sentinel\nmymaster"));
    for replica in &topo.replicas {
        let role = topo.data_cli(replica.port, &["ROLE"]);
        let lines: Vec<&str> = role.lines().collect();
        assert_eq!(lines[0], "slave", "{role}");
        assert_eq!(lines[2], topo.master.port.to_string(), "{role}");
    }

    assert_eq!(
        topo.master_address(),
        ("127.0.0.1".to_string(), topo.master.port)
    );
    assert_eq!(
        topo.data_cli(topo.master.port, &["SET", "before-failover", "kept"])
            .trim(),
        "OK"
    );
    assert_eq!(
        topo.data_cli(topo.master.port, &["WAIT", "2", "2000"])
            .trim(),
        "2"
    );

    // SENTINEL FAILOVER: a replica becomes the master, and takes writes.
    let began = Instant::now();
    let (host, promoted) = topo.failover();
    let failed_over = began.elapsed();
    assert_eq!(host, "127.0.0.1");
    assert_ne!(promoted, topo.master.port);
    assert!(topo.replicas.iter().any(|r| r.port == promoted));
    assert_eq!(topo.master_address(), (host, promoted));
    for port in topo.sentinel_ports() {
        let named = topo.sentinel_cli(port, &["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        assert_eq!(named, format!("127.0.0.1\n{promoted}\n"), "sentinel {port}");
    }
    assert_eq!(
        topo.data_cli(promoted, &["SET", "after-failover", "1"])
            .trim(),
        "OK"
    );
    assert_eq!(
        topo.data_cli(promoted, &["GET", "before-failover"]).trim(),
        "kept"
    );

    // SIGKILL of that master: the sentinels see it down and promote another node.
    let began = Instant::now();
    topo.server_mut(promoted).kill();
    assert!(!topo.server(promoted).running());
    let (_, next) = topo.wait_master(|port| port != promoted, Duration::from_secs(30));
    let promoted_again = began.elapsed();
    assert_ne!(next, promoted);
    assert!(topo.data_cli(next, &["ROLE"]).starts_with("master\n"));
    assert_eq!(
        topo.data_cli(next, &["SET", "after-kill", "1"]).trim(),
        "OK"
    );

    eprintln!(
        "sentinel harness: started in {started:?}, SENTINEL FAILOVER took {failed_over:?}, \
         promotion after SIGKILL {promoted_again:?}"
    );
}
