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

type JsHook = ThreadsafeFunction<String, Option<String>, String, napi::Status, false, true>;

/// The Sentinel options that are functions, through `hook` (index.js's `sentinelHooksOf`: one
/// function called with `{ kind, arg }` as JSON, answering JSON or null), into `sentinel`.
///
/// # Errors
/// When napi cannot make the threadsafe function.
pub fn sentinel_hooks(
    hook: Option<Function<'_, String, Option<String>>>,
    sentinel: &mut crate::config::SentinelConfig,
) -> napi::Result<()> {
    let Some(hook) = hook else {
        return Ok(());
    };
    let tsfn: Arc<JsHook> = Arc::new(
        hook.build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?,
    );
    let ask = move |kind: &'static str, arg: serde_json::Value| {
        let tsfn = tsfn.clone();
        async move {
            let question = serde_json::json!({ "kind": kind, "arg": arg }).to_string();
            match tsfn.call_async(question).await {
                Ok(Some(answer)) => serde_json::from_str::<serde_json::Value>(&answer).ok(),
                _ => None,
            }
        }
    };
    let delay = |answer: Option<serde_json::Value>| {
        answer
            .and_then(|v| v.as_f64())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_millis(ms.min(MAX_DELAY_MS) as u64))
    };
    let address = |answer: Option<serde_json::Value>| {
        let v = answer?;
        let host = v.get("host")?.as_str()?.to_owned();
        let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
        Some((host, port))
    };
    // Only the options given as functions: the others keep their meaning (a map, an array, a
    // default, or `null`).
    let given = sentinel.functions;
    let hooks = &mut sentinel.hooks;
    let kinds = [("retry", given.retry), ("reconnect", given.reconnect)];
    for ((kind, wanted), slot) in kinds
        .into_iter()
        .zip([&mut hooks.retry, &mut hooks.reconnect])
    {
        if !wanted {
            continue;
        }
        let ask = ask.clone();
        *slot = Some(Arc::new(move |times: u32| {
            let answer = ask(kind, serde_json::json!(times));
            Box::pin(async move { delay(answer.await) }) as crate::retry::BoxFuture<_>
        }));
    }
    if given.pick_replica {
        let pick = ask.clone();
        hooks.pick_replica = Some(Arc::new(move |records| {
            let list: Vec<serde_json::Map<String, serde_json::Value>> = records
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect()
                })
                .collect();
            let answer = pick("pick", serde_json::json!(list));
            Box::pin(async move { address(answer.await) })
        }));
    }
    if given.nat {
        hooks.nat = Some(Arc::new(move |key| {
            let answer = ask("nat", serde_json::Value::String(key));
            Box::pin(async move { address(answer.await) })
        }));
    }
    Ok(())
}
