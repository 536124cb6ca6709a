//! Fetch (with long poll) and ListOffsets.
//!
//! A fetch is planned before anything is read, read on each partition's owning core, and answered with
//! the record bytes as the slices the logs hold (no copy into an answer buffer).
//!
//! - **Partitions**: named once each, in order of first appearance; a partition named again replaces the
//!   earlier fetch position and limit (Kafka keeps them in a map keyed by topic-partition).
//! - **Budget**: the answer holds at most `min(max_bytes, fetch.max.bytes)` record bytes and each partition at
//!   most its `partition_max_bytes`, in request order; the first batch of the first non-empty partition is
//!   returned whole even when it is larger than both (KIP-74), so a consumer always makes progress. When the
//!   partition limits add up to more than the answer may hold, each owner first reports an upper bound of
//!   what its partitions hold (no I/O) and the limits are handed out in order from those bounds, so the
//!   reads themselves never exceed the budget.
//! - **Long poll**: with fewer than `min_bytes` ready, the fetch waits on the owners until a partition's
//!   high watermark passes the one already seen (not merely the fetch offset: that would spin) or
//!   `max_wait_ms` passes, then re-reads only the partitions that moved.
//! - Fetch sessions are not kept: every answer has session id 0, which clients treat as "no session".

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;
use uuid::Uuid;

use crate::limits;
use crate::protocol::errors;
use crate::protocol::fetch_response::{FetchAnswer, PartitionAnswer, TopicAnswer};
use crate::records;
use crate::shard::Shard;
use crate::storage::FetchRead;

/// One partition to read, as sent to its owner.
#[derive(Clone, Debug)]
struct ReadSpec {
    slot: usize,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// Exclusive upper offset (the high watermark the plan was made with), or `i64::MAX`.
    max_offset: i64,
    min_one: bool,
}

/// One partition's answer, sent back from its owner.
#[derive(Clone, Debug, Default)]
struct ReadOutcome {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    read: FetchRead,
}

/// Reads partitions this core owns, in request order. Runs on the owner.
async fn read_local(shard: Rc<Shard>, specs: Vec<ReadSpec>) -> Vec<(usize, ReadOutcome)> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let mut o = ReadOutcome {
            error_code: errors::NOT_LEADER_OR_FOLLOWER,
            high_watermark: -1,
            log_start_offset: -1,
            read: FetchRead::default(),
        };
        if let Some(p) = shard.partition(&s.topic, s.partition) {
            let hw = p.high_watermark();
            o.high_watermark = hw;
            o.log_start_offset = p.log_start_offset();
            match p
                .read_batches(s.offset, s.max_bytes, s.max_offset.min(hw), s.min_one)
                .await
            {
                Ok(read) => {
                    o.error_code = errors::NONE;
                    o.read = read;
                }
                Err(e) => {
                    // Kafka answers a failed partition with no offsets at all.
                    o.error_code = e.code;
                    o.high_watermark = -1;
                    o.log_start_offset = -1;
                }
            }
        }
        out.push((s.slot, o));
    }
    out
}

/// Upper bounds of what each partition could give now: `(slot, error, high watermark, log start, bytes)`.
/// No I/O. Runs on the owner.
fn estimate_local(shard: Rc<Shard>, specs: Vec<ReadSpec>) -> Vec<(usize, i16, i64, i64, u64)> {
    specs
        .into_iter()
        .map(|s| match shard.partition(&s.topic, s.partition) {
            None => (s.slot, errors::NOT_LEADER_OR_FOLLOWER, -1, -1, 0),
            Some(p) => {
                let (hw, start) = (p.high_watermark(), p.log_start_offset());
                if s.offset < start || s.offset > p.log_end_offset() {
                    (s.slot, errors::OFFSET_OUT_OF_RANGE, hw, start, 0)
                } else {
                    (s.slot, errors::NONE, hw, start, p.bytes_from(s.offset))
                }
            }
        })
        .collect()
}

/// `(slot, topic, partition, high watermark already seen)`: one partition a long poll waits on.
type WaitSpec = (usize, Arc<str>, i32, i64);

/// Waits on the owner until one partition's high watermark passes the one the fetch last saw (or the
/// log fails or closes), or the deadline. Returns the slots that moved.
async fn wait_local(shard: Rc<Shard>, specs: Vec<WaitSpec>, deadline: Instant) -> Vec<usize> {
    let mut waits = Vec::new();
    for (_, topic, partition, seen) in &specs {
        if let Some(p) = shard.partition(topic, *partition) {
            waits.push(Box::pin(p.wait_for_data(*seen)));
        }
    }
    if !waits.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let any = futures::future::select_all(waits);
        let timer = crate::shard::sleep(remaining);
        futures::future::select(Box::pin(any), Box::pin(timer)).await;
    }
    specs
        .into_iter()
        .filter(|(_, topic, partition, seen)| {
            shard
                .partition(topic, *partition)
                .is_none_or(|p| p.high_watermark() > *seen)
        })
        .map(|(slot, ..)| slot)
        .collect()
}

/// One distinct partition of the request, and what it will answer.
struct Slot {
    /// Index into the request's distinct topics (the answer groups consecutive slots of one topic).
    topic: usize,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i64,
    /// `(owner core, topic name)` for a partition that exists; `None` for one answered with an error.
    target: Option<(usize, Arc<str>)>,
    outcome: ReadOutcome,
}

/// Kafka's fetch budget, applied in request order to what was read: each partition keeps whole batches
/// within `min(its limit, what is left of the response budget)`, except that the first non-empty
/// partition keeps its first batch whatever its size. Batches past the budget are dropped, not copied.
fn apply_budget(slots: &mut [Slot], response_max: i64) {
    let mut left = response_max.max(0) as usize;
    let mut first = true;
    for s in slots.iter_mut() {
        let read = &mut s.outcome.read;
        if read.bytes == 0 {
            continue;
        }
        let limit = (s.partition_max_bytes.max(0) as usize).min(left);
        let kept = keep_batches_within(read, limit, first);
        first = false;
        left = left.saturating_sub(kept);
    }
}

/// Truncates `read` to the whole batches that fit `limit` (at least one when `min_one`); returns its size.
fn keep_batches_within(read: &mut FetchRead, limit: usize, min_one: bool) -> usize {
    if read.bytes <= limit {
        return read.bytes;
    }
    let mut kept = 0usize;
    let mut chunks = Vec::with_capacity(read.chunks.len());
    'chunks: for c in &read.chunks {
        let mut at = 0usize;
        while at < c.len() {
            let size = records::batch_size_at(&c[at..]).unwrap_or(c.len() - at);
            if kept + size > limit && !(min_one && kept == 0) {
                if at > 0 {
                    chunks.push(c.slice(..at));
                }
                break 'chunks;
            }
            kept += size;
            at += size;
        }
        chunks.push(c.clone());
    }
    read.chunks = chunks;
    read.bytes = kept;
    kept
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: FetchRequest,
    version: i16,
) -> Option<FetchAnswer> {
    let max_wait = Duration::from_millis(
        req.max_wait_ms
            .clamp(0, limits::FETCH_MAX_WAIT_MS_MAX as i32) as u64,
    );
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let response_max = (req.max_bytes as i64).min(shard.config.fetch_max_bytes as i64);

    // The distinct partitions, in order of first appearance; a repeat replaces the earlier position.
    let mut topics: Vec<(String, Uuid)> = Vec::new();
    let mut topic_index: HashMap<(String, Uuid), usize> = HashMap::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_index: HashMap<(usize, i32), usize> = HashMap::new();
    for t in &req.topics {
        let meta = if version >= 13 {
            shard.meta().topic_by_id(&t.topic_id).cloned()
        } else {
            shard.topic(t.topic.0.as_str())
        };
        let key = if version >= 13 {
            (String::new(), t.topic_id)
        } else {
            (t.topic.0.to_string(), Uuid::nil())
        };
        let ti = *topic_index.entry(key).or_insert_with(|| {
            topics.push((t.topic.0.to_string(), t.topic_id));
            topics.len() - 1
        });
        for p in &t.partitions {
            let mut outcome = ReadOutcome {
                error_code: errors::NONE,
                high_watermark: -1,
                log_start_offset: -1,
                read: FetchRead::default(),
            };
            let target = match &meta {
                None if version >= 13 => {
                    outcome.error_code = errors::UNKNOWN_TOPIC_ID;
                    None
                }
                Some(m) if p.partition >= 0 && p.partition < m.partitions => {
                    Some((shard.owner_of(m, p.partition), Arc::from(m.name.as_str())))
                }
                _ => {
                    outcome.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    None
                }
            };
            let slot = Slot {
                topic: ti,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes as i64,
                target,
                outcome,
            };
            match slot_index.get(&(ti, p.partition)) {
                Some(&i) => slots[i] = slot,
                None => {
                    slot_index.insert((ti, p.partition), slots.len());
                    slots.push(slot);
                }
            }
        }
    }

    // A negative limit is refused the way Kafka's log read refuses it (UNKNOWN_SERVER_ERROR): every
    // partition for a negative partition_max_bytes, the first partition for a negative max_bytes (after
    // it, the budget left is zero).
    for (i, s) in slots.iter_mut().enumerate() {
        if s.target.is_some() && (s.partition_max_bytes < 0 || (i == 0 && response_max < 0)) {
            s.target = None;
            s.outcome.error_code = errors::UNKNOWN_SERVER_ERROR;
        }
    }

    // The plan: each partition's read limit, decided before reading.
    let budget = response_max.max(0) as u64;
    let mut limits_: Vec<(usize, i64)> = slots
        .iter()
        .map(|s| {
            (
                (s.partition_max_bytes.max(0) as u64).min(budget) as usize,
                i64::MAX,
            )
        })
        .collect();
    let wanted: u64 = limits_.iter().map(|&(l, _)| l as u64).sum();
    if wanted > budget {
        // Over-subscribed: hand out the budget in request order from upper bounds of what each holds.
        let hops = owners(shard, &slots, |i, s| spec(i, s, 0, i64::MAX, false))
            .into_iter()
            .map(|(owner, specs)| {
                shard.invoke_on(owner, move |s| async move { estimate_local(s, specs) })
            });
        let mut bounds = vec![(0u64, i64::MAX); slots.len()];
        for answers in futures::future::join_all(hops).await {
            for (slot, _err, hw, _start, bytes) in answers {
                bounds[slot] = (bytes, hw);
            }
        }
        let mut left = budget;
        for (i, s) in slots.iter().enumerate() {
            let limit = (s.partition_max_bytes.max(0) as u64).min(left);
            let (bytes, hw) = bounds[i];
            limits_[i] = (limit as usize, hw);
            left -= bytes.min(limit);
        }
    }

    // Read every partition on its owner.
    let all: Vec<usize> = (0..slots.len()).collect();
    read_slots(shard, &mut slots, &all, &limits_).await;

    loop {
        // KIP-74: if the first partition with data could not return its first batch because that batch
        // alone is over the limit, read that batch whole.
        if let Some(i) = slots
            .iter()
            .position(|s| s.outcome.read.bytes > 0 || s.outcome.read.first_batch_over_limit)
        {
            if slots[i].outcome.read.bytes == 0 {
                let (owner, topic) = slots[i]
                    .target
                    .clone()
                    .expect("read partitions have owners");
                let spec = ReadSpec {
                    slot: i,
                    topic,
                    partition: slots[i].partition,
                    offset: slots[i].fetch_offset,
                    max_bytes: 0,
                    max_offset: limits_[i].1,
                    min_one: true,
                };
                for (slot, o) in shard
                    .invoke_on(owner, move |s| read_local(s, vec![spec]))
                    .await
                {
                    slots[slot].outcome = o;
                }
            }
        }
        apply_budget(&mut slots, response_max);

        let total: usize = slots.iter().map(|s| s.outcome.read.bytes).sum();
        let any_error = slots.iter().any(|s| s.outcome.error_code != errors::NONE);
        if total >= min_bytes || any_error || Instant::now() >= deadline {
            break;
        }
        // Not enough yet: wait on the owners until a partition's high watermark moves past the one seen.
        let mut by_owner: Vec<Vec<WaitSpec>> = vec![Vec::new(); shard.cores];
        for (i, s) in slots.iter().enumerate() {
            if let Some((owner, topic)) = &s.target {
                by_owner[*owner].push((i, topic.clone(), s.partition, s.outcome.high_watermark));
            }
        }
        let waits: Vec<_> = by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, specs)| !specs.is_empty())
            .map(|(owner, specs)| {
                Box::pin(shard.invoke_on(owner, move |s| wait_local(s, specs, deadline)))
            })
            .collect();
        if waits.is_empty() {
            crate::shard::sleep(deadline.saturating_duration_since(Instant::now())).await;
            break;
        }
        let (moved, _, _) = futures::future::select_all(waits).await;
        // Re-read only what moved, each within what the budget has left.
        let left = (budget as usize).saturating_sub(total);
        for &i in &moved {
            let s = &slots[i];
            limits_[i] = (
                (s.partition_max_bytes.max(0) as usize).min(left + s.outcome.read.bytes),
                i64::MAX,
            );
        }
        read_slots(shard, &mut slots, &moved, &limits_).await;
    }

    for s in &slots {
        if let Some((_, topic)) = &s.target {
            crate::metrics::fetched(topic, s.outcome.read.bytes);
        }
    }
    Some(answer(slots, &topics, version))
}

fn spec(
    slot: usize,
    s: &Slot,
    max_bytes: usize,
    max_offset: i64,
    min_one: bool,
) -> Option<(usize, ReadSpec)> {
    let (owner, topic) = s.target.clone()?;
    Some((
        owner,
        ReadSpec {
            slot,
            topic,
            partition: s.partition,
            offset: s.fetch_offset,
            max_bytes,
            max_offset,
            min_one,
        },
    ))
}

/// Groups the specs of the slots that have an owner by owner core.
fn owners(
    shard: &Shard,
    slots: &[Slot],
    mut make: impl FnMut(usize, &Slot) -> Option<(usize, ReadSpec)>,
) -> Vec<(usize, Vec<ReadSpec>)> {
    let mut by_owner: Vec<Vec<ReadSpec>> = vec![Vec::new(); shard.cores];
    for (i, s) in slots.iter().enumerate() {
        if let Some((owner, spec)) = make(i, s) {
            by_owner[owner].push(spec);
        }
    }
    by_owner
        .into_iter()
        .enumerate()
        .filter(|(_, specs)| !specs.is_empty())
        .collect()
}

/// Reads the slots `which` on their owners (one hop per owner, in parallel) with the planned limits.
async fn read_slots(shard: &Rc<Shard>, slots: &mut [Slot], which: &[usize], plan: &[(usize, i64)]) {
    let mut want = vec![false; slots.len()];
    for &i in which {
        want[i] = true;
    }
    let hops = owners(shard, slots, |i, s| {
        if want[i] {
            spec(i, s, plan[i].0, plan[i].1, false)
        } else {
            None
        }
    })
    .into_iter()
    .map(|(owner, specs)| shard.invoke_on(owner, move |s| read_local(s, specs)));
    for answers in futures::future::join_all(hops).await {
        for (slot, o) in answers {
            slots[slot].outcome = o;
        }
    }
}

/// The answer: consecutive slots of one topic form one topic entry, as Kafka builds it.
fn answer(slots: Vec<Slot>, topics: &[(String, Uuid)], version: i16) -> FetchAnswer {
    let mut resp = FetchAnswer::default();
    let mut last_topic = usize::MAX;
    for s in slots {
        if s.topic != last_topic {
            let (name, topic_id) = &topics[s.topic];
            resp.topics.push(TopicAnswer {
                name: name.clone(),
                topic_id: *topic_id,
                partitions: Vec::new(),
            });
            last_topic = s.topic;
        }
        let o = s.outcome;
        let pa = PartitionAnswer {
            index: s.partition,
            error_code: o.error_code,
            high_watermark: o.high_watermark,
            last_stable_offset: o.high_watermark,
            log_start_offset: if version >= 5 { o.log_start_offset } else { -1 },
            aborted_transactions: None,
            preferred_read_replica: -1,
            records: o.read.chunks,
        };
        resp.topics
            .last_mut()
            .expect("a topic entry was pushed")
            .partitions
            .push(pa);
    }
    resp
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
