//! Core errors thrown synchronously into JavaScript, with their `code`.

use napi::bindgen_prelude::Env;
use napi::Status;

use crate::error::Error;

/// Throws `err` as a JavaScript error with its code and returns the error napi-rs expects back
/// (it sees the pending exception and leaves it as it is).
pub fn throw(env: &Env, err: &Error) -> napi::Error {
    // SAFETY: called on the JavaScript thread of `env`.
    unsafe {
        let value = super::bridge::create_error(env.raw(), err);
        napi::sys::napi_throw(env.raw(), value);
    }
    napi::Error::from_status(Status::PendingException)
}
