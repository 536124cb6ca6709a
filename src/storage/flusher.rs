//! The per-partition flusher task: drains the ordered queue of writes and rolls (group commit).
//!
//! Everything queued while one write+fdatasync ran goes into the next one. Direct I/O needs 4 KiB-aligned
//! positions and sizes, so every write starts at the block holding the end of the previous write and
//! re-sends that block's bytes (`tail`) from memory; the zero padding after the logical end is overwritten
//! by the next write and trimmed by truncation on roll or close (or by recovery after a crash).
//!
//! An I/O error ends the task and poisons the log (`State::failed`); waiters are woken with the error.
//! Except a full disk (ENOSPC, EDQUOT, or a short direct write): then the operations that did not complete
//! go back to the front of the queue, the log is marked stalled (`State::stalled`: appends and waiting acks
//! fail with [`StorageError::DiskFull`], reads go on), and the flusher retries every
//! `DISK_FULL_RETRY_MS` until a write succeeds. Nothing already written is touched by a failed attempt: a
//! retry rewrites the same aligned blocks with the same bytes, and the in-memory tail block and sizes move
//! only after a write succeeded. A log closed while stalled fails (what never reached the disk was never
//! acknowledged).

use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;

use super::limits::{BLOCK_BYTES, DISK_FULL_RETRY_MS, WRITE_RUN_BYTES_MAX};
use super::segment::{log_file_name, snapshot_file_name};
use super::{open_segment_file, write_small_file, Op, Shared, StorageError};

fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES - 1)
}

/// State private to the flusher task.
///
/// Owned by the core that owns the partition.
struct Flusher {
    shared: Rc<Shared>,
    /// Bytes of the active segment's last, partial block (`written % BLOCK_BYTES` of them).
    tail: Vec<u8>,
    /// The file written since the last fdatasync, if any.
    dirty: Option<Rc<DmaFile>>,
    /// Base offset of the segment of `dirty`.
    dirty_base: i64,
    unsynced_records: u64,
    /// Bytes written since the last fdatasync (the size of the next group commit, for metrics).
    unsynced_bytes: u64,
    /// When the first write since the last fdatasync started (group-commit latency, for metrics).
    unsynced_since: Option<Instant>,
    last_sync: Instant,
}

/// Runs until the log is closed or an I/O error occurs.
pub(crate) async fn run(shared: Rc<Shared>, tail: Vec<u8>) {
    let mut f = Flusher {
        shared,
        tail,
        dirty: None,
        dirty_base: 0,
        unsynced_records: 0,
        unsynced_bytes: 0,
        unsynced_since: None,
        last_sync: Instant::now(),
    };
    let result = f.run_loop().await;
    let mut st = f.shared.state.borrow_mut();
    if let Err(e) = result {
        tracing::error!(dir = %f.shared.dir.display(), error = %e, "log flusher failed; the partition is offline");
        st.failed = Some(e.to_string());
    }
    st.flusher_done = true;
    st.waiters.wake_all();
}

impl Flusher {
    async fn run_loop(&mut self) -> Result<(), StorageError> {
        loop {
            if self.shared.state.borrow().stalled.is_some() {
                self.wait_for_retry().await;
            } else {
                self.wait_for_work().await;
            }
            let (ops, closing) = {
                let mut st = self.shared.state.borrow_mut();
                (st.pending.drain(..).collect::<Vec<_>>(), st.closing)
            };
            let done = match self.process(&ops).await {
                Ok(()) => self.maybe_sync(closing).await,
                Err((unfinished, e)) => {
                    // Put back what did not complete, in order, ahead of anything queued meanwhile.
                    let mut st = self.shared.state.borrow_mut();
                    for op in ops[unfinished..].iter().rev() {
                        st.pending.push_front(op.clone());
                    }
                    Err(e)
                }
            };
            let done = match done {
                Ok(()) if closing && self.shared.state.borrow().pending.is_empty() => {
                    match self.finish_active().await {
                        Ok(()) => return Ok(()),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match done {
                Ok(()) => self.unstall(),
                Err(e) if e.is_disk_full() && !closing => self.stall(&e),
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks the log stalled on a full disk: appends and waiting acks fail until a write succeeds.
    fn stall(&mut self, e: &StorageError) {
        let mut st = self.shared.state.borrow_mut();
        if st.stalled.is_none() {
            tracing::error!(
                dir = %self.shared.dir.display(),
                error = %e,
                retry_ms = DISK_FULL_RETRY_MS,
                "disk full: writes to this partition fail until space is freed; reads go on"
            );
        }
        st.stalled = Some(e.to_string());
        st.waiters.wake_all();
    }

    fn unstall(&mut self) {
        let mut st = self.shared.state.borrow_mut();
        if st.stalled.take().is_some() {
            tracing::info!(dir = %self.shared.dir.display(), "disk space available again: writes resume");
            st.waiters.wake_all();
        }
    }

    /// While stalled: waits for the retry interval, or less if the log is being closed.
    async fn wait_for_retry(&self) {
        let closing = std::future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if st.closing {
                Poll::Ready(())
            } else {
                st.flusher_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        futures_lite::future::or(closing, async {
            glommio::timer::sleep(Duration::from_millis(DISK_FULL_RETRY_MS)).await;
        })
        .await
    }

    async fn wait_for_work(&self) {
        let work = std::future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if !st.pending.is_empty() || st.closing {
                Poll::Ready(())
            } else {
                st.flusher_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let timeout = match (self.shared.config.get().flush_interval_ms, &self.dirty) {
            (Some(ms), Some(_)) => {
                Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        };
        match timeout {
            Some(d) => {
                futures_lite::future::or(work, async {
                    glommio::timer::sleep(d).await;
                })
                .await
            }
            None => work.await,
        }
    }

    /// Carries out `ops` in order. On error, also returns the index of the first op not completed.
    async fn process(&mut self, ops: &[Op]) -> Result<(), (usize, StorageError)> {
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                Op::Write { segment_base, .. } => {
                    let mut j = i;
                    let mut run_bytes = 0usize;
                    while let Some(Op::Write {
                        segment_base: b,
                        bytes,
                        ..
                    }) = ops.get(j)
                    {
                        if b != segment_base
                            || (j > i && run_bytes + bytes.len() > WRITE_RUN_BYTES_MAX)
                        {
                            break;
                        }
                        run_bytes += bytes.len();
                        j += 1;
                    }
                    self.write_run(&ops[i..j]).await.map_err(|e| (i, e))?;
                    i = j;
                }
                Op::Roll {
                    old_base,
                    new_base,
                    snapshot,
                } => {
                    self.roll(*old_base, *new_base, snapshot.as_deref())
                        .await
                        .map_err(|e| (i, e))?;
                    i += 1;
                }
                Op::Checkpoint {
                    offset,
                    segment_base,
                    index,
                    time_index,
                    txn_index,
                    snapshot,
                } => {
                    let files = [index, time_index, txn_index];
                    self.checkpoint(*offset, *segment_base, files, snapshot)
                        .await
                        .map_err(|e| (i, e))?;
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes consecutive queued writes of one segment with one aligned direct write.
    async fn write_run(&mut self, run: &[Op]) -> Result<(), StorageError> {
        let Some(Op::Write {
            segment_base,
            position: start,
            ..
        }) = run.first()
        else {
            unreachable!("a run starts with a write");
        };
        let (file, path) = {
            let mut st = self.shared.state.borrow_mut();
            let seg = st
                .segment_mut(*segment_base)
                .expect("segment of a pending write exists");
            assert_eq!(seg.written, *start, "writes are contiguous");
            (
                seg.file
                    .clone()
                    .expect("the roll creating the file came first"),
                seg.log_path.clone(),
            )
        };
        let tail_len = self.tail.len() as u64;
        assert_eq!(
            start % BLOCK_BYTES,
            tail_len,
            "tail block matches the write position"
        );
        let aligned_start = start - tail_len;
        let mut total = 0u64;
        let mut next_offset = 0;
        let mut records = 0;
        for op in run {
            if let Op::Write {
                bytes,
                next_offset: n,
                records: r,
                ..
            } = op
            {
                total += bytes.len() as u64;
                next_offset = *n;
                records += r;
            }
        }
        let end = start + total;
        self.unsynced_since.get_or_insert_with(Instant::now);
        let buf_len = align_up(tail_len + total) as usize;
        let mut buf = file.alloc_dma_buffer(buf_len);
        let new_tail;
        debug_assert_eq!(
            buf.as_ptr() as u64 % BLOCK_BYTES,
            0,
            "DMA buffers are block aligned"
        );
        {
            let dst = buf.as_bytes_mut();
            dst[..tail_len as usize].copy_from_slice(&self.tail);
            let mut at = tail_len as usize;
            for op in run {
                if let Op::Write { bytes, .. } = op {
                    dst[at..at + bytes.len()].copy_from_slice(bytes);
                    at += bytes.len();
                }
            }
            dst[at..].fill(0);
            let keep_from = (align_down(end) - aligned_start) as usize;
            new_tail = dst[keep_from..(end - aligned_start) as usize].to_vec();
        }
        let n = file
            .write_at(buf, aligned_start)
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        if n != buf_len {
            // A short direct write to a regular file means the filesystem ran out of blocks.
            return Err(StorageError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("short write: {n} of {buf_len}"),
                ),
            ));
        }
        self.tail = new_tail;
        self.dirty = Some(file);
        self.dirty_base = *segment_base;
        self.unsynced_records += records;
        self.unsynced_bytes += total;
        let mut st = self.shared.state.borrow_mut();
        st.segment_mut(*segment_base)
            .expect("segment exists")
            .written = end;
        st.written_offset = next_offset;
        let budget = self.shared.config.get().tail_cache_bytes;
        st.evict_cache(budget);
        st.waiters.wake_all();
        drop(st);
        // Written bytes are evictable now: keep the core's caches within their bound.
        super::tail_cache::enforce_core_budget();
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(file) = self.dirty.clone() {
            let (written, journal) = {
                let st = self.shared.state.borrow();
                let journal = super::fault_journal::enabled()
                    .then(|| {
                        st.segments
                            .iter()
                            .find(|s| s.base_offset == self.dirty_base)
                    })
                    .flatten()
                    .map(|s| (s.log_path.clone(), s.written));
                (st.written_offset, journal)
            };
            if journal.is_some() {
                if let Some(d) = super::fault_journal::sync_delay() {
                    glommio::timer::sleep(d).await;
                }
            }
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io(&self.shared.dir, e))?;
            // Before the acks it releases: the journal never says less than an ack promised.
            if let Some((path, len)) = journal {
                super::fault_journal::data_synced(&path, len);
            }
            self.dirty = None;
            let mut st = self.shared.state.borrow_mut();
            st.durable_offset = written;
            st.sync_count += 1;
            st.waiters.wake_all();
            let since = self.unsynced_since.take().unwrap_or(self.last_sync);
            crate::metrics::group_commit(self.unsynced_bytes, since.elapsed());
        }
        self.unsynced_records = 0;
        self.unsynced_bytes = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    async fn maybe_sync(&mut self, closing: bool) -> Result<(), StorageError> {
        let config = self.shared.config.get();
        let due = closing
            || config.fsync_before_ack()
            || config
                .flush_interval_messages
                .is_some_and(|n| self.unsynced_records >= n)
            || config
                .flush_interval_ms
                .is_some_and(|ms| self.last_sync.elapsed() >= Duration::from_millis(ms));
        if due {
            self.sync().await?;
        }
        Ok(())
    }

    /// Syncs, truncates to the logical size and writes the index files of the segment at `base`.
    async fn finish_segment(&mut self, base: i64) -> Result<(), StorageError> {
        self.sync().await?;
        let (file, size, path, index, time_index, txn_index, index_path, time_index_path) = {
            let mut st = self.shared.state.borrow_mut();
            let seg = st.segment_mut(base).expect("segment to finish exists");
            (
                seg.file.clone(),
                seg.size,
                seg.log_path.clone(),
                seg.index_bytes(),
                seg.time_index_bytes(),
                seg.txn_index_bytes(),
                seg.index_path(),
                seg.time_index_path(),
            )
        };
        if let Some(file) = file {
            file.truncate(size)
                .await
                .map_err(|e| StorageError::io(&path, e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io(&path, e))?;
            super::fault_journal::data_synced(&path, size);
        }
        write_small_file(&index_path, index).await?;
        write_small_file(&time_index_path, time_index).await?;
        super::write_txn_index(&self.shared, base, txn_index).await?;
        Ok(())
    }

    /// Seals the segment at `old_base` and starts the one at `new_base`. Everything below `new_base` is
    /// synced once the old segment is finished, so the producer snapshot taken at the roll (`snapshot`, the
    /// state at `new_base`) is written then, and `new_base` becomes the recovery point: the sealed
    /// segments' index files and that snapshot describe the log up to it.
    async fn roll(
        &mut self,
        old_base: i64,
        new_base: i64,
        snapshot: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        self.finish_segment(old_base).await?;
        if let Some(seg) = self.shared.state.borrow_mut().segment_mut(old_base) {
            seg.sealed = true;
        }
        let path = self.shared.dir.join(log_file_name(new_base));
        let file = open_segment_file(&path, true).await?;
        let snapshot_path = self.shared.dir.join(snapshot_file_name(new_base));
        if let Some(bytes) = snapshot {
            write_small_file(&snapshot_path, bytes.to_vec()).await?;
        }
        // Make the new directory entries (segment, snapshot) durable (on the blocking pool, once per roll).
        let dir = self.shared.dir.clone();
        super::blocking(move || super::fault_journal::sync_dir(&dir))
            .await
            .map_err(|e| StorageError::io(&self.shared.dir, e))?;
        self.tail.clear();
        {
            let mut st = self.shared.state.borrow_mut();
            st.segment_mut(new_base)
                .expect("rolled-to segment exists")
                .file = Some(Rc::new(file));
            if snapshot.is_some() {
                let at = st.snapshots.partition_point(|&o| o < new_base);
                if st.snapshots.get(at) != Some(&new_base) {
                    st.snapshots.insert(at, new_base);
                }
            }
            if new_base > st.recovery_point {
                st.recovery_point = new_base;
                let s = &self.shared;
                super::checkpoint::set(&s.log_dir, &s.topic, s.partition, Some(new_base));
            }
            st.waiters.wake_all();
        }
        tracing::debug!(segment = %path.display(), "rolled to a new segment");
        super::prune_snapshots(&self.shared).await
    }

    /// Everything queued before this op is written; sync it, then write what describes the log up to
    /// `offset` and advance the recovery point.
    async fn checkpoint(
        &mut self,
        offset: i64,
        segment_base: i64,
        [index, time_index, txn_index]: [&Vec<u8>; 3],
        snapshot: &[u8],
    ) -> Result<(), StorageError> {
        self.sync().await?;
        let (still_active, index_path, time_index_path) = {
            let st = self.shared.state.borrow();
            debug_assert!(st.durable_offset >= offset, "synced through the checkpoint");
            let active = st.active();
            (
                active.base_offset == segment_base && !active.sealed,
                active.index_path(),
                active.time_index_path(),
            )
        };
        // A roll queued before this op wrote complete index files for that segment: keep them.
        // The aborted transactions below `offset` are durable before the recovery point passes them.
        if still_active {
            write_small_file(&index_path, index.to_vec()).await?;
            write_small_file(&time_index_path, time_index.to_vec()).await?;
            super::write_txn_index(&self.shared, segment_base, txn_index.to_vec()).await?;
        }
        super::write_snapshot(&self.shared, offset, snapshot.to_vec()).await?;
        let mut st = self.shared.state.borrow_mut();
        st.recovery_point = st.recovery_point.max(offset);
        st.waiters.wake_all();
        Ok(())
    }

    async fn finish_active(&mut self) -> Result<(), StorageError> {
        let base = self.shared.state.borrow().active().base_offset;
        self.finish_segment(base).await
    }
}
