//! Cluster metadata: topics, their partitions and configs, and which core owns each partition.
//!
//! Core 0 (the controller core) is the single writer: it applies a change, persists the whole model to
//! `<log.dirs>/ringtide-metadata.json` (write to a temp file, fsync, rename, fsync the dir) and broadcasts
//! the new immutable snapshot to every core. Every core holds its own `Arc<ClusterMeta>` copy and reads it
//! without locks. The partition → core map (the shard table) is derived from the snapshot by
//! [`owner_core`], so every core computes the same answer without being told.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const METADATA_FILE: &str = "ringtide-metadata.json";

/// One topic. Immutable once published in a snapshot; a change makes a new `TopicMeta`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka topic config keys), as set by CreateTopics/AlterConfigs.
    pub configs: BTreeMap<String, String>,
    /// Leader epoch of every partition; bumped when leadership changes (one broker: stays 0).
    #[serde(default)]
    pub leader_epoch: i32,
    #[serde(default)]
    pub internal: bool,
    /// Cluster mode only (empty on a single broker, which leads every partition itself): each
    /// partition's replicas and leadership as ZooKeeper holds them, indexed by partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<PartitionMeta>,
}

/// One partition's replicas and leadership in cluster mode (`/brokers/topics/<t>` and
/// `/brokers/topics/<t>/partitions/<p>/state`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    /// -1 while the partition has no leader (offline, or its state is not written yet).
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// A live broker of the cluster (`/brokers/ids/<id>`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BrokerMeta {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl TopicMeta {
    /// The leader of `partition`: in cluster mode the one ZooKeeper names (-1: none), otherwise `self_id`.
    pub fn leader(&self, partition: i32, self_id: i32) -> i32 {
        if self.assignment.is_empty() {
            return self_id;
        }
        self.assignment
            .get(partition as usize)
            .map_or(-1, |a| a.leader)
    }

    /// The leader epoch of `partition`.
    pub fn partition_leader_epoch(&self, partition: i32) -> i32 {
        self.assignment
            .get(partition as usize)
            .map_or(self.leader_epoch, |a| a.leader_epoch)
    }

    /// The replicas and the in-sync replicas of `partition`.
    pub fn replicas_isr(&self, partition: i32, self_id: i32) -> (Vec<i32>, Vec<i32>) {
        match self.assignment.get(partition as usize) {
            Some(a) => (a.replicas.clone(), a.isr.clone()),
            None => (vec![self_id], vec![self_id]),
        }
    }
}

/// The whole model. Owned by core 0 (single writer); every core holds an immutable `Arc` copy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: String,
    /// Bumped on every change; cores ignore a snapshot older than the one they hold.
    pub version: u64,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Next producer id block start (persisted so ids are never reused after a restart).
    #[serde(default)]
    pub next_producer_id_block: i64,
    /// Dynamic broker configs set for one broker (AlterConfigs on resource `"<node id>"`), by node id.
    #[serde(default)]
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// The cluster-wide dynamic default of broker configs (AlterConfigs on resource `""`).
    #[serde(default)]
    pub default_broker_configs: BTreeMap<String, String>,
    /// Cluster mode only: the live brokers (empty on a single broker) and the controller's id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    #[serde(default)]
    pub controller_id: Option<i32>,
}

/// The core that owns partition `partition` of `topic`: spread a topic's partitions round-robin over the
/// cores, starting at a core picked from the topic id so that many one-partition topics spread too.
pub fn owner_core(topic_id: &Uuid, partition: i32, cores: usize) -> usize {
    debug_assert!(cores > 0);
    let seed = topic_id.as_u128() as u64 ^ (topic_id.as_u128() >> 64) as u64;
    ((seed % cores as u64) as usize + partition as usize) % cores
}

/// Kafka's rule for topic names: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if name.len() > crate::limits::TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is longer than {} characters",
            crate::limits::TOPIC_NAME_BYTES_MAX
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name {name:?} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl ClusterMeta {
    pub fn new_cluster() -> ClusterMeta {
        ClusterMeta {
            cluster_id: cluster_id_string(Uuid::new_v4()),
            version: 1,
            topics: BTreeMap::new(),
            next_producer_id_block: 0,
            broker_configs: BTreeMap::new(),
            // As `kafka-storage format` does for a Kafka 4 cluster.
            default_broker_configs: [crate::config::dynamic::CLUSTER_MIN_INSYNC_REPLICAS]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            brokers: BTreeMap::new(),
            controller_id: None,
        }
    }

    /// The dynamic broker configs of broker `node_id`: its own and the cluster default.
    pub fn broker_layers(&self, node_id: i32) -> crate::config::dynamic::BrokerLayers<'_> {
        crate::config::dynamic::BrokerLayers {
            broker: self.broker_configs.get(&node_id),
            cluster: Some(&self.default_broker_configs),
        }
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| &t.id == id)
    }

    /// Loads the model from `dir`, or creates a new cluster if there is none.
    pub fn load_or_create(dir: &Path) -> std::io::Result<ClusterMeta> {
        let path = dir.join(METADATA_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = ClusterMeta::new_cluster();
                meta.persist(dir)?;
                Ok(meta)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the model atomically and durably. Blocking: at start-up on the main thread, and on core 0
    /// through the runtime's blocking pool (`storage::blocking`).
    pub fn persist(&self, dir: &Path) -> std::io::Result<()> {
        let tmp: PathBuf = dir.join(format!("{METADATA_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(METADATA_FILE))?;
        crate::storage::fault_journal::sync_dir(dir)?;
        crate::storage::fault_journal::file_synced(&dir.join(METADATA_FILE), &bytes);
        Ok(())
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars).
pub fn cluster_id_string(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_partitions() {
        let id = Uuid::new_v4();
        let owners: Vec<usize> = (0..4).map(|p| owner_core(&id, p, 2)).collect();
        assert_ne!(owners[0], owners[1]);
        assert_eq!(owners[0], owners[2]);
        assert!((0..10).all(|p| owner_core(&id, p, 1) == 0));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("adder-0").is_ok());
        assert!(validate_topic_name("a.b_c").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn cluster_id_is_22_chars() {
        assert_eq!(cluster_id_string(Uuid::new_v4()).len(), 22);
    }

    #[test]
    fn persist_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ClusterMeta::load_or_create(dir.path()).unwrap();
        m.topics.insert(
            "t".into(),
            Arc::new(TopicMeta {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: 3,
                configs: BTreeMap::new(),
                leader_epoch: 0,
                internal: false,
                assignment: Vec::new(),
            }),
        );
        m.persist(dir.path()).unwrap();
        let back = ClusterMeta::load_or_create(dir.path()).unwrap();
        assert_eq!(back.cluster_id, m.cluster_id);
        assert_eq!(back.topics["t"].partitions, 3);
    }
}
