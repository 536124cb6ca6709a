//! Topic, broker and group configs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.
//!
//! A topic config has a broker-level synonym (e.g. `retention.ms` ← `log.retention.ms`): the effective
//! value is the topic override if set, else the broker's value: a dynamic one (this broker's, then the
//! cluster default, see `config::dynamic`), else `server.properties`, else the default. Every key Kafka
//! 4.4 lists is listed (`config::kafka_keys`), with the value Ringtide acts on. Changes go through core 0
//! like any metadata change and reach the owning cores' logs with the broadcast snapshot.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::config::dynamic::{self, BrokerLayers, Layer, Refusal};
use crate::config::kafka_keys::{BROKER_KEYS, GROUP_KEYS, TOPIC_KEYS};
use crate::config::keys::{ConfigType, TopicKey};
use crate::config::{broker_key, group_key, topic_key};
use crate::config::{Config, Source};
use crate::metadata::{ClusterMeta, TopicMeta};
use crate::protocol::errors;
use crate::shard::Shard;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_GROUP: i8 = 32;

/// DescribeConfigs config sources (Kafka's `ConfigSource`).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
pub const SOURCE_GROUP: i8 = 8;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic keys Ringtide takes as Kafka does, whatever their value: those it acts on (see `log_config`
/// and the produce path), and those it has always stored for the tools that set them (compaction's keys
/// until the log cleaner exists, replication's until replication exists). Every other topic key Kafka
/// knows is accepted only with its default value: Ringtide does not do what another value asks.
const TOPIC_KEYS_ANY_VALUE: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Broker keys Ringtide does not read, with the value that says what Ringtide does instead of Kafka's
/// default.
fn ringtide_value(config: &Config, key: &str) -> Option<String> {
    Some(match key {
        // One thread per core does network and I/O work alike.
        "num.network.threads" | "num.io.threads" => config.cores.to_string(),
        "process.roles" => "broker,controller".into(),
        // One broker: every internal topic has one replica.
        "offsets.topic.replication.factor" | "transaction.state.log.replication.factor" => {
            "1".into()
        }
        _ => return None,
    })
}

/// One described config entry.
pub struct Entry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    sensitive: bool,
    kind: ConfigType,
    synonyms: Vec<(String, Option<String>, i8)>,
}

fn layer_source(layer: Layer) -> i8 {
    match layer {
        Layer::Broker => SOURCE_DYNAMIC_BROKER,
        Layer::Cluster => SOURCE_DYNAMIC_DEFAULT_BROKER,
    }
}

/// The static value of a broker key Ringtide reads, as the broker derived it (`log.retention.hours=24`
/// makes `log.retention.ms` 86400000), for the keys that topic configs fall back on.
fn static_value(config: &Config, broker_key: &str) -> Option<String> {
    Some(match broker_key {
        "log.retention.ms" => config.log_retention_ms.to_string(),
        "log.roll.ms" => config.log_roll_ms.to_string(),
        "log.segment.bytes" => config.log_segment_bytes.to_string(),
        "log.retention.bytes" => config.log_retention_bytes.to_string(),
        "message.max.bytes" => config.message_max_bytes.to_string(),
        "log.index.interval.bytes" => config.log_index_interval_bytes.to_string(),
        "log.flush.interval.messages" => config.log_flush_interval_messages?.to_string(),
        "log.flush.interval.ms" => config.log_flush_interval_ms?.to_string(),
        "log.cleanup.policy" => config.log_cleanup_policy.clone(),
        "log.message.timestamp.before.max.ms" => {
            config.log_message_timestamp_before_max_ms.to_string()
        }
        "log.message.timestamp.after.max.ms" => {
            config.log_message_timestamp_after_max_ms.to_string()
        }
        "log.cleaner.delete.retention.ms" => config.log_cleaner.delete_retention_ms.to_string(),
        "log.cleaner.min.compaction.lag.ms" => config.log_cleaner.min_compaction_lag_ms.to_string(),
        "log.cleaner.max.compaction.lag.ms" => config.log_cleaner.max_compaction_lag_ms.to_string(),
        "log.message.timestamp.type" => if config.log_message_timestamp_type_log_append {
            "LogAppendTime"
        } else {
            "CreateTime"
        }
        .to_string(),
        _ => return None,
    })
}

/// Every layer that sets broker key `name`, highest precedence first: dynamic (this broker, cluster
/// default), static (`server.properties`/`--override`, for keys Ringtide reads), default.
fn broker_layers_of(
    config: &Config,
    layers: &BrokerLayers,
    name: &str,
) -> Vec<(Option<String>, i8)> {
    let mut out: Vec<(Option<String>, i8)> = layers
        .values(name)
        .map(|(v, l)| (Some(v.to_string()), layer_source(l)))
        .collect();
    match config.entries.get(name) {
        Some((v, Source::File | Source::Override)) if crate::config::reads_key(name) => {
            out.push((Some(v.clone()), SOURCE_STATIC_BROKER));
        }
        Some((v, Source::Default)) => out.push((Some(v.clone()), SOURCE_DEFAULT)),
        _ => {
            let default = ringtide_value(config, name)
                .or_else(|| broker_key(name).and_then(|k| k.default).map(str::to_string));
            out.push((default, SOURCE_DEFAULT));
        }
    }
    out
}

/// Kafka's synonyms of a key: every layer of each synonym, ordered by source first (dynamic broker,
/// dynamic default, static, default), then by synonym; layers without a value are left out.
fn synonyms_of(
    config: &Config,
    layers: &BrokerLayers,
    names: &[&str],
) -> Vec<(String, Option<String>, i8)> {
    let mut out: Vec<(String, Option<String>, i8)> = names
        .iter()
        .flat_map(|n| {
            broker_layers_of(config, layers, n)
                .into_iter()
                .filter(|(v, _)| v.is_some())
                .map(move |(v, s)| (n.to_string(), v, s))
        })
        .collect();
    out.sort_by_key(|(_, _, s)| *s); // stable: synonyms keep their order within a source
                                     // As Kafka does, the list starts at the key itself: `log.retention.hours`' default alone is not
                                     // listed for `log.retention.ms` (or `retention.ms`) until `log.retention.ms` is set somewhere.
    let first = out
        .iter()
        .position(|(n, _, _)| Some(&n.as_str()) == names.first());
    out.drain(..first.unwrap_or(out.len()));
    out
}

fn synonym_names(broker_key: &str) -> Vec<&str> {
    match dynamic::broker_synonyms(broker_key) {
        [] => vec![broker_key],
        names => names.to_vec(),
    }
}

/// A topic key's value when the topic does not set it: a dynamic broker value, else the static one
/// Ringtide derived, else Kafka's default.
fn topic_fallback(config: &Config, layers: &BrokerLayers, k: &TopicKey) -> (Option<String>, i8) {
    let default = (k.default.map(str::to_string), SOURCE_DEFAULT);
    let Some(bk) = k.broker else {
        return default;
    };
    if let Some((v, layer)) = layers.values(bk).next() {
        return (Some(v.to_string()), layer_source(layer));
    }
    match static_value(config, bk) {
        // A broker value that differs from Kafka's default was set in server.properties or an override.
        Some(v) if Some(v.as_str()) != k.default => (Some(v), SOURCE_STATIC_BROKER),
        _ => default,
    }
}

/// The effective configs of a topic, every key Kafka lists, in Kafka's order.
pub fn topic_entries(config: &Config, meta: &ClusterMeta, topic: &TopicMeta) -> Vec<Entry> {
    let layers = meta.broker_layers(config.node_id);
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let mut synonyms = Vec::new();
            let set = topic.configs.get(k.name);
            if let Some(v) = set {
                synonyms.push((k.name.to_string(), Some(v.clone()), SOURCE_TOPIC));
            }
            if let Some(bk) = k.broker {
                synonyms.extend(synonyms_of(config, &layers, &synonym_names(bk)));
            }
            let (value, source) = match set {
                Some(v) => (Some(v.clone()), SOURCE_TOPIC),
                None => topic_fallback(config, &layers, k),
            };
            Entry {
                name: k.name.to_string(),
                value,
                source,
                read_only: false,
                sensitive: false,
                kind: k.kind,
                synonyms,
            }
        })
        .collect()
}

/// Every broker key Kafka lists, in Kafka's order, then the keys only Ringtide has (`ringtide.*`).
fn broker_entries(config: &Config, meta: &ClusterMeta) -> Vec<Entry> {
    let layers = meta.broker_layers(config.node_id);
    let entry = |name: &str, kind: ConfigType, sensitive: bool| {
        let (value, source) = broker_layers_of(config, &layers, name)
            .into_iter()
            .next()
            .unwrap_or((None, SOURCE_DEFAULT));
        Entry {
            name: name.to_string(),
            value: if sensitive { None } else { value },
            source,
            read_only: !dynamic::DYNAMIC_KEYS.contains(&name),
            sensitive,
            kind,
            synonyms: synonyms_of(config, &layers, &synonym_names(name)),
        }
    };
    let mut out: Vec<Entry> = BROKER_KEYS
        .iter()
        .map(|k| entry(k.name, k.kind, k.sensitive))
        .collect();
    out.extend(
        config
            .entries
            .keys()
            .filter(|k| broker_key(k).is_none() && crate::config::reads_key(k))
            .map(|k| entry(k, ConfigType::String, false)),
    );
    out
}

/// The cluster-wide default resource (`""`): only the keys set there, as Kafka lists them.
fn cluster_default_entries(meta: &ClusterMeta) -> Vec<Entry> {
    meta.default_broker_configs
        .iter()
        .map(|(name, value)| {
            let k = broker_key(name);
            Entry {
                name: name.clone(),
                value: Some(value.clone()),
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                read_only: false,
                sensitive: k.is_some_and(|k| k.sensitive),
                kind: k.map_or(ConfigType::String, |k| k.kind),
                synonyms: vec![(
                    name.clone(),
                    Some(value.clone()),
                    SOURCE_DYNAMIC_DEFAULT_BROKER,
                )],
            }
        })
        .collect()
}

/// A group's configs: Kafka's keys for consumer (KIP-848), share and streams groups, at their defaults
/// (Ringtide serves classic groups only, which none of these keys change).
fn group_entries() -> Vec<Entry> {
    GROUP_KEYS
        .iter()
        .map(|k| Entry {
            name: k.name.to_string(),
            value: k.default.map(str::to_string),
            source: SOURCE_DEFAULT,
            read_only: false,
            sensitive: false,
            kind: k.kind,
            synonyms: k
                .broker
                .map(|b| (b.to_string(), k.default.map(str::to_string), SOURCE_DEFAULT))
                .into_iter()
                .collect(),
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
    k.kind.check(k.name, value)?;
    if k.name == "message.timestamp.type" && value != "CreateTime" && value != "LogAppendTime" {
        return bad("String must be one of: CreateTime, LogAppendTime");
    }
    if k.name == "cleanup.policy"
        && !value
            .split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact" | ""))
    {
        return bad("String must be one of: compact, delete");
    }
    // Ranges Kafka enforces for the keys Ringtide acts on.
    let n = value.parse::<i64>().unwrap_or(0);
    match k.name {
        "segment.bytes" if n < crate::limits::SEGMENT_BYTES_TOPIC_MIN as i64 => {
            return bad("Value must be at least 1048576")
        }
        "segment.ms" | "max.message.bytes" | "min.insync.replicas" if n < 1 => {
            return bad("Value must be at least 1")
        }
        "retention.ms" | "retention.bytes" if n < -1 => return bad("Value must be at least -1"),
        "flush.messages"
        | "flush.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms"
            if n < 0 =>
        {
            return bad("Value must be at least 0")
        }
        _ => {}
    }
    if !TOPIC_KEYS_ANY_VALUE.contains(&k.name) && Some(value) != k.default {
        return Err(format!(
            "Ringtide does not support {}={value} yet: only its default ({}) is accepted",
            k.name,
            k.default.unwrap_or("none")
        ));
    }
    Ok(())
}

/// Checks a set of topic configs: known keys, well-typed values, values Ringtide honours.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        let Some(k) = topic_key(name) else {
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
            r.value = e.value.map(StrBytes::from_string);
            r.config_source = e.source;
            r.read_only = e.read_only;
            r.is_sensitive = e.sensitive;
            r.documentation = None;
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
                        syn.value = v.map(StrBytes::from_string);
                        syn.source = s;
                        syn
                    })
                    .collect();
            }
            r
        })
        .collect()
}

/// Which broker resource a name means: `Ok(None)` the cluster default, `Ok(Some(id))` this broker, or
/// Kafka's error message. `describe`: DescribeConfigs words its errors differently from AlterConfigs.
fn broker_resource(config: &Config, name: &str, describe: bool) -> Result<Option<i32>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let Ok(id) = name.parse::<i32>() else {
        let what = if describe { "Broker id" } else { "Node id" };
        return Err(format!("{what} must be an integer, but it is: {name}"));
    };
    if id != config.node_id {
        let expected = if describe {
            format!("{} or empty string", config.node_id)
        } else {
            config.node_id.to_string()
        };
        return Err(format!(
            "Unexpected broker id, expected {expected}, but received {name}"
        ));
    }
    Ok(Some(id))
}

pub async fn handle_describe(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeConfigsRequest,
    version: i16,
) -> Option<DescribeConfigsResponse> {
    let mut resp = DescribeConfigsResponse::default();
    let meta = shard.meta();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let entries = match res.resource_type {
            RESOURCE_TOPIC => match meta.topics.get(name) {
                Some(topic) => Ok(topic_entries(&shard.config, &meta, topic)),
                None => Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("Topic '{name}' does not exist."),
                )),
            },
            RESOURCE_BROKER => match broker_resource(&shard.config, name, true) {
                Ok(Some(_)) => Ok(broker_entries(&shard.config, &meta)),
                Ok(None) => Ok(cluster_default_entries(&meta)),
                Err(m) => Err((errors::INVALID_REQUEST, m)),
            },
            RESOURCE_GROUP => Ok(group_entries()),
            other => Err((
                errors::INVALID_REQUEST,
                format!("Ringtide does not describe configs of resource type {other}"),
            )),
        };
        match entries {
            Ok(entries) => {
                out.configs = describe_entries(
                    entries,
                    &res.configuration_keys,
                    req.include_synonyms,
                    version,
                )
            }
            Err((code, msg)) => {
                out.error_code = code;
                out.error_message = Some(StrBytes::from_string(msg));
            }
        }
        resp.results.push(out);
    }
    Some(resp)
}

/// One requested change to a config key.
enum Op {
    Set(String, String),
    Delete(String),
    /// APPEND (true) or SUBTRACT (false) list items.
    List(String, String, bool),
    /// An operation code IncrementalAlterConfigs does not have.
    Unknown(String, i8),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Set(k, _) | Op::Delete(k) | Op::List(k, _, _) | Op::Unknown(k, _) => k,
        }
    }
}

/// One resource's answer: (resource_type, name, error, message).
type Outcome = (i8, String, i16, Option<String>);

/// `ops` applied to `current`: `replace` = AlterConfigs semantics (the new set replaces all).
fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: Vec<Op>,
    replace: bool,
    kind_of: impl Fn(&str) -> ConfigType,
) -> Result<BTreeMap<String, String>, String> {
    let mut cfg = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for op in ops {
        match op {
            Op::Set(k, v) => {
                cfg.insert(k, v);
            }
            Op::Delete(k) => {
                cfg.remove(&k);
            }
            Op::List(k, items, append) => {
                let v = dynamic::apply_list_op(
                    kind_of(&k),
                    cfg.get(&k).map(String::as_str),
                    &items,
                    append,
                )?;
                cfg.insert(k, v);
            }
            Op::Unknown(k, op) => return Err(format!("Unknown config operation {op} for {k}")),
        }
    }
    Ok(cfg)
}

fn alter_topic(
    meta: &mut ClusterMeta,
    name: &str,
    ops: Vec<Op>,
    replace: bool,
    validate_only: bool,
) -> Result<bool, (i16, String)> {
    let Some(topic) = meta.topics.get(name).cloned() else {
        return Err((errors::UNKNOWN_TOPIC_OR_PARTITION, String::new()));
    };
    let kind = |k: &str| topic_key(k).map_or(ConfigType::String, |k| k.kind);
    let cfg =
        apply_ops(&topic.configs, ops, replace, kind).map_err(|m| (errors::INVALID_CONFIG, m))?;
    validate_topic_configs(&cfg).map_err(|m| (errors::INVALID_CONFIG, m))?;
    if validate_only || cfg == topic.configs {
        return Ok(false);
    }
    let mut t = (*topic).clone();
    t.configs = cfg;
    meta.topics.insert(name.to_string(), Arc::new(t));
    Ok(true)
}

fn alter_broker(
    config: &Config,
    meta: &mut ClusterMeta,
    name: &str,
    ops: Vec<Op>,
    replace: bool,
    validate_only: bool,
) -> Result<bool, (i16, String)> {
    let node = broker_resource(config, name, false).map_err(|m| (errors::INVALID_REQUEST, m))?;
    let current = match node {
        Some(id) => meta.broker_configs.get(&id).cloned().unwrap_or_default(),
        None => meta.default_broker_configs.clone(),
    };
    let kind = |k: &str| broker_key(k).map_or(ConfigType::String, |k| k.kind);
    let cfg = apply_ops(&current, ops, replace, kind).map_err(|m| (errors::INVALID_CONFIG, m))?;
    let refused = |r: Refusal| match r {
        Refusal::Request(m) => (errors::INVALID_REQUEST, m),
        Refusal::Config(m) => (errors::INVALID_CONFIG, m),
    };
    for k in current.keys().filter(|k| !cfg.contains_key(*k)) {
        dynamic::check_change(k, None, node.is_none()).map_err(refused)?;
    }
    for (k, v) in cfg.iter().filter(|(k, v)| current.get(*k) != Some(*v)) {
        dynamic::check_change(k, Some(v), node.is_none()).map_err(refused)?;
    }
    if validate_only || cfg == current {
        return Ok(false);
    }
    match node {
        Some(id) if cfg.is_empty() => {
            meta.broker_configs.remove(&id);
        }
        Some(id) => {
            meta.broker_configs.insert(id, cfg);
        }
        None => meta.default_broker_configs = cfg,
    }
    Ok(true)
}

/// Group configs apply to consumer (KIP-848), share and streams groups, which Ringtide does not serve
/// yet: every change is refused (unknown keys with Kafka's message).
fn alter_group(ops: &[Op]) -> Result<bool, (i16, String)> {
    for op in ops {
        let k = op.key();
        if group_key(k).is_none() {
            return Err((
                errors::INVALID_CONFIG,
                format!("Unknown group config name: {k}"),
            ));
        }
    }
    match ops.first() {
        None => Ok(false),
        Some(op) => Err((
            errors::INVALID_CONFIG,
            format!(
                "Group config {} applies to consumer, share and streams groups, which Ringtide does \
                 not serve yet (classic groups take their settings from the members)",
                op.key()
            ),
        )),
    }
}

/// Applies config changes on core 0, resource by resource, in request order.
async fn alter(
    shard: &Rc<Shard>,
    changes: Vec<(i8, String, Vec<Op>)>,
    replace: bool,
    validate_only: bool,
) -> Vec<Outcome> {
    let fallback: Vec<Outcome> = changes
        .iter()
        .map(|(t, n, _)| (*t, n.clone(), errors::UNKNOWN_SERVER_ERROR, None))
        .collect();
    // Cross-core hop: configs are metadata, written by core 0.
    shard
        .invoke_on(0, move |s| async move {
            let config = s.config.clone();
            s.controller_mutate(|meta| {
                let mut changed = false;
                let out = changes
                    .into_iter()
                    .map(|(rtype, name, ops)| {
                        let mut seen = std::collections::HashSet::new();
                        let result = if !ops.iter().all(|op| seen.insert(op.key().to_string())) {
                            Err((
                                errors::INVALID_REQUEST,
                                "Error due to duplicate config keys".to_string(),
                            ))
                        } else {
                            match rtype {
                                RESOURCE_TOPIC => {
                                    alter_topic(meta, &name, ops, replace, validate_only)
                                }
                                RESOURCE_BROKER => {
                                    alter_broker(&config, meta, &name, ops, replace, validate_only)
                                }
                                RESOURCE_GROUP => alter_group(&ops),
                                other => Err((
                                    errors::INVALID_REQUEST,
                                    format!(
                                        "Ringtide does not alter configs of resource type {other}"
                                    ),
                                )),
                            }
                        };
                        match result {
                            Ok(c) => {
                                changed |= c;
                                (rtype, name, errors::NONE, None)
                            }
                            Err((code, msg)) => {
                                (rtype, name, code, (!msg.is_empty()).then_some(msg))
                            }
                        }
                    })
                    .collect::<Vec<_>>();
                (changed, out)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "persisting metadata failed");
                let code = match crate::dispatch::admin::metadata_error_code(&e) {
                    errors::REQUEST_TIMED_OUT => errors::REQUEST_TIMED_OUT,
                    _ => errors::UNKNOWN_SERVER_ERROR,
                };
                fallback
                    .into_iter()
                    .map(|(t, n, _, m)| (t, n, code, m))
                    .collect()
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
                .map(|c| match c.value {
                    Some(v) => Op::Set(c.name.to_string(), v.to_string()),
                    None => Op::Delete(c.name.to_string()),
                })
                .collect();
            (r.resource_type, r.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter(shard, changes, true, req.validate_only).await;
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
                        OP_SET => Op::Set(k, v),
                        OP_DELETE => Op::Delete(k),
                        OP_APPEND => Op::List(k, v, true),
                        OP_SUBTRACT => Op::List(k, v, false),
                        op => Op::Unknown(k, op),
                    }
                })
                .collect();
            (r.resource_type, r.resource_name.to_string(), ops)
        })
        .collect();
    let results = alter(shard, changes, false, req.validate_only).await;
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
    fn broker_changes() {
        let config = Config::load(None, &[]).unwrap();
        let mut meta = ClusterMeta::new_cluster();
        let set = |k: &str, v: &str| vec![Op::Set(k.into(), v.into())];
        assert_eq!(
            alter_broker(
                &config,
                &mut meta,
                "1",
                set("log.retention.ms", "5"),
                false,
                false
            ),
            Ok(true)
        );
        assert_eq!(meta.broker_configs[&1]["log.retention.ms"], "5");
        assert_eq!(
            alter_broker(
                &config,
                &mut meta,
                "",
                set("log.retention.ms", "6"),
                false,
                true
            ),
            Ok(false),
            "validate_only changes nothing"
        );
        assert!(!meta.default_broker_configs.contains_key("log.retention.ms"));
        let err = |r: Result<bool, (i16, String)>| r.unwrap_err().0;
        assert_eq!(
            err(alter_broker(
                &config,
                &mut meta,
                "7",
                set("log.retention.ms", "5"),
                false,
                false
            )),
            errors::INVALID_REQUEST
        );
        assert_eq!(
            err(alter_broker(
                &config,
                &mut meta,
                "1",
                set("num.partitions", "5"),
                false,
                false
            )),
            errors::INVALID_REQUEST
        );
        // AlterConfigs replaces the whole cluster default: min.insync.replicas may not go.
        assert_eq!(
            err(alter_broker(
                &config,
                &mut meta,
                "",
                set("log.retention.ms", "5"),
                true,
                false
            )),
            errors::INVALID_CONFIG
        );
        // Removing the last per-broker key removes the broker's entry.
        assert_eq!(
            alter_broker(
                &config,
                &mut meta,
                "1",
                vec![Op::Delete("log.retention.ms".into())],
                false,
                false
            ),
            Ok(true)
        );
        assert!(meta.broker_configs.is_empty());
        let entries = broker_entries(&config, &meta);
        assert!(entries.len() >= BROKER_KEYS.len());
        // A key Ringtide does not read says what Ringtide does instead of Kafka's default.
        let threads = entries.iter().find(|e| e.name == "num.io.threads").unwrap();
        assert_eq!(threads.value, Some(config.cores.to_string()));
    }

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
        // A key Ringtide does not act on is taken at its default only.
        let mut c = BTreeMap::new();
        c.insert("compression.gzip.level".to_string(), "-1".to_string());
        assert!(validate_topic_configs(&c).is_ok());
        c.insert("compression.gzip.level".to_string(), "5".to_string());
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
            assignment: Vec::new(),
        };
        assert_eq!(
            log_config(&config, &BrokerLayers::NONE, &topic).segment_bytes,
            1 << 30
        );
        topic
            .configs
            .insert("segment.bytes".into(), "1048576".into());
        topic
            .configs
            .insert("message.timestamp.type".into(), "LogAppendTime".into());
        let lc = log_config(&config, &BrokerLayers::NONE, &topic);
        assert_eq!(lc.segment_bytes, 1 << 20);
        assert!(lc.log_append_time);
        let mut meta = ClusterMeta::new_cluster();
        let e = topic_entries(&config, &meta, &topic);
        assert_eq!(e.len(), TOPIC_KEYS.len());
        let find = |e: &[Entry], name: &str| {
            let x = e.iter().find(|x| x.name == name).unwrap();
            (x.value.clone().unwrap(), x.source)
        };
        assert_eq!(find(&e, "segment.bytes"), ("1048576".into(), SOURCE_TOPIC));
        assert_eq!(
            find(&e, "retention.ms"),
            ("604800000".into(), SOURCE_DEFAULT)
        );
        // A fresh cluster has min.insync.replicas as a cluster-wide dynamic default, as Kafka 4 has.
        assert_eq!(
            find(&e, "min.insync.replicas"),
            ("1".into(), SOURCE_DYNAMIC_DEFAULT_BROKER)
        );
        // A dynamic broker value beats the cluster default and the static value; the topic beats both.
        meta.default_broker_configs
            .insert("log.retention.ms".into(), "1000".into());
        meta.broker_configs.insert(
            config.node_id,
            [("log.retention.ms".to_string(), "2000".to_string())].into(),
        );
        let e = topic_entries(&config, &meta, &topic);
        assert_eq!(
            find(&e, "retention.ms"),
            ("2000".into(), SOURCE_DYNAMIC_BROKER)
        );
        let lc = log_config(&config, &meta.broker_layers(config.node_id), &topic);
        assert_eq!(lc.retention_ms, 2000);
        topic.configs.insert("retention.ms".into(), "3000".into());
        let lc = log_config(&config, &meta.broker_layers(config.node_id), &topic);
        assert_eq!(lc.retention_ms, 3000);
    }
}
