//! `set`, `get` and `remove` of the adapter as plain Node-API functions bound to its storage.
//!
//! alova calls them for every request, so they skip what a `#[napi]` method costs on each call
//! (a receiver borrow registered in a process-wide map, a scope allocated to track it, a
//! `String` for each argument after a first pass to measure it): the key and the JSON text go
//! from the JavaScript strings into reused buffers, and from there into the packed command.
//! The JavaScript face has checked the arguments (`key` and the JSON text are strings).

use std::cell::RefCell;
use std::ffi::c_void;
use std::os::raw::c_char;
use std::ptr;

use napi::bindgen_prelude::Env;
use napi::{sys, JsValue};
use redis::Value;

use super::bridge::{self, Outcome};
use crate::storage::Storage;

/// A scratch buffer grown past this for one large value is let go after the call.
const KEEP_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// The UTF-8 of the key and of the JSON text of the call under way.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

type Body =
    unsafe fn(sys::napi_env, &Storage, &[sys::napi_value; 3]) -> napi::Result<sys::napi_value>;

/// `{ set, get, remove }` for `storage`: each function owns a clone of it, dropped when the
/// function is collected.
pub fn functions(env: &Env, storage: &Storage) -> napi::Result<sys::napi_value> {
    let env = env.raw();
    // SAFETY: on the JavaScript thread of `env`, with valid out-pointers; each function's data
    // is a leaked box given back by its finalizer.
    unsafe {
        let mut object = ptr::null_mut();
        check(
            sys::napi_create_object(env, &mut object),
            "napi_create_object",
        )?;
        let bodies: [(&str, Body); 3] = [("set", set), ("get", get), ("remove", remove)];
        for (name, body) in bodies {
            let data = Box::into_raw(Box::new((storage.clone(), body)));
            let mut function = ptr::null_mut();
            let created = sys::napi_create_function(
                env,
                name.as_ptr().cast::<c_char>(),
                name.len() as isize,
                Some(call),
                data.cast::<c_void>(),
                &mut function,
            );
            if created != sys::Status::napi_ok {
                drop(Box::from_raw(data));
            }
            check(created, "napi_create_function")?;
            let finalized = sys::napi_add_finalizer(
                env,
                function,
                data.cast::<c_void>(),
                Some(finalize),
                ptr::null_mut(),
                ptr::null_mut(),
            );
            if finalized != sys::Status::napi_ok {
                // The function is dropped unseen, never called.
                drop(Box::from_raw(data));
            }
            check(finalized, "napi_add_finalizer")?;
            let mut key = ptr::null_mut();
            check(
                sys::napi_create_string_utf8(
                    env,
                    name.as_ptr().cast::<c_char>(),
                    name.len() as isize,
                    &mut key,
                ),
                "napi_create_string_utf8",
            )?;
            check(
                sys::napi_set_property(env, object, key, function),
                "napi_set_property",
            )?;
        }
        Ok(object)
    }
}

fn check(status: sys::napi_status, what: &str) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!("{what} failed")))
    }
}

unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the box leaked in `functions`, finalized once.
    drop(unsafe { Box::from_raw(data.cast::<(Storage, Body)>()) });
}

/// The callback of every function: reads the arguments and runs the function's body; an error
/// or a panic is thrown.
unsafe extern "C" fn call(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    let outcome = std::panic::catch_unwind(|| {
        let mut argc = 3usize;
        let mut argv = [ptr::null_mut(); 3];
        let mut data = ptr::null_mut();
        // SAFETY: napi fills at most `argc` values; missing ones are `undefined`.
        unsafe {
            check(
                sys::napi_get_cb_info(
                    env,
                    info,
                    &mut argc,
                    argv.as_mut_ptr(),
                    ptr::null_mut(),
                    &mut data,
                ),
                "napi_get_cb_info",
            )?;
            let (storage, body) = &*data.cast::<(Storage, Body)>();
            body(env, storage, &argv)
        }
    });
    let err = match outcome {
        Ok(Ok(value)) => return value,
        Ok(Err(err)) => err,
        Err(panic) => {
            napi::Error::from_reason(format!("internal error: {}", bridge::panic_message(&panic)))
        }
    };
    if err.status != napi::Status::PendingException {
        // SAFETY: on the JavaScript thread of `env`.
        unsafe { napi::JsError::from(err).throw_into(env) };
    }
    ptr::null_mut()
}

/// Appends the UTF-8 of the JavaScript string `value` to the cleared `out`.
///
/// # Safety
/// On the JavaScript thread of `env`; `value` a live value of it.
unsafe fn read_utf8(
    env: sys::napi_env,
    value: sys::napi_value,
    out: &mut Vec<u8>,
) -> napi::Result<()> {
    out.clear();
    if out.capacity() > KEEP_SCRATCH {
        *out = Vec::new();
    }
    // The length in UTF-16 units, without reading the string; its UTF-8 takes at most 3 bytes
    // per unit, and napi writes a NUL after it.
    let mut units = 0usize;
    // SAFETY: a null buffer asks for the length only.
    match unsafe { sys::napi_get_value_string_utf16(env, value, ptr::null_mut(), 0, &mut units) } {
        sys::Status::napi_ok => {}
        // The JavaScript face checks its arguments first: only a caller that skipped it sees
        // this.
        sys::Status::napi_string_expected => {
            return Err(napi::Error::new(
                napi::Status::StringExpected,
                "expected a string argument",
            ))
        }
        status => return check(status, "napi_get_value_string_utf16"),
    }
    let room = units * 3 + 1;
    out.reserve(room);
    let mut written = 0usize;
    // SAFETY: `out` has `room` bytes of spare capacity; napi writes at most `room`, the NUL
    // included, and reports the bytes before it.
    unsafe {
        check(
            sys::napi_get_value_string_utf8(
                env,
                value,
                out.as_mut_ptr().cast::<c_char>(),
                room,
                &mut written,
            ),
            "napi_get_value_string_utf8",
        )?;
        out.set_len(written);
    }
    Ok(())
}

/// The key (and, with `json`, the JSON text) of a call, as UTF-8 in the thread's scratch.
unsafe fn with_args<R>(
    env: sys::napi_env,
    key: sys::napi_value,
    json: Option<sys::napi_value>,
    f: impl FnOnce(&[u8], &[u8]) -> R,
) -> napi::Result<R> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (k, j) = &mut *scratch;
        // SAFETY: on the JavaScript thread, with the call's live arguments.
        unsafe {
            read_utf8(env, key, k)?;
            if let Some(json) = json {
                read_utf8(env, json, j)?;
            } else {
                j.clear();
            }
        }
        Ok(f(k, j))
    })
}

/// A number argument, or `None` for anything else (`undefined`).
unsafe fn number(env: sys::napi_env, value: sys::napi_value) -> Option<f64> {
    let mut out = 0f64;
    // SAFETY: napi reports a non-number as `napi_number_expected` and leaves `out` alone.
    (unsafe { sys::napi_get_value_double(env, value, &mut out) } == sys::Status::napi_ok)
        .then_some(out)
}

/// `set(key, json, expireAt?)`.
unsafe fn set(
    env: sys::napi_env,
    storage: &Storage,
    argv: &[sys::napi_value; 3],
) -> napi::Result<sys::napi_value> {
    // SAFETY (whole body): on the JavaScript thread, with the call's live arguments.
    unsafe {
        let expire_at = number(env, argv[2]);
        let cmd = with_args(env, argv[0], Some(argv[1]), |key, json| {
            storage.set_command(key, json, expire_at)
        })?;
        let env = Env::from_raw(env);
        let promise = match cmd {
            Some(cmd) => bridge::submit(&env, storage.connection(), cmd, |_| Outcome::Undefined),
            // Already expired: nothing to write, but still in issue order after quit().
            None => bridge::command(&env, storage.connection(), async { Outcome::Undefined }),
        }?;
        Ok(promise.raw())
    }
}

/// `get(key)`: the JSON text, parsed, or `undefined`.
unsafe fn get(
    env: sys::napi_env,
    storage: &Storage,
    argv: &[sys::napi_value; 3],
) -> napi::Result<sys::napi_value> {
    // SAFETY: as the caller's.
    unsafe {
        keyed(
            env,
            storage,
            argv[0],
            Storage::get_command,
            |reply| match Storage::get_reply(reply) {
                Ok(json) => Outcome::Json(json),
                Err(e) => Outcome::Error(e),
            },
        )
    }
}

/// `remove(key)`.
unsafe fn remove(
    env: sys::napi_env,
    storage: &Storage,
    argv: &[sys::napi_value; 3],
) -> napi::Result<sys::napi_value> {
    // SAFETY: as the caller's.
    unsafe {
        keyed(env, storage, argv[0], Storage::remove_command, |_| {
            Outcome::Undefined
        })
    }
}

/// A command on `key` alone, its reply converted by `convert`.
///
/// # Safety
/// On the JavaScript thread of `env`; `key` a live value of it.
unsafe fn keyed(
    env: sys::napi_env,
    storage: &Storage,
    key: sys::napi_value,
    command: fn(&Storage, &[u8]) -> Vec<u8>,
    convert: fn(Value) -> Outcome,
) -> napi::Result<sys::napi_value> {
    // SAFETY (whole body): on the JavaScript thread, with the call's live arguments.
    unsafe {
        let cmd = with_args(env, key, None, |key, _| command(storage, key))?;
        let env = Env::from_raw(env);
        let promise = bridge::submit(&env, storage.connection(), cmd, convert)?;
        Ok(promise.raw())
    }
}
