//! One topic-partition as its owning core sees it: the log plus the idempotent-producer state.
//!
//! The produce path is two-phase: [`Partition::append`] is synchronous (validate, check sequences, assign
//! offsets: the order is fixed) and [`Partition::wait_durable`] resolves when the ack may go out. Errors
//! leave here as Kafka error codes ([`PartitionError`]), never as panics.

pub mod producer_state;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use uuid::Uuid;

use crate::records::{self, EndTxnMarker, RecordError};
use crate::storage::{AbortedTxn, FetchRead, LogConfig, PartitionLog, RecoveryHooks, StorageError};
use producer_state::{BatchMetadata, ProducerStateManager, SequenceCheck};

/// A per-partition failure as the Kafka response carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    pub code: i16,
    pub message: Option<String>,
    /// Records refused one by one (Produce v8+ `record_errors`): (index in the batch, message).
    pub record_errors: Vec<(i32, String)>,
}

impl PartitionError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        PartitionError {
            code,
            message: Some(message.into()),
            record_errors: Vec::new(),
        }
    }

    /// Kafka's INVALID_RECORD answer for records refused one by one, with its summary message.
    pub fn invalid_records(record_errors: Vec<(i32, String)>) -> Self {
        let shown: Vec<String> = record_errors
            .iter()
            .take(3)
            .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
            .collect();
        PartitionError {
            code: crate::protocol::errors::INVALID_RECORD,
            message: Some(format!(
                "One or more records have been rejected due to {} record errors in total, and only \
                 showing the first three errors at most: [{}]",
                record_errors.len(),
                shown.join(", ")
            )),
            record_errors,
        }
    }
}

impl std::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "kafka error {}: {m}", self.code),
            None => write!(f, "kafka error {}", self.code),
        }
    }
}

impl std::error::Error for PartitionError {}

impl From<StorageError> for PartitionError {
    fn from(e: StorageError) -> Self {
        PartitionError::new(e.kafka_error_code(), e.to_string())
    }
}

impl From<RecordError> for PartitionError {
    fn from(e: RecordError) -> Self {
        PartitionError::new(e.kafka_error_code(), e.to_string())
    }
}

/// Kafka's CreateTime check (KIP-937): every record's timestamp within
/// [now - `message.timestamp.before.max.ms`, now + `message.timestamp.after.max.ms`], else INVALID_TIMESTAMP
/// naming each record. Records are decoded only when a batch could hold one out of range: with the
/// default (no lower bound) a batch whose max timestamp is in range passes as it is.
fn check_timestamps(
    records: &Bytes,
    headers: &[records::BatchHeader],
    config: &crate::storage::LogConfig,
    now: i64,
) -> Result<(), PartitionError> {
    let (before, after) = (
        config.timestamp_before_max_ms,
        config.timestamp_after_max_ms,
    );
    let out_of_range = |ts: i64| {
        let diff = now.wrapping_sub(ts);
        diff > before || (diff < 0 && diff.unsigned_abs() > after as u64)
    };
    let mut at = 0usize;
    let mut refused = Vec::new();
    for h in headers {
        let batch = &records[at..at + h.total_size()];
        at += h.total_size();
        if before == i64::MAX && !out_of_range(h.max_timestamp) {
            continue;
        }
        let body =
            records::codec::records_body(batch, h, crate::limits::DECOMPRESSED_BATCH_BYTES_MAX)?;
        for (i, r) in records::codec::parse_records(&body, h)?.iter().enumerate() {
            if out_of_range(r.timestamp) {
                refused.push((
                    i as i32,
                    format!(
                        "Timestamp {} of message with offset {} is out of range. The timestamp should be \
                         within [{}, {}]",
                        r.timestamp,
                        r.offset_delta,
                        now.wrapping_sub(before),
                        now.wrapping_add(after)
                    ),
                ));
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(PartitionError {
        code: crate::protocol::errors::INVALID_TIMESTAMP,
        message: Some("One or more records have been rejected due to invalid timestamp".into()),
        record_errors: refused,
    })
}

/// What a produce to this partition got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// LogAppendTime stamped on the batches, -1 with CreateTime; for a duplicate, the original batch's
    /// timestamp (what Kafka answers).
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// True if this was a retry of an already appended batch: nothing was appended and the offsets are the
    /// original ones.
    pub duplicate: bool,
}

/// One topic-partition.
///
/// Owned by the core that owns the partition.
pub struct Partition {
    topic: Rc<str>,
    partition: i32,
    topic_id: Uuid,
    node_id: i32,
    leader_epoch: Cell<i32>,
    log: PartitionLog,
    producers: RefCell<ProducerStateManager>,
}

/// Rebuilds the idempotent-producer state at open: the newest producer snapshot, then every batch after
/// it.
struct ProducerHooks {
    producers: ProducerStateManager,
    now_ms: i64,
}

impl RecoveryHooks for ProducerHooks {
    fn load_snapshot(&mut self, _offset: i64, bytes: &[u8]) -> Result<(), String> {
        self.producers = ProducerStateManager::from_snapshot(bytes)?;
        Ok(())
    }

    fn on_batch(
        &mut self,
        h: &records::BatchHeader,
        marker: Option<EndTxnMarker>,
    ) -> Option<AbortedTxn> {
        recovered_abort(&mut self.producers, h, marker, self.now_ms)
    }

    fn discard_snapshot(&mut self) {
        self.producers = ProducerStateManager::new();
    }
}

/// Replays one batch read back at recovery into `producers` and returns the `.txnindex` entry of the
/// transaction an ABORT marker ended (Kafka's `LogSegment.recover`). The completed transaction is not
/// kept as unreplicated: at open the high watermark is the log end, past every marker.
pub fn recovered_abort(
    producers: &mut ProducerStateManager,
    h: &records::BatchHeader,
    marker: Option<EndTxnMarker>,
    now_ms: i64,
) -> Option<AbortedTxn> {
    let t = producers.replay_header(h, marker, now_ms)?;
    t.aborted.then(|| AbortedTxn {
        producer_id: t.producer_id,
        first_offset: t.first_offset,
        last_offset: t.last_offset,
        last_stable_offset: producers.stable_offset_after(&t),
    })
}

impl Partition {
    /// Opens (creating or recovering) the partition's log under `log_dir` and rebuilds the producer state
    /// from it.
    pub async fn open(
        log_dir: &Path,
        topic: &str,
        partition: i32,
        topic_id: Uuid,
        node_id: i32,
        leader_epoch: i32,
        config: LogConfig,
    ) -> Result<Rc<Partition>, StorageError> {
        let mut hooks = ProducerHooks {
            producers: ProducerStateManager::new(),
            now_ms: crate::storage::now_ms(),
        };
        let log = PartitionLog::open(log_dir, topic, partition, config, &mut hooks).await?;
        // Opened to lead it: the epoch starts at the log end unless the log is in it already.
        log.assign_leader_epoch(leader_epoch);
        let producers = hooks.producers;
        Ok(Rc::new(Partition {
            topic: Rc::from(topic),
            partition,
            topic_id,
            node_id,
            leader_epoch: Cell::new(leader_epoch),
            log,
            producers: RefCell::new(producers),
        }))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    /// Kafka's check of the leader epoch a client names (`current_leader_epoch`, -1 for none) against
    /// this leader's: NONE, FENCED_LEADER_EPOCH (the client's is older) or UNKNOWN_LEADER_EPOCH (newer).
    pub fn check_leader_epoch(&self, current: i32) -> i16 {
        use crate::protocol::errors;
        let local = self.leader_epoch.get();
        if current < 0 || current == local {
            errors::NONE
        } else if current < local {
            errors::FENCED_LEADER_EPOCH
        } else {
            errors::UNKNOWN_LEADER_EPOCH
        }
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at or below `requested` and its end offset,
    /// (-1, -1) when unknown.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.log.end_offset_for_epoch(requested)
    }

    /// The leader epoch of the batch holding `offset` (ListOffsets names it), if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.log.epoch_for_offset(offset)
    }

    /// The first leader epoch of the log and its start offset, if any.
    pub fn first_epoch(&self) -> Option<(i32, i64)> {
        self.log.first_epoch()
    }

    /// This broker leads the partition in `epoch` now (a new election keeps it here).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.set(epoch);
        self.log.assign_leader_epoch(epoch);
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn log_config(&self) -> LogConfig {
        self.log.config()
    }

    /// Applies a topic config change.
    pub fn set_log_config(&self, config: LogConfig) {
        self.log.set_config(config);
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Validates and appends a produce request's records. Synchronous; follow with
    /// [`Partition::wait_durable`] of `last_offset` before acking.
    pub fn append(&self, records: Bytes) -> Result<AppendResult, PartitionError> {
        let headers = records::validate_batches(&records, self.log.config().max_message_bytes)?;
        self.append_validated(records, headers)
    }

    /// [`Partition::append`] for a client's Produce: the records are checked as Kafka 4.4 checks a
    /// client's (see [`records::validate_produce_batches`]).
    pub fn append_produce(&self, records: Bytes) -> Result<AppendResult, PartitionError> {
        let headers =
            records::validate_produce_batches(&records, self.log.config().max_message_bytes)?;
        // Kafka's LogValidator: a client's batch with a producer id needs a sequence.
        if let Some(h) = headers
            .iter()
            .find(|h| h.producer_id >= 0 && h.base_sequence < 0)
        {
            return Err(PartitionError::new(
                crate::protocol::errors::INVALID_RECORD,
                format!(
                    "Invalid sequence number {} in record batch with producerId {}",
                    h.base_sequence, h.producer_id
                ),
            ));
        }
        self.append_validated(records, headers)
    }

    /// How far this partition's log can be cleaned now (see [`PartitionLog::cleanable`]): never at or
    /// past the last stable offset.
    pub fn cleanable(&self, now_ms: i64) -> Option<crate::storage::cleaner::Cleanable> {
        self.log.cleanable(now_ms, self.last_stable_offset())
    }

    /// One cleaning of this partition's log (see `storage::cleaner`): a batch left without records stays
    /// (empty) when it is the last batch its idempotent producer's state remembers. Nothing at or past
    /// the last stable offset is cleaned.
    pub async fn clean(
        &self,
        now_ms: i64,
        map_entries: usize,
        io_bytes_per_second: f64,
    ) -> Result<Option<crate::storage::cleaner::CleanStats>, crate::storage::StorageError> {
        let keep_empty = |producer_id: i64, last_offset: i64| {
            self.producers
                .borrow()
                .entry(producer_id)
                .and_then(|e| e.batches.back())
                .is_some_and(|b| b.last_offset() == last_offset)
        };
        let lso = self.last_stable_offset();
        self.log
            .clean(now_ms, map_entries, io_bytes_per_second, lso, &keep_empty)
            .await
    }

    /// A compacted topic refuses records without a key (Kafka's `LogValidator`), each named.
    fn check_keys(
        &self,
        records: &Bytes,
        headers: &[records::BatchHeader],
    ) -> Result<(), PartitionError> {
        let mut at = 0usize;
        let mut refused = Vec::new();
        for h in headers {
            let batch = &records[at..at + h.total_size()];
            at += h.total_size();
            let keyless = records::codec::keyless_records(
                batch,
                h,
                crate::limits::DECOMPRESSED_BATCH_BYTES_MAX,
            )?;
            refused.extend(keyless.into_iter().map(|i| {
                (
                    i as i32,
                    format!(
                        "Compacted topic cannot accept message without key in topic partition {}-{}",
                        self.topic(),
                        self.partition()
                    ),
                )
            }));
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(PartitionError::invalid_records(refused))
        }
    }

    fn append_validated(
        &self,
        records: Bytes,
        headers: Vec<records::BatchHeader>,
    ) -> Result<AppendResult, PartitionError> {
        let config = self.log.config();
        if config.compact {
            self.check_keys(&records, &headers)?;
        }
        if !config.log_append_time {
            check_timestamps(&records, &headers, &config, crate::storage::now_ms())?;
        }
        if headers.iter().any(|h| h.is_control()) {
            return Err(PartitionError::new(
                crate::protocol::errors::INVALID_RECORD,
                "Clients are not allowed to write control records",
            ));
        }
        let log_start_offset = self.log.log_start_offset();
        let base = self.log.log_end_offset();
        // The producer's last timestamp, which expiry ages it by: the batch's max timestamp as Kafka
        // keeps it (the append time with LogAppendTime). A CreateTime ahead of the broker's clock counts
        // as the broker's clock, so that a producer whose clock runs ahead still expires once idle
        // (Kafka would keep it until its future timestamps were old).
        let now_ms = crate::storage::now_ms();
        let batch_timestamp = |h: &records::BatchHeader| {
            if config.log_append_time {
                now_ms
            } else {
                h.max_timestamp.min(now_ms)
            }
        };
        let mut overlay = {
            let producers = self.producers.borrow();
            producers.subset(
                headers
                    .iter()
                    .filter(|h| h.has_producer_id())
                    .map(|h| h.producer_id),
            )
        };
        let mut next = base;
        for h in &headers {
            if h.has_producer_id() {
                let (first_seq, last_seq) = (h.base_sequence, h.last_sequence());
                match overlay.check(h.producer_id, h.producer_epoch, first_seq, last_seq) {
                    Err(code) => {
                        return Err(PartitionError::new(
                            code,
                            format!(
                                "producer {} epoch {} sequence {first_seq}..{last_seq} refused",
                                h.producer_id, h.producer_epoch
                            ),
                        ))
                    }
                    Ok(SequenceCheck::Duplicate(meta)) => {
                        // Kafka answers a duplicate with the original batch's timestamp in the
                        // log-append-time field.
                        return Ok(AppendResult {
                            base_offset: meta.base_offset,
                            last_offset: meta.last_offset(),
                            log_append_time_ms: meta.max_timestamp,
                            log_start_offset,
                            duplicate: true,
                        });
                    }
                    Ok(SequenceCheck::Append) => {
                        if let Err(code) = overlay.check_txn(h.producer_id, h.is_transactional()) {
                            return Err(PartitionError::new(
                                code,
                                format!(
                                    "Expected transactional write from producer {} at offset {next}",
                                    h.producer_id
                                ),
                            ));
                        }
                        overlay.record(
                            h.producer_id,
                            h.producer_epoch,
                            BatchMetadata {
                                first_seq,
                                last_seq,
                                base_offset: next,
                                last_offset_delta: h.last_offset_delta,
                                max_timestamp: batch_timestamp(h),
                            },
                            h.is_transactional(),
                        )
                    }
                }
            }
            next += h.last_offset_delta as i64 + 1;
        }
        let info = self.log.append_with_snapshot(
            &records,
            &headers,
            self.leader_epoch.get(),
            Some(&|| self.producers.borrow().to_snapshot()),
        )?;
        assert_eq!(info.base_offset, base, "offsets assigned as predicted");
        assert_eq!(info.last_offset, next - 1, "offsets assigned as predicted");
        self.producers.borrow_mut().merge_from(overlay);
        Ok(AppendResult {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: self.log.log_start_offset(),
            duplicate: false,
        })
    }

    /// Appends a COMMIT (`commit`) or ABORT control batch for `producer_id` (Kafka's WriteTxnMarkers on the
    /// partition leader, `ProducerAppendInfo.appendEndTxnMarker`): a marker whose epoch is older than the
    /// producer's (with `transaction_version` 2: not newer, unless it repeats a marker already written) is
    /// INVALID_PRODUCER_EPOCH; a coordinator epoch
    /// older than the one last seen for the producer is TRANSACTION_COORDINATOR_FENCED. Ends the
    /// producer's ongoing transaction on this partition; an ABORT records an aborted-transaction entry in
    /// the `.txnindex` of the segment the marker lands in. Synchronous like [`Partition::append`]: follow
    /// with [`Partition::wait_durable`] of `last_offset`.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
        transaction_version: i16,
    ) -> Result<AppendResult, PartitionError> {
        let marker = EndTxnMarker {
            commit,
            coordinator_epoch,
        };
        let now_ms = crate::storage::now_ms();
        let batch = records::build_end_txn_marker(producer_id, producer_epoch, marker, now_ms);
        let headers = records::validate_batches(&batch, usize::MAX)?;
        let offset = self.log.log_end_offset();
        let mut overlay = self.producers.borrow().subset(std::iter::once(producer_id));
        let completed = overlay
            .end_txn(
                producer_id,
                producer_epoch,
                marker,
                offset,
                now_ms,
                transaction_version,
            )
            .map_err(|code| {
                PartitionError::new(
                    code,
                    format!(
                        "transaction marker of producer {producer_id} epoch {producer_epoch} \
                         (coordinator epoch {coordinator_epoch}) refused"
                    ),
                )
            })?;
        let aborted = completed.filter(|t| t.aborted).map(|t| AbortedTxn {
            producer_id,
            first_offset: t.first_offset,
            last_offset: t.last_offset,
            last_stable_offset: self.producers.borrow().stable_offset_after(&t),
        });
        let info = self.log.append_with_txn(
            &batch,
            &headers,
            self.leader_epoch.get(),
            Some(&|| self.producers.borrow().to_snapshot()),
            aborted,
        )?;
        assert_eq!(info.base_offset, offset, "offsets assigned as predicted");
        let mut producers = self.producers.borrow_mut();
        producers.merge_from(overlay);
        if let Some(t) = completed {
            producers.complete_txn(t);
        }
        Ok(AppendResult {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: self.log.log_start_offset(),
            duplicate: false,
        })
    }

    /// Kafka's last stable offset: the first offset of the earliest transaction that is ongoing (or
    /// ended by a marker the high watermark has not passed yet), else the high watermark; never below
    /// the log start offset (Kafka's `updateFirstUnstableOffset`: DeleteRecords may pass a transaction's
    /// first offset).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.log.high_watermark();
        let first_unstable = self.producers.borrow_mut().last_stable_offset(hw);
        first_unstable.max(self.log.log_start_offset()).min(hw)
    }

    /// Producer ids with an ongoing transaction on this partition: (producer id, epoch, first offset),
    /// earliest first (DescribeProducers, `kafka-transactions find-hanging`).
    /// Every producer this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<producer_state::ActiveProducer> {
        self.producers.borrow().describe()
    }

    pub fn ongoing_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.producers.borrow().ongoing_transactions()
    }

    /// The aborted transactions (producer id, first offset) a read_committed fetch of `[from, upper)`
    /// reports (see [`PartitionLog::aborted_transactions`]).
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        self.log
            .aborted_transactions(from, upper)
            .into_iter()
            .map(|t| (t.producer_id, t.first_offset))
            .collect()
    }

    /// Resolves when the last stable offset passes `offset` (a read_committed Fetch long-poll), or the
    /// log fails or closes. The last stable offset moves only when the high watermark does (a marker
    /// counts once the high watermark passes it), so this waits on the high watermark and looks again.
    /// Cancel-safe.
    pub fn wait_for_stable(self: &Rc<Self>, offset: i64) -> impl Future<Output = ()> + 'static {
        let p = self.clone();
        async move {
            while p.last_stable_offset() <= offset {
                let hw = p.high_watermark();
                p.log.wait_for_data(hw).await;
                if p.high_watermark() == hw {
                    return; // failed or closing
                }
            }
        }
    }

    /// Resolves when `last_offset` may be acknowledged (see [`PartitionLog::wait_durable`]).
    pub async fn wait_durable(&self, last_offset: i64) -> Result<(), PartitionError> {
        Ok(self.log.wait_durable(last_offset).await?)
    }

    /// Resolves once `last_offset` is written to its file (see [`PartitionLog::wait_written`]).
    pub async fn wait_written(&self, last_offset: i64) {
        self.log.wait_written(last_offset).await
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one batch), below the high watermark.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, PartitionError> {
        let hw = self.log.high_watermark();
        Ok(self.log.read(offset, max_bytes, hw).await?)
    }

    /// Reads the log from its start to the high watermark in windows of `window` bytes and hands every
    /// batch (its bytes and header) to `f`, in log order: how the coordinators replay their internal
    /// topics when a partition opens. Stops early at a window that makes no progress.
    pub async fn replay_batches(
        &self,
        window: usize,
        mut f: impl FnMut(&[u8], &records::BatchHeader),
    ) -> Result<(), PartitionError> {
        let mut offset = self.log_start_offset();
        let end = self.high_watermark();
        while offset < end {
            let bytes = self.read(offset, window).await?;
            let mut next = offset;
            for (at, h) in records::iter_batches(&bytes).flatten() {
                let Some(batch) = bytes.get(at..at + h.total_size()) else {
                    break;
                };
                f(batch, &h);
                next = next.max(h.last_offset() + 1);
            }
            if next == offset {
                break;
            }
            offset = next;
        }
        Ok(())
    }

    /// The fetch read (see [`PartitionLog::read_batches`]): whole batches below `max_offset` as slices.
    pub async fn read_batches(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<FetchRead, PartitionError> {
        Ok(self
            .log
            .read_batches(offset, max_bytes, max_offset, min_one)
            .await?)
    }

    /// An upper bound of the bytes a fetch from `offset` could read now (no I/O).
    pub fn bytes_from(&self, offset: i64) -> u64 {
        self.log.bytes_from(offset)
    }

    /// Like [`Partition::read`] with an explicit exclusive upper offset.
    pub async fn read_up_to(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Bytes, PartitionError> {
        Ok(self.log.read(offset, max_bytes, max_offset).await?)
    }

    /// Resolves when the high watermark passes `offset` (Fetch long-poll). Cancel-safe.
    pub fn wait_for_data(&self, offset: i64) -> impl Future<Output = ()> + 'static {
        self.log.wait_for_data(offset)
    }

    /// ListOffsets by timestamp: the first record below the high watermark with timestamp >= `ts`.
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<crate::storage::TimestampOffset>, PartitionError> {
        Ok(self.log.offset_for_timestamp(ts).await?)
    }

    /// ListOffsets MAX_TIMESTAMP: the first record with the largest timestamp, if below the high
    /// watermark.
    pub async fn max_timestamp_offset(
        &self,
    ) -> Result<Option<crate::storage::TimestampOffset>, PartitionError> {
        Ok(self.log.max_timestamp_offset().await?)
    }

    /// Deletes expired segments; returns how many.
    /// DeleteRecords: records below `offset` are deleted; returns the new log start offset.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        self.log
            .delete_records_before(offset)
            .await
            .map_err(PartitionError::from)
    }

    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, PartitionError> {
        Ok(self.log.enforce_retention(now_ms).await?)
    }

    /// Closes the log (everything synced, index files written), then writes the producer snapshot at its
    /// end and makes that the recovery point, so the next start reads almost nothing.
    pub async fn close(&self) -> Result<(), PartitionError> {
        self.log.close().await?;
        let snapshot = self.producers.borrow().to_snapshot();
        Ok(self.log.checkpoint_closed(snapshot).await?)
    }

    /// Kafka's recovery-point checkpoint (see [`PartitionLog::checkpoint`]), with this partition's
    /// producer state as the snapshot. Returns the new recovery point, `None` if nothing changed.
    pub async fn checkpoint(&self) -> Result<Option<i64>, PartitionError> {
        Ok(self
            .log
            .checkpoint(|| self.producers.borrow().to_snapshot())
            .await?)
    }

    /// Closes the log and removes the partition's directory.
    pub async fn delete(&self) -> Result<(), PartitionError> {
        Ok(self.log.delete().await?)
    }

    /// Number of producer ids with state (for tests and metrics).
    pub fn producer_count(&self) -> usize {
        self.producers.borrow().len()
    }

    /// Forgets the producer ids whose last batch is `expiration_ms` or more older than `now_ms`
    /// (`producer.id.expiration.ms`), except those with an ongoing transaction; returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers
            .borrow_mut()
            .remove_expired(now_ms, expiration_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::producer_state::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
    use super::*;
    use crate::records::test_util::{build, simple, BatchSpec};
    use glommio::{LocalExecutorBuilder, Placement};

    fn run<Fut: Future<Output = ()> + 'static>(f: impl FnOnce() -> Fut + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(2 << 20)
            .spawn(f)
            .expect("executor starts")
            .join()
            .expect("test body completes");
    }

    fn idem(seq: i32, records: usize, epoch: i16) -> Bytes {
        Bytes::from(build(&BatchSpec {
            records,
            producer_id: 42,
            producer_epoch: epoch,
            base_sequence: seq,
            ..Default::default()
        }))
    }

    async fn open(dir: &Path) -> Rc<Partition> {
        Partition::open(dir, "topic", 3, Uuid::nil(), 1, 0, LogConfig::default())
            .await
            .expect("partition opens")
    }

    #[test]
    fn idempotent_produce_duplicates_and_fencing_survive_restart() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            let a = p.append(idem(0, 3, 0)).unwrap();
            assert_eq!((a.base_offset, a.last_offset, a.duplicate), (0, 2, false));
            let b = p.append(idem(3, 2, 0)).unwrap();
            assert_eq!((b.base_offset, b.last_offset), (3, 4));
            p.wait_durable(b.last_offset).await.unwrap();

            // Retry of the first batch: original offsets, nothing appended.
            let dup = p.append(idem(0, 3, 0)).unwrap();
            assert_eq!(
                (dup.base_offset, dup.last_offset, dup.duplicate),
                (0, 2, true)
            );
            assert_eq!(p.log_end_offset(), 5);
            p.wait_durable(dup.last_offset).await.unwrap();

            assert_eq!(
                p.append(idem(7, 1, 0)).unwrap_err().code,
                OUT_OF_ORDER_SEQUENCE_NUMBER
            );
            assert_eq!(
                p.append(idem(5, 1, 1)).unwrap_err().code,
                OUT_OF_ORDER_SEQUENCE_NUMBER
            );
            p.close().await.unwrap();

            // After a restart the state is rebuilt from the log.
            let p = open(tmp.path()).await;
            assert_eq!(p.producer_count(), 1);
            let dup = p.append(idem(3, 2, 0)).unwrap();
            assert_eq!((dup.base_offset, dup.duplicate), (3, true));
            let c = p.append(idem(5, 1, 0)).unwrap();
            assert_eq!(c.base_offset, 5);
            // Epoch bump from 0 restarts the sequence; then the old epoch is fenced.
            let d = p.append(idem(0, 1, 1)).unwrap();
            assert_eq!(d.base_offset, 6);
            assert_eq!(
                p.append(idem(6, 1, 0)).unwrap_err().code,
                INVALID_PRODUCER_EPOCH
            );
            p.wait_durable(d.last_offset).await.unwrap();
            let bytes = p.read(0, 1 << 20).await.unwrap();
            assert_eq!(
                records::validate_batches(&bytes, usize::MAX).unwrap().len(),
                4
            );
            p.close().await.unwrap();
        });
    }

    #[test]
    fn crash_after_several_rolls_restores_dedupe_from_the_roll_snapshot() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 2048,
                ..LogConfig::default()
            };
            let p = Partition::open(tmp.path(), "topic", 3, Uuid::nil(), 1, 0, config)
                .await
                .unwrap();
            let batch = |pid: i64, seq: i32| {
                Bytes::from(build(&BatchSpec {
                    records: 1,
                    value_bytes: 100,
                    producer_id: pid,
                    producer_epoch: 0,
                    base_sequence: seq,
                    ..Default::default()
                }))
            };
            // Producer 43 writes only into the first segment; producer 42 then rolls the log several times.
            let early: Vec<AppendResult> =
                (0..3).map(|s| p.append(batch(43, s)).unwrap()).collect();
            let mut last = 0;
            let mut offsets = Vec::new();
            for s in 0..60 {
                let r = p.append(batch(42, s)).unwrap();
                offsets.push(r.base_offset);
                last = r.last_offset;
            }
            p.wait_durable(last).await.unwrap();
            let segments = p.log().segment_count();
            assert!(segments >= 4, "the test needs several rolls: {segments}");

            // kill -9 now: the files as they are, the recovery point the rolls advanced to.
            let crash = tempfile::tempdir().unwrap();
            let (from, to) = (tmp.path().join("topic-3"), crash.path().join("topic-3"));
            std::fs::create_dir_all(&to).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
            let rp = crate::storage::checkpoint::get(tmp.path(), "topic", 3).unwrap();
            assert!(
                rp > early[2].last_offset,
                "the rolls moved the recovery point"
            );
            crate::storage::checkpoint::set(crash.path(), "topic", 3, Some(rp));
            let _ = crate::storage::take_recovery_totals();
            let q = Partition::open(crash.path(), "topic", 3, Uuid::nil(), 1, 0, config)
                .await
                .unwrap();
            let stats = crate::storage::take_recovery_totals();
            // Only the active segment was read: producer 43's state came from the roll snapshot.
            assert!(stats.segments_scanned <= 1, "{stats:?}");
            assert_eq!(stats.segments_from_index, segments - stats.segments_scanned);
            assert_eq!(q.producer_count(), 2);
            let dup = q.append(batch(43, 2)).unwrap();
            assert_eq!(
                (dup.base_offset, dup.duplicate),
                (early[2].base_offset, true)
            );
            for s in 55..60 {
                let dup = q.append(batch(42, s)).unwrap();
                assert!(dup.duplicate);
                assert_eq!(dup.base_offset, offsets[s as usize]);
            }
            assert_eq!(
                q.append(batch(42, 61)).unwrap_err().code,
                OUT_OF_ORDER_SEQUENCE_NUMBER
            );
            assert_eq!(q.append(batch(42, 60)).unwrap().base_offset, last + 1);
            assert_eq!(q.append(batch(43, 3)).unwrap().base_offset, last + 2);
            q.wait_durable(last + 2).await.unwrap();
            q.close().await.unwrap();
            p.close().await.unwrap();
        });
    }

    #[test]
    fn expired_producer_starts_over_at_any_sequence() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            p.append(idem(0, 3, 0)).unwrap();
            assert_eq!(
                p.append(idem(7, 1, 0)).unwrap_err().code,
                OUT_OF_ORDER_SEQUENCE_NUMBER
            );
            // CreateTime: the producer is aged by its batch's max timestamp.
            let last_ts = BatchSpec::default().base_timestamp + 2;
            let day_ms = 86_400_000;
            assert_eq!(p.expire_producers(last_ts + day_ms - 1, day_ms), 0);
            assert_eq!(p.producer_count(), 1);
            assert_eq!(p.expire_producers(last_ts + day_ms, day_ms), 1);
            assert_eq!(p.producer_count(), 0);
            // Forgotten: the next batch is accepted at any sequence and becomes the new state.
            let r = p.append(idem(7, 1, 0)).unwrap();
            assert_eq!((r.base_offset, r.duplicate), (3, false));
            assert_eq!(p.append(idem(8, 1, 0)).unwrap().base_offset, 4);
            p.wait_durable(4).await.unwrap();
            p.close().await.unwrap();
        });
    }

    #[test]
    fn producer_with_future_timestamps_still_expires() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            // Far-future CreateTime is refused by default (message.timestamp.after.max.ms, 1 hour); a topic
            // that allows it still ages its producers by the broker's clock.
            p.set_log_config(LogConfig {
                timestamp_after_max_ms: i64::MAX,
                ..p.log_config()
            });
            let future = Bytes::from(build(&BatchSpec {
                producer_id: 42,
                producer_epoch: 0,
                base_sequence: 0,
                base_timestamp: i64::MAX / 2,
                ..Default::default()
            }));
            let before = crate::storage::now_ms();
            p.append(future).unwrap();
            let day_ms = 86_400_000;
            let after = crate::storage::now_ms();
            assert_eq!(p.expire_producers(before + day_ms - 1, day_ms), 0);
            assert_eq!(p.expire_producers(after + day_ms, day_ms), 1);
            p.wait_durable(0).await.unwrap();
            p.close().await.unwrap();
        });
    }

    #[test]
    fn multi_batch_produce_is_checked_in_order() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            let mut two = idem(0, 2, 0).to_vec();
            two.extend_from_slice(&idem(2, 2, 0));
            let r = p.append(Bytes::from(two)).unwrap();
            assert_eq!((r.base_offset, r.last_offset), (0, 3));
            let mut gap = idem(4, 1, 0).to_vec();
            gap.extend_from_slice(&idem(9, 1, 0));
            assert_eq!(
                p.append(Bytes::from(gap)).unwrap_err().code,
                OUT_OF_ORDER_SEQUENCE_NUMBER
            );
            assert_eq!(p.log_end_offset(), 4, "a refused produce appends nothing");
            assert_eq!(p.append(idem(4, 1, 0)).unwrap().base_offset, 4);
            p.close().await.unwrap();
        });
    }

    #[test]
    fn bad_records_map_to_kafka_codes() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            let mut bad = simple(2);
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert_eq!(p.append(Bytes::from(bad)).unwrap_err().code, 2);
            assert_eq!(p.append(Bytes::new()).unwrap_err().code, 87);
            let mut control = simple(1);
            control[22] |= 0x20;
            let crc = records::compute_crc(&control);
            control[17..21].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(p.append(Bytes::from(control)).unwrap_err().code, 87);
            p.set_log_config(LogConfig {
                max_message_bytes: 50,
                ..LogConfig::default()
            });
            assert_eq!(p.append(Bytes::from(simple(1))).unwrap_err().code, 10);
            assert_eq!(p.log_end_offset(), 0);
            p.delete().await.unwrap();
        });
    }

    fn txn(producer_id: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
        Bytes::from(build(&BatchSpec {
            records,
            producer_id,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: true,
            ..Default::default()
        }))
    }

    fn keyed(producer_id: i64, seq: i32, key: &str, transactional: bool) -> Bytes {
        Bytes::from(build(&BatchSpec {
            records: 2,
            producer_id,
            producer_epoch: 0,
            base_sequence: seq,
            transactional,
            key: Some(key.as_bytes().to_vec()),
            ..Default::default()
        }))
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// Every batch below the high watermark: (header, keys of its records).
    async fn batches(p: &Partition) -> Vec<(records::BatchHeader, Vec<Option<Vec<u8>>>)> {
        let mut out = Vec::new();
        let mut offset = p.log_start_offset();
        while offset < p.high_watermark() {
            let bytes = p.read(offset, 1 << 20).await.unwrap();
            if bytes.is_empty() {
                break;
            }
            for b in records::iter_batches(&bytes) {
                let (at, h) = b.unwrap();
                let batch = &bytes[at..at + h.total_size()];
                let body = records::codec::records_body(batch, &h, usize::MAX).unwrap();
                let keys = records::codec::parse_records(&body, &h)
                    .unwrap()
                    .iter()
                    .map(|r| r.key.map(<[u8]>::to_vec))
                    .collect();
                offset = h.last_offset() + 1;
                out.push((h, keys));
            }
        }
        out
    }

    #[test]
    fn transactions_move_the_last_stable_offset_and_record_aborts() {
        use crate::protocol::errors::{
            INVALID_TXN_STATE, TRANSACTION_COORDINATOR_FENCED as FENCED,
        };
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            assert_eq!(p.last_stable_offset(), 0);
            let a = p.append_produce(txn(7, 0, 0, 2)).unwrap(); // 0..=1
            let b = p.append_produce(txn(8, 0, 0, 1)).unwrap(); // 2
            let c = p.append(idem(0, 1, 0)).unwrap(); // 3, producer 42: not transactional
            p.wait_durable(c.last_offset).await.unwrap();
            assert_eq!((a.base_offset, b.base_offset), (0, 2));
            assert_eq!(p.high_watermark(), 4);
            assert_eq!(p.last_stable_offset(), 0);
            assert_eq!(p.ongoing_transactions(), vec![(7, 0, 0), (8, 0, 2)]);
            // Inside its transaction a producer may not write non-transactionally.
            let plain = Bytes::from(build(&BatchSpec {
                producer_id: 7,
                producer_epoch: 0,
                base_sequence: 2,
                ..Default::default()
            }));
            assert_eq!(p.append(plain).unwrap_err().code, INVALID_TXN_STATE);
            // Fencing: an older producer epoch, then an older coordinator epoch.
            assert_eq!(
                p.append_marker(7, -1, 0, false, 0).unwrap_err().code,
                INVALID_PRODUCER_EPOCH
            );
            let m = p.append_marker(7, 0, 3, false, 0).unwrap(); // ABORT at 4
            assert_eq!((m.base_offset, m.last_offset), (4, 4));
            assert_eq!(p.append_marker(7, 0, 2, true, 0).unwrap_err().code, FENCED);
            // Until the marker is durable the aborted transaction still holds the LSO.
            assert!(p.last_stable_offset() <= 2);
            p.wait_durable(m.last_offset).await.unwrap();
            assert_eq!(p.last_stable_offset(), 2, "producer 8 is still ongoing");
            assert_eq!(p.ongoing_transactions(), vec![(8, 0, 2)]);
            assert_eq!(p.aborted_transactions(0, 5), vec![(7, 0)]);
            assert_eq!(p.aborted_transactions(2, 5), vec![(7, 0)]);
            assert_eq!(p.aborted_transactions(5, 6), vec![]);
            // A read_committed long poll wakes once the commit is durable.
            let waiting = glommio::spawn_local(p.wait_for_stable(2));
            let commit = p.append_marker(8, 0, 3, true, 0).unwrap(); // COMMIT at 5
            waiting.await;
            assert_eq!(p.last_stable_offset(), 6);
            p.wait_durable(commit.last_offset).await.unwrap();
            assert!(p.ongoing_transactions().is_empty());
            assert_eq!(p.aborted_transactions(0, 6), vec![(7, 0)]);
            // The markers are Kafka's control batches.
            let all = batches(&p).await;
            let control: Vec<_> = all.iter().filter(|(h, _)| h.is_control()).collect();
            assert_eq!(control.len(), 2);
            assert_eq!(control[0].0.producer_id, 7);
            assert_eq!(control[0].1, vec![Some(vec![0, 0, 0, 0])], "ABORT key");
            assert_eq!(control[1].1, vec![Some(vec![0, 0, 0, 1])], "COMMIT key");
            // A new transaction of producer 7 (its next sequence) begins at its next batch.
            let d = p.append_produce(txn(7, 0, 2, 1)).unwrap();
            p.wait_durable(d.last_offset).await.unwrap();
            assert_eq!(p.last_stable_offset(), 6);
            assert_eq!(p.ongoing_transactions(), vec![(7, 0, 6)]);
            // Expiry never forgets a producer with an ongoing transaction.
            assert_eq!(p.expire_producers(i64::MAX, 1), 2, "42 and 8 go, 7 stays");
            assert_eq!(p.ongoing_transactions(), vec![(7, 0, 6)]);
            p.close().await.unwrap();

            // After a clean restart: the ongoing transaction from the snapshot, the abort from the
            // .txnindex, which kafka-dump-log reads (Kafka's 34-byte entries).
            let idx = tmp.path().join("topic-3/00000000000000000000.txnindex");
            let bytes = std::fs::read(&idx).unwrap();
            assert_eq!(bytes.len(), 34);
            assert_eq!(&bytes[..2], &[0, 0]);
            assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
            assert_eq!(&bytes[10..18], &0i64.to_be_bytes());
            assert_eq!(&bytes[18..26], &4i64.to_be_bytes());
            assert_eq!(
                &bytes[26..34],
                &2i64.to_be_bytes(),
                "LSO: producer 8's first offset"
            );
            let p = open(tmp.path()).await;
            assert_eq!(p.ongoing_transactions(), vec![(7, 0, 6)]);
            assert_eq!(p.last_stable_offset(), 6);
            assert_eq!(p.aborted_transactions(0, 7), vec![(7, 0)]);
            assert_eq!(p.append_marker(7, 0, 2, true, 0).unwrap_err().code, FENCED);
            p.close().await.unwrap();
        });
    }

    #[test]
    fn recovery_rebuilds_transactions_from_snapshot_and_scan() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            p.set_log_config(LogConfig {
                segment_bytes: 300,
                ..p.log_config()
            });
            p.append_produce(txn(1, 0, 0, 1)).unwrap(); // 0
            p.append_produce(txn(2, 0, 0, 1)).unwrap(); // 1
            p.append_marker(1, 0, 0, false, 0).unwrap(); // 2 ABORT
            let r = p.append_produce(txn(3, 0, 0, 1)).unwrap(); // 3
            p.wait_durable(r.last_offset).await.unwrap();
            // The checkpoint writes the snapshot and the active segment's .txnindex.
            p.checkpoint().await.unwrap();
            p.append_marker(2, 0, 0, false, 0).unwrap(); // 4 ABORT, past the checkpoint
            let r = p.append_produce(txn(4, 0, 0, 1)).unwrap(); // 5
            p.wait_durable(r.last_offset).await.unwrap();
            assert!(
                p.log().segment_count() >= 2,
                "the test needs rolled segments"
            );
            let want_aborted = p.aborted_transactions(0, 10);
            assert_eq!(want_aborted, vec![(1, 0), (2, 1)]);
            let want_ongoing = p.ongoing_transactions();
            assert_eq!(want_ongoing, vec![(3, 0, 3), (4, 0, 5)]);
            assert_eq!(p.last_stable_offset(), 3);

            // A crash now: the copy is what the disk holds.
            let crashed = tempfile::tempdir().unwrap();
            copy_dir(&tmp.path().join("topic-3"), &crashed.path().join("topic-3"));
            let q = open(crashed.path()).await;
            assert_eq!(q.aborted_transactions(0, 10), want_aborted);
            assert_eq!(q.ongoing_transactions(), want_ongoing);
            assert_eq!(q.last_stable_offset(), 3);
            q.close().await.unwrap();

            // Without any snapshot the whole log is replayed: the same state.
            let bare = tempfile::tempdir().unwrap();
            copy_dir(&tmp.path().join("topic-3"), &bare.path().join("topic-3"));
            for e in std::fs::read_dir(bare.path().join("topic-3")).unwrap() {
                let path = e.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|x| x == "snapshot" || x == "txnindex")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
            let q = open(bare.path()).await;
            assert_eq!(q.aborted_transactions(0, 10), want_aborted);
            assert_eq!(q.ongoing_transactions(), want_ongoing);
            q.close().await.unwrap();
            p.close().await.unwrap();
        });
    }

    #[test]
    fn damaged_txn_index_is_rebuilt_from_the_log() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            p.set_log_config(LogConfig {
                segment_bytes: 300,
                ..p.log_config()
            });
            p.append_produce(txn(1, 0, 0, 1)).unwrap(); // 0
            p.append_marker(1, 0, 0, false, 0).unwrap(); // 1 ABORT
            for i in 0..4 {
                p.append(idem(i, 1, 0)).unwrap();
            }
            let r = p.append_produce(txn(5, 0, 0, 1)).unwrap();
            p.wait_durable(r.last_offset).await.unwrap();
            assert!(p.log().segment_count() >= 2);
            p.close().await.unwrap();
            let dir = tmp.path().join("topic-3");
            let idx = dir.join("00000000000000000000.txnindex");
            let good = std::fs::read(&idx).unwrap();
            for damage in [&good[..20], &[0xffu8; 34][..], &good[..0]] {
                std::fs::write(&idx, damage).unwrap();
                let p = open(tmp.path()).await;
                if !damage.is_empty() {
                    assert_eq!(p.aborted_transactions(0, 100), vec![(1, 0)]);
                    assert_eq!(std::fs::read(&idx).unwrap(), good, "rewritten");
                }
                assert_eq!(p.ongoing_transactions(), vec![(5, 0, r.base_offset)]);
                p.close().await.unwrap();
            }
        });
    }

    #[test]
    fn cleaner_removes_aborted_records_and_stops_at_the_lso() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let p = open(tmp.path()).await;
            p.set_log_config(LogConfig {
                compact: true,
                delete: false,
                segment_bytes: 250,
                ..p.log_config()
            });
            p.append_produce(keyed(1, 0, "a", true)).unwrap(); // 0..=1, aborted
            p.append_produce(keyed(2, 0, "b", true)).unwrap(); // 2..=3, committed
            p.append_marker(1, 0, 0, false, 0).unwrap(); // 4
            p.append_marker(2, 0, 0, true, 0).unwrap(); // 5
            p.append_produce(keyed(1, 2, "c", false)).unwrap(); // 6..=7
            p.append_produce(keyed(3, 0, "d", true)).unwrap(); // 8..=9, ongoing
            for i in 0..4 {
                let r = p.append_produce(keyed(4, i * 2, "e", false)).unwrap();
                p.wait_durable(r.last_offset).await.unwrap();
            }
            assert_eq!(p.last_stable_offset(), 8);
            let now = crate::storage::now_ms();
            let stats = p.clean(now, 1 << 16, f64::INFINITY).await.unwrap().unwrap();
            assert!(
                stats.end_offset <= 8,
                "never past the LSO: {}",
                stats.end_offset
            );
            assert!(stats.records_removed >= 2);
            let all = batches(&p).await;
            let keys: Vec<_> = all.iter().flat_map(|(_, k)| k.clone()).collect();
            assert!(
                !keys.contains(&Some(b"a".to_vec())),
                "aborted records removed"
            );
            assert!(
                keys.contains(&Some(b"b".to_vec())),
                "committed records kept"
            );
            assert_eq!(all.iter().filter(|(h, _)| h.is_control()).count(), 2);
            // The abort's entry stays while the cleaning saw its batches.
            assert_eq!(p.aborted_transactions(0, 100), vec![(1, 0)]);
            // The ongoing transaction's data is untouched.
            assert!(keys.contains(&Some(b"d".to_vec())));
            p.close().await.unwrap();
        });
    }
}
