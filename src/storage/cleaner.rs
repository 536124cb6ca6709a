//! The log cleaner of compacted topics (Kafka's `LogCleaner`): keeps the latest record of every key.
//!
//! One cleaning of a log, as Kafka does it:
//! 1. The cleanable part is the sealed segments below the active one (and below the first segment holding
//!    records younger than `min.compaction.lag.ms`). The dirty part starts at the partition's first dirty
//!    offset from `cleaner-offset-checkpoint` (the log start before any cleaning).
//! 2. A map key → latest offset is built over the dirty part, segment by segment, until it is full
//!    (its memory is `log.cleaner.dedupe.buffer.size` over the cores): only whole segments are mapped.
//! 3. Every segment from the log start to the end of the mapped part is rewritten without the records a
//!    later record of the same key supersedes. Tombstones are kept until their batch's delete horizon
//!    (KIP-534: set to now + `delete.retention.ms` the first time the cleaner keeps them) has passed. A
//!    batch keeps its base offset and last offset (offsets are never reused: gaps are normal), its producer
//!    id, epoch and base sequence; the last batch of an idempotent producer (as the partition's producer
//!    state knows it) left without records stays as an empty batch so that the producer's last sequence
//!    survives a restart, as Kafka keeps it; other batches left without records go. A segment left
//!    without any batch stays as an empty file, as in Kafka (reads pass over it). Batches kept whole are
//!    copied byte for byte.
//! 4. Each rewritten segment is swapped in crash-safely, Kafka's way: `<base>.log.cleaned` (and its
//!    `.index`/`.timeindex`) written and synced, renamed to `.swap` (indexes first, the log last: the log's
//!    rename commits the swap), the directory synced, then renamed over the live files. Recovery finishes a
//!    committed swap and deletes an uncommitted one ([`recover_swaps`]).
//! 5. The new first dirty offset goes to the checkpoint.
//!
//! Transactions, as Kafka's cleaner handles them (`CleanedTransactionMetadata`): nothing at or past the
//! partition's last stable offset is cleanable (an undecided transaction is never touched); records of
//! aborted transactions (known from the `.txnindex` entries) are never put in the map and are removed
//! from the rewritten segments; the `.txnindex` entry of an aborted transaction is carried into the
//! cleaned segment while this cleaning still saw some of its batches, and dropped once none is left.
//! Control batches (COMMIT and ABORT markers) are always kept, unlike Kafka, which removes a marker once
//! its transaction's data is gone and the delete horizon has passed: a kept marker costs one small batch
//! per transaction and a consumer passes over it.
//!
//! Reads under way keep the old file (they hold it open); a fetch that read the old file while a swap
//! happened does not keep its read-ahead block (`State::swaps`). The cleaner reads and writes through the
//! blocking pool and direct reads, at most `log.cleaner.io.max.bytes.per.second`, and runs in a
//! low-priority task queue (see `server::cleaner_loop`), so produce and fetch on its core go first.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::*;
use crate::records::{codec, EndTxnMarker};

/// Suffix of a cleaned segment's files while they are written.
pub const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a cleaned segment's files once complete, before they replace the live ones.
pub const SWAP_SUFFIX: &str = "swap";

/// How far a log can be cleaned now, for the scheduler (Kafka's `LogToClean`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    pub first_dirty: i64,
    /// Bytes of the cleanable part already cleaned and still dirty.
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// A dirty record is older than `max.compaction.lag.ms`: clean whatever the ratio.
    pub overdue: bool,
}

impl Cleanable {
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What one cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// The new first dirty offset.
    pub end_offset: i64,
}

/// A 128-bit hash of a record key (Kafka's map keys on a 16-byte digest of the key too).
fn key_hash(key: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    key.hash(&mut a);
    let mut b = DefaultHasher::new();
    (0x5eed_u32, key).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What decides which records of a segment stay.
#[derive(Clone, Copy)]
struct Rules<'a> {
    /// Key hash -> its latest offset in the mapped part.
    map: &'a HashMap<u128, i64>,
    now_ms: i64,
    /// The delete horizon given to batches whose tombstones are kept for the first time.
    horizon: i64,
    keep_empty: &'a dyn Fn(i64, i64) -> bool,
}

/// A segment to clean, taken while the state is borrowed.
struct Planned {
    read: DiskRead,
    next_offset: i64,
    created_ms: i64,
    /// The aborted transactions with batches in this segment (from every later segment's index too).
    aborted: Vec<AbortedTxn>,
    /// This segment's own `.txnindex` entries, and whether its file exists.
    own_aborted: Vec<AbortedTxn>,
    txn_index_on_disk: bool,
}

/// Kafka's `CleanedTransactionMetadata`: which batches of one cleaning belong to aborted transactions,
/// and which `.txnindex` entries the cleaned segments keep.
#[derive(Default)]
struct CleanedTxns {
    /// Aborted transactions not reached yet, by (first offset, producer id).
    pending: BTreeMap<(i64, i64), AbortedTxn>,
    /// (producer id, first offset) of every transaction ever added (a transaction spanning segments is
    /// collected for each of them).
    added: HashSet<(i64, i64)>,
    /// Producer id -> its aborted transaction under way, and whether a batch of it was seen.
    ongoing_aborted: HashMap<i64, (AbortedTxn, bool)>,
    ongoing_committed: HashSet<i64>,
}

impl CleanedTxns {
    fn add(&mut self, txns: &[AbortedTxn]) {
        for t in txns {
            if self.added.insert((t.producer_id, t.first_offset)) {
                self.pending.insert((t.first_offset, t.producer_id), *t);
            }
        }
    }

    fn consume_up_to(&mut self, offset: i64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > offset {
                break;
            }
            let t = entry.remove();
            self.ongoing_aborted
                .entry(t.producer_id)
                .or_insert((t, false));
        }
    }

    /// Kafka's `onBatchRead`: true if the data batch belongs to an aborted transaction.
    fn on_batch(&mut self, h: &BatchHeader) -> bool {
        self.consume_up_to(h.last_offset());
        if !h.is_transactional() {
            return false;
        }
        match self.ongoing_aborted.get_mut(&h.producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.ongoing_committed.insert(h.producer_id);
                false
            }
        }
    }

    /// Kafka's `onControlBatchRead`, for the index only: the entry an ABORT marker keeps in the cleaned
    /// segment's `.txnindex` (while some batch of its transaction was seen by this cleaning).
    fn on_control(&mut self, h: &BatchHeader, marker: Option<EndTxnMarker>) -> Option<AbortedTxn> {
        self.consume_up_to(h.last_offset());
        match marker {
            Some(m) if !m.commit => match self.ongoing_aborted.remove(&h.producer_id) {
                Some((t, true)) => Some(t),
                _ => None,
            },
            Some(_) => {
                self.ongoing_committed.remove(&h.producer_id);
                None
            }
            None => None,
        }
    }
}

fn largest_timestamp(s: &Segment) -> i64 {
    if s.max_timestamp >= 0 {
        s.max_timestamp
    } else {
        s.created_ms
    }
}

/// The files of segment `base` with `suffix` appended (`.log.cleaned`, ...): log, index, time index,
/// transaction index.
fn suffixed(dir: &Path, base: i64, suffix: &str) -> [PathBuf; 4] {
    [
        dir.join(format!("{}.{suffix}", segment::log_file_name(base))),
        dir.join(format!("{}.{suffix}", segment::index_file_name(base))),
        dir.join(format!("{}.{suffix}", segment::time_index_file_name(base))),
        dir.join(format!("{}.{suffix}", segment::txn_index_file_name(base))),
    ]
}

fn live(dir: &Path, base: i64) -> [PathBuf; 4] {
    [
        dir.join(segment::log_file_name(base)),
        dir.join(segment::index_file_name(base)),
        dir.join(segment::time_index_file_name(base)),
        dir.join(segment::txn_index_file_name(base)),
    ]
}

/// The order of a swap's renames: the indexes first, the log last (its rename commits the swap).
const SWAP_ORDER: [usize; 4] = [1, 2, 3, 0];
/// Position of the transaction index in [`suffixed`] and [`live`].
const TXN_INDEX: usize = 3;

/// At recovery, before the segments are listed: finishes every committed swap (`<base>.log.swap`
/// present) and deletes every uncommitted one (`.cleaned` files, and `.swap` indexes without their log).
/// Blocking: recovery runs it on the blocking pool. Returns how many swaps were finished.
pub fn recover_swaps(dir: &Path) -> std::io::Result<usize> {
    let mut committed = Vec::new();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(&format!(".{SWAP_SUFFIX}")) {
            match segment::parse_file_name(stem, "log") {
                Some(base) => committed.push(base),
                None => stray.push(name),
            }
        } else if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            stray.push(name);
        }
    }
    for base in &committed {
        let swaps = suffixed(dir, *base, SWAP_SUFFIX);
        let targets = live(dir, *base);
        // Indexes first: the log's rename is the last step, as when the swap ran.
        for i in SWAP_ORDER {
            if swaps[i].exists() {
                std::fs::rename(&swaps[i], &targets[i])?;
            } else if i != 0 && i != TXN_INDEX {
                // No cleaned index: the old one describes the old file; recovery rebuilds it.
                let _ = std::fs::remove_file(&targets[i]);
            }
            // No cleaned transaction index: the swap wrote none (the segment had no entry before or
            // after), or it is already in place.
        }
        tracing::info!(segment = %targets[0].display(), "recovery finished an interrupted cleaner swap");
    }
    for name in stray {
        let path = dir.join(&name);
        let keep = committed
            .iter()
            .any(|b| suffixed(dir, *b, SWAP_SUFFIX).contains(&path));
        if !keep {
            tracing::info!(file = %path.display(), "recovery deletes an unfinished cleaned segment file");
            std::fs::remove_file(&path)?;
        }
    }
    if !committed.is_empty() {
        super::fault_journal::sync_dir(dir)?;
    }
    Ok(committed.len())
}

fn corrupt_at(d: &DiskRead, pos: u64) -> StorageError {
    StorageError::Corrupt {
        path: d.path.clone(),
        position: pos,
    }
}

/// The whole batch at `pos` (header `h`) in `win`, and its records decompressed.
async fn batch_and_records<'w>(
    d: &DiskRead,
    win: &'w mut Option<Window>,
    pos: u64,
    h: &BatchHeader,
) -> Result<(&'w [u8], Vec<u8>), StorageError> {
    ensure_window(d, win, pos, h.total_size(), SCAN_WINDOW_BYTES).await?;
    let batch = win.as_ref().expect("ensured").slice(pos, h.total_size());
    let body = codec::records_body(batch, h, crate::limits::DECOMPRESSED_BATCH_BYTES_MAX)
        .map_err(|_| corrupt_at(d, pos))?;
    Ok((batch, body))
}

/// Writes `bytes` to a new file and syncs it. Blocking.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    super::fault_journal::file_synced(path, bytes);
    Ok(())
}

/// Paces the cleaner's I/O to `bytes_per_second`.
struct Throttle {
    bytes_per_second: f64,
    started: std::time::Instant,
    bytes: u64,
}

impl Throttle {
    async fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if !self.bytes_per_second.is_finite() || self.bytes_per_second <= 0.0 {
            return;
        }
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second);
        let spent = self.started.elapsed();
        if due > spent {
            glommio::timer::sleep(due - spent).await;
        }
    }
}

impl PartitionLog {
    /// The first offset not cleaned yet: the checkpointed one if it lies within the log (one outside it,
    /// e.g. left by a topic deleted and created again, is reset to the log start, as Kafka does).
    fn first_dirty(&self, st: &State) -> i64 {
        let shared = &self.shared;
        match checkpoint::cleaner_get(&shared.log_dir, &shared.topic, shared.partition) {
            Some(o) if (st.log_start_offset..=st.log_end_offset).contains(&o) => o,
            _ => st.log_start_offset,
        }
    }

    /// The sealed segments the cleaner may touch now: below the active segment, below the last stable
    /// offset `lso` (Kafka's first uncleanable offset is at most it) and below the first segment with
    /// records younger than `min.compaction.lag.ms`.
    fn cleanable_segments<'s>(
        st: &'s State,
        config: &LogConfig,
        now_ms: i64,
        lso: i64,
    ) -> &'s [Segment] {
        let sealed = st
            .segments
            .iter()
            .take_while(|s| s.sealed && s.file.is_some() && s.next_offset <= lso)
            .count()
            .min(st.segments.len().saturating_sub(1));
        let end = st.segments[..sealed]
            .iter()
            .position(|s| {
                config.min_compaction_lag_ms > 0
                    && largest_timestamp(s) > now_ms.saturating_sub(config.min_compaction_lag_ms)
            })
            .unwrap_or(sealed);
        &st.segments[..end]
    }

    /// How far this log can be cleaned now (never at or past the last stable offset `lso`); `None` if it
    /// is not compacted or holds nothing dirty.
    pub fn cleanable(&self, now_ms: i64, lso: i64) -> Option<Cleanable> {
        let config = self.shared.config.get();
        if !config.compact {
            return None;
        }
        let st = self.shared.state.borrow();
        let first_dirty = self.first_dirty(&st);
        let mut out = Cleanable {
            first_dirty,
            clean_bytes: 0,
            dirty_bytes: 0,
            overdue: false,
        };
        for s in Self::cleanable_segments(&st, &config, now_ms, lso) {
            if s.next_offset <= first_dirty {
                out.clean_bytes += s.size;
            } else {
                out.dirty_bytes += s.size;
                let lag = config.max_compaction_lag_ms;
                if lag < i64::MAX
                    && s.created_ms.min(largest_timestamp(s)) < now_ms.saturating_sub(lag)
                {
                    out.overdue = true;
                }
            }
        }
        (out.dirty_bytes > 0).then_some(out)
    }

    /// Cleans the log once (see the module doc). `map_entries`: the most keys the map may hold;
    /// `io_bytes_per_second`: the I/O pace; `lso`: the partition's last stable offset. Returns what it
    /// did, or `None` if there was nothing to do. `keep_empty(producer_id, last_offset)`: whether a batch
    /// left without records must stay (empty) because it is the producer's last.
    pub async fn clean(
        &self,
        now_ms: i64,
        map_entries: usize,
        io_bytes_per_second: f64,
        lso: i64,
        keep_empty: &dyn Fn(i64, i64) -> bool,
    ) -> Result<Option<CleanStats>, StorageError> {
        let config = self.shared.config.get();
        let (first_dirty, plan) = {
            let st = self.shared.state.borrow();
            let first_dirty = self.first_dirty(&st);
            let plan: Vec<Planned> = Self::cleanable_segments(&st, &config, now_ms, lso)
                .iter()
                .filter_map(|s| {
                    Some(Planned {
                        read: DiskRead {
                            segment_base: s.base_offset,
                            file: s.file.clone()?,
                            path: s.log_path.clone(),
                            start: 0,
                            limit: s.written,
                        },
                        next_offset: s.next_offset,
                        created_ms: s.created_ms,
                        aborted: collect_aborted(&st, s.base_offset, s.next_offset),
                        own_aborted: s.aborted.clone(),
                        txn_index_on_disk: s.txn_index_on_disk,
                    })
                })
                .collect();
            (first_dirty, plan)
        };
        if !plan.iter().any(|p| p.next_offset > first_dirty) {
            return Ok(None);
        }
        let mut throttle = Throttle {
            bytes_per_second: io_bytes_per_second,
            started: std::time::Instant::now(),
            bytes: 0,
        };
        let mut stats = CleanStats::default();

        // 2. The map over the dirty part, whole segments only.
        // Records of aborted transactions are not mapped (Kafka's `buildOffsetMapForSegment`), nor are
        // control records.
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut mapped_end = first_dirty;
        let mut txns = CleanedTxns::default();
        for p in plan.iter().filter(|p| p.next_offset > first_dirty) {
            let mut seg_map: Vec<(u128, i64)> = Vec::new();
            txns.add(&p.aborted);
            self.scan(&p.read, &mut throttle, &mut stats, |h, records| {
                if h.is_control() {
                    txns.consume_up_to(h.last_offset());
                    return;
                }
                if txns.on_batch(h) {
                    return;
                }
                for r in records {
                    let offset = h.base_offset + i64::from(r.offset_delta);
                    if offset >= first_dirty {
                        if let Some(k) = r.key {
                            seg_map.push((key_hash(k), offset));
                        }
                    }
                }
            })
            .await?;
            let new_keys = seg_map.iter().filter(|(k, _)| !map.contains_key(k)).count();
            if map.len() + new_keys > map_entries {
                if mapped_end == first_dirty {
                    tracing::warn!(
                        topic = %self.shared.topic, partition = self.shared.partition,
                        keys = map.len() + new_keys, map_entries,
                        "one segment holds more keys than the cleaner's map: raise log.cleaner.dedupe.buffer.size"
                    );
                    return Ok(None);
                }
                break;
            }
            map.extend(seg_map);
            mapped_end = p.next_offset;
        }

        // 3 and 4. Rewrite and swap every segment up to the end of the mapped part.
        let rules = Rules {
            map: &map,
            now_ms,
            horizon: now_ms.saturating_add(config.delete_retention_ms),
            keep_empty,
        };
        let mut txns = CleanedTxns::default();
        for p in plan.iter().filter(|p| p.next_offset <= mapped_end) {
            txns.add(&p.aborted);
            self.clean_segment(p, &rules, &mut txns, &mut throttle, &mut stats)
                .await?;
        }

        // 5. Progress.
        stats.end_offset = mapped_end;
        checkpoint::cleaner_set(
            &self.shared.log_dir,
            &self.shared.topic,
            self.shared.partition,
            Some(mapped_end),
        );
        let log_dir = self.shared.log_dir.clone();
        blocking(move || checkpoint::write_file(&log_dir, checkpoint::CLEANER_OFFSET_FILE_NAME))
            .await
            .map_err(|e| StorageError::io(&self.shared.log_dir, e))?;
        Ok(Some(stats))
    }

    /// Calls `f` with every batch of a segment file and its records.
    async fn scan(
        &self,
        d: &DiskRead,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
        mut f: impl FnMut(&BatchHeader, &[codec::Record<'_>]),
    ) -> Result<(), StorageError> {
        let mut win = None;
        let mut pos = d.start;
        while let Some(h) = header_at(d, &mut win, pos, SCAN_WINDOW_BYTES).await? {
            let (_, body) = batch_and_records(d, &mut win, pos, &h).await?;
            let records = codec::parse_records(&body, &h).map_err(|_| corrupt_at(d, pos))?;
            f(&h, &records);
            pos += h.total_size() as u64;
            stats.bytes_read += h.total_size() as u64;
            throttle.account(h.total_size() as u64).await;
        }
        Ok(())
    }

    async fn clean_segment(
        &self,
        p: &Planned,
        rules: &Rules<'_>,
        txns: &mut CleanedTxns,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<(), StorageError> {
        let Rules {
            map,
            now_ms,
            horizon,
            keep_empty,
        } = *rules;
        let config = self.shared.config.get();
        let dir = self.shared.dir.clone();
        let base = p.read.segment_base;
        let mut out: Vec<u8> = Vec::new();
        let mut seg = Segment::new(&dir, base, p.created_ms, None);
        let mut changed = false;
        let mut removed = 0u64;
        let mut win = None;
        let mut pos = 0u64;
        let d = &p.read;
        let mut aborted_kept: Vec<AbortedTxn> = Vec::new();
        while let Some(h) = header_at(d, &mut win, pos, SCAN_WINDOW_BYTES).await? {
            let (batch, body) = batch_and_records(d, &mut win, pos, &h).await?;
            let records = codec::parse_records(&body, &h).map_err(|_| corrupt_at(d, pos))?;
            let batch_horizon = codec::delete_horizon(&h);
            if h.is_control() {
                // Markers are kept whole; an ABORT marker decides its transaction's index entry.
                let marker = records::parse_end_txn_marker(batch, &h);
                aborted_kept.extend(txns.on_control(&h, marker));
                seg.track_batch(out.len() as u64, &h, config.index_interval_bytes);
                out.extend_from_slice(batch);
                pos += h.total_size() as u64;
                throttle.account(h.total_size() as u64).await;
                continue;
            }
            let aborted = txns.on_batch(&h);
            let kept: Vec<codec::Record<'_>> = records
                .iter()
                .copied()
                .filter(|r| {
                    if aborted {
                        return false;
                    }
                    let offset = h.base_offset + i64::from(r.offset_delta);
                    let latest = r
                        .key
                        .is_none_or(|k| map.get(&key_hash(k)).is_none_or(|&o| o <= offset));
                    let expired_tombstone =
                        r.value.is_none() && batch_horizon.is_some_and(|t| t <= now_ms);
                    latest && !expired_tombstone
                })
                .collect();
            removed += (records.len() - kept.len()) as u64;
            let has_tombstones = kept.iter().any(|r| r.value.is_none());
            let set_horizon = has_tombstones && batch_horizon.is_none();
            let rewritten: Option<Vec<u8>> = if kept.len() == records.len() && !set_horizon {
                None // kept whole: copied byte for byte
            } else if kept.is_empty()
                && !(h.has_producer_id() && keep_empty(h.producer_id, h.last_offset()))
            {
                changed = true;
                pos += h.total_size() as u64;
                continue;
            } else {
                changed = true;
                let horizon = if set_horizon {
                    Some(horizon)
                } else {
                    batch_horizon
                };
                Some(
                    codec::encode_batch(&h, &kept, horizon)
                        .map_err(|e| StorageError::io(&d.path, e))?,
                )
            };
            let bytes: &[u8] = rewritten.as_deref().unwrap_or(batch);
            let nh = BatchHeader::parse(bytes).expect("a whole batch");
            seg.track_batch(out.len() as u64, &nh, config.index_interval_bytes);
            out.extend_from_slice(bytes);
            pos += h.total_size() as u64;
            throttle.account(h.total_size() as u64).await;
        }
        stats.records_removed += removed;
        changed |= aborted_kept != p.own_aborted;
        if !changed {
            return Ok(());
        }
        seg.aborted = aborted_kept;
        let (index, time_index) = (seg.index_bytes(), seg.time_index_bytes());
        // A transaction index goes with the swap when the segment had one or has entries now (an empty
        // file replaces one whose entries all went).
        let txn_index =
            (p.txn_index_on_disk || !seg.aborted.is_empty()).then(|| seg.txn_index_bytes());
        let wrote_txn_index = txn_index.is_some();
        let size = out.len() as u64;
        let cleaned = suffixed(&dir, base, CLEANED_SUFFIX);
        let swap = suffixed(&dir, base, SWAP_SUFFIX);
        let targets = live(&dir, base);
        {
            let (swap, live_paths, dir) = (swap.clone(), targets.clone(), dir.clone());
            blocking(move || -> std::io::Result<()> {
                write_synced(&cleaned[0], &out)?;
                write_synced(&cleaned[1], &index)?;
                write_synced(&cleaned[2], &time_index)?;
                if let Some(txn_index) = &txn_index {
                    write_synced(&cleaned[TXN_INDEX], txn_index)?;
                }
                let written = |i: usize| i != TXN_INDEX || txn_index.is_some();
                // Indexes first; the log's rename commits the swap.
                for i in SWAP_ORDER.into_iter().filter(|&i| written(i)) {
                    std::fs::rename(&cleaned[i], &swap[i])?;
                }
                super::fault_journal::sync_dir(&dir)?;
                for i in SWAP_ORDER.into_iter().filter(|&i| written(i)) {
                    std::fs::rename(&swap[i], &live_paths[i])?;
                }
                super::fault_journal::sync_dir(&dir)
            })
            .await
            .map_err(|e| StorageError::io(&targets[0], e))?;
        }
        let file = open_segment_file(&targets[0], false).await?;
        let swapped = {
            let mut st = self.shared.state.borrow_mut();
            // The segment keeps its place (base and end offsets) even if its last batches went.
            let swapped = match st.segment_mut(base) {
                Some(s) if s.sealed && s.next_offset == p.next_offset => {
                    s.file = Some(Rc::new(file));
                    s.size = size;
                    s.written = size;
                    s.index = seg.index;
                    s.time_index = seg.time_index;
                    s.max_timestamp = seg.max_timestamp;
                    s.offset_of_max_timestamp = seg.offset_of_max_timestamp;
                    s.aborted = seg.aborted;
                    s.txn_index_on_disk |= wrote_txn_index;
                    true
                }
                _ => false,
            };
            if swapped {
                // What the tail cache and read-ahead hold of this segment is the old file's: reads go
                // to the cleaned one from now on.
                st.cache.drop_below(p.next_offset);
                st.readahead = Default::default();
                st.swaps += 1;
            }
            swapped
        };
        if !swapped {
            // Deleted by retention or DeleteRecords while it was cleaned: its new files go too.
            for path in targets {
                let _ = glommio::io::remove(&path).await;
            }
            return Ok(());
        }
        stats.segments += 1;
        stats.bytes_written += size;
        tracing::debug!(segment = %targets[0].display(), removed, size, "cleaned segment swapped in");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_finishes_committed_swaps_and_drops_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let w = |name: String, what: &str| std::fs::write(dir.join(name), what).unwrap();
        // Segment 0: committed (the log's .swap exists), its time index swap missing.
        w(segment::log_file_name(0), "old log");
        w(segment::index_file_name(0), "old index");
        w(segment::time_index_file_name(0), "old timeindex");
        w(format!("{}.swap", segment::log_file_name(0)), "new log");
        w(format!("{}.swap", segment::index_file_name(0)), "new index");
        // Segment 10: not committed (only its index reached .swap; the log is still .cleaned).
        w(segment::log_file_name(10), "old log 10");
        w(
            format!("{}.swap", segment::index_file_name(10)),
            "new index 10",
        );
        w(
            format!("{}.cleaned", segment::log_file_name(10)),
            "new log 10",
        );
        assert_eq!(recover_swaps(dir).unwrap(), 1);
        let r = |name: String| std::fs::read_to_string(dir.join(name)).ok();
        assert_eq!(r(segment::log_file_name(0)).as_deref(), Some("new log"));
        assert_eq!(r(segment::index_file_name(0)).as_deref(), Some("new index"));
        assert_eq!(
            r(segment::time_index_file_name(0)),
            None,
            "rebuilt by recovery"
        );
        assert_eq!(r(segment::log_file_name(10)).as_deref(), Some("old log 10"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                segment::index_file_name(0),
                segment::log_file_name(0),
                segment::log_file_name(10)
            ]
        );
    }

    #[test]
    fn key_hashes_differ() {
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
    }
}
