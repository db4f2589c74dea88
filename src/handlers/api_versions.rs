//! ApiVersions (key 18): the versions of every API in the registry.
//!
//! Runs on: any shard. The response header is always v0, even for flexible versions.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::{ApiSpec, Reply, respond};
use crate::protocol::{ProtocolError, RequestFrame, encode_frame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ApiVersions,
    min_version: 0,
    max_version: 4,
};

fn api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = super::REGISTRY
        .iter()
        .chain(crate::groups::handlers::REGISTRY.iter())
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min_version)
                .with_max_version(s.max_version)
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}

pub fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    // The body (client software name/version, v3+) is informational; a client that sends
    // garbage there still deserves the version list, as Kafka answers it.
    let resp = ApiVersionsResponse::default()
        .with_error_code(error::NONE)
        .with_api_keys(api_keys())
        .with_finalized_features_epoch(-1);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// Answer to a version this broker does not know: error 35 and the list, in v0 format,
/// which every client can read.
pub fn unsupported(req: &RequestFrame) -> Result<Reply, ProtocolError> {
    let resp = ApiVersionsResponse::default()
        .with_error_code(error::UNSUPPORTED_VERSION)
        .with_api_keys(api_keys());
    Ok(Reply::Frame(encode_frame(
        ApiKey::ApiVersions,
        req.correlation_id,
        0,
        &resp,
        0,
    )?))
}
