//! A shard is one core's share of the broker: its partitions, its copy of the metadata, and its ends of
//! the cross-core mesh.
//!
//! Cross-core work is a closure sent to the owning core over glommio's channel mesh ([`Shard::invoke_on`]);
//! the answer comes back on a oneshot channel. Every hop is therefore visible at the call site as
//! `shard.invoke_on(owner, move |s| ...)`. There are no locks: a closure runs on its target core with that
//! core's `Rc<Shard>`, and only values that are `Send` (bytes, strings, `Arc` snapshots) cross.

pub mod budget;
pub mod controller;
pub mod mesh;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use mesh::{Receivers, Senders};

use crate::config::Config;
use crate::fetch_session::{self, CacheConfig, FetchSessionCache};
use crate::metadata::{owner_core, ClusterMeta, TopicMeta};
use crate::partition::Partition;
use crate::protocol::errors;

/// Sleeps on this core's timer (the runtime stays behind this module).
pub async fn sleep(d: std::time::Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs `f` as a task of its own on this core; nobody waits for it.
pub fn spawn_detached(f: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(f).detach();
}

/// Work sent to another core: a closure that runs there with that core's shard.
pub type CrossCoreTask = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A task waiting for room in a full mesh channel, with the caller waiting to hear it was sent.
type Backlogged = (
    CrossCoreTask,
    futures::channel::oneshot::Sender<Result<(), String>>,
);

/// Identifies a partition on this broker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// One core's state. Owned by that core; never leaves its thread.
pub struct Shard {
    /// Index of this core among the broker's cores (0-based); core 0 is the controller core.
    pub id: usize,
    /// Number of cores (shards) in the broker.
    pub cores: usize,
    pub config: Arc<Config>,
    /// This core's copy of the cluster metadata. Replaced (never mutated) when core 0 broadcasts.
    meta: RefCell<Arc<ClusterMeta>>,
    /// The partitions this core owns.
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    senders: Senders<CrossCoreTask>,
    /// Per target core: tasks waiting for room in its (full) mesh channel, oldest first, and whether a
    /// task is draining them. See [`Shard::send_task`].
    backlog: RefCell<Vec<VecDeque<Backlogged>>>,
    draining: RefCell<Vec<bool>>,
    /// Set when the broker is shutting down.
    pub stopping: Cell<bool>,
    /// State only core 0 uses (admin operations, producer id allocation).
    pub controller: controller::ControllerState,
    /// The consumer groups this core coordinates (those of its `__consumer_offsets` partitions).
    pub groups: crate::group::coordinator::GroupCoordinator,
    /// The transactional ids this core coordinates (those of its `__transaction_state` partitions).
    pub txns: crate::txn::coordinator::TxnCoordinator,
    /// The fetch sessions (KIP-227) of the connections this core accepted: its share of
    /// `max.incremental.fetch.session.cache.slots`, with session ids from its own range.
    pub fetch_sessions: RefCell<FetchSessionCache>,
    /// Cluster mode: this core's requests to other brokers (set once at start; `net::peer::Peers`).
    peers: std::cell::OnceCell<Rc<dyn crate::cluster::PeerLink>>,
}

/// The group coordinator runs on the shard that owns the group's `__consumer_offsets` partition.
impl crate::group::coordinator::GroupHost for Shard {
    fn groups(&self) -> &crate::group::coordinator::GroupCoordinator {
        &self.groups
    }

    fn group_config(&self) -> &crate::config::GroupConfig {
        &self.config.group
    }

    fn topic_partitions(&self, topic: &str) -> Option<i32> {
        self.topic(topic).map(|t| t.partitions)
    }

    fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        Shard::partition(self, topic, partition)
    }

    fn stopping(&self) -> bool {
        self.stopping.get()
    }

    fn spawn_detached(f: impl Future<Output = ()> + 'static) {
        spawn_detached(f)
    }

    fn sleep(d: std::time::Duration) -> impl Future<Output = ()> {
        sleep(d)
    }
}

impl crate::txn::coordinator::TxnHost for Shard {
    fn txns(&self) -> &crate::txn::coordinator::TxnCoordinator {
        &self.txns
    }

    fn txn_config(&self) -> &crate::config::TxnConfig {
        &self.config.txn
    }

    async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, String> {
        // Cross-core hop: producer ids are allocated by core 0.
        self.invoke_on(0, |s| async move {
            s.controller_allocate_producer_id()
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn write_marker_at(
        self: &Rc<Self>,
        topic: String,
        partition: i32,
        marker: crate::txn::coordinator::Marker,
    ) -> Result<(), i16> {
        let Some(meta) = self.topic(&topic) else {
            return Ok(()); // deleted: nothing to end
        };
        let leader = meta.leader(partition, self.config.node_id);
        if leader != self.config.node_id {
            return self
                .write_marker_remote(leader, &topic, partition, marker)
                .await;
        }
        let owner = self.owner_of(&meta, partition);
        // Cross-core hop to the partition's owner, which appends the marker.
        self.invoke_on(owner, move |s| async move {
            crate::txn::coordinator::write_marker(s, topic, partition, marker).await
        })
        .await
    }
}

impl Shard {
    /// Cluster mode: the partition is led by broker `leader`: the marker goes there as a WriteTxnMarkers
    /// request (Kafka's coordinator-to-leader request). Errors are retriable for the caller: no leader
    /// (-1, offline) or an unknown broker is NOT_LEADER_OR_FOLLOWER, a failed connection
    /// NETWORK_EXCEPTION, otherwise the leader's code.
    async fn write_marker_remote(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
        marker: crate::txn::coordinator::Marker,
    ) -> Result<(), i16> {
        let req = crate::protocol::inter_broker::MarkerRequest {
            topic,
            partition,
            producer_id: marker.producer_id,
            producer_epoch: marker.epoch,
            coordinator_epoch: marker.coordinator_epoch,
            commit: marker.commit,
            transaction_version: marker.transaction_version,
        };
        let (key, version, flexible, body) = req.encode();
        let resp = self.call_peer(leader, key, version, flexible, body).await?;
        match req.result(resp) {
            errors::NONE => Ok(()),
            code => Err(code),
        }
    }

    /// Cluster mode: sends a request (its encoded body) to broker `broker` and returns the answer's
    /// body. Errors are retriable codes: an unknown or offline broker (-1) is NOT_LEADER_OR_FOLLOWER, a
    /// failed exchange NETWORK_EXCEPTION (logged).
    pub async fn call_peer(
        &self,
        broker: i32,
        api_key: i16,
        api_version: i16,
        flexible: bool,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, i16> {
        let meta = self.meta();
        let (Some(b), Some(peers)) = (meta.brokers.get(&broker), self.peers.get()) else {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        };
        let port = u16::try_from(b.port).map_err(|_| errors::NOT_LEADER_OR_FOLLOWER)?;
        peers
            .call(&b.host, port, api_key, api_version, flexible, body)
            .await
            .map_err(|e| {
                tracing::warn!(broker, api_key, error = %e, "request to another broker failed");
                errors::NETWORK_EXCEPTION
            })
    }

    /// Cluster mode: installs this core's link to the other brokers (once, at start).
    pub fn set_peers(&self, peers: Rc<dyn crate::cluster::PeerLink>) {
        let _ = self.peers.set(peers);
    }

    pub fn new(
        id: usize,
        config: Arc<Config>,
        meta: Arc<ClusterMeta>,
        senders: Senders<CrossCoreTask>,
    ) -> Rc<Shard> {
        let fetch_sessions = FetchSessionCache::new(
            CacheConfig {
                max_sessions: config.max_incremental_fetch_session_cache_slots / config.cores,
                eviction_ms: crate::limits::MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS,
                ids: fetch_session::id_range(id, config.cores),
            },
            // Session ids only need to differ between runs and cores (a client's id from before a restart
            // must not name a new session): seed from the OS's randomness once per core.
            uuid::Uuid::new_v4().as_u64_pair().0,
        );
        let cores = config.cores;
        Rc::new(Shard {
            id,
            cores,
            config,
            meta: RefCell::new(meta),
            partitions: RefCell::new(HashMap::new()),
            senders,
            backlog: RefCell::new((0..cores).map(|_| VecDeque::new()).collect()),
            draining: RefCell::new(vec![false; cores]),
            stopping: Cell::new(false),
            controller: controller::ControllerState::default(),
            groups: Default::default(),
            txns: Default::default(),
            fetch_sessions: RefCell::new(fetch_sessions),
            peers: std::cell::OnceCell::new(),
        })
    }

    /// Runs the receive side of the mesh: every closure another core sends runs here as its own task.
    pub fn serve_mesh(self: &Rc<Self>, receivers: Receivers<CrossCoreTask>) {
        for (_peer, rx) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(task) = rx.recv().await {
                    glommio::spawn_local(task(shard.clone())).detach();
                }
            })
            .detach();
        }
    }

    /// Runs `f` on core `target` and returns its answer. On this core it is a plain call; on another core
    /// the closure crosses the mesh, and so does the answer: it travels back as a small task that runs on
    /// this core and hands it over there. So no waker of this core is ever woken from another thread
    /// (glommio's foreign-waker path raced: "Waker invariant broken" panics were seen when answers were
    /// sent on a cross-thread oneshot).
    pub async fn invoke_on<F, Fut, R>(self: &Rc<Self>, target: usize, f: F) -> R
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if target == self.id {
            return f(self.clone()).await;
        }
        crate::metrics::forwarded(target);
        let (tx, rx) = futures::channel::oneshot::channel();
        let caller = self.id;
        let task: CrossCoreTask = Box::new(move |shard| {
            Box::pin(async move {
                let answer = f(shard.clone()).await;
                let reply: CrossCoreTask = Box::new(move |_| {
                    Box::pin(async move {
                        // On the caller's core: a local wake.
                        let _ = tx.send(answer);
                    })
                });
                if let Err(e) = shard.send_task(caller, reply).await {
                    tracing::warn!(from = shard.id, to = caller, error = %e, "cross-core answer not delivered");
                }
            })
        });
        let sent = self.send_task(target, task).await;
        let answer = match sent {
            Ok(()) => rx
                .await
                .map_err(|_| "the task was dropped without answering".to_string()),
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => r,
            Err(e) => {
                // Only when the target core is gone, i.e. during shutdown: this request then never
                // completes (its connection is closing) rather than taking this core down too.
                if self.stopping.get() {
                    tracing::warn!(from = self.id, to = target, error = %e, "cross-core call failed during shutdown");
                } else {
                    tracing::error!(from = self.id, to = target, error = %e, "cross-core call failed");
                }
                std::future::pending().await
            }
        }
    }

    /// Sends a task to core `target` over the mesh, strictly in the order of the calls: tasks that one
    /// core sends to another start there in the order they were sent. Callers rely on it: the requests
    /// of one connection that go to the core owning a group reach it in arrival order, and the group
    /// coordinator applies them in that order (see `group::coordinator`).
    ///
    /// While the target's channel has room, a task goes straight in. When it is full, the task joins this
    /// core's backlog for that target, and one drain task moves the backlog into the channel, oldest
    /// first, as room appears; the caller waits until its task is in the channel (the backpressure is
    /// kept). A later task never overtakes: while a backlog exists, new tasks queue behind it. (Letting
    /// each caller wait on the channel itself would not keep the order: a caller that tries while room
    /// has just appeared would get in ahead of the ones already waiting.)
    async fn send_task(self: &Rc<Self>, target: usize, task: CrossCoreTask) -> Result<(), String> {
        // While the drain task runs it may hold a task popped from the backlog and wait for room: a
        // caller sending straight into the channel then would overtake it.
        let queued = self
            .backlog
            .borrow()
            .get(target)
            .is_some_and(|b| !b.is_empty())
            || self.draining.borrow().get(target).copied().unwrap_or(false);
        let task = if queued {
            task
        } else {
            match self.senders.try_send_to(target, task) {
                Ok(()) => return Ok(()),
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(t))) => t,
                Err(e) => return Err(e.to_string()),
            }
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        match self.backlog.borrow_mut().get_mut(target) {
            Some(b) => b.push_back((task, tx)),
            None => return Err(format!("no core {target}")),
        }
        self.drain_backlog(target);
        rx.await
            .unwrap_or_else(|_| Err("the task was dropped before it was sent".to_string()))
    }

    /// Starts the task that moves the backlog for `target` into its channel, unless one runs.
    fn drain_backlog(self: &Rc<Self>, target: usize) {
        {
            let mut draining = self.draining.borrow_mut();
            match draining.get_mut(target) {
                Some(d) if !*d => *d = true,
                _ => return,
            }
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                let next = shard
                    .backlog
                    .borrow_mut()
                    .get_mut(target)
                    .and_then(|b| b.pop_front());
                let Some((task, tx)) = next else { break };
                let sent = shard
                    .senders
                    .send_to(target, task)
                    .await
                    .map_err(|e| e.to_string());
                let _ = tx.send(sent);
            }
            if let Some(d) = shard.draining.borrow_mut().get_mut(target) {
                *d = false;
            }
        })
        .detach();
    }

    /// This core's current metadata snapshot.
    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicMeta>> {
        self.meta.borrow().topics.get(name).cloned()
    }

    /// The core that owns a partition (the shard table, derived from the snapshot).
    pub fn owner_of(&self, topic: &TopicMeta, partition: i32) -> usize {
        owner_core(&topic.id, partition, self.cores)
    }

    /// A partition this core owns.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        let key = TopicPartition {
            topic: Arc::from(topic),
            partition,
        };
        self.partitions.borrow().get(&key).cloned()
    }

    pub fn owned_partitions(&self) -> Vec<(TopicPartition, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Installs a new snapshot: opens the partitions this core now owns, closes and deletes those whose
    /// topic is gone, and applies changed topic configs.
    pub async fn install_snapshot(self: &Rc<Self>, snapshot: Arc<ClusterMeta>) {
        if snapshot.version < self.meta.borrow().version {
            return; // an older snapshot overtaken by a newer one: already superseded
        }
        let previous = self.meta.replace(snapshot.clone());
        // A deleted (or deleted and recreated) topic's per-topic metrics leave /metrics. Every core runs
        // this: the controller broadcasts each snapshot to every core (`controller_mutate`).
        for (name, t) in &previous.topics {
            if snapshot.topics.get(name).is_none_or(|now| now.id != t.id) {
                crate::metrics::forget_topic(name);
            }
        }

        let node = self.config.node_id;
        // Partitions to drop: topic gone, or recreated with another id, or partition beyond count, or (in
        // cluster mode) no longer assigned to this broker.
        let stale: Vec<(TopicPartition, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, p)| match snapshot.topics.get(&*tp.topic) {
                None => true,
                Some(t) => {
                    t.id != p.topic_id()
                        || tp.partition >= t.partitions
                        || !t.replicas_isr(tp.partition, node).0.contains(&node)
                }
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (tp, p) in stale {
            self.partitions.borrow_mut().remove(&tp);
            if let Err(e) = p.delete().await {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "deleting partition failed");
            }
        }

        let layers = snapshot.broker_layers(self.config.node_id);
        // Cluster mode: a partition another broker leads now (or none does) is closed, not deleted.
        let not_led: Vec<(TopicPartition, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, _)| {
                snapshot
                    .topics
                    .get(&*tp.topic)
                    .is_some_and(|t| t.leader(tp.partition, node) != node)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (tp, p) in not_led {
            self.partitions.borrow_mut().remove(&tp);
            tracing::info!(topic = %tp.topic, partition = tp.partition, "no longer the leader: partition closed");
            if let Err(e) = p.close().await {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "closing partition failed");
            }
        }

        for topic in snapshot.topics.values() {
            for p in 0..topic.partitions {
                if self.owner_of(topic, p) != self.id || topic.leader(p, node) != node {
                    continue;
                }
                let key = TopicPartition {
                    topic: Arc::from(topic.name.as_str()),
                    partition: p,
                };
                let existing = self.partitions.borrow().get(&key).cloned();
                match existing {
                    Some(part) => {
                        part.set_leader_epoch(topic.partition_leader_epoch(p));
                        part.set_log_config(crate::config::log_config(&self.config, &layers, topic))
                    }
                    None => {
                        let cfg = crate::config::log_config(&self.config, &layers, topic);
                        match Partition::open(
                            &self.config.log_dirs,
                            topic.name.as_str(),
                            p,
                            topic.id,
                            self.config.node_id,
                            topic.partition_leader_epoch(p),
                            cfg,
                        )
                        .await
                        {
                            Ok(part) => {
                                self.partitions.borrow_mut().insert(key, part.clone());
                                if topic.name == crate::group::OFFSETS_TOPIC {
                                    // Replay the groups and offsets this core now coordinates.
                                    crate::group::coordinator::load_partition(self, p, part).await;
                                } else if topic.name == crate::txn::TXN_TOPIC {
                                    // Replay the transactional ids this core now coordinates.
                                    crate::txn::coordinator::load_partition(self, p, part).await;
                                }
                            }
                            Err(e) => {
                                tracing::error!(topic = %topic.name, partition = p, error = %e, "opening partition failed");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Flushes and closes every partition this core owns (clean shutdown).
    pub async fn close_all(&self) {
        let parts: Vec<_> = self.partitions.borrow_mut().drain().collect();
        for (tp, p) in parts {
            if let Err(e) = p.close().await {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "closing partition failed");
            }
        }
    }
}
