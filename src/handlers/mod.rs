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
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod write_txn_markers;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::protocol::fetch_response::Piece;
use crate::protocol::{ProtocolError, RequestFrame};
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
    describe_producers::API,
    describe_transactions::API,
    list_transactions::API,
    describe_topic_partitions::API,
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

/// Runs one request and counts it in the shard's metrics (requests, latency, requests
/// that close the connection).
pub async fn dispatch(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let key = req.api_key;
    let start = std::time::Instant::now();
    let reply = dispatch_api(shard, req).await;
    shard
        .metrics
        .request(key, start.elapsed().as_micros() as u64, reply.is_ok());
    reply
}

async fn dispatch_api(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
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
    match req.api_key {
        ApiKey::Produce => produce::handle(shard, req).await,
        ApiKey::Fetch => fetch::handle(shard, req).await,
        ApiKey::ListOffsets => list_offsets::handle(shard, req).await,
        ApiKey::Metadata => metadata::handle(shard, req).await,
        ApiKey::ApiVersions => api_versions::handle(shard, req),
        ApiKey::CreateTopics => create_topics::handle(shard, req).await,
        ApiKey::DeleteTopics => delete_topics::handle(shard, req).await,
        ApiKey::InitProducerId => init_producer_id::handle(shard, req).await,
        ApiKey::DescribeConfigs => describe_configs::handle(shard, req).await,
        ApiKey::CreatePartitions => create_partitions::handle(shard, req).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(shard, req).await,
        ApiKey::DescribeCluster => describe_cluster::handle(shard, req),
        ApiKey::AlterConfigs => alter_configs::handle(shard, req).await,
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(shard, req).await,
        ApiKey::DeleteRecords => delete_records::handle(shard, req).await,
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(shard, req).await,
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(shard, req).await,
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(shard, req).await,
        ApiKey::EndTxn => end_txn::handle(shard, req).await,
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(shard, req).await,
        ApiKey::DescribeProducers => describe_producers::handle(shard, req).await,
        ApiKey::DescribeTransactions => describe_transactions::handle(shard, req).await,
        ApiKey::ListTransactions => list_transactions::handle(shard, req).await,
        ApiKey::DescribeTopicPartitions => describe_topic_partitions::handle(shard, req).await,
        _ => crate::groups::handlers::dispatch(shard, req).await,
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn uuid(bytes: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(bytes)
}
