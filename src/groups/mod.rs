//! Consumer groups: the coordinator for the groups that hash to this shard (membership
//! state machine, committed offsets, their durable log and snapshot, start-up loading).
//!
//! Runs on: every shard, for the groups it coordinates: shard = crc32c(group id) % shards.
//! Group requests that reach another shard are answered NOT_COORDINATOR, as a Kafka broker
//! does for a group it does not coordinate: every shard is its own broker node, clients
//! send group requests to the node FindCoordinator named, so forwarding would only add a
//! cross-core hop to a path clients never take.
//!
//! Start-up (background task; group requests get COORDINATOR_LOAD_IN_PROGRESS until done):
//! 1. each shard opens its own directory and the directories of shards that no longer exist
//!    (k >= shards, k % shards == this shard) and loads snapshot + log tail of each;
//! 2. barrier; each shard asks every other for the loaded groups that now hash to it (the
//!    shard count may have changed) and merges them by stamp;
//! 3. each shard snapshots what it holds (own groups + data still owned elsewhere), so the
//!    adopted groups are durable in their new home; then it serves;
//! 4. barrier; each shard snapshots again without the groups it no longer owns and deletes
//!    the retired directories it opened. Only after every new home is durable does any old
//!    copy go away.

pub mod group;
pub mod handlers;
pub mod offsets;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::shard::Shard;
use group::{Group, GroupState, now_ms};
use offsets::{
    CommittedOffset, GroupOffsets, LogEntry, OffsetEntry, OffsetsError, STAMP_SEQ_BITS, Snapshot,
};

/// Kafka's group.max.size default is unbounded; osprey bounds members per group.
pub const GROUP_MAX_SIZE: usize = 1000;
/// Groups one shard coordinates (new groups beyond get COORDINATOR_NOT_AVAILABLE).
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;
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
/// Largest single offsets-log record (one OffsetCommit); larger commits get
/// INVALID_COMMIT_OFFSET_SIZE. Below the store's per-append cap.
pub const OFFSETS_LOG_BATCH_MAX_BYTES: usize = 4 << 20;
/// Offsets-log bytes after which a snapshot is taken (and the log restarted).
pub const SNAPSHOT_INTERVAL_LOG_BYTES: u64 = 16 << 20;
/// Segment size of the offsets log.
const OFFSETS_LOG_SEGMENT_BYTES: u64 = 16 << 20;
/// Period of the deadline checks (sessions, join and sync phases, initial delay).
const GROUP_TICK_MS: u64 = 20;
/// Period of the offsets-retention check (Kafka's offsets.retention.check.interval.ms is
/// 10 minutes; a minute keeps expiry closer to the configured time).
const OFFSETS_RETENTION_CHECK_INTERVAL_MS: u64 = 60_000;
/// Startup barrier poll period.
const STARTUP_POLL_MS: u64 = 5;
/// Bytes read per call while replaying the offsets log.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Units of the commit/snapshot gate: commits take one, a snapshot takes all.
const GATE_UNITS: u64 = 1 << 20;

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

/// The coordinator shard of a group: a stable hash, the same in every process and run.
pub fn coordinator_shard(group: &str, shards: usize) -> usize {
    crc32c::crc32c(group.as_bytes()) as usize % shards.max(1)
}

/// The host that coordinates a group: one of the controller quorum's voters, chosen by a
/// hash of the group id (salted, so the choice of host and of shard within it are
/// independent). The voter set is fixed configuration, so a group's home never moves
/// when hosts join or leave; a one-host cluster coordinates every group itself.
pub fn coordinator_host(group: &str, config: &crate::config::BrokerConfig) -> u32 {
    if config.voters.is_empty() {
        return config.node_id;
    }
    let mut ids: Vec<u64> = config.voters.iter().map(|v| v.0).collect();
    ids.sort_unstable();
    let h = crc32c::crc32c_append(crc32c::crc32c(b"osprey-group-host/"), group.as_bytes());
    ids[h as usize % ids.len()] as u32
}

/// Startup progress, polled by the other shards' barriers.
const PHASE_LOADED: u8 = 1;
const PHASE_SERVING: u8 = 2;
const PHASE_DONE: u8 = 3;

pub struct Coordinator {
    pub shard: usize,
    data_dir: PathBuf,
    dir: PathBuf,
    initial_delay: Duration,
    retention: Duration,
    phase: Cell<u8>,
    loaded: Cell<bool>,
    pub groups: RefCell<HashMap<String, Group>>,
    /// Groups loaded from disk that hash to another shard now (until step 4 of start-up).
    foreign: RefCell<HashMap<String, Group>>,
    /// The active offsets log.
    log: RefCell<Option<Rc<shards::Partition>>>,
    log_gen: Cell<u64>,
    /// Log generations a pending snapshot will cover; deleted once it is durable.
    old_logs: RefCell<Vec<Rc<shards::Partition>>>,
    /// Directories of shards that no longer exist, opened here to hand their data over.
    retired: RefCell<Vec<(PathBuf, Vec<Rc<shards::Partition>>)>>,
    epoch: Cell<u64>,
    seq: Cell<u64>,
    pub id_seq: Cell<u64>,
    gate: Semaphore,
    snapshotting: Semaphore,
    log_bytes: Cell<u64>,
}

impl Coordinator {
    pub fn new(shard: usize, config: &BrokerConfig) -> Self {
        Coordinator {
            shard,
            data_dir: config.data_dir.clone(),
            dir: offsets::shard_dir(&config.data_dir, shard),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            retention: Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60)),
            phase: Cell::new(0),
            loaded: Cell::new(false),
            groups: RefCell::new(HashMap::new()),
            foreign: RefCell::new(HashMap::new()),
            log: RefCell::new(None),
            log_gen: Cell::new(0),
            old_logs: RefCell::new(Vec::new()),
            retired: RefCell::new(Vec::new()),
            epoch: Cell::new(1),
            seq: Cell::new(0),
            id_seq: Cell::new(0),
            gate: Semaphore::new(GATE_UNITS),
            snapshotting: Semaphore::new(1),
            log_bytes: Cell::new(0),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.get()
    }

    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// Loads this shard's committed offsets in the background (start-up); group requests
    /// answer COORDINATOR_LOAD_IN_PROGRESS until it is done.
    pub async fn start(&self, shard: &Rc<Shard>) {
        let s = shard.clone();
        glommio::spawn_local(async move {
            if let Err(e) = load(&s).await {
                log::error!(
                    "shard {}: loading consumer group offsets failed: {e}; group requests stay unavailable",
                    s.id
                );
                return;
            }
            glommio::spawn_local(ticker(s.clone())).detach();
            if let Err(e) = finish_migration(&s).await {
                log::error!("shard {}: cleaning up moved group offsets: {e}", s.id);
            }
        })
        .detach();
    }

    /// Snapshots the offsets at shutdown, so the next start replays nothing.
    pub async fn stop(&self, shard: &Rc<Shard>) {
        if !self.loaded.get() {
            return;
        }
        if let Err(e) = self.snapshot(shard).await {
            log::error!("shard {}: offsets snapshot at shutdown: {e}", shard.id);
        }
    }

    /// The next stamp: increasing within this run, above every stamp of earlier runs.
    pub fn next_stamp(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        (self.epoch.get() << STAMP_SEQ_BITS) | (seq & ((1 << STAMP_SEQ_BITS) - 1))
    }

    fn log_config() -> shards::LogConfig {
        shards::LogConfig {
            segment_bytes: OFFSETS_LOG_SEGMENT_BYTES,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: OFFSETS_LOG_BATCH_MAX_BYTES as u32,
            ..Default::default()
        }
    }

    /// Appends one entry to the offsets log and waits for its fsync.
    pub async fn append(&self, shard: &Rc<Shard>, entry: &LogEntry) -> Result<(), AppendFailure> {
        let batch = offsets::encode_batch(entry).map_err(|e| AppendFailure::Storage(e.0))?;
        if batch.len() > OFFSETS_LOG_BATCH_MAX_BYTES {
            return Err(AppendFailure::TooLarge);
        }
        let len = batch.len() as u64;
        {
            let _permit = self
                .gate
                .acquire_permit(1)
                .await
                .map_err(|e| AppendFailure::Storage(e.to_string()))?;
            let log = self.log.borrow().clone();
            let Some(log) = log else {
                return Err(AppendFailure::Storage("offsets log not open".into()));
            };
            log.append(batch, shards::Durability::Fsync)
                .await
                .map_err(|e| AppendFailure::Storage(e.to_string()))?;
        }
        self.log_bytes.set(self.log_bytes.get() + len);
        if self.log_bytes.get() >= SNAPSHOT_INTERVAL_LOG_BYTES && self.snapshotting.available() > 0
        {
            let s = shard.clone();
            glommio::spawn_local(async move {
                if let Err(e) = s.groups.snapshot(&s).await {
                    log::error!("shard {}: offsets snapshot: {e}", s.id);
                }
            })
            .detach();
        }
        Ok(())
    }

    /// Starts a new log generation, writes the state up to it as the snapshot, then
    /// deletes the generations it covers.
    pub async fn snapshot(&self, shard: &Rc<Shard>) -> Result<(), OffsetsError> {
        let err = |e: String| OffsetsError(e);
        let _one = self
            .snapshotting
            .acquire_permit(1)
            .await
            .map_err(|e| err(e.to_string()))?;
        let (bytes, covered) = {
            let _all = self
                .gate
                .acquire_permit(GATE_UNITS)
                .await
                .map_err(|e| err(e.to_string()))?;
            let new_gen = self.log_gen.get() + 1;
            let part = shard
                .store
                .open_partition(offsets::log_dir(&self.dir, new_gen), Self::log_config())
                .await
                .map_err(|e| err(format!("open offsets log: {e}")))?;
            if let Some(old) = self.log.replace(Some(part)) {
                self.old_logs.borrow_mut().push(old);
            }
            self.log_gen.set(new_gen);
            self.log_bytes.set(0);
            let snap = Snapshot {
                log_gen: new_gen,
                groups: self.stored_groups(),
            };
            (offsets::encode_snapshot(&snap)?, self.old_logs.take())
        };
        let dir = self.dir.clone();
        let written = glommio::executor()
            .spawn_blocking(move || offsets::write_snapshot(&dir, &bytes))
            .await;
        if let Err(e) = written {
            // The covered logs stay: the previous snapshot still needs them.
            self.old_logs.borrow_mut().extend(covered);
            return Err(e);
        }
        for p in covered {
            if let Err(e) = p.delete().await {
                log::warn!("shard {}: deleting an old offsets log: {e}", self.shard);
            }
        }
        Ok(())
    }

    /// What a snapshot holds: every group's offsets, including data still kept for groups
    /// that moved to another shard (until that shard has made them durable).
    fn stored_groups(&self) -> Vec<GroupOffsets> {
        let mut out: Vec<GroupOffsets> = self
            .groups
            .borrow()
            .values()
            .filter(|g| !g.offsets.is_empty())
            .map(to_stored)
            .collect();
        out.extend(
            self.foreign
                .borrow()
                .values()
                .filter(|g| !g.offsets.is_empty())
                .map(to_stored),
        );
        out
    }

    fn foreign_for(&self, to: usize, count: usize) -> Vec<GroupOffsets> {
        self.foreign
            .borrow()
            .values()
            .filter(|g| coordinator_shard(&g.id, count) == to)
            .map(to_stored)
            .collect()
    }
}

#[derive(Debug)]
pub enum AppendFailure {
    TooLarge,
    Storage(String),
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
    }
}

/// Loads one shard directory: snapshot, then every log generation it does not cover.
/// Returns the groups and the opened logs (ascending generation) and the highest generation.
async fn load_dir(
    shard: &Rc<Shard>,
    dir: PathBuf,
    own: bool,
) -> Result<(HashMap<String, Group>, Vec<Rc<shards::Partition>>, u64), OffsetsError> {
    let d = dir.clone();
    let (snapshot, gens) = glommio::executor()
        .spawn_blocking(move || -> Result<_, OffsetsError> {
            Ok((offsets::read_snapshot(&d)?, offsets::list_log_gens(&d)?))
        })
        .await?;
    let mut map = HashMap::new();
    let mut first_gen = 0;
    if let Some(s) = snapshot {
        first_gen = s.log_gen;
        for g in s.groups {
            merge_stored(&mut map, g);
        }
    }
    let mut logs = Vec::new();
    let mut last_gen = first_gen;
    for generation in gens {
        let path = offsets::log_dir(&dir, generation);
        if generation < first_gen {
            // Covered by the snapshot: left over from a crash before the deletion.
            if own {
                let p = path.clone();
                let _ = glommio::executor()
                    .spawn_blocking(move || std::fs::remove_dir_all(p))
                    .await;
            }
            continue;
        }
        let part = shard
            .store
            .open_partition(path.clone(), Coordinator::log_config())
            .await
            .map_err(|e| OffsetsError(format!("open {}: {e}", path.display())))?;
        let mut offset = part.log_start_offset();
        let end = part.log_end_offset();
        while offset < end {
            let out = part
                .read(offset, REPLAY_READ_BYTES)
                .await
                .map_err(|e| OffsetsError(format!("read {}: {e}", path.display())))?;
            if out.chunks.is_empty() {
                break;
            }
            for chunk in &out.chunks {
                let mut at = 0;
                while at < chunk.len() {
                    let h = shards::batch::parse_header(&chunk[at..])
                        .map_err(|e| OffsetsError(format!("{}: {e:?}", path.display())))?;
                    let next = at + h.total_bytes();
                    if next > chunk.len() {
                        break;
                    }
                    if h.last_offset() >= offset {
                        for e in offsets::decode_batches(&chunk[at..next])? {
                            apply_entry(&mut map, e);
                        }
                    }
                    offset = offset.max(h.last_offset() + 1);
                    at = next;
                }
            }
        }
        last_gen = last_gen.max(generation);
        logs.push(part);
    }
    Ok((map, logs, last_gen))
}

/// Step 1-3 of start-up (see the module comment).
async fn load(shard: &Rc<Shard>) -> Result<(), OffsetsError> {
    let co = &shard.groups;
    let count = shard.count;
    let data_dir = co.data_dir.clone();
    let dirs = glommio::executor()
        .spawn_blocking(move || offsets::list_shard_dirs(&data_dir))
        .await?;
    // 1. Own directory, then retired directories assigned to this shard.
    let (own, mut logs, last_gen) = load_dir(shard, co.dir.clone(), true).await?;
    let mut loaded = vec![own];
    for k in dirs
        .into_iter()
        .filter(|k| *k >= count && k % count == co.shard)
    {
        let dir = offsets::shard_dir(&co.data_dir, k);
        let (m, l, _) = load_dir(shard, dir.clone(), false).await?;
        loaded.push(m);
        co.retired.borrow_mut().push((dir, l));
    }
    let mut max_stamp = 0;
    {
        let mut groups = co.groups.borrow_mut();
        let mut foreign = co.foreign.borrow_mut();
        for map in loaded {
            for (name, g) in map {
                let stored = to_stored(&g);
                max_stamp = max_stamp.max(stored.max_stamp());
                let target = if coordinator_shard(&name, count) == co.shard {
                    &mut *groups
                } else {
                    &mut *foreign
                };
                merge_stored(target, stored);
            }
        }
    }
    // The active log: the newest generation, or a fresh one.
    let active = match logs.pop() {
        Some(p) => p,
        None => shard
            .store
            .open_partition(
                offsets::log_dir(&co.dir, last_gen),
                Coordinator::log_config(),
            )
            .await
            .map_err(|e| OffsetsError(format!("open offsets log: {e}")))?,
    };
    co.old_logs.borrow_mut().extend(logs);
    co.log.replace(Some(active));
    co.log_gen.set(last_gen);
    co.phase.set(PHASE_LOADED);
    // 2. Barrier, then collect the groups that moved here.
    wait_phase(shard, PHASE_LOADED).await?;
    for from in (0..count).filter(|f| *f != co.shard) {
        let me = co.shard;
        let moved = shard
            .call(
                from,
                move |s| async move { s.groups.foreign_for(me, count) },
            )
            .await
            .map_err(|e| OffsetsError(e.to_string()))?;
        let mut groups = co.groups.borrow_mut();
        for g in moved {
            max_stamp = max_stamp.max(g.max_stamp());
            merge_stored(&mut groups, g);
        }
    }
    co.groups.borrow_mut().retain(|_, g| !g.offsets.is_empty());
    co.epoch.set((max_stamp >> STAMP_SEQ_BITS) + 1);
    // 3. Make the merged state durable here before anyone drops an old copy.
    co.snapshot(shard).await?;
    let n = co.groups.borrow().len();
    co.loaded.set(true);
    co.phase.set(PHASE_SERVING);
    log::info!(
        "shard {}: consumer group coordinator loaded {n} groups with committed offsets",
        co.shard
    );
    Ok(())
}

/// Step 4 of start-up: forget moved groups and retired directories once every shard made
/// its adopted groups durable.
async fn finish_migration(shard: &Rc<Shard>) -> Result<(), OffsetsError> {
    let co = &shard.groups;
    wait_phase(shard, PHASE_SERVING).await?;
    let had_foreign = !co.foreign.borrow().is_empty();
    co.foreign.borrow_mut().clear();
    if had_foreign {
        co.snapshot(shard).await?;
    }
    let retired = co.retired.take();
    for (dir, logs) in retired {
        for p in logs {
            if let Err(e) = p.delete().await {
                log::warn!("shard {}: deleting retired offsets log: {e}", co.shard);
            }
        }
        let _ = glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await;
    }
    co.phase.set(PHASE_DONE);
    Ok(())
}

/// Waits until every shard reached `phase` of start-up.
async fn wait_phase(shard: &Rc<Shard>, phase: u8) -> Result<(), OffsetsError> {
    for to in 0..shard.count {
        loop {
            let p = shard
                .call(to, move |s| async move { s.groups.phase.get() })
                .await
                .map_err(|e| OffsetsError(e.to_string()))?;
            if p >= phase {
                break;
            }
            if shard.shutting_down.get() {
                return Err(OffsetsError("shutting down".into()));
            }
            glommio::timer::sleep(Duration::from_millis(STARTUP_POLL_MS)).await;
        }
    }
    Ok(())
}

/// Enforces group deadlines, removes deleted groups and expires old offsets.
async fn ticker(shard: Rc<Shard>) {
    let co = &shard.groups;
    let mut last_retention = Instant::now();
    while !shard.shutting_down.get() {
        glommio::timer::sleep(Duration::from_millis(GROUP_TICK_MS)).await;
        let now = Instant::now();
        {
            let mut groups = co.groups.borrow_mut();
            for g in groups.values_mut() {
                g.tick(now);
            }
            groups.retain(|_, g| {
                let dead = g.state == GroupState::Dead;
                let unused = g.state == GroupState::Empty && g.is_empty() && g.offsets.is_empty();
                g.inflight_commits > 0 || !(dead || unused)
            });
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
        match co.append(shard, &entry).await {
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
