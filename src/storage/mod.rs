//! Per-partition log storage in Apache Kafka's on-disk layout, written with glommio direct I/O.
//!
//! Shape: [`PartitionLog::append`] is synchronous and in memory. It assigns offsets (patching a copy of the
//! producer's bytes), adds the batches to an in-memory tail cache and queues them for the partition's
//! flusher task. The flusher drains the whole queue at once (group commit): one direct write of the
//! pending bytes, together with the partial last 4 KiB block re-sent from memory, then one `fdatasync`,
//! then it advances the durable offset and wakes the waiters. Segment rolls travel through the same
//! ordered queue, so a rolled segment is finished (written, synced, truncated to its logical size, exact
//! index files) before anything lands in the next one.
//!
//! Durability modes: by default (`flush_interval_messages` and `flush_interval_ms` both `None`) an ack waits
//! for `fdatasync` and the high watermark is the durable offset: consumers never see bytes a crash could
//! lose. If either interval is set (Kafka's `log.flush.interval.*`), acks wait only for the write, the
//! high watermark is the written offset, and `fdatasync` runs when the count or the interval is reached.
//!
//! Fault model: the process may crash at any instant (torn writes, zero padding, stale or missing index
//! files: recovery in [`recovery`] trims and rebuilds); the disk may fail (an I/O error poisons the log:
//! every later append and wait returns [`StorageError::Failed`], nothing panics); bytes on disk may rot
//! (CRCs of the last segment are verified at open; a read that meets a broken header reports
//! [`StorageError::Corrupt`]).
//!
//! Layout: this file holds the log's state and its life (open, append, wait, checkpoint, close, delete);
//! [`read`] the read path, [`retention`] DeleteRecords and retention, [`recovery`] opening after a stop or
//! crash, [`flusher`] the writer task, [`checkpoint`] the recovery points, [`files`] everything outside the
//! segments (markers, small synced files, the blocking pool), [`time_lookup`] ListOffsets by time.
//!
//! Every glommio call of the crate's storage lives under this module.

pub mod checkpoint;
pub mod cleaner;
pub mod epochs;
pub mod fault_journal;
mod files;
mod flusher;
pub mod fuzz;
pub mod limits;
mod read;
pub mod readahead;
mod recovery;
mod retention;
pub mod segment;
pub mod tail_cache;
mod time_lookup;
mod wait;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Waker;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::records::{self, BatchHeader, EndTxnMarker};
use files::*;
pub use files::{
    blocking, close_failures, prepare_executor, remove_deleted_dirs, take_clean_shutdown_marker,
    write_clean_shutdown_marker,
};
pub use limits::*;
pub use read::FetchRead;
pub(crate) use read::*;
pub use recovery::{take_totals as take_recovery_totals, RecoveryHooks, RecoveryStats};
pub use segment::AbortedTxn;
use segment::Segment;
pub use time_lookup::TimestampOffset;
use wait::{WaitUntil, Waiters};

/// Configuration of one partition's log (Kafka topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub roll_ms: i64,
    /// `retention.ms`; -1 = unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = unlimited.
    pub retention_bytes: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u64,
    /// `flush.messages`; `None` = fsync before every ack.
    pub flush_interval_messages: Option<u64>,
    /// `flush.ms`; `None` = fsync before every ack.
    pub flush_interval_ms: Option<u64>,
    /// Byte budget of the in-memory tail cache (never evicts unwritten bytes).
    pub tail_cache_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `max.message.bytes`.
    pub max_message_bytes: usize,
    /// `cleanup.policy` holds `compact`: the log cleaner keeps the latest record of every key.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: retention deletes old segments by age and size.
    pub delete: bool,
    /// `delete.retention.ms`: how long a cleaned tombstone stays readable.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are never cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log with records older than this that are not cleaned yet is cleaned
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `message.timestamp.before.max.ms`: a CreateTime record may be at most this much older than the
    /// broker's clock.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: ... and at most this much newer.
    pub timestamp_after_max_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            roll_ms: ROLL_MS_DEFAULT,
            retention_ms: RETENTION_MS_DEFAULT,
            retention_bytes: -1,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            flush_interval_messages: None,
            flush_interval_ms: None,
            tail_cache_bytes: TAIL_CACHE_BYTES_DEFAULT,
            log_append_time: false,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            compact: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
        }
    }
}

impl LogConfig {
    /// True if acks wait for fdatasync (the default).
    pub fn fsync_before_ack(&self) -> bool {
        self.flush_interval_messages.is_none() && self.flush_interval_ms.is_none()
    }

    /// Clamps every setting into its legal range (as Kafka's config validation would refuse them).
    pub fn sanitized(mut self) -> LogConfig {
        self.segment_bytes = self
            .segment_bytes
            .clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
        self.roll_ms = self.roll_ms.max(1);
        self.tail_cache_bytes = self.tail_cache_bytes.max(TAIL_CACHE_BYTES_MIN);
        self
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("corrupt batch in {path} at position {position}")]
    Corrupt { path: PathBuf, position: u64 },
    #[error("the log has failed after an earlier error: {0}")]
    Failed(String),
    #[error("the disk is full; writes resume once space is freed: {0}")]
    DiskFull(String),
    #[error("the log is closed")]
    Closed,
}

impl StorageError {
    fn io(path: &Path, source: impl Into<std::io::Error>) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    /// The Kafka protocol error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        use crate::protocol::errors;
        match self {
            StorageError::OffsetOutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
            // Retriable: the client looks for the leader again.
            StorageError::Closed => errors::NOT_LEADER_OR_FOLLOWER,
            StorageError::Io { .. }
            | StorageError::Corrupt { .. }
            | StorageError::Failed(_)
            | StorageError::DiskFull(_) => errors::KAFKA_STORAGE_ERROR,
        }
    }

    /// True for an error that means "no space left" (ENOSPC, EDQUOT, a short direct write): the flusher
    /// retries those instead of taking the log offline.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            StorageError::DiskFull(_) => true,
            _ => false,
        }
    }
}

/// What an append produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped on the batches, or -1 with CreateTime.
    pub log_append_time_ms: i64,
}

/// A batch in the tail cache: a slice of the patched append copy.
pub(crate) struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// This batch: `append[at..at + len]`.
    pub bytes: Bytes,
    /// The whole buffer of the append this batch came with (so adjacent batches read as one slice).
    pub append: Bytes,
    pub at: usize,
}

/// One entry of the ordered queue the flusher drains.
#[derive(Clone)]
pub(crate) enum Op {
    Write {
        segment_base: i64,
        position: u64,
        bytes: Bytes,
        next_offset: i64,
        records: u64,
    },
    /// Finish the segment at `old_base` (sync, truncate, exact index files), create the one at
    /// `new_base`, write the producer snapshot taken when the roll was decided (`<new_base>.snapshot`, as
    /// Kafka's roll takes one named by the new segment's base offset), and advance the recovery point to
    /// `new_base` (as Kafka's flush of the rolled segment does).
    Roll {
        old_base: i64,
        new_base: i64,
        snapshot: Option<Vec<u8>>,
    },
    /// A recovery-point checkpoint at `offset` (a log end offset): once everything before it is synced,
    /// write the index files of the segment at `segment_base` if it is still the active one (a roll
    /// queued earlier has written complete ones; one queued later overwrites these) and the producer
    /// snapshot `<offset>.snapshot`, then advance `recovery_point`.
    Checkpoint {
        offset: i64,
        segment_base: i64,
        index: Vec<u8>,
        time_index: Vec<u8>,
        txn_index: Vec<u8>,
        snapshot: Vec<u8>,
    },
}

/// Mutable state of one log.
pub(crate) struct State {
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Every offset below this is written to its file.
    pub written_offset: i64,
    /// Every offset below this is fdatasync'ed.
    pub durable_offset: i64,
    pub pending: VecDeque<Op>,
    pub cache: tail_cache::TailCache,
    /// Blocks read from disk ahead of a consumer (see [`readahead`]).
    pub readahead: readahead::ReadAhead,
    pub waiters: Waiters,
    pub flusher_waker: Option<Waker>,
    pub closing: bool,
    pub flusher_done: bool,
    pub failed: Option<String>,
    /// Set while the flusher cannot write because the disk is full (it retries); appends are refused.
    pub stalled: Option<String>,
    /// fdatasync calls of segment data so far (group commit makes this far smaller than the appends).
    pub sync_count: u64,
    /// Kafka's recovery point: every offset below it is synced, and the index files and producer
    /// snapshot on disk describe the log up to it. -1 until the first checkpoint of a log recovered
    /// without one.
    pub recovery_point: i64,
    /// Offsets of the producer snapshot files in the directory, oldest first.
    pub snapshots: VecDeque<i64>,
    /// Segments the log cleaner has swapped so far: a disk read planned before a swap must not keep its
    /// block for read-ahead (the positions after it belong to the old file).
    pub swaps: u64,
    /// Kafka's leader epoch cache (`leader-epoch-checkpoint`), and whether its file is behind it / being
    /// written (see `files::schedule_epochs_write`).
    pub epochs: epochs::LeaderEpochCache,
    pub epochs_dirty: bool,
    pub epochs_writing: bool,
}

impl State {
    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// The segments from the one holding `offset` (the first one if `offset` is below the log).
    fn segments_from(&self, offset: i64) -> &[Segment] {
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        &self.segments[first..]
    }

    pub(crate) fn segment_mut(&mut self, base: i64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base_offset == base)
    }

    /// Consumers see offsets below this: the durable offset by default; with a flush interval, the
    /// written offset (bytes in the file survive a process crash, as Kafka's page cache does; bytes
    /// only in memory do not, so they are never shown).
    fn high_watermark(&self, fsync_before_ack: bool) -> i64 {
        if fsync_before_ack {
            self.durable_offset
        } else {
            self.written_offset
        }
    }

    /// Drops written batches from the front of the cache while it is over budget.
    pub(crate) fn evict_cache(&mut self, budget: usize) {
        let written = self.written_offset;
        self.cache.evict_written(budget, written);
    }

    /// Why a wait for the flusher can never be satisfied now: the log failed, is stalled on a full disk,
    /// or its flusher has stopped (closed).
    fn wait_failure(&self) -> Option<StorageError> {
        if let Some(e) = &self.failed {
            Some(StorageError::Failed(e.clone()))
        } else if let Some(e) = &self.stalled {
            Some(StorageError::DiskFull(e.clone()))
        } else if self.flusher_done {
            Some(StorageError::Closed)
        } else {
            None
        }
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if let Some(e) = &self.failed {
            return Err(StorageError::Failed(e.clone()));
        }
        if let Some(e) = &self.stalled {
            return Err(StorageError::DiskFull(e.clone()));
        }
        if self.closing {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    fn wake_flusher(&mut self) {
        if let Some(w) = self.flusher_waker.take() {
            w.wake();
        }
    }
}

/// Shared between the log handle and its flusher task.
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// The log directory holding `dir`, and the partition's name in its checkpoint files.
    pub log_dir: PathBuf,
    pub topic: String,
    pub partition: i32,
    /// Current settings; replaced whole by [`PartitionLog::set_config`].
    pub config: Cell<LogConfig>,
    pub state: RefCell<State>,
}

/// The log of one topic-partition.
///
/// Owned by the core that owns the partition. Not `Send`; every method must run on that core's executor.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

/// See [`PartitionLog::aborted_transactions`].
pub(crate) fn collect_aborted(st: &State, from: i64, upper: i64) -> Vec<AbortedTxn> {
    let mut out = Vec::new();
    for s in st.segments_from(from) {
        for t in &s.aborted {
            if t.last_offset >= from && t.first_offset < upper {
                out.push(*t);
            }
            if t.last_stable_offset >= upper {
                return out;
            }
        }
    }
    out
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (or creates) the log of `topic`-`partition` under `log_dir`, recovering it after a crash.
    /// `hooks` get the newest producer snapshot and then the header of every batch after it, oldest first
    /// (to rebuild producer state).
    pub async fn open(
        log_dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        hooks: &mut dyn RecoveryHooks,
    ) -> Result<PartitionLog, StorageError> {
        let config = config.sanitized();
        prepare_executor(log_dir).await?;
        let dir = log_dir.join(format!("{topic}-{partition}"));
        let created = {
            let d = dir.clone();
            blocking(move || {
                let existed = d.is_dir();
                std::fs::create_dir_all(&d).map(|()| !existed)
            })
            .await
            .map_err(|e| StorageError::io(&dir, e))?
        };
        let clean = started_clean(log_dir);
        let recovery_point = checkpoint::get(log_dir, topic, partition);
        let mut epoch_hooks = EpochHooks {
            inner: hooks,
            seen: Vec::new(),
        };
        let recovered =
            recovery::recover(&dir, &config, clean, recovery_point, &mut epoch_hooks).await?;
        let seen_epochs = epoch_hooks.seen;
        if created || recovered.created_first_segment {
            // A new partition (or one whose directory a crash left without a segment): make its first
            // segment's directory entry and the directory's own entry durable before it takes records (a
            // machine crash could otherwise lose the partition with records already acknowledged).
            let (d, parent) = (dir.clone(), log_dir.to_path_buf());
            blocking(move || sync_dir(&d).and_then(|()| sync_dir(&parent)))
                .await
                .map_err(|e| StorageError::io(&dir, e))?;
        }
        let leo = recovered
            .segments
            .last()
            .expect("recovery yields a segment")
            .next_offset;
        // DeleteRecords may have moved the log start past the first segment's base offset.
        let log_start = {
            let d = dir.clone();
            blocking(move || read_log_start(&d)).await
        }
        .filter(|&o| o <= leo)
        .unwrap_or(i64::MIN)
        .max(recovered.segments[0].base_offset);
        // Snapshots past the recovered end describe data that is gone (Kafka deletes them at truncation);
        // of the others, those Kafka's rules no longer keep go once the log is set up.
        let mut snapshots = recovered.snapshots;
        let stale: Vec<i64> = snapshots.iter().copied().filter(|&o| o > leo).collect();
        snapshots.retain(|&o| o <= leo);
        if !stale.is_empty() {
            let d = dir.clone();
            blocking(move || {
                for o in stale {
                    let _ = std::fs::remove_file(d.join(segment::snapshot_file_name(o)));
                }
            })
            .await;
        }
        tracing::debug!(
            dir = %dir.display(),
            recovery_point = ?recovery_point,
            producer_snapshot = ?recovered.snapshot_offset,
            segments_from_index = recovered.stats.segments_from_index,
            segments_scanned = recovered.stats.segments_scanned,
            bytes_scanned = recovered.stats.bytes_scanned,
            batches_verified = recovered.stats.batches_verified,
            "partition recovered"
        );
        let (epochs, epochs_changed) = {
            let d = dir.clone();
            let file = blocking(move || read_epochs(&d)).await;
            recovered_epochs(&dir, file, &seen_epochs, log_start, leo)
        };
        let recovery_point = recovery_point.filter(|&rp| rp <= leo).unwrap_or(-1);
        checkpoint::set(
            log_dir,
            topic,
            partition,
            (recovery_point >= 0).then_some(recovery_point),
        );
        let shared = Rc::new(Shared {
            dir,
            log_dir: log_dir.to_path_buf(),
            topic: topic.to_string(),
            partition,
            config: Cell::new(config),
            state: RefCell::new(State {
                segments: recovered.segments,
                log_start_offset: log_start,
                log_end_offset: leo,
                written_offset: leo,
                durable_offset: leo,
                pending: VecDeque::new(),
                cache: Default::default(),
                readahead: Default::default(),
                waiters: Waiters::default(),
                flusher_waker: None,
                closing: false,
                flusher_done: false,
                failed: None,
                stalled: None,
                sync_count: 0,
                recovery_point,
                snapshots,
                swaps: 0,
                epochs,
                epochs_dirty: false,
                epochs_writing: false,
            }),
        });
        if epochs_changed {
            schedule_epochs_write(&shared);
        }
        prune_snapshots(&shared).await?;
        tail_cache::register(&shared);
        glommio::spawn_local(flusher::run(shared.clone(), recovered.tail_block)).detach();
        Ok(PartitionLog { shared })
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// This broker leads the partition in `epoch` from the log end on (Kafka's leader takes its epoch's
    /// start offset when it becomes leader, before any append).
    pub fn assign_leader_epoch(&self, epoch: i32) {
        let changed = {
            let mut st = self.shared.state.borrow_mut();
            let leo = st.log_end_offset;
            st.epochs.assign(epoch, leo)
        };
        if changed {
            schedule_epochs_write(&self.shared);
        }
    }

    /// Kafka's OffsetForLeaderEpoch answer from this log: the largest epoch at or below `requested` and
    /// where it ends ((-1, -1) if unknown).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let st = self.shared.state.borrow();
        st.epochs.end_offset_for(requested, st.log_end_offset)
    }

    /// The leader epoch of the batch holding `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.shared.state.borrow().epochs.epoch_for_offset(offset)
    }

    /// The first leader epoch of the log and its start offset, if any.
    pub fn first_epoch(&self) -> Option<(i32, i64)> {
        let st = self.shared.state.borrow();
        st.epochs
            .entries()
            .first()
            .map(|e| (e.epoch, e.start_offset))
    }

    pub fn config(&self) -> LogConfig {
        self.shared.config.get()
    }

    /// Replaces the settings (topic config change). Takes effect from the next append, roll, flush or
    /// retention check.
    pub fn set_config(&self, config: LogConfig) {
        self.shared.config.set(config.sanitized());
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.shared.state.borrow().log_end_offset
    }

    /// Offsets below this are visible to consumers: the durable offset when acks wait for fsync,
    /// otherwise the written offset.
    pub fn high_watermark(&self) -> i64 {
        let st = self.shared.state.borrow();
        st.high_watermark(self.shared.config.get().fsync_before_ack())
    }

    /// Offsets below this have been fdatasync'ed.
    pub fn durable_offset(&self) -> i64 {
        self.shared.state.borrow().durable_offset
    }

    /// Number of fdatasync calls on segment data so far (metrics; shows group commit at work).
    pub fn sync_count(&self) -> u64 {
        self.shared.state.borrow().sync_count
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Total logical size of the log in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.size)
            .sum()
    }

    /// Appends already validated batches (`headers` from [`records::validate_batches`] over `batches`).
    /// Synchronous: assigns offsets, stamps the leader epoch (and LogAppendTime if configured) on a copy,
    /// queues the copy for the flusher, and returns. Use [`PartitionLog::wait_durable`] before acking.
    /// A log without producer state: a roll writes no producer snapshot.
    pub fn append(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
    ) -> Result<AppendInfo, StorageError> {
        self.append_with_snapshot(batches, headers, leader_epoch, None)
    }

    /// [`PartitionLog::append`] of a log with producer state: if the append rolls the log, `snapshot()`
    /// (the producer state before these batches, which describes the log up to the new segment's base
    /// offset) is taken now and written by the flusher once the rolled segment is synced.
    pub fn append_with_snapshot(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        snapshot: Option<&dyn Fn() -> Vec<u8>>,
    ) -> Result<AppendInfo, StorageError> {
        self.append_with_txn(batches, headers, leader_epoch, snapshot, None)
    }

    /// [`PartitionLog::append_with_snapshot`] of a transaction marker: `aborted`, the entry of an aborted
    /// transaction whose ABORT marker is the last batch of `batches` (its `last_offset` is the marker's
    /// offset, as the caller predicted it from the log end offset), goes to the `.txnindex` of the segment
    /// the marker lands in. The entry reaches the disk with that segment's index files: when the segment
    /// is rolled or closed, or at the checkpoint that moves the recovery point past it.
    pub fn append_with_txn(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        snapshot: Option<&dyn Fn() -> Vec<u8>>,
        aborted: Option<AbortedTxn>,
    ) -> Result<AppendInfo, StorageError> {
        assert!(!headers.is_empty(), "append of no batches");
        assert_eq!(
            headers.iter().map(|h| h.total_size()).sum::<usize>(),
            batches.len(),
            "headers do not describe the batches"
        );
        let config = self.shared.config.get();
        let mut st = self.shared.state.borrow_mut();
        st.check_usable()?;
        let now = now_ms();
        let records: i64 = headers.iter().map(|h| h.last_offset_delta as i64 + 1).sum();
        let len = batches.len() as u64;

        // Roll first if this append does not fit the active segment.
        let leo = st.log_end_offset;
        if leo.checked_add(records).is_none() {
            // Only a damaged or hostile segment file name (a base offset near i64::MAX) gets here.
            return Err(StorageError::Failed(format!(
                "offsets exhausted: the log ends at {leo}, no room for {records} more records"
            )));
        }
        let active = st.active();
        let too_big = active.size + len > config.segment_bytes;
        let too_old = now - active.created_ms > config.roll_ms;
        let offsets_overflow = leo + records - 1 - active.base_offset > i32::MAX as i64;
        if active.size > 0 && (too_big || too_old || offsets_overflow) {
            let old_base = active.base_offset;
            let seg = Segment::new(&self.shared.dir, leo, now, None);
            st.segments.push(seg);
            st.pending.push_back(Op::Roll {
                old_base,
                new_base: leo,
                snapshot: snapshot.map(|f| f()),
            });
        }

        let new_epoch = st.epochs.assign(leader_epoch, leo);

        // The one copy: patch offsets, epoch and timestamps into it.
        let mut copy = BytesMut::from(batches);
        let mut final_headers = Vec::with_capacity(headers.len());
        let mut at = 0usize;
        let mut next = leo;
        for h in headers {
            let size = h.total_size();
            let b = &mut copy[at..at + size];
            records::set_base_offset(b, next);
            records::set_partition_leader_epoch(b, leader_epoch);
            let mut fh = *h;
            fh.base_offset = next;
            fh.partition_leader_epoch = leader_epoch;
            if config.log_append_time {
                records::set_log_append_time(b, now);
                fh.max_timestamp = now;
                fh.attributes |= 0x08;
            }
            final_headers.push(fh);
            next += h.last_offset_delta as i64 + 1;
            at += size;
        }
        let bytes = copy.freeze();

        let interval = config.index_interval_bytes;
        let active = st.active_mut();
        let segment_base = active.base_offset;
        let position = active.size;
        let mut pos = position;
        let mut cached = Vec::with_capacity(final_headers.len());
        let mut at = 0usize;
        for fh in &final_headers {
            active.track_batch(pos, fh, interval);
            let size = fh.total_size();
            cached.push(CachedBatch {
                base_offset: fh.base_offset,
                last_offset: fh.last_offset(),
                bytes: bytes.slice(at..at + size),
                append: bytes.clone(),
                at,
            });
            pos += size as u64;
            at += size;
        }
        active.size += len;
        if let Some(t) = aborted {
            assert_eq!(
                t.last_offset,
                next - 1,
                "the marker is the last batch appended"
            );
            active.aborted.push(t);
        }
        st.cache.extend(cached);
        st.log_end_offset = next;
        st.pending.push_back(Op::Write {
            segment_base,
            position,
            bytes,
            next_offset: next,
            records: records as u64,
        });
        st.evict_cache(config.tail_cache_bytes);
        st.wake_flusher();
        if !config.fsync_before_ack() {
            // The high watermark moved: wake long-polling fetches.
            st.waiters.wake_all();
        }
        drop(st);
        if new_epoch {
            schedule_epochs_write(&self.shared);
        }
        Ok(AppendInfo {
            base_offset: leo,
            last_offset: next - 1,
            log_append_time_ms: if config.log_append_time { now } else { -1 },
        })
    }

    /// Resolves once `last_offset` may be acknowledged: fsync'ed by default, written when a flush interval
    /// is configured.
    pub async fn wait_durable(&self, last_offset: i64) -> Result<(), StorageError> {
        let fsync = self.shared.config.get().fsync_before_ack();
        WaitUntil::new(self.shared.clone(), move |st: &State| {
            let reached = if fsync {
                st.durable_offset
            } else {
                st.written_offset
            };
            if reached > last_offset {
                Some(Ok(()))
            } else {
                st.wait_failure().map(Err)
            }
        })
        .await
    }

    /// Resolves once `last_offset` is written to its file (not necessarily synced), or the log fails, stalls
    /// or closes. An `acks=0` produce waits for this so that its bytes stay charged to the connection's
    /// request budget until they have left memory-only state.
    pub async fn wait_written(&self, last_offset: i64) {
        WaitUntil::new(self.shared.clone(), move |st: &State| {
            (st.written_offset > last_offset
                || st.failed.is_some()
                || st.stalled.is_some()
                || st.flusher_done)
                .then_some(())
        })
        .await
    }

    /// Resolves when the high watermark passes `offset`, or the log fails or closes. Cancel-safe: drop
    /// it (for example on a fetch timeout) at any time.
    pub fn wait_for_data(&self, offset: i64) -> impl std::future::Future<Output = ()> + 'static {
        let fsync = self.shared.config.get().fsync_before_ack();
        WaitUntil::new(self.shared.clone(), move |st: &State| {
            (st.high_watermark(fsync) > offset || st.failed.is_some() || st.closing).then_some(())
        })
    }

    /// The aborted transactions a read of `[from, upper)` must report to a read_committed consumer, as
    /// Kafka's `LocalLog.collectAbortedTransactions` and `TransactionIndex.collectAbortedTxns` find them:
    /// every transaction whose marker is at or after `from` and whose first offset is below `upper`,
    /// searching the segments from the one holding `from` until an entry's last stable offset reaches
    /// `upper`. In marker order.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        collect_aborted(&self.shared.state.borrow(), from, upper)
    }

    /// ListOffsets by timestamp `ts >= 0`: the first record, below the high watermark, with a timestamp
    /// `>= ts`, found as Kafka finds it (see [`time_lookup`]).
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        time_lookup::offset_for_timestamp(&self.shared, ts).await
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the first record holding the largest timestamp, if it is below the
    /// high watermark (see [`time_lookup`]).
    pub async fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, StorageError> {
        time_lookup::max_timestamp_offset(&self.shared).await
    }

    /// Writes and syncs everything pending, truncates the active segment to its logical size and writes its
    /// index files, then stops the flusher. Later appends fail with [`StorageError::Closed`].
    pub async fn close(&self) -> Result<(), StorageError> {
        {
            let mut st = self.shared.state.borrow_mut();
            st.closing = true;
            st.wake_flusher();
            st.waiters.wake_all();
        }
        let closed = WaitUntil::new(self.shared.clone(), |st: &State| {
            if !st.flusher_done {
                None
            } else if let Some(e) = &st.failed {
                Some(Err(StorageError::Failed(e.clone())))
            } else {
                Some(Ok(()))
            }
        })
        .await;
        // A leader epoch file being written (a new epoch just began) reaches the disk before the log is
        // called closed: a clean start trusts the file without scanning the batches.
        while self.shared.state.borrow().epochs_writing {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        if closed.is_err() {
            CLOSE_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        closed
    }

    /// Kafka's recovery-point checkpoint of this log. Takes the producer snapshot `snapshot()` now, at the
    /// log end offset; once everything before that offset is synced, the flusher writes the active
    /// segment's index files and the snapshot, and the offset becomes the recovery point (in the
    /// process-wide table the checkpoint file is written from). Returns the new recovery point, or `None`
    /// if the log has not moved since the last one.
    pub async fn checkpoint(
        &self,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> Result<Option<i64>, StorageError> {
        let offset = {
            let mut st = self.shared.state.borrow_mut();
            st.check_usable()?;
            let offset = st.log_end_offset;
            if offset == st.recovery_point {
                return Ok(None);
            }
            let active = st.active();
            let op = Op::Checkpoint {
                offset,
                segment_base: active.base_offset,
                index: active.index_bytes(),
                time_index: active.time_index_bytes(),
                txn_index: active.txn_index_bytes(),
                snapshot: snapshot(),
            };
            st.pending.push_back(op);
            st.wake_flusher();
            offset
        };
        WaitUntil::new(self.shared.clone(), move |st: &State| {
            if st.recovery_point >= offset {
                Some(Ok(()))
            } else {
                st.wait_failure().map(Err)
            }
        })
        .await?;
        let s = &self.shared;
        checkpoint::set(&s.log_dir, &s.topic, s.partition, Some(offset));
        Ok(Some(offset))
    }

    /// After a successful [`PartitionLog::close`]: writes the producer snapshot at the log end offset and
    /// makes that offset the recovery point (the closed log is synced, its index files written).
    pub async fn checkpoint_closed(&self, snapshot: Vec<u8>) -> Result<(), StorageError> {
        let offset = {
            let st = self.shared.state.borrow();
            if let Some(e) = &st.failed {
                return Err(StorageError::Failed(e.clone()));
            }
            if !st.flusher_done {
                return Err(StorageError::Failed(
                    "checkpoint of a log not closed".into(),
                ));
            }
            (st.recovery_point != st.log_end_offset).then_some(st.log_end_offset)
        };
        if let Some(offset) = offset {
            write_snapshot(&self.shared, offset, snapshot).await?;
            self.shared.state.borrow_mut().recovery_point = offset;
        }
        let s = &self.shared;
        let rp = s.state.borrow().recovery_point;
        checkpoint::set(&s.log_dir, &s.topic, s.partition, Some(rp));
        Ok(())
    }

    /// Closes the log and removes its directory.
    pub async fn delete(&self) -> Result<(), StorageError> {
        let closed = self.close().await;
        if let Err(e) = &closed {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "deleting a failed log");
        }
        {
            let mut st = self.shared.state.borrow_mut();
            for s in &mut st.segments {
                s.file = None;
            }
            st.cache.clear();
            st.readahead = Default::default();
        }
        // As Kafka does: rename to `<dir>.<id>-delete` first (durably), so a crash mid-removal never
        // leaves a half-deleted partition under its live name, then remove it; both off the executor.
        let dir = self.shared.dir.clone();
        let doomed = dir.with_file_name(format!(
            "{}.{}-delete",
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            uuid::Uuid::new_v4().simple()
        ));
        let parent = dir.parent().map(Path::to_path_buf);
        let sh = &self.shared;
        checkpoint::set(&sh.log_dir, &sh.topic, sh.partition, None);
        checkpoint::cleaner_set(&sh.log_dir, &sh.topic, sh.partition, None);
        blocking(move || {
            std::fs::rename(&dir, &doomed)?;
            if let Some(parent) = &parent {
                sync_dir(parent)?;
            }
            std::fs::remove_dir_all(&doomed)
        })
        .await
        .map_err(|e| StorageError::io(&self.shared.dir, e))
    }
}

/// Forwards recovery's calls and notes the leader epoch of every batch it sees (batches the epoch file
/// may not name yet: written after its last write).
struct EpochHooks<'a> {
    inner: &'a mut dyn RecoveryHooks,
    seen: Vec<(i32, i64)>,
}

impl RecoveryHooks for EpochHooks<'_> {
    fn load_snapshot(&mut self, offset: i64, bytes: &[u8]) -> Result<(), String> {
        self.inner.load_snapshot(offset, bytes)
    }

    fn on_batch(&mut self, h: &BatchHeader, marker: Option<EndTxnMarker>) -> Option<AbortedTxn> {
        if self
            .seen
            .last()
            .is_none_or(|&(e, _)| e != h.partition_leader_epoch)
        {
            self.seen.push((h.partition_leader_epoch, h.base_offset));
        }
        self.inner.on_batch(h, marker)
    }

    fn discard_snapshot(&mut self) {
        self.seen.clear();
        self.inner.discard_snapshot();
    }
}

/// The leader epochs of a recovered log: the checkpoint file cut to the log end, completed with the
/// epochs of batches recovery saw past its newest entry. Without a usable file (logs written before
/// Ringtide kept one) the log's first epoch is taken from the first batch seen, or 0 (every epoch was
/// 0 on a single broker). Returns whether the file must be written again.
fn recovered_epochs(
    dir: &Path,
    file: Option<Result<epochs::LeaderEpochCache, String>>,
    seen: &[(i32, i64)],
    log_start: i64,
    leo: i64,
) -> (epochs::LeaderEpochCache, bool) {
    let (mut cache, mut changed) = match file {
        Some(Ok(c)) => (c, false),
        Some(Err(why)) => {
            tracing::warn!(dir = %dir.display(), why, "leader-epoch-checkpoint unusable: rebuilt from the log");
            (epochs::LeaderEpochCache::default(), true)
        }
        None => (epochs::LeaderEpochCache::default(), leo > log_start),
    };
    changed |= cache.truncate_from_end(leo);
    if cache.entries().is_empty() && leo > log_start {
        let first = seen.first().map_or(0, |&(e, _)| e.max(0));
        changed |= cache.assign(first, log_start);
    }
    for &(epoch, offset) in seen {
        if offset < leo && cache.latest_epoch().is_none_or(|latest| epoch > latest) {
            changed |= cache.assign(epoch, offset);
        }
    }
    (cache, changed)
}
