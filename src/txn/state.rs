//! One transactional id's state and its transitions, as Kafka 4.4's `TransactionMetadata`.
//!
//! Two transaction versions (the `transaction.version` feature, KIP-890), chosen per request by the
//! client's API versions as Kafka chooses them: with version 1 the epoch is bumped by InitProducerId and by
//! fencing only, and EndTxn is answered for the epoch the client has; with version 2 every EndTxn bumps
//! the epoch (the markers carry the bumped epoch, and EndTxn v5 answers it), a retried EndTxn names the
//! previous epoch, and when the epoch is exhausted the transaction ends with a new producer id at epoch 0
//! (`next_producer_id`, applied at completion). Fencing (a new producer instance, a timeout) always uses
//! version 2, the broker's own finalized level, as Kafka does.
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
    /// Tag 0, PreviousProducerId (default -1).
    pub prev_producer_id: i64,
    /// Tag 1, NextProducerId (default -1).
    pub next_producer_id: i64,
    /// Tag 2, ClientTransactionVersion (default 0).
    pub client_tv: i16,
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
            prev_producer_id: m.last_producer_id,
            next_producer_id: m.next_producer_id,
            client_tv: m.client_tv,
        }
    }
}

/// Kafka's "no producer id" / "no epoch".
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// Transaction version 0 (Kafka's `TV_0`: what a client of transaction version 1 is recorded with).
pub const TV_0: i16 = 0;
/// Transaction version 2 (KIP-890 part 2): an epoch bump on every EndTxn. Also this broker's finalized
/// `transaction.version` level, which the coordinator's own aborts (fencing, timeouts) use.
pub const TV_2: i16 = 2;

/// Kafka's `TransactionVersion.supportsEpochBump`.
pub fn supports_epoch_bump(transaction_version: i16) -> bool {
    transaction_version >= TV_2
}

/// What an EndTxn of transaction version 2 does (Kafka's `endTransaction` above transaction version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStep {
    /// Prepare the commit or abort; `no_partition_added`: an abort with no transaction (Empty or
    /// Complete*), which starts and ends one at once.
    Prepare { no_partition_added: bool },
    /// A retry of an EndTxn that already completed: answer NONE with the current producer id and epoch.
    Retry,
}

/// One transactional id as the coordinator keeps it. Owned by the core that owns its
/// `__transaction_state` partition.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last transition (Kafka's `prevProducerId`): differs from
    /// `producer_id` right after a rotation, for a retried InitProducerId or EndTxn.
    pub last_producer_id: i64,
    /// The producer id a prepared transaction of version 2 with an exhausted epoch completes with (Kafka's
    /// `nextProducerId`), else [`NO_PRODUCER_ID`].
    pub next_producer_id: i64,
    /// The transaction version of the client's last transition (Kafka's `clientTransactionVersion`).
    pub client_tv: i16,
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
            next_producer_id: NO_PRODUCER_ID,
            client_tv: TV_0,
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
            last_producer_id: v.prev_producer_id,
            next_producer_id: v.next_producer_id,
            client_tv: v.client_tv,
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
        self.to_empty(
            new_id,
            0,
            if remember {
                self.producer_epoch
            } else {
                NO_PRODUCER_EPOCH
            },
            timeout_ms,
            now,
        )
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
            last_producer_id: self.producer_id,
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
    pub fn add_partitions(
        &self,
        partitions: &[(String, i32)],
        client_tv: i16,
        now: i64,
    ) -> TxnMetadata {
        let mut next = self.transit();
        next.client_tv = client_tv;
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

    /// A copy for the next transition: the current producer id becomes the previous one (Kafka's
    /// `prepareTransitionTo`).
    fn transit(&self) -> TxnMetadata {
        TxnMetadata {
            last_producer_id: self.producer_id,
            ..self.clone()
        }
    }

    /// EndTxn (Kafka's `prepareAbortOrCommit`): PrepareCommit or PrepareAbort. With transaction version 2
    /// the epoch is bumped (not past `i16::MAX`: an abort there goes through unbumped) and the previous one
    /// kept; `next_producer_id` is the id the transaction completes with when the epoch is exhausted.
    pub fn prepare_end(
        &self,
        commit: bool,
        client_tv: i16,
        next_producer_id: i64,
        no_partition_added: bool,
        now: i64,
    ) -> TxnMetadata {
        let mut next = self.transit();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if supports_epoch_bump(client_tv) {
            if self.producer_epoch != i16::MAX || commit {
                next.producer_epoch = self.producer_epoch.saturating_add(1);
            }
            next.last_producer_epoch = self.producer_epoch;
        }
        if no_partition_added {
            next.start_ms = now;
        }
        next.next_producer_id = next_producer_id;
        next.client_tv = client_tv;
        next.last_update_ms = now;
        next
    }

    /// Fencing an ongoing transaction (a new producer instance, a timeout): the abort Kafka 4.4's
    /// `endTransaction` prepares with the broker's transaction version, 2. Its `prepareFenceProducerEpoch`
    /// bump is dropped on that path, so the epoch is bumped once, by the abort itself, and the previous
    /// one kept; an exhausted epoch ends with `next_producer_id` as any transaction of version 2 does.
    pub fn fence_and_abort(&self, next_producer_id: i64, now: i64) -> TxnMetadata {
        self.prepare_end(false, TV_2, next_producer_id, false, now)
    }

    /// After every marker is written: CompleteCommit or CompleteAbort, no partitions (Kafka's
    /// `prepareComplete`). A transaction of version 2 whose epoch was exhausted moves to its next producer
    /// id at epoch 0.
    pub fn complete(&self, now: i64) -> TxnMetadata {
        let mut next = self.transit();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        if supports_epoch_bump(self.client_tv) && self.next_producer_id != NO_PRODUCER_ID {
            next.producer_id = self.next_producer_id;
            next.producer_epoch = 0;
        }
        next.next_producer_id = NO_PRODUCER_ID;
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

    /// The checks a client's EndTxn of transaction version 2 makes (Kafka's `endTransaction` for
    /// transaction version 2 and above). A retry names the epoch before the bump (or, after a rotation, the
    /// previous producer id at the exhausted epoch):
    ///
    /// | state          | abort, retry | abort, current | commit, retry | commit, current |
    /// |----------------|--------------|----------------|---------------|-----------------|
    /// | Empty          | FENCED       | prepare        | FENCED        | INVALID_TXN     |
    /// | CompleteAbort  | NONE         | prepare        | INVALID_TXN   | INVALID_TXN     |
    /// | CompleteCommit | INVALID_TXN  | prepare        | NONE          | INVALID_TXN     |
    pub fn check_end_v2(&self, producer_id: i64, epoch: i16, commit: bool) -> Result<EndStep, i16> {
        let retry_on_overflow = self.last_producer_id == producer_id
            && epoch == i16::MAX - 1
            && self.producer_epoch == 0;
        let retry_on_bump = i32::from(self.producer_epoch) == i32::from(epoch) + 1;
        let valid_epoch = match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_bump,
            TxnState::CompleteCommit | TxnState::CompleteAbort => {
                retry_on_bump || retry_on_overflow || epoch == self.producer_epoch
            }
            _ => epoch == self.producer_epoch,
        };
        let retry = retry_on_bump || retry_on_overflow;
        if self.producer_id != producer_id && !retry_on_overflow {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if !valid_epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        if self.pending {
            return Err(errors::CONCURRENT_TRANSACTIONS);
        }
        let prepare = |no_partition_added| Ok(EndStep::Prepare { no_partition_added });
        match (self.state, commit) {
            (TxnState::Ongoing, _) => prepare(false),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) if retry => {
                Ok(EndStep::Retry)
            }
            (TxnState::CompleteCommit, false) if retry => Err(errors::INVALID_TXN_STATE),
            (TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Empty, false) => {
                prepare(true)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            // Never held by a loaded id (Kafka treats them as a bug); retriable rather than fatal.
            (TxnState::Dead | TxnState::PrepareEpochFence, _) => {
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
        m.add_partitions(&[("a".into(), 0)], TV_0, 2)
    }

    #[test]
    fn epoch_bumps_and_retries() {
        let m = ongoing()
            .prepare_end(true, TV_0, NO_PRODUCER_ID, false, 3)
            .complete(4);
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
        let prepared = m.prepare_end(true, TV_0, NO_PRODUCER_ID, false, 3);
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
        let mut tired = m.clone();
        tired.producer_epoch = i16::MAX - 1;
        let mut tired = tired
            .prepare_end(false, TV_0, NO_PRODUCER_ID, false, 5)
            .complete(6);
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

    fn ongoing_v2() -> TxnMetadata {
        let m = TxnMetadata::new("t", 10, 60_000, 0)
            .increment_epoch(60_000, None, 1)
            .unwrap();
        m.add_partitions(&[("a".into(), 0)], TV_2, 2)
    }

    /// Transaction version 2: every EndTxn bumps the epoch (the prepared state and its markers carry the
    /// bumped one, the previous one is kept), and the complete state keeps it.
    #[test]
    fn v2_end_bumps_the_epoch() {
        let m = ongoing_v2();
        assert_eq!(m.client_tv, TV_2);
        assert_eq!(
            m.check_end_v2(10, 0, true),
            Ok(EndStep::Prepare {
                no_partition_added: false
            })
        );
        let prepared = m.prepare_end(true, TV_2, NO_PRODUCER_ID, false, 3);
        assert_eq!(
            (
                prepared.state,
                prepared.producer_epoch,
                prepared.last_producer_epoch
            ),
            (TxnState::PrepareCommit, 1, 0)
        );
        assert_eq!(prepared.start_ms, m.start_ms);
        // While prepared: a retry (the old epoch) waits, the new epoch is not valid yet.
        let mut pending = prepared.clone();
        pending.pending = false;
        assert_eq!(
            pending.check_end_v2(10, 0, true),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            pending.check_end_v2(10, 1, true),
            Err(errors::PRODUCER_FENCED)
        );
        let done = prepared.complete(4);
        assert_eq!(
            (done.state, done.producer_id, done.producer_epoch),
            (TxnState::CompleteCommit, 10, 1)
        );
        assert!(done.partitions.is_empty());
        // The client's retry of that EndTxn (epoch 0) is answered NONE; an abort retry is invalid.
        assert_eq!(done.check_end_v2(10, 0, true), Ok(EndStep::Retry));
        assert_eq!(
            done.check_end_v2(10, 0, false),
            Err(errors::INVALID_TXN_STATE)
        );
        // The current epoch: a commit without a transaction is invalid, an abort bumps again.
        assert_eq!(
            done.check_end_v2(10, 1, true),
            Err(errors::INVALID_TXN_STATE)
        );
        assert_eq!(
            done.check_end_v2(10, 1, false),
            Ok(EndStep::Prepare {
                no_partition_added: true
            })
        );
        let empty_abort = done.prepare_end(false, TV_2, NO_PRODUCER_ID, true, 9);
        assert_eq!((empty_abort.producer_epoch, empty_abort.start_ms), (2, 9));
        // Older and newer epochs are fenced.
        assert_eq!(done.check_end_v2(10, 3, true), Err(errors::PRODUCER_FENCED));
        assert_eq!(
            done.check_end_v2(11, 1, true),
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        );
    }

    /// Kafka's table for Empty and CompleteAbort with transaction version 2.
    #[test]
    fn v2_end_on_empty_and_complete_abort() {
        let empty = TxnMetadata::new("t", 10, 1000, 0)
            .increment_epoch(1000, None, 0)
            .unwrap()
            .increment_epoch(1000, None, 0)
            .unwrap();
        assert_eq!(empty.producer_epoch, 1);
        assert_eq!(
            empty.check_end_v2(10, 1, false),
            Ok(EndStep::Prepare {
                no_partition_added: true
            })
        );
        assert_eq!(
            empty.check_end_v2(10, 1, true),
            Err(errors::INVALID_TXN_STATE)
        );
        assert_eq!(
            empty.check_end_v2(10, 0, false),
            Err(errors::PRODUCER_FENCED)
        );
        assert_eq!(
            empty.check_end_v2(10, 0, true),
            Err(errors::PRODUCER_FENCED)
        );
        let aborted = ongoing_v2()
            .prepare_end(false, TV_2, NO_PRODUCER_ID, false, 3)
            .complete(4);
        assert_eq!(
            (aborted.state, aborted.producer_epoch),
            (TxnState::CompleteAbort, 1)
        );
        assert_eq!(aborted.check_end_v2(10, 0, false), Ok(EndStep::Retry));
        assert_eq!(
            aborted.check_end_v2(10, 0, true),
            Err(errors::INVALID_TXN_STATE)
        );
        assert_eq!(
            aborted.check_end_v2(10, 1, true),
            Err(errors::INVALID_TXN_STATE)
        );
    }

    /// An exhausted epoch: the transaction completes with the next producer id at epoch 0, the old id is
    /// remembered, and the client's retry with the old id and epoch is answered NONE.
    #[test]
    fn v2_rotation_when_the_epoch_is_exhausted() {
        let mut m = ongoing_v2();
        m.producer_epoch = i16::MAX - 1;
        assert!(epoch_exhausted(m.producer_epoch));
        let prepared = m.prepare_end(true, TV_2, 77, false, 3);
        assert_eq!(
            (prepared.producer_epoch, prepared.next_producer_id),
            (i16::MAX, 77)
        );
        let done = prepared.complete(4);
        assert_eq!(
            (
                done.producer_id,
                done.producer_epoch,
                done.last_producer_id,
                done.next_producer_id
            ),
            (77, 0, 10, NO_PRODUCER_ID)
        );
        assert_eq!(done.last_producer_epoch, i16::MAX - 1);
        assert_eq!(
            done.check_end_v2(10, i16::MAX - 1, true),
            Ok(EndStep::Retry)
        );
        assert_eq!(
            done.check_end_v2(10, 5, true),
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        );
        // Transaction version 1 never rotates at completion.
        let mut v1 = ongoing();
        v1.producer_epoch = i16::MAX - 1;
        let v1_done = v1.prepare_end(true, TV_0, 77, false, 3).complete(4);
        assert_eq!(
            (v1_done.producer_id, v1_done.producer_epoch),
            (10, i16::MAX - 1)
        );
    }

    /// Fencing aborts as a transaction of version 2 (Kafka 4.4): one bump, the previous epoch kept, a
    /// rotation when the epoch is exhausted, nothing past `i16::MAX`.
    #[test]
    fn fencing_aborts_with_one_bump() {
        let fenced = ongoing().fence_and_abort(NO_PRODUCER_ID, 5);
        assert_eq!(
            (
                fenced.state,
                fenced.producer_epoch,
                fenced.last_producer_epoch,
                fenced.client_tv
            ),
            (TxnState::PrepareAbort, 1, 0, TV_2)
        );
        let mut top = ongoing();
        top.producer_epoch = i16::MAX - 1;
        let fenced = top.fence_and_abort(55, 5);
        assert_eq!(fenced.producer_epoch, i16::MAX);
        let done = fenced.complete(6);
        assert_eq!((done.producer_id, done.producer_epoch), (55, 0));
        let mut max = ongoing();
        max.producer_epoch = i16::MAX;
        assert_eq!(max.fence_and_abort(56, 5).producer_epoch, i16::MAX);
    }
}
