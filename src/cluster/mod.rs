//! Cluster mode (issue 14): several brokers coordinated by ZooKeeper in Kafka 2.x's layout.
//!
//! With `zookeeper.connect` set, the cluster core ([`CLUSTER_CORE`]) holds the broker's ZooKeeper
//! session ([`session::ZkLink`]): the broker registers in `/brokers/ids`, every broker builds its
//! metadata snapshot from what ZooKeeper holds (topics, partition leaders, configs, live brokers) and
//! installs it on every core as a single broker installs its own, and one broker — the one that holds
//! `/controller` — elects partition leaders and deletes topics ([`controller`], IO-free). Brokers learn
//! what to lead from the partition state znodes the controller writes (instead of Kafka's
//! LeaderAndIsr/UpdateMetadata requests): ZooKeeper is the one channel between controller and brokers,
//! and every controller write is fenced by the controller epoch's znode version.
//!
//! Admin requests change the metadata as on a single broker (`Shard::controller_mutate` on core 0);
//! in cluster mode the difference is written to ZooKeeper as Kafka's admin paths write it
//! ([`session::ZkLink::publish`]) and answered once the broker's own view shows it.
//!
//! Without `zookeeper.connect` none of this runs and the broker is the single-node broker it always was.

pub mod controller;
pub mod layout;
pub mod session;

use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::ClusterMeta;

/// The core that holds the ZooKeeper session and, when this broker is the controller, the controller.
/// Core 0, which also serializes metadata changes (`shard::controller`).
pub const CLUSTER_CORE: usize = 0;

/// The cluster settings (`zookeeper.*`, `broker.rack`) and this broker's advertised address.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `zookeeper.connect`: `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// `zookeeper.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `zookeeper.connection.timeout.ms`.
    pub connection_timeout_ms: u64,
    pub node_id: i32,
    pub rack: Option<String>,
    pub listener_name: String,
    pub host: String,
    pub port: u16,
    /// The cluster this broker's data belongs to (its persisted view's cluster id when it holds topics):
    /// a ZooKeeper whose `/cluster/id` differs is another cluster, and joining it would delete that data
    /// as stale, so the broker refuses it (Kafka's InconsistentClusterIdException).
    pub expected_cluster_id: Option<String>,
}

/// What the session needs from the broker: the snapshot every core serves from, and installing a new
/// one on every core. Implemented by the shard of [`CLUSTER_CORE`].
pub trait MetaHost {
    fn current_meta(&self) -> Arc<ClusterMeta>;
    fn install_meta(self: &Rc<Self>, meta: ClusterMeta) -> impl std::future::Future<Output = ()>;
}

/// Requests to another broker of the cluster (Kafka's inter-broker channel), implemented by
/// `net::peer::Peers` on every core: `body` is the request body encoded at `api_version`, the answer
/// the response body (headers are the link's). `flexible`: the version uses Kafka's flexible headers.
pub trait PeerLink {
    fn call<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        api_key: i16,
        api_version: i16,
        flexible: bool,
        body: bytes::Bytes,
    ) -> futures::future::LocalBoxFuture<'a, std::io::Result<bytes::Bytes>>;
}
