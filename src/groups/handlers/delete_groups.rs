//! DeleteGroups (key 42): removes empty groups and their committed offsets (a durable
//! tombstone in the offsets log first); groups with members get NON_EMPTY_GROUP.
//!
//! Runs on: the groups' coordinator shard (others get NOT_COORDINATOR per group).

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};

use super::check_group;
use crate::groups::AppendFailure;
use crate::groups::errors::*;
use crate::groups::group::GroupState;
use crate::groups::offsets::LogEntry;
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteGroups,
    min_version: 0,
    max_version: 2,
};

async fn delete(shard: &Rc<Shard>, session: &Session, group: &str) -> i16 {
    let code = check_group(shard, session, op::DELETE, group);
    if code != NONE {
        return code;
    }
    let co = &shard.groups;
    let stamp = {
        let groups = co.groups.borrow();
        match groups.get(group) {
            None => return GROUP_ID_NOT_FOUND,
            Some(g) if g.state == GroupState::Dead => return GROUP_ID_NOT_FOUND,
            Some(g) if !g.is_empty() || g.state != GroupState::Empty => return NON_EMPTY_GROUP,
            Some(_) => co.next_stamp(),
        }
    };
    let entry = LogEntry::Tombstone {
        group: group.to_string(),
        stamp,
    };
    match co.append(shard, group, &entry).await {
        Ok(()) => {
            let mut groups = co.groups.borrow_mut();
            match groups.get_mut(group) {
                // A member may have joined while the tombstone was written: its offsets
                // are gone, the group itself stays.
                Some(g) if !g.is_empty() => g.apply_tombstone(stamp),
                Some(g) => {
                    g.apply_tombstone(stamp);
                    g.kill();
                }
                None => {}
            }
            NONE
        }
        Err(AppendFailure::TooLarge) => INVALID_REQUEST,
        Err(e) => e.code(),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DeleteGroupsRequest = req.decode()?;
    let mut resp = DeleteGroupsResponse::default();
    for id in body.groups_names {
        let code = delete(shard, session, &id).await;
        resp.results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
