//! The tail cache: the batches of a partition's latest appends, kept in memory so that consumers at the
//! end of the log are served without touching the disk, and so that bytes not yet written are still
//! readable (they can never be evicted).
//!
//! Two bounds: each partition keeps at most its `tail_cache_bytes`, and the partitions of one core keep at
//! most [`TAIL_CACHE_CORE_BYTES_MAX`] together. When a core is over its bound, written batches are evicted
//! from the partitions read least recently first, until the core is under [`TAIL_CACHE_CORE_EVICT_TO`]
//! of it; the bytes stay readable from disk (with read-ahead).
//!
//! Owned by the core that owns the partitions; the per-core registry and counters are thread-locals of
//! that core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

pub use super::limits::{TAIL_CACHE_CORE_BYTES_MAX, TAIL_CACHE_CORE_EVICT_TO_PERCENT};
use super::{CachedBatch, Shared};

/// What a core evicts down to once over its bound, in bytes.
pub const TAIL_CACHE_CORE_EVICT_TO: usize =
    TAIL_CACHE_CORE_BYTES_MAX / 100 * TAIL_CACHE_CORE_EVICT_TO_PERCENT;

thread_local! {
    /// Bytes in the tail caches of this core's partitions.
    static CORE_BYTES: Cell<usize> = const { Cell::new(0) };
    /// A clock for "read least recently": bumped on every read served from a tail cache.
    static TICK: Cell<u64> = const { Cell::new(0) };
    /// The logs of this core (dead entries are pruned when the core evicts).
    static LOGS: RefCell<Vec<Weak<Shared>>> = const { RefCell::new(Vec::new()) };
}

/// Bytes cached by the tail caches of this core now (metrics, tests).
pub fn core_bytes() -> usize {
    CORE_BYTES.with(Cell::get)
}

/// One partition's tail cache.
#[derive(Default)]
pub(crate) struct TailCache {
    pub batches: VecDeque<CachedBatch>,
    bytes: usize,
    /// [`TICK`] at the last read served from this cache.
    last_read: u64,
}

impl TailCache {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn front(&self) -> Option<&CachedBatch> {
        self.batches.front()
    }

    pub fn extend(&mut self, batches: Vec<CachedBatch>) {
        let n: usize = batches.iter().map(|b| b.bytes.len()).sum();
        self.batches.extend(batches);
        self.add(n);
    }

    pub fn pop_front(&mut self) -> Option<CachedBatch> {
        let b = self.batches.pop_front()?;
        self.sub(b.bytes.len());
        Some(b)
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.sub(self.bytes);
    }

    /// Drops the batches wholly below `offset` (retention, DeleteRecords).
    pub fn drop_below(&mut self, offset: i64) {
        while self.front().is_some_and(|b| b.last_offset < offset) {
            self.pop_front();
        }
    }

    /// Drops written batches (those below `written_offset`) from the front while over `budget`.
    pub fn evict_written(&mut self, budget: usize, written_offset: i64) {
        while self.bytes > budget && self.front().is_some_and(|b| b.last_offset < written_offset) {
            self.pop_front();
        }
    }

    /// Marks the cache as just read (for the core's least-recently-read eviction).
    pub fn touch(&mut self) {
        self.last_read = TICK.with(|t| {
            t.set(t.get() + 1);
            t.get()
        });
    }

    fn add(&mut self, n: usize) {
        self.bytes += n;
        CORE_BYTES.with(|c| c.set(c.get() + n));
    }

    fn sub(&mut self, n: usize) {
        self.bytes -= n;
        CORE_BYTES.with(|c| c.set(c.get() - n));
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        CORE_BYTES.with(|c| c.set(c.get() - self.bytes));
    }
}

/// Adds a log to this core's registry (at open). Entries of closed logs are pruned whenever the registry
/// reaches a power of two, so partitions created and deleted over time (or logs opened again and again,
/// as the storage fuzz target does) do not pile up dead entries, each holding its log's allocation.
pub(crate) fn register(shared: &Rc<Shared>) {
    LOGS.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() >= 64 && l.len().is_power_of_two() {
            l.retain(|w| w.strong_count() > 0);
        }
        l.push(Rc::downgrade(shared));
    });
}

/// If this core's tail caches are over [`TAIL_CACHE_CORE_BYTES_MAX`], evicts written batches from the
/// partitions read least recently until they are under [`TAIL_CACHE_CORE_EVICT_TO`]. Call with no log
/// state borrowed (a borrowed log is skipped).
pub(crate) fn enforce_core_budget() {
    enforce(TAIL_CACHE_CORE_BYTES_MAX, TAIL_CACHE_CORE_EVICT_TO);
}

pub(crate) fn enforce(max: usize, to: usize) {
    if core_bytes() <= max {
        return;
    }
    let mut logs: Vec<(u64, Rc<Shared>)> = LOGS.with(|l| {
        let mut l = l.borrow_mut();
        l.retain(|w| w.strong_count() > 0);
        l.iter()
            .filter_map(Weak::upgrade)
            .filter_map(|s| {
                let last = s.state.try_borrow().ok()?.cache.last_read;
                Some((last, s))
            })
            .collect()
    });
    logs.sort_by_key(|(last, _)| *last);
    for (_, shared) in logs {
        let Ok(mut st) = shared.state.try_borrow_mut() else {
            continue;
        };
        let over = core_bytes().saturating_sub(to);
        if over == 0 {
            break;
        }
        let keep = st.cache.bytes().saturating_sub(over);
        let written = st.written_offset;
        st.cache.evict_written(keep, written);
    }
}
