//! ApiVersions: the answer is derived from the handler registry.
//!
//! Before answering, a request is checked as Kafka 4.4's `KafkaApis.handleApiVersionsRequest` checks it:
//! first `ApiVersionsRequest.isValid` (v3+: client software name and version; v5+: ClusterId and NodeId
//! given together or not at all), answered INVALID_REQUEST; then KIP-1242's check (v5+: a client that
//! names a cluster and node must have reached this broker of this cluster), answered REBOOTSTRAP_REQUIRED.
//! Either error answer carries no API keys and keeps the connection open.
//!
//! Features (v3+): only `transaction.version`, as Kafka 4.4 answers for it (supported 0..2, finalized at
//! level 2), so that clients use transaction version 2 (KIP-890 part 2) as they do with Kafka. Kafka also
//! finalizes `metadata.version`, `kraft.version`, `group.version`, `share.version`, `streams.version` and
//! `eligible.leader.replicas.version`; Ringtide advertises none of them: `group.version` 1 tells clients
//! the KIP-848 consumer protocol is served, `share.version` share groups (KIP-932), `streams.version` the
//! Streams group protocol (KIP-1071), none of which Ringtide serves, and the others describe the KRaft
//! controller quorum and replication, which clients do not act on.

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::errors;
use crate::shard::Shard;

fn entry(key: ApiKey, min: i16, max: i16) -> ApiVersion {
    let mut v = ApiVersion::default();
    v.api_key = key as i16;
    v.min_version = min;
    v.max_version = max;
    v
}

/// The `transaction.version` feature: the levels this broker supports and the one it finalizes (Kafka's
/// `TransactionVersion`: 0 and 1 the legacy protocol, 2 an epoch bump per transaction).
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";
pub const TRANSACTION_VERSION_MIN: i16 = 0;
pub const TRANSACTION_VERSION_MAX: i16 = crate::txn::state::TV_2;
/// The finalized features epoch (Kafka's is the offset of the metadata record that last changed a feature;
/// -1 means none). Ringtide's features are fixed by the binary; clients only need the epoch to be set (the
/// Java client ignores finalized features whose epoch is not above what it has seen, initially -1) and not
/// to go backwards, so it is a constant, to be raised whenever the advertised set changes.
pub const FINALIZED_FEATURES_EPOCH: i64 = 1;

/// The ApiVersions body listing every served API and the features, for request version `version`.
pub fn response(version: i16) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = super::advertised()
        .into_iter()
        .map(|s| entry(s.key, s.versions.min, s.versions.max))
        .collect();
    resp.finalized_features_epoch = FINALIZED_FEATURES_EPOCH;
    let name = StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE);
    // Kafka leaves supported features whose minimum is 0 out of v3 answers (older clients reject a 0
    // minimum, KIP-1022), which for `transaction.version` means it is only finalized there.
    if version >= 4 {
        let mut supported = SupportedFeatureKey::default();
        supported.name = name.clone();
        supported.min_version = TRANSACTION_VERSION_MIN;
        supported.max_version = TRANSACTION_VERSION_MAX;
        resp.supported_features.push(supported);
    }
    let mut finalized = FinalizedFeatureKey::default();
    finalized.name = name;
    finalized.min_version_level = TRANSACTION_VERSION_MAX;
    finalized.max_version_level = TRANSACTION_VERSION_MAX;
    resp.finalized_features.push(finalized);
    resp
}

/// The answer to an ApiVersions version this broker does not serve (sent as v0): UNSUPPORTED_VERSION and,
/// as KIP-511 has it, only the ApiVersions versions, so the client can retry with one of them.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = errors::UNSUPPORTED_VERSION;
    resp.api_keys = super::advertised()
        .into_iter()
        .filter(|s| s.key == ApiKey::ApiVersions)
        .map(|s| entry(s.key, s.versions.min, s.versions.max))
        .collect();
    resp
}

/// Kafka's pattern for client software names and versions, `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`,
/// matched against the whole string.
fn is_software_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
        }
        _ => false,
    }
}

/// The error Kafka 4.4 answers `req` with on a broker with this cluster id and node id, if any.
pub fn check(req: &ApiVersionsRequest, version: i16, cluster_id: &str, node_id: i32) -> i16 {
    if version >= 5 && req.cluster_id.is_none() != (req.node_id == -1) {
        return errors::INVALID_REQUEST;
    }
    if version >= 3
        && !(is_software_token(&req.client_software_name)
            && is_software_token(&req.client_software_version))
    {
        return errors::INVALID_REQUEST;
    }
    if version >= 5 {
        if let Some(wanted) = req.cluster_id.as_deref() {
            if wanted != cluster_id || req.node_id != node_id {
                return errors::REBOOTSTRAP_REQUIRED;
            }
        }
    }
    errors::NONE
}

pub async fn handle(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ApiVersionsRequest,
    version: i16,
) -> Option<ApiVersionsResponse> {
    let code = check(
        &req,
        version,
        &shard.meta().cluster_id,
        shard.config.node_id,
    );
    if code != errors::NONE {
        let mut resp = ApiVersionsResponse::default();
        resp.error_code = code;
        return Some(resp);
    }
    Some(response(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn req(name: &str, version: &str, cluster: Option<&str>, node: i32) -> ApiVersionsRequest {
        let mut r = ApiVersionsRequest::default();
        r.client_software_name = StrBytes::from_string(name.to_string());
        r.client_software_version = StrBytes::from_string(version.to_string());
        r.cluster_id = cluster.map(|c| StrBytes::from_string(c.to_string()));
        r.node_id = node;
        r
    }

    /// `transaction.version` as Kafka 4.4 answers it: finalized at 2 from v3, supported 0..2 from v4
    /// (v3 leaves out supported features with a 0 minimum); no other feature.
    #[test]
    fn advertises_transaction_version_2_as_kafka_4_4() {
        for version in 3..=5 {
            let r = response(version);
            assert!(r.finalized_features_epoch >= 0);
            let finalized: Vec<_> = r
                .finalized_features
                .iter()
                .map(|f| (f.name.as_str(), f.min_version_level, f.max_version_level))
                .collect();
            assert_eq!(finalized, vec![("transaction.version", 2, 2)]);
            let supported: Vec<_> = r
                .supported_features
                .iter()
                .map(|f| (f.name.as_str(), f.min_version, f.max_version))
                .collect();
            if version >= 4 {
                assert_eq!(supported, vec![("transaction.version", 0, 2)]);
            } else {
                assert!(supported.is_empty());
            }
        }
    }

    /// The cases answered by a real Kafka 4.4 broker (cluster "C", node 1).
    #[test]
    fn checks_as_kafka_4_4() {
        let c = |r: &ApiVersionsRequest, v| check(r, v, "C", 1);
        assert_eq!(c(&req("probe", "1.0", None, -1), 5), errors::NONE);
        assert_eq!(c(&req("probe", "1.0", Some("C"), 1), 5), errors::NONE);
        assert_eq!(
            c(&req("probe", "1.0", Some("C"), 2), 5),
            errors::REBOOTSTRAP_REQUIRED
        );
        assert_eq!(
            c(&req("probe", "1.0", Some("other"), 1), 5),
            errors::REBOOTSTRAP_REQUIRED
        );
        assert_eq!(
            c(&req("probe", "1.0", Some(""), 1), 5),
            errors::REBOOTSTRAP_REQUIRED
        );
        assert_eq!(
            c(&req("probe", "1.0", Some("other"), -1), 5),
            errors::INVALID_REQUEST
        );
        assert_eq!(c(&req("probe", "1.0", None, 1), 5), errors::INVALID_REQUEST);
        assert_eq!(
            c(&req("probe", "1.0", Some(""), -1), 5),
            errors::INVALID_REQUEST
        );
        assert_eq!(c(&req("a.b-c", "1.0-rc1", None, -1), 3), errors::NONE);
        for (name, version) in [
            ("-x", "1"),
            ("x-", "1"),
            ("", "1"),
            ("a_b", "1"),
            ("x", "1 0"),
        ] {
            assert_eq!(
                c(&req(name, version, None, -1), 3),
                errors::INVALID_REQUEST,
                "{name:?} {version:?}"
            );
        }
        // Before v3 the request has no names; before v5 no cluster or node.
        assert_eq!(c(&req("", "", None, -1), 2), errors::NONE);
        assert_eq!(c(&req("probe", "1.0", None, 7), 4), errors::NONE);
    }
}
