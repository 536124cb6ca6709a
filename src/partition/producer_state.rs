//! Idempotent-producer state of one partition: per producer id, its epoch and its last five batches.
//!
//! Pure, no I/O. The rules follow Apache Kafka's `ProducerStateManager` / `ProducerAppendInfo`:
//! - a batch from an older epoch is fenced (INVALID_PRODUCER_EPOCH);
//! - a newer epoch must start at sequence 0, unless the producer has no known epoch;
//! - within the epoch, a batch whose (first, last) sequence equals one of the last five cached batches is a
//!   duplicate and is answered with the original offsets, without appending;
//! - otherwise its first sequence must follow the last one (wrapping from `i32::MAX` to 0);
//! - an unknown producer id (no state, e.g. all its data expired) may start at any sequence;
//! - a producer id with no batch for `producer.id.expiration.ms` is forgotten
//!   ([`ProducerStateManager::remove_expired`], Kafka's `removeExpiredProducers`), so the state stays
//!   bounded by the producers active within that window; it may then start again at any sequence.
//!
//! Fault model: clients retry (duplicates), restart (epoch bumps) and misbehave (gaps); the broker restarts
//! (state is rebuilt from the log with [`ProducerStateManager::replay`], which applies no checks).

use std::collections::{HashMap, VecDeque};

use crate::records::NO_SEQUENCE;

/// How many recent batches per producer are remembered for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`; the producer keeps at most five requests in flight).
pub const BATCHES_RETAINED_PER_PRODUCER: usize = 5;

/// Kafka's "no producer epoch" marker.
pub const NO_PRODUCER_EPOCH: i16 = -1;

pub use crate::protocol::errors::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};

/// One appended batch as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset_delta: i32,
    /// The batch's max timestamp as Kafka keeps it (the append time with LogAppendTime), never later
    /// than the broker's clock when it was recorded. Producer expiry ages an entry by its last batch's.
    pub max_timestamp: i64,
}

impl BatchMetadata {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
}

/// State of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn new() -> Self {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::with_capacity(BATCHES_RETAINED_PER_PRODUCER),
        }
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// The timestamp of the last batch (Kafka's `lastTimestamp`); `i64::MIN` if there is none.
    pub fn last_timestamp(&self) -> i64 {
        self.batches.back().map_or(i64::MIN, |b| b.max_timestamp)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    fn push(&mut self, epoch: i16, meta: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_RETAINED_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(meta);
    }
}

/// Result of checking one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The batch is new and in order: append it.
    Append,
    /// The batch was already appended: answer with these original offsets and do not append.
    Duplicate(BatchMetadata),
}

/// Idempotent-producer state of one partition.
///
/// Owned by the core that owns the partition.
#[derive(Debug, Default, Clone)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a client batch against the state. `Err` is the Kafka error code. Producer id -1 (not
    /// idempotent) is always `Append`.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, i16> {
        if producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        if let Some(dup) = entry.find_duplicate(epoch, first_seq, last_seq) {
            return Ok(SequenceCheck::Duplicate(dup));
        }
        if epoch != entry.epoch {
            if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                return Err(OUT_OF_ORDER_SEQUENCE_NUMBER);
            }
        } else if entry.epoch != NO_PRODUCER_EPOCH
            && !entry.batches.is_empty()
            && !in_sequence(entry.last_seq(), first_seq)
        {
            return Err(OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (after a successful `check` and append, or while replaying the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, meta: BatchMetadata) {
        if producer_id < 0 || meta.first_seq == NO_SEQUENCE {
            return;
        }
        self.producers
            .entry(producer_id)
            .or_insert_with(ProducerEntry::new)
            .push(epoch, meta);
    }

    /// Applies a batch read back from the log during recovery, without checks (Kafka's replication
    /// origin). A lower epoch than the current one is ignored.
    pub fn replay(&mut self, producer_id: i64, epoch: i16, meta: BatchMetadata) {
        if let Some(e) = self.producers.get(&producer_id) {
            if epoch < e.epoch {
                return;
            }
        }
        self.record(producer_id, epoch, meta);
    }

    /// [`ProducerStateManager::replay`] of a batch header read back from the log. `now_ms` caps the batch's
    /// max timestamp (the append time with LogAppendTime; a CreateTime ahead of the clock counts as now).
    /// Control batches carry no producer data.
    pub fn replay_header(&mut self, h: &crate::records::BatchHeader, now_ms: i64) {
        if h.has_producer_id() && !h.is_control() {
            self.replay(
                h.producer_id,
                h.producer_epoch,
                BatchMetadata {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    base_offset: h.base_offset,
                    last_offset_delta: h.last_offset_delta,
                    max_timestamp: h.max_timestamp.min(now_ms),
                },
            );
        }
    }

    /// A copy of the entries of the given producer ids: a scratch overlay for checking a multi-batch
    /// append before committing it with [`ProducerStateManager::merge_from`].
    pub fn subset(&self, producer_ids: impl Iterator<Item = i64>) -> ProducerStateManager {
        let mut out = ProducerStateManager::new();
        for id in producer_ids {
            if let Some(e) = self.producers.get(&id) {
                out.producers.insert(id, e.clone());
            }
        }
        out
    }

    /// Replaces this manager's entries with those of `overlay`.
    pub fn merge_from(&mut self, overlay: ProducerStateManager) {
        self.producers.extend(overlay.producers);
    }

    /// Forgets every producer whose last batch is `expiration_ms` or more older than `now_ms` (Kafka's
    /// `removeExpiredProducers` with `producer.id.expiration.ms`); returns how many were forgotten.
    ///
    /// Kafka never expires a producer with an ongoing transaction; Ringtide has no transactions yet (a
    /// transactional produce is refused), so no entry here can have one. When transactions arrive, an
    /// entry with an open transaction must be kept here.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp()) < expiration_ms);
        before - self.producers.len()
    }

    /// Forgets every producer whose last batch ends before `log_start_offset` (its data was deleted).
    pub fn expire_before(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.batches
                .back()
                .is_some_and(|b| b.last_offset() >= log_start_offset)
        });
    }
}

/// Version of Kafka's producer snapshot file format (`ProducerStateManager.PRODUCER_SNAPSHOT_VERSION`).
const SNAPSHOT_VERSION: i16 = 1;
/// Bytes before the entries: version (i16), CRC (u32).
const SNAPSHOT_HEADER_BYTES: usize = 6;
/// Bytes of one entry: id, epoch, last sequence, last offset, offset delta, timestamp, coordinator
/// epoch, first offset of the ongoing transaction.
const SNAPSHOT_ENTRY_BYTES: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;

impl ProducerStateManager {
    /// The state as a Kafka producer snapshot file (`<offset>.snapshot`, read by Kafka's
    /// `ProducerStateManager.readSnapshot` and `kafka-dump-log`): version 1, a CRC-32C of everything after
    /// the CRC, then an i32-counted array of entries. Kafka writes one entry per producer, its last batch;
    /// Ringtide writes one per remembered batch, oldest first, so that duplicates of every batch still in
    /// flight are recognised after a restart. Kafka reading the file keeps the last entry of each producer
    /// id, which is exactly its own entry. Producers are sorted by id so equal states give equal files.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let count: usize = self
            .producers
            .values()
            .map(|e| e.batches.len().max(1))
            .sum();
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + 4 + count * SNAPSHOT_ENTRY_BYTES);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(count as i32).to_be_bytes());
        let mut entry = |id: i64, epoch: i16, b: Option<&BatchMetadata>| {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&b.map_or(NO_SEQUENCE, |b| b.last_seq).to_be_bytes());
            out.extend_from_slice(&b.map_or(-1, |b| b.last_offset()).to_be_bytes());
            out.extend_from_slice(&b.map_or(0, |b| b.last_offset_delta).to_be_bytes());
            out.extend_from_slice(&b.map_or(-1, |b| b.max_timestamp).to_be_bytes());
            out.extend_from_slice(&(-1i32).to_be_bytes()); // coordinator epoch: no transactions yet
            out.extend_from_slice(&(-1i64).to_be_bytes()); // no ongoing transaction
        };
        for &id in ids {
            let e = &self.producers[&id];
            if e.batches.is_empty() {
                entry(id, e.epoch, None);
            }
            for b in &e.batches {
                entry(id, e.epoch, Some(b));
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_HEADER_BYTES..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`ProducerStateManager::to_snapshot`] or by Kafka. Every length and
    /// the CRC are checked: a damaged file is an error, never a panic.
    pub fn from_snapshot(bytes: &[u8]) -> Result<ProducerStateManager, String> {
        struct Reader<'a>(&'a [u8]);
        impl Reader<'_> {
            fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
                let (head, rest) = self
                    .0
                    .split_first_chunk::<N>()
                    .ok_or_else(|| "snapshot is truncated".to_string())?;
                self.0 = rest;
                Ok(*head)
            }
        }
        let mut r = Reader(bytes);
        let version = i16::from_be_bytes(r.take()?);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = u32::from_be_bytes(r.take()?);
        if crc32c::crc32c(r.0) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let count = i32::from_be_bytes(r.take()?);
        if count < 0 || r.0.len() != count as usize * SNAPSHOT_ENTRY_BYTES {
            return Err(format!(
                "snapshot holds {} bytes for {count} entries",
                r.0.len()
            ));
        }
        let mut out = ProducerStateManager::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let last_seq = i32::from_be_bytes(r.take()?);
            let last_offset = i64::from_be_bytes(r.take()?);
            let offset_delta = i32::from_be_bytes(r.take()?);
            let timestamp = i64::from_be_bytes(r.take()?);
            let _coordinator_epoch = i32::from_be_bytes(r.take()?);
            let _txn_first_offset = i64::from_be_bytes(r.take()?);
            let entry = out.producers.entry(id).or_insert_with(ProducerEntry::new);
            if entry.epoch != epoch {
                entry.batches.clear();
                entry.epoch = epoch;
            }
            if last_offset >= offset_delta as i64 && offset_delta >= 0 && last_seq >= 0 {
                // Sequences wrap from i32::MAX to 0 (Kafka's `decrementSequence`).
                let first_seq = if last_seq >= offset_delta {
                    last_seq - offset_delta
                } else {
                    i32::MAX - (offset_delta - last_seq - 1)
                };
                entry.push(
                    epoch,
                    BatchMetadata {
                        first_seq,
                        last_seq,
                        base_offset: last_offset - offset_delta as i64,
                        last_offset_delta: offset_delta,
                        max_timestamp: timestamp,
                    },
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first: i32, last: i32, base: i64) -> BatchMetadata {
        meta_at(first, last, base, 0)
    }

    fn meta_at(first: i32, last: i32, base: i64, max_timestamp: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset_delta: last.wrapping_sub(first),
            max_timestamp,
        }
    }

    #[test]
    fn non_idempotent_never_checked() {
        let s = ProducerStateManager::new();
        assert_eq!(s.check(-1, -1, -1, -1), Ok(SequenceCheck::Append));
    }

    #[test]
    fn unknown_producer_accepts_any_sequence() {
        let s = ProducerStateManager::new();
        assert_eq!(s.check(5, 0, 17, 20), Ok(SequenceCheck::Append));
    }

    #[test]
    fn in_order_then_gap() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta(0, 4, 100));
        assert_eq!(s.check(1, 0, 5, 9), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 0, 6, 9), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 0, 4, 9), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn duplicate_of_any_of_last_five() {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            s.record(1, 0, meta(i * 2, i * 2 + 1, 100 + i as i64 * 2));
        }
        assert_eq!(
            s.entry(1).unwrap().batches.len(),
            BATCHES_RETAINED_PER_PRODUCER
        );
        // Batches 2..=6 are cached; batch 1 (seq 2..3) fell out.
        assert_eq!(
            s.check(1, 0, 4, 5),
            Ok(SequenceCheck::Duplicate(meta(4, 5, 104)))
        );
        assert_eq!(
            s.check(1, 0, 12, 13),
            Ok(SequenceCheck::Duplicate(meta(12, 13, 112)))
        );
        assert_eq!(s.check(1, 0, 2, 3), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        // Same first seq, different last seq: not a duplicate.
        assert_eq!(s.check(1, 0, 4, 6), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn old_epoch_fenced() {
        let mut s = ProducerStateManager::new();
        s.record(1, 3, meta(0, 0, 0));
        assert_eq!(s.check(1, 2, 1, 1), Err(INVALID_PRODUCER_EPOCH));
        // Even a "duplicate" from an old epoch is fenced.
        assert_eq!(s.check(1, 2, 0, 0), Err(INVALID_PRODUCER_EPOCH));
    }

    #[test]
    fn new_epoch_must_start_at_zero() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta(0, 9, 0));
        assert_eq!(s.check(1, 1, 10, 10), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 1, 0, 3), Ok(SequenceCheck::Append));
        s.record(1, 1, meta(0, 3, 10));
        let e = s.entry(1).unwrap();
        assert_eq!(e.epoch, 1);
        assert_eq!(e.batches.len(), 1, "epoch bump clears the cached batches");
        assert_eq!(s.check(1, 1, 4, 4), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta(i32::MAX - 2, i32::MAX, 0));
        assert_eq!(s.check(1, 0, 0, 4), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 0, 1, 4), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        s.record(1, 0, meta(0, 4, 3));
        assert_eq!(s.check(1, 0, 5, 5), Ok(SequenceCheck::Append));
    }

    #[test]
    fn replay_ignores_old_epochs_and_expire() {
        let mut s = ProducerStateManager::new();
        s.replay(1, 2, meta(0, 0, 10));
        s.replay(1, 1, meta(5, 5, 11));
        assert_eq!(s.entry(1).unwrap().epoch, 2);
        assert_eq!(s.entry(1).unwrap().last_seq(), 0);
        s.replay(2, 0, meta(0, 0, 50));
        s.expire_before(20);
        assert!(s.entry(1).is_none());
        assert!(s.entry(2).is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn expiry_drops_idle_producers_and_keeps_recent_ones() {
        const EXPIRATION_MS: i64 = 1_000;
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta_at(0, 4, 0, 1_000)); // idle since 1_000
        s.record(2, 0, meta_at(0, 0, 5, 1_000));
        s.record(2, 0, meta_at(1, 1, 6, 1_800)); // its last batch counts, not its first
        s.record(3, 0, meta_at(0, 0, 7, 1_999));
        assert_eq!(s.remove_expired(1_999, EXPIRATION_MS), 0);
        assert_eq!(s.len(), 3);
        // Kafka's rule: expired once `now - lastTimestamp >= expiration`.
        assert_eq!(s.remove_expired(2_000, EXPIRATION_MS), 1);
        assert!(s.entry(1).is_none());
        assert!(s.entry(2).is_some() && s.entry(3).is_some());
        assert_eq!(s.remove_expired(2_800, EXPIRATION_MS), 1);
        assert!(s.entry(2).is_none());
        assert_eq!(s.entry(3).unwrap().last_seq(), 0);
        assert_eq!(s.remove_expired(i64::MAX, EXPIRATION_MS), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn expired_producer_may_start_at_any_sequence() {
        let mut s = ProducerStateManager::new();
        s.record(1, 3, meta_at(0, 9, 0, 100));
        assert_eq!(s.check(1, 3, 17, 20), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 2, 10, 10), Err(INVALID_PRODUCER_EPOCH));
        s.remove_expired(100 + 60_000, 60_000);
        assert!(s.entry(1).is_none());
        // Unknown again: any sequence and any epoch, as for a producer never seen.
        assert_eq!(s.check(1, 3, 17, 20), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 2, 10, 10), Ok(SequenceCheck::Append));
        s.record(1, 3, meta_at(17, 20, 10, 61_000));
        assert_eq!(s.check(1, 3, 21, 21), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 3, 23, 23), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn snapshot_round_trip_keeps_every_remembered_batch() {
        let mut s = ProducerStateManager::new();
        s.record(7, 2, meta_at(0, 4, 100, 1_000));
        s.record(7, 2, meta_at(5, 9, 105, 1_001));
        let wrapped = BatchMetadata {
            first_seq: i32::MAX - 1,
            last_seq: 1,
            base_offset: 200,
            last_offset_delta: 3,
            max_timestamp: 2_000,
        };
        s.record(3, 0, wrapped);
        let bytes = s.to_snapshot();
        assert_eq!(bytes.len(), 6 + 4 + 3 * SNAPSHOT_ENTRY_BYTES);
        let back = ProducerStateManager::from_snapshot(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.entry(7), s.entry(7));
        assert_eq!(back.entry(3), s.entry(3));
        // Kafka keeps the last entry per producer id: its own last batch.
        let e7 = back.entry(7).unwrap();
        assert_eq!(*e7.batches.back().unwrap(), meta_at(5, 9, 105, 1_001));
        assert_eq!(*back.entry(3).unwrap().batches.back().unwrap(), wrapped);
        // The last batch is a duplicate after a reload; the next sequence is in order.
        assert!(matches!(
            back.check(7, 2, 5, 9),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(matches!(
            back.check(7, 2, 0, 4),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert_eq!(back.check(7, 2, 10, 10), Ok(SequenceCheck::Append));
        assert_eq!(ProducerStateManager::new().to_snapshot().len(), 10);
        // Damage anywhere is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(ProducerStateManager::from_snapshot(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                ProducerStateManager::from_snapshot(&bad).is_err(),
                "flip at {i}"
            );
        }
    }
}
