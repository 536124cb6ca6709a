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
//! Every glommio call of the crate's storage lives under this module.

pub mod checkpoint;
pub mod fault_journal;
mod flusher;
pub mod fuzz;
pub mod limits;
pub mod readahead;
mod recovery;
pub mod segment;
pub mod tail_cache;
mod time_lookup;
mod wait;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::io::DmaFile;

use crate::records::{self, BatchHeader};
pub use limits::*;
pub use recovery::{take_totals as take_recovery_totals, RecoveryHooks, RecoveryStats};
use segment::Segment;
pub use time_lookup::TimestampOffset;
use wait::{WaitUntil, Waiters};

/// Configuration of one partition's log (Kafka topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    Roll {
        old_base: i64,
        new_base: i64,
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Logs whose `close` failed since the process started: a clean-shutdown marker is written only if none.
static CLOSE_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Log directories that were shut down cleanly before this start (their marker was found and removed).
static CLEAN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Number of logs whose `close` failed in this process.
pub fn close_failures() -> usize {
    CLOSE_FAILURES.load(Ordering::Relaxed)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fault_journal::sync_dir(dir)
}

/// Runs a blocking filesystem call (directory creation, removal, directory fsync) on the runtime's
/// blocking thread pool, so the core's executor, and every connection on it, does not stall on it.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// At start-up, before any partition is opened or any client served: removes `<log_dir>/.kafka_cleanshutdown`
/// (durably) and returns whether it was there. If it was, recovery of this directory's partitions trusts
/// that the files are as a clean shutdown left them and skips CRC verification of the active segments
/// (headers are still scanned, torn or zero-filled tails still trimmed). Removing it first means a crash at
/// any later point never looks clean.
pub fn take_clean_shutdown_marker(log_dir: &Path) -> std::io::Result<bool> {
    let marker = log_dir.join(CLEAN_SHUTDOWN_FILE_NAME);
    let clean = match std::fs::remove_file(&marker) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if clean {
        sync_dir(log_dir)?;
        CLEAN_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log_dir.to_path_buf());
    }
    Ok(clean)
}

/// At start-up, before serving: removes what a deletion interrupted by a crash left behind
/// (`<topic>-<partition>.<id>-delete` directories, as Kafka names them). Returns how many.
pub fn remove_deleted_dirs(log_dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(log_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with("-delete") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Writes `<log_dir>/.kafka_cleanshutdown` durably, after every log has been closed.
pub fn write_clean_shutdown_marker(log_dir: &Path) -> std::io::Result<()> {
    let marker = log_dir.join(CLEAN_SHUTDOWN_FILE_NAME);
    let f = std::fs::File::create(&marker)?;
    f.sync_all()?;
    sync_dir(log_dir)
}

/// True if `log_dir` had a clean-shutdown marker at start-up.
pub(crate) fn started_clean(log_dir: &Path) -> bool {
    CLEAN_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|d| d == log_dir)
}

thread_local! {
    /// (executor id, directory) pairs whose device has been probed with a non-empty file.
    static PREPARED: RefCell<HashSet<(usize, PathBuf)>> = RefCell::new(HashSet::new());
}

/// Works around glommio's EOPNOTSUPP trap: glommio probes a device for polled I/O by reading offset 0 of
/// the first file opened on it, per executor. If that file is empty the probe wrongly concludes "polling
/// works" and every later read fails with EOPNOTSUPP. Opening a non-empty file first makes the probe see
/// the truth. Each executor calls this once per data directory before creating segments; `open` also
/// calls it, so forgetting is harmless. Idempotent.
pub async fn prepare_executor(data_dir: &Path) -> Result<(), StorageError> {
    let key = (glommio::executor().id(), data_dir.to_path_buf());
    if PREPARED.with(|p| p.borrow().contains(&key)) {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir).map_err(|e| StorageError::io(data_dir, e))?;
    let probe = data_dir.join(PROBE_FILE_NAME);
    let big_enough = std::fs::metadata(&probe).is_ok_and(|m| m.len() >= PROBE_FILE_BYTES as u64);
    if !big_enough {
        // Blocking std I/O, once per data directory at start-up.
        let content = vec![0x52u8; PROBE_FILE_BYTES];
        std::fs::write(&probe, content).map_err(|e| StorageError::io(&probe, e))?;
    }
    let f = DmaFile::open(&probe)
        .await
        .map_err(|e| StorageError::io(&probe, e))?;
    // Reading once more makes sure the probe happened on this executor's rings.
    let _ = f.read_at_aligned(0, PROBE_FILE_BYTES).await;
    let _ = f.close().await;
    PREPARED.with(|p| p.borrow_mut().insert(key));
    Ok(())
}

/// The file in a partition directory that keeps the log start offset set by DeleteRecords (Kafka keeps
/// the same fact in `log-start-offset-checkpoint`). Text: the offset in decimal.
pub(crate) const LOG_START_FILE: &str = "ringtide-log-start-offset";

fn read_log_start(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(LOG_START_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the log start offset durably (temp file, fsync, rename, fsync the directory). Blocking: call
/// it through [`blocking`].
fn write_log_start(dir: &Path, offset: i64) -> Result<(), StorageError> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(offset.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(LOG_START_FILE))?;
        sync_dir(dir)?;
        fault_journal::file_synced(&dir.join(LOG_START_FILE), offset.to_string().as_bytes());
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| StorageError::io(dir, e))
}

/// Opens a segment file read+write for direct I/O (`DmaFile::create` would be write-only).
pub(crate) async fn open_segment_file(
    path: &Path,
    truncate: bool,
) -> Result<DmaFile, StorageError> {
    glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::io(path, e))
}

/// Writes a whole small file (an index) with exact size and syncs it.
pub(crate) async fn write_small_file(path: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
    let f = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(|e| StorageError::io(path, e))?;
    let len = bytes.len();
    let journaled = fault_journal::enabled().then(|| bytes.clone());
    if len > 0 {
        let n = f
            .write_at(bytes, 0)
            .await
            .map_err(|e| StorageError::io(path, e))?;
        if n != len {
            return Err(StorageError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short index write"),
            ));
        }
    }
    f.fdatasync().await.map_err(|e| StorageError::io(path, e))?;
    if let Some(bytes) = journaled {
        fault_journal::file_synced(path, &bytes);
    }
    f.close().await.map_err(|e| StorageError::io(path, e))?;
    Ok(())
}

/// Writes the producer snapshot `<offset>.snapshot` (synced) and deletes the snapshots older than the
/// newest [`SNAPSHOTS_KEPT`]. A snapshot whose directory entry a machine crash loses only makes the next
/// recovery replay from an older one.
pub(crate) async fn write_snapshot(
    shared: &Shared,
    offset: i64,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    write_small_file(&shared.dir.join(segment::snapshot_file_name(offset)), bytes).await?;
    let doomed: Vec<i64> = {
        let mut st = shared.state.borrow_mut();
        if st.snapshots.back() != Some(&offset) {
            st.snapshots.push_back(offset);
        }
        let extra = st.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        st.snapshots.drain(..extra).collect()
    };
    for o in doomed {
        let p = shared.dir.join(segment::snapshot_file_name(o));
        if let Err(e) = glommio::io::remove(&p).await {
            let e = std::io::Error::from(e);
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(StorageError::io(&p, e));
            }
        }
    }
    Ok(())
}

/// A plan for reading one segment from disk, taken while the state is borrowed.
pub(crate) struct DiskRead {
    pub segment_base: i64,
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    pub start: u64,
    pub limit: u64,
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
        let recovered = recovery::recover(&dir, &config, clean, recovery_point, hooks).await?;
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
        let log_start = read_log_start(&dir)
            .filter(|&o| o <= leo)
            .unwrap_or(i64::MIN)
            .max(recovered.segments[0].base_offset);
        // Snapshots past the recovered end describe data that is gone; the one loaded (if any) and older
        // ones stay.
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
            }),
        });
        tail_cache::register(&shared);
        glommio::spawn_local(flusher::run(shared.clone(), recovered.tail_block)).detach();
        Ok(PartitionLog { shared })
    }

    /// DeleteRecords: makes `offset` the log start offset (records below it are no longer served),
    /// deletes the whole segments below it and persists the new start so it survives a restart.
    /// Returns the new log start offset (the "low watermark").
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let hw = self.high_watermark();
        let (victims, start) = {
            let mut st = self.shared.state.borrow_mut();
            if offset < 0 || offset > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.log_end_offset,
                });
            }
            if offset <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            st.log_start_offset = offset;
            st.cache.drop_below(offset);
            let mut victims = Vec::new();
            while st.segments.len() > 1
                && st.segments[0].sealed
                && st.segments[1].base_offset <= offset
            {
                victims.push(st.segments.remove(0));
            }
            (victims, offset)
        };
        let dir = self.shared.dir.clone();
        blocking(move || write_log_start(&dir, start)).await?;
        for s in victims {
            tracing::info!(segment = %s.log_path.display(), "DeleteRecords deletes segment");
            let paths = [s.log_path.clone(), s.index_path(), s.time_index_path()];
            drop(s);
            for p in paths {
                if let Err(e) = glommio::io::remove(&p).await {
                    let e = std::io::Error::from(e);
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io(&p, e));
                    }
                }
            }
        }
        Ok(start)
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
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
    pub fn append(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
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
            });
        }

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

    /// Reads whole batches starting with the one holding `fetch_offset`, up to `max_bytes` but at least
    /// one batch if any exists below `max_offset` (exclusive; usually the high watermark). One buffer.
    pub async fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Bytes, StorageError> {
        let r = self
            .read_batches(fetch_offset, max_bytes, max_offset, true)
            .await?;
        Ok(match r.chunks.len() {
            0 => Bytes::new(),
            1 => r.chunks.into_iter().next().expect("one chunk"),
            _ => {
                let mut out = BytesMut::with_capacity(r.bytes);
                for c in &r.chunks {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        })
    }

    /// The fetch read: whole batches from the one holding `fetch_offset`, below `max_offset` (exclusive),
    /// at most `max_bytes` in all. With `min_one` the first batch is returned even when it alone is larger
    /// than `max_bytes` (Kafka's rule for the first non-empty partition of a fetch); without it such a
    /// batch is not returned and [`FetchRead::first_batch_over_limit`] says so. The answer is slices of the
    /// tail cache, or of one buffer read from disk: record bytes are not copied again on their way out.
    pub async fn read_batches(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<FetchRead, StorageError> {
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        let limit = ReadLimit {
            fetch_offset,
            max_bytes,
            min_one,
        };
        let block_bytes = READ_AHEAD_BLOCK_BYTES.max(max_bytes);
        let plan = {
            let mut st = self.shared.state.borrow_mut();
            if fetch_offset < st.log_start_offset || fetch_offset > st.log_end_offset {
                return Err(StorageError::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.log_end_offset,
                });
            }
            let max_offset = max_offset.min(st.log_end_offset);
            if fetch_offset >= max_offset {
                return Ok(FetchRead::default());
            }
            if max_bytes == 0 && !min_one {
                // A batch exists below max_offset and none may be returned: say so without reading
                // (a fetch whose budget is spent names many such partitions).
                return Ok(FetchRead {
                    first_batch_over_limit: true,
                    ..FetchRead::default()
                });
            }
            if st
                .cache
                .front()
                .is_some_and(|b| b.base_offset <= fetch_offset)
            {
                st.cache.touch();
                return Ok(read_cache(&st, &limit, max_offset));
            }
            if st.readahead.covers(fetch_offset) {
                let out = st.readahead.serve(&limit, max_offset);
                drop(st);
                self.maybe_read_ahead(fetch_offset, out.bytes, block_bytes);
                return Ok(out);
            }
            st.segments_from(fetch_offset)
                .iter()
                .filter_map(|s| {
                    let file = s.file.clone()?;
                    Some(DiskRead {
                        segment_base: s.base_offset,
                        file,
                        path: s.log_path.clone(),
                        start: s.lookup(fetch_offset),
                        limit: s.written,
                    })
                })
                .collect::<Vec<_>>()
        };
        for d in plan {
            let mut pos = d.start;
            while let Some(block) =
                readahead::read_block(&d, d.segment_base, pos, block_bytes).await?
            {
                pos = block.next_pos();
                if block.end_offset <= fetch_offset {
                    continue;
                }
                let mut ra = readahead::ReadAhead::default();
                ra.blocks.push_back(block);
                let out = ra.serve(&limit, max_offset);
                {
                    let mut st = self.shared.state.borrow_mut();
                    // Kept for the next fetches only within this core's read-ahead budget.
                    if !st.readahead.prefetching
                        && !st.closing
                        && readahead::held_bytes() <= READ_AHEAD_CORE_BYTES_MAX
                    {
                        st.readahead = ra;
                    }
                }
                self.maybe_read_ahead(fetch_offset, out.bytes, block_bytes);
                return Ok(out);
            }
        }
        let st = self.shared.state.borrow();
        Ok(read_cache(&st, &limit, max_offset.min(st.log_end_offset)))
    }

    /// Starts reading the next block in the background when what the blocks hold past this fetch is
    /// less than a block (so the consumer's next fetches find it in memory), within the core's budget.
    fn maybe_read_ahead(&self, fetch_offset: i64, served: usize, block_bytes: usize) {
        let job = {
            let mut st = self.shared.state.borrow_mut();
            let ra = &st.readahead;
            if ra.prefetching
                || st.closing
                || ra.bytes_after(fetch_offset).saturating_sub(served) >= block_bytes
                || !readahead::budget_allows(block_bytes)
            {
                return;
            }
            let Some(last) = ra.blocks.back() else {
                return;
            };
            let (base, pos) = (last.segment_base, last.next_pos());
            let Some(seg) = st.segments.iter().find(|s| s.base_offset == base) else {
                return;
            };
            let Some(file) = seg.file.clone() else {
                return;
            };
            if pos + records::HEADER_BYTES as u64 > seg.written {
                return; // nothing more written in this segment yet
            }
            let d = DiskRead {
                segment_base: base,
                file,
                path: seg.log_path.clone(),
                start: pos,
                limit: seg.written,
            };
            st.readahead.prefetching = true;
            d
        };
        let shared = self.shared.clone();
        glommio::spawn_local(async move {
            // An error here is met again, and reported, by the fetch that needs these bytes.
            let block = readahead::read_block(&job, job.segment_base, job.start, block_bytes).await;
            let mut st = shared.state.borrow_mut();
            st.readahead.prefetching = false;
            if let Ok(Some(b)) = block {
                let follows = st
                    .readahead
                    .blocks
                    .back()
                    .is_some_and(|l| l.segment_base == b.segment_base && l.next_pos() == b.pos);
                if follows && !st.closing {
                    st.readahead.blocks.push_back(b);
                }
            }
        })
        .detach();
    }

    /// An upper bound of the bytes a fetch from `offset` could read now (no I/O): from the indexed
    /// position at or before `offset` to the end of the log. Used to plan a fetch's budget before reading.
    pub fn bytes_from(&self, offset: i64) -> u64 {
        let st = self.shared.state.borrow();
        st.segments_from(offset)
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 0 {
                    s.size.saturating_sub(s.lookup(offset))
                } else {
                    s.size
                }
            })
            .sum()
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

    /// Deletes whole sealed segments (never the active one) from the front of the log while they are older
    /// than `retention_ms` (by their largest timestamp) or the log is larger than `retention_bytes`.
    /// Returns how many segments were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.shared.config.get();
        let victims = {
            let mut st = self.shared.state.borrow_mut();
            let mut total: i64 = st.segments.iter().map(|s| s.size as i64).sum();
            let mut victims = Vec::new();
            while st.segments.len() > 1 && st.segments[0].sealed {
                let s = &st.segments[0];
                let age_ts = if s.max_timestamp >= 0 {
                    s.max_timestamp
                } else {
                    s.created_ms
                };
                let by_time = config.retention_ms >= 0 && now_ms - age_ts > config.retention_ms;
                let by_size =
                    config.retention_bytes >= 0 && total - s.size as i64 >= config.retention_bytes;
                if !(by_time || by_size) {
                    break;
                }
                total -= s.size as i64;
                victims.push(st.segments.remove(0));
            }
            if !victims.is_empty() {
                // Never backwards: DeleteRecords may already have moved it past this segment's base.
                st.log_start_offset = st.log_start_offset.max(st.segments[0].base_offset);
                let start = st.log_start_offset;
                st.cache.drop_below(start);
            }
            victims
        };
        let n = victims.len();
        for s in victims {
            tracing::info!(
                segment = %s.log_path.display(),
                "retention deletes segment"
            );
            let paths = [s.log_path.clone(), s.index_path(), s.time_index_path()];
            drop(s);
            for p in paths {
                match glommio::io::remove(&p).await {
                    Ok(()) => {}
                    Err(e) => {
                        let e = std::io::Error::from(e);
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(StorageError::io(&p, e));
                        }
                    }
                }
            }
        }
        Ok(n)
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

/// What one fetch read may take.
pub(crate) struct ReadLimit {
    pub fetch_offset: i64,
    pub max_bytes: usize,
    pub min_one: bool,
}

impl ReadLimit {
    /// Whether a batch of `size` bytes still fits after `taken` bytes; records on `out` the case of a
    /// first batch that alone is over the limit.
    pub(crate) fn admits(&self, taken: usize, size: usize, out: &mut FetchRead) -> bool {
        if taken == 0 && size > self.max_bytes && !self.min_one {
            out.first_batch_over_limit = true;
            return false;
        }
        taken == 0 || taken + size <= self.max_bytes
    }
}

/// Whole batches read for a fetch, in offset order.
#[derive(Clone, Debug, Default)]
pub struct FetchRead {
    /// Slices of the tail cache or of one read buffer; their concatenation is the records.
    pub chunks: Vec<Bytes>,
    /// Total length of `chunks`.
    pub bytes: usize,
    /// Nothing was returned because the first batch alone is larger than the limit and `min_one` was off.
    pub first_batch_over_limit: bool,
}

/// Whole batches from the tail cache, starting with the batch holding `fetch_offset`: slices of the
/// cache, with the adjacent batches of one append as one slice.
fn read_cache(st: &State, limit: &ReadLimit, max_offset: i64) -> FetchRead {
    let i = st
        .cache
        .batches
        .partition_point(|b| b.last_offset < limit.fetch_offset);
    let mut out = FetchRead::default();
    // The run being gathered: (append buffer, start, end) within it.
    let mut run: Option<(Bytes, usize, usize)> = None;
    for b in st.cache.batches.iter().skip(i) {
        if b.base_offset >= max_offset {
            break;
        }
        let size = b.bytes.len();
        if !limit.admits(out.bytes, size, &mut out) {
            break;
        }
        out.bytes += size;
        match &mut run {
            Some((buf, _, end)) if buf.as_ptr() == b.append.as_ptr() && *end == b.at => {
                *end += size;
            }
            _ => {
                if let Some((buf, start, end)) = run.take() {
                    out.chunks.push(buf.slice(start..end));
                }
                run = Some((b.append.clone(), b.at, b.at + size));
            }
        }
        if out.bytes >= limit.max_bytes {
            break;
        }
    }
    if let Some((buf, start, end)) = run {
        out.chunks.push(buf.slice(start..end));
    }
    out
}

/// A window of file bytes read with direct I/O.
pub(crate) struct Window {
    start: u64,
    data: glommio::io::ReadResult,
}

impl Window {
    fn covers(&self, pos: u64, len: usize) -> bool {
        pos >= self.start && pos + len as u64 <= self.start + self.data.len() as u64
    }

    pub(crate) fn slice(&self, pos: u64, len: usize) -> &[u8] {
        let at = (pos - self.start) as usize;
        &self.data[at..at + len]
    }
}

/// Makes `win` cover `[pos, pos+len)`, reading at least `want` bytes (but not past `limit`).
pub(crate) async fn ensure_window(
    d: &DiskRead,
    win: &mut Option<Window>,
    pos: u64,
    len: usize,
    want: usize,
) -> Result<(), StorageError> {
    if win.as_ref().is_some_and(|w| w.covers(pos, len)) {
        return Ok(());
    }
    let size = (want.max(len) as u64).min(d.limit - pos) as usize;
    let data = d
        .file
        .read_at(pos, size)
        .await
        .map_err(|e| StorageError::io(&d.path, e))?;
    if data.len() < len {
        return Err(StorageError::Corrupt {
            path: d.path.clone(),
            position: pos,
        });
    }
    *win = Some(Window { start: pos, data });
    Ok(())
}

/// Reads the header at `pos` and checks it is a sound batch within the written part of the file.
async fn header_at(
    d: &DiskRead,
    win: &mut Option<Window>,
    pos: u64,
    want: usize,
) -> Result<Option<BatchHeader>, StorageError> {
    if pos + records::HEADER_BYTES as u64 > d.limit {
        return Ok(None);
    }
    ensure_window(d, win, pos, records::HEADER_BYTES, want).await?;
    let w = win.as_ref().expect("ensured");
    let h = BatchHeader::parse(w.slice(pos, records::HEADER_BYTES)).expect("enough bytes");
    if h.batch_length < records::BATCH_LENGTH_MIN
        || h.magic != records::MAGIC_V2
        || pos + h.total_size() as u64 > d.limit
    {
        return Err(StorageError::Corrupt {
            path: d.path.clone(),
            position: pos,
        });
    }
    Ok(Some(h))
}
