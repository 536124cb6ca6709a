//! Requests one broker of a cluster sends to another (the body bytes; `net::peer` frames and sends
//! them): WriteTxnMarkers from a transaction coordinator to the leader of a partition of the
//! transaction, and AddPartitionsToTxn v4+ from a partition leader (or group coordinator) to the
//! transaction coordinator, to verify (KIP-890 part 1) or add (part 2) a transactional write's partitions.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::errors;

/// One COMMIT/ABORT marker for one partition, as a WriteTxnMarkers request.
#[derive(Debug, Clone, Copy)]
pub struct MarkerRequest<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub transaction_version: i16,
}

impl MarkerRequest<'_> {
    /// The version to send: 2 (KIP-1228, which carries the transaction version) for a transaction of
    /// version 2, else 1, so that the leader applies the rule of the transaction's version.
    pub fn version(&self) -> i16 {
        if self.transaction_version >= 2 {
            2
        } else {
            1
        }
    }

    /// (api key, version, flexible headers, body).
    pub fn encode(&self) -> (i16, i16, bool, Bytes) {
        let version = self.version();
        let mut t = WritableTxnMarkerTopic::default();
        t.name = TopicName(StrBytes::from_string(self.topic.to_string()));
        t.partition_indexes = vec![self.partition];
        let mut m = WritableTxnMarker::default();
        m.producer_id = ProducerId(self.producer_id);
        m.producer_epoch = self.producer_epoch;
        m.transaction_result = self.commit;
        m.coordinator_epoch = self.coordinator_epoch;
        m.topics = vec![t];
        if version >= 2 {
            m.transaction_version = self.transaction_version as i8;
        }
        let mut req = WriteTxnMarkersRequest::default();
        req.markers = vec![m];
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version)
            .expect("a WriteTxnMarkers request of valid fields encodes");
        let key = ApiKey::WriteTxnMarkers;
        let flexible = key.request_header_version(version) >= 2;
        (key as i16, version, flexible, buf.freeze())
    }

    /// The partition's error code in the leader's answer (UNKNOWN_SERVER_ERROR if the answer does not
    /// parse or does not name the partition).
    pub fn result(&self, mut body: Bytes) -> i16 {
        let Ok(resp) = WriteTxnMarkersResponse::decode(&mut body, self.version()) else {
            return errors::UNKNOWN_SERVER_ERROR;
        };
        resp.markers
            .iter()
            .filter(|m| m.producer_id.0 == self.producer_id)
            .flat_map(|m| &m.topics)
            .filter(|t| t.name.0.as_str() == self.topic)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == self.partition)
            .map_or(errors::UNKNOWN_SERVER_ERROR, |p| p.error_code)
    }
}

/// AddPartitionsToTxn of one transaction, as a broker sends it to the transaction's coordinator.
#[derive(Debug, Clone)]
pub struct AddPartitionsRequest<'a> {
    pub transactional_id: &'a str,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: &'a [(String, i32)],
    pub verify_only: bool,
    /// 5 (missing partitions answer TRANSACTION_ABORTABLE) or 4 (INVALID_TXN_STATE).
    pub version: i16,
}

impl AddPartitionsRequest<'_> {
    /// (api key, version, flexible headers, body). Partitions keep their order, grouped by topic.
    pub fn encode(&self) -> (i16, i16, bool, Bytes) {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for (t, p) in self.partitions {
            match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                Some(x) => x.partitions.push(*p),
                None => {
                    let mut x = AddPartitionsToTxnTopic::default();
                    x.name = TopicName(StrBytes::from_string(t.clone()));
                    x.partitions = vec![*p];
                    topics.push(x);
                }
            }
        }
        let mut txn = AddPartitionsToTxnTransaction::default();
        txn.transactional_id = TransactionalId(StrBytes::from_string(self.transactional_id.into()));
        txn.producer_id = ProducerId(self.producer_id);
        txn.producer_epoch = self.producer_epoch;
        txn.verify_only = self.verify_only;
        txn.topics = topics;
        let mut req = AddPartitionsToTxnRequest::default();
        req.transactions = vec![txn];
        let mut buf = BytesMut::new();
        req.encode(&mut buf, self.version)
            .expect("an AddPartitionsToTxn request of valid fields encodes");
        let key = ApiKey::AddPartitionsToTxn;
        let flexible = key.request_header_version(self.version) >= 2;
        (key as i16, self.version, flexible, buf.freeze())
    }

    /// One code per partition, in request order: the coordinator's answer (its top-level error for
    /// all when set; UNKNOWN_SERVER_ERROR where the answer does not parse or misses a partition).
    pub fn results(&self, mut body: Bytes) -> Vec<i16> {
        let n = self.partitions.len();
        let Ok(resp) = AddPartitionsToTxnResponse::decode(&mut body, self.version) else {
            return vec![errors::UNKNOWN_SERVER_ERROR; n];
        };
        if resp.error_code != errors::NONE {
            return vec![resp.error_code; n];
        }
        let txn = resp
            .results_by_transaction
            .iter()
            .find(|r| r.transactional_id.0.as_str() == self.transactional_id);
        self.partitions
            .iter()
            .map(|(t, p)| {
                txn.into_iter()
                    .flat_map(|r| &r.topic_results)
                    .filter(|r| r.name.0.as_str() == t)
                    .flat_map(|r| &r.results_by_partition)
                    .find(|r| r.partition_index == *p)
                    .map_or(errors::UNKNOWN_SERVER_ERROR, |r| r.partition_error_code)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_request_round_trips_and_picks_the_version() {
        let m = MarkerRequest {
            topic: "t",
            partition: 3,
            producer_id: 42,
            producer_epoch: 7,
            coordinator_epoch: 2,
            commit: true,
            transaction_version: 2,
        };
        let (key, version, flexible, mut body) = m.encode();
        assert_eq!((key, version, flexible), (27, 2, true));
        let req = WriteTxnMarkersRequest::decode(&mut body, version).unwrap();
        assert_eq!(req.markers[0].transaction_version, 2);
        assert_eq!(req.markers[0].topics[0].partition_indexes, vec![3]);
        assert_eq!(
            MarkerRequest {
                transaction_version: 0,
                ..m
            }
            .version(),
            1
        );
        assert_eq!(
            m.result(Bytes::from_static(&[1, 2])),
            errors::UNKNOWN_SERVER_ERROR
        );
    }

    #[test]
    fn add_partitions_request_groups_topics_and_reads_answers() {
        let parts = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 0),
            ("a".to_string(), 2),
        ];
        let r = AddPartitionsRequest {
            transactional_id: "tx",
            producer_id: 5,
            producer_epoch: 1,
            partitions: &parts,
            verify_only: true,
            version: 5,
        };
        let (key, version, flexible, mut body) = r.encode();
        assert_eq!((key, version, flexible), (24, 5, true));
        let req = AddPartitionsToTxnRequest::decode(&mut body, 5).unwrap();
        let t = &req.transactions[0];
        assert!(t.verify_only);
        assert_eq!(t.topics.len(), 2);
        assert_eq!(t.topics[0].partitions, vec![1, 2]);
        // An answer naming only a@1 (code 48) leaves the others unknown.
        use kafka_protocol::messages::add_partitions_to_txn_response::*;
        let mut pr = AddPartitionsToTxnPartitionResult::default();
        pr.partition_index = 1;
        pr.partition_error_code = 48;
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = TopicName(StrBytes::from_static_str("a"));
        tr.results_by_partition = vec![pr];
        let mut res = AddPartitionsToTxnResult::default();
        res.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
        res.topic_results = vec![tr];
        let mut resp = AddPartitionsToTxnResponse::default();
        resp.results_by_transaction = vec![res];
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, 5).unwrap();
        assert_eq!(
            r.results(buf.freeze()),
            vec![
                48,
                errors::UNKNOWN_SERVER_ERROR,
                errors::UNKNOWN_SERVER_ERROR
            ]
        );
    }
}
