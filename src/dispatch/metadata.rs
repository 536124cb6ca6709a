//! Metadata and DescribeCluster: answered from this core's metadata snapshot, no cross-core hop
//! (except to core 0 when a topic is auto-created).

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::admin::{self, NewTopic};
use crate::metadata::TopicMeta;
use crate::protocol::acl::{self, ResourceType};
use crate::protocol::errors;
use crate::shard::Shard;

/// The brokers a client is told of: every live broker in cluster mode, otherwise this one.
fn brokers(shard: &Shard) -> Vec<MetadataResponseBroker> {
    let meta = shard.meta();
    if meta.brokers.is_empty() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(shard.config.node_id);
        b.host = StrBytes::from_string(shard.config.advertised.host.clone());
        b.port = shard.config.advertised.port as i32;
        return vec![b];
    }
    meta.brokers
        .values()
        .map(|m| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(m.id);
            b.host = StrBytes::from_string(m.host.clone());
            b.port = m.port;
            b.rack = m.rack.clone().map(StrBytes::from_string);
            b
        })
        .collect()
}

/// The controller Metadata names: the broker a client sends admin requests to. Every Ringtide broker
/// takes them (in cluster mode it writes them to ZooKeeper), so this is the answering broker itself, as
/// Kafka 4.4 (KRaft) names a live broker that forwards them, never a broker that may be dead: a client
/// keeps sending admin requests to the broker it was told of until its next metadata refresh.
fn admin_target(shard: &Shard) -> i32 {
    shard.config.node_id
}

/// The controller DescribeCluster names: in cluster mode the broker holding `/controller` (-1: none),
/// as Kafka 2.x named it (operators and failover tests look for it there).
pub fn controller_id(shard: &Shard) -> i32 {
    let meta = shard.meta();
    if meta.brokers.is_empty() {
        shard.config.node_id
    } else {
        meta.controller_id.unwrap_or(-1)
    }
}

pub fn topic_entry(shard: &Shard, t: &TopicMeta, version: i16) -> MetadataResponseTopic {
    let node = shard.config.node_id;
    let meta = shard.meta();
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
    // Fields a version lacks must stay at their defaults or the codec refuses to encode.
    if version >= 10 {
        topic.topic_id = t.id;
    }
    if version >= 1 {
        topic.is_internal = t.internal;
    }
    topic.partitions = (0..t.partitions)
        .map(|p| {
            let mut part = MetadataResponsePartition::default();
            part.partition_index = p;
            let leader = t.leader(p, node);
            let (replicas, isr) = t.replicas_isr(p, node);
            part.leader_id = BrokerId(leader);
            if leader < 0 {
                // No live leader: Kafka answers LEADER_NOT_AVAILABLE for the partition.
                part.error_code = errors::LEADER_NOT_AVAILABLE;
            }
            if version >= 7 {
                part.leader_epoch = t.partition_leader_epoch(p);
            }
            if version >= 5 && !meta.brokers.is_empty() {
                part.offline_replicas = replicas
                    .iter()
                    .filter(|r| !meta.brokers.contains_key(r))
                    .map(|r| BrokerId(*r))
                    .collect();
            }
            part.replica_nodes = replicas.into_iter().map(BrokerId).collect();
            part.isr_nodes = isr.into_iter().map(BrokerId).collect();
            part
        })
        .collect();
    topic
}

fn error_topic(name: Option<String>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    topic.topic_id = id; // nil unless the request named the topic by id (v10+)
    topic.error_code = code;
    topic
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: MetadataRequest,
    version: i16,
) -> Option<MetadataResponse> {
    let mut resp = MetadataResponse::default();
    resp.brokers = brokers(shard);
    if version >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(shard.meta().cluster_id.clone()));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(admin_target(shard));
    }

    let meta = shard.meta();
    match req.topics {
        // v0 uses an empty list for "all topics"; v1+ uses null.
        None => {
            resp.topics = meta
                .topics
                .values()
                .map(|t| topic_entry(shard, t, version))
                .collect()
        }
        Some(ref list) if list.is_empty() && version == 0 => {
            resp.topics = meta
                .topics
                .values()
                .map(|t| topic_entry(shard, t, version))
                .collect()
        }
        Some(list) => {
            // Auto-create in Kafka applies to v4+ when asked, and always before v4.
            let allow_create = shard.config.auto_create_topics_enable
                && (version < 4 || req.allow_auto_topic_creation);
            let mut to_create = Vec::new();
            for t in &list {
                let name = t.name.as_ref().map(|n| n.0.to_string());
                match name {
                    Some(name) => {
                        if let Some(topic) = meta.topics.get(&name) {
                            resp.topics.push(topic_entry(shard, topic, version));
                        } else if crate::metadata::validate_topic_name(&name).is_err() {
                            resp.topics.push(error_topic(
                                Some(name),
                                uuid::Uuid::nil(),
                                errors::INVALID_TOPIC_EXCEPTION,
                            ));
                        } else if allow_create {
                            to_create.push(name);
                        } else {
                            resp.topics.push(error_topic(
                                Some(name),
                                uuid::Uuid::nil(),
                                errors::UNKNOWN_TOPIC_OR_PARTITION,
                            ));
                        }
                    }
                    None => match meta.topic_by_id(&t.topic_id) {
                        Some(topic) => resp.topics.push(topic_entry(shard, topic, version)),
                        None => resp.topics.push(error_topic(
                            None,
                            t.topic_id,
                            errors::UNKNOWN_TOPIC_ID,
                        )),
                    },
                }
            }
            if !to_create.is_empty() {
                let new: Vec<NewTopic> = to_create
                    .iter()
                    .map(|n| NewTopic {
                        name: n.clone(),
                        partitions: shard.config.num_partitions,
                        configs: Default::default(),
                        assignment: Vec::new(),
                    })
                    .collect();
                let results = admin::create_topics(shard, new, false).await;
                for (name, result) in to_create.into_iter().zip(results) {
                    match result {
                        // In cluster mode the installed topic carries the leaders ZooKeeper assigned.
                        Ok(topic) => {
                            let topic = shard.topic(&name).unwrap_or(topic);
                            resp.topics.push(topic_entry(shard, &topic, version))
                        }
                        // Created concurrently by someone else: answer with what exists now.
                        Err((errors::TOPIC_ALREADY_EXISTS, _)) => match shard.topic(&name) {
                            Some(topic) => resp.topics.push(topic_entry(shard, &topic, version)),
                            None => resp.topics.push(error_topic(
                                Some(name),
                                uuid::Uuid::nil(),
                                errors::LEADER_NOT_AVAILABLE,
                            )),
                        },
                        Err((code, _)) => {
                            resp.topics
                                .push(error_topic(Some(name), uuid::Uuid::nil(), code))
                        }
                    }
                }
            }
        }
    }
    if version >= 8 {
        if version <= 10 {
            resp.cluster_authorized_operations = acl::field(
                req.include_cluster_authorized_operations,
                ResourceType::Cluster,
            );
        }
        // Kafka fills in the operations of every topic it answers by name (errors and auto-created
        // topics included), not those of topic ids it does not know.
        if req.include_topic_authorized_operations {
            for t in resp.topics.iter_mut().filter(|t| t.name.is_some()) {
                t.topic_authorized_operations = acl::authorized_operations(ResourceType::Topic);
            }
        }
    }
    Some(resp)
}

/// DescribeCluster's endpoint types (`EndpointType`); this listener is a broker's.
const ENDPOINT_TYPE_BROKER: i8 = 1;
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

pub async fn handle_describe_cluster(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeClusterRequest,
    version: i16,
) -> Option<DescribeClusterResponse> {
    let mut resp = DescribeClusterResponse::default();
    // Kafka refuses an unknown endpoint type, and a controller's on a broker listener (v0 cannot name
    // one: its requests decode as a broker's); such answers carry nothing else.
    let refused = match req.endpoint_type {
        ENDPOINT_TYPE_BROKER => None,
        ENDPOINT_TYPE_CONTROLLER => Some((
            errors::MISMATCHED_ENDPOINT_TYPE,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_string(),
        )),
        other => Some((
            errors::UNSUPPORTED_ENDPOINT_TYPE,
            format!("Unsupported endpoint type {other}"),
        )),
    };
    if let Some((code, message)) = refused {
        resp.error_code = if version == 0 {
            errors::INVALID_REQUEST
        } else {
            code
        };
        resp.error_message = Some(StrBytes::from_string(message));
        return Some(resp);
    }
    resp.endpoint_type = req.endpoint_type;
    resp.cluster_authorized_operations = acl::field(
        req.include_cluster_authorized_operations,
        ResourceType::Cluster,
    );
    resp.cluster_id = StrBytes::from_string(shard.meta().cluster_id.clone());
    resp.controller_id = BrokerId(controller_id(shard));
    resp.brokers = brokers(shard)
        .into_iter()
        .map(|m| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = m.node_id;
            b.host = m.host;
            b.port = m.port;
            b.rack = m.rack;
            b
        })
        .collect();
    Some(resp)
}
