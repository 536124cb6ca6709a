//! Opening a partition directory after a clean shutdown or a crash.
//!
//! Fault model: the process died at any instant. The last segment may end in a torn batch, zero padding
//! (direct I/O writes whole 4 KiB blocks) or garbage; a segment being rolled may not have been truncated
//! yet; index files may be missing, stale or half written; stray files may sit in the directory.
//! Recovery scans every segment's batch headers (verifying CRCs of the last segment, where a crash can tear
//! data), truncates each segment to its valid prefix (one `warn!` naming the file and offset), rebuilds the
//! indexes in memory and rewrites the files of sealed segments whose index files do not match.
//! After a clean shutdown (`.kafka_cleanshutdown` found at start-up) the CRC verification of the last segment
//! is skipped; everything else is the same, so a torn or zero-filled tail is still trimmed.

use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use super::limits::{BLOCK_BYTES, SCAN_WINDOW_BYTES};
use super::segment::{log_file_name, parse_file_name, Segment};
use super::{
    ensure_window, now_ms, open_segment_file, write_small_file, DiskRead, LogConfig, StorageError,
};
use crate::records::{self, BatchHeader};

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    /// Bytes of the active segment's last partial block, for the flusher.
    pub tail_block: Vec<u8>,
}

/// Where and why a segment's valid prefix ends.
struct ScanEnd {
    valid_size: u64,
    reason: Option<&'static str>,
}

pub(crate) async fn recover(
    dir: &Path,
    config: &LogConfig,
    clean: bool,
    on_batch: &mut dyn FnMut(&BatchHeader),
) -> Result<Recovered, StorageError> {
    let mut bases = Vec::new();
    let mut index_bases = HashSet::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(b) = parse_file_name(&name, "log") {
            bases.push(b);
        } else if let Some(b) =
            parse_file_name(&name, "index").or_else(|| parse_file_name(&name, "timeindex"))
        {
            index_bases.insert((b, name));
        } else if name == super::LOG_START_FILE {
            // The DeleteRecords checkpoint; read by `PartitionLog::open`.
        } else {
            tracing::warn!(file = %entry.path().display(), "ignoring stray file in partition directory");
        }
    }
    bases.sort_unstable();
    for (b, name) in &index_bases {
        if bases.binary_search(b).is_err() {
            tracing::warn!(file = %dir.join(name).display(), "ignoring index file without a segment");
        }
    }

    if bases.is_empty() {
        let path = dir.join(log_file_name(0));
        let file = open_segment_file(&path, true).await?;
        return Ok(Recovered {
            segments: vec![Segment::new(dir, 0, now_ms(), Some(Rc::new(file)))],
            tail_block: Vec::new(),
        });
    }

    let mut segments = Vec::with_capacity(bases.len());
    let mut tail_block = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let path = dir.join(log_file_name(base));
        let file = Rc::new(open_segment_file(&path, false).await?);
        let file_size = file
            .file_size()
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        let created_ms = std::fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| d.as_millis() as i64);
        let mut seg = Segment::new(dir, base, created_ms, None);
        let interval = config.index_interval_bytes;
        let disk = DiskRead {
            segment_base: base,
            file: file.clone(),
            path: path.clone(),
            start: 0,
            limit: file_size,
        };
        // After a clean shutdown the active segment was synced and truncated to its exact size: its
        // headers are still walked (producer state, indexes) but its CRCs are not re-verified.
        let end = scan(&disk, base, last && !clean, &mut |pos, h| {
            seg.track_batch(pos, h, interval);
            on_batch(h);
        })
        .await?;
        if end.valid_size < file_size {
            tracing::warn!(
                file = %path.display(),
                position = end.valid_size,
                offset = seg.next_offset,
                reason = end.reason.unwrap_or("unknown"),
                "truncating log segment to its last valid batch"
            );
            file.truncate(end.valid_size)
                .await
                .map_err(|e| StorageError::io(&path, e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io(&path, e))?;
        }
        seg.size = end.valid_size;
        seg.written = end.valid_size;
        if last {
            let partial = (end.valid_size % BLOCK_BYTES) as usize;
            if partial > 0 {
                let block = file
                    .read_at(end.valid_size - partial as u64, partial)
                    .await
                    .map_err(|e| StorageError::io(&path, e))?;
                tail_block = block.to_vec();
                assert_eq!(tail_block.len(), partial, "tail block read back whole");
            }
        } else {
            seg.sealed = true;
            for (p, want) in [
                (seg.index_path(), seg.index_bytes()),
                (seg.time_index_path(), seg.time_index_bytes()),
            ] {
                if std::fs::read(&p).ok().as_deref() != Some(&want[..]) {
                    tracing::info!(file = %p.display(), "rebuilding index file");
                    write_small_file(&p, want).await?;
                }
            }
        }
        seg.file = Some(file);
        segments.push(seg);
    }
    Ok(Recovered {
        segments,
        tail_block,
    })
}

/// Scans the batches of one segment file, calling `f` for each valid one, and returns where the valid
/// prefix ends. With `verify_crc`, a batch with a bad CRC ends the prefix.
async fn scan(
    d: &DiskRead,
    base_offset: i64,
    verify_crc: bool,
    f: &mut dyn FnMut(u64, &BatchHeader),
) -> Result<ScanEnd, StorageError> {
    let mut win = None;
    let mut pos = 0u64;
    let mut next_offset = base_offset;
    let end = |pos, reason| ScanEnd {
        valid_size: pos,
        reason: Some(reason),
    };
    loop {
        if pos == d.limit {
            return Ok(ScanEnd {
                valid_size: pos,
                reason: None,
            });
        }
        if d.limit - pos < records::HEADER_BYTES as u64 {
            return Ok(end(pos, "torn batch header"));
        }
        ensure_window(d, &mut win, pos, records::HEADER_BYTES, SCAN_WINDOW_BYTES).await?;
        let w = win.as_ref().expect("ensured");
        let h = BatchHeader::parse(w.slice(pos, records::HEADER_BYTES)).expect("enough bytes");
        if h.batch_length == 0 {
            return Ok(end(pos, "zero-filled tail"));
        }
        if h.batch_length < records::BATCH_LENGTH_MIN || h.magic != records::MAGIC_V2 {
            return Ok(end(pos, "corrupt batch header"));
        }
        let size = h.total_size();
        if pos + size as u64 > d.limit {
            return Ok(end(pos, "torn batch"));
        }
        if h.base_offset < next_offset || h.last_offset_delta < 0 {
            return Ok(end(pos, "batch offsets out of order"));
        }
        // Outside the CRC: a flipped bit here must not reach the index arithmetic (relative offsets and
        // positions are i32 in Kafka's index files).
        if h.last_offset() - base_offset > i32::MAX as i64 {
            return Ok(end(pos, "batch offset out of the segment's range"));
        }
        if pos + size as u64 > i32::MAX as u64 {
            return Ok(end(pos, "segment longer than an index can address"));
        }
        if verify_crc {
            ensure_window(d, &mut win, pos, size, SCAN_WINDOW_BYTES).await?;
            let w = win.as_ref().expect("ensured");
            if !records::verify_crc(w.slice(pos, size)) {
                return Ok(end(pos, "CRC mismatch"));
            }
        }
        f(pos, &h);
        next_offset = h.last_offset() + 1;
        pos += size as u64;
    }
}
