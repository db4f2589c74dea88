//! AddPartitionsToTxn (key 24, v0-3: the producer's form): partitions join the open
//! transaction of a transactional id. Versions 4+ (brokers verifying a producer's
//! partition, KIP-890) are not advertised, so clients send the producer's form.
//!
//! Runs on: the shard coordinating the transactional id (`txn`); elsewhere
//! NOT_COORDINATOR. Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION and the
//! others OPERATION_NOT_ATTEMPTED, as Kafka.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};

use super::{ApiSpec, Reply, respond};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;
use crate::txn::OPERATION_NOT_ATTEMPTED;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddPartitionsToTxn,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: AddPartitionsToTxnRequest = req.decode()?;
    let meta = shard.meta();
    let mut partitions = Vec::new();
    let mut unknown = false;
    for t in &body.v3_and_below_topics {
        for p in &t.partitions {
            unknown |= meta.partition(t.name.0.as_str(), *p).is_none();
            partitions.push((t.name.0.to_string(), *p));
        }
    }
    drop(meta);
    let outcome = if unknown {
        None
    } else {
        partitions.sort();
        partitions.dedup();
        Some(
            shard
                .txns
                .add_partitions(
                    shard,
                    body.v3_and_below_transactional_id.0.as_str(),
                    body.v3_and_below_producer_id.0,
                    body.v3_and_below_producer_epoch,
                    &partitions,
                )
                .await,
        )
    };
    let meta = shard.meta();
    let results = body
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = match &outcome {
                                None if meta.partition(t.name.0.as_str(), *p).is_none() => {
                                    error::UNKNOWN_TOPIC_OR_PARTITION
                                }
                                None => OPERATION_NOT_ATTEMPTED,
                                Some(Ok(())) => error::NONE,
                                Some(Err(code)) => crate::txn::fenced_for(*code, req.version, 2),
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
