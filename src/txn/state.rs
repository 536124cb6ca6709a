//! One transactional id's state and its transitions, as Kafka's `TransactionMetadata` (transaction
//! version 1: the epoch is bumped by InitProducerId and by fencing, not by every transaction).
//!
//! Pure, no I/O. The coordinator computes a transition, writes the resulting value to
//! `__transaction_state`, and applies it once durable; while a write is on its way the id is
//! `pending` and every other request for it is answered CONCURRENT_TRANSACTIONS.

use std::collections::BTreeSet;

use crate::protocol::errors;

/// Kafka's `TransactionState`, with its ids (the `TransactionStatus` byte of the log value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions report (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// A transactional id in this state may expire (no transaction in flight).
    pub fn expiration_allowed(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// The value of a `__transaction_state` record (encoded and decoded by [`super::records`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

impl TxnValue {
    pub fn of(m: &TxnMetadata) -> TxnValue {
        TxnValue {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            timeout_ms: m.timeout_ms,
            state: m.state,
            partitions: m.partitions.clone(),
            last_update_ms: m.last_update_ms,
            start_ms: m.start_ms,
        }
    }
}

/// Kafka's "no producer id" / "no epoch".
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// One transactional id as the coordinator keeps it. Owned by the core that owns its
/// `__transaction_state` partition.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhausted), for a retried InitProducerId.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, for a retried InitProducerId (KIP-360).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction started (its first AddPartitions), -1 if none.
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A write of this id is on its way to the log.
    pub pending: bool,
}

/// Kafka's `isEpochExhausted`: an epoch this high cannot be bumped twice more (once to fence, once for
/// the retry).
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl TxnMetadata {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
            pending: false,
        }
    }

    /// The metadata a log value restores (at load).
    pub fn restore(transactional_id: &str, v: &TxnValue) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: v.producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: v.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: v.timeout_ms,
            state: v.state,
            partitions: v.partitions.clone(),
            start_ms: v.start_ms,
            last_update_ms: v.last_update_ms,
            pending: false,
        }
    }

    /// Whether a producer id and epoch an InitProducerId names may take this id over (Kafka's
    /// `isValidProducerId`).
    pub fn accepts_expected(&self, producer_id: i64, epoch: i16) -> bool {
        self.producer_epoch == NO_PRODUCER_EPOCH
            || producer_id == self.producer_id
            || (producer_id == self.last_producer_id && epoch_exhausted(epoch))
    }

    /// InitProducerId on an id with no transaction in flight: the epoch bumped (Kafka's
    /// `prepareIncrementProducerEpoch`), or the same epoch for a retry of the bump the producer did not
    /// hear about.
    pub fn increment_epoch(
        &self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now: i64,
    ) -> Result<TxnMetadata, i16> {
        let bumped = self.producer_epoch.wrapping_add(1);
        let (epoch, last) = match expected_epoch {
            None => (bumped, NO_PRODUCER_EPOCH),
            Some(e) if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(errors::PRODUCER_FENCED),
        };
        Ok(self.to_empty(self.producer_id, epoch, last, timeout_ms, now))
    }

    /// InitProducerId when the epoch is exhausted: a new producer id at epoch 0 (Kafka's
    /// `prepareProducerIdRotation`).
    pub fn rotate_producer_id(
        &self,
        new_id: i64,
        timeout_ms: i32,
        now: i64,
        remember: bool,
    ) -> TxnMetadata {
        let mut next = self.to_empty(
            new_id,
            0,
            if remember {
                self.producer_epoch
            } else {
                NO_PRODUCER_EPOCH
            },
            timeout_ms,
            now,
        );
        next.last_producer_id = if remember {
            self.producer_id
        } else {
            NO_PRODUCER_ID
        };
        next
    }

    fn to_empty(
        &self,
        id: i64,
        epoch: i16,
        last_epoch: i16,
        timeout_ms: i32,
        now: i64,
    ) -> TxnMetadata {
        TxnMetadata {
            producer_id: id,
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
            pending: false,
            ..self.clone()
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the transaction, which becomes (or
    /// stays) Ongoing (Kafka's `prepareAddPartitions`).
    pub fn add_partitions(&self, partitions: &[(String, i32)], now: i64) -> TxnMetadata {
        let mut next = self.clone();
        if matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) {
            next.start_ms = now;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now;
        next
    }

    /// EndTxn: Ongoing becomes PrepareCommit or PrepareAbort.
    pub fn prepare_end(&self, commit: bool, epoch: i16, now: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        next.producer_epoch = epoch;
        if epoch != self.producer_epoch {
            // Fencing: the bumped epoch is never returned to a client.
            next.last_producer_epoch = NO_PRODUCER_EPOCH;
        }
        next.last_update_ms = now;
        next
    }

    /// After every marker is written: CompleteCommit or CompleteAbort, no partitions.
    pub fn complete(&self, now: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.last_update_ms = now;
        next
    }

    /// The checks EndTxn makes before preparing (Kafka's `endTransaction`): `Ok(true)` prepare,
    /// `Ok(false)` already done (a retry: answer NONE), `Err` the error.
    pub fn check_end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
    ) -> Result<bool, i16> {
        if self.producer_id != producer_id {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if (from_client && epoch != self.producer_epoch) || epoch < self.producer_epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        if self.pending {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(true),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(false),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            _ => Err(errors::INVALID_TXN_STATE),
        }
    }

    /// The checks AddPartitionsToTxn / AddOffsetsToTxn make: `Ok(true)` add, `Ok(false)` nothing to do.
    pub fn check_add(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<bool, i16> {
        if self.producer_id != producer_id {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if self.producer_epoch != epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        if self.pending || matches!(self.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        if self.state == TxnState::Ongoing && partitions.iter().all(|p| self.partitions.contains(p))
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// The ongoing transaction ran past its timeout.
    pub fn timed_out(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && self.start_ms + i64::from(self.timeout_ms) < now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnMetadata {
        let m = TxnMetadata::new("t", 10, 60_000, 0);
        let m = m.increment_epoch(60_000, None, 1).unwrap();
        assert_eq!((m.producer_epoch, m.state), (0, TxnState::Empty));
        m.add_partitions(&[("a".into(), 0)], 2)
    }

    #[test]
    fn epoch_bumps_and_retries() {
        let m = ongoing().prepare_end(true, 0, 3).complete(4);
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        // KIP-360: the producer names its id and epoch; a retry of the same bump gets the same epoch.
        let bumped = m.increment_epoch(60_000, Some(0), 5).unwrap();
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        let retried = bumped.increment_epoch(60_000, Some(0), 6).unwrap();
        assert_eq!(retried.producer_epoch, 1);
        assert_eq!(
            bumped.increment_epoch(60_000, Some(7), 6),
            Err(errors::PRODUCER_FENCED)
        );
    }

    #[test]
    fn end_and_add_checks() {
        let m = ongoing();
        assert_eq!(m.check_end(10, 0, true, true), Ok(true));
        assert_eq!(
            m.check_end(11, 0, true, true),
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(m.check_end(10, 1, true, true), Err(errors::PRODUCER_FENCED));
        let prepared = m.prepare_end(true, 0, 3);
        assert_eq!(
            prepared.check_end(10, 0, true, true),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            prepared.check_end(10, 0, false, true),
            Err(errors::INVALID_TXN_STATE)
        );
        let done = prepared.complete(4);
        assert_eq!(done.check_end(10, 0, true, true), Ok(false));
        assert_eq!(
            done.check_end(10, 0, false, true),
            Err(errors::INVALID_TXN_STATE)
        );
        assert_eq!(m.check_add(10, 0, &[("a".into(), 0)]), Ok(false));
        assert_eq!(m.check_add(10, 0, &[("a".into(), 1)]), Ok(true));
        assert_eq!(
            prepared.check_add(10, 0, &[("a".into(), 1)]),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        let fresh = TxnMetadata::new("t", 10, 1000, 0)
            .increment_epoch(1000, None, 0)
            .unwrap();
        assert_eq!(
            fresh.check_end(10, 0, true, true),
            Err(errors::INVALID_TXN_STATE)
        );
    }

    #[test]
    fn timeouts_and_rotation() {
        let m = ongoing();
        assert!(!m.timed_out(60_002));
        assert!(m.timed_out(60_003));
        let mut tired = m.prepare_end(false, i16::MAX - 1, 5).complete(6);
        assert!(epoch_exhausted(tired.producer_epoch));
        tired = tired.rotate_producer_id(99, 1000, 7, true);
        assert_eq!(
            (
                tired.producer_id,
                tired.producer_epoch,
                tired.last_producer_id
            ),
            (99, 0, 10)
        );
        assert!(tired.accepts_expected(10, i16::MAX - 1));
        assert!(!tired.accepts_expected(10, 3));
    }
}
