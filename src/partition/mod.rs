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

use crate::records::{self, RecordError};
use crate::storage::{FetchRead, LogConfig, PartitionLog, RecoveryHooks, StorageError};
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

    fn on_batch(&mut self, h: &records::BatchHeader) {
        self.producers.replay_header(h, self.now_ms);
    }

    fn discard_snapshot(&mut self) {
        self.producers = ProducerStateManager::new();
    }
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

    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.set(epoch);
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
        self.append_validated(records, headers)
    }

    /// One cleaning of this partition's log (see `storage::cleaner`): a batch left without records stays
    /// (empty) when it is the last batch its idempotent producer's state remembers.
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
        self.log
            .clean(now_ms, map_entries, io_bytes_per_second, &keep_empty)
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
                    Ok(SequenceCheck::Append) => overlay.record(
                        h.producer_id,
                        h.producer_epoch,
                        BatchMetadata {
                            first_seq,
                            last_seq,
                            base_offset: next,
                            last_offset_delta: h.last_offset_delta,
                            max_timestamp: batch_timestamp(h),
                        },
                    ),
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
    /// (`producer.id.expiration.ms`); returns how many.
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
}
