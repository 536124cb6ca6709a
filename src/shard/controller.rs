//! The controller role of core 0: the single writer of the cluster metadata.
//!
//! Admin requests (create/delete topics, partitions, configs) and producer id allocation are forwarded to
//! core 0 by their handlers. Core 0 applies them one at a time, persists the new model, and broadcasts the
//! snapshot to every core before answering, so a client that got an answer sees the change on every core.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use super::Shard;
use crate::metadata::ClusterMeta;

/// Producer ids are reserved in blocks; the block end is persisted before any id of it is handed out,
/// so an id is never handed out twice across restarts.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// State of the controller role. Only core 0's instance is used.
pub struct ControllerState {
    /// Serializes metadata changes (one at a time on core 0).
    admin: Semaphore,
    pid_next: Cell<i64>,
    pid_block_end: Cell<i64>,
}

impl Default for ControllerState {
    fn default() -> Self {
        ControllerState {
            admin: Semaphore::new(1),
            pid_next: Cell::new(0),
            pid_block_end: Cell::new(0),
        }
    }
}

impl Shard {
    /// Applies `change` to a copy of the metadata on core 0, persists it, and installs it on every core.
    /// `change` returns `(changed, answer)`; when nothing changed nothing is written.
    /// Must run on core 0.
    pub async fn controller_mutate<R>(
        self: &Rc<Self>,
        change: impl FnOnce(&mut ClusterMeta) -> (bool, R),
    ) -> Result<R, std::io::Error> {
        assert_eq!(self.id, 0, "metadata changes run on core 0 only");
        let _permit = self
            .controller
            .admin
            .acquire_permit(1)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut next = (*self.meta()).clone();
        let (changed, answer) = change(&mut next);
        if !changed {
            return Ok(answer);
        }
        next.version += 1;
        let snapshot = Arc::new(next);
        // Durable before any core sees it; written and fsynced on the blocking pool, so core 0's
        // connections are not stalled by the fsyncs.
        let (snap, dir) = (snapshot.clone(), self.config.log_dirs.clone());
        crate::storage::blocking(move || snap.persist(&dir)).await?;
        let mut installs = Vec::with_capacity(self.cores);
        for core in 0..self.cores {
            let snap = snapshot.clone();
            // Cross-core hop: every core installs the snapshot and opens/closes its partitions.
            installs
                .push(self.invoke_on(core, move |s| async move { s.install_snapshot(snap).await }));
        }
        futures::future::join_all(installs).await;
        Ok(answer)
    }

    /// Hands out a new producer id. Must run on core 0.
    pub async fn controller_allocate_producer_id(self: &Rc<Self>) -> Result<i64, std::io::Error> {
        assert_eq!(self.id, 0, "producer ids are allocated on core 0 only");
        if self.controller.pid_next.get() >= self.controller.pid_block_end.get() {
            let start = self
                .controller_mutate(|m| {
                    let start = m.next_producer_id_block;
                    m.next_producer_id_block = start + PRODUCER_ID_BLOCK;
                    (true, start)
                })
                .await?;
            self.controller.pid_next.set(start);
            self.controller.pid_block_end.set(start + PRODUCER_ID_BLOCK);
        }
        let id = self.controller.pid_next.get();
        self.controller.pid_next.set(id + 1);
        Ok(id)
    }
}
