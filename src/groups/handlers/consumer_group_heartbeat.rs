//! ConsumerGroupHeartbeat (key 68, KIP-848): joins, heartbeats and leaves a
//! consumer-protocol group; answers the member's epoch and, when it changed, its assignment
//! (topic ids and partitions). The state machine is `groups::consumer`.
//!
//! Runs on: the group's coordinator shard.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as RespTopicPartitions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};

use super::check_group;
use crate::groups::consumer::{self, ConsumerGroup, HeartbeatParams, HeartbeatResult, TopicCounts};
use crate::groups::errors::*;
use crate::groups::group::Group;
use crate::groups::{GROUP_MAX_SIZE, GROUPS_PER_SHARD_MAX};
use crate::handlers::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupHeartbeat,
    min_version: 0,
    max_version: 1,
};

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ConsumerGroupHeartbeatRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let meta = shard.meta();
    let params = HeartbeatParams {
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        instance_id: body.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: body.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed: body
            .subscribed_topic_names
            .as_ref()
            .map(|v| v.iter().map(|t| t.0.to_string()).collect()),
        regex: body.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: body.server_assignor.as_ref().map(|s| s.to_string()),
        owned: body.topic_partitions.as_ref().map(|tps| {
            let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            for tp in tps {
                if let Some(t) = meta.topic_by_id(tp.topic_id.as_bytes()) {
                    out.entry(t.name.clone())
                        .or_default()
                        .extend(tp.partitions.iter().copied());
                }
            }
            out
        }),
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
    };
    let result = if group_id.is_empty() {
        HeartbeatResult {
            error: INVALID_REQUEST,
            message: Some("GroupId can't be empty.".into()),
            ..Default::default()
        }
    } else {
        // Kafka: DESCRIBE on every subscribed topic name (regex matches are not filtered
        // by the authorizer here).
        let hidden = params
            .subscribed
            .iter()
            .flatten()
            .any(|t| !session.may(shard, op::DESCRIBE, crate::acl::resource::TOPIC, t));
        match check_group(shard, session, op::READ, &group_id) {
            NONE if hidden => HeartbeatResult {
                error: crate::protocol::error::TOPIC_AUTHORIZATION_FAILED,
                message: Some("subscribed topics not authorized".into()),
                ..Default::default()
            },
            NONE => match consumer::validate(&params, req.version) {
                Err((code, msg)) => HeartbeatResult {
                    error: code,
                    message: Some(msg),
                    ..Default::default()
                },
                Ok(()) => heartbeat(shard, &group_id, params),
            },
            code => HeartbeatResult {
                error: code,
                ..Default::default()
            },
        }
    };
    let assignment = result.assignment.map(|tp| {
        Assignment::default().with_topic_partitions(
            tp.into_iter()
                .filter_map(|(t, ps)| {
                    let id = meta.topic(&t)?.id;
                    Some(
                        RespTopicPartitions::default()
                            .with_topic_id(uuid(id))
                            .with_partitions(ps.into_iter().collect()),
                    )
                })
                .collect(),
        )
    });
    let ok = result.error == NONE;
    let resp = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(result.error)
        .with_error_message(result.message.map(str_bytes))
        .with_member_id((ok || !result.member_id.is_empty()).then(|| str_bytes(result.member_id)))
        .with_member_epoch(result.member_epoch)
        .with_heartbeat_interval_ms(if ok {
            shard.config.group_consumer_heartbeat_interval_ms as i32
        } else {
            0
        })
        .with_assignment(assignment);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// The partition counts of the topics the group's members (and this request) may
/// subscribe to: every topic when someone subscribes by regex, else the named ones.
fn topic_counts(
    meta: &crate::metadata::ClusterMeta,
    c: &ConsumerGroup,
    p: &HeartbeatParams,
) -> TopicCounts {
    let count = |t: &crate::metadata::TopicMeta| t.partitions.len() as i32;
    let any_regex = p.regex.as_deref().is_some_and(|r| !r.is_empty())
        || c.members.values().any(|m| m.regex.is_some());
    if any_regex {
        return meta
            .topics
            .iter()
            .map(|(n, t)| (n.clone(), count(t)))
            .collect();
    }
    let mut out = TopicCounts::new();
    let names = c
        .members
        .values()
        .flat_map(|m| m.subscribed.iter())
        .chain(p.subscribed.iter().flatten());
    for n in names {
        if !out.contains_key(n)
            && let Some(t) = meta.topic(n)
        {
            out.insert(n.clone(), count(t));
        }
    }
    out
}

fn heartbeat(shard: &Rc<Shard>, group_id: &str, p: HeartbeatParams) -> HeartbeatResult {
    let co = &shard.groups;
    let mut groups = co.groups.borrow_mut();
    let err = |code: i16, msg: &str| HeartbeatResult {
        error: code,
        message: Some(msg.to_string()),
        ..Default::default()
    };
    if !groups.contains_key(group_id) {
        if p.member_epoch != consumer::JOIN_EPOCH {
            return err(UNKNOWN_MEMBER_ID, "the group has no such member");
        }
        if groups.len() >= GROUPS_PER_SHARD_MAX {
            return err(
                COORDINATOR_NOT_AVAILABLE,
                "too many groups on this coordinator",
            );
        }
        groups.insert(group_id.to_string(), Group::new(group_id.to_string()));
    }
    let Some(g) = groups.get_mut(group_id) else {
        return err(COORDINATOR_NOT_AVAILABLE, "group gone");
    };
    if g.state == crate::groups::group::GroupState::Dead {
        return err(COORDINATOR_NOT_AVAILABLE, "the group is being deleted");
    }
    if g.consumer.is_none() {
        // An empty classic group (offsets only) becomes a consumer group; a live one is
        // not a consumer group (Kafka's GroupIdNotFoundException; Kafka 4 can also
        // migrate a live classic group, osprey does not).
        if !g.members.is_empty() || g.state != crate::groups::group::GroupState::Empty {
            return err(
                GROUP_ID_NOT_FOUND,
                &format!("Group {group_id} is not a consumer group."),
            );
        }
        g.consumer = Some(Box::default());
        g.protocol_type = Some("consumer".into());
    }
    let Some(c) = g.consumer.as_mut() else {
        return err(COORDINATOR_NOT_AVAILABLE, "group gone");
    };
    c.hold_until = g.consumer_hold_until;
    let meta = shard.meta();
    let topics = topic_counts(&meta, c, &p);
    let seq = &co.id_seq;
    let shard_id = shard.id;
    let r = c.heartbeat(
        p,
        &topics,
        GROUP_MAX_SIZE,
        Instant::now(),
        || {
            let n = seq.get() + 1;
            seq.set(n);
            let r = crate::metadata::new_topic_id();
            let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}-{shard_id}-{n}")
        },
        |bytes| co.admit_membership(bytes as u64),
    );
    if c.members.is_empty() {
        g.empty_since_ms = crate::groups::group::now_ms();
    }
    r
}
