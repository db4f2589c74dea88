//! DeleteRecords (key 21): raise partitions' log start offsets (Kafka's low watermark).
//! Offset -1 means the high watermark; an offset past the high watermark (or any other
//! negative one) is OFFSET_OUT_OF_RANGE. The new start is durable before the answer (see
//! `shards::Partition::delete_records_before`).
//!
//! Runs on: the partition leader's shard (forwarded through the router otherwise). The
//! answer comes once the leader's start is raised; followers raise theirs from the leader's
//! log start offset in their next fetch response (`replication::fetcher`), as in Kafka,
//! but the answer does not wait for them (Kafka's low watermark waits for every replica).
//! Authorization (Kafka's): DELETE on the topic, else TOPIC_AUTHORIZATION_FAILED on each
//! of its partitions (before the existence check).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::{LookupError, Owner, Shard};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteRecords,
    min_version: 0,
    max_version: 2,
};
/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// (error code, low watermark)
async fn delete_local(shard: Rc<Shard>, topic: String, partition: i32, offset: i64) -> (i16, i64) {
    let r = match shard.partition(&topic, partition) {
        Ok(r) => r,
        Err(LookupError::NotLocal(_) | LookupError::OtherHost(_)) => {
            return (error::NOT_LEADER_OR_FOLLOWER, -1);
        }
        Err(LookupError::UnknownTopicOrPartition) => {
            return (error::UNKNOWN_TOPIC_OR_PARTITION, -1);
        }
    };
    let hw = r.high_watermark();
    let offset = if offset == HIGH_WATERMARK { hw } else { offset };
    if offset < 0 || offset > hw {
        return (error::OFFSET_OUT_OF_RANGE, -1);
    }
    match r.log.delete_records_before(offset).await {
        Ok(start) => (error::NONE, start),
        Err(e) => {
            log::error!("DeleteRecords {topic}-{partition} before {offset}: {e}");
            (error::KAFKA_STORAGE_ERROR, -1)
        }
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DeleteRecordsRequest = req.decode()?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let name = t.name.0.to_string();
        let deletable = session.may(shard, op::DELETE, resource::TOPIC, &name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let (code, low) = match shard.owner(&name, p.partition_index) {
                _ if !deletable => (error::TOPIC_AUTHORIZATION_FAILED, -1),
                None => (error::UNKNOWN_TOPIC_OR_PARTITION, -1),
                Some(Owner::OtherHost(_) | Owner::Offline) => (error::NOT_LEADER_OR_FOLLOWER, -1),
                Some(Owner::Shard(owner)) => {
                    let (n, idx, off) = (name.clone(), p.partition_index, p.offset);
                    shard
                        .call(owner, move |s| delete_local(s, n, idx, off))
                        .await
                        .unwrap_or((error::NOT_LEADER_OR_FOLLOWER, -1))
                }
            };
            parts.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_low_watermark(low),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    let resp = DeleteRecordsResponse::default().with_topics(topics);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
