//! ConsumerGroupDescribe (key 69, KIP-848): a consumer-protocol group's state, epochs,
//! assignor and members (subscriptions, current and target assignments). A classic or
//! unknown group gets GROUP_ID_NOT_FOUND, as Kafka.
//!
//! Runs on: the group's coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::check_group;
use crate::groups::assignor;
use crate::groups::errors::*;
use crate::handlers::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::protocol::acl::{self, op};
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupDescribe,
    min_version: 0,
    max_version: 1,
};
/// ConsumerGroupDescribe's member_type for a consumer-protocol member.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn assignment(meta: &crate::metadata::ClusterMeta, tp: &assignor::TopicPartitions) -> Assignment {
    Assignment::default().with_topic_partitions(
        tp.iter()
            .filter_map(|(t, ps)| {
                let id = meta.topic(t)?.id;
                Some(
                    TopicPartitions::default()
                        .with_topic_id(uuid(id))
                        .with_topic_name(TopicName(str_bytes(t.clone())))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    )
}

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ConsumerGroupDescribeRequest = req.decode()?;
    let meta = shard.meta();
    let mut resp = ConsumerGroupDescribeResponse::default();
    let groups = shard.groups.groups.borrow();
    for id in body.group_ids {
        let mut d = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_authorized_operations(acl::OMITTED);
        let code = check_group(shard, session, op::DESCRIBE, &id);
        let found = groups
            .get(id.as_str())
            .filter(|g| code == NONE && g.state != crate::groups::group::GroupState::Dead);
        match found.and_then(|g| g.consumer.as_deref().map(|c| (g, c))) {
            _ if code != NONE => d.error_code = code,
            None => {
                d.error_code = GROUP_ID_NOT_FOUND;
                d.error_message = Some(str_bytes(match found {
                    Some(_) => format!("Group {} is not a consumer group.", id.as_str()),
                    None => format!("Group {} not found.", id.as_str()),
                }));
            }
            Some((_, c)) => {
                if body.include_authorized_operations {
                    d.authorized_operations =
                        session.authorized_ops(shard, crate::acl::resource::GROUP, &id, acl::GROUP);
                }
                d.group_state = str_bytes(c.state_name());
                d.group_epoch = c.epoch;
                d.assignment_epoch = c.assignment_epoch;
                d.assignor_name = str_bytes(c.assignor);
                let empty = assignor::TopicPartitions::new();
                d.members = c
                    .members
                    .values()
                    .map(|m| {
                        let mut dm = Member::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                            .with_rack_id(m.rack_id.clone().map(str_bytes))
                            .with_member_epoch(m.epoch)
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed
                                    .iter()
                                    .map(|t| TopicName(str_bytes(t.clone())))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(m.regex.clone().map(str_bytes))
                            .with_assignment(assignment(&meta, &m.assigned))
                            .with_target_assignment(assignment(
                                &meta,
                                c.target.get(&m.id).unwrap_or(&empty),
                            ));
                        if req.version >= 1 {
                            dm.member_type = MEMBER_TYPE_CONSUMER;
                        }
                        dm
                    })
                    .collect();
            }
        }
        resp.groups.push(d);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
