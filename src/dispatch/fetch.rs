//! Fetch (with long poll) and ListOffsets.
//!
//! A fetch reads each partition on its owning core and merges the answers in request order. When fewer
//! than `min_bytes` are available it waits: each owning core is asked to wake it when any of its
//! partitions' high watermark passes the fetch offset (or the deadline passes), then it reads again.
//! Fetch sessions are not kept: every answer has session id 0, which clients handle as "no session" and
//! then send full fetches.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;

use crate::limits;
use crate::protocol::errors;
use crate::shard::Shard;

/// One partition to read, as sent to its owner.
#[derive(Clone, Debug)]
struct ReadSpec {
    slot: usize,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// One partition's answer, sent back from its owner.
#[derive(Clone, Debug, Default)]
struct ReadOutcome {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Option<Bytes>,
}

/// Reads partitions this core owns. Runs on the owner.
async fn read_local(shard: Rc<Shard>, specs: Vec<ReadSpec>) -> Vec<(usize, ReadOutcome)> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let outcome = match shard.partition(&s.topic, s.partition) {
            None => ReadOutcome {
                error_code: errors::NOT_LEADER_OR_FOLLOWER,
                high_watermark: -1,
                log_start_offset: -1,
                records: None,
            },
            Some(p) => {
                let hw = p.high_watermark();
                let start = p.log_start_offset();
                match p.read(s.offset, s.max_bytes).await {
                    Ok(records) => ReadOutcome {
                        error_code: errors::NONE,
                        high_watermark: hw,
                        log_start_offset: start,
                        records: Some(records),
                    },
                    Err(e) => ReadOutcome {
                        error_code: e.code,
                        high_watermark: hw,
                        log_start_offset: start,
                        records: None,
                    },
                }
            }
        };
        crate::metrics::fetched(&s.topic, outcome.records.as_ref().map_or(0, |r| r.len()));
        out.push((s.slot, outcome));
    }
    out
}

/// Waits on the owner until one of the partitions has data past its fetch offset, or the deadline.
async fn wait_local(shard: Rc<Shard>, specs: Vec<ReadSpec>, deadline: Instant) {
    let mut waits = Vec::new();
    for s in &specs {
        if let Some(p) = shard.partition(&s.topic, s.partition) {
            waits.push(Box::pin(p.wait_for_data(s.offset)));
        }
    }
    if waits.is_empty() {
        return;
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let any = futures::future::select_all(waits);
    let timer = crate::shard::sleep(remaining);
    futures::future::select(Box::pin(any), Box::pin(timer)).await;
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: FetchRequest,
    version: i16,
) -> Option<FetchResponse> {
    let max_wait = Duration::from_millis(
        req.max_wait_ms
            .clamp(0, limits::FETCH_MAX_WAIT_MS_MAX as i32) as u64,
    );
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let response_max = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };

    // Resolve every requested partition: either an immediate error or a read on its owner.
    let mut outcomes: Vec<ReadOutcome> = Vec::new();
    let mut by_owner: Vec<Vec<ReadSpec>> = vec![Vec::new(); shard.cores];
    let mut layout = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let meta = if version >= 13 {
            shard.meta().topic_by_id(&t.topic_id).cloned()
        } else {
            shard.topic(t.topic.0.as_str())
        };
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let slot = outcomes.len();
            parts.push((p.partition, slot));
            let mut o = ReadOutcome {
                error_code: errors::NONE,
                high_watermark: -1,
                log_start_offset: -1,
                records: None,
            };
            match &meta {
                None => {
                    o.error_code = if version >= 13 {
                        errors::UNKNOWN_TOPIC_ID
                    } else {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    }
                }
                Some(m) if p.partition < 0 || p.partition >= m.partitions => {
                    o.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION
                }
                Some(m) => by_owner[shard.owner_of(m, p.partition)].push(ReadSpec {
                    slot,
                    topic: Arc::from(m.name.as_str()),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: (p.partition_max_bytes.max(0) as usize).min(response_max),
                }),
            }
            outcomes.push(o);
        }
        layout.push((t.topic.clone(), t.topic_id, parts));
    }

    loop {
        // Cross-core hop: each owner reads its partitions.
        let reads = by_owner
            .iter()
            .enumerate()
            .filter(|(_, specs)| !specs.is_empty())
            .map(|(owner, specs)| {
                let specs = specs.clone();
                shard.invoke_on(owner, move |s| read_local(s, specs))
            });
        let mut total = 0usize;
        let mut any_error = false;
        for answers in futures::future::join_all(reads).await {
            for (slot, o) in answers {
                total += o.records.as_ref().map_or(0, |r| r.len());
                any_error |= o.error_code != errors::NONE;
                outcomes[slot] = o;
            }
        }
        if total >= min_bytes || any_error || Instant::now() >= deadline {
            break;
        }
        // Not enough yet: wait on every owner for new data, up to the deadline.
        let waits = by_owner
            .iter()
            .enumerate()
            .filter(|(_, specs)| !specs.is_empty())
            .map(|(owner, specs)| {
                let specs = specs.clone();
                Box::pin(shard.invoke_on(owner, move |s| wait_local(s, specs, deadline)))
            });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            crate::shard::sleep(deadline.saturating_duration_since(Instant::now())).await;
            break;
        }
        futures::future::select_all(waits).await;
    }

    // The response as a whole stays within max_bytes, except that the first non-empty partition is
    // always returned whole (KIP-74) so a consumer can make progress.
    let mut budget = response_max;
    let mut first = true;
    let mut resp = FetchResponse::default();
    resp.session_id = 0;
    for (name, topic_id, parts) in layout {
        let mut tr = FetchableTopicResponse::default();
        tr.topic = name;
        tr.topic_id = topic_id;
        for (index, slot) in parts {
            let o = std::mem::take(&mut outcomes[slot]);
            let mut pd = PartitionData::default();
            pd.partition_index = index;
            pd.error_code = o.error_code;
            pd.high_watermark = o.high_watermark;
            pd.last_stable_offset = o.high_watermark;
            if version >= 5 {
                pd.log_start_offset = o.log_start_offset;
            }
            pd.aborted_transactions = None;
            pd.preferred_read_replica = BrokerId(-1);
            let records = o.records.unwrap_or_default();
            if !records.is_empty() {
                if first || records.len() <= budget {
                    budget = budget.saturating_sub(records.len());
                    first = false;
                    pd.records = Some(records);
                } else {
                    pd.records = Some(Bytes::new());
                }
            } else {
                pd.records = Some(Bytes::new());
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    Some(resp)
}

/// ListOffsets special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// Answers one ListOffsets partition on its owner: (error, timestamp, offset).
async fn list_offset_local(
    shard: Rc<Shard>,
    topic: Arc<str>,
    partition: i32,
    ts: i64,
) -> (i16, i64, i64) {
    let Some(p) = shard.partition(&topic, partition) else {
        return (errors::NOT_LEADER_OR_FOLLOWER, -1, -1);
    };
    match ts {
        LATEST => (errors::NONE, -1, p.high_watermark()),
        EARLIEST | EARLIEST_LOCAL => (errors::NONE, -1, p.log_start_offset()),
        LATEST_TIERED => (errors::NONE, -1, -1),
        MAX_TIMESTAMP => match p.max_timestamp_offset().await {
            Ok(Some((offset, ts))) => (errors::NONE, ts, offset),
            Ok(None) => (errors::NONE, -1, -1),
            Err(e) => (e.code, -1, -1),
        },
        ts if ts >= 0 => match p.offset_for_timestamp(ts).await {
            Ok(Some((offset, found_ts))) => (errors::NONE, found_ts, offset),
            Ok(None) => (errors::NONE, -1, -1),
            Err(e) => (e.code, -1, -1),
        },
        _ => (errors::INVALID_REQUEST, -1, -1),
    }
}

pub async fn handle_list_offsets(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ListOffsetsRequest,
    version: i16,
) -> Option<ListOffsetsResponse> {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let meta = shard.topic(t.name.0.as_str());
        let futures = t.partitions.iter().map(|p| {
            let meta = meta.clone();
            let (index, ts) = (p.partition_index, p.timestamp);
            async move {
                let mut pr = ListOffsetsPartitionResponse::default();
                pr.partition_index = index;
                pr.timestamp = -1;
                pr.offset = -1;
                pr.leader_epoch = -1;
                match meta {
                    Some(m) if index >= 0 && index < m.partitions => {
                        let owner = shard.owner_of(&m, index);
                        let name: Arc<str> = Arc::from(m.name.as_str());
                        // Cross-core hop to the partition's owner.
                        let (code, found_ts, offset) = shard
                            .invoke_on(owner, move |s| list_offset_local(s, name, index, ts))
                            .await;
                        pr.error_code = code;
                        pr.timestamp = found_ts;
                        pr.offset = offset;
                        if code == errors::NONE && offset >= 0 && version >= 4 {
                            pr.leader_epoch = m.leader_epoch;
                        }
                    }
                    _ => pr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                }
                pr
            }
        });
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        tr.partitions = futures::future::join_all(futures).await;
        resp.topics.push(tr);
    }
    Some(resp)
}
