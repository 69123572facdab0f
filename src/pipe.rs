//! The adapter's own pipelined socket to one server (plain TCP or a unix socket).
//!
//! Commands are appended to one output buffer, each with a waiter in a FIFO; replies come back
//! in order and are handed to the waiters in order. Writing needs no task hop: whichever thread
//! submits can write the buffer out itself ([`Pipe::flush`]), so a JavaScript thread that issues
//! a burst of commands writes them with one system call and wakes nobody. Only when the socket
//! is full does a background task wait for it to drain. A reader task parses replies straight
//! from its buffer and calls the waiters, several per read.
//!
//! When the socket fails, every waiter gets the failure (an I/O error, so the connection may send
//! the command again on a new socket) and the pipe stays dead.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redis::{RedisError, RedisResult, Value};
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
struct Oneshot {
    packed: Vec<u8>,
    tx: oneshot::Sender<Reply>,
}

impl Command for Oneshot {
    fn packed(&self) -> &[u8] {
        &self.packed
    }

    fn finish(self: Box<Self>, reply: Reply) {
        let _ = self.tx.send(reply);
    }
}

/// An output buffer larger than this is not kept for reuse.
const KEEP_BUFFER: usize = 1 << 20;
/// The reader's buffer starts at, and reads at least, this much.
const READ_CHUNK: usize = 16 * 1024;

/// The socket.
pub enum Io {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Io {
    fn split(self) -> (Reader, Writer) {
        match self {
            Io::Tcp(s) => {
                let (r, w) = s.into_split();
                (Reader::Tcp(r), Writer::Tcp(w))
            }
            #[cfg(unix)]
            Io::Unix(s) => {
                let (r, w) = s.into_split();
                (Reader::Unix(r), Writer::Unix(w))
            }
        }
    }
}

/// The socket's read side, owned by the driver. It reads through tokio's `AsyncRead`, which
/// takes a short read as "drained" and waits for the next readiness event instead of trying
/// again (one system call per reply burst, not two).
enum Reader {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
}

impl Reader {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        match self {
            Reader::Tcp(s) => s.read_buf(buf).await,
            #[cfg(unix)]
            Reader::Unix(s) => s.read_buf(buf).await,
        }
    }
}

/// The socket's write side, shared by every thread that flushes.
enum Writer {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl Writer {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Writer::Tcp(s) => s.try_write(buf),
            #[cfg(unix)]
            Writer::Unix(s) => s.try_write(buf),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Writer::Tcp(s) => s.writable().await,
            #[cfg(unix)]
            Writer::Unix(s) => s.writable().await,
        }
    }
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
}

struct Shared {
    io: Writer,
    state: Mutex<State>,
    /// Wakes the writer task when the socket was full.
    writer: Notify,
    /// Ends the driver: the last handle was dropped, or the pipe died.
    stop: Notify,
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
    pub fn new(io: Io) -> (Pipe, impl Future<Output = RedisError> + Send + 'static) {
        let (reader, writer) = io.split();
        let shared = Arc::new(Shared {
            io: writer,
            state: Mutex::new(State {
                out: Vec::new(),
                spare: Vec::new(),
                held: None,
                waiters: VecDeque::new(),
                writing: false,
                dead: None,
            }),
            writer: Notify::new(),
            stop: Notify::new(),
        });
        let pipe = Pipe {
            shared: shared.clone(),
            _guard: Arc::new(Guard(shared.clone())),
        };
        let driver = async move {
            let err = tokio::select! {
                err = read_loop(&shared, reader) => err,
                err = write_loop(&shared) => err,
                () = shared.stop.notified() => closed_error("the connection was closed"),
            };
            shared.kill(err.clone());
            shared.state().dead.clone().unwrap_or(err)
        };
        (pipe, driver)
    }

    /// Queues `cmd`. Returns true when the caller must see that [`Pipe::flush`] is called soon
    /// (nobody is writing); a dead pipe finishes the command at once with its failure.
    pub fn submit(&self, cmd: Box<dyn Command>) -> bool {
        let mut st = self.shared.state();
        if let Some(err) = &st.dead {
            let err = err.clone();
            drop(st);
            cmd.finish(Err(err));
            return false;
        }
        st.out.extend_from_slice(cmd.packed());
        st.waiters.push_back(cmd);
        !st.writing
    }

    /// Writes out what was submitted, on this thread, unless another writer is at it; what the
    /// socket cannot take now is left to the driver.
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Sends one command and waits for its reply.
    ///
    /// # Errors
    /// The socket's failure.
    pub async fn send(&self, bytes: &[u8]) -> Reply {
        let (tx, rx) = oneshot::channel();
        let cmd = Oneshot {
            packed: bytes.to_vec(),
            tx,
        };
        if self.submit(Box::new(cmd)) {
            self.flush();
        }
        rx.await
            .unwrap_or_else(|_| Err(closed_error("the connection was closed")))
    }

    /// True once the socket failed or was closed.
    pub fn is_dead(&self) -> bool {
        self.shared.state().dead.is_some()
    }

    /// True when both handles are the same pipe.
    pub fn same(&self, other: &Pipe) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
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
        self.stop.notify_one();
        for waiter in waiters {
            waiter.finish(Err(err.clone()));
        }
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
                match self.io.try_write(&buf[off..]) {
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

/// Finishes the writes the socket could not take at once.
async fn write_loop(shared: &Shared) -> RedisError {
    loop {
        shared.writer.notified().await;
        let Some((mut buf, mut off)) = shared.state().held.take() else {
            continue;
        };
        loop {
            while off < buf.len() {
                match shared.io.try_write(&buf[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = shared.io.writable().await {
                            return e.into();
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

/// Reads replies and hands them to the waiters in order.
async fn read_loop(shared: &Shared, mut reader: Reader) -> RedisError {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut need = 0usize;
    let mut replies: Vec<Value> = Vec::new();
    let mut waiters: Vec<Waiter> = Vec::new();
    loop {
        let want = need.saturating_sub(buf.len()).max(READ_CHUNK);
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return closed_error("the server closed the connection"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return e.into(),
        }
        let mut pos = 0;
        need = 0;
        loop {
            match resp::parse(&buf[pos..], &mut need) {
                Ok(Some((value, used))) => {
                    replies.push(value);
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => return protocol_error(&e.0),
            }
        }
        if pos == buf.len() {
            buf.clear();
        } else if pos > 0 {
            buf.drain(..pos);
        }
        if replies.is_empty() {
            continue;
        }
        {
            let mut st = shared.state();
            if st.waiters.len() < replies.len() {
                drop(st);
                return protocol_error("a reply came for no command");
            }
            waiters.extend(st.waiters.drain(..replies.len()));
        }
        for (waiter, reply) in waiters.drain(..).zip(replies.drain(..)) {
            waiter.finish(Ok(reply));
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
