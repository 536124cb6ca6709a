//! The broker's ZooKeeper session, on the cluster core ([`super::CLUSTER_CORE`]): it registers the broker,
//! keeps a copy of every znode the cluster is described by (one persistent recursive watch on the root
//! keeps it current), turns that copy into the metadata snapshot every core serves from, runs for the
//! controller role, and — while this broker is the controller — writes what [`controller::plan`] asks.
//!
//! Sessions end (expiry after ZooKeeper was unreachable for the session timeout); a new one is opened,
//! the broker registers again and re-reads everything. While ZooKeeper is unreachable the broker keeps
//! serving from the last snapshot.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures::FutureExt;
use uuid::Uuid;
use zookeeper_client as zk;

use super::controller::{self, Action, Model};
use super::layout::{self, Znode};
use super::{MetaHost, ZkConfig};
use crate::metadata::ClusterMeta;

/// Runs the ZooKeeper client's own tasks on the glommio core that uses it.
struct GlommioSpawner;

impl spawns_core::Spawn for GlommioSpawner {
    fn spawn(&self, task: spawns_core::Task) {
        glommio::spawn_local(Box::into_pin(task.future)).detach();
    }
}

static SPAWNER: GlommioSpawner = GlommioSpawner;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// The ZooKeeper side of this broker. Lives on the cluster core only.
pub struct ZkLink {
    cfg: ZkConfig,
    client: RefCell<Option<zk::Client>>,
    /// Every znode the cluster view is built from, by path (chroot-relative).
    znodes: RefCell<BTreeMap<String, Vec<u8>>>,
    /// `(epoch, znode version of /controller_epoch)` while this broker is the controller.
    controller_epoch: Cell<Option<(i32, i32)>>,
    connected: Cell<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("ZooKeeper at {0}: {1}")]
    Zk(String, zk::Error),
    /// ZooKeeper holds another cluster than the one this broker's data belongs to.
    #[error(
        "the cluster ID {found} in ZooKeeper doesn't match the cluster ID {expected} of this broker's data: \
         the broker is trying to join the wrong cluster (check zookeeper.connect and its chroot)"
    )]
    WrongCluster { found: String, expected: String },
    /// A topic to create exists already (created meanwhile through another broker).
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    /// The change is written but the broker's view did not show it applied (the controller elected the
    /// leaders, the deletion went through) within `CLUSTER_ADMIN_WAIT_MS`.
    #[error("the change is in ZooKeeper but the controller has not applied it in time")]
    NotAppliedInTime,
    #[error("{0}")]
    Other(String),
}

impl ZkLink {
    pub fn new(cfg: ZkConfig) -> Rc<ZkLink> {
        // Tasks the client spawns run on this core's executor, for the life of the process.
        std::mem::forget(spawns_core::enter(&SPAWNER));
        Rc::new(ZkLink {
            cfg,
            client: RefCell::new(None),
            znodes: RefCell::new(BTreeMap::new()),
            controller_epoch: Cell::new(None),
            connected: Cell::new(false),
        })
    }

    pub fn is_controller(&self) -> bool {
        self.controller_epoch.get().is_some()
    }

    pub fn connected(&self) -> bool {
        self.connected.get()
    }

    fn err(&self, e: zk::Error) -> ZkError {
        ZkError::Zk(self.cfg.connect.clone(), e)
    }

    fn client(&self) -> Result<zk::Client, ZkError> {
        self.client
            .borrow()
            .clone()
            .ok_or_else(|| ZkError::Other("no ZooKeeper session".into()))
    }

    /// Opens a session, creates the chroot and Kafka's top-level paths, and registers this broker.
    async fn open_session(&self) -> Result<zk::Client, ZkError> {
        let (hosts, chroot) = match self.cfg.connect.find('/') {
            Some(i) => (&self.cfg.connect[..i], &self.cfg.connect[i..]),
            None => (self.cfg.connect.as_str(), ""),
        };
        let root = zk::Client::connector()
            .with_session_timeout(Duration::from_millis(self.cfg.session_timeout_ms))
            .with_connection_timeout(Duration::from_millis(self.cfg.connection_timeout_ms))
            .connect(hosts)
            .await
            .map_err(|e| self.err(e))?;
        let client = if chroot.is_empty() || chroot == "/" {
            root
        } else {
            // Kafka creates a missing chroot itself.
            root.mkdir(chroot, &persistent())
                .await
                .map_err(|e| self.err(e))?;
            root.chroot(chroot.to_string())
                .map_err(|_| ZkError::Other(format!("bad chroot {chroot:?}")))?
        };
        for path in layout::PERSISTENT_PATHS {
            client
                .mkdir(path, &persistent())
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(client)
    }

    /// `/cluster/id`: created by the first broker, read by the others.
    async fn ensure_cluster_id(&self, client: &zk::Client) -> Result<String, ZkError> {
        loop {
            match client.get_data(layout::CLUSTER_ID).await {
                Ok((data, _)) => {
                    return layout::parse_cluster_id(&data)
                        .ok_or_else(|| ZkError::Other("unreadable /cluster/id".into()))
                }
                Err(zk::Error::NoNode) => {
                    client
                        .mkdir("/cluster", &persistent())
                        .await
                        .map_err(|e| self.err(e))?;
                    let id = layout::uuid_string(Uuid::new_v4());
                    match client
                        .create(layout::CLUSTER_ID, &layout::cluster_id(&id), &persistent())
                        .await
                    {
                        Ok(_) | Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// The ephemeral `/brokers/ids/<id>`. The node of this broker's previous session (a crash) lives
    /// until that session expires: wait for it, as long as a session timeout and a little more.
    async fn register(&self, client: &zk::Client) -> Result<(), ZkError> {
        let path = layout::broker_path(self.cfg.node_id);
        let data = layout::broker_registration(
            &self.cfg.listener_name,
            &self.cfg.host,
            self.cfg.port,
            self.cfg.rack.as_deref(),
            now_ms(),
        );
        let deadline =
            Instant::now() + Duration::from_millis(self.cfg.session_timeout_ms * 2 + 5_000);
        let mut warned = false;
        loop {
            match client.create(&path, &data, &ephemeral()).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists) => {
                    let (_, stat) = match client.get_data(&path).await {
                        Ok(d) => d,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(self.err(e)),
                    };
                    if stat.ephemeral_owner == client.session_id().0 {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(ZkError::Other(format!(
                            "broker id {} is registered by another live session (another broker with the same broker.id?)",
                            self.cfg.node_id
                        )));
                    }
                    if !warned {
                        tracing::warn!(
                            broker = self.cfg.node_id,
                            "{path} still held by an earlier session of this broker: waiting for it to expire"
                        );
                        warned = true;
                    }
                    glommio::timer::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Reads every znode the cluster view is built from.
    async fn read_all(&self, client: &zk::Client) -> Result<BTreeMap<String, Vec<u8>>, ZkError> {
        let mut paths = vec![
            layout::CONTROLLER.to_string(),
            layout::CLUSTER_ID.to_string(),
        ];
        for (dir, depth_state) in [
            (layout::BROKER_IDS, false),
            (layout::BROKER_TOPICS, true),
            (layout::CONFIG_TOPICS, false),
            (layout::CONFIG_BROKERS, false),
            (layout::DELETE_TOPICS, false),
        ] {
            let children = match client.list_children(dir).await {
                Ok(c) => c,
                Err(zk::Error::NoNode) => Vec::new(),
                Err(e) => return Err(self.err(e)),
            };
            for c in children {
                if depth_state {
                    let parts = match client.list_children(&layout::partitions_path(&c)).await {
                        Ok(p) => p,
                        Err(zk::Error::NoNode) => Vec::new(),
                        Err(e) => return Err(self.err(e)),
                    };
                    for p in parts.iter().filter_map(|p| p.parse::<i32>().ok()) {
                        paths.push(layout::state_path(&c, p));
                    }
                }
                paths.push(format!("{dir}/{c}"));
            }
        }
        let reads = paths.iter().map(|p| client.get_data(p));
        let results = futures::future::join_all(reads).await;
        let mut out = BTreeMap::new();
        for (path, r) in paths.into_iter().zip(results) {
            match r {
                Ok((data, _)) => {
                    out.insert(path, data);
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(out)
    }

    /// Applies one watch event to the copy of the znodes.
    async fn apply_event(&self, client: &zk::Client, ev: &zk::WatchedEvent) -> Result<(), ZkError> {
        if Znode::parse(&ev.path).is_none() && ev.event_type != zk::EventType::NodeDeleted {
            return Ok(());
        }
        match ev.event_type {
            zk::EventType::NodeDeleted => {
                let prefix = format!("{}/", ev.path);
                self.znodes
                    .borrow_mut()
                    .retain(|p, _| p != &ev.path && !p.starts_with(&prefix));
            }
            zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
                match client.get_data(&ev.path).await {
                    Ok((data, _)) => {
                        self.znodes.borrow_mut().insert(ev.path.clone(), data);
                    }
                    Err(zk::Error::NoNode) => {
                        self.znodes.borrow_mut().remove(&ev.path);
                    }
                    Err(e) => return Err(self.err(e)),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn model(&self) -> Model {
        Model::from_znodes(self.znodes.borrow().iter())
    }

    /// Tries to become the controller (the ephemeral `/controller`); on success bumps `/controller_epoch`.
    async fn try_elect(&self, client: &zk::Client) -> Result<(), ZkError> {
        let data = layout::controller(self.cfg.node_id, now_ms());
        match client.create(layout::CONTROLLER, &data, &ephemeral()).await {
            Ok(_) => {}
            Err(zk::Error::NodeExists) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        }
        loop {
            match client.get_data(layout::CONTROLLER_EPOCH).await {
                Ok((data, stat)) => {
                    let epoch = layout::parse_controller_epoch(&data).unwrap_or(0) + 1;
                    match client
                        .set_data(
                            layout::CONTROLLER_EPOCH,
                            epoch.to_string().as_bytes(),
                            Some(stat.version),
                        )
                        .await
                    {
                        Ok(stat) => {
                            self.controller_epoch.set(Some((epoch, stat.version)));
                            tracing::info!(
                                broker = self.cfg.node_id,
                                controller_epoch = epoch,
                                "this broker is now the controller"
                            );
                            return Ok(());
                        }
                        Err(zk::Error::BadVersion) => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Err(zk::Error::NoNode) => {
                    match client
                        .create(layout::CONTROLLER_EPOCH, b"0", &persistent())
                        .await
                    {
                        Ok(_) | Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    fn resign(&self, why: &str) {
        if self.controller_epoch.take().is_some() {
            tracing::warn!(
                broker = self.cfg.node_id,
                why,
                "this broker is no longer the controller"
            );
        }
    }

    /// Writes the controller's actions, each fenced by the controller epoch's znode version.
    async fn execute(&self, client: &zk::Client, actions: Vec<Action>) -> Result<(), ZkError> {
        for action in actions {
            let Some((_, epoch_version)) = self.controller_epoch.get() else {
                return Ok(());
            };
            let mut w = client
                .new_check_writer(layout::CONTROLLER_EPOCH, Some(epoch_version))
                .map_err(|e| self.err(e))?;
            match &action {
                Action::WriteState {
                    topic,
                    partition,
                    state,
                    create,
                } => {
                    let data = layout::partition_state(state);
                    if *create {
                        client
                            .mkdir(&layout::partition_path(topic, *partition), &persistent())
                            .await
                            .map_err(|e| self.err(e))?;
                        w.add_create(&layout::state_path(topic, *partition), &data, &persistent())
                    } else {
                        w.add_set_data(&layout::state_path(topic, *partition), &data, None)
                    }
                }
                Action::SetTopicId {
                    topic,
                    id,
                    replicas,
                } => w.add_set_data(
                    &layout::topic_path(topic),
                    &layout::topic_assignment(*id, replicas),
                    None,
                ),
                Action::DeleteTopic { .. } => Ok(()),
            }
            .map_err(|e| self.err(e))?;
            match w.commit().await {
                Ok(_) => {}
                Err(zk::CheckWriteError::CheckFailed { .. }) => {
                    self.resign("the controller epoch moved on (another broker is controller)");
                    return Ok(());
                }
                // A state created meanwhile, or a topic deleted meanwhile: the next plan sees it.
                Err(zk::CheckWriteError::OperationFailed {
                    source: zk::Error::NodeExists | zk::Error::NoNode,
                    ..
                }) => {}
                Err(e) => return Err(ZkError::Other(format!("controller write failed: {e}"))),
            }
            // Write-through: the view shows the controller's own writes before their watch events
            // come back, so the next plan does not write them again.
            match &action {
                Action::WriteState {
                    topic,
                    partition,
                    state,
                    ..
                } => {
                    self.znodes.borrow_mut().insert(
                        layout::state_path(topic, *partition),
                        layout::partition_state(state),
                    );
                }
                Action::SetTopicId {
                    topic,
                    id,
                    replicas,
                } => {
                    self.znodes.borrow_mut().insert(
                        layout::topic_path(topic),
                        layout::topic_assignment(*id, replicas),
                    );
                }
                Action::DeleteTopic { topic, partitions } => {
                    self.delete_topic_znodes(client, topic, *partitions).await?;
                    let prefix = format!("{}/", layout::topic_path(topic));
                    self.znodes.borrow_mut().retain(|p, _| {
                        p != &layout::topic_path(topic)
                            && !p.starts_with(&prefix)
                            && p != &layout::topic_config_path(topic)
                            && p != &layout::delete_topic_path(topic)
                    });
                    tracing::info!(topic, "controller deleted topic");
                }
            }
        }
        Ok(())
    }

    async fn delete_topic_znodes(
        &self,
        client: &zk::Client,
        topic: &str,
        partitions: i32,
    ) -> Result<(), ZkError> {
        let mut paths = Vec::new();
        for p in 0..partitions {
            paths.push(layout::state_path(topic, p));
            paths.push(layout::partition_path(topic, p));
        }
        paths.push(layout::partitions_path(topic));
        paths.push(layout::topic_path(topic));
        paths.push(layout::topic_config_path(topic));
        paths.push(layout::delete_topic_path(topic));
        for path in paths {
            match client.delete(&path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Builds the snapshot from the znodes and installs it on every core when it differs from the one
    /// they hold; then, as controller, plans and writes.
    async fn converge<H: MetaHost>(
        &self,
        host: &Rc<H>,
        client: &zk::Client,
    ) -> Result<(), ZkError> {
        let model = self.model();
        if self.is_controller() && model.controller.is_some_and(|c| c != self.cfg.node_id) {
            self.resign("/controller names another broker");
        }
        if model.controller.is_none() {
            self.try_elect(client).await?;
        }
        let current = host.current_meta();
        let next = model.to_meta(&current);
        if !same_view(&current, &next) {
            tracing::debug!(version = current.version + 1, "installing a new view");
            host.install_meta(next).await;
            tracing::debug!("view installed");
        }
        if let Some((epoch, _)) = self.controller_epoch.get() {
            let actions = controller::plan(&model, epoch, Uuid::new_v4);
            if !actions.is_empty() {
                tracing::debug!(actions = actions.len(), "controller writes");
                self.execute(client, actions).await?;
            }
        }
        Ok(())
    }

    /// One session from open to expiry. Returns when the session ended (then a new one is opened).
    async fn session<H: MetaHost>(
        &self,
        host: &Rc<H>,
        first: &mut Option<futures::channel::oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), ZkError> {
        let client = self.open_session().await?;
        let cluster_id = self.ensure_cluster_id(&client).await?;
        if let Some(expected) = self.cfg.expected_cluster_id.as_deref() {
            if expected != cluster_id {
                return Err(ZkError::WrongCluster {
                    found: cluster_id,
                    expected: expected.to_string(),
                });
            }
        }
        // Watch before reading, so that no change between the read and the watch is missed.
        let mut watcher = client
            .watch("/", zk::AddWatchMode::PersistentRecursive)
            .await
            .map_err(|e| self.err(e))?;
        let mut states = client.state_watcher();
        self.register(&client).await?;
        *self.client.borrow_mut() = Some(client.clone());
        self.connected.set(true);
        *self.znodes.borrow_mut() = self.read_all(&client).await?;
        self.converge(host, &client).await?;
        tracing::info!(
            broker = self.cfg.node_id,
            cluster_id,
            zookeeper = %self.cfg.connect,
            brokers = host.current_meta().brokers.len(),
            controller = ?host.current_meta().controller_id,
            "registered in ZooKeeper"
        );
        if let Some(tx) = first.take() {
            let _ = tx.send(Ok(()));
        }
        let mut resync = false;
        loop {
            let first = {
                let a = Box::pin(watcher.changed());
                let b = Box::pin(states.changed());
                match select(a, b).await {
                    Either::Left((ev, _)) => session_or_node(ev),
                    Either::Right((st, _)) => Either::Right(st),
                }
            };
            // Changes come one znode at a time (a topic is one per partition): take every event that
            // is already there before rebuilding the view, up to the first session change (after a
            // terminal one the watcher must not be polled again: zookeeper-client panics).
            let mut batch = vec![first];
            while matches!(batch.last(), Some(Either::Left(_)))
                && batch.len() < crate::limits::ZK_EVENT_BATCH_MAX
            {
                match watcher.changed().now_or_never() {
                    Some(ev) => batch.push(session_or_node(ev)),
                    None => break,
                }
            }
            let mut changed = false;
            for event in batch {
                match event {
                    Either::Left(ev) => {
                        tracing::debug!(path = %ev.path, kind = ?ev.event_type, "ZooKeeper event");
                        self.apply_event(&client, &ev).await?;
                        changed = true;
                    }
                    Either::Right(zk::SessionState::Expired) => {
                        self.connected.set(false);
                        self.resign("ZooKeeper session expired");
                        tracing::error!(
                            zookeeper = %self.cfg.connect,
                            "ZooKeeper session expired: opening a new one (serving from the last view meanwhile)"
                        );
                        return Ok(());
                    }
                    Either::Right(zk::SessionState::Disconnected) => {
                        if self.connected.replace(false) {
                            tracing::warn!(
                                zookeeper = %self.cfg.connect,
                                "lost the connection to ZooKeeper: serving from the last view while reconnecting"
                            );
                        }
                        resync = true;
                    }
                    Either::Right(zk::SessionState::SyncConnected) => {
                        if !self.connected.replace(true) {
                            tracing::info!(zookeeper = %self.cfg.connect, "reconnected to ZooKeeper");
                        }
                        if resync {
                            // Changes made while disconnected may not all come as events: read again.
                            *self.znodes.borrow_mut() = self.read_all(&client).await?;
                            resync = false;
                        }
                        changed = true;
                    }
                    Either::Right(other) => {
                        if other.is_terminated() {
                            self.connected.set(false);
                            self.resign("ZooKeeper session ended");
                            return Err(ZkError::Other(format!(
                                "ZooKeeper session ended: {other}"
                            )));
                        }
                    }
                }
            }
            if changed {
                self.converge(host, &client).await?;
            }
        }
    }

    /// Ends the session (clean shutdown): ZooKeeper deletes this broker's ephemeral znodes at once.
    /// Waits for the close to be acknowledged, at most [`limits::ZK_CLOSE_WAIT_MS`]. The session task
    /// must have been stopped first (it holds the client too).
    pub async fn close(&self) {
        let Some(client) = self.client.borrow_mut().take() else {
            return;
        };
        self.connected.set(false);
        let mut states = client.state_watcher();
        drop(client);
        let closed = Box::pin(async move { while !states.changed().await.is_terminated() {} });
        let timeout = Box::pin(glommio::timer::sleep(Duration::from_millis(
            crate::limits::ZK_CLOSE_WAIT_MS,
        )));
        if let Either::Right(_) = select(closed, timeout).await {
            tracing::warn!(zookeeper = %self.cfg.connect, "ZooKeeper did not acknowledge the session close in time");
        } else {
            tracing::info!(zookeeper = %self.cfg.connect, "ZooKeeper session closed");
        }
    }

    /// Runs sessions for the life of the broker. The first successful registration is reported on
    /// `first`; a failure before it (ZooKeeper unreachable within the connection timeout) too.
    pub async fn run<H: MetaHost>(
        self: Rc<Self>,
        host: Rc<H>,
        first: futures::channel::oneshot::Sender<Result<(), String>>,
    ) {
        let mut first = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&host, &mut first).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    self.connected.set(false);
                    self.resign("ZooKeeper error");
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                    tracing::error!(error = %e, "cannot reach ZooKeeper; retrying");
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            *self.client.borrow_mut() = None;
        }
    }

    /// Writes an admin change (the difference between `old` and `new`) to ZooKeeper as Kafka's admin
    /// paths do, then waits until this broker's view shows it.
    pub async fn publish<H: MetaHost>(
        &self,
        host: &Rc<H>,
        old: &ClusterMeta,
        new: &ClusterMeta,
    ) -> Result<(), ZkError> {
        let client = self.client()?;
        let mut changes = Vec::new();
        for (name, t) in &new.topics {
            match old.topics.get(name) {
                None => {
                    let start = (Uuid::new_v4().as_u128() % 1024) as usize;
                    // CreateTopics' manual assignment, else spread over the live brokers.
                    let replicas = if t.assignment.is_empty() {
                        controller::assign(&old.brokers, 0, t.partitions, 1, start)
                    } else {
                        t.assignment.iter().map(|a| a.replicas.clone()).collect()
                    };
                    if replicas.is_empty() {
                        return Err(ZkError::Other("no live brokers".into()));
                    }
                    self.set_config(&client, &layout::topic_config_path(name), &t.configs)
                        .await?;
                    match client
                        .create(
                            &layout::topic_path(name),
                            &layout::topic_assignment(t.id, &replicas),
                            &persistent(),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(zk::Error::NodeExists) => {
                            return Err(ZkError::TopicExists(name.clone()))
                        }
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Some(o) => {
                    if o.partitions < t.partitions {
                        let mut replicas: Vec<Vec<i32>> =
                            o.assignment.iter().map(|a| a.replicas.clone()).collect();
                        let start = (Uuid::new_v4().as_u128() % 1024) as usize;
                        replicas.extend(controller::assign(
                            &old.brokers,
                            o.partitions,
                            t.partitions - o.partitions,
                            1,
                            start,
                        ));
                        client
                            .set_data(
                                &layout::topic_path(name),
                                &layout::topic_assignment(o.id, &replicas),
                                None,
                            )
                            .await
                            .map_err(|e| self.err(e))?;
                    }
                    if o.configs != t.configs {
                        self.set_config(&client, &layout::topic_config_path(name), &t.configs)
                            .await?;
                        changes.push(format!("topics/{name}"));
                    }
                }
            }
        }
        for name in old.topics.keys().filter(|n| !new.topics.contains_key(*n)) {
            match client
                .create(&layout::delete_topic_path(name), &[], &persistent())
                .await
            {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        let entities: std::collections::BTreeSet<i32> = old
            .broker_configs
            .keys()
            .chain(new.broker_configs.keys())
            .copied()
            .collect();
        for id in entities {
            let (o, n) = (old.broker_configs.get(&id), new.broker_configs.get(&id));
            if o != n {
                let entity = id.to_string();
                self.set_config(
                    &client,
                    &layout::broker_config_path(&entity),
                    &n.cloned().unwrap_or_default(),
                )
                .await?;
                changes.push(format!("brokers/{entity}"));
            }
        }
        if old.default_broker_configs != new.default_broker_configs {
            self.set_config(
                &client,
                &layout::broker_config_path(layout::DEFAULT_BROKER_ENTITY),
                &new.default_broker_configs,
            )
            .await?;
            changes.push(format!("brokers/{}", layout::DEFAULT_BROKER_ENTITY));
        }
        for entity in changes {
            client
                .create(
                    &format!("{}/config_change_", layout::CONFIG_CHANGES),
                    &layout::config_change(&entity),
                    &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all()),
                )
                .await
                .map_err(|e| self.err(e))?;
        }
        // Wait until the watch brought the change back into this broker's view.
        let deadline = Instant::now() + Duration::from_millis(crate::limits::CLUSTER_ADMIN_WAIT_MS);
        loop {
            let now = host.current_meta();
            if reflects(&now, old, new) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ZkError::NotAppliedInTime);
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn set_config(
        &self,
        client: &zk::Client,
        path: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ZkError> {
        let data = layout::config_znode(configs);
        match client.set_data(path, &data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => match client.create(path, &data, &persistent()).await {
                Ok(_) => Ok(()),
                Err(zk::Error::NodeExists) => client
                    .set_data(path, &data, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err(e)),
                Err(e) => Err(self.err(e)),
            },
            Err(e) => Err(self.err(e)),
        }
    }

    /// A block of producer ids from `/latest_producer_id_block`, as Kafka's brokers take them:
    /// `(first, last)`, claimed with a conditional write.
    pub async fn allocate_producer_id_block(&self) -> Result<(i64, i64), ZkError> {
        let client = self.client()?;
        loop {
            let (data, stat) = client
                .get_data(layout::PRODUCER_ID_BLOCK)
                .await
                .map_err(|e| self.err(e))?;
            let first = layout::parse_producer_id_block_end(&data).map_or(0, |end| end + 1);
            let last = first + layout::PRODUCER_ID_BLOCK_SIZE - 1;
            match client
                .set_data(
                    layout::PRODUCER_ID_BLOCK,
                    &layout::producer_id_block(self.cfg.node_id, first, last),
                    Some(stat.version),
                )
                .await
            {
                Ok(_) => return Ok((first, last)),
                Err(zk::Error::BadVersion) => continue,
                Err(e) => return Err(self.err(e)),
            }
        }
    }
}

/// Whether two snapshots describe the same cluster (the version aside).
/// A watch event: a znode's (left), or the session's, which the client also tells every watcher (right).
fn session_or_node(ev: zk::WatchedEvent) -> Either<zk::WatchedEvent, zk::SessionState> {
    if ev.event_type == zk::EventType::Session {
        Either::Right(ev.session_state)
    } else {
        Either::Left(ev)
    }
}

fn same_view(a: &ClusterMeta, b: &ClusterMeta) -> bool {
    a.cluster_id == b.cluster_id
        && a.controller_id == b.controller_id
        && a.brokers == b.brokers
        && a.broker_configs == b.broker_configs
        && a.default_broker_configs == b.default_broker_configs
        && a.topics.len() == b.topics.len()
        && a.topics
            .iter()
            .all(|(k, v)| b.topics.get(k).is_some_and(|w| **w == **v))
}

/// Whether `now` shows every change from `old` to `new` that an admin request made.
fn reflects(now: &ClusterMeta, old: &ClusterMeta, new: &ClusterMeta) -> bool {
    let topics_ok = new.topics.iter().all(|(name, t)| {
        let Some(n) = now.topics.get(name) else {
            return false;
        };
        let created = old.topics.get(name).is_none_or(|o| o.id != t.id);
        (!created || (n.id == t.id && n.assignment.iter().all(|a| a.leader >= 0)))
            && n.partitions >= t.partitions
            && n.configs == t.configs
    });
    let deleted_ok = old
        .topics
        .keys()
        .filter(|k| !new.topics.contains_key(*k))
        .all(|k| !now.topics.contains_key(k));
    topics_ok
        && deleted_ok
        && now.broker_configs == new.broker_configs
        && now.default_broker_configs == new.default_broker_configs
}
