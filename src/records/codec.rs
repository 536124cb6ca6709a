//! The records inside a v2 batch, decoded and encoded whole: what the log cleaner rewrites and what the
//! produce checks of a compacted topic read (a key per record).
//!
//! Record layout (Kafka's `DefaultRecord`): varint length, i8 attributes, varlong timestamp delta, varint
//! offset delta, varint key length + key (-1 = null), varint value length + value (-1 = null = a
//! tombstone), varint header count, headers. Batches are decompressed whole (gzip, snappy raw or
//! xerial-framed, lz4 frame, zstd) and re-compressed with the same codec. Bytes from disk or the wire
//! are never trusted: any malformed field is a [`RecordError`], never a panic.

use std::io::{Read, Write};

use super::{
    compute_crc, put_varint, BatchHeader, Compression, RecordError, ATTRIBUTES_OFFSET, CRC_OFFSET,
    HEADER_BYTES, LOG_OVERHEAD_BYTES,
};

/// Attribute bit of a batch whose base timestamp is the delete horizon (KIP-534): tombstones (and
/// transaction markers) in it may be removed once the horizon has passed.
pub const ATTR_DELETE_HORIZON_BIT: i16 = 0x40;

/// Bytes a snappy batch may claim to decompress to, per byte of its compressed records. Snappy cannot
/// expand more than about 21x (a 3-byte copy element yields at most 64 bytes), so a larger claim is
/// corrupt data, refused before any allocation.
const SNAPPY_EXPANSION_MAX: usize = 32;
/// The stream header of xerial snappy framing, which Kafka's Java producer writes.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version and compatible version.
pub const XERIAL_HEADER_BYTES: usize = 16;
/// Uncompressed bytes per xerial snappy block (as Kafka's Java client writes them).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

fn corrupt(reason: &'static str) -> RecordError {
    RecordError::Corrupt {
        position: 0,
        reason,
    }
}

/// Snappy as Kafka writes it: xerial framing (Java producer: a 16-byte header, then blocks of a 4-byte
/// big-endian length and a raw snappy block) or one raw snappy block (librdkafka), like xerial's
/// `SnappyInputStream`, which reads both.
pub fn snappy_decompress(body: &[u8]) -> Result<Vec<u8>, RecordError> {
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(block).map_err(|_| corrupt("bad snappy block"))?;
        if len > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) + 64 {
            return Err(corrupt("snappy block claims an impossible length"));
        }
        let at = out.len();
        out.resize(at + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(block, &mut out[at..])
            .map_err(|_| corrupt("bad snappy block"))?;
        out.truncate(at + n);
        Ok(())
    };
    let mut out = Vec::new();
    if body.len() >= XERIAL_HEADER_BYTES && body.starts_with(&XERIAL_MAGIC) {
        let mut rest = &body[XERIAL_HEADER_BYTES..];
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("torn xerial snappy block length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            let block = tail
                .get(..len)
                .ok_or_else(|| corrupt("xerial snappy block runs past the batch"))?;
            raw(block, &mut out)?;
            rest = &tail[len..];
        }
    } else {
        raw(body, &mut out)?;
    }
    Ok(out)
}

/// The records of `batch` (header `h`), decompressed, at most `limit` bytes of them.
pub fn records_body(batch: &[u8], h: &BatchHeader, limit: usize) -> Result<Vec<u8>, RecordError> {
    let body = batch
        .get(HEADER_BYTES..h.total_size())
        .ok_or_else(|| corrupt("batch shorter than its length field"))?;
    let read_all = |mut r: Box<dyn Read + '_>| -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        (&mut r)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| corrupt("records could not be decompressed"))?;
        if out.len() > limit {
            return Err(corrupt("records decompress past the limit"));
        }
        Ok(out)
    };
    match h.compression() {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => read_all(Box::new(flate2::read::MultiGzDecoder::new(body))),
        Compression::Snappy => {
            let out = snappy_decompress(body)?;
            if out.len() > limit {
                return Err(corrupt("records decompress past the limit"));
            }
            Ok(out)
        }
        Compression::Lz4 => read_all(Box::new(lz4_flex::frame::FrameDecoder::new(body))),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            read_all(Box::new(d))
        }
        Compression::Unknown(_) => Err(corrupt("unknown compression codec")),
    }
}

/// One decoded record, borrowing from the decompressed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: u8,
    /// Absolute timestamp (base timestamp + delta; the batch's max timestamp with LogAppendTime).
    pub timestamp: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The header count and headers, as encoded.
    pub headers: &'a [u8],
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or_else(|| corrupt("record runs past the end of the batch"))?;
        self.at += 1;
        Ok(b)
    }

    fn zigzag(&mut self, max_bytes: u32) -> Result<i64, RecordError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(corrupt("varint is too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        Ok(self.zigzag(5)? as i32)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| corrupt("record runs past the end of the batch"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn nullable(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(corrupt("negative field length")),
            n => Ok(Some(self.take(n as usize)?)),
        }
    }
}

/// The `records_count` records of a batch (header `h`) from its decompressed records `body`.
pub fn parse_records<'a>(body: &'a [u8], h: &BatchHeader) -> Result<Vec<Record<'a>>, RecordError> {
    let count = usize::try_from(h.records_count).map_err(|_| corrupt("negative record count"))?;
    // Every record takes at least 7 bytes: a count larger than that allows is corrupt, refused before
    // allocating for it.
    if count > body.len() / 7 + 1 {
        return Err(corrupt("record count larger than the records"));
    }
    let log_append_time = h.is_log_append_time().then_some(h.max_timestamp);
    let mut out = Vec::with_capacity(count);
    let mut c = Cursor { buf: body, at: 0 };
    for _ in 0..count {
        let length = c.varint()?;
        let length = usize::try_from(length).map_err(|_| corrupt("negative record length"))?;
        let record = c.take(length)?;
        let mut r = Cursor { buf: record, at: 0 };
        let attributes = r.byte()?;
        let ts_delta = r.zigzag(10)?;
        let offset_delta = r.varint()?;
        let key = r.nullable()?;
        let value = r.nullable()?;
        let headers = &record[r.at..];
        out.push(Record {
            attributes,
            timestamp: log_append_time.unwrap_or_else(|| h.base_timestamp.wrapping_add(ts_delta)),
            offset_delta,
            key,
            value,
            headers,
        });
    }
    if c.at != body.len() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok(out)
}

fn compress(codec: Compression, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(raw.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(raw)?;
            e.finish()
        }
        Compression::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for chunk in raw.chunks(XERIAL_BLOCK_BYTES) {
                let c = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .map_err(std::io::Error::other)?;
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(raw)?;
            e.finish().map_err(std::io::Error::other)
        }
        Compression::Zstd => zstd::encode_all(raw, 3),
        Compression::Unknown(c) => Err(std::io::Error::other(format!("unknown codec {c}"))),
    }
}

/// A batch of `records` with the identity of `original` (base offset, last offset delta, leader epoch,
/// producer id, epoch and base sequence, codec, timestamp type, transactional and control bits), as
/// Kafka's cleaner writes a batch it kept only some records of. `delete_horizon`: the base timestamp
/// becomes the horizon and the batch is flagged (KIP-534); record timestamps stay what they were.
/// `records` may be empty: the header alone keeps a producer's last sequence (Kafka keeps such batches).
pub fn encode_batch(
    original: &BatchHeader,
    records: &[Record<'_>],
    delete_horizon: Option<i64>,
) -> std::io::Result<Vec<u8>> {
    let log_append_time = original.is_log_append_time();
    let first_ts = records
        .first()
        .map_or(original.base_timestamp, |r| r.timestamp);
    let base_timestamp = match (delete_horizon, log_append_time) {
        (Some(horizon), _) => horizon,
        (None, true) => original.base_timestamp,
        (None, false) => first_ts,
    };
    let max_timestamp = if log_append_time {
        original.max_timestamp
    } else {
        records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(original.max_timestamp)
    };
    let mut raw = Vec::new();
    let mut rec = Vec::new();
    for r in records {
        rec.clear();
        rec.push(r.attributes);
        let ts = if log_append_time {
            0
        } else {
            r.timestamp.wrapping_sub(base_timestamp)
        };
        put_varint(&mut rec, ts);
        put_varint(&mut rec, i64::from(r.offset_delta));
        for field in [r.key, r.value] {
            match field {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        rec.extend_from_slice(r.headers);
        put_varint(&mut raw, rec.len() as i64);
        raw.extend_from_slice(&rec);
    }
    let body = if records.is_empty() {
        Vec::new()
    } else {
        compress(original.compression(), &raw)?
    };
    let mut attributes = original.attributes & !ATTR_DELETE_HORIZON_BIT;
    if delete_horizon.is_some() {
        attributes |= ATTR_DELETE_HORIZON_BIT;
    }
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&original.base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&original.partition_leader_epoch.to_be_bytes());
    b.push(original.magic as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&original.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&max_timestamp.to_be_bytes());
    b.extend_from_slice(&original.producer_id.to_be_bytes());
    b.extend_from_slice(&original.producer_epoch.to_be_bytes());
    b.extend_from_slice(&original.base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    debug_assert_eq!(ATTRIBUTES_OFFSET, CRC_OFFSET + 4);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

/// The delete horizon of a batch (KIP-534), if its base timestamp holds one.
pub fn delete_horizon(h: &BatchHeader) -> Option<i64> {
    (h.attributes & ATTR_DELETE_HORIZON_BIT != 0).then_some(h.base_timestamp)
}

/// Indexes (within the batch) of the records without a key, for the produce check of a compacted topic.
pub fn keyless_records(
    batch: &[u8],
    h: &BatchHeader,
    limit: usize,
) -> Result<Vec<usize>, RecordError> {
    let body = records_body(batch, h, limit)?;
    Ok(parse_records(&body, h)?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{build_batch, verify_crc};

    #[test]
    fn round_trip_every_codec() {
        let b = build_batch(
            &[
                (Some(&b"k1"[..]), Some(&b"v1"[..])),
                (None, None),
                (Some(&b"k3"[..]), Some(&b"v3"[..])),
            ],
            1000,
        );
        let h = BatchHeader::parse(&b).unwrap();
        let body = records_body(&b, &h, 1 << 20).unwrap();
        let recs = parse_records(&body, &h).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[2].value, Some(&b"v3"[..]));
        assert_eq!(keyless_records(&b, &h, 1 << 20).unwrap(), vec![1]);
        for codec in 0..=4i16 {
            let mut orig = h;
            orig.attributes = codec;
            let kept = [recs[0], recs[2]];
            let out = encode_batch(&orig, &kept, None).unwrap();
            assert!(verify_crc(&out));
            let oh = BatchHeader::parse(&out).unwrap();
            assert_eq!(
                (oh.base_offset, oh.last_offset_delta, oh.records_count),
                (0, 2, 2)
            );
            let ob = records_body(&out, &oh, 1 << 20).unwrap();
            let back = parse_records(&ob, &oh).unwrap();
            assert_eq!(back, kept.to_vec());
        }
        // A delete horizon moves the base timestamp, never the records' own timestamps.
        let out = encode_batch(&h, &recs, Some(99_999)).unwrap();
        let oh = BatchHeader::parse(&out).unwrap();
        assert_eq!(delete_horizon(&oh), Some(99_999));
        let ob = records_body(&out, &oh, 1 << 20).unwrap();
        assert_eq!(parse_records(&ob, &oh).unwrap(), recs);
        // An empty batch keeps the header.
        let out = encode_batch(&h, &[], None).unwrap();
        let oh = BatchHeader::parse(&out).unwrap();
        assert_eq!((oh.records_count, oh.last_offset_delta), (0, 2));
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let b = build_batch(&[(Some(&b"k"[..]), Some(&b"v"[..]))], 1);
        let h = BatchHeader::parse(&b).unwrap();
        for cut in 0..b.len() - HEADER_BYTES {
            let body = &b[HEADER_BYTES..HEADER_BYTES + cut];
            assert!(parse_records(body, &h).is_err());
        }
        let mut many = h;
        many.records_count = i32::MAX;
        assert!(parse_records(&b[HEADER_BYTES..], &many).is_err());
    }
}
