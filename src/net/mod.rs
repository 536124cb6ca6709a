//! Network: one listener per core on the same port (SO_REUSEPORT, set by glommio), and the connection
//! loop. A connection stays on the core that accepted it.
//!
//! A connection is two tasks on its core: the reader parses frames and starts one handler task per request
//! (so requests are pipelined), handing the tasks in arrival order to the writer over a bounded local
//! channel; the writer awaits them in that order and writes each response, so responses leave in request
//! order whatever order the handlers finish in. The bounded channel caps requests in flight per connection
//! (`limits::CONNECTION_IN_FLIGHT_MAX`): when it is full the reader stops reading, which is the backpressure.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};

use crate::dispatch;
use crate::limits;
use crate::protocol;
use crate::shard::Shard;

/// Checks that nobody else holds the port: glommio always sets SO_REUSEPORT, which would silently share
/// a port with another process. A plain bind (without SO_REUSEPORT) fails if the port is taken.
pub fn check_port_free(host: &str, port: u16) -> io::Result<()> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    std::net::TcpListener::bind((host, port)).map(drop)
}

/// Binds this core's listener.
pub fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    TcpListener::bind((host, port)).map_err(|e| io::Error::other(e.to_string()))
}

/// Accepts connections until the shard stops.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if shard.stopping.get() {
                    return;
                }
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.stopping.get() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            if let Err(e) = serve_connection(shard, stream).await {
                tracing::debug!(?peer, error = %e, "connection closed");
            }
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

/// What a handler answers for one request.
pub enum Reply {
    /// A response frame, length prefix included.
    Frame(Bytes),
    /// No response (Produce with acks=0).
    Nothing,
    /// Close the connection without answering (what Kafka does for a request it cannot parse).
    Close(String),
}

/// A response on its way.
type Pending = glommio::task::JoinHandle<Reply>;

async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) -> io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let stream = Rc::new(RefCell::new(stream));
    let mut reader = Half(stream.clone());
    let mut writer = Half(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(limits::CONNECTION_IN_FLIGHT_MAX);

    let writer_task = glommio::spawn_local(async move {
        while let Some(pending) = rx.recv().await {
            let reason = match pending.await {
                Some(Reply::Frame(frame)) => match writer.write_all(&frame).await {
                    Ok(()) => continue,
                    Err(e) => e.to_string(),
                },
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
    let result = read_loop(&shard, &mut reader, &tx, max).await;
    drop(tx);
    let written = writer_task.await;
    result.and(written)
}

async fn read_loop(
    shard: &Rc<Shard>,
    reader: &mut Half,
    tx: &local_channel::LocalSender<Pending>,
    max: usize,
) -> io::Result<()> {
    let mut len_buf = [0u8; 4];
    loop {
        match reader.read_exact(&mut len_buf).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let raw = i32::from_be_bytes(len_buf);
        // The length is checked before any buffer is sized from it.
        let len = protocol::check_frame_len(raw, max).map_err(|e| {
            tracing::warn!(error = %e, "closing connection");
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })?;
        let mut frame = BytesMut::zeroed(len);
        reader.read_exact(&mut frame).await?;
        let frame = frame.freeze();
        let prefix = protocol::peek_prefix(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let shard = shard.clone();
        let task =
            glommio::spawn_local(async move { dispatch::handle(&shard, prefix, frame).await })
                .detach();
        if tx.send(task).await.is_err() {
            return Ok(()); // the writer is gone (write error); it reports why
        }
    }
}
