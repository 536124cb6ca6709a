//! The per-core transaction coordinator: the transactional ids of the `__transaction_state` partitions
//! this core owns, their writes to that log, and the markers that end their transactions.
//!
//! Every function here runs on the core that owns the id's partition (handlers hop there with
//! `invoke_on`). A change is validated and marked pending in one synchronous step, written to the log,
//! and applied (and answered) once durable; while it is pending, other requests for the id get
//! CONCURRENT_TRANSACTIONS, as in Kafka.
//!
//! Ending a transaction (EndTxn, a fence by InitProducerId, a timeout): PrepareCommit/PrepareAbort is
//! written; then a COMMIT/ABORT marker is appended on every partition of the transaction, each on the
//! core that owns it (`invoke_on`), and waited durable; a marker on a `__consumer_offsets` partition also
//! makes the group coordinator apply (or drop) the transaction's offsets; then CompleteCommit/
//! CompleteAbort is written. EndTxn is answered after the complete record, so a client that commits and
//! then reads with `read_committed` sees its records (Kafka answers after the prepare record and writes
//! the markers afterwards). A restart finds a Prepare state in the log and writes the markers again
//! (markers are idempotent for the partitions: the second one ends nothing, and a marker of transaction
//! version 2 at the producer's current epoch with no transaction ongoing is accepted as a repeat).
//!
//! Transaction versions (see [`super::state`]): EndTxn v5+, Produce v12+ (its implicit add),
//! TxnOffsetCommit v5+ and AddPartitionsToTxn v4+ are transaction version 2, older versions 1; the
//! version of the transaction's last transition travels with its markers, and is written to the log.
//!
//! Fault model: a failed write answers a retriable coordinator error and leaves the id as it was; a
//! marker that cannot be written (I/O error) is retried every [`MARKER_RETRY_MS`] until it succeeds, the
//! partition is gone, or the broker stops (Kafka's marker channel also retries until then).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::records::{self as recs, TxnValue};
use super::state::{
    epoch_exhausted, supports_epoch_bump, EndStep, TxnMetadata, TxnState, NO_PRODUCER_ID, TV_0,
};
use super::TXN_TOPIC;
use crate::group::coordinator::GroupHost;
use crate::group::now_ms;
use crate::partition::Partition;
use crate::protocol::errors;

/// How long a marker that could not be written waits before the next try.
const MARKER_RETRY_MS: u64 = 100;

/// What the coordinator needs of the core it runs on (the shard implements it), so that this module
/// does not depend on the shard's internals.
pub trait TxnHost: GroupHost {
    /// This core's transaction state.
    fn txns(&self) -> &TxnCoordinator;
    /// The transaction settings (`transaction.*`).
    fn txn_config(&self) -> &crate::config::TxnConfig;
    /// A new producer id, from the core that allocates them.
    fn allocate_producer_id(
        self: &Rc<Self>,
    ) -> impl std::future::Future<Output = Result<i64, String>>;
    /// Appends a COMMIT/ABORT marker on the core that owns the partition ([`write_marker`] there) and
    /// waits until it is durable.
    fn write_marker_at(
        self: &Rc<Self>,
        topic: String,
        partition: i32,
        marker: Marker,
    ) -> impl std::future::Future<Output = Result<(), i16>>;
}

/// A COMMIT/ABORT marker the coordinator asks a partition to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    /// The transaction version of the transaction it ends: with 2 the partition requires the marker's
    /// epoch to be above the producer's (Kafka's `transactionVersion` of WriteTxnMarkers v2).
    pub transaction_version: i16,
}

/// Transaction state of one core. Owned by that core (a field of its `Shard`).
#[derive(Default)]
pub struct TxnCoordinator {
    txns: RefCell<HashMap<String, TxnMetadata>>,
    /// `__transaction_state` partitions of this core whose records have been replayed.
    loaded: RefCell<HashSet<i32>>,
    timers_started: Cell<bool>,
}

fn partition_ready<H: TxnHost>(shard: &Rc<H>, partition: i32) -> Result<Rc<Partition>, i16> {
    let Some(p) = shard.partition(TXN_TOPIC, partition) else {
        return Err(errors::NOT_COORDINATOR);
    };
    if !shard.txns().loaded.borrow().contains(&partition) {
        return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
    }
    Ok(p)
}

/// Appends `records` to the partition and waits until they are durable. Errors as Kafka's
/// `TransactionStateManager.appendTransactionToLog` maps them.
async fn persist(part: &Partition, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), i16> {
    let refs: Vec<crate::records::KeyValue<'_>> = records
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let batch = crate::records::build_batch(&refs, now_ms());
    let map = |code: i16| match code {
        errors::NOT_LEADER_OR_FOLLOWER => errors::NOT_COORDINATOR,
        errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE => errors::UNKNOWN_SERVER_ERROR,
        _ => errors::COORDINATOR_NOT_AVAILABLE,
    };
    let appended = part.append(Bytes::from(batch)).map_err(|e| {
        tracing::error!(error = %e, "writing to __transaction_state failed");
        map(e.code)
    })?;
    part.wait_durable(appended.last_offset).await.map_err(|e| {
        tracing::error!(error = %e, "syncing __transaction_state failed");
        map(e.code)
    })
}

/// Writes `next` as the id's new state; on success it replaces the id's metadata (not pending).
/// The id must have been marked pending by the caller; on failure it is un-marked and left as it was.
async fn write<H: TxnHost>(shard: &Rc<H>, part: &Partition, next: TxnMetadata) -> Result<(), i16> {
    let id = next.transactional_id.clone();
    let record = (recs::key(&id), Some(recs::value(&TxnValue::of(&next))));
    let result = persist(part, &[record]).await;
    let mut txns = shard.txns().txns.borrow_mut();
    match result {
        Ok(()) => {
            let mut applied = next;
            applied.pending = false;
            txns.insert(id, applied);
            Ok(())
        }
        Err(code) => {
            if let Some(m) = txns.get_mut(&id) {
                m.pending = false;
            }
            Err(code)
        }
    }
}

/// Marks the id pending and returns its metadata, or the error of `check`.
fn begin<H: TxnHost, R>(
    shard: &Rc<H>,
    id: &str,
    check: impl FnOnce(&TxnMetadata) -> Result<R, i16>,
) -> Result<(TxnMetadata, R), i16> {
    let mut txns = shard.txns().txns.borrow_mut();
    let m = txns
        .get_mut(id)
        .ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
    let r = check(m)?;
    m.pending = true;
    Ok((m.clone(), r))
}

fn unmark<H: TxnHost>(shard: &Rc<H>, id: &str) {
    if let Some(m) = shard.txns().txns.borrow_mut().get_mut(id) {
        m.pending = false;
    }
}

async fn allocate_producer_id<H: TxnHost>(shard: &Rc<H>) -> Result<i64, i16> {
    shard.allocate_producer_id().await.map_err(|e| {
        tracing::error!(error = %e, "allocating a producer id failed");
        errors::COORDINATOR_NOT_AVAILABLE
    })
}

/// InitProducerId with a transactional id (Kafka's `handleInitProducerId`): the id's producer id with
/// its epoch bumped, a new producer id for a new id or an exhausted epoch; an ongoing transaction is
/// fenced (aborted with a bumped epoch) and the client told to retry (CONCURRENT_TRANSACTIONS).
pub async fn init_producer_id<H: TxnHost>(
    shard: Rc<H>,
    partition: i32,
    id: String,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), i16> {
    let part = partition_ready(&shard, partition)?;
    if !shard.txns().txns.borrow().contains_key(&id) {
        let pid = allocate_producer_id(&shard).await?;
        shard
            .txns()
            .txns
            .borrow_mut()
            .entry(id.clone())
            .or_insert_with(|| TxnMetadata::new(&id, pid, timeout_ms, now_ms()));
    }
    enum Step {
        Bump(TxnMetadata),
        Rotate,
        Fence,
    }
    let now = now_ms();
    let (current, step) = begin(&shard, &id, |m| {
        if m.pending {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        if let Some((pid, epoch)) = expected {
            if !m.accepts_expected(pid, epoch) {
                return Err(errors::PRODUCER_FENCED);
            }
        }
        match m.state {
            TxnState::PrepareAbort | TxnState::PrepareCommit => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Empty | TxnState::CompleteAbort | TxnState::CompleteCommit => {
                if epoch_exhausted(m.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == m.producer_epoch)
                {
                    Ok(Step::Rotate)
                } else {
                    m.increment_epoch(timeout_ms, expected.map(|(_, e)| e), now)
                        .map(Step::Bump)
                }
            }
            TxnState::Ongoing => Ok(Step::Fence),
            TxnState::Dead | TxnState::PrepareEpochFence => Err(errors::CONCURRENT_TRANSACTIONS),
        }
    })?;
    let next = match step {
        Step::Bump(next) => next,
        Step::Rotate => match allocate_producer_id(&shard).await {
            Ok(pid) => current.rotate_producer_id(pid, timeout_ms, now, expected.is_some()),
            Err(code) => {
                unmark(&shard, &id);
                return Err(code);
            }
        },
        Step::Fence => {
            let next_id = if epoch_exhausted(current.producer_epoch) {
                match allocate_producer_id(&shard).await {
                    Ok(pid) => pid,
                    Err(code) => {
                        unmark(&shard, &id);
                        return Err(code);
                    }
                }
            } else {
                NO_PRODUCER_ID
            };
            let fenced = current.fence_and_abort(next_id, now);
            tracing::info!(transactional_id = %id, "fencing the ongoing transaction of a new producer instance");
            end_prepared(&shard, &part, fenced).await?;
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
    };
    let answer = (next.producer_id, next.producer_epoch);
    write(&shard, &part, next).await?;
    tracing::info!(transactional_id = %id, producer_id = answer.0, epoch = answer.1, partition, "initialized transactional id");
    Ok(answer)
}

/// AddPartitionsToTxn / AddOffsetsToTxn, and the implicit add of a transactional Produce v12+ or
/// TxnOffsetCommit v5+: the partitions join the ongoing transaction, recorded with the client's
/// transaction version `client_tv`.
#[allow(clippy::too_many_arguments)]
pub async fn add_partitions<H: TxnHost>(
    shard: Rc<H>,
    partition: i32,
    id: String,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    client_tv: i16,
) -> i16 {
    let part = match partition_ready(&shard, partition) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let now = now_ms();
    let begun = begin(&shard, &id, |m| {
        match m.check_add(producer_id, epoch, &partitions)? {
            true => Ok(m.add_partitions(&partitions, client_tv, now)),
            false => Err(errors::NONE),
        }
    });
    match begun {
        Ok((_, next)) => write(&shard, &part, next)
            .await
            .err()
            .unwrap_or(errors::NONE),
        Err(code) => code,
    }
}

/// Whether all `partitions` are already in the id's ongoing transaction of this producer id and epoch,
/// whatever write of the id is pending. The implicit add of a transactional Produce v12+ asks this
/// first: Kafka's partition leader skips the coordinator for a producer whose transaction is already
/// ongoing on the partition (`hasOngoingTransaction`), so such a produce never waits for another add.
pub fn in_ongoing_txn<H: TxnHost>(
    shard: &Rc<H>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> bool {
    shard.txns().txns.borrow().get(id).is_some_and(|m| {
        m.producer_id == producer_id
            && m.producer_epoch == epoch
            && m.state == TxnState::Ongoing
            && partitions.iter().all(|p| m.partitions.contains(p))
    })
}

/// The verify-only form (AddPartitionsToTxn v4+, and the Produce and TxnOffsetCommit checks of KIP-890
/// part 1): per partition, NONE if it is in the id's ongoing transaction with this producer id and
/// epoch, else `missing`.
pub fn verify<H: TxnHost>(
    shard: &Rc<H>,
    partition: i32,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    missing: i16,
) -> Vec<i16> {
    let all = |code| vec![code; partitions.len()];
    if let Err(code) = partition_ready(shard, partition) {
        return all(code);
    }
    let txns = shard.txns().txns.borrow();
    let Some(m) = txns.get(id) else {
        return all(errors::INVALID_PRODUCER_ID_MAPPING);
    };
    if m.producer_id != producer_id {
        return all(errors::INVALID_PRODUCER_ID_MAPPING);
    }
    if m.producer_epoch != epoch {
        return all(errors::PRODUCER_FENCED);
    }
    partitions
        .iter()
        .map(|p| {
            if m.state == TxnState::Ongoing && m.partitions.contains(p) {
                errors::NONE
            } else {
                missing
            }
        })
        .collect()
}

/// EndTxn from a client (Kafka's `handleEndTransaction`), of transaction version `client_tv` (2 for
/// EndTxn v5+). `Ok` carries the producer id and epoch EndTxn v5 answers: with transaction version 2 those
/// the transaction completed with (the epoch bumped, or a new producer id at epoch 0), for a retry the
/// current ones.
#[allow(clippy::too_many_arguments)]
pub async fn end_txn<H: TxnHost>(
    shard: Rc<H>,
    partition: i32,
    id: String,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    client_tv: i16,
) -> Result<(i64, i16), i16> {
    let part = partition_ready(&shard, partition)?;
    if !supports_epoch_bump(client_tv) {
        let now = now_ms();
        let begun = begin(&shard, &id, |m| {
            match m.check_end(producer_id, epoch, commit, true)? {
                true => Ok(m.prepare_end(commit, TV_0, NO_PRODUCER_ID, false, now)),
                false => Err(errors::NONE),
            }
        });
        return match begun {
            Ok((_, prepared)) => end_prepared(&shard, &part, prepared)
                .await
                .map(|done| (done.producer_id, done.producer_epoch)),
            Err(errors::NONE) => Ok((producer_id, epoch)),
            Err(code) => Err(code),
        };
    }
    // An exhausted epoch ends the transaction with a new producer id, allocated (on another core) before
    // the checks; an id allocated for a request that then fails is simply never used.
    let exhausted = shard
        .txns()
        .txns
        .borrow()
        .get(&id)
        .is_some_and(|m| epoch_exhausted(m.producer_epoch));
    let next_id = if exhausted {
        allocate_producer_id(&shard).await?
    } else {
        NO_PRODUCER_ID
    };
    let now = now_ms();
    let begun = begin(&shard, &id, |m| {
        match m.check_end_v2(producer_id, epoch, commit)? {
            EndStep::Prepare { no_partition_added } => {
                let next = if epoch_exhausted(m.producer_epoch) {
                    if next_id == NO_PRODUCER_ID {
                        // Exhausted since the look above: the client retries.
                        return Err(errors::CONCURRENT_TRANSACTIONS);
                    }
                    next_id
                } else {
                    NO_PRODUCER_ID
                };
                Ok(Ok(m.prepare_end(
                    commit,
                    client_tv,
                    next,
                    no_partition_added,
                    now,
                )))
            }
            EndStep::Retry => Ok(Err((m.producer_id, m.producer_epoch))),
        }
    });
    match begun {
        Ok((_, Ok(prepared))) => {
            let done = end_prepared(&shard, &part, prepared).await?;
            Ok((done.producer_id, done.producer_epoch))
        }
        Ok((_, Err(current))) => {
            unmark(&shard, &id);
            Ok(current)
        }
        Err(code) => Err(code),
    }
}

/// Writes a Prepare state (the id is pending), then the markers, then the Complete state, which it
/// returns.
async fn end_prepared<H: TxnHost>(
    shard: &Rc<H>,
    part: &Partition,
    prepared: TxnMetadata,
) -> Result<TxnMetadata, i16> {
    write(shard, part, prepared.clone()).await?;
    complete(shard, part, prepared).await
}

/// Writes the markers of a prepared transaction and then its Complete state, which it returns.
async fn complete<H: TxnHost>(
    shard: &Rc<H>,
    part: &Partition,
    prepared: TxnMetadata,
) -> Result<TxnMetadata, i16> {
    let id = prepared.transactional_id.clone();
    if let Some(m) = shard.txns().txns.borrow_mut().get_mut(&id) {
        m.pending = true;
    }
    write_markers(shard, &prepared, part.leader_epoch()).await;
    let done = prepared.complete(now_ms());
    write(shard, part, done.clone()).await?;
    Ok(done)
}

/// Appends the COMMIT/ABORT marker of `m` on every partition of its transaction, each on its owning
/// core, and waits until each is durable. Partitions that no longer exist are skipped.
async fn write_markers<H: TxnHost>(shard: &Rc<H>, m: &TxnMetadata, coordinator_epoch: i32) {
    let marker = Marker {
        producer_id: m.producer_id,
        epoch: m.producer_epoch,
        coordinator_epoch,
        commit: m.state == TxnState::PrepareCommit,
        transaction_version: m.client_tv,
    };
    let writes = m.partitions.iter().map(|(topic, p)| {
        let (topic, p) = (topic.clone(), *p);
        async move {
            loop {
                if shard.topic_partitions(&topic).is_none() {
                    return; // deleted: nothing to end
                }
                // Cross-core hop to the partition's owner, which appends the marker.
                let result = shard.write_marker_at(topic.clone(), p, marker).await;
                match result {
                    Ok(()) => return,
                    Err(code) if shard.stopping() => {
                        tracing::warn!(topic = %topic, partition = p, code, "transaction marker not written before stop");
                        return;
                    }
                    Err(code) => {
                        tracing::warn!(topic = %topic, partition = p, code, "transaction marker failed, retrying");
                        H::sleep(Duration::from_millis(MARKER_RETRY_MS)).await;
                    }
                }
            }
        }
    });
    futures::future::join_all(writes).await;
}

/// On the partition's owner: appends the marker and waits until it is durable. Also the body of the
/// WriteTxnMarkers API (Kafka's inter-broker request, which `kafka-transactions abort` sends too).
pub async fn write_marker<H: TxnHost>(
    shard: Rc<H>,
    topic: String,
    partition: i32,
    marker: Marker,
) -> Result<(), i16> {
    let Some(part) = shard.partition(&topic, partition) else {
        // Gone since (deleted, or not open yet on a restart: then the topic check above retries).
        return if shard
            .topic_partitions(&topic)
            .is_some_and(|n| partition < n)
        {
            Err(errors::NOT_LEADER_OR_FOLLOWER)
        } else {
            Ok(())
        };
    };
    let appended = part
        .append_marker(
            marker.producer_id,
            marker.epoch,
            marker.coordinator_epoch,
            marker.commit,
            marker.transaction_version,
        )
        .map_err(|e| e.code)?;
    part.wait_durable(appended.last_offset)
        .await
        .map_err(|e| e.code)?;
    if topic == crate::group::OFFSETS_TOPIC {
        crate::group::coordinator::complete_txn(
            &shard,
            partition,
            marker.producer_id,
            marker.commit,
        );
    }
    Ok(())
}

/// A transactional id as DescribeTransactions shows it.
pub fn describe<H: TxnHost>(shard: &Rc<H>, partition: i32, id: &str) -> Result<TxnMetadata, i16> {
    partition_ready(shard, partition)?;
    shard
        .txns()
        .txns
        .borrow()
        .get(id)
        .filter(|m| m.state != TxnState::Dead)
        .cloned()
        .ok_or(errors::TRANSACTIONAL_ID_NOT_FOUND)
}

/// Every transactional id of this core's loaded partitions: (id, producer id, state, start time).
pub fn list<H: TxnHost>(shard: &Rc<H>) -> Vec<(String, i64, TxnState, i64)> {
    shard
        .txns()
        .txns
        .borrow()
        .values()
        .filter(|m| m.state != TxnState::Dead)
        .map(|m| {
            (
                m.transactional_id.clone(),
                m.producer_id,
                m.state,
                m.start_ms,
            )
        })
        .collect()
}

/// Replays a `__transaction_state` partition this core just opened, and finishes the transactions the
/// log left prepared.
pub async fn load_partition<H: TxnHost>(shard: &Rc<H>, partition: i32, part: Rc<Partition>) {
    let mut latest: BTreeMap<String, Option<TxnValue>> = BTreeMap::new();
    let mut records = 0usize;
    let replayed = part
        .replay_batches(crate::limits::COORDINATOR_LOAD_WINDOW_BYTES, |batch, _| {
            crate::group::records::for_each_record(batch, |k, v| {
                records += 1;
                match recs::decode(k, v) {
                    Some(r) => {
                        latest.insert(r.transactional_id, r.value);
                    }
                    None => tracing::warn!(
                        partition,
                        "skipping an unreadable __transaction_state record"
                    ),
                }
            });
        })
        .await;
    if let Err(e) = replayed {
        tracing::error!(partition, error = %e, "reading __transaction_state failed");
    }
    let mut unfinished = Vec::new();
    {
        let mut txns = shard.txns().txns.borrow_mut();
        for (id, value) in latest {
            let Some(v) = value else { continue };
            let m = TxnMetadata::restore(&id, &v);
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                unfinished.push(m.clone());
            }
            txns.insert(id, m);
        }
    }
    tracing::info!(
        partition,
        records,
        unfinished = unfinished.len(),
        "loaded __transaction_state partition"
    );
    shard.txns().loaded.borrow_mut().insert(partition);
    ensure_timers(shard);
    for m in unfinished {
        let shard = shard.clone();
        let part = part.clone();
        H::spawn_detached(async move {
            let id = m.transactional_id.clone();
            if let Err(code) = complete(&shard, &part, m).await {
                tracing::error!(transactional_id = %id, code, "completing a prepared transaction failed");
            }
        });
    }
}

fn ensure_timers<H: TxnHost>(shard: &Rc<H>) {
    if shard.txns().timers_started.replace(true) {
        return;
    }
    H::spawn_detached(run_timers(shard.clone()));
}

/// Every `transaction.abort.timed.out.transaction.cleanup.interval.ms`: aborts transactions past their
/// timeout (fencing the producer's epoch, as Kafka does). Every
/// `transaction.remove.expired.transaction.cleanup.interval.ms`: forgets ids idle for
/// `transactional.id.expiration.ms` (a tombstone in the log).
async fn run_timers<H: TxnHost>(shard: Rc<H>) {
    let cfg = shard.txn_config().clone();
    let mut next_expiry = now_ms() + cfg.remove_expired_interval_ms as i64;
    while !shard.stopping() {
        H::sleep(Duration::from_millis(cfg.abort_timed_out_interval_ms)).await;
        let now = now_ms();
        abort_timed_out(&shard, now);
        if now >= next_expiry {
            next_expiry = now + cfg.remove_expired_interval_ms as i64;
            expire_ids(&shard, now, cfg.id_expiration_ms).await;
        }
    }
}

fn abort_timed_out<H: TxnHost>(shard: &Rc<H>, now: i64) {
    let due: Vec<String> = shard
        .txns()
        .txns
        .borrow()
        .values()
        .filter(|m| !m.pending && m.timed_out(now))
        .map(|m| m.transactional_id.clone())
        .collect();
    for id in due {
        let partition = super::partition_for(shard, &id);
        let Ok(part) = partition_ready(shard, partition) else {
            continue;
        };
        let Ok((current, ())) = begin(shard, &id, |m| {
            if m.pending || !m.timed_out(now) {
                Err(errors::CONCURRENT_TRANSACTIONS)
            } else {
                Ok(())
            }
        }) else {
            continue;
        };
        tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
        let shard = shard.clone();
        H::spawn_detached(async move {
            let next_id = if epoch_exhausted(current.producer_epoch) {
                match allocate_producer_id(&shard).await {
                    Ok(pid) => pid,
                    Err(_) => {
                        unmark(&shard, &id); // the next round tries again
                        return;
                    }
                }
            } else {
                NO_PRODUCER_ID
            };
            let fenced = current.fence_and_abort(next_id, now);
            if let Err(code) = end_prepared(&shard, &part, fenced).await {
                tracing::warn!(transactional_id = %id, code, "aborting a timed-out transaction failed");
            }
        });
    }
}

async fn expire_ids<H: TxnHost>(shard: &Rc<H>, now: i64, expiration_ms: i64) {
    let due: Vec<(String, i32)> = shard
        .txns()
        .txns
        .borrow()
        .values()
        .filter(|m| {
            !m.pending
                && m.state.expiration_allowed()
                && m.last_update_ms.saturating_add(expiration_ms) <= now
        })
        .map(|m| {
            (
                m.transactional_id.clone(),
                super::partition_for(shard, &m.transactional_id),
            )
        })
        .collect();
    for (id, partition) in due {
        let Ok(part) = partition_ready(shard, partition) else {
            continue;
        };
        if begin(shard, &id, |m| if m.pending { Err(0) } else { Ok(()) }).is_err() {
            continue;
        }
        match persist(&part, &[(recs::key(&id), None)]).await {
            Ok(()) => {
                tracing::info!(transactional_id = %id, "transactional id expired");
                shard.txns().txns.borrow_mut().remove(&id);
            }
            Err(_) => unmark(shard, &id),
        }
    }
}
