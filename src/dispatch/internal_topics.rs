//! The internal topics, created on first need as Kafka creates them: `__consumer_offsets` (the first
//! FindCoordinator of a group) and `__transaction_state` (the first of a transactional id).

use std::rc::Rc;
use std::sync::Arc;

use super::admin::{create_topics, NewTopic};
use crate::group::OFFSETS_TOPIC;
use crate::metadata::TopicMeta;
use crate::protocol::errors;
use crate::shard::Shard;
use crate::txn::TXN_TOPIC;

/// Creates `__consumer_offsets` on first need (as Kafka does on the first FindCoordinator).
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, i16> {
    if let Some(t) = shard.topic(OFFSETS_TOPIC) {
        return Ok(t);
    }
    let mut configs = std::collections::BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        shard.config.group.offsets_topic_segment_bytes.to_string(),
    );
    // Kafka's settings: compacted (the cleaner keeps every group's latest offsets and metadata, so a
    // start loads a bounded amount), never deleted by age.
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: shard.config.group.offsets_topic_partitions,
        configs,
        assignment: Vec::new(),
    };
    for r in create_topics(shard, vec![topic], false).await {
        if let Err((code, msg)) = r {
            if code != errors::TOPIC_ALREADY_EXISTS {
                tracing::error!(code, msg, "creating __consumer_offsets failed");
            }
        }
    }
    shard
        .topic(OFFSETS_TOPIC)
        .ok_or(errors::COORDINATOR_NOT_AVAILABLE)
}

/// Creates `__transaction_state` on first need (as Kafka does on the first FindCoordinator of key type 1).
pub async fn ensure_txn_topic(shard: &Rc<Shard>) -> Result<Arc<TopicMeta>, i16> {
    if let Some(t) = shard.topic(TXN_TOPIC) {
        return Ok(t);
    }
    let mut configs = std::collections::BTreeMap::new();
    // Kafka's settings: compacted, never deleted by age.
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        shard.config.txn.state_topic_segment_bytes.to_string(),
    );
    let topic = NewTopic {
        name: TXN_TOPIC.to_string(),
        partitions: shard.config.txn.state_topic_partitions,
        configs,
        assignment: Vec::new(),
    };
    for r in create_topics(shard, vec![topic], false).await {
        if let Err((code, msg)) = r {
            if code != errors::TOPIC_ALREADY_EXISTS {
                tracing::error!(code, msg, "creating __transaction_state failed");
            }
        }
    }
    shard
        .topic(TXN_TOPIC)
        .ok_or(errors::COORDINATOR_NOT_AVAILABLE)
}
