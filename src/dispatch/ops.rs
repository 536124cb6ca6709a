//! Operations APIs used by Kafka's ops tools: DescribeLogDirs (`kafka-log-dirs --describe`).

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::shard::Shard;

/// Total and free bytes of the filesystem holding `dir` (statvfs), or -1 when unknown.
fn filesystem_bytes(dir: &std::path::Path) -> (i64, i64) {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return (-1, -1);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (-1, -1);
    }
    let frsize = st.f_frsize as i64;
    (st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize)
}

pub async fn handle_describe_log_dirs(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeLogDirsRequest,
    version: i16,
) -> Option<DescribeLogDirsResponse> {
    let meta = shard.meta();
    // Which partitions: all (null) or the listed ones that exist.
    let wanted: Vec<(Arc<str>, i32)> = match &req.topics {
        None => meta
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (Arc::from(t.name.as_str()), p)))
            .collect(),
        Some(list) => list
            .iter()
            .flat_map(|r| {
                let topic = meta.topics.get(r.topic.0.as_str());
                r.partitions.iter().filter_map(move |&p| {
                    topic
                        .filter(|t| p >= 0 && p < t.partitions)
                        .map(|t| (Arc::from(t.name.as_str()), p))
                })
            })
            .collect(),
    };
    let mut by_owner: Vec<Vec<(Arc<str>, i32)>> = vec![Vec::new(); shard.cores];
    for (t, p) in wanted {
        if let Some(topic) = meta.topics.get(&*t) {
            by_owner[shard.owner_of(topic, p)].push((t, p));
        }
    }
    let mut sizes: Vec<(Arc<str>, i32, i64)> = Vec::new();
    for (owner, parts) in by_owner.into_iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        // Cross-core hop: each owner measures its own partitions.
        let answer = shard
            .invoke_on(owner, move |s| async move {
                parts
                    .into_iter()
                    .filter_map(|(t, p)| {
                        s.partition(&t, p)
                            .map(|part| (t, p, part.log().size_bytes() as i64))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        sizes.extend(answer);
    }
    sizes.sort_by(|a, b| (&*a.0, a.1).cmp(&(&*b.0, b.1)));

    // canonicalize and statvfs can block on the filesystem: off the executor.
    let configured = shard.config.log_dirs.clone();
    let (dir, (total, usable)) = crate::storage::blocking(move || {
        let dir = std::fs::canonicalize(&configured).unwrap_or(configured);
        let bytes = filesystem_bytes(&dir);
        (dir, bytes)
    })
    .await;
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = StrBytes::from_string(dir.display().to_string());
    if version >= 4 {
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    // v5's IsCordoned stays false: Ringtide has no `cordoned.log.dirs` (KIP-1066), and Kafka answers false
    // for a directory that is not cordoned.
    for (t, p, size) in sizes {
        if result
            .topics
            .last()
            .is_none_or(|last: &DescribeLogDirsTopic| last.name.0.as_str() != &*t)
        {
            let mut topic = DescribeLogDirsTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.to_string()));
            result.topics.push(topic);
        }
        let mut part = DescribeLogDirsPartition::default();
        part.partition_index = p;
        part.partition_size = size;
        part.offset_lag = 0;
        result
            .topics
            .last_mut()
            .expect("pushed above")
            .partitions
            .push(part);
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![result];
    Some(resp)
}

/// DeleteRecords (`kafka-delete-records`): moves each partition's log start offset forward on its owner.
pub async fn handle_delete_records(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DeleteRecordsRequest,
    _version: i16,
) -> Option<DeleteRecordsResponse> {
    use kafka_protocol::messages::delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
    };
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let meta = shard.topic(t.name.0.as_str());
        let answers = t.partitions.iter().map(|p| {
            let meta = meta.clone();
            let (index, offset) = (p.partition_index, p.offset);
            async move {
                let mut r = DeleteRecordsPartitionResult::default();
                r.partition_index = index;
                r.low_watermark = -1;
                match meta {
                    Some(m) if index >= 0 && index < m.partitions => {
                        let owner = shard.owner_of(&m, index);
                        let name: Arc<str> = Arc::from(m.name.as_str());
                        // Cross-core hop to the partition's owner.
                        let (code, low) = shard
                            .invoke_on(owner, move |s| async move {
                                let Some(part) = s.partition(&name, index) else {
                                    return (crate::protocol::errors::NOT_LEADER_OR_FOLLOWER, -1);
                                };
                                // -1 means "up to the high watermark", as in Kafka.
                                let target = if offset == -1 {
                                    part.high_watermark()
                                } else {
                                    offset
                                };
                                match part.delete_records(target).await {
                                    Ok(low) => (crate::protocol::errors::NONE, low),
                                    Err(e) => (e.code, -1),
                                }
                            })
                            .await;
                        r.error_code = code;
                        r.low_watermark = low;
                    }
                    _ => r.error_code = crate::protocol::errors::UNKNOWN_TOPIC_OR_PARTITION,
                }
                r
            }
        });
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        tr.partitions = futures::future::join_all(answers).await;
        resp.topics.push(tr);
    }
    Some(resp)
}
