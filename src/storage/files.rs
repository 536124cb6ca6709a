//! The storage layer's files outside the segments, and its process-wide start-up state: the clean-shutdown
//! marker, leftovers of interrupted deletions, glommio's device probe, the DeleteRecords log-start file,
//! the leader epoch checkpoint, small synced files (indexes, producer snapshots) and the blocking pool for calls that can block.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use glommio::io::DmaFile;

use super::{epochs, fault_journal, segment, Shared, StorageError};
use super::{CLEAN_SHUTDOWN_FILE_NAME, PROBE_FILE_BYTES, PROBE_FILE_NAME};

/// Logs whose `close` failed since the process started: a clean-shutdown marker is written only if none.
pub(super) static CLOSE_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Log directories that were shut down cleanly before this start (their marker was found and removed).
pub(super) static CLEAN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Number of logs whose `close` failed in this process.
pub fn close_failures() -> usize {
    CLOSE_FAILURES.load(Ordering::Relaxed)
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
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
    let probe = data_dir.join(PROBE_FILE_NAME);
    {
        // Blocking calls, once per executor and data directory: on the blocking pool (the first partition
        // a core opens may be one created while it serves).
        let (d, p) = (data_dir.to_path_buf(), probe.clone());
        blocking(move || {
            std::fs::create_dir_all(&d)?;
            let big_enough =
                std::fs::metadata(&p).is_ok_and(|m| m.len() >= PROBE_FILE_BYTES as u64);
            if !big_enough {
                std::fs::write(&p, vec![0x52u8; PROBE_FILE_BYTES])?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| StorageError::io(&probe, e))?;
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

/// Reads the log start offset file, if any. Blocking: call it through [`blocking`].
pub(super) fn read_log_start(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(LOG_START_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the log start offset durably. Blocking: call it through [`blocking`].
pub(super) fn write_log_start(dir: &Path, offset: i64) -> Result<(), StorageError> {
    replace_file(dir, LOG_START_FILE, offset.to_string().as_bytes())
}

/// Replaces the small file `name` in `dir` durably: temp file, fsync, rename, fsync the directory.
/// Blocking: call it through [`blocking`].
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)?;
        fault_journal::file_synced(&dir.join(name), bytes);
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| StorageError::io(dir, e))
}

/// Reads the partition's `leader-epoch-checkpoint`: `None` when there is none, `Some(Err)` when it
/// cannot be used (the caller says so and starts from the log). Blocking: call it through [`blocking`].
pub(super) fn read_epochs(dir: &Path) -> Option<Result<epochs::LeaderEpochCache, String>> {
    match std::fs::read(dir.join(epochs::LEADER_EPOCH_CHECKPOINT)) {
        Ok(bytes) => Some(epochs::LeaderEpochCache::parse(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Writes the partition's leader epochs to `leader-epoch-checkpoint` in the background, one write at a
/// time per partition, each of the newest state (epochs change once per leader election).
pub(super) fn schedule_epochs_write(shared: &Rc<Shared>) {
    {
        let mut st = shared.state.borrow_mut();
        st.epochs_dirty = true;
        if st.epochs_writing {
            return;
        }
        st.epochs_writing = true;
    }
    let shared = shared.clone();
    glommio::spawn_local(async move {
        loop {
            let bytes = {
                let mut st = shared.state.borrow_mut();
                if !st.epochs_dirty {
                    st.epochs_writing = false;
                    break;
                }
                st.epochs_dirty = false;
                st.epochs.encode()
            };
            let dir = shared.dir.clone();
            let written =
                blocking(move || replace_file(&dir, epochs::LEADER_EPOCH_CHECKPOINT, &bytes)).await;
            if let Err(e) = written {
                tracing::warn!(dir = %shared.dir.display(), error = %e, "writing leader-epoch-checkpoint failed");
            }
        }
    })
    .detach();
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

/// Writes the `.txnindex` of the segment at `base` (synced), if it holds entries or its file exists. The
/// file's first write also syncs the directory: its entries may lie below the recovery point the
/// caller advances next, and recovery trusts the `.txnindex` files there instead of rebuilding them.
pub(crate) async fn write_txn_index(
    shared: &Shared,
    base: i64,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    let (path, on_disk) = {
        let st = shared.state.borrow();
        match st.segments.iter().find(|s| s.base_offset == base) {
            Some(s) => (s.txn_index_path(), s.txn_index_on_disk),
            None => return Ok(()),
        }
    };
    if bytes.is_empty() && !on_disk {
        return Ok(());
    }
    write_small_file(&path, bytes).await?;
    if !on_disk {
        let dir = shared.dir.clone();
        blocking(move || sync_dir(&dir))
            .await
            .map_err(|e| StorageError::io(&shared.dir, e))?;
        if let Some(s) = shared.state.borrow_mut().segment_mut(base) {
            s.txn_index_on_disk = true;
        }
    }
    Ok(())
}

/// Writes the producer snapshot `<offset>.snapshot` (synced), then deletes the snapshots Kafka's rules no
/// longer keep (see [`doomed_snapshots`]). A snapshot whose directory entry a machine crash loses only
/// makes the next recovery replay from an older one (or from the log start).
pub(crate) async fn write_snapshot(
    shared: &Shared,
    offset: i64,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    write_small_file(&shared.dir.join(segment::snapshot_file_name(offset)), bytes).await?;
    {
        let mut st = shared.state.borrow_mut();
        let at = st.snapshots.partition_point(|&o| o < offset);
        if st.snapshots.get(at) != Some(&offset) {
            st.snapshots.insert(at, offset);
        }
    }
    prune_snapshots(shared).await
}

/// Which producer snapshots to delete, as Kafka keeps them: one per segment, named by its base offset,
/// deleted with the segment (retention, DeleteRecords); snapshots at no segment's base (the recovery
/// point checkpoints' and the clean stop's) only while they are the newest. Two are never deleted: the
/// newest, and the newest at or below `written_recovery_point` (the recovery point in the checkpoint file
/// on disk now: a crash at this instant recovers from that snapshot). `snapshots` is sorted.
pub(crate) fn doomed_snapshots(
    snapshots: &VecDeque<i64>,
    segment_bases: &[i64],
    log_start_offset: i64,
    written_recovery_point: Option<i64>,
) -> Vec<i64> {
    let newest = snapshots.back().copied();
    let protected =
        written_recovery_point.and_then(|rp| snapshots.iter().rev().find(|&&o| o <= rp).copied());
    snapshots
        .iter()
        .copied()
        .filter(|&o| {
            let of_live_segment = o >= log_start_offset && segment_bases.binary_search(&o).is_ok();
            Some(o) != newest && Some(o) != protected && !of_live_segment
        })
        .collect()
}

/// Deletes the snapshots [`doomed_snapshots`] names (through io_uring).
pub(crate) async fn prune_snapshots(shared: &Shared) -> Result<(), StorageError> {
    let doomed = {
        let mut st = shared.state.borrow_mut();
        let bases: Vec<i64> = st.segments.iter().map(|s| s.base_offset).collect();
        let written = super::checkpoint::written(&shared.log_dir, &shared.topic, shared.partition);
        let doomed = doomed_snapshots(&st.snapshots, &bases, st.log_start_offset, written);
        st.snapshots.retain(|o| !doomed.contains(o));
        doomed
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
