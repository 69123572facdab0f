//! Replies read on the JavaScript thread itself.
//!
//! The first time a JavaScript thread puts a command on a pipe, the pipe's socket joins that
//! thread's libuv loop (a `uv_poll_t`, as Node's own sockets do) and the pipe's tokio task stops
//! reading. A reply then wakes only the JavaScript thread, which parses it and settles its promise
//! in the same callback: one wake-up per reply burst, as with a JavaScript client, instead of a
//! tokio worker's wake-up followed by a hop to the JavaScript thread.
//!
//! The poll handle does not keep Node alive (pending promises do, through the bridge). It is
//! closed when the pipe dies (its socket is shut down, which the poll sees at once), and when the
//! environment is torn down, reading goes back to the pipe's task, so that a connection still
//! used from Rust (a lock being released) keeps working.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::Arc;

use napi::sys;

use super::bridge::Bridge;
use crate::pipe::{Pipe, PipeReader};

/// libuv's `UV_POLL` handle type.
const UV_POLL: c_int = 8;
/// libuv's `UV_READABLE` event.
const UV_READABLE: c_int = 1;

type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

// libuv, as exported by the Node.js binary that loads this addon.
extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init_socket(lp: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: CloseCb);
    fn uv_unref(handle: *mut c_void);
}

/// What a poll handle's `data` points to.
struct Watch {
    reader: PipeReader,
    bridge: Arc<Bridge>,
    env: sys::napi_env,
    closing: bool,
}

thread_local! {
    /// This thread's live poll handles, to close when the environment goes.
    static HANDLES: RefCell<Vec<*mut c_void>> = const { RefCell::new(Vec::new()) };
    /// The environment the teardown hook is registered with (once: Node refuses a second).
    static HOOKED: Cell<sys::napi_env> = const { Cell::new(ptr::null_mut()) };
}

/// Has this JavaScript thread read `pipe`'s replies from now on (once per pipe; a pipe some
/// other loop already reads is left alone).
///
/// # Safety
/// On the JavaScript thread of `env`, whose bridge is `bridge`.
pub unsafe fn adopt(env: sys::napi_env, bridge: &Arc<Bridge>, pipe: &Pipe) {
    if pipe.is_external() || pipe.is_dead() {
        return;
    }
    // SAFETY (whole body): libuv calls on the loop of this thread.
    unsafe {
        let mut lp = ptr::null_mut();
        if sys::napi_get_uv_event_loop(env, &mut lp) != sys::Status::napi_ok || lp.is_null() {
            return;
        }
        // The handle's memory, aligned for any field (libuv says how large it is).
        let words = uv_handle_size(UV_POLL).div_ceil(8);
        let handle = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut c_void;
        let reader = pipe.reader();
        if uv_poll_init_socket(lp, handle, reader.fd()) != 0 {
            free_handle(handle);
            return;
        }
        let watch = Box::new(Watch {
            reader,
            bridge: bridge.clone(),
            env,
            closing: false,
        });
        // `data` is the first field of every libuv handle.
        *(handle as *mut *mut Watch) = Box::into_raw(watch);
        uv_unref(handle);
        if uv_poll_start(handle, UV_READABLE, on_readable) != 0 {
            close(handle);
            return;
        }
        HANDLES.with(|h| h.borrow_mut().push(handle));
        if HOOKED.get() != env {
            HOOKED.set(env);
            sys::napi_add_env_cleanup_hook(env, Some(on_env_teardown), ptr::null_mut());
        }
        (*watch_of(handle)).reader.set_external(true);
    }
}

unsafe fn watch_of(handle: *mut c_void) -> *mut Watch {
    // SAFETY: `data` (the first field) was set to the watch in `adopt`.
    unsafe { *(handle as *mut *mut Watch) }
}

unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
    // SAFETY (whole body): called by libuv on the JavaScript thread, with our handle.
    unsafe {
        let watch = &mut *watch_of(handle);
        if watch.closing {
            return;
        }
        let reader = &watch.reader;
        // A panic must not unwind into libuv: the pipe is then treated as dead.
        let alive = watch.bridge.settle_here(watch.env, || {
            status == 0
                && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    reader.read_available()
                }))
                .unwrap_or_else(|_| {
                    reader.fail("internal error while reading replies");
                    false
                })
        });
        if !alive {
            close(handle);
        }
    }
}

/// Stops watching and frees the handle once libuv is done with it; reading goes back to the
/// pipe's task (a dead pipe reads nothing more either way).
unsafe fn close(handle: *mut c_void) {
    // SAFETY: on the JavaScript thread, with our live handle.
    unsafe {
        let watch = &mut *watch_of(handle);
        if watch.closing {
            return;
        }
        watch.closing = true;
        watch.reader.set_external(false);
        uv_poll_stop(handle);
        HANDLES.with(|h| h.borrow_mut().retain(|&x| x != handle));
        uv_close(handle, on_closed);
    }
}

unsafe extern "C" fn on_closed(handle: *mut c_void) {
    // SAFETY: libuv is done with the handle; both allocations were made in `adopt`.
    unsafe {
        drop(Box::from_raw(watch_of(handle)));
        free_handle(handle);
    }
}

/// Frees a handle's memory as allocated in `adopt`.
unsafe fn free_handle(handle: *mut c_void) {
    // SAFETY: `handle` is the boxed slice of `uv_handle_size(UV_POLL)` rounded up to words.
    unsafe {
        let words = uv_handle_size(UV_POLL).div_ceil(8);
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
            handle as *mut u64,
            words,
        )));
    }
}

unsafe extern "C" fn on_env_teardown(_arg: *mut c_void) {
    let handles = HANDLES.with(|h| std::mem::take(&mut *h.borrow_mut()));
    for handle in handles {
        // SAFETY: on the JavaScript thread, with our live handles.
        unsafe { close(handle) };
    }
}
