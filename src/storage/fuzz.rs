//! The body of the `storage` fuzz target (`fuzz/fuzz_targets/storage.rs`), here so that the stable corpus
//! replay test (`tests/fuzz_corpus.rs`, part of `cargo test`) runs exactly the same checks on every corpus
//! file. Arbitrary bytes become the files of one partition directory (segments, indexes, transaction
//! indexes, a producer snapshot) and of its log directory (the recovery-point checkpoint, the clean-shutdown marker); the
//! partition is then opened, read, appended to, closed and reopened through the real code on a glommio
//! executor. A panic is a finding.
//!
//! Input layout (all integers big-endian; `fuzz/pack_storage.py` writes it from a real log directory):
//!
//! ```text
//! flags: u8                      bit 0: the clean-shutdown marker (.kafka_cleanshutdown) is present
//! then sections until the input ends:
//!   kind: u8                     kind % 7: 0 segment .log, 1 .index, 2 .timeindex, 3 producer .snapshot,
//!                                          4 recovery-point-offset-checkpoint, 5 ringtide-log-start-offset,
//!                                          6 .txnindex
//!   offset: u64                  kinds 0-3 and 6 only: the offset in the file name (top bit cleared)
//!   len: u32                     then `len` bytes of file content (cut short at the end of the input)
//! ```
//!
//! A later section for the same file replaces an earlier one; at most [`FUZZ_FILES_MAX`] files of each
//! kind are written. The partition is `fuzz-0` (the checkpoint names it as topic `fuzz`, partition 0).
//!
//! Cost: one glommio `LocalExecutor` is made per thread, once, and reused with `LocalExecutor::run` for
//! every input; the files go to a per-thread directory on `/dev/shm` (tmpfs takes O_DIRECT since Linux
//! 6.6) if it exists, else the system temp directory.
//!
//! Invariants checked:
//! - `checkpoint::parse`, `ProducerStateManager::from_snapshot` and `segment::parse_txn_index` never panic
//!   on the raw input or on any section; an accepted checkpoint renders and parses back to itself; an accepted snapshot re-encodes
//!   to a snapshot that reads back to the same encoding.
//! - `PartitionLog::open` returns a log or a `StorageError`, never panics.
//! - The recovered log end never exceeds what the segment files hold: the largest segment base offset or
//!   the offset after the last offset of any structurally sound batch header anywhere in their bytes.
//! - Reads from the log start to the high watermark return whole, structurally sound batches whose offsets
//!   strictly increase, the first one holding (or following) the offset asked for; batches whose CRCs
//!   recovery must verify (the last segment after a crash: from the recovery point on, or all of it
//!   without one or when the log ends below it) and the batch appended here also pass
//!   `records::validate_batches`. A read may fail with `StorageError::Corrupt` (a damaged
//!   batch that recovery trusted without reading it, e.g. below a recovery point or behind a loaded index).
//! - `offset_for_timestamp` answers a batch whose max timestamp reaches the one asked for.
//! - An append to the recovered log succeeds (unless the log ends at i64::MAX), becomes durable and reads
//!   back; `close` and `checkpoint_closed` succeed; reopening then (as after a crash right after a clean
//!   close) finds the same log start and log end.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use super::{checkpoint, take_clean_shutdown_marker, LogConfig, PartitionLog, StorageError};
use super::{CLEAN_DIRS, CLEAN_SHUTDOWN_FILE_NAME, LOG_START_FILE};
use crate::partition::producer_state::ProducerStateManager;
use crate::records::{self, BatchHeader};
use crate::storage::segment::{
    index_file_name, log_file_name, parse_txn_index, snapshot_file_name, time_index_file_name,
    txn_index_file_name,
};

/// Topic and partition of the fuzzed partition directory (`fuzz-0`).
pub const FUZZ_TOPIC: &str = "fuzz";
/// At most this many files of each kind are written (keeps each input cheap).
pub const FUZZ_FILES_MAX: usize = 8;

/// Section kinds of the input layout.
pub const KIND_LOG: u8 = 0;
pub const KIND_INDEX: u8 = 1;
pub const KIND_TIME_INDEX: u8 = 2;
pub const KIND_SNAPSHOT: u8 = 3;
pub const KIND_CHECKPOINT: u8 = 4;
pub const KIND_LOG_START: u8 = 5;
pub const KIND_TXN_INDEX: u8 = 6;
const KINDS: u8 = 7;

/// The files an input describes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Files<'a> {
    pub clean_shutdown: bool,
    pub logs: BTreeMap<i64, &'a [u8]>,
    pub indexes: BTreeMap<i64, &'a [u8]>,
    pub time_indexes: BTreeMap<i64, &'a [u8]>,
    pub snapshots: BTreeMap<i64, &'a [u8]>,
    pub txn_indexes: BTreeMap<i64, &'a [u8]>,
    pub checkpoint: Option<&'a [u8]>,
    pub log_start: Option<&'a [u8]>,
}

/// Splits an input into its files (see the module docs for the layout). Never fails: whatever is left
/// over at the end is ignored.
pub fn split(data: &[u8]) -> Files<'_> {
    let mut files = Files::default();
    let Some((&flags, mut rest)) = data.split_first() else {
        return files;
    };
    files.clean_shutdown = flags & 1 != 0;
    while let Some((&kind, after)) = rest.split_first() {
        rest = after;
        let kind = kind % KINDS;
        let mut name = 0i64;
        if kind <= KIND_SNAPSHOT || kind == KIND_TXN_INDEX {
            let Some((o, after)) = rest.split_first_chunk::<8>() else {
                break;
            };
            name = (u64::from_be_bytes(*o) & i64::MAX as u64) as i64;
            rest = after;
        }
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = (u32::from_be_bytes(*len) as usize).min(after.len());
        let (content, after) = after.split_at(len);
        rest = after;
        let map = match kind {
            KIND_LOG => &mut files.logs,
            KIND_INDEX => &mut files.indexes,
            KIND_TIME_INDEX => &mut files.time_indexes,
            KIND_SNAPSHOT => &mut files.snapshots,
            KIND_TXN_INDEX => &mut files.txn_indexes,
            KIND_CHECKPOINT => {
                files.checkpoint = Some(content);
                continue;
            }
            _ => {
                files.log_start = Some(content);
                continue;
            }
        };
        if map.len() < FUZZ_FILES_MAX || map.contains_key(&name) {
            map.insert(name, content);
        }
    }
    files
}

/// The input bytes of `files` (the inverse of [`split`]).
pub fn join(files: &Files<'_>) -> Vec<u8> {
    let mut out = vec![files.clean_shutdown as u8];
    let mut section = |kind: u8, name: Option<i64>, content: &[u8]| {
        out.push(kind);
        if let Some(n) = name {
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&(content.len() as u32).to_be_bytes());
        out.extend_from_slice(content);
    };
    for (kind, map) in [
        (KIND_LOG, &files.logs),
        (KIND_INDEX, &files.indexes),
        (KIND_TIME_INDEX, &files.time_indexes),
        (KIND_SNAPSHOT, &files.snapshots),
        (KIND_TXN_INDEX, &files.txn_indexes),
    ] {
        for (&n, c) in map {
            section(kind, Some(n), c);
        }
    }
    if let Some(c) = files.checkpoint {
        section(KIND_CHECKPOINT, None, c);
    }
    if let Some(c) = files.log_start {
        section(KIND_LOG_START, None, c);
    }
    out
}

/// What one input did (the replay test checks the seeds captured from a real broker with it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Some(error)` if `PartitionLog::open` refused the directory.
    pub open_error: Option<String>,
    pub log_start_offset: i64,
    /// Log end offset after recovery (before the append).
    pub log_end_offset: i64,
    /// Batches read back between the log start and the high watermark.
    pub batches_read: usize,
    /// A read that failed with `StorageError::Corrupt`, if any.
    pub read_error: Option<String>,
}

/// The whole storage check on one input (see the module docs). Panics if an invariant breaks.
pub fn storage_files(data: &[u8]) -> Outcome {
    parse_directly(data);
    let files = split(data);
    for c in files.checkpoint.iter().chain(files.log_start.iter()) {
        parse_directly(c);
    }
    for s in files.snapshots.values() {
        parse_directly(s);
    }
    for (&base, t) in &files.txn_indexes {
        let _ = parse_txn_index(t, base, i64::MAX);
    }
    WORKER.with(|w| {
        let log_dir = w.fresh_dir();
        write_files(&log_dir, &files);
        let bound = log_end_bound(&files);
        let outcome = w
            .executor
            .run(exercise(log_dir.clone(), bound, files.clone()));
        forget_clean(&log_dir);
        let _ = std::fs::remove_dir_all(log_dir.join(format!("{FUZZ_TOPIC}-0")));
        outcome
    })
}

/// `checkpoint::parse`, `ProducerStateManager::from_snapshot` and `parse_txn_index` on raw bytes.
fn parse_directly(raw: &[u8]) {
    let _ = parse_txn_index(raw, 0, i64::MAX);
    let text = String::from_utf8_lossy(raw);
    if let Ok(entries) = checkpoint::parse(&text) {
        let again = checkpoint::parse(&checkpoint::render(&entries));
        assert_eq!(
            again.as_ref(),
            Ok(&entries),
            "a parsed checkpoint renders to text that parses back to it"
        );
    }
    if let Ok(state) = ProducerStateManager::from_snapshot(raw) {
        let bytes = state.to_snapshot();
        let back =
            ProducerStateManager::from_snapshot(&bytes).expect("a written snapshot reads back");
        assert_eq!(
            back.to_snapshot(),
            bytes,
            "a snapshot read back writes the same bytes"
        );
    }
}

/// One glommio executor and one directory per thread, reused by every input.
struct Worker {
    executor: LocalExecutor,
    root: PathBuf,
    runs: Cell<u64>,
}

thread_local! {
    static WORKER: Worker = Worker::new();
}

static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Worker {
    fn new() -> Worker {
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("a glommio executor starts");
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = WORKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = base.join(format!("ringtide-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fuzz directory");
        Worker {
            executor,
            root,
            runs: Cell::new(0),
        }
    }

    /// The log directory for the next input: the same one every time (the executor's device probe file
    /// stays), with no partition directory, checkpoint or marker left from the previous input.
    fn fresh_dir(&self) -> PathBuf {
        self.runs.set(self.runs.get() + 1);
        let dir = self.root.clone();
        let _ = std::fs::remove_dir_all(dir.join(format!("{FUZZ_TOPIC}-0")));
        for f in [
            checkpoint::RECOVERY_POINT_FILE_NAME,
            CLEAN_SHUTDOWN_FILE_NAME,
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        dir
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes `log_dir` from the directories that started clean (a process-wide list the broker fills once).
fn forget_clean(log_dir: &Path) {
    CLEAN_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != log_dir);
}

fn write_files(log_dir: &Path, files: &Files<'_>) {
    let part = log_dir.join(format!("{FUZZ_TOPIC}-0"));
    std::fs::create_dir_all(&part).expect("partition directory");
    let write = |p: PathBuf, c: &[u8]| std::fs::write(&p, c).expect("write a fuzz file");
    for (&b, c) in &files.logs {
        write(part.join(log_file_name(b)), c);
    }
    for (&b, c) in &files.indexes {
        write(part.join(index_file_name(b)), c);
    }
    for (&b, c) in &files.time_indexes {
        write(part.join(time_index_file_name(b)), c);
    }
    for (&o, c) in &files.snapshots {
        write(part.join(snapshot_file_name(o)), c);
    }
    for (&b, c) in &files.txn_indexes {
        write(part.join(txn_index_file_name(b)), c);
    }
    if let Some(c) = files.log_start {
        write(part.join(LOG_START_FILE), c);
    }
    if let Some(c) = files.checkpoint {
        write(log_dir.join(checkpoint::RECOVERY_POINT_FILE_NAME), c);
    }
    if files.clean_shutdown {
        write(log_dir.join(CLEAN_SHUTDOWN_FILE_NAME), b"");
    }
}

/// The largest log end offset the segment files can justify: every segment's base offset, and one past
/// the last offset of every structurally sound batch header at any position of any segment file.
fn log_end_bound(files: &Files<'_>) -> i128 {
    let mut bound = 0i128;
    for (&base, bytes) in &files.logs {
        bound = bound.max(base as i128);
        for pos in 0..bytes.len() {
            let Some(h) = BatchHeader::parse(&bytes[pos..]) else {
                break;
            };
            if h.batch_length >= records::BATCH_LENGTH_MIN
                && h.magic == records::MAGIC_V2
                && pos + h.total_size() <= bytes.len()
            {
                bound = bound.max(h.base_offset as i128 + h.last_offset_delta as i128 + 1);
            }
        }
    }
    bound
}

/// Rebuilds the idempotent-producer state as `Partition::open` does.
#[derive(Default)]
struct Hooks {
    producers: ProducerStateManager,
}

impl super::RecoveryHooks for Hooks {
    fn load_snapshot(&mut self, _offset: i64, bytes: &[u8]) -> Result<(), String> {
        self.producers = ProducerStateManager::from_snapshot(bytes)?;
        Ok(())
    }

    fn on_batch(
        &mut self,
        h: &BatchHeader,
        marker: Option<crate::records::EndTxnMarker>,
    ) -> Option<super::AbortedTxn> {
        crate::partition::recovered_abort(&mut self.producers, h, marker, i64::MAX)
    }

    fn discard_snapshot(&mut self) {
        self.producers = ProducerStateManager::new();
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 256,
        tail_cache_bytes: super::TAIL_CACHE_BYTES_MIN,
        ..LogConfig::default()
    }
}

/// Opens the partition; also returns the recovered producer state as a snapshot.
async fn open(log_dir: &Path) -> Result<(PartitionLog, Vec<u8>), StorageError> {
    let mut hooks = Hooks::default();
    let log = PartitionLog::open(log_dir, FUZZ_TOPIC, 0, config(), &mut hooks).await?;
    // The state must still write a snapshot that reads back.
    let snap = hooks.producers.to_snapshot();
    ProducerStateManager::from_snapshot(&snap).expect("recovered producer state reads back");
    Ok((log, snap))
}

/// Which batches recovery must have verified the CRCs of after a crash: those of the last segment (its
/// base offset is returned first) ending at or past the recovery point, or all of them without one or
/// when the log ends below it (`log_end`: the recovered one).
fn verified_from(
    files: &Files<'_>,
    recovery_point: Option<i64>,
    log_end: i64,
) -> Option<(i64, i64)> {
    if files.clean_shutdown {
        return None;
    }
    let last_base = *files.logs.keys().next_back()?;
    let from = recovery_point.filter(|&rp| rp <= log_end);
    Some((last_base, from.unwrap_or(i64::MIN)))
}

async fn exercise(log_dir: PathBuf, bound: i128, files: Files<'_>) -> Outcome {
    checkpoint::load(&log_dir);
    let recovery_point = checkpoint::get(&log_dir, FUZZ_TOPIC, 0);
    let clean = take_clean_shutdown_marker(&log_dir).expect("marker removed");
    assert_eq!(clean, files.clean_shutdown);
    let mut out = Outcome::default();
    let (log, producers) = match open(&log_dir).await {
        Ok(opened) => opened,
        Err(e) => {
            out.open_error = Some(e.to_string());
            return out;
        }
    };
    let (start, leo, hw) = (
        log.log_start_offset(),
        log.log_end_offset(),
        log.high_watermark(),
    );
    out.log_start_offset = start;
    out.log_end_offset = leo;
    assert!(
        (leo as i128) <= bound,
        "log end {leo} past what the segments hold ({bound})"
    );
    assert!(start <= hw && hw <= leo, "start {start} hw {hw} leo {leo}");
    let verified = verified_from(&files, recovery_point, leo);
    // The segment each read batch comes from is not known here; batches at or past both the last
    // segment's base and the verification start were verified.
    let must_validate = |h: &BatchHeader| {
        verified.is_some_and(|(base, from)| h.base_offset >= base && h.last_offset() >= from)
    };

    // 1. One batch per read (max_bytes 1 with min_one), from the log start to the high watermark.
    let mut read_back = Vec::new();
    let mut offset = start;
    while offset < hw {
        let bytes = match log.read(offset, 1, hw).await {
            Ok(b) => b,
            Err(e) => {
                assert!(
                    matches!(e, StorageError::Corrupt { .. }),
                    "read at {offset}: {e}"
                );
                out.read_error = Some(e.to_string());
                break;
            }
        };
        if bytes.is_empty() {
            break;
        }
        let hs = check_read(&bytes, offset, hw, &must_validate);
        assert_eq!(hs.len(), 1, "a read of max_bytes 1 returns one batch");
        offset = hs[0].last_offset() + 1;
        read_back.extend(hs);
    }
    out.batches_read = read_back.len();

    // 2. The same range in reads of up to 64 KiB, without min_one: the same batches.
    if out.read_error.is_none() {
        let mut offset = start;
        let mut again = Vec::new();
        while offset < hw {
            let r = match log.read_batches(offset, 64 << 10, hw, false).await {
                Ok(r) => r,
                Err(e) => panic!("read_batches at {offset} after a good read: {e}"),
            };
            if r.bytes == 0 {
                break;
            }
            let bytes: Vec<u8> = r.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(bytes.len(), r.bytes);
            let hs = check_read(&bytes, offset, hw, &must_validate);
            offset = hs.last().map_or(offset, |h| h.last_offset() + 1);
            again.extend(hs);
        }
        assert_eq!(again, read_back, "reads of different sizes disagree");
    }

    // 3. Timestamps: a record of the log, or nothing.
    let end = log.high_watermark();
    let mut stamps = vec![i64::MIN, -1, 0, 1, i64::MAX];
    stamps.extend(read_back.iter().take(3).map(|h| h.max_timestamp));
    stamps.extend(read_back.last().map(|h| h.max_timestamp));
    for ts in stamps {
        match log.offset_for_timestamp(ts).await {
            Ok(Some(found)) => {
                assert!(found.timestamp >= ts, "asked for {ts}, found {found:?}");
                assert!(
                    found.offset >= start && found.offset < end,
                    "{found:?} outside the log"
                );
            }
            Ok(None) => {}
            Err(e) => assert!(matches!(e, StorageError::Corrupt { .. }), "{e}"),
        }
    }
    match log.max_timestamp_offset().await {
        Ok(Some(found)) => {
            assert!(
                found.offset >= start && found.offset < end,
                "{found:?} outside the log"
            )
        }
        Ok(None) => {}
        Err(e) => assert!(matches!(e, StorageError::Corrupt { .. }), "{e}"),
    }
    let _ = log.bytes_from(start);

    // 4. One append, durable, read back.
    let batch = records::build_batch(&[(Some(b"key"), Some(b"value"))], 1_700_000_000_000);
    let hs = records::validate_batches(&batch, usize::MAX).expect("a built batch is valid");
    let info = match log.append(&batch, &hs, 3) {
        Ok(info) => info,
        Err(e) => {
            // Only a log ending at i64::MAX (a segment file named so) has no room for one more offset.
            assert_eq!(leo, i64::MAX, "append to a recovered log: {e}");
            log.close().await.expect("a recovered log closes");
            return out;
        }
    };
    assert_eq!(info.base_offset, leo);
    log.wait_durable(info.last_offset)
        .await
        .expect("an append to a recovered log becomes durable");
    let hw = log.high_watermark();
    assert_eq!(hw, info.last_offset + 1);
    let bytes = log
        .read(info.base_offset, 1 << 20, hw)
        .await
        .expect("the appended batch reads back");
    let got = records::validate_batches(&bytes, usize::MAX).expect("the appended batch is valid");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].base_offset, info.base_offset);

    // 5. Close as the broker does at shutdown (close, then a producer snapshot at the log end, which
    //    becomes the recovery point), then open again as after a crash before the marker was written:
    //    the same log.
    log.close().await.expect("a recovered log closes");
    log.checkpoint_closed(producers)
        .await
        .expect("a closed log checkpoints");
    drop(log);
    let (log, _) = open(&log_dir)
        .await
        .expect("a log closed cleanly opens again");
    assert_eq!(log.log_start_offset(), start, "log start after reopening");
    assert_eq!(log.log_end_offset(), hw, "log end after reopening");
    let bytes = log
        .read(info.base_offset, 1 << 20, log.high_watermark())
        .await
        .expect("the appended batch reads back after reopening");
    assert_eq!(
        records::validate_batches(&bytes, usize::MAX).expect("valid")[0].base_offset,
        info.base_offset
    );
    log.close().await.expect("closes again");
    out
}

/// Checks the bytes of one read from `offset`: whole sound batches, offsets strictly increasing below
/// `hw`, the first holding or following `offset`; CRCs where recovery verified them.
fn check_read(
    bytes: &[u8],
    offset: i64,
    hw: i64,
    must_validate: &dyn Fn(&BatchHeader) -> bool,
) -> Vec<BatchHeader> {
    let mut out: Vec<BatchHeader> = Vec::new();
    let mut end = 0;
    for item in records::iter_batches(bytes) {
        let (pos, h) =
            item.unwrap_or_else(|e| panic!("read at {offset} returned a bad batch: {e}"));
        assert_eq!(pos, end);
        end = pos + h.total_size();
        match out.last() {
            None => assert!(
                h.last_offset() >= offset,
                "read at {offset} starts with a batch ending at {}",
                h.last_offset()
            ),
            Some(p) => assert!(
                h.base_offset > p.last_offset(),
                "offsets go back: {} after {}",
                h.base_offset,
                p.last_offset()
            ),
        }
        assert!(
            h.base_offset < hw,
            "batch at {} at or past hw {hw}",
            h.base_offset
        );
        if must_validate(&h) {
            records::validate_batches(&bytes[pos..end], usize::MAX).unwrap_or_else(|e| {
                panic!("batch at {} was verified at recovery: {e}", h.base_offset)
            });
        }
        out.push(h);
    }
    assert_eq!(end, bytes.len(), "a read returns whole batches");
    out
}
