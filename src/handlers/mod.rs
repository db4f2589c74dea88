//! Protocol handlers: one file per Kafka API key, each declaring its version range, and
//! the registry that drives both dispatch and the ApiVersions answer.
//!
//! Runs on: any shard. Every handler has one shape: decode -> early error answers ->
//! per partition find the owning shard (forward through the router when it is another) ->
//! act -> build the response. Bad client input becomes a Kafka error code; only a frame
//! that cannot be decoded at all closes the connection.

pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod describe_user_scram_credentials;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::protocol::fetch_response::Piece;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

/// An API this broker answers, and the versions it accepts.
#[derive(Clone, Copy, Debug)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

/// Every API the broker serves. ApiVersions advertises exactly this list.
pub const REGISTRY: &[ApiSpec] = &[
    produce::API,
    fetch::API,
    list_offsets::API,
    metadata::API,
    api_versions::API,
    create_topics::API,
    delete_topics::API,
    init_producer_id::API,
    describe_configs::API,
    create_partitions::API,
    offset_for_leader_epoch::API,
    describe_cluster::API,
    alter_configs::API,
    incremental_alter_configs::API,
    delete_records::API,
    describe_log_dirs::API,
    sasl_handshake::API,
    sasl_authenticate::API,
    describe_user_scram_credentials::API,
    alter_user_scram_credentials::API,
    create_acls::API,
    describe_acls::API,
    delete_acls::API,
];

pub fn spec(key: ApiKey) -> Option<&'static ApiSpec> {
    REGISTRY
        .iter()
        .chain(crate::groups::handlers::REGISTRY.iter())
        .find(|s| s.key == key)
}

/// Record bytes in a Fetch answer: a stored chunk of this shard, or bytes another shard
/// read and sent over the router.
pub enum FetchData {
    Local(shards::Chunk),
    Remote(Bytes),
}

impl AsRef<[u8]> for FetchData {
    fn as_ref(&self) -> &[u8] {
        match self {
            FetchData::Local(c) => c.as_ref(),
            FetchData::Remote(b) => b,
        }
    }
}

/// What the connection writes back for one request.
pub enum Reply {
    /// Nothing (Produce with acks=0).
    None,
    /// A fully encoded frame.
    Frame(Bytes),
    /// A frame in pieces, record data by reference (Fetch).
    Pieces(Vec<Piece<FetchData>>),
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let Some(spec) = spec(req.api_key) else {
        return Err(ProtocolError::UnsupportedVersion {
            key: req.api_key,
            version: req.version,
        });
    };
    if req.version < spec.min_version || req.version > spec.max_version {
        return match req.api_key {
            // ApiVersions answers an unknown version with its own list (in v0 format) so the
            // client can retry with a version both sides know.
            ApiKey::ApiVersions => api_versions::unsupported(&req),
            _ => Err(ProtocolError::UnsupportedVersion {
                key: req.api_key,
                version: req.version,
            }),
        };
    }
    if let Some(operation) = coarse_cluster_operation(req.api_key)
        && !session.may_cluster(shard, operation)
    {
        return Err(ProtocolError::Unauthorized {
            key: req.api_key,
            principal: session.principal(),
        });
    }
    match req.api_key {
        ApiKey::Produce => produce::handle(shard, session, req).await,
        ApiKey::Fetch => fetch::handle(shard, session, req).await,
        ApiKey::ListOffsets => list_offsets::handle(shard, session, req).await,
        ApiKey::Metadata => metadata::handle(shard, session, req).await,
        ApiKey::ApiVersions => api_versions::handle(shard, req),
        ApiKey::CreateTopics => create_topics::handle(shard, session, req).await,
        ApiKey::DeleteTopics => delete_topics::handle(shard, session, req).await,
        ApiKey::InitProducerId => init_producer_id::handle(shard, session, req).await,
        ApiKey::DescribeConfigs => describe_configs::handle(shard, req).await,
        ApiKey::CreatePartitions => create_partitions::handle(shard, req).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(shard, req).await,
        ApiKey::DescribeCluster => describe_cluster::handle(shard, session, req),
        ApiKey::AlterConfigs => alter_configs::handle(shard, req).await,
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(shard, req).await,
        ApiKey::DeleteRecords => delete_records::handle(shard, req).await,
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(shard, req).await,
        ApiKey::CreateAcls => create_acls::handle(shard, session, req).await,
        ApiKey::DescribeAcls => describe_acls::handle(shard, session, req),
        ApiKey::DeleteAcls => delete_acls::handle(shard, session, req).await,
        ApiKey::SaslHandshake => sasl_handshake::handle(shard, req),
        ApiKey::SaslAuthenticate => sasl_authenticate::handle(shard, req),
        ApiKey::DescribeUserScramCredentials => {
            describe_user_scram_credentials::handle(shard, session, req)
        }
        ApiKey::AlterUserScramCredentials => {
            alter_user_scram_credentials::handle(shard, session, req).await
        }
        _ => crate::groups::handlers::dispatch(shard, session, req).await,
    }
}

/// APIs without per-resource authorization yet: under `--authorizer` they need this
/// operation on the cluster (super users have it), and a refused request closes the
/// connection with a log line instead of Kafka's per-resource error codes.
fn coarse_cluster_operation(key: ApiKey) -> Option<u8> {
    use crate::protocol::acl::op;
    match key {
        ApiKey::CreatePartitions
        | ApiKey::AlterConfigs
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::DeleteRecords => Some(op::ALTER),
        ApiKey::DescribeConfigs | ApiKey::DescribeLogDirs => Some(op::DESCRIBE),
        _ => None,
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn uuid(bytes: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(bytes)
}
