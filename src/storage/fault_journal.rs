//! Fault injection for the power-cut test: a journal of what the device is guaranteed to hold.
//!
//! Off unless the environment variable named by [`crate::limits::FAULT_SYNC_JOURNAL_ENV`] names a file at
//! start-up ([`init`]). When on, every completed sync of the data directory appends one line to that file,
//! written only AFTER the sync it describes returned (and, for segment data, before the acks it releases):
//!
//! ```text
//! data <TAB> <segment path> <TAB> <logical length>   fdatasync of a segment: bytes [0, length) are durable
//! file <TAB> <path> <TAB> <content, hex>            a small file written and synced with exactly this content
//!                                                   (index files, producer snapshots; checkpoint, metadata and
//!                                                   log-start files after their rename and directory fsync)
//! dir  <TAB> <directory> <TAB> <name>/<name>/...    fsync of a directory: the entries listed just before it
//!                                                   started are durable
//! ```
//!
//! So the journal is the disk as the device guarantees it: a simulated power cut (`tests/crash_harness.py
//! --power-cut`, after SIGKILL) cuts every segment back to its last `data` length (leaving garbage, zeros or
//! some real bytes after it, as a device may), puts small files back to their last `file` content (or
//! leaves the newer one, or a torn one), and removes files whose directory entry no `dir` line made
//! durable. Files present when the broker started count as durable as they were then. An acknowledged
//! record that does not survive that was acknowledged before its `fdatasync` completed.
//!
//! With the journal on, [`crate::limits::FAULT_SYNC_DELAY_ENV`] may name a number of milliseconds that every
//! group-commit `fdatasync` of segment data is delayed by (a slow device). An acknowledgement that leaves
//! before its sync would then be out for that long without the data being durable: a kill at a random
//! moment catches it with high probability instead of only in a sub-millisecond window.
//!
//! The journal itself is written with plain `write(2)` on an `O_APPEND` file: it survives the SIGKILL the
//! harness uses (page cache) and is never subject to the simulated cut. Test-only: with the variable unset
//! every hook is one load of a `OnceLock` and a branch.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

struct Journal {
    file: Mutex<File>,
    sync_delay: Option<Duration>,
}

static JOURNAL: OnceLock<Journal> = OnceLock::new();

/// Opens the journal named by the environment variable, if set (once, at start-up, before any storage
/// call). Returns the path when the journal is on.
pub fn init() -> std::io::Result<Option<String>> {
    let Ok(path) = std::env::var(crate::limits::FAULT_SYNC_JOURNAL_ENV) else {
        return Ok(None);
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let sync_delay = match std::env::var(crate::limits::FAULT_SYNC_DELAY_ENV) {
        Ok(ms) => Some(Duration::from_millis(ms.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}={ms}: not milliseconds",
                    crate::limits::FAULT_SYNC_DELAY_ENV
                ),
            )
        })?)),
        Err(_) => None,
    };
    let _ = JOURNAL.set(Journal {
        file: Mutex::new(f),
        sync_delay,
    });
    Ok(Some(path))
}

/// How long to delay each group-commit fdatasync (only with the journal on).
#[inline]
pub fn sync_delay() -> Option<Duration> {
    JOURNAL.get().and_then(|j| j.sync_delay)
}

/// True if the journal is on.
#[inline]
pub fn enabled() -> bool {
    JOURNAL.get().is_some()
}

fn append(line: String) {
    if let Some(j) = JOURNAL.get() {
        let mut f = j.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line (O_APPEND). A journal that cannot be written makes the test meaningless.
        f.write_all(line.as_bytes())
            .expect("writing the fault-injection sync journal");
    }
}

/// An fdatasync of a segment file completed: its bytes `[0, len)` are durable.
pub fn data_synced(path: &Path, len: u64) {
    if enabled() {
        append(format!("data\t{}\t{len}\n", path.display()));
    }
}

/// A small file was written with exactly `content` and synced (after its rename and directory fsync, for
/// files replaced that way).
pub fn file_synced(path: &Path, content: &[u8]) {
    if enabled() {
        let mut line = format!("file\t{}\t", path.display());
        line.reserve(content.len() * 2 + 1);
        for b in content {
            line.push_str(&format!("{b:02x}"));
        }
        line.push('\n');
        append(line);
    }
}

/// Fsyncs directory `dir`; with the journal on, lists its entries first and journals them once the fsync
/// returned. Blocking: call on the blocking pool or at start-up.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let names = if enabled() {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Some(names)
    } else {
        None
    };
    File::open(dir)?.sync_all()?;
    if let Some(names) = names {
        append(format!("dir\t{}\t{}\n", dir.display(), names.join("/")));
    }
    Ok(())
}
