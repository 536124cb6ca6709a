//! Kafka's `recovery-point-offset-checkpoint`: per partition of a log directory, the offset below which
//! every byte is known to be on disk, so that recovery after a crash trusts everything before it.
//!
//! File format (Kafka's `CheckpointFile`, so Kafka reads what Ringtide writes and the other way round):
//! text lines, the version `0`, the number of entries, then one `<topic> <partition> <offset>` per
//! entry. Written whole to `<name>.tmp`, synced, renamed over the old file, and the directory synced.
//!
//! Ownership: the process-wide table below holds the last checkpointed offset of every open partition of
//! a log directory. Each core updates only its own partitions' entries (from its checkpoint task and when
//! it closes or deletes a partition); the file is written from a snapshot of the whole table on the
//! blocking pool. The table is touched once per partition per checkpoint interval, never on the data
//! path, so a mutex is enough.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Kafka's file name in every log directory.
pub const RECOVERY_POINT_FILE_NAME: &str = "recovery-point-offset-checkpoint";
/// The only version of Kafka's offset checkpoint files.
const VERSION: i32 = 0;

/// Kafka's file of the log cleaner's progress in every log directory: per compacted partition, the
/// first offset not cleaned yet (the "first dirty offset"). Same format, same table mechanics.
pub const CLEANER_OFFSET_FILE_NAME: &str = "cleaner-offset-checkpoint";

type Table = BTreeMap<(String, i32), i64>;

/// Per (log directory, checkpoint file name): (topic, partition) -> offset.
static TABLES: Mutex<Vec<((PathBuf, &'static str), Table)>> = Mutex::new(Vec::new());
/// Serializes writers of the file (two cores may checkpoint at the same moment).
static WRITING: Mutex<()> = Mutex::new(());
/// Per log directory: the recovery points as the file on disk holds them (loaded at start-up, replaced
/// by every successful write). A crash recovers from these, not from the table above, so the producer
/// snapshot a partition's entry here points at must outlive every newer one until the file moves on.
static WRITTEN: Mutex<Vec<(PathBuf, Table)>> = Mutex::new(Vec::new());

fn set_written(log_dir: &Path, table: Table) {
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    match written.iter_mut().find(|(d, _)| d == log_dir) {
        Some((_, t)) => *t = table,
        None => written.push((log_dir.to_path_buf(), table)),
    }
}

/// The recovery point of a partition as `recovery-point-offset-checkpoint` on disk holds it now (what
/// recovery after a crash at this instant would start from), if the file names the partition.
pub(crate) fn written(log_dir: &Path, topic: &str, partition: i32) -> Option<i64> {
    let written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    written
        .iter()
        .find(|(d, _)| d == log_dir)
        .and_then(|(_, t)| t.get(&(topic.to_string(), partition)).copied())
}

/// Why a checkpoint file was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Parses the text of an offset checkpoint file. Any deviation from the format is an error (the caller
/// then recovers every partition in full rather than trusting part of a damaged file).
pub fn parse(text: &str) -> Result<Vec<(String, i32, i64)>, Malformed> {
    let mut lines = text.lines();
    let version = lines.next().map(str::trim);
    if version != Some("0") {
        return Err(Malformed(format!("unknown version {version:?}")));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| Malformed("missing entry count".into()))?;
    let mut out = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let entry = match parts.as_slice() {
            [topic, partition, offset] if !topic.is_empty() => partition
                .parse::<i32>()
                .ok()
                .zip(offset.parse::<i64>().ok())
                .filter(|(p, o)| *p >= 0 && *o >= 0)
                .map(|(p, o)| (topic.to_string(), p, o)),
            _ => None,
        };
        out.push(entry.ok_or_else(|| Malformed(format!("malformed line {line:?}")))?);
        if out.len() > count {
            break;
        }
    }
    if out.len() != count {
        return Err(Malformed(format!(
            "{} entries where the header says {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// The text of an offset checkpoint file.
pub fn render(entries: &[(String, i32, i64)]) -> String {
    let mut s = format!("{VERSION}\n{}\n", entries.len());
    for (topic, partition, offset) in entries {
        s.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    s
}

fn with_table<R>(log_dir: &Path, f: impl FnOnce(&mut Table) -> R) -> R {
    with_file_table(log_dir, RECOVERY_POINT_FILE_NAME, f)
}

fn with_file_table<R>(log_dir: &Path, file: &'static str, f: impl FnOnce(&mut Table) -> R) -> R {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let i = match tables
        .iter()
        .position(|((d, n), _)| d == log_dir && *n == file)
    {
        Some(i) => i,
        None => {
            tables.push(((log_dir.to_path_buf(), file), Table::new()));
            tables.len() - 1
        }
    };
    f(&mut tables[i].1)
}

/// At start-up, before any partition opens: reads `log_dir`'s checkpoint into the table. A missing file
/// means no recovery point for anyone (full recovery); a damaged one is logged and treated the same.
/// Returns how many entries were loaded. Blocking; call before the executors start.
pub fn load(log_dir: &Path) -> usize {
    load_file(log_dir, RECOVERY_POINT_FILE_NAME)
}

/// `load` of either checkpoint file (`RECOVERY_POINT_FILE_NAME`, `CLEANER_OFFSET_FILE_NAME`).
pub fn load_file(log_dir: &Path, file: &'static str) -> usize {
    let path = log_dir.join(file);
    let entries = match std::fs::read_to_string(&path) {
        Ok(text) => match parse(&text) {
            Ok(e) => e,
            Err(Malformed(why)) => {
                if file == RECOVERY_POINT_FILE_NAME {
                    tracing::warn!(file = %path.display(), why, "ignoring a damaged recovery point checkpoint: every partition is recovered in full");
                } else {
                    tracing::warn!(file = %path.display(), why, "ignoring a damaged cleaner offset checkpoint: compacted logs are cleaned from their start");
                }
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read an offset checkpoint file: its offsets start over");
            Vec::new()
        }
    };
    let n = entries.len();
    let table: Table = entries.into_iter().map(|(tp, p, o)| ((tp, p), o)).collect();
    if file == RECOVERY_POINT_FILE_NAME {
        set_written(log_dir, table.clone());
    }
    with_file_table(log_dir, file, |t| *t = table);
    n
}

/// The recovery point of a partition as last checkpointed, if any.
pub(crate) fn get(log_dir: &Path, topic: &str, partition: i32) -> Option<i64> {
    with_table(log_dir, |t| t.get(&(topic.to_string(), partition)).copied())
}

/// Records a partition's new recovery point (`None`: the partition is gone).
pub(crate) fn set(log_dir: &Path, topic: &str, partition: i32, offset: Option<i64>) {
    with_table(log_dir, |t| match offset {
        Some(o) => {
            t.insert((topic.to_string(), partition), o);
        }
        None => {
            t.remove(&(topic.to_string(), partition));
        }
    });
}

/// Forgets the entries of partitions not in `keep` (topics deleted while the broker was down), in the
/// tables of both checkpoint files.
pub fn retain(log_dir: &Path, keep: impl Fn(&str, i32) -> bool) {
    for file in [RECOVERY_POINT_FILE_NAME, CLEANER_OFFSET_FILE_NAME] {
        with_file_table(log_dir, file, |t| t.retain(|(tp, p), _| keep(tp, *p)));
    }
}

/// Writes the table of `log_dir` to its checkpoint file durably. Blocking: run it on the blocking pool
/// (or after the executors stopped).
pub fn write(log_dir: &Path) -> std::io::Result<()> {
    write_file(log_dir, RECOVERY_POINT_FILE_NAME)
}

/// The cleaner's first dirty offset of a partition, as last checkpointed.
pub(crate) fn cleaner_get(log_dir: &Path, topic: &str, partition: i32) -> Option<i64> {
    with_file_table(log_dir, CLEANER_OFFSET_FILE_NAME, |t| {
        t.get(&(topic.to_string(), partition)).copied()
    })
}

/// Records a partition's first dirty offset (`None`: the partition is gone or no longer compacted).
pub(crate) fn cleaner_set(log_dir: &Path, topic: &str, partition: i32, offset: Option<i64>) {
    with_file_table(log_dir, CLEANER_OFFSET_FILE_NAME, |t| match offset {
        Some(o) => {
            t.insert((topic.to_string(), partition), o);
        }
        None => {
            t.remove(&(topic.to_string(), partition));
        }
    });
}

/// `write` of either checkpoint file.
pub fn write_file(log_dir: &Path, file: &'static str) -> std::io::Result<()> {
    let _one_writer = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let entries: Vec<(String, i32, i64)> = with_file_table(log_dir, file, |t| {
        t.iter().map(|((tp, p), o)| (tp.clone(), *p, *o)).collect()
    });
    let path = log_dir.join(file);
    let tmp = log_dir.join(format!("{file}.tmp"));
    let text = render(&entries);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    super::fault_journal::sync_dir(log_dir)?;
    super::fault_journal::file_synced(&path, text.as_bytes());
    if file == RECOVERY_POINT_FILE_NAME {
        set_written(
            log_dir,
            entries.into_iter().map(|(tp, p, o)| ((tp, p), o)).collect(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let e = vec![("a".to_string(), 0, 5), ("my.topic-x".to_string(), 12, 0)];
        let text = render(&e);
        assert_eq!(text, "0\n2\na 0 5\nmy.topic-x 12 0\n");
        assert_eq!(parse(&text).unwrap(), e);
        assert_eq!(parse("0\n0\n").unwrap(), vec![]);
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\na 0 5\n",
            "0\n1\na 0 5\nb 0 1\n",
            "0\n1\na x 5\n",
            "0\n1\na 0 -1\n",
            "0\n1\na 0\n",
            "0\n1\n 0 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn table_keeps_what_is_set_and_retained() {
        let dir = Path::new("/nonexistent/ringtide-checkpoint-table-test");
        set(dir, "a", 0, Some(5));
        set(dir, "a", 1, Some(7));
        set(dir, "gone", 0, Some(9));
        retain(dir, |t, p| t == "a" && p < 2);
        assert_eq!(get(dir, "a", 0), Some(5));
        assert_eq!(get(dir, "a", 1), Some(7));
        assert_eq!(get(dir, "gone", 0), None);
        set(dir, "a", 1, None);
        assert_eq!(get(dir, "a", 1), None);
    }
}
