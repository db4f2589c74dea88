//! Produce (key 0): validate and append record batches to partition logs, acknowledging
//! per acks: -1 after fdatasync (unless the topic sets write.caching), 1 after the write
//! completed, 0 with no response at all.
//!
//! Runs on: the shard that owns each partition. Clients send Produce to the partition
//! leader, which is the owning shard's own node, so the data path has no cross-core hop;
//! partitions owned elsewhere (a request on the bootstrap port) are forwarded by the router.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error, produce_v0};
use crate::session::Session;
use crate::shard::{LookupError, Owner, Shard};
use crate::topic_config;

/// Advertised from 0 (old librdkafka needs v0 in range to enable compression) although
/// v0-2 are answered with UNSUPPORTED_VERSION, as Kafka 4 does.
pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Produce,
    min_version: 0,
    max_version: 9,
};
/// Longest acks=all wait honoured (the request's timeout_ms, capped).
const PRODUCE_TIMEOUT_CAP_MS: i32 = 300_000;
/// First version this broker accepts data on (record batch v2).
pub(crate) const PRODUCE_VERSION_DATA_MIN: i16 = 3;

/// One partition's outcome; `Send` so it can come back from another shard.
pub struct PartitionResult {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// Broker time stamped on the batches (LogAppendTime topics), else -1.
    pub log_append_time: i64,
    pub message: Option<String>,
}

impl PartitionResult {
    fn error(code: i16, message: Option<String>) -> Self {
        PartitionResult {
            error_code: code,
            base_offset: -1,
            log_start_offset: -1,
            log_append_time: -1,
            message,
        }
    }
}

/// Appends on the leader's shard (this one). Called directly or through the router.
/// acks=all on a replicated partition needs min.insync.replicas in the ISR before the
/// append (else NOT_ENOUGH_REPLICAS) and returns once the high watermark passed the batch,
/// i.e. every ISR member has it on disk (else REQUEST_TIMED_OUT after the request's
/// timeout, or NOT_LEADER_OR_FOLLOWER when leadership moved meanwhile).
pub async fn append_local(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout: Duration,
) -> PartitionResult {
    append_with_mode(shard, topic, partition, records, acks, timeout, false).await
}

/// A transaction marker (a control batch from `shards::batch::control_batch`) appended as
/// the leader with acks=all: the transaction coordinator's write (`txn`).
pub async fn append_marker(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    marker: Bytes,
    timeout: Duration,
) -> PartitionResult {
    append_with_mode(shard, topic, partition, marker, -1, timeout, true).await
}

async fn append_with_mode(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout: Duration,
    marker: bool,
) -> PartitionResult {
    let r = match shard.partition(&topic, partition) {
        Ok(p) => p,
        Err(LookupError::NotLocal(_) | LookupError::OtherHost(_)) => {
            return PartitionResult::error(error::NOT_LEADER_OR_FOLLOWER, None);
        }
        Err(LookupError::UnknownTopicOrPartition) => {
            return PartitionResult::error(error::UNKNOWN_TOPIC_OR_PARTITION, None);
        }
    };
    // The topic's configs, borrowed from this shard's metadata copy (no copy per append).
    let meta = shard.meta();
    let no_configs = std::collections::BTreeMap::new();
    let configs = meta.topic(&topic).map_or(&no_configs, |t| &t.configs);
    let durability = match acks {
        0 => shards::Durability::None,
        1 => shards::Durability::Written,
        _ => topic_config::acks_all_durability(configs, &shard.config),
    };
    let replicated = r.replication_factor() > 1;
    let min_isr = (acks == -1 && replicated)
        .then(|| topic_config::min_insync_replicas(configs, &shard.config));
    drop(meta);
    if let Some(min_isr) = min_isr
        && r.isr_len() < min_isr
    {
        return PartitionResult::error(
            error::NOT_ENOUGH_REPLICAS,
            Some(format!(
                "ISR of {topic}-{partition} has {} replicas, min.insync.replicas is {min_isr}",
                r.isr_len()
            )),
        );
    }
    let mode = if marker {
        shards::AppendMode::Marker {
            leader_epoch: r.leader_epoch(),
        }
    } else {
        shards::AppendMode::Leader {
            leader_epoch: r.leader_epoch(),
        }
    };
    let batch_bytes = records.len() as u64;
    let result = r.log.append_with(records, durability, mode).await;
    match result {
        Ok(info) => {
            r.appended();
            if !info.duplicate {
                use crate::metrics::add;
                let records = (info.last_offset - info.base_offset + 1).max(0) as u64;
                add(&r.counters.messages_in, records);
                add(&r.counters.bytes_in, batch_bytes);
                add(&shard.metrics.messages_in, records);
                add(&shard.metrics.produce_bytes_in, batch_bytes);
            }
            shard.data_arrived.notify_all();
            let stand_down = || shard.isolated();
            if acks == -1
                && replicated
                && !r.wait_hw(info.last_offset + 1, timeout, stand_down).await
            {
                let code = if r.is_leader() && !shard.isolated() {
                    error::REQUEST_TIMED_OUT
                } else {
                    error::NOT_LEADER_OR_FOLLOWER
                };
                return PartitionResult::error(
                    code,
                    Some("not acknowledged by every in-sync replica in time".into()),
                );
            }
            PartitionResult {
                error_code: error::NONE,
                base_offset: info.base_offset,
                log_start_offset: info.log_start_offset,
                log_append_time: info.log_append_time,
                message: None,
            }
        }
        Err(e) => {
            let code = e.kafka_error_code();
            if matches!(
                e,
                shards::AppendError::Storage(shards::StorageError::DiskFull { .. })
            ) {
                // Clients retry a full disk as fast as they can: one line per second per shard.
                DISK_FULL_LOGGED.with(|at| {
                    let now = std::time::Instant::now();
                    if at
                        .get()
                        .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
                    {
                        at.set(Some(now));
                        log::warn!("produce to {topic}-{partition} refused: {e}");
                    }
                });
            } else if code == error::KAFKA_STORAGE_ERROR {
                log::error!("produce to {topic}-{partition} failed: {e}");
            } else {
                log::debug!("produce to {topic}-{partition} refused: {e}");
            }
            PartitionResult::error(code, Some(e.to_string()))
        }
    }
}

thread_local! {
    /// When this shard last logged a produce refused for a full disk.
    static DISK_FULL_LOGGED: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

async fn append_anywhere(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout: Duration,
) -> PartitionResult {
    let owner = match shard.owner(&topic, partition) {
        Some(Owner::Shard(o)) => o,
        Some(Owner::OtherHost(_) | Owner::Offline) => {
            return PartitionResult::error(error::NOT_LEADER_OR_FOLLOWER, None);
        }
        None => return PartitionResult::error(error::UNKNOWN_TOPIC_OR_PARTITION, None),
    };
    if owner == shard.id {
        return append_local(shard, topic, partition, records, acks, timeout).await;
    }
    match shard
        .call(owner, move |s| {
            append_local(s, topic, partition, records, acks, timeout)
        })
        .await
    {
        Ok(r) => r,
        Err(e) => PartitionResult::error(error::NOT_LEADER_OR_FOLLOWER, Some(e.to_string())),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    if req.version < PRODUCE_VERSION_DATA_MIN {
        let Some(old) = produce_v0::parse(req.body.clone()) else {
            return Err(ProtocolError::Malformed {
                key: req.api_key,
                version: req.version,
                reason: "undecodable old-format produce".into(),
            });
        };
        if old.acks == 0 {
            return Ok(Reply::None);
        }
        return Ok(Reply::Frame(produce_v0::encode_unsupported(
            req.version,
            req.correlation_id,
            &old,
        )));
    }
    let body: ProduceRequest = req.decode()?;
    let acks = body.acks;
    let acks_valid = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(body.timeout_ms.clamp(0, PRODUCE_TIMEOUT_CAP_MS) as u64);
    // Start every append in request order (the storage assigns offsets in call order), then
    // collect the results; appends to different partitions proceed concurrently.
    let mut pending = Vec::new();
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let writable = session.may(shard, op::WRITE, resource::TOPIC, &name);
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let early = if !writable {
                Some(PartitionResult::error(
                    error::TOPIC_AUTHORIZATION_FAILED,
                    None,
                ))
            } else if !acks_valid {
                Some(PartitionResult::error(error::INVALID_REQUIRED_ACKS, None))
            } else if crate::internal_topic::is_internal(&name) {
                // As Kafka: only the group coordinators write the offsets topic.
                Some(PartitionResult::error(
                    error::INVALID_TOPIC_EXCEPTION,
                    Some(format!("cannot append to internal topic {name}")),
                ))
            } else if p.records.as_ref().is_none_or(|r| r.is_empty()) {
                Some(PartitionResult::error(
                    error::INVALID_RECORD,
                    Some("produce request carries no record batch".into()),
                ))
            } else {
                None
            };
            let task = match early {
                Some(r) => Err(r),
                None => Ok(glommio::spawn_local(append_anywhere(
                    shard.clone(),
                    name.clone(),
                    p.index,
                    p.records.unwrap_or_default(),
                    acks,
                    timeout,
                ))),
            };
            parts.push((p.index, task));
        }
        pending.push((name, parts));
    }
    if acks == 0 {
        // Fire and forget: the appends run on; the client expects no response.
        for (_, parts) in pending {
            for (_, task) in parts {
                if let Ok(t) = task {
                    t.detach();
                }
            }
        }
        return Ok(Reply::None);
    }
    let mut responses = Vec::with_capacity(pending.len());
    for (name, parts) in pending {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for (index, task) in parts {
            let r = match task {
                Ok(t) => t.await,
                Err(r) => r,
            };
            let mut pr = PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(r.error_code)
                .with_base_offset(r.base_offset)
                .with_log_append_time_ms(r.log_append_time)
                .with_log_start_offset(r.log_start_offset);
            if req.version >= 8
                && let Some(m) = r.message
            {
                if r.error_code == error::INVALID_RECORD || r.error_code == error::CORRUPT_MESSAGE {
                    pr = pr.with_record_errors(vec![
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(0)
                            .with_batch_index_error_message(Some(str_bytes(m.clone()))),
                    ]);
                }
                pr = pr.with_error_message(Some(str_bytes(m)));
            }
            partition_responses.push(pr);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partition_responses(partition_responses),
        );
    }
    let resp = ProduceResponse::default().with_responses(responses);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
