//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions) and InitProducerId.
//!
//! All of these change the cluster metadata, whose single writer is core 0: each handler validates what
//! it can locally, then hops to core 0 (`invoke_on(0, ...)`), which applies, persists and broadcasts.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::configs;
use crate::limits;
use crate::metadata::{validate_topic_name, TopicMeta};
use crate::protocol::errors;
use crate::shard::Shard;

/// A topic to create, already resolved against broker defaults.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Cluster mode: the broker of each partition, as CreateTopics' manual assignment names it (empty:
    /// the controller assigns).
    pub assignment: Vec<i32>,
}

type AdminResult<T> = Result<T, (i16, String)>;

/// Creates topics on core 0; one result per input, in order.
pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<AdminResult<Arc<TopicMeta>>> {
    let n = topics.len();
    // Cross-core hop: core 0 is the single writer of the metadata.
    shard
        .invoke_on(0, move |s| async move {
            let outcome = s
                .controller_mutate(|meta| {
                    let mut changed = false;
                    let results: Vec<AdminResult<Arc<TopicMeta>>> = topics
                        .into_iter()
                        .map(|t| {
                            validate_topic_name(&t.name)
                                .map_err(|m| (errors::INVALID_TOPIC_EXCEPTION, m))?;
                            if meta.topics.contains_key(&t.name) {
                                return Err((
                                    errors::TOPIC_ALREADY_EXISTS,
                                    format!("Topic '{}' already exists.", t.name),
                                ));
                            }
                            if t.partitions < 1 {
                                return Err((
                                    errors::INVALID_PARTITIONS,
                                    "Number of partitions was set to an invalid non-positive value."
                                        .into(),
                                ));
                            }
                            if t.partitions > limits::TOPIC_PARTITIONS_MAX {
                                return Err((
                                    errors::INVALID_PARTITIONS,
                                    format!(
                                        "Number of partitions must be between 1 and {}.",
                                        limits::TOPIC_PARTITIONS_MAX
                                    ),
                                ));
                            }
                            configs::validate_topic_configs(&t.configs)
                                .map_err(|m| (errors::INVALID_CONFIG, m))?;
                            let topic = Arc::new(TopicMeta {
                                name: t.name.clone(),
                                id: uuid::Uuid::new_v4(),
                                partitions: t.partitions,
                                configs: t.configs,
                                leader_epoch: 0,
                                internal: t.name.starts_with("__"),
                                // A manual assignment: the replicas only, leaders come from the controller.
                                assignment: t
                                    .assignment
                                    .iter()
                                    .map(|&b| crate::metadata::PartitionMeta {
                                        replicas: vec![b],
                                        leader: -1,
                                        leader_epoch: 0,
                                        isr: vec![b],
                                    })
                                    .collect(),
                            });
                            if !validate_only {
                                meta.topics.insert(t.name, topic.clone());
                                changed = true;
                            }
                            Ok(topic)
                        })
                        .collect();
                    (changed, results)
                })
                .await;
            match outcome {
                Ok(results) => results,
                // Cluster mode: created meanwhile through another broker.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    vec![Err((errors::TOPIC_ALREADY_EXISTS, e.to_string())); n]
                }
                Err(e) => {
                    tracing::error!(error = %e, "persisting metadata failed");
                    vec![Err((metadata_error_code(&e), e.to_string())); n]
                }
            }
        })
        .await
}

pub async fn handle_create_topics(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: CreateTopicsRequest,
    version: i16,
) -> Option<CreateTopicsResponse> {
    let mut resp = CreateTopicsResponse::default();
    let mut to_create = Vec::new();
    // Per requested topic: an answer decided here, or the name of a topic sent to core 0.
    let mut slots: Vec<Result<CreatableTopicResult, TopicName>> = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = t.name.clone();
        let rf = if t.replication_factor == -1 {
            shard.config.default_replication_factor
        } else {
            t.replication_factor
        };
        let meta = shard.meta();
        // Cluster mode: the live brokers (a single broker is a cluster of itself).
        let live = if meta.brokers.is_empty() {
            1
        } else {
            meta.brokers.len()
        };
        if rf != 1 {
            result.error_code = errors::INVALID_REPLICATION_FACTOR;
            result.error_message = Some(StrBytes::from_string(if rf < 1 || rf as usize > live {
                format!("Replication factor: {rf} larger than available brokers: {live}.")
            } else {
                format!("Replication factor: {rf} is not supported: Ringtide does not replicate partitions yet (replication factor 1 only).")
            }));
            slots.push(Ok(result));
            continue;
        }
        // A manual assignment: one replica per partition, on a live broker (this one on a single broker).
        let known = |b: i32| {
            if meta.brokers.is_empty() {
                b == shard.config.node_id
            } else {
                meta.brokers.contains_key(&b)
            }
        };
        if let Some(bad) = t
            .assignments
            .iter()
            .find(|a| a.broker_ids.len() != 1 || !known(a.broker_ids[0].0))
        {
            result.error_code = if bad.broker_ids.len() != 1 {
                errors::INVALID_REPLICATION_FACTOR
            } else {
                errors::INVALID_REPLICA_ASSIGNMENT
            };
            result.error_message = Some(StrBytes::from_string(if bad.broker_ids.len() != 1 {
                format!(
                    "Replication factor: {} is not supported: Ringtide does not replicate partitions yet (replication factor 1 only).",
                    bad.broker_ids.len()
                )
            } else {
                format!(
                    "The manual partition assignment includes broker {}, but no such broker is registered.",
                    bad.broker_ids[0].0
                )
            }));
            slots.push(Ok(result));
            continue;
        }
        let assignment: Vec<i32> = if meta.brokers.is_empty() {
            Vec::new()
        } else {
            t.assignments.iter().map(|a| a.broker_ids[0].0).collect()
        };
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            t.num_partitions
        };
        let mut cfg = BTreeMap::new();
        for c in t.configs {
            if let Some(v) = c.value {
                cfg.insert(c.name.to_string(), v.to_string());
            }
        }
        to_create.push(NewTopic {
            name,
            partitions,
            configs: cfg,
            assignment,
        });
        slots.push(Err(t.name));
    }
    let mut results = create_topics(shard, to_create, req.validate_only)
        .await
        .into_iter();
    for slot in slots {
        let r = match slot {
            Ok(r) => r,
            Err(name) => {
                let mut r = CreatableTopicResult::default();
                r.name = name;
                match results
                    .next()
                    .unwrap_or(Err((errors::UNKNOWN_SERVER_ERROR, "no result".into())))
                {
                    Ok(topic) => {
                        r.error_message = None;
                        if version >= 7 {
                            r.topic_id = topic.id;
                        }
                        if version >= 5 {
                            r.num_partitions = topic.partitions;
                            r.replication_factor = 1;
                        }
                        if version >= 5 {
                            // Kafka lists a new topic's configs by name (DescribeConfigs does not).
                            let mut entries =
                                configs::topic_entries(&shard.config, &shard.meta(), &topic);
                            entries.sort_by(|a, b| a.name.cmp(&b.name));
                            r.configs = Some(
                                entries
                                    .into_iter()
                                    .map(|e| {
                                        let mut c = CreatableTopicConfigs::default();
                                        c.name = StrBytes::from_string(e.name);
                                        c.value = e.value.map(StrBytes::from_string);
                                        c.config_source = e.source;
                                        c.read_only = e.read_only;
                                        c
                                    })
                                    .collect(),
                            );
                        }
                    }
                    Err((code, msg)) => {
                        r.error_code = code;
                        r.error_message = Some(StrBytes::from_string(msg));
                    }
                }
                r
            }
        };
        resp.topics.push(r);
    }
    Some(resp)
}

pub async fn handle_delete_topics(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DeleteTopicsRequest,
    version: i16,
) -> Option<DeleteTopicsResponse> {
    // v0-5 name topics in `topic_names`; v6 in `topics` (by name or id).
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let asked = wanted.clone();
    let answers = shard
        .invoke_on(0, move |s| async move {
            s.controller_mutate(|meta| {
                let mut changed = false;
                let answers: Vec<(Option<String>, uuid::Uuid, i16)> = wanted
                    .into_iter()
                    .map(|(name, id)| {
                        let found = match &name {
                            Some(n) => meta.topics.get(n).cloned(),
                            None => meta.topic_by_id(&id).cloned(),
                        };
                        match found {
                            Some(t) => {
                                meta.topics.remove(&t.name);
                                changed = true;
                                (Some(t.name.clone()), t.id, errors::NONE)
                            }
                            None if name.is_some() => {
                                (name, id, errors::UNKNOWN_TOPIC_OR_PARTITION)
                            }
                            None => (name, id, errors::UNKNOWN_TOPIC_ID),
                        }
                    })
                    .collect();
                (changed, answers)
            })
            .await
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "persisting metadata failed");
            let code = metadata_error_code(&e);
            asked
                .into_iter()
                .map(|(name, id)| (name, id, code))
                .collect()
        });
    let mut resp = DeleteTopicsResponse::default();
    // In request order (Kafka's order comes from a hash map: clients match answers by name).
    resp.responses = answers
        .into_iter()
        .map(|(name, id, code)| {
            let mut r = DeletableTopicResult::default();
            r.name = name.map(|n| TopicName(StrBytes::from_string(n)));
            if version >= 6 {
                r.topic_id = id;
            }
            r.error_code = code;
            if version >= 5 {
                r.error_message = match code {
                    errors::UNKNOWN_TOPIC_OR_PARTITION => Some(StrBytes::from_static_str(
                        "This server does not host this topic-partition.",
                    )),
                    errors::UNKNOWN_TOPIC_ID => Some(StrBytes::from_static_str(
                        "This server does not host this topic ID.",
                    )),
                    _ => None,
                };
            }
            r
        })
        .collect();
    Some(resp)
}

pub async fn handle_create_partitions(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: CreatePartitionsRequest,
    _version: i16,
) -> Option<CreatePartitionsResponse> {
    let validate_only = req.validate_only;
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let answers = shard
        .invoke_on(0, move |s| async move {
            s.controller_mutate(|meta| {
                let mut changed = false;
                let answers: Vec<(String, i16, Option<String>)> = wanted
                    .into_iter()
                    .map(|(name, count)| {
                        let Some(t) = meta.topics.get(&name).cloned() else {
                            return (name, errors::UNKNOWN_TOPIC_OR_PARTITION, None);
                        };
                        if count <= t.partitions {
                            let msg = format!(
                                "Topic currently has {} partitions, {count} would not be an increase.",
                                t.partitions
                            );
                            return (name, errors::INVALID_PARTITIONS, Some(msg));
                        }
                        if count > limits::TOPIC_PARTITIONS_MAX {
                            let msg = format!("At most {} partitions.", limits::TOPIC_PARTITIONS_MAX);
                            return (name, errors::INVALID_PARTITIONS, Some(msg));
                        }
                        if !validate_only {
                            let mut nt = (*t).clone();
                            nt.partitions = count;
                            meta.topics.insert(name.clone(), Arc::new(nt));
                            changed = true;
                        }
                        (name, errors::NONE, None)
                    })
                    .collect();
                (changed, answers)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "persisting metadata failed");
                Vec::new()
            })
        })
        .await;
    let mut resp = CreatePartitionsResponse::default();
    resp.results = answers
        .into_iter()
        .map(|(name, code, msg)| {
            let mut r = CreatePartitionsTopicResult::default();
            r.name = TopicName(StrBytes::from_string(name));
            r.error_code = code;
            r.error_message = msg.map(StrBytes::from_string);
            r
        })
        .collect();
    Some(resp)
}

/// InitProducerId without a transactional id, as Kafka 4.4 answers it ([`super::txn::handle_init_producer_id`] routes).
///
/// Kafka (`KafkaApis.handleInitProducerIdRequest`) first requires `producer_id` and `producer_epoch`
/// (v3+; -1 in older versions) to be both -1 or both set, else INVALID_REQUEST. Then, for a null
/// `transactional_id`, `TransactionCoordinator.handleInitProducerId` always hands out a new producer id
/// with epoch 0, whatever id and epoch the request names: an idempotent producer recovering from an
/// error (KIP-360) gets a fresh id, and no client can bump (and so fence) another's producer id.
pub async fn handle_init_producer_id(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: InitProducerIdRequest,
    _version: i16,
) -> Option<InitProducerIdResponse> {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if (req.producer_id.0 == -1) != (req.producer_epoch == -1) {
        resp.error_code = errors::INVALID_REQUEST;
        return Some(resp);
    }
    // Cross-core hop: producer ids are allocated by core 0.
    let id = shard
        .invoke_on(0, |s| async move {
            s.controller_allocate_producer_id()
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    match id {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "allocating a producer id failed");
            resp.error_code = errors::KAFKA_STORAGE_ERROR;
        }
    }
    Some(resp)
}

/// The error code for a metadata change that failed: REQUEST_TIMED_OUT when it was written but not seen
/// applied in time (cluster mode; Kafka answers a create or delete it could not complete within the
/// request's timeout the same way), KAFKA_STORAGE_ERROR when it could not be persisted.
pub(crate) fn metadata_error_code(e: &std::io::Error) -> i16 {
    match e.kind() {
        std::io::ErrorKind::TimedOut => errors::REQUEST_TIMED_OUT,
        _ => errors::KAFKA_STORAGE_ERROR,
    }
}
