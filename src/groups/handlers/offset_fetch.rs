//! OffsetFetch (key 9): committed offsets of a group, for listed partitions or all of them
//! (null topics), and the v8+ batched form with several groups.
//!
//! Authorization (Kafka's, every version): DESCRIBE on the group (else
//! GROUP_AUTHORIZATION_FAILED), and DESCRIBE on each topic: a listed topic the principal
//! may not describe gets TOPIC_AUTHORIZATION_FAILED (offset -1) on each of its partitions,
//! and "all topics" leaves such topics out.
//!
//! Runs on: the group's coordinator shard (in the batched form, groups coordinated
//! elsewhere get NOT_COORDINATOR each).

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::check_group;
use crate::acl::resource;
use crate::groups::errors::*;
use crate::groups::group::GroupState;
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::error::TOPIC_AUTHORIZATION_FAILED;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetFetch,
    min_version: 1,
    // v9 (KIP-848): a consumer-protocol member's id and epoch, checked per group.
    max_version: 9,
};
const FETCH_VERSION_BATCHED_MIN: i16 = 8;
/// v1 has no group-level error code: errors go on every partition.
const FETCH_VERSION_GROUP_ERROR_MIN: i16 = 2;

/// (partition, offset, leader epoch, metadata, error).
type PartitionOffset = (i32, i64, i32, String, i16);
/// Per asked partition, grouped by topic.
type TopicOffsets = Vec<(String, Vec<PartitionOffset>)>;

/// Looks up one group; `asked` None = every partition with a committed offset.
fn lookup(
    shard: &Shard,
    session: &Session,
    group: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
    member: (Option<&str>, i32),
) -> (i16, TopicOffsets) {
    let mut code = check_group(shard, session, op::DESCRIBE, group);
    let may_describe = |topic: &str| session.may(shard, op::DESCRIBE, resource::TOPIC, topic);
    let groups = shard.groups.groups.borrow();
    // v9+ from a consumer-protocol member: its id and epoch are checked (Kafka's
    // ConsumerGroup.validateOffsetFetch).
    if code == NONE
        && let Some(c) = groups.get(group).and_then(|g| g.consumer.as_deref())
    {
        code = c.fetch_allowed(member.0, member.1);
    }
    let g = groups
        .get(group)
        .filter(|g| code == NONE && g.state != GroupState::Dead);
    match asked {
        Some(asked) => {
            let out = asked
                .into_iter()
                .map(|(topic, parts)| {
                    let describable = code != NONE || may_describe(&topic);
                    let ps = parts
                        .into_iter()
                        .map(
                            |p| match g.and_then(|g| g.offsets.get(&(topic.clone(), p))) {
                                _ if !describable => {
                                    (p, -1, -1, String::new(), TOPIC_AUTHORIZATION_FAILED)
                                }
                                Some(o) => (p, o.offset, o.leader_epoch, o.metadata.clone(), NONE),
                                None => (p, -1, -1, String::new(), code),
                            },
                        )
                        .collect();
                    (topic, ps)
                })
                .collect();
            (code, out)
        }
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<PartitionOffset>> =
                Default::default();
            if let Some(g) = g {
                for ((t, p), o) in g.offsets.iter().filter(|((t, _), _)| may_describe(t)) {
                    by_topic.entry(t.clone()).or_default().push((
                        *p,
                        o.offset,
                        o.leader_epoch,
                        o.metadata.clone(),
                        NONE,
                    ));
                }
            }
            for v in by_topic.values_mut() {
                v.sort_by_key(|x| x.0);
            }
            (code, by_topic.into_iter().collect())
        }
    }
}

/// A partition's own error in the forms with a group-level error code (v2+): only the
/// topic's authorization failure; the group's errors are answered once for the group.
fn topic_error(err: i16) -> i16 {
    if err == TOPIC_AUTHORIZATION_FAILED {
        err
    } else {
        NONE
    }
}

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: OffsetFetchRequest = req.decode()?;
    let mut resp = OffsetFetchResponse::default();
    if req.version >= FETCH_VERSION_BATCHED_MIN {
        for g in body.groups {
            let asked = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let (code, topics) = lookup(
                shard,
                session,
                &g.group_id,
                asked,
                (g.member_id.as_deref(), g.member_epoch),
            );
            resp.groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(code)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(t)))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, off, epoch, meta, err)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(topic_error(err))
                                                    .with_committed_offset(off)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(meta)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
            );
        }
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let asked = body.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let (code, topics) = lookup(shard, session, &body.group_id, asked, (None, -1));
    let v1 = req.version < FETCH_VERSION_GROUP_ERROR_MIN;
    resp.topics = topics
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, off, epoch, meta, err)| {
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(off)
                                .with_metadata(Some(str_bytes(meta)))
                                .with_error_code(if v1 { err } else { topic_error(err) });
                            if req.version >= 5 {
                                r.committed_leader_epoch = epoch;
                            }
                            r
                        })
                        .collect(),
                )
        })
        .collect();
    if !v1 {
        resp.error_code = code;
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
