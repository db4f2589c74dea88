//! Consumer groups: the coordinator for the groups whose offsets partition this shard
//! leads (membership state machine, committed offsets, loading them when leadership comes).
//!
//! Runs on: every shard, for the groups of the `__consumer_offsets` partitions it leads.
//! Committed offsets live in that internal topic, replicated like any other: a group's
//! home is partition crc32c(group) % partitions (`offsets_partition`), its coordinator
//! that partition's leader, as in Kafka. FindCoordinator names the leader; elsewhere
//! group requests answer NOT_COORDINATOR (clients go to the node FindCoordinator named,
//! so forwarding would only add a hop to a path clients never take).
//!
//! - The topic is created on the first FindCoordinator (Kafka's way), with
//!   `--offsets-topic-num-partitions` partitions and a replication factor of
//!   `--offsets-topic-replication-factor` capped at the hosts of the quorum; it is not
//!   created before that many hosts have registered.
//! - A commit (OffsetCommit, DeleteGroups, OffsetDelete, retention expiry) is one record
//!   batch appended as the partition's leader with acks=all (`produce::append_local`):
//!   acknowledged once every in-sync replica has it on disk.
//! - When this shard becomes a partition's leader (`on_meta`, called after each metadata
//!   apply) it replays the partition from its log start to its end; until then requests for
//!   its groups get COORDINATOR_LOAD_IN_PROGRESS. Losing leadership (or a new leader epoch)
//!   drops the partition's groups from memory; their members then hear NOT_COORDINATOR.
//! - The log is kept short without compaction: past REWRITE_INTERVAL_LOG_BYTES of appends,
//!   (`--offsets-topic-rewrite-bytes`) the leader re-appends the partition's current state (each offset with its original
//!   stamp, so replaying old and new records gives the same state), waits for the ISR, and
//!   raises the log start offset to where the rewrite began (DeleteRecords; followers follow
//!   the leader's log start).
//! - Offsets from before the topic existed (`<data_dir>/groups/shard-<k>/`, an offsets log
//!   per shard plus a snapshot) are loaded at start-up and, when the partition a group
//!   hashes to is loaded on a shard of this host, written into it; once a shard's legacy
//!   groups are all written, its legacy directories are deleted. Legacy groups whose
//!   partition another host leads stay until this host leads it.

pub mod assignor;
pub mod consumer;
pub mod group;
pub mod handlers;
pub mod offsets;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::internal_topic::{self, GATE_UNITS, Partitions};
use crate::metadata::{ClusterMeta, PartitionMeta};
use crate::protocol::error as kerr;
use crate::shard::Shard;
use group::{Group, GroupState, now_ms};
use offsets::{
    CommittedOffset, GroupOffsets, LogEntry, OffsetEntry, OffsetsError, STAMP_SEQ_BITS, Snapshot,
};

/// Kafka's group.max.size default is unbounded; osprey bounds members per group.
pub const GROUP_MAX_SIZE: usize = 1000;
/// Groups one shard coordinates (new groups beyond get COORDINATOR_NOT_AVAILABLE).
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;
/// Membership memory one shard's groups may hold (member ids, client ids and hosts,
/// protocol metadata, assignments), in bytes: the default of
/// `--group-membership-max-bytes`. A member that would pass it gets
/// GROUP_MAX_SIZE_REACHED on JoinGroup (Kafka's answer for a member the group cannot
/// take), an assignment that would pass it COORDINATOR_NOT_AVAILABLE on SyncGroup (the
/// client finds the coordinator again and rejoins).
pub const GROUP_MEMBERSHIP_PER_SHARD_MAX_BYTES_DEFAULT: u64 = 256 << 20;
/// Bytes counted per member beside its strings and buffers (struct, map entries).
pub const GROUP_MEMBER_OVERHEAD_BYTES: usize = 256;
/// How often the ticker recounts the shard's membership bytes exactly, in ms; between
/// recounts, joins and assignments add what they admit and departures free nothing yet.
pub const GROUP_MEMBERSHIP_RECOUNT_MS: u64 = 1000;
/// Kafka's group.min.session.timeout.ms / group.max.session.timeout.ms defaults.
pub const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
pub const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Protocol metadata one member may send, all its protocols together, and protocols per member.
pub const GROUP_MEMBER_METADATA_MAX_BYTES: usize = 1 << 20;
pub const GROUP_PROTOCOLS_PER_MEMBER_MAX: usize = 64;
/// Assignment the leader may give one member.
pub const GROUP_MEMBER_ASSIGNMENT_MAX_BYTES: usize = 1 << 20;
/// Kafka's offset.metadata.max.bytes default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Largest single offsets record (one OffsetCommit); larger commits get
/// INVALID_COMMIT_OFFSET_SIZE. The topic's max.message.bytes.
pub const OFFSETS_LOG_BATCH_MAX_BYTES: usize = 4 << 20;
/// The internal topic of committed offsets (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's offsets.topic.num.partitions is 50; Redpanda's group_topic_partitions is 16,
/// which suits hosts of a few cores.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: i32 = 16;
/// Kafka's offsets.topic.replication.factor default (capped at the quorum's hosts).
pub const OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT: i16 = 3;
/// Segment size of the offsets topic (Kafka's offsets.topic.segment.bytes is 100 MiB; the
/// rewrite keeps each partition's log near REWRITE_INTERVAL_LOG_BYTES).
const OFFSETS_TOPIC_SEGMENT_BYTES: u64 = 16 << 20;
/// Kafka's offsets.commit.timeout.ms: how long a commit waits for the in-sync replicas.
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default of `--offsets-topic-rewrite-bytes`: appended offsets-record bytes of one
/// partition after which its state is rewritten and the log start raised past the old
/// records.
pub const REWRITE_INTERVAL_LOG_BYTES: u64 = 16 << 20;
/// Offsets per record of a rewrite (keeps each record far below the batch limit).
const REWRITE_OFFSETS_PER_RECORD: usize = 2_000;
/// Period of the deadline checks (sessions, join and sync phases, initial delay).
const GROUP_TICK_MS: u64 = 20;
/// Period of the offsets-retention check (Kafka's offsets.retention.check.interval.ms is
/// 10 minutes; a minute keeps expiry closer to the configured time).
const OFFSETS_RETENTION_CHECK_INTERVAL_MS: u64 = 60_000;
/// Poll period while a partition load waits for the host's legacy offsets to be read.
const LEGACY_POLL_MS: u64 = 5;

/// Kafka error codes the group APIs use (those the protocol module does not list yet).
pub mod errors {
    pub use crate::protocol::error::{
        COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, FENCED_INSTANCE_ID,
        GROUP_ID_NOT_FOUND, GROUP_MAX_SIZE_REACHED, ILLEGAL_GENERATION,
        INCONSISTENT_GROUP_PROTOCOL, INVALID_COMMIT_OFFSET_SIZE, INVALID_GROUP_ID, INVALID_REQUEST,
        INVALID_SESSION_TIMEOUT, MEMBER_ID_REQUIRED, NON_EMPTY_GROUP, NONE, NOT_COORDINATOR,
        REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, UNKNOWN_TOPIC_OR_PARTITION,
    };
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

/// The offsets partition a group lives in: a stable hash, the same in every process.
pub fn offsets_partition(group: &str, partitions: usize) -> i32 {
    internal_topic::partition_for(group, partitions)
}

/// A group's offsets partition and its placement, once the offsets topic exists.
pub fn home<'m>(meta: &'m ClusterMeta, group: &str) -> Option<(i32, &'m PartitionMeta)> {
    let t = meta.topic(OFFSETS_TOPIC)?;
    let p = offsets_partition(group, t.partitions.len());
    t.partitions.get(p as usize).map(|pm| (p, pm))
}

pub struct Coordinator {
    pub shard: usize,
    data_dir: PathBuf,
    initial_delay: Duration,
    retention: Duration,
    /// `--offsets-topic-rewrite-bytes`.
    rewrite_bytes: u64,
    /// Groups of every loaded partition led here.
    pub groups: RefCell<HashMap<String, Group>>,
    /// The `__consumer_offsets` partitions led here.
    pub parts: Partitions,
    /// Stamps: (epoch << STAMP_SEQ_BITS) | seq, above every stamp of a loaded partition.
    epoch: Cell<u64>,
    seq: Cell<u64>,
    pub id_seq: Cell<u64>,
    /// Offsets from before the offsets topic (see the module comment) and their files.
    legacy: RefCell<HashMap<String, Group>>,
    legacy_dirs: RefCell<Vec<(PathBuf, Vec<Rc<shards::Partition>>)>>,
    legacy_loaded: Cell<bool>,
    /// `--group-membership-max-bytes`: the shard's membership bound.
    membership_max_bytes: u64,
    /// Membership bytes at the last recount, and admitted since.
    membership_counted: Cell<u64>,
    membership_admitted: Cell<u64>,
}

#[derive(Debug)]
pub enum AppendFailure {
    TooLarge,
    /// The Kafka error the request gets (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, ...).
    Failed(i16, String),
}

impl AppendFailure {
    pub fn code(&self) -> i16 {
        match self {
            AppendFailure::TooLarge => kerr::INVALID_COMMIT_OFFSET_SIZE,
            AppendFailure::Failed(code, _) => *code,
        }
    }
}

impl Coordinator {
    pub fn new(shard: usize, config: &BrokerConfig) -> Self {
        Coordinator {
            shard,
            data_dir: config.data_dir.clone(),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            retention: Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60)),
            rewrite_bytes: config.offsets_topic_rewrite_bytes,
            groups: RefCell::new(HashMap::new()),
            parts: Partitions::new(OFFSETS_TOPIC),
            epoch: Cell::new(1),
            seq: Cell::new(0),
            id_seq: Cell::new(0),
            legacy: RefCell::new(HashMap::new()),
            legacy_dirs: RefCell::new(Vec::new()),
            legacy_loaded: Cell::new(false),
            membership_max_bytes: config.group_membership_max_bytes,
            membership_counted: Cell::new(0),
            membership_admitted: Cell::new(0),
        }
    }

    /// Takes `bytes` of the shard's membership bound for a joining member or an
    /// assignment; false (nothing taken) if they do not fit.
    pub fn admit_membership(&self, bytes: u64) -> bool {
        let used = self.membership_counted.get() + self.membership_admitted.get();
        if used.saturating_add(bytes) > self.membership_max_bytes {
            return false;
        }
        self.membership_admitted
            .set(self.membership_admitted.get() + bytes);
        true
    }

    /// The shard's membership bytes as last counted plus admitted since.
    pub fn membership_bytes(&self) -> u64 {
        self.membership_counted.get() + self.membership_admitted.get()
    }

    /// Counts every group's membership bytes exactly (the ticker, once a second).
    fn recount_membership(&self, groups: &HashMap<String, Group>) {
        let total: u64 = groups.values().map(|g| g.membership_bytes() as u64).sum();
        self.membership_counted.set(total);
        self.membership_admitted.set(0);
    }

    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// NONE when this shard coordinates `group` now, else NOT_COORDINATOR,
    /// COORDINATOR_NOT_AVAILABLE (no offsets topic yet) or COORDINATOR_LOAD_IN_PROGRESS.
    pub fn check(&self, shard: &Shard, group: &str) -> i16 {
        self.parts.check(shard, group)
    }

    /// True while a partition led here is still loading (ListGroups answers
    /// COORDINATOR_LOAD_IN_PROGRESS then, as Kafka).
    pub fn loading(&self) -> bool {
        self.parts.loading()
    }

    /// Reads the offsets from before the offsets topic in the background and starts the
    /// deadline ticker.
    pub async fn start(&self, shard: &Rc<Shard>) {
        let s = shard.clone();
        glommio::spawn_local(async move {
            if let Err(e) = load_legacy(&s).await {
                log::error!(
                    "shard {}: reading consumer group offsets from before the offsets topic failed: {e}; they stay on disk",
                    s.id
                );
            }
            s.groups.legacy_loaded.set(true);
        })
        .detach();
        glommio::spawn_local(ticker(shard.clone())).detach();
    }

    /// The next stamp: increasing within this run, above every stamp of a loaded partition.
    pub fn next_stamp(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        (self.epoch.get() << STAMP_SEQ_BITS) | (seq & ((1 << STAMP_SEQ_BITS) - 1))
    }

    fn raise_epoch(&self, max_stamp: u64) {
        let e = (max_stamp >> STAMP_SEQ_BITS) + 1;
        if e > self.epoch.get() {
            self.epoch.set(e);
            self.seq.set(0);
        }
    }

    /// Asks the controller quorum for the offsets topic (FindCoordinator found none).
    pub fn request_topic(&self, shard: &Rc<Shard>) {
        let cfg = &shard.config;
        self.parts.request_topic(
            shard,
            cfg.offsets_topic_num_partitions,
            cfg.offsets_topic_replication_factor,
            internal_topic::topic_configs(OFFSETS_TOPIC_SEGMENT_BYTES, OFFSETS_LOG_BATCH_MAX_BYTES),
        );
    }

    /// After each metadata apply: loads the offsets partitions this shard now leads, drops
    /// the ones it no longer leads (or leads in a new epoch, which reloads).
    pub fn on_meta(&self, shard: &Rc<Shard>, meta: &ClusterMeta) {
        let r = self.parts.reconcile(shard, meta);
        for p in r.dropped {
            self.unload(p, r.partitions);
        }
        for (p, epoch, partitions) in r.to_load {
            let s = shard.clone();
            glommio::spawn_local(async move {
                if let Err(e) = load_partition(&s, p, epoch, partitions).await {
                    log::error!(
                        "shard {}: loading {OFFSETS_TOPIC}-{p} failed: {e}; its groups stay unavailable until leadership moves",
                        s.id
                    );
                }
            })
            .detach();
        }
    }

    fn unload(&self, p: i32, partitions: usize) {
        let mut groups = self.groups.borrow_mut();
        let before = groups.len();
        if partitions == 0 {
            groups.clear();
        } else {
            groups.retain(|name, _| offsets_partition(name, partitions) != p);
        }
        log::info!(
            "shard {}: no longer coordinating {OFFSETS_TOPIC}-{p} ({} groups dropped)",
            self.shard,
            before - groups.len()
        );
    }

    /// Appends one entry to the group's offsets partition and waits until every in-sync
    /// replica has it on disk.
    pub async fn append(
        &self,
        shard: &Rc<Shard>,
        group: &str,
        entry: &LogEntry,
    ) -> Result<(), AppendFailure> {
        let batch = offsets::encode_batch(entry)
            .map_err(|e| AppendFailure::Failed(kerr::UNKNOWN_SERVER_ERROR, e.0))?;
        if batch.len() > OFFSETS_LOG_BATCH_MAX_BYTES {
            return Err(AppendFailure::TooLarge);
        }
        let len = batch.len() as u64;
        let (p, epoch, gate) = self
            .parts
            .loaded_part(shard, group)
            .map_err(|code| AppendFailure::Failed(code, "offsets partition not loaded".into()))?;
        {
            let _permit = gate
                .acquire_permit(1)
                .await
                .map_err(|e| AppendFailure::Failed(kerr::NOT_COORDINATOR, e.to_string()))?;
            let moved = || AppendFailure::Failed(kerr::NOT_COORDINATOR, "leadership moved".into());
            if !self.parts.still_loaded(p, epoch) {
                return Err(moved());
            }
            append_record(shard, p, batch).await?;
            if !self.parts.still_loaded(p, epoch) {
                return Err(moved());
            }
        }
        if self.parts.appended(p, len, self.rewrite_bytes) {
            spawn_rewrite(shard, p, epoch);
        }
        Ok(())
    }
}

impl Coordinator {
    /// A transaction marker for offsets partition `p` (from the transaction coordinator):
    /// the offsets its groups hold for `producer_id` are committed or dropped, durably.
    /// NOT_LEADER_OR_FOLLOWER when this shard does not coordinate `p` now.
    pub async fn complete_txn(
        &self,
        shard: &Rc<Shard>,
        p: i32,
        producer_id: i64,
        commit: bool,
    ) -> i16 {
        let Some(epoch) = self.parts.loaded_epoch(p) else {
            return kerr::NOT_LEADER_OR_FOLLOWER;
        };
        let Some(gate) = self.parts.gate(p, epoch) else {
            return kerr::NOT_LEADER_OR_FOLLOWER;
        };
        let partitions = shard
            .meta()
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions.len());
        let holds = |groups: &HashMap<String, Group>| {
            groups.values().any(|g| {
                g.pending_txn.contains_key(&producer_id)
                    && offsets_partition(&g.id, partitions) == p
            })
        };
        if !holds(&self.groups.borrow()) {
            return kerr::NONE;
        }
        let Ok(_permit) = gate.acquire_permit(1).await else {
            return kerr::NOT_LEADER_OR_FOLLOWER;
        };
        let stamp = self.next_stamp();
        let entry = LogEntry::TxnMarker(Box::new(offsets::TxnMarker {
            producer_id,
            commit,
            stamp,
        }));
        let batch = match offsets::encode_batch(&entry) {
            Ok(b) => b,
            Err(e) => {
                log::error!("transaction marker for {OFFSETS_TOPIC}-{p}: {e}");
                return kerr::UNKNOWN_SERVER_ERROR;
            }
        };
        if let Err(e) = append_record(shard, p, batch).await {
            return match e.code() {
                kerr::NOT_COORDINATOR => kerr::NOT_LEADER_OR_FOLLOWER,
                code => code,
            };
        }
        if !self.parts.still_loaded(p, epoch) {
            return kerr::NOT_LEADER_OR_FOLLOWER;
        }
        for g in self.groups.borrow_mut().values_mut() {
            if offsets_partition(&g.id, partitions) == p {
                g.end_txn(producer_id, commit, stamp);
            }
        }
        kerr::NONE
    }
}

/// One record batch appended to an offsets partition led here, acks=all.
async fn append_record(
    shard: &Rc<Shard>,
    p: i32,
    batch: bytes::Bytes,
) -> Result<(), AppendFailure> {
    internal_topic::append(shard, OFFSETS_TOPIC, p, batch, OFFSETS_COMMIT_TIMEOUT)
        .await
        .map_err(|(code, why)| AppendFailure::Failed(code, why))
}

fn to_stored(g: &Group) -> GroupOffsets {
    GroupOffsets {
        group: g.id.clone(),
        deleted_stamp: g.deleted_stamp,
        offsets: g
            .offsets
            .iter()
            .map(|((t, p), v)| OffsetEntry {
                topic: t.clone(),
                partition: *p,
                value: v.clone(),
            })
            .collect(),
    }
}

fn merge_stored(map: &mut HashMap<String, Group>, g: GroupOffsets) {
    let group = map
        .entry(g.group.clone())
        .or_insert_with(|| Group::new(g.group.clone()));
    group.apply_tombstone(g.deleted_stamp);
    for o in g.offsets {
        group.apply_offset(o.topic, o.partition, o.value);
    }
}

fn apply_entry(map: &mut HashMap<String, Group>, e: LogEntry) {
    match e {
        LogEntry::Commit { group, offsets } => {
            let g = map
                .entry(group.clone())
                .or_insert_with(|| Group::new(group));
            for o in offsets {
                g.apply_offset(o.topic, o.partition, o.value);
            }
        }
        LogEntry::Tombstone { group, stamp } => {
            let g = map
                .entry(group.clone())
                .or_insert_with(|| Group::new(group));
            g.apply_tombstone(stamp);
        }
        LogEntry::PartitionTombstones(t) => {
            if let Some(g) = map.get_mut(&t.group) {
                g.delete_offsets(&t.partitions, t.stamp);
            }
        }
        LogEntry::TxnOffsets(t) => {
            let t = *t;
            map.entry(t.group.clone())
                .or_insert_with(|| Group::new(t.group))
                .hold_txn_offsets(t.producer_id, t.offsets);
        }
        LogEntry::TxnMarker(m) => {
            for g in map.values_mut() {
                g.end_txn(m.producer_id, m.commit, m.stamp);
            }
        }
    }
}

/// Reads `part` from its log start to its end, applying every entry; returns the bytes read.
async fn replay(
    part: &shards::Partition,
    map: &mut HashMap<String, Group>,
) -> Result<u64, OffsetsError> {
    internal_topic::replay(part, |batch| {
        for e in offsets::decode_batches(batch).map_err(|e| e.0)? {
            apply_entry(map, e);
        }
        Ok(())
    })
    .await
    .map_err(OffsetsError)
}

/// Loads one offsets partition this shard became the leader of (see the module comment).
async fn load_partition(
    shard: &Rc<Shard>,
    p: i32,
    epoch: i32,
    partitions: usize,
) -> Result<(), OffsetsError> {
    let co = &shard.groups;
    let Some(gate) = co.parts.gate(p, epoch) else {
        return Ok(());
    };
    let _all = gate
        .acquire_permit(GATE_UNITS)
        .await
        .map_err(|e| OffsetsError(e.to_string()))?;
    // Legacy offsets of this host must be read first: they may belong here.
    for to in 0..shard.count {
        loop {
            let done = shard
                .call(to, |s| async move { s.groups.legacy_loaded.get() })
                .await
                .map_err(|e| OffsetsError(e.to_string()))?;
            if done {
                break;
            }
            if shard.shutting_down.get() {
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_millis(LEGACY_POLL_MS)).await;
        }
    }
    let Some(r) = shard.replica(OFFSETS_TOPIC, p) else {
        return Ok(());
    };
    let mut map = HashMap::new();
    let bytes = replay(&r.log, &mut map).await?;
    if !co.parts.is_registered(p, epoch) {
        return Ok(());
    }
    // Offsets from before the topic, held by this host's shards, that belong here.
    let mut legacy = Vec::new();
    for to in 0..shard.count {
        let got = shard
            .call(
                to,
                move |s| async move { s.groups.legacy_for(p, partitions) },
            )
            .await
            .map_err(|e| OffsetsError(e.to_string()))?;
        legacy.extend(got);
    }
    if !legacy.is_empty() {
        let n = legacy.len();
        for g in &legacy {
            for entry in state_records(g) {
                let batch = offsets::encode_batch(&entry)?;
                append_record(shard, p, batch)
                    .await
                    .map_err(|e| OffsetsError(format!("importing legacy offsets: {e:?}")))?;
            }
        }
        for g in legacy {
            merge_stored(&mut map, g);
        }
        for to in 0..shard.count {
            shard
                .call(to, move |s| async move {
                    s.groups.legacy_done(p, partitions).await
                })
                .await
                .map_err(|e| OffsetsError(e.to_string()))?;
        }
        log::info!(
            "shard {}: {n} groups' offsets from before {OFFSETS_TOPIC} written to partition {p}",
            shard.id
        );
    }
    map.retain(|_, g| !g.offsets.is_empty() || !g.pending_txn.is_empty());
    let max_stamp = map
        .values()
        .map(|g| to_stored(g).max_stamp())
        .max()
        .unwrap_or(0);
    co.raise_epoch(max_stamp);
    let n = map.len();
    if !co.parts.is_registered(p, epoch) {
        return Ok(());
    }
    {
        let mut groups = co.groups.borrow_mut();
        // Consumer-protocol membership is not in the log: members of the previous
        // coordinator may hold partitions for up to a session timeout.
        let hold =
            Instant::now() + Duration::from_millis(shard.config.group_consumer_session_timeout_ms);
        for (name, mut g) in map {
            g.consumer_hold_until = Some(hold);
            groups.insert(name, g);
        }
    }
    let rewrite_due = co.parts.mark_loaded(p, epoch, bytes, co.rewrite_bytes);
    log::info!(
        "shard {}: coordinating {OFFSETS_TOPIC}-{p} (leader epoch {epoch}): {n} groups with committed offsets, {bytes} bytes replayed",
        shard.id
    );
    if rewrite_due {
        drop(_all);
        spawn_rewrite(shard, p, epoch);
    }
    Ok(())
}

/// The records that restore one group's offsets (original stamps), a bounded number of
/// offsets each.
fn state_records(g: &GroupOffsets) -> Vec<LogEntry> {
    g.offsets
        .chunks(REWRITE_OFFSETS_PER_RECORD)
        .map(|c| LogEntry::Commit {
            group: g.group.clone(),
            offsets: c.to_vec(),
        })
        .collect()
}

fn spawn_rewrite(shard: &Rc<Shard>, p: i32, epoch: i32) {
    let s = shard.clone();
    glommio::spawn_local(async move {
        let bytes = match rewrite(&s, p, epoch).await {
            Ok(b) => b,
            Err(e) => {
                log::warn!("shard {}: rewriting {OFFSETS_TOPIC}-{p}: {e}", s.id);
                None
            }
        };
        s.groups.parts.rewritten(p, bytes);
    })
    .detach();
}

/// Re-appends the partition's current state, then raises its log start to where the
/// rewrite began: the older records are all superseded. Returns the bytes written.
async fn rewrite(shard: &Rc<Shard>, p: i32, epoch: i32) -> Result<Option<u64>, OffsetsError> {
    let co = &shard.groups;
    let Some(gate) = co.parts.gate(p, epoch) else {
        return Ok(None);
    };
    let _all = gate
        .acquire_permit(GATE_UNITS)
        .await
        .map_err(|e| OffsetsError(e.to_string()))?;
    if !co.parts.still_loaded(p, epoch) {
        return Ok(None);
    }
    let Some(r) = shard.replica(OFFSETS_TOPIC, p) else {
        return Ok(None);
    };
    let partitions = shard
        .meta()
        .topic(OFFSETS_TOPIC)
        .map_or(0, |t| t.partitions.len());
    let (state, held): (Vec<GroupOffsets>, Vec<LogEntry>) = {
        let groups = co.groups.borrow();
        let mine = || {
            groups
                .values()
                .filter(|g| offsets_partition(&g.id, partitions) == p)
        };
        let state = mine()
            .filter(|g| !g.offsets.is_empty())
            .map(to_stored)
            .collect();
        // Offsets held for open transactions stay held after the rewrite.
        let held = mine()
            .flat_map(|g| {
                g.pending_txn.iter().map(|(pid, offs)| {
                    LogEntry::TxnOffsets(Box::new(offsets::TxnOffsets {
                        group: g.id.clone(),
                        producer_id: *pid,
                        producer_epoch: -1,
                        offsets: offs.clone(),
                    }))
                })
            })
            .collect();
        (state, held)
    };
    let start = r.log.log_end_offset();
    let mut bytes = 0u64;
    for entry in state.iter().flat_map(state_records).chain(held) {
        let batch = offsets::encode_batch(&entry)?;
        bytes += batch.len() as u64;
        append_record(shard, p, batch)
            .await
            .map_err(|e| OffsetsError(format!("{e:?}")))?;
    }
    if !co.parts.still_loaded(p, epoch) {
        return Ok(None);
    }
    let new_start = r
        .log
        .delete_records_before(start)
        .await
        .map_err(|e| OffsetsError(e.to_string()))?;
    log::info!(
        "shard {}: {OFFSETS_TOPIC}-{p} rewritten: {} groups in {bytes} bytes, log start {new_start}",
        shard.id,
        state.len()
    );
    Ok(Some(bytes))
}

impl Coordinator {
    /// Legacy groups held here that belong to offsets partition `p`.
    fn legacy_for(&self, p: i32, partitions: usize) -> Vec<GroupOffsets> {
        self.legacy
            .borrow()
            .values()
            .filter(|g| offsets_partition(&g.id, partitions) == p)
            .map(to_stored)
            .collect()
    }

    /// Forgets the legacy groups of partition `p` (now written to it); deletes the legacy
    /// files once none are left.
    async fn legacy_done(&self, p: i32, partitions: usize) {
        let empty = {
            let mut legacy = self.legacy.borrow_mut();
            legacy.retain(|name, _| offsets_partition(name, partitions) != p);
            legacy.is_empty()
        };
        if empty {
            self.remove_legacy_files().await;
        }
    }

    /// Deletes the legacy offsets files (their groups are all in the offsets topic now).
    async fn remove_legacy_files(&self) {
        let dirs = self.legacy_dirs.take();
        for (dir, logs) in dirs {
            for part in logs {
                if let Err(e) = part.delete().await {
                    log::warn!("shard {}: deleting a legacy offsets log: {e}", self.shard);
                }
            }
            let d = dir.clone();
            let _ = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(d))
                .await;
            log::info!(
                "shard {}: legacy offsets directory {} removed (its groups live in {OFFSETS_TOPIC})",
                self.shard,
                dir.display()
            );
        }
    }
}

fn legacy_log_config() -> shards::LogConfig {
    shards::LogConfig {
        segment_bytes: OFFSETS_TOPIC_SEGMENT_BYTES,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: OFFSETS_LOG_BATCH_MAX_BYTES as u32,
        ..Default::default()
    }
}

/// Reads one legacy shard directory: snapshot, then every log generation it does not
/// cover. Returns the groups and the opened logs.
async fn load_legacy_dir(
    shard: &Rc<Shard>,
    dir: PathBuf,
    map: &mut HashMap<String, Group>,
) -> Result<Vec<Rc<shards::Partition>>, OffsetsError> {
    let d = dir.clone();
    let (snapshot, gens): (Option<Snapshot>, Vec<u64>) = glommio::executor()
        .spawn_blocking(move || -> Result<_, OffsetsError> {
            Ok((offsets::read_snapshot(&d)?, offsets::list_log_gens(&d)?))
        })
        .await?;
    let mut first_gen = 0;
    if let Some(s) = snapshot {
        first_gen = s.log_gen;
        for g in s.groups {
            merge_stored(map, g);
        }
    }
    let mut logs = Vec::new();
    for generation in gens.into_iter().filter(|g| *g >= first_gen) {
        let path = offsets::log_dir(&dir, generation);
        let part = shard
            .store
            .open_partition(path.clone(), legacy_log_config())
            .await
            .map_err(|e| OffsetsError(format!("open {}: {e}", path.display())))?;
        replay(&part, map).await?;
        logs.push(part);
    }
    Ok(logs)
}

/// Reads this shard's legacy directories: its own and those of shards that no longer
/// exist (k >= shards, k % shards == this shard).
async fn load_legacy(shard: &Rc<Shard>) -> Result<(), OffsetsError> {
    let co = &shard.groups;
    let data_dir = co.data_dir.clone();
    let dirs = glommio::executor()
        .spawn_blocking(move || offsets::list_shard_dirs(&data_dir))
        .await?;
    let mut map = HashMap::new();
    for k in dirs.into_iter().filter(|k| k % shard.count == co.shard) {
        let dir = offsets::shard_dir(&co.data_dir, k);
        let logs = load_legacy_dir(shard, dir.clone(), &mut map).await?;
        co.legacy_dirs.borrow_mut().push((dir, logs));
    }
    map.retain(|_, g| !g.offsets.is_empty());
    if !map.is_empty() {
        log::info!(
            "shard {}: {} groups with offsets from before {OFFSETS_TOPIC} found; written there as their partitions load",
            shard.id,
            map.len()
        );
    }
    let nothing = map.is_empty();
    *co.legacy.borrow_mut() = map;
    if nothing && !co.legacy_dirs.borrow().is_empty() {
        co.remove_legacy_files().await;
    }
    Ok(())
}

/// Enforces group deadlines, removes deleted groups and expires old offsets.
async fn ticker(shard: Rc<Shard>) {
    let co = &shard.groups;
    let mut last_retention = Instant::now();
    let mut last_recount = Instant::now();
    while !shard.shutting_down.get() {
        glommio::timer::sleep(Duration::from_millis(GROUP_TICK_MS)).await;
        let now = Instant::now();
        {
            let mut groups = co.groups.borrow_mut();
            let session = Duration::from_millis(shard.config.group_consumer_session_timeout_ms);
            for g in groups.values_mut() {
                g.tick(now);
                if let Some(c) = g.consumer.as_mut()
                    && c.tick(now, session, &g.id)
                    && c.members.is_empty()
                {
                    g.empty_since_ms = now_ms();
                }
            }
            groups.retain(|_, g| {
                let dead = g.state == GroupState::Dead;
                let unused = g.state == GroupState::Empty
                    && g.is_empty()
                    && g.offsets.is_empty()
                    && g.pending_txn.is_empty();
                g.inflight_commits > 0 || !(dead || unused)
            });
            if now.duration_since(last_recount)
                >= Duration::from_millis(GROUP_MEMBERSHIP_RECOUNT_MS)
            {
                last_recount = now;
                co.recount_membership(&groups);
            }
        }
        if now.duration_since(last_retention)
            >= Duration::from_millis(OFFSETS_RETENTION_CHECK_INTERVAL_MS)
        {
            last_retention = now;
            expire_offsets(&shard).await;
        }
    }
}

/// offsets.retention.minutes: an empty group whose newest commit and emptiness are both
/// older than the retention loses its offsets (a tombstone in the log, then removal).
async fn expire_offsets(shard: &Rc<Shard>) {
    let co = &shard.groups;
    let cutoff = now_ms() - co.retention.as_millis() as i64;
    let expired: Vec<String> = co
        .groups
        .borrow()
        .values()
        .filter(|g| {
            g.state == GroupState::Empty
                && g.is_empty()
                && !g.offsets.is_empty()
                && g.empty_since_ms < cutoff
                && g.offsets.values().all(|o| o.commit_ms < cutoff)
        })
        .map(|g| g.id.clone())
        .collect();
    for name in expired {
        let stamp = co.next_stamp();
        let entry = LogEntry::Tombstone {
            group: name.clone(),
            stamp,
        };
        match co.append(shard, &name, &entry).await {
            Ok(()) => {
                if let Some(g) = co.groups.borrow_mut().get_mut(&name) {
                    g.apply_tombstone(stamp);
                }
                log::info!("shard {}: group {name}: offsets expired", co.shard);
            }
            Err(e) => log::warn!("shard {}: expiring offsets of {name}: {e:?}", co.shard),
        }
    }
}

impl CommittedOffset {
    pub fn new(offset: i64, leader_epoch: i32, metadata: String, stamp: u64) -> Self {
        CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_ms: now_ms(),
            stamp,
        }
    }
}
