//! Opening a link: the socket (TCP, unix, TLS), the handshake (AUTH, SELECT, CLIENT SETNAME or
//! a PING as the ready check), all within one `connectTimeout`.

use std::sync::atomic::{AtomicBool, Ordering};

use redis::{AsyncConnectionConfig, Value};

use super::link::{Backend, Fed, Link};
use super::slots::{Opener, Slots};
use super::{Inner, Target};
use crate::config::{Addr, ConnectionConfig, TlsConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Io, Pipe};

/// The room of redis-rs's queue into a TLS socket: more commands than could ever be in flight.
const PIPELINE_BUFFER: usize = 1 << 28;

/// Why an attempt failed, and whether the server had been reached (the socket was up): a
/// server that answers garbage, or nothing, fails the commands waiting for it at once, while
/// one that cannot be reached leaves them waiting for the next attempt (`maxRetriesPerRequest`).
pub(super) struct Failed {
    pub(super) error: Error,
    pub(super) reached: bool,
    /// With Sentinel: no sentinel gave an address (`sentinelRetryStrategy` paces the next).
    pub(super) at_sentinels: bool,
}

/// One connection attempt, bounded by `connectTimeout` as a whole (TCP, TLS, AUTH, SELECT, the
/// ready check). `on_lost` is called when a pipe made by it dies.
pub(super) async fn connect(
    inner: &Inner,
    on_lost: impl FnOnce() + Send + 'static,
) -> std::result::Result<Link, Failed> {
    // With Sentinel, where the server is: asked before the attempt, each sentinel within its
    // own bounds (see `crate::sentinel`).
    let resolved = match &inner.target {
        Target::Single {
            sentinel: Some(sentinels),
            ..
        } => match sentinels.resolve().await {
            Ok((host, port)) => Some(ConnectionConfig {
                addr: Addr::Tcp { host, port },
                ..inner.config.clone()
            }),
            Err(error) => {
                return Err(Failed {
                    error,
                    reached: false,
                    at_sentinels: true,
                })
            }
        },
        _ => None,
    };
    let reached = AtomicBool::new(false);
    // The server is not in the role asked for (a failover under way): try again later.
    let wrong_role = AtomicBool::new(false);
    let attempt = async {
        let link = match (&inner.target, &resolved) {
            (Target::Single { sentinel, .. }, Some(config)) => {
                let client = crate::settings::build_client(config)?;
                let link = open(
                    inner,
                    config,
                    &client,
                    &async_config(config),
                    &reached,
                    on_lost,
                )
                .await?;
                if let Some(sentinels) = sentinel {
                    check_role(inner, &link, config, sentinels.role(), &wrong_role).await?;
                }
                link
            }
            (
                Target::Single {
                    client,
                    async_config,
                    ..
                },
                None,
            ) => {
                open(
                    inner,
                    &inner.config,
                    client,
                    async_config,
                    &reached,
                    on_lost,
                )
                .await?
            }
            (Target::Cluster(target), _) => {
                let conn = target.connect(&inner.addr).await?;
                inner.tell_node_changes();
                let backend = Backend::Cluster {
                    conn: conn.clone(),
                    retries: target.max_redirections,
                    delay: target.retry_delay,
                    by_slot: target.reads_from_masters(),
                };
                let fed = Fed::new(backend, &inner.runtime);
                match target.direct_lane() {
                    // Our own pipes to the masters, where they can do what redis-rs does:
                    // plain TCP, names resolved by the system, every command to a master.
                    Some(nat) => {
                        let opener = Opener {
                            config: inner.config.clone(),
                            nat,
                            every: target.retry_delay.max(std::time::Duration::from_millis(10)),
                            runtime: inner.runtime.clone(),
                        };
                        Link::Slots(Slots::open(fed, conn, opener))
                    }
                    None => Link::Fed(fed),
                }
            }
        };
        reached.store(true, Ordering::Relaxed);
        // A database chosen by `select()` since the connection was made.
        let db = inner.db.load(Ordering::Acquire);
        if db != inner.config.db {
            let text = db.to_string();
            let selected = link
                .send_now(crate::resp::encode(&[b"select", text.as_bytes()]))
                .await;
            let failed = match selected {
                Ok(Value::ServerError(err)) => Some(Error::from_redis(&err.into(), &inner.addr)),
                Err(err) => Some(Error::from_redis(&err, &inner.addr)),
                Ok(_) => None,
            };
            if let Some(err) = failed {
                link.close();
                return Err(err);
            }
        }
        // One round trip before the link counts as connected, so that a server that accepts and
        // never answers is caught by connectTimeout instead of hanging the first command.
        let hello = match &inner.config.connection_name {
            Some(name) => crate::resp::encode(&[b"client", b"setname", name.as_bytes()]),
            None => crate::resp::encode(&[b"ping"]),
        };
        let answer = link.send_now(hello).await;
        let answer = match answer {
            Ok(Value::ServerError(err)) => Err(Error::from_redis(&err.into(), &inner.addr)),
            Err(err) => Err(Error::from_redis(&err, &inner.addr)),
            Ok(_) => Ok(()),
        };
        if let Err(err) = answer {
            link.close();
            return Err(err);
        }
        Ok(link)
    };
    let outcome = match inner.config.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| {
                let stage = if reached.load(Ordering::Relaxed) {
                    "the server accepted the connection but did not answer"
                } else {
                    "timed out"
                };
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {}: {stage} within {} ms (connectTimeout)",
                        inner.addr,
                        limit.as_millis()
                    ),
                ))
            }),
        None => attempt.await,
    };
    outcome.map_err(|error| Failed {
        error,
        reached: reached.load(Ordering::Relaxed) && !wrong_role.load(Ordering::Relaxed),
        at_sentinels: false,
    })
}

/// With Sentinel: the server must be in the role asked for (`ROLE`), as ioredis checks it
/// before it is ready; a server that is not (demoted, or not yet promoted) fails the attempt.
async fn check_role(
    inner: &Inner,
    link: &Link,
    config: &ConnectionConfig,
    wanted: crate::config::SentinelRole,
    wrong_role: &AtomicBool,
) -> Result<()> {
    let reply = link.send_now(crate::resp::encode(&[b"role"])).await;
    let role = match reply {
        Err(err) => {
            link.close();
            return Err(Error::from_redis(&err, &inner.addr));
        }
        // A server that does not say (ROLE refused to this ACL user): taken as it is, as ioredis
        // takes a ready check without a role.
        Ok(Value::ServerError(_)) => return Ok(()),
        Ok(value) => match crate::sentinel::role_of(&value) {
            Some(role) => role,
            None => return Ok(()),
        },
    };
    let want = match wanted {
        crate::config::SentinelRole::Master => "master",
        crate::config::SentinelRole::Replica => "slave",
    };
    if role == want {
        return Ok(());
    }
    link.close();
    wrong_role.store(true, Ordering::Relaxed);
    Err(Error::new(
        ErrorKind::Connection,
        format!(
            "{}: the sentinels named {} as the {want}, but it says it is a {role} (a failover may be under way)",
            inner.addr, config.addr
        ),
    ))
}

/// Opens a link to one server (TCP or unix socket, TLS, AUTH, SELECT). Plain TCP and unix
/// sockets get our [`Pipe`], whose driver is watched: when the server goes away the connection
/// starts reconnecting at once (`on_lost`), before any command fails. Over TLS redis-rs makes the
/// socket, and a lost server is noticed by the next command.
async fn open(
    inner: &Inner,
    config: &ConnectionConfig,
    client: &redis::Client,
    async_config: &AsyncConnectionConfig,
    reached: &AtomicBool,
    on_lost: impl FnOnce() + Send + 'static,
) -> Result<Link> {
    let io_error = |e: std::io::Error| Error::from_redis(&redis::RedisError::from(e), &inner.addr);
    let io = match (&config.addr, &config.tls) {
        (Addr::Tcp { host, port }, None) => {
            Io::Tcp(tcp(config, host, *port).await.map_err(io_error)?)
        }
        #[cfg(unix)]
        (Addr::Unix(path), _) => Io::Unix(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(io_error)?,
        ),
        _ => {
            // redis-rs connects and runs AUTH and SELECT in one go.
            return client
                .get_multiplexed_async_connection_with_config(async_config)
                .await
                .map(|conn| Link::Fed(Fed::new(Backend::Single(conn), &inner.runtime)))
                .map_err(|e| connect_error(&e, inner));
        }
    };
    reached.store(true, Ordering::Relaxed);
    let (pipe, driver) = Pipe::new(io).map_err(io_error)?;
    inner.runtime.spawn(async move {
        driver.await;
        on_lost();
    });
    if let Err(err) = handshake(config, &inner.addr, &pipe).await {
        pipe.close();
        return Err(err);
    }
    Ok(Link::Pipe(pipe))
}

/// A TCP socket to `host:port` with the socket options of `config` (`noDelay`, `keepAlive`).
pub(crate) async fn tcp(
    config: &ConnectionConfig,
    host: &str,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(config.no_delay)?;
    if let Some(delay) = config.keep_alive {
        let keepalive = redis::io::tcp::socket2::TcpKeepalive::new().with_time(delay);
        redis::io::tcp::socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    }
    Ok(stream)
}

/// AUTH and SELECT on a new pipe, as configured. The handshake's command names are in lower
/// case, as ioredis sends them (Redis takes either; servers that stand in for Redis in tests,
/// ioredis's own among them, may compare them as sent).
pub(crate) async fn handshake(config: &ConnectionConfig, addr: &str, pipe: &Pipe) -> Result<()> {
    let send = |cmd: Vec<u8>| async move {
        match pipe.send(cmd).await {
            Ok(Value::ServerError(err)) => Err(redis::RedisError::from(err)),
            other => other,
        }
    };
    if let Some(password) = &config.password {
        let mut args: Vec<&[u8]> = vec![b"auth"];
        if let Some(user) = &config.username {
            args.push(user.as_bytes());
        }
        args.push(password.0.as_bytes());
        match send(crate::resp::encode(&args)).await {
            Ok(_) => {}
            // A password given to a server that needs none: ioredis goes on (with a warning).
            Err(err)
                if config.username.is_none()
                    && err.detail().is_some_and(|d| {
                        d.contains("without any password configured")
                            || d.contains("no password is set")
                    }) => {}
            Err(err) => return Err(Error::from_redis(&err, addr)),
        }
    }
    if config.db != 0 {
        let db = config.db.to_string();
        send(crate::resp::encode(&[b"select", db.as_bytes()]))
            .await
            .map_err(|e| Error::from_redis(&e, addr))?;
    }
    if let Some(name) = &config.client_info {
        // As ioredis: the library's name and version for CLIENT LIST (Redis >= 7.2); an older
        // server's error is no failure, so their replies are not waited for. They go out with
        // the ready check that follows (one round trip), whose reply comes after theirs: a
        // socket that fails meanwhile fails that check.
        for (field, value) in [
            (&b"LIB-NAME"[..], name.as_bytes()),
            (&b"LIB-VER"[..], env!("CARGO_PKG_VERSION").as_bytes()),
        ] {
            let (ignored, _) = tokio::sync::oneshot::channel();
            let packed = crate::resp::encode(&[b"client", b"setinfo", field, value]);
            pipe.submit(Box::new(crate::pipe::Oneshot::new(packed, ignored)));
        }
    }
    Ok(())
}

/// Resolves the TLS `servername` to the addresses of the configured `host`, so that the
/// certificate is verified against the one name while the socket goes to the other (as Node's
/// `tls.connect({ host, servername })` does).
struct ServernameResolver {
    servername: String,
    host: String,
}

impl redis::io::AsyncDNSResolver for ServernameResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        let target = if host == self.servername {
            self.host.as_str()
        } else {
            host
        };
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((target, port)).await?;
            Ok(Box::new(addrs) as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

/// A failed connection attempt; with TLS, an I/O failure that is not a refusal is most often the
/// handshake (an untrusted certificate, a name mismatch, a server without TLS), so say so.
fn connect_error(err: &redis::RedisError, inner: &Inner) -> Error {
    let mapped = Error::from_redis(err, &inner.addr);
    if inner.config.tls.is_some() && err.is_io_error() && !err.is_connection_refusal() {
        return Error::new(
            ErrorKind::Connection,
            format!(
                "TLS connection to {} failed: the handshake did not complete (is the server's certificate trusted by `tls.ca`, and is TLS enabled on that port?)",
                inner.addr
            ),
        );
    }
    mapped
}

/// redis-rs's connection settings: timeouts, and the resolver that makes `tls.servername` work.
pub(crate) fn async_config(config: &ConnectionConfig) -> AsyncConnectionConfig {
    let mut async_config = AsyncConnectionConfig::new()
        .set_connection_timeout(config.connect_timeout)
        // commandTimeout is the connection's own timer (from the call, not from the write).
        .set_response_timeout(None)
        // Never full: a command waiting for room could be overtaken by a later one that finds
        // room, and call order is lost (see `link`).
        .set_pipeline_buffer_size(PIPELINE_BUFFER);
    if let (
        Addr::Tcp { host, .. },
        Some(TlsConfig {
            servername: Some(name),
            ..
        }),
    ) = (&config.addr, &config.tls)
    {
        async_config = async_config.set_dns_resolver(ServernameResolver {
            servername: name.clone(),
            host: host.clone(),
        });
    }
    async_config
}
