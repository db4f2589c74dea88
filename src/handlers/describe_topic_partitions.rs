//! DescribeTopicPartitions (key 75, KIP-966): topics and their partitions as Metadata
//! describes them, paginated: at most `response_partition_limit` partitions per answer
//! (and never more than `DESCRIBE_PARTITIONS_MAX`, Kafka's
//! max.request.partition.size.limit), with a cursor (topic, partition) where the next page
//! starts. An empty topic list means every topic. Topics come sorted by name; the cursor's
//! topic must be among the requested ones (INVALID_REQUEST otherwise, as Kafka).
//!
//! Authorization (Kafka's, as Metadata): DESCRIBE on the topic. Asking for every topic
//! shows only those the principal may describe; a named topic it may not is answered
//! TOPIC_AUTHORIZATION_FAILED (no topic id), after the page, on every page. Each topic's
//! authorized operations are the principal's own.
//!
//! Runs on: any shard, from its own copy of the cluster metadata (as Metadata).
//! Not kept: eligible leader replicas (KIP-966's ELR), answered empty.

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::metadata::{broker_ids, partition_view};
use super::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, acl, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeTopicPartitions,
    min_version: 0,
    max_version: 0,
};
/// Partitions in one answer at most (Kafka's max.request.partition.size.limit default).
pub const DESCRIBE_PARTITIONS_MAX: usize = 2000;

fn error_topic(name: &str, code: i16) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code)
        .with_name(Some(TopicName(str_bytes(name))))
        .with_topic_authorized_operations(acl::OMITTED)
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeTopicPartitionsRequest = req.decode()?;
    let meta = shard.meta();
    let isolated_host = shard.isolated().then_some(shard.config.node_id);
    let all = body.topics.is_empty();
    let mut names: Vec<String> = if all {
        meta.topics.keys().cloned().collect()
    } else {
        body.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let cursor = body
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let mut resp = DescribeTopicPartitionsResponse::default();
    if let Some((topic, p)) = &cursor
        && (*p < 0 || (!all && names.binary_search(topic).is_err()))
    {
        resp.topics = names
            .iter()
            .map(|n| error_topic(n, error::INVALID_REQUEST))
            .collect();
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let limit = usize::try_from(body.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, DESCRIBE_PARTITIONS_MAX);
    let mut left = limit;
    let (names, refused): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| session.may(shard, op::DESCRIBE, resource::TOPIC, n));
    // Kafka hides what the principal may not describe when every topic is asked for.
    let refused = if all { Vec::new() } else { refused };
    let start = match &cursor {
        Some((topic, _)) => names.partition_point(|n| n < topic),
        None => 0,
    };
    for (i, name) in names.iter().enumerate().skip(start) {
        let Some(t) = meta.topic(name) else {
            let code = if crate::topic_config::validate_topic_name(name).is_err() {
                error::INVALID_TOPIC_EXCEPTION
            } else {
                error::UNKNOWN_TOPIC_OR_PARTITION
            };
            resp.topics.push(error_topic(name, code));
            continue;
        };
        if left == 0 {
            // The page is full before this topic: the next one starts with it.
            resp.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name.clone())))
                    .with_partition_index(0),
            );
            break;
        }
        let first = match &cursor {
            Some((topic, p)) if i == start && topic == name => *p as usize,
            _ => 0,
        };
        let end = t.partitions.len().min(first.saturating_add(left));
        let partitions: Vec<_> = t
            .partitions
            .iter()
            .enumerate()
            .take(end)
            .skip(first)
            .map(|(p, pm)| {
                let (code, leader, offline) = partition_view(&meta, pm, isolated_host);
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(code)
                    .with_partition_index(p as i32)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(pm.leader_epoch)
                    .with_replica_nodes(broker_ids(&pm.replicas))
                    .with_isr_nodes(broker_ids(&pm.isr))
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(offline)
            })
            .collect();
        left -= partitions.len();
        resp.topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(error::NONE)
                .with_name(Some(TopicName(str_bytes(name.clone()))))
                .with_topic_id(uuid(t.id))
                .with_is_internal(crate::internal_topic::is_internal(name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(session.authorized_ops(
                    shard,
                    resource::TOPIC,
                    name,
                    acl::TOPIC,
                )),
        );
        if end < t.partitions.len() {
            resp.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name.clone())))
                    .with_partition_index(end as i32),
            );
            break;
        }
    }
    resp.topics.extend(
        refused
            .iter()
            .map(|n| error_topic(n, error::TOPIC_AUTHORIZATION_FAILED)),
    );
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
