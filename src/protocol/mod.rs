//! The Kafka wire protocol, sans-io: frames in, typed requests out; typed responses in, frames out.
//!
//! The codec is the `kafka-protocol` crate. This module adds what it leaves to the server: reading the
//! fixed part of a request header before trusting anything (so an unknown API key or version still gets
//! an answer or a clean close), and framing responses. It knows nothing of the runtime.

pub mod errors;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The fixed prefix every request header starts with, read without the codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative or zero")]
    NonPositive(i32),
    #[error("frame length {len} exceeds socket.request.max.bytes {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("malformed request header: {0}")]
    BadHeader(String),
}

/// Checks a 4-byte frame length before any buffer is sized from it.
pub fn check_frame_len(raw: i32, max: usize) -> Result<usize, FrameError> {
    if raw <= 0 {
        return Err(FrameError::NonPositive(raw));
    }
    let len = raw as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len < crate::limits::REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooShort(len));
    }
    Ok(len)
}

/// Reads api key, version and correlation id from a frame body (after the length).
pub fn peek_prefix(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if frame.len() < crate::limits::REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooShort(frame.len()));
    }
    let mut b = frame;
    Ok(HeaderPrefix {
        api_key: b.get_i16(),
        api_version: b.get_i16(),
        correlation_id: b.get_i32(),
    })
}

/// Decodes the full request header of a known API and returns it with the body that follows.
/// The body shares the frame's memory (no copy).
pub fn decode_header(
    key: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> Result<(RequestHeader, Bytes), FrameError> {
    let header_version = key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok((header, frame))
}

/// Encodes a response frame: 4-byte length, response header, body.
pub fn encode_response<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &R,
    version: i16,
) -> Result<Bytes, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let hsize = header
        .compute_size(header_version)
        .map_err(|e| e.to_string())?;
    let bsize = body.compute_size(version).map_err(|e| e.to_string())?;
    let total = hsize + bsize;
    let mut buf = BytesMut::with_capacity(4 + total);
    buf.put_i32(total as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    debug_assert_eq!(buf.len(), 4 + total);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;

    #[test]
    fn frame_len_checks() {
        assert_eq!(check_frame_len(0, 100), Err(FrameError::NonPositive(0)));
        assert_eq!(check_frame_len(-5, 100), Err(FrameError::NonPositive(-5)));
        assert_eq!(
            check_frame_len(i32::MAX, 100),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(check_frame_len(3, 100), Err(FrameError::TooShort(3)));
        assert_eq!(check_frame_len(50, 100), Ok(50));
    }

    #[test]
    fn prefix_of_short_frame_is_error() {
        assert!(peek_prefix(&[0, 18, 0]).is_err());
        let p = peek_prefix(&[0, 18, 0, 3, 0, 0, 0, 7]).unwrap();
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
    }

    #[test]
    fn truncated_header_is_error_not_panic() {
        // ApiVersions v3 uses header v2 (flexible): a client id length that runs past the end.
        let frame = Bytes::from_static(&[0, 18, 0, 3, 0, 0, 0, 7, 0x7f, 0xff]);
        assert!(decode_header(ApiKey::ApiVersions, 3, frame).is_err());
    }

    #[test]
    fn response_frame_has_length_prefix() {
        let r = ApiVersionsResponse::default();
        let f = encode_response(42, 0, &r, 0).unwrap();
        let len = i32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len + 4, f.len());
        assert_eq!(&f[4..8], &42i32.to_be_bytes());
    }
}
