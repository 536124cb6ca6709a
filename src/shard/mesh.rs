//! The full mesh of bounded channels between the cores: one glommio shared channel per ordered pair.
//!
//! Built from `glommio::channels::shared_channel` rather than glommio's `channel_mesh`: its
//! `MeshBuilder` keeps an `Rc` that every core clones and drops at start-up, on its own thread (the
//! builder is declared `Send` unsafely). Those unsynchronized reference counts corrupted the heap or lost
//! the join notification: about one start in fifty under the crash harness either hung forever before
//! any partition was recovered or aborted with "malloc(): unaligned tcache chunk detected" (seen
//! 2026-12-01 with gdb: both executors parked in io_uring, nothing left to run). Here the channels are
//! created on the main thread and each end is moved (never cloned) to the one core that uses it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

type Ends<T> = (Vec<Option<SharedSender<T>>>, Vec<Option<SharedReceiver<T>>>);

/// The unconnected channels of every core, handed out once per core.
pub struct Mesh<T: Send + 'static> {
    cores: usize,
    next: AtomicUsize,
    /// Per core: its senders (indexed by target) and receivers (indexed by source).
    ends: Mutex<Vec<Option<Ends<T>>>>,
}

impl<T: Send + 'static> Mesh<T> {
    /// Creates the `cores * (cores - 1)` channels of `capacity` items each. Call on the main thread.
    pub fn new(cores: usize, capacity: usize) -> Arc<Mesh<T>> {
        let mut senders: Vec<Vec<Option<SharedSender<T>>>> = (0..cores)
            .map(|_| (0..cores).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<Option<SharedReceiver<T>>>> = (0..cores)
            .map(|_| (0..cores).map(|_| None).collect())
            .collect();
        for (from, row) in senders.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(capacity);
                    *slot = Some(tx);
                    receivers[to][from] = Some(rx);
                }
            }
        }
        let ends = senders.into_iter().zip(receivers).map(Some).collect();
        Arc::new(Mesh {
            cores,
            next: AtomicUsize::new(0),
            ends: Mutex::new(ends),
        })
    }

    /// On a core's executor: takes the next core id and connects that core's ends (resolves once every
    /// peer has connected its side).
    pub async fn join(&self) -> Result<(Senders<T>, Receivers<T>), String> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (senders, receivers) = self
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
            .and_then(Option::take)
            .ok_or_else(|| format!("core {id} joined a mesh of {} cores", self.cores))?;
        // Connect every end concurrently: a sender's connect waits for its receiver's core and the other
        // way round, so one at a time could deadlock two cores connecting in opposite orders.
        let senders: Vec<_> = senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect()).detach()))
            .collect();
        let receivers: Vec<_> = receivers
            .into_iter()
            .map(|r| r.map(|r| glommio::spawn_local(r.connect()).detach()))
            .collect();
        let mut out_tx = Vec::with_capacity(self.cores);
        for s in senders {
            out_tx.push(match s {
                Some(task) => Some(task.await.ok_or("mesh sender connect cancelled")?),
                None => None,
            });
        }
        let mut out_rx = Vec::with_capacity(self.cores);
        for (from, r) in receivers.into_iter().enumerate() {
            if let Some(task) = r {
                out_rx.push((from, task.await.ok_or("mesh receiver connect cancelled")?));
            }
        }
        Ok((Senders { id, to: out_tx }, Receivers { from: out_rx }))
    }
}

/// One core's sending ends, by target core.
pub struct Senders<T: Send + 'static> {
    id: usize,
    to: Vec<Option<ConnectedSender<T>>>,
}

impl<T: Send + 'static> Senders<T> {
    /// This core's id (0..cores).
    pub fn peer_id(&self) -> usize {
        self.id
    }

    fn end(&self, target: usize) -> Result<&ConnectedSender<T>, glommio::GlommioError<T>> {
        self.to.get(target).and_then(Option::as_ref).ok_or_else(|| {
            glommio::GlommioError::IoError(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no mesh channel from core {} to core {target}", self.id),
            ))
        })
    }

    /// Sends without waiting: `WouldBlock` when the channel is full.
    pub fn try_send_to(&self, target: usize, item: T) -> Result<(), glommio::GlommioError<T>> {
        self.end(target)?.try_send(item)
    }

    /// Sends, waiting for room. Only one task per target may wait here at a time (see
    /// `Shard::send_task`).
    pub async fn send_to(&self, target: usize, item: T) -> Result<(), glommio::GlommioError<T>> {
        self.end(target)?.send(item).await
    }
}

/// One core's receiving ends, with the source core of each.
pub struct Receivers<T: Send + 'static> {
    from: Vec<(usize, ConnectedReceiver<T>)>,
}

impl<T: Send + 'static> Receivers<T> {
    pub fn streams(self) -> Vec<(usize, ConnectedReceiver<T>)> {
        self.from
    }
}
