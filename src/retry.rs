//! Reconnection backoff as ioredis gives it: `retryStrategy(times)` for one server,
//! `clusterRetryStrategy(times)` for a cluster.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, as the retry strategy returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `times => delay`: how long to wait before reconnection attempt `times` (from 1), or `None` to
/// give up. ioredis's default is `min(times * 50, 2000)` ms.
pub type RetryStrategy = Arc<dyn Fn(u32) -> BoxFuture<Option<Duration>> + Send + Sync>;

/// ioredis's default retry strategy.
pub fn default_retry_strategy() -> RetryStrategy {
    Arc::new(|times| {
        let ms = (u64::from(times) * 50).min(2000);
        Box::pin(async move { Some(Duration::from_millis(ms)) })
    })
}

/// ioredis's default `clusterRetryStrategy`: `min(100 + times * 2, 2000)` ms.
pub fn default_cluster_retry_strategy() -> RetryStrategy {
    Arc::new(|times| {
        let ms = (100 + u64::from(times) * 2).min(2000);
        Box::pin(async move { Some(Duration::from_millis(ms)) }) as BoxFuture<_>
    })
}
