//! Fetch responses as a list of byte chunks: the framing is encoded here, the record bytes are the slices
//! the log already holds (tail cache or read buffer), so they reach the socket without being copied into
//! an answer buffer (the connection writes the chunks with one vectored write).
//!
//! Sans-io like the rest of `protocol`: values in, chunks out. The layout is Kafka's Fetch response,
//! versions 4 to 18 (flexible from 12, topic ids from 13); a unit test checks every version byte for byte
//! against the codec crate's encoder.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Record sets shorter than this are copied into the framing chunk: a separate chunk costs an iovec and
/// a reference count, which is more than copying a few hundred bytes.
pub const INLINE_RECORDS_BYTES_MAX: usize = 512;

/// One partition of a Fetch answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionAnswer {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Sent from v5.
    pub log_start_offset: i64,
    /// `(producer_id, first_offset)`; `None` is the null array.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// Sent from v11.
    pub preferred_read_replica: i32,
    /// The record bytes, in order: whole batches (their concatenation is the `records` field).
    pub records: Vec<Bytes>,
}

impl PartitionAnswer {
    pub fn records_len(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// One topic of a Fetch answer: named (v4-12) or by id (v13+).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicAnswer {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionAnswer>,
}

/// A whole Fetch answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FetchAnswer {
    pub throttle_time_ms: i32,
    /// Sent from v7.
    pub error_code: i16,
    /// Sent from v7.
    pub session_id: i32,
    pub topics: Vec<TopicAnswer>,
}

/// Builds the chunk list: small writes go to `head`, large record slices become chunks of their own.
struct Chunks {
    out: Vec<Bytes>,
    head: BytesMut,
    total: usize,
}

impl Chunks {
    fn push_records(&mut self, records: &[Bytes]) {
        for r in records {
            if r.len() <= INLINE_RECORDS_BYTES_MAX {
                self.head.put_slice(r);
            } else {
                if !self.head.is_empty() {
                    self.total += self.head.len();
                    self.out.push(self.head.split().freeze());
                }
                self.total += r.len();
                self.out.push(r.clone());
            }
        }
    }

    /// `None` if the frame would be longer than its i32 length field can say.
    fn finish(mut self) -> Option<Vec<Bytes>> {
        if !self.head.is_empty() {
            self.total += self.head.len();
            self.out.push(self.head.split().freeze());
        }
        let total = i32::try_from(self.total).ok()?;
        self.out[0] = Bytes::copy_from_slice(&total.to_be_bytes());
        Some(self.out)
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

impl FetchAnswer {
    /// Total record bytes in the answer.
    pub fn records_len(&self) -> usize {
        self.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(PartitionAnswer::records_len)
            .sum()
    }

    /// Encodes the whole response frame (4-byte length, header, body) for `version` (4..=18) as chunks
    /// whose concatenation is the frame; `None` if it would be longer than a frame can be (the fetch
    /// budget keeps answers far below that).
    pub fn encode(&self, correlation_id: i32, version: i16) -> Option<Vec<Bytes>> {
        assert!(
            (4..=18).contains(&version),
            "Fetch v{version} is not served"
        );
        let flexible = version >= 12;
        let mut c = Chunks {
            out: vec![Bytes::new()],
            head: BytesMut::with_capacity(256),
            total: 0,
        };
        let b = &mut c.head;
        b.put_i32(correlation_id);
        if flexible {
            b.put_u8(0); // response header v1: no tagged fields
        }
        b.put_i32(self.throttle_time_ms);
        if version >= 7 {
            b.put_i16(self.error_code);
            b.put_i32(self.session_id);
        }
        put_len(b, flexible, self.topics.len());
        for t in &self.topics {
            let b = &mut c.head;
            if version <= 12 {
                put_len_str(b, flexible, &t.name);
            }
            if version >= 13 {
                b.put_slice(t.topic_id.as_bytes());
            }
            put_len(b, flexible, t.partitions.len());
            for p in &t.partitions {
                let b = &mut c.head;
                b.put_i32(p.index);
                b.put_i16(p.error_code);
                b.put_i64(p.high_watermark);
                b.put_i64(p.last_stable_offset);
                if version >= 5 {
                    b.put_i64(p.log_start_offset);
                }
                match &p.aborted_transactions {
                    None if flexible => b.put_u8(0),
                    None => b.put_i32(-1),
                    Some(list) => {
                        put_len(b, flexible, list.len());
                        for &(producer_id, first_offset) in list {
                            b.put_i64(producer_id);
                            b.put_i64(first_offset);
                            if flexible {
                                b.put_u8(0);
                            }
                        }
                    }
                }
                if version >= 11 {
                    b.put_i32(p.preferred_read_replica);
                }
                put_len(b, flexible, p.records_len());
                c.push_records(&p.records);
                if flexible {
                    c.head.put_u8(0); // partition tagged fields
                }
            }
            if flexible {
                c.head.put_u8(0); // topic tagged fields
            }
        }
        if flexible {
            c.head.put_u8(0); // response tagged fields
        }
        c.finish()
    }
}

fn put_len_str(buf: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(buf, s.len() as u64 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_response;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, FetchResponse, ProducerId, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn sample() -> FetchAnswer {
        let big = Bytes::from(vec![7u8; 3000]);
        FetchAnswer {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics: vec![
                TopicAnswer {
                    name: "orders".into(),
                    topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                    partitions: vec![
                        PartitionAnswer {
                            index: 0,
                            error_code: 0,
                            high_watermark: 42,
                            last_stable_offset: 42,
                            log_start_offset: 3,
                            aborted_transactions: None,
                            preferred_read_replica: -1,
                            records: vec![big.slice(0..1000), Bytes::from_static(b"tiny"), big],
                        },
                        PartitionAnswer {
                            index: 5,
                            error_code: 1,
                            high_watermark: -1,
                            last_stable_offset: -1,
                            log_start_offset: -1,
                            aborted_transactions: Some(vec![(9, 10), (11, 12)]),
                            preferred_read_replica: -1,
                            records: vec![],
                        },
                    ],
                },
                TopicAnswer {
                    name: "x".repeat(200),
                    topic_id: Uuid::nil(),
                    partitions: vec![],
                },
            ],
        }
    }

    /// The same answer built with the codec crate's types.
    fn via_codec(a: &FetchAnswer, version: i16) -> FetchResponse {
        let mut resp = FetchResponse::default();
        resp.throttle_time_ms = a.throttle_time_ms;
        resp.error_code = a.error_code;
        resp.session_id = a.session_id;
        for t in &a.topics {
            let mut tr = FetchableTopicResponse::default();
            if version <= 12 {
                tr.topic = TopicName(StrBytes::from_string(t.name.clone()));
            }
            if version >= 13 {
                tr.topic_id = t.topic_id;
            }
            for p in &t.partitions {
                let mut pd = PartitionData::default();
                pd.partition_index = p.index;
                pd.error_code = p.error_code;
                pd.high_watermark = p.high_watermark;
                pd.last_stable_offset = p.last_stable_offset;
                if version >= 5 {
                    pd.log_start_offset = p.log_start_offset;
                }
                pd.aborted_transactions = p.aborted_transactions.as_ref().map(|l| {
                    l.iter()
                        .map(|&(pid, off)| {
                            let mut at = AbortedTransaction::default();
                            at.producer_id = ProducerId(pid);
                            at.first_offset = off;
                            at
                        })
                        .collect()
                });
                pd.preferred_read_replica = BrokerId(p.preferred_read_replica);
                let mut all = BytesMut::new();
                for r in &p.records {
                    all.extend_from_slice(r);
                }
                pd.records = Some(all.freeze());
                tr.partitions.push(pd);
            }
            resp.responses.push(tr);
        }
        resp
    }

    #[test]
    fn every_version_matches_the_codec_byte_for_byte() {
        let a = sample();
        for version in 4..=18i16 {
            let chunks = a.encode(77, version).expect("fits");
            let mut ours = BytesMut::new();
            for c in &chunks {
                ours.extend_from_slice(c);
            }
            let header_version = ApiKey::Fetch.response_header_version(version);
            let theirs = encode_response(77, header_version, &via_codec(&a, version), version)
                .expect("codec encodes");
            assert_eq!(&ours[..], &theirs[..], "Fetch v{version}");
            // And the codec reads ours back.
            let mut body = ours.freeze().slice(4..);
            let h = ResponseHeader::decode(&mut body, header_version).expect("header");
            assert_eq!(h.correlation_id, 77);
            let r = FetchResponse::decode(&mut body, version).expect("body");
            assert_eq!(r.responses.len(), 2);
        }
    }

    #[test]
    fn large_record_slices_are_not_copied() {
        let a = sample();
        let big = &a.topics[0].partitions[0].records[2];
        let chunks = a.encode(1, 15).expect("fits");
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == big.as_ptr() && c.len() == big.len()),
            "the 3000-byte record slice goes out as its own chunk"
        );
    }
}
