//! ListOffsets by timestamp (`>= 0`) and MAX_TIMESTAMP (-3), answered per record as Kafka 4.4 does.
//!
//! Kafka's answer (`UnifiedLog.fetchOffsetByTimestamp`, `LogSegment.findOffsetByTimestamp`,
//! `FileRecords.searchForTimestamp`, KAFKA-16310 for MAX_TIMESTAMP) is about records, not batches:
//!
//! - by timestamp `t`: take the first segment whose largest timestamp is `>= t`; start at the position the
//!   segment's indexes give for `t` (time index: the last entry with timestamp `<= t`; offset index: the
//!   batch at or before `max(that entry's offset, log start offset)`); in the first batch whose max
//!   timestamp is `>= t`, the first record with timestamp `>= t` and offset `>= log start offset` is the
//!   answer (its own timestamp and offset). A batch whose records do not
//!   bear out its max timestamp is passed over; the search never goes on into the next segment.
//! - MAX_TIMESTAMP: the first segment holding the largest max timestamp; in it the first batch whose max
//!   timestamp is that one; in that batch the first record whose timestamp equals it.
//! - either answer at or above the high watermark is no answer (`Partition.fetchOffsetForTimestamp` sets the
//!   last fetchable offset, `ReplicaManager.fetchOffset` drops a result at or past it): offset -1,
//!   timestamp -1, error NONE.
//!
//! A record's timestamp is the batch's base timestamp plus its delta with CreateTime, and the batch's max
//! timestamp (the append time) with LogAppendTime, as Kafka's `DefaultRecordBatch` iterator gives it.
//!
//! Everything below the high watermark is in the segment files, so only files are read (never the tail
//! cache). Records are decoded as a stream: only the fields before the key are read, the rest of each
//! record is skipped, so a compressed batch costs a decompressor's buffers, not its decompressed size.
//! Bytes from disk are never trusted: a short or malformed record, a bad varint or a codec error is
//! [`StorageError::Corrupt`], never a panic.

use std::io::{self, BufRead, BufReader, Read};

use super::{ensure_window, header_at, DiskRead, Segment, Shared, StorageError, Window};
use crate::records::codec::snappy_decompress;
use crate::records::{BatchHeader, Compression, RecordError, HEADER_BYTES};
use crate::storage::SCAN_WINDOW_BYTES;

/// What a lookup found: Kafka's `TimestampAndOffset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

// ---------------------------------------------------------------------------------------------------
// Records inside one batch (sans-io).

fn corrupt(reason: &'static str) -> RecordError {
    RecordError::Corrupt {
        position: 0,
        reason,
    }
}

/// Calls `f(offset, timestamp)` for every record of `batch` (one whole v2 batch, header `h`), in offset
/// order, until `f` returns false. Decompresses gzip, snappy (raw or xerial-framed), lz4 (frame) and zstd.
pub fn for_each_record(
    batch: &[u8],
    h: &BatchHeader,
    f: impl FnMut(i64, i64) -> bool,
) -> Result<(), RecordError> {
    let body = batch
        .get(HEADER_BYTES..h.total_size())
        .ok_or_else(|| corrupt("batch shorter than its length field"))?;
    match h.compression() {
        Compression::None => walk_records(body, h, f),
        Compression::Gzip => walk_records(
            BufReader::new(flate2::bufread::MultiGzDecoder::new(body)),
            h,
            f,
        ),
        Compression::Snappy => walk_records(&snappy_decompress(body)?[..], h, f),
        Compression::Lz4 => walk_records(
            BufReader::new(lz4_flex::frame::FrameDecoder::new(body)),
            h,
            f,
        ),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            walk_records(BufReader::new(d), h, f)
        }
        Compression::Unknown(_) => Err(corrupt("unknown compression codec")),
    }
}

/// Reads the `records_count` records of a batch from `r` (the decompressed records), as Kafka's
/// `DefaultRecord.readFrom` lays them out: varint length, i8 attributes, varlong timestamp delta, varint
/// offset delta, then key, value and headers, which are skipped.
fn walk_records(
    mut r: impl BufRead,
    h: &BatchHeader,
    mut f: impl FnMut(i64, i64) -> bool,
) -> Result<(), RecordError> {
    let count = u32::try_from(h.records_count).map_err(|_| corrupt("negative record count"))?;
    let log_append_time = h.is_log_append_time().then_some(h.max_timestamp);
    for _ in 0..count {
        let length = read_varint(&mut r)?;
        let length = u64::try_from(length).map_err(|_| corrupt("negative record length"))?;
        let mut used = 1u64;
        read_byte(&mut r)?; // attributes
        let (ts_delta, n) = read_varlong(&mut r)?;
        used += n;
        let (offset_delta, n) = read_varint_counted(&mut r)?;
        used += n;
        let rest = length
            .checked_sub(used)
            .ok_or_else(|| corrupt("record shorter than its fixed fields"))?;
        let skipped = io::copy(&mut (&mut r).take(rest), &mut io::sink())
            .map_err(|_| corrupt("records could not be decompressed"))?;
        if skipped != rest {
            return Err(corrupt("record runs past the end of the batch"));
        }
        let offset = h.base_offset.wrapping_add(i64::from(offset_delta));
        let timestamp = log_append_time.unwrap_or_else(|| h.base_timestamp.wrapping_add(ts_delta));
        if !f(offset, timestamp) {
            break;
        }
    }
    Ok(())
}

fn read_byte(r: &mut impl Read) -> Result<u8, RecordError> {
    let mut b = [0u8; 1];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(b[0]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(corrupt("record runs past the end of the batch"))
        }
        Err(_) => Err(corrupt("records could not be decompressed")),
    }
}

/// A zig-zag varint of at most `max_bytes` bytes; returns the value and the bytes it took.
fn read_zigzag(r: &mut impl Read, max_bytes: u32) -> Result<(i64, u64), RecordError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let b = read_byte(r)?;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Ok((v, u64::from(i) + 1));
        }
    }
    Err(corrupt("varint is too long"))
}

fn read_varint_counted(r: &mut impl Read) -> Result<(i32, u64), RecordError> {
    let (v, n) = read_zigzag(r, 5)?;
    // Kafka decodes into an int: the fifth byte's excess bits are lost the same way.
    Ok((v as i32, n))
}

fn read_varint(r: &mut impl Read) -> Result<i32, RecordError> {
    Ok(read_varint_counted(r)?.0)
}

fn read_varlong(r: &mut impl Read) -> Result<(i64, u64), RecordError> {
    read_zigzag(r, 10)
}

// ---------------------------------------------------------------------------------------------------
// The lookups.

/// Kafka's `LogSegment.largestTimestamp`: the largest record timestamp, or for a segment without any
/// (empty) its file's modification time, for which the creation time stands in here.
fn largest_timestamp(s: &Segment) -> i64 {
    if s.max_timestamp >= 0 {
        s.max_timestamp
    } else {
        s.created_ms
    }
}

/// Kafka's `TimeIndex.lookup`: the offset of the last time-index entry with timestamp `<= ts`, or the
/// segment's base offset.
fn time_index_offset(s: &Segment, ts: i64) -> i64 {
    let i = s.time_index.partition_point(|e| e.timestamp <= ts);
    match i.checked_sub(1).and_then(|i| s.time_index.get(i)) {
        Some(e) => s.base_offset + i64::from(e.relative_offset),
        None => s.base_offset,
    }
}

/// One whole batch at `pos` (header `h`), read into `win`.
async fn batch_at<'w>(
    d: &DiskRead,
    win: &'w mut Option<Window>,
    pos: u64,
    h: &BatchHeader,
) -> Result<&'w [u8], StorageError> {
    ensure_window(d, win, pos, h.total_size(), SCAN_WINDOW_BYTES).await?;
    match win.as_ref() {
        Some(w) => Ok(w.slice(pos, h.total_size())),
        None => Err(corrupt_at(d, pos)),
    }
}

fn corrupt_at(d: &DiskRead, pos: u64) -> StorageError {
    StorageError::Corrupt {
        path: d.path.clone(),
        position: pos,
    }
}

/// A plan for reading segment `seg` from `start`; `None` for a segment without a file yet (it holds only
/// unwritten bytes, all above the high watermark).
fn segment_read(seg: &Segment, start: u64) -> Option<DiskRead> {
    Some(DiskRead {
        segment_base: seg.base_offset,
        file: seg.file.clone()?,
        path: seg.log_path.clone(),
        start,
        limit: seg.written,
    })
}

/// Walks the batches of `d` from its start, below `hw`; in each batch `batch_wanted` accepts, looks for the
/// first record `record_wanted(offset, timestamp)` accepts and returns it if it lies below `hw`. With
/// `only_first_batch`, the first accepted batch ends the search whether or not it holds such a record.
async fn find_record(
    d: &DiskRead,
    hw: i64,
    batch_wanted: impl Fn(&BatchHeader) -> bool,
    record_wanted: impl Fn(i64, i64) -> bool,
    only_first_batch: bool,
) -> Result<Option<TimestampOffset>, StorageError> {
    let mut win = None;
    let mut pos = d.start;
    while let Some(h) = header_at(d, &mut win, pos, SCAN_WINDOW_BYTES).await? {
        if h.base_offset >= hw {
            return Ok(None);
        }
        if batch_wanted(&h) {
            let batch = batch_at(d, &mut win, pos, &h).await?;
            let mut found = None;
            for_each_record(batch, &h, |offset, t| {
                if record_wanted(offset, t) {
                    found = Some(TimestampOffset {
                        timestamp: t,
                        offset,
                    });
                }
                found.is_none()
            })
            .map_err(|_| corrupt_at(d, pos))?;
            if found.is_some() || only_first_batch {
                return Ok(found.filter(|f| f.offset < hw));
            }
        }
        pos += h.total_size() as u64;
    }
    Ok(None)
}

/// ListOffsets by timestamp `ts >= 0`.
pub(super) async fn offset_for_timestamp(
    shared: &Shared,
    ts: i64,
) -> Result<Option<TimestampOffset>, StorageError> {
    let (d, hw, log_start) = {
        let st = shared.state.borrow();
        let hw = st.high_watermark(shared.config.get().fsync_before_ack());
        let Some(seg) = st.segments.iter().find(|s| largest_timestamp(s) >= ts) else {
            return Ok(None);
        };
        let start = seg.lookup(time_index_offset(seg, ts).max(st.log_start_offset));
        let Some(d) = segment_read(seg, start) else {
            return Ok(None);
        };
        (d, hw, st.log_start_offset)
    };
    find_record(
        &d,
        hw,
        |h| h.max_timestamp >= ts,
        |offset, t| t >= ts && offset >= log_start,
        false,
    )
    .await
}

/// ListOffsets MAX_TIMESTAMP (-3).
pub(super) async fn max_timestamp_offset(
    shared: &Shared,
) -> Result<Option<TimestampOffset>, StorageError> {
    let (d, hw, target) = {
        let st = shared.state.borrow();
        let hw = st.high_watermark(shared.config.get().fsync_before_ack());
        let mut best: Option<&Segment> = None;
        for s in &st.segments {
            if best.is_none_or(|b| s.max_timestamp > b.max_timestamp) {
                best = Some(s);
            }
        }
        let Some(seg) = best else {
            return Ok(None);
        };
        let start = if seg.offset_of_max_timestamp >= 0 {
            seg.lookup(seg.offset_of_max_timestamp)
        } else {
            0
        };
        let Some(d) = segment_read(seg, start) else {
            return Ok(None);
        };
        (d, hw, seg.max_timestamp)
    };
    find_record(
        &d,
        hw,
        |h| h.max_timestamp == target,
        |_, t| t == target,
        true,
    )
    .await
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::records::codec::{XERIAL_HEADER_BYTES, XERIAL_MAGIC};
    use crate::records::{compute_crc, put_varint, CRC_OFFSET, LOG_OVERHEAD_BYTES, MAGIC_V2};
    use std::io::Write as _;

    /// Records `(timestamp delta, offset delta, value)` encoded as Kafka lays them out.
    fn encode_records(records: &[Rec]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (ts_delta, off_delta, value)) in records.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0u8);
            put_varint(&mut r, *ts_delta);
            put_varint(&mut r, i64::from(*off_delta));
            if i % 2 == 0 {
                put_varint(&mut r, -1); // null key
            } else {
                put_varint(&mut r, 3);
                r.extend_from_slice(b"key");
            }
            put_varint(&mut r, value.len() as i64);
            r.extend_from_slice(value);
            put_varint(&mut r, 1); // one header
            put_varint(&mut r, 1);
            r.push(b'h');
            put_varint(&mut r, 2);
            r.extend_from_slice(b"hv");
            put_varint(&mut out, r.len() as i64);
            out.extend_from_slice(&r);
        }
        out
    }

    fn compress(codec: i16, raw: &[u8]) -> Vec<u8> {
        match codec {
            0 => raw.to_vec(),
            1 => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(raw).unwrap(),
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::encode_all(raw, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    /// Xerial-framed snappy, as Kafka's Java producer writes it, in blocks of `block` bytes.
    fn xerial(raw: &[u8], block: usize) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for chunk in raw.chunks(block) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    /// A whole batch whose records section is `body` (already compressed per `attributes`).
    fn batch(
        base_offset: i64,
        base_ts: i64,
        max_ts: i64,
        count: i32,
        attributes: i16,
        body: &[u8],
    ) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(
            &((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&7i32.to_be_bytes()); // partition leader epoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(body);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A batch (base offset 0) of records with these timestamps, compressed with `codec` (0-4).
    pub(in crate::storage) fn batch_of(timestamps: &[i64], codec: i16) -> Vec<u8> {
        let base = timestamps[0];
        let max = timestamps.iter().copied().max().unwrap();
        let value: &'static [u8] = &[b'x'; 200];
        let recs: Vec<_> = timestamps
            .iter()
            .enumerate()
            .map(|(i, t)| (t - base, i as i32, value))
            .collect();
        let body = compress(codec, &encode_records(&recs));
        batch(0, base, max, recs.len() as i32, codec, &body)
    }

    fn all(b: &[u8]) -> Result<Vec<(i64, i64)>, RecordError> {
        let h = BatchHeader::parse(b).unwrap();
        let mut v = Vec::new();
        for_each_record(b, &h, |o, t| {
            v.push((o, t));
            true
        })?;
        Ok(v)
    }

    const T: i64 = 1_700_000_000_000;

    /// `(timestamp delta, offset delta, value)` of one record.
    type Rec = (i64, i32, &'static [u8]);

    fn sample() -> (Vec<Rec>, Vec<(i64, i64)>) {
        // Non-monotonic deltas, values big enough for the codecs to do something.
        let deltas = [0i64, 9000, 3000, 3000, 12_000, 1, 500];
        let value: &'static [u8] = &[b'v'; 300];
        let recs: Vec<_> = deltas
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, i as i32, value))
            .collect();
        let want = deltas
            .iter()
            .enumerate()
            .map(|(i, d)| (100 + i as i64, T + d))
            .collect();
        (recs, want)
    }

    #[test]
    fn every_codec_yields_each_record_offset_and_timestamp() {
        let (recs, want) = sample();
        let raw = encode_records(&recs);
        for codec in 0..=4i16 {
            let b = batch(
                100,
                T,
                T + 12_000,
                recs.len() as i32,
                codec,
                &compress(codec, &raw),
            );
            assert_eq!(all(&b).unwrap(), want, "codec {codec}");
        }
        let b = batch(
            100,
            T,
            T + 12_000,
            recs.len() as i32,
            2,
            &xerial(&raw, 1000),
        );
        assert_eq!(all(&b).unwrap(), want, "xerial snappy");
    }

    #[test]
    fn log_append_time_gives_every_record_the_batch_max_timestamp() {
        let (recs, _) = sample();
        let raw = encode_records(&recs);
        for codec in [0i16, 3, 4] {
            let b = batch(
                5,
                T,
                T + 77,
                recs.len() as i32,
                codec | 0x08,
                &compress(codec, &raw),
            );
            let got = all(&b).unwrap();
            assert_eq!(got.len(), recs.len());
            assert!(got.iter().all(|&(_, t)| t == T + 77), "{got:?}");
            assert_eq!(got[0].0, 5);
        }
    }

    #[test]
    fn stops_when_told() {
        let (recs, want) = sample();
        let b = batch(
            100,
            T,
            T + 12_000,
            recs.len() as i32,
            0,
            &encode_records(&recs),
        );
        let h = BatchHeader::parse(&b).unwrap();
        let mut seen = Vec::new();
        for_each_record(&b, &h, |o, t| {
            seen.push((o, t));
            t < T + 9000
        })
        .unwrap();
        assert_eq!(seen, want[..2].to_vec());
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let (recs, _) = sample();
        let raw = encode_records(&recs);
        // Every truncation and every single-byte corruption of the records, plain and compressed.
        for codec in 0..=4i16 {
            let body = compress(codec, &raw);
            for cut in 0..body.len() {
                let b = batch(0, T, T, recs.len() as i32, codec, &body[..cut]);
                let _ = all(&b);
            }
            for i in 0..body.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = body.clone();
                    bad[i] ^= flip;
                    let _ = all(&batch(0, T, T, recs.len() as i32, codec, &bad));
                }
            }
        }
        // Specific failures are reported.
        let short = batch(0, T, T, 8, 0, &raw); // claims one record more than there is
        assert!(all(&short).is_err());
        assert!(all(&batch(0, T, T, 1, 0, &[0xff; 12])).is_err()); // varint too long
        assert!(all(&batch(0, T, T, 1, 0, &[0x01])).is_err()); // negative length
        assert!(all(&batch(0, T, T, 1, 0, &[0x02, 0, 0])).is_err()); // shorter than its fields
        assert!(all(&batch(0, T, T, 1, 5, &raw)).is_err()); // unknown codec
        assert!(all(&batch(0, T, T, -1, 0, &raw)).is_err()); // negative count
        let mut huge = vec![0xffu8, 0xff, 0xff, 0xff, 0x0f]; // snappy claiming 4 GiB
        huge.extend_from_slice(&[0; 8]);
        assert!(all(&batch(0, T, T, 1, 2, &huge)).is_err());
        let mut torn_xerial = xerial(&raw, 1000);
        torn_xerial.truncate(XERIAL_HEADER_BYTES + 2);
        assert!(all(&batch(0, T, T, 1, 2, &torn_xerial)).is_err());
        // A length field that runs past the buffer.
        let mut b = batch(0, T, T, 1, 0, &raw);
        b.truncate(b.len() - 1);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(for_each_record(&b, &h, |_, _| true).is_err());
    }

    #[test]
    fn varints_match_kafka() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(read_varint(&mut &b[..]).unwrap() as i64, v);
        }
        for v in [i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(read_varlong(&mut &b[..]).unwrap(), (v, b.len() as u64));
        }
    }
}
