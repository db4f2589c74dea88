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
    append_with_mode(shard, topic, partition, records, acks, timeout, false, None).await
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
    append_with_mode(shard, topic, partition, marker, -1, timeout, true, None).await
}

/// `append_local` for a client's Produce: with `verify` (KIP-890 part 1 on), a
/// transactional batch that starts the producer's transaction in this partition must carry
/// the verification guard its coordinator confirmed (`verify = Some(guard)`).
pub async fn append_client(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout: Duration,
    verify: Option<Option<u64>>,
) -> PartitionResult {
    append_with_mode(
        shard, topic, partition, records, acks, timeout, false, verify,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn append_with_mode(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout: Duration,
    marker: bool,
    verify: Option<Option<u64>>,
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
    let result = match verify {
        Some(guard) => {
            r.log
                .append_verified(records, durability, mode, guard)
                .await
        }
        None => r.log.append_with(records, durability, mode).await,
    };
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

/// Fills in the verification guard of every transactional partition of a Produce, asking
/// the coordinator of `txn_id` about those whose producer has no open transaction there
/// yet (one call per producer and epoch); a refused partition gets its error instead. With
/// no transactional id the guard stays unset, so the append refuses such a batch.
async fn verify_transactional(
    shard: &Rc<Shard>,
    txn_id: Option<&str>,
    items: &mut [(String, Vec<Item>)],
) {
    let Some(txn_id) = txn_id else {
        return;
    };
    // (producer id, epoch) -> [(item, part, partition)] needing the coordinator.
    let mut asks: Vec<((i64, i16), Vec<AskAt>)> = Vec::new();
    for (i, (name, parts)) in items.iter_mut().enumerate() {
        for (j, (index, records, verify)) in parts.iter_mut().enumerate() {
            let Some((pid, epoch)) = records
                .as_ref()
                .ok()
                .and_then(|r| transactional_producer(r))
            else {
                continue;
            };
            let Some(guard) = verification_guard(shard, name, *index, pid, epoch).await else {
                continue;
            };
            *verify = Some(Some(guard));
            let at = (i, j, (name.clone(), *index));
            match asks.iter_mut().find(|(k, _)| *k == (pid, epoch)) {
                Some((_, v)) => v.push(at),
                None => asks.push(((pid, epoch), vec![at])),
            }
        }
    }
    for ((pid, epoch), parts) in asks {
        let list: Vec<(String, i32)> = parts.iter().map(|(_, _, tp)| tp.clone()).collect();
        let codes = crate::txn::verify_partitions(shard, txn_id, pid, epoch, list).await;
        for ((i, j, _), code) in parts.into_iter().zip(codes) {
            crate::metrics::add(&shard.metrics.txn_verifications, 1);
            if code != error::NONE {
                crate::metrics::add(&shard.metrics.txn_verifications_refused, 1);
                let (code, message) = crate::txn::produce_error_of_verification(code);
                items[i].1[j].1 = Err(PartitionResult::error(code, message));
            }
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
    verify: Option<Option<u64>>,
) -> PartitionResult {
    let owner = match shard.owner(&topic, partition) {
        Some(Owner::Shard(o)) => o,
        Some(Owner::OtherHost(_) | Owner::Offline) => {
            return PartitionResult::error(error::NOT_LEADER_OR_FOLLOWER, None);
        }
        None => return PartitionResult::error(error::UNKNOWN_TOPIC_OR_PARTITION, None),
    };
    if owner == shard.id {
        return append_client(shard, topic, partition, records, acks, timeout, verify).await;
    }
    match shard
        .call(owner, move |s| {
            append_client(s, topic, partition, records, acks, timeout, verify)
        })
        .await
    {
        Ok(r) => r,
        Err(e) => PartitionResult::error(error::NOT_LEADER_OR_FOLLOWER, Some(e.to_string())),
    }
}

/// One partition of a Produce: its index, its records or early answer, and the
/// verification guard its append carries (None: verification off).
type Item = (i32, Result<Bytes, PartitionResult>, Option<Option<u64>>);
/// A partition to verify: (topic position, partition position, (topic, partition)).
type AskAt = (usize, usize, (String, i32));

/// The producer id and epoch of a transactional record list (its first batch's), if it
/// is one. A list that does not parse is left to the append's validation.
fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    let h = shards::batch::parse_header(records).ok()?;
    (h.is_transactional() && !h.is_control() && h.has_producer_id())
        .then_some((h.producer_id, h.producer_epoch))
}

/// KIP-890: the verification guard of the producer in a partition (on its shard), None
/// when it already has an open transaction there or the partition is not led here.
async fn verification_guard(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    epoch: i16,
) -> Option<u64> {
    let Some(Owner::Shard(owner)) = shard.owner(topic, partition) else {
        return None;
    };
    let guard = move |s: Rc<Shard>, topic: String| async move {
        s.partition(&topic, partition)
            .ok()
            .and_then(|r| r.log.txn_verification_guard(producer_id, epoch))
    };
    if owner == shard.id {
        return guard(shard.clone(), topic.to_string()).await;
    }
    let topic = topic.to_string();
    shard
        .call(owner, move |s| guard(s, topic))
        .await
        .ok()
        .flatten()
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
    let txn_id = body
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .filter(|t| !t.is_empty());
    let verify_on = shard.config.transaction_partition_verification_enable;
    // Early answers first; what is left is appended.
    let mut items: Vec<(String, Vec<Item>)> = Vec::with_capacity(body.topic_data.len());
    let mut transactional = false;
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let writable = session.may(shard, op::WRITE, resource::TOPIC, &name);
        let mut parts = Vec::with_capacity(topic.partition_data.len());
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
            transactional |= p
                .records
                .as_ref()
                .is_some_and(|r| transactional_producer(r).is_some());
            let records = match early {
                Some(r) => Err(r),
                None => Ok(p.records.unwrap_or_default()),
            };
            parts.push((p.index, records, verify_on.then_some(None)));
        }
        items.push((name, parts));
    }
    // As Kafka: transactional records need WRITE on the request's transactional id, else
    // every partition is refused.
    if transactional
        && !txn_id
            .as_deref()
            .is_some_and(|id| session.may(shard, op::WRITE, resource::TRANSACTIONAL_ID, id))
    {
        for (_, parts) in &mut items {
            for (_, records, _) in parts.iter_mut() {
                *records = Err(PartitionResult::error(
                    error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    None,
                ));
            }
        }
        transactional = false;
    }
    // KIP-890 part 1: the first transactional batch of a producer in a partition is
    // appended only once its coordinator confirmed the partition is in the transaction.
    // Pipelined requests of one connection verify one at a time, so their appends still
    // start in request order.
    let _in_order = if transactional && verify_on {
        Some(session.txn_produce_order.acquire_permit(1).await)
    } else {
        None
    };
    if transactional && verify_on {
        verify_transactional(shard, txn_id.as_deref(), &mut items).await;
    }
    // Start every append in request order (the storage assigns offsets in call order), then
    // collect the results; appends to different partitions proceed concurrently.
    let mut pending = Vec::with_capacity(items.len());
    for (name, parts) in items {
        let mut tasks = Vec::with_capacity(parts.len());
        for (index, records, verify) in parts {
            let task = match records {
                Err(r) => Err(r),
                Ok(records) => Ok(glommio::spawn_local(append_anywhere(
                    shard.clone(),
                    name.clone(),
                    index,
                    records,
                    acks,
                    timeout,
                    verify,
                ))),
            };
            tasks.push((index, task));
        }
        pending.push((name, tasks));
    }
    drop(_in_order);
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
