//! `NativeClient`: a connection JavaScript can send any command on (the face of `RedisClient`).

use napi::bindgen_prelude::{Buffer, Either, Env, Function, Unknown};
use napi_derive::napi;
use redis::Cmd;

use super::bridge::{self, Outcome};
use super::error::throw;
use crate::config::ConnectionConfig;
use crate::connection::Connection;

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
    /// Connects with ioredis options given as JSON (see `config`).
    #[napi(constructor)]
    pub fn new(
        env: Env,
        options_json: String,
        retry_strategy: Option<Function<'_, u32, Option<f64>>>,
    ) -> napi::Result<Self> {
        let config = ConnectionConfig::from_json(&options_json).map_err(|e| throw(&env, &e))?;
        let retry = super::retry::from_js(retry_strategy)?;
        let conn = Connection::new(config, retry, runtime()).map_err(|e| throw(&env, &e))?;
        Ok(NativeClient { conn })
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
        let mut cmd = Cmd::new();
        cmd.arg(command);
        for arg in &args {
            match arg {
                Either::A(s) => cmd.arg(s.as_bytes()),
                Either::B(b) => cmd.arg(&b[..]),
            };
        }
        let conn = self.conn.clone();
        bridge::promise(env, async move {
            match conn.send(&cmd).await {
                Ok(value) => Outcome::Reply(value),
                Err(e) => Outcome::Error(e),
            }
        })
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
