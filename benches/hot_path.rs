//! Criterion benchmarks of Ringtide's hot path.
//!
//!   cargo bench --bench hot_path                 # full measurement
//!   cargo bench --bench hot_path -- --quick      # shorter measurement
//!   cargo bench --bench hot_path -- --test       # run every benchmark once (CI: keeps them from rotting)
//!   cargo bench --bench hot_path -- records      # only the benchmarks whose name contains "records"
//!
//! Groups:
//! - `records`: validating a produce request's batches (CRC-32C + structure) and patching offsets and leader
//!   epochs into them, as the produce path does on every append;
//! - `protocol`: ProduceRequest / FetchRequest decode and ProduceResponse / FetchResponse encode with the
//!   `kafka-protocol` codec, framed as the broker frames them;
//! - `storage`: `PartitionLog::append` on a real segment with direct I/O inside a glommio executor, acked
//!   after the write (flush interval set) and after fdatasync (the default);
//! - `mesh`: a cross-core hop, one round trip over glommio's channel mesh between two executors.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringtide::records::{self, validate_batches};
use ringtide::storage::{LogConfig, PartitionLog};

const RECORD_BYTES: usize = 1024;
const PRODUCE_VERSION: i16 = 11;
const FETCH_VERSION: i16 = 16;

// ------------------------------------------------------------------------------------------ batches
/// One valid magic-2 batch of `records` uncompressed records of `value_bytes` each, null keys, base
/// offset 0 and no producer id, as a producer sends it.
fn batch(records: usize, value_bytes: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| (0..value_bytes).map(|j| (i + j) as u8 | 1).collect())
        .collect();
    let kvs: Vec<records::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    records::build_batch(&kvs, 1_700_000_000_000)
}

/// `n` batches of `records` records each, concatenated as in one partition's produce data.
fn batches(n: usize, records: usize) -> Vec<u8> {
    (0..n).flat_map(|_| batch(records, RECORD_BYTES)).collect()
}

// ------------------------------------------------------------------------------------------ records
fn bench_records(c: &mut Criterion) {
    let mut g = c.benchmark_group("records");
    // 15 x 1 KiB: a Java producer batch at batch.size=16384; 1000 x 1 KiB: a librdkafka batch of 1 MB.
    for (n_batches, per_batch) in [(1usize, 15usize), (1, 1000), (16, 15)] {
        let blob = batches(n_batches, per_batch);
        let label = format!("{n_batches}x{per_batch}x1KiB");
        g.throughput(Throughput::Bytes(blob.len() as u64));
        g.bench_function(format!("validate_batches/{label}"), |b| {
            b.iter(|| validate_batches(black_box(&blob), usize::MAX).expect("valid"))
        });
        let headers = validate_batches(&blob, usize::MAX).expect("valid");
        // What PartitionLog::append does to its one copy: base offset and leader epoch per batch.
        g.bench_function(format!("copy_and_patch_offsets/{label}"), |b| {
            b.iter(|| {
                let mut copy = BytesMut::from(&blob[..]);
                let mut at = 0;
                let mut next = 1_000_000i64;
                for h in &headers {
                    let size = h.total_size();
                    records::set_base_offset(&mut copy[at..at + size], next);
                    records::set_partition_leader_epoch(&mut copy[at..at + size], 7);
                    next += h.last_offset_delta as i64 + 1;
                    at += size;
                }
                copy.freeze()
            })
        });
    }
    g.finish();
}

// ------------------------------------------------------------------------------------------ protocol
fn produce_request(partitions: i32, blob: &Bytes) -> ProduceRequest {
    let parts = (0..partitions)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(blob.clone()))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("perf-topic")))
            .with_partition_data(parts)])
}

fn encode<T: Encodable>(msg: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(msg.compute_size(version).expect("size"));
    msg.encode(&mut buf, version).expect("encode");
    buf.freeze()
}

fn bench_protocol(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol");
    let hv = ApiKey::Produce.response_header_version(PRODUCE_VERSION);
    for (partitions, per_batch) in [(2i32, 15usize), (2, 1000)] {
        let blob = Bytes::from(batches(1, per_batch));
        let req = produce_request(partitions, &blob);
        let wire = encode(&req, PRODUCE_VERSION);
        let label = format!("{partitions}p/{}KiB", blob.len() / 1024);
        // Decoding shares the records with the frame (no copy): count requests, not bytes.
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("produce_request_decode/{label}"), |b| {
            b.iter(|| {
                ProduceRequest::decode(&mut black_box(wire.clone()), PRODUCE_VERSION)
                    .expect("decode")
            })
        });
    }
    let resp = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(TopicName(StrBytes::from_static_str("perf-topic")))
        .with_partition_responses(
            (0..2)
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p)
                        .with_base_offset(123_456)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(0)
                })
                .collect(),
        )]);
    g.bench_function("produce_response_encode/2p", |b| {
        b.iter(|| {
            ringtide::protocol::encode_response(42, hv, black_box(&resp), PRODUCE_VERSION)
                .expect("encode")
        })
    });

    let topic_id = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(
                (0..2)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(1_000_000)
                            .with_partition_max_bytes(1_048_576)
                            .with_current_leader_epoch(0)
                    })
                    .collect(),
            )]);
    let wire = encode(&fetch, FETCH_VERSION);
    g.bench_function("fetch_request_decode/2p", |b| {
        b.iter(|| {
            FetchRequest::decode(&mut black_box(wire.clone()), FETCH_VERSION).expect("decode")
        })
    });
    let fhv = ApiKey::Fetch.response_header_version(FETCH_VERSION);
    for per_batch in [15usize, 1000] {
        let blob = Bytes::from(batches(1, per_batch));
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic_id(topic_id)
            .with_partitions(
                (0..2)
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p)
                            .with_high_watermark(2_000_000)
                            .with_last_stable_offset(2_000_000)
                            .with_log_start_offset(0)
                            .with_records(Some(blob.clone()))
                    })
                    .collect(),
            )]);
        g.throughput(Throughput::Bytes(2 * blob.len() as u64));
        g.bench_function(
            format!("fetch_response_encode/2p/{}KiB", blob.len() / 1024),
            |b| {
                b.iter(|| {
                    ringtide::protocol::encode_response(42, fhv, black_box(&resp), FETCH_VERSION)
                        .expect("encode")
                })
            },
        );
    }
    g.finish();
}

// ------------------------------------------------------------------------------------------ glommio helpers
/// A glommio executor on its own thread that runs timed jobs sent from the benchmark thread. A job gets the
/// iteration count and returns the time the measured part took.
struct ExecutorThread {
    jobs: mpsc::Sender<u64>,
    done: mpsc::Receiver<Duration>,
    handle: Option<glommio::ExecutorJoinHandle<()>>,
}

impl ExecutorThread {
    fn run(&self, iters: u64) -> Duration {
        self.jobs.send(iters).expect("executor alive");
        self.done.recv().expect("executor answers")
    }
}

impl Drop for ExecutorThread {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, tx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Waits for the next job without blocking the executor (its other tasks, e.g. the log's flusher, must run).
async fn next_job(jobs: &mpsc::Receiver<u64>) -> Option<u64> {
    loop {
        match jobs.try_recv() {
            Ok(n) => return Some(n),
            Err(mpsc::TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_micros(200)).await
            }
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

fn placement(core: usize) -> Placement {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > core {
        Placement::Fixed(core)
    } else {
        Placement::Unbound
    }
}

// ------------------------------------------------------------------------------------------ storage
fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Appends `per_iter` batches per iteration; waits for the ack (write or fdatasync, per `config`) after
/// every `ack_every` iterations and at the end.
fn storage_thread(config: LogConfig, blob: Vec<u8>, ack_every: u64) -> ExecutorThread {
    let (jobs_tx, jobs) = mpsc::channel::<u64>();
    let (done, done_rx) = mpsc::channel::<Duration>();
    let handle = LocalExecutorBuilder::new(placement(0))
        .io_memory(2 << 20)
        .name("bench-storage")
        .spawn(move || async move {
            let dir = tempfile::Builder::new()
                .prefix("ringtide-bench-")
                .tempdir_in(bench_dir())
                .expect("temp dir");
            let log = PartitionLog::open(
                dir.path(),
                "bench",
                0,
                config,
                &mut |_: &ringtide::records::BatchHeader| {},
            )
            .await
            .expect("log opens");
            let headers = validate_batches(&blob, usize::MAX).expect("valid");
            while let Some(iters) = next_job(&jobs).await {
                let start = Instant::now();
                let mut last = 0;
                for i in 0..iters {
                    last = log.append(&blob, &headers, 0).expect("append").last_offset;
                    if (i + 1) % ack_every == 0 {
                        log.wait_durable(last).await.expect("ack");
                    }
                }
                log.wait_durable(last).await.expect("ack");
                let took = start.elapsed();
                // Keep the disk footprint bounded (untimed).
                let _ = log.enforce_retention(i64::MAX / 2).await;
                done.send(took).expect("bench thread alive");
            }
            log.close().await.expect("close");
        })
        .expect("executor starts");
    ExecutorThread {
        jobs: jobs_tx,
        done: done_rx,
        handle: Some(handle),
    }
}

fn bench_storage(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let blob = batches(1, 15); // one 15 KiB Java-producer batch per append
    let base = LogConfig {
        segment_bytes: 128 << 20,
        retention_bytes: 256 << 20,
        ..LogConfig::default()
    };
    g.throughput(Throughput::Bytes(blob.len() as u64));
    // Acked once written (Kafka-like flush interval): append cost + direct-I/O write, 64 appends in flight.
    let written = LogConfig {
        flush_interval_messages: Some(1 << 40),
        flush_interval_ms: Some(1 << 40),
        ..base
    };
    let t = storage_thread(written, blob.clone(), 64);
    g.bench_function("append/ack_after_write", |b| {
        b.iter_custom(|iters| t.run(iters))
    });
    drop(t);
    // The default: acked after fdatasync; 16 appends share one group commit.
    let t = storage_thread(base, blob.clone(), 16);
    g.bench_function("append/ack_after_fsync_16_per_sync", |b| {
        b.iter_custom(|iters| t.run(iters))
    });
    drop(t);
    g.finish();
}

// ------------------------------------------------------------------------------------------ mesh
fn mesh_pair() -> (ExecutorThread, glommio::ExecutorJoinHandle<()>) {
    let mesh = MeshBuilder::<u64, _>::full(2, 1024);
    let (jobs_tx, jobs) = mpsc::channel::<u64>();
    let (done, done_rx) = mpsc::channel::<Duration>();
    let m1 = mesh.clone();
    let echo = LocalExecutorBuilder::new(placement(1))
        .name("bench-mesh-1")
        .spawn(move || async move {
            let (tx, rx) = m1.join().await.expect("mesh joins");
            let peer = 1 - tx.peer_id();
            while let Ok(Some(v)) = rx.recv_from(peer).await {
                if tx.send_to(peer, v + 1).await.is_err() {
                    break;
                }
            }
        })
        .expect("executor starts");
    let driver = LocalExecutorBuilder::new(placement(0))
        .name("bench-mesh-0")
        .spawn(move || async move {
            let (tx, rx) = mesh.join().await.expect("mesh joins");
            let peer = 1 - tx.peer_id();
            while let Some(iters) = next_job(&jobs).await {
                let start = Instant::now();
                for i in 0..iters {
                    tx.send_to(peer, i).await.expect("send");
                    let v = rx.recv_from(peer).await.expect("recv").expect("open");
                    debug_assert_eq!(v, i + 1);
                }
                done.send(start.elapsed()).expect("bench thread alive");
            }
            tx.close();
        })
        .expect("executor starts");
    (
        ExecutorThread {
            jobs: jobs_tx,
            done: done_rx,
            handle: Some(driver),
        },
        echo,
    )
}

fn bench_mesh(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let (t, echo) = mesh_pair();
    g.bench_function("cross_core_round_trip", |b| {
        b.iter_custom(|iters| t.run(iters))
    });
    drop(t);
    let _ = echo.join();
    g.finish();
}

criterion_group!(
    benches,
    bench_records,
    bench_protocol,
    bench_storage,
    bench_mesh
);
criterion_main!(benches);
