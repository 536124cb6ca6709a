//! Storage tests. Each runs the real code inside its own glommio executor, on real files with direct I/O,
//! in a fresh temporary directory.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, LocalExecutorPoolBuilder, Placement, PoolPlacement};

use super::segment::{index_file_name, log_file_name, time_index_file_name};
use super::*;
use crate::records::test_util::{build, BatchSpec};
use crate::records::{iter_batches, validate_batches};

const TOPIC: &str = "t";

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("test body completes");
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        tail_cache_bytes: TAIL_CACHE_BYTES_MIN,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, TOPIC, 0, config, &mut |_: &BatchHeader| {})
        .await
        .expect("log opens")
}

/// A batch of `records` records with `value_bytes` each and a timestamp.
fn batch(records: usize, value_bytes: usize, ts: i64) -> Vec<u8> {
    build(&BatchSpec {
        records,
        value_bytes,
        base_timestamp: ts,
        ..Default::default()
    })
}

fn append(log: &PartitionLog, b: &[u8]) -> AppendInfo {
    let hs = validate_batches(b, 1 << 20).expect("valid test batch");
    log.append(b, &hs, 0).expect("append")
}

/// Reads the whole log below the high watermark in steps of `max_bytes`, checking offsets are contiguous.
async fn read_all(log: &PartitionLog, max_bytes: usize) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let hw = log.high_watermark();
    while offset < hw {
        let bytes = log.read(offset, max_bytes, hw).await.expect("read");
        assert!(
            !bytes.is_empty(),
            "read at {offset} below hw {hw} returned nothing"
        );
        let hs = validate_batches(&bytes, usize::MAX).expect("read returns whole valid batches");
        for h in hs {
            assert_eq!(h.base_offset, offset, "offsets are contiguous");
            offset = h.last_offset() + 1;
            out.push(h);
        }
    }
    out
}

fn partition_dir(root: &Path) -> std::path::PathBuf {
    root.join(format!("{TOPIC}-0"))
}

/// Checks a rolled or closed segment the way `kafka-dump-log` would see it.
fn check_segment_files(dir: &Path, base: i64, expect_exact: bool) -> i64 {
    let data = std::fs::read(dir.join(log_file_name(base))).unwrap();
    let mut it = iter_batches(&data);
    let mut next = base;
    let mut positions = std::collections::HashMap::new();
    for item in it.by_ref() {
        let (pos, h) = item.expect("sound batch");
        assert!(crate::records::verify_crc(&data[pos..pos + h.total_size()]));
        assert_eq!(h.base_offset, next);
        positions.insert(pos as u32, h.last_offset());
        next = h.last_offset() + 1;
    }
    if expect_exact {
        assert_eq!(it.position(), data.len(), "segment {base} has no padding");
        let index = std::fs::read(dir.join(index_file_name(base))).unwrap();
        assert_eq!(index.len() % 8, 0);
        for e in index.chunks(8) {
            let rel = i32::from_be_bytes(e[0..4].try_into().unwrap()) as i64;
            let pos = u32::from_be_bytes(e[4..8].try_into().unwrap());
            assert_eq!(
                positions.get(&pos),
                Some(&(base + rel)),
                "index entry points at its batch"
            );
        }
        let tindex = std::fs::read(dir.join(time_index_file_name(base))).unwrap();
        assert_eq!(tindex.len() % 12, 0);
        assert!(
            !tindex.is_empty(),
            "a segment with timestamps has a final time index entry"
        );
    }
    next
}

#[test]
fn append_read_across_rolls_and_reopen() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        let mut last = 0;
        for i in 0..120 {
            let info = append(&log, &batch(1 + i % 4, 300, 1000 + i as i64));
            assert_eq!(info.log_append_time_ms, -1);
            last = info.last_offset;
            if i % 10 == 0 {
                log.wait_durable(last).await.unwrap();
            }
        }
        log.wait_durable(last).await.unwrap();
        assert_eq!(log.high_watermark(), last + 1);
        assert!(log.segment_count() > 3, "rolled: {}", log.segment_count());

        // Whole log, one batch at a time and in big reads; most of it comes from disk.
        let one = read_all(&log, 1).await;
        assert_eq!(one.len(), 120);
        let big = read_all(&log, 1 << 20).await;
        assert_eq!(one, big);

        // A fetch in the middle of a batch starts with that batch.
        let h = one[50];
        assert!(h.records_count > 1 || one[51].records_count > 1);
        let mid = if h.records_count > 1 { h } else { one[51] };
        let got = log.read(mid.base_offset + 1, 1, i64::MAX).await.unwrap();
        let got = validate_batches(&got, usize::MAX).unwrap();
        assert_eq!(got[0].base_offset, mid.base_offset);

        // At the end: empty; past it or before the start: out of range.
        assert!(log.read(last + 1, 100, i64::MAX).await.unwrap().is_empty());
        let e = log.read(last + 2, 100, i64::MAX).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 1);
        let e = log.read(-1, 100, i64::MAX).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 1);

        let segments = log.segment_count();
        log.close().await.unwrap();
        assert!(log
            .append(
                &batch(1, 1, 1),
                &validate_batches(&batch(1, 1, 1), 100).unwrap(),
                0
            )
            .is_err());

        // Rolled and closed segments are exact, with sane index files.
        let dir = partition_dir(tmp.path());
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                segment::parse_file_name(&e.unwrap().file_name().to_string_lossy(), "log")
            })
            .collect();
        bases.sort();
        assert_eq!(bases.len(), segments);
        let mut next = 0;
        for b in &bases {
            assert_eq!(*b, next);
            next = check_segment_files(&dir, *b, true);
        }
        assert_eq!(next, last + 1);

        // Reopen: same offsets, same bytes.
        let mut producers_seen = 0;
        let log2 = PartitionLog::open(
            tmp.path(),
            TOPIC,
            0,
            small_config(),
            &mut |_: &BatchHeader| producers_seen += 1,
        )
        .await
        .unwrap();
        assert_eq!(producers_seen, 120);
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(log2.high_watermark(), last + 1);
        assert_eq!(read_all(&log2, 3000).await, one);
        let info = append(&log2, &batch(2, 10, 5000));
        assert_eq!(info.base_offset, last + 1);
        log2.wait_durable(info.last_offset).await.unwrap();
        assert_eq!(read_all(&log2, 1 << 20).await.len(), 121);
        log2.close().await.unwrap();
    });
}

#[test]
fn group_commit_many_appends_one_wait() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), LogConfig::default()).await;
        let b = batch(1, 100, 1);
        let hs = validate_batches(&b, 1 << 20).unwrap();
        let mut last = 0;
        for _ in 0..2000 {
            last = log.append(&b, &hs, 0).unwrap().last_offset;
        }
        assert_eq!(last, 1999);
        // Nothing is visible before it is durable.
        assert!(log.high_watermark() <= 2000);
        log.wait_durable(last).await.unwrap();
        assert_eq!(log.high_watermark(), 2000);
        assert!(
            log.sync_count() < 20,
            "group commit: {} syncs for 2000 appends",
            log.sync_count()
        );
        assert_eq!(read_all(&log, 1 << 20).await.len(), 2000);
        log.close().await.unwrap();
    });
}

#[test]
fn relaxed_flush_acks_after_write() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_interval_messages: Some(1_000_000),
            flush_interval_ms: Some(60_000),
            ..LogConfig::default()
        };
        let log = open(tmp.path(), config).await;
        let info = append(&log, &batch(3, 10, 1));
        // Appended but not yet written: consumers must not see it (a process crash would lose it).
        assert_eq!(log.high_watermark(), 0);
        log.wait_durable(info.last_offset).await.unwrap();
        // Written (acks wait for the write in this mode): now it is visible.
        assert_eq!(log.high_watermark(), 3);
        assert_eq!(log.sync_count(), 0, "no fsync before the interval");
        assert_eq!(read_all(&log, 100).await.len(), 1);
        log.close().await.unwrap();
        assert!(log.sync_count() >= 1, "close syncs");
        assert_eq!(log.durable_offset(), 3);
    });
}

#[test]
fn log_append_time_is_stamped() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        };
        let log = open(tmp.path(), config).await;
        let info = append(&log, &batch(2, 10, 5));
        assert!(info.log_append_time_ms > 1_600_000_000_000);
        log.wait_durable(info.last_offset).await.unwrap();
        let got = log.read(0, 1000, i64::MAX).await.unwrap();
        let h = validate_batches(&got, usize::MAX).unwrap()[0];
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, info.log_append_time_ms);
        log.close().await.unwrap();
    });
}

#[test]
fn timestamps_lookup() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        let mut last = 0;
        for i in 0..60i64 {
            last = append(&log, &batch(1, 400, 10_000 + i * 10)).last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert!(log.segment_count() > 1);
        let at = |offset, timestamp| Some(TimestampOffset { timestamp, offset });
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), at(0, 10_000));
        assert_eq!(
            log.offset_for_timestamp(10_005).await.unwrap(),
            at(1, 10_010)
        );
        assert_eq!(
            log.offset_for_timestamp(10_450).await.unwrap(),
            at(45, 10_450)
        );
        assert_eq!(
            log.offset_for_timestamp(10_590).await.unwrap(),
            at(59, 10_590)
        );
        assert_eq!(log.offset_for_timestamp(10_591).await.unwrap(), None);
        assert_eq!(log.max_timestamp_offset().await.unwrap(), at(59, 10_590));
        log.close().await.unwrap();
    });
}

/// Kafka's answer by definition: the first record (offset order) with timestamp >= `ts`.
fn first_at_or_after(model: &[(i64, i64)], ts: i64) -> Option<TimestampOffset> {
    model
        .iter()
        .find(|&&(_, t)| t >= ts)
        .map(|&(offset, timestamp)| TimestampOffset { timestamp, offset })
}

/// The first record holding the largest timestamp.
fn first_max(model: &[(i64, i64)]) -> Option<TimestampOffset> {
    let max = model.iter().map(|&(_, t)| t).max()?;
    first_at_or_after(model, max)
}

#[test]
fn per_record_lookup_over_batches_segments_and_codecs() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        let mut model = Vec::new();
        let mut last = 0;
        for b in 0..100i64 {
            // Ten records a batch, non-monotonic inside the batch and across batches.
            let ts: Vec<i64> = (0..10i64)
                .map(|i| 100_000 + b * 1000 + ((i * 7919 + b * 31) % 10) * 150 - (b % 3) * 700)
                .collect();
            let info = append(&log, &time_lookup::tests::batch_of(&ts, (b % 5) as i16));
            model.extend(
                ts.iter()
                    .enumerate()
                    .map(|(i, &t)| (info.base_offset + i as i64, t)),
            );
            last = info.last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert!(log.segment_count() > 2, "{} segments", log.segment_count());
        let mut targets: Vec<i64> = model.iter().flat_map(|&(_, t)| [t - 1, t, t + 1]).collect();
        targets.extend([0, i64::MAX]);
        for ts in targets {
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                first_at_or_after(&model, ts),
                "timestamp {ts}"
            );
        }
        assert_eq!(log.max_timestamp_offset().await.unwrap(), first_max(&model));
        log.close().await.unwrap();

        // The same answers from the rebuilt indexes after a restart.
        let log = open(tmp.path(), small_config()).await;
        for &(_, ts) in model.iter().step_by(7) {
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                first_at_or_after(&model, ts)
            );
        }
        assert_eq!(log.max_timestamp_offset().await.unwrap(), first_max(&model));
        log.close().await.unwrap();
    });
}

#[test]
fn lookup_never_answers_at_or_above_the_high_watermark() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        let first = append(&log, &time_lookup::tests::batch_of(&[1000, 3000, 2000], 0));
        log.wait_durable(first.last_offset).await.unwrap();
        let second = append(&log, &time_lookup::tests::batch_of(&[5000, 9000], 4));
        // Polled before the flusher can run: the second batch is not durable, so not visible.
        assert_eq!(log.high_watermark(), 3);
        assert_eq!(log.offset_for_timestamp(4000).await.unwrap(), None);
        assert_eq!(log.max_timestamp_offset().await.unwrap(), None);
        let at = |offset, timestamp| Some(TimestampOffset { timestamp, offset });
        assert_eq!(log.offset_for_timestamp(2500).await.unwrap(), at(1, 3000));
        log.wait_durable(second.last_offset).await.unwrap();
        assert_eq!(log.offset_for_timestamp(4000).await.unwrap(), at(3, 5000));
        assert_eq!(log.max_timestamp_offset().await.unwrap(), at(4, 9000));
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_lookup_uses_the_batch_time_for_every_record() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            log_append_time: true,
            ..small_config()
        };
        let log = open(tmp.path(), config).await;
        let mut model = Vec::new();
        let mut last = 0;
        for b in 0..5i64 {
            // CreateTime stamps far in the past and descending: LogAppendTime replaces them all.
            let ts: Vec<i64> = (0..4).map(|i| 5000 - b * 100 - i).collect();
            let info = append(&log, &time_lookup::tests::batch_of(&ts, (b % 5) as i16));
            model.extend(
                (info.base_offset..=info.last_offset).map(|o| (o, info.log_append_time_ms)),
            );
            last = info.last_offset;
            glommio::timer::sleep(std::time::Duration::from_millis(3)).await;
        }
        log.wait_durable(last).await.unwrap();
        for &(_, ts) in &model {
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                first_at_or_after(&model, ts)
            );
        }
        assert_eq!(
            log.offset_for_timestamp(4000).await.unwrap(),
            first_at_or_after(&model, 0)
        );
        assert_eq!(log.max_timestamp_offset().await.unwrap(), first_max(&model));
        log.close().await.unwrap();
    });
}

#[test]
fn corrupt_records_on_disk_are_an_error_not_a_panic() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        let mut last = 0;
        for b in 0..30i64 {
            let ts: Vec<i64> = (0..10).map(|i| 1000 + b * 10 + i).collect();
            last = append(&log, &time_lookup::tests::batch_of(&ts, 0)).last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert!(log.segment_count() > 1);
        log.close().await.unwrap();
        // The first record's length varint of the first batch of the first (sealed) segment: too long.
        let path = tmp.path().join(format!("{TOPIC}-0")).join(log_file_name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[records::HEADER_BYTES..records::HEADER_BYTES + 6].copy_from_slice(&[0xff; 6]);
        std::fs::write(&path, &bytes).unwrap();
        let log = open(tmp.path(), small_config()).await;
        let e = log.offset_for_timestamp(1000).await.unwrap_err();
        assert!(matches!(e, StorageError::Corrupt { .. }), "{e:?}");
        // Later records are unaffected.
        assert_eq!(
            log.offset_for_timestamp(1015).await.unwrap(),
            Some(TimestampOffset {
                timestamp: 1015,
                offset: 15
            })
        );
        log.close().await.unwrap();
    });
}

#[test]
fn wait_for_data_wakes_and_is_cancel_safe() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), LogConfig::default()).await;
        // A dropped waiter leaves nothing behind.
        {
            let w = log.wait_for_data(0);
            let _ = futures_lite::future::poll_once(Box::pin(w)).await;
        }
        assert_eq!(log.shared.state.borrow().waiters.len(), 0);
        let waiter = glommio::spawn_local(log.wait_for_data(0));
        glommio::yield_if_needed().await;
        append(&log, &batch(1, 10, 1));
        waiter.await;
        assert_eq!(log.high_watermark(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_bytes_and_time() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: 40 * 1024,
            ..small_config()
        };
        let log = open(tmp.path(), config).await;
        let mut last = 0;
        for i in 0..200i64 {
            last = append(&log, &batch(1, 900, 1_000 + i)).last_offset;
        }
        log.wait_durable(last).await.unwrap();
        let before = log.segment_count();
        let deleted = log.enforce_retention(now_ms()).await.unwrap();
        assert!(deleted > 0);
        assert_eq!(log.segment_count(), before - deleted);
        assert!(log.size_bytes() <= 40 * 1024 + 16 * 1024);
        let start = log.log_start_offset();
        assert!(start > 0);
        let e = log.read(start - 1, 100, i64::MAX).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 1);
        assert_eq!(read_all(&log, 1 << 20).await.len() as i64, last + 1 - start);
        let dir = partition_dir(tmp.path());
        assert!(!dir.join(log_file_name(0)).exists());
        assert!(!dir.join(index_file_name(0)).exists());

        // By time: everything but the active segment is ancient.
        log.set_config(LogConfig {
            retention_ms: 1000,
            retention_bytes: -1,
            ..small_config()
        });
        log.enforce_retention(now_ms()).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(
            log.log_start_offset(),
            log.shared.state.borrow().segments[0].base_offset
        );
        read_all(&log, 1 << 20).await;
        log.close().await.unwrap();
    });
}

/// Writes `n` batches, waits until they are durable and returns the log (left open, as after a crash).
async fn write_batches(root: &Path, n: usize) -> (PartitionLog, i64) {
    let log = open(root, small_config()).await;
    let mut last = 0;
    for i in 0..n {
        last = append(&log, &batch(2, 200, 1_000 + i as i64)).last_offset;
    }
    log.wait_durable(last).await.unwrap();
    (log, last)
}

fn active_log_path(root: &Path, log: &PartitionLog) -> std::path::PathBuf {
    let base = log.shared.state.borrow().active().base_offset;
    partition_dir(root).join(log_file_name(base))
}

#[test]
fn recovery_after_crash_trims_zero_padding() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, last) = write_batches(tmp.path(), 30).await;
        let path = active_log_path(tmp.path(), &log);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() % BLOCK_BYTES,
            0,
            "padded while active"
        );
        // No close: the second open sees what a crash leaves.
        let log2 = open(tmp.path(), small_config()).await;
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(read_all(&log2, 1 << 20).await.len(), 30);
        let info = append(&log2, &batch(1, 10, 1));
        log2.wait_durable(info.last_offset).await.unwrap();
        log2.close().await.unwrap();
        let log3 = open(tmp.path(), small_config()).await;
        assert_eq!(read_all(&log3, 1 << 20).await.len(), 31);
        drop(log);
    });
}

#[test]
fn recovery_truncates_torn_tail_and_flipped_byte() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, last) = write_batches(tmp.path(), 30).await;
        log.close().await.unwrap();
        let path = active_log_path(tmp.path(), &log);
        let good_len = std::fs::metadata(&path).unwrap().len();

        // Torn: half a batch after the end.
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&batch(3, 100, 1)[..150]);
        std::fs::write(&path, &data).unwrap();
        let log2 = open(tmp.path(), small_config()).await;
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        log2.close().await.unwrap();

        // Flipped byte inside the last batch: that batch goes.
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 5] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let log3 = open(tmp.path(), small_config()).await;
        assert_eq!(log3.log_end_offset(), last - 1);
        assert_eq!(read_all(&log3, 1 << 20).await.len(), 29);
        log3.close().await.unwrap();

        // Zero tail of several blocks.
        let mut data = std::fs::read(&path).unwrap();
        let len = data.len() as u64;
        data.extend(vec![0u8; 3 * 4096]);
        std::fs::write(&path, &data).unwrap();
        let log4 = open(tmp.path(), small_config()).await;
        assert_eq!(log4.log_end_offset(), last - 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        log4.close().await.unwrap();
    });
}

#[test]
fn recovery_rebuilds_missing_index_and_ignores_stray_files() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, last) = write_batches(tmp.path(), 60).await;
        log.close().await.unwrap();
        let dir = partition_dir(tmp.path());
        let idx = dir.join(index_file_name(0));
        let tidx = dir.join(time_index_file_name(0));
        let want = std::fs::read(&idx).unwrap();
        assert!(!want.is_empty());
        std::fs::remove_file(&idx).unwrap();
        std::fs::write(&tidx, b"garbage").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        std::fs::write(dir.join("00000000000000000007.index"), b"").unwrap();
        let log2 = open(tmp.path(), small_config()).await;
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(
            std::fs::read(&idx).unwrap(),
            want,
            "index rebuilt identically"
        );
        assert_eq!(std::fs::metadata(&tidx).unwrap().len() % 12, 0);
        assert!(dir.join("notes.txt").exists(), "stray files are left alone");
        assert_eq!(read_all(&log2, 1 << 20).await.len(), 60);
        log2.close().await.unwrap();
    });
}

#[test]
fn delete_removes_directory() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = write_batches(tmp.path(), 3).await;
        log.delete().await.unwrap();
        assert!(!partition_dir(tmp.path()).exists());
    });
}

/// Regression test for glommio's EOPNOTSUPP trap: on EVERY executor of a pool over all CPUs, a brand-new
/// segment in a fresh directory must be writable and readable back.
#[test]
fn fresh_segment_on_every_executor() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(cpus, None))
        .io_memory(2 << 20)
        .on_all_shards(|| async move {
            let tmp = tempfile::tempdir().unwrap();
            let log = open(tmp.path(), LogConfig::default()).await;
            let b = batch(2, 50, 7);
            let info = append(&log, &b);
            log.wait_durable(info.last_offset).await.unwrap();
            // Force the read to go to disk: drop the cache.
            {
                let mut st = log.shared.state.borrow_mut();
                st.cache.clear();
            }
            let got: Bytes = log
                .read(0, 1 << 20, i64::MAX)
                .await
                .expect("read from a fresh segment");
            assert_eq!(got.len(), b.len());
            assert_eq!(
                validate_batches(&got, usize::MAX).unwrap()[0].records_count,
                2
            );
            log.close().await.unwrap();
            glommio::executor().id()
        })
        .expect("pool starts");
    let ids: Vec<usize> = handles
        .join_all()
        .into_iter()
        .map(|r| r.expect("shard ok"))
        .collect();
    assert_eq!(ids.len(), cpus);
}

/// Not a check by itself: writes a rolled log into `$RINGTIDE_DUMP_DIR` so Kafka's own
/// `kafka-dump-log.sh --files ... --index-sanity-check / --verify-index-only` can be run on it by hand.
#[test]
#[ignore]
fn kafka_dump_log_fixture() {
    let Ok(out) = std::env::var("RINGTIDE_DUMP_DIR") else {
        return;
    };
    run(move || async move {
        let root = Path::new(&out);
        let log = open(root, small_config()).await;
        let mut last = 0;
        for i in 0..100i64 {
            last = append(
                &log,
                &batch(1 + (i % 3) as usize, 300, 1_700_000_000_000 + i),
            )
            .last_offset;
        }
        log.wait_durable(last).await.unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn recovery_rebuilds_truncated_index_and_trims_zeroed_last_batch() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, last) = write_batches(tmp.path(), 60).await;
        log.close().await.unwrap();
        let dir = partition_dir(tmp.path());
        let idx = dir.join(index_file_name(0));
        let want = std::fs::read(&idx).unwrap();
        assert!(want.len() >= 2 * 8);
        // Half an entry: a crash while the index was written.
        std::fs::write(&idx, &want[..want.len() - 5]).unwrap();
        // The last batch overwritten with zeros (a block that never reached the disk).
        let path = active_log_path(tmp.path(), &log);
        let mut data = std::fs::read(&path).unwrap();
        let (last_pos, last_h) = iter_batches(&data).map(|r| r.unwrap()).last().unwrap();
        data[last_pos..].fill(0);
        std::fs::write(&path, &data).unwrap();
        let log2 = open(tmp.path(), small_config()).await;
        assert_eq!(
            std::fs::read(&idx).unwrap(),
            want,
            "index rebuilt identically"
        );
        assert_eq!(log2.log_end_offset(), last_h.base_offset);
        assert_eq!(log2.log_end_offset(), last - 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last_pos as u64);
        assert_eq!(read_all(&log2, 1 << 20).await.len(), 59);
        log2.close().await.unwrap();
    });
}

#[test]
fn clean_shutdown_marker_is_taken_once_and_torn_tails_are_still_trimmed() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert!(!take_clean_shutdown_marker(root).unwrap(), "no marker yet");
        let (log, last) = write_batches(root, 30).await;
        log.close().await.unwrap();
        write_clean_shutdown_marker(root).unwrap();
        assert!(root.join(CLEAN_SHUTDOWN_FILE_NAME).exists());
        assert!(take_clean_shutdown_marker(root).unwrap());
        assert!(
            !root.join(CLEAN_SHUTDOWN_FILE_NAME).exists(),
            "taken means removed"
        );
        assert!(started_clean(root));
        // Even after a clean shutdown, bytes appended behind the broker's back are cut off.
        let path = active_log_path(root, &log);
        let good_len = std::fs::metadata(&path).unwrap().len();
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&batch(3, 100, 1)[..120]);
        std::fs::write(&path, &data).unwrap();
        let log2 = open(root, small_config()).await;
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(read_all(&log2, 1 << 20).await.len(), 30);
        log2.close().await.unwrap();
    });
}

#[test]
fn disk_full_errors_are_told_apart() {
    let full = StorageError::io(
        Path::new("/x"),
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert!(full.is_disk_full());
    let quota = StorageError::io(
        Path::new("/x"),
        std::io::Error::from_raw_os_error(libc::EDQUOT),
    );
    assert!(quota.is_disk_full());
    let eio = StorageError::io(
        Path::new("/x"),
        std::io::Error::from_raw_os_error(libc::EIO),
    );
    assert!(!eio.is_disk_full());
    assert_eq!(StorageError::DiskFull("x".into()).kafka_error_code(), 56);
}

#[test]
fn core_budget_evicts_least_recently_read_caches_and_reads_still_work() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            tail_cache_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let mut logs = Vec::new();
        for p in 0..3 {
            let log = PartitionLog::open(tmp.path(), TOPIC, p, config, &mut |_: &BatchHeader| {})
                .await
                .expect("log opens");
            let mut last = 0;
            for i in 0..4 {
                last = append(&log, &batch(10, 1000, i)).last_offset;
            }
            log.wait_durable(last).await.unwrap();
            logs.push(log);
        }
        let per_log = logs[0].shared.state.borrow().cache.bytes();
        assert!(per_log > 0);
        let before = tail_cache::core_bytes();
        assert!(before >= 3 * per_log);
        // Log 1 was read most recently, then log 0: log 2 is the least recently read.
        logs[0].read(0, 1 << 20, i64::MAX).await.unwrap();
        logs[1].read(0, 1 << 20, i64::MAX).await.unwrap();
        // A bound that one log's cache exceeds: the least recently read goes first.
        tail_cache::enforce(before - per_log / 2, before - per_log);
        assert_eq!(logs[2].shared.state.borrow().cache.bytes(), 0);
        assert_eq!(logs[1].shared.state.borrow().cache.bytes(), per_log);
        assert_eq!(tail_cache::core_bytes(), before - per_log);
        // Its records are still there, from disk.
        let headers = read_all(&logs[2], 4096).await;
        assert_eq!(headers.len(), 4);
        for log in &logs {
            log.delete().await.unwrap();
        }
        assert_eq!(tail_cache::core_bytes(), 0);
    });
}

/// Recovery hooks that accept any snapshot and count what they see.
#[derive(Default)]
struct CountingHooks {
    snapshot: Option<(i64, Vec<u8>)>,
    batches: Vec<i64>,
}

impl RecoveryHooks for CountingHooks {
    fn load_snapshot(&mut self, offset: i64, bytes: &[u8]) -> Result<(), String> {
        self.snapshot = Some((offset, bytes.to_vec()));
        Ok(())
    }
    fn on_batch(
        &mut self,
        h: &BatchHeader,
        _marker: Option<crate::records::EndTxnMarker>,
    ) -> Option<AbortedTxn> {
        self.batches.push(h.base_offset);
        None
    }
    fn discard_snapshot(&mut self) {
        self.snapshot = None;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn checkpoint_then_crash_reads_only_past_the_recovery_point() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = write_batches(tmp.path(), 60).await;
        assert!(log.segment_count() >= 2, "the test needs a rolled segment");
        let rp = log
            .checkpoint(|| b"state at rp".to_vec())
            .await
            .unwrap()
            .expect("the log moved");
        assert_eq!(rp, log.log_end_offset());
        assert_eq!(log.checkpoint(|| unreachable!()).await.unwrap(), None);
        assert_eq!(checkpoint::get(tmp.path(), TOPIC, 0), Some(rp));
        let mut last = 0;
        let segments = log.segment_count();
        for i in 0..10 {
            last = append(&log, &batch(1, 10, 5_000 + i)).last_offset;
        }
        log.wait_durable(last).await.unwrap();
        assert_eq!(
            log.segment_count(),
            segments,
            "small appends stay in the active segment"
        );
        let want = read_all(&log, 1 << 20).await;

        // What kill -9 leaves: the files as they are, no clean-shutdown marker.
        let crash = tempfile::tempdir().unwrap();
        copy_dir(&partition_dir(tmp.path()), &partition_dir(crash.path()));
        checkpoint::set(crash.path(), TOPIC, 0, Some(rp));
        let _ = take_recovery_totals();
        let mut hooks = CountingHooks::default();
        let log2 = PartitionLog::open(crash.path(), TOPIC, 0, small_config(), &mut hooks)
            .await
            .unwrap();
        let stats = take_recovery_totals();
        assert_eq!(hooks.snapshot, Some((rp, b"state at rp".to_vec())));
        assert_eq!(
            hooks.batches.len(),
            10,
            "only batches past the snapshot replayed"
        );
        assert!(hooks.batches.iter().all(|&o| o >= rp));
        assert_eq!(stats.segments_scanned, 0, "{stats:?}");
        assert_eq!(stats.segments_from_index, log2.segment_count());
        assert_eq!(
            stats.batches_verified, 10,
            "CRCs checked past the recovery point only"
        );
        assert_eq!(log2.log_end_offset(), last + 1);
        assert_eq!(read_all(&log2, 1 << 20).await, want);
        // Index lookups still land on the right batches.
        let mid = want[want.len() / 2].base_offset;
        let got = log2.read(mid, 1, log2.high_watermark()).await.unwrap();
        assert_eq!(
            validate_batches(&got, usize::MAX).unwrap()[0].base_offset,
            mid
        );
        log2.close().await.unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn index_pointing_at_the_wrong_batch_is_rebuilt() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let (log, last) = write_batches(tmp.path(), 60).await;
        log.close().await.unwrap();
        let want = {
            let l = open(tmp.path(), small_config()).await;
            let w = read_all(&l, 1 << 20).await;
            l.close().await.unwrap();
            w
        };
        let idx = partition_dir(tmp.path()).join(index_file_name(0));
        let good = std::fs::read(&idx).unwrap();
        assert!(good.len() >= 16);
        for damage in [
            // last entry's offset one too far
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 5] = b[n - 5].wrapping_add(1);
                b
            },
            // last entry's position past the file
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
                b
            },
            // entries out of order
            {
                let mut b = good[8..16].to_vec();
                b.extend_from_slice(&good[..8]);
                b
            },
        ] {
            std::fs::write(&idx, &damage).unwrap();
            let _ = take_recovery_totals();
            let log2 = open(tmp.path(), small_config()).await;
            assert!(take_recovery_totals().segments_scanned >= 1);
            assert_eq!(log2.log_end_offset(), last + 1);
            assert_eq!(read_all(&log2, 1 << 20).await, want);
            log2.close().await.unwrap();
            assert_eq!(std::fs::read(&idx).unwrap(), good, "rebuilt identically");
        }
    });
}

/// Appends `n` batches of ~900 bytes (a roll every ~17 with `small_config`), each with a producer snapshot
/// source that names the log end offset it was taken at, and waits until they are durable.
async fn append_with_snapshots(log: &PartitionLog, n: usize) -> i64 {
    let mut last = 0;
    for i in 0..n {
        let b = batch(1, 900, 1_000 + i as i64);
        let hs = validate_batches(&b, 1 << 20).unwrap();
        let leo = log.log_end_offset();
        let snapshot = move || format!("state at {leo}").into_bytes();
        last = log
            .append_with_snapshot(&b, &hs, 0, Some(&snapshot))
            .unwrap()
            .last_offset;
    }
    log.wait_durable(last).await.unwrap();
    last
}

/// The offsets of the producer snapshot files in a partition directory, oldest first.
fn snapshot_files(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            segment::parse_file_name(&name, segment::SNAPSHOT_EXT)
        })
        .collect();
    v.sort_unstable();
    v
}

fn segment_bases(log: &PartitionLog) -> Vec<i64> {
    let st = log.shared.state.borrow();
    st.segments.iter().map(|s| s.base_offset).collect()
}

#[test]
fn roll_writes_a_producer_snapshot_named_by_the_new_segment() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        append_with_snapshots(&log, 80).await;
        let bases = segment_bases(&log);
        assert!(bases.len() >= 4, "the test needs several rolls: {bases:?}");
        let dir = partition_dir(tmp.path());
        // One snapshot per rolled-to segment, holding the producer state taken at its base offset.
        assert_eq!(snapshot_files(&dir), bases[1..].to_vec());
        for &b in &bases[1..] {
            let bytes = std::fs::read(dir.join(segment::snapshot_file_name(b))).unwrap();
            assert_eq!(bytes, format!("state at {b}").into_bytes());
        }
        // The roll advanced the recovery point to the newest segment's base (Kafka's flush at roll).
        let newest = *bases.last().unwrap();
        assert_eq!(log.shared.state.borrow().recovery_point, newest);
        assert_eq!(checkpoint::get(tmp.path(), TOPIC, 0), Some(newest));
        // A log without producer state rolls without snapshots.
        let plain = tempfile::tempdir().unwrap();
        let (log2, _) = write_batches(plain.path(), 60).await;
        assert!(log2.segment_count() >= 2);
        assert!(snapshot_files(&partition_dir(plain.path())).is_empty());
        log2.close().await.unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_the_snapshots_of_deleted_segments() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: 40 * 1024,
            retention_ms: -1,
            ..small_config()
        };
        let log = open(tmp.path(), config).await;
        append_with_snapshots(&log, 200).await;
        let deleted = log.enforce_retention(now_ms()).await.unwrap();
        assert!(deleted >= 2, "the test needs segments deleted");
        let bases = segment_bases(&log);
        let dir = partition_dir(tmp.path());
        // No checkpoint file protects anything: the snapshots of the live segments remain.
        assert_eq!(snapshot_files(&dir), bases.to_vec());
        assert_eq!(log.shared.state.borrow().snapshots, bases);
        // DeleteRecords too.
        let start = bases[2];
        log.delete_records_before(start).await.unwrap();
        assert_eq!(snapshot_files(&dir), bases[2..].to_vec());
        log.close().await.unwrap();
    });
}

#[test]
fn the_snapshot_at_or_below_the_written_recovery_point_survives() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = open(tmp.path(), small_config()).await;
        append_with_snapshots(&log, 40).await;
        let dir = partition_dir(tmp.path());
        let first = segment_bases(&log);
        assert!(first.len() >= 3, "{first:?}");
        // The checkpoint file on disk names the second segment's base offset; then the log moves on.
        let protected = first[1];
        checkpoint::set(tmp.path(), TOPIC, 0, Some(protected));
        checkpoint::write(tmp.path()).unwrap();
        assert_eq!(checkpoint::written(tmp.path(), TOPIC, 0), Some(protected));
        // A recovery point checkpoint's snapshot (at no segment's base) ...
        let cp = log
            .checkpoint(|| b"checkpoint".to_vec())
            .await
            .unwrap()
            .expect("moved");
        assert!(!first.contains(&cp));
        assert!(snapshot_files(&dir).contains(&cp));
        append_with_snapshots(&log, 60).await;
        // ... goes once it is not the newest (the file on disk does not name it).
        assert!(!snapshot_files(&dir).contains(&cp));
        // Retention by time deletes every sealed segment, and their snapshots but the protected one.
        log.set_config(LogConfig {
            retention_ms: 0,
            ..small_config()
        });
        log.enforce_retention(now_ms() + 10).await.unwrap();
        let bases = segment_bases(&log);
        assert_eq!(bases.len(), 1);
        assert_eq!(snapshot_files(&dir), vec![protected, bases[0]]);
        // Crash now: recovery starts from the protected snapshot (the newest at or below the file's
        // recovery point; the log's start moved past it, so every remaining batch is replayed).
        let crash = tempfile::tempdir().unwrap();
        copy_dir(&dir, &partition_dir(crash.path()));
        checkpoint::set(crash.path(), TOPIC, 0, Some(protected));
        let mut hooks = CountingHooks::default();
        let log2 = PartitionLog::open(crash.path(), TOPIC, 0, small_config(), &mut hooks)
            .await
            .unwrap();
        assert_eq!(
            hooks.snapshot,
            Some((protected, format!("state at {protected}").into_bytes()))
        );
        log2.close().await.unwrap();
        // Once the file names a newer recovery point, the next snapshot write lets the old one go.
        checkpoint::write(tmp.path()).unwrap();
        let now = checkpoint::written(tmp.path(), TOPIC, 0).unwrap();
        assert!(now > protected);
        append_with_snapshots(&log, 20).await;
        assert!(!snapshot_files(&dir).contains(&protected));
        log.close().await.unwrap();
    });
}

#[test]
fn doomed_snapshots_follow_kafkas_rules() {
    let s = |v: &[i64]| v.iter().copied().collect::<VecDeque<i64>>();
    // Per segment base, kept while the segment lives; strays only while newest.
    assert_eq!(
        doomed_snapshots(&s(&[10, 15, 20, 30, 35]), &[0, 10, 20, 30], 0, None),
        vec![15]
    );
    assert_eq!(
        doomed_snapshots(&s(&[10, 15, 20, 30, 35]), &[0, 10, 20, 30], 0, Some(17)),
        Vec::<i64>::new()
    );
    // Segments 0 and 10 deleted: their snapshots go, unless one is the newest at or below the written
    // recovery point.
    assert_eq!(
        doomed_snapshots(&s(&[10, 20, 30]), &[20, 30], 20, None),
        vec![10]
    );
    assert_eq!(
        doomed_snapshots(&s(&[10, 20, 30]), &[20, 30], 20, Some(12)),
        Vec::<i64>::new()
    );
    // A base below the log start (DeleteRecords inside a segment) keeps no snapshot.
    assert_eq!(
        doomed_snapshots(&s(&[20, 30]), &[20, 30], 25, None),
        vec![20]
    );
    // The newest always stays.
    assert_eq!(
        doomed_snapshots(&s(&[40]), &[0], 0, None),
        Vec::<i64>::new()
    );
}

#[test]
fn leader_epochs_at_open_come_from_the_file_and_the_batches_past_it() {
    use super::epochs::LeaderEpochCache;
    let dir = std::path::Path::new("/nonexistent");
    let file = |entries: &[(i32, i64)]| {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            c.assign(e, o);
        }
        c
    };
    let pairs = |c: &LeaderEpochCache| -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    };
    // A new, empty log: nothing to write.
    let (c, changed) = super::recovered_epochs(dir, None, &[], 0, 0);
    assert!(c.entries().is_empty() && !changed);
    // A log from before the file existed: its first epoch at the log start, then what recovery saw.
    let (c, changed) = super::recovered_epochs(dir, None, &[(0, 10), (3, 50)], 0, 100);
    assert_eq!((pairs(&c), changed), (vec![(0, 0), (3, 50)], true));
    // The file is cut to the log end; batches replayed from an older snapshot do not rewrite history.
    let (c, changed) =
        super::recovered_epochs(dir, Some(Ok(file(&[(0, 0), (2, 40)]))), &[(0, 10)], 0, 30);
    assert_eq!((pairs(&c), changed), (vec![(0, 0)], true));
    // Epochs written after the file's last write are added from the batches.
    let (c, changed) =
        super::recovered_epochs(dir, Some(Ok(file(&[(0, 0)]))), &[(0, 5), (1, 20)], 0, 30);
    assert_eq!((pairs(&c), changed), (vec![(0, 0), (1, 20)], true));
    let (c, changed) = super::recovered_epochs(dir, Some(Ok(file(&[(0, 0), (1, 20)]))), &[], 0, 30);
    assert_eq!((pairs(&c), changed), (vec![(0, 0), (1, 20)], false));
    // An unusable file: rebuilt and written again.
    let (c, changed) = super::recovered_epochs(dir, Some(Err("bad".into())), &[(4, 7)], 7, 9);
    assert_eq!((pairs(&c), changed), (vec![(4, 7)], true));
}
