//! ListPartitionReassignments (key 46): the ongoing reassignments (replicas, the ones
//! being added and removed), for every partition or the ones asked; partitions not being
//! moved, and unknown ones, are left out as Kafka does (`kafka-reassign-partitions.sh
//! --verify`, the admin clients' `list_partition_reassignments`).
//!
//! Runs on: any shard, from its copy of the cluster metadata (no cross-shard call). Needs
//! DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED at the top).

use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    TopicName,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, acl::op, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListPartitionReassignments,
    min_version: 0,
    max_version: 0,
};

fn ids(nodes: &[i32]) -> Vec<BrokerId> {
    nodes.iter().map(|n| BrokerId(*n)).collect()
}

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ListPartitionReassignmentsRequest = req.decode()?;
    if !session.may_cluster(shard, op::DESCRIBE) {
        let resp = ListPartitionReassignmentsResponse::default()
            .with_error_code(error::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let meta = shard.meta();
    let asked: Vec<(String, Option<Vec<i32>>)> = match &body.topics {
        Some(ts) => ts
            .iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes.clone())))
            .collect(),
        None => meta.topics.keys().map(|n| (n.clone(), None)).collect(),
    };
    let mut topics = Vec::new();
    for (name, parts) in asked {
        let Some(t) = meta.topic(&name) else { continue };
        let indexes: Vec<i32> = parts.unwrap_or_else(|| (0..t.partitions.len() as i32).collect());
        let partitions: Vec<OngoingPartitionReassignment> = indexes
            .into_iter()
            .filter_map(|i| {
                let p = t.partitions.get(usize::try_from(i).ok()?)?;
                (!p.adding.is_empty() || !p.removing.is_empty()).then(|| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions),
            );
        }
    }
    let resp = ListPartitionReassignmentsResponse::default()
        .with_error_code(error::NONE)
        .with_error_message(None)
        .with_topics(topics);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
