//! Every limit of the broker, declared once.
//!
//! Limits that an operator may change are Kafka configuration keys; their defaults live here and
//! `config.rs` enforces the allowed range. Limits that are not configurable are plain constants.
//! Relations between limits are asserted at compile time so that a change to one cannot silently
//! break another.

/// Default `socket.request.max.bytes`: the largest request frame accepted (Kafka's default, 100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;
/// Smallest frame a request can be: api key, api version and correlation id.
pub const REQUEST_HEADER_BYTES_MIN: usize = 8;
/// Default `message.max.bytes`: the largest record batch accepted (Kafka's default).
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;
/// Requests one connection may have in flight before the broker stops reading from it.
/// Clients keep at most 5 in flight for produce; admin and fetch clients fewer.
pub const CONNECTION_IN_FLIGHT_MAX: usize = 16;
/// Read buffer a connection starts with; grows to the frame size of a large request.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Longest the start-up waits for a listener on its port that no process holds any more (a killed
/// broker's socket being torn down) before refusing the port.
pub const PORT_TAKEOVER_WAIT_MS_MAX: u64 = 5_000;
/// Backlog of each listening socket (glommio's own bind uses the same).
pub const LISTEN_BACKLOG: i32 = 1024;
/// Environment variable that makes one core panic after start-up (fault injection for the fail-stop test).
pub const FAULT_PANIC_CORE_ENV: &str = "RINGTIDE_FAULT_PANIC_CORE";
/// Environment variable naming a file to which the storage layer appends one line per completed sync
/// (fault injection for the power-cut test; see `storage::fault_journal`). Unset: no journal.
pub const FAULT_SYNC_JOURNAL_ENV: &str = "RINGTIDE_FAULT_SYNC_JOURNAL";
/// With the sync journal on: milliseconds by which every group-commit fdatasync is delayed (a slow device,
/// so that an ack sent before its sync is caught by a kill at a random moment).
pub const FAULT_SYNC_DELAY_ENV: &str = "RINGTIDE_FAULT_SYNC_DELAY_MS";
/// Messages that may wait in one cross-core channel before the sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Default glommio io_memory per core (registered buffers for direct IO).
pub const IO_MEMORY_BYTES_DEFAULT: usize = 10 * 1024 * 1024;
/// Longest a Fetch may wait (Kafka clients send up to 500 ms by default; we cap hostile values).
pub const FETCH_MAX_WAIT_MS_MAX: i64 = 60_000;
/// Default `fetch.max.bytes`: the most record bytes one Fetch answer holds, whatever the request asks
/// (Kafka's default, 55 MiB).
pub const FETCH_MAX_BYTES_DEFAULT: usize = 55 * 1024 * 1024;
/// Smallest `fetch.max.bytes` accepted (Kafka's minimum).
pub const FETCH_MAX_BYTES_MIN: usize = 1024;
/// Largest `fetch.max.bytes` accepted: a Fetch answer's length must fit the i32 frame length with room
/// for its framing.
pub const FETCH_MAX_BYTES_MAX: usize = 1 << 30;
/// Default `max.incremental.fetch.session.cache.slots`: incremental fetch sessions (KIP-227) kept by the
/// whole broker (Kafka's default). Split evenly over the cores, rounding down, as Kafka splits it over its
/// cache shards: each core keeps `slots / cores` sessions for the connections it accepted.
pub const MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS_DEFAULT: usize = 1000;
/// A fetch session unused for longer than this may be evicted by any new session; a session younger than
/// this is never evicted for a larger one. Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`, a constant
/// in Kafka too (not a configuration key).
pub const MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: i64 = 120_000;
/// Partitions one CreateTopics/CreatePartitions may ask for per topic.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;
/// Longest topic name Kafka allows.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Default `max.connections`: client connections over the whole broker (Kafka's default, unlimited in
/// practice). Past it a new connection is closed at once.
pub const MAX_CONNECTIONS_DEFAULT: usize = i32::MAX as usize;
/// Default `connections.max.idle.ms`: a connection that sends no request (with nothing in flight) or
/// reads no response for this long is closed (Kafka's default, 10 minutes).
pub const CONNECTIONS_MAX_IDLE_MS_DEFAULT: u64 = 600_000;
/// Default `queued.max.request.bytes`, PER CORE: bytes of request frames being read or handled at once.
/// Kafka's default is -1 (unlimited); Ringtide bounds it so that many connections sending large requests
/// cannot exhaust memory: a connection that would exceed it waits, unread. `-1` in the config means
/// `u64::MAX`. Room for two requests of the largest default size.
pub const QUEUED_MAX_REQUEST_BYTES_DEFAULT: u64 = 2 * SOCKET_REQUEST_MAX_BYTES_DEFAULT as u64;
/// Bytes of Fetch answers being read or written at once on one core (see `shard::budget::ResponseBudget`); while
/// they are spent the core's connections read no new requests. Room for several answers of Kafka's
/// default `fetch.max.bytes`.
pub const RESPONSE_BYTES_CORE_MAX: u64 = 4 * FETCH_MAX_BYTES_DEFAULT as u64;
/// Smallest `queued.max.request.bytes` accepted: one request of the largest default size must fit.
pub const QUEUED_MAX_REQUEST_BYTES_MIN: u64 = 1024 * 1024;
/// Clean shutdown (SIGTERM) waits this long for connections to answer what they have in flight before
/// the partitions are closed.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;
/// The whole clean shutdown (drain, sync, close, marker) ends within this bound; past it the process
/// exits with status 1 without writing the clean-shutdown marker (the next start recovers fully).
pub const SHUTDOWN_MS_MAX: u64 = 30_000;

/// Default `producer.id.expiration.ms`: a producer id with no append to a partition for this long is
/// forgotten by that partition (Kafka's default, 1 day). Bounds the idempotent-producer state.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;
/// Default `producer.id.expiration.check.interval.ms`: how often each core looks for expired producer
/// ids in its partitions (Kafka's default, 10 minutes).
pub const PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT: u64 = 600_000;
/// Largest `producer.id.expiration.ms` and `producer.id.expiration.check.interval.ms` (Kafka declares
/// both as INT).
pub const PRODUCER_ID_EXPIRATION_MS_MAX: i64 = i32::MAX as i64;

/// Latency and size quantiles in `/metrics` cover the current and the previous window of this length,
/// i.e. the last one to two minutes (`_count` and `_sum` stay lifetime counters).
pub const METRICS_QUANTILE_WINDOW_MS: u64 = 60_000;

/// How long a member that joined a group in the current join phase may wait for the phase to end before
/// it is removed (Kafka's classic-group new-member join timeout, 5 minutes, not configurable): its
/// client cannot heartbeat before it has its member id, so this replaces its session timeout.
pub const GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

const _: () = assert!(REQUEST_HEADER_BYTES_MIN < CONNECTION_READ_BUFFER_BYTES);
const _: () = assert!(MESSAGE_MAX_BYTES_DEFAULT < SOCKET_REQUEST_MAX_BYTES_DEFAULT);
const _: () = assert!(CONNECTION_IN_FLIGHT_MAX >= 5);
const _: () = assert!(QUEUED_MAX_REQUEST_BYTES_DEFAULT >= SOCKET_REQUEST_MAX_BYTES_DEFAULT as u64);
const _: () = assert!(SHUTDOWN_DRAIN_MS_MAX < SHUTDOWN_MS_MAX);
const _: () = assert!(FETCH_MAX_BYTES_MIN <= FETCH_MAX_BYTES_DEFAULT);
const _: () = assert!(FETCH_MAX_BYTES_DEFAULT <= FETCH_MAX_BYTES_MAX);
const _: () = assert!(2 * FETCH_MAX_BYTES_MAX <= i32::MAX as usize + 1);
const _: () = assert!(PRODUCER_ID_EXPIRATION_MS_DEFAULT <= PRODUCER_ID_EXPIRATION_MS_MAX);
const _: () = assert!(MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS_DEFAULT <= i32::MAX as usize);
const _: () = assert!(MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS > 0);
const _: () = assert!(
    PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS_DEFAULT as i64 <= PRODUCER_ID_EXPIRATION_MS_DEFAULT
);

/// `log.cleaner.dedupe.buffer.size` default (Kafka's): the memory of the cleaners' key → offset maps.
pub const LOG_CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT: usize = 128 * 1024 * 1024;
/// Smallest dedupe buffer accepted (Kafka refuses a map that cannot hold a segment's keys; 1 MiB).
pub const LOG_CLEANER_DEDUPE_BUFFER_BYTES_MIN: usize = 1024 * 1024;
/// Largest dedupe buffer accepted (Kafka caps each thread's map at 2 GiB).
pub const LOG_CLEANER_DEDUPE_BUFFER_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024 - 1;
/// Bytes one entry of the cleaner's key → offset map is charged: a 16-byte key hash and an 8-byte
/// offset, as Kafka's `SkimpyOffsetMap` counts them, plus the hash table's own overhead.
pub const LOG_CLEANER_MAP_ENTRY_BYTES: usize = 32;
/// Kafka's `log.cleaner.io.buffer.load.factor`: the share of the map's entries the cleaner fills.
pub const LOG_CLEANER_MAP_LOAD_FACTOR: f64 = 0.9;
/// Most bytes the records of one batch may decompress to when Ringtide reads them whole (the produce
/// checks of a compacted topic, the log cleaner); a batch beyond it is refused as corrupt.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Shares of the log cleaner's task queue on each core (the default queue has 1000): cleaning runs in
/// what produce and fetch leave over.
pub const LOG_CLEANER_TASK_SHARES: usize = 50;
/// The shortest pause between looks for a log to clean, whatever `log.cleaner.backoff.ms` says, so that
/// an idle cleaner never spins.
pub const LOG_CLEANER_BACKOFF_MS_MIN: u64 = 10;
/// Smallest `segment.bytes` a topic may have (Kafka's topic-level minimum, also for
/// `offsets.topic.segment.bytes`).
pub const SEGMENT_BYTES_TOPIC_MIN: u64 = 1024 * 1024;

/// How much of an internal topic (`__consumer_offsets`, `__transaction_state`) one read brings in while
/// its coordinator replays a partition at open (at least one batch, whatever its size).
pub const COORDINATOR_LOAD_WINDOW_BYTES: usize = 1 << 20;
/// Kafka's `add.partitions.to.txn.retry.backoff.ms` default: how long a transactional Produce v12+ waits
/// before asking the coordinator again to add its partitions when it answered CONCURRENT_TRANSACTIONS.
pub const ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MS: u64 = 20;
/// Kafka's `add.partitions.to.txn.retry.backoff.max.ms` default: the longest such a produce keeps asking
/// before it answers the client CONCURRENT_TRANSACTIONS.
pub const ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MAX_MS: u64 = 100;
const _: () =
    assert!(ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MS <= ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MAX_MS);

/// Cluster mode: how long an admin change (CreateTopics, DeleteTopics, configs...) written to ZooKeeper
/// waits for the broker's own view to show it (the controller elected the new partitions' leaders, the
/// deletion went through) before the request is answered with an error.
pub const CLUSTER_ADMIN_WAIT_MS: u64 = 30_000;

/// Cluster mode, requests to other brokers ([`crate::net::peer`]): connecting, writing the request and
/// reading the answer each give up after this long (Kafka's inter-broker `request.timeout.ms` default).
pub const PEER_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The largest response frame accepted from another broker (a WriteTxnMarkers answer is a few bytes per
/// partition of the transaction).
pub const PEER_RESPONSE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Idle connections a core keeps open per other broker for its next requests.
pub const PEER_IDLE_CONNECTIONS_MAX: usize = 4;
const _: () = assert!(PEER_RESPONSE_MAX_BYTES <= SOCKET_REQUEST_MAX_BYTES_DEFAULT);

/// Cluster mode: ZooKeeper watch events applied together before the view is rebuilt (a topic's
/// creation is one event per partition).
pub const ZK_EVENT_BATCH_MAX: usize = 10_000;
/// Cluster mode, clean shutdown: how long the broker waits for ZooKeeper to acknowledge the end of its
/// session (then it stops anyway; the session then expires after `zookeeper.session.timeout.ms`).
pub const ZK_CLOSE_WAIT_MS: u64 = 2_000;
