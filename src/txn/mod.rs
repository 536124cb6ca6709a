//! The transaction coordinator: Kafka's transactions (KIP-98), transaction versions 1 and 2 (KIP-890:
//! with version 2, which Ringtide finalizes as Kafka 4.4 does, every EndTxn bumps the producer epoch and
//! a transactional Produce v12+ / TxnOffsetCommit v5+ adds its partitions itself).
//!
//! Placement: a transactional id lives on the core that owns partition [`partition_for`] of the internal
//! topic `__transaction_state` (Kafka's hashing, `transaction.state.log.num.partitions` partitions), so
//! all state of one id is on one core and needs no locks. That core keeps the id in memory
//! ([`coordinator::TxnCoordinator`]), writes every change to that partition in Kafka's record format
//! ([`records`]) before answering, replays the partition when it opens, and ends transactions by writing
//! markers to their partitions on the cores that own them.
//!
//! The id's state machine ([`state::TxnMetadata`]) is pure; the log and the markers stay in
//! [`coordinator`].

pub mod coordinator;
pub mod records;
pub mod state;

use std::rc::Rc;

use coordinator::TxnHost;

/// The internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The `__transaction_state` partition of `transactional_id` (Kafka's `partitionFor`: the same hash as
/// groups), with the topic's actual partition count if it exists.
pub fn partition_for<H: TxnHost>(shard: &Rc<H>, transactional_id: &str) -> i32 {
    let n = shard
        .topic_partitions(TXN_TOPIC)
        .unwrap_or(shard.txn_config().state_topic_partitions);
    crate::group::coordinator_partition(transactional_id, n)
}
