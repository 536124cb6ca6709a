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

use crate::limits;
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
    /// Records refused one by one: (index in the batch, message).
    pub record_errors: Vec<(i32, String)>,
}

impl PartitionOutcome {
    fn error(code: i16, message: Option<String>) -> Self {
        PartitionOutcome {
            error_code: code,
            error_message: message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
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
    let appended = match part.append_produce(records) {
        Ok(a) => a,
        Err(e) => {
            // Kafka answers without a message, and with the log start offset unless the error is one
            // of those its append reports before looking at the log.
            let mut outcome = PartitionOutcome::error(e.code, None);
            if !e.record_errors.is_empty() {
                // Records refused one by one: Kafka names them and sums them up in the message.
                outcome.error_message = e.message;
                outcome.record_errors = e.record_errors;
            }
            if !matches!(
                e.code,
                errors::CORRUPT_MESSAGE
                    | errors::MESSAGE_TOO_LARGE
                    | errors::RECORD_LIST_TOO_LARGE
                    | errors::UNKNOWN_SERVER_ERROR
                    | errors::KAFKA_STORAGE_ERROR
                    | errors::NOT_LEADER_OR_FOLLOWER
                    | errors::UNKNOWN_TOPIC_OR_PARTITION
            ) {
                outcome.log_start_offset = part.log_start_offset();
            }
            return outcome;
        }
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
        record_errors: Vec::new(),
    }
}

/// What a Produce request gets: an answer, or (acks=0 with an error, as Kafka does, so that the client
/// notices and refreshes its metadata) the connection closed.
pub enum ProduceAnswer {
    Response(ProduceResponse),
    Close(String),
}

impl super::Answer for ProduceAnswer {
    fn into_reply(self, prefix: crate::protocol::HeaderPrefix, key: ApiKey) -> super::Reply {
        match self {
            ProduceAnswer::Response(r) => r.into_reply(prefix, key),
            ProduceAnswer::Close(why) => super::Reply::Close(why),
        }
    }
}

/// The producer id and epoch of the first batch Kafka's iterator would see in `records`, if it is a
/// transactional (magic 2) batch.
fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    crate::records::check_produce_records(records).ok()?;
    crate::records::BatchHeader::parse(records)
        .filter(|h| h.is_transactional())
        .map(|h| (h.producer_id, h.producer_epoch))
}

/// The partitions of a transactional produce that are not in the producer's ongoing transaction, with
/// the code each gets. The coordinator is asked before anything is appended: Produce v12+ (transaction
/// version 2, KIP-890 part 2) adds the partitions to the transaction itself, retrying while the
/// coordinator answers CONCURRENT_TRANSACTIONS (Kafka's `add.partitions.to.txn.retry.backoff.*`); older
/// versions only verify that the client added them (KIP-890 part 1). Errors as Kafka's
/// `ReplicaManager` translates them for the producer.
async fn unverified(
    shard: &Rc<Shard>,
    transactional_id: &str,
    batches: Vec<(String, i32, (i64, i16))>,
    version: i16,
) -> std::collections::HashMap<(String, i32), i16> {
    let add = version >= 12;
    let missing = if version >= 11 {
        errors::TRANSACTION_ABORTABLE
    } else {
        errors::INVALID_TXN_STATE
    };
    let mut by_producer: std::collections::BTreeMap<(i64, i16), Vec<(String, i32)>> =
        std::collections::BTreeMap::new();
    for (t, p, producer) in batches {
        // Unknown partitions get their own error and are not added.
        let known = shard.topic(&t).is_some_and(|m| p >= 0 && p < m.partitions);
        if known || !add {
            by_producer.entry(producer).or_default().push((t, p));
        }
    }
    let mut out = std::collections::HashMap::new();
    for ((pid, epoch), parts) in by_producer {
        let codes = if add {
            let started = std::time::Instant::now();
            loop {
                let codes = super::txn::add_partitions_implicitly(
                    shard,
                    transactional_id,
                    pid,
                    epoch,
                    parts.clone(),
                    true,
                )
                .await;
                let waited = started.elapsed().as_millis() as u64;
                if !codes.contains(&errors::CONCURRENT_TRANSACTIONS)
                    || waited >= limits::ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MAX_MS
                {
                    break codes;
                }
                crate::shard::sleep(std::time::Duration::from_millis(
                    limits::ADD_PARTITIONS_TO_TXN_RETRY_BACKOFF_MS,
                ))
                .await;
            }
        } else {
            super::txn::verify_partitions(
                shard,
                transactional_id,
                pid,
                epoch,
                parts.clone(),
                missing,
            )
            .await
        };
        for (tp, code) in parts.into_iter().zip(codes) {
            if code != errors::NONE {
                let code = match code {
                    // A producer fenced by a newer instance learns it from its epoch.
                    errors::PRODUCER_FENCED => errors::INVALID_PRODUCER_EPOCH,
                    errors::INVALID_PRODUCER_ID_MAPPING if !add => missing,
                    // Retriable coordinator errors that older clients do not retry on a produce.
                    errors::COORDINATOR_NOT_AVAILABLE
                    | errors::NOT_COORDINATOR
                    | errors::COORDINATOR_LOAD_IN_PROGRESS => errors::NOT_ENOUGH_REPLICAS,
                    // Transaction version 2 keeps CONCURRENT_TRANSACTIONS (common while a commit
                    // completes); older versions did not expect it.
                    errors::CONCURRENT_TRANSACTIONS if !add => errors::NOT_ENOUGH_REPLICAS,
                    c => c,
                };
                out.insert(tp, code);
            }
        }
    }
    out
}

/// Answers a Produce request as Kafka 4.4 does. Per partition, in Kafka's order: an unknown topic or
/// partition; records that are not exactly one magic-2 batch (INVALID_RECORD) or whose first size field is
/// below 14 (CORRUPT_MESSAGE); then acks other than -1, 0, 1 (INVALID_REQUIRED_ACKS); then the append's
/// own checks. Transactional batches without a transactional id fail the whole request with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers them; with one, each partition must be in the
/// producer's ongoing transaction (asked of the coordinator before appending). Null records
/// make Kafka fail without ever answering; Ringtide closes the connection.
pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceAnswer> {
    let acks = req.acks;
    if req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .any(|p| p.records.is_none())
    {
        return Some(ProduceAnswer::Close(
            "Produce request with null records".into(),
        ));
    }
    // The topic each entry names: by id from v13 (empty if unknown), else by name.
    let topic_name = |t: &produce_request::TopicProduceData| -> String {
        if version >= 13 {
            shard
                .meta()
                .topic_by_id(&t.topic_id)
                .map(|m| m.name.to_string())
                .unwrap_or_default()
        } else {
            t.name.0.to_string()
        }
    };
    let txn_batches: Vec<(String, i32, (i64, i16))> = req
        .topic_data
        .iter()
        .flat_map(|t| {
            let name = topic_name(t);
            t.partition_data.iter().filter_map(move |p| {
                let producer = transactional_producer(p.records.as_deref()?)?;
                Some((name.clone(), p.index, producer))
            })
        })
        .collect();
    // Kafka refuses transactional batches without a transactional id before anything else.
    let transactional = !txn_batches.is_empty() && req.transactional_id.is_none();
    let not_in_txn = match (&req.transactional_id, txn_batches.is_empty()) {
        (Some(id), false) => unverified(shard, &id.0, txn_batches, version).await,
        _ => Default::default(),
    };
    let bad_acks = !matches!(acks, -1..=1);

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
            let outcome = match &meta {
                _ if transactional => Err(PartitionOutcome::error(
                    errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    None,
                )),
                None => Err(PartitionOutcome::error(
                    if version >= 13 {
                        errors::UNKNOWN_TOPIC_ID
                    } else {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    },
                    None,
                )),
                Some(m) if p.index < 0 || p.index >= m.partitions => Err(PartitionOutcome::error(
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    None,
                )),
                Some(m)
                    if !not_in_txn.is_empty()
                        && not_in_txn.contains_key(&(m.name.to_string(), p.index)) =>
                {
                    Err(PartitionOutcome::error(
                        not_in_txn[&(m.name.to_string(), p.index)],
                        None,
                    ))
                }
                Some(m) => {
                    let records = p.records.unwrap_or_default();
                    match crate::records::check_produce_records(&records) {
                        Err(e) => Err(PartitionOutcome::error(e.code, e.message)),
                        Ok(_) if bad_acks => {
                            Err(PartitionOutcome::error(errors::INVALID_REQUIRED_ACKS, None))
                        }
                        // A torn remainder after the batch is dropped, as Kafka drops it.
                        Ok(len) => Ok((m.clone(), p.index, records.slice(..len))),
                    }
                }
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
        // Kafka closes the connection when an acks=0 produce fails for any partition.
        return outcomes
            .iter()
            .any(|o| o.error_code != errors::NONE)
            .then(|| ProduceAnswer::Close("acks=0 produce failed".into()));
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
                pr.record_errors = o
                    .record_errors
                    .iter()
                    .map(|(i, m)| {
                        let mut e = produce_response::BatchIndexAndErrorMessage::default();
                        e.batch_index = *i;
                        e.batch_index_error_message = Some(StrBytes::from_string(m.clone()));
                        e
                    })
                    .collect();
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    Some(ProduceAnswer::Response(resp))
}
