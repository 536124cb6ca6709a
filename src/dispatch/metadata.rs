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

fn broker(shard: &Shard) -> MetadataResponseBroker {
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(shard.config.node_id);
    b.host = StrBytes::from_string(shard.config.advertised.host.clone());
    b.port = shard.config.advertised.port as i32;
    b
}

pub fn topic_entry(shard: &Shard, t: &TopicMeta, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(shard.config.node_id);
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
            part.leader_id = node;
            if version >= 7 {
                part.leader_epoch = t.leader_epoch;
            }
            part.replica_nodes = vec![node];
            part.isr_nodes = vec![node];
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
    resp.brokers = vec![broker(shard)];
    if version >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(shard.meta().cluster_id.clone()));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(shard.config.node_id);
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
                    })
                    .collect();
                let results = admin::create_topics(shard, new, false).await;
                for (name, result) in to_create.into_iter().zip(results) {
                    match result {
                        Ok(topic) => resp.topics.push(topic_entry(shard, &topic, version)),
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
    resp.controller_id = BrokerId(shard.config.node_id);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(shard.config.node_id);
    b.host = StrBytes::from_string(shard.config.advertised.host.clone());
    b.port = shard.config.advertised.port as i32;
    resp.brokers = vec![b];
    Some(resp)
}
