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
//!   bounded by the producers active within that window; it may then start again at any sequence. A
//!   producer with an ongoing transaction is never forgotten (its transaction holds the last stable
//!   offset back until the coordinator ends it).
//!
//! Transactions (Kafka's `ProducerAppendInfo.appendDataBatch` / `appendEndTxnMarker`):
//! - a transactional batch from a producer without an ongoing transaction begins one on this partition,
//!   at the batch's first offset; a non-transactional batch while one is ongoing is INVALID_TXN_STATE;
//! - a COMMIT or ABORT marker ([`ProducerStateManager::end_txn`]) is refused with INVALID_PRODUCER_EPOCH
//!   if its epoch is older than the producer's (transaction version 2, where the coordinator bumps the
//!   epoch for every marker: not newer than the producer's, except the same epoch with no transaction
//!   ongoing, a marker written again after a coordinator restart or a lost answer), with
//!   TRANSACTION_COORDINATOR_FENCED if its coordinator
//!   epoch is older than the last one seen for the producer; it ends the ongoing transaction (if any) and
//!   yields it as a [`CompletedTxn`];
//! - a completed transaction holds the last stable offset at its first offset until the high watermark
//!   passes its marker (Kafka's `unreplicatedTxns`), so read_committed consumers never see data whose
//!   marker a crash could still lose.
//!
//! Fault model: clients retry (duplicates), restart (epoch bumps) and misbehave (gaps); the broker restarts
//! (state is rebuilt from the log with [`ProducerStateManager::replay`], which applies no checks).

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::records::{EndTxnMarker, NO_SEQUENCE};

/// How many recent batches per producer are remembered for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`; the producer keeps at most five requests in flight).
pub const BATCHES_RETAINED_PER_PRODUCER: usize = 5;

/// Kafka's "no producer epoch" marker.
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// Kafka's "no coordinator epoch yet" (`ProducerStateEntry.empty`).
pub const NO_COORDINATOR_EPOCH: i32 = -1;

pub use crate::protocol::errors::{
    INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, OUT_OF_ORDER_SEQUENCE_NUMBER,
    TRANSACTION_COORDINATOR_FENCED,
};

/// A transaction a marker ended (Kafka's `CompletedTxn`): its producer, its first offset on this
/// partition, the marker's offset, and whether it was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub aborted: bool,
}

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

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence appended, -1 if none.
    pub last_sequence: i32,
    /// The timestamp of the last batch or marker, -1 if none.
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of the ongoing transaction, -1 if none.
    pub current_txn_start_offset: i64,
}

/// State of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMetadata>,
    /// The coordinator epoch of the last marker seen for this producer (Kafka's `coordinatorEpoch`).
    pub coordinator_epoch: i32,
    /// First offset of the producer's ongoing transaction on this partition (Kafka's
    /// `currentTxnFirstOffset`).
    pub current_txn_first_offset: Option<i64>,
    /// The timestamp of the last batch or marker (Kafka's `lastTimestamp`); `i64::MIN` if none.
    last_timestamp: i64,
}

impl ProducerEntry {
    fn new() -> Self {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::with_capacity(BATCHES_RETAINED_PER_PRODUCER),
            coordinator_epoch: NO_COORDINATOR_EPOCH,
            current_txn_first_offset: None,
            last_timestamp: i64::MIN,
        }
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// The timestamp of the last batch or marker (Kafka's `lastTimestamp`); `i64::MIN` if there is none.
    pub fn last_timestamp(&self) -> i64 {
        self.last_timestamp
    }

    /// Kafka's `maybeUpdateProducerEpoch`: a new epoch forgets the cached batches.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
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
        self.set_epoch(epoch);
        if self.batches.len() == BATCHES_RETAINED_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(meta);
        self.last_timestamp = meta.max_timestamp;
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
    /// (first offset, producer id) of every ongoing transaction (Kafka's `ongoingTxns`): always exactly
    /// the entries whose `current_txn_first_offset` is set.
    ongoing: BTreeSet<(i64, i64)>,
    /// Transactions ended by a marker the high watermark has not passed yet (Kafka's
    /// `unreplicatedTxns`), in marker order. Bounded by the markers appended but not yet durable.
    unreplicated: VecDeque<CompletedTxn>,
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
        if first_seq == NO_SEQUENCE {
            // A batch a coordinator wrote (transactional offsets): only the epoch is checked, as Kafka
            // checks appends that do not come from a client (clients' batches always carry a sequence:
            // `Partition::append_produce` refuses them otherwise).
            return Ok(SequenceCheck::Append);
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

    /// Kafka's transactional check of a data batch that passed [`ProducerStateManager::check`]: a
    /// non-transactional batch from a producer with an ongoing transaction is INVALID_TXN_STATE.
    pub fn check_txn(&self, producer_id: i64, transactional: bool) -> Result<(), i16> {
        let ongoing = self
            .producers
            .get(&producer_id)
            .is_some_and(|e| e.current_txn_first_offset.is_some());
        if ongoing && !transactional {
            return Err(INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// Records an appended data batch (after a successful `check` and append, or while replaying the
    /// log). A transactional batch from a producer without an ongoing transaction begins one at the
    /// batch's base offset. A batch without a sequence (written by a coordinator) updates the epoch and
    /// the transaction but is not remembered for duplicate detection.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        meta: BatchMetadata,
        transactional: bool,
    ) {
        if producer_id < 0 || (meta.first_seq == NO_SEQUENCE && !transactional) {
            return;
        }
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(ProducerEntry::new);
        if meta.first_seq == NO_SEQUENCE {
            e.set_epoch(epoch);
            e.last_timestamp = meta.max_timestamp;
        } else {
            e.push(epoch, meta);
        }
        if transactional && e.current_txn_first_offset.is_none() {
            e.current_txn_first_offset = Some(meta.base_offset);
            self.ongoing.insert((meta.base_offset, producer_id));
        }
    }

    /// Applies a batch read back from the log during recovery, without checks (Kafka's replication
    /// origin). A lower epoch than the current one is ignored.
    pub fn replay(
        &mut self,
        producer_id: i64,
        epoch: i16,
        meta: BatchMetadata,
        transactional: bool,
    ) {
        if let Some(e) = self.producers.get(&producer_id) {
            if epoch < e.epoch {
                return;
            }
        }
        self.record(producer_id, epoch, meta, transactional);
    }

    /// [`ProducerStateManager::replay`] of a batch header read back from the log. `now_ms` caps the batch's
    /// max timestamp (the append time with LogAppendTime; a CreateTime ahead of the clock counts as now).
    /// A control batch applies its end-transaction `marker` (`None`: an emptied or unreadable control
    /// batch, which Kafka skips too) without checks and returns the transaction it ended, if any; the
    /// caller records it with [`ProducerStateManager::complete_txn`].
    pub fn replay_header(
        &mut self,
        h: &crate::records::BatchHeader,
        marker: Option<EndTxnMarker>,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        if h.is_control() {
            let m = marker?;
            return self.apply_marker(
                h.producer_id,
                h.producer_epoch,
                m,
                h.base_offset,
                h.max_timestamp.min(now_ms),
            );
        }
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
            h.is_transactional(),
        );
        None
    }

    /// Kafka's `appendEndTxnMarker` for a marker the coordinator asks for: checks it, then ends the
    /// producer's ongoing transaction at `offset` (the marker's). With a legacy `transaction_version`
    /// (below 2) the marker's epoch may equal the producer's; with 2 it must be newer (Kafka's KAFKA-19999
    /// exception: the same epoch with no transaction ongoing is a repeated marker and is written).
    /// `Err` is the Kafka error code; nothing changes then.
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
        offset: i64,
        timestamp: i64,
        transaction_version: i16,
    ) -> Result<Option<CompletedTxn>, i16> {
        if let Some(e) = self.producers.get(&producer_id) {
            let stale = if transaction_version >= 2 {
                epoch < e.epoch || (epoch == e.epoch && e.current_txn_first_offset.is_some())
            } else {
                epoch < e.epoch
            };
            if stale {
                return Err(INVALID_PRODUCER_EPOCH);
            }
            if e.coordinator_epoch > marker.coordinator_epoch {
                return Err(TRANSACTION_COORDINATOR_FENCED);
            }
        }
        Ok(self.apply_marker(producer_id, epoch, marker, offset, timestamp))
    }

    /// Applies a marker without checks (Kafka's `ProducerStateEntry.update(epoch, coordinatorEpoch,
    /// timestamp)`): only a producer with an ongoing transaction yields a [`CompletedTxn`].
    fn apply_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
        offset: i64,
        timestamp: i64,
    ) -> Option<CompletedTxn> {
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(ProducerEntry::new);
        let completed = e.current_txn_first_offset.map(|first| CompletedTxn {
            producer_id,
            first_offset: first,
            last_offset: offset,
            aborted: !marker.commit,
        });
        e.set_epoch(epoch);
        e.coordinator_epoch = marker.coordinator_epoch;
        e.last_timestamp = timestamp;
        if let Some(first) = e.current_txn_first_offset.take() {
            self.ongoing.remove(&(first, producer_id));
        }
        completed
    }

    /// Kafka's `lastStableOffset(completedTxn)`, the last stable offset recorded in the transaction
    /// index entry of an aborted transaction: the first offset of the earliest transaction of another
    /// producer still ongoing, or the offset after the marker.
    pub fn stable_offset_after(&self, txn: &CompletedTxn) -> i64 {
        self.ongoing
            .iter()
            .find(|&&(_, id)| id != txn.producer_id)
            .map_or(txn.last_offset + 1, |&(first, _)| first)
    }

    /// Kafka's `completeTxn`: the transaction holds the last stable offset until the high watermark
    /// passes its marker.
    pub fn complete_txn(&mut self, txn: CompletedTxn) {
        self.unreplicated.push_back(txn);
    }

    /// Kafka's last stable offset for high watermark `hw`: the first offset of the earliest transaction
    /// that is ongoing, or completed with its marker at or above `hw` (those below are forgotten here,
    /// Kafka's `onHighWatermarkUpdated`), and never above `hw`.
    pub fn last_stable_offset(&mut self, hw: i64) -> i64 {
        while self
            .unreplicated
            .front()
            .is_some_and(|t| t.last_offset < hw)
        {
            self.unreplicated.pop_front();
        }
        let unreplicated = self.unreplicated.iter().map(|t| t.first_offset).min();
        let ongoing = self.ongoing.first().map(|&(first, _)| first);
        [unreplicated, ongoing]
            .into_iter()
            .flatten()
            .fold(hw, i64::min)
    }

    /// Every ongoing transaction: (producer id, epoch, first offset), earliest first.
    /// Every producer this partition remembers, as DescribeProducers reports it (Kafka's
    /// `activeProducers`), by producer id.
    pub fn describe(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&id, e)| ActiveProducer {
                producer_id: id,
                epoch: e.epoch,
                last_sequence: e.last_seq(),
                last_timestamp: if e.last_timestamp() == i64::MIN {
                    -1
                } else {
                    e.last_timestamp()
                },
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    pub fn ongoing_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.ongoing
            .iter()
            .map(|&(first, id)| {
                (
                    id,
                    self.producers
                        .get(&id)
                        .map_or(NO_PRODUCER_EPOCH, |e| e.epoch),
                    first,
                )
            })
            .collect()
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

    /// Replaces this manager's entries with those of `overlay` (keeping the index of ongoing
    /// transactions exact).
    pub fn merge_from(&mut self, overlay: ProducerStateManager) {
        for (id, e) in overlay.producers {
            if let Some(first) = self
                .producers
                .get(&id)
                .and_then(|old| old.current_txn_first_offset)
            {
                self.ongoing.remove(&(first, id));
            }
            if let Some(first) = e.current_txn_first_offset {
                self.ongoing.insert((first, id));
            }
            self.producers.insert(id, e);
        }
    }

    /// Forgets every producer whose last batch is `expiration_ms` or more older than `now_ms` (Kafka's
    /// `removeExpiredProducers` with `producer.id.expiration.ms`); returns how many were forgotten.
    /// A producer with an ongoing transaction is never forgotten (Kafka's `isProducerExpired`).
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp()) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets every producer whose last batch ends before `log_start_offset` (its data was deleted),
    /// except those with an ongoing transaction.
    pub fn expire_before(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || e.batches
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
        let mut entry = |id: i64, e: &ProducerEntry, b: Option<&BatchMetadata>| {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&b.map_or(NO_SEQUENCE, |b| b.last_seq).to_be_bytes());
            out.extend_from_slice(&b.map_or(-1, |b| b.last_offset()).to_be_bytes());
            out.extend_from_slice(&b.map_or(0, |b| b.last_offset_delta).to_be_bytes());
            // The last entry of a producer carries its last timestamp (a marker's may be later than
            // its last batch's); earlier ones their batch's.
            let last = e.batches.back().is_none_or(|l| b == Some(l));
            let ts = match b {
                Some(b) if !last => b.max_timestamp,
                _ => e.last_timestamp.max(-1),
            };
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
        };
        for &id in ids {
            let e = &self.producers[&id];
            if e.batches.is_empty() {
                entry(id, e, None);
            }
            for b in &e.batches {
                entry(id, e, Some(b));
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
            let coordinator_epoch = i32::from_be_bytes(r.take()?);
            let txn_first_offset = i64::from_be_bytes(r.take()?);
            let entry = out.producers.entry(id).or_insert_with(ProducerEntry::new);
            entry.set_epoch(epoch);
            // Kafka keeps the last entry of each producer id: its coordinator epoch, ongoing
            // transaction and timestamp are the producer's.
            entry.coordinator_epoch = coordinator_epoch;
            entry.current_txn_first_offset = (txn_first_offset >= 0).then_some(txn_first_offset);
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
            entry.last_timestamp = timestamp;
        }
        out.ongoing = out
            .producers
            .iter()
            .filter_map(|(&id, e)| e.current_txn_first_offset.map(|first| (first, id)))
            .collect();
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
        s.record(1, 0, meta(0, 4, 100), false);
        assert_eq!(s.check(1, 0, 5, 9), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 0, 6, 9), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 0, 4, 9), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn duplicate_of_any_of_last_five() {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            s.record(1, 0, meta(i * 2, i * 2 + 1, 100 + i as i64 * 2), false);
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
        s.record(1, 3, meta(0, 0, 0), false);
        assert_eq!(s.check(1, 2, 1, 1), Err(INVALID_PRODUCER_EPOCH));
        // Even a "duplicate" from an old epoch is fenced.
        assert_eq!(s.check(1, 2, 0, 0), Err(INVALID_PRODUCER_EPOCH));
    }

    #[test]
    fn new_epoch_must_start_at_zero() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta(0, 9, 0), false);
        assert_eq!(s.check(1, 1, 10, 10), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 1, 0, 3), Ok(SequenceCheck::Append));
        s.record(1, 1, meta(0, 3, 10), false);
        let e = s.entry(1).unwrap();
        assert_eq!(e.epoch, 1);
        assert_eq!(e.batches.len(), 1, "epoch bump clears the cached batches");
        assert_eq!(s.check(1, 1, 4, 4), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta(i32::MAX - 2, i32::MAX, 0), false);
        assert_eq!(s.check(1, 0, 0, 4), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 0, 1, 4), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        s.record(1, 0, meta(0, 4, 3), false);
        assert_eq!(s.check(1, 0, 5, 5), Ok(SequenceCheck::Append));
    }

    #[test]
    fn replay_ignores_old_epochs_and_expire() {
        let mut s = ProducerStateManager::new();
        s.replay(1, 2, meta(0, 0, 10), false);
        s.replay(1, 1, meta(5, 5, 11), false);
        assert_eq!(s.entry(1).unwrap().epoch, 2);
        assert_eq!(s.entry(1).unwrap().last_seq(), 0);
        s.replay(2, 0, meta(0, 0, 50), false);
        s.expire_before(20);
        assert!(s.entry(1).is_none());
        assert!(s.entry(2).is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn expiry_drops_idle_producers_and_keeps_recent_ones() {
        const EXPIRATION_MS: i64 = 1_000;
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta_at(0, 4, 0, 1_000), false); // idle since 1_000
        s.record(2, 0, meta_at(0, 0, 5, 1_000), false);
        s.record(2, 0, meta_at(1, 1, 6, 1_800), false); // its last batch counts, not its first
        s.record(3, 0, meta_at(0, 0, 7, 1_999), false);
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
        s.record(1, 3, meta_at(0, 9, 0, 100), false);
        assert_eq!(s.check(1, 3, 17, 20), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(1, 2, 10, 10), Err(INVALID_PRODUCER_EPOCH));
        s.remove_expired(100 + 60_000, 60_000);
        assert!(s.entry(1).is_none());
        // Unknown again: any sequence and any epoch, as for a producer never seen.
        assert_eq!(s.check(1, 3, 17, 20), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 2, 10, 10), Ok(SequenceCheck::Append));
        s.record(1, 3, meta_at(17, 20, 10, 61_000), false);
        assert_eq!(s.check(1, 3, 21, 21), Ok(SequenceCheck::Append));
        assert_eq!(s.check(1, 3, 23, 23), Err(OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn snapshot_round_trip_keeps_every_remembered_batch() {
        let mut s = ProducerStateManager::new();
        s.record(7, 2, meta_at(0, 4, 100, 1_000), false);
        s.record(7, 2, meta_at(5, 9, 105, 1_001), false);
        let wrapped = BatchMetadata {
            first_seq: i32::MAX - 1,
            last_seq: 1,
            base_offset: 200,
            last_offset_delta: 3,
            max_timestamp: 2_000,
        };
        s.record(3, 0, wrapped, false);
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

    fn marker(commit: bool, coordinator_epoch: i32) -> EndTxnMarker {
        EndTxnMarker {
            commit,
            coordinator_epoch,
        }
    }

    #[test]
    fn transactions_begin_end_and_hold_the_last_stable_offset() {
        let mut s = ProducerStateManager::new();
        assert_eq!(s.last_stable_offset(100), 100);
        // Producer 1 begins at 10, producer 2 at 12; an idempotent producer 3 does not hold anything.
        s.record(1, 0, meta(0, 1, 10), true);
        s.record(3, 0, meta(0, 0, 11), false);
        s.record(2, 0, meta(0, 0, 12), true);
        s.record(1, 0, meta(2, 2, 13), true);
        assert_eq!(s.entry(1).unwrap().current_txn_first_offset, Some(10));
        assert_eq!(s.last_stable_offset(14), 10);
        assert_eq!(s.last_stable_offset(5), 5, "never above the high watermark");
        assert_eq!(s.ongoing_transactions(), vec![(1, 0, 10), (2, 0, 12)]);
        // A non-transactional batch inside the transaction is refused.
        assert_eq!(s.check_txn(1, false), Err(INVALID_TXN_STATE));
        assert_eq!(s.check_txn(1, true), Ok(()));
        assert_eq!(s.check_txn(3, false), Ok(()));
        // Producer 1 aborts at 14: the index entry's LSO is producer 2's first offset.
        let t = s
            .end_txn(1, 0, marker(false, 5), 14, 2_000, 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            t,
            CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                aborted: true
            }
        );
        assert_eq!(s.stable_offset_after(&t), 12);
        s.complete_txn(t);
        assert_eq!(s.entry(1).unwrap().current_txn_first_offset, None);
        assert_eq!(s.entry(1).unwrap().coordinator_epoch, 5);
        assert_eq!(s.ongoing_transactions(), vec![(2, 0, 12)]);
        // Until the high watermark passes the marker, the completed transaction still holds the LSO.
        assert_eq!(s.last_stable_offset(14), 10);
        assert_eq!(s.last_stable_offset(15), 12);
        let t = s
            .end_txn(2, 0, marker(true, 5), 15, 2_000, 0)
            .unwrap()
            .unwrap();
        assert_eq!(s.stable_offset_after(&t), 16);
        s.complete_txn(t);
        assert_eq!(s.last_stable_offset(16), 16);
        assert!(s.ongoing_transactions().is_empty());
        // A marker for a producer without an ongoing transaction completes nothing.
        assert_eq!(s.end_txn(3, 0, marker(true, 5), 16, 2_000, 0), Ok(None));
        // A new transaction of producer 1 begins at its next transactional batch.
        s.record(1, 0, meta(3, 3, 17), true);
        assert_eq!(s.ongoing_transactions(), vec![(1, 0, 17)]);
    }

    #[test]
    fn markers_are_fenced_by_producer_and_coordinator_epochs() {
        let mut s = ProducerStateManager::new();
        s.record(1, 3, meta(0, 0, 0), true);
        assert_eq!(
            s.end_txn(1, 2, marker(true, 0), 1, 0, 0),
            Err(INVALID_PRODUCER_EPOCH)
        );
        s.end_txn(1, 3, marker(false, 4), 1, 0, 0).unwrap();
        assert_eq!(
            s.end_txn(1, 3, marker(false, 3), 2, 0, 0),
            Err(TRANSACTION_COORDINATOR_FENCED)
        );
        // A bumped epoch in a marker (the coordinator fencing the producer) clears its batches.
        assert_eq!(s.end_txn(1, 4, marker(false, 4), 2, 0, 0), Ok(None));
        let e = s.entry(1).unwrap();
        assert_eq!((e.epoch, e.batches.len(), e.coordinator_epoch), (4, 0, 4));
        assert_eq!(s.check(1, 3, 1, 1), Err(INVALID_PRODUCER_EPOCH));
        // An unknown producer's marker is accepted and remembered (its epochs fence later ones).
        assert_eq!(s.end_txn(9, 2, marker(true, 1), 3, 0, 0), Ok(None));
        assert_eq!(
            s.end_txn(9, 2, marker(true, 0), 4, 0, 0),
            Err(TRANSACTION_COORDINATOR_FENCED)
        );
    }

    /// Transaction version 2: the coordinator bumps the epoch for every marker, so a marker at the
    /// producer's own epoch while its transaction is ongoing is stale; once the transaction has ended, the
    /// same marker again (a coordinator restart, a lost answer) is written and completes nothing.
    #[test]
    fn markers_of_transaction_version_2_need_a_newer_epoch() {
        let mut s = ProducerStateManager::new();
        s.record(1, 3, meta(0, 0, 0), true);
        assert_eq!(
            s.end_txn(1, 3, marker(true, 0), 1, 0, 2),
            Err(INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            s.end_txn(1, 2, marker(true, 0), 1, 0, 2),
            Err(INVALID_PRODUCER_EPOCH)
        );
        // The legacy rule takes the same marker.
        assert!(s.clone().end_txn(1, 3, marker(true, 0), 1, 0, 0).is_ok());
        let t = s.end_txn(1, 4, marker(true, 0), 1, 0, 2).unwrap().unwrap();
        assert_eq!((t.first_offset, t.last_offset, t.aborted), (0, 1, false));
        assert_eq!(s.entry(1).unwrap().epoch, 4);
        assert_eq!(s.end_txn(1, 4, marker(true, 0), 2, 0, 2), Ok(None));
        // The next transaction runs at the bumped epoch from sequence 0.
        assert_eq!(s.check(1, 4, 0, 0), Ok(SequenceCheck::Append));
    }

    #[test]
    fn expiry_keeps_producers_with_an_ongoing_transaction() {
        let mut s = ProducerStateManager::new();
        s.record(1, 0, meta_at(0, 0, 0, 100), true);
        s.record(2, 0, meta_at(0, 0, 1, 100), false);
        assert_eq!(s.remove_expired(i64::MAX, 1_000), 1);
        assert!(s.entry(1).is_some() && s.entry(2).is_none());
        s.expire_before(i64::MAX);
        assert!(s.entry(1).is_some());
        // Ended: the marker's timestamp ages it from then on.
        s.end_txn(1, 0, marker(true, 0), 5, 5_000, 0).unwrap();
        assert_eq!(s.remove_expired(5_999, 1_000), 0);
        assert_eq!(s.remove_expired(6_000, 1_000), 1);
    }

    #[test]
    fn snapshot_keeps_coordinator_epoch_and_ongoing_transaction() {
        let mut s = ProducerStateManager::new();
        s.record(1, 2, meta_at(0, 1, 10, 1_000), true);
        s.record(1, 2, meta_at(2, 2, 12, 1_001), true);
        s.record(2, 0, meta_at(0, 0, 13, 1_002), true);
        let t = s.end_txn(2, 1, marker(false, 6), 14, 1_500, 0).unwrap();
        assert!(t.is_some());
        let back = ProducerStateManager::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.entry(1), s.entry(1));
        assert_eq!(back.entry(2), s.entry(2));
        assert_eq!(back.ongoing_transactions(), vec![(1, 2, 10)]);
        assert_eq!(back.entry(2).unwrap().coordinator_epoch, 6);
        assert_eq!(back.entry(2).unwrap().last_timestamp(), 1_500);
        let mut back = back;
        assert_eq!(back.last_stable_offset(100), 10);
        // The producer-2 entry has no batch (the marker bumped its epoch): Kafka's -1 offset entry.
        let bytes = s.to_snapshot();
        assert_eq!(bytes.len(), 6 + 4 + 3 * SNAPSHOT_ENTRY_BYTES);
    }

    #[test]
    fn replay_rebuilds_transactions_from_headers() {
        use crate::records::test_util::{build, BatchSpec};
        use crate::records::{build_end_txn_marker, BatchHeader};
        let mut s = ProducerStateManager::new();
        let data = build(&BatchSpec {
            base_offset: 4,
            records: 2,
            producer_id: 8,
            producer_epoch: 1,
            base_sequence: 0,
            transactional: true,
            ..Default::default()
        });
        let h = BatchHeader::parse(&data).unwrap();
        assert_eq!(s.replay_header(&h, None, i64::MAX), None);
        assert_eq!(s.ongoing_transactions(), vec![(8, 1, 4)]);
        let mut m = build_end_txn_marker(8, 1, marker(false, 2), 0);
        m[..8].copy_from_slice(&6i64.to_be_bytes());
        let mh = BatchHeader::parse(&m).unwrap();
        // An emptied or unreadable control batch is skipped.
        assert_eq!(s.replay_header(&mh, None, i64::MAX), None);
        let parsed = crate::records::parse_end_txn_marker(&m, &mh);
        let t = s.replay_header(&mh, parsed, i64::MAX).unwrap();
        assert_eq!((t.first_offset, t.last_offset, t.aborted), (4, 6, true));
        assert!(s.ongoing_transactions().is_empty());
    }
}
