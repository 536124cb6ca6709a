//! The per-core group coordinator: the groups of the `__consumer_offsets` partitions this core owns,
//! the requests waiting on them, their timers, and their records in the log.
//!
//! Every function here runs on the core that owns the group's partition (handlers hop there with
//! `invoke_on`). The protocol decisions are made by [`Group`]; this module turns its [`Effect`]s into I/O:
//! answers to waiting JoinGroup/SyncGroup requests (oneshot channels) and durable records. A change is
//! acknowledged only after its record is durable (`append` + `wait_durable`).
//!
//! Order: every request for a group reaches this core in the order its connection sent it
//! (`Shard::send_task` keeps cross-core order; handlers hop without awaiting anything first), and each
//! mutation is validated against the group, applied or staged, and appended to the log in one synchronous
//! step, before its first await. So the state follows request order, and log order is that order too.
//! Membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) changes the group at once, as Kafka's classic
//! coordinator does, and persists the group metadata behind it. Offsets (OffsetCommit, OffsetDelete,
//! DeleteGroups, retention) are staged instead and become visible only once durable, in log order, never
//! older over newer; OffsetFetch first waits for what is staged before it ([`super::staged`] explains
//! the rule).
//!
//! Timers: each group says when its next timer is due ([`Group::next_deadline`]); one task per core
//! sleeps until the earliest deadline of its groups ([`super::timers`]), fires the groups due
//! ([`Group::tick`]) and sleeps again. A request that arms an earlier timer wakes it. So a session or
//! rebalance timeout takes effect at its deadline (a millisecond or so later), and idle groups cost
//! nothing.
//!
//! Fault model: the log append or the wait for durability can fail (disk full, I/O error): the request
//! gets a retriable coordinator error and its offset writes are discarded, never applied (a DeleteGroups
//! whose records failed leaves the group as it was). A client can disconnect while its JoinGroup waits:
//! the answer is dropped and the member then expires like any silent member.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;

use super::records::{self as recs, OffsetValue, OffsetsRecord};
use super::staged::{self, Staged, Write};
use super::state::{Effect, Group, GroupState, JoinParams, JoinResult, LeaveParams, Reply};
use super::state::{SyncParams, SyncResult};
use super::timers::Deadlines;
use super::{coordinator_partition, now_ms, OFFSETS_TOPIC};
use crate::config::GroupConfig;
use crate::partition::Partition;
use crate::protocol::errors;

/// What the coordinator needs from the core it runs on. The shard layer implements it (`Shard` holds
/// this core's [`GroupCoordinator`] and its partitions), so that the coordinator does not import the
/// shard: the shard sits above the group, as the dispatch sits above both.
pub trait GroupHost: 'static {
    /// This core's group state.
    fn groups(&self) -> &GroupCoordinator;
    /// The group settings (`group.*`, `offsets.*`).
    fn group_config(&self) -> &GroupConfig;
    /// The number of partitions of `topic` in this core's copy of the metadata, if it exists.
    fn topic_partitions(&self, topic: &str) -> Option<i32>;
    /// The partition `topic`-`partition` if this core owns it.
    fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>>;
    /// True once the core is shutting down.
    fn stopping(&self) -> bool;
    /// Runs `f` as a task of its own on this core; nobody waits for it.
    fn spawn_detached(f: impl Future<Output = ()> + 'static);
    /// Resolves after `d`.
    fn sleep(d: Duration) -> impl Future<Output = ()>;
}

/// Records per batch the coordinator writes (keeps a batch well below `message.max.bytes`).
const RECORDS_PER_BATCH_MAX: usize = 500;
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

type Waiters<T> = RefCell<HashMap<(String, String), oneshot::Sender<T>>>;

/// Group state of one core. Owned by that core (a field of its `Shard`).
#[derive(Default)]
pub struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    joins: Waiters<JoinResult>,
    syncs: Waiters<SyncResult>,
    /// `__consumer_offsets` partitions of this core whose records have been replayed.
    loaded: RefCell<HashSet<i32>>,
    /// Offset writes appended but not yet known durable (not visible yet).
    staged: RefCell<Staged>,
    /// The next deadline of each group with an armed timer.
    deadlines: RefCell<Deadlines>,
    timers_started: Cell<bool>,
    /// Offsets committed inside transactions (TxnOffsetCommit), durable but not visible until the
    /// transaction's COMMIT marker reaches their `__consumer_offsets` partition; keyed by that partition
    /// and the producer id, in log order.
    txn_offsets: RefCell<HashMap<(i32, i64), Vec<TxnOffset>>>,
}

/// One offset a transaction committed: (group, topic, partition, value).
type TxnOffset = (String, String, i32, OffsetValue);

/// One member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub error: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One partition of an OffsetCommit, decoded.
#[derive(Clone, Debug)]
pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The identity an OffsetCommit names.
#[derive(Clone, Debug)]
pub struct CommitIdentity {
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// v9+ answers an unknown group with GROUP_ID_NOT_FOUND instead of ILLEGAL_GENERATION.
    pub version: i16,
}

/// A committed offset as OffsetFetch returns it: (partition, offset, leader epoch, metadata, error code).
pub type FetchedOffset = (i32, i64, i32, String, i16);

fn partition_ready<H: GroupHost>(shard: &Rc<H>, partition: i32) -> Result<Rc<Partition>, i16> {
    let Some(p) = shard.partition(OFFSETS_TOPIC, partition) else {
        return Err(errors::NOT_COORDINATOR);
    };
    if !shard.groups().loaded.borrow().contains(&partition) {
        return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
    }
    Ok(p)
}

/// A record to append: key and value (`None`: a tombstone).
type Record = (Vec<u8>, Option<Vec<u8>>);
type Records = Vec<Record>;
/// Records with the staged writes they stand for.
type StagedRecords = Vec<(Record, Write)>;

/// Appends records to the group's partition (synchronously: no other append comes between them) and
/// returns the partition with the log offsets of the first and the last record.
fn append_records<H: GroupHost>(
    shard: &Rc<H>,
    partition: i32,
    records: &Records,
) -> Result<(Rc<Partition>, i64, i64), i16> {
    let part = shard
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(errors::NOT_COORDINATOR)?;
    let now = now_ms();
    let (mut first, mut last) = (-1, -1);
    for chunk in records.chunks(RECORDS_PER_BATCH_MAX) {
        let refs: Vec<crate::records::KeyValue<'_>> = chunk
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = crate::records::build_batch(&refs, now);
        match part.append(Bytes::from(batch)) {
            Ok(a) => {
                if first < 0 {
                    first = a.base_offset;
                }
                last = a.last_offset;
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "writing to __consumer_offsets failed");
                return Err(match e.code {
                    errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE => {
                        errors::INVALID_COMMIT_OFFSET_SIZE
                    }
                    _ => errors::COORDINATOR_NOT_AVAILABLE,
                });
            }
        }
    }
    Ok((part, first, last))
}

/// Waits until the partition is durable up to `last` (inclusive).
async fn wait_durable(part: &Partition, partition: i32, last: i64) -> Result<(), i16> {
    part.wait_durable(last).await.map_err(|e| {
        tracing::error!(partition, error = %e, "syncing __consumer_offsets failed");
        errors::COORDINATOR_NOT_AVAILABLE
    })
}

/// Appends records to the group's partition and waits until they are durable.
async fn persist<H: GroupHost>(shard: &Rc<H>, partition: i32, records: Records) -> Result<(), i16> {
    if records.is_empty() {
        return Ok(());
    }
    let (part, _, last) = append_records(shard, partition, &records)?;
    wait_durable(&part, partition, last).await
}

/// Appends `writes` of `group_id` (one record each), stages them, and waits until they are durable;
/// then applies every staged write of the group up to them, in log order. On failure the writes are
/// discarded, never applied. The append and the staging happen before the first await, so callers that
/// validated the request just before (without awaiting) keep request order.
async fn write_staged<H: GroupHost>(
    shard: &Rc<H>,
    partition: i32,
    group_id: &str,
    writes: StagedRecords,
) -> Result<(), i16> {
    if writes.is_empty() {
        return Ok(());
    }
    let (records, writes): (Records, Vec<Write>) = writes.into_iter().unzip();
    let (part, first, last) = append_records(shard, partition, &records)?;
    shard
        .groups()
        .staged
        .borrow_mut()
        .stage(group_id, first, writes);
    match wait_durable(&part, partition, last).await {
        Ok(()) => {
            settle(shard, group_id, last + 1);
            Ok(())
        }
        Err(code) => {
            shard
                .groups()
                .staged
                .borrow_mut()
                .discard(group_id, first, last);
            Err(code)
        }
    }
}

/// Applies the group's staged writes below `durable_end` (the log is durable below it).
fn settle<H: GroupHost>(shard: &Rc<H>, group_id: &str, durable_end: i64) {
    let writes = shard
        .groups()
        .staged
        .borrow_mut()
        .take_durable(group_id, durable_end);
    if !writes.is_empty() {
        staged::apply(
            &mut shard.groups().groups.borrow_mut(),
            group_id,
            writes,
            now_ms(),
        );
    }
}

/// Carries out a group's effects in order: answers waiting requests, persists the group.
async fn run_effects<H: GroupHost>(shard: &Rc<H>, group_id: &str, partition: i32, fx: Vec<Effect>) {
    let key = |m: String| (group_id.to_string(), m);
    for e in fx {
        match e {
            Effect::Persist => {
                let value = shard
                    .groups()
                    .groups
                    .borrow()
                    .get(group_id)
                    .map(|g| recs::group_value(&g.to_record(now_ms())));
                if let Some(v) = value {
                    let record = vec![(recs::group_key(group_id), Some(v))];
                    if let Err(code) = persist(shard, partition, record).await {
                        tracing::warn!(group = group_id, code, "group metadata not persisted");
                    }
                }
            }
            Effect::Join { member_id, result } => {
                if let Some(tx) = shard.groups().joins.borrow_mut().remove(&key(member_id)) {
                    let _ = tx.send(result);
                }
            }
            Effect::Sync { member_id, result } => {
                if let Some(tx) = shard.groups().syncs.borrow_mut().remove(&key(member_id)) {
                    let _ = tx.send(result);
                }
            }
        }
    }
}

/// Starts this core's timer task (once).
fn ensure_timers<H: GroupHost>(shard: &Rc<H>) {
    if shard.groups().timers_started.replace(true) {
        return;
    }
    H::spawn_detached(run_timers(shard.clone()));
}

/// Files the group's next deadline exactly (after an operation that may have armed or disarmed any of
/// its timers).
fn refile<H: GroupHost>(shard: &Rc<H>, group_id: &str) {
    let next = shard
        .groups()
        .groups
        .borrow()
        .get(group_id)
        .and_then(Group::next_deadline);
    shard.groups().deadlines.borrow_mut().set(group_id, next);
}

/// Files the heartbeat timer of one member (after a heartbeat or an offset commit, which arm that timer
/// and move no other one earlier).
fn refile_member<H: GroupHost>(shard: &Rc<H>, group_id: &str, member_id: &str) {
    let at = shard
        .groups()
        .groups
        .borrow()
        .get(group_id)
        .and_then(|g| g.member_deadline(member_id));
    if let Some(at) = at {
        shard.groups().deadlines.borrow_mut().lower(group_id, at);
    }
}

/// The timer task of one core: fires the groups whose deadline has come, runs offset retention every
/// `offsets.retention.check.interval.ms`, and otherwise sleeps until the earliest deadline (or until a
/// request files an earlier one).
async fn run_timers<H: GroupHost>(shard: Rc<H>) {
    let retention_every = shard.group_config().offsets_retention_check_interval_ms as i64;
    let mut next_retention = now_ms();
    while !shard.stopping() {
        let now = now_ms();
        let due = shard.groups().deadlines.borrow_mut().take_due(now);
        let mut work = Vec::new();
        for id in due {
            let fired = shard
                .groups()
                .groups
                .borrow_mut()
                .get_mut(&id)
                .map(|g| (g.tick(now), g.next_deadline()));
            let Some((fx, next)) = fired else {
                continue; // deleted since it was filed
            };
            shard.groups().deadlines.borrow_mut().set(&id, next);
            if !fx.is_empty() {
                work.push((id, fx));
            }
        }
        if !work.is_empty() {
            // The groups changed at their deadline; answers and records follow on their own task, so
            // that a slow write does not hold back the next deadline.
            let shard = shard.clone();
            H::spawn_detached(async move {
                let runs = work.into_iter().map(|(id, fx)| {
                    let shard = &shard;
                    async move {
                        let partition = partition_of(shard, &id);
                        run_effects(shard, &id, partition, fx).await;
                    }
                });
                futures::future::join_all(runs).await;
            });
        }
        if now >= next_retention {
            next_retention = now + retention_every;
            let shard = shard.clone();
            H::spawn_detached(async move { expire_offsets(&shard, now).await });
        }
        let earliest = shard.groups().deadlines.borrow().earliest();
        let wake_at = earliest.map_or(next_retention, |d| d.min(next_retention));
        // At least a millisecond: a timer re-armed for the current millisecond fires on the next round.
        let wait_ms = (wake_at - now_ms()).max(1) as u64;
        shard.groups().deadlines.borrow_mut().sleep_until(wake_at);
        let alarm =
            futures::future::poll_fn(|cx| shard.groups().deadlines.borrow_mut().poll_alarm(cx));
        let sleep = H::sleep(Duration::from_millis(wait_ms));
        futures::future::select(Box::pin(alarm), Box::pin(sleep)).await;
        shard.groups().deadlines.borrow_mut().awake();
    }
}

fn partition_of<H: GroupHost>(shard: &Rc<H>, group_id: &str) -> i32 {
    let n = shard
        .topic_partitions(OFFSETS_TOPIC)
        .unwrap_or(shard.group_config().offsets_topic_partitions);
    coordinator_partition(group_id, n)
}

/// Offset retention: drops expired offsets of empty groups, and empty groups left without offsets.
/// The tombstones are staged like any offset write: the offsets disappear once they are durable.
async fn expire_offsets<H: GroupHost>(shard: &Rc<H>, now: i64) {
    let retention = shard.group_config().offsets_retention_ms;
    // (group, expired offsets, drop the group too)
    type Expiry = (String, Vec<(String, i32)>, bool);
    let mut work: Vec<Expiry> = Vec::new();
    {
        let staged = shard.groups().staged.borrow();
        for (id, g) in shard.groups().groups.borrow().iter() {
            if staged.has(id) {
                continue; // writes on their way: look again at the next check
            }
            let expired = g.expired_offsets(now, retention);
            let drop_group =
                g.state() == GroupState::Empty && g.is_empty() && g.offsets.len() == expired.len();
            if !expired.is_empty() || drop_group {
                work.push((id.clone(), expired, drop_group));
            }
        }
    }
    let mut writes = Vec::new();
    for (id, expired, drop_group) in work {
        let partition = partition_of(shard, &id);
        tracing::info!(group = %id, offsets = expired.len(), dropped = drop_group, "offset retention");
        let mut records: StagedRecords = expired
            .into_iter()
            .map(|(t, p)| {
                let key = recs::offset_key(&id, &t, p);
                let w = Write::Offset {
                    topic: t,
                    partition: p,
                    value: None,
                };
                ((key, None), w)
            })
            .collect();
        if drop_group {
            records.push(((recs::group_key(&id), None), Write::Group));
        }
        // Appended now, awaited together below.
        writes.push(async move {
            let _ = write_staged(shard, partition, &id, records).await;
        });
    }
    futures::future::join_all(writes).await;
}

/// Replays a `__consumer_offsets` partition this core just opened: rebuilds its groups and offsets.
pub async fn load_partition<H: GroupHost>(shard: &Rc<H>, partition: i32, part: Rc<Partition>) {
    let mut offsets: BTreeMap<(String, String, i32), Option<OffsetValue>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Option<recs::GroupValue>> = BTreeMap::new();
    let mut txn_pending: HashMap<i64, Vec<TxnOffset>> = HashMap::new();
    let mut records = 0usize;
    let replayed = part
        .replay_batches(crate::limits::COORDINATOR_LOAD_WINDOW_BYTES, |batch, h| {
            if h.is_control() {
                // The end of a transaction: its offsets become committed, or are dropped.
                let pending = txn_pending.remove(&h.producer_id).unwrap_or_default();
                if crate::records::parse_end_txn_marker(batch, h).is_some_and(|m| m.commit) {
                    for (g, t, p, v) in pending {
                        offsets.insert((g, t, p), Some(v));
                    }
                }
                return;
            }
            recs::for_each_record(batch, |k, v| {
                records += 1;
                match recs::decode(k, v) {
                    Some(OffsetsRecord::Offset {
                        group,
                        topic,
                        partition,
                        value,
                    }) => {
                        if h.is_transactional() {
                            if let Some(v) = value {
                                txn_pending
                                    .entry(h.producer_id)
                                    .or_default()
                                    .push((group, topic, partition, v));
                            }
                        } else {
                            offsets.insert((group, topic, partition), value);
                        }
                    }
                    Some(OffsetsRecord::Group { group, value }) => {
                        groups.insert(group, value);
                    }
                    None => {}
                }
            });
        })
        .await;
    if let Err(e) = replayed {
        tracing::error!(partition, error = %e, "reading __consumer_offsets failed");
    }
    // Transactions still open when the log ends wait for their marker.
    for (pid, list) in txn_pending {
        shard
            .groups()
            .txn_offsets
            .borrow_mut()
            .insert((partition, pid), list);
    }
    let now = now_ms();
    let mut loaded: HashMap<String, Group> = HashMap::new();
    for (id, value) in groups {
        if let Some(v) = value {
            let mut g = Group::new(&id, now);
            g.restore(v, now);
            loaded.insert(id, g);
        }
    }
    for ((group, topic, p), value) in offsets {
        if let Some(v) = value {
            loaded
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now))
                .offsets
                .insert((topic, p), v);
        }
    }
    tracing::info!(
        partition,
        records,
        groups = loaded.len(),
        "loaded __consumer_offsets partition"
    );
    let ids: Vec<String> = loaded.keys().cloned().collect();
    shard.groups().groups.borrow_mut().extend(loaded);
    for id in &ids {
        refile(shard, id);
    }
    shard.groups().loaded.borrow_mut().insert(partition);
    ensure_timers(shard);
}

/// Runs `f` on the group (created if missing and `create`), then its effects.
fn with_group<R, H: GroupHost>(
    shard: &Rc<H>,
    group_id: &str,
    create: bool,
    f: impl FnOnce(&mut Group) -> R,
) -> Option<R> {
    let mut groups = shard.groups().groups.borrow_mut();
    match groups.get_mut(group_id) {
        // A group whose deletion is on its way is gone for the requests after it; one that creates
        // the group gets a new one, which keeps the applied offsets until the staged tombstones apply.
        Some(g) if g.state() == GroupState::Dead && create => {
            let mut fresh = Group::new(group_id, now_ms());
            fresh.offsets = std::mem::take(&mut g.offsets);
            *g = fresh;
        }
        Some(_) => {}
        None if create => {
            groups.insert(group_id.to_string(), Group::new(group_id, now_ms()));
        }
        None => return None,
    }
    Some(f(groups.get_mut(group_id).expect("present")))
}

/// Whether the group exists for requests (a `Dead` group is being deleted).
fn group_exists<H: GroupHost>(shard: &Rc<H>, group_id: &str) -> bool {
    shard
        .groups()
        .groups
        .borrow()
        .get(group_id)
        .is_some_and(|g| g.state() != GroupState::Dead)
}

pub async fn join<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    p: JoinParams,
) -> JoinResult {
    if let Err(code) = partition_ready(&shard, partition) {
        return JoinResult::error(code, &p.member_id);
    }
    ensure_timers(&shard);
    let cfg = shard.group_config().clone();
    let (reply, fx) =
        with_group(&shard, &group_id, true, |g| g.join(p, now_ms(), &cfg)).expect("created");
    refile(&shard, &group_id);
    match reply {
        Reply::Now(r) => {
            run_effects(&shard, &group_id, partition, fx).await;
            r
        }
        Reply::Wait(member_id) => {
            let (tx, rx) = oneshot::channel();
            shard
                .groups()
                .joins
                .borrow_mut()
                .insert((group_id.clone(), member_id.clone()), tx);
            run_effects(&shard, &group_id, partition, fx).await;
            rx.await
                .unwrap_or_else(|_| JoinResult::error(errors::REBALANCE_IN_PROGRESS, &member_id))
        }
    }
}

pub async fn sync<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    p: SyncParams,
) -> SyncResult {
    if let Err(code) = partition_ready(&shard, partition) {
        return SyncResult::error(code);
    }
    let Some((reply, fx)) = with_group(&shard, &group_id, false, |g| g.sync(p, now_ms())) else {
        return SyncResult::error(errors::UNKNOWN_MEMBER_ID);
    };
    refile(&shard, &group_id);
    match reply {
        Reply::Now(r) => {
            run_effects(&shard, &group_id, partition, fx).await;
            r
        }
        Reply::Wait(member_id) => {
            let (tx, rx) = oneshot::channel();
            shard
                .groups()
                .syncs
                .borrow_mut()
                .insert((group_id.clone(), member_id), tx);
            run_effects(&shard, &group_id, partition, fx).await;
            rx.await
                .unwrap_or_else(|_| SyncResult::error(errors::REBALANCE_IN_PROGRESS))
        }
    }
}

pub async fn heartbeat<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
) -> i16 {
    if let Err(code) = partition_ready(&shard, partition) {
        return code;
    }
    let code = with_group(&shard, &group_id, false, |g| {
        g.heartbeat(&member_id, instance_id.as_deref(), generation, now_ms())
    })
    .unwrap_or(errors::UNKNOWN_MEMBER_ID);
    refile_member(&shard, &group_id, &member_id);
    code
}

/// LeaveGroup: `Err` is a group-level error, else one code per member.
pub async fn leave<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    who: Vec<LeaveParams>,
) -> Result<Vec<i16>, i16> {
    partition_ready(&shard, partition)?;
    let (codes, fx) = with_group(&shard, &group_id, false, |g| g.leave(&who, now_ms()))
        .unwrap_or_else(|| (vec![errors::UNKNOWN_MEMBER_ID; who.len()], Vec::new()));
    refile(&shard, &group_id);
    run_effects(&shard, &group_id, partition, fx).await;
    Ok(codes)
}

/// The record of one committed offset and its value; `None` if its metadata is longer than
/// `offset.metadata.max.bytes` (OFFSET_METADATA_TOO_LARGE).
fn offset_record(
    group_id: &str,
    topic: &str,
    p: &CommitPartition,
    now: i64,
) -> Option<(Record, OffsetValue)> {
    let metadata = p.metadata.clone().unwrap_or_default();
    if metadata.len() > OFFSET_METADATA_BYTES_MAX {
        return None;
    }
    let v = OffsetValue {
        offset: p.offset,
        leader_epoch: p.leader_epoch,
        metadata,
        commit_timestamp_ms: now,
    };
    let record = (
        recs::offset_key(group_id, topic, p.partition),
        Some(recs::offset_value(&v)),
    );
    Some((record, v))
}

/// OffsetCommit: one code per partition, in request order, acknowledged when durable.
///
/// Validation, append and staging run before the first await (request order); the offsets become
/// visible once durable, in log order (see [`super::staged`]).
pub async fn commit<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    who: CommitIdentity,
    topics: Vec<(String, Vec<CommitPartition>)>,
) -> Vec<Vec<i16>> {
    let all = |code: i16| -> Vec<Vec<i16>> {
        topics.iter().map(|(_, ps)| vec![code; ps.len()]).collect()
    };
    if let Err(code) = partition_ready(&shard, partition) {
        return all(code);
    }
    let now = now_ms();
    let exists = group_exists(&shard, &group_id);
    let code = if !exists && who.generation >= 0 {
        if who.version >= 9 {
            errors::GROUP_ID_NOT_FOUND
        } else {
            errors::ILLEGAL_GENERATION
        }
    } else {
        with_group(&shard, &group_id, true, |g| {
            g.validate_offset_commit(
                who.generation,
                &who.member_id,
                who.instance_id.as_deref(),
                now,
            )
        })
        .expect("created")
    };
    if code != errors::NONE {
        return all(code);
    }
    refile_member(&shard, &group_id, &who.member_id);
    let mut writes = Vec::new();
    let codes: Vec<Vec<i16>> = topics
        .iter()
        .map(|(topic, ps)| {
            ps.iter()
                .map(|p| {
                    let Some((record, v)) = offset_record(&group_id, topic, p, now) else {
                        return errors::OFFSET_METADATA_TOO_LARGE;
                    };
                    let w = Write::Offset {
                        topic: topic.clone(),
                        partition: p.partition,
                        value: Some(v),
                    };
                    writes.push((record, w));
                    errors::NONE
                })
                .collect()
        })
        .collect();
    if let Err(code) = write_staged(&shard, partition, &group_id, writes).await {
        if !exists {
            forget_if_unused(&shard, &group_id);
        }
        return codes
            .into_iter()
            .map(|ps| {
                ps.into_iter()
                    .map(|c| if c == errors::NONE { code } else { c })
                    .collect()
            })
            .collect();
    }
    codes
}

/// Drops a group this request created if nothing made it real: no member, no offset, nothing staged
/// (a first commit that failed must not leave an empty group behind).
fn forget_if_unused<H: GroupHost>(shard: &Rc<H>, group_id: &str) {
    if shard.groups().staged.borrow().has(group_id) {
        return;
    }
    let mut groups = shard.groups().groups.borrow_mut();
    let unused = groups
        .get(group_id)
        .is_some_and(|g| g.state() == GroupState::Empty && g.is_empty() && g.offsets.is_empty());
    if unused {
        groups.remove(group_id);
    }
}

/// OffsetFetch of one group. `topics == None` asks for every committed offset.
///
/// The answer is taken on arrival, from the applied offsets with the staged writes laid over them (the
/// mutations that arrived before it, and no later one), and returned once those writes are durable. If
/// they fail, it is taken again from the durable state.
pub async fn fetch_offsets<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    partition_ready(&shard, partition)?;
    if require_stable {
        // An offset an ongoing transaction will change is not answered (Kafka: the client retries).
        let mut answer = read_offsets(&shard, &group_id, topics.as_ref(), true);
        for (t, ps) in &mut answer {
            for o in ps.iter_mut() {
                if txn_offset_pending(&shard, &group_id, t, o.0) {
                    *o = (o.0, -1, -1, String::new(), errors::UNSTABLE_OFFSET_COMMIT);
                }
            }
        }
        if answer
            .iter()
            .any(|(_, ps)| ps.iter().any(|o| o.4 != errors::NONE))
        {
            return Ok(answer);
        }
    }
    let staged_last = shard.groups().staged.borrow().last(&group_id);
    let answer = read_offsets(&shard, &group_id, topics.as_ref(), true);
    let Some(last) = staged_last else {
        return Ok(answer);
    };
    let part = shard
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(errors::NOT_COORDINATOR)?;
    match wait_durable(&part, partition, last).await {
        Ok(()) => {
            settle(&shard, &group_id, last + 1);
            Ok(answer)
        }
        Err(_) => Ok(read_offsets(&shard, &group_id, topics.as_ref(), false)),
    }
}

/// The group's offsets for `topics` (every one if `None`): the applied ones, with the staged writes
/// laid over them if `with_staged`.
fn read_offsets<H: GroupHost>(
    shard: &Rc<H>,
    group_id: &str,
    topics: Option<&Vec<(String, Vec<i32>)>>,
    with_staged: bool,
) -> Vec<(String, Vec<FetchedOffset>)> {
    let groups = shard.groups().groups.borrow();
    let mut view: BTreeMap<(String, i32), OffsetValue> = BTreeMap::new();
    if let Some(g) = groups.get(group_id) {
        match topics {
            Some(topics) => {
                for (t, ps) in topics {
                    for p in ps {
                        let key = (t.clone(), *p);
                        if let Some(v) = g.offsets.get(&key) {
                            view.insert(key, v.clone());
                        }
                    }
                }
            }
            None => view = g.offsets.clone(),
        }
    }
    if with_staged {
        shard.groups().staged.borrow().overlay(group_id, &mut view);
    }
    let lookup = |t: &str, p: i32| -> FetchedOffset {
        match view.get(&(t.to_string(), p)) {
            Some(o) => (
                p,
                o.offset,
                o.leader_epoch,
                o.metadata.clone(),
                errors::NONE,
            ),
            None => (p, -1, -1, String::new(), errors::NONE),
        }
    };
    match topics {
        Some(topics) => topics
            .iter()
            .map(|(t, ps)| (t.clone(), ps.iter().map(|p| lookup(t, *p)).collect()))
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
            for (t, p) in view.keys() {
                by_topic.entry(t.clone()).or_default().push(lookup(t, *p));
            }
            by_topic.into_iter().collect()
        }
    }
}

pub async fn describe<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
) -> GroupDescription {
    let dead = |error: i16| GroupDescription {
        error,
        state: GroupState::Dead.name(),
        protocol_type: String::new(),
        protocol: String::new(),
        members: Vec::new(),
    };
    if let Err(code) = partition_ready(&shard, partition) {
        return dead(code);
    }
    let groups = shard.groups().groups.borrow();
    let Some(g) = groups
        .get(&group_id)
        .filter(|g| g.state() != GroupState::Dead)
    else {
        return dead(errors::GROUP_ID_NOT_FOUND);
    };
    let stable = g.state() == GroupState::Stable;
    GroupDescription {
        error: errors::NONE,
        state: g.state().name(),
        protocol_type: g.protocol_type().unwrap_or_default().to_string(),
        protocol: if stable {
            g.protocol_name().unwrap_or_default().to_string()
        } else {
            String::new()
        },
        members: g
            .members()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    g.member_metadata(m)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect(),
    }
}

/// The groups of this core: (id, protocol type, state).
pub fn list<H: GroupHost>(shard: &Rc<H>) -> Vec<(String, String, &'static str)> {
    shard
        .groups()
        .groups
        .borrow()
        .values()
        .filter(|g| g.state() != GroupState::Dead)
        .map(|g| {
            (
                g.id.clone(),
                g.protocol_type().unwrap_or_default().to_string(),
                g.state().name(),
            )
        })
        .collect()
}

/// DeleteGroups of one group: the group is `Dead` at once (later requests see it deleted), its offsets
/// and the group itself go once the tombstones are durable; if they fail the group is `Empty` again.
pub async fn delete<H: GroupHost>(shard: Rc<H>, partition: i32, group_id: String) -> i16 {
    if let Err(code) = partition_ready(&shard, partition) {
        return code;
    }
    let (keys, was) = {
        let mut groups = shard.groups().groups.borrow_mut();
        let Some(g) = groups.get_mut(&group_id) else {
            return errors::GROUP_ID_NOT_FOUND;
        };
        let was = g.state_timestamp_ms;
        if let Err(code) = g.delete(now_ms()) {
            return code;
        }
        let next = g.next_deadline();
        shard.groups().deadlines.borrow_mut().set(&group_id, next);
        // Tombstones for the applied offsets and for those still on their way.
        let mut keys: BTreeSet<(String, i32)> = g.offsets.keys().cloned().collect();
        keys.extend(shard.groups().staged.borrow().offset_keys(&group_id));
        (keys, was)
    };
    let mut writes: StagedRecords = keys
        .into_iter()
        .map(|(t, p)| {
            let key = recs::offset_key(&group_id, &t, p);
            let w = Write::Offset {
                topic: t,
                partition: p,
                value: None,
            };
            ((key, None), w)
        })
        .collect();
    writes.push(((recs::group_key(&group_id), None), Write::Group));
    match write_staged(&shard, partition, &group_id, writes).await {
        Ok(()) => errors::NONE,
        Err(code) => {
            if let Some(g) = shard.groups().groups.borrow_mut().get_mut(&group_id) {
                g.undo_delete(was);
            }
            code
        }
    }
}

/// OffsetDelete: `Err` is a group-level error, else one code per partition. The offsets go once their
/// tombstones are durable.
pub async fn delete_offsets<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    topics: Vec<(String, Vec<i32>)>,
) -> Result<Vec<(String, Vec<(i32, i16)>)>, i16> {
    partition_ready(&shard, partition)?;
    let (answers, writes) = {
        let groups = shard.groups().groups.borrow();
        let Some(g) = groups
            .get(&group_id)
            .filter(|g| g.state() != GroupState::Dead)
        else {
            return Err(errors::GROUP_ID_NOT_FOUND);
        };
        if g.state() != GroupState::Empty && g.subscribed_topics().is_none() {
            return Err(errors::NON_EMPTY_GROUP);
        }
        let subscribed = g.subscribed_topics().unwrap_or_default();
        let staged: HashSet<(String, i32)> = shard
            .groups()
            .staged
            .borrow()
            .offset_keys(&group_id)
            .into_iter()
            .collect();
        let mut writes = Vec::new();
        let answers: Vec<(String, Vec<(i32, i16)>)> = topics
            .into_iter()
            .map(|(t, ps)| {
                let codes = ps
                    .into_iter()
                    .map(|p| {
                        if g.state() != GroupState::Empty && subscribed.contains(&t) {
                            return (p, errors::GROUP_SUBSCRIBED_TO_TOPIC);
                        }
                        let key = (t.clone(), p);
                        if g.offsets.contains_key(&key) || staged.contains(&key) {
                            let w = Write::Offset {
                                topic: t.clone(),
                                partition: p,
                                value: None,
                            };
                            writes.push(((recs::offset_key(&group_id, &t, p), None), w));
                        }
                        (p, errors::NONE)
                    })
                    .collect();
                (t, codes)
            })
            .collect();
        (answers, writes)
    };
    write_staged(&shard, partition, &group_id, writes).await?;
    Ok(answers)
}

/// TxnOffsetCommit: the offsets are written to the group's partition as a transactional batch of the
/// producer (Kafka's format) and kept aside until the transaction ends ([`complete_txn`]). One code per
/// partition, in request order, answered when durable. The caller verified that the group's partition
/// is in the producer's transaction.
pub async fn txn_commit<H: GroupHost>(
    shard: Rc<H>,
    partition: i32,
    group_id: String,
    producer: (i64, i16),
    who: CommitIdentity,
    topics: Vec<(String, Vec<CommitPartition>)>,
) -> Vec<Vec<i16>> {
    let all = |code: i16| -> Vec<Vec<i16>> {
        topics.iter().map(|(_, ps)| vec![code; ps.len()]).collect()
    };
    let part = match partition_ready(&shard, partition) {
        Ok(p) => p,
        Err(code) => return all(code),
    };
    let now = now_ms();
    // A producer that names no member (a client without group metadata) commits without checks, as
    // Kafka allows it; otherwise the member and generation are checked as for OffsetCommit.
    let anonymous = who.generation < 0 && who.member_id.is_empty() && who.instance_id.is_none();
    if !anonymous {
        let code = if !group_exists(&shard, &group_id) {
            errors::ILLEGAL_GENERATION
        } else {
            with_group(&shard, &group_id, false, |g| {
                g.validate_offset_commit(
                    who.generation,
                    &who.member_id,
                    who.instance_id.as_deref(),
                    now,
                )
            })
            .unwrap_or(errors::ILLEGAL_GENERATION)
        };
        if code != errors::NONE {
            return all(code);
        }
    }
    let mut records: Records = Vec::new();
    let mut kept: Vec<TxnOffset> = Vec::new();
    let codes: Vec<Vec<i16>> = topics
        .iter()
        .map(|(topic, ps)| {
            ps.iter()
                .map(|p| {
                    let Some((record, v)) = offset_record(&group_id, topic, p, now) else {
                        return errors::OFFSET_METADATA_TOO_LARGE;
                    };
                    records.push(record);
                    kept.push((group_id.clone(), topic.clone(), p.partition, v));
                    errors::NONE
                })
                .collect()
        })
        .collect();
    if records.is_empty() {
        return codes;
    }
    let refs: Vec<crate::records::KeyValue<'_>> = records
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let mut batch = crate::records::build_batch(&refs, now);
    crate::records::make_transactional(&mut batch, producer.0, producer.1);
    let written = match part.append(Bytes::from(batch)) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(partition, error = %e, "writing a transactional offset commit failed");
            let code = match e.code {
                errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE => {
                    errors::INVALID_COMMIT_OFFSET_SIZE
                }
                errors::INVALID_PRODUCER_EPOCH => errors::PRODUCER_FENCED,
                _ => errors::COORDINATOR_NOT_AVAILABLE,
            };
            return all(code);
        }
    };
    // Kept aside at once (log order); dropped again if the write does not become durable.
    let key = (partition, producer.0);
    let before = {
        let mut pending = shard.groups().txn_offsets.borrow_mut();
        let list = pending.entry(key).or_default();
        let before = list.len();
        list.extend(kept);
        before
    };
    if let Err(code) = wait_durable(&part, partition, written.last_offset).await {
        if let Some(list) = shard.groups().txn_offsets.borrow_mut().get_mut(&key) {
            list.truncate(before);
        }
        return all(code);
    }
    codes
}

/// The transaction of `producer_id` ended on `__consumer_offsets` partition `partition` (its marker is
/// durable): its offsets become the groups' committed offsets (COMMIT) or are dropped (ABORT).
pub fn complete_txn<H: GroupHost>(shard: &Rc<H>, partition: i32, producer_id: i64, commit: bool) {
    let Some(list) = shard
        .groups()
        .txn_offsets
        .borrow_mut()
        .remove(&(partition, producer_id))
    else {
        return;
    };
    if !commit {
        return;
    }
    let now = now_ms();
    let mut groups = shard.groups().groups.borrow_mut();
    for (group, topic, p, v) in list {
        groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(&group, now))
            .offsets
            .insert((topic, p), v);
    }
}

/// Whether an ongoing transaction holds an offset of `group_id` for this topic partition (OffsetFetch
/// with `require_stable` answers UNSTABLE_OFFSET_COMMIT for it).
pub fn txn_offset_pending<H: GroupHost>(
    shard: &Rc<H>,
    group_id: &str,
    topic: &str,
    partition: i32,
) -> bool {
    shard
        .groups()
        .txn_offsets
        .borrow()
        .values()
        .flatten()
        .any(|(g, t, p, _)| g == group_id && t == topic && *p == partition)
}
