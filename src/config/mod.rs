//! Broker configuration: Kafka's `server.properties` keys, plus `ringtide.*` keys for what Kafka lacks.
//!
//! Read once at start-up on the main thread, then shared read-only with every core (`Arc<Config>`).
//! An unknown key is a warning (operators bring their Kafka files along); an invalid value is an error that
//! names the key and the accepted values, and the broker exits non-zero.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::limits;

pub mod dynamic;
pub mod kafka_keys;
pub mod keys;

use dynamic::BrokerLayers;

/// Where a configuration value came from, for `--print-config` and DescribeConfigs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Override,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid value {value:?} for {key}: {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("--override expects key=value, got {0:?}")]
    BadOverride(String),
}

/// One listener, `NAME://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// The effective broker configuration. Owned by the main thread, shared read-only (`Arc`) by every core.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: i32,
    pub listener: Listener,
    pub advertised: Listener,
    pub log_dirs: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often each core checkpoints its partitions'
    /// recovery points (and the active segments' indexes and producer snapshots that go with them).
    pub log_flush_offset_checkpoint_interval_ms: u64,
    pub log_index_interval_bytes: u64,
    pub log_flush_interval_messages: Option<u64>,
    pub log_flush_interval_ms: Option<u64>,
    pub log_message_timestamp_type_log_append: bool,
    /// `log.message.timestamp.before.max.ms`.
    pub log_message_timestamp_before_max_ms: i64,
    /// `log.message.timestamp.after.max.ms`.
    pub log_message_timestamp_after_max_ms: i64,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    /// `max.connections`: client connections over the whole broker.
    pub max_connections: usize,
    /// `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// `queued.max.request.bytes`, per core (`-1` = unlimited = `u64::MAX`).
    pub queued_max_request_bytes: u64,
    /// `fetch.max.bytes`: the most record bytes one Fetch answer holds.
    pub fetch_max_bytes: usize,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions over the whole broker (each core keeps
    /// `slots / cores`).
    pub max_incremental_fetch_session_cache_slots: usize,
    /// `producer.id.expiration.ms`: idle time after which a partition forgets a producer id.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`: how often each core expires producer ids.
    pub producer_id_expiration_check_interval_ms: u64,
    pub cores: usize,
    pub io_memory_bytes: usize,
    pub tail_cache_bytes: usize,
    /// Admin HTTP listener (`/metrics`, `/v1/status`); `None` when disabled.
    pub admin_listener: Option<(String, u16)>,
    /// Group coordinator settings (`group.*`, `offsets.*`).
    pub group: GroupConfig,
    /// The transaction coordinator's settings.
    pub txn: TxnConfig,
    /// `log.cleanup.policy`: the default of topics' `cleanup.policy`.
    pub log_cleanup_policy: String,
    /// The log cleaner's settings (`log.cleaner.*`).
    pub log_cleaner: CleanerConfig,
    /// Cluster mode: `zookeeper.connect` and its timeouts (`None`: a single broker, no ZooKeeper).
    pub zookeeper: Option<ZookeeperConfig>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Every key with its effective value and source, for DescribeConfigs and `--print-config`.
    pub entries: BTreeMap<String, (String, Source)>,
}

/// `zookeeper.connect` and the session settings Kafka 2.x reads with it.
#[derive(Debug, Clone)]
pub struct ZookeeperConfig {
    /// `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// `zookeeper.session.timeout.ms` (Kafka's default 18000).
    pub session_timeout_ms: u64,
    /// `zookeeper.connection.timeout.ms` (defaults to the session timeout, as in Kafka).
    pub connection_timeout_ms: u64,
}

/// Keys Kafka brokers accept that Ringtide reads. Anything else warns.
const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.flush.offset.checkpoint.interval.ms",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.message.timestamp.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "message.max.bytes",
    "socket.request.max.bytes",
    "max.connections",
    "connections.max.idle.ms",
    "queued.max.request.bytes",
    "fetch.max.bytes",
    "max.incremental.fetch.session.cache.slots",
    "producer.id.expiration.ms",
    "producer.id.expiration.check.interval.ms",
    "ringtide.cores",
    "ringtide.io.memory.bytes",
    "ringtide.tail.cache.bytes",
    "ringtide.admin.listener",
    "zookeeper.connect",
    "zookeeper.session.timeout.ms",
    "zookeeper.connection.timeout.ms",
    "broker.rack",
    "offsets.topic.num.partitions",
    "offsets.topic.segment.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "log.cleanup.policy",
    "log.cleaner.enable",
    "log.cleaner.threads",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.backoff.ms",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "transaction.state.log.num.partitions",
    "transaction.state.log.segment.bytes",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transaction.remove.expired.transaction.cleanup.interval.ms",
];

/// Whether the broker reads `key` from `server.properties` (other keys are warned about and ignored).
pub fn reads_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

fn defaults() -> Vec<(&'static str, String)> {
    vec![
        ("node.id", "1".into()),
        ("listeners", "PLAINTEXT://0.0.0.0:9092".into()),
        ("advertised.listeners", "PLAINTEXT://localhost:9092".into()),
        ("log.dirs", "ringtide-data".into()),
        ("num.partitions", "1".into()),
        ("default.replication.factor", "1".into()),
        ("auto.create.topics.enable", "true".into()),
        ("log.segment.bytes", "1073741824".into()),
        ("log.roll.hours", "168".into()),
        ("log.retention.hours", "168".into()),
        ("log.retention.bytes", "-1".into()),
        ("log.retention.check.interval.ms", "300000".into()),
        (
            "log.flush.offset.checkpoint.interval.ms",
            crate::storage::RECOVERY_POINT_CHECKPOINT_INTERVAL_MS_DEFAULT.to_string(),
        ),
        ("log.index.interval.bytes", "4096".into()),
        ("log.message.timestamp.type", "CreateTime".into()),
        ("log.message.timestamp.before.max.ms", i64::MAX.to_string()),
        ("log.message.timestamp.after.max.ms", "3600000".into()),
        (
            "message.max.bytes",
            limits::MESSAGE_MAX_BYTES_DEFAULT.to_string(),
        ),
        (
            "socket.request.max.bytes",
            limits::SOCKET_REQUEST_MAX_BYTES_DEFAULT.to_string(),
        ),
        (
            "max.connections",
            limits::MAX_CONNECTIONS_DEFAULT.to_string(),
        ),
        (
            "connections.max.idle.ms",
            limits::CONNECTIONS_MAX_IDLE_MS_DEFAULT.to_string(),
        ),
        (
            "queued.max.request.bytes",
            limits::QUEUED_MAX_REQUEST_BYTES_DEFAULT.to_string(),
        ),
        (
            "fetch.max.bytes",
            limits::FETCH_MAX_BYTES_DEFAULT.to_string(),
        ),
        (
            "max.incremental.fetch.session.cache.slots",
            limits::MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS_DEFAULT.to_string(),
        ),
        (
            "producer.id.expiration.ms",
            limits::PRODUCER_ID_EXPIRATION_MS_DEFAULT.to_string(),
        ),
        (
            "producer.id.expiration.check.interval.ms",
            limits::PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT.to_string(),
        ),
        (
            "ringtide.io.memory.bytes",
            limits::IO_MEMORY_BYTES_DEFAULT.to_string(),
        ),
        ("ringtide.tail.cache.bytes", (8 * 1024 * 1024).to_string()),
        ("ringtide.admin.listener", "127.0.0.1:9644".into()),
        ("offsets.topic.num.partitions", "50".into()),
        ("offsets.topic.segment.bytes", "104857600".into()),
        ("offsets.retention.minutes", "10080".into()),
        ("offsets.retention.check.interval.ms", "600000".into()),
        ("group.initial.rebalance.delay.ms", "3000".into()),
        ("group.min.session.timeout.ms", "6000".into()),
        ("group.max.session.timeout.ms", "1800000".into()),
        ("group.max.size", i32::MAX.to_string()),
        ("log.cleanup.policy", "delete".into()),
        ("log.cleaner.enable", "true".into()),
        ("log.cleaner.threads", "1".into()),
        (
            "log.cleaner.dedupe.buffer.size",
            limits::LOG_CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT.to_string(),
        ),
        (
            "log.cleaner.io.max.bytes.per.second",
            "1.7976931348623157E308".into(),
        ),
        ("log.cleaner.backoff.ms", "15000".into()),
        ("log.cleaner.delete.retention.ms", "86400000".into()),
        ("log.cleaner.min.compaction.lag.ms", "0".into()),
        ("log.cleaner.max.compaction.lag.ms", i64::MAX.to_string()),
        ("transaction.state.log.num.partitions", "50".into()),
        ("transaction.state.log.segment.bytes", "104857600".into()),
        ("transaction.max.timeout.ms", "900000".into()),
        ("transactional.id.expiration.ms", "604800000".into()),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "10000".into(),
        ),
        (
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            "3600000".into(),
        ),
        ("log.cleaner.min.cleanable.ratio", "0.5".into()),
    ]
}

/// Parses Java-properties text: `key=value`, `key: value` or `key value`; `#` and `!` start comments;
/// a trailing backslash continues the line.
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':', ' ', '\t']);
        let (key, value) = match split {
            Some(i) => {
                let value = entry[i + 1..].trim_start();
                let value = value
                    .strip_prefix('=')
                    .or_else(|| value.strip_prefix(':'))
                    .unwrap_or(value);
                (entry[..i].trim(), value.trim())
            }
            None => (entry.trim(), ""),
        };
        if !key.is_empty() {
            out.push((key.to_string(), value.to_string()));
        }
    }
    out
}

fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    key: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(invalid(
            key,
            value,
            &format!("an integer from {min} to {max}"),
        )),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "true or false")),
    }
}

/// Parses `NAME://host:port` (the first of a comma-separated list; one listener for now).
pub fn parse_listener(key: &str, value: &str) -> Result<Listener, ConfigError> {
    let expected = "NAME://host:port, e.g. PLAINTEXT://0.0.0.0:9092 (one PLAINTEXT listener)";
    let first = value.split(',').next().unwrap_or("").trim();
    let (name, rest) = first
        .split_once("://")
        .ok_or_else(|| invalid(key, value, expected))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, value, expected))?;
    let port: u16 = port.parse().map_err(|_| invalid(key, value, expected))?;
    if name != "PLAINTEXT" {
        return Err(invalid(key, value, expected));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Listener {
        name: name.to_string(),
        host,
        port,
    })
}

impl Config {
    /// The effective configuration as properties text, each line with where its value came from.
    pub fn describe(&self) -> String {
        let width = self.entries.keys().map(|k| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, (value, source)) in &self.entries {
            let from = match source {
                Source::Default => "default",
                Source::File => "file",
                Source::Override => "override",
            };
            let line = format!("{key}={value}");
            out.push_str(&format!("{line:<w$}  # {from}\n", w = width + 20));
        }
        out
    }

    /// Builds the configuration: defaults, then the file (if any), then overrides in order.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let mut entries: BTreeMap<String, (String, Source)> = defaults()
            .into_iter()
            .map(|(k, v)| (k.to_string(), (v, Source::Default)))
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            for (k, v) in parse_properties(&text) {
                entries.insert(k, (v, Source::File));
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            entries.insert(
                k.trim().to_string(),
                (v.trim().to_string(), Source::Override),
            );
        }
        Self::from_entries(entries)
    }

    fn from_entries(
        mut entries: BTreeMap<String, (String, Source)>,
    ) -> Result<Config, ConfigError> {
        for key in entries.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                tracing::warn!(key = %key, "unknown configuration key ignored");
            }
        }
        // Aliases: the more specific key wins, as in Kafka.
        let get = |entries: &BTreeMap<String, (String, Source)>, k: &str| -> Option<String> {
            entries.get(k).map(|(v, _)| v.clone())
        };
        let explicit = |entries: &BTreeMap<String, (String, Source)>, k: &str| -> Option<String> {
            entries
                .get(k)
                .filter(|(_, s)| *s != Source::Default)
                .map(|(v, _)| v.clone())
        };

        let node_id =
            match explicit(&entries, "node.id").or_else(|| explicit(&entries, "broker.id")) {
                Some(v) => parse_num("node.id", &v, 0i32, i32::MAX)?,
                None => 1,
            };
        let listener =
            parse_listener("listeners", &get(&entries, "listeners").unwrap_or_default())?;
        let advertised = match explicit(&entries, "advertised.listeners") {
            Some(v) => parse_listener("advertised.listeners", &v)?,
            None if explicit(&entries, "listeners").is_some() => {
                // Kafka advertises the listener itself when advertised.listeners is not set.
                let mut l = listener.clone();
                if l.host.is_empty() || l.host == "0.0.0.0" || l.host == "::" {
                    l.host = "localhost".into();
                }
                l
            }
            None => parse_listener(
                "advertised.listeners",
                &format!("PLAINTEXT://localhost:{}", listener.port),
            )?,
        };
        let log_dirs = explicit(&entries, "log.dirs")
            .or_else(|| explicit(&entries, "log.dir"))
            .or_else(|| get(&entries, "log.dirs"))
            .unwrap_or_default();
        if log_dirs.contains(',') {
            return Err(invalid(
                "log.dirs",
                &log_dirs,
                "a single directory (JBOD is not supported yet)",
            ));
        }
        let num_partitions = parse_num(
            "num.partitions",
            &get(&entries, "num.partitions").unwrap_or_default(),
            1,
            limits::TOPIC_PARTITIONS_MAX,
        )?;
        let default_replication_factor = parse_num(
            "default.replication.factor",
            &get(&entries, "default.replication.factor").unwrap_or_default(),
            1i16,
            1,
        )
        .map_err(|_| {
            invalid(
                "default.replication.factor",
                &get(&entries, "default.replication.factor").unwrap_or_default(),
                "1 (Ringtide runs one broker until replication exists)",
            )
        })?;
        let auto_create_topics_enable = parse_bool(
            "auto.create.topics.enable",
            &get(&entries, "auto.create.topics.enable").unwrap_or_default(),
        )?;
        let log_segment_bytes = parse_num(
            "log.segment.bytes",
            &get(&entries, "log.segment.bytes").unwrap_or_default(),
            14u64,
            i32::MAX as u64,
        )?;
        let hours_ms = 3_600_000i64;
        let log_roll_ms = match explicit(&entries, "log.roll.ms") {
            Some(v) => parse_num("log.roll.ms", &v, 1i64, i64::MAX)?,
            None => {
                parse_num(
                    "log.roll.hours",
                    &get(&entries, "log.roll.hours").unwrap_or_default(),
                    1i64,
                    i64::MAX / hours_ms,
                )? * hours_ms
            }
        };
        let log_retention_ms = if let Some(v) = explicit(&entries, "log.retention.ms") {
            parse_num("log.retention.ms", &v, -1i64, i64::MAX)?
        } else if let Some(v) = explicit(&entries, "log.retention.minutes") {
            let m = parse_num("log.retention.minutes", &v, -1i64, i64::MAX / 60_000)?;
            if m < 0 {
                -1
            } else {
                m * 60_000
            }
        } else {
            let h = parse_num(
                "log.retention.hours",
                &get(&entries, "log.retention.hours").unwrap_or_default(),
                -1i64,
                i64::MAX / hours_ms,
            )?;
            if h < 0 {
                -1
            } else {
                h * hours_ms
            }
        };
        let log_retention_bytes = parse_num(
            "log.retention.bytes",
            &get(&entries, "log.retention.bytes").unwrap_or_default(),
            -1i64,
            i64::MAX,
        )?;
        let log_retention_check_interval_ms = parse_num(
            "log.retention.check.interval.ms",
            &get(&entries, "log.retention.check.interval.ms").unwrap_or_default(),
            1u64,
            u64::MAX,
        )?;
        let log_flush_offset_checkpoint_interval_ms = parse_num(
            "log.flush.offset.checkpoint.interval.ms",
            &get(&entries, "log.flush.offset.checkpoint.interval.ms").unwrap_or_default(),
            1u64,
            i32::MAX as u64,
        )?;
        let log_index_interval_bytes = parse_num(
            "log.index.interval.bytes",
            &get(&entries, "log.index.interval.bytes").unwrap_or_default(),
            0u64,
            i32::MAX as u64,
        )?;
        let log_flush_interval_messages = explicit(&entries, "log.flush.interval.messages")
            .map(|v| parse_num("log.flush.interval.messages", &v, 1u64, u64::MAX))
            .transpose()?
            .filter(|v| *v != i64::MAX as u64);
        let log_flush_interval_ms = explicit(&entries, "log.flush.interval.ms")
            .map(|v| parse_num("log.flush.interval.ms", &v, 0u64, u64::MAX))
            .transpose()?
            .filter(|v| *v != i64::MAX as u64);
        let ts_type = get(&entries, "log.message.timestamp.type").unwrap_or_default();
        let log_message_timestamp_type_log_append = match ts_type.as_str() {
            "CreateTime" => false,
            "LogAppendTime" => true,
            _ => {
                return Err(invalid(
                    "log.message.timestamp.type",
                    &ts_type,
                    "CreateTime or LogAppendTime",
                ))
            }
        };
        let log_message_timestamp_before_max_ms = parse_num(
            "log.message.timestamp.before.max.ms",
            &get(&entries, "log.message.timestamp.before.max.ms").unwrap_or_default(),
            0i64,
            i64::MAX,
        )?;
        let log_message_timestamp_after_max_ms = parse_num(
            "log.message.timestamp.after.max.ms",
            &get(&entries, "log.message.timestamp.after.max.ms").unwrap_or_default(),
            0i64,
            i64::MAX,
        )?;
        let socket_request_max_bytes = parse_num(
            "socket.request.max.bytes",
            &get(&entries, "socket.request.max.bytes").unwrap_or_default(),
            limits::REQUEST_HEADER_BYTES_MIN,
            i32::MAX as usize,
        )?;
        let max_connections = parse_num(
            "max.connections",
            &get(&entries, "max.connections").unwrap_or_default(),
            0usize,
            i32::MAX as usize,
        )?;
        let connections_max_idle_ms = parse_num(
            "connections.max.idle.ms",
            &get(&entries, "connections.max.idle.ms").unwrap_or_default(),
            1u64,
            i64::MAX as u64,
        )?;
        let queued_max_request_bytes = match get(&entries, "queued.max.request.bytes")
            .unwrap_or_default()
            .trim()
        {
            "-1" => u64::MAX,
            v => parse_num(
                "queued.max.request.bytes",
                v,
                limits::QUEUED_MAX_REQUEST_BYTES_MIN,
                i64::MAX as u64,
            )?,
        };
        let fetch_max_bytes = parse_num(
            "fetch.max.bytes",
            &get(&entries, "fetch.max.bytes").unwrap_or_default(),
            limits::FETCH_MAX_BYTES_MIN,
            limits::FETCH_MAX_BYTES_MAX,
        )?;
        // Kafka: INT, at least 0 (0 = no sessions: every fetch is answered sessionless).
        let max_incremental_fetch_session_cache_slots = parse_num(
            "max.incremental.fetch.session.cache.slots",
            &get(&entries, "max.incremental.fetch.session.cache.slots").unwrap_or_default(),
            0usize,
            i32::MAX as usize,
        )?;
        let producer_id_expiration_ms = parse_num(
            "producer.id.expiration.ms",
            &get(&entries, "producer.id.expiration.ms").unwrap_or_default(),
            1i64,
            limits::PRODUCER_ID_EXPIRATION_MS_MAX,
        )?;
        let producer_id_expiration_check_interval_ms = parse_num(
            "producer.id.expiration.check.interval.ms",
            &get(&entries, "producer.id.expiration.check.interval.ms").unwrap_or_default(),
            1u64,
            limits::PRODUCER_ID_EXPIRATION_MS_MAX as u64,
        )?;
        let message_max_bytes = parse_num(
            "message.max.bytes",
            &get(&entries, "message.max.bytes").unwrap_or_default(),
            0usize,
            socket_request_max_bytes,
        )?;
        let available = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = match explicit(&entries, "ringtide.cores") {
            Some(v) => parse_num("ringtide.cores", &v, 1usize, available)?,
            None => available,
        };
        let cores_source = entries
            .get("ringtide.cores")
            .map_or(Source::Default, |(_, s)| *s);
        entries.insert("ringtide.cores".into(), (cores.to_string(), cores_source));
        let io_memory_bytes = parse_num(
            "ringtide.io.memory.bytes",
            &get(&entries, "ringtide.io.memory.bytes").unwrap_or_default(),
            64 * 1024usize,
            1 << 30,
        )?;
        let tail_cache_bytes = parse_num(
            "ringtide.tail.cache.bytes",
            &get(&entries, "ringtide.tail.cache.bytes").unwrap_or_default(),
            0usize,
            1 << 34,
        )?;
        let num = |k: &str| get(&entries, k).unwrap_or_default();
        let group = GroupConfig {
            offsets_topic_segment_bytes: parse_num(
                "offsets.topic.segment.bytes",
                &num("offsets.topic.segment.bytes"),
                limits::SEGMENT_BYTES_TOPIC_MIN,
                i32::MAX as u64,
            )?,
            offsets_topic_partitions: parse_num(
                "offsets.topic.num.partitions",
                &num("offsets.topic.num.partitions"),
                1,
                limits::TOPIC_PARTITIONS_MAX,
            )?,
            offsets_retention_ms: parse_num(
                "offsets.retention.minutes",
                &num("offsets.retention.minutes"),
                1i64,
                i64::MAX / 60_000,
            )? * 60_000,
            offsets_retention_check_interval_ms: parse_num(
                "offsets.retention.check.interval.ms",
                &num("offsets.retention.check.interval.ms"),
                1u64,
                u64::MAX,
            )?,
            initial_rebalance_delay_ms: parse_num(
                "group.initial.rebalance.delay.ms",
                &num("group.initial.rebalance.delay.ms"),
                0i64,
                i32::MAX as i64,
            )?,
            min_session_timeout_ms: parse_num(
                "group.min.session.timeout.ms",
                &num("group.min.session.timeout.ms"),
                0i32,
                i32::MAX,
            )?,
            max_session_timeout_ms: parse_num(
                "group.max.session.timeout.ms",
                &num("group.max.session.timeout.ms"),
                0i32,
                i32::MAX,
            )?,
            max_size: parse_num(
                "group.max.size",
                &num("group.max.size"),
                1usize,
                i32::MAX as usize,
            )?,
        };
        let txn = TxnConfig {
            state_topic_partitions: parse_num(
                "transaction.state.log.num.partitions",
                &num("transaction.state.log.num.partitions"),
                1,
                limits::TOPIC_PARTITIONS_MAX,
            )?,
            state_topic_segment_bytes: parse_num(
                "transaction.state.log.segment.bytes",
                &num("transaction.state.log.segment.bytes"),
                limits::SEGMENT_BYTES_TOPIC_MIN,
                i32::MAX as u64,
            )?,
            max_timeout_ms: parse_num(
                "transaction.max.timeout.ms",
                &num("transaction.max.timeout.ms"),
                1i32,
                i32::MAX,
            )?,
            id_expiration_ms: parse_num(
                "transactional.id.expiration.ms",
                &num("transactional.id.expiration.ms"),
                1i64,
                i32::MAX as i64,
            )?,
            abort_timed_out_interval_ms: parse_num(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                &num("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
                1u64,
                i32::MAX as u64,
            )?,
            remove_expired_interval_ms: parse_num(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                &num("transaction.remove.expired.transaction.cleanup.interval.ms"),
                1u64,
                i32::MAX as u64,
            )?,
        };
        let log_cleanup_policy = num("log.cleanup.policy");
        if !log_cleanup_policy
            .split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact"))
        {
            return Err(invalid(
                "log.cleanup.policy",
                &log_cleanup_policy,
                "delete, compact or compact,delete",
            ));
        }
        let ratio = num("log.cleaner.min.cleanable.ratio");
        let min_cleanable_ratio = match ratio.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                return Err(invalid(
                    "log.cleaner.min.cleanable.ratio",
                    &ratio,
                    "a number from 0 to 1",
                ))
            }
        };
        let io_rate = num("log.cleaner.io.max.bytes.per.second");
        let io_max_bytes_per_second = match io_rate.trim().parse::<f64>() {
            Ok(r) if r > 0.0 => r,
            _ => {
                return Err(invalid(
                    "log.cleaner.io.max.bytes.per.second",
                    &io_rate,
                    "a positive number",
                ))
            }
        };
        let log_cleaner = CleanerConfig {
            enable: parse_bool("log.cleaner.enable", &num("log.cleaner.enable"))?,
            threads: parse_num(
                "log.cleaner.threads",
                &num("log.cleaner.threads"),
                1usize,
                i32::MAX as usize,
            )?,
            dedupe_buffer_bytes: parse_num(
                "log.cleaner.dedupe.buffer.size",
                &num("log.cleaner.dedupe.buffer.size"),
                limits::LOG_CLEANER_DEDUPE_BUFFER_BYTES_MIN,
                limits::LOG_CLEANER_DEDUPE_BUFFER_BYTES_MAX,
            )?,
            io_max_bytes_per_second,
            backoff_ms: parse_num(
                "log.cleaner.backoff.ms",
                &num("log.cleaner.backoff.ms"),
                0u64,
                i64::MAX as u64,
            )?,
            delete_retention_ms: parse_num(
                "log.cleaner.delete.retention.ms",
                &num("log.cleaner.delete.retention.ms"),
                0i64,
                i64::MAX,
            )?,
            min_compaction_lag_ms: parse_num(
                "log.cleaner.min.compaction.lag.ms",
                &num("log.cleaner.min.compaction.lag.ms"),
                0i64,
                i64::MAX,
            )?,
            max_compaction_lag_ms: parse_num(
                "log.cleaner.max.compaction.lag.ms",
                &num("log.cleaner.max.compaction.lag.ms"),
                1i64,
                i64::MAX,
            )?,
            min_cleanable_ratio,
        };
        let admin = get(&entries, "ringtide.admin.listener").unwrap_or_default();
        let admin_listener = match admin.trim() {
            "" | "none" => None,
            a => {
                let bad = || {
                    invalid(
                        "ringtide.admin.listener",
                        a,
                        "host:port, or none to disable",
                    )
                };
                let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
                let port: u16 = port.parse().map_err(|_| bad())?;
                Some((
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port,
                ))
            }
        };
        let zookeeper = match explicit(&entries, "zookeeper.connect") {
            Some(connect) if !connect.trim().is_empty() => {
                let session_timeout_ms = match get(&entries, "zookeeper.session.timeout.ms") {
                    Some(v) => parse_num("zookeeper.session.timeout.ms", &v, 1u64, 3_600_000)?,
                    None => 18_000,
                };
                let connection_timeout_ms =
                    match explicit(&entries, "zookeeper.connection.timeout.ms") {
                        Some(v) => {
                            parse_num("zookeeper.connection.timeout.ms", &v, 1u64, 3_600_000)?
                        }
                        None => session_timeout_ms,
                    };
                Some(ZookeeperConfig {
                    connect: connect.trim().to_string(),
                    session_timeout_ms,
                    connection_timeout_ms,
                })
            }
            _ => None,
        };
        let rack = explicit(&entries, "broker.rack").filter(|r| !r.is_empty());
        Ok(Config {
            zookeeper,
            rack,
            node_id,
            listener,
            advertised,
            log_dirs: PathBuf::from(log_dirs),
            num_partitions,
            default_replication_factor,
            auto_create_topics_enable,
            log_segment_bytes,
            log_roll_ms,
            log_retention_ms,
            log_retention_bytes,
            log_retention_check_interval_ms,
            log_flush_offset_checkpoint_interval_ms,
            log_index_interval_bytes,
            log_flush_interval_messages,
            log_flush_interval_ms,
            log_message_timestamp_type_log_append,
            log_message_timestamp_before_max_ms,
            log_message_timestamp_after_max_ms,
            message_max_bytes,
            socket_request_max_bytes,
            max_connections,
            connections_max_idle_ms,
            queued_max_request_bytes,
            fetch_max_bytes,
            max_incremental_fetch_session_cache_slots,
            producer_id_expiration_ms,
            producer_id_expiration_check_interval_ms,
            cores,
            io_memory_bytes,
            tail_cache_bytes,
            admin_listener,
            group,
            txn,
            log_cleanup_policy,
            log_cleaner,
            entries,
        })
    }
}

/// The log cleaner's settings (Kafka's `log.cleaner.*` keys). Every core cleans the compacted partitions
/// it owns, each with its share (1 / cores) of the dedupe buffer and of the I/O rate, as Kafka divides
/// them among its cleaner threads; `log.cleaner.threads` is read but not used (a warning says so when
/// it is set to anything but 1).
#[derive(Clone, Debug, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.threads`.
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: memory of the key → offset map over all cleaners.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`, per core.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning.
    pub backoff_ms: u64,
    /// `log.cleaner.delete.retention.ms`: the default of topics' `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `log.cleaner.min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `log.cleaner.min.cleanable.ratio`.
    pub min_cleanable_ratio: f64,
}

/// Group settings (Kafka broker config keys of the same names). Shared read-only by every core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.segment.bytes`: `segment.bytes` of `__consumer_offsets` when it is created.
    pub offsets_topic_segment_bytes: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for more
    /// members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
}

/// The transaction coordinator's settings (Kafka's `transaction.*` broker keys and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub state_topic_partitions: i32,
    /// `transaction.state.log.segment.bytes`: `segment.bytes` of `__transaction_state` when created.
    pub state_topic_segment_bytes: u64,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id idle this long (no ongoing transaction) is
    /// forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_timed_out_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub remove_expired_interval_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_topic_partitions: 50,
            state_topic_segment_bytes: 100 * 1024 * 1024,
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_timed_out_interval_ms: 10_000,
            remove_expired_interval_ms: 3_600_000,
        }
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            offsets_retention_ms: 10080 * 60_000,
            offsets_retention_check_interval_ms: 600_000,
        }
    }
}

/// The log settings of a topic's partitions: topic overrides over broker config.
pub fn log_config(
    config: &Config,
    layers: &BrokerLayers,
    topic: &crate::metadata::TopicMeta,
) -> crate::storage::LogConfig {
    let get = |k: &str| topic.configs.get(k).and_then(|v| v.parse::<i64>().ok());
    // The broker's value of a key: a dynamic one (this broker's, then the cluster default) over the static.
    let broker = |k: &str, fixed: i64| layers.get_i64(k).unwrap_or(fixed);
    let unlimited = |v: i64| (v != i64::MAX).then_some(v.max(0) as u64);
    let flush = |k: &str, broker_key: &str, fixed: Option<u64>| match get(k)
        .or_else(|| layers.get_i64(broker_key))
    {
        Some(v) => unlimited(v),
        None => fixed,
    };
    let policy = topic
        .configs
        .get("cleanup.policy")
        .map_or(config.log_cleanup_policy.as_str(), String::as_str);
    let timestamp_type = topic
        .configs
        .get("message.timestamp.type")
        .map(String::as_str)
        .or_else(|| layers.get("log.message.timestamp.type"));
    crate::storage::LogConfig {
        segment_bytes: get("segment.bytes")
            .unwrap_or_else(|| broker("log.segment.bytes", config.log_segment_bytes as i64))
            .max(1) as u64,
        roll_ms: get("segment.ms").unwrap_or_else(|| broker("log.roll.ms", config.log_roll_ms)),
        retention_ms: get("retention.ms")
            .unwrap_or_else(|| broker("log.retention.ms", config.log_retention_ms)),
        retention_bytes: get("retention.bytes")
            .unwrap_or_else(|| broker("log.retention.bytes", config.log_retention_bytes)),
        index_interval_bytes: get("index.interval.bytes")
            .unwrap_or_else(|| {
                broker(
                    "log.index.interval.bytes",
                    config.log_index_interval_bytes as i64,
                )
            })
            .max(0) as u64,
        flush_interval_messages: flush(
            "flush.messages",
            "log.flush.interval.messages",
            config.log_flush_interval_messages,
        ),
        flush_interval_ms: flush(
            "flush.ms",
            "log.flush.interval.ms",
            config.log_flush_interval_ms,
        ),
        tail_cache_bytes: config.tail_cache_bytes,
        log_append_time: match timestamp_type {
            Some(v) => v == "LogAppendTime",
            None => config.log_message_timestamp_type_log_append,
        },
        max_message_bytes: get("max.message.bytes")
            .unwrap_or_else(|| broker("message.max.bytes", config.message_max_bytes as i64))
            .max(0) as usize,
        compact: policy.split(',').any(|p| p.trim() == "compact"),
        delete: policy.split(',').any(|p| p.trim() == "delete"),
        delete_retention_ms: get("delete.retention.ms")
            .unwrap_or(config.log_cleaner.delete_retention_ms),
        min_compaction_lag_ms: get("min.compaction.lag.ms")
            .unwrap_or(config.log_cleaner.min_compaction_lag_ms),
        max_compaction_lag_ms: get("max.compaction.lag.ms")
            .unwrap_or(config.log_cleaner.max_compaction_lag_ms),
        timestamp_before_max_ms: get("message.timestamp.before.max.ms").unwrap_or_else(|| {
            broker(
                "log.message.timestamp.before.max.ms",
                config.log_message_timestamp_before_max_ms,
            )
        }),
        timestamp_after_max_ms: get("message.timestamp.after.max.ms").unwrap_or_else(|| {
            broker(
                "log.message.timestamp.after.max.ms",
                config.log_message_timestamp_after_max_ms,
            )
        }),
        min_cleanable_dirty_ratio: topic
            .configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(config.log_cleaner.min_cleanable_ratio),
    }
}

/// Kafka 4.4's broker key `name` (its type, default, whether it can change at runtime), if it is one.
pub fn broker_key(name: &str) -> Option<&'static keys::BrokerKey> {
    kafka_keys::BROKER_KEYS.iter().find(|k| k.name == name)
}

/// Kafka 4.4's topic key `name`, if it is one.
pub fn topic_key(name: &str) -> Option<&'static keys::TopicKey> {
    kafka_keys::TOPIC_KEYS.iter().find(|k| k.name == name)
}

/// Kafka 4.4's group key `name`, if it is one.
pub fn group_key(name: &str) -> Option<&'static keys::GroupKey> {
    kafka_keys::GROUP_KEYS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_forms() {
        let p = parse_properties("# c\n a=1\nb: 2\nc 3\nd=x\\\n  y\n!x\n");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into()),
                ("d".into(), "xy".into())
            ]
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.listener.port, 9092);
        assert_eq!(c.advertised.host, "localhost");
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert!(c.log_flush_interval_messages.is_none());
        assert_eq!(c.producer_id_expiration_ms, 86_400_000);
        assert_eq!(c.producer_id_expiration_check_interval_ms, 600_000);
    }

    #[test]
    fn producer_id_expiration_range() {
        let c = Config::load(
            None,
            &[
                "producer.id.expiration.ms=1000".into(),
                "producer.id.expiration.check.interval.ms=10".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.producer_id_expiration_ms, 1000);
        assert_eq!(c.producer_id_expiration_check_interval_ms, 10);
        for bad in [
            "producer.id.expiration.ms=0",
            "producer.id.expiration.ms=2147483648",
            "producer.id.expiration.check.interval.ms=0",
        ] {
            let err = Config::load(None, &[bad.into()]).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(err.to_string().contains(key), "{err}");
        }
        assert!(Config::load(None, &[])
            .unwrap()
            .describe()
            .contains("producer.id.expiration.ms=86400000"));
    }

    #[test]
    fn fetch_session_cache_slots_range() {
        assert_eq!(
            Config::load(None, &[])
                .unwrap()
                .max_incremental_fetch_session_cache_slots,
            1000
        );
        let c = Config::load(
            None,
            &["max.incremental.fetch.session.cache.slots=0".into()],
        )
        .unwrap();
        assert_eq!(c.max_incremental_fetch_session_cache_slots, 0);
        for bad in ["-1", "2147483648", "many"] {
            let err = Config::load(
                None,
                &[format!("max.incremental.fetch.session.cache.slots={bad}")],
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("max.incremental.fetch.session.cache.slots"),
                "{err}"
            );
        }
        assert!(Config::load(None, &[])
            .unwrap()
            .describe()
            .contains("max.incremental.fetch.session.cache.slots=1000"));
    }

    #[test]
    fn invalid_value_names_key() {
        let err = Config::load(None, &["num.partitions=zero".into()]).unwrap_err();
        assert!(err.to_string().contains("num.partitions"), "{err}");
        let err = Config::load(None, &["default.replication.factor=3".into()]).unwrap_err();
        assert!(
            err.to_string().contains("default.replication.factor"),
            "{err}"
        );
    }

    #[test]
    fn listener_override_advertises_itself() {
        let c = Config::load(None, &["listeners=PLAINTEXT://127.0.0.1:19092".into()]).unwrap();
        assert_eq!(c.advertised.host, "127.0.0.1");
        assert_eq!(c.advertised.port, 19092);
    }
}
