//! OffsetDelete (key 47): deletes a group's committed offsets for some partitions, as
//! Kafka: allowed for an empty group, and for a consumer group only on topics none of its
//! members subscribes to (GROUP_SUBSCRIBED_TO_TOPIC per partition otherwise); any other
//! group with members gets NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND. The
//! deletion is a durable record in the offsets log before the answer. Authorization
//! (Kafka's): DELETE on the group, and READ on each topic (TOPIC_AUTHORIZATION_FAILED on
//! its partitions otherwise).
//!
//! Runs on: the group's coordinator shard (others get NOT_COORDINATOR).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};

use super::check_group;
use crate::groups::AppendFailure;
use crate::groups::errors::*;
use crate::groups::group::GroupState;
use crate::groups::offsets::{LogEntry, PartitionTombstones};
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetDelete,
    min_version: 0,
    max_version: 0,
};

/// The group-level error, or per (topic, partition) error codes in request order.
async fn delete(
    shard: &Rc<Shard>,
    session: &Session,
    body: &OffsetDeleteRequest,
) -> Result<Vec<Vec<i16>>, i16> {
    let group = body.group_id.as_str();
    let code = check_group(shard, session, op::DELETE, group);
    if code != NONE {
        return Err(code);
    }
    let meta = shard.meta();
    let co = &shard.groups;
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(body.topics.len());
    let mut doomed = Vec::new();
    let stamp = {
        let groups = co.groups.borrow();
        let g = match groups.get(group) {
            Some(g) if g.state != GroupState::Dead => g,
            _ => return Err(GROUP_ID_NOT_FOUND),
        };
        let subscribed = if g.state == GroupState::Empty && g.is_empty() {
            Default::default()
        } else {
            match g.subscribed_topics() {
                Some(s) => s,
                None => return Err(NON_EMPTY_GROUP),
            }
        };
        for t in &body.topics {
            let name = t.name.0.to_string();
            let known = meta.topic(&name);
            // Kafka: READ on the topic, checked before its existence.
            let readable = session.may(shard, op::READ, crate::acl::resource::TOPIC, &name);
            codes.push(
                t.partitions
                    .iter()
                    .map(|p| {
                        let exists = known.is_some_and(|k| {
                            p.partition_index >= 0
                                && (p.partition_index as usize) < k.partitions.len()
                        });
                        if !readable {
                            crate::protocol::error::TOPIC_AUTHORIZATION_FAILED
                        } else if !exists {
                            UNKNOWN_TOPIC_OR_PARTITION
                        } else if subscribed.contains(&name) {
                            GROUP_SUBSCRIBED_TO_TOPIC
                        } else {
                            doomed.push((name.clone(), p.partition_index));
                            NONE
                        }
                    })
                    .collect(),
            );
        }
        co.next_stamp()
    };
    if doomed.is_empty() {
        return Ok(codes);
    }
    let entry = LogEntry::PartitionTombstones(Box::new(PartitionTombstones {
        group: group.to_string(),
        partitions: doomed.clone(),
        stamp,
    }));
    match co.append(shard, group, &entry).await {
        Ok(()) => {
            if let Some(g) = co.groups.borrow_mut().get_mut(group) {
                g.delete_offsets(&doomed, stamp);
            }
            Ok(codes)
        }
        Err(AppendFailure::TooLarge) => Err(INVALID_REQUEST),
        Err(e) => Err(e.code()),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: OffsetDeleteRequest = req.decode()?;
    let resp = match delete(shard, session, &body).await {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(codes) => OffsetDeleteResponse::default()
            .with_error_code(NONE)
            .with_topics(
                body.topics
                    .iter()
                    .zip(codes)
                    .map(|(t, codes)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .zip(codes)
                                    .map(|(p, c)| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(c)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
    };
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
