//! Network: one listener per core on the same port (SO_REUSEPORT, set by glommio), and the connection
//! loop. A connection stays on the core that accepted it.
//!
//! A connection is two tasks on its core: the reader parses frames and starts one handler task per request
//! (so requests are pipelined), handing the tasks in arrival order to the writer over a bounded local
//! channel; the writer awaits them in that order and writes each response, so responses leave in request
//! order whatever order the handlers finish in. The bounded channel caps requests in flight per connection
//! (`limits::CONNECTION_IN_FLIGHT_MAX`): when it is full the reader stops reading, which is the backpressure.
//!
//! Fault model: every byte from a client is hostile until checked. A frame length is checked against
//! `socket.request.max.bytes` before anything is sized from it; the frame's bytes are then charged to the
//! core's `queued.max.request.bytes` budget before they are allocated (a connection that would exceed it
//! waits, unread, until other requests finish: backpressure instead of unbounded buffering). A client that
//! sends nothing, or does not read its responses, for `connections.max.idle.ms` is disconnected, so a stalled
//! peer holds at most its in-flight requests and never blocks its core. Past `max.connections` (counted over
//! the whole broker) a new connection is closed at once. A request the broker cannot parse closes that
//! connection only.

pub mod admin_http;
pub mod peer;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};

use crate::dispatch::{self, Reply};
use crate::limits;
use crate::protocol;
use crate::shard::budget::response_budget;
use crate::shard::Shard;

/// Checks that no other live process listens on the port before this broker binds it.
///
/// The listeners bind with SO_REUSEPORT (one per core) and SO_REUSEADDR (so connections of a stopped
/// broker, Kafka or Ringtide, lingering in TIME_WAIT do not block the port). SO_REUSEPORT would also let
/// us share the port with another process's listener, so the sockets listening on it are looked up in
/// `/proc/net/tcp{,6}` and their owners in `/proc/*/fd`:
/// - a listener held by a live process: refused (the error names the process);
/// - a listener held by no process (a killed broker's socket, torn down asynchronously by the kernel
///   after its io_uring instances go away, for up to ~100 ms): waited for, up to
///   `limits::PORT_TAKEOVER_WAIT_MS_MAX`, with one log line, so `kill -9` and an immediate restart work.
pub fn check_port_free(_host: &str, port: u16) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(limits::PORT_TAKEOVER_WAIT_MS_MAX);
    let mut told = false;
    loop {
        let listeners = listeners_on(port);
        if listeners.is_empty() {
            return Ok(());
        }
        let me = std::process::id();
        if let Some(pid) = listeners.iter().flatten().find(|&&pid| pid != me) {
            let what = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("Address already in use: process {pid} ({what}) listens on port {port}"),
            ));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "Address already in use: a listener without a process held port {port} for {} ms",
                    limits::PORT_TAKEOVER_WAIT_MS_MAX
                ),
            ));
        }
        if !told {
            tracing::info!(port, "waiting for a previous broker's listener to close");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The sockets in LISTEN state on `port`, each with the pid of a process that holds it (`None`: no
/// process holds it, or the owner could not be found). If `/proc/net/tcp*` cannot be read, one
/// unknown-owner entry (assume the worst).
fn listeners_on(port: u16) -> Vec<Option<u32>> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if !readable {
        return vec![None];
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut owners: Vec<Option<u32>> = vec![None; inodes.len()];
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if let Some(i) = inodes.iter().position(|n| target.as_os_str() == n.as_str()) {
                        owners[i] = Some(pid);
                    }
                }
            }
        }
    }
    owners
}

/// Binds this core's listener: SO_REUSEPORT (one listener per core, the kernel spreads connections) and
/// SO_REUSEADDR (TIME_WAIT connections of an earlier broker on this port do not block it).
pub fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{host}:{port} resolves to no address")))?;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(limits::LISTEN_BACKLOG)?;
    // SAFETY: the fd is a bound, listening TCP socket that we own; glommio takes it over.
    Ok(unsafe {
        <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            sock,
        ))
    })
}

/// Open client connections over the whole broker (every core), for `max.connections`.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Client connections open on all cores now.
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// The connections of one core: their limits, the core's request-memory budget, and the open sockets (so
/// that shutdown can stop them reading).
///
/// Owned by the core that accepted the connections.
pub struct Connections {
    max_connections: usize,
    idle: Duration,
    /// `queued.max.request.bytes` of this core, in bytes of request frames being read or handled.
    request_bytes: Rc<Semaphore>,
    request_bytes_max: u64,
    open: RefCell<HashMap<u64, RawFd>>,
    next_id: Cell<u64>,
    /// Connections refused because `max.connections` was reached.
    pub refused: Cell<u64>,
}

impl Connections {
    pub fn new(config: &crate::config::Config) -> Rc<Connections> {
        Rc::new(Connections {
            max_connections: config.max_connections,
            idle: Duration::from_millis(config.connections_max_idle_ms),
            request_bytes: Rc::new(Semaphore::new(config.queued_max_request_bytes)),
            request_bytes_max: config.queued_max_request_bytes,
            open: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            refused: Cell::new(0),
        })
    }

    /// Connections open on this core.
    pub fn len(&self) -> usize {
        self.open.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.borrow().is_empty()
    }

    /// Bytes of this core's request budget in use now.
    pub fn request_bytes_in_use(&self) -> u64 {
        self.request_bytes_max - self.request_bytes.available()
    }

    /// Stops every connection of this core from reading further requests: each reader sees end of input,
    /// lets its writer answer what is in flight, and the connection closes. Used by shutdown.
    pub fn stop_reading(&self) {
        for &fd in self.open.borrow().values() {
            // SAFETY: `fd` is the socket of a connection that is still open: it is removed from `open`
            // (by `Registered::drop`) before its stream is dropped.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }

    /// Closes every connection of this core at once (both directions), in-flight requests or not.
    pub fn close_all(&self) {
        for &fd in self.open.borrow().values() {
            // SAFETY: as in `stop_reading`.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// Waits until every connection of this core has closed, or `deadline`. True if all closed.
    pub async fn wait_closed(&self, deadline: Instant) -> bool {
        while !self.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn register(self: &Rc<Self>, fd: RawFd) -> Registered {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.open.borrow_mut().insert(id, fd);
        Registered {
            conns: self.clone(),
            id,
        }
    }
}

/// A connection's entry in [`Connections`] and in the broker-wide count; removed on drop.
struct Registered {
    conns: Rc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.open.borrow_mut().remove(&self.id);
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until the shard stops.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, conns: Rc<Connections>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if shard.stopping.get() {
                    return;
                }
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.stopping.get() {
            return;
        }
        if OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed) >= conns.max_connections {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
            let refused = conns.refused.get() + 1;
            conns.refused.set(refused);
            // One line per power of two refused, so a flood does not flood the log.
            if refused.is_power_of_two() {
                tracing::warn!(
                    max_connections = conns.max_connections,
                    refused,
                    "max.connections reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let registered = conns.register(fd);
        let _ = stream.set_nodelay(true);
        let shard = shard.clone();
        let conns = conns.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            crate::metrics::connection_opened();
            if let Err(e) = serve_connection(shard, &conns, stream).await {
                tracing::debug!(?peer, error = %e, "connection closed");
            }
            crate::metrics::connection_closed();
            drop(registered);
        })
        .detach();
    }
}

/// One half of a connection. Both halves borrow the stream only inside a poll, never across an await,
/// and glommio keeps separate read and write wakers, so the reader and writer tasks can share it.
struct Half(Rc<RefCell<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A response on its way.
type Pending = glommio::task::JoinHandle<Reply>;

/// Runs `fut` for at most `limit`; `None` if the time ran out first (then `fut` is dropped). A future that
/// is ready at once (bytes already buffered: the pipelined fast path) completes without arming a timer.
async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    if let Some(v) = futures_lite::future::poll_once(fut.as_mut()).await {
        return Some(v);
    }
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

fn idle_error(idle: Duration, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{what} for connections.max.idle.ms ({} ms)",
            idle.as_millis()
        ),
    )
}

async fn serve_connection(
    shard: Rc<Shard>,
    conns: &Rc<Connections>,
    stream: TcpStream,
) -> io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let stream = Rc::new(RefCell::new(stream));
    let mut reader = Half(stream.clone());
    let mut writer = Half(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(limits::CONNECTION_IN_FLIGHT_MAX);
    let in_flight = Rc::new(Cell::new(0usize));
    let idle = conns.idle;

    let writer_in_flight = in_flight.clone();
    let writer_task = glommio::spawn_local(async move {
        while let Some(pending) = rx.recv().await {
            let reply = pending.await;
            writer_in_flight.set(writer_in_flight.get() - 1);
            let reason = match reply {
                // A peer that reads nothing for the idle time cannot pin this connection's memory forever.
                Some(Reply::Frame(frame)) => match within(idle, writer.write_all(&frame)).await {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => e.to_string(),
                    None => idle_error(idle, "the client read no response").to_string(),
                },
                Some(Reply::Frames(chunks, _charge)) => {
                    match within(idle, write_chunks(fd, &mut writer, &chunks)).await {
                        Some(Ok(())) => continue,
                        Some(Err(e)) => e.to_string(),
                        None => idle_error(idle, "the client read no response").to_string(),
                    }
                }
                Some(Reply::Nothing) => continue,
                Some(Reply::Close(reason)) => {
                    tracing::warn!(%reason, "closing connection");
                    reason
                }
                // The handler was cancelled: close rather than answer out of order.
                None => "request handler failed".to_string(),
            };
            // Wake the reader (blocked in a read) with EOF so the whole connection ends.
            // SAFETY: `fd` is the stream's open socket; the stream outlives this task.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            return Err(io::Error::other(reason));
        }
        writer.flush().await?;
        Ok::<(), io::Error>(())
    });

    let max = shard.config.socket_request_max_bytes;
    let ctx = ReadCtx {
        shard: &shard,
        conns,
        tx: &tx,
        in_flight: &in_flight,
        max,
    };
    let result = read_loop(&ctx, &mut reader).await;
    if result.is_err() {
        // Stop the writer too: the connection is over.
        // SAFETY: as above.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    drop(tx);
    let written = writer_task.await;
    result.and(written)
}

/// Chunks handed to one `sendmsg` at most (Linux's IOV_MAX is 1024).
const IOVECS_PER_WRITE_MAX: usize = 64;

/// Writes `chunks` in order with vectored, non-blocking `sendmsg` calls; when the socket buffer is full it
/// waits through the stream (glommio's write waits for the socket to drain, then sends some bytes).
async fn write_chunks(fd: RawFd, writer: &mut Half, chunks: &[Bytes]) -> io::Result<()> {
    let mut i = 0usize; // first chunk not fully written
    let mut at = 0usize; // bytes of chunk `i` already written
    while i < chunks.len() {
        if chunks[i].len() == at {
            i += 1;
            at = 0;
            continue;
        }
        let mut iov: [libc::iovec; IOVECS_PER_WRITE_MAX] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOVECS_PER_WRITE_MAX];
        let mut n_iov = 0;
        for (k, c) in chunks[i..].iter().enumerate().take(IOVECS_PER_WRITE_MAX) {
            let c = if k == 0 { &c[at..] } else { &c[..] };
            iov[n_iov] = libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            };
            n_iov += 1;
        }
        // SAFETY: `iov` points into `chunks`, which outlive the call; `fd` is this connection's open socket.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = n_iov as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let mut advance = if sent >= 0 {
            sent as usize
        } else {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => 0,
                io::ErrorKind::WouldBlock => {
                    // Full socket buffer: let glommio wait for room and send part of this chunk.
                    match writer.write(&chunks[i][at..]).await? {
                        0 => return Err(io::ErrorKind::WriteZero.into()),
                        n => n,
                    }
                }
                _ => return Err(e),
            }
        };
        while advance > 0 {
            let left = chunks[i].len() - at;
            if advance >= left {
                advance -= left;
                i += 1;
                at = 0;
            } else {
                at += advance;
                advance = 0;
            }
        }
    }
    Ok(())
}

/// What the reader of one connection works with.
struct ReadCtx<'a> {
    shard: &'a Rc<Shard>,
    conns: &'a Rc<Connections>,
    tx: &'a local_channel::LocalSender<Pending>,
    in_flight: &'a Rc<Cell<usize>>,
    max: usize,
}

/// Reads the 4-byte length of the next frame. `Ok(None)` at a clean end of input between frames.
/// A client idle for `connections.max.idle.ms` (nothing read, nothing in flight) is disconnected.
async fn read_frame_len(ctx: &ReadCtx<'_>, reader: &mut Half) -> io::Result<Option<i32>> {
    let idle = ctx.conns.idle;
    let mut len_buf = [0u8; 4];
    let mut got = 0usize;
    let mut last_activity = Instant::now();
    while got < 4 {
        // Cancelling a pending read loses nothing: glommio keeps the socket's receive buffer.
        match within(idle, reader.read(&mut len_buf[got..])).await {
            Some(Ok(0)) if got == 0 => return Ok(None),
            Some(Ok(0)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame length",
                ))
            }
            Some(Ok(n)) => {
                got += n;
                last_activity = Instant::now();
            }
            Some(Err(e)) => return Err(e),
            None => {
                // Requests still being answered (a long-poll fetch, say) are activity.
                if got == 0 && ctx.in_flight.get() > 0 {
                    continue;
                }
                if last_activity.elapsed() >= idle {
                    return Err(idle_error(idle, "no request"));
                }
            }
        }
    }
    Ok(Some(i32::from_be_bytes(len_buf)))
}

/// Reads a whole frame of `len` bytes into a buffer of exactly that size, without zero-filling it first
/// (zeroing every produce request cost ~7% of the broker's CPU under load).
async fn read_frame(reader: &mut Half, len: usize) -> io::Result<Bytes> {
    let mut frame = BytesMut::with_capacity(len);
    while frame.len() < len {
        let want = len - frame.len();
        let spare = &mut frame.spare_capacity_mut()[..want];
        // SAFETY: the socket read only writes into these bytes (it never reads them), and only the
        // `n` bytes it reports as written are added to the buffer's length below.
        let buf = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        let n = reader.read(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: `n` more bytes were initialized by the read above.
        unsafe { frame.set_len(frame.len() + n) };
    }
    Ok(frame.freeze())
}

async fn read_loop(ctx: &ReadCtx<'_>, reader: &mut Half) -> io::Result<()> {
    loop {
        let Some(raw) = read_frame_len(ctx, reader).await? else {
            return Ok(());
        };
        // The length is checked before any buffer is sized from it.
        let len = protocol::check_frame_len(raw, ctx.max).map_err(|e| {
            tracing::warn!(error = %e, "closing connection");
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })?;
        // While the answers in flight on this core use up its response budget, read nothing new.
        response_budget().wait_room().await;
        // Charge the frame to the core's request budget before allocating it. A frame larger than the
        // whole budget takes all of it (config validation keeps that from starving: see limits).
        let units = (len as u64).min(ctx.conns.request_bytes_max);
        let permit: StaticPermit = ctx
            .conns
            .request_bytes
            .acquire_static_permit(units)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let frame = match within(ctx.conns.idle, read_frame(reader, len)).await {
            Some(r) => r?,
            None => return Err(idle_error(ctx.conns.idle, "a frame stalled")),
        };
        let prefix = protocol::peek_prefix(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let shard = ctx.shard.clone();
        let task = glommio::spawn_local(async move {
            let reply = dispatch::handle(&shard, prefix, frame).await;
            // The request's bytes are gone once it is handled; the response is not charged.
            drop(permit);
            reply
        })
        .detach();
        ctx.in_flight.set(ctx.in_flight.get() + 1);
        if ctx.tx.send(task).await.is_err() {
            return Ok(()); // the writer is gone (write error); it reports why
        }
    }
}
