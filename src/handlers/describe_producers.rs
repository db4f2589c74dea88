//! DescribeProducers (key 61): the active producers of partitions, read from each
//! partition's producer state (`shards::producer::ProducerTable`): producer id, epoch,
//! last sequence, last batch timestamp and the first offset of its open transaction.
//! Kafka answers this on any replica of the partition, so a node answers for the replicas
//! it holds (leader or follower) and NOT_LEADER_OR_FOLLOWER for the others.
//!
//! Runs on: the shard the request arrived on (each shard is its own node).
//! Authorization (Kafka's): READ on the topic, else TOPIC_AUTHORIZATION_FAILED on each of
//! its partitions (before the existence check).
//! A producer's last timestamp is not in the producer snapshot: -1 after a restart until
//! its next batch. Not kept: the coordinator epoch of its markers, answered -1 (Kafka's
//! "unknown").

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeProducers,
    min_version: 0,
    max_version: 0,
};
/// What Kafka answers for a field it does not know.
const UNKNOWN: i64 = -1;

fn partition_state(shard: &Shard, topic: &str, index: i32) -> PartitionResponse {
    let resp = PartitionResponse::default().with_partition_index(index);
    let Some(r) = shard.replica(topic, index) else {
        let known = shard.meta().leader(topic, index).is_some();
        let code = if known {
            error::NOT_LEADER_OR_FOLLOWER
        } else {
            error::UNKNOWN_TOPIC_OR_PARTITION
        };
        return resp.with_error_code(code);
    };
    let producers = r
        .log
        .active_producers()
        .into_iter()
        .map(|p| {
            ProducerState::default()
                .with_producer_id(ProducerId(p.producer_id))
                .with_producer_epoch(i32::from(p.epoch))
                .with_last_sequence(p.last_sequence)
                .with_last_timestamp(p.last_timestamp)
                .with_coordinator_epoch(UNKNOWN as i32)
                .with_current_txn_start_offset(p.txn_start_offset.unwrap_or(UNKNOWN))
        })
        .collect();
    resp.with_error_code(error::NONE)
        .with_active_producers(producers)
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeProducersRequest = req.decode()?;
    let topics = body
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let readable = session.may(shard, op::READ, resource::TOPIC, &name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    if readable {
                        partition_state(shard, &name, p)
                    } else {
                        PartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(error::TOPIC_AUTHORIZATION_FAILED)
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let resp = DescribeProducersResponse::default().with_topics(topics);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
