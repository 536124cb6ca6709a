//! The read path: whole batches from the tail cache or from disk (with read-ahead), within a fetch's
//! limits, and the windows of file bytes the scans use.

use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::DmaFile;

use super::*;

/// A plan for reading one segment from disk, taken while the state is borrowed.
pub(crate) struct DiskRead {
    pub segment_base: i64,
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    pub start: u64,
    pub limit: u64,
}

impl PartitionLog {
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
        let (plan, swaps) = {
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
            let plan = st
                .segments_from(fetch_offset)
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
                .collect::<Vec<_>>();
            (plan, st.swaps)
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
                        && st.swaps == swaps
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
pub(super) fn read_cache(st: &State, limit: &ReadLimit, max_offset: i64) -> FetchRead {
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
    pub(super) fn covers(&self, pos: u64, len: usize) -> bool {
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
pub(crate) async fn header_at(
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
