//! Heartbeat (key 12): keeps a member's session alive and tells it when a rebalance is
//! under way (REBALANCE_IN_PROGRESS), so it rejoins.
//!
//! Runs on: the group's coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::{check_group, opt_str};
use crate::groups::errors::*;
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Heartbeat,
    min_version: 0,
    max_version: 4,
};

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: HeartbeatRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let error = match check_group(shard, session, op::READ, &group_id) {
        NONE => match shard.groups.groups.borrow_mut().get_mut(&group_id) {
            None => UNKNOWN_MEMBER_ID,
            Some(g) => g.heartbeat(
                &body.member_id,
                opt_str(&body.group_instance_id).as_deref(),
                body.generation_id,
            ),
        },
        code => code,
    };
    let resp = HeartbeatResponse::default().with_error_code(error);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
