//! Requests to the other brokers of a cluster (issue 14): the inter-broker client.
//!
//! A broker sends Kafka requests to another broker's client listener, as Kafka's inter-broker channel
//! does: today the transaction coordinator's WriteTxnMarkers to the leaders of a transaction's
//! partitions on other brokers. Each core has its own [`Peers`] (owned by that core, a field of its
//! `Shard` behind [`crate::cluster::PeerLink`]), with at most [`limits::PEER_IDLE_CONNECTIONS_MAX`]
//! idle connections per peer; a request takes one (or opens one), and gives it back once answered.
//!
//! Fault model: a peer is another broker, so its bytes are checked like a client's: a response frame
//! longer than [`limits::PEER_RESPONSE_MAX_BYTES`] or with another correlation id closes that
//! connection with an error; connecting, writing and reading each time out after
//! [`limits::PEER_REQUEST_TIMEOUT_MS`], so a dead or stalled peer costs the waiting request (which the
//! caller retries) and never blocks the core. A connection that failed in any way is dropped, never
//! reused.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::limits;

/// One core's connections to the other brokers. Owned by that core.
pub struct Peers {
    client_id: String,
    idle: RefCell<HashMap<(String, u16), Vec<TcpStream>>>,
    correlation: Cell<i32>,
}

impl Peers {
    pub fn new(node_id: i32) -> Peers {
        Peers {
            client_id: format!("broker-{node_id}-ringtide"),
            idle: RefCell::default(),
            correlation: Cell::new(0),
        }
    }

    async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
        let timeout = Duration::from_millis(limits::PEER_REQUEST_TIMEOUT_MS);
        // An address literal needs no lookup; a host name is resolved by the OS (brokers advertise
        // addresses in the tests and the examples; a slow resolver would hold this core meanwhile).
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host, port).to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve {host}"))
            })?,
        };
        let stream = TcpStream::connect_timeout(addr, timeout).await?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    }

    async fn exchange(
        &self,
        stream: &mut TcpStream,
        api_key: i16,
        api_version: i16,
        flexible: bool,
        body: &[u8],
    ) -> io::Result<Bytes> {
        let correlation = self.correlation.get().wrapping_add(1);
        self.correlation.set(correlation);
        // Request header v1 (v2 for flexible versions: plus an empty tagged-field section).
        let mut frame = BytesMut::with_capacity(64 + body.len());
        frame.put_i32(0);
        frame.put_i16(api_key);
        frame.put_i16(api_version);
        frame.put_i32(correlation);
        frame.put_i16(self.client_id.len() as i16);
        frame.put_slice(self.client_id.as_bytes());
        if flexible {
            frame.put_u8(0);
        }
        frame.put_slice(body);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&frame).await?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > limits::PEER_RESPONSE_MAX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("peer response of {len} bytes"),
            ));
        }
        let mut resp = vec![0u8; len as usize];
        stream.read_exact(&mut resp).await?;
        let mut resp = Bytes::from(resp);
        let got = resp.get_i32();
        if got != correlation {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("peer answered correlation id {got}, expected {correlation}"),
            ));
        }
        if flexible {
            // Response header v1: tagged fields (none are defined; skip them).
            skip_tagged_fields(&mut resp)?;
        }
        Ok(resp)
    }
}

/// Skips a tagged-field section (unsigned varint count, then tag, size, bytes per field).
fn skip_tagged_fields(buf: &mut Bytes) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "bad tagged fields in a peer response",
        )
    };
    let varint = |buf: &mut Bytes| -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            if !buf.has_remaining() {
                return Err(bad());
            }
            let b = buf.get_u8();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad())
    };
    let count = varint(buf)?;
    for _ in 0..count {
        varint(buf)?;
        let size = varint(buf)? as usize;
        if buf.remaining() < size {
            return Err(bad());
        }
        buf.advance(size);
    }
    Ok(())
}

impl crate::cluster::PeerLink for Peers {
    fn call<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        api_key: i16,
        api_version: i16,
        flexible: bool,
        body: Bytes,
    ) -> LocalBoxFuture<'a, io::Result<Bytes>> {
        Box::pin(async move {
            let key = (host.to_string(), port);
            let pooled = self.idle.borrow_mut().get_mut(&key).and_then(Vec::pop);
            let mut stream = match pooled {
                Some(s) => s,
                None => Self::connect(host, port).await?,
            };
            let resp = self
                .exchange(&mut stream, api_key, api_version, flexible, &body)
                .await?;
            let mut idle = self.idle.borrow_mut();
            let slot = idle.entry(key).or_default();
            if slot.len() < limits::PEER_IDLE_CONNECTIONS_MAX {
                slot.push(stream);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_fields_are_skipped_and_bounds_checked() {
        let mut b = Bytes::from_static(&[0, 7]);
        skip_tagged_fields(&mut b).unwrap();
        assert_eq!(&b[..], &[7]);
        let mut b = Bytes::from_static(&[1, 3, 2, 9, 9, 5]);
        skip_tagged_fields(&mut b).unwrap();
        assert_eq!(&b[..], &[5]);
        let mut b = Bytes::from_static(&[1, 3, 5, 9]);
        assert!(skip_tagged_fields(&mut b).is_err());
        let mut b = Bytes::from_static(&[0x80]);
        assert!(skip_tagged_fields(&mut b).is_err());
    }
}
