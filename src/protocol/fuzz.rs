//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), here so that the stable corpus replay test
//! (`tests/fuzz_corpus.rs`, part of `cargo test`) runs exactly the same checks on every corpus file.
//! Each function panics if an invariant breaks; a panic is a finding.

use bytes::Bytes;

use super::{decode_request, decode_stream, encode_request};
use crate::records;

/// Largest frame the request target accepts: keeps each fuzz input cheap.
pub const FUZZ_FRAME_BYTES_MAX: usize = 1 << 20;
/// `max_message_bytes` the records target validates with.
pub const FUZZ_MESSAGE_BYTES_MAX: usize = 1 << 20;

/// Request framing and decoding: `data` is a client's byte stream. Every frame must be framed, checked and
/// decoded without a panic or an unbounded allocation; every frame that decodes must re-encode, and the
/// re-encoded bytes must go through the decoder again without a panic. Exact equality after a round trip
/// is asserted by the property tests on canonical requests only: fuzzing found two kafka-protocol 0.18
/// asymmetries on non-canonical input (a tagged-field varint with a redundant continuation byte in a
/// Produce v9; unknown tagged fields of LeaveGroup v5 re-encoded in another order), both kept in
/// `fuzz/corpus/requests/fuzz-*`. The broker never re-encodes a request, so neither matters to it.
pub fn request_stream(data: &[u8]) -> usize {
    let mut decoded = 0;
    for r in decode_stream(data, FUZZ_FRAME_BYTES_MAX) {
        let Ok(req) = r else { continue };
        decoded += 1;
        assert_eq!(
            req.header.request_api_key, req.prefix.api_key,
            "header and prefix disagree"
        );
        let bytes = encode_request(&req).expect("a decoded request re-encodes");
        let _ = decode_request(bytes);
    }
    decoded
}

/// Record-batch validation on untrusted bytes: must not panic; what it accepts must be exactly the whole
/// input, in whole batches with good CRCs; the offset and epoch patches the log applies keep CRCs valid.
pub fn record_batches(data: &[u8]) -> usize {
    let mut positions = 0;
    for item in records::iter_batches(data) {
        match item {
            Ok((pos, h)) => {
                assert!(pos >= positions, "iter_batches went backwards");
                positions = pos + h.total_size();
                assert!(positions <= data.len());
            }
            Err(_) => break,
        }
    }
    let Ok(headers) = records::validate_batches(data, FUZZ_MESSAGE_BYTES_MAX) else {
        return 0;
    };
    assert_eq!(
        headers.iter().map(|h| h.total_size()).sum::<usize>(),
        data.len(),
        "validated batches do not cover the input"
    );
    let mut copy = data.to_vec();
    let mut at = 0;
    for h in &headers {
        let b = &mut copy[at..at + h.total_size()];
        assert!(records::verify_crc(b));
        records::set_base_offset(b, 1 << 40);
        records::set_partition_leader_epoch(b, 7);
        assert!(records::verify_crc(b), "offset/epoch patch broke the CRC");
        let h2 = records::BatchHeader::parse(b).expect("header still parses");
        assert_eq!(h2.base_offset, 1 << 40);
        assert_eq!(h2.last_offset_delta, h.last_offset_delta);
        at += h.total_size();
    }
    let _ = Bytes::from(copy);
    headers.len()
}
