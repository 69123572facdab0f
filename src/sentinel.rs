//! Redis Sentinel: finding the master (or a replica) of a named group through its sentinels, as
//! ioredis's `SentinelConnector` does.
//!
//! Each connection attempt asks the sentinels in turn (the last one that answered first) for the
//! address of the group's master (`sentinel get-master-addr-by-name`) or of a replica that is up
//! (`sentinel replicas`), learns the other sentinels on the way (`updateSentinels`), maps the
//! address through `natMap`, and the connection then connects there and checks the server's
//! `ROLE`. A failover is followed by the next attempt: the sentinels close the old master's
//! client connections when they demote it, and a master that died fails its socket.
//!
//! With `failoverDetector`, [`Sentinels::switch_master`] listens for `+switch-master` on up to
//! `sentinelMaxConnections` sentinels, so that the connection reconnects as soon as the group
//! fails over, before the old master is demoted.
//!
//! The sentinels are asked on a socket of our own (plain TCP) or through redis-rs (TLS), each
//! ask bounded by `connectTimeout` to connect and `sentinelCommandTimeout` (else
//! `connectTimeout`) for its replies, so that a sentinel that does not answer costs one bound
//! and the next one is asked.

use std::sync::Mutex;
use std::time::Duration;

use redis::Value;

use crate::config::{Addr, ConnectionConfig, SentinelConfig, SentinelRole};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Io, Pipe};

/// The sentinels of one connection, in the order they are asked.
pub struct Sentinels {
    config: SentinelConfig,
    /// `connectTimeout` of the connection.
    connect_timeout: Option<Duration>,
    known: Mutex<Vec<(String, u16)>>,
    /// The address the last resolution gave.
    current: Mutex<Option<(String, u16)>>,
}

impl Sentinels {
    /// The sentinels of `config`; `connect_timeout` bounds each connection to one.
    pub fn new(config: SentinelConfig, connect_timeout: Option<Duration>) -> Self {
        let known = Mutex::new(config.sentinels.clone());
        Sentinels {
            config,
            connect_timeout,
            known,
            current: Mutex::new(None),
        }
    }

    /// The address the last resolution gave, if any.
    pub fn current(&self) -> Option<(String, u16)> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the connection is named by in messages: the group and its sentinels.
    pub fn label(&self) -> String {
        let list: Vec<String> = self
            .config
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!("sentinel group {} ({})", self.config.name, list.join(","))
    }

    /// True with `failoverDetector`.
    pub fn detects_failovers(&self) -> bool {
        self.config.failover_detector
    }

    /// Resolves when a sentinel announces that the group failed over (`+switch-master`), as
    /// ioredis's `FailoverDetector` hears it: listening to the first `sentinelMaxConnections`
    /// sentinels; one that cannot be reached, or whose connection is lost, is tried again after
    /// `sentinelReconnectStrategy`'s pause (a minute by default, as in ioredis), or no more when
    /// it gives none.
    pub async fn switch_master(&self) {
        let list: Vec<(String, u16)> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .take(self.config.max_connections.max(1))
            .cloned()
            .collect();
        let listeners = list.iter().map(|(host, port)| {
            Box::pin(async move {
                let mut times = 0;
                loop {
                    if self.listen(host, *port).await.is_ok() {
                        return;
                    }
                    times += 1;
                    let pause = match &self.config.hooks.reconnect {
                        Some(strategy) => strategy(times).await,
                        None => Some(SENTINEL_RECONNECT),
                    };
                    match pause {
                        Some(pause) => tokio::time::sleep(pause).await,
                        // Not listening to this one any more.
                        None => std::future::pending::<()>().await,
                    }
                }
            })
        });
        futures_util::future::select_all(listeners).await;
    }

    /// Subscribes to `+switch-master` on one sentinel; `Ok` once it announced this group's.
    async fn listen(&self, host: &str, port: u16) -> Result<()> {
        use futures_util::StreamExt;
        let label = format!("sentinel {host}:{port}");
        let client = crate::settings::build_client(&self.settings(host, port))?;
        let bound = self.connect_timeout.unwrap_or(Duration::from_secs(10));
        let mut pubsub = tokio::time::timeout(bound, client.get_async_pubsub())
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, format!("connecting to {label}")))?
            .map_err(|e| Error::from_redis(&e, &label))?;
        tokio::time::timeout(bound, pubsub.subscribe("+switch-master"))
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, format!("subscribing on {label}")))?
            .map_err(|e| Error::from_redis(&e, &label))?;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            // "<name> <old ip> <old port> <new ip> <new port>"
            let payload: String = msg.get_payload().unwrap_or_default();
            if payload.split(' ').next() == Some(self.config.name.as_str()) {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Connection,
            format!("{label} closed the connection"),
        ))
    }

    /// Connection settings for the sentinel at `host:port`.
    fn settings(&self, host: &str, port: u16) -> ConnectionConfig {
        ConnectionConfig {
            addr: Addr::Tcp {
                host: host.to_owned(),
                port,
            },
            tls: self.config.tls.clone(),
            username: self.config.username.clone(),
            password: self.config.password.clone(),
            connect_timeout: self.connect_timeout,
            client_info: None,
            ..ConnectionConfig::default()
        }
    }

    /// `sentinelRetryStrategy`, when given.
    pub fn retry_strategy(&self) -> Option<crate::retry::RetryStrategy> {
        self.config.hooks.retry.clone()
    }

    /// The role the connection wants.
    pub fn role(&self) -> SentinelRole {
        self.config.role
    }

    /// Asks the sentinels, in turn, where the master (or a replica) of the group is.
    ///
    /// # Errors
    /// `ERR_CONNECTION` naming the last failure when no sentinel gave an address; `ERR_AUTH`
    /// when a sentinel refused the credentials (and none gave an address).
    pub async fn resolve(&self) -> Result<(String, u16)> {
        let list = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last: Option<Error> = None;
        for (host, port) in &list {
            match self.ask(host, *port).await {
                Ok((Some(address), more)) => {
                    self.learned(host, *port, more);
                    let address = self.nat(address).await;
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(address.clone());
                    return Ok(address);
                }
                Ok((None, more)) => {
                    self.learned_only(more);
                    let what = match self.config.role {
                        SentinelRole::Master => "master",
                        SentinelRole::Replica => "replica that is up",
                    };
                    last = Some(Error::new(
                        ErrorKind::Connection,
                        format!(
                            "sentinel {host}:{port} knows no {what} of {:?}",
                            self.config.name
                        ),
                    ));
                }
                Err(err) => last = Some(err),
            }
        }
        let kind = match last.as_ref().map(Error::kind) {
            Some(ErrorKind::Auth) => ErrorKind::Auth,
            _ => ErrorKind::Connection,
        };
        let reason = last.map_or(String::new(), |e| format!(" Last error: {}", e.message()));
        Err(Error::new(
            kind,
            format!(
                "All sentinels of {:?} are unreachable or know no {}.{reason}",
                self.config.name,
                match self.config.role {
                    SentinelRole::Master => "master",
                    SentinelRole::Replica => "replica",
                }
            ),
        ))
    }

    /// The sentinel at `host:port` answered: it goes first next time; the sentinels it named
    /// are added.
    fn learned(&self, host: &str, port: u16, more: Vec<(String, u16)>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = known.iter().position(|(h, p)| h == host && *p == port) {
            let first = known.remove(at);
            known.insert(0, first);
        }
        for s in more {
            if !known.contains(&s) {
                known.push(s);
            }
        }
    }

    fn learned_only(&self, more: Vec<(String, u16)>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for s in more {
            if !known.contains(&s) {
                known.push(s);
            }
        }
    }

    async fn nat(&self, (host, port): (String, u16)) -> (String, u16) {
        if let Some(map) = &self.config.hooks.nat {
            return map(format!("{host}:{port}")).await.unwrap_or((host, port));
        }
        self.config
            .nat_map
            .iter()
            .find(|(from, _)| from.0 == host && from.1 == port)
            .map_or((host, port), |(_, to)| to.clone())
    }

    /// Asks one sentinel: the address it gives (none when it knows none), and the other
    /// sentinels it names (with `updateSentinels`).
    async fn ask(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Option<(String, u16)>, Vec<(String, u16)>)> {
        let label = format!("sentinel {host}:{port}");
        let settings = self.settings(host, port);
        let session = tokio::time::timeout(
            self.connect_timeout.unwrap_or(Duration::from_secs(10)),
            Session::open(&settings, &label),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                format!("connecting to {label}: timed out (connectTimeout)"),
            ))
        })?;
        let bound = self
            .config
            .command_timeout
            .or(self.connect_timeout)
            .unwrap_or(Duration::from_secs(10));
        let name = self.config.name.as_bytes();
        let asked = async {
            let address = match self.config.role {
                SentinelRole::Master => {
                    let reply = session
                        .send(&[b"sentinel", b"get-master-addr-by-name", name], &label)
                        .await?;
                    master_address(&reply)
                }
                SentinelRole::Replica => {
                    let reply = session
                        .send(&[b"sentinel", b"replicas", name], &label)
                        .await?;
                    match &self.config.hooks.pick_replica {
                        Some(pick) => {
                            let up = up_replicas(&reply);
                            if up.is_empty() {
                                None
                            } else {
                                let random = self.pick_replica(&reply);
                                pick(up).await.or(random)
                            }
                        }
                        None => self.pick_replica(&reply),
                    }
                }
            };
            let mut more = Vec::new();
            if self.config.update_sentinels {
                if let Ok(reply) = session
                    .send(&[b"sentinel", b"sentinels", name], &label)
                    .await
                {
                    more = sentinels(&reply);
                }
            }
            Ok((address, more))
        };
        let outcome = tokio::time::timeout(bound, asked)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{label} did not answer within {} ms (sentinelCommandTimeout)",
                        bound.as_millis()
                    ),
                ))
            });
        session.close();
        outcome
    }

    /// A replica that is up: the first of `preferredSlaves` (by `prio`) that is, else a random
    /// one.
    fn pick_replica(&self, reply: &Value) -> Option<(String, u16)> {
        let up: Vec<(String, u16)> = up_replicas(reply)
            .iter()
            .filter_map(|r| address_of(r))
            .collect();
        if up.is_empty() {
            return None;
        }
        let mut preferred = self.config.preferred_replicas.clone();
        preferred.sort_by_key(|(_, _, prio)| *prio);
        for (host, port, _) in &preferred {
            if let Some(found) = up.iter().find(|(h, p)| h == host && p == port) {
                return Some(found.clone());
            }
        }
        let pick = crate::lock::random_u64() as usize % up.len();
        up.into_iter().nth(pick)
    }
}

/// How long `failoverDetector` waits before it listens again to a sentinel it lost.
const SENTINEL_RECONNECT: Duration = Duration::from_secs(60);

/// A short-lived connection to a sentinel.
enum Session {
    Pipe(Pipe),
    Fed(redis::aio::MultiplexedConnection),
}

impl Session {
    async fn open(settings: &ConnectionConfig, label: &str) -> Result<Session> {
        let Addr::Tcp { host, port } = &settings.addr else {
            return Err(Error::config("a sentinel is reached over TCP"));
        };
        if settings.tls.is_some() {
            let client = crate::settings::build_client(settings)?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(settings.connect_timeout)
                .set_response_timeout(None);
            return client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Session::Fed)
                .map_err(|e| Error::from_redis(&e, label));
        }
        let io_error = |e: std::io::Error| Error::from_redis(&e.into(), label);
        let stream = crate::connection::open::tcp(settings, host, *port)
            .await
            .map_err(io_error)?;
        let (pipe, driver) = Pipe::new(Io::Tcp(stream)).map_err(io_error)?;
        tokio::spawn(driver);
        if let Err(err) = crate::connection::open::handshake(settings, label, &pipe).await {
            pipe.close();
            return Err(err);
        }
        Ok(Session::Pipe(pipe))
    }

    async fn send(&self, words: &[&[u8]], label: &str) -> Result<Value> {
        let reply = match self {
            Session::Pipe(pipe) => pipe.send(crate::resp::encode(words)).await,
            Session::Fed(conn) => {
                let mut conn = conn.clone();
                conn.send_packed_command(&crate::resp::unpack(&crate::resp::encode(words)))
                    .await
            }
        };
        match reply {
            Ok(Value::ServerError(e)) => Err(Error::from_redis(&e.into(), label)),
            Ok(v) => Ok(v),
            Err(e) => Err(Error::from_redis(&e, label)),
        }
    }

    fn close(self) {
        if let Session::Pipe(pipe) = self {
            pipe.close();
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `[host, port]`, or nothing for a group the sentinel does not know.
fn master_address(reply: &Value) -> Option<(String, u16)> {
    let Value::Array(items) = reply else {
        return None;
    };
    let host = text(items.first()?)?;
    let port = text(items.get(1)?)?.parse().ok()?;
    Some((host, port))
}

/// The records of a `sentinel replicas` or `sentinel sentinels` reply: each a flat list of
/// field, value (RESP2) or a map (RESP3).
fn records(reply: &Value) -> Vec<Vec<(String, String)>> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(flat) => Some(
                flat.chunks(2)
                    .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                    .collect(),
            ),
            Value::Map(pairs) => Some(
                pairs
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The replicas of a `sentinel replicas` reply that are up.
fn up_replicas(reply: &Value) -> Vec<Vec<(String, String)>> {
    records(reply)
        .into_iter()
        .filter(|r| {
            field(r, "flags").is_some_and(|f| {
                !f.split(',')
                    .any(|f| matches!(f, "disconnected" | "s_down" | "o_down"))
            })
        })
        .collect()
}

fn field<'a>(record: &'a [(String, String)], name: &str) -> Option<&'a str> {
    record
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn address_of(record: &[(String, String)]) -> Option<(String, u16)> {
    let host = field(record, "ip")?;
    let port = field(record, "port")?.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The sentinels a `sentinel sentinels` reply names, but those it says are disconnected.
fn sentinels(reply: &Value) -> Vec<(String, u16)> {
    records(reply)
        .into_iter()
        .filter(|r| !field(r, "flags").is_some_and(|f| f.split(',').any(|f| f == "disconnected")))
        .filter_map(|r| address_of(&r))
        .collect()
}

/// The role a `ROLE` reply gives (`master`, `slave`, `sentinel`).
pub fn role_of(reply: &Value) -> Option<String> {
    match reply {
        Value::Array(items) => text(items.first()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_sentinel_replies() {
        let master = Value::Array(vec![bulk("10.0.0.1"), bulk("6380")]);
        assert_eq!(master_address(&master), Some(("10.0.0.1".into(), 6380)));
        assert_eq!(master_address(&Value::Nil), None);
        let replicas = Value::Array(vec![
            Value::Array(
                [
                    "name", "a", "ip", "10.0.0.2", "port", "6381", "flags", "slave",
                ]
                .map(bulk)
                .to_vec(),
            ),
            Value::Array(
                ["ip", "10.0.0.3", "port", "6382", "flags", "slave,s_down"]
                    .map(bulk)
                    .to_vec(),
            ),
        ]);
        let config = SentinelConfig {
            role: SentinelRole::Replica,
            ..SentinelConfig::default()
        };
        let s = Sentinels::new(config, None);
        assert_eq!(s.pick_replica(&replicas), Some(("10.0.0.2".into(), 6381)));
        let others = Value::Array(vec![
            Value::Array(
                ["ip", "10.0.0.9", "port", "26380", "flags", "sentinel"]
                    .map(bulk)
                    .to_vec(),
            ),
            Value::Array(
                [
                    "ip",
                    "10.0.0.8",
                    "port",
                    "26381",
                    "flags",
                    "sentinel,disconnected",
                ]
                .map(bulk)
                .to_vec(),
            ),
        ]);
        assert_eq!(sentinels(&others), vec![("10.0.0.9".to_owned(), 26380)]);
        assert_eq!(
            role_of(&Value::Array(vec![bulk("slave"), bulk("h")])),
            Some("slave".into())
        );
    }
}
