//! `NativeClient`: a connection JavaScript can send any command on (the face of `RedisClient`).

use napi::bindgen_prelude::{Buffer, Either, Env, Function, Promise, Unknown};
use napi_derive::napi;

use super::bridge::{self, Outcome};
use super::error::throw;
use crate::config::BackendConfig;
use crate::connection::{default_retry_strategy, Connection, Event};
use crate::monitor::Monitor;
use crate::pubsub::{Kind, Message, OnMessage, Subscriber};
use crate::resp;
use crate::retry::default_cluster_retry_strategy;
use std::sync::{Arc, Mutex, OnceLock};

/// An event of the connection, for `RedisClient`'s EventEmitter.
#[napi(object)]
pub struct ClientEvent {
    /// ioredis's event name.
    pub name: String,
    /// For `error`: the error's code and message.
    pub code: Option<String>,
    pub message: Option<String>,
    /// For `reconnecting`: the delay before the next attempt, in ms.
    pub delay: Option<f64>,
    /// For `+node` and `-node`: the node.
    pub node: Option<NodeInfo>,
}

impl From<Event> for ClientEvent {
    fn from(event: Event) -> Self {
        let node_info = |n: crate::cluster::ClusterNode| NodeInfo {
            host: n.host,
            port: u32::from(n.port),
            role: if n.master { "master" } else { "slave" }.to_owned(),
        };
        let (name, error, delay, node) = match event {
            Event::Connect => ("connect", None, None, None),
            Event::Ready => ("ready", None, None, None),
            Event::Error(e) => ("error", Some(e), None, None),
            Event::Close => ("close", None, None, None),
            Event::Reconnecting(d) => ("reconnecting", None, Some(d.as_secs_f64() * 1000.0), None),
            Event::End => ("end", None, None, None),
            Event::Connecting => ("connecting", None, None, None),
            Event::NodeAdded(n) => ("+node", None, None, Some(node_info(n))),
            Event::NodeRemoved(n) => ("-node", None, None, Some(node_info(n))),
        };
        ClientEvent {
            name: name.to_owned(),
            code: error.as_ref().map(|e| e.code().to_owned()),
            message: error.map(|e| e.message().to_owned()),
            delay,
            node,
        }
    }
}

/// A client's server address (see `NativeClient.server`).
#[napi(object)]
pub struct ServerAddress {
    /// Host, or the unix socket path.
    pub address: String,
    /// Port, for TCP.
    pub port: Option<u32>,
}

/// A node of a cluster, as `client.nodes()` gives it.
#[napi(object)]
pub struct NodeInfo {
    pub host: String,
    pub port: u32,
    /// `'master'` or `'slave'`, as ioredis names them.
    pub role: String,
}

/// Opens the connection `config` describes, with the user's retry strategy (`retryStrategy`,
/// or `clusterRetryStrategy` for a cluster) or ioredis's default for the kind.
pub(crate) fn open(
    env: &Env,
    config: &BackendConfig,
    retry_strategy: Option<Function<'_, u32, Option<f64>>>,
    dns_lookup: Option<Function<'_, String, Promise<String>>>,
    sentinel_hooks: Option<Function<'_, String, Option<String>>>,
) -> napi::Result<Connection> {
    let opened = match config {
        BackendConfig::Standalone(c) => {
            let retry = super::retry::from_js(retry_strategy, default_retry_strategy)?;
            let mut c = c.clone();
            if let Some(sentinel) = c.sentinel.as_deref_mut() {
                super::retry::sentinel_hooks(sentinel_hooks, sentinel)?;
            }
            Connection::hosted(c, retry, runtime(), bridge::JsHost::shared())
        }
        BackendConfig::Cluster(c) => {
            let retry = super::retry::from_js(retry_strategy, default_cluster_retry_strategy)?;
            let resolver = match dns_lookup {
                Some(lookup) => Some(JsResolver::shared(lookup)?),
                None => None,
            };
            Connection::new_cluster_resolving(
                c,
                retry,
                runtime(),
                bridge::JsHost::shared(),
                resolver,
            )
        }
    };
    opened.map_err(|e| throw(env, &e))
}

type LookupFn = napi::threadsafe_function::ThreadsafeFunction<
    String,
    Promise<String>,
    String,
    napi::Status,
    false,
    true,
>;

/// ioredis's `dnsLookup` for a cluster's node host names: the JavaScript face turns the user's
/// `(hostname, callback)` into `hostname => Promise<address>`, called on the JavaScript thread.
struct JsResolver(LookupFn);

impl JsResolver {
    fn shared(
        lookup: Function<'_, String, Promise<String>>,
    ) -> napi::Result<crate::cluster::Resolver> {
        let tsfn = lookup
            .build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        Ok(Arc::new(JsResolver(tsfn)))
    }
}

impl redis::io::AsyncDNSResolver for JsResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let failed = |why: String| {
                redis::RedisError::from(std::io::Error::other(format!(
                    "dnsLookup({host:?}) failed: {why}"
                )))
            };
            let promise = self
                .0
                .call_async(host.to_owned())
                .await
                .map_err(|e| failed(e.reason.clone()))?;
            let address = promise.await.map_err(|e| failed(e.reason.clone()))?;
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((address, port)).await?.collect();
            Ok(Box::new(addrs.into_iter())
                as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

/// A message of a subscription, for `RedisClient`'s `message`/`pmessage`/`smessage` events.
#[napi(object)]
pub struct PubSubMessage {
    /// `'message'`, `'pmessage'` or `'smessage'`: the event it is.
    pub event: String,
    /// The pattern that matched (`pmessage`).
    pub pattern: Option<Buffer>,
    pub channel: Buffer,
    pub message: Buffer,
}

/// A reconnecting connection to one Redis server.
#[napi]
pub struct NativeClient {
    pub(crate) conn: Connection,
    /// Subscriptions, on a connection of their own, made on the first one.
    pub(crate) subscriber: OnceLock<Subscriber>,
    /// Where messages go (set by `onMessage`).
    pub(crate) on_message: Arc<Mutex<Option<OnMessage>>>,
    /// WATCH state, on a connection of its own (see `watch`).
    pub(crate) watch: Arc<Mutex<Watch>>,
}

/// The client's `WATCH`es: they live on a connection of their own (made on the first `watch()`,
/// closed with the client), since the shared one carries everybody's commands. While keys are
/// watched, `multi().exec()` runs there, and only on the link the `WATCH` went on: if that link
/// was lost, the server forgot the watched keys, and the transaction fails with
/// `ERR_CONNECTION` instead of running unwatched. `EXEC` (run or aborted) and `UNWATCH` end the
/// watch, as in Redis.
#[derive(Default)]
pub(crate) struct Watch {
    conn: Option<Connection>,
    /// The link the `WATCH`es went on, while keys are watched (a lost link stays named here,
    /// so that the next `EXEC` fails instead of running unwatched).
    on: Option<u64>,
}

/// Sends `WATCH`/`UNWATCH` (`bytes`) on the watch connection, on the link `on` when given (else
/// the live one, once connected); resolves the reply and that link's generation.
async fn watch_command(
    conn: Connection,
    bytes: Vec<u8>,
    on: Option<u64>,
) -> crate::error::Result<(redis::Value, u64)> {
    conn.connect().await?;
    let Some(generation) = on.or_else(|| conn.link_generation()) else {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Connection,
            "the watch connection was lost before WATCH could be sent",
        ));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = move |reply: crate::error::Result<redis::Value>| {
        let _ = tx.send(reply);
    };
    if let Some(pipe) = conn.submit_all_on(vec![(bytes, done)], Some(generation)) {
        pipe.flush();
    }
    let reply = rx.await.unwrap_or_else(|_| {
        Err(crate::error::Error::new(
            crate::error::ErrorKind::Closed,
            "the connection is closed",
        ))
    })?;
    Ok((reply, generation))
}

impl NativeClient {
    pub(crate) fn over(conn: Connection) -> NativeClient {
        NativeClient {
            conn,
            subscriber: OnceLock::new(),
            on_message: Arc::default(),
            watch: Arc::default(),
        }
    }

    fn subscriber(&self) -> Subscriber {
        self.subscriber
            .get_or_init(|| {
                let sink = self.on_message.clone();
                Subscriber::new(
                    self.conn.clone(),
                    Arc::new(move |m| {
                        let listener = sink.lock().expect("listener").clone();
                        if let Some(listener) = listener {
                            listener(m);
                        }
                    }),
                )
            })
            .clone()
    }
}

fn pubsub_kind(kind: &str) -> Kind {
    match kind {
        "pattern" => Kind::Pattern,
        "shard" => Kind::Shard,
        _ => Kind::Channel,
    }
}

fn bytes_of(args: Vec<Either<String, Buffer>>) -> Vec<Vec<u8>> {
    args.into_iter()
        .map(|a| match a {
            Either::A(s) => s.into_bytes(),
            Either::B(b) => b.to_vec(),
        })
        .collect()
}

/// The tokio runtime napi-rs runs futures on.
pub(crate) fn runtime() -> tokio::runtime::Handle {
    napi::bindgen_prelude::within_runtime_if_available(tokio::runtime::Handle::current)
}

#[napi]
impl NativeClient {
    /// Connects with ioredis options given as JSON (see `config`): RedisOptions, or
    /// `{ nodes, options }` for a cluster.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        options_json: String,
        retry_strategy: Option<Function<'_, u32, Option<f64>>>,
        dns_lookup: Option<Function<'_, String, Promise<String>>>,
        sentinel_hooks: Option<Function<'_, String, Option<String>>>,
    ) -> napi::Result<Self> {
        let config = BackendConfig::from_json(&options_json).map_err(|e| throw(&env, &e))?;
        Ok(NativeClient::over(open(
            &env,
            &config,
            retry_strategy,
            dns_lookup,
            sentinel_hooks,
        )?))
    }

    /// Calls `listener` with each message of the client's subscriptions, on the JavaScript
    /// thread, in order (replacing an earlier listener).
    #[napi(ts_args_type = "listener: (message: PubSubMessage) => void")]
    pub fn on_message(&self, listener: Function<'_, PubSubMessage, ()>) -> napi::Result<()> {
        let tsfn = listener
            .build_threadsafe_function::<PubSubMessage>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let deliver: OnMessage = Arc::new(move |m: Message| {
            let event = match m.kind {
                Kind::Channel => "message",
                Kind::Pattern => "pmessage",
                Kind::Shard => "smessage",
            };
            let _ = tsfn.call(
                PubSubMessage {
                    event: event.to_owned(),
                    pattern: m.pattern.map(Buffer::from),
                    channel: Buffer::from(m.channel),
                    message: Buffer::from(m.payload),
                },
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        *self.on_message.lock().expect("listener") = Some(deliver);
        Ok(())
    }

    /// Subscribes (`kind`: 'channel', 'pattern' or 'shard') on the client's subscriber
    /// connection; resolves how many subscriptions the client has, as Redis counts them.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn subscribe<'env>(
        &self,
        env: &'env Env,
        kind: String,
        names: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        let sub = self.subscriber();
        let names = bytes_of(names);
        bridge::promise(env, async move {
            match sub.subscribe(pubsub_kind(&kind), names).await {
                Ok(n) => Outcome::Reply(redis::Value::Int(n as i64)),
                Err(e) => Outcome::Error(e),
            }
        })
    }

    /// Unsubscribes (all of the kind when `names` is empty); resolves how many are left.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn unsubscribe<'env>(
        &self,
        env: &'env Env,
        kind: String,
        names: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        let Some(sub) = self.subscriber.get().cloned() else {
            return bridge::promise(env, async { Outcome::Reply(redis::Value::Int(0)) });
        };
        let names = bytes_of(names);
        bridge::promise(env, async move {
            match sub.unsubscribe(pubsub_kind(&kind), names).await {
                Ok(n) => Outcome::Reply(redis::Value::Int(n as i64)),
                Err(e) => Outcome::Error(e),
            }
        })
    }

    /// Ends the subscriptions and their connection (quit, disconnect, the adapter's close).
    #[napi]
    pub fn close_subscriber(&self) {
        if let Some(sub) = self.subscriber.get().cloned() {
            runtime().spawn(async move { sub.close().await });
        }
    }

    /// Calls `listener` with each event of the connection (`connect`, `ready`, `error`,
    /// `close`, `reconnecting`, `end`), on the JavaScript thread, in order. The listener does
    /// not keep Node alive.
    #[napi(ts_args_type = "listener: (event: ClientEvent) => void")]
    pub fn on_event(&self, listener: Function<'_, ClientEvent, ()>) -> napi::Result<()> {
        let tsfn = listener
            .build_threadsafe_function::<ClientEvent>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let mut events = self.conn.events();
        runtime().spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let end = matches!(event, Event::End);
                let status = tsfn.call(
                    ClientEvent::from(event),
                    napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
                );
                if end || status != napi::Status::Ok {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Connects a `lazyConnect` client (or waits for the connection under way); resolves once
    /// it is ready, rejects with the first attempt's error.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn connect<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let conn = self.conn.clone();
        bridge::promise(env, async move { conn.connect().await.into() })
    }

    /// True for a cluster client.
    #[napi(getter)]
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// A cluster's nodes as last read (`role`: 'master', 'slave' or 'all'); empty before the
    /// first connection and for one server.
    #[napi]
    pub fn nodes(&self, role: Option<String>) -> Vec<NodeInfo> {
        let want = role.as_deref().unwrap_or("all");
        self.conn
            .cluster_nodes()
            .into_iter()
            .filter(|n| match want {
                "master" => n.master,
                "slave" => !n.master,
                _ => true,
            })
            .map(|n| NodeInfo {
                host: n.host,
                port: u32::from(n.port),
                role: if n.master { "master" } else { "slave" }.to_owned(),
            })
            .collect()
    }

    /// Sends `command` with `args` and resolves its reply, its strings as Buffers.
    #[napi]
    pub fn call_buffer<'env>(
        &self,
        env: &'env Env,
        command: String,
        args: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        self.send(env, &command, &args, Outcome::ReplyBuffers)
    }

    /// Sends `command` with `args` and resolves its reply.
    #[napi]
    pub fn call<'env>(
        &self,
        env: &'env Env,
        command: String,
        args: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        self.send(env, &command, &args, Outcome::Reply)
    }
}

impl NativeClient {
    fn send<'env>(
        &self,
        env: &'env Env,
        command: &str,
        args: &[Either<String, Buffer>],
        convert: fn(redis::Value) -> Outcome,
    ) -> napi::Result<Unknown<'env>> {
        let first = args.first().map(|a| match a {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => &b[..],
        });
        if let Err(e) = crate::command::check(command, first) {
            return bridge::promise(env, async move { Outcome::Error(e) });
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        parts.push(command.as_bytes());
        parts.extend(args.iter().map(|a| match a {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => &b[..],
        }));
        if crate::command::is_blocking(command, &parts[1..]) {
            // On a connection of its own, so that it never stalls the shared one.
            return match self.conn.side() {
                Ok(side) => bridge::submit(env, &side, resp::encode(&parts), convert),
                Err(e) => bridge::promise(env, async move { Outcome::Error(e) }),
            };
        }
        bridge::submit(env, &self.conn, resp::encode(&parts), convert)
    }
}

#[napi]
impl NativeClient {
    /// Sends `commands` (each `[name, ...args]`) together, with nothing of anybody else's
    /// between them, and resolves `[[error, null] | [null, reply], ...]` in order: what
    /// `pipeline().exec()` and, wrapped in `MULTI` .. `EXEC`, `multi().exec()` are made of. On a
    /// cluster a batch must stay on one node: every command names keys of one slot.
    #[napi(ts_return_type = "Promise<Array<[Error | null, unknown]>>")]
    pub fn batch<'env>(
        &self,
        env: &'env Env,
        commands: Vec<Vec<Either<String, Buffer>>>,
        transaction: bool,
        buffers: Option<Vec<bool>>,
    ) -> napi::Result<Unknown<'env>> {
        // Which replies come as Buffers: each command's, or, in a transaction, each element of
        // the EXEC reply (MULTI's and the QUEUED replies never).
        let flags = buffers.unwrap_or_default();
        let shape = if transaction {
            bridge::Shape {
                buffers: Vec::new(),
                exec: Some(flags),
            }
        } else {
            bridge::Shape {
                buffers: flags,
                exec: None,
            }
        };
        let mut packed = Vec::with_capacity(commands.len() + 2);
        if transaction {
            packed.push(resp::encode(&[b"MULTI"]));
        }
        for command in &commands {
            let parts: Vec<&[u8]> = command
                .iter()
                .map(|a| match a {
                    Either::A(s) => s.as_bytes(),
                    Either::B(b) => &b[..],
                })
                .collect();
            let Some((name, rest)) = parts.split_first() else {
                let e = crate::error::Error::invalid_argument("a command of the batch is empty");
                return bridge::promise(env, async move { Outcome::Error(e) });
            };
            let name = String::from_utf8_lossy(name);
            if let Err(e) = crate::command::check(&name, rest.first().copied()) {
                return bridge::promise(env, async move { Outcome::Error(e) });
            }
            if crate::command::is_blocking(&name, rest) {
                let e = crate::error::Error::invalid_argument(format!(
                    "{} in a pipeline would stall the shared connection; send it on its own (it then runs on a connection of its own)",
                    name.to_ascii_uppercase()
                ));
                return bridge::promise(env, async move { Outcome::Error(e) });
            }
            packed.push(resp::encode(&parts));
        }
        if transaction {
            packed.push(resp::encode(&[b"EXEC"]));
            if self.conn.is_cluster() {
                // One node runs it: every key of it in one slot (as ioredis's Cluster asks).
                let mut slots = packed
                    .iter()
                    .filter_map(|c| crate::cluster::command_slot(c));
                let Some(slot) = slots.next() else {
                    let e = crate::error::Error::invalid_argument(
                        "multi() on a cluster needs a key, to know the node that runs it",
                    );
                    return bridge::promise(env, async move { Outcome::Error(e) });
                };
                if let Some(other) = slots.find(|s| *s != slot) {
                    let e = crate::error::Error::invalid_argument(format!(
                        "multi() on a cluster runs on one node: its keys must be in one slot, but they are in slots {slot} and {other} (put them under one hash tag, e.g. {{user1}}:a and {{user1}}:b)"
                    ));
                    return bridge::promise(env, async move { Outcome::Error(e) });
                }
                let count = packed.len();
                return bridge::submit_transaction(env, &self.conn, packed.concat(), count, shape);
            }
        }
        if transaction {
            let mut watch = self.watch.lock().expect("watch");
            if let (Some(conn), Some(on)) = (watch.conn.clone(), watch.on.take()) {
                // EXEC ends the watch, whatever comes of it.
                drop(watch);
                return bridge::submit_all(env, &conn, packed, Some(on), shape);
            }
        }
        bridge::submit_all(env, &self.conn, packed, None, shape)
    }

    /// `WATCH keys` on the client's watch connection (see [`Watch`]); resolves `'OK'`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn watch<'env>(
        &self,
        env: &'env Env,
        keys: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        if self.conn.is_cluster() {
            let e = crate::error::Error::invalid_argument(
                "watch() on a cluster is not supported yet (nor is multi()): use EVAL with a script",
            );
            return bridge::promise(env, async move { Outcome::Error(e) });
        }
        if keys.is_empty() {
            let e = crate::error::Error::invalid_argument("watch() needs at least one key");
            return bridge::promise(env, async move { Outcome::Error(e) });
        }
        let (conn, on) = {
            let mut watch = self.watch.lock().expect("watch");
            let conn = match &watch.conn {
                Some(conn) => conn.clone(),
                None => match self.conn.twin() {
                    Ok(conn) => {
                        watch.conn = Some(conn.clone());
                        conn
                    }
                    Err(e) => return bridge::promise(env, async move { Outcome::Error(e) }),
                },
            };
            if watch.on.is_some() && watch.on != conn.link_generation() {
                // Keys watched before were forgotten with their connection: say so once (and
                // start over), rather than watch the new keys alone.
                watch.on = None;
                let e = crate::error::Error::new(
                    crate::error::ErrorKind::Connection,
                    "the connection that held the earlier WATCH was lost (and made again): the server forgot those keys; WATCH them again",
                );
                return bridge::promise(env, async move { Outcome::Error(e) });
            }
            (conn, watch.on)
        };
        let mut parts: Vec<&[u8]> = vec![b"WATCH"];
        parts.extend(keys.iter().map(|a| match a {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => &b[..],
        }));
        let bytes = resp::encode(&parts);
        let state = self.watch.clone();
        bridge::promise(env, async move {
            match watch_command(conn, bytes, on).await {
                Ok((reply, generation)) => {
                    if !matches!(reply, redis::Value::ServerError(_)) {
                        state.lock().expect("watch").on = Some(generation);
                    }
                    Outcome::Reply(reply)
                }
                Err(e) => {
                    if e.kind() == crate::error::ErrorKind::Connection {
                        // The link went, and the earlier watches with it: this error tells it.
                        state.lock().expect("watch").on = None;
                    }
                    Outcome::Error(e)
                }
            }
        })
    }

    /// `SELECT db` on this client's connection (see `Connection::select`), and on its watch
    /// connection; resolves `'OK'`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn select<'env>(&self, env: &'env Env, db: i64) -> napi::Result<Unknown<'env>> {
        let conn = self.conn.clone();
        let watch = self.watch.lock().expect("watch").conn.clone();
        bridge::promise(env, async move {
            match conn.select(db).await {
                Ok(reply) => {
                    if let Some(watch) = watch {
                        let _ = watch.select(db).await;
                    }
                    Outcome::Reply(reply)
                }
                Err(e) => Outcome::Error(e),
            }
        })
    }

    /// `UNWATCH`: forgets every watched key; resolves `'OK'`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn unwatch<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let (conn, on) = {
            let mut watch = self.watch.lock().expect("watch");
            (watch.conn.clone(), watch.on.take())
        };
        match (conn, on) {
            (Some(conn), Some(on)) => bridge::promise(env, async move {
                match watch_command(conn, resp::encode(&[b"UNWATCH"]), Some(on)).await {
                    Ok((reply, _)) => Outcome::Reply(reply),
                    // The link that held the watch is gone: so is the watch.
                    Err(e) if e.kind() == crate::error::ErrorKind::Connection => {
                        Outcome::Str(b"OK".to_vec())
                    }
                    Err(e) => Outcome::Error(e),
                }
            }),
            _ => bridge::promise(env, async { Outcome::Str(b"OK".to_vec()) }),
        }
    }

    /// Where the commands go, as ioredis's traces name it: the server (or a cluster's first
    /// startup node) and, for TCP, its port.
    #[napi(getter)]
    pub fn server(&self) -> ServerAddress {
        let first = self.conn.given_nodes().into_iter().next();
        match first {
            Some(crate::config::Addr::Tcp { host, port }) => ServerAddress {
                address: host,
                port: Some(u32::from(port)),
            },
            Some(crate::config::Addr::Unix(path)) => ServerAddress {
                address: path.display().to_string(),
                port: None,
            },
            None => ServerAddress {
                address: String::new(),
                port: None,
            },
        }
    }

    /// The database selected: the `db` option, or the last `select()`.
    #[napi(getter)]
    pub fn db(&self) -> i64 {
        self.conn.db()
    }

    /// ioredis's status name.
    #[napi(getter)]
    pub fn status(&self) -> &'static str {
        self.conn.status().as_str()
    }

    /// Sends QUIT and closes; resolves `'OK'`.
    #[napi]
    pub fn quit<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let conn = self.conn.clone();
        // Commands issued after quit() are refused; those issued before finish first.
        conn.begin_quit();
        let sub = self.subscriber.get().cloned();
        let watch = self.watch.lock().expect("watch").conn.take();
        bridge::promise(env, async move {
            if let Some(sub) = sub {
                sub.close().await;
            }
            if let Some(watch) = watch {
                watch.disconnect();
            }
            conn.quit().await;
            Outcome::Str(b"OK".to_vec())
        })
    }

    /// Gives up the live link and makes a new one (`reconnectOnError`).
    #[napi]
    pub fn reconnect(&self) {
        self.conn.reconnect();
    }

    /// Closes at once.
    #[napi]
    pub fn disconnect(&self) {
        self.close_subscriber();
        if let Some(watch) = self.watch.lock().expect("watch").conn.take() {
            watch.disconnect();
        }
        self.conn.disconnect();
    }
}

/// A `MONITOR` connection (see `crate::monitor`), made by `NativeClient.monitor`.
#[napi]
pub struct NativeMonitor {
    starting: Mutex<Option<tokio::task::JoinHandle<crate::error::Result<Monitor>>>>,
    running: Arc<Mutex<Option<Monitor>>>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

#[napi]
impl NativeMonitor {
    /// Resolves once the server confirmed `MONITOR`; rejects with the connection's error.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn started<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let starting = self.starting.lock().expect("monitor").take();
        let running = self.running.clone();
        let stopped = self.stopped.clone();
        bridge::promise(env, async move {
            let Some(starting) = starting else {
                return Outcome::Undefined;
            };
            match starting.await {
                Ok(Ok(monitor)) => {
                    if stopped.load(std::sync::atomic::Ordering::Acquire) {
                        monitor.stop();
                    } else {
                        *running.lock().expect("monitor") = Some(monitor);
                    }
                    Outcome::Undefined
                }
                Ok(Err(e)) => Outcome::Error(e),
                Err(_) => Outcome::Error(crate::error::Error::new(
                    crate::error::ErrorKind::Internal,
                    "the monitor task ended unexpectedly",
                )),
            }
        })
    }

    /// Ends the monitor and its connection.
    #[napi]
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(monitor) = self.running.lock().expect("monitor").take() {
            monitor.stop();
        }
    }
}

#[napi]
impl NativeClient {
    /// Opens a `MONITOR` connection with this client's settings; `listener` gets each line,
    /// then `null` when it ends. Await `started()` on the result.
    #[napi(ts_args_type = "listener: (line: string | null) => void")]
    pub fn monitor(
        &self,
        listener: Function<'_, Option<String>, ()>,
    ) -> napi::Result<NativeMonitor> {
        let tsfn = listener
            .build_threadsafe_function::<Option<String>>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let on_line: crate::monitor::OnLine = Arc::new(move |line| {
            let _ = tsfn.call(
                line,
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        let conn = self.conn.clone();
        let starting = runtime().spawn(async move { Monitor::start(&conn, on_line).await });
        Ok(NativeMonitor {
            starting: Mutex::new(Some(starting)),
            running: Arc::default(),
            stopped: Arc::default(),
        })
    }
}

/// The options table (see `config::table`) as JSON: every option, where it is taken, its type,
/// default and effect; for the README's tables and their checks.
#[napi]
#[cfg_attr(test, allow(dead_code))] // napi registers it in the addon, not in test builds
pub fn option_table() -> String {
    crate::config::table::to_json()
}
