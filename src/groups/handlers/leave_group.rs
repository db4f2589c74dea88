//! LeaveGroup (key 13): members leave at once (v3+: several, static ones by instance id)
//! instead of waiting for their session to expire; the rest rebalance.
//!
//! Runs on: the group's coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::{check_group, opt_str};
use crate::groups::errors::*;
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::LeaveGroup,
    min_version: 0,
    max_version: 5,
};
/// v3+ carries a list of members (KIP-345 batch leave).
const LEAVE_VERSION_BATCH_MIN: i16 = 3;

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: LeaveGroupRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let identities: Vec<(String, Option<String>)> = if req.version >= LEAVE_VERSION_BATCH_MIN {
        body.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_str(&m.group_instance_id)))
            .collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let mut top = check_group(shard, session, op::READ, &group_id);
    let mut per_member = Vec::with_capacity(identities.len());
    if top == NONE {
        let mut groups = shard.groups.groups.borrow_mut();
        match groups.get_mut(&group_id) {
            None => top = UNKNOWN_MEMBER_ID,
            Some(g) => {
                for (member, instance) in &identities {
                    per_member.push(g.leave(member, instance.as_deref()));
                }
            }
        }
    }
    let mut resp = LeaveGroupResponse::default();
    if req.version >= LEAVE_VERSION_BATCH_MIN {
        resp.error_code = top;
        if top == NONE {
            resp.members = identities
                .into_iter()
                .zip(per_member)
                .map(|((member, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(member.into())
                        .with_group_instance_id(instance.map(Into::into))
                        .with_error_code(code)
                })
                .collect();
        }
    } else {
        resp.error_code = if top == NONE {
            per_member.first().copied().unwrap_or(NONE)
        } else {
            top
        };
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
