//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch of a partition ends, answered by its
//! leader from the partition's `leader-epoch-checkpoint`. Consumers ask after a leader change whether
//! the log they read was truncated; followers (with replication) where to truncate before fetching.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use crate::protocol::errors;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> Option<OffsetForLeaderEpochResponse> {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let meta = shard.topic(t.topic.0.as_str());
        let answers = t.partitions.iter().map(|p| {
            let meta = meta.clone();
            let (index, current, requested) = (p.partition, p.current_leader_epoch, p.leader_epoch);
            async move {
                let mut r = EpochEndOffset::default();
                r.partition = index;
                r.leader_epoch = -1;
                r.end_offset = -1;
                match meta {
                    Some(m) if index >= 0 && index < m.partitions => {
                        let owner = shard.owner_of(&m, index);
                        let name: Arc<str> = Arc::from(m.name.as_str());
                        // Cross-core hop to the partition's owner, which holds its epochs.
                        let (code, epoch, end) = shard
                            .invoke_on(owner, move |s| async move {
                                let Some(p) = s.partition(&name, index) else {
                                    return (errors::NOT_LEADER_OR_FOLLOWER, -1, -1);
                                };
                                match p.check_leader_epoch(current) {
                                    errors::NONE => {
                                        let (epoch, end) = p.end_offset_for_epoch(requested);
                                        (errors::NONE, epoch, end)
                                    }
                                    fenced => (fenced, -1, -1),
                                }
                            })
                            .await;
                        r.error_code = code;
                        r.leader_epoch = epoch;
                        r.end_offset = end;
                    }
                    _ => r.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                }
                r
            }
        });
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        tr.partitions = futures::future::join_all(answers).await;
        resp.topics.push(tr);
    }
    Some(resp)
}
