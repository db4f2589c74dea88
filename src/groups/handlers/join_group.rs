//! JoinGroup (key 11): a member joins (or rejoins) a group; the answer waits until the
//! rebalance's join phase completes (all known members rejoined, the rebalance timeout, or
//! the initial delay for a group that was empty).
//!
//! Runs on: the group's coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};

use super::{check_group, opt_str};
use crate::groups::GROUPS_PER_SHARD_MAX;
use crate::groups::errors::*;
use crate::groups::group::{Group, JoinParams, JoinResult, Wait};
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::JoinGroup,
    min_version: 0,
    max_version: 7,
};
/// v4+: a new member without id first gets MEMBER_ID_REQUIRED (KIP-394).
const JOIN_VERSION_MEMBER_ID_REQUIRED_MIN: i16 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: JoinGroupRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    let result = match check_group(shard, session, op::READ, &group_id) {
        NONE => join(shard, &req, body, group_id).await,
        code => JoinResult::error(code, &member_id),
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_name(Some(str_bytes(result.protocol.clone().unwrap_or_default())))
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_metadata(metadata);
                    if req.version >= 5 {
                        m.group_instance_id = instance.map(str_bytes);
                    }
                    m
                })
                .collect(),
        );
    if req.version >= 7 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol.map(str_bytes);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

async fn join(
    shard: &Rc<Shard>,
    req: &RequestFrame,
    body: JoinGroupRequest,
    group_id: String,
) -> JoinResult {
    let member_id = body.member_id.to_string();
    let params = JoinParams {
        member_id: member_id.clone(),
        instance_id: opt_str(&body.group_instance_id),
        require_known_member_id: req.version >= JOIN_VERSION_MEMBER_ID_REQUIRED_MIN,
        client_id: req.client_id.clone().unwrap_or_default(),
        // Kafka's form: "/" and the address.
        client_host: req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        session_timeout_ms: body.session_timeout_ms,
        rebalance_timeout_ms: if req.version >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .into_iter()
            // Copied out of the request frame: a stored member must not pin its whole
            // JoinGroup frame (up to 100 MiB) for the life of its membership.
            .map(|p| {
                (
                    p.name.to_string(),
                    bytes::Bytes::copy_from_slice(&p.metadata),
                )
            })
            .collect(),
    };
    let co = &shard.groups;
    let wait = {
        let mut groups = co.groups.borrow_mut();
        if !groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return JoinResult::error(UNKNOWN_MEMBER_ID, &member_id);
            }
            if groups.len() >= GROUPS_PER_SHARD_MAX {
                log::warn!(
                    "shard {}: refusing new group {group_id}: {GROUPS_PER_SHARD_MAX} groups is the limit",
                    shard.id
                );
                return JoinResult::error(COORDINATOR_NOT_AVAILABLE, &member_id);
            }
            groups.insert(group_id.clone(), Group::new(group_id.clone()));
        }
        let Some(g) = groups.get_mut(&group_id) else {
            return JoinResult::error(COORDINATOR_NOT_AVAILABLE, &member_id);
        };
        // A consumer-protocol group: a classic member may not join while it has members
        // (Kafka 4 can mix them under group.consumer.migration.policy; osprey does not);
        // an empty one becomes a classic group again.
        match g.consumer.as_deref() {
            Some(c) if !c.members.is_empty() => {
                return JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &member_id);
            }
            Some(_) => {
                g.consumer = None;
                g.protocol_type = None;
            }
            None => {}
        }
        // The shard's membership bound: a new member takes what it holds, a known one
        // what it grows by (a new member's id is not made yet: its client id, a dash and
        // 24 hex digits, `Group::new_member_id`).
        let id_bytes = if member_id.is_empty() {
            params.client_id.len() + 25
        } else {
            member_id.len()
        };
        let wanted = crate::groups::group::member_bytes(
            id_bytes,
            params.instance_id.as_deref(),
            &params.client_id,
            &params.client_host,
            &params.protocols,
        );
        let held = g.member_bytes_of(&member_id).unwrap_or(0);
        if wanted > held && !co.admit_membership((wanted - held) as u64) {
            log::warn!(
                "shard {}: group {group_id}: member refused, the shard's groups hold {} bytes of membership (group-membership-max-bytes)",
                shard.id,
                co.membership_bytes()
            );
            return JoinResult::error(GROUP_MAX_SIZE_REACHED, &member_id);
        }
        let mut seq = co.id_seq.get();
        let w = g.join(params, co.initial_delay(), &mut seq);
        co.id_seq.set(seq);
        w
    };
    match wait {
        Wait::Now(r) => r,
        // A dropped sender means this join was superseded by a newer one of the member.
        Wait::Later(rx) => rx
            .await
            .unwrap_or_else(|| JoinResult::error(REBALANCE_IN_PROGRESS, &member_id)),
    }
}
