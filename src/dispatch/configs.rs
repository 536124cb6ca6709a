//! Topic and broker configs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, and the mapping
//! from a topic's effective config to its log's settings.
//!
//! A topic config has a broker-level synonym (e.g. `retention.ms` ← `log.retention.ms`): the effective
//! value is the topic override if set, else the broker's value. Changes go through core 0 like any
//! metadata change and reach the owning cores' logs with the broadcast snapshot.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::config::{Config, Source};

use crate::metadata::TopicMeta;
use crate::protocol::errors;
use crate::shard::Shard;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs config sources (Kafka's `ConfigSource`).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bool,
    Str,
    Int,
    Long,
    Double,
    List,
}

impl Kind {
    /// DescribeConfigs v3+ `config_type`.
    fn code(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::Str => 2,
            Kind::Int => 3,
            Kind::Long => 5,
            Kind::Double => 6,
            Kind::List => 7,
        }
    }
}

/// A topic config key: its type, its broker synonym (if any) and Kafka's default.
struct TopicKey {
    name: &'static str,
    kind: Kind,
    broker: Option<&'static str>,
    default: &'static str,
}

const fn key(
    name: &'static str,
    kind: Kind,
    broker: Option<&'static str>,
    default: &'static str,
) -> TopicKey {
    TopicKey {
        name,
        kind,
        broker,
        default,
    }
}

/// Every topic config Kafka 4 knows. Those marked in `log_config` are enforced; the others are stored
/// and described so that tools which set them keep working.
const TOPIC_KEYS: &[TopicKey] = &[
    key(
        "cleanup.policy",
        Kind::List,
        Some("log.cleanup.policy"),
        "delete",
    ),
    key(
        "compression.type",
        Kind::Str,
        Some("compression.type"),
        "producer",
    ),
    key(
        "delete.retention.ms",
        Kind::Long,
        Some("log.cleaner.delete.retention.ms"),
        "86400000",
    ),
    key(
        "file.delete.delay.ms",
        Kind::Long,
        Some("log.segment.delete.delay.ms"),
        "60000",
    ),
    key(
        "flush.messages",
        Kind::Long,
        Some("log.flush.interval.messages"),
        "9223372036854775807",
    ),
    key(
        "flush.ms",
        Kind::Long,
        Some("log.flush.interval.ms"),
        "9223372036854775807",
    ),
    key(
        "index.interval.bytes",
        Kind::Int,
        Some("log.index.interval.bytes"),
        "4096",
    ),
    key(
        "local.retention.bytes",
        Kind::Long,
        Some("log.local.retention.bytes"),
        "-2",
    ),
    key(
        "local.retention.ms",
        Kind::Long,
        Some("log.local.retention.ms"),
        "-2",
    ),
    key(
        "max.compaction.lag.ms",
        Kind::Long,
        Some("log.cleaner.max.compaction.lag.ms"),
        "9223372036854775807",
    ),
    key(
        "max.message.bytes",
        Kind::Int,
        Some("message.max.bytes"),
        "1048588",
    ),
    key(
        "message.timestamp.after.max.ms",
        Kind::Long,
        Some("log.message.timestamp.after.max.ms"),
        "3600000",
    ),
    key(
        "message.timestamp.before.max.ms",
        Kind::Long,
        Some("log.message.timestamp.before.max.ms"),
        "9223372036854775807",
    ),
    key(
        "message.timestamp.type",
        Kind::Str,
        Some("log.message.timestamp.type"),
        "CreateTime",
    ),
    key(
        "min.cleanable.dirty.ratio",
        Kind::Double,
        Some("log.cleaner.min.cleanable.ratio"),
        "0.5",
    ),
    key(
        "min.compaction.lag.ms",
        Kind::Long,
        Some("log.cleaner.min.compaction.lag.ms"),
        "0",
    ),
    key(
        "min.insync.replicas",
        Kind::Int,
        Some("min.insync.replicas"),
        "1",
    ),
    key("preallocate", Kind::Bool, Some("log.preallocate"), "false"),
    key("remote.storage.enable", Kind::Bool, None, "false"),
    key(
        "retention.bytes",
        Kind::Long,
        Some("log.retention.bytes"),
        "-1",
    ),
    key(
        "retention.ms",
        Kind::Long,
        Some("log.retention.ms"),
        "604800000",
    ),
    key(
        "segment.bytes",
        Kind::Int,
        Some("log.segment.bytes"),
        "1073741824",
    ),
    key(
        "segment.index.bytes",
        Kind::Int,
        Some("log.index.size.max.bytes"),
        "10485760",
    ),
    key(
        "segment.jitter.ms",
        Kind::Long,
        Some("log.roll.jitter.ms"),
        "0",
    ),
    key("segment.ms", Kind::Long, Some("log.roll.ms"), "604800000"),
    key(
        "unclean.leader.election.enable",
        Kind::Bool,
        Some("unclean.leader.election.enable"),
        "false",
    ),
];

/// The broker-level value of a topic key's synonym, as the broker config has it.
fn broker_value(config: &Config, k: &TopicKey) -> Option<(String, i8)> {
    let broker_key = k.broker?;
    let from_config = match broker_key {
        "log.retention.ms" => Some(config.log_retention_ms.to_string()),
        "log.roll.ms" => Some(config.log_roll_ms.to_string()),
        "log.segment.bytes" => Some(config.log_segment_bytes.to_string()),
        "log.retention.bytes" => Some(config.log_retention_bytes.to_string()),
        "message.max.bytes" => Some(config.message_max_bytes.to_string()),
        "log.index.interval.bytes" => Some(config.log_index_interval_bytes.to_string()),
        "log.flush.interval.messages" => config.log_flush_interval_messages.map(|v| v.to_string()),
        "log.flush.interval.ms" => config.log_flush_interval_ms.map(|v| v.to_string()),
        "log.message.timestamp.type" => Some(
            if config.log_message_timestamp_type_log_append {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
        ),
        _ => None,
    }?;
    // A broker value that differs from Kafka's default was set in server.properties or an override.
    let source = if from_config != k.default {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    };
    Some((from_config, source))
}

/// One described config entry.
pub struct Entry {
    pub name: String,
    pub value: String,
    pub source: i8,
    kind: Kind,
    synonyms: Vec<(String, String, i8)>,
}

/// The effective configs of a topic, every key, in Kafka's order (alphabetical).
pub fn topic_entries(config: &Config, topic: &TopicMeta) -> Vec<Entry> {
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let mut synonyms = Vec::new();
            let broker = broker_value(config, k);
            if let Some(v) = topic.configs.get(k.name) {
                synonyms.push((k.name.to_string(), v.clone(), SOURCE_TOPIC));
            }
            if let (Some((v, src)), Some(bk)) = (&broker, k.broker) {
                if *src == SOURCE_STATIC_BROKER {
                    synonyms.push((bk.to_string(), v.clone(), SOURCE_STATIC_BROKER));
                }
            }
            if let Some(bk) = k.broker {
                synonyms.push((bk.to_string(), k.default.to_string(), SOURCE_DEFAULT));
            }
            let (value, source) = match topic.configs.get(k.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => broker.unwrap_or_else(|| (k.default.to_string(), SOURCE_DEFAULT)),
            };
            Entry {
                name: k.name.to_string(),
                value,
                source,
                kind: k.kind,
                synonyms,
            }
        })
        .collect()
}

fn check_value(k: &TopicKey, value: &str) -> Result<(), String> {
    let bad = |what: &str| {
        Err(format!(
            "Invalid value {value} for configuration {}: {what}",
            k.name
        ))
    };
    match k.kind {
        Kind::Bool => match value {
            "true" | "false" => Ok(()),
            _ => bad("Expected value to be either true or false"),
        },
        Kind::Int => match value.parse::<i32>() {
            Ok(_) => Ok(()),
            Err(_) => bad("Not a number of type INT"),
        },
        Kind::Long => match value.parse::<i64>() {
            Ok(_) => Ok(()),
            Err(_) => bad("Not a number of type LONG"),
        },
        Kind::Double => match value.parse::<f64>() {
            Ok(_) => Ok(()),
            Err(_) => bad("Not a number of type DOUBLE"),
        },
        Kind::Str | Kind::List => {
            if k.name == "message.timestamp.type"
                && value != "CreateTime"
                && value != "LogAppendTime"
            {
                return bad("String must be one of: CreateTime, LogAppendTime");
            }
            if k.name == "cleanup.policy"
                && !value
                    .split(',')
                    .all(|p| matches!(p.trim(), "delete" | "compact" | ""))
            {
                return bad("String must be one of: compact, delete");
            }
            Ok(())
        }
    }?;
    // Ranges Kafka enforces for the keys Ringtide acts on.
    let n = value.parse::<i64>().unwrap_or(0);
    match k.name {
        "segment.bytes" if n < 1024 * 1024 => bad("Value must be at least 1048576"),
        "segment.ms" | "max.message.bytes" if n < 1 => bad("Value must be at least 1"),
        "retention.ms" | "retention.bytes" if n < -1 => bad("Value must be at least -1"),
        "flush.messages" | "flush.ms" if n < 0 => bad("Value must be at least 0"),
        _ => Ok(()),
    }
}

/// Checks a set of topic configs: known keys, well-typed values.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        let Some(k) = TOPIC_KEYS.iter().find(|k| k.name == name) else {
            return Err(format!("Unknown topic config name: {name}"));
        };
        check_value(k, value)?;
    }
    Ok(())
}

fn describe_entries(
    entries: Vec<Entry>,
    keys: &Option<Vec<StrBytes>>,
    synonyms: bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    entries
        .into_iter()
        .filter(|e| {
            keys.as_ref()
                .is_none_or(|ks| ks.is_empty() || ks.iter().any(|k| k.as_str() == e.name))
        })
        .map(|e| {
            let mut r = DescribeConfigsResourceResult::default();
            r.name = StrBytes::from_string(e.name);
            r.value = Some(StrBytes::from_string(e.value));
            r.config_source = e.source;
            r.read_only = false;
            if version >= 3 {
                r.config_type = e.kind.code();
            }
            if synonyms {
                r.synonyms = e
                    .synonyms
                    .into_iter()
                    .map(|(n, v, s)| {
                        let mut syn = DescribeConfigsSynonym::default();
                        syn.name = StrBytes::from_string(n);
                        syn.value = Some(StrBytes::from_string(v));
                        syn.source = s;
                        syn
                    })
                    .collect();
            }
            r
        })
        .collect()
}

/// The broker's static configs, every key it knows, with their sources.
fn broker_entries(config: &Config) -> Vec<Entry> {
    config
        .entries
        .iter()
        .map(|(name, (value, source))| Entry {
            name: name.clone(),
            value: value.clone(),
            source: if *source == Source::Default {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            },
            kind: Kind::Str,
            synonyms: Vec::new(),
        })
        .collect()
}

pub async fn handle_describe(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeConfigsRequest,
    version: i16,
) -> Option<DescribeConfigsResponse> {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        match res.resource_type {
            RESOURCE_TOPIC => match shard.topic(res.resource_name.as_str()) {
                Some(topic) => {
                    out.configs = describe_entries(
                        topic_entries(&shard.config, &topic),
                        &res.configuration_keys,
                        req.include_synonyms,
                        version,
                    )
                }
                None => {
                    out.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    out.error_message = Some(StrBytes::from_string(format!(
                        "Topic '{}' does not exist.",
                        res.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                let name = res.resource_name.as_str();
                if name.is_empty() || name == shard.config.node_id.to_string() {
                    out.configs = describe_entries(
                        broker_entries(&shard.config),
                        &res.configuration_keys,
                        req.include_synonyms,
                        version,
                    );
                } else {
                    out.error_code = errors::INVALID_REQUEST;
                    out.error_message =
                        Some(StrBytes::from_string(format!("Unknown broker {name}")));
                }
            }
            other => {
                out.error_code = errors::INVALID_REQUEST;
                out.error_message = Some(StrBytes::from_string(format!(
                    "Unsupported resource type {other}"
                )));
            }
        }
        resp.results.push(out);
    }
    Some(resp)
}

/// One requested change to a topic's configs.
enum Op {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Applies config changes to topics on core 0. `replace` = AlterConfigs semantics (the new set replaces
/// all overrides). Returns (resource_type, name, error, message) per resource, in order.
async fn alter_topics(
    shard: &Rc<Shard>,
    changes: Vec<(i8, String, Vec<Op>)>,
    replace: bool,
    validate_only: bool,
) -> Vec<(i8, String, i16, Option<String>)> {
    // Cross-core hop: topic configs are metadata, written by core 0.
    shard
        .invoke_on(0, move |s| async move {
            s.controller_mutate(|meta| {
                let mut changed = false;
                let out = changes
                    .into_iter()
                    .map(|(rtype, name, ops)| {
                        if rtype == RESOURCE_BROKER {
                            return (
                                rtype,
                                name,
                                errors::INVALID_REQUEST,
                                Some("Dynamic broker configs are not supported yet; set them in server.properties".into()),
                            );
                        }
                        if rtype != RESOURCE_TOPIC {
                            return (rtype, name, errors::INVALID_REQUEST, Some(format!("Unsupported resource type {rtype}")));
                        }
                        let Some(topic) = meta.topics.get(&name).cloned() else {
                            return (rtype, name, errors::UNKNOWN_TOPIC_OR_PARTITION, None);
                        };
                        let mut cfg = if replace { BTreeMap::new() } else { topic.configs.clone() };
                        for op in ops {
                            match op {
                                Op::Set(k, v) => {
                                    cfg.insert(k, v);
                                }
                                Op::Delete(k) => {
                                    cfg.remove(&k);
                                }
                                Op::Append(k, v) => {
                                    let cur = cfg.get(&k).cloned().unwrap_or_default();
                                    let mut items: Vec<&str> = cur.split(',').filter(|s| !s.is_empty()).collect();
                                    for item in v.split(',') {
                                        if !items.contains(&item) {
                                            items.push(item);
                                        }
                                    }
                                    cfg.insert(k, items.join(","));
                                }
                                Op::Subtract(k, v) => {
                                    let cur = cfg.get(&k).cloned().unwrap_or_default();
                                    let remove: Vec<&str> = v.split(',').collect();
                                    let items: Vec<&str> =
                                        cur.split(',').filter(|s| !s.is_empty() && !remove.contains(s)).collect();
                                    cfg.insert(k, items.join(","));
                                }
                            }
                        }
                        if let Err(msg) = validate_topic_configs(&cfg) {
                            return (rtype, name, errors::INVALID_CONFIG, Some(msg));
                        }
                        if !validate_only && cfg != topic.configs {
                            let mut t = (*topic).clone();
                            t.configs = cfg;
                            meta.topics.insert(name.clone(), Arc::new(t));
                            changed = true;
                        }
                        (rtype, name, errors::NONE, None)
                    })
                    .collect::<Vec<_>>();
                (changed, out)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "persisting metadata failed");
                Vec::new()
            })
        })
        .await
}

pub async fn handle_alter(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: AlterConfigsRequest,
    _version: i16,
) -> Option<AlterConfigsResponse> {
    let changes = req
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .into_iter()
                .filter_map(|c| c.value.map(|v| Op::Set(c.name.to_string(), v.to_string())))
                .collect();
            (r.resource_type, r.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter_topics(shard, changes, true, req.validate_only).await;
    let mut resp = AlterConfigsResponse::default();
    resp.responses = results
        .into_iter()
        .map(|(t, n, code, msg)| {
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = t;
            r.resource_name = StrBytes::from_string(n);
            r.error_code = code;
            r.error_message = msg.map(StrBytes::from_string);
            r
        })
        .collect();
    Some(resp)
}

pub async fn handle_incremental_alter(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> Option<IncrementalAlterConfigsResponse> {
    let changes = req
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .into_iter()
                .map(|c| {
                    let k = c.name.to_string();
                    let v = c.value.map(|v| v.to_string()).unwrap_or_default();
                    match c.config_operation {
                        0 => Op::Set(k, v),
                        1 => Op::Delete(k),
                        2 => Op::Append(k, v),
                        _ => Op::Subtract(k, v),
                    }
                })
                .collect();
            (r.resource_type, r.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter_topics(shard, changes, false, req.validate_only).await;
    let mut resp = IncrementalAlterConfigsResponse::default();
    resp.responses = results
        .into_iter()
        .map(|(t, n, code, msg)| {
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = t;
            r.resource_name = StrBytes::from_string(n);
            r.error_code = code;
            r.error_message = msg.map(StrBytes::from_string);
            r
        })
        .collect();
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::log_config;

    #[test]
    fn validates_topic_configs() {
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "1000".to_string());
        assert!(validate_topic_configs(&c).is_ok());
        c.insert("retention.ms".to_string(), "soon".to_string());
        assert!(validate_topic_configs(&c).is_err());
        let mut c = BTreeMap::new();
        c.insert("no.such.key".to_string(), "1".to_string());
        assert!(validate_topic_configs(&c)
            .unwrap_err()
            .contains("no.such.key"));
        let mut c = BTreeMap::new();
        c.insert("segment.bytes".to_string(), "100".to_string());
        assert!(validate_topic_configs(&c).is_err());
    }

    #[test]
    fn topic_override_wins() {
        let config = Config::load(None, &[]).unwrap();
        let mut topic = TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs: BTreeMap::new(),
            leader_epoch: 0,
            internal: false,
        };
        assert_eq!(log_config(&config, &topic).segment_bytes, 1 << 30);
        topic
            .configs
            .insert("segment.bytes".into(), "1048576".into());
        topic
            .configs
            .insert("message.timestamp.type".into(), "LogAppendTime".into());
        let lc = log_config(&config, &topic);
        assert_eq!(lc.segment_bytes, 1 << 20);
        assert!(lc.log_append_time);
        let e = topic_entries(&config, &topic);
        let seg = e.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!((seg.value.as_str(), seg.source), ("1048576", SOURCE_TOPIC));
        let ret = e.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(
            (ret.value.as_str(), ret.source),
            ("604800000", SOURCE_DEFAULT)
        );
    }
}
