//! What the coordinators of internal topics share (`__consumer_offsets` for consumer
//! groups, `__transaction_state` for transactions): the partitions of the topic this shard
//! leads and their load state, the hash that names a key's partition, the topic's lazy
//! creation, appends with acks=all, and replaying a partition's records.
//!
//! Runs on: every shard, for the partitions of the topic it leads. A key (group id,
//! transactional id) lives in partition crc32c(key) % partitions; its coordinator is that
//! partition's leader, serving it only while it leads in the leader epoch it loaded.
//! Records are one record batch v2 each, holding one value (the coordinator's own rkyv
//! encoding); control batches are never written to these topics.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::metadata::{ClusterMeta, PartitionMeta};
use crate::protocol::error as kerr;
use crate::shard::Shard;

/// Units of a partition's gate: appends take one, a load or rewrite all of them.
pub const GATE_UNITS: u64 = 1 << 20;
/// Shortest pause between two proposals to create an internal topic.
const TOPIC_CREATE_RETRY: Duration = Duration::from_millis(500);
/// Bytes read per call while replaying a partition.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// True for the topics the coordinators own: clients may read them, not write, create or
/// delete them (Kafka's internal topics).
pub fn is_internal(topic: &str) -> bool {
    topic == crate::groups::OFFSETS_TOPIC || topic == crate::txn::TXN_TOPIC
}

/// The partition of `key` among `partitions`: a stable hash, the same in every process.
pub fn partition_for(key: &str, partitions: usize) -> i32 {
    (crc32c::crc32c(key.as_bytes()) as usize % partitions.max(1)) as i32
}

/// Kafka's mapping of an internal-topic append error to what the coordinator answers.
pub fn coordinator_error(code: i16) -> i16 {
    match code {
        kerr::UNKNOWN_TOPIC_OR_PARTITION
        | kerr::NOT_ENOUGH_REPLICAS
        | kerr::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | kerr::REQUEST_TIMED_OUT => kerr::COORDINATOR_NOT_AVAILABLE,
        kerr::NOT_LEADER_OR_FOLLOWER | kerr::KAFKA_STORAGE_ERROR => kerr::NOT_COORDINATOR,
        kerr::MESSAGE_TOO_LARGE | kerr::RECORD_LIST_TOO_LARGE | kerr::INVALID_FETCH_SIZE => {
            kerr::INVALID_COMMIT_OFFSET_SIZE
        }
        _ => kerr::UNKNOWN_SERVER_ERROR,
    }
}

/// One partition this shard leads.
struct Part {
    /// The leader epoch it was loaded for.
    epoch: i32,
    loaded: bool,
    gate: Rc<Semaphore>,
    /// Bytes appended since the last rewrite (or load).
    log_bytes: u64,
    rewriting: bool,
}

/// The partitions of one internal topic led by this shard.
pub struct Partitions {
    pub topic: &'static str,
    parts: RefCell<HashMap<i32, Part>>,
    /// When the topic was last asked for.
    requested: Cell<Option<Instant>>,
}

/// What `Partitions::reconcile` found: partitions to drop, partitions to load
/// (partition, leader epoch, partition count).
pub struct Reconciled {
    pub dropped: Vec<i32>,
    pub to_load: Vec<(i32, i32, usize)>,
    pub partitions: usize,
}

impl Partitions {
    pub fn new(topic: &'static str) -> Self {
        Partitions {
            topic,
            parts: RefCell::new(HashMap::new()),
            requested: Cell::new(None),
        }
    }

    /// The partition of `key` and its placement, once the topic exists.
    pub fn home<'m>(&self, meta: &'m ClusterMeta, key: &str) -> Option<(i32, &'m PartitionMeta)> {
        let t = meta.topic(self.topic)?;
        let p = partition_for(key, t.partitions.len());
        t.partitions.get(p as usize).map(|pm| (p, pm))
    }

    /// NONE when this shard coordinates `key` now, else NOT_COORDINATOR,
    /// COORDINATOR_NOT_AVAILABLE (no topic yet) or COORDINATOR_LOAD_IN_PROGRESS.
    pub fn check(&self, shard: &Shard, key: &str) -> i16 {
        let meta = shard.meta();
        let Some((p, pm)) = self.home(&meta, key) else {
            return kerr::COORDINATOR_NOT_AVAILABLE;
        };
        if pm.leader != shard.node_id() {
            return kerr::NOT_COORDINATOR;
        }
        match self.parts.borrow().get(&p) {
            Some(part) if part.loaded && part.epoch == pm.leader_epoch => kerr::NONE,
            _ => kerr::COORDINATOR_LOAD_IN_PROGRESS,
        }
    }

    /// True while a partition led here is still loading.
    pub fn loading(&self) -> bool {
        self.parts.borrow().values().any(|p| !p.loaded)
    }

    /// The leader epoch partition `p` was loaded for, when it is led here and loaded.
    pub fn loaded_epoch(&self, p: i32) -> Option<i32> {
        self.parts
            .borrow()
            .get(&p)
            .filter(|x| x.loaded)
            .map(|x| x.epoch)
    }

    /// After a metadata apply: forgets the partitions no longer led here (or led in a new
    /// epoch, which reloads) and registers the newly led ones as loading.
    pub fn reconcile(&self, shard: &Shard, meta: &ClusterMeta) -> Reconciled {
        let me = shard.node_id();
        let topic = meta.topic(self.topic);
        let led = |p: i32| -> Option<i32> {
            let pm = topic?.partitions.get(p as usize)?;
            (pm.leader == me).then_some(pm.leader_epoch)
        };
        let mut parts = self.parts.borrow_mut();
        let dropped: Vec<i32> = parts
            .iter()
            .filter(|(p, part)| led(**p) != Some(part.epoch))
            .map(|(p, _)| *p)
            .collect();
        for p in &dropped {
            parts.remove(p);
        }
        let mut to_load = Vec::new();
        let partitions = topic.map_or(0, |t| t.partitions.len());
        if let Some(t) = topic {
            for (p, pm) in t.partitions.iter().enumerate() {
                let p = p as i32;
                if pm.leader != me
                    || parts.contains_key(&p)
                    || shard.replica(self.topic, p).is_none()
                {
                    continue;
                }
                parts.insert(
                    p,
                    Part {
                        epoch: pm.leader_epoch,
                        loaded: false,
                        gate: Rc::new(Semaphore::new(GATE_UNITS)),
                        log_bytes: 0,
                        rewriting: false,
                    },
                );
                to_load.push((p, pm.leader_epoch, partitions));
            }
        }
        Reconciled {
            dropped,
            to_load,
            partitions,
        }
    }

    /// The gate of partition `p` if it is still registered for `epoch`.
    pub fn gate(&self, p: i32, epoch: i32) -> Option<Rc<Semaphore>> {
        self.parts
            .borrow()
            .get(&p)
            .filter(|x| x.epoch == epoch)
            .map(|x| x.gate.clone())
    }

    /// The loaded partition of `key`: (partition, epoch, gate), or the error to answer.
    pub fn loaded_part(&self, shard: &Shard, key: &str) -> Result<(i32, i32, Rc<Semaphore>), i16> {
        let meta = shard.meta();
        let Some((p, pm)) = self.home(&meta, key) else {
            return Err(kerr::COORDINATOR_NOT_AVAILABLE);
        };
        match self.parts.borrow().get(&p) {
            Some(part) if part.loaded && part.epoch == pm.leader_epoch => {
                Ok((p, part.epoch, part.gate.clone()))
            }
            Some(_) => Err(kerr::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(kerr::NOT_COORDINATOR),
        }
    }

    pub fn still_loaded(&self, p: i32, epoch: i32) -> bool {
        self.parts
            .borrow()
            .get(&p)
            .is_some_and(|part| part.loaded && part.epoch == epoch)
    }

    pub fn is_registered(&self, p: i32, epoch: i32) -> bool {
        self.parts
            .borrow()
            .get(&p)
            .is_some_and(|x| x.epoch == epoch)
    }

    /// Marks `p` loaded after `bytes` of replay; true when a rewrite is due (it is then
    /// marked as running).
    pub fn mark_loaded(&self, p: i32, epoch: i32, bytes: u64, rewrite_at: u64) -> bool {
        let mut parts = self.parts.borrow_mut();
        let Some(part) = parts.get_mut(&p).filter(|x| x.epoch == epoch) else {
            return false;
        };
        part.loaded = true;
        part.log_bytes = bytes;
        let due = bytes >= rewrite_at;
        part.rewriting = due;
        due
    }

    /// Counts `len` appended bytes; true when a rewrite is due (it is then marked running).
    pub fn appended(&self, p: i32, len: u64, rewrite_at: u64) -> bool {
        let mut parts = self.parts.borrow_mut();
        let Some(part) = parts.get_mut(&p) else {
            return false;
        };
        part.log_bytes += len;
        let due = part.log_bytes >= rewrite_at && !part.rewriting;
        if due {
            part.rewriting = true;
        }
        due
    }

    /// A rewrite ended; `bytes` (if it succeeded) is what the log now holds.
    pub fn rewritten(&self, p: i32, bytes: Option<u64>) {
        if let Some(part) = self.parts.borrow_mut().get_mut(&p) {
            part.rewriting = false;
            if let Some(b) = bytes {
                part.log_bytes = b;
            }
        }
    }

    /// Asks the controller quorum for the topic (a FindCoordinator found none), at most
    /// once per TOPIC_CREATE_RETRY and only once `min(replication_factor, quorum hosts)`
    /// hosts have registered; the factor is capped at the registered hosts.
    pub fn request_topic(
        &self,
        shard: &Rc<Shard>,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) {
        let now = Instant::now();
        if self
            .requested
            .get()
            .is_some_and(|t| now.duration_since(t) < TOPIC_CREATE_RETRY)
        {
            return;
        }
        self.requested.set(Some(now));
        let topic = self.topic;
        let quorum_hosts = shard.config.voters.len().max(1);
        let rf_wanted = replication_factor.max(1) as usize;
        let wanted = rf_wanted.min(quorum_hosts);
        let live = shard.meta().brokers.values().filter(|b| !b.fenced).count();
        if live < wanted {
            log::info!("{topic} waits for {wanted} hosts ({live} registered)");
            return;
        }
        let rf = rf_wanted.min(live) as i16;
        let new = crate::controller::NewTopic {
            name: topic.to_string(),
            num_partitions: partitions,
            replication_factor: rf,
            configs,
        };
        let s = shard.clone();
        glommio::spawn_local(async move {
            // Proposals go through shard 0's controller handle.
            let results = s
                .call(0, move |s0| async move {
                    s0.controller().create_topics(&s0, vec![new], false).await
                })
                .await
                .unwrap_or_default();
            match results.into_iter().next() {
                Some(Ok(_)) => log::info!(
                    "created {topic} with {partitions} partitions, replication factor {rf}"
                ),
                Some(Err(e)) if e.code == kerr::TOPIC_ALREADY_EXISTS => {}
                Some(Err(e)) => log::warn!("creating {topic}: {e:?}"),
                None => {}
            }
        })
        .detach();
    }
}

/// Topic configs of an internal topic: no time or size retention (its coordinator raises
/// the log start itself), records up to `max_record_bytes`.
pub fn topic_configs(segment_bytes: u64, max_record_bytes: usize) -> BTreeMap<String, String> {
    [
        ("retention.ms", "-1".to_string()),
        ("retention.bytes", "-1".to_string()),
        ("segment.bytes", segment_bytes.to_string()),
        ("max.message.bytes", max_record_bytes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Appends one record batch to partition `p` of `topic`, led here, with acks=all; the
/// error is the coordinator's answer (`coordinator_error`) and a reason.
pub async fn append(
    shard: &Rc<Shard>,
    topic: &str,
    p: i32,
    batch: Bytes,
    timeout: Duration,
) -> Result<(), (i16, String)> {
    let r = crate::handlers::produce::append_local(
        shard.clone(),
        topic.to_string(),
        p,
        batch,
        -1,
        timeout,
    )
    .await;
    if r.error_code == kerr::NONE {
        Ok(())
    } else {
        let why = r.message.unwrap_or_default();
        log::warn!(
            "shard {}: append to {topic}-{p} failed (error {}): {why}",
            shard.id,
            r.error_code
        );
        Err((coordinator_error(r.error_code), why))
    }
}

/// One record batch v2 holding one record with `value` (CreateTime now, no key).
pub fn encode_value(value: &[u8]) -> Result<Bytes, String> {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: crate::groups::group::now_ms(),
        key: None,
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::with_capacity(value.len() + 128);
    RecordBatchEncoder::encode(
        &mut buf,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encode record batch: {e}"))?;
    Ok(buf.freeze())
}

/// The record values of whole stored batches (control records skipped).
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode(&mut buf)
            .map_err(|e| format!("decode record batch: {e}"))?;
        out.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control)
                .filter_map(|r| r.value),
        );
    }
    Ok(out)
}

/// Reads `part` from its log start to its end, handing each whole batch's bytes to `f`;
/// returns the bytes read.
pub async fn replay(
    part: &shards::Partition,
    mut f: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let name = part.dir().display().to_string();
    let mut offset = part.log_start_offset();
    let end = part.log_end_offset();
    let mut bytes = 0u64;
    while offset < end {
        let out = part
            .read(offset, REPLAY_READ_BYTES)
            .await
            .map_err(|e| format!("read {name}: {e}"))?;
        if out.chunks.is_empty() {
            break;
        }
        for chunk in &out.chunks {
            let mut at = 0;
            while at < chunk.len() {
                let h = shards::batch::parse_header(&chunk[at..])
                    .map_err(|e| format!("{name}: {e:?}"))?;
                let next = at + h.total_bytes();
                if next > chunk.len() {
                    break;
                }
                if h.last_offset() >= offset {
                    f(&chunk[at..next]).map_err(|e| format!("{name}: {e}"))?;
                    bytes += h.total_bytes() as u64;
                }
                offset = offset.max(h.last_offset() + 1);
                at = next;
            }
        }
    }
    Ok(bytes)
}
