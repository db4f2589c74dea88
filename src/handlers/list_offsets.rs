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

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Snappy};

use super::{ApiSpec, Reply};
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
    match part.offset_for_timestamp_with(ts, Some(&decompress)).await {
        Ok(Some((offset, found_ts))) => (error::NONE, found_ts, offset),
        // No record at or after ts: Kafka answers offset -1.
        Ok(None) => (error::NONE, -1, -1),
        Err(e) => {
            log::error!("ListOffsets {topic}-{partition} at {ts}: {e}");
            (e.kafka_error_code(), -1, -1)
        }
    }
}

/// Most bytes the records of one stored batch may expand to when ListOffsets looks inside
/// it: a batch stored by any producer can be a decompression bomb.
pub const DECOMPRESSED_BATCH_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The records section of a compressed batch, decompressed (codec: attributes bits 0-2),
/// refused past `DECOMPRESSED_BATCH_MAX_BYTES`.
fn decompress(codec: u8, compressed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = DECOMPRESSED_BATCH_MAX_BYTES;
    let bounded = |r: &mut dyn Read| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        r.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("decompressing codec {codec}: {e}"))?;
        if out.len() as u64 > limit {
            return Err(format!(
                "batch records expand past {limit} bytes (codec {codec})"
            ));
        }
        Ok(out)
    };
    match codec {
        1 => bounded(&mut flate2::read::GzDecoder::new(compressed)),
        // Snappy's output is bounded by its input (at most ~32x): the crate's decoder.
        2 => {
            let mut buf = Bytes::copy_from_slice(compressed);
            Snappy::decompress(&mut buf, |b: &mut Bytes| Ok(b.to_vec()))
                .map_err(|e| format!("decompressing codec {codec}: {e:#}"))
        }
        3 => bounded(
            &mut lz4::Decoder::new(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))?,
        ),
        4 => bounded(
            &mut zstd::stream::read::Decoder::new(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))?,
        ),
        other => Err(format!("unknown compression codec {other}")),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ListOffsetsRequest = req.decode()?;
    let version = req.version;
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
                        .call(owner, move |s| lookup_local(s, n, idx, ts, version))
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
    Ok(Reply::Frame(req.encode_response(&resp)?))
}
