//! TxnOffsetCommit (key 28): offsets committed inside a transaction (a consume-transform-
//! produce loop's `send_offsets_to_transaction`). They are held in the group, durably
//! (one record in its `__consumer_offsets` partition, acks=all), and become committed
//! offsets only when the transaction's commit marker reaches that partition; an abort
//! drops them (`Coordinator::complete_txn`).
//!
//! Runs on: the group's coordinator shard. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION; with a generation (KIP-447) the member must be current.
//! Under `--authorizer`, as Kafka: WRITE on the transactional id (else every partition
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED), READ on the group (GROUP_AUTHORIZATION_FAILED)
//! and READ on each topic (TOPIC_AUTHORIZATION_FAILED).

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{check_group, opt_str};
use crate::groups::errors::*;
use crate::groups::group::Group;
use crate::groups::offsets::{CommittedOffset, LogEntry, OffsetEntry, TxnOffsets};
use crate::groups::{GROUPS_PER_SHARD_MAX, OFFSET_METADATA_MAX_BYTES};
use crate::handlers::{ApiSpec, Reply, respond};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::TxnOffsetCommit,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: TxnOffsetCommitRequest = req.decode()?;
    let group_id = body.group_id.0.to_string();
    let mut codes = super::commit_partition_codes(
        shard,
        session,
        body.topics.iter().map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.as_str(), partitions)
        }),
    );
    let co = &shard.groups;
    // As Kafka: WRITE on the transactional id first, then READ on the group; either
    // refusal answers every partition.
    let txn_allowed = session.may(
        shard,
        op::WRITE,
        crate::acl::resource::TRANSACTIONAL_ID,
        body.transactional_id.0.as_str(),
    );
    let mut all = if txn_allowed {
        check_group(shard, session, op::READ, &group_id)
    } else {
        crate::protocol::error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    };
    if matches!(
        all,
        crate::protocol::error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            | crate::protocol::error::GROUP_AUTHORIZATION_FAILED
    ) {
        for c in codes.iter_mut().flatten() {
            *c = all;
        }
    }
    if all == NONE {
        let mut groups = co.groups.borrow_mut();
        match groups.get(&group_id) {
            Some(g) if body.generation_id >= 0 => {
                all = g.commit_allowed(
                    &body.member_id,
                    opt_str(&body.group_instance_id).as_deref(),
                    body.generation_id,
                )
            }
            Some(_) => {}
            None if groups.len() >= GROUPS_PER_SHARD_MAX => all = COORDINATOR_NOT_AVAILABLE,
            None => {
                groups.insert(group_id.clone(), Group::new(group_id.clone()));
            }
        }
    }
    let mut entries = Vec::new();
    for (ti, t) in body.topics.iter().enumerate() {
        for (pi, p) in t.partitions.iter().enumerate() {
            if codes[ti][pi] != NONE {
                continue;
            }
            if all != NONE {
                codes[ti][pi] = all;
                continue;
            }
            let metadata = opt_str(&p.committed_metadata).unwrap_or_default();
            if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                codes[ti][pi] = OFFSET_METADATA_TOO_LARGE;
                continue;
            }
            entries.push(OffsetEntry {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                // The stamp is the commit marker's, given when it arrives.
                value: CommittedOffset::new(
                    p.committed_offset,
                    p.committed_leader_epoch,
                    metadata,
                    0,
                ),
            });
        }
    }
    if !entries.is_empty() {
        let entry = LogEntry::TxnOffsets(Box::new(TxnOffsets {
            group: group_id.clone(),
            producer_id: body.producer_id.0,
            producer_epoch: body.producer_epoch,
            offsets: entries,
        }));
        let outcome = match co.append(shard, &group_id, &entry).await {
            Ok(()) => {
                if let (Some(g), LogEntry::TxnOffsets(t)) =
                    (co.groups.borrow_mut().get_mut(&group_id), entry)
                {
                    g.hold_txn_offsets(t.producer_id, t.offsets);
                }
                NONE
            }
            Err(e) => e.code(),
        };
        super::fail_unset(&mut codes, outcome);
    }
    let resp = TxnOffsetCommitResponse::default().with_topics(
        body.topics
            .iter()
            .zip(codes)
            .map(|(t, codes)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(codes)
                            .map(|(p, code)| {
                                TxnOffsetCommitResponsePartition::default()
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
