//! Fetch (key 1): whole stored batches from an offset, within max_bytes and
//! partition_max_bytes, with a long-poll that wakes as soon as an append lands.
//!
//! Runs on: the shard that owns the partitions (the client sends Fetch to the leader's
//! node, i.e. the owning shard). The answer is written as hand-encoded headers plus the
//! stored bytes themselves (`protocol::fetch_response`): record data is never copied in
//! user space. Partitions of other shards (rare: a fetch on the bootstrap connection) are
//! read through the router and copied once.
//!
//! Fetch sessions (KIP-227, v7+): the request's session id and epoch pick the partitions to
//! read (the request's own, or the session's after the request's changes) and the answer
//! of an incremental fetch carries only the partitions with something new for the client
//! (`fetch_session`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchRequest};

use super::{ApiSpec, FetchData, Reply};
use crate::acl::resource;
use crate::config::FETCH_MAX_WAIT_CAP_MS;
use crate::config::FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX;
use crate::fetch_session::{self, Answered, Ask, Key, Seen};
use crate::memory::MemoryLease;
use crate::protocol::acl::op;
use crate::protocol::fetch_response::{
    self, FETCH_VERSION_MAX, FETCH_VERSION_MIN, PartitionOut, TopicOut,
};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::replication::{FollowerFetch, Replica};
use crate::session::Session;
use crate::shard::{LookupError, Shard};

/// Kafka's broker-side fetch.max.bytes default: the most record bytes one response carries
/// (plus at most the first batch, KIP-74), whatever max_bytes the client asks for.
pub const FETCH_RESPONSE_MAX_BYTES: usize = 57_671_680;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Fetch,
    min_version: FETCH_VERSION_MIN,
    max_version: FETCH_VERSION_MAX,
};
/// While some partitions live on another shard, their data cannot wake this shard: re-poll
/// them at this interval during a long-poll.
const REMOTE_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What one partition read produced.
struct PartRead {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    /// For a follower whose log diverged: the leader's (epoch, end offset) to truncate to.
    diverging_epoch: Option<(i32, i64)>,
    /// min(high watermark, first offset of the oldest open transaction).
    last_stable_offset: i64,
    /// read_committed: aborted transactions (producer id, first offset) over the range read.
    aborted: Option<Vec<(i64, i64)>>,
    data: Vec<FetchData>,
    bytes: usize,
}

impl PartRead {
    fn error(code: i16) -> Self {
        PartRead {
            error_code: code,
            high_watermark: -1,
            log_start_offset: -1,
            diverging_epoch: None,
            last_stable_offset: -1,
            aborted: None,
            data: Vec::new(),
            bytes: 0,
        }
    }
}

/// The last stable offset of a partition whose high watermark is `hw`.
fn last_stable(part: &shards::Partition, hw: i64) -> i64 {
    part.first_unstable_offset().map_or(hw, |f| f.min(hw))
}

/// What a read_committed fetch from `from` is told about aborted transactions below `to`.
fn aborted_in(part: &shards::Partition, from: i64, to: i64) -> Vec<(i64, i64)> {
    part.aborted_txns(from, to)
        .into_iter()
        .map(|a| (a.producer_id, a.first_offset))
        .collect()
}

fn read_error_code(e: &shards::ReadError) -> i16 {
    e.kafka_error_code()
}

/// Who fetches: a consumer (replica -1), or the follower replica on node `replica`; and the
/// leader epoch it believes in (-1: not checked).
#[derive(Clone, Copy, Debug)]
struct Asker {
    replica: i32,
    leader_epoch: i32,
    /// A follower's epoch of the last batch it has (-1: none, or a consumer).
    last_fetched_epoch: i32,
    /// A consumer with isolation.level=read_committed: reads up to the last stable offset.
    read_committed: bool,
}

/// A follower's fetch of `offset` on the leader: the divergence check first, then its
/// progress (which may move the high watermark). `Some` is the answer instead of data
/// (diverged, or not a replica); `None` means read on. Every partition of a follower's
/// fetch goes through here, also those answered with offsets only.
fn follower_fetch(shard: &Rc<Shard>, r: &Replica, asker: Asker, offset: i64) -> Option<PartRead> {
    // Kafka's divergence check (KIP-595's DivergingEpoch): the follower's last epoch
    // must end, in the leader's log, at or after the follower's fetch offset. A follower
    // whose log diverges is told where to truncate, and its fetch offset is not taken
    // as progress (its tail is not the leader's data).
    if asker.last_fetched_epoch >= 0 {
        let (epoch, end) = r
            .end_offset_for_epoch(asker.last_fetched_epoch)
            .unwrap_or((asker.last_fetched_epoch, offset));
        if epoch < asker.last_fetched_epoch || end < offset {
            return Some(PartRead {
                error_code: error::NONE,
                high_watermark: r.high_watermark(),
                log_start_offset: r.log.log_start_offset(),
                diverging_epoch: Some((epoch, end)),
                last_stable_offset: r.high_watermark(),
                aborted: None,
                data: Vec::new(),
                bytes: 0,
            });
        }
    }
    // A follower: its fetch offset says what it has on disk; it reads past the high
    // watermark (it must, to move it).
    match r.follower_fetched(asker.replica, offset) {
        FollowerFetch::NotAReplica => {
            return Some(PartRead::error(error::NOT_LEADER_OR_FOLLOWER));
        }
        FollowerFetch::Recorded(advanced) => {
            if advanced {
                shard.data_arrived.notify_all();
            }
        }
    }
    None
}

async fn read_local(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    asker: Asker,
) -> Result<PartRead, usize> {
    let r = match shard.partition(topic, partition) {
        Ok(p) => p,
        Err(LookupError::NotLocal(owner)) => return Err(owner),
        Err(LookupError::OtherHost(_)) => {
            return Ok(PartRead::error(error::NOT_LEADER_OR_FOLLOWER));
        }
        Err(LookupError::UnknownTopicOrPartition) => {
            return Ok(PartRead::error(error::UNKNOWN_TOPIC_OR_PARTITION));
        }
    };
    if asker.leader_epoch >= 0 {
        let epoch = r.leader_epoch();
        if asker.leader_epoch < epoch {
            return Ok(PartRead::error(error::FENCED_LEADER_EPOCH));
        }
        if asker.leader_epoch > epoch {
            return Ok(PartRead::error(error::UNKNOWN_LEADER_EPOCH));
        }
    }
    let part = &r.log;
    let stable = last_stable(part, r.high_watermark());
    let read = if asker.replica >= 0 {
        if let Some(early) = follower_fetch(shard, &r, asker, offset) {
            return Ok(early);
        }
        part.read(offset, max_bytes).await
    } else if asker.read_committed {
        part.read_bounded(offset, max_bytes, stable).await
    } else if r.replication_factor() > 1 {
        part.read_bounded(offset, max_bytes, r.high_watermark())
            .await
    } else {
        part.read(offset, max_bytes).await
    };
    match read {
        Ok(out) => {
            let bytes = out.chunks.iter().map(|c| c.len()).sum();
            let high_watermark = r.high_watermark().min(out.high_watermark);
            Ok(PartRead {
                error_code: error::NONE,
                high_watermark,
                last_stable_offset: stable.min(high_watermark),
                aborted: asker
                    .read_committed
                    .then(|| aborted_in(part, offset, stable)),
                diverging_epoch: None,
                log_start_offset: out.log_start_offset,
                data: out.chunks.into_iter().map(FetchData::Local).collect(),
                bytes,
            })
        }
        Err(e) => {
            if !matches!(e, shards::ReadError::OffsetOutOfRange { .. }) {
                log::error!("fetch {topic}-{partition} at {offset}: {e}");
            }
            Ok(PartRead {
                error_code: read_error_code(&e),
                high_watermark: r.high_watermark(),
                last_stable_offset: stable,
                aborted: None,
                diverging_epoch: None,
                log_start_offset: part.log_start_offset(),
                data: Vec::new(),
                bytes: 0,
            })
        }
    }
}

/// A read on another shard, copied for the trip.
struct RemoteRead {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    last_stable_offset: i64,
    aborted: Option<Vec<(i64, i64)>>,
    bytes: Bytes,
}

async fn read_on_owner(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    asker: Asker,
) -> RemoteRead {
    match read_local(&shard, &topic, partition, offset, max_bytes, asker).await {
        Ok(r) => {
            let mut buf = BytesMut::with_capacity(r.bytes);
            for d in &r.data {
                buf.extend_from_slice(d.as_ref());
            }
            RemoteRead {
                error_code: r.error_code,
                high_watermark: r.high_watermark,
                log_start_offset: r.log_start_offset,
                last_stable_offset: r.last_stable_offset,
                aborted: r.aborted,
                bytes: buf.freeze(),
            }
        }
        Err(_) => RemoteRead {
            error_code: error::NOT_LEADER_OR_FOLLOWER,
            high_watermark: -1,
            log_start_offset: -1,
            last_stable_offset: -1,
            aborted: None,
            bytes: Bytes::new(),
        },
    }
}

/// (error, high watermark, log start, last stable offset) of a partition owned by this shard.
fn local_offsets(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
) -> Result<(i16, i64, i64, i64), usize> {
    match shard.partition(topic, partition) {
        Ok(p) => {
            let hw = p.high_watermark();
            Ok((
                error::NONE,
                hw,
                p.log.log_start_offset(),
                last_stable(&p.log, hw),
            ))
        }
        Err(LookupError::NotLocal(owner)) => Err(owner),
        Err(LookupError::OtherHost(_)) => Ok((error::NOT_LEADER_OR_FOLLOWER, -1, -1, -1)),
        Err(LookupError::UnknownTopicOrPartition) => {
            Ok((error::UNKNOWN_TOPIC_OR_PARTITION, -1, -1, -1))
        }
    }
}

/// A partition's offsets without data, for when the response is already full.
async fn offsets_only(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    offset: i64,
    asker: Asker,
) -> PartRead {
    if asker.replica >= 0
        && let Ok(r) = shard.partition(topic, partition)
        && let Some(early) = follower_fetch(shard, &r, asker, offset)
    {
        return early;
    }
    let unavailable = (error::NOT_LEADER_OR_FOLLOWER, -1, -1, -1);
    let (error_code, high_watermark, log_start_offset, last_stable_offset) =
        match local_offsets(shard, topic, partition) {
            Ok(o) => o,
            Err(owner) => {
                let t = topic.to_string();
                shard
                    .call(owner, move |s| async move {
                        local_offsets(&s, &t, partition).unwrap_or(unavailable)
                    })
                    .await
                    .unwrap_or(unavailable)
            }
        };
    PartRead {
        error_code,
        high_watermark,
        log_start_offset,
        diverging_epoch: None,
        last_stable_offset,
        aborted: asker.read_committed.then(Vec::new),
        data: Vec::new(),
        bytes: 0,
    }
}

async fn read_any(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    asker: Asker,
) -> (PartRead, bool) {
    match read_local(shard, topic, partition, offset, max_bytes, asker).await {
        Ok(r) => (r, false),
        Err(owner) => {
            let t = topic.to_string();
            let r = shard
                .call(owner, move |s| {
                    read_on_owner(s, t, partition, offset, max_bytes, asker)
                })
                .await;
            let r = match r {
                // Followers fetch from the leader's own node, so no divergence travels here.
                Ok(rr) => PartRead {
                    error_code: rr.error_code,
                    high_watermark: rr.high_watermark,
                    log_start_offset: rr.log_start_offset,
                    last_stable_offset: rr.last_stable_offset,
                    aborted: rr.aborted,
                    diverging_epoch: None,
                    bytes: rr.bytes.len(),
                    data: if rr.bytes.is_empty() {
                        vec![]
                    } else {
                        vec![FetchData::Remote(rr.bytes)]
                    },
                },
                Err(_) => PartRead::error(error::NOT_LEADER_OR_FOLLOWER),
            };
            (r, true)
        }
    }
}

/// Counts an answer in the metrics: error codes, and record bytes per partition (on the
/// partition's replica when it is on this shard; a read made on another shard counts in
/// this shard's total only).
fn count_answer(shard: &Rc<Shard>, follower: bool, topics: &[TopicOut<FetchData>]) {
    use crate::metrics::add;
    for t in topics {
        for p in &t.partitions {
            shard.metrics.error(ApiKey::Fetch, p.error_code);
            let bytes: u64 = p.records.iter().map(|d| d.as_ref().len() as u64).sum();
            if bytes == 0 {
                continue;
            }
            add(&shard.metrics.fetch_bytes_out, bytes);
            if let Some(r) = shard.replica(&t.name, p.partition) {
                let c = if follower {
                    &r.counters.fetch_bytes_follower
                } else {
                    &r.counters.fetch_bytes_consumer
                };
                add(c, bytes);
            }
        }
    }
}

/// An answer with only a top-level error (a fetch session that cannot be used).
fn session_error(req: &RequestFrame, code: i16) -> Reply {
    let (pieces, _len) = fetch_response::encode::<FetchData>(
        req.version,
        req.correlation_id,
        0,
        code,
        0,
        Vec::new(),
    );
    Reply::Pieces(pieces, MemoryLease::none())
}

/// The answer's partitions grouped by topic, in reading order (a topic whose partitions
/// are not adjacent appears more than once, as in Kafka's responses).
fn group_by_topic(parts: Vec<(String, PartitionOut<FetchData>)>) -> Vec<TopicOut<FetchData>> {
    let mut topics: Vec<TopicOut<FetchData>> = Vec::new();
    for (name, p) in parts {
        match topics.last_mut() {
            Some(t) if t.name == name => t.partitions.push(p),
            _ => topics.push(TopicOut {
                name,
                partitions: vec![p],
            }),
        }
    }
    topics
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
    responses: &Rc<glommio::sync::Semaphore>,
) -> Result<Reply, ProtocolError> {
    let body: FetchRequest = req.decode()?;
    // A follower replica's fetch names its node (replica_id; in replica_state from v15).
    let replica = if req.version >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let max_wait =
        Duration::from_millis(body.max_wait_ms.clamp(0, FETCH_MAX_WAIT_CAP_MS as i32) as u64);
    let min_bytes = body.min_bytes.max(0) as usize;
    // Kafka's IsolationLevel: 1 = READ_COMMITTED (consumers only; followers read all).
    let read_committed = replica < 0 && body.isolation_level == 1;
    let max_bytes = if body.max_bytes <= 0 {
        FETCH_RESPONSE_MAX_BYTES
    } else {
        (body.max_bytes as usize).min(FETCH_RESPONSE_MAX_BYTES)
    };
    // A partition named twice is answered once (Kafka keys the request by partition), so a
    // request cannot multiply its reads by repeating one partition.
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + max_wait;
    let asked: Vec<(Key, Ask)> = body
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .filter(|(t, p)| seen.insert((t.topic.0.clone(), p.partition)))
        .map(|(t, p)| {
            (
                (t.topic.0.to_string(), p.partition),
                Ask {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                },
            )
        })
        .collect();
    // Fetch sessions (KIP-227) from v7; before, every fetch is sessionless.
    let (session_id, session_epoch) = if req.version >= 7 {
        (body.session_id, body.session_epoch)
    } else {
        (0, fetch_session::FINAL_EPOCH)
    };
    let forgotten: Vec<Key> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
        .collect();
    let begun = shard.fetch_sessions.borrow_mut().begin(
        session_id,
        session_epoch,
        asked,
        forgotten,
        Instant::now(),
    );
    let (ctx, requested) = match begun {
        Ok(b) => b,
        Err(code) => {
            shard.metrics.error(ApiKey::Fetch, code);
            return Ok(session_error(&req, code));
        }
    };
    // The record bytes this fetch may hold: what it may answer, within the connection's
    // budget. Taken before each read pass (waiting for the connection's own earlier
    // responses to be written; from the shard's request memory only what it has now, so a
    // fetch never waits on memory that other requests' frames hold), given back while a
    // long-poll waits, and kept with the response until it is written. With nothing from
    // the shard the pass answers offsets only. Beyond the lease: at most the first batch
    // of a response larger than its budget (KIP-74).
    let reserve = requested
        .iter()
        .map(|(_, ask)| ask.max_bytes as u64)
        .fold(0u64, u64::saturating_add)
        .min(max_bytes as u64)
        .clamp(1, FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX);
    // Consumers need READ on each topic; a follower replica's fetch needs CLUSTER_ACTION.
    let denied: std::collections::HashSet<&str> = requested
        .iter()
        .map(|((name, _), _)| name.as_str())
        .filter(|name| {
            if replica >= 0 {
                !session.may_cluster(shard, op::CLUSTER_ACTION)
            } else {
                !session.may(shard, op::READ, resource::TOPIC, name)
            }
        })
        .collect();
    loop {
        let mut lease = MemoryLease::none();
        if lease.wait(responses, reserve).await.is_none() {
            // The connection is closing: nobody will read an answer.
            return Ok(Reply::None);
        }
        let granted = lease.take_available(&shard.request_memory, reserve) as usize;
        let max_bytes = max_bytes.min(granted);
        // Created before reading, so an append that lands during the reads still wakes us.
        let wake = shard.data_arrived.notified();
        let mut total = 0usize;
        let mut any_error = false;
        let mut any_remote = false;
        let mut outs: Vec<(String, PartitionOut<FetchData>)> = Vec::with_capacity(requested.len());
        for ((name, partition), ask) in &requested {
            let (partition, offset) = (*partition, ask.fetch_offset);
            let asker = Asker {
                replica,
                leader_epoch: ask.leader_epoch,
                last_fetched_epoch: if replica >= 0 {
                    ask.last_fetched_epoch
                } else {
                    -1
                },
                read_committed,
            };
            let budget = ask.max_bytes.min(max_bytes.saturating_sub(total));
            // Once the response is full, later partitions only report their offsets; the
            // first batch of the first partition is returned even if larger (KIP-74).
            let (r, remote) = if denied.contains(name.as_str()) {
                (PartRead::error(error::TOPIC_AUTHORIZATION_FAILED), false)
            } else if budget == 0 && (total > 0 || granted == 0) {
                (
                    offsets_only(shard, name, partition, offset, asker).await,
                    false,
                )
            } else {
                let (mut r, remote) =
                    read_any(shard, name, partition, offset, budget.max(1), asker).await;
                // The storage returns at least one whole batch; only the response's first
                // data may exceed the budget (KIP-74), later partitions wait for next time.
                if total > 0 && r.bytes > budget {
                    r.data.clear();
                    r.bytes = 0;
                }
                (r, remote)
            };
            any_remote |= remote;
            any_error |= r.error_code != error::NONE;
            total += r.bytes;
            outs.push((
                name.clone(),
                PartitionOut {
                    partition,
                    error_code: r.error_code,
                    high_watermark: r.high_watermark,
                    last_stable_offset: r.last_stable_offset,
                    log_start_offset: r.log_start_offset,
                    diverging_epoch: r.diverging_epoch,
                    aborted: r.aborted,
                    records: r.data,
                },
            ));
        }
        let now = Instant::now();
        if total >= min_bytes
            || any_error
            || now >= deadline
            || requested.is_empty()
            || shard.shutting_down.get()
        {
            let answered: Vec<Answered> = outs
                .iter()
                .map(|(_, p)| Answered {
                    seen: Seen {
                        high_watermark: p.high_watermark,
                        last_stable_offset: p.last_stable_offset,
                        log_start_offset: p.log_start_offset,
                    },
                    has_records: p.records.iter().any(|d| !d.as_ref().is_empty()),
                    error_code: p.error_code,
                    diverging: p.diverging_epoch.is_some(),
                })
                .collect();
            let (session_id, include) = shard.fetch_sessions.borrow_mut().finish(
                ctx,
                replica >= 0,
                &requested,
                &answered,
                now,
            );
            let kept = outs
                .into_iter()
                .zip(include)
                .filter_map(|(o, keep)| keep.then_some(o))
                .collect();
            let topics = group_by_topic(kept);
            count_answer(shard, replica >= 0, &topics);
            let (pieces, _len) = fetch_response::encode(
                req.version,
                req.correlation_id,
                0,
                error::NONE,
                session_id,
                topics,
            );
            lease.shrink_to(total as u64);
            return Ok(Reply::Pieces(pieces, lease));
        }
        // Nothing (or too little) yet: drop what we read and wait for an append or the deadline.
        drop(outs);
        drop(lease);
        let mut wait = deadline - now;
        if any_remote {
            wait = wait.min(REMOTE_POLL_INTERVAL);
        }
        futures_lite::future::or(
            wake,
            futures_lite::future::or(shard.shutdown.notified(), glommio::timer::sleep(wait)),
        )
        .await;
    }
}
