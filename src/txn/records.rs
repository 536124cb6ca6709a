//! `__transaction_state` records in Kafka's own schemas, so that `kafka-dump-log
//! --transaction-log-decoder` reads what Ringtide writes and Ringtide reads what Kafka wrote.
//!
//! - key, `TransactionLogKey` version 0: version (i16 = 0), transactional id (i16-length string).
//! - value, `TransactionLogValue`: version 0 (classic encoding) or 1 (flexible: compact strings and arrays,
//!   tagged fields: 0 PreviousProducerId, 1 NextProducerId, 2 ClientTransactionVersion, 3 NextProducerEpoch),
//!   fields ProducerId i64, ProducerEpoch i16, TransactionTimeoutMs i32, TransactionStatus i8,
//!   TransactionPartitions (nullable array of topic + partition ids), TransactionLastUpdateTimestampMs i64,
//!   TransactionStartTimestampMs i64. A null value is the tombstone of an expired transactional id.
//!
//! Ringtide writes value version 0, which Kafka writes while the cluster's `transaction.version` feature is
//! below 2 (Ringtide advertises no finalized features, so clients use transaction version 1). It reads both.

use std::collections::BTreeSet;

use super::state::TxnState;
pub use super::state::TxnValue;
use crate::records::reader::Reader;

/// A decoded `__transaction_state` record: the transactional id and its metadata (`None`: tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnValue>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The record key of `transactional_id`.
pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&0i16.to_be_bytes());
    put_str(&mut out, transactional_id);
    out
}

/// The record value (version 0). Kafka writes null partitions for the Empty state.
pub fn value(v: &TxnValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&v.producer_id.to_be_bytes());
    out.extend_from_slice(&v.producer_epoch.to_be_bytes());
    out.extend_from_slice(&v.timeout_ms.to_be_bytes());
    out.push(v.state as u8);
    if v.state == TxnState::Empty {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        let by_topic = group_by_topic(&v.partitions);
        out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
        for (topic, ids) in by_topic {
            put_str(&mut out, topic);
            out.extend_from_slice(&(ids.len() as i32).to_be_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&v.last_update_ms.to_be_bytes());
    out.extend_from_slice(&v.start_ms.to_be_bytes());
    out
}

/// Partitions grouped by topic, topics and partitions in order.
pub fn group_by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut out: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in partitions {
        match out.last_mut() {
            Some((last, ids)) if *last == t.as_str() => ids.push(*p),
            _ => out.push((t.as_str(), vec![*p])),
        }
    }
    out
}

/// Decodes a record of `__transaction_state`; `None` if the key is not a transaction log key Ringtide
/// knows or the value is malformed (such records are skipped, and logged by the caller).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<TxnRecord> {
    let mut k = Reader::new(key);
    if k.i16()? != 0 {
        return None;
    }
    let transactional_id = k.str(false)?;
    let Some(value) = value else {
        return Some(TxnRecord {
            transactional_id,
            value: None,
        });
    };
    let mut r = Reader::new(value);
    let version = r.i16()?;
    let flexible = match version {
        0 => false,
        1 => true,
        _ => return None,
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    if let Some(n) = r.array_len(flexible)? {
        for _ in 0..n {
            let topic = r.str(flexible)?;
            let ids = r.array_len(flexible)?.unwrap_or(0);
            for _ in 0..ids {
                partitions.insert((topic.clone(), r.i32()?));
            }
            if flexible {
                r.skip_tagged()?;
            }
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnRecord {
        transactional_id,
        value: Some(TxnValue {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(state: TxnState) -> TxnValue {
        let mut partitions = BTreeSet::new();
        if state != TxnState::Empty {
            partitions.insert(("a".to_string(), 1));
            partitions.insert(("a".to_string(), 0));
            partitions.insert(("b".to_string(), 7));
        }
        TxnValue {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state,
            partitions,
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trips() {
        for state in [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteAbort,
        ] {
            let v = sample(state);
            let got = decode(&key("tx-1"), Some(&value(&v))).unwrap();
            assert_eq!(got.transactional_id, "tx-1");
            assert_eq!(got.value.unwrap(), v);
        }
        let tomb = decode(&key("tx-1"), None).unwrap();
        assert_eq!(tomb.value, None);
    }

    /// The bytes Kafka 4.4 writes for a TransactionLogValue (version 0, Ongoing, one topic "t" with
    /// partitions 0 and 1), laid out field by field from the schema.
    #[test]
    fn matches_kafka_layout() {
        let mut partitions = BTreeSet::new();
        partitions.insert(("t".to_string(), 0));
        partitions.insert(("t".to_string(), 1));
        let v = TxnValue {
            producer_id: 1,
            producer_epoch: 2,
            timeout_ms: 3,
            state: TxnState::Ongoing,
            partitions,
            last_update_ms: 4,
            start_ms: 5,
        };
        let mut want = vec![0, 0];
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&3i32.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b't']);
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&4i64.to_be_bytes());
        want.extend_from_slice(&5i64.to_be_bytes());
        assert_eq!(value(&v), want);
        assert_eq!(key("ab"), vec![0, 0, 0, 2, b'a', b'b']);
    }

    /// Version 1 (flexible), as Kafka writes with transaction version 2: compact strings and arrays and
    /// tagged fields, which Ringtide reads and skips.
    #[test]
    fn reads_flexible_version() {
        let mut b = vec![0, 1];
        b.extend_from_slice(&9i64.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&100i32.to_be_bytes());
        b.push(4); // CompleteCommit
        b.push(2); // one topic
        b.extend_from_slice(&[2, b'x']);
        b.push(2); // one partition
        b.extend_from_slice(&3i32.to_be_bytes());
        b.push(0); // topic tags
        b.extend_from_slice(&7i64.to_be_bytes());
        b.extend_from_slice(&8i64.to_be_bytes());
        b.extend_from_slice(&[1, 2, 2, 0, 2]); // one tag: ClientTransactionVersion = 2
        let got = decode(&key("t"), Some(&b)).unwrap().value.unwrap();
        assert_eq!(got.state, TxnState::CompleteCommit);
        assert!(got.partitions.contains(&("x".to_string(), 3)));
        assert_eq!((got.last_update_ms, got.start_ms), (7, 8));
    }

    #[test]
    fn garbage_is_refused_not_panicking() {
        let v = value(&sample(TxnState::Ongoing));
        for cut in 0..v.len() {
            assert!(decode(&key("x"), Some(&v[..cut])).is_none() || cut == v.len());
        }
        assert!(decode(&[0, 1, 0, 0], Some(&v)).is_none());
        assert!(decode(&[0, 0, 0x7f, 0xff], Some(&v)).is_none());
        let mut bad_state = v.clone();
        bad_state[16] = 42;
        assert!(decode(&key("x"), Some(&bad_state)).is_none());
    }
}
