//! `retryStrategy`: the user's JavaScript function, called from the connection's reconnect loop.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunction;

use crate::retry::RetryStrategy;

/// The longest delay honoured, as Node's timers cap it.
const MAX_DELAY_MS: f64 = 2_147_483_647.0;

type JsRetry = ThreadsafeFunction<u32, Option<f64>, u32, napi::Status, false, true>;

/// The strategy for `func`, or `default` when there is none. The function is called on
/// its JavaScript thread; a result that is not a non-negative number (null, undefined, an
/// exception) stops reconnecting, as in ioredis. The function does not keep Node alive.
///
/// # Errors
/// When napi cannot make the threadsafe function.
pub fn from_js(
    func: Option<Function<'_, u32, Option<f64>>>,
    default: fn() -> RetryStrategy,
) -> napi::Result<RetryStrategy> {
    let Some(func) = func else {
        return Ok(default());
    };
    let tsfn: Arc<JsRetry> = Arc::new(
        func.build_threadsafe_function::<u32>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?,
    );
    Ok(Arc::new(move |times| {
        let tsfn = tsfn.clone();
        Box::pin(async move {
            match tsfn.call_async(times).await {
                Ok(Some(ms)) if ms.is_finite() && ms >= 0.0 => {
                    Some(Duration::from_millis(ms.min(MAX_DELAY_MS) as u64))
                }
                _ => None,
            }
        })
    }))
}
