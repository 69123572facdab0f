//! `NativeLocker`: the Redlock locker behind `adapter.locker`.

use napi::bindgen_prelude::{Env, Unknown};
use napi_derive::napi;

use super::bridge::{self, Outcome};
use crate::lock::{Locker, UnlockReport};

/// A voting node as `redlockFilter` sees it (the face wraps it as `{ options }`).
#[napi(object)]
pub struct LockNodeInfo {
    pub host: Option<String>,
    pub port: Option<u32>,
    pub path: Option<String>,
    pub db: i64,
}

/// The effective Redlock settings, as `locker.options` shows them (milliseconds).
#[napi(object)]
pub struct LockOptions {
    pub drift_factor: f64,
    /// -1: unlimited.
    pub retry_count: i64,
    pub retry_delay: f64,
    pub retry_jitter: f64,
    pub automatic_extension_threshold: f64,
    pub db: i64,
    /// `redlockTTL`.
    pub ttl: f64,
}

impl From<&crate::config::LockConfig> for LockOptions {
    fn from(c: &crate::config::LockConfig) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        LockOptions {
            drift_factor: c.drift_factor,
            retry_count: c.retry_count.map_or(-1, i64::from),
            retry_delay: ms(c.retry_delay),
            retry_jitter: ms(c.retry_jitter),
            automatic_extension_threshold: ms(c.automatic_extension_threshold),
            db: c.db,
            ttl: ms(c.ttl),
        }
    }
}

/// The locker; settings and voters are fixed when it is made.
#[napi]
pub struct NativeLocker {
    pub(crate) locker: Locker,
    /// The adapter's connection: locking after `close()` is refused like any command.
    pub(crate) conn: crate::connection::Connection,
}

#[napi]
impl NativeLocker {
    /// Acquires one lock on all of `resources`.
    #[napi]
    pub fn lock<'env>(
        &self,
        env: &'env Env,
        resources: Vec<String>,
    ) -> napi::Result<Unknown<'env>> {
        let locker = self.locker.clone();
        bridge::command(env, &self.conn, async move {
            locker.lock(&resources).await.into()
        })
    }

    /// Releases the locks holding `resources`; resolves `undefined`, or a report object
    /// `{ lost, failures }` when something needs telling.
    #[napi]
    pub fn unlock<'env>(
        &self,
        env: &'env Env,
        resources: Vec<String>,
    ) -> napi::Result<Unknown<'env>> {
        let locker = self.locker.clone();
        bridge::command(env, &self.conn, async move {
            match locker.unlock(&resources).await {
                Ok(report) => report_outcome(&report),
                Err(e) => Outcome::Error(e),
            }
        })
    }
}

/// `undefined` for a clean unlock, else the report as an object.
pub(crate) fn report_outcome(report: &UnlockReport) -> Outcome {
    if report.lost.is_empty() && report.failures.is_empty() {
        return Outcome::Undefined;
    }
    let json = serde_json::json!({ "lost": report.lost, "failures": report.failures });
    Outcome::Json(Some(json.to_string().into_bytes()))
}
