//! DescribeGroups (key 15): state, protocol, members (with metadata and assignment) of
//! groups this shard coordinates.
//!
//! Runs on: the groups' coordinator shard (others get NOT_COORDINATOR per group).

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};

use super::check_group;
use crate::groups::errors::*;
use crate::groups::group::GroupState;
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, acl};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeGroups,
    min_version: 0,
    max_version: 6,
};
/// v6+ answers GROUP_ID_NOT_FOUND for unknown groups (older: state Dead, no error).
const DESCRIBE_VERSION_NOT_FOUND_MIN: i16 = 6;

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeGroupsRequest = req.decode()?;
    let mut resp = DescribeGroupsResponse::default();
    let groups = shard.groups.groups.borrow();
    for id in body.groups {
        let mut d = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_group_state(str_bytes(GroupState::Dead.name()))
            .with_authorized_operations(acl::OMITTED);
        let code = check_group(shard, session, op::DESCRIBE, &id);
        match groups.get(id.as_str()).filter(|_| code == NONE) {
            // A consumer-protocol group is not a classic group: Kafka answers it as an
            // unknown one here (ConsumerGroupDescribe describes it).
            Some(g) if g.state != GroupState::Dead && g.consumer.is_none() => {
                // The principal's own (every supported one without an authorizer).
                if body.include_authorized_operations {
                    d.authorized_operations =
                        session.authorized_ops(shard, crate::acl::resource::GROUP, &id, acl::GROUP);
                }
                d.group_state = str_bytes(g.state.name());
                d.protocol_type = str_bytes(g.protocol_type.clone().unwrap_or_default());
                let protocol = g.protocol.clone().unwrap_or_default();
                d.protocol_data = str_bytes(protocol.clone());
                let mut ms: Vec<_> = g.members.values().collect();
                ms.sort_by(|a, b| a.id.cmp(&b.id));
                // Kafka shows metadata and assignment only once a protocol was chosen.
                let stable = g.state == GroupState::Stable;
                d.members = ms
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()));
                        if req.version >= 4 {
                            dm.group_instance_id = m.instance_id.clone().map(str_bytes);
                        }
                        if stable {
                            dm.member_metadata = m.metadata_for(&protocol);
                            dm.member_assignment = m.assignment.clone();
                        }
                        dm
                    })
                    .collect();
            }
            _ if code != NONE => d.error_code = code,
            _ => {
                if req.version >= DESCRIBE_VERSION_NOT_FOUND_MIN {
                    d.error_code = GROUP_ID_NOT_FOUND;
                }
            }
        }
        if req.version >= DESCRIBE_VERSION_NOT_FOUND_MIN && d.error_code != NONE {
            d.error_message = Some(str_bytes(format!("error {}", d.error_code)));
        }
        resp.groups.push(d);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
