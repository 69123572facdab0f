//! `NativeAdapter`: the cache operations behind `RedisStorageAdapter`.

use napi::bindgen_prelude::{Env, Function, Unknown};
use napi_derive::napi;

use super::bridge::{self, Outcome};
use super::client::{runtime, NativeClient};
use super::error::throw;
use crate::config::AdapterConfig;
use crate::connection::Connection;
use crate::storage::Storage;

/// The storage half of the adapter; the JavaScript face adds JSON and argument checks.
#[napi]
pub struct NativeAdapter {
    storage: Storage,
    /// The connection is this adapter's own (not a shared client's).
    owns_connection: bool,
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
    ) -> napi::Result<Self> {
        let config = AdapterConfig::from_json(&options_json, client.is_some())
            .map_err(|e| throw(&env, &e))?;
        let (conn, owns_connection) = match (client, config.connection) {
            (Some(client), _) => (client.conn.clone(), false),
            (None, Some(conn_config)) => {
                let retry = super::retry::from_js(retry_strategy)?;
                let conn =
                    Connection::new(conn_config, retry, runtime()).map_err(|e| throw(&env, &e))?;
                (conn, true)
            }
            (None, None) => unreachable!("a config without a shared client has a connection"),
        };
        Ok(NativeAdapter {
            storage: Storage::new(conn, config.key_prefix),
            owns_connection,
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
        NativeClient {
            conn: self.storage.connection().clone(),
        }
    }

    /// Stores JSON text `json` under `key`, expiring at `expire_at` (ms since the epoch).
    #[napi]
    pub fn set<'env>(
        &self,
        env: &'env Env,
        key: String,
        json: String,
        expire_at: Option<f64>,
    ) -> napi::Result<Unknown<'env>> {
        let storage = self.storage.clone();
        bridge::promise(env, async move {
            storage.set(&key, &json, expire_at).await.into()
        })
    }

    /// Resolves the parsed value under `key`, or `undefined`.
    #[napi]
    pub fn get<'env>(&self, env: &'env Env, key: String) -> napi::Result<Unknown<'env>> {
        let storage = self.storage.clone();
        bridge::promise(env, async move {
            match storage.get(&key).await {
                Ok(json) => Outcome::Json(json),
                Err(e) => Outcome::Error(e),
            }
        })
    }

    /// Deletes `key`.
    #[napi]
    pub fn remove<'env>(&self, env: &'env Env, key: String) -> napi::Result<Unknown<'env>> {
        let storage = self.storage.clone();
        bridge::promise(env, async move { storage.remove(&key).await.into() })
    }

    /// Removes every key under the prefix.
    #[napi]
    pub fn clear<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let storage = self.storage.clone();
        bridge::promise(env, async move { storage.clear().await.map(drop).into() })
    }

    /// Closes the adapter's own connection (a shared client stays open).
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let conn = self
            .owns_connection
            .then(|| self.storage.connection().clone());
        bridge::promise(env, async move {
            if let Some(conn) = conn {
                conn.quit().await;
            }
            Outcome::Undefined
        })
    }
}
