//! `NativeClient`: a connection JavaScript can send any command on (the face of `RedisClient`).

use napi::bindgen_prelude::{Buffer, Either, Env, Function, Unknown};
use napi_derive::napi;

use super::bridge::{self, Outcome};
use super::error::throw;
use crate::config::BackendConfig;
use crate::connection::{default_retry_strategy, Connection};
use crate::resp;
use crate::retry::default_cluster_retry_strategy;

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
) -> napi::Result<Connection> {
    let opened = match config {
        BackendConfig::Standalone(c) => {
            let retry = super::retry::from_js(retry_strategy, default_retry_strategy)?;
            Connection::hosted(c.clone(), retry, runtime(), bridge::JsHost::shared())
        }
        BackendConfig::Cluster(c) => {
            let retry = super::retry::from_js(retry_strategy, default_cluster_retry_strategy)?;
            Connection::new_cluster(c, retry, runtime(), bridge::JsHost::shared())
        }
    };
    opened.map_err(|e| throw(env, &e))
}

/// A reconnecting connection to one Redis server.
#[napi]
pub struct NativeClient {
    pub(crate) conn: Connection,
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
    ) -> napi::Result<Self> {
        let config = BackendConfig::from_json(&options_json).map_err(|e| throw(&env, &e))?;
        Ok(NativeClient {
            conn: open(&env, &config, retry_strategy)?,
        })
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

    /// Sends `command` with `args` and resolves its reply.
    #[napi]
    pub fn call<'env>(
        &self,
        env: &'env Env,
        command: String,
        args: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'env>> {
        let first = args.first().map(|a| match a {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => &b[..],
        });
        if let Err(e) = crate::command::check(&command, first) {
            return bridge::promise(env, async move { Outcome::Error(e) });
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        parts.push(command.as_bytes());
        parts.extend(args.iter().map(|a| match a {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => &b[..],
        }));
        bridge::submit(env, &self.conn, resp::encode(&parts), Outcome::Reply)
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
        bridge::promise(env, async move {
            conn.quit().await;
            Outcome::Str(b"OK".to_vec())
        })
    }

    /// Closes at once.
    #[napi]
    pub fn disconnect(&self) {
        self.conn.disconnect();
    }
}
