//! The adapter's own pipelined socket to one server (plain TCP or a unix socket).
//!
//! Commands are appended to one output buffer, each with a waiter in a FIFO; replies come back
//! in order and are handed to the waiters in order. Writing needs no task hop: whichever thread
//! submits can write the buffer out itself ([`Pipe::flush`]), so a JavaScript thread that issues
//! a burst of commands writes them with one system call and wakes nobody. Only when the socket
//! is full does a background task wait for it to drain. Replies are parsed straight from the
//! read buffer and handed to the waiters, several per read, by whoever reads: a tokio task, or,
//! once [`Pipe::reader`] was taken over by an event loop ([`PipeReader::set_external`]), that
//! loop's thread (the binding makes it the JavaScript thread's, so a reply settles its promise
//! with no thread hop at all; see `connection::Host`).
//!
//! When the socket fails, every waiter gets the failure (an I/O error, so the connection may send
//! the command again on a new socket) and the pipe stays dead.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redis::{RedisError, RedisResult, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{oneshot, Notify};

use crate::resp;

/// What a waiter is called with: the reply (an error reply is `Ok(Value::ServerError)`), or the
/// socket's failure.
pub type Reply = RedisResult<Value>;

/// A command on its way: its RESP bytes, and what to do with its reply.
pub trait Command: Send {
    /// The whole command, packed as RESP.
    fn packed(&self) -> &[u8];
    /// Called once with the reply, on the reader's thread (or the submitter's when the pipe is
    /// already dead).
    fn finish(self: Box<Self>, reply: Reply);
}

type Waiter = Box<dyn Command>;

/// A command whose reply goes to a oneshot channel.
pub struct Oneshot {
    packed: Vec<u8>,
    tx: oneshot::Sender<Reply>,
}

impl Oneshot {
    /// The command `packed`, its reply sent to `tx`.
    pub fn new(packed: Vec<u8>, tx: oneshot::Sender<Reply>) -> Oneshot {
        Oneshot { packed, tx }
    }
}

impl Command for Oneshot {
    fn packed(&self) -> &[u8] {
        &self.packed
    }

    fn finish(self: Box<Self>, reply: Reply) {
        let _ = self.tx.send(reply);
    }
}

/// How long a task waits for a reply that an outside loop should read before reading itself.
pub const BUSY_READER_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// An output buffer larger than this is not kept for reuse.
const KEEP_BUFFER: usize = 1 << 20;
/// The reader's buffer starts at, and reads at least, this much.
const READ_CHUNK: usize = 16 * 1024;

/// The socket, before the pipe takes it.
pub enum Io {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The socket as the pipe keeps it: out of tokio's reactor (it is registered only while a task
/// waits on it), non-blocking, readable and writable from any thread.
enum Sock {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    fn from_io(io: Io) -> io::Result<Sock> {
        Ok(match io {
            Io::Tcp(s) => Sock::Tcp(s.into_std()?),
            Io::Unix(s) => Sock::Unix(s.into_std()?),
        })
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// A second descriptor of the same socket, for a registration of its own.
    fn duplicate(&self) -> io::Result<OwnedFd> {
        match self {
            Sock::Tcp(s) => s.as_fd().try_clone_to_owned(),
            Sock::Unix(s) => s.as_fd().try_clone_to_owned(),
        }
    }

    /// A registration with tokio's reactor for `interest`, on a descriptor of its own (so that it
    /// can come and go while the socket lives on).
    fn watch(&self, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
        let fd = self.duplicate()?;
        // SAFETY: the registration owns `fd`, which stays open (and the same socket) until the
        // registration is dropped.
        unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// What the reader keeps between reads.
struct ReadState {
    /// `buf[..filled]` holds bytes read and not yet parsed; the rest is zeroed room.
    buf: Vec<u8>,
    filled: usize,
    /// The size the buffer must reach for the reply under way (a long bulk string).
    need: usize,
    replies: Vec<Value>,
    waiters: Vec<Waiter>,
}

struct State {
    /// Bytes submitted and not yet taken by a writer.
    out: Vec<u8>,
    /// An emptied buffer kept for the next swap with `out`.
    spare: Vec<u8>,
    /// A buffer the socket could not take at once, and how much of it is written: the writer
    /// task finishes it before anything in `out`.
    held: Option<(Vec<u8>, usize)>,
    /// One per command submitted, in order.
    waiters: VecDeque<Waiter>,
    /// Some thread, or the writer task, is writing: others only append.
    writing: bool,
    /// Why the pipe is dead; set once.
    dead: Option<RedisError>,
    /// Dead, and every waiter it had was finished.
    finished: bool,
}

struct Shared {
    sock: Sock,
    state: Mutex<State>,
    /// Held by whoever reads, so that replies are parsed and handed out in order.
    read: Mutex<ReadState>,
    /// An event loop outside tokio reads (see [`PipeReader::set_external`]).
    external: AtomicBool,
    /// Wakes the read task when `external` changes.
    reader_moved: Notify,
    /// Wakes the writer task when the socket was full.
    writer: Notify,
    /// Ends the driver: the last handle was dropped, or the pipe died.
    stop: Notify,
    /// Wakes [`Pipe::finished`].
    finished: Notify,
    /// The thread that holds `read` (see [`thread_id`]), or 0.
    reader: AtomicU64,
}

/// Clears [`Shared::reader`] when the reader is done.
struct Reading<'a>(&'a AtomicU64);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// A number for the calling thread, never 0.
fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// Dropped with the last [`Pipe`] handle: the pipe closes (its driver ends, the socket is closed).
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.kill(closed_error("the connection was closed"));
    }
}

/// A handle to a pipelined socket; clones share it.
#[derive(Clone)]
pub struct Pipe {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

impl Pipe {
    /// A pipe over `io`, and its driver (reading replies, finishing writes the socket could not
    /// take at once), which must be spawned. The driver ends when the pipe dies, with the reason.
    ///
    /// # Errors
    /// When the socket cannot be taken out of tokio's reactor.
    pub fn new(io: Io) -> io::Result<(Pipe, impl Future<Output = RedisError> + Send + 'static)> {
        let sock = Sock::from_io(io)?;
        let shared = Arc::new(Shared {
            sock,
            read: Mutex::new(ReadState {
                buf: Vec::new(),
                filled: 0,
                need: 0,
                replies: Vec::new(),
                waiters: Vec::new(),
            }),
            external: AtomicBool::new(false),
            reader_moved: Notify::new(),
            state: Mutex::new(State {
                out: Vec::new(),
                spare: Vec::new(),
                held: None,
                waiters: VecDeque::new(),
                writing: false,
                dead: None,
                finished: false,
            }),
            writer: Notify::new(),
            stop: Notify::new(),
            finished: Notify::new(),
            reader: AtomicU64::new(0),
        });
        let pipe = Pipe {
            shared: shared.clone(),
            _guard: Arc::new(Guard(shared.clone())),
        };
        let driver = async move {
            let err = tokio::select! {
                err = read_loop(&shared) => err,
                err = write_loop(&shared) => err,
                () = shared.stop.notified() => closed_error("the connection was closed"),
            };
            shared.kill(err.clone());
            shared.state().dead.clone().unwrap_or(err)
        };
        Ok((pipe, driver))
    }

    /// Queues `cmd`. Returns true when the caller must see that [`Pipe::flush`] is called soon
    /// (nobody is writing); a dead pipe finishes the command at once with its failure.
    pub fn submit(&self, cmd: Box<dyn Command>) -> bool {
        match self.submit_as(cmd, |cmd| cmd) {
            Ok(must_flush) => must_flush,
            Err(cmd) => {
                let err = self.shared.state().dead.clone();
                cmd.finish(Err(
                    err.unwrap_or_else(|| closed_error("the connection was closed"))
                ));
                false
            }
        }
    }

    /// [`Pipe::submit`] for a command the caller keeps in a form of its own (`into` makes the
    /// pipe's form), except that a dead pipe gives the command back instead of finishing it
    /// (the caller may hold a lock that finishing would need).
    ///
    /// # Errors
    /// The command, when the pipe is dead.
    pub fn submit_as<C>(
        &self,
        cmd: C,
        into: impl FnOnce(C) -> Box<dyn Command>,
    ) -> Result<bool, C> {
        let mut st = self.shared.state();
        if st.dead.is_some() {
            return Err(cmd);
        }
        let cmd = into(cmd);
        st.out.extend_from_slice(cmd.packed());
        st.waiters.push_back(cmd);
        let must_flush = !st.writing;
        drop(st);
        Ok(must_flush)
    }

    /// Writes out what was submitted, on this thread, unless another writer is at it; what the
    /// socket cannot take now is left to the driver.
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Sends one command and waits for its reply (for a connection's handshake, while nobody
    /// else uses the pipe yet).
    ///
    /// # Errors
    /// The socket's failure.
    pub async fn send(&self, packed: Vec<u8>) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.submit(Box::new(Oneshot { packed, tx })) {
            self.flush();
        }
        rx.await
            .unwrap_or_else(|_| Err(closed_error("the connection was closed")))
    }

    /// Closes the socket now: every command on it fails as if the socket broke.
    pub fn close(&self) {
        self.shared.kill(closed_error("the connection was closed"));
    }

    /// Resolves once the pipe is dead and every command that was on it has been finished (so a
    /// connection can put the failed ones back in order before it uses a new socket).
    pub async fn finished(&self) {
        loop {
            let notified = self.shared.finished.notified();
            if self.shared.state().finished {
                return;
            }
            notified.await;
        }
    }

    /// True once the socket failed or was closed.
    pub fn is_dead(&self) -> bool {
        self.shared.state().dead.is_some()
    }

    /// True when both handles are the same pipe.
    pub fn same(&self, other: &Pipe) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// True once an event loop outside tokio reads this pipe.
    pub fn is_external(&self) -> bool {
        self.shared.external.load(Ordering::Acquire)
    }

    /// The read side, for an event loop that takes reading over. It does not keep the pipe open:
    /// when the last [`Pipe`] goes, the pipe dies and the socket is shut down (which the loop sees
    /// as readable, so it learns of it at once).
    pub fn reader(&self) -> PipeReader {
        PipeReader {
            shared: self.shared.clone(),
        }
    }
}

/// A pipe's read side as an outside event loop drives it (see [`Pipe::reader`]).
pub struct PipeReader {
    shared: Arc<Shared>,
}

impl PipeReader {
    /// The socket's descriptor, to watch for readability (it stays open while this lives).
    pub fn fd(&self) -> RawFd {
        self.shared.sock.raw_fd()
    }

    /// Moves reading to the caller's loop (`true`) or back to the pipe's task (`false`).
    pub fn set_external(&self, external: bool) {
        self.shared.external.store(external, Ordering::Release);
        self.shared.reader_moved.notify_one();
    }

    /// Kills the pipe (its commands fail as if the socket broke, so they are sent again on the
    /// next one): for a reader that met a defect of its own.
    pub fn fail(&self, why: &str) {
        self.shared.kill(protocol_error(why));
    }

    /// Reads what has arrived and hands the replies to their waiters, on this thread. Returns
    /// false when the pipe is dead (now or before): the loop should stop watching it.
    pub fn read_available(&self) -> bool {
        if self.shared.state().dead.is_some() {
            return false;
        }
        match self.shared.read_available() {
            Ok(()) => true,
            Err(err) => {
                self.shared.kill(err);
                false
            }
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A waiter never runs under this lock, so a poisoned lock only means a panic elsewhere
        // mid-update of plain buffers: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the pipe dead with `err` (once) and fails every waiter with it.
    fn kill(&self, err: RedisError) {
        let waiters = {
            let mut st = self.state();
            if st.dead.is_some() {
                return;
            }
            st.dead = Some(err.clone());
            st.out = Vec::new();
            st.held = None;
            std::mem::take(&mut st.waiters)
        };
        // Wakes whoever watches the socket (a task, or an outside loop) to see the end.
        self.sock.shutdown();
        self.stop.notify_one();
        // Replies being handed out by a reader right now go first: a command put back on a new
        // socket must not overtake one that was answered.
        // (Unless this thread is that reader: a reply's waiter let go of the last handle.)
        if self.reader.load(Ordering::Acquire) != thread_id() {
            drop(self.read.lock().unwrap_or_else(|p| p.into_inner()));
        }
        for waiter in waiters {
            waiter.finish(Err(err.clone()));
        }
        self.state().finished = true;
        self.finished.notify_waiters();
    }

    /// Takes `out` to write it, unless someone else is writing or there is nothing to write.
    fn take_out(st: &mut State) -> Option<Vec<u8>> {
        if st.writing || st.out.is_empty() || st.dead.is_some() {
            return None;
        }
        st.writing = true;
        let spare = std::mem::take(&mut st.spare);
        Some(std::mem::replace(&mut st.out, spare))
    }

    /// After a buffer was written whole: takes the next one, or stops writing.
    fn next_out(&self, mut done: Vec<u8>) -> Option<Vec<u8>> {
        let mut st = self.state();
        if st.out.is_empty() || st.dead.is_some() {
            st.writing = false;
            if done.capacity() <= KEEP_BUFFER {
                done.clear();
                st.spare = done;
            }
            return None;
        }
        done.clear();
        Some(std::mem::replace(&mut st.out, done))
    }

    fn flush(&self) {
        let Some(mut buf) = Self::take_out(&mut self.state()) else {
            return;
        };
        loop {
            let mut off = 0;
            while off < buf.len() {
                match self.sock.write(&buf[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket is full: the writer task finishes when it drains.
                        self.state().held = Some((buf, off));
                        self.writer.notify_one();
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.kill(e.into());
                        return;
                    }
                }
            }
            match self.next_out(buf) {
                Some(next) => buf = next,
                None => return,
            }
        }
    }
}

impl Shared {
    /// Reads until the socket has nothing more now, handing out every whole reply.
    fn read_available(&self) -> Result<(), RedisError> {
        let mut guard = self.read.lock().unwrap_or_else(|p| p.into_inner());
        self.reader.store(thread_id(), Ordering::Release);
        let _reading = Reading(&self.reader);
        let rs = &mut *guard;
        loop {
            let want = rs.need.max(rs.filled + READ_CHUNK / 2);
            if rs.buf.len() < want {
                rs.buf.resize(want.max(READ_CHUNK), 0);
            }
            let room = rs.buf.len() - rs.filled;
            let n = match self.sock.read(&mut rs.buf[rs.filled..]) {
                Ok(0) => return Err(closed_error("the server closed the connection")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            rs.filled += n;
            let mut pos = 0;
            rs.need = 0;
            loop {
                let mut need = 0;
                match resp::parse(&rs.buf[pos..rs.filled], &mut need) {
                    Ok(Some((value, used))) => {
                        rs.replies.push(value);
                        pos += used;
                    }
                    Ok(None) => {
                        rs.need = if need > 0 { pos + need } else { 0 };
                        break;
                    }
                    Err(e) => return Err(protocol_error(&e.0)),
                }
            }
            if pos > 0 {
                rs.buf.copy_within(pos..rs.filled, 0);
                rs.filled -= pos;
                rs.need = rs.need.saturating_sub(pos);
            }
            if !rs.replies.is_empty() {
                {
                    let mut st = self.state();
                    if st.waiters.len() < rs.replies.len() {
                        return Err(protocol_error("a reply came for no command"));
                    }
                    let n = rs.replies.len();
                    rs.waiters.extend(st.waiters.drain(..n));
                }
                for (waiter, reply) in rs.waiters.drain(..).zip(rs.replies.drain(..)) {
                    waiter.finish(Ok(reply));
                }
            }
            // A short read drained the socket: wait for the next readiness.
            if n < room {
                // A buffer grown for one large reply is not kept.
                if rs.filled == 0 && rs.buf.len() > KEEP_BUFFER {
                    rs.buf = Vec::new();
                }
                return Ok(());
            }
        }
    }
}

/// Finishes the writes the socket could not take at once.
async fn write_loop(shared: &Shared) -> RedisError {
    loop {
        shared.writer.notified().await;
        let Some((mut buf, mut off)) = shared.state().held.take() else {
            continue;
        };
        // A descriptor of its own, registered only while the socket is full.
        let watch = match shared.sock.watch(Interest::WRITABLE) {
            Ok(watch) => watch,
            Err(e) => return e.into(),
        };
        loop {
            while off < buf.len() {
                match shared.sock.write(&buf[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match watch.writable().await {
                            Ok(mut ready) => ready.clear_ready(),
                            Err(e) => return e.into(),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return e.into(),
                }
            }
            match shared.next_out(buf) {
                Some(next) => {
                    buf = next;
                    off = 0;
                }
                None => break,
            }
        }
    }
}

/// Reads replies while no outside loop does.
async fn read_loop(shared: &Shared) -> RedisError {
    loop {
        if shared.external.load(Ordering::Acquire) {
            shared.reader_moved.notified().await;
            continue;
        }
        let watch = match shared.sock.watch(Interest::READABLE) {
            Ok(watch) => watch,
            Err(e) => return e.into(),
        };
        while !shared.external.load(Ordering::Acquire) {
            tokio::select! {
                ready = watch.readable() => {
                    let mut ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => return e.into(),
                    };
                    if let Err(e) = shared.read_available() {
                        return e;
                    }
                    ready.clear_ready();
                }
                () = shared.reader_moved.notified() => {}
            }
        }
    }
}

/// The failure of a socket that is closed: a dropped connection, as redis-rs reports one.
fn closed_error(what: &'static str) -> RedisError {
    io::Error::new(io::ErrorKind::BrokenPipe, what).into()
}

fn protocol_error(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "invalid reply from the server",
        what.to_owned(),
    ))
}
