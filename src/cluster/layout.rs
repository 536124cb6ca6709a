//! ZooKeeper's layout as Kafka 2.x/3.x (ZooKeeper mode) writes it: the paths and the JSON of every znode
//! Ringtide reads or writes, so that `zookeeper-shell`, kazoo and Kafka's own tools see what they saw with
//! Kafka. Pure: bytes in, values out.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

pub const BROKER_IDS: &str = "/brokers/ids";
pub const BROKER_TOPICS: &str = "/brokers/topics";
pub const CONFIG_TOPICS: &str = "/config/topics";
pub const CONFIG_BROKERS: &str = "/config/brokers";
pub const CONFIG_CHANGES: &str = "/config/changes";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";
pub const DELETE_TOPICS: &str = "/admin/delete_topics";
pub const PRODUCER_ID_BLOCK: &str = "/latest_producer_id_block";
/// The entity name of the cluster-wide broker config default (`/config/brokers/<default>`).
pub const DEFAULT_BROKER_ENTITY: &str = "<default>";
/// Producer ids handed to a broker at once (Kafka's `ProducerIdsBlock` size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The persistent paths Kafka creates when a broker starts (`ZkData.PersistentZkPaths`).
pub const PERSISTENT_PATHS: &[&str] = &[
    "/consumers",
    BROKER_IDS,
    BROKER_TOPICS,
    CONFIG_CHANGES,
    DELETE_TOPICS,
    "/brokers/seqid",
    "/isr_change_notification",
    PRODUCER_ID_BLOCK,
    "/log_dir_event_notification",
    CONFIG_TOPICS,
    "/config/clients",
    "/config/users",
    CONFIG_BROKERS,
    "/config/ips",
];

pub fn broker_path(id: i32) -> String {
    format!("{BROKER_IDS}/{id}")
}
pub fn topic_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}")
}
pub fn partitions_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions")
}
pub fn partition_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}")
}
pub fn state_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}/state")
}
pub fn topic_config_path(topic: &str) -> String {
    format!("{CONFIG_TOPICS}/{topic}")
}
pub fn broker_config_path(entity: &str) -> String {
    format!("{CONFIG_BROKERS}/{entity}")
}
pub fn delete_topic_path(topic: &str) -> String {
    format!("{DELETE_TOPICS}/{topic}")
}

/// What a znode path names, for the paths the cluster view keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Znode {
    Broker(i32),
    Topic(String),
    State(String, i32),
    TopicConfig(String),
    BrokerConfig(String),
    DeleteTopic(String),
    Controller,
    ControllerEpoch,
    ClusterId,
}

impl Znode {
    pub fn parse(path: &str) -> Option<Znode> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["brokers", "ids", id] => id.parse().ok().map(Znode::Broker),
            ["brokers", "topics", t] => Some(Znode::Topic(t.to_string())),
            ["brokers", "topics", t, "partitions", p, "state"] => {
                p.parse().ok().map(|p| Znode::State(t.to_string(), p))
            }
            ["config", "topics", t] => Some(Znode::TopicConfig(t.to_string())),
            ["config", "brokers", b] => Some(Znode::BrokerConfig(b.to_string())),
            ["admin", "delete_topics", t] => Some(Znode::DeleteTopic(t.to_string())),
            ["controller"] => Some(Znode::Controller),
            ["controller_epoch"] => Some(Znode::ControllerEpoch),
            ["cluster", "id"] => Some(Znode::ClusterId),
            _ => None,
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn to_bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("a JSON value always serializes")
}

/// Kafka's `Uuid.toString()`: URL-safe base64 without padding.
pub fn uuid_string(id: Uuid) -> String {
    crate::metadata::cluster_id_string(id)
}

/// The inverse of [`uuid_string`].
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let mut bytes = Vec::with_capacity(16);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    Uuid::from_slice(&bytes).ok()
}

/// `/brokers/ids/<id>` (version 5, as Kafka 3.x registers a PLAINTEXT broker).
pub fn broker_registration(
    listener_name: &str,
    host: &str,
    port: u16,
    rack: Option<&str>,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut m = json!({
        "features": {},
        "listener_security_protocol_map": { listener_name: "PLAINTEXT" },
        "endpoints": [format!("{listener_name}://{host}:{port}")],
        "jmx_port": -1,
        "port": port,
        "host": host,
        "version": 5,
        "timestamp": timestamp_ms.to_string(),
    });
    if let Some(rack) = rack {
        m["rack"] = json!(rack);
    }
    to_bytes(m)
}

/// A broker's address and rack from its registration: the first endpoint, else `host`/`port`.
pub fn parse_broker(id: i32, bytes: &[u8]) -> Option<crate::metadata::BrokerMeta> {
    let m = parse(bytes)?;
    let rack = m.get("rack").and_then(Value::as_str).map(str::to_string);
    let from_endpoint = m
        .get("endpoints")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|e| e.split_once("://"))
        .and_then(|(_, addr)| addr.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)));
    let (host, port) = match from_endpoint {
        Some(hp) => hp,
        None => (
            m.get("host")?.as_str()?.to_string(),
            m.get("port")?.as_i64()? as i32,
        ),
    };
    Some(crate::metadata::BrokerMeta {
        id,
        host,
        port,
        rack,
    })
}

/// `/brokers/topics/<t>` (version 3: the assignment and the topic id).
pub fn topic_assignment(id: Uuid, assignment: &[Vec<i32>]) -> Vec<u8> {
    let partitions: Map<String, Value> = assignment
        .iter()
        .enumerate()
        .map(|(p, r)| (p.to_string(), json!(r)))
        .collect();
    to_bytes(json!({
        "partitions": partitions,
        "topic_id": uuid_string(id),
        "adding_replicas": {},
        "removing_replicas": {},
        "version": 3,
    }))
}

/// The topic id (absent when an old tool wrote the znode) and the replicas of each partition.
pub fn parse_topic(bytes: &[u8]) -> Option<(Option<Uuid>, Vec<Vec<i32>>)> {
    let m = parse(bytes)?;
    let id = m
        .get("topic_id")
        .and_then(Value::as_str)
        .and_then(parse_uuid);
    let parts = m.get("partitions")?.as_object()?;
    let mut by_index = BTreeMap::new();
    for (p, r) in parts {
        let p: usize = p.parse().ok()?;
        let replicas: Vec<i32> = r
            .as_array()?
            .iter()
            .map(|b| b.as_i64().map(|b| b as i32))
            .collect::<Option<_>>()?;
        by_index.insert(p, replicas);
    }
    // Partitions are numbered 0..n without gaps.
    if by_index.keys().enumerate().any(|(i, p)| i != *p) {
        return None;
    }
    Some((id, by_index.into_values().collect()))
}

/// `/brokers/topics/<t>/partitions/<p>/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub controller_epoch: i32,
}

pub fn partition_state(s: &PartitionState) -> Vec<u8> {
    to_bytes(json!({
        "controller_epoch": s.controller_epoch,
        "leader": s.leader,
        "version": 1,
        "leader_epoch": s.leader_epoch,
        "isr": s.isr,
    }))
}

pub fn parse_partition_state(bytes: &[u8]) -> Option<PartitionState> {
    let m = parse(bytes)?;
    Some(PartitionState {
        leader: m.get("leader")?.as_i64()? as i32,
        leader_epoch: m.get("leader_epoch")?.as_i64()? as i32,
        isr: m
            .get("isr")?
            .as_array()?
            .iter()
            .map(|b| b.as_i64().map(|b| b as i32))
            .collect::<Option<_>>()?,
        controller_epoch: m
            .get("controller_epoch")
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32,
    })
}

/// `/config/topics/<t>` and `/config/brokers/<id>`: `{"version":1,"config":{...}}`.
pub fn config_znode(configs: &BTreeMap<String, String>) -> Vec<u8> {
    to_bytes(json!({ "version": 1, "config": configs }))
}

pub fn parse_config(bytes: &[u8]) -> BTreeMap<String, String> {
    parse(bytes)
        .and_then(|m| m.get("config").and_then(Value::as_object).cloned())
        .map(|c| {
            c.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `/config/changes/config_change_<seq>`: tells every broker which entity's config changed.
pub fn config_change(entity_path: &str) -> Vec<u8> {
    to_bytes(json!({ "version": 2, "entity_path": entity_path }))
}

/// `/controller`.
pub fn controller(broker_id: i32, timestamp_ms: i64) -> Vec<u8> {
    to_bytes(json!({ "version": 1, "brokerid": broker_id, "timestamp": timestamp_ms.to_string() }))
}

pub fn parse_controller(bytes: &[u8]) -> Option<i32> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(m) => m.get("brokerid")?.as_i64().map(|b| b as i32),
        // Kafka 0.8's plain integer form.
        Value::Number(n) => n.as_i64().map(|b| b as i32),
        _ => None,
    }
}

/// `/controller_epoch` holds the epoch as a plain integer.
pub fn parse_controller_epoch(bytes: &[u8]) -> Option<i32> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `/cluster/id`.
pub fn cluster_id(id: &str) -> Vec<u8> {
    to_bytes(json!({ "version": "1", "id": id }))
}

pub fn parse_cluster_id(bytes: &[u8]) -> Option<String> {
    parse(bytes)?.get("id")?.as_str().map(str::to_string)
}

/// `/latest_producer_id_block`: the last block handed out.
pub fn producer_id_block(broker_id: i32, start: i64, end: i64) -> Vec<u8> {
    to_bytes(json!({
        "version": 1,
        "broker": broker_id,
        "block_start": start.to_string(),
        "block_end": end.to_string(),
    }))
}

/// The last id of the last block handed out (`None`: no block yet).
pub fn parse_producer_id_block_end(bytes: &[u8]) -> Option<i64> {
    let m = parse(bytes)?;
    match m.get("block_end")? {
        Value::String(s) => s.parse().ok(),
        v => v.as_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        for _ in 0..50 {
            let id = Uuid::new_v4();
            assert_eq!(parse_uuid(&uuid_string(id)), Some(id));
        }
    }

    #[test]
    fn topic_round_trip_and_kafka_2_form() {
        let id = Uuid::new_v4();
        let a = vec![vec![1], vec![2], vec![3], vec![1]];
        assert_eq!(
            parse_topic(&topic_assignment(id, &a)),
            Some((Some(id), a.clone()))
        );
        // Kafka 2.3 writes version 1 without a topic id.
        let old = br#"{"version":1,"partitions":{"1":[2],"0":[1]}}"#;
        assert_eq!(parse_topic(old), Some((None, vec![vec![1], vec![2]])));
        assert_eq!(
            parse_topic(br#"{"version":1,"partitions":{"1":[2]}}"#),
            None
        );
    }

    #[test]
    fn state_and_broker_round_trip() {
        let s = PartitionState {
            leader: 2,
            leader_epoch: 7,
            isr: vec![2],
            controller_epoch: 3,
        };
        assert_eq!(parse_partition_state(&partition_state(&s)), Some(s));
        let b = broker_registration("PLAINTEXT", "127.0.0.1", 9093, Some("r1"), 5);
        let m = parse_broker(4, &b).unwrap();
        assert_eq!((m.id, m.host.as_str(), m.port), (4, "127.0.0.1", 9093));
        assert_eq!(m.rack.as_deref(), Some("r1"));
    }

    #[test]
    fn paths_parse() {
        assert_eq!(Znode::parse("/brokers/ids/3"), Some(Znode::Broker(3)));
        assert_eq!(
            Znode::parse(&state_path("t", 4)),
            Some(Znode::State("t".into(), 4))
        );
        assert_eq!(Znode::parse("/brokers/topics/t/partitions/4"), None);
        assert_eq!(Znode::parse(CONTROLLER), Some(Znode::Controller));
        assert_eq!(parse_controller(&controller(2, 1)), Some(2));
        assert_eq!(
            parse_producer_id_block_end(&producer_id_block(1, 0, 999)),
            Some(999)
        );
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "5".to_string());
        assert_eq!(parse_config(&config_znode(&c)), c);
    }
}
