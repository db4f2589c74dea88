//! The group APIs' handlers (one file per API key, each with its version range) and their
//! registry entries, which the broker's ApiVersions answer includes.
//!
//! Runs on: any shard for FindCoordinator; the shard leading the group's offsets partition
//! for the others (elsewhere they answer NOT_COORDINATOR, see `groups` for why this is not
//! forwarded).

pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod delete_groups;
pub mod describe_groups;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;
pub mod txn_offset_commit;

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use super::errors::*;
use crate::handlers::{ApiSpec, Reply};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const REGISTRY: &[ApiSpec] = &[
    offset_commit::API,
    offset_fetch::API,
    find_coordinator::API,
    join_group::API,
    heartbeat::API,
    leave_group::API,
    sync_group::API,
    describe_groups::API,
    list_groups::API,
    delete_groups::API,
    offset_delete::API,
    txn_offset_commit::API,
    consumer_group_heartbeat::API,
    consumer_group_describe::API,
];

pub async fn dispatch(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    match req.api_key {
        ApiKey::OffsetCommit => offset_commit::handle(shard, session, req).await,
        ApiKey::OffsetFetch => offset_fetch::handle(shard, session, req),
        ApiKey::FindCoordinator => find_coordinator::handle(shard, session, req).await,
        ApiKey::JoinGroup => join_group::handle(shard, session, req).await,
        ApiKey::Heartbeat => heartbeat::handle(shard, session, req),
        ApiKey::LeaveGroup => leave_group::handle(shard, session, req),
        ApiKey::SyncGroup => sync_group::handle(shard, session, req).await,
        ApiKey::DescribeGroups => describe_groups::handle(shard, session, req),
        ApiKey::ListGroups => list_groups::handle(shard, session, req),
        ApiKey::DeleteGroups => delete_groups::handle(shard, session, req).await,
        ApiKey::OffsetDelete => offset_delete::handle(shard, session, req).await,
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(shard, session, req).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat::handle(shard, session, req),
        ApiKey::ConsumerGroupDescribe => consumer_group_describe::handle(shard, session, req),
        _ => Err(ProtocolError::UnsupportedVersion {
            key: req.api_key,
            version: req.version,
        }),
    }
}

/// The early answer every per-group request shares: NONE when this shard may act on the
/// group now, else INVALID_GROUP_ID, GROUP_AUTHORIZATION_FAILED (the authorizer refuses
/// `operation` on the group to the connection's principal), NOT_COORDINATOR or
/// COORDINATOR_LOAD_IN_PROGRESS.
pub fn check_group(shard: &Shard, session: &Session, operation: u8, group: &str) -> i16 {
    if group.is_empty() {
        INVALID_GROUP_ID
    } else if !session.may(shard, operation, crate::acl::resource::GROUP, group) {
        crate::protocol::error::GROUP_AUTHORIZATION_FAILED
    } else {
        shard.groups.check(shard, group)
    }
}

/// Gives every partition still answered NONE the outcome `code` (the commit's, or the
/// whole request's refusal); partitions refused on their own keep their codes.
pub fn fail_unset(codes: &mut [Vec<i16>], code: i16) {
    if code != NONE {
        for c in codes.iter_mut().flatten().filter(|c| **c == NONE) {
            *c = code;
        }
    }
}

/// OffsetCommit's and TxnOffsetCommit's early answer per partition, as Kafka: without READ
/// on the topic TOPIC_AUTHORIZATION_FAILED, for a partition that does not exist
/// UNKNOWN_TOPIC_OR_PARTITION (never stored), else NONE.
pub fn commit_partition_codes<'a>(
    shard: &Shard,
    session: &Session,
    topics: impl Iterator<Item = (&'a str, Vec<i32>)>,
) -> Vec<Vec<i16>> {
    let meta = shard.meta();
    topics
        .map(|(topic, partitions)| {
            let readable = session.may(shard, op::READ, crate::acl::resource::TOPIC, topic);
            partitions
                .into_iter()
                .map(|p| match meta.partition(topic, p) {
                    _ if !readable => crate::protocol::error::TOPIC_AUTHORIZATION_FAILED,
                    Some(_) => NONE,
                    None => UNKNOWN_TOPIC_OR_PARTITION,
                })
                .collect()
        })
        .collect()
}

pub fn opt_str(s: &Option<kafka_protocol::protocol::StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}
