//! OffsetCommit (key 8): stores committed offsets (with metadata) durably: one record in
//! the group's `__consumer_offsets` partition, on every in-sync replica's disk before the
//! acknowledgement.
//!
//! Runs on: the group's coordinator shard. As in Kafka, a partition of a topic that does not
//! exist (or an index beyond the topic's partition count) answers
//! UNKNOWN_TOPIC_OR_PARTITION whatever the group's state, and is not stored; a request naming
//! only such partitions leaves the group alone.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::{check_group, opt_str};
use crate::groups::errors::*;
use crate::groups::group::Group;
use crate::groups::offsets::{CommittedOffset, LogEntry, OffsetEntry};
use crate::groups::{GROUPS_PER_SHARD_MAX, OFFSET_METADATA_MAX_BYTES};
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

/// Min 2: the kafka-protocol crate decodes OffsetCommit from v2 (Kafka 4 baseline).
pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetCommit,
    min_version: 2,
    max_version: 9,
};

/// v9+: the generation field carries a consumer-protocol member's epoch (KIP-848).
const OFFSET_COMMIT_MEMBER_EPOCH_MIN: i16 = 9;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: OffsetCommitRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    // (topic index, partition index) -> error code; NONE ones are committed together.
    let mut codes = super::commit_partition_codes(
        shard,
        session,
        body.topics.iter().map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.as_str(), partitions)
        }),
    );
    let any_known = codes.iter().flatten().any(|&c| c == NONE);
    let mut all = check_group(shard, session, op::READ, &group_id);
    let co = &shard.groups;
    if !any_known {
        // Nothing to commit: Kafka does not reach the group coordinator at all.
    } else if all == NONE {
        let mut groups = co.groups.borrow_mut();
        match groups.get(&group_id) {
            Some(g) if g.consumer.is_some() => {
                // Kafka's ConsumerGroup.validateOffsetCommit: members of a consumer-protocol
                // group commit with v9+ (member epoch), checked against their epoch.
                let member = body.member_id.as_str();
                let epoch = body.generation_id_or_member_epoch;
                all = match g.consumer.as_deref() {
                    Some(_)
                        if req.version < OFFSET_COMMIT_MEMBER_EPOCH_MIN && !member.is_empty() =>
                    {
                        crate::protocol::error::UNSUPPORTED_VERSION
                    }
                    Some(c) => c.commit_allowed(member, epoch),
                    None => NONE,
                };
            }
            Some(g) => {
                all = g.commit_allowed(
                    &body.member_id,
                    opt_str(&body.group_instance_id).as_deref(),
                    body.generation_id_or_member_epoch,
                )
            }
            // Kafka: a commit for an unknown group creates it only for consumers that do
            // not use group management (generation < 0).
            None if body.generation_id_or_member_epoch < 0 => {
                if groups.len() >= GROUPS_PER_SHARD_MAX {
                    all = COORDINATOR_NOT_AVAILABLE;
                } else {
                    groups.insert(group_id.clone(), Group::new(group_id.clone()));
                }
            }
            None => all = ILLEGAL_GENERATION,
        }
    }
    if all == NONE {
        let mut entries = Vec::new();
        for (ti, t) in body.topics.iter().enumerate() {
            for (pi, p) in t.partitions.iter().enumerate() {
                if codes[ti][pi] != NONE {
                    continue;
                }
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                    codes[ti][pi] = OFFSET_METADATA_TOO_LARGE;
                    continue;
                }
                entries.push(OffsetEntry {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    value: CommittedOffset::new(
                        p.committed_offset,
                        p.committed_leader_epoch,
                        metadata,
                        co.next_stamp(),
                    ),
                });
            }
        }
        if !entries.is_empty() {
            let outcome = commit(shard, &group_id, entries).await;
            super::fail_unset(&mut codes, outcome);
        }
    } else {
        super::fail_unset(&mut codes, all);
    }
    let resp = OffsetCommitResponse::default().with_topics(
        body.topics
            .iter()
            .zip(codes)
            .map(|(t, codes)| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(codes)
                            .map(|(p, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// Appends the commit (fsync), then applies it; NONE or the error for every partition.
async fn commit(shard: &Rc<Shard>, group_id: &str, entries: Vec<OffsetEntry>) -> i16 {
    let co = &shard.groups;
    if let Some(g) = co.groups.borrow_mut().get_mut(group_id) {
        g.inflight_commits += 1;
    }
    let entry = LogEntry::Commit {
        group: group_id.to_string(),
        offsets: entries,
    };
    let appended = co.append(shard, group_id, &entry).await;
    let mut groups = co.groups.borrow_mut();
    let g = groups.get_mut(group_id);
    let code = match appended {
        Ok(()) => NONE,
        Err(e) => e.code(),
    };
    if let Some(g) = g {
        g.inflight_commits = g.inflight_commits.saturating_sub(1);
        if code == NONE
            && let LogEntry::Commit { offsets, .. } = entry
        {
            for o in offsets {
                g.apply_offset(o.topic, o.partition, o.value);
            }
        }
    }
    code
}
