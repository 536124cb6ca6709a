//! One log segment: the in-memory description of a `.log` file and its two sparse indexes.
//!
//! On-disk formats (byte-for-byte Apache Kafka, so `kafka-dump-log` reads rolled segments):
//! - `%020d.log`: v2 record batches back to back, named by the segment's base offset. A rolled or cleanly
//!   closed segment is truncated to its exact logical size; the active segment may end in zero padding up
//!   to the next 4 KiB block (direct I/O writes whole blocks), which recovery trims.
//! - `%020d.index`: 8-byte entries `(i32 offset - base_offset, i32 file position)`, big-endian. The offset is
//!   the LAST offset of the batch starting at that position (as Kafka's `LogSegment.append` writes it).
//!   One entry after every `index_interval_bytes` of batches; the first batch is never indexed.
//! - `%020d.timeindex`: 12-byte entries `(i64 max timestamp so far, i32 offset - base_offset)`, the offset
//!   being the last offset of the batch holding that timestamp; appended only when the timestamp grows.
//!   A rolled segment ends with an entry for its largest timestamp (Kafka's `onBecomeInactiveSegment`).
//!
//! - `%020d.txnindex`: Kafka's transaction index, 34-byte entries `(i16 version 0, i64 producer id, i64 first
//!   offset, i64 last offset, i64 last stable offset)`, one per aborted transaction whose ABORT marker
//!   (at `last offset`) lies in this segment, in marker order. Like Kafka's, the file exists only once
//!   the segment holds an entry (`kafka-dump-log --files X.txnindex` reads it).
//!
//! Index files are written whole, exact size, when a segment is rolled or closed, and for the active
//! segment at every recovery-point checkpoint (covering only batches below the checkpointed offset, all
//! of them synced). Recovery loads them after checking them against the batch the last entry points at
//! and scans only the batches after it; index files that fail the checks are rebuilt by a full scan.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::records::BatchHeader;

pub const INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Kafka's `AbortedTxn.TOTAL_SIZE`.
pub const TXN_INDEX_ENTRY_BYTES: usize = 34;
/// Kafka's `AbortedTxn.CURRENT_VERSION`.
const TXN_INDEX_VERSION: i16 = 0;

/// One entry of a `.txnindex` (Kafka's `AbortedTxn`): an aborted transaction of `producer_id` from
/// `first_offset` to its ABORT marker at `last_offset`; `last_stable_offset` was the last stable offset
/// when it completed (a read that ends below it needs no later entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// Bytes of a `.txnindex` holding `entries`.
pub fn txn_index_bytes(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TXN_INDEX_ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&TXN_INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.first_offset.to_be_bytes());
        out.extend_from_slice(&e.last_offset.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    out
}

/// Reads a `.txnindex` of the segment holding offsets `[base_offset, next_base)`, with Kafka's checks
/// (`TransactionIndex.sanityCheck`, the entry version) and more: whole entries, producer ids and offsets
/// that can exist, every marker inside the segment, markers strictly increasing. A damaged file is an
/// error naming the problem, never a panic.
pub fn parse_txn_index(
    bytes: &[u8],
    base_offset: i64,
    next_base: i64,
) -> Result<Vec<AbortedTxn>, &'static str> {
    if !bytes.len().is_multiple_of(TXN_INDEX_ENTRY_BYTES) {
        return Err("a partial entry");
    }
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / TXN_INDEX_ENTRY_BYTES);
    for e in bytes.chunks_exact(TXN_INDEX_ENTRY_BYTES) {
        let (version, rest) = e.split_first_chunk::<2>().ok_or("a partial entry")?;
        let mut fields = rest
            .chunks_exact(8)
            .map(|c| c.try_into().map(i64::from_be_bytes).unwrap_or(-1));
        let mut next = || fields.next().unwrap_or(-1);
        let t = AbortedTxn {
            producer_id: next(),
            first_offset: next(),
            last_offset: next(),
            last_stable_offset: next(),
        };
        if i16::from_be_bytes(*version) != TXN_INDEX_VERSION {
            return Err("unknown entry version");
        }
        if t.producer_id < 0
            || t.first_offset < 0
            || t.first_offset > t.last_offset
            || t.last_offset < base_offset
            || t.last_offset >= next_base
            || t.last_stable_offset < 0
        {
            return Err("an entry outside the segment");
        }
        if out.last().is_some_and(|p| p.last_offset >= t.last_offset) {
            return Err("entries out of order");
        }
        out.push(t);
    }
    Ok(out)
}

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Last offset of the indexed batch, minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}
pub fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}
pub fn time_index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.timeindex")
}
pub fn txn_index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.txnindex")
}
/// Extension of Kafka's producer state snapshots, `%020d.snapshot`, named by the log end offset they
/// describe.
pub const SNAPSHOT_EXT: &str = "snapshot";
pub fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_EXT}")
}

/// Parses `%020d.<ext>` into the base offset, if the name is exactly that shape.
pub fn parse_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// In-memory state of one segment.
///
/// Owned by the core that owns the partition.
pub struct Segment {
    pub base_offset: i64,
    /// `None` until the flusher has created the file of a freshly rolled segment; until then all of its
    /// bytes are unwritten and therefore in the tail cache.
    pub file: Option<Rc<DmaFile>>,
    pub log_path: PathBuf,
    /// Logical size: bytes appended, written or not.
    pub size: u64,
    /// Bytes written to the file (readable with direct I/O).
    pub written: u64,
    /// Offset after the last batch appended to this segment.
    pub next_offset: i64,
    /// Wall-clock creation time, for `roll_ms`.
    pub created_ms: i64,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeIndexEntry>,
    bytes_since_index: u64,
    /// Largest batch max_timestamp seen, -1 if none.
    pub max_timestamp: i64,
    /// Last offset of the first batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// True once the flusher has finished a rolled segment (synced, truncated, indexes written).
    pub sealed: bool,
    /// The aborted transactions whose marker lies in this segment, in marker order (the `.txnindex`).
    /// Kept in memory for the fetches of read_committed consumers: bounded by the segments that exist
    /// (retention, DeleteRecords and the cleaner drop them with their segment).
    pub aborted: Vec<AbortedTxn>,
    /// The `.txnindex` file exists with a durable directory entry (its first write syncs the directory).
    pub txn_index_on_disk: bool,
}

impl Segment {
    pub fn new(
        dir: &Path,
        base_offset: i64,
        created_ms: i64,
        file: Option<Rc<DmaFile>>,
    ) -> Segment {
        Segment {
            base_offset,
            file,
            log_path: dir.join(log_file_name(base_offset)),
            size: 0,
            written: 0,
            next_offset: base_offset,
            created_ms,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            sealed: false,
            aborted: Vec::new(),
            txn_index_on_disk: false,
        }
    }

    pub fn txn_index_path(&self) -> PathBuf {
        self.log_path
            .with_file_name(txn_index_file_name(self.base_offset))
    }

    /// Bytes of the `.txnindex` file.
    pub fn txn_index_bytes(&self) -> Vec<u8> {
        txn_index_bytes(&self.aborted)
    }

    pub fn index_path(&self) -> PathBuf {
        self.log_path
            .with_file_name(index_file_name(self.base_offset))
    }

    pub fn time_index_path(&self) -> PathBuf {
        self.log_path
            .with_file_name(time_index_file_name(self.base_offset))
    }

    /// Accounts for a batch (already carrying its final offsets and timestamps) placed at `position`.
    /// Does not change `size`.
    pub fn track_batch(&mut self, position: u64, h: &BatchHeader, index_interval_bytes: u64) {
        let last = h.last_offset();
        assert!(last >= self.base_offset, "batch before segment base");
        let relative = u32::try_from(last - self.base_offset).expect("relative offset fits in i32");
        let position32 = u32::try_from(position).expect("position fits in i32");
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = last;
        }
        if self.bytes_since_index > index_interval_bytes {
            self.index.push(IndexEntry {
                relative_offset: relative,
                position: position32,
            });
            self.maybe_append_time_entry();
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_size() as u64;
        self.next_offset = last + 1;
    }

    fn maybe_append_time_entry(&mut self) {
        let last_ts = self.time_index.last().map_or(-1, |e| e.timestamp);
        if self.max_timestamp > last_ts {
            self.time_index.push(TimeIndexEntry {
                timestamp: self.max_timestamp,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            });
        }
    }

    /// Position of the batch to start scanning from to find `offset`: the last indexed batch whose last
    /// offset is <= `offset`, or 0.
    pub fn lookup(&self, offset: i64) -> u64 {
        let i = self
            .index
            .partition_point(|e| self.base_offset + e.relative_offset as i64 <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].position as u64
        }
    }

    /// Position to start scanning from for the first batch with max_timestamp >= `ts`: every batch up to
    /// a time-index entry with a smaller timestamp can be skipped.
    pub fn lookup_time(&self, ts: i64) -> u64 {
        let i = self.time_index.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            let skip_through = self.base_offset + self.time_index[i - 1].relative_offset as i64;
            self.lookup(skip_through + 1)
        }
    }

    /// Bytes of the `.index` file.
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for e in &self.index {
            out.extend_from_slice(&(e.relative_offset as i32).to_be_bytes());
            out.extend_from_slice(&(e.position as i32).to_be_bytes());
        }
        out
    }

    /// Bytes of the `.timeindex` file, including the final entry for the largest timestamp.
    pub fn time_index_bytes(&self) -> Vec<u8> {
        let mut entries = self.time_index.clone();
        let last_ts = entries.last().map_or(-1, |e| e.timestamp);
        if self.max_timestamp > last_ts {
            entries.push(TimeIndexEntry {
                timestamp: self.max_timestamp,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            });
        }
        let mut out = Vec::with_capacity(entries.len() * TIME_INDEX_ENTRY_BYTES);
        for e in &entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&(e.relative_offset as i32).to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{build, BatchSpec};

    #[test]
    fn names_round_trip() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.index", "log"), None);
        assert_eq!(parse_file_name("42.log", "log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log", "log"), None);
    }

    #[test]
    fn txn_index_round_trips_and_refuses_damage() {
        let entries = vec![
            AbortedTxn {
                producer_id: 7,
                first_offset: 3,
                last_offset: 105,
                last_stable_offset: 106,
            },
            AbortedTxn {
                producer_id: 9,
                first_offset: 104,
                last_offset: 110,
                last_stable_offset: 104,
            },
        ];
        let bytes = txn_index_bytes(&entries);
        assert_eq!(bytes.len(), 2 * TXN_INDEX_ENTRY_BYTES);
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(parse_txn_index(&bytes, 100, 200), Ok(entries.clone()));
        assert_eq!(parse_txn_index(&[], 100, 200), Ok(vec![]));
        assert!(
            parse_txn_index(&bytes, 106, 200).is_err(),
            "marker below the segment"
        );
        assert!(
            parse_txn_index(&bytes, 100, 110).is_err(),
            "marker past the segment"
        );
        for cut in 1..bytes.len() {
            if cut != TXN_INDEX_ENTRY_BYTES {
                assert!(parse_txn_index(&bytes[..cut], 100, 200).is_err());
            }
        }
        let swapped = txn_index_bytes(&[entries[1], entries[0]]);
        assert!(parse_txn_index(&swapped, 100, 200).is_err());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x80;
            let _ = parse_txn_index(&bad, 100, 200);
        }
        let mut v1 = bytes.clone();
        v1[1] = 1;
        assert!(parse_txn_index(&v1, 100, 200).is_err());
    }

    #[test]
    fn index_every_interval_and_lookup() {
        let mut s = Segment::new(Path::new("/tmp"), 100, 0, None);
        let mut pos = 0u64;
        let mut offset = 100;
        for i in 0..20 {
            let b = build(&BatchSpec {
                base_offset: offset,
                records: 2,
                value_bytes: 1000,
                base_timestamp: 1000 + i,
                ..Default::default()
            });
            let h = BatchHeader::parse(&b).unwrap();
            s.track_batch(pos, &h, 4096);
            pos += b.len() as u64;
            offset += 2;
        }
        assert_eq!(s.next_offset, 140);
        assert!(!s.index.is_empty());
        assert!(s.index.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(s.lookup(100), 0);
        let e = s.index[0];
        assert_eq!(s.lookup(100 + e.relative_offset as i64), e.position as u64);
        assert_eq!(s.index_bytes().len(), s.index.len() * 8);
        assert_eq!(s.max_timestamp, 1000 + 19 + 1);
        assert_eq!(s.offset_of_max_timestamp, 139);
        let tib = s.time_index_bytes();
        assert_eq!(
            &tib[tib.len() - 12..tib.len() - 4],
            &(1020i64).to_be_bytes()
        );
    }
}
