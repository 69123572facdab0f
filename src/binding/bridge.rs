//! Calls to JavaScript promises, settled in batches.
//!
//! Each JavaScript thread (the main thread, every worker) gets one bridge: a threadsafe function
//! with no JavaScript callback, and a queue of outcomes. Two kinds of call end in it:
//!
//! - [`submit`]: a packed command put straight on a pipe; its reply is converted where it is read
//!   (normally on this very thread, see `poll`) and queued.
//! - [`promise`]: a future polled on this thread (a small executor: `Bridge::run`), again each
//!   time it is woken, inside the tokio runtime's context.
//!
//! The queue is settled by whoever is on the JavaScript thread anyway (the reply-reading callback,
//! the call that made the promise); only a completion or wake from another thread, finding the
//! queue empty, wakes the JavaScript thread through the threadsafe function, and that one wake
//! settles everything queued. The threadsafe function holds the event loop open only while
//! promises are pending, so an idle adapter never keeps Node from exiting.
//!
//! Writes are batched the same way: commands made in one turn of the event loop are written
//! together by a microtask at its end (the start of a longer burst a little earlier).

use std::cell::RefCell;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use napi::bindgen_prelude::{Env, Unknown};
use napi::sys;
use redis::Value;

use crate::connection::{Connection, Host};
use crate::error::{Error, ErrorKind};
use crate::pipe::Pipe;

/// What a finished future hands to JavaScript.
pub enum Outcome {
    /// `undefined`.
    Undefined,
    /// A string (UTF-8 bytes; invalid sequences become U+FFFD).
    Str(Vec<u8>),
    /// JSON text, resolved as `JSON.parse(text)`; `None` resolves `undefined`.
    Json(Option<Vec<u8>>),
    /// A Redis reply, converted as ioredis converts it.
    Reply(Value),
    /// A Redis reply with its strings as `Buffer`s (ioredis's `getBuffer`, `callBuffer`, ...).
    ReplyBuffers(Value),
    /// The outcomes of a batch of commands, as ioredis's `exec()` gives them:
    /// `[[error, null] | [null, reply], ...]`.
    Batch(Vec<crate::error::Result<Value>>, Shape),
    /// A rejection.
    Error(Error),
}

impl From<crate::error::Result<()>> for Outcome {
    fn from(r: crate::error::Result<()>) -> Self {
        match r {
            Ok(()) => Outcome::Undefined,
            Err(e) => Outcome::Error(e),
        }
    }
}

/// Which replies of a batch have their strings as `Buffer`s: by position in the batch, and, for
/// a transaction, by position in its `EXEC` reply (the last outcome).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub buffers: Vec<bool>,
    pub exec: Option<Vec<bool>>,
}

impl Shape {
    fn buffers_at(&self, i: usize) -> bool {
        self.buffers.get(i).copied().unwrap_or(false)
    }
}

struct Deferred(sys::napi_deferred);
// SAFETY: the pointer is only dereferenced by napi on the JavaScript thread that created it
// (in `settle_all`); other threads only move it through the queue.
unsafe impl Send for Deferred {}

struct Tsfn(sys::napi_threadsafe_function);
// SAFETY: napi threadsafe functions are made to be called from any thread.
unsafe impl Send for Tsfn {}

struct Shared {
    /// `None` once the environment tore the threadsafe function down.
    tsfn: Option<Tsfn>,
    queue: Vec<(Deferred, Outcome)>,
    /// Tasks woken and waiting to be polled on the JavaScript thread.
    runnable: Vec<Arc<Task>>,
}

/// A future run on its JavaScript thread (see [`promise`]): polled only there, woken from
/// anywhere.
struct Task {
    bridge: Weak<Bridge>,
    /// Taken when the future ends. Locked only on the JavaScript thread.
    slot: Mutex<Option<(BoxedOutcome, Deferred)>>,
    /// Already in `runnable`.
    queued: AtomicBool,
}

type BoxedOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(bridge) = self.bridge.upgrade() else {
            return;
        };
        let Ok(mut shared) = bridge.shared.lock() else {
            return;
        };
        let Some(tsfn) = shared.tsfn.as_ref().map(|t| t.0) else {
            return;
        };
        shared.runnable.push(self.clone());
        let first = shared.runnable.len() + shared.queue.len() == 1;
        if first && !bridge.is_draining() {
            // SAFETY: the threadsafe function is alive (cleared under this lock in `finalize`).
            unsafe {
                sys::napi_call_threadsafe_function(
                    tsfn,
                    ptr::null_mut(),
                    sys::ThreadsafeFunctionCallMode::nonblocking,
                );
            }
        }
    }
}

/// One JavaScript thread's bridge.
pub struct Bridge {
    env: sys::napi_env,
    shared: Mutex<Shared>,
    /// Pending promises; touched only on the JavaScript thread.
    pending: AtomicUsize,
    /// The threadsafe function, for the JavaScript thread's own use (null once finalized), so
    /// that making a promise takes no lock.
    live_tsfn: AtomicPtr<sys::napi_threadsafe_function__>,
    /// A reference to `JSON.parse`.
    json_parse: sys::napi_ref,
    /// A reference to `queueMicrotask`.
    queue_microtask: sys::napi_ref,
    /// A reference to the native function that flushes the pipes written to in this burst.
    flush_fn: sys::napi_ref,
    /// The async context (and its resource object) promises are settled in when replies are
    /// read on this thread (see [`Bridge::settle_here`]).
    async_context: sys::napi_async_context,
    async_resource: sys::napi_ref,
}

// SAFETY: `env` and `json_parse` are used only on the JavaScript thread (`promise`,
// `settle_all`); other threads touch only the mutex-guarded queue and the threadsafe function.
unsafe impl Send for Bridge {}
unsafe impl Sync for Bridge {}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
    /// Pipes with commands submitted by this thread and not yet written: they are written in
    /// one go by a microtask at the end of the burst.
    static UNFLUSHED: RefCell<Vec<(Pipe, u32)>> = const { RefCell::new(Vec::new()) };
    /// The bridge this thread settles right after the reads under way (see
    /// [`Bridge::settle_here`]): completions for it need not wake the thread.
    static DRAINING: std::cell::Cell<*const Bridge> = const { std::cell::Cell::new(ptr::null()) };
}

/// `object[name]`.
///
/// # Safety
/// On the JavaScript thread of `env`, with a live `object`.
unsafe fn property(
    env: sys::napi_env,
    object: sys::napi_value,
    name: &std::ffi::CStr,
) -> napi::Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: as the caller promises.
    let status = unsafe { sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) };
    check(status, &name.to_string_lossy())?;
    Ok(value)
}

/// A strong reference to `value`, kept for the bridge's life.
///
/// # Safety
/// On the JavaScript thread of `env`, with a live `value`.
unsafe fn reference(env: sys::napi_env, value: sys::napi_value) -> napi::Result<sys::napi_ref> {
    let mut out = ptr::null_mut();
    // SAFETY: as the caller promises.
    let status = unsafe { sys::napi_create_reference(env, value, 1, &mut out) };
    check(status, "napi_create_reference")?;
    Ok(out)
}

fn check(status: sys::napi_status, what: &str) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!(
            "{what} failed (napi status {status})"
        )))
    }
}

impl Bridge {
    /// This thread's bridge, made on first use.
    fn current(env: &Env) -> napi::Result<Arc<Bridge>> {
        let raw = env.raw();
        CURRENT.with(|cell| {
            let mut slot = cell.borrow_mut();
            if let Some(b) = slot.as_ref() {
                if b.env == raw && !b.live_tsfn.load(Ordering::Relaxed).is_null() {
                    return Ok(b.clone());
                }
            }
            let bridge = Bridge::create(raw)?;
            *slot = Some(bridge.clone());
            Ok(bridge)
        })
    }

    fn create(env: sys::napi_env) -> napi::Result<Arc<Bridge>> {
        // SAFETY: called on the JavaScript thread of `env` with valid out-pointers.
        unsafe {
            let mut global = ptr::null_mut();
            check(sys::napi_get_global(env, &mut global), "napi_get_global")?;
            let json = property(env, global, c"JSON")?;
            let json_parse = reference(env, property(env, json, c"parse")?)?;
            let queue_microtask = reference(env, property(env, global, c"queueMicrotask")?)?;
            let mut flush = ptr::null_mut();
            check(
                sys::napi_create_function(
                    env,
                    c"flushRedisPipes".as_ptr(),
                    15,
                    Some(flush_pipes),
                    ptr::null_mut(),
                    &mut flush,
                ),
                "napi_create_function",
            )?;
            let flush_fn = reference(env, flush)?;
            let mut resource = ptr::null_mut();
            check(
                sys::napi_create_object(env, &mut resource),
                "napi_create_object",
            )?;
            let async_resource = reference(env, resource)?;
            let resource_name = string(env, b"alova-storage-redis:reply");
            let mut async_context = ptr::null_mut();
            check(
                sys::napi_async_init(env, resource, resource_name, &mut async_context),
                "napi_async_init",
            )?;

            let bridge = Arc::new(Bridge {
                env,
                shared: Mutex::new(Shared {
                    tsfn: None,
                    queue: Vec::new(),
                    runnable: Vec::new(),
                }),
                pending: AtomicUsize::new(0),
                live_tsfn: AtomicPtr::new(ptr::null_mut()),
                json_parse,
                queue_microtask,
                flush_fn,
                async_context,
                async_resource,
            });
            let mut name = ptr::null_mut();
            let label = "alova-storage-redis";
            check(
                sys::napi_create_string_utf8(
                    env,
                    label.as_ptr().cast(),
                    label.len() as isize,
                    &mut name,
                ),
                "napi_create_string_utf8",
            )?;
            // The threadsafe function owns one strong count, given back in `finalize`.
            let owned = Arc::into_raw(bridge.clone()) as *mut c_void;
            let mut tsfn = ptr::null_mut();
            let status = sys::napi_create_threadsafe_function(
                env,
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                owned,
                Some(finalize),
                owned,
                Some(settle_all),
                &mut tsfn,
            );
            if status != sys::Status::napi_ok {
                drop(Arc::from_raw(owned as *const Bridge));
                return Err(napi::Error::from_reason(
                    "napi_create_threadsafe_function failed",
                ));
            }
            check(
                sys::napi_unref_threadsafe_function(env, tsfn),
                "napi_unref_threadsafe_function",
            )?;
            bridge.shared.lock().expect("bridge lock").tsfn = Some(Tsfn(tsfn));
            bridge.live_tsfn.store(tsfn, Ordering::Relaxed);
            Ok(bridge)
        }
    }

    fn complete(&self, deferred: Deferred, outcome: Outcome) {
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        let Some(tsfn) = shared.tsfn.as_ref().map(|t| t.0) else {
            // The environment is gone: nobody is left to tell.
            return;
        };
        shared.queue.push((deferred, outcome));
        if shared.queue.len() + shared.runnable.len() == 1 && !self.is_draining() {
            // SAFETY: the threadsafe function is alive (it is cleared under this lock in
            // `finalize` before napi frees it).
            unsafe {
                sys::napi_call_threadsafe_function(
                    tsfn,
                    ptr::null_mut(),
                    sys::ThreadsafeFunctionCallMode::nonblocking,
                );
            }
        }
    }

    /// Counts a new pending promise; the first one holds the event loop open.
    fn hold(&self) {
        if self.pending.fetch_add(1, Ordering::Relaxed) == 0 {
            let tsfn = self.live_tsfn.load(Ordering::Relaxed);
            if !tsfn.is_null() {
                // SAFETY: on the JavaScript thread, with a live threadsafe function.
                unsafe { sys::napi_ref_threadsafe_function(self.env, tsfn) };
            }
        }
    }

    /// Counts `n` settled promises; the last one lets the event loop go.
    fn release(&self, n: usize, tsfn: sys::napi_threadsafe_function) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::Relaxed) == n {
            // SAFETY: on the JavaScript thread, with a live threadsafe function.
            unsafe { sys::napi_unref_threadsafe_function(self.env, tsfn) };
        }
    }
}

/// Runs `fut` on this JavaScript thread and returns a promise for its outcome.
///
/// The future is polled here, now, and again on this thread whenever it is woken (a reply read
/// by this thread wakes it with no thread hop; a wake from elsewhere goes through the bridge's
/// threadsafe function), inside the tokio runtime's context so that its timers work. Its I/O and
/// any task it spawns stay on tokio.
///
/// # Errors
/// Only when napi itself fails to make the promise.
pub fn promise<'env, F>(env: &'env Env, fut: F) -> napi::Result<Unknown<'env>>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let (bridge, deferred, promise) = Bridge::new_promise(env)?;
    let task = Arc::new(Task {
        bridge: Arc::downgrade(&bridge),
        slot: Mutex::new(Some((Box::pin(fut), deferred))),
        queued: AtomicBool::new(false),
    });
    // SAFETY: on the JavaScript thread of `env`, inside a call from JavaScript.
    unsafe { bridge.run(env.raw(), Some(task), usize::MAX) };
    // SAFETY: `promise` is a live value of `env`.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
}

/// [`promise`] for a command on `conn`: counted as in flight from now (so that a later `quit()`
/// lets it finish), or rejected with `ERR_CLOSED` after `quit()`.
///
/// # Errors
/// Only when napi itself fails to make the promise.
pub fn command<'env, F>(
    env: &'env Env,
    conn: &crate::connection::Connection,
    fut: F,
) -> napi::Result<Unknown<'env>>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    match conn.track() {
        Ok(in_flight) => promise(env, async move {
            let outcome = fut.await;
            drop(in_flight);
            outcome
        }),
        Err(e) => promise(env, async move { Outcome::Error(e) }),
    }
}

/// Puts the packed command `bytes` on `conn` and returns a promise for `convert` of its reply:
/// the fast path. On one server the command goes straight into the socket's buffer, and a
/// microtask writes the whole burst of commands made in this turn with one system call.
///
/// # Errors
/// Only when napi itself fails to make the promise.
pub fn submit<'env>(
    env: &'env Env,
    conn: &Connection,
    bytes: Vec<u8>,
    convert: fn(Value) -> Outcome,
) -> napi::Result<Unknown<'env>> {
    let (bridge, deferred, promise) = Bridge::new_promise(env)?;
    let completes = bridge.clone();
    let unflushed = conn.submit(bytes, move |reply| {
        let outcome = match reply {
            Ok(value) => convert(value),
            Err(e) => Outcome::Error(e),
        };
        completes.complete(deferred, outcome);
    });
    if let Some(pipe) = unflushed {
        bridge.flush_soon(pipe);
    }
    // SAFETY: `promise` is a live value of `env`.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
}

/// Puts the packed commands `cmds` on `conn` together (nothing of anybody else's between them),
/// only on the link of `generation` when given (see [`Connection::submit_all_on`]), and returns
/// a promise for all their outcomes ([`Outcome::Batch`]), in order.
///
/// # Errors
/// Only when napi itself fails to make the promise.
pub fn submit_all<'env>(
    env: &'env Env,
    conn: &Connection,
    cmds: Vec<Vec<u8>>,
    generation: Option<u64>,
    shape: Shape,
) -> napi::Result<Unknown<'env>> {
    let shape = Arc::new(shape);
    let (bridge, deferred, promise) = Bridge::new_promise(env)?;
    struct Gathered {
        outcomes: Vec<Option<crate::error::Result<Value>>>,
        left: usize,
        deferred: Option<Deferred>,
    }
    let gathered = Arc::new(Mutex::new(Gathered {
        outcomes: (0..cmds.len()).map(|_| None).collect(),
        left: cmds.len(),
        deferred: Some(deferred),
    }));
    if cmds.is_empty() {
        let deferred = gathered.lock().ok().and_then(|mut g| g.deferred.take());
        if let Some(deferred) = deferred {
            bridge.complete(deferred, Outcome::Batch(Vec::new(), Shape::default()));
        }
    }
    let with_done: Vec<_> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let shape = shape.clone();
            let gathered = gathered.clone();
            let bridge = bridge.clone();
            let done = move |reply: crate::error::Result<Value>| {
                let Ok(mut g) = gathered.lock() else { return };
                g.outcomes[i] = Some(reply);
                g.left -= 1;
                if g.left == 0 {
                    let outcomes = std::mem::take(&mut g.outcomes)
                        .into_iter()
                        .map(|o| {
                            o.unwrap_or_else(|| {
                                Err(Error::new(ErrorKind::Internal, "a reply went missing"))
                            })
                        })
                        .collect();
                    if let Some(deferred) = g.deferred.take() {
                        drop(g);
                        bridge.complete(deferred, Outcome::Batch(outcomes, (*shape).clone()));
                    }
                }
            };
            (bytes, done)
        })
        .collect();
    if let Some(pipe) = conn.submit_all_on(with_done, generation) {
        bridge.flush_soon(pipe);
    }
    // SAFETY: `promise` is a live value of `env`.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
}

/// Puts a cluster transaction on `conn` as one entry (`packed`: MULTI, its commands, EXEC; the
/// link sends it to its slot's master as one pipeline) and returns a promise for the outcomes of
/// its `count` commands, as [`submit_all`] gives them.
///
/// # Errors
/// Only when napi itself fails to make the promise.
pub fn submit_transaction<'env>(
    env: &'env Env,
    conn: &Connection,
    packed: Vec<u8>,
    count: usize,
    shape: Shape,
) -> napi::Result<Unknown<'env>> {
    let (bridge, deferred, promise) = Bridge::new_promise(env)?;
    let completes = bridge.clone();
    let addr = conn.addr().to_owned();
    let unflushed = conn.submit(packed, move |reply| {
        let outcomes: Vec<crate::error::Result<Value>> = match reply {
            Ok(Value::Array(items)) if items.len() == count => items
                .into_iter()
                .map(|v| match v {
                    Value::ServerError(e) => Err(Error::from_redis(&e.into(), &addr)),
                    v => Ok(v),
                })
                .collect(),
            Ok(_) => vec![
                Err(Error::new(
                    ErrorKind::Protocol,
                    "a transaction's replies did not match its commands",
                ));
                count
            ],
            Err(e) => vec![Err(e); count],
        };
        completes.complete(deferred, Outcome::Batch(outcomes, shape));
    });
    if let Some(pipe) = unflushed {
        bridge.flush_soon(pipe);
    }
    // SAFETY: `promise` is a live value of `env`.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
}

impl Bridge {
    /// This thread's bridge and a new pending promise of it (counted, so that it holds the event
    /// loop until settled).
    fn new_promise(env: &Env) -> napi::Result<(Arc<Bridge>, Deferred, sys::napi_value)> {
        let bridge = Bridge::current(env)?;
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        // SAFETY: on the JavaScript thread of `env`, with valid out-pointers.
        check(
            unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) },
            "napi_create_promise",
        )?;
        bridge.hold();
        Ok((bridge, Deferred(deferred), promise))
    }

    /// True on the JavaScript thread while it runs tasks or reads for this bridge: it settles
    /// what is queued before it returns, so nobody needs to wake it.
    fn is_draining(&self) -> bool {
        DRAINING.with(|d| ptr::eq(d.get(), self))
    }

    /// Polls `first` (a new task) and every woken task until none is left, then settles what is
    /// queued, at most `limit` outcomes. Returns true when outcomes were left queued: the
    /// caller must run again (it is on this thread, so nobody else wakes it for them).
    ///
    /// # Safety
    /// On the JavaScript thread of `env`.
    unsafe fn run(&self, env: sys::napi_env, first: Option<Arc<Task>>, limit: usize) -> bool {
        let outer = DRAINING.with(|d| d.replace(self));
        let settled = {
            let _context = super::client::runtime().enter();
            let mut batch: Vec<Arc<Task>> = first.into_iter().collect();
            loop {
                for task in batch.drain(..) {
                    task.queued.store(false, Ordering::Release);
                    let waker = Waker::from(task.clone());
                    let mut cx = Context::from_waker(&waker);
                    let mut slot = task.slot.lock().unwrap_or_else(|p| p.into_inner());
                    let Some((fut, _)) = slot.as_mut() else {
                        continue;
                    };
                    // A panic must not unwind into libuv or Node: it rejects the promise.
                    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        fut.as_mut().poll(&mut cx)
                    }));
                    let outcome = match polled {
                        Ok(Poll::Pending) => continue,
                        Ok(Poll::Ready(outcome)) => outcome,
                        Err(panic) => Outcome::Error(Error::new(
                            ErrorKind::Internal,
                            format!("internal error: {}", panic_message(&panic)),
                        )),
                    };
                    if let Some((_, deferred)) = slot.take() {
                        drop(slot);
                        self.complete(deferred, outcome);
                    }
                }
                let Ok(mut shared) = self.shared.lock() else {
                    break None;
                };
                if !shared.runnable.is_empty() {
                    std::mem::swap(&mut batch, &mut shared.runnable);
                } else if outer.is_null() {
                    // Seen empty and emptied under one lock: whatever is pushed after this
                    // finds the bridge empty and wakes this thread (see `Task::wake_by_ref`).
                    // Taken under a second lock, a task woken in between would be left in
                    // `runnable` with no wake-up coming.
                    let more = shared.queue.len() > limit;
                    let batch = if more {
                        shared.queue.drain(..limit).collect()
                    } else {
                        std::mem::take(&mut shared.queue)
                    };
                    break Some((batch, shared.tsfn.as_ref().map(|t| t.0), more));
                } else {
                    // The outer `run` settles (and rechecks) when this returns.
                    break None;
                }
            }
        };
        DRAINING.with(|d| d.set(outer));
        match settled {
            Some((batch, tsfn, more)) => {
                // SAFETY: on the JavaScript thread of `env`.
                unsafe { self.settle_batch(env, batch, tsfn) };
                more
            }
            None => false,
        }
    }

    /// Runs `read` (reads on this thread whose replies complete this bridge's promises), then
    /// settles what is queued, in a callback scope, so that the promises' reactions run when it
    /// closes, as after any I/O callback. Returns what `read` returned.
    ///
    /// The first [`EARLY_FLUSH`] outcomes of a batch are settled in a callback scope of their
    /// own, the rest in a second one: the reactions to the first replies run, and their next
    /// commands go out, before the rest are converted (JSON parsed), so that the server works
    /// meanwhile.
    ///
    /// # Safety
    /// On the JavaScript thread of `env`, from a libuv callback (no JavaScript on the stack).
    pub unsafe fn settle_here<R>(&self, env: sys::napi_env, read: impl FnOnce() -> R) -> R {
        DRAINING.with(|d| d.set(self));
        let out = read();
        DRAINING.with(|d| d.set(ptr::null()));
        let idle = self
            .shared
            .lock()
            .map_or(true, |s| s.queue.is_empty() && s.runnable.is_empty());
        if idle {
            return out;
        }
        // SAFETY: on the JavaScript thread, outside any JavaScript frame.
        unsafe {
            let mut handles = ptr::null_mut();
            sys::napi_open_handle_scope(env, &mut handles);
            let mut resource = ptr::null_mut();
            sys::napi_get_reference_value(env, self.async_resource, &mut resource);
            let mut limit = EARLY_FLUSH as usize;
            loop {
                let mut scope = ptr::null_mut();
                let opened =
                    sys::napi_open_callback_scope(env, resource, self.async_context, &mut scope)
                        == sys::Status::napi_ok;
                // Without a scope of its own, nothing runs in between: settle at once.
                if !opened {
                    limit = usize::MAX;
                }
                let more = self.run(env, None, limit);
                limit = usize::MAX;
                if opened {
                    sys::napi_close_callback_scope(env, scope);
                }
                if !more {
                    break;
                }
            }
            sys::napi_close_handle_scope(env, handles);
        }
        out
    }

    /// Settles `batch`, taken from the queue.
    ///
    /// # Safety
    /// On the JavaScript thread of `env`.
    unsafe fn settle_batch(
        &self,
        env: sys::napi_env,
        batch: Vec<(Deferred, Outcome)>,
        tsfn: Option<sys::napi_threadsafe_function>,
    ) {
        let n = batch.len();
        for (deferred, outcome) in batch {
            // SAFETY: on the JavaScript thread; each deferred is settled exactly once.
            unsafe {
                let mut scope = ptr::null_mut();
                sys::napi_open_handle_scope(env, &mut scope);
                settle(env, self, deferred.0, outcome);
                sys::napi_close_handle_scope(env, scope);
            }
        }
        if let Some(tsfn) = tsfn {
            self.release(n, tsfn);
        }
    }

    /// Has `pipe` written at the end of this burst (once per burst); at once when no microtask
    /// can be queued.
    fn flush_soon(&self, pipe: Pipe) {
        let (first, early) = UNFLUSHED.with(|cell| {
            let mut list = cell.borrow_mut();
            let first = list.is_empty();
            let early = match list.iter_mut().find(|(p, _)| p.same(&pipe)) {
                Some((_, n)) => {
                    *n += 1;
                    *n == EARLY_FLUSH
                }
                None => {
                    list.push((pipe.clone(), 1));
                    false
                }
            };
            (first, early)
        });
        if early {
            // A burst is under way: send its start now, so that the server works on it while
            // this thread prepares the rest (sent at the end of the turn).
            pipe.flush();
        }
        // SAFETY: on the JavaScript thread (`UNFLUSHED` is this thread's), with live references.
        if first && !unsafe { self.queue_flush() } {
            flush_all();
        }
    }

    unsafe fn queue_flush(&self) -> bool {
        unsafe {
            let mut queue = ptr::null_mut();
            let mut flush = ptr::null_mut();
            let mut out = ptr::null_mut();
            sys::napi_get_reference_value(self.env, self.queue_microtask, &mut queue)
                == sys::Status::napi_ok
                && sys::napi_get_reference_value(self.env, self.flush_fn, &mut flush)
                    == sys::Status::napi_ok
                && !queue.is_null()
                && !flush.is_null()
                && sys::napi_call_function(
                    self.env,
                    undefined(self.env),
                    queue,
                    1,
                    &flush,
                    &mut out,
                ) == sys::Status::napi_ok
        }
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// The binding as the [`Host`] of its connections: on a JavaScript thread with a bridge, a pipe
/// that thread submits to is read by the thread's loop (see `poll`), and it is written at the
/// end of the turn with everything else submitted in it. On other threads (tokio's) nothing
/// changes.
pub struct JsHost;

impl JsHost {
    /// The host every connection of the binding is made with.
    pub fn shared() -> Arc<dyn Host> {
        Arc::new(JsHost)
    }

    /// This thread's live bridge, if it is a JavaScript thread with one.
    fn bridge() -> Option<Arc<Bridge>> {
        CURRENT
            .with(|cell| cell.try_borrow().ok().and_then(|b| b.clone()))
            .filter(|b| !b.live_tsfn.load(Ordering::Relaxed).is_null())
    }
}

impl Host for JsHost {
    fn submitted(&self, pipe: &Pipe) {
        if let Some(bridge) = Self::bridge() {
            // SAFETY: `CURRENT` is set only on JavaScript threads, and it is this thread's
            // bridge, whose environment is alive while its threadsafe function is.
            unsafe { super::poll::adopt(bridge.env, &bridge, pipe) };
        }
    }

    fn flush_later(&self, pipe: &Pipe) -> bool {
        // The futures of [`promise`] run only where the microtasks run after them.
        match Self::bridge() {
            Some(bridge) => {
                bridge.flush_soon(pipe.clone());
                true
            }
            None => false,
        }
    }

    fn is_host_thread(&self) -> bool {
        Self::bridge().is_some()
    }
}

/// The command of a turn at which the turn's commands so far are written at once, instead of
/// waiting for the end of the turn: a lone command (one in flight) goes at the end of its turn,
/// right before the thread sleeps, while a burst lets the server start early.
const EARLY_FLUSH: u32 = 4;

/// Writes every pipe this thread submitted to since the last flush.
fn flush_all() {
    let pipes = UNFLUSHED.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    for (pipe, _) in &pipes {
        pipe.flush();
    }
    // Give the list's allocation back for the next burst.
    UNFLUSHED.with(|cell| {
        let mut list = cell.borrow_mut();
        if list.is_empty() {
            let mut pipes = pipes;
            pipes.clear();
            *list = pipes;
        }
    });
}

unsafe extern "C" fn flush_pipes(
    env: sys::napi_env,
    _info: sys::napi_callback_info,
) -> sys::napi_value {
    // Nothing may unwind into V8.
    let _ = std::panic::catch_unwind(flush_all);
    // SAFETY: called by napi on the JavaScript thread of `env`.
    unsafe { undefined(env) }
}

unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the strong count given to the threadsafe function in `create`.
    let bridge = unsafe { Arc::from_raw(data as *const Bridge) };
    bridge.live_tsfn.store(ptr::null_mut(), Ordering::Relaxed);
    let queued = match bridge.shared.lock() {
        Ok(mut shared) => {
            shared.tsfn = None;
            shared.runnable.clear();
            std::mem::take(&mut shared.queue)
        }
        Err(_) => Vec::new(),
    };
    drop(queued);
}

unsafe extern "C" fn settle_all(
    env: sys::napi_env,
    _js_cb: sys::napi_value,
    context: *mut c_void,
    _data: *mut c_void,
) {
    if env.is_null() {
        return;
    }
    // SAFETY: `context` is the bridge, kept alive by the threadsafe function's own count; napi
    // calls this on the JavaScript thread.
    unsafe {
        let bridge = &*(context as *const Bridge);
        bridge.run(env, None, usize::MAX);
    }
}

/// Settles one promise.
unsafe fn settle(
    env: sys::napi_env,
    bridge: &Bridge,
    deferred: sys::napi_deferred,
    outcome: Outcome,
) {
    // SAFETY (whole body): on the JavaScript thread of `env`.
    unsafe {
        let result = match outcome {
            Outcome::Undefined => Ok(undefined(env)),
            Outcome::Str(bytes) => Ok(string(env, &bytes)),
            Outcome::Json(None) => Ok(undefined(env)),
            Outcome::Json(Some(bytes)) => parse_json(env, bridge, &bytes),
            Outcome::Reply(value) => Ok(reply(env, value, false)),
            Outcome::ReplyBuffers(value) => Ok(reply(env, value, true)),
            Outcome::Batch(outcomes, shape) => {
                let mut array = ptr::null_mut();
                let last = outcomes.len().saturating_sub(1);
                sys::napi_create_array_with_length(env, outcomes.len(), &mut array);
                for (i, outcome) in outcomes.into_iter().enumerate() {
                    let mut pair = ptr::null_mut();
                    sys::napi_create_array_with_length(env, 2, &mut pair);
                    let mut null = ptr::null_mut();
                    sys::napi_get_null(env, &mut null);
                    let (err, value) = match (outcome, &shape.exec) {
                        (Ok(Value::Array(items)), Some(exec)) if i == last => {
                            let mut v = ptr::null_mut();
                            sys::napi_create_array_with_length(env, items.len(), &mut v);
                            for (j, item) in items.into_iter().enumerate() {
                                let buffers = exec.get(j).copied().unwrap_or(false);
                                sys::napi_set_element(env, v, j as u32, reply(env, item, buffers));
                            }
                            (null, v)
                        }
                        (Ok(value), _) => (null, reply(env, value, shape.buffers_at(i))),
                        (Err(e), _) => (create_error(env, &e), null),
                    };
                    sys::napi_set_element(env, pair, 0, err);
                    sys::napi_set_element(env, pair, 1, value);
                    sys::napi_set_element(env, array, i as u32, pair);
                }
                Ok(array)
            }
            Outcome::Error(err) => Err(create_error(env, &err)),
        };
        match result {
            Ok(value) => sys::napi_resolve_deferred(env, deferred, value),
            Err(error) => sys::napi_reject_deferred(env, deferred, error),
        };
    }
}

unsafe fn undefined(env: sys::napi_env) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe { sys::napi_get_undefined(env, &mut v) };
    v
}

unsafe fn string(env: sys::napi_env, bytes: &[u8]) -> sys::napi_value {
    let mut v = ptr::null_mut();
    unsafe {
        sys::napi_create_string_utf8(env, bytes.as_ptr().cast(), bytes.len() as isize, &mut v)
    };
    v
}

/// `JSON.parse(text)`; a text that is not JSON rejects with `ERR_INVALID_VALUE`.
unsafe fn parse_json(
    env: sys::napi_env,
    bridge: &Bridge,
    bytes: &[u8],
) -> Result<sys::napi_value, sys::napi_value> {
    unsafe {
        let text = string(env, bytes);
        let mut parse = ptr::null_mut();
        sys::napi_get_reference_value(env, bridge.json_parse, &mut parse);
        let mut out = ptr::null_mut();
        let status = sys::napi_call_function(env, undefined(env), parse, 1, &text, &mut out);
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        let mut exception = ptr::null_mut();
        sys::napi_get_and_clear_last_exception(env, &mut exception);
        Err(create_error_code(
            env,
            "ERR_INVALID_VALUE",
            "the stored value is not valid JSON, so it cannot be returned",
            false,
        ))
    }
}

/// A JavaScript `Error` (a `TypeError` for wrong arguments and options) with `code`.
///
/// # Safety
/// On the JavaScript thread of `env`.
pub unsafe fn create_error(env: sys::napi_env, err: &Error) -> sys::napi_value {
    let type_error = matches!(err.kind(), ErrorKind::Config | ErrorKind::InvalidArgument);
    unsafe { create_error_code(env, err.code(), err.message(), type_error) }
}

unsafe fn create_error_code(
    env: sys::napi_env,
    code: &str,
    message: &str,
    type_error: bool,
) -> sys::napi_value {
    unsafe {
        let code = string(env, code.as_bytes());
        let msg = string(env, message.as_bytes());
        let mut error = ptr::null_mut();
        if type_error {
            sys::napi_create_type_error(env, code, msg, &mut error);
        } else {
            sys::napi_create_error(env, code, msg, &mut error);
        }
        error
    }
}

unsafe fn buffer(env: sys::napi_env, bytes: &[u8]) -> sys::napi_value {
    let mut v = ptr::null_mut();
    let mut data = ptr::null_mut();
    unsafe {
        sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), &mut data, &mut v)
    };
    v
}

/// A Redis reply as ioredis gives it: strings (`Buffer`s with `buffers`, as ioredis's `...Buffer`
/// methods give them), numbers, null, arrays, `Error`s inside arrays.
unsafe fn reply(env: sys::napi_env, value: Value, buffers: bool) -> sys::napi_value {
    let text = |bytes: &[u8]| unsafe {
        if buffers {
            buffer(env, bytes)
        } else {
            string(env, bytes)
        }
    };
    unsafe {
        let mut v = ptr::null_mut();
        match value {
            Value::Nil => {
                sys::napi_get_null(env, &mut v);
            }
            Value::Int(n) => {
                sys::napi_create_int64(env, n, &mut v);
            }
            Value::Double(d) => {
                sys::napi_create_double(env, d, &mut v);
            }
            Value::Boolean(b) => {
                sys::napi_get_boolean(env, b, &mut v);
            }
            Value::BulkString(bytes) => v = text(&bytes),
            Value::SimpleString(s) => v = text(s.as_bytes()),
            Value::VerbatimString { text: t, .. } => v = text(t.as_bytes()),
            Value::Okay => v = text(b"OK"),
            Value::BigNumber(digits) => v = text(&digits),
            Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
                sys::napi_create_array_with_length(env, items.len(), &mut v);
                for (i, item) in items.into_iter().enumerate() {
                    sys::napi_set_element(env, v, i as u32, reply(env, item, buffers));
                }
            }
            Value::Map(pairs) => {
                sys::napi_create_array_with_length(env, pairs.len() * 2, &mut v);
                for (i, (k, val)) in pairs.into_iter().enumerate() {
                    sys::napi_set_element(env, v, (2 * i) as u32, reply(env, k, buffers));
                    sys::napi_set_element(env, v, (2 * i + 1) as u32, reply(env, val, buffers));
                }
            }
            Value::Attribute { data, .. } => v = reply(env, *data, buffers),
            Value::ServerError(err) => {
                let e = Error::from_redis(&err.into(), "the server");
                v = create_error(env, &e);
            }
            // A reply kind newer than this code: say so rather than guess.
            _ => v = string(env, b"[unsupported reply type]"),
        }
        v
    }
}
