//! Transaction APIs: InitProducerId (with a transactional id), AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn, TxnOffsetCommit, DescribeTransactions, ListTransactions; FindCoordinator's key type 1 and the
//! Produce check of transactional batches use [`ensure_txn_topic`] and [`verify_partitions`].
//!
//! Each handler decodes the request into plain values, finds the id's `__transaction_state` partition and
//! hops to the core that owns it (`invoke_on(owner, ...)`), where [`crate::txn::coordinator`] holds the
//! id. This broker coordinates every transactional id.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::coordinator::{CommitIdentity, CommitPartition};
use crate::protocol::errors;
use crate::shard::Shard;
use crate::txn::state::{TV_0, TV_2};
use crate::txn::{self, TXN_TOPIC};

/// The id's partition and the core that owns it.
fn locate(shard: &Rc<Shard>, id: &str) -> Result<(usize, i32), i16> {
    let topic = shard.topic(TXN_TOPIC).ok_or(errors::NOT_COORDINATOR)?;
    let partition = txn::partition_for(shard, id);
    // Cluster mode: the coordinator is the broker leading the id's partition.
    if topic.leader(partition, shard.config.node_id) != shard.config.node_id {
        return Err(errors::NOT_COORDINATOR);
    }
    Ok((shard.owner_of(&topic, partition), partition))
}

/// Cluster mode: the broker coordinating `id` when it is another one (the leader of the id's
/// `__transaction_state` partition; -1 while it has none).
fn coordinator_elsewhere(shard: &Rc<Shard>, id: &str) -> Option<i32> {
    let topic = shard.topic(TXN_TOPIC)?;
    let leader = topic.leader(txn::partition_for(shard, id), shard.config.node_id);
    (leader != shard.config.node_id).then_some(leader)
}

/// Asks the coordinator on broker `coordinator` to verify or add the request's partitions (an
/// inter-broker AddPartitionsToTxn, as Kafka's `AddPartitionsToTxnManager` sends it): one code per
/// partition.
async fn add_or_verify_remote(
    shard: &Rc<Shard>,
    coordinator: i32,
    req: crate::protocol::inter_broker::AddPartitionsRequest<'_>,
) -> Vec<i16> {
    let (key, version, flexible, body) = req.encode();
    match shard
        .call_peer(coordinator, key, version, flexible, body)
        .await
    {
        Ok(resp) => req.results(resp),
        // Retriable for the producer (mapped by the caller as Kafka's ReplicaManager maps them).
        Err(_) => vec![errors::COORDINATOR_NOT_AVAILABLE; req.partitions.len()],
    }
}

/// The inter-broker AddPartitionsToTxn version: 5 (missing partitions answer TRANSACTION_ABORTABLE,
/// and the implicit add of transaction version 2), else 4.
fn add_partitions_version(verify_only: bool, missing: i16) -> i16 {
    if missing == errors::TRANSACTION_ABORTABLE || !verify_only {
        5
    } else {
        4
    }
}

/// Kafka answers PRODUCER_FENCED as INVALID_PRODUCER_EPOCH to versions that predate it.
fn fenced_for(version: i16, since: i16, code: i16) -> i16 {
    if code == errors::PRODUCER_FENCED && version < since {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// InitProducerId with a transactional id (the admin handler passes it here).
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    req: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let code = if id.is_empty() {
        Err(errors::INVALID_REQUEST)
    } else if req.transaction_timeout_ms <= 0
        || req.transaction_timeout_ms > shard.config.txn.max_timeout_ms
    {
        Err(errors::INVALID_TRANSACTION_TIMEOUT)
    } else if (req.producer_id.0 == -1) != (req.producer_epoch == -1) {
        Err(errors::INVALID_REQUEST)
    } else {
        match locate(shard, &id) {
            Err(code) => Err(code),
            Ok((owner, partition)) => {
                let timeout = req.transaction_timeout_ms;
                let expected =
                    (req.producer_id.0 != -1).then_some((req.producer_id.0, req.producer_epoch));
                // Cross-core hop to the core coordinating the id.
                shard
                    .invoke_on(owner, move |s| {
                        txn::coordinator::init_producer_id(s, partition, id, timeout, expected)
                    })
                    .await
            }
        }
    };
    match code {
        Ok((pid, epoch)) => {
            resp.producer_id = ProducerId(pid);
            resp.producer_epoch = epoch;
        }
        Err(code) => resp.error_code = fenced_for(version, 4, code),
    }
    resp
}

/// Whether the topic partition exists on this broker.
fn exists(shard: &Rc<Shard>, topic: &str, partition: i32) -> bool {
    shard
        .topic(topic)
        .is_some_and(|t| partition >= 0 && partition < t.partitions)
}

/// Adds (or with `verify_only` checks) partitions of one transaction, an add recorded with the client's
/// transaction version `client_tv`; one code per partition, in order.
#[allow(clippy::too_many_arguments)]
async fn add_or_verify(
    shard: &Rc<Shard>,
    id: String,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    verify_only: bool,
    missing: i16,
    client_tv: i16,
) -> Vec<i16> {
    if id.is_empty() {
        return vec![errors::INVALID_REQUEST; partitions.len()];
    }
    if !verify_only {
        // Unknown partitions fail, and the others are not attempted (Kafka's answer).
        let unknown: Vec<bool> = partitions
            .iter()
            .map(|(t, p)| !exists(shard, t, *p))
            .collect();
        if unknown.iter().any(|u| *u) {
            return unknown
                .into_iter()
                .map(|u| {
                    if u {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        errors::OPERATION_NOT_ATTEMPTED
                    }
                })
                .collect();
        }
    }
    let (owner, partition) = match locate(shard, &id) {
        Ok(x) => x,
        Err(code) => return vec![code; partitions.len()],
    };
    let n = partitions.len();
    // Cross-core hop to the core coordinating the id.
    shard
        .invoke_on(owner, move |s| async move {
            if verify_only {
                txn::coordinator::verify(
                    &s,
                    partition,
                    &id,
                    producer_id,
                    epoch,
                    &partitions,
                    missing,
                )
            } else {
                let code = txn::coordinator::add_partitions(
                    s,
                    partition,
                    id,
                    producer_id,
                    epoch,
                    partitions,
                    client_tv,
                )
                .await;
                vec![code; n]
            }
        })
        .await
}

/// The partitions of `topics` in request order.
fn flatten(
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect()
}

/// Answers per topic, in request order, from one code per partition.
fn topic_results(
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    codes: &[i16],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut codes = codes.iter();
    topics
        .iter()
        .map(|t| {
            let mut r = AddPartitionsToTxnTopicResult::default();
            r.name = t.name.clone();
            r.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = codes.next().copied().unwrap_or(errors::NONE);
                    pr
                })
                .collect();
            r
        })
        .collect()
}

pub async fn handle_add_partitions(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> Option<AddPartitionsToTxnResponse> {
    let mut resp = AddPartitionsToTxnResponse::default();
    if version < 4 {
        let parts = flatten(&req.v3_and_below_topics);
        let codes = add_or_verify(
            shard,
            req.v3_and_below_transactional_id.0.to_string(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            parts,
            false,
            errors::INVALID_TXN_STATE,
            TV_0,
        )
        .await;
        let codes: Vec<i16> = codes
            .into_iter()
            .map(|c| fenced_for(version, 2, c))
            .collect();
        resp.results_by_topic_v3_and_below = topic_results(&req.v3_and_below_topics, &codes);
        return Some(resp);
    }
    let missing = if version >= 5 {
        errors::TRANSACTION_ABORTABLE
    } else {
        errors::INVALID_TXN_STATE
    };
    for t in &req.transactions {
        let codes = add_or_verify(
            shard,
            t.transactional_id.0.to_string(),
            t.producer_id.0,
            t.producer_epoch,
            flatten(&t.topics),
            t.verify_only,
            missing,
            // Versions 4+ come from brokers (Kafka's `transactionVersionForAddPartitionsToTxn`): the
            // implicit add of a transactional produce of transaction version 2.
            TV_2,
        )
        .await;
        let mut r = AddPartitionsToTxnResult::default();
        r.transactional_id = t.transactional_id.clone();
        r.topic_results = topic_results(&t.topics, &codes);
        resp.results_by_transaction.push(r);
    }
    Some(resp)
}

pub async fn handle_add_offsets(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> Option<AddOffsetsToTxnResponse> {
    let mut resp = AddOffsetsToTxnResponse::default();
    let offsets_partitions = shard
        .topic(crate::group::OFFSETS_TOPIC)
        .map(|t| t.partitions)
        .unwrap_or(shard.config.group.offsets_topic_partitions);
    let group_partition = crate::group::coordinator_partition(&req.group_id.0, offsets_partitions);
    if super::internal_topics::ensure_offsets_topic(shard)
        .await
        .is_err()
    {
        resp.error_code = errors::COORDINATOR_NOT_AVAILABLE;
        return Some(resp);
    }
    let codes = add_or_verify(
        shard,
        req.transactional_id.0.to_string(),
        req.producer_id.0,
        req.producer_epoch,
        vec![(crate::group::OFFSETS_TOPIC.to_string(), group_partition)],
        false,
        errors::INVALID_TXN_STATE,
        TV_0,
    )
    .await;
    resp.error_code = fenced_for(version, 2, codes.first().copied().unwrap_or(errors::NONE));
    Some(resp)
}

pub async fn handle_end_txn(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: EndTxnRequest,
    version: i16,
) -> Option<EndTxnResponse> {
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let id = req.transactional_id.0.to_string();
    // Kafka's `transactionVersionForEndTxn`: v5+ is a client of transaction version 2.
    let client_tv = if version >= 5 { TV_2 } else { TV_0 };
    let result = if id.is_empty() {
        Err(errors::INVALID_REQUEST)
    } else {
        match locate(shard, &id) {
            Err(code) => Err(code),
            Ok((owner, partition)) => {
                let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
                // Cross-core hop to the core coordinating the id.
                shard
                    .invoke_on(owner, move |s| {
                        txn::coordinator::end_txn(s, partition, id, pid, epoch, commit, client_tv)
                    })
                    .await
            }
        }
    };
    match result {
        Ok((pid, epoch)) => {
            if version >= 5 {
                // The producer id and epoch the client continues with (bumped by this EndTxn).
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
        }
        Err(code) => resp.error_code = fenced_for(version, 2, code),
    }
    Some(resp)
}

/// Checks with the id's coordinator that each partition is in the producer's ongoing transaction
/// (KIP-890 part 1, Kafka's `transaction.partition.verification.enable`, on by default); one code per
/// partition: NONE, or `missing` / the coordinator's error.
pub async fn verify_partitions(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    missing: i16,
) -> Vec<i16> {
    if let Some(coordinator) = coordinator_elsewhere(shard, id) {
        let req = crate::protocol::inter_broker::AddPartitionsRequest {
            transactional_id: id,
            producer_id,
            producer_epoch: epoch,
            partitions: &partitions,
            verify_only: true,
            version: add_partitions_version(true, missing),
        };
        return add_or_verify_remote(shard, coordinator, req).await;
    }
    add_or_verify(
        shard,
        id.to_string(),
        producer_id,
        epoch,
        partitions,
        true,
        missing,
        TV_0,
    )
    .await
}

/// The implicit AddPartitionsToTxn of transaction version 2 (KIP-890 part 2): a transactional Produce
/// v12+ and a TxnOffsetCommit v5+ add their partitions to the producer's transaction themselves, where
/// older clients sent AddPartitionsToTxn / AddOffsetsToTxn first. With `skip_ongoing` (Produce) partitions
/// already in the ongoing transaction are not asked for again. One code per partition.
pub async fn add_partitions_implicitly(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    skip_ongoing: bool,
) -> Vec<i16> {
    if let Some(coordinator) = coordinator_elsewhere(shard, id).filter(|_| !id.is_empty()) {
        let req = crate::protocol::inter_broker::AddPartitionsRequest {
            transactional_id: id,
            producer_id,
            producer_epoch: epoch,
            partitions: &partitions,
            verify_only: false,
            version: add_partitions_version(false, errors::NONE),
        };
        return add_or_verify_remote(shard, coordinator, req).await;
    }
    if skip_ongoing && !id.is_empty() {
        if let Ok((owner, _)) = locate(shard, id) {
            let (id, parts) = (id.to_string(), partitions.clone());
            // Cross-core hop to the core coordinating the id.
            let present = shard
                .invoke_on(owner, move |s| async move {
                    txn::coordinator::in_ongoing_txn(&s, &id, producer_id, epoch, &parts)
                })
                .await;
            if present {
                return vec![errors::NONE; partitions.len()];
            }
        }
    }
    add_or_verify(
        shard,
        id.to_string(),
        producer_id,
        epoch,
        partitions,
        false,
        errors::NONE,
        TV_2,
    )
    .await
}

pub async fn handle_txn_offset_commit(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> Option<TxnOffsetCommitResponse> {
    let group_id = req.group_id.0.to_string();
    let topics: Vec<(String, Vec<CommitPartition>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions
                    .iter()
                    .map(|p| CommitPartition {
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    })
                    .collect(),
            )
        })
        .collect();
    let answer = |codes: Vec<Vec<i16>>| {
        let mut resp = TxnOffsetCommitResponse::default();
        resp.topics = req
            .topics
            .iter()
            .zip(codes)
            .map(|(t, codes)| {
                let mut tr = TxnOffsetCommitResponseTopic::default();
                tr.name = t.name.clone();
                tr.partitions = t
                    .partitions
                    .iter()
                    .zip(codes)
                    .map(|(p, code)| {
                        let mut pr = TxnOffsetCommitResponsePartition::default();
                        pr.partition_index = p.partition_index;
                        pr.error_code = fenced_for(version, 2, code);
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        resp
    };
    let all = |code: i16| -> Vec<Vec<i16>> {
        topics.iter().map(|(_, ps)| vec![code; ps.len()]).collect()
    };
    if group_id.is_empty() {
        return Some(answer(all(errors::INVALID_GROUP_ID)));
    }
    let Some(offsets) = shard.topic(crate::group::OFFSETS_TOPIC) else {
        return Some(answer(all(errors::NOT_COORDINATOR)));
    };
    let partition = crate::group::coordinator_partition(&group_id, offsets.partitions);
    // The group's partition must be in the transaction: v5+ (transaction version 2) adds it, as Kafka's
    // `txnOffsetCommitRequestVersionToTransactionSupportedOperation`; before, AddOffsetsToTxn came first
    // and it is only verified.
    let group_partition = vec![(crate::group::OFFSETS_TOPIC.to_string(), partition)];
    let verified = if version >= 5 {
        add_partitions_implicitly(
            shard,
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            group_partition,
            false,
        )
        .await
    } else {
        let missing = if version >= 4 {
            errors::TRANSACTION_ABORTABLE
        } else {
            errors::INVALID_TXN_STATE
        };
        verify_partitions(
            shard,
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            group_partition,
            missing,
        )
        .await
    };
    let code = verified.first().copied().unwrap_or(errors::NONE);
    if code != errors::NONE {
        return Some(answer(all(code)));
    }
    let owner = shard.owner_of(&offsets, partition);
    let who = CommitIdentity {
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        version,
    };
    let producer = (req.producer_id.0, req.producer_epoch);
    // Cross-core hop to the core coordinating the group.
    let codes = shard
        .invoke_on(owner, move |s| {
            crate::group::coordinator::txn_commit(s, partition, group_id, producer, who, topics)
        })
        .await;
    Some(answer(codes))
}

pub async fn handle_describe_transactions(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeTransactionsRequest,
    _version: i16,
) -> Option<DescribeTransactionsResponse> {
    let mut resp = DescribeTransactionsResponse::default();
    for id in req.transactional_ids {
        let mut st = describe_transactions_response::TransactionState::default();
        st.transactional_id = id.clone();
        st.producer_id = ProducerId(-1);
        st.producer_epoch = -1;
        st.transaction_start_time_ms = -1;
        let name = id.0.to_string();
        let found = if name.is_empty() {
            Err(errors::INVALID_REQUEST)
        } else {
            match locate(shard, &name) {
                Err(_) => Err(errors::TRANSACTIONAL_ID_NOT_FOUND),
                Ok((owner, partition)) => {
                    // Cross-core hop to the core coordinating the id.
                    shard
                        .invoke_on(owner, move |s| async move {
                            txn::coordinator::describe(&s, partition, &name)
                        })
                        .await
                }
            }
        };
        match found {
            Err(code) => st.error_code = code,
            Ok(m) => {
                st.transaction_state = StrBytes::from_static_str(m.state.name());
                st.transaction_timeout_ms = m.timeout_ms;
                st.transaction_start_time_ms = m.start_ms;
                st.producer_id = ProducerId(m.producer_id);
                st.producer_epoch = m.producer_epoch;
                st.topics = txn::records::group_by_topic(&m.partitions)
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut td = describe_transactions_response::TopicData::default();
                        td.topic = TopicName(StrBytes::from_string(t.to_string()));
                        td.partitions = ps;
                        td
                    })
                    .collect();
            }
        }
        resp.transaction_states.push(st);
    }
    Some(resp)
}

pub async fn handle_list_transactions(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ListTransactionsRequest,
    _version: i16,
) -> Option<ListTransactionsResponse> {
    let mut resp = ListTransactionsResponse::default();
    const STATES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let wanted_states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    resp.unknown_state_filters = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let now = crate::group::now_ms();
    let min_age = req.duration_filter;
    let pattern = req.transactional_id_pattern.as_ref().map(|p| p.to_string());
    if pattern.is_some() {
        // A regular expression Ringtide cannot evaluate as Java does: refuse rather than answer wrongly.
        resp.error_code = errors::INVALID_REQUEST;
        return Some(resp);
    }
    let mut all = Vec::new();
    for core in 0..shard.cores {
        // Cross-core hop: every core coordinates some ids.
        let listed = shard
            .invoke_on(core, move |s| async move { txn::coordinator::list(&s) })
            .await;
        all.extend(listed);
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, pid, state, start_ms) in all {
        if !wanted_states.is_empty() && !wanted_states.iter().any(|w| w == state.name()) {
            continue;
        }
        if !pids.is_empty() && !pids.contains(&pid) {
            continue;
        }
        if min_age >= 0 && !(start_ms >= 0 && now - start_ms >= min_age) {
            continue;
        }
        let mut st = list_transactions_response::TransactionState::default();
        st.transactional_id = TransactionalId(StrBytes::from_string(id));
        st.producer_id = ProducerId(pid);
        st.transaction_state = StrBytes::from_static_str(state.name());
        resp.transaction_states.push(st);
    }
    Some(resp)
}

/// WriteTxnMarkers (Kafka's coordinator-to-leader request; `kafka-transactions abort` sends it to abort
/// a hanging transaction): each marker is appended on every named partition's owning core and answered
/// once durable.
pub async fn handle_write_txn_markers(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: WriteTxnMarkersRequest,
    _version: i16,
) -> Option<WriteTxnMarkersResponse> {
    use write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let mut resp = WriteTxnMarkersResponse::default();
    for m in req.markers {
        let (pid, epoch, commit, coordinator_epoch) = (
            m.producer_id.0,
            m.producer_epoch,
            m.transaction_result,
            m.coordinator_epoch,
        );
        // v2+ (KIP-1228): the transaction version of the marker, 2 for the strict epoch rule.
        let transaction_version = i16::from(m.transaction_version);
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = m.producer_id;
        for t in m.topics {
            let name = t.name.0.to_string();
            let writes = t.partition_indexes.iter().map(|&p| {
                let name = name.clone();
                async move {
                    let Some(meta) = shard.topic(&name).filter(|m| p >= 0 && p < m.partitions)
                    else {
                        return errors::UNKNOWN_TOPIC_OR_PARTITION;
                    };
                    let owner = shard.owner_of(&meta, p);
                    // Cross-core hop to the partition's owner, which appends the marker.
                    shard
                        .invoke_on(owner, move |s| async move {
                            let marker = txn::coordinator::Marker {
                                producer_id: pid,
                                epoch,
                                coordinator_epoch,
                                commit,
                                transaction_version,
                            };
                            txn::coordinator::write_marker(s, name, p, marker)
                                .await
                                .err()
                                .unwrap_or(errors::NONE)
                        })
                        .await
                }
            });
            let codes = futures::future::join_all(writes).await;
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name;
            tr.partitions = t
                .partition_indexes
                .iter()
                .zip(codes)
                .map(|(&p, code)| {
                    let mut pr = WritableTxnMarkerPartitionResult::default();
                    pr.partition_index = p;
                    pr.error_code = code;
                    pr
                })
                .collect();
            result.topics.push(tr);
        }
        resp.markers.push(result);
    }
    Some(resp)
}

/// DescribeProducers: the producers each partition remembers (its owning core answers), as
/// `kafka-transactions describe-producers` and `find-hanging` read them.
pub async fn handle_describe_producers(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeProducersRequest,
    _version: i16,
) -> Option<DescribeProducersResponse> {
    use describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let mut resp = DescribeProducersResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let reads = t.partition_indexes.iter().map(|&p| {
            let name = name.clone();
            async move {
                let Some(meta) = shard.topic(&name).filter(|m| p >= 0 && p < m.partitions) else {
                    return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
                };
                let owner = shard.owner_of(&meta, p);
                // Cross-core hop to the partition's owner, which holds its producer state.
                shard
                    .invoke_on(owner, move |s| async move {
                        s.partition(&name, p)
                            .map(|part| part.active_producers())
                            .ok_or(errors::NOT_LEADER_OR_FOLLOWER)
                    })
                    .await
            }
        });
        let answers = futures::future::join_all(reads).await;
        let mut tr = TopicResponse::default();
        tr.name = t.name;
        for (&p, answer) in t.partition_indexes.iter().zip(answers) {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            match answer {
                Err(code) => pr.error_code = code,
                Ok(producers) => {
                    pr.active_producers = producers
                        .into_iter()
                        .map(|a| {
                            let mut ps = ProducerState::default();
                            ps.producer_id = ProducerId(a.producer_id);
                            ps.producer_epoch = i32::from(a.epoch);
                            ps.last_sequence = a.last_sequence;
                            ps.last_timestamp = a.last_timestamp;
                            ps.coordinator_epoch = a.coordinator_epoch;
                            ps.current_txn_start_offset = a.current_txn_start_offset;
                            ps
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

/// InitProducerId: with a transactional id the coordinator answers ([`init_producer_id`]); without one
/// the idempotent-producer path ([`super::admin::handle_init_producer_id`]).
pub async fn handle_init_producer_id(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    req: InitProducerIdRequest,
    version: i16,
) -> Option<InitProducerIdResponse> {
    if req.transactional_id.is_some() {
        return Some(init_producer_id(shard, &req, version).await);
    }
    super::admin::handle_init_producer_id(shard, header, req, version).await
}
