//! Ringtide: a drop-in Apache Kafka broker, thread-per-core on io_uring.
//!
//! Layout: `protocol` (sans-io codec glue), `net` (listener, connection), `dispatch` (one handler per
//! API), `fetch_session` (KIP-227 fetch sessions, a pure state machine), `shard` (per-core state and the
//! cross-core mesh), `partition` (a log and its producer state), `storage` (segments, indexes, recovery),
//! `records` (record batch validation), `metadata`, `config`.

pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod fetch_session;
pub mod group;
pub mod limits;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod protocol;
pub mod records;
pub mod server;
pub mod shard;
pub mod storage;
pub mod txn;
