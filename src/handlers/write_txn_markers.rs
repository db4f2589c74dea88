//! WriteTxnMarkers (key 27): a transaction coordinator on another host has markers
//! written to partitions led here (Kafka's broker-to-broker request).
//!
//! Runs on: any shard; each partition's marker is written on its leader shard (through the
//! router) by `txn::write_marker_local`, with acks=all.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{ApiSpec, Reply, respond};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::{Owner, Shard};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::WriteTxnMarkers,
    min_version: 1,
    max_version: 1,
};

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: WriteTxnMarkersRequest = req.decode()?;
    let mut markers = Vec::with_capacity(body.markers.len());
    for m in body.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let name = t.name.0.to_string();
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let (pid, epoch, commit, ce) = (
                    m.producer_id.0,
                    m.producer_epoch,
                    m.transaction_result,
                    m.coordinator_epoch,
                );
                let code = match shard.owner(&name, p) {
                    None => error::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(Owner::Shard(owner)) => {
                        let n = name.clone();
                        shard
                            .call(owner, move |s| async move {
                                crate::txn::write_marker_local(&s, &n, p, pid, epoch, commit, ce)
                                    .await
                            })
                            .await
                            .unwrap_or(error::NOT_LEADER_OR_FOLLOWER)
                    }
                    Some(_) => error::NOT_LEADER_OR_FOLLOWER,
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    let resp = WriteTxnMarkersResponse::default().with_markers(markers);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
