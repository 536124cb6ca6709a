//! Read-ahead for consumers that read from disk (behind the tail cache): large reads of whole batches,
//! kept per partition as blocks that later fetches are served from as slices, and the next block read in
//! the background while the current one is being sent, so a consumer catching up waits on the disk once
//! per block instead of once per fetch.
//!
//! Memory: every block is charged to its core's read-ahead budget ([`READ_AHEAD_CORE_BYTES_MAX`]) while
//! a partition holds it; past the budget no block is read ahead (a fetch still reads what it needs).
//! Owned by the core that owns the partition.

use std::cell::Cell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{DiskRead, FetchRead, ReadLimit, StorageError};
use crate::records::{self, BatchHeader};

pub use super::limits::{READ_AHEAD_BLOCK_BYTES, READ_AHEAD_CORE_BYTES_MAX};

thread_local! {
    /// Bytes of read-ahead blocks held by the partitions of this core.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Read-ahead bytes held on this core now (metrics, tests).
pub fn held_bytes() -> usize {
    HELD.with(Cell::get)
}

/// Whole batches of one segment file, read at once.
pub(crate) struct Block {
    pub segment_base: i64,
    /// File position of `data[0]`.
    pub pos: u64,
    /// Base offset of the first batch and the offset after the last one.
    pub first_offset: i64,
    pub end_offset: i64,
    pub data: Bytes,
}

impl Block {
    fn new(segment_base: i64, pos: u64, first_offset: i64, end_offset: i64, data: Bytes) -> Block {
        HELD.with(|h| h.set(h.get() + data.len()));
        Block {
            segment_base,
            pos,
            first_offset,
            end_offset,
            data,
        }
    }

    /// File position just past the block.
    pub fn next_pos(&self) -> u64 {
        self.pos + self.data.len() as u64
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - self.data.len()));
    }
}

/// The blocks of one partition: consecutive in one segment file, oldest first.
#[derive(Default)]
pub(crate) struct ReadAhead {
    pub blocks: VecDeque<Block>,
    /// A background read of the block after the last one is under way.
    pub prefetching: bool,
}

impl ReadAhead {
    /// True if the blocks hold the batch with `offset`.
    pub fn covers(&self, offset: i64) -> bool {
        self.blocks
            .front()
            .is_some_and(|b| b.first_offset <= offset)
            && self.blocks.back().is_some_and(|b| offset < b.end_offset)
    }

    /// Serves a fetch from the blocks (call only when [`ReadAhead::covers`] the fetch offset). Blocks
    /// wholly below the fetch offset are dropped: the consumer has moved past them.
    pub fn serve(&mut self, limit: &ReadLimit, max_offset: i64) -> FetchRead {
        while self
            .blocks
            .front()
            .is_some_and(|b| b.end_offset <= limit.fetch_offset)
        {
            self.blocks.pop_front();
        }
        let mut out = FetchRead::default();
        'blocks: for b in &self.blocks {
            let mut at = 0usize;
            let mut run_start = None;
            while let Some(h) = BatchHeader::parse(&b.data[at..]) {
                let size = h.total_size();
                if h.last_offset() < limit.fetch_offset {
                    at += size;
                    continue;
                }
                if h.base_offset >= max_offset || !limit.admits(out.bytes, size, &mut out) {
                    if let Some(s) = run_start {
                        out.chunks.push(b.data.slice(s..at));
                    }
                    break 'blocks;
                }
                run_start.get_or_insert(at);
                out.bytes += size;
                at += size;
                if out.bytes >= limit.max_bytes {
                    if let Some(s) = run_start {
                        out.chunks.push(b.data.slice(s..at));
                    }
                    break 'blocks;
                }
            }
            if let Some(s) = run_start {
                out.chunks.push(b.data.slice(s..at));
            }
        }
        out
    }

    /// Bytes held past `offset` (what the consumer has not read yet).
    pub fn bytes_after(&self, offset: i64) -> usize {
        self.blocks
            .iter()
            .filter(|b| b.end_offset > offset)
            .map(|b| b.data.len())
            .sum()
    }
}

/// True if this core may hold another block of `bytes`.
pub(crate) fn budget_allows(bytes: usize) -> bool {
    held_bytes() + bytes <= READ_AHEAD_CORE_BYTES_MAX
}

/// Reads the whole batches in `[pos, pos + want)` of `d` (at least the first batch whole, whatever its
/// size), copying them once out of the direct-I/O buffer. `None` at the end of the written data.
pub(crate) async fn read_block(
    d: &DiskRead,
    segment_base: i64,
    pos: u64,
    want: usize,
) -> Result<Option<Block>, StorageError> {
    if pos + records::HEADER_BYTES as u64 > d.limit {
        return Ok(None);
    }
    let mut size = (want as u64).min(d.limit - pos) as usize;
    let corrupt = || StorageError::Corrupt {
        path: d.path.clone(),
        position: pos,
    };
    // Two tries at most: the window, then (if the first batch is larger) exactly the first batch.
    for _ in 0..2 {
        let buf = d
            .file
            .read_at(pos, size)
            .await
            .map_err(|e| StorageError::io(&d.path, e))?;
        let mut at = 0usize;
        let mut first_offset = None;
        let mut end_offset = 0;
        let mut first_batch_size = None;
        while let Some(h) = BatchHeader::parse(&buf[at..]) {
            // Offsets must go forward batch by batch: recovery trusts the bytes below the recovery
            // point and behind a loaded index without reading them, so a damaged header is met here.
            let out_of_order = h.last_offset_delta < 0
                || h.base_offset
                    .checked_add(h.last_offset_delta as i64)
                    .is_none()
                || first_offset.is_some() && h.base_offset < end_offset;
            if h.batch_length < records::BATCH_LENGTH_MIN
                || h.magic != records::MAGIC_V2
                || pos + (at + h.total_size()) as u64 > d.limit
                || out_of_order
            {
                return Err(corrupt());
            }
            if at + h.total_size() > buf.len() {
                if at == 0 {
                    first_batch_size = Some(h.total_size());
                }
                break;
            }
            first_offset.get_or_insert(h.base_offset);
            end_offset = h.last_offset() + 1;
            at += h.total_size();
        }
        let Some(first_offset) = first_offset else {
            match first_batch_size {
                Some(n) if n > size => {
                    size = n;
                    continue;
                }
                _ => return Err(corrupt()),
            }
        };
        let mut data = BytesMut::with_capacity(at);
        data.extend_from_slice(&buf[..at]);
        return Ok(Some(Block::new(
            segment_base,
            pos,
            first_offset,
            end_offset,
            data.freeze(),
        )));
    }
    Err(corrupt())
}
