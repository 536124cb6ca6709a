//! The controller role of core 0: the single writer of the cluster metadata.
//!
//! Admin requests (create/delete topics, partitions, configs) and producer id allocation are forwarded to
//! core 0 by their handlers. Core 0 applies them one at a time, persists the new model, and broadcasts the
//! snapshot to every core before answering, so a client that got an answer sees the change on every core.

use std::cell::{Cell, RefCell};
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
    /// Cluster mode: the next block, taken from ZooKeeper ahead of need (at registration and when the
    /// current block is 90% used), so producers get ids while ZooKeeper is unreachable for a while.
    pid_prefetched: Cell<Option<(i64, i64)>>,
    pid_prefetching: Cell<bool>,
    /// Cluster mode: the ZooKeeper session (`None` on a single broker).
    pub zk: RefCell<Option<Rc<crate::cluster::session::ZkLink>>>,
}

impl Default for ControllerState {
    fn default() -> Self {
        ControllerState {
            admin: Semaphore::new(1),
            pid_next: Cell::new(0),
            pid_block_end: Cell::new(0),
            pid_prefetched: Cell::new(None),
            pid_prefetching: Cell::new(false),
            zk: RefCell::new(None),
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
        let current = self.meta();
        let mut next = (*current).clone();
        let (changed, answer) = change(&mut next);
        if !changed {
            return Ok(answer);
        }
        let zk = self.controller.zk.borrow().clone();
        match zk {
            // Cluster mode: ZooKeeper holds the metadata; the change is written there and comes back
            // through the session's watch, as every broker's does.
            Some(zk) => zk
                .publish(self, &current, &next)
                .await
                .map_err(|e| match e {
                    crate::cluster::session::ZkError::TopicExists(_) => {
                        std::io::Error::new(std::io::ErrorKind::AlreadyExists, e.to_string())
                    }
                    crate::cluster::session::ZkError::NotAppliedInTime => {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string())
                    }
                    e => std::io::Error::other(e.to_string()),
                })?,
            None => self.publish_snapshot(next).await?,
        }
        Ok(answer)
    }

    /// Persists `next` (its version one past the current one) and installs it on every core. Core 0.
    pub async fn publish_snapshot(self: &Rc<Self>, mut next: ClusterMeta) -> std::io::Result<()> {
        assert_eq!(self.id, 0, "metadata changes run on core 0 only");
        next.version = self.meta().version + 1;
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
        Ok(())
    }

    /// Hands out a new producer id. Must run on core 0.
    pub async fn controller_allocate_producer_id(self: &Rc<Self>) -> Result<i64, std::io::Error> {
        assert_eq!(self.id, 0, "producer ids are allocated on core 0 only");
        let zk = self.controller.zk.borrow().clone();
        if let (Some(zk), true) = (
            zk,
            self.controller.pid_next.get() >= self.controller.pid_block_end.get(),
        ) {
            // Cluster mode: blocks come from ZooKeeper's `/latest_producer_id_block`, shared by all brokers.
            let (first, end) = match self.controller.pid_prefetched.take() {
                Some(block) => block,
                None => {
                    let (first, last) = zk
                        .allocate_producer_id_block()
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    (first, last + 1)
                }
            };
            self.controller.pid_next.set(first);
            self.controller.pid_block_end.set(end);
        }
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
        if self.controller.pid_block_end.get() - self.controller.pid_next.get()
            < PRODUCER_ID_BLOCK / 10
        {
            self.prefetch_producer_id_block();
        }
        Ok(id)
    }

    /// Cluster mode: takes the next producer id block from ZooKeeper in the background, unless one is
    /// already held or on its way (Kafka's brokers take a block at start-up too). Core 0.
    pub fn prefetch_producer_id_block(self: &Rc<Self>) {
        assert_eq!(self.id, 0, "producer ids are allocated on core 0 only");
        let Some(zk) = self.controller.zk.borrow().clone() else {
            return;
        };
        if self.controller.pid_prefetched.get().is_some() || self.controller.pid_prefetching.get() {
            return;
        }
        self.controller.pid_prefetching.set(true);
        let shard = self.clone();
        super::spawn_detached(async move {
            match zk.allocate_producer_id_block().await {
                Ok((first, last)) => shard.controller.pid_prefetched.set(Some((first, last + 1))),
                Err(e) => {
                    tracing::warn!(error = %e, "taking a producer id block ahead of need failed")
                }
            }
            shard.controller.pid_prefetching.set(false);
        });
    }
}

/// The ZooKeeper session installs what it reads through core 0's shard.
impl crate::cluster::MetaHost for Shard {
    fn current_meta(&self) -> Arc<ClusterMeta> {
        self.meta()
    }

    async fn install_meta(self: &Rc<Self>, meta: ClusterMeta) {
        // No admin permit: an admin change holds it while it waits for this very install.
        if let Err(e) = self.publish_snapshot(meta).await {
            tracing::error!(error = %e, "persisting the cluster metadata failed");
        }
    }
}
