//! Fetch (with long poll) and ListOffsets.
//!
//! A fetch is planned before anything is read, read on each partition's owning core, and answered with
//! the record bytes as the slices the logs hold (no copy into an answer buffer).
//!
//! - **Partitions**: named once each, in order of first appearance; a partition named again replaces the
//!   earlier fetch position and limit (Kafka keeps them in a map keyed by topic-partition).
//! - **Sessions** (KIP-227, `crate::fetch_session`): epoch -1 (and Fetch v4-6) is a sessionless fetch
//!   (session id 0); epoch 0 is a full fetch whose answer is cached as a new session on this core; any
//!   other epoch continues a session: the request names only changed partitions and the ones to forget,
//!   the fetch reads every partition of the session in the session's order (the budget and the long poll
//!   apply to all of them), and the answer carries only those with records, a new high watermark or log
//!   start offset, or an error. Partitions that returned records move to the end of the session's order.
//!   An unknown session id, a wrong epoch or a topic-id mismatch is a top-level error with no partitions.
//! - **Budget**: the answer holds at most `min(max_bytes, fetch.max.bytes)` record bytes and each partition at
//!   most its `partition_max_bytes`, in read order; the first batch of the first non-empty partition is
//!   returned whole even when it is larger than both (KIP-74), so a consumer always makes progress. When the
//!   partition limits add up to more than the answer may hold, each owner first reports an upper bound of
//!   what its partitions hold (no I/O) and the limits are handed out in order from those bounds, so the
//!   reads themselves never exceed the budget.
//! - **Isolation** (Fetch v4+): read_committed reads only below the partition's last stable offset and
//!   answers the aborted transactions overlapping what it returns (Kafka's
//!   `collectAbortedTransactions`; an empty list when nothing is returned, null for read_uncommitted and
//!   for failed partitions); every answer carries the last stable offset, as Kafka's does. For
//!   read_committed the long poll waits for the last stable offset to move.
//! - **Long poll**: with fewer than `min_bytes` ready, the fetch waits on the owners until a partition's
//!   high watermark passes the one already seen (not merely the fetch offset: that would spin) or
//!   `max_wait_ms` passes, then re-reads only the partitions that moved. As in Kafka it answers at once
//!   when no partition passed the metadata check or a read failed.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;
use uuid::Uuid;

use crate::fetch_session::{self, Context, FetchParams, Outcome, PartitionKey, TopicKey, Wanted};
use crate::limits;
use crate::partition::PartitionError;
use crate::protocol::errors;
use crate::protocol::fetch_response::{FetchAnswer, PartitionAnswer, TopicAnswer};
use crate::records;
use crate::shard::Shard;
use crate::storage::{FetchRead, TimestampOffset};

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
    /// read_committed (isolation level 1): only below the last stable offset.
    committed: bool,
    /// The client's current leader epoch, -1 when not given.
    leader_epoch: i32,
}

/// One partition's answer, sent back from its owner.
#[derive(Clone, Debug, Default)]
struct ReadOutcome {
    error_code: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    read: FetchRead,
    /// read_committed: the aborted transactions (producer id, first offset) overlapping the read.
    aborted: Option<Vec<(i64, i64)>>,
}

impl ReadOutcome {
    /// What the fetch sees the end of: the last stable offset for read_committed, else the high
    /// watermark. A long poll waits for it to move.
    fn visible_end(&self, committed: bool) -> i64 {
        if committed {
            self.last_stable_offset
        } else {
            self.high_watermark
        }
    }
}

/// The offset after the last batch of `read`, if it holds any.
fn read_end_offset(read: &FetchRead) -> Option<i64> {
    let chunk = read.chunks.last()?;
    let mut at = 0usize;
    let mut end = None;
    while let Some(rest) = chunk.get(at..) {
        let (Some(h), Some(size)) = (
            records::BatchHeader::parse(rest),
            records::batch_size_at(rest),
        ) else {
            break;
        };
        end = Some(
            h.base_offset
                .saturating_add(i64::from(h.last_offset_delta))
                .saturating_add(1),
        );
        at += size;
    }
    end
}

/// Reads partitions this core owns, and with `wait = Some((min_bytes, deadline))` (a fetch whose
/// partitions all live on this core) also does the long poll here: if fewer than `min_bytes` came back
/// (no error, no batch held back by a limit), it waits until a partition's high watermark moves or the
/// deadline, then re-reads what moved. One hop instead of three for an idle consumer. Runs on the owner.
async fn read_local(
    shard: Rc<Shard>,
    specs: Vec<ReadSpec>,
    wait: Option<(usize, Instant)>,
) -> Vec<(usize, ReadOutcome)> {
    let Some((min_bytes, deadline)) = wait else {
        return read_now(shard, specs).await;
    };
    // The specs are kept for the wait and the re-read.
    let mut out = read_now(shard.clone(), specs.clone()).await;
    let total: usize = out.iter().map(|(_, o)| o.read.bytes).sum();
    let ready = total >= min_bytes
        || out
            .iter()
            .any(|(_, o)| o.error_code != errors::NONE || o.read.first_batch_over_limit);
    if ready || Instant::now() >= deadline {
        return out;
    }
    let seen: Vec<WaitSpec> = specs
        .iter()
        .zip(&out)
        .map(|(s, (_, o))| {
            (
                s.slot,
                s.topic.clone(),
                s.partition,
                o.visible_end(s.committed),
                s.committed,
            )
        })
        .collect();
    let moved = wait_local(shard.clone(), seen, deadline).await;
    if moved.is_empty() {
        return out;
    }
    let again: Vec<ReadSpec> = specs
        .into_iter()
        .filter(|s| moved.contains(&s.slot))
        .map(|s| ReadSpec {
            max_offset: i64::MAX,
            ..s
        })
        .collect();
    for (slot, o) in read_now(shard, again).await {
        if let Some(e) = out.iter_mut().find(|(s, _)| *s == slot) {
            e.1 = o;
        }
    }
    out
}

/// Reads partitions this core owns, in request order. Runs on the owner.
async fn read_now(shard: Rc<Shard>, specs: Vec<ReadSpec>) -> Vec<(usize, ReadOutcome)> {
    // The partitions are read concurrently (their disk reads overlap); each read is within its planned
    // limit, so this adds no memory, and the answers keep request order.
    let reads = specs.into_iter().map(|s| {
        let shard = shard.clone();
        async move {
            let mut o = ReadOutcome {
                error_code: errors::NOT_LEADER_OR_FOLLOWER,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                read: FetchRead::default(),
                aborted: None,
            };
            if let Some(p) = shard.partition(&s.topic, s.partition) {
                let fenced = p.check_leader_epoch(s.leader_epoch);
                if fenced != errors::NONE {
                    o.error_code = fenced;
                    return (s.slot, o);
                }
                let hw = p.high_watermark();
                o.high_watermark = hw;
                o.last_stable_offset = p.last_stable_offset();
                o.log_start_offset = p.log_start_offset();
                let end = o.visible_end(s.committed);
                match p
                    .read_batches(s.offset, s.max_bytes, s.max_offset.min(end), s.min_one)
                    .await
                {
                    Ok(read) => {
                        o.error_code = errors::NONE;
                        if s.committed {
                            // Kafka's upper bound is an index entry at or past the read's end; the
                            // read's own end gives the same transactions for the batches returned.
                            o.aborted = Some(match read_end_offset(&read) {
                                Some(upper) => p.aborted_transactions(s.offset, upper),
                                None => Vec::new(),
                            });
                        }
                        o.read = read;
                    }
                    Err(e) => {
                        // Kafka answers a failed partition with no offsets at all.
                        o.error_code = e.code;
                        o.high_watermark = -1;
                        o.last_stable_offset = -1;
                        o.log_start_offset = -1;
                    }
                }
            }
            (s.slot, o)
        }
    });
    futures::future::join_all(reads).await
}

/// Upper bounds of what each partition could give now: `(slot, visible end, bytes)`, the visible end
/// being the high watermark (the last stable offset for read_committed). No I/O. Runs on the owner.
fn estimate_local(shard: Rc<Shard>, specs: Vec<ReadSpec>) -> Vec<(usize, i64, u64)> {
    specs
        .into_iter()
        .map(|s| match shard.partition(&s.topic, s.partition) {
            None => (s.slot, -1, 0),
            Some(p) => {
                let hw = if s.committed {
                    p.last_stable_offset()
                } else {
                    p.high_watermark()
                };
                // A fetch offset out of range reads nothing (the read answers the error).
                let in_range = s.offset >= p.log_start_offset() && s.offset <= p.log_end_offset();
                (
                    s.slot,
                    hw,
                    if in_range { p.bytes_from(s.offset) } else { 0 },
                )
            }
        })
        .collect()
}

/// `(slot, topic, partition, visible end already seen, read_committed)`: one partition a long poll waits
/// on (the visible end is the high watermark, or the last stable offset for read_committed).
type WaitSpec = (usize, Arc<str>, i32, i64, bool);

/// Waits on the owner until one partition's visible end passes the one the fetch last saw (or the log
/// fails or closes), or the deadline. Returns the slots that moved.
async fn wait_local(shard: Rc<Shard>, specs: Vec<WaitSpec>, deadline: Instant) -> Vec<usize> {
    let mut waits: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
    for (_, topic, partition, seen, committed) in &specs {
        if let Some(p) = shard.partition(topic, *partition) {
            if *committed {
                waits.push(Box::pin(p.wait_for_stable(*seen)));
            } else {
                waits.push(Box::pin(p.wait_for_data(*seen)));
            }
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
        .filter(|(_, topic, partition, seen, committed)| {
            shard.partition(topic, *partition).is_none_or(|p| {
                let end = if *committed {
                    p.last_stable_offset()
                } else {
                    p.high_watermark()
                };
                end > *seen
            })
        })
        .map(|(slot, ..)| slot)
        .collect()
}

/// One distinct partition the fetch reads, and what it will answer.
struct Slot {
    /// Index into the fetch's distinct topics (the answer groups consecutive slots of one topic).
    topic: usize,
    /// The partition, its topic's name when known, and what is asked of it.
    wanted: Wanted,
    /// Passed the metadata check (Kafka's "interesting" partitions): its errors are read errors, which end
    /// a long poll at once; a partition of an unknown topic is answered with an error but does not.
    interesting: bool,
    /// `(owner core, topic name)` for a partition to read; `None` for one answered with an error.
    target: Option<(usize, Arc<str>)>,
    outcome: ReadOutcome,
}

impl Slot {
    fn partition(&self) -> i32 {
        self.wanted.key.partition
    }

    fn fetch_offset(&self) -> i64 {
        self.wanted.params.fetch_offset
    }

    fn current_leader_epoch(&self) -> i32 {
        self.wanted.params.current_leader_epoch
    }

    fn partition_max_bytes(&self) -> i64 {
        self.wanted.params.max_bytes as i64
    }

    /// What the fetch session compares.
    fn session_outcome(&self) -> Outcome {
        Outcome {
            error_code: self.outcome.error_code,
            high_watermark: self.outcome.high_watermark,
            log_start_offset: self.outcome.log_start_offset,
            has_records: self.outcome.read.bytes > 0,
        }
    }
}

/// Kafka's fetch budget, applied in read order to what was read: each partition keeps whole batches
/// within `min(its limit, what is left of the response budget)`, except that the first non-empty
/// partition keeps its first batch whatever its size. Batches past the budget are dropped, not copied.
fn apply_budget(slots: &mut [Slot], response_max: i64) {
    let mut left = response_max.max(0) as usize;
    let mut first = true;
    for s in slots.iter_mut() {
        let limit = (s.partition_max_bytes().max(0) as usize).min(left);
        let read = &mut s.outcome.read;
        if read.bytes == 0 {
            continue;
        }
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

/// Milliseconds on a monotonic clock: the fetch session cache's time.
fn now_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

/// The request's partitions, once each in order of first appearance (a repeat replaces the earlier
/// position and limit, as Kafka's map keyed by topic-partition does), and the partitions it forgets.
/// Topics are keyed by id from v13, by name before.
fn request_partitions(
    shard: &Shard,
    req: &FetchRequest,
    version: i16,
) -> (Vec<Wanted>, Vec<PartitionKey>) {
    let meta = shard.meta();
    let mut data: IndexMap<PartitionKey, Wanted> = IndexMap::new();
    for t in &req.topics {
        let (topic, name) = if version >= 13 {
            let name = meta
                .topic_by_id(&t.topic_id)
                .map(|m| Arc::from(m.name.as_str()));
            (TopicKey::Id(t.topic_id), name)
        } else {
            let name: Arc<str> = Arc::from(t.topic.0.as_str());
            (TopicKey::Name(name.clone()), Some(name))
        };
        for p in &t.partitions {
            let key = PartitionKey {
                topic: topic.clone(),
                partition: p.partition,
            };
            let wanted = Wanted {
                key: key.clone(),
                name: name.clone(),
                params: FetchParams {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                },
            };
            data.insert(key, wanted);
        }
    }
    let mut forgotten = Vec::new();
    if version >= 7 {
        for t in &req.forgotten_topics_data {
            let topic = if version >= 13 {
                TopicKey::Id(t.topic_id)
            } else {
                TopicKey::Name(Arc::from(t.topic.0.as_str()))
            };
            forgotten.extend(t.partitions.iter().map(|&partition| PartitionKey {
                topic: topic.clone(),
                partition,
            }));
        }
    }
    (data.into_values().collect(), forgotten)
}

/// The slots of the partitions to read, in read order (those of unknown topics and partitions last), with
/// their distinct topics `(name, id)`.
fn plan_slots(shard: &Shard, wanted: Vec<Wanted>) -> (Vec<(String, Uuid)>, Vec<Slot>) {
    let meta = shard.meta();
    let mut topics: Vec<(String, Uuid)> = Vec::new();
    let mut topic_index: HashMap<TopicKey, usize> = HashMap::new();
    let mut slots = Vec::with_capacity(wanted.len());
    for w in wanted {
        let ti = *topic_index.entry(w.key.topic.clone()).or_insert_with(|| {
            topics.push(match &w.key.topic {
                TopicKey::Id(id) => (w.name.as_deref().unwrap_or("").to_string(), *id),
                TopicKey::Name(name) => (name.to_string(), Uuid::nil()),
            });
            topics.len() - 1
        });
        let topic_meta = match &w.key.topic {
            TopicKey::Id(id) => meta.topic_by_id(id),
            TopicKey::Name(name) => meta.topics.get(&**name),
        };
        let mut outcome = ReadOutcome {
            error_code: errors::NONE,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            read: FetchRead::default(),
            aborted: None,
        };
        let partition = w.key.partition;
        let target = match (topic_meta, &w.key.topic) {
            (Some(m), _) if partition >= 0 && partition < m.partitions => {
                Some((shard.owner_of(m, partition), Arc::from(m.name.as_str())))
            }
            // An id no topic has. A session partition that had a name keeps it (its topic was deleted):
            // Kafka then finds no partition of that name.
            (None, TopicKey::Id(_)) if w.name.is_none() => {
                outcome.error_code = errors::UNKNOWN_TOPIC_ID;
                None
            }
            _ => {
                outcome.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                None
            }
        };
        slots.push(Slot {
            topic: ti,
            wanted: w,
            interesting: target.is_some(),
            target,
            outcome,
        });
    }
    // Kafka reads the partitions that passed the metadata check, in order, and appends the others to the
    // answer after them (and so to a new session's order). A stable sort keeps each group's order.
    slots.sort_by_key(|s| !s.interesting);
    (topics, slots)
}

/// A Fetch answer with its charge to the core's response budget (released once it is written).
pub struct FetchReply {
    pub answer: FetchAnswer,
    pub charge: Option<crate::shard::budget::Charge>,
}

impl From<FetchAnswer> for FetchReply {
    fn from(answer: FetchAnswer) -> Self {
        FetchReply {
            answer,
            charge: None,
        }
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: FetchRequest,
    version: i16,
) -> Option<FetchReply> {
    let max_wait = Duration::from_millis(
        req.max_wait_ms
            .clamp(0, limits::FETCH_MAX_WAIT_MS_MAX as i32) as u64,
    );
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let response_max = (req.max_bytes as i64).min(shard.config.fetch_max_bytes as i64);
    // Kafka's READ_COMMITTED (Fetch v4+).
    let committed = version >= 4 && req.isolation_level == 1;

    // The fetch session (KIP-227): Fetch v4-6 have none (Kafka's LEGACY metadata: id 0, epoch -1).
    let (session_id, epoch) = if version >= 7 {
        (req.session_id, req.session_epoch)
    } else {
        (
            fetch_session::INVALID_SESSION_ID,
            fetch_session::FINAL_EPOCH,
        )
    };
    let full = epoch == fetch_session::INITIAL_EPOCH || epoch == fetch_session::FINAL_EPOCH;
    if full && session_id != fetch_session::INVALID_SESSION_ID {
        if let Some(core) =
            fetch_session::core_of(session_id, shard.cores).filter(|&c| c != shard.id)
        {
            // Cross-core hop: a full fetch closes the session it names, and this one lives in another
            // core's cache (the client reconnected and landed on this core).
            shard
                .invoke_on(core, move |s| async move {
                    s.fetch_sessions.borrow_mut().remove(session_id);
                })
                .await;
        }
    }
    let privileged = if version >= 15 {
        req.replica_state.replica_id.0 >= 0
    } else {
        req.replica_id.0 >= 0
    };
    let (fetch_data, forgotten) = request_partitions(shard, &req, version);
    let mut context = {
        let meta = shard.meta();
        let session_req = fetch_session::Request {
            version,
            session_id,
            epoch,
            privileged,
            fetch_data: &fetch_data,
            forgotten: &forgotten,
        };
        shard
            .fetch_sessions
            .borrow_mut()
            .new_context(now_ms(), &session_req, |id| {
                meta.topic_by_id(id).map(|m| Arc::from(m.name.as_str()))
            })
    };
    let wanted = match context {
        Context::Error(code) => {
            return Some(session_error(code, fetch_session::INVALID_SESSION_ID).into())
        }
        Context::Incremental {
            ref mut partitions, ..
        } => std::mem::take(partitions),
        Context::Sessionless | Context::Full { .. } => fetch_data,
    };

    // The partitions to read, in order: the request's, or for an incremental fetch the session's.
    let (topics, mut slots) = plan_slots(shard, wanted);

    // A negative limit is refused the way Kafka's log read refuses it (UNKNOWN_SERVER_ERROR): every
    // partition for a negative partition_max_bytes, the first partition for a negative max_bytes (after
    // it, the budget left is zero).
    for (i, s) in slots.iter_mut().enumerate() {
        if s.target.is_some() && (s.partition_max_bytes() < 0 || (i == 0 && response_max < 0)) {
            s.target = None;
            s.outcome.error_code = errors::UNKNOWN_SERVER_ERROR;
        }
    }

    // The plan: each partition's read limit, decided before reading, within what the core's response
    // budget can give this answer now (charged before any read; KIP-74's first batch is the only
    // excess).
    let budget = response_max.max(0) as u64;
    let asked: u64 = slots
        .iter()
        .map(|s| (s.partition_max_bytes().max(0) as u64).min(budget))
        .sum();
    let mut charge = crate::shard::budget::response_budget().take_up_to(asked.min(budget) as usize);
    let budget = charge.bytes() as u64;
    let mut limits_: Vec<(usize, i64)> = slots
        .iter()
        .map(|s| {
            (
                (s.partition_max_bytes().max(0) as u64).min(budget) as usize,
                i64::MAX,
            )
        })
        .collect();
    let wanted: u64 = limits_.iter().map(|&(l, _)| l as u64).sum();
    if wanted > budget {
        // Over-subscribed: hand out the budget in read order from upper bounds of what each holds.
        let hops = owners(shard, &slots, |i, s| {
            spec(i, s, 0, i64::MAX, false, committed)
        })
        .into_iter()
        .map(|(owner, specs)| {
            shard.invoke_on(owner, move |s| async move { estimate_local(s, specs) })
        });
        let mut bounds = vec![(0u64, i64::MAX); slots.len()];
        for answers in futures::future::join_all(hops).await {
            for (slot, hw, bytes) in answers {
                bounds[slot] = (bytes, hw);
            }
        }
        let mut left = budget;
        for (i, s) in slots.iter().enumerate() {
            let limit = (s.partition_max_bytes().max(0) as u64).min(left);
            let (bytes, hw) = bounds[i];
            limits_[i] = (limit as usize, hw);
            left -= bytes.min(limit);
        }
    }

    // Read every partition on its owner.
    let all: Vec<usize> = (0..slots.len()).collect();
    read_slots(
        shard,
        &mut slots,
        &all,
        &limits_,
        committed,
        Some((min_bytes, deadline)),
    )
    .await;

    loop {
        // KIP-74: if the first partition with data could not return its first batch because that batch
        // alone is over the limit, read that batch whole.
        if let Some(i) = slots
            .iter()
            .position(|s| s.outcome.read.bytes > 0 || s.outcome.read.first_batch_over_limit)
        {
            if slots[i].outcome.read.bytes == 0 {
                if let Some((owner, topic)) = slots[i].target.clone() {
                    let spec = ReadSpec {
                        slot: i,
                        topic,
                        partition: slots[i].partition(),
                        offset: slots[i].fetch_offset(),
                        max_bytes: 0,
                        max_offset: limits_[i].1,
                        min_one: true,
                        committed,
                        leader_epoch: slots[i].current_leader_epoch(),
                    };
                    for (slot, o) in shard
                        .invoke_on(owner, move |s| read_local(s, vec![spec], None))
                        .await
                    {
                        slots[slot].outcome = o;
                    }
                }
            }
        }
        apply_budget(&mut slots, response_max.min(budget as i64));

        // As Kafka: answer at once when nothing can be read (no partition passed the metadata check) or a
        // read failed; else when min_bytes are there or the wait is over.
        let total: usize = slots.iter().map(|s| s.outcome.read.bytes).sum();
        let read_error = slots
            .iter()
            .any(|s| s.interesting && s.outcome.error_code != errors::NONE);
        let nothing_to_read = !slots.iter().any(|s| s.interesting);
        if total >= min_bytes || read_error || nothing_to_read || Instant::now() >= deadline {
            break;
        }
        // Not enough yet: wait on the owners until a partition's high watermark moves past the one seen.
        let mut by_owner: Vec<Vec<WaitSpec>> = vec![Vec::new(); shard.cores];
        for (i, s) in slots.iter().enumerate() {
            if let Some((owner, topic)) = &s.target {
                by_owner[*owner].push((
                    i,
                    topic.clone(),
                    s.partition(),
                    s.outcome.visible_end(committed),
                    committed,
                ));
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
            break;
        }
        let (moved, _, _) = futures::future::select_all(waits).await;
        // Re-read only what moved, each within what the budget has left.
        let left = (budget as usize).saturating_sub(total);
        for &i in &moved {
            let s = &slots[i];
            limits_[i] = (
                (s.partition_max_bytes().max(0) as usize).min(left + s.outcome.read.bytes),
                i64::MAX,
            );
        }
        read_slots(shard, &mut slots, &moved, &limits_, committed, None).await;
    }

    // The session's part of the answer.
    let (answer_session_id, include) = match context {
        Context::Sessionless => (fetch_session::INVALID_SESSION_ID, None),
        Context::Error(code) => {
            return Some(session_error(code, fetch_session::INVALID_SESSION_ID).into())
        }
        Context::Full {
            privileged,
            uses_topic_ids,
        } => {
            let answered = slots
                .iter()
                .map(|s| (s.wanted.clone(), s.session_outcome()))
                .collect();
            let id = shard.fetch_sessions.borrow_mut().create(
                now_ms(),
                privileged,
                uses_topic_ids,
                answered,
            );
            (id, None)
        }
        Context::Incremental {
            session_id,
            request_epoch,
            ..
        } => {
            let read: Vec<(&PartitionKey, Outcome)> = slots
                .iter()
                .map(|s| (&s.wanted.key, s.session_outcome()))
                .collect();
            let sent = shard
                .fetch_sessions
                .borrow_mut()
                .respond(session_id, request_epoch, &read);
            match sent {
                Ok(mask) => (session_id, Some(mask)),
                Err(code) => return Some(session_error(code, session_id).into()),
            }
        }
    };

    for s in &slots {
        if let Some((_, topic)) = &s.target {
            crate::metrics::fetched(topic, s.outcome.read.bytes);
        }
    }
    let mut resp = answer(slots, &topics, version, include.as_deref());
    resp.session_id = answer_session_id;
    charge.shrink_to(resp.records_len());
    Some(FetchReply {
        answer: resp,
        charge: Some(charge),
    })
}

/// A Fetch answer that is only a session error.
fn session_error(code: i16, session_id: i32) -> FetchAnswer {
    FetchAnswer {
        error_code: code,
        session_id,
        ..FetchAnswer::default()
    }
}

fn spec(
    slot: usize,
    s: &Slot,
    max_bytes: usize,
    max_offset: i64,
    min_one: bool,
    committed: bool,
) -> Option<(usize, ReadSpec)> {
    let (owner, topic) = s.target.clone()?;
    Some((
        owner,
        ReadSpec {
            slot,
            topic,
            partition: s.partition(),
            offset: s.fetch_offset(),
            max_bytes,
            max_offset,
            min_one,
            committed,
            leader_epoch: s.current_leader_epoch(),
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
/// `wait` is handed to the owner (see [`read_local`]) only when a single core owns every slot read.
async fn read_slots(
    shard: &Rc<Shard>,
    slots: &mut [Slot],
    which: &[usize],
    plan: &[(usize, i64)],
    committed: bool,
    wait: Option<(usize, Instant)>,
) {
    let mut want = vec![false; slots.len()];
    for &i in which {
        want[i] = true;
    }
    let hops = owners(shard, slots, |i, s| {
        if want[i] {
            spec(i, s, plan[i].0, plan[i].1, false, committed)
        } else {
            None
        }
    });
    let wait = if hops.len() == 1 { wait } else { None };
    let hops = hops
        .into_iter()
        .map(|(owner, specs)| shard.invoke_on(owner, move |s| read_local(s, specs, wait)));
    for answers in futures::future::join_all(hops).await {
        for (slot, o) in answers {
            slots[slot].outcome = o;
        }
    }
}

/// The answer: the slots `include` keeps (all without it), in read order; consecutive slots of one topic
/// form one topic entry, as Kafka builds it.
fn answer(
    slots: Vec<Slot>,
    topics: &[(String, Uuid)],
    version: i16,
    include: Option<&[bool]>,
) -> FetchAnswer {
    let mut resp = FetchAnswer::default();
    let mut last_topic = usize::MAX;
    for (i, s) in slots.into_iter().enumerate() {
        if include.is_some_and(|keep| !keep[i]) {
            continue;
        }
        if s.topic != last_topic {
            let (name, topic_id) = &topics[s.topic];
            resp.topics.push(TopicAnswer {
                name: name.clone(),
                topic_id: *topic_id,
                partitions: Vec::new(),
            });
            last_topic = s.topic;
        }
        let index = s.partition();
        let o = s.outcome;
        let pa = PartitionAnswer {
            index,
            error_code: o.error_code,
            high_watermark: o.high_watermark,
            last_stable_offset: o.last_stable_offset,
            log_start_offset: if version >= 5 { o.log_start_offset } else { -1 },
            aborted_transactions: o.aborted,
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
const EARLIEST_PENDING_UPLOAD: i64 = -6;

/// The lowest ListOffsets version that may ask for a special (negative) timestamp, as Kafka's
/// `ReplicaManager.isListOffsetsTimestampUnsupported` has it; `None` for a negative timestamp that is none
/// of them. Such a request is answered UNSUPPORTED_VERSION for that partition.
fn min_version_for(ts: i64) -> Option<i16> {
    match ts {
        LATEST | EARLIEST => Some(1),
        MAX_TIMESTAMP => Some(7),
        EARLIEST_LOCAL => Some(8),
        LATEST_TIERED => Some(9),
        EARLIEST_PENDING_UPLOAD => Some(11),
        _ => None,
    }
}

/// Answers one ListOffsets partition on its owner: (error, timestamp, offset). A timestamp lookup or
/// MAX_TIMESTAMP that finds nothing below the high watermark answers timestamp -1, offset -1, no error
/// (as Kafka does from version 1 on). With `committed` (isolation level 1) the last stable offset takes
/// the high watermark's place: LATEST answers it and lookups find only records below it (Kafka's
/// `Partition.fetchOffsetForTimestamp`).
/// One partition's ListOffsets answer on its owner: `(error, timestamp, offset, leader epoch)`. The epoch
/// is Kafka's: the leader's for LATEST, the first known epoch for EARLIEST when it covers the log start,
/// otherwise that of the batch holding the offset found.
async fn list_offset_local(
    shard: Rc<Shard>,
    topic: Arc<str>,
    partition: i32,
    ts: i64,
    committed: bool,
    current_leader_epoch: i32,
) -> (i16, i64, i64, i32) {
    let Some(p) = shard.partition(&topic, partition) else {
        return (errors::NOT_LEADER_OR_FOLLOWER, -1, -1, -1);
    };
    let fenced = p.check_leader_epoch(current_leader_epoch);
    if fenced != errors::NONE {
        return (fenced, -1, -1, -1);
    }
    let lso = committed.then(|| p.last_stable_offset());
    let found = |r: Result<Option<TimestampOffset>, PartitionError>| match r {
        Ok(Some(t)) if lso.is_none_or(|lso| t.offset < lso) => (
            errors::NONE,
            t.timestamp,
            t.offset,
            p.epoch_for_offset(t.offset).unwrap_or(-1),
        ),
        Ok(_) => (errors::NONE, -1, -1, -1),
        Err(e) => (e.code, -1, -1, -1),
    };
    match ts {
        LATEST => (
            errors::NONE,
            -1,
            lso.unwrap_or_else(|| p.high_watermark()),
            p.leader_epoch(),
        ),
        // Without tiered storage the local log start is the log start.
        EARLIEST | EARLIEST_LOCAL => {
            let start = p.log_start_offset();
            let epoch = p
                .first_epoch()
                .filter(|&(_, offset)| offset <= start)
                .map_or(-1, |(epoch, _)| epoch);
            (errors::NONE, -1, start, epoch)
        }
        // Without tiered storage nothing is tiered and nothing waits for upload: Kafka answers both with
        // timestamp -1, offset -1, leader epoch -1 (`UnifiedLog.fetchOffsetByTimestamp`).
        LATEST_TIERED | EARLIEST_PENDING_UPLOAD => (errors::NONE, -1, -1, -1),
        MAX_TIMESTAMP => found(p.max_timestamp_offset().await),
        ts => found(p.offset_for_timestamp(ts).await),
    }
}

pub async fn handle_list_offsets(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ListOffsetsRequest,
    version: i16,
) -> Option<ListOffsetsResponse> {
    let mut resp = ListOffsetsResponse::default();
    // Kafka's READ_COMMITTED (ListOffsets v2+).
    let committed = version >= 2 && req.isolation_level == 1;
    for t in req.topics {
        let meta = shard.topic(t.name.0.as_str());
        let futures = t.partitions.iter().map(|p| {
            let meta = meta.clone();
            let (index, ts) = (p.partition_index, p.timestamp);
            // v4+: the client's leader epoch (-1 when not given).
            let current_epoch = if version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            async move {
                let mut pr = ListOffsetsPartitionResponse::default();
                pr.partition_index = index;
                pr.timestamp = -1;
                pr.offset = -1;
                pr.leader_epoch = -1;
                if ts < 0 && min_version_for(ts).is_none_or(|v| version < v) {
                    pr.error_code = errors::UNSUPPORTED_VERSION;
                    return pr;
                }
                match meta {
                    Some(m) if index >= 0 && index < m.partitions => {
                        let owner = shard.owner_of(&m, index);
                        let name: Arc<str> = Arc::from(m.name.as_str());
                        // Cross-core hop to the partition's owner.
                        let (code, found_ts, offset, epoch) = shard
                            .invoke_on(owner, move |s| {
                                list_offset_local(s, name, index, ts, committed, current_epoch)
                            })
                            .await;
                        pr.error_code = code;
                        pr.timestamp = found_ts;
                        pr.offset = offset;
                        if code == errors::NONE && offset >= 0 && version >= 4 {
                            pr.leader_epoch = epoch;
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
