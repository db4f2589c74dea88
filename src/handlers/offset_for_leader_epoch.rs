//! OffsetForLeaderEpoch (key 23): where a leader epoch ends in the leader's log. Consumers
//! use it to validate their position after a leader change (KIP-320); followers of older
//! Kafka versions used it to find their divergence point (osprey's followers get it in
//! Fetch's DivergingEpoch instead).
//!
//! Runs on: the shard that leads each partition (forwarded through the router otherwise).
//! Authorization (Kafka's, since KIP-320 made it a consumer API): CLUSTER_ACTION on the
//! cluster (replicas) allows every topic; otherwise DESCRIBE on the topic, else
//! TOPIC_AUTHORIZATION_FAILED on each of its partitions.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::{LookupError, Owner, Shard};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetForLeaderEpoch,
    min_version: 0,
    max_version: 4,
};

/// (error, epoch, end offset) for one partition, on the shard that leads it.
async fn answer_local(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> (i16, i32, i64) {
    let r = match shard.partition(&topic, partition) {
        Ok(r) => r,
        Err(LookupError::UnknownTopicOrPartition) => {
            return (error::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
        }
        Err(_) => return (error::NOT_LEADER_OR_FOLLOWER, -1, -1),
    };
    if current_leader_epoch >= 0 {
        let epoch = r.leader_epoch();
        if current_leader_epoch < epoch {
            return (error::FENCED_LEADER_EPOCH, -1, -1);
        }
        if current_leader_epoch > epoch {
            return (error::UNKNOWN_LEADER_EPOCH, -1, -1);
        }
    }
    match r.end_offset_for_epoch(leader_epoch) {
        Some((e, end)) => (error::NONE, e, end),
        // No epochs known at all: Kafka's UNDEFINED answer.
        None => (error::NONE, -1, -1),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: OffsetForLeaderEpochRequest = req.decode()?;
    let mut topics = Vec::with_capacity(body.topics.len());
    let replica = session.may_cluster(shard, op::CLUSTER_ACTION);
    for t in body.topics {
        let name = t.topic.0.to_string();
        let describable = replica || session.may(shard, op::DESCRIBE, resource::TOPIC, &name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let (code, epoch, end) = match shard.owner(&name, p.partition) {
                _ if !describable => (error::TOPIC_AUTHORIZATION_FAILED, -1, -1),
                None => (error::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                Some(Owner::OtherHost(_) | Owner::Offline) => {
                    (error::NOT_LEADER_OR_FOLLOWER, -1, -1)
                }
                Some(Owner::Shard(owner)) => {
                    let n = name.clone();
                    let (idx, cur, want) = (p.partition, p.current_leader_epoch, p.leader_epoch);
                    shard
                        .call(owner, move |s| answer_local(s, n, idx, cur, want))
                        .await
                        .unwrap_or((error::NOT_LEADER_OR_FOLLOWER, -1, -1))
                }
            };
            parts.push(
                EpochEndOffset::default()
                    .with_error_code(code)
                    .with_partition(p.partition)
                    .with_leader_epoch(epoch)
                    .with_end_offset(end),
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
