//! SyncGroup (key 14): the leader hands in the assignment (opaque bytes: range,
//! roundrobin, sticky are the clients' business); every member gets its own share once the
//! leader's arrived.
//!
//! Runs on: the group's coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};

use super::{check_group, opt_str};
use crate::groups::errors::*;
use crate::groups::group::{SyncResult, Wait};
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::SyncGroup,
    min_version: 0,
    max_version: 5,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: SyncGroupRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let result = match check_group(shard, session, op::READ, &group_id) {
        NONE => {
            let wait = {
                let mut groups = shard.groups.groups.borrow_mut();
                let assigned: u64 = body
                    .assignments
                    .iter()
                    .map(|a| a.assignment.len() as u64)
                    .sum();
                match groups.get_mut(&group_id) {
                    None => Wait::Now(SyncResult::error(UNKNOWN_MEMBER_ID)),
                    // The assignments count against the shard's membership bound.
                    Some(_) if !shard.groups.admit_membership(assigned) => {
                        log::warn!(
                            "shard {}: group {group_id}: assignment of {assigned} bytes refused (group-membership-max-bytes)",
                            shard.id
                        );
                        Wait::Now(SyncResult::error(COORDINATOR_NOT_AVAILABLE))
                    }
                    Some(g) => g.sync(
                        &body.member_id,
                        opt_str(&body.group_instance_id).as_deref(),
                        body.generation_id,
                        body.protocol_type.as_deref(),
                        body.protocol_name.as_deref(),
                        body.assignments
                            .into_iter()
                            // Copied out of the frame, as JoinGroup metadata is.
                            .map(|a| {
                                (
                                    a.member_id.to_string(),
                                    bytes::Bytes::copy_from_slice(&a.assignment),
                                )
                            })
                            .collect(),
                    ),
                }
            };
            match wait {
                Wait::Now(r) => r,
                Wait::Later(rx) => rx
                    .await
                    .unwrap_or_else(|| SyncResult::error(REBALANCE_IN_PROGRESS)),
            }
        }
        code => SyncResult::error(code),
    };
    let mut resp = SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_assignment(result.assignment);
    if req.version >= 5 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol.map(str_bytes);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
