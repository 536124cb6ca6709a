//! Opening a partition directory after a clean shutdown or a crash.
//!
//! Fault model: the process died at any instant. The last segment may end in a torn batch, zero padding
//! (direct I/O writes whole 4 KiB blocks) or garbage; a segment being rolled may not have been truncated
//! yet; index files may be missing, stale or half written; stray files may sit in the directory.
//! Recovery scans every segment's batch headers (verifying CRCs of the last segment, where a crash can tear
//! data), truncates each segment to its valid prefix (one `warn!` naming the file and offset), rebuilds the
//! indexes in memory and rewrites the files of sealed segments whose index files do not match.
//! After a clean shutdown (`.kafka_cleanshutdown` found at start-up) the CRC verification of the last segment
//! is skipped; everything else is the same, so a torn or zero-filled tail is still trimmed.
//!
//! Transaction indexes (`.txnindex`): the entries whose ABORT markers lie below the loaded producer
//! snapshot are trusted from the files; every later one is rebuilt from the batches the producer state
//! replays (Kafka's `LogSegment.recover`), the snapshot carrying the ongoing transactions. A damaged
//! `.txnindex` makes recovery replay from a snapshot at or below its segment (or from the log start),
//! so it is rebuilt whole; a sealed segment's file is rewritten when it differs.

use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use super::limits::{BLOCK_BYTES, SCAN_WINDOW_BYTES};
use super::segment::{
    log_file_name, parse_file_name, parse_txn_index, snapshot_file_name, txn_index_file_name,
    AbortedTxn, IndexEntry, Segment, TimeIndexEntry, INDEX_ENTRY_BYTES, SNAPSHOT_EXT,
    TIME_INDEX_ENTRY_BYTES,
};
use super::{
    blocking, ensure_window, header_at, now_ms, open_segment_file, write_small_file, DiskRead,
    LogConfig, StorageError,
};
use crate::records::{self, BatchHeader, EndTxnMarker};

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// Bytes of the active segment's last partial block, for the flusher.
    pub tail_block: Vec<u8>,
    /// Offset of the producer snapshot the hooks loaded, if any.
    pub snapshot_offset: Option<i64>,
    /// Offsets of every producer snapshot file in the directory, oldest first.
    pub snapshots: std::collections::VecDeque<i64>,
    /// The directory held no segment: recovery created the first one (its entry is not yet durable).
    pub created_first_segment: bool,
    /// What recovery did, for the start-up log.
    pub stats: RecoveryStats,
}

/// Counts for the start-up log: how much recovery could trust and how much it had to read.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveryStats {
    /// Segments whose index files were loaded instead of rebuilt.
    pub segments_from_index: usize,
    /// Segments rebuilt by scanning every batch header.
    pub segments_scanned: usize,
    /// Bytes of segment files scanned batch by batch.
    pub bytes_scanned: u64,
    /// Batches whose CRC was verified.
    pub batches_verified: u64,
}

thread_local! {
    /// What recovery did on this core since the last [`take_totals`].
    static TOTALS: std::cell::Cell<RecoveryStats> = const { std::cell::Cell::new(RecoveryStats {
        segments_from_index: 0,
        segments_scanned: 0,
        bytes_scanned: 0,
        batches_verified: 0,
    }) };
}

fn add_totals(s: &RecoveryStats) {
    TOTALS.with(|t| {
        let mut v = t.get();
        v.segments_from_index += s.segments_from_index;
        v.segments_scanned += s.segments_scanned;
        v.bytes_scanned += s.bytes_scanned;
        v.batches_verified += s.batches_verified;
        t.set(v);
    });
}

/// What recovery did on this core since the last call (for the start-up log).
pub fn take_totals() -> RecoveryStats {
    TOTALS.with(|t| t.take())
}

/// What recovery needs from the layer above: the partition's idempotent-producer and transaction state.
pub trait RecoveryHooks {
    /// Offered the newest usable producer snapshot (`<offset>.snapshot`, Kafka's format) first; an `Err`
    /// (unreadable, damaged) gets the next older one offered.
    fn load_snapshot(&mut self, offset: i64, bytes: &[u8]) -> Result<(), String>;
    /// Sees the header of every batch from the loaded snapshot's offset on (every batch if none was
    /// loaded), oldest first, with the end-transaction marker of a control batch. Returns the
    /// `.txnindex` entry of the transaction an ABORT marker ended (Kafka's `LogSegment.recover` rebuilds
    /// the transaction index from the producer state the same way).
    fn on_batch(&mut self, h: &BatchHeader, marker: Option<EndTxnMarker>) -> Option<AbortedTxn>;
    /// The loaded snapshot lies past the recovered log end (data below the recovery point was lost), or
    /// recovery starts over: start again from an empty state.
    fn discard_snapshot(&mut self);
}

/// A plain callback sees every batch and loads no snapshot (tests, and logs without producer state).
impl<F: FnMut(&BatchHeader)> RecoveryHooks for F {
    fn load_snapshot(&mut self, _offset: i64, _bytes: &[u8]) -> Result<(), String> {
        Err("this log keeps no producer state".into())
    }
    fn on_batch(&mut self, h: &BatchHeader, _marker: Option<EndTxnMarker>) -> Option<AbortedTxn> {
        self(h);
        None
    }
    fn discard_snapshot(&mut self) {}
}

/// Where and why a segment's valid prefix ends.
struct ScanEnd {
    valid_size: u64,
    reason: Option<&'static str>,
    bytes_scanned: u64,
    verified: u64,
}

/// Recovers the partition directory `dir`.
///
/// - `recovery_point`: Kafka's recovery point from `recovery-point-offset-checkpoint` (every byte below it
///   was synced), if the checkpoint names this partition. After a crash only batches at or past it in the
///   last segment have their CRCs verified (every earlier segment was synced before the next one was
///   created); without it, the whole last segment is.
/// - Index files are loaded, sanity-checked against the batch they point at, instead of being rebuilt:
///   a segment is then read only from its last index entry on (plus, for the producer state, from the
///   producer snapshot's offset on). Index files that fail a check are rebuilt by a full scan.
///
/// A log that ends below its recovery point after a crash has lost bytes that were synced: the recovery
/// point cannot be trusted, so recovery runs again without it (every CRC of the last segment verified).
pub(crate) async fn recover(
    dir: &Path,
    config: &LogConfig,
    clean: bool,
    recovery_point: Option<i64>,
    hooks: &mut dyn RecoveryHooks,
) -> Result<Recovered, StorageError> {
    let recovered = recover_once(dir, config, clean, recovery_point, hooks).await?;
    let leo = recovered.segments.last().map_or(0, |s| s.next_offset);
    match recovery_point {
        Some(rp) if !clean && rp > leo => {
            tracing::warn!(dir = %dir.display(), recovery_point = rp, log_end = leo, "the log ends below its recovery point: recovering again, verifying every batch of the last segment");
            drop(recovered);
            hooks.discard_snapshot();
            recover_once(dir, config, clean, None, hooks).await
        }
        _ => Ok(recovered),
    }
}

async fn recover_once(
    dir: &Path,
    config: &LogConfig,
    clean: bool,
    recovery_point: Option<i64>,
    hooks: &mut dyn RecoveryHooks,
) -> Result<Recovered, StorageError> {
    // Reading the directory (and finishing an interrupted cleaner swap) is blocking I/O: on the blocking
    // pool, since a partition created while serving (CreateTopics, auto-creation) recovers on a serving
    // core.
    let listing = {
        let d = dir.to_path_buf();
        blocking(move || list_dir(&d))
            .await
            .map_err(|e| StorageError::io(dir, e))?
    };
    for stray in &listing.stray {
        tracing::warn!(file = %dir.join(stray).display(), "ignoring stray file in partition directory");
    }
    let Listing {
        mut bases,
        index_bases,
        mut snapshots,
        ..
    } = listing;
    bases.sort_unstable();
    for (b, name) in &index_bases {
        if bases.binary_search(b).is_err() {
            tracing::warn!(file = %dir.join(name).display(), "ignoring index file without a segment");
        }
    }

    if bases.is_empty() {
        let path = dir.join(log_file_name(0));
        let file = open_segment_file(&path, true).await?;
        return Ok(Recovered {
            segments: vec![Segment::new(dir, 0, now_ms(), Some(Rc::new(file)))],
            tail_block: Vec::new(),
            snapshot_offset: None,
            snapshots: Default::default(),
            created_first_segment: true,
            stats: RecoveryStats::default(),
        });
    }

    // The `.txnindex` files (Kafka's: absent means no aborted transaction). One that fails its checks is
    // rebuilt from the batches: the producer state must then start at or below its segment.
    let mut txn_indexes = Vec::with_capacity(bases.len());
    let mut rebuild_txn_from = i64::MAX;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        let path = dir.join(txn_index_file_name(base));
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match parse_txn_index(&bytes, base, next_base) {
                Ok(entries) => Some((entries, bytes)),
                Err(why) => {
                    tracing::warn!(file = %path.display(), why, "damaged transaction index: rebuilding it from the log");
                    rebuild_txn_from = rebuild_txn_from.min(base);
                    Some((Vec::new(), bytes))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        txn_indexes.push(entries);
    }

    // The newest producer snapshot at or below the recovery point (and at or below the first damaged
    // transaction index) that the hooks accept. Snapshots are written only once their offset is
    // durable, so without a recovery point the newest one is usable.
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    let mut snapshot_offset = None;
    for &o in snapshots
        .iter()
        .filter(|&&o| recovery_point.is_none_or(|rp| o <= rp) && o <= rebuild_txn_from)
    {
        let path = dir.join(snapshot_file_name(o));
        let p = path.clone();
        let loaded = blocking(move || std::fs::read(&p))
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| hooks.load_snapshot(o, &bytes));
        match loaded {
            Ok(()) => {
                snapshot_offset = Some(o);
                break;
            }
            Err(why) => {
                tracing::warn!(file = %path.display(), why, "ignoring producer snapshot");
            }
        }
    }
    // Batches from here on feed the producer state.
    let replay_from = snapshot_offset.unwrap_or(i64::MIN);
    // After a crash, CRCs of the last segment are verified from here on.
    let verify_from = if clean {
        i64::MAX
    } else {
        recovery_point.unwrap_or(i64::MIN)
    };

    let mut stats = RecoveryStats::default();
    let mut segments = Vec::with_capacity(bases.len());
    let mut tail_block = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        let path = dir.join(log_file_name(base));
        let file = Rc::new(open_segment_file(&path, false).await?);
        let file_size = file
            .file_size()
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        let mut seg = Segment::new(dir, base, 0, None);
        // The file's age and its index files, read on the blocking pool.
        let (modified_ms, on_disk) = {
            let (p, ip, tp) = (path.clone(), seg.index_path(), seg.time_index_path());
            blocking(move || {
                let modified_ms = std::fs::metadata(&p)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64);
                (
                    modified_ms,
                    (std::fs::read(ip).ok(), std::fs::read(tp).ok()),
                )
            })
            .await
        };
        let created_ms = modified_ms.unwrap_or_else(now_ms);
        seg.created_ms = created_ms;
        let interval = config.index_interval_bytes;
        let disk = DiskRead {
            segment_base: base,
            file: file.clone(),
            path: path.clone(),
            start: 0,
            limit: file_size,
        };
        let verify = if last { verify_from } else { i64::MAX };
        // From the index files: every batch before the last indexed one is accounted for.
        let mut loaded = match &on_disk {
            (Some(index), Some(time_index)) => {
                load_indexes(&mut seg, index, time_index, &disk).await?
            }
            _ => None,
        };
        // ... unless those batches are ones whose CRCs must be verified (the last segment after a crash,
        // with index files reaching past the recovery point, or without one): read them all.
        if loaded.is_some()
            && seg
                .index
                .last()
                .is_some_and(|e| base + e.relative_offset as i64 >= verify)
        {
            tracing::warn!(file = %path.display(), "index files reach past the recovery point: verifying the whole segment");
            seg = Segment::new(dir, base, created_ms, None);
            loaded = None;
        }
        let tail_from = loaded.unwrap_or(0);
        // Transaction index entries whose markers the producer state replays are rebuilt; the ones
        // before are trusted from the file.
        let txn_on_disk = txn_indexes.get(i).and_then(Option::as_ref);
        let mut aborted: Vec<AbortedTxn> = txn_on_disk
            .map(|(entries, _)| {
                entries
                    .iter()
                    .copied()
                    .filter(|t| t.last_offset < replay_from)
                    .collect()
            })
            .unwrap_or_default();
        // The producer state needs the batches from `replay_from` on.
        let replay_start = if next_base <= replay_from {
            u64::MAX
        } else if loaded.is_some() && replay_from > base {
            seg.lookup(replay_from)
        } else {
            0
        };
        let mut end = scan(
            &disk,
            tail_from.min(replay_start),
            (base, next_base),
            verify,
            &mut |pos, h, marker| {
                if pos >= tail_from {
                    seg.track_batch(pos, h, interval);
                }
                if h.last_offset() >= replay_from {
                    aborted.extend(hooks.on_batch(h, marker));
                }
            },
        )
        .await?;
        stats.bytes_scanned += end.bytes_scanned;
        stats.batches_verified += end.verified;
        let consistent = seg
            .time_index
            .last()
            .is_none_or(|e| base + (e.relative_offset as i64) < seg.next_offset);
        // (An empty segment file, which the cleaner leaves when it removed every batch, has nothing to
        // disagree with.)
        let past_data = end.valid_size <= tail_from && tail_from > 0;
        if loaded.is_some() && (past_data || !consistent) {
            // The index files pointed past the valid data: rebuild this segment's indexes from its
            // batches (the producer state has already seen them).
            tracing::warn!(file = %path.display(), "index files disagree with the segment: rebuilding them");
            seg = Segment::new(dir, base, created_ms, None);
            end = scan(&disk, 0, (base, next_base), verify, &mut |pos, h, _| {
                seg.track_batch(pos, h, interval)
            })
            .await?;
            stats.bytes_scanned += end.bytes_scanned;
            stats.segments_scanned += 1;
        } else if loaded.is_some() {
            stats.segments_from_index += 1;
        } else {
            stats.segments_scanned += 1;
        }
        if end.valid_size < file_size {
            tracing::warn!(
                file = %path.display(),
                position = end.valid_size,
                offset = seg.next_offset,
                reason = end.reason.unwrap_or("unknown"),
                "truncating log segment to its last valid batch"
            );
            file.truncate(end.valid_size)
                .await
                .map_err(|e| StorageError::io(&path, e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io(&path, e))?;
            super::fault_journal::data_synced(&path, end.valid_size);
        }
        seg.size = end.valid_size;
        seg.written = end.valid_size;
        aborted.retain(|t| t.last_offset < seg.next_offset);
        seg.aborted = aborted;
        seg.txn_index_on_disk = txn_on_disk.is_some();
        if last {
            let partial = (end.valid_size % BLOCK_BYTES) as usize;
            if partial > 0 {
                let block = file
                    .read_at(end.valid_size - partial as u64, partial)
                    .await
                    .map_err(|e| StorageError::io(&path, e))?;
                tail_block = block.to_vec();
                assert_eq!(tail_block.len(), partial, "tail block read back whole");
            }
        } else {
            seg.sealed = true;
            for (p, want, have) in [
                (seg.index_path(), seg.index_bytes(), &on_disk.0),
                (seg.time_index_path(), seg.time_index_bytes(), &on_disk.1),
            ] {
                if have.as_deref() != Some(&want[..]) {
                    tracing::info!(file = %p.display(), "rebuilding index file");
                    write_small_file(&p, want).await?;
                }
            }
            // A sealed segment's transaction index is rewritten when it differs (the active one's goes
            // out with the next checkpoint or the close).
            let want = seg.txn_index_bytes();
            let have = txn_on_disk.map(|(_, bytes)| &bytes[..]);
            if have.unwrap_or_default() != &want[..] {
                let p = seg.txn_index_path();
                tracing::info!(file = %p.display(), "rebuilding transaction index file");
                write_small_file(&p, want).await?;
                if have.is_none() {
                    super::sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
                }
                seg.txn_index_on_disk = true;
            }
        }
        seg.file = Some(file);
        segments.push(seg);
    }
    let leo = segments.last().map_or(0, |s| s.next_offset);
    if snapshot_offset.is_some_and(|o| o > leo) {
        tracing::warn!(dir = %dir.display(), snapshot = ?snapshot_offset, log_end = leo, "producer snapshot lies past the recovered log end: idempotent-producer state starts empty");
        hooks.discard_snapshot();
        snapshot_offset = None;
    }
    snapshots.reverse();
    add_totals(&stats);
    Ok(Recovered {
        segments,
        tail_block,
        snapshot_offset,
        snapshots: snapshots.into(),
        created_first_segment: false,
        stats,
    })
}

/// What a partition directory holds, by kind of file.
struct Listing {
    /// Base offsets of the segments (`.log`), unsorted.
    bases: Vec<i64>,
    /// Index files (`.index`, `.timeindex`): base offset and file name.
    index_bases: HashSet<(i64, String)>,
    /// Offsets of the producer snapshots, unsorted.
    snapshots: Vec<i64>,
    /// Names of files that are none of these.
    stray: Vec<String>,
}

/// Finishes or discards an interrupted cleaner swap, then lists the directory. Blocking: call it through
/// [`blocking`].
fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    super::cleaner::recover_swaps(dir)?;
    let mut listing = Listing {
        bases: Vec::new(),
        index_bases: HashSet::new(),
        snapshots: Vec::new(),
        stray: Vec::new(),
    };
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(b) = parse_file_name(&name, "log") {
            listing.bases.push(b);
        } else if let Some(b) = parse_file_name(&name, "index")
            .or_else(|| parse_file_name(&name, "timeindex"))
            .or_else(|| parse_file_name(&name, "txnindex"))
        {
            listing.index_bases.insert((b, name));
        } else if let Some(o) = parse_file_name(&name, SNAPSHOT_EXT) {
            listing.snapshots.push(o);
        } else if name == super::LOG_START_FILE || name == super::epochs::LEADER_EPOCH_CHECKPOINT {
            // The DeleteRecords checkpoint and the leader epochs; read by `PartitionLog::open`.
        } else {
            listing.stray.push(name);
        }
    }
    Ok(listing)
}

/// Loads a segment's `.index` and `.timeindex` (Kafka's formats) into `seg` if they pass Kafka's sanity
/// checks and more: entries strictly increasing, positions inside the file, and the batch at the last
/// entry's position really ending at the entry's offset. Returns the position of that last indexed
/// batch (0 for an empty index), from which the rest of the segment must be scanned; `None` leaves
/// `seg` untouched (the indexes are rebuilt by a full scan).
async fn load_indexes(
    seg: &mut Segment,
    index: &[u8],
    time_index: &[u8],
    disk: &DiskRead,
) -> Result<Option<u64>, StorageError> {
    if !index.len().is_multiple_of(INDEX_ENTRY_BYTES)
        || !time_index.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES)
    {
        return Ok(None);
    }
    let be_i32 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    // An entry's absolute offset (and the one after it) must exist: base offsets near i64::MAX.
    let absolute = |rel: i32| {
        seg.base_offset
            .checked_add(rel as i64)
            .filter(|&o| rel >= 0 && o < i64::MAX)
    };
    let mut entries = Vec::with_capacity(index.len() / INDEX_ENTRY_BYTES);
    for e in index.chunks_exact(INDEX_ENTRY_BYTES) {
        let (rel, pos) = (be_i32(&e[..4]), be_i32(&e[4..]));
        let after_previous = entries
            .last()
            .is_none_or(|p: &IndexEntry| rel as u32 > p.relative_offset && pos as u32 > p.position);
        if absolute(rel).is_none() || pos <= 0 || pos as u64 >= disk.limit || !after_previous {
            return Ok(None);
        }
        entries.push(IndexEntry {
            relative_offset: rel as u32,
            position: pos as u32,
        });
    }
    let mut times = Vec::with_capacity(time_index.len() / TIME_INDEX_ENTRY_BYTES);
    for e in time_index.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
        let ts = i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let rel = be_i32(&e[8..]);
        let after_previous = times
            .last()
            .is_none_or(|p: &TimeIndexEntry| ts > p.timestamp && rel as u32 >= p.relative_offset);
        if absolute(rel).is_none() || !after_previous {
            return Ok(None);
        }
        times.push(TimeIndexEntry {
            timestamp: ts,
            relative_offset: rel as u32,
        });
    }
    let tail_from = match entries.last() {
        None => 0,
        Some(e) => {
            let mut win = None;
            let h = match header_at(disk, &mut win, e.position as u64, records::HEADER_BYTES).await
            {
                Ok(Some(h)) => h,
                Ok(None) | Err(StorageError::Corrupt { .. }) => return Ok(None),
                Err(other) => return Err(other),
            };
            let last = h.base_offset.checked_add(h.last_offset_delta as i64);
            if last != absolute(e.relative_offset as i32) {
                return Ok(None);
            }
            e.position as u64
        }
    };
    if let Some(t) = times.last() {
        seg.max_timestamp = t.timestamp;
        seg.offset_of_max_timestamp = seg.base_offset + t.relative_offset as i64;
    }
    seg.index = entries;
    seg.time_index = times;
    Ok(Some(tail_from))
}

/// Scans the batches of one segment file from position `from` (a batch boundary), calling `f` for each
/// valid one (with the end-transaction marker of a control batch), and returns where the valid prefix
/// ends. Offsets must lie in `[base_offset, next_base)`
/// (segments never overlap: a batch past the next segment's base offset is damage). Batches ending at or
/// past offset `verify_from` must also pass their CRC check.
async fn scan(
    d: &DiskRead,
    from: u64,
    (base_offset, next_base): (i64, i64),
    verify_from: i64,
    f: &mut dyn FnMut(u64, &BatchHeader, Option<EndTxnMarker>),
) -> Result<ScanEnd, StorageError> {
    let mut win = None;
    let mut pos = from.min(d.limit);
    let mut next_offset = base_offset;
    let mut verified = 0u64;
    let mut last_size = 0usize;
    let end = |pos: u64, reason, verified| ScanEnd {
        valid_size: pos,
        reason,
        bytes_scanned: pos.saturating_sub(from),
        verified,
    };
    loop {
        if pos == d.limit {
            return Ok(end(pos, None, verified));
        }
        if d.limit - pos < records::HEADER_BYTES as u64 {
            return Ok(end(pos, Some("torn batch header"), verified));
        }
        // Large batches: read just the next header, not a whole window of record bytes nobody looks at.
        let want = if last_size >= SCAN_WINDOW_BYTES / 16 {
            BLOCK_BYTES as usize
        } else {
            SCAN_WINDOW_BYTES
        };
        ensure_window(d, &mut win, pos, records::HEADER_BYTES, want).await?;
        let Some(h) = win
            .as_ref()
            .and_then(|w| BatchHeader::parse(w.slice(pos, records::HEADER_BYTES)))
        else {
            return Ok(end(pos, Some("unreadable batch header"), verified));
        };
        if h.batch_length == 0 {
            return Ok(end(pos, Some("zero-filled tail"), verified));
        }
        if h.batch_length < records::BATCH_LENGTH_MIN || h.magic != records::MAGIC_V2 {
            return Ok(end(pos, Some("corrupt batch header"), verified));
        }
        let size = h.total_size();
        if pos + size as u64 > d.limit {
            return Ok(end(pos, Some("torn batch"), verified));
        }
        if h.base_offset < next_offset || h.last_offset_delta < 0 {
            return Ok(end(pos, Some("batch offsets out of order"), verified));
        }
        // Outside the CRC: a flipped bit here must not reach the index arithmetic (relative offsets and
        // positions are i32 in Kafka's index files), nor overflow the offsets (the next one must exist).
        let last_offset = h
            .base_offset
            .checked_add(h.last_offset_delta as i64)
            .filter(|&l| l < i64::MAX);
        if last_offset.is_none_or(|l| l - base_offset > i32::MAX as i64 || l >= next_base) {
            return Ok(end(
                pos,
                Some("batch offset out of the segment's range"),
                verified,
            ));
        }
        if pos + size as u64 > i32::MAX as u64 {
            return Ok(end(
                pos,
                Some("segment longer than an index can address"),
                verified,
            ));
        }
        if h.last_offset() >= verify_from {
            ensure_window(d, &mut win, pos, size, SCAN_WINDOW_BYTES).await?;
            if !win
                .as_ref()
                .is_some_and(|w| records::verify_crc(w.slice(pos, size)))
            {
                return Ok(end(pos, Some("CRC mismatch"), verified));
            }
            verified += 1;
        }
        // A control batch (one small record) is read whole for its end-transaction marker.
        let marker = if h.is_control() {
            ensure_window(d, &mut win, pos, size, SCAN_WINDOW_BYTES).await?;
            win.as_ref()
                .and_then(|w| records::parse_end_txn_marker(w.slice(pos, size), &h))
        } else {
            None
        };
        f(pos, &h, marker);
        next_offset = h.last_offset() + 1;
        pos += size as u64;
        last_size = size;
    }
}
