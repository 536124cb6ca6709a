//! Every limit and default of the storage layer, declared once, with the relations between them checked
//! at compile time.

/// Direct I/O block: buffers, file positions and write sizes are multiples of this.
pub const BLOCK_BYTES: u64 = 4096;

/// `segment.bytes` default (Kafka: 1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest accepted `segment.bytes` (Kafka's minimum, the v0 record overhead).
pub const SEGMENT_BYTES_MIN: u64 = 14;
/// Largest accepted `segment.bytes`: index positions are i32.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// `segment.ms` default: 7 days.
pub const ROLL_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// `retention.ms` default: 7 days.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// `index.interval.bytes` default.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u64 = 4096;
/// Tail cache budget per partition.
pub const TAIL_CACHE_BYTES_DEFAULT: usize = 8 << 20;
/// Tail cache bytes of all partitions of one core together; past it written batches are evicted from
/// the partitions read least recently (they stay readable from disk).
pub const TAIL_CACHE_CORE_BYTES_MAX: usize = 128 << 20;
/// Once over [`TAIL_CACHE_CORE_BYTES_MAX`], a core evicts down to this percentage of it (hysteresis, so
/// that eviction does not run on every write).
pub const TAIL_CACHE_CORE_EVICT_TO_PERCENT: usize = 90;
/// Smallest tail cache: one block, so the partial last block is always cached.
pub const TAIL_CACHE_BYTES_MIN: usize = BLOCK_BYTES as usize;
/// `max.message.bytes` default (Kafka: 1 MiB + overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

/// Largest single direct write the flusher issues; a longer run of pending bytes is split.
pub const WRITE_RUN_BYTES_MAX: usize = 8 << 20;
/// Smallest read window on the fetch path.
pub const READ_WINDOW_BYTES_MIN: usize = 64 << 10;
/// Bytes a consumer reading from disk gets read at once (and the next block read ahead of it).
pub const READ_AHEAD_BLOCK_BYTES: usize = 4 << 20;
/// Read-ahead blocks one core holds over all its partitions; past it nothing is read ahead.
pub const READ_AHEAD_CORE_BYTES_MAX: usize = 64 << 20;
/// Window used when scanning batch headers (recovery, timestamp lookups).
pub const SCAN_WINDOW_BYTES: usize = 1 << 20;
/// Largest answer of one `read` (Kafka clients ask for 1 MiB per partition by default; 50 MiB total).
pub const READ_BYTES_MAX: usize = 64 << 20;

/// `log.flush.offset.checkpoint.interval.ms` default (Kafka's): how often the recovery points are
/// checkpointed.
pub const RECOVERY_POINT_CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 60_000;

/// How often a log stalled on a full disk retries its pending writes.
pub const DISK_FULL_RETRY_MS: u64 = 1000;
/// Written in a log directory after a clean shutdown (Kafka's name), removed at start-up before serving.
pub const CLEAN_SHUTDOWN_FILE_NAME: &str = ".kafka_cleanshutdown";

/// The file `prepare_executor` opens so glommio's poll probe reads real data.
pub const PROBE_FILE_NAME: &str = ".ringtide-probe";
pub const PROBE_FILE_BYTES: usize = BLOCK_BYTES as usize;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!((WRITE_RUN_BYTES_MAX as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!((SCAN_WINDOW_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(PROBE_FILE_BYTES as u64 >= BLOCK_BYTES);
const _: () = assert!(READ_AHEAD_BLOCK_BYTES >= READ_WINDOW_BYTES_MIN);
const _: () = assert!(READ_AHEAD_CORE_BYTES_MAX >= 2 * READ_AHEAD_BLOCK_BYTES);
const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= READ_BYTES_MAX);
const _: () = assert!((MAX_MESSAGE_BYTES_DEFAULT as u64) < SEGMENT_BYTES_DEFAULT);
const _: () = assert!(TAIL_CACHE_BYTES_DEFAULT >= MAX_MESSAGE_BYTES_DEFAULT);
const _: () = assert!(TAIL_CACHE_CORE_BYTES_MAX >= TAIL_CACHE_BYTES_DEFAULT);
const _: () =
    assert!(TAIL_CACHE_CORE_EVICT_TO_PERCENT > 0 && TAIL_CACHE_CORE_EVICT_TO_PERCENT < 100);
