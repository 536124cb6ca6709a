//! Metrics: counters and latency histograms kept per core, merged only when scraped.
//!
//! Each core counts into its own [`Probe`] (a thread-local: every glommio executor is one thread), so the
//! hot path touches plain `Cell`s and a local histogram, never a shared atomic. A scrape on core 0 asks
//! every core for a [`Snapshot`] over the mesh, merges them and renders the Prometheus text format.
//! Metric names follow Kafka's JMX names where one exists (see `docs/metrics.md` for the mapping).
//!
//! Quantiles cover a recent window, not the process lifetime: each distribution is a [`Windowed`] pair
//! of histograms rotated every [`limits::METRICS_QUANTILE_WINDOW_MS`], and a scrape reports the union of
//! the current and the previous window. The `_count` and `_sum` of a summary stay lifetime counters.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::limits;

/// Latencies are recorded in microseconds, from 1 µs to 60 s, 2 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Group-commit sizes in bytes, up to 1 GiB.
const COMMIT_BYTES_MAX: u64 = 1 << 30;
/// API keys are small integers; Kafka 4 uses fewer than 100.
const API_KEYS_MAX: usize = 100;

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("valid histogram bounds")
}

fn bytes_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, COMMIT_BYTES_MAX, 2).expect("valid histogram bounds")
}

#[derive(Clone, Default, Debug)]
pub struct TopicCounters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
}

const QUANTILE_WINDOW: Duration = Duration::from_millis(limits::METRICS_QUANTILE_WINDOW_MS);

/// A distribution whose quantiles cover the last one to two windows, with lifetime count and sum.
///
/// Samples go into `current`; once a window has passed, `current` becomes `previous` and a new
/// `current` starts (after two windows without a sample both are cleared). Rotation happens when a
/// sample is recorded or a summary taken, so an idle series still ages. Costs two histograms and one
/// clock read per sample.
#[derive(Clone, Debug)]
struct Windowed {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    window_start: Instant,
    count: u64,
    sum: u64,
}

impl Windowed {
    fn new(empty: Histogram<u64>, now: Instant) -> Self {
        Windowed {
            previous: empty.clone(),
            current: empty,
            window_start: now,
            count: 0,
            sum: 0,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < QUANTILE_WINDOW {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        if elapsed < 2 * QUANTILE_WINDOW {
            self.window_start += QUANTILE_WINDOW;
        } else {
            // Even the newest sample of the old `current` is older than a whole window.
            self.previous.reset();
            self.window_start = now;
        }
    }

    fn record(&mut self, value: u64, now: Instant) {
        self.rotate(now);
        self.current.saturating_record(value);
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
    }

    /// The union of the current and previous windows, with the lifetime count and sum.
    fn summary(&mut self, now: Instant) -> Summary {
        self.rotate(now);
        let mut window = self.current.clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = window.add(&self.previous);
        Summary {
            window,
            count: self.count,
            sum: self.sum,
        }
    }
}

/// A distribution as a scrape sees it: the recent window's histogram, and lifetime count and sum.
#[derive(Clone, Debug)]
pub struct Summary {
    pub window: Histogram<u64>,
    pub count: u64,
    pub sum: u64,
}

impl Summary {
    fn merge(&mut self, other: &Summary) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.window.add(&other.window);
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }
}

/// One API's figures in a [`Snapshot`].
#[derive(Clone, Debug)]
pub struct ApiStats {
    pub requests: u64,
    pub errors: u64,
    pub latency_us: Summary,
}

/// One API's figures as its core keeps them.
struct ApiProbe {
    requests: u64,
    errors: u64,
    latency_us: Windowed,
}

/// One core's metrics. Owned by that core (thread-local); never shared.
pub struct Probe {
    topics: RefCell<BTreeMap<Arc<str>, TopicCounters>>,
    apis: RefCell<BTreeMap<i16, ApiProbe>>,
    fsync_us: RefCell<Windowed>,
    commit_bytes: RefCell<Windowed>,
    forwards: RefCell<Vec<u64>>,
    connections: Cell<i64>,
    connections_total: Cell<u64>,
    in_flight: Cell<i64>,
    cleaner: Cell<CleanerCounters>,
}

/// The log cleaner's figures on one core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CleanerCounters {
    pub cleanings: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Wall-clock ms of the last cleaning's end, 0 before the first.
    pub last_run_ms: i64,
    /// Dirty ratio (percent) of the dirtiest compacted log when the cleaner last looked.
    pub max_dirty_percent: f64,
}

impl Default for Probe {
    fn default() -> Self {
        let now = Instant::now();
        Probe {
            topics: RefCell::new(BTreeMap::new()),
            apis: RefCell::new(BTreeMap::new()),
            fsync_us: RefCell::new(Windowed::new(latency_histogram(), now)),
            commit_bytes: RefCell::new(Windowed::new(bytes_histogram(), now)),
            forwards: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            connections_total: Cell::new(0),
            in_flight: Cell::new(0),
            cleaner: Cell::new(CleanerCounters::default()),
        }
    }
}

thread_local! {
    static PROBE: Probe = Probe::default();
}

fn with<R>(f: impl FnOnce(&Probe) -> R) -> R {
    PROBE.with(f)
}

fn topic_entry<R>(topic: &str, f: impl FnOnce(&mut TopicCounters) -> R) -> R {
    with(|p| {
        let mut topics = p.topics.borrow_mut();
        if let Some(c) = topics.get_mut(topic) {
            return f(c);
        }
        f(topics.entry(Arc::from(topic)).or_default())
    })
}

/// Records appended to a topic on this core.
pub fn produced(topic: &str, bytes: usize, messages: u64) {
    topic_entry(topic, |c| {
        c.bytes_in += bytes as u64;
        c.messages_in += messages;
    });
}

/// Record bytes served to consumers from a topic on this core.
pub fn fetched(topic: &str, bytes: usize) {
    if bytes > 0 {
        topic_entry(topic, |c| c.bytes_out += bytes as u64);
    }
}

/// Drops a deleted topic's counters from this core's probe, so that its series leave `/metrics`.
/// Every core counts for any topic (produce on the owner, fetch wherever it is served), so every core
/// calls this when it installs the metadata without the topic.
pub fn forget_topic(topic: &str) {
    with(|p| p.topics.borrow_mut().remove(topic));
}

/// One request handled, with its latency; `error` when it failed as a whole or closed the connection.
pub fn request(api_key: i16, latency: Duration, error: bool) {
    if api_key < 0 || api_key as usize >= API_KEYS_MAX {
        return;
    }
    let now = Instant::now();
    with(|p| {
        let mut apis = p.apis.borrow_mut();
        let s = apis.entry(api_key).or_insert_with(|| ApiProbe {
            requests: 0,
            errors: 0,
            latency_us: Windowed::new(latency_histogram(), now),
        });
        s.requests += 1;
        s.errors += error as u64;
        s.latency_us.record(latency.as_micros().max(1) as u64, now);
    });
}

/// One group commit: bytes made durable by one fdatasync, and how long the write + sync took.
pub fn group_commit(bytes: u64, latency: Duration) {
    let now = Instant::now();
    with(|p| {
        p.fsync_us
            .borrow_mut()
            .record(latency.as_micros().max(1) as u64, now);
        p.commit_bytes.borrow_mut().record(bytes.max(1), now);
    });
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One cleaning of a log on this core: the bytes it read and wrote, the records it removed.
pub fn cleaned(bytes_read: u64, bytes_written: u64, records_removed: u64) {
    with(|p| {
        let mut c = p.cleaner.get();
        c.cleanings += 1;
        c.bytes_read += bytes_read;
        c.bytes_written += bytes_written;
        c.records_removed += records_removed;
        c.last_run_ms = now_ms();
        p.cleaner.set(c);
    });
}

/// The dirty ratio (0..1) of this core's dirtiest compacted log, as the cleaner last saw it.
pub fn dirtiest(ratio: f64) {
    with(|p| {
        let mut c = p.cleaner.get();
        c.max_dirty_percent = ratio * 100.0;
        p.cleaner.set(c);
    });
}

/// A closure sent from this core to core `to`.
pub fn forwarded(to: usize) {
    with(|p| {
        let mut f = p.forwards.borrow_mut();
        if f.len() <= to {
            f.resize(to + 1, 0);
        }
        f[to] += 1;
    });
}

pub fn connection_opened() {
    with(|p| {
        p.connections.set(p.connections.get() + 1);
        p.connections_total.set(p.connections_total.get() + 1);
    });
}

pub fn connection_closed() {
    with(|p| p.connections.set(p.connections.get() - 1));
}

/// A request started (+1) or finished (-1) on this core: the request queue depth.
pub fn in_flight(delta: i64) {
    with(|p| p.in_flight.set(p.in_flight.get() + delta));
}

/// A copy of one core's metrics, sent to the scraping core.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub core: usize,
    pub topics: BTreeMap<String, TopicCounters>,
    pub apis: BTreeMap<i16, ApiStats>,
    pub fsync_us: Summary,
    pub commit_bytes: Summary,
    pub forwards: Vec<u64>,
    pub connections: i64,
    pub connections_total: u64,
    pub in_flight: i64,
    pub partitions: usize,
    pub log_size_bytes: u64,
    /// Incremental fetch sessions this core holds.
    pub fetch_sessions: usize,
    /// Partitions over those sessions.
    pub fetch_session_partitions: usize,
    /// Sessions this core evicted to make room, since start.
    pub fetch_session_evictions: u64,
    /// Bytes in this core's tail caches (bound: `TAIL_CACHE_CORE_BYTES_MAX`).
    pub tail_cache_bytes: usize,
    /// Bytes of read-ahead blocks this core holds (bound: `READ_AHEAD_CORE_BYTES_MAX`).
    pub read_ahead_bytes: usize,
    /// Bytes of Fetch answers charged to this core's response budget (bound: `RESPONSE_BYTES_CORE_MAX`).
    pub response_bytes: usize,
    /// The log cleaner on this core.
    pub cleaner: CleanerCounters,
    /// When the snapshot was taken (wall clock, ms), for the time since the cleaner's last run.
    pub taken_ms: i64,
}

/// Takes this core's snapshot (the partition and fetch session figures are filled in by the caller, who
/// owns them).
pub fn snapshot(core: usize) -> Snapshot {
    snapshot_at(core, Instant::now())
}

fn snapshot_at(core: usize, now: Instant) -> Snapshot {
    with(|p| Snapshot {
        core,
        topics: p
            .topics
            .borrow()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        apis: p
            .apis
            .borrow_mut()
            .iter_mut()
            .map(|(k, a)| {
                let stats = ApiStats {
                    requests: a.requests,
                    errors: a.errors,
                    latency_us: a.latency_us.summary(now),
                };
                (*k, stats)
            })
            .collect(),
        fsync_us: p.fsync_us.borrow_mut().summary(now),
        commit_bytes: p.commit_bytes.borrow_mut().summary(now),
        forwards: p.forwards.borrow().clone(),
        connections: p.connections.get(),
        connections_total: p.connections_total.get(),
        in_flight: p.in_flight.get(),
        partitions: 0,
        log_size_bytes: 0,
        fetch_sessions: 0,
        fetch_session_partitions: 0,
        fetch_session_evictions: 0,
        tail_cache_bytes: 0,
        read_ahead_bytes: 0,
        response_bytes: 0,
        cleaner: p.cleaner.get(),
        taken_ms: now_ms(),
    })
}

fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-topic counter: name, help, and how to read it.
type TopicMetric = (&'static str, &'static str, fn(&TopicCounters) -> u64);
/// A per-API counter: name, help, and how to read it.
type ApiMetric = (&'static str, &'static str, fn(&ApiStats) -> u64);
/// A per-core metric: name, type, help, and how to read it.
type CoreMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Snapshot) -> String,
);

const QUANTILES: [f64; 4] = [0.5, 0.99, 0.999, 1.0];

/// Quantiles of the recent window (NaN when it holds no sample, as Prometheus clients report an empty
/// summary), then the lifetime `_sum` and `_count`.
fn summary(out: &mut String, name: &str, labels: &str, s: &Summary, per_unit: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    for q in QUANTILES {
        let value = if s.window.is_empty() {
            f64::NAN
        } else {
            s.window.value_at_quantile(q) as f64 / per_unit
        };
        let _ = writeln!(out, "{name}{{{labels}{sep}quantile=\"{q}\"}} {value}");
    }
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", s.sum as f64 / per_unit);
    let _ = writeln!(out, "{name}_count{braced} {}", s.count);
}

/// Renders merged snapshots in the Prometheus text format (version 0.0.4).
pub fn render(snapshots: &[Snapshot]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Per topic, summed over cores.
    let mut topics: BTreeMap<&str, TopicCounters> = BTreeMap::new();
    for s in snapshots {
        for (t, c) in &s.topics {
            let e = topics.entry(t.as_str()).or_default();
            e.bytes_in += c.bytes_in;
            e.bytes_out += c.bytes_out;
            e.messages_in += c.messages_in;
        }
    }
    let counters: [TopicMetric; 3] = [
        (
            "kafka_server_brokertopicmetrics_bytesin_total",
            "Record bytes appended, per topic (Kafka: BrokerTopicMetrics BytesInPerSec).",
            |c| c.bytes_in,
        ),
        (
            "kafka_server_brokertopicmetrics_bytesout_total",
            "Record bytes sent to consumers, per topic (Kafka: BrokerTopicMetrics BytesOutPerSec).",
            |c| c.bytes_out,
        ),
        (
            "kafka_server_brokertopicmetrics_messagesin_total",
            "Records appended, per topic (Kafka: BrokerTopicMetrics MessagesInPerSec).",
            |c| c.messages_in,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (t, c) in &topics {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escape(t), get(c));
        }
    }

    // Per API, summed over cores.
    let mut apis: BTreeMap<i16, ApiStats> = BTreeMap::new();
    for s in snapshots {
        for (k, a) in &s.apis {
            match apis.get_mut(k) {
                Some(m) => {
                    m.requests += a.requests;
                    m.errors += a.errors;
                    m.latency_us.merge(&a.latency_us);
                }
                None => {
                    apis.insert(*k, a.clone());
                }
            }
        }
    }
    let api_counters: [ApiMetric; 2] = [
        (
            "kafka_network_requestmetrics_requests_total",
            "Requests handled, per API (Kafka: RequestMetrics RequestsPerSec).",
            |a| a.requests,
        ),
        (
            "kafka_network_requestmetrics_errors_total",
            "Requests that failed or closed the connection, per API (Kafka: RequestMetrics ErrorsPerSec).",
            |a| a.errors,
        ),
    ];
    for (name, help, get) in api_counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (k, a) in &apis {
            let _ = writeln!(out, "{name}{{request=\"{}\"}} {}", api_name(*k), get(a));
        }
    }
    let _ = writeln!(
        out,
        "# HELP kafka_network_requestmetrics_totaltime_seconds Time from request read to response ready, per API (Kafka: RequestMetrics TotalTimeMs); quantiles over the last 1-2 minutes.\n# TYPE kafka_network_requestmetrics_totaltime_seconds summary"
    );
    for (k, a) in &apis {
        summary(
            &mut out,
            "kafka_network_requestmetrics_totaltime_seconds",
            &format!("request=\"{}\"", api_name(*k)),
            &a.latency_us,
            1e6,
        );
    }

    // Storage: group commits.
    let empty = |window| Summary {
        window,
        count: 0,
        sum: 0,
    };
    let mut fsync = empty(latency_histogram());
    let mut commit = empty(bytes_histogram());
    for s in snapshots {
        fsync.merge(&s.fsync_us);
        commit.merge(&s.commit_bytes);
    }
    let _ = writeln!(
        out,
        "# HELP ringtide_log_flush_seconds Write + fdatasync time of one group commit (Kafka: LogFlushStats LogFlushRateAndTimeMs); quantiles over the last 1-2 minutes.\n# TYPE ringtide_log_flush_seconds summary"
    );
    summary(&mut out, "ringtide_log_flush_seconds", "", &fsync, 1e6);
    let _ = writeln!(
        out,
        "# HELP ringtide_group_commit_bytes Bytes made durable by one fdatasync; quantiles over the last 1-2 minutes.\n# TYPE ringtide_group_commit_bytes summary"
    );
    summary(&mut out, "ringtide_group_commit_bytes", "", &commit, 1.0);

    // Per core.
    let per_core: [CoreMetric; 17] = [
        (
            "kafka_server_socketservermetrics_connection_count",
            "gauge",
            "Open client connections, per core.",
            |s| s.connections.to_string(),
        ),
        (
            "ringtide_connections_accepted_total",
            "counter",
            "Client connections accepted, per core.",
            |s| s.connections_total.to_string(),
        ),
        (
            "ringtide_requests_in_flight",
            "gauge",
            "Requests being handled (the request queue depth), per core.",
            |s| s.in_flight.to_string(),
        ),
        (
            "ringtide_partitions",
            "gauge",
            "Partitions owned, per core (Kafka: ReplicaManager PartitionCount).",
            |s| s.partitions.to_string(),
        ),
        (
            "kafka_log_log_size_bytes",
            "gauge",
            "Bytes of log segments owned, per core (Kafka: Log Size, summed per core).",
            |s| s.log_size_bytes.to_string(),
        ),
        (
            "kafka_log_logcleanermanager_max_dirty_percent",
            "gauge",
            "Dirty ratio of the dirtiest compacted log, percent, per core (Kafka: LogCleanerManager max-dirty-percent).",
            |s| format!("{:.1}", s.cleaner.max_dirty_percent),
        ),
        (
            "kafka_log_logcleanermanager_time_since_last_run_ms",
            "gauge",
            "Milliseconds since the core's cleaner last cleaned a log, -1 before its first cleaning (Kafka: LogCleanerManager time-since-last-run-ms).",
            |s| if s.cleaner.last_run_ms == 0 { "-1".to_string() } else { (s.taken_ms - s.cleaner.last_run_ms).max(0).to_string() },
        ),
        (
            "ringtide_log_cleaner_cleanings_total",
            "counter",
            "Logs cleaned by the core's cleaner.",
            |s| s.cleaner.cleanings.to_string(),
        ),
        (
            "ringtide_log_cleaner_read_bytes_total",
            "counter",
            "Bytes of log the core's cleaner read.",
            |s| s.cleaner.bytes_read.to_string(),
        ),
        (
            "ringtide_log_cleaner_written_bytes_total",
            "counter",
            "Bytes of cleaned segments the core's cleaner wrote.",
            |s| s.cleaner.bytes_written.to_string(),
        ),
        (
            "ringtide_log_cleaner_removed_records_total",
            "counter",
            "Records the core's cleaner removed (superseded by a later record of the same key, or tombstones past their horizon).",
            |s| s.cleaner.records_removed.to_string(),
        ),
        (
            "kafka_server_fetchsessioncache_numincrementalfetchsessions",
            "gauge",
            "Incremental fetch sessions held, per core (Kafka: FetchSessionCache NumIncrementalFetchSessions).",
            |s| s.fetch_sessions.to_string(),
        ),
        (
            "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached",
            "gauge",
            "Partitions held over all incremental fetch sessions, per core (Kafka: FetchSessionCache NumIncrementalFetchPartitionsCached).",
            |s| s.fetch_session_partitions.to_string(),
        ),
        (
            "kafka_server_fetchsessioncache_incrementalfetchsessionevictions_total",
            "counter",
            "Incremental fetch sessions evicted to make room for new ones, per core (Kafka: FetchSessionCache IncrementalFetchSessionEvictionsPerSec).",
            |s| s.fetch_session_evictions.to_string(),
        ),
        (
            "ringtide_tail_cache_bytes",
            "gauge",
            "Bytes in the tail caches of the core's partitions (bounded per core; written bytes are evicted least recently read first).",
            |s| s.tail_cache_bytes.to_string(),
        ),
        (
            "ringtide_read_ahead_bytes",
            "gauge",
            "Bytes read ahead from disk for consumers behind the tail cache, per core (bounded per core).",
            |s| s.read_ahead_bytes.to_string(),
        ),
        (
            "ringtide_response_bytes",
            "gauge",
            "Bytes of Fetch answers being read or written, charged to the core's response budget.",
            |s| s.response_bytes.to_string(),
        ),
    ];
    for (name, kind, help, get) in per_core {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{core=\"{}\"}} {}", s.core, get(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringtide_cross_core_forwards_total Work sent from one core to another over the mesh.\n# TYPE ringtide_cross_core_forwards_total counter"
    );
    for s in snapshots {
        for (to, n) in s.forwards.iter().enumerate() {
            if to != s.core {
                let _ = writeln!(
                    out,
                    "ringtide_cross_core_forwards_total{{from=\"{}\",to=\"{to}\"}} {n}",
                    s.core
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        produced("orders", 100, 3);
        produced("orders", 50, 1);
        fetched("orders", 70);
        request(0, Duration::from_millis(2), false);
        request(0, Duration::from_millis(4), true);
        group_commit(4096, Duration::from_micros(900));
        forwarded(1);
        connection_opened();
        let mut s = snapshot(0);
        s.partitions = 3;
        s.fetch_sessions = 2;
        s.fetch_session_partitions = 200;
        s.fetch_session_evictions = 1;
        s.tail_cache_bytes = 4096;
        s.response_bytes = 77;
        let text = render(&[s]);
        assert!(
            text.contains("kafka_server_brokertopicmetrics_bytesin_total{topic=\"orders\"} 150"),
            "{text}"
        );
        assert!(
            text.contains("kafka_server_brokertopicmetrics_messagesin_total{topic=\"orders\"} 4")
        );
        assert!(
            text.contains("kafka_server_brokertopicmetrics_bytesout_total{topic=\"orders\"} 70")
        );
        assert!(text.contains("kafka_network_requestmetrics_requests_total{request=\"Produce\"} 2"));
        assert!(text.contains("kafka_network_requestmetrics_errors_total{request=\"Produce\"} 1"));
        assert!(text.contains("ringtide_log_flush_seconds_count 1"));
        assert!(text.contains("ringtide_cross_core_forwards_total{from=\"0\",to=\"1\"} 1"));
        assert!(text.contains("ringtide_partitions{core=\"0\"} 3"));
        assert!(text.contains("ringtide_tail_cache_bytes{core=\"0\"} 4096"));
        assert!(text.contains("ringtide_response_bytes{core=\"0\"} 77"));
        assert!(text
            .contains("kafka_server_fetchsessioncache_numincrementalfetchsessions{core=\"0\"} 2"));
        assert!(text.contains(
            "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached{core=\"0\"} 200"
        ));
        assert!(text.contains(
            "kafka_server_fetchsessioncache_incrementalfetchsessionevictions_total{core=\"0\"} 1"
        ));
    }

    #[test]
    fn old_samples_leave_the_quantiles_after_two_rotations() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let window = limits::METRICS_QUANTILE_WINDOW_MS;
        let mut w = Windowed::new(latency_histogram(), t0);
        for _ in 0..10 {
            w.record(50_000, t0);
        }
        let slowest_is_50ms = |h: &Histogram<u64>| h.equivalent(h.max(), 50_000);
        assert!(slowest_is_50ms(&w.summary(at(window - 1)).window));
        // First rotation: the slow samples are in the previous window, still reported.
        w.record(100, at(window + 1));
        let s = w.summary(at(window + 2));
        assert_eq!(s.window.len(), 11);
        assert!(slowest_is_50ms(&s.window));
        // Second rotation: they are gone; the fast sample is still there.
        w.record(120, at(2 * window + 1));
        let s = w.summary(at(2 * window + 2));
        assert_eq!(s.window.len(), 2);
        assert!(s.window.max() < 1_000, "{}", s.window.max());
        // Count and sum stay lifetime counters (Prometheus rate() needs them monotonic).
        assert_eq!((s.count, s.sum), (12, 10 * 50_000 + 100 + 120));
        // Idle for more than two windows: nothing left, even without a new sample.
        let s = w.summary(at(5 * window));
        assert!(s.window.is_empty());
        assert_eq!(s.count, 12);
    }

    #[test]
    fn idle_series_renders_no_quantiles_but_keeps_count() {
        request(3, Duration::from_millis(7), false);
        let now = Instant::now();
        let text = render(&[snapshot_at(0, now)]);
        assert!(
            text.contains(
                "kafka_network_requestmetrics_totaltime_seconds{request=\"Metadata\",quantile=\"0.5\"} 0.007"
            ),
            "{text}"
        );
        let later = now + 3 * QUANTILE_WINDOW;
        let text = render(&[snapshot_at(0, later)]);
        assert!(
            text.contains(
                "kafka_network_requestmetrics_totaltime_seconds{request=\"Metadata\",quantile=\"0.5\"} NaN"
            ),
            "{text}"
        );
        assert!(text.contains(
            "kafka_network_requestmetrics_totaltime_seconds_count{request=\"Metadata\"} 1"
        ));
        assert!(text.contains(
            "kafka_network_requestmetrics_totaltime_seconds_sum{request=\"Metadata\"} 0.007"
        ));
        assert!(text.contains("ringtide_log_flush_seconds{quantile=\"0.99\"} NaN"));
    }

    #[test]
    fn forgotten_topic_leaves_the_metrics() {
        produced("kept", 10, 1);
        produced("deleted", 10, 1);
        fetched("deleted", 5);
        forget_topic("deleted");
        forget_topic("never-seen");
        let text = render(&[snapshot(0)]);
        assert!(!text.contains("topic=\"deleted\""), "{text}");
        assert!(text.contains("kafka_server_brokertopicmetrics_bytesin_total{topic=\"kept\"} 10"));
        // Recreated under the same name, it starts from zero.
        produced("deleted", 3, 1);
        let text = render(&[snapshot(0)]);
        assert!(text.contains("kafka_server_brokertopicmetrics_bytesin_total{topic=\"deleted\"} 3"));
    }
}

/// The cluster as this broker sees it (cluster mode only), for `/metrics` and `/v1/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterStats {
    pub zookeeper_connected: bool,
    pub is_controller: bool,
    pub controller_id: Option<i32>,
    pub brokers: Vec<i32>,
    pub topics: usize,
    pub partitions: usize,
    /// Partitions without a leader (their leader's broker is down).
    pub offline_partitions: usize,
}

impl ClusterStats {
    /// Gauges under Kafka's controller metric names (`kafka.controller:type=KafkaController,...`):
    /// as in Kafka, the active controller reports the controller-wide counts and the other brokers 0.
    pub fn render(&self, out: &mut String) {
        let on_controller = |n: usize| if self.is_controller { n } else { 0 };
        let gauges: [(&str, &str, usize); 6] = [
            (
                "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the broker that is the controller, else 0.",
                usize::from(self.is_controller),
            ),
            (
                "kafka_controller_kafkacontroller_activebrokercount",
                "Live brokers registered in ZooKeeper (reported by the controller).",
                on_controller(self.brokers.len()),
            ),
            (
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                "Partitions without a leader (reported by the controller).",
                on_controller(self.offline_partitions),
            ),
            (
                "kafka_controller_kafkacontroller_globaltopiccount",
                "Topics in the cluster (reported by the controller).",
                on_controller(self.topics),
            ),
            (
                "kafka_controller_kafkacontroller_globalpartitioncount",
                "Partitions in the cluster (reported by the controller).",
                on_controller(self.partitions),
            ),
            (
                "ringtide_zookeeper_connected",
                "1 while this broker's ZooKeeper session is connected.",
                usize::from(self.zookeeper_connected),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
}
