//! Records of `__consumer_offsets`, in Apache Kafka's own key/value schemas, so that Kafka's tools
//! (`kafka-dump-log --offsets-decoder`) read what Ringtide writes and vice versa.
//!
//! Every key starts with an i16 version that names the record type; the value starts with its own i16
//! schema version. A record with a null value is a tombstone (the key was deleted).
//!
//! ```text
//! OffsetCommitKey   v0/v1: group string, topic string, partition i32
//! GroupMetadataKey  v2:    group string
//! OffsetCommitValue v0: offset i64, metadata string, commit_ts i64
//!                   v1: offset i64, metadata string, commit_ts i64, expire_ts i64
//!                   v2: offset i64, metadata string, commit_ts i64
//!                   v3: offset i64, leader_epoch i32, metadata string, commit_ts i64
//!                   v4: as v3, flexible (compact strings, tagged fields)   <- written
//! GroupMetadataValue v0..v4: protocol_type string, generation i32, protocol string?, leader string?,
//!                   [v2+ current_state_ts i64], members [member_id, [v3+ instance_id string?],
//!                   client_id, client_host, [v1+ rebalance_timeout i32], session_timeout i32,
//!                   subscription bytes, assignment bytes]; v4 flexible.   v3 is written.
//! ```
//!
//! Byte layouts were checked against Kafka 4.4's `GroupCoordinatorRecordSerde` (see the tests).
//!
//! Fault model: the partition may hold records written by a newer Kafka (unknown key versions, e.g. the
//! KIP-848 records) or damaged bytes; decoding never panics and unknown records are skipped.

use bytes::Bytes;

use crate::records::{self, HEADER_BYTES};

const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 4;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member as stored in the group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group as stored after a rebalance (or when it becomes empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded record of `__consumer_offsets`. `None` payloads are tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

// ---------------------------------------------------------------- encoding

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.extend_from_slice(&OFFSET_COMMIT_KEY_VERSION.to_be_bytes());
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + group.len());
    k.extend_from_slice(&GROUP_METADATA_KEY_VERSION.to_be_bytes());
    put_str(&mut k, group);
    k
}

pub fn offset_value(v: &OffsetValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + v.metadata.len());
    out.extend_from_slice(&OFFSET_COMMIT_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&v.offset.to_be_bytes());
    out.extend_from_slice(&v.leader_epoch.to_be_bytes());
    put_uvarint(&mut out, v.metadata.len() as u64 + 1); // compact string
    out.extend_from_slice(v.metadata.as_bytes());
    out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
    out.push(0); // no tagged fields
    out
}

pub fn group_value(v: &GroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&GROUP_METADATA_VALUE_VERSION.to_be_bytes());
    put_str(&mut out, &v.protocol_type);
    out.extend_from_slice(&v.generation.to_be_bytes());
    put_nullable_str(&mut out, v.protocol.as_deref());
    put_nullable_str(&mut out, v.leader.as_deref());
    out.extend_from_slice(&v.current_state_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(v.members.len() as i32).to_be_bytes());
    for m in &v.members {
        put_str(&mut out, &m.member_id);
        put_nullable_str(&mut out, m.instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

// ---------------------------------------------------------------- decoding

use crate::records::reader::Reader;

fn decode_offset_value(b: &[u8]) -> Option<OffsetValue> {
    let mut r = Reader::new(b);
    let version = r.i16()?;
    let offset = r.i64()?;
    let (leader_epoch, metadata, commit_ts) = match version {
        0..=2 => {
            let m = r.str(false)?;
            (-1, m, r.i64()?)
        }
        3 | 4 => {
            let epoch = r.i32()?;
            let m = r.str(version >= 4)?;
            (epoch, m, r.i64()?)
        }
        _ => return None,
    };
    Some(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms: commit_ts,
    })
}

fn decode_group_value(b: &[u8]) -> Option<GroupValue> {
    let mut r = Reader::new(b);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return None;
    }
    let c = version >= 4;
    let protocol_type = r.str(c)?;
    let generation = r.i32()?;
    let protocol = r.nullable_str(c)?;
    let leader = r.nullable_str(c)?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = if c {
        r.uvarint()? as i64 - 1
    } else {
        r.i32()? as i64
    };
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.str(c)?;
        let instance_id = if version >= 3 {
            r.nullable_str(c)?
        } else {
            None
        };
        let client_id = r.str(c)?;
        let client_host = r.str(c)?;
        let session_or_rebalance = r.i32()?;
        let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
            (session_or_rebalance, r.i32()?)
        } else {
            (session_or_rebalance, session_or_rebalance)
        };
        let subscription = r.bytes(c)?;
        let assignment = r.bytes(c)?;
        if c {
            r.skip_tagged()?;
        }
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Decodes one record's key and value. `None` for record types this broker does not use or for damage.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut r = Reader::new(key);
    match r.i16()? {
        0 | 1 => {
            let group = r.str(false)?;
            let topic = r.str(false)?;
            let partition = r.i32()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_offset_value(v)?),
            };
            Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = r.str(false)?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(OffsetsRecord::Group { group, value })
        }
        _ => None,
    }
}

/// Calls `f(key, value)` for every record of every uncompressed, non-control batch in `buf` (as read from
/// the log). Compressed batches are skipped: the broker writes this topic uncompressed.
pub fn for_each_record(buf: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    for item in records::iter_batches(buf) {
        let Ok((at, h)) = item else { return };
        if h.is_control() || h.compression() != records::Compression::None {
            continue;
        }
        let batch = &buf[at..at + h.total_size()];
        let mut r = Reader::new(&batch[HEADER_BYTES..]);
        for _ in 0..h.records_count.max(0) {
            let Some(len) = r.varint() else { break };
            let Some(rec) = r.take(len.max(0) as usize) else {
                break;
            };
            let mut rr = Reader::new(rec);
            let parsed = (|| {
                rr.take(1)?; // attributes
                rr.varint()?; // timestamp delta
                rr.varint()?; // offset delta
                let klen = rr.varint()?;
                let key = if klen < 0 {
                    return None;
                } else {
                    rr.take(klen as usize)?
                };
                let vlen = rr.varint()?;
                let value = if vlen < 0 {
                    None
                } else {
                    Some(rr.take(vlen as usize)?)
                };
                Some((key, value))
            })();
            if let Some((k, v)) = parsed {
                f(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // Golden bytes printed by Kafka 4.4's GroupCoordinatorRecordSerde (GroupCoordinatorRecordHelpers
    // .newOffsetCommitRecord("g1", "t1", 5, OffsetAndMetadata(42, epoch 3, "meta", 1700000000000)) etc.).
    #[test]
    fn matches_kafka_serde() {
        assert_eq!(
            hex(&offset_key("g1", "t1", 5)),
            "0001000267310002743100000005"
        );
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(
            hex(&offset_value(&v)),
            "0004000000000000002a00000003056d6574610000018bcfe5680000"
        );
        let v2 = OffsetValue {
            offset: 7,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1_700_000_000_001,
        };
        assert_eq!(
            hex(&offset_value(&v2)),
            "00040000000000000007ffffffff010000018bcfe5680100"
        );
        assert_eq!(hex(&group_key("g1")), "000200026731");
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 1_700_000_000_002,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c1".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(&[1, 2]),
                assignment: Bytes::from_static(&[3]),
            }],
        };
        assert_eq!(hex(&group_value(&g)), "00030008636f6e73756d657200000003000572616e676500026d310000018bcfe568020000000100026d310002693100026331000a2f3132372e302e302e31000493e00000afc80000000201020000000103");
        let empty = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 1_700_000_000_003,
            members: vec![],
        };
        assert_eq!(
            hex(&group_value(&empty)),
            "00030008636f6e73756d657200000004ffffffff0000018bcfe5680300000000"
        );

        // Round trips through the decoder, and through a batch.
        let batch = records::build_batch(
            &[
                (Some(&offset_key("g1", "t1", 5)), Some(&offset_value(&v))),
                (Some(&group_key("g1")), Some(&group_value(&g))),
                (Some(&offset_key("g1", "t1", 6)), None),
            ],
            1,
        );
        records::validate_batches(&batch, usize::MAX).unwrap();
        let mut got = Vec::new();
        for_each_record(&batch, |k, v| got.push(decode(k, v).unwrap()));
        assert_eq!(
            got,
            vec![
                OffsetsRecord::Offset {
                    group: "g1".into(),
                    topic: "t1".into(),
                    partition: 5,
                    value: Some(v)
                },
                OffsetsRecord::Group {
                    group: "g1".into(),
                    value: Some(g)
                },
                OffsetsRecord::Offset {
                    group: "g1".into(),
                    topic: "t1".into(),
                    partition: 6,
                    value: None
                },
            ]
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        assert_eq!(decode(&[], None), None);
        assert_eq!(decode(&[0, 9, 1], None), None);
        assert_eq!(decode(&offset_key("g", "t", 1), Some(&[0, 4, 1])), None);
        for_each_record(&[0u8; 100], |_, _| panic!("no records in zeros"));
    }
}
