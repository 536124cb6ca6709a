//! Dynamic broker configs: what AlterConfigs / IncrementalAlterConfigs set on a broker (`"1"`) or on the
//! cluster-wide default (`""`), as Kafka keeps them in its metadata.
//!
//! Precedence of a broker key's value, highest first (Kafka's): this broker's dynamic value, the cluster
//! default, `server.properties`/`--override`, the default. A topic override beats all of them for the
//! topic's own key. The layers are stored in the cluster metadata (written by core 0, broadcast to every
//! core with each snapshot), so a change reaches every partition's log settings without a restart.
//!
//! Ringtide changes only the keys in [`DYNAMIC_KEYS`] without a restart: each of them is read from the
//! layers wherever the broker uses it. Every other key is refused (never accepted and ignored).

use std::collections::BTreeMap;

use super::broker_key;
use super::keys::ConfigType;

/// Broker keys Ringtide applies without a restart; each feeds a topic's log settings (`log_config`).
/// `min.insync.replicas` is honoured as Kafka 4 honours it: an `acks=all` write needs
/// min(`min.insync.replicas`, replication factor) in-sync replicas (KIP-966), which one broker always
/// has. Kafka lets many more keys change dynamically; those are refused until Ringtide honours them.
pub const DYNAMIC_KEYS: &[&str] = &[
    "log.segment.bytes",
    "log.roll.ms",
    "log.retention.ms",
    "log.retention.bytes",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.message.timestamp.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "message.max.bytes",
    "min.insync.replicas",
];

/// The key a fresh cluster starts with in its cluster-wide default, as `kafka-storage format` writes it
/// (Kafka 4 with eligible leader replicas), and which AlterConfigs may not remove.
pub const CLUSTER_MIN_INSYNC_REPLICAS: (&str, &str) = ("min.insync.replicas", "1");

/// Which dynamic layer a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Set for this broker (`DYNAMIC_BROKER_CONFIG`).
    Broker,
    /// Set as the cluster-wide default (`DYNAMIC_DEFAULT_BROKER_CONFIG`).
    Cluster,
}

/// The two dynamic layers of this broker, borrowed from a metadata snapshot.
#[derive(Clone, Copy, Debug)]
pub struct BrokerLayers<'a> {
    pub broker: Option<&'a BTreeMap<String, String>>,
    pub cluster: Option<&'a BTreeMap<String, String>>,
}

impl<'a> BrokerLayers<'a> {
    /// No dynamic configs (tests, and tools that read only `server.properties`).
    pub const NONE: BrokerLayers<'static> = BrokerLayers {
        broker: None,
        cluster: None,
    };

    /// Every dynamic value of `key`, highest precedence first.
    pub fn values(&self, key: &str) -> impl Iterator<Item = (&'a str, Layer)> + '_ {
        let broker = self
            .broker
            .and_then(|m| m.get(key))
            .map(|v| (v.as_str(), Layer::Broker));
        let cluster = self
            .cluster
            .and_then(|m| m.get(key))
            .map(|v| (v.as_str(), Layer::Cluster));
        broker.into_iter().chain(cluster)
    }

    /// The effective dynamic value of `key`, if any layer sets it.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.values(key).next().map(|(v, _)| v)
    }

    /// The effective dynamic value of a numeric key (a value that does not parse is ignored: values are
    /// checked when they are set).
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }
}

/// Why a dynamic change is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request itself is wrong (Kafka: INVALID_REQUEST), with Kafka's message.
    Request(String),
    /// The key or value is wrong (Kafka: INVALID_CONFIG), with the message.
    Config(String),
}

/// Checks one dynamic broker key and its new value (`None`: the key is removed). `cluster` is true for the
/// cluster-wide default. Kafka's messages; Ringtide's own refusals say what to do instead.
pub fn check_change(key: &str, value: Option<&str>, cluster: bool) -> Result<(), Refusal> {
    let Some(k) = broker_key(key) else {
        return Err(Refusal::Config(format!(
            "Unknown broker config name: {key} (Ringtide does not store configs it does not use)"
        )));
    };
    if !k.dynamic {
        return Err(Refusal::Request(format!(
            "Cannot update these configs dynamically: [{key}]"
        )));
    }
    if !DYNAMIC_KEYS.contains(&key) {
        return Err(Refusal::Request(format!(
            "Cannot update these configs dynamically: [{key}] (Ringtide does not apply {key} without a \
             restart; set it in server.properties)"
        )));
    }
    let Some(value) = value else {
        if cluster && key == CLUSTER_MIN_INSYNC_REPLICAS.0 {
            return Err(Refusal::Config(
                "Cluster-level min.insync.replicas cannot be removed while ELR is enabled.".into(),
            ));
        }
        return Ok(());
    };
    k.kind.check(key, value).map_err(Refusal::Request)?;
    check_range(key, value).map_err(Refusal::Request)
}

/// Kafka's ranges for the keys Ringtide changes dynamically (a broker key shares its topic synonym's).
fn check_range(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    let bad = |what: &str| Err(format!("Invalid value {v} for configuration {key}: {what}"));
    let n = v.parse::<i64>().unwrap_or(0);
    match key {
        "log.segment.bytes" if n < crate::limits::SEGMENT_BYTES_TOPIC_MIN as i64 => {
            bad("Value must be at least 1048576")
        }
        "log.roll.ms" if n < 1 => bad("Value must be at least 1"),
        "log.retention.ms" | "log.retention.bytes" if n < -1 => bad("Value must be at least -1"),
        "log.index.interval.bytes"
        | "message.max.bytes"
        | "log.flush.interval.ms"
        | "log.message.timestamp.before.max.ms"
        | "log.message.timestamp.after.max.ms"
            if n < 0 =>
        {
            bad("Value must be at least 0")
        }
        "log.flush.interval.messages" | "min.insync.replicas" if n < 1 => {
            bad("Value must be at least 1")
        }
        "log.message.timestamp.type" if v != "CreateTime" && v != "LogAppendTime" => {
            bad("String must be one of: CreateTime, LogAppendTime")
        }
        _ => Ok(()),
    }
}

/// A broker key's synonyms, in Kafka's order (`log.retention.ms` is also set as minutes
/// or hours, `log.roll.ms` and `log.roll.jitter.ms` as hours).
pub fn broker_synonyms(broker_key: &str) -> &'static [&'static str] {
    match broker_key {
        "log.retention.ms" => &[
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "log.roll.ms" => &["log.roll.ms", "log.roll.hours"],
        "log.roll.jitter.ms" => &["log.roll.jitter.ms", "log.roll.jitter.hours"],
        _ => &[],
    }
}

/// The list operations of IncrementalAlterConfigs on one key's current value (`None`: not set).
pub fn apply_list_op(
    kind: ConfigType,
    current: Option<&str>,
    items: &str,
    append: bool,
) -> Result<String, String> {
    if kind != ConfigType::List {
        return Err("APPEND and SUBTRACT apply only to LIST configs".to_string());
    }
    let mut out: Vec<&str> = current
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !out.contains(&item) {
                out.push(item);
            }
        } else {
            out.retain(|x| *x != item);
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        assert_eq!(
            check_change("log.retention.ms", Some("1000"), false),
            Ok(())
        );
        assert!(matches!(
            check_change("num.partitions", Some("3"), false),
            Err(Refusal::Request(m)) if m == "Cannot update these configs dynamically: [num.partitions]"
        ));
        assert!(matches!(
            check_change("max.connections", Some("3"), true),
            Err(Refusal::Request(m)) if m.contains("server.properties")
        ));
        assert!(matches!(
            check_change("no.such.key", Some("3"), false),
            Err(Refusal::Config(_))
        ));
        assert!(matches!(
            check_change("log.retention.ms", Some("abc"), false),
            Err(Refusal::Request(m)) if m.ends_with("Not a number of type LONG")
        ));
        assert!(check_change("log.segment.bytes", Some("10"), false).is_err());
        assert!(check_change("min.insync.replicas", None, true).is_err());
        assert_eq!(check_change("min.insync.replicas", None, false), Ok(()));
    }

    #[test]
    fn layers_precedence() {
        let broker: BTreeMap<String, String> = [("log.retention.ms".into(), "5".into())].into();
        let cluster: BTreeMap<String, String> = [
            ("log.retention.ms".into(), "6".into()),
            ("log.retention.bytes".into(), "7".into()),
        ]
        .into();
        let l = BrokerLayers {
            broker: Some(&broker),
            cluster: Some(&cluster),
        };
        assert_eq!(l.get_i64("log.retention.ms"), Some(5));
        assert_eq!(l.get_i64("log.retention.bytes"), Some(7));
        assert_eq!(BrokerLayers::NONE.get("log.retention.ms"), None);
        assert_eq!(
            l.values("log.retention.ms").collect::<Vec<_>>(),
            vec![("5", Layer::Broker), ("6", Layer::Cluster)]
        );
    }

    #[test]
    fn every_dynamic_key_is_a_dynamic_kafka_key() {
        for k in DYNAMIC_KEYS {
            assert!(broker_key(k).is_some_and(|b| b.dynamic), "{k}");
        }
    }

    #[test]
    fn list_ops() {
        assert_eq!(
            apply_list_op(ConfigType::List, Some("delete"), "compact", true).unwrap(),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op(ConfigType::List, Some("delete,compact"), "delete", false).unwrap(),
            "compact"
        );
        assert!(apply_list_op(ConfigType::Long, None, "1", true).is_err());
    }
}
