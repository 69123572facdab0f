//! `NativeAdapter`: the cache operations behind `RedisStorageAdapter`.

use napi::bindgen_prelude::{Env, Function, Promise, Unknown};
use napi_derive::napi;

use std::sync::Mutex;

use super::bridge::{self, Outcome};
use super::client::{open, runtime, NativeClient};
use super::error::throw;
use super::locker::{report_outcome, LockNodeInfo, LockOptions, NativeLocker};
use crate::config::{AdapterConfig, Addr, ConnectionConfig, LockConfig};
use crate::connection::{default_retry_strategy, Connection};
use crate::error::Error;
use crate::lock::Locker;
use crate::storage::Storage;

/// The storage half of the adapter; the JavaScript face adds JSON and argument checks.
#[napi]
pub struct NativeAdapter {
    storage: Storage,
    /// The connection is this adapter's own (not a shared client's).
    owns_connection: bool,
    lock_config: LockConfig,
    /// `redlockNodes`; empty when the adapter's connection votes alone.
    lock_nodes: Vec<ConnectionConfig>,
    locker: Mutex<Option<Locker>>,
}

#[napi]
impl NativeAdapter {
    /// Parses the adapter's options (JSON) and connects, or shares `client`'s connection.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        options_json: String,
        client: Option<&NativeClient>,
        retry_strategy: Option<Function<'_, u32, Option<f64>>>,
        dns_lookup: Option<Function<'_, String, Promise<String>>>,
        sentinel_hooks: Option<Function<'_, String, Option<String>>>,
    ) -> napi::Result<Self> {
        let config = AdapterConfig::from_json(&options_json, client.is_some())
            .map_err(|e| throw(&env, &e))?;
        let (conn, owns_connection) = match (client, &config.backend) {
            (Some(client), _) => (client.conn.clone(), false),
            (None, Some(backend)) => (
                open(&env, backend, retry_strategy, dns_lookup, sentinel_hooks)?,
                true,
            ),
            (None, None) => unreachable!("a config without a shared client has a connection"),
        };
        Ok(NativeAdapter {
            storage: Storage::new(conn, config.key_prefix, config.spread_keys),
            owns_connection,
            lock_config: config.lock,
            lock_nodes: config.lock_nodes,
            locker: Mutex::new(None),
        })
    }

    /// The effective lock settings, defaults filled in.
    #[napi]
    pub fn lock_options(&self) -> LockOptions {
        LockOptions::from(&self.lock_config)
    }

    /// The nodes that may vote on locks, in order, for `redlockFilter`: each of `redlockNodes`,
    /// else the adapter's server, or a cluster's startup nodes (the cluster then votes as one).
    #[napi]
    pub fn lock_nodes(&self) -> Vec<LockNodeInfo> {
        let nodes: Vec<(Addr, i64)> = if self.lock_nodes.is_empty() {
            let conn = self.storage.connection();
            conn.given_nodes()
                .into_iter()
                .map(|a| (a, conn.config().db))
                .collect()
        } else {
            self.lock_nodes
                .iter()
                .map(|c| (c.addr.clone(), c.db))
                .collect()
        };
        nodes
            .into_iter()
            .map(|(addr, db)| match addr {
                Addr::Tcp { host, port } => LockNodeInfo {
                    host: Some(host),
                    port: Some(u32::from(port)),
                    path: None,
                    db,
                },
                Addr::Unix(path) => LockNodeInfo {
                    host: None,
                    port: None,
                    path: Some(path.display().to_string()),
                    db,
                },
            })
            .collect()
    }

    /// Makes the locker over the chosen nodes (indexes into `lockNodes()`).
    #[napi]
    pub fn locker(&self, env: Env, chosen: Vec<u32>) -> napi::Result<NativeLocker> {
        let voters: Vec<Connection> = if self.lock_nodes.is_empty() {
            // The adapter's server, or its whole cluster as one voter, when any node is kept.
            let own = self.storage.connection();
            let kept = chosen
                .iter()
                .any(|&i| (i as usize) < own.given_nodes().len());
            kept.then(|| own.clone()).into_iter().collect()
        } else {
            let mut voters = Vec::new();
            for &i in &chosen {
                if let Some(config) = self.lock_nodes.get(i as usize) {
                    let conn = Connection::hosted(
                        config.clone(),
                        default_retry_strategy(),
                        runtime(),
                        bridge::JsHost::shared(),
                    )
                    .map_err(|e| throw(&env, &e))?;
                    voters.push(conn);
                }
            }
            voters
        };
        let locker = Locker::new(voters, self.lock_config.clone(), runtime())
            .map_err(|e| throw(&env, &e))?;
        *self
            .locker
            .lock()
            .map_err(|_| throw(&env, &Error::config("locker state is poisoned")))? =
            Some(locker.clone());
        Ok(NativeLocker {
            locker,
            conn: self.storage.connection().clone(),
        })
    }

    /// The key prefix.
    #[napi(getter)]
    pub fn key_prefix(&self) -> String {
        self.storage.key_prefix().to_owned()
    }

    /// A client object over this adapter's connection.
    #[napi]
    pub fn client(&self) -> NativeClient {
        NativeClient::over(self.storage.connection().clone())
    }

    /// `{ set(key, json, expireAt?), get(key), remove(key) }`: the cache operations, as plain
    /// functions bound to this adapter's storage (see [`super::fast`]). `set` stores JSON text
    /// expiring at `expireAt` (ms since the epoch); `get` resolves the parsed value or
    /// `undefined`.
    #[napi(
        ts_return_type = "{ set(key: string, json: string, expireAt?: number): Promise<void>; get(key: string): Promise<unknown>; remove(key: string): Promise<void> }"
    )]
    pub fn operations<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let object = super::fast::functions(env, &self.storage)?;
        // SAFETY: `object` is a live value of `env`.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), object) })
    }

    /// Removes every key under the prefix.
    #[napi]
    pub fn clear<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let storage = self.storage.clone();
        bridge::command(env, self.storage.connection(), async move {
            storage.clear().await.map(drop).into()
        })
    }

    /// Releases the locks held, then closes the adapter's own connections (a shared client
    /// stays open); resolves like `unlock` (a report when a lock was lost).
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let conn = self
            .owns_connection
            .then(|| self.storage.connection().clone());
        let locker = self.locker.lock().ok().and_then(|mut l| l.take());
        let own_voters = !self.lock_nodes.is_empty();
        if let Some(conn) = &conn {
            // Commands issued after close() are refused; those issued before finish first.
            conn.begin_quit();
        }
        bridge::promise(env, async move {
            let mut outcome = Outcome::Undefined;
            if let Some(locker) = locker {
                outcome = report_outcome(&locker.release_all().await);
                if own_voters {
                    locker.close_voters().await;
                }
            }
            if let Some(conn) = conn {
                conn.quit().await;
            }
            outcome
        })
    }
}
