//! Produce: each partition's records go to the core that owns the partition; the answers are merged in
//! request order.
//!
//! Two phases, as in Redpanda: the append (validation, idempotence check, offset assignment) happens
//! synchronously when the owning core first runs the request, which fixes the order; the answer waits
//! for durability (fdatasync with group commit) unless acks=0. Requests of one connection are started in
//! arrival order, so their appends happen in that order.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::protocol::errors;
use crate::shard::Shard;

/// The outcome of one partition's append, sent back from the owning core.
#[derive(Debug, Clone)]
pub struct PartitionOutcome {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl PartitionOutcome {
    fn error(code: i16, message: Option<String>) -> Self {
        PartitionOutcome {
            error_code: code,
            error_message: message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// Appends on the owning core and waits for durability (acks=0: for the write). Runs on the partition's owner.
async fn append_local(
    shard: Rc<Shard>,
    topic: Arc<str>,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> PartitionOutcome {
    let Some(part) = shard.partition(&topic, partition) else {
        return PartitionOutcome::error(errors::NOT_LEADER_OR_FOLLOWER, None);
    };
    let bytes = records.len();
    let appended = match part.append(records) {
        Ok(a) => a,
        Err(e) => return PartitionOutcome::error(e.code, e.message),
    };
    if !appended.duplicate {
        crate::metrics::produced(
            &topic,
            bytes,
            (appended.last_offset - appended.base_offset + 1) as u64,
        );
    }
    if acks != 0 {
        if let Err(e) = part.wait_durable(appended.last_offset).await {
            return PartitionOutcome::error(e.code, e.message);
        }
    } else if !appended.duplicate {
        // No answer goes out, but the request (and its bytes in the tail cache) stays charged to the
        // connection's request budget and in-flight slots until written: a flood of acks=0 produces
        // waits on the disk instead of growing memory without bound.
        part.wait_written(appended.last_offset).await;
    }
    PartitionOutcome {
        error_code: errors::NONE,
        error_message: None,
        base_offset: appended.base_offset,
        log_append_time_ms: appended.log_append_time_ms,
        log_start_offset: appended.log_start_offset,
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let refuse = if !matches!(acks, -1..=1) {
        Some(errors::INVALID_REQUIRED_ACKS)
    } else if req.transactional_id.is_some() {
        Some(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else {
        None
    };

    let mut pending = Vec::new();
    let mut layout = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        // v13+ names topics by id.
        let meta = if version >= 13 {
            shard.meta().topic_by_id(&t.topic_id).cloned()
        } else {
            shard.topic(t.name.0.as_str())
        };
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let slot = pending.len();
            parts.push((p.index, slot));
            let outcome = match (&meta, refuse) {
                (_, Some(code)) => Err(PartitionOutcome::error(code, None)),
                (None, _) => Err(PartitionOutcome::error(
                    if version >= 13 {
                        errors::UNKNOWN_TOPIC_ID
                    } else {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    },
                    None,
                )),
                (Some(m), _) if p.index < 0 || p.index >= m.partitions => Err(
                    PartitionOutcome::error(errors::UNKNOWN_TOPIC_OR_PARTITION, None),
                ),
                (Some(m), _) => match p.records {
                    None => Err(PartitionOutcome::error(
                        errors::INVALID_RECORD,
                        Some("no records".into()),
                    )),
                    Some(records) => Ok((m.clone(), p.index, records)),
                },
            };
            pending.push(outcome);
        }
        layout.push((t.name, t.topic_id, parts));
    }

    // Start every partition's append in request order (the appends themselves happen at the first poll).
    let futures = pending.into_iter().map(|slot| {
        let shard = shard.clone();
        async move {
            match slot {
                Err(outcome) => outcome,
                Ok((topic, partition, records)) => {
                    let owner = shard.owner_of(&topic, partition);
                    let name: Arc<str> = Arc::from(topic.name.as_str());
                    // Cross-core hop to the partition's owner (a plain call when it is this core).
                    shard
                        .invoke_on(owner, move |s| {
                            append_local(s, name, partition, records, acks)
                        })
                        .await
                }
            }
        }
    });
    let outcomes = futures::future::join_all(futures).await;

    if acks == 0 {
        return None;
    }
    let mut resp = ProduceResponse::default();
    for (name, topic_id, parts) in layout {
        let mut tr = TopicProduceResponse::default();
        tr.name = name;
        tr.topic_id = topic_id;
        for (index, slot) in parts {
            let o = &outcomes[slot];
            let mut pr = PartitionProduceResponse::default();
            pr.index = index;
            pr.error_code = o.error_code;
            pr.base_offset = o.base_offset;
            pr.log_append_time_ms = o.log_append_time_ms;
            // Fields a version lacks must stay at their defaults or the codec refuses to encode.
            if version >= 5 {
                pr.log_start_offset = o.log_start_offset;
            }
            if version >= 8 {
                pr.error_message = o.error_message.clone().map(StrBytes::from_string);
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    Some(resp)
}
