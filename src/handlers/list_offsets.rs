//! ListOffsets (key 2): earliest (-2), latest (-1), the record with the largest timestamp
//! (-3, v7+) and the first record whose timestamp is at or after a target.
//!
//! Runs on: the owning shard of each partition (forwarded through the router otherwise).
//! As in Kafka, a timestamp lookup answers a record's own offset and timestamp, not its
//! batch's: the storage walks the records of the batch that first reaches the target, and
//! compressed batches are decompressed here (the storage has no codecs).

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::{LookupError, Owner, Shard};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListOffsets,
    min_version: 1,
    max_version: 7,
};
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// (error code, timestamp, offset)
type OffsetAnswer = (i16, i64, i64);

async fn lookup_local(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    timestamp: i64,
    version: i16,
    read_committed: bool,
) -> OffsetAnswer {
    let r = match shard.partition(&topic, partition) {
        Ok(p) => p,
        Err(LookupError::NotLocal(_) | LookupError::OtherHost(_)) => {
            return (error::NOT_LEADER_OR_FOLLOWER, -1, -1);
        }
        Err(LookupError::UnknownTopicOrPartition) => {
            return (error::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
        }
    };
    let part = &r.log;
    match timestamp {
        // Consumers see up to the high watermark (the log end without replication).
        // read_committed (v2+): up to the last stable offset, below any open transaction.
        LATEST_TIMESTAMP if read_committed => {
            let hw = r.high_watermark();
            let stable = part.first_unstable_offset().map_or(hw, |f| f.min(hw));
            (error::NONE, -1, stable)
        }
        LATEST_TIMESTAMP => (error::NONE, -1, r.high_watermark()),
        EARLIEST_TIMESTAMP => (error::NONE, -1, part.log_start_offset()),
        // The first record carrying the largest timestamp: the first record at or after it.
        MAX_TIMESTAMP if version < 7 => (error::UNSUPPORTED_VERSION, -1, -1),
        MAX_TIMESTAMP => match part.max_timestamp() {
            max if max < 0 => (error::NONE, -1, -1),
            max => find(part, &topic, partition, max).await,
        },
        ts if ts < 0 => (error::INVALID_REQUEST, -1, -1),
        ts => find(part, &topic, partition, ts).await,
    }
}

/// Offset and timestamp of the first record at or after `ts`.
async fn find(part: &shards::Partition, topic: &str, partition: i32, ts: i64) -> OffsetAnswer {
    match part
        .offset_for_timestamp_with(ts, Some(&crate::codec::decompress))
        .await
    {
        Ok(Some((offset, found_ts))) => (error::NONE, found_ts, offset),
        // No record at or after ts: Kafka answers offset -1.
        Ok(None) => (error::NONE, -1, -1),
        Err(e) => {
            log::error!("ListOffsets {topic}-{partition} at {ts}: {e}");
            (e.kafka_error_code(), -1, -1)
        }
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ListOffsetsRequest = req.decode()?;
    let version = req.version;
    let read_committed = version >= 2 && body.isolation_level == 1;
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let name = t.name.0.to_string();
        let describable = session.may(shard, op::DESCRIBE, resource::TOPIC, &name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let owner = if describable {
                Ok(shard.owner(&name, p.partition_index))
            } else {
                Err(())
            };
            let (code, ts, offset) = match owner {
                Err(()) => (error::TOPIC_AUTHORIZATION_FAILED, -1, -1),
                Ok(None) => (error::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                Ok(Some(Owner::OtherHost(_) | Owner::Offline)) => {
                    (error::NOT_LEADER_OR_FOLLOWER, -1, -1)
                }
                Ok(Some(Owner::Shard(owner))) => {
                    let (n, idx, ts) = (name.clone(), p.partition_index, p.timestamp);
                    shard
                        .call(owner, move |s| {
                            lookup_local(s, n, idx, ts, version, read_committed)
                        })
                        .await
                        .unwrap_or((error::NOT_LEADER_OR_FOLLOWER, -1, -1))
                }
            };
            parts.push(
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_timestamp(ts)
                    .with_offset(offset)
                    .with_leader_epoch(-1),
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    let resp = ListOffsetsResponse::default().with_topics(topics);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
