//! Dispatch: one handler per Kafka API, declared once in [`handlers!`] with its version range.
//!
//! The ApiVersions answer is derived from this registry, never written by hand: a handler is advertised
//! with the intersection of the range Apache Kafka 4.4 serves and the range the codec can decode.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod group;
pub mod internal_topics;
pub mod leader_epoch;
pub mod metadata;
pub mod ops;
pub mod produce;
pub mod txn;

use std::rc::Rc;

use bytes::Bytes;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, VersionRange};

use crate::protocol::{self, HeaderPrefix};
use crate::shard::Shard;

/// What a handler answers for one request.
pub enum Reply {
    /// A response frame, length prefix included.
    Frame(Bytes),
    /// A response frame as chunks whose concatenation is the frame (a Fetch answer: record bytes stay
    /// the slices the log holds). Written with vectored writes; the charge to the core's response budget
    /// is released once they are written.
    Frames(Vec<Bytes>, Option<crate::shard::budget::Charge>),
    /// No response (Produce with acks=0).
    Nothing,
    /// Close the connection without answering (what Kafka does for a request it cannot parse).
    Close(String),
}

/// One entry of the registry: an API and the versions Ringtide serves.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    pub key: ApiKey,
    pub versions: VersionRange,
}

macro_rules! handlers {
    ($( $key:ident : $req:ty => $handler:path, kafka $min:literal ..= $max:literal; )*) => {
        /// Every API Ringtide serves, with its version range. The source of the ApiVersions answer.
        pub fn registry() -> &'static [Served] {
            static REGISTRY: std::sync::OnceLock<Vec<Served>> = std::sync::OnceLock::new();
            REGISTRY.get_or_init(|| vec![$(
                Served {
                    key: ApiKey::$key,
                    versions: VersionRange { min: $min, max: $max }.intersect(&<$req as Message>::VERSIONS),
                },
            )*])
        }

        async fn route(shard: &Rc<Shard>, key: ApiKey, prefix: HeaderPrefix, frame: bytes::Bytes) -> Reply {
            match key {
                $(ApiKey::$key => {
                    let (header, mut body) = match protocol::decode_header(key, prefix.api_version, frame) {
                        Ok(x) => x,
                        Err(e) => return Reply::Close(e.to_string()),
                    };
                    let req = match <$req as Decodable>::decode(&mut body, prefix.api_version) {
                        Ok(r) => r,
                        Err(e) => return Reply::Close(format!("malformed {:?} v{} request: {e}", key, prefix.api_version)),
                    };
                    let resp = $handler(shard, &header, req, prefix.api_version).await;
                    match resp {
                        Some(resp) => resp.into_reply(prefix, key),
                        None => Reply::Nothing,
                    }
                })*
                _ => Reply::Close(format!("API {:?} is not served", key)),
            }
        }
    };
}

handlers! {
    Produce: ProduceRequest => produce::handle, kafka 3..=13;
    Fetch: FetchRequest => fetch::handle, kafka 4..=18;
    ListOffsets: ListOffsetsRequest => fetch::handle_list_offsets, kafka 1..=11;
    Metadata: MetadataRequest => metadata::handle, kafka 0..=13;
    ApiVersions: ApiVersionsRequest => api_versions::handle, kafka 0..=5;
    CreateTopics: CreateTopicsRequest => admin::handle_create_topics, kafka 2..=7;
    DeleteTopics: DeleteTopicsRequest => admin::handle_delete_topics, kafka 1..=6;
    InitProducerId: InitProducerIdRequest => txn::handle_init_producer_id, kafka 0..=5;
    DescribeConfigs: DescribeConfigsRequest => configs::handle_describe, kafka 1..=4;
    AlterConfigs: AlterConfigsRequest => configs::handle_alter, kafka 0..=2;
    CreatePartitions: CreatePartitionsRequest => admin::handle_create_partitions, kafka 0..=3;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest => configs::handle_incremental_alter, kafka 0..=1;
    DescribeCluster: DescribeClusterRequest => metadata::handle_describe_cluster, kafka 0..=2;
    DescribeLogDirs: DescribeLogDirsRequest => ops::handle_describe_log_dirs, kafka 1..=5;
    DeleteRecords: DeleteRecordsRequest => ops::handle_delete_records, kafka 0..=2;
    FindCoordinator: FindCoordinatorRequest => group::handle_find_coordinator, kafka 0..=6;
    JoinGroup: JoinGroupRequest => group::handle_join_group, kafka 0..=9;
    SyncGroup: SyncGroupRequest => group::handle_sync_group, kafka 0..=5;
    Heartbeat: HeartbeatRequest => group::handle_heartbeat, kafka 0..=4;
    LeaveGroup: LeaveGroupRequest => group::handle_leave_group, kafka 0..=5;
    OffsetCommit: OffsetCommitRequest => group::handle_offset_commit, kafka 2..=10;
    OffsetFetch: OffsetFetchRequest => group::handle_offset_fetch, kafka 1..=10;
    ListGroups: ListGroupsRequest => group::handle_list_groups, kafka 0..=5;
    DescribeGroups: DescribeGroupsRequest => group::handle_describe_groups, kafka 0..=6;
    DeleteGroups: DeleteGroupsRequest => group::handle_delete_groups, kafka 0..=3;
    OffsetDelete: OffsetDeleteRequest => group::handle_offset_delete, kafka 0..=0;
    AddPartitionsToTxn: AddPartitionsToTxnRequest => txn::handle_add_partitions, kafka 0..=5;
    AddOffsetsToTxn: AddOffsetsToTxnRequest => txn::handle_add_offsets, kafka 0..=4;
    EndTxn: EndTxnRequest => txn::handle_end_txn, kafka 0..=5;
    TxnOffsetCommit: TxnOffsetCommitRequest => txn::handle_txn_offset_commit, kafka 0..=6;
    DescribeTransactions: DescribeTransactionsRequest => txn::handle_describe_transactions, kafka 0..=0;
    ListTransactions: ListTransactionsRequest => txn::handle_list_transactions, kafka 0..=2;
    WriteTxnMarkers: WriteTxnMarkersRequest => txn::handle_write_txn_markers, kafka 1..=2;
    DescribeProducers: DescribeProducersRequest => txn::handle_describe_producers, kafka 0..=0;
    OffsetForLeaderEpoch: OffsetForLeaderEpochRequest => leader_epoch::handle, kafka 2..=4;
}

/// The range advertised in ApiVersions. Produce is advertised from v0 as Kafka 4 does, because librdkafka
/// checks for it; versions below what the codec decodes are refused when they arrive.
pub fn advertised() -> Vec<Served> {
    registry()
        .iter()
        .map(|&(mut s)| {
            if s.key == ApiKey::Produce {
                s.versions.min = 0;
            }
            s
        })
        .collect()
}

/// What a handler's answer becomes on the wire.
pub trait Answer {
    fn into_reply(self, prefix: HeaderPrefix, key: ApiKey) -> Reply;
}

impl<R: Encodable> Answer for R {
    fn into_reply(self, prefix: HeaderPrefix, key: ApiKey) -> Reply {
        encode(prefix, key, &self)
    }
}

/// A Fetch answer leaves as chunks (the record bytes are the log's own slices), holding its charge to the
/// core's response budget until written.
impl Answer for fetch::FetchReply {
    fn into_reply(self, prefix: HeaderPrefix, _key: ApiKey) -> Reply {
        match self
            .answer
            .encode(prefix.correlation_id, prefix.api_version)
        {
            Some(chunks) => Reply::Frames(chunks, self.charge),
            None => Reply::Close("Fetch answer longer than a frame can be".into()),
        }
    }
}

fn encode<R: Encodable>(prefix: HeaderPrefix, key: ApiKey, resp: &R) -> Reply {
    // ApiVersions responses always use header v0, so a client that sent a version we do not know can
    // still read the answer.
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(prefix.api_version)
    };
    match protocol::encode_response(
        prefix.correlation_id,
        header_version,
        resp,
        prefix.api_version,
    ) {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => Reply::Close(format!(
            "cannot encode {key:?} v{} response: {e}",
            prefix.api_version
        )),
    }
}

/// Handles one request frame and returns what to send back.
pub async fn handle(shard: &Rc<Shard>, prefix: HeaderPrefix, frame: bytes::Bytes) -> Reply {
    let Ok(key) = ApiKey::try_from(prefix.api_key) else {
        return Reply::Close(format!("unknown API key {}", prefix.api_key));
    };
    let served = registry().iter().find(|s| s.key == key);
    let supported = served.is_some_and(|s| {
        prefix.api_version >= s.versions.min && prefix.api_version <= s.versions.max
    });
    if !supported {
        if key == ApiKey::ApiVersions {
            // Kafka answers an unknown ApiVersions version with a v0 response carrying
            // UNSUPPORTED_VERSION and the ApiVersions versions, so the client can pick one and retry.
            let resp = api_versions::unsupported_version_response();
            let v0 = HeaderPrefix {
                api_version: 0,
                ..prefix
            };
            return encode(v0, key, &resp);
        }
        return Reply::Close(format!("{key:?} v{} is not supported", prefix.api_version));
    }
    let started = std::time::Instant::now();
    crate::metrics::in_flight(1);
    let reply = route(shard, key, prefix, frame).await;
    crate::metrics::in_flight(-1);
    crate::metrics::request(
        prefix.api_key,
        started.elapsed(),
        matches!(reply, Reply::Close(_)),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sane() {
        let r = registry();
        for s in r {
            assert!(!s.versions.is_empty(), "{:?} has no versions", s.key);
        }
        let produce = advertised()
            .into_iter()
            .find(|s| s.key == ApiKey::Produce)
            .unwrap();
        assert_eq!(produce.versions.min, 0);
        assert!(r.iter().any(|s| s.key == ApiKey::ApiVersions));
    }
}
