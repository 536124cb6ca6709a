//! ApiVersions: the answer is derived from the handler registry.

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use crate::shard::Shard;

/// The ApiVersions body listing every served API.
pub fn response() -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = super::advertised()
        .into_iter()
        .map(|s| {
            let mut v = ApiVersion::default();
            v.api_key = s.key as i16;
            v.min_version = s.versions.min;
            v.max_version = s.versions.max;
            v
        })
        .collect();
    resp.finalized_features_epoch = -1;
    resp
}

pub async fn handle(
    _shard: &Rc<Shard>,
    _header: &RequestHeader,
    _req: ApiVersionsRequest,
    _version: i16,
) -> Option<ApiVersionsResponse> {
    Some(response())
}
