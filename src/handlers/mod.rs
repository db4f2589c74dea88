//! Protocol handlers: one file per Kafka API key, each declaring its version range, and
//! the registry that drives both dispatch and the ApiVersions answer.
//!
//! Runs on: any shard. Every handler has one shape: decode -> early error answers ->
//! per partition find the owning shard (forward through the router when it is another) ->
//! act -> build the response. Bad client input becomes a Kafka error code; only a frame
//! that cannot be decoded at all closes the connection.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition_reassignments;
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
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod write_txn_markers;

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
    add_partitions_to_txn::API,
    add_offsets_to_txn::API,
    end_txn::API,
    write_txn_markers::API,
    sasl_handshake::API,
    sasl_authenticate::API,
    describe_user_scram_credentials::API,
    alter_user_scram_credentials::API,
    create_acls::API,
    describe_acls::API,
    delete_acls::API,
    describe_producers::API,
    describe_transactions::API,
    list_transactions::API,
    describe_topic_partitions::API,
    elect_leaders::API,
    describe_quorum::API,
    alter_partition_reassignments::API,
    list_partition_reassignments::API,
];

pub fn spec(key: ApiKey) -> Option<&'static ApiSpec> {
    REGISTRY
        .iter()
        .chain(crate::groups::handlers::REGISTRY.iter())
        .find(|s| s.key == key)
}

/// `max.message.bytes` that `decode_only` validates produced batches against (the
/// default topic config's; a partition checks its own on append).
pub const DECODE_ONLY_MESSAGE_MAX_BYTES: usize = 1 << 20;

/// Everything the broker does to an untrusted request before it acts on it, without a
/// shard: the version check, the body decode of the request's handler (the old Produce
/// format, ApiVersions' answer to an unknown version), and for Produce the validation of
/// every record batch list as `Partition::append` runs it. The fuzz targets
/// (`tests/fuzz.rs`) drive it; `decode_only_covers_every_api` keeps it in step with the
/// registries. Never panics on any input.
pub fn decode_only(req: &RequestFrame) -> Result<(), ProtocolError> {
    use kafka_protocol::messages::*;
    let Some(spec) = spec(req.api_key) else {
        return Err(ProtocolError::UnsupportedVersion {
            key: req.api_key,
            version: req.version,
        });
    };
    if req.version < spec.min_version || req.version > spec.max_version {
        return match req.api_key {
            ApiKey::ApiVersions => api_versions::unsupported(req).map(drop),
            _ => Err(ProtocolError::UnsupportedVersion {
                key: req.api_key,
                version: req.version,
            }),
        };
    }
    match req.api_key {
        ApiKey::Produce if req.version < produce::PRODUCE_VERSION_DATA_MIN => {
            crate::protocol::produce_v0::parse(req.body.clone())
                .map(drop)
                .ok_or_else(|| ProtocolError::Malformed {
                    key: req.api_key,
                    version: req.version,
                    reason: "undecodable old-format produce".into(),
                })
        }
        ApiKey::Produce => {
            let body: ProduceRequest = req.decode()?;
            for t in body.topic_data {
                for p in t.partition_data {
                    if let Some(records) = p.records {
                        // A refused batch list is an error code for that partition, not a
                        // protocol error: the result only has to come back.
                        let _ = shards::batch::validate_each(
                            &records,
                            DECODE_ONLY_MESSAGE_MAX_BYTES,
                            |_| {},
                        );
                    }
                }
            }
            Ok(())
        }
        // The body is informational and not decoded (see `api_versions::handle`).
        ApiKey::ApiVersions => Ok(()),
        ApiKey::Fetch => req.decode::<FetchRequest>().map(drop),
        ApiKey::ListOffsets => req.decode::<ListOffsetsRequest>().map(drop),
        ApiKey::Metadata => req.decode::<MetadataRequest>().map(drop),
        ApiKey::CreateTopics => req.decode::<CreateTopicsRequest>().map(drop),
        ApiKey::DeleteTopics => req.decode::<DeleteTopicsRequest>().map(drop),
        ApiKey::InitProducerId => req.decode::<InitProducerIdRequest>().map(drop),
        ApiKey::DescribeConfigs => req.decode::<DescribeConfigsRequest>().map(drop),
        ApiKey::CreatePartitions => req.decode::<CreatePartitionsRequest>().map(drop),
        ApiKey::OffsetForLeaderEpoch => req.decode::<OffsetForLeaderEpochRequest>().map(drop),
        ApiKey::DescribeCluster => req.decode::<DescribeClusterRequest>().map(drop),
        ApiKey::ElectLeaders => req.decode::<ElectLeadersRequest>().map(drop),
        ApiKey::DescribeQuorum => req.decode::<DescribeQuorumRequest>().map(drop),
        ApiKey::AlterPartitionReassignments => {
            req.decode::<AlterPartitionReassignmentsRequest>().map(drop)
        }
        ApiKey::ListPartitionReassignments => {
            req.decode::<ListPartitionReassignmentsRequest>().map(drop)
        }
        ApiKey::AlterConfigs => req.decode::<AlterConfigsRequest>().map(drop),
        ApiKey::IncrementalAlterConfigs => req.decode::<IncrementalAlterConfigsRequest>().map(drop),
        ApiKey::DeleteRecords => req.decode::<DeleteRecordsRequest>().map(drop),
        ApiKey::DescribeLogDirs => req.decode::<DescribeLogDirsRequest>().map(drop),
        ApiKey::OffsetCommit => req.decode::<OffsetCommitRequest>().map(drop),
        ApiKey::OffsetFetch => req.decode::<OffsetFetchRequest>().map(drop),
        ApiKey::FindCoordinator => req.decode::<FindCoordinatorRequest>().map(drop),
        ApiKey::JoinGroup => req.decode::<JoinGroupRequest>().map(drop),
        ApiKey::Heartbeat => req.decode::<HeartbeatRequest>().map(drop),
        ApiKey::LeaveGroup => req.decode::<LeaveGroupRequest>().map(drop),
        ApiKey::SyncGroup => req.decode::<SyncGroupRequest>().map(drop),
        ApiKey::DescribeGroups => req.decode::<DescribeGroupsRequest>().map(drop),
        ApiKey::ListGroups => req.decode::<ListGroupsRequest>().map(drop),
        ApiKey::DeleteGroups => req.decode::<DeleteGroupsRequest>().map(drop),
        ApiKey::OffsetDelete => req.decode::<OffsetDeleteRequest>().map(drop),
        ApiKey::TxnOffsetCommit => req.decode::<TxnOffsetCommitRequest>().map(drop),
        ApiKey::ConsumerGroupHeartbeat => req.decode::<ConsumerGroupHeartbeatRequest>().map(drop),
        ApiKey::ConsumerGroupDescribe => req.decode::<ConsumerGroupDescribeRequest>().map(drop),
        ApiKey::AddPartitionsToTxn => req.decode::<AddPartitionsToTxnRequest>().map(drop),
        ApiKey::AddOffsetsToTxn => req.decode::<AddOffsetsToTxnRequest>().map(drop),
        ApiKey::EndTxn => req.decode::<EndTxnRequest>().map(drop),
        ApiKey::WriteTxnMarkers => req.decode::<WriteTxnMarkersRequest>().map(drop),
        ApiKey::DescribeProducers => req.decode::<DescribeProducersRequest>().map(drop),
        ApiKey::DescribeTransactions => req.decode::<DescribeTransactionsRequest>().map(drop),
        ApiKey::ListTransactions => req.decode::<ListTransactionsRequest>().map(drop),
        ApiKey::DescribeTopicPartitions => req.decode::<DescribeTopicPartitionsRequest>().map(drop),
        ApiKey::SaslHandshake => req.decode::<SaslHandshakeRequest>().map(drop),
        ApiKey::SaslAuthenticate => req.decode::<SaslAuthenticateRequest>().map(drop),
        ApiKey::CreateAcls => req.decode::<CreateAclsRequest>().map(drop),
        ApiKey::DescribeAcls => req.decode::<DescribeAclsRequest>().map(drop),
        ApiKey::DeleteAcls => req.decode::<DeleteAclsRequest>().map(drop),
        ApiKey::DescribeUserScramCredentials => req
            .decode::<DescribeUserScramCredentialsRequest>()
            .map(drop),
        ApiKey::AlterUserScramCredentials => {
            req.decode::<AlterUserScramCredentialsRequest>().map(drop)
        }
        other => Err(ProtocolError::Malformed {
            key: other,
            version: req.version,
            reason: "no decoder for a registered API (decode_only out of step)".into(),
        }),
    }
}

/// Every API the broker serves, its own and the groups' (what `decode_only` must cover).
pub fn all_specs() -> impl Iterator<Item = &'static ApiSpec> {
    REGISTRY
        .iter()
        .chain(crate::groups::handlers::REGISTRY.iter())
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
    /// A frame in pieces, record data by reference (Fetch), with the memory its record
    /// bytes hold in the connection's and the shard's budgets until it is written.
    Pieces(Vec<Piece<FetchData>>, crate::memory::MemoryLease),
}

/// Runs one request and counts it in the shard's metrics (requests, latency, requests
/// that close the connection). `responses` is the connection's budget of Fetch response
/// bytes (`FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX`).
pub async fn dispatch(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    req: RequestFrame,
    responses: &Rc<glommio::sync::Semaphore>,
) -> Result<Reply, ProtocolError> {
    let key = req.api_key;
    let start = std::time::Instant::now();
    let reply = dispatch_api(shard, session, req, responses).await;
    shard
        .metrics
        .request(key, start.elapsed().as_micros() as u64, reply.is_ok());
    reply
}

async fn dispatch_api(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    req: RequestFrame,
    responses: &Rc<glommio::sync::Semaphore>,
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
            ApiKey::ApiVersions => {
                shard.metrics.error(
                    ApiKey::ApiVersions,
                    crate::protocol::error::UNSUPPORTED_VERSION,
                );
                api_versions::unsupported(&req)
            }
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
        ApiKey::Fetch => fetch::handle(shard, session, req, responses).await,
        ApiKey::ListOffsets => list_offsets::handle(shard, session, req).await,
        ApiKey::Metadata => metadata::handle(shard, session, req).await,
        ApiKey::ApiVersions => api_versions::handle(shard, req),
        ApiKey::CreateTopics => create_topics::handle(shard, session, req).await,
        ApiKey::DeleteTopics => delete_topics::handle(shard, session, req).await,
        ApiKey::InitProducerId => init_producer_id::handle(shard, session, req).await,
        ApiKey::DescribeConfigs => describe_configs::handle(shard, session, req).await,
        ApiKey::CreatePartitions => create_partitions::handle(shard, session, req).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(shard, session, req).await,
        ApiKey::DescribeCluster => describe_cluster::handle(shard, session, req),
        ApiKey::AlterConfigs => alter_configs::handle(shard, session, req).await,
        ApiKey::IncrementalAlterConfigs => {
            incremental_alter_configs::handle(shard, session, req).await
        }
        ApiKey::DeleteRecords => delete_records::handle(shard, session, req).await,
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(shard, session, req).await,
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(shard, session, req).await,
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(shard, session, req).await,
        ApiKey::EndTxn => end_txn::handle(shard, session, req).await,
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(shard, req).await,
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
        ApiKey::DescribeProducers => describe_producers::handle(shard, session, req).await,
        ApiKey::DescribeTransactions => describe_transactions::handle(shard, session, req).await,
        ApiKey::ListTransactions => list_transactions::handle(shard, session, req).await,
        ApiKey::DescribeTopicPartitions => {
            describe_topic_partitions::handle(shard, session, req).await
        }
        ApiKey::ElectLeaders => elect_leaders::handle(shard, session, req).await,
        ApiKey::DescribeQuorum => describe_quorum::handle(shard, session, req).await,
        ApiKey::AlterPartitionReassignments => {
            alter_partition_reassignments::handle(shard, session, req).await
        }
        ApiKey::ListPartitionReassignments => {
            list_partition_reassignments::handle(shard, session, req)
        }
        _ => crate::groups::handlers::dispatch(shard, session, req).await,
    }
}

/// APIs without per-resource authorization yet: under `--authorizer` they need this
/// operation on the cluster (super users have it), and a refused request closes the
/// connection with a log line instead of Kafka's per-resource error codes. Every other
/// handler authorizes per resource itself and answers Kafka's error codes.
fn coarse_cluster_operation(key: ApiKey) -> Option<u8> {
    use crate::protocol::acl::op;
    match key {
        // Kafka: broker-to-broker, CLUSTER_ACTION.
        ApiKey::WriteTxnMarkers => Some(op::CLUSTER_ACTION),
        _ => None,
    }
}

/// Encodes a handler's response frame, first counting every error code it carries
/// (top-level and per partition/resource) in the shard's errors by API and code. Every
/// handler answers through it; only Fetch, hand-encoded, counts its own.
pub fn respond<T>(shard: &Shard, req: &RequestFrame, resp: &T) -> Result<Bytes, ProtocolError>
where
    T: kafka_protocol::protocol::Encodable + crate::protocol::error_codes::ErrorCodes,
{
    let key = req.api_key;
    resp.error_codes(&mut |code| shard.metrics.error(key, code));
    req.encode_response(resp)
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn uuid(bytes: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod decode_only_tests {
    use super::*;

    // decode_only has a decoder for every API and version the broker serves: an empty
    // body never meets the "out of step" arm (it may fail to decode, which is fine).
    #[test]
    fn decode_only_covers_every_api() {
        for spec in all_specs() {
            for version in spec.min_version..=spec.max_version {
                let req = RequestFrame {
                    api_key: spec.key,
                    version,
                    correlation_id: 1,
                    client_id: None,
                    peer: None,
                    body: Bytes::new(),
                };
                if let Err(ProtocolError::Malformed { reason, .. }) = decode_only(&req) {
                    assert!(!reason.contains("out of step"), "{:?} v{version}", spec.key);
                }
            }
        }
    }
}
