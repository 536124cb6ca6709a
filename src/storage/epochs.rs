//! Kafka's leader epoch cache and its `leader-epoch-checkpoint` file: for each leader epoch of a
//! partition, the first offset written in it. OffsetForLeaderEpoch answers from it, ListOffsets names the
//! epoch of the batch holding an offset, and (with replication) a follower truncates to where its
//! history and its leader's diverge.
//!
//! File format (Kafka's `LeaderEpochCheckpointFile`, so Kafka's tools and brokers read what Ringtide
//! writes): text lines, the version `0`, the number of entries, then one `<epoch> <start offset>` per
//! entry, oldest first. Written whole to `.tmp`, synced, renamed over the old file, directory synced.
//!
//! Ownership: each partition's cache belongs to the core that owns the partition; this module is pure
//! logic plus the file's encoding, the write itself goes through the storage blocking pool.

/// Kafka's file name in every partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// The only version of Kafka's leader epoch checkpoint file.
const VERSION: i32 = 0;

/// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of one partition, strictly increasing in both epoch and start offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`). Returns whether the cache
    /// changed (the file is then written again). An epoch already latest with an earlier or equal start
    /// is kept; entries the new one contradicts (a later or equal epoch, or a later or equal start) go.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && last.start_offset <= start_offset {
                return false;
            }
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and the offset where the epoch
    /// after it starts (`log_end_offset` when `requested` is the latest epoch); (-1, -1) when `requested`
    /// is undefined or later than every epoch known.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            // Earlier than every epoch known: the requested epoch, ending where the first known starts.
            None => (requested, higher.start_offset),
            Some(floor) => (floor.epoch, higher.start_offset),
        }
    }

    /// The epoch of the batch holding `offset` (Kafka's `epochForOffset`), if any epoch starts at or
    /// before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Drops the epochs that start at or after `end_offset` (Kafka's `truncateFromEnd`): the log was
    /// cut there.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        s.into_bytes()
    }

    /// Reads the file's bytes; `Err` says what is wrong (the caller logs it and starts from the log).
    pub fn parse(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        let version: i32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("no version line")?;
        if version != VERSION {
            return Err(format!("unknown version {version}"));
        }
        let n: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("no entry count")?;
        let mut cache = LeaderEpochCache::default();
        for i in 0..n {
            let line = lines
                .next()
                .ok_or(format!("{n} entries announced, {i} found"))?;
            let mut parts = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed entry {line:?}"));
            };
            let epoch: i32 = epoch
                .parse()
                .map_err(|_| format!("bad epoch in {line:?}"))?;
            let offset: i64 = offset
                .parse()
                .map_err(|_| format!("bad offset in {line:?}"))?;
            if epoch < 0 || offset < 0 {
                return Err(format!("negative epoch or offset in {line:?}"));
            }
            if let Some(last) = cache.entries.last() {
                if epoch <= last.epoch || offset < last.start_offset {
                    return Err(format!("entry {line:?} goes backwards"));
                }
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset: offset,
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("lines after the announced entries".into());
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn assign_keeps_the_first_start_of_an_epoch_and_drops_contradicted_entries() {
        let mut c = cache(&[(0, 0), (2, 10)]);
        assert!(!c.assign(2, 15), "same epoch later: the start stays");
        assert!(c.assign(2, 8), "same epoch earlier: replaced");
        assert_eq!(c.entries().last().unwrap().start_offset, 8);
        assert!(c.assign(1, 5), "an older epoch: the later entries go");
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 1,
                    start_offset: 5
                }
            ]
        );
        assert!(!c.assign(-1, 3) && !c.assign(3, -1));
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(c.end_offset_for(5, 30), (5, 30), "latest: the log end");
        assert_eq!(c.end_offset_for(3, 30), (3, 20));
        assert_eq!(c.end_offset_for(4, 30), (3, 20), "a gap: the epoch below");
        assert_eq!(c.end_offset_for(0, 30), (0, 0), "before every epoch");
        assert_eq!(c.end_offset_for(6, 30), (-1, -1), "after every epoch");
        assert_eq!(c.end_offset_for(-1, 30), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn epoch_for_offset_and_truncation() {
        let mut c = cache(&[(0, 0), (2, 10)]);
        assert_eq!(c.epoch_for_offset(9), Some(0));
        assert_eq!(c.epoch_for_offset(10), Some(2));
        assert!(c.truncate_from_end(10));
        assert_eq!(c.latest_epoch(), Some(0));
        assert!(!c.truncate_from_end(10));
    }

    #[test]
    fn file_round_trip_and_refusals() {
        let c = cache(&[(0, 0), (4, 1234)]);
        assert_eq!(c.encode(), b"0\n2\n0 0\n4 1234\n");
        assert_eq!(LeaderEpochCache::parse(&c.encode()).unwrap(), c);
        assert_eq!(
            LeaderEpochCache::parse(b"0\n0\n").unwrap(),
            LeaderEpochCache::default()
        );
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0\n",
            b"0\n2\n3 10\n2 20\n",
            b"0\n1\n0 0\n9 9\n",
            b"0\n1\n-2 0\n",
        ] {
            assert!(LeaderEpochCache::parse(bad).is_err(), "{bad:?}");
        }
    }
}
