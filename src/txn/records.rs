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
//! Ringtide writes value version 1 with the tagged fields PreviousProducerId, NextProducerId and
//! ClientTransactionVersion (each only when it differs from its default: -1, -1, 0), as Kafka 4.4 writes it
//! while the cluster's finalized `transaction.version` is 1 or more (Ringtide finalizes level 2). It reads
//! both versions; a version 0 value has none of the tagged fields (their defaults).

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

/// The defaults of the tagged fields (and the values a version 0 record implies).
const NO_ID: i64 = -1;

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_compact_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64 + 1);
    out.extend_from_slice(s.as_bytes());
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

/// The record value (version 1, flexible). Kafka writes null partitions for the Empty state.
pub fn value(v: &TxnValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&1i16.to_be_bytes());
    out.extend_from_slice(&v.producer_id.to_be_bytes());
    out.extend_from_slice(&v.producer_epoch.to_be_bytes());
    out.extend_from_slice(&v.timeout_ms.to_be_bytes());
    out.push(v.state as u8);
    if v.state == TxnState::Empty {
        put_uvarint(&mut out, 0);
    } else {
        let by_topic = group_by_topic(&v.partitions);
        put_uvarint(&mut out, by_topic.len() as u64 + 1);
        for (topic, ids) in by_topic {
            put_compact_str(&mut out, topic);
            put_uvarint(&mut out, ids.len() as u64 + 1);
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
            put_uvarint(&mut out, 0); // no tagged fields
        }
    }
    out.extend_from_slice(&v.last_update_ms.to_be_bytes());
    out.extend_from_slice(&v.start_ms.to_be_bytes());
    // Tagged fields in tag order, each only when not its default.
    let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
    if v.prev_producer_id != NO_ID {
        tags.push((0, v.prev_producer_id.to_be_bytes().to_vec()));
    }
    if v.next_producer_id != NO_ID {
        tags.push((1, v.next_producer_id.to_be_bytes().to_vec()));
    }
    if v.client_tv != 0 {
        tags.push((2, v.client_tv.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut out, tags.len() as u64);
    for (tag, data) in tags {
        put_uvarint(&mut out, tag);
        put_uvarint(&mut out, data.len() as u64);
        out.extend_from_slice(&data);
    }
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
    let (mut prev_producer_id, mut next_producer_id, mut client_tv) = (NO_ID, NO_ID, 0i16);
    if flexible {
        r.tags(|tag, data| {
            match tag {
                0 => prev_producer_id = i64::from_be_bytes(data.try_into().ok()?),
                1 => next_producer_id = i64::from_be_bytes(data.try_into().ok()?),
                2 => client_tv = i16::from_be_bytes(data.try_into().ok()?),
                _ => {} // NextProducerEpoch (3) and later tags: not used
            }
            Some(())
        })?;
    }
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
            prev_producer_id,
            next_producer_id,
            client_tv,
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
            prev_producer_id: 3999,
            next_producer_id: if state == TxnState::PrepareCommit {
                4001
            } else {
                -1
            },
            client_tv: 2,
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

    /// The bytes Kafka 4.4 writes for a TransactionLogValue (version 1, Ongoing, one topic "t" with
    /// partitions 0 and 1, previous producer id 1, client transaction version 2), laid out field by field
    /// from the schema.
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
            prev_producer_id: 1,
            next_producer_id: -1,
            client_tv: 2,
        };
        let mut want = vec![0, 1];
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&3i32.to_be_bytes());
        want.push(1);
        want.push(2); // one topic (compact: n + 1)
        want.extend_from_slice(&[2, b't']);
        want.push(3); // two partitions
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.push(0); // the topic's tagged fields
        want.extend_from_slice(&4i64.to_be_bytes());
        want.extend_from_slice(&5i64.to_be_bytes());
        want.push(2); // two tagged fields: PreviousProducerId, ClientTransactionVersion
        want.extend_from_slice(&[0, 8]);
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&[2, 2, 0, 2]);
        assert_eq!(value(&v), want);
        assert_eq!(key("ab"), vec![0, 0, 0, 2, b'a', b'b']);
        // The Empty state: null partitions, no tagged fields at their defaults.
        let empty = TxnValue {
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            prev_producer_id: -1,
            client_tv: 0,
            ..v
        };
        let bytes = value(&empty);
        assert_eq!(bytes[17], 0);
        assert_eq!(*bytes.last().unwrap(), 0);
        assert_eq!(
            decode(&key("x"), Some(&bytes)).unwrap().value.unwrap(),
            empty
        );
    }

    /// Version 0 (classic encoding), as Kafka writes it while `transaction.version` is 0: still read, with
    /// the tagged fields at their defaults.
    #[test]
    fn reads_version_0() {
        let mut b = vec![0, 0];
        b.extend_from_slice(&9i64.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&100i32.to_be_bytes());
        b.push(1); // Ongoing
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&[0, 1, b'x']);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes());
        b.extend_from_slice(&8i64.to_be_bytes());
        let got = decode(&key("t"), Some(&b)).unwrap().value.unwrap();
        assert!(got.partitions.contains(&("x".to_string(), 3)));
        assert_eq!(
            (got.prev_producer_id, got.next_producer_id, got.client_tv),
            (-1, -1, 0)
        );
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
        assert_eq!(got.client_tv, 2);
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
