//! ListGroups (key 16): the groups this shard coordinates (each shard is a broker node;
//! admin clients ask every node), optionally filtered by state (v4+) and type (v5+).
//!
//! Runs on: any shard, answering for its own groups.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::groups::errors::*;
use crate::groups::group::GroupState;
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListGroups,
    min_version: 0,
    max_version: 5,
};
/// The group types (Kafka's names): classic and consumer protocol (KIP-848).
const GROUP_TYPE_CLASSIC: &str = "classic";
const GROUP_TYPE_CONSUMER: &str = "consumer";

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ListGroupsRequest = req.decode()?;
    let mut resp = ListGroupsResponse::default();
    if shard.groups.loading() {
        resp.error_code = COORDINATOR_LOAD_IN_PROGRESS;
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let states: Vec<String> = body
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = body
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let may_describe_all = session.may_cluster(shard, op::DESCRIBE);
    let groups = shard.groups.groups.borrow();
    let mut names: Vec<&String> = groups.keys().collect();
    names.sort();
    for name in names {
        let g = &groups[name];
        // Kafka: ListGroups shows the groups the principal may describe (all of them
        // with DESCRIBE on the cluster).
        if g.state == GroupState::Dead
            || !(may_describe_all
                || session.may(shard, op::DESCRIBE, crate::acl::resource::GROUP, name))
        {
            continue;
        }
        let (state, group_type) = match g.consumer.as_deref() {
            Some(c) => (c.state_name(), GROUP_TYPE_CONSUMER),
            None => (g.state.name(), GROUP_TYPE_CLASSIC),
        };
        if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == group_type) {
            continue;
        }
        let mut l = ListedGroup::default()
            .with_group_id(GroupId(str_bytes(name.clone())))
            .with_protocol_type(str_bytes(g.protocol_type.clone().unwrap_or_default()));
        if req.version >= 4 {
            l.group_state = str_bytes(state);
        }
        if req.version >= 5 {
            l.group_type = str_bytes(group_type);
        }
        resp.groups.push(l);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
