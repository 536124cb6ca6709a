//! Where a log's start moves: DeleteRecords and retention by age and size.

use super::*;

impl PartitionLog {
    /// DeleteRecords: makes `offset` the log start offset (records below it are no longer served),
    /// deletes the whole segments below it and persists the new start so it survives a restart.
    /// Returns the new log start offset (the "low watermark").
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let hw = self.high_watermark();
        let (victims, start) = {
            let mut st = self.shared.state.borrow_mut();
            if offset < 0 || offset > hw {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.log_end_offset,
                });
            }
            if offset <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            st.log_start_offset = offset;
            st.cache.drop_below(offset);
            let mut victims = Vec::new();
            while st.segments.len() > 1
                && st.segments[0].sealed
                && st.segments[1].base_offset <= offset
            {
                victims.push(st.segments.remove(0));
            }
            (victims, offset)
        };
        let dir = self.shared.dir.clone();
        blocking(move || write_log_start(&dir, start)).await?;
        for s in victims {
            tracing::info!(segment = %s.log_path.display(), "DeleteRecords deletes segment");
            let paths = [
                s.log_path.clone(),
                s.index_path(),
                s.time_index_path(),
                s.txn_index_path(),
            ];
            drop(s);
            for p in paths {
                if let Err(e) = glommio::io::remove(&p).await {
                    let e = std::io::Error::from(e);
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io(&p, e));
                    }
                }
            }
        }
        // The producer snapshots of the deleted segments go with them (Kafka's deleteSegments).
        prune_snapshots(&self.shared).await?;
        Ok(start)
    }

    /// Deletes whole sealed segments (never the active one) from the front of the log while they are older
    /// than `retention_ms` (by their largest timestamp) or the log is larger than `retention_bytes`.
    /// Returns how many segments were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.shared.config.get();
        if !config.delete {
            // `cleanup.policy=compact` alone: the cleaner keeps the latest record of every key forever.
            return Ok(0);
        }
        let victims = {
            let mut st = self.shared.state.borrow_mut();
            let mut total: i64 = st.segments.iter().map(|s| s.size as i64).sum();
            let mut victims = Vec::new();
            while st.segments.len() > 1 && st.segments[0].sealed {
                let s = &st.segments[0];
                let age_ts = if s.max_timestamp >= 0 {
                    s.max_timestamp
                } else {
                    s.created_ms
                };
                let by_time = config.retention_ms >= 0 && now_ms - age_ts > config.retention_ms;
                let by_size =
                    config.retention_bytes >= 0 && total - s.size as i64 >= config.retention_bytes;
                if !(by_time || by_size) {
                    break;
                }
                total -= s.size as i64;
                victims.push(st.segments.remove(0));
            }
            if !victims.is_empty() {
                // Never backwards: DeleteRecords may already have moved it past this segment's base.
                st.log_start_offset = st.log_start_offset.max(st.segments[0].base_offset);
                let start = st.log_start_offset;
                st.cache.drop_below(start);
            }
            victims
        };
        let n = victims.len();
        for s in victims {
            tracing::info!(
                segment = %s.log_path.display(),
                "retention deletes segment"
            );
            let paths = [
                s.log_path.clone(),
                s.index_path(),
                s.time_index_path(),
                s.txn_index_path(),
            ];
            drop(s);
            for p in paths {
                match glommio::io::remove(&p).await {
                    Ok(()) => {}
                    Err(e) => {
                        let e = std::io::Error::from(e);
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(StorageError::io(&p, e));
                        }
                    }
                }
            }
        }
        if n > 0 {
            prune_snapshots(&self.shared).await?;
        }
        Ok(n)
    }
}
