//! One partition log: append (validate, assign offsets, idempotent-producer checks, group
//! commit), read (tail cache or aligned DMA reads, whole batches), roll, retention,
//! recovery, flush, close and delete.
//!
//! Runs on the core of the shard that owns the partition; state lives in `RefCell`s that are
//! never borrowed across an `.await`. Write path: `append` copies nothing but the batch
//! buffer (made mutable to rewrite baseOffset), puts it in the tail cache and the pending
//! queue. A writer task per partition forms rounds of pending data and issues their aligned
//! writes without waiting for earlier rounds (pipelined, bounded by inflight_writes_max and
//! round_min_bytes, both in StoreConfig); a task per round publishes it in round order (`written_offset`). A
//! syncer task issues a fdatasync as soon as a published round holds data an appender asked
//! to sync (up to SYNCS_INFLIGHT_MAX in flight, published in issue order): appends that
//! arrive meanwhile share the next one (group commit). Appenders wait in offset-ordered
//! queues and are woken only by the offset that satisfies them.
//!
//! Visibility: `high_watermark` equals the log end offset (single replica), so data is
//! readable as soon as it is appended, before it is synced; acks=all producers are still
//! only acknowledged after fdatasync. Replication (the broker tracks the high watermark)
//! uses `append_with` (leader: epoch stamped; follower: the leader's offsets kept),
//! `read_bounded` (consumers below the high watermark), `truncate_to` and the leader-epoch
//! cache (`leader_epochs`, `end_offset_for_epoch`).
//!
//! Compacted logs (cleanup.policy=compact): the log cleaner (child module `cleaner`)
//! rewrites sealed segments keeping offsets, so batches may skip offsets (gaps); reads
//! answer the next batch after an offset in a gap, follower appends and truncation accept
//! gaps, and appends of records without a key are refused.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::io::ReadResult;

use crate::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use crate::config::{
    BLOCK_BYTES, Durability, INDEX_INTERVAL_BYTES, LogConfig, PENDING_MAX_BYTES, READ_MAX_BYTES,
    RECYCLED_SEGMENT_FILE, SCAN_READ_BYTES, SEGMENT_MIN_BYTES, SYNCS_INFLIGHT_MAX, SyncMethod,
};
use crate::epochs::{EPOCHS_FILE, LeaderEpochs};
use crate::error::{AppendError, ReadError, StorageError};
use crate::index::SegmentIndex;
use crate::producer::{ProducerTable, SNAPSHOT_FILE, SeqCheck};
use crate::segment::{Segment, align_down, align_up, read_aligned};
use crate::store::Store;

#[path = "cleaner.rs"]
pub(crate) mod cleaner;

/// Decompresses the records section of a compressed batch: (codec = attributes bits 0-2,
/// compressed bytes) -> the records. Supplied by the caller; the storage has no codecs.
pub type Decompress<'a> = &'a dyn Fn(u8, &[u8]) -> Result<Vec<u8>, String>;

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// True if this was a retry of already stored batches (nothing written; original offsets).
    pub duplicate: bool,
    /// The broker time the batches were stamped with (LogAppendTime topics), else -1.
    pub log_append_time: i64,
}

/// How `Partition::append_with` takes batches (replication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// As `append` (offsets assigned, producer sequence checks), and the
    /// partitionLeaderEpoch field (batch header bytes 12..16, big-endian i32, outside the
    /// CRC) of every batch set to `leader_epoch`.
    Leader { leader_epoch: i32 },
    /// As `Leader`, for the broker's own control batches (transaction markers, built with
    /// `batch::control_batch`); the other modes refuse control batches, as Kafka refuses
    /// them from clients.
    Marker { leader_epoch: i32 },
    /// Batches as a follower fetched them from its leader: their offsets are kept. The first
    /// batch's baseOffset must equal the log end offset and each batch must start right
    /// after the previous one (else `AppendError::OffsetMismatch`); CRC, magic and length
    /// are validated as for `append`; idempotent producer state is recorded from the
    /// batches without sequence checks (dedup is the leader's job); partitionLeaderEpoch
    /// is kept.
    Follower,
}

/// Stored bytes of whole batches, not copied: a slice of the tail cache or of a DMA read.
#[derive(Clone, Debug)]
pub enum Chunk {
    Cached(Bytes),
    Disk(ReadResult),
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Cached(b) => b,
            Chunk::Disk(r) => r,
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Result of a read.
#[derive(Clone, Debug)]
pub struct ReadOutput {
    /// Whole batches in offset order (may be empty at the log end).
    pub chunks: Vec<Chunk>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl ReadOutput {
    /// Total bytes of all chunks.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }
}

/// Counters and sizes of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// End of the prefix whose writes all completed (Written acks are below it).
    pub written_offset: i64,
    pub synced_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// Sealed segments not finalized yet (their last writes, sync or index files pending);
    /// the log cleaner takes only finalized ones.
    pub segments_unfinalized: usize,
    pub cache_bytes: usize,
    pub pending_bytes: usize,
    pub appends: u64,
    pub duplicates: u64,
    /// Flush rounds that wrote data.
    pub write_rounds: u64,
    /// Rounds written through O_DSYNC that published the synced offset themselves.
    pub dsync_rounds: u64,
    /// Rolls that reused a segment file retention retired instead of a new file.
    pub recycled_segments: u64,
    /// fdatasync calls made for this partition.
    pub fdatasyncs: u64,
    /// Writes of a partly filled block that an earlier, still in-flight round also wrote,
    /// held back until that write completed (pipelined rounds).
    pub head_writes: u64,
    pub producers: usize,
}

struct CacheEntry {
    base_offset: i64,
    next_offset: i64,
    data: Bytes,
}

struct LogState {
    segments: BTreeMap<i64, Rc<Segment>>,
    log_start_offset: i64,
    next_offset: i64,
    cache: VecDeque<CacheEntry>,
    cache_bytes: usize,
    producers: ProducerTable,
    epochs: LeaderEpochs,
}

impl LogState {
    fn active(&self) -> &Rc<Segment> {
        // Invariant: a partition always has at least its active segment.
        self.segments
            .values()
            .next_back()
            .expect("partition without segments")
    }
}

struct Pending {
    segment: Rc<Segment>,
    data: Bytes,
    next_offset: i64,
}

/// One write round whose writes are in flight (see `Partition::complete_round`).
struct RoundInFlight {
    /// Rounds are numbered from 1 per partition; they complete in this order.
    seq: u64,
    runs: Vec<RunInFlight>,
    /// Writes issued at once (chunks that no earlier in-flight write touches).
    body: Vec<glommio::Task<Result<(), StorageError>>>,
    /// First offset of the round (`next_offset` of the round before).
    start_offset: i64,
    next_offset: i64,
    bytes: usize,
    /// Written through O_DSYNC descriptors (`SyncMethod::DsyncWrites`): durable once done.
    dsync: bool,
    /// Appends whose data the round carries (the group commit's batch size).
    appends: u64,
    issued_at: Instant,
}

struct RunInFlight {
    segment: Rc<Segment>,
    file: Rc<glommio::io::DmaFile>,
    head: Option<HeadWrite>,
    end: u64,
}

/// The block a run shares with an earlier, still in-flight write of the same block: issued
/// only once that write completed (`after`), so the newer content lands last.
struct HeadWrite {
    pos: u64,
    buf: glommio::io::DmaBuffer,
    after: Rc<Cell<bool>>,
    /// Set when this write completes, if it holds the run's last block.
    done: Option<Rc<Cell<bool>>>,
}

struct WriteState {
    pending: VecDeque<Pending>,
    /// Appended bytes whose writes have not completed yet (queued or in flight).
    pending_bytes: usize,
    /// Appended bytes not yet taken into a round (the bytes of `pending`).
    queued_bytes: usize,
    /// End offset of the data taken into issued rounds.
    issued_offset: i64,
    /// End offset of the prefix whose writes all completed.
    written_offset: i64,
    /// Set by `stop` (a write, sync, roll or truncation failed): batches past
    /// `written_offset` will never be written, so readers no longer see them.
    failed: bool,
    synced_offset: i64,
    /// Target of the latest fdatasync issued (>= synced_offset while syncs are in flight).
    sync_issued_offset: i64,
    /// End of the prefix that is synced, covered by an issued fdatasync or written by
    /// issued O_DSYNC rounds. A round is made a dsync round only if it continues this
    /// prefix: on top of unsynced plain writes its O_DSYNC flush could not publish anything
    /// and a fdatasync would be needed anyway.
    durable_issued_offset: i64,
    /// fdatasync rounds issued, published in order, finished (published or failed).
    syncs_issued: u64,
    syncs_done: u64,
    syncs_finished: u64,
    sync_requested: i64,
    dirty: Vec<Rc<Segment>>,
    to_finalize: Vec<Rc<Segment>>,
    unsynced_since: Option<Instant>,
    /// Rounds issued, published (completed in order) and finished (published or failed).
    rounds_issued: u64,
    rounds_done: u64,
    rounds_finished: u64,
    /// A round's publication just woke appenders (Written ones, or Fsync ones of a dsync
    /// round): what they append in this scheduling pass is issued at once, without waiting
    /// for `round_min_bytes`. Cleared by the next round, or when the writer finds nothing.
    wake_pass: bool,
    /// The writer task runs.
    writing: bool,
    /// The syncer task runs.
    syncing: bool,
    rolling: bool,
    /// A `truncate_to` runs: appends, rolls, retention and other truncations wait.
    truncating: bool,
    /// Its cut is being applied (writer and syncer are idle and are not started).
    cutting: bool,
    cuts: CutHistory,
    stopped: Option<String>,
}

/// Truncations remembered for appenders still waiting across them (one that waited across
/// more is told its batches were cut).
const CUTS_KEPT: usize = 16;

/// Truncations done, and the new log ends of the latest ones, so that an appender woken
/// after a cut can tell whether its batches were cut away.
#[derive(Default)]
struct CutHistory {
    done: u64,
    /// (number of the truncation, from 1; the log end it left)
    recent: VecDeque<(u64, i64)>,
}

impl CutHistory {
    fn record(&mut self, new_end: i64) {
        self.done += 1;
        self.recent.push_back((self.done, new_end));
        if self.recent.len() > CUTS_KEPT {
            self.recent.pop_front();
        }
    }

    /// Whether batches ending at `end`, appended when `seen` truncations were done, were
    /// cut away by a later one (also when too many truncations passed to tell).
    fn cut_away(&self, seen: u64, end: i64) -> bool {
        if self.done == seen {
            return false;
        }
        match self.recent.front() {
            Some((first, _)) if *first <= seen + 1 => self
                .recent
                .iter()
                .filter(|(n, _)| *n > seen)
                .any(|(_, at)| *at < end),
            _ => true,
        }
    }
}

#[derive(Default)]
struct Notify {
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    fn notify_all(&self) {
        let ws = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in ws {
            w.wake();
        }
    }
    async fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if cond() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Tasks waiting for an offset (written or synced) to reach their end offset, in end
/// offset order: appends register right after their offsets were assigned, so pushes
/// are almost always at the back. Publishing an offset wakes exactly the waiters it
/// satisfies (not every waiter, as `Notify` does), so one round costs O(its appends).
#[derive(Default)]
struct OffsetWaiters {
    waiters: RefCell<VecDeque<(i64, Waker)>>,
}

impl OffsetWaiters {
    /// Wakes every waiter whose end offset is at or below `reached`; returns how many.
    fn wake_upto(&self, reached: i64) -> usize {
        let mut woken = 0;
        loop {
            let w = {
                let mut q = self.waiters.borrow_mut();
                match q.front() {
                    Some((end, _)) if *end <= reached => q.pop_front(),
                    _ => None,
                }
            };
            match w {
                Some((_, waker)) => {
                    waker.wake();
                    woken += 1;
                }
                None => break,
            }
        }
        woken
    }

    /// Wakes everyone (the partition stopped).
    fn wake_all(&self) {
        let q = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in q {
            w.wake();
        }
    }

    /// Waits until `done()`; `end` is the offset whose publication can make it true.
    async fn wait(&self, end: i64, mut done: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if done() {
                return Poll::Ready(());
            }
            let mut q = self.waiters.borrow_mut();
            let waker = cx.waker().clone();
            if q.back().is_none_or(|(e, _)| *e <= end) {
                q.push_back((end, waker));
            } else {
                let i = q.partition_point(|(e, _)| *e <= end);
                q.insert(i, (end, waker));
            }
            Poll::Pending
        })
        .await
    }
}

#[derive(Default)]
struct Counters {
    appends: Cell<u64>,
    duplicates: Cell<u64>,
    write_rounds: Cell<u64>,
    dsync_rounds: Cell<u64>,
    recycled_segments: Cell<u64>,
    fdatasyncs: Cell<u64>,
    head_writes: Cell<u64>,
}

/// A partition log, owned by one shard.
pub struct Partition {
    me: Weak<Partition>,
    store: Rc<Store>,
    dir: PathBuf,
    config: RefCell<LogConfig>,
    log: RefCell<LogState>,
    write: RefCell<WriteState>,
    progress: Rc<Notify>,
    /// Reused list of an append's validated batches (see `append`).
    validated_scratch: RefCell<Vec<batch::ValidatedBatch>>,
    /// Written appenders, woken when `written_offset` reaches them.
    written_waiters: OffsetWaiters,
    /// Fsync appenders and `flush`, woken when `synced_offset` reaches them.
    synced_waiters: OffsetWaiters,
    counters: Counters,
    /// A retired segment file kept for the next roll (`StoreConfig::recycle_segments`).
    spare: RefCell<Option<PathBuf>>,
    /// The log cleaner's first dirty offset (compacted logs; see `cleaner`).
    first_dirty: Cell<i64>,
    /// The log cleaner cleans only segments ending at or below this offset (the high
    /// watermark of a replicated partition; `set_cleanable_end`).
    cleanable_end: Cell<i64>,
    /// The earliest delete horizon of a tombstone the cleaner kept in this process
    /// (i64::MAX: none known): a pass is due once it has passed (see `cleaner`).
    next_delete_horizon: Cell<i64>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// fsyncs a directory. glommio's `Directory::open` resolves a relative path against fd -1
/// (not the working directory) and fails with EBADF, so the path is made absolute first.
async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let dir = &std::path::absolute(dir).map_err(|e| StorageError::io("resolve dir", dir, e))?;
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| StorageError::glommio("open dir", dir, e))?;
    d.sync()
        .await
        .map_err(|e| StorageError::glommio("fsync dir", dir, e))?;
    d.close()
        .await
        .map_err(|e| StorageError::glommio("close dir", dir, e))
}

/// File of a partition directory holding the log start offset that `delete_records_before`
/// raised (Kafka's log-start-offset checkpoint): offset (i64 LE), crc32c of it (u32 LE).
pub const LOG_START_FILE: &str = "log-start-offset.checkpoint";
const LOG_START_FILE_BYTES: usize = 12;

fn read_log_start(dir: &Path) -> Option<i64> {
    let b = std::fs::read(dir.join(LOG_START_FILE)).ok()?;
    if b.len() != LOG_START_FILE_BYTES {
        return None;
    }
    let off: [u8; 8] = b[..8].try_into().ok()?;
    let crc = u32::from_le_bytes(b[8..].try_into().ok()?);
    (crc32c::crc32c(&off) == crc).then(|| i64::from_le_bytes(off))
}

/// Writes the log start checkpoint durably (temp file, fdatasync, rename, fsync directory).
fn write_log_start(dir: &Path, offset: i64) -> Result<(), StorageError> {
    use std::io::Write;
    let tmp = dir.join("log-start-offset.checkpoint.tmp");
    let path = dir.join(LOG_START_FILE);
    let mut b = offset.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32c::crc32c(&offset.to_le_bytes()).to_le_bytes());
    let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(&b)
        .and_then(|()| f.sync_data())
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename", &tmp, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

impl Partition {
    /// Opens (recovering) or creates the log in `dir`. See the crate docs for recovery.
    pub(crate) async fn open(
        store: Rc<Store>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Rc<Partition>, StorageError> {
        // Absolute from here on: the parents walked below must never end in "" (the parent
        // of a relative one-component path), and glommio opens directories from fd -1.
        let dir =
            std::path::absolute(&dir).map_err(|e| StorageError::io("resolve dir", &dir, e))?;
        // Directories created here (the partition's, and any missing parents) get their
        // entries fsync'ed in their parents before the first append can be acknowledged:
        // an fdatasync'ed segment is worth nothing if its directory vanishes in a crash.
        let mut created = Vec::new();
        let mut probe = dir.as_path();
        while !probe.exists() {
            created.push(probe.to_path_buf());
            match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create dir", &dir, e))?;
        for d in &created {
            if let Some(parent) = d.parent() {
                sync_dir(parent).await?;
            }
        }
        // A merge of the cleaner that reached its commit point is completed first: the
        // segments it replaces must be gone before the listing below checks that each
        // segment starts where the previous one ends.
        if cleaner::complete_merges(&dir)? {
            sync_dir(&dir).await?;
        }
        let mut bases = Vec::new();
        let mut spare = None;
        let rd = std::fs::read_dir(&dir).map_err(|e| StorageError::io("read dir", &dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io("read dir", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == RECYCLED_SEGMENT_FILE {
                if store.config().recycle_segments {
                    spare = Some(entry.path());
                } else {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else if let Some(stem) = name.strip_suffix(".log") {
                if stem.len() == 20
                    && let Ok(base) = stem.parse::<i64>()
                {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp")
                || name.ends_with(cleaner::CLEANED_SUFFIX)
                || name.ends_with(cleaner::SWAP_SUFFIX)
            {
                // Half-written files: a small file's temp copy, or a cleaner's rewrite of a
                // segment not yet swapped in (the segment itself is intact).
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();

        let mut segments = BTreeMap::new();
        let mut prev_next: Option<i64> = None;
        let mut discard_rest = false;
        for (i, &base) in bases.iter().enumerate() {
            let seg = Rc::new(Segment::new(&dir, base, &store));
            if discard_rest || prev_next.is_some_and(|p| p != base) {
                log::warn!(
                    "{}: segment does not follow the previous one (expected base {:?}); removing it and later segments",
                    seg.path.display(),
                    prev_next
                );
                discard_rest = true;
                seg.forget_file();
                seg.remove_files()?;
                continue;
            }
            let is_last = i + 1 == bases.len();
            let file = seg.file().await?;
            let file_size = file
                .file_size()
                .await
                .map_err(|e| StorageError::glommio("stat", &seg.path, e))?;
            let mut loaded = false;
            if !is_last {
                if let Some((idx, meta)) =
                    SegmentIndex::read_files(&seg.index_path, &seg.time_index_path)
                    && meta.base_offset == base
                    && meta.covered_bytes == file_size
                    && meta.next_offset > base
                {
                    seg.set_recovered(file_size, meta.next_offset, file_size, None, idx);
                    loaded = true;
                }
                if !loaded {
                    log::info!(
                        "{}: index missing or stale, rebuilding it by a scan",
                        seg.path.display()
                    );
                }
            }
            if !loaded {
                let out = seg.scan(file_size, |_, _| {}).await?;
                let valid = out.valid_bytes;
                if valid < file_size {
                    log::warn!(
                        "{}: recovery cut {} bytes after byte {valid} (log ends at offset {}): {}",
                        seg.path.display(),
                        file_size - valid,
                        out.next_offset,
                        out.stop_reason.as_deref().unwrap_or("end of file")
                    );
                    file.truncate(valid)
                        .await
                        .map_err(|e| StorageError::glommio("truncate", &seg.path, e))?;
                }
                let tail = if is_last {
                    Some(seg.read_tail_block(valid).await?)
                } else {
                    None
                };
                seg.set_recovered(valid, out.next_offset, valid, tail, out.index);
                if !is_last && valid > 0 {
                    seg.sealed.set(true);
                    seg.finalize(&store).await?;
                }
            }
            drop(file);
            if !is_last {
                seg.sealed.set(true);
                seg.finalized.set(true);
                store.note_segment_sealed(&seg);
            }
            prev_next = Some(seg.next_offset.get());
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            // A spare beside no segment is left over from an earlier, half-deleted
            // incarnation of this directory: its batches may have any offsets, so it must
            // never be reused here.
            if let Some(spare) = spare.take() {
                log::warn!(
                    "{}: removing a recycled segment file found without any segment",
                    spare.display()
                );
                let _ = std::fs::remove_file(&spare);
            }
            let seg = Rc::new(Segment::create(&dir, 0, &store));
            seg.file().await?;
            sync_dir(&dir).await?;
            store.journal_dir_synced(&dir);
            segments.insert(0, seg);
        }
        // A discard above may have left a sealed segment last: it becomes the active one.
        if let Some(last) = segments.values().next_back()
            && last.sealed.get()
        {
            last.sealed.set(false);
            last.finalized.set(false);
            let tail = last.read_tail_block(last.size_bytes.get()).await?;
            let idx = last.index.borrow().clone();
            last.set_recovered(
                last.size_bytes.get(),
                last.next_offset.get(),
                last.size_bytes.get(),
                Some(tail),
                idx,
            );
        }
        let next_offset = segments
            .values()
            .next_back()
            .map(|s| s.next_offset.get())
            .unwrap_or(0);
        // The first segment's base, raised by a DeleteRecords checkpoint (never past the
        // recovered log end).
        let log_start = (*segments.keys().next().unwrap_or(&0))
            .max(read_log_start(&dir).unwrap_or(0).min(next_offset));
        let part = Rc::new_cyclic(|me| Partition {
            me: me.clone(),
            store: store.clone(),
            dir: dir.clone(),
            config: RefCell::new(config),
            log: RefCell::new(LogState {
                segments,
                log_start_offset: log_start,
                next_offset,
                cache: VecDeque::new(),
                cache_bytes: 0,
                producers: ProducerTable::default(),
                epochs: LeaderEpochs::default(),
            }),
            write: RefCell::new(WriteState {
                pending: VecDeque::new(),
                pending_bytes: 0,
                queued_bytes: 0,
                issued_offset: next_offset,
                written_offset: next_offset,
                failed: false,
                synced_offset: next_offset,
                sync_issued_offset: next_offset,
                durable_issued_offset: next_offset,
                syncs_issued: 0,
                syncs_done: 0,
                syncs_finished: 0,
                sync_requested: next_offset,
                dirty: Vec::new(),
                to_finalize: Vec::new(),
                unsynced_since: None,
                rounds_issued: 0,
                rounds_done: 0,
                rounds_finished: 0,
                wake_pass: false,
                writing: false,
                syncing: false,
                rolling: false,
                truncating: false,
                cutting: false,
                cuts: CutHistory::default(),
                stopped: None,
            }),
            progress: Rc::new(Notify::default()),
            validated_scratch: RefCell::new(Vec::new()),
            written_waiters: OffsetWaiters::default(),
            synced_waiters: OffsetWaiters::default(),
            counters: Counters::default(),
            spare: RefCell::new(spare),
            first_dirty: Cell::new(cleaner::read_checkpoint(&dir).unwrap_or(0).min(next_offset)),
            cleanable_end: Cell::new(i64::MAX),
            next_delete_horizon: Cell::new(i64::MAX),
        });
        part.recover_replay(true).await?;
        Ok(part)
    }

    /// Loads the producer snapshot if usable and replays the batch headers after it; with
    /// `with_epochs`, the same for the leader-epoch checkpoint (see `epochs`).
    async fn recover_replay(&self, with_epochs: bool) -> Result<(), StorageError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        // Epochs: complete below `covered`; batches from there on are scanned.
        let (mut epochs, epochs_from) = match LeaderEpochs::read_file(&self.dir) {
            Some((mut e, covered)) if with_epochs => {
                e.truncate_from(covered.min(end));
                e.truncate_start(start);
                (e, covered.clamp(start, end))
            }
            _ => (
                LeaderEpochs::default(),
                if with_epochs { start } else { end },
            ),
        };
        let snap = std::fs::read(self.dir.join(SNAPSHOT_FILE))
            .ok()
            .and_then(|b| ProducerTable::decode(&b));
        let (mut table, mut off) = match snap {
            Some((t, o)) if o >= start && o <= end => (t, o),
            Some((_, o)) => {
                log::info!(
                    "{}: producer snapshot at offset {o} outside [{start}, {end}], rebuilding",
                    self.dir.display()
                );
                (ProducerTable::default(), start)
            }
            None => (ProducerTable::default(), start),
        };
        let producers_from = off;
        off = off.min(epochs_from);
        while off < end {
            let out = self
                .read(off, SCAN_READ_BYTES)
                .await
                .map_err(|e| StorageError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("rebuilding producer state: {e}"),
                })?;
            let mut advanced = false;
            for c in &out.chunks {
                let mut p = 0;
                while p + BATCH_HEADER_BYTES <= c.len() {
                    let Ok(h) = batch::parse_header(&c[p..]) else {
                        break;
                    };
                    if h.last_offset() >= off {
                        // A batch the log start (DeleteRecords) cuts through still has
                        // records in the log: its producer state and leader epoch count,
                        // as they did before the restart (found by the power-loss test).
                        if h.last_offset() >= producers_from {
                            let control = if h.is_control() {
                                c.get(p..p + h.total_bytes()).and_then(batch::control_type)
                            } else {
                                None
                            };
                            table.record(&h, control);
                        }
                        if h.last_offset() >= epochs_from {
                            epochs.assign(h.partition_leader_epoch, h.base_offset.max(epochs_from));
                        }
                        off = h.last_offset() + 1;
                        advanced = true;
                    }
                    p += h.total_bytes();
                }
            }
            if !advanced {
                break;
            }
        }
        let mut log = self.log.borrow_mut();
        log.producers = table;
        if with_epochs {
            log.epochs = epochs;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.borrow().next_offset
    }

    /// Offset of the first batch of the oldest open transaction, if one is open: the last
    /// stable offset is the smaller of this and the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.log.borrow().producers.first_unstable_offset()
    }

    /// The producer's open transaction in this partition: the offset of its first batch.
    pub fn ongoing_txn(&self, producer_id: i64) -> Option<i64> {
        self.log.borrow().producers.ongoing_txn(producer_id)
    }

    /// KIP-890: the verification guard a transactional batch of this producer needs, or
    /// None when it already has an open transaction here (`ProducerTable::verification_guard`).
    pub fn txn_verification_guard(&self, producer_id: i64, epoch: i16) -> Option<u64> {
        self.log
            .borrow_mut()
            .producers
            .verification_guard(producer_id, epoch)
    }

    /// Forgets the producer's verification guard: its transaction ended with no batch here.
    pub fn clear_txn_verification(&self, producer_id: i64) {
        self.log
            .borrow_mut()
            .producers
            .clear_verification(producer_id);
    }

    /// The producers with state in this partition (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::producer::ActiveProducer> {
        self.log.borrow().producers.active()
    }

    /// Aborted transactions overlapping [from, to), for read_committed fetches.
    pub fn aborted_txns(&self, from: i64, to: i64) -> Vec<crate::producer::AbortedTxn> {
        let log = self.log.borrow();
        let from = from.max(log.log_start_offset);
        log.producers.aborted_between(from, to)
    }

    /// Single replica: equal to the log end offset (appended data is visible at once),
    /// except after a failed write (`readable_end`).
    pub fn high_watermark(&self) -> i64 {
        self.readable_end()
    }

    /// Where reads end: the log end, or on a partition a failed write stopped, the end of
    /// what was written. The batches after it have offsets but will never be written (a
    /// restart recovers the log to at most there) and their producers got an error, so no
    /// consumer may see them, as after a restart.
    fn readable_end(&self) -> i64 {
        let end = self.log.borrow().next_offset;
        let w = self.write.borrow();
        if w.failed {
            end.min(w.written_offset)
        } else {
            end
        }
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    fn check_running(&self) -> Result<(), StorageError> {
        match &self.write.borrow().stopped {
            Some(reason) => Err(StorageError::Stopped {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop(&self, reason: String) {
        {
            let mut w = self.write.borrow_mut();
            if w.stopped.is_none() {
                log::error!(
                    "partition {} stops accepting writes: {reason}",
                    self.dir.display()
                );
                w.stopped = Some(reason);
            }
            w.failed = true;
        }
        self.wake_everyone();
    }

    fn wake_everyone(&self) {
        self.written_waiters.wake_all();
        self.synced_waiters.wake_all();
        self.progress.notify_all();
    }

    fn segment_bytes_max(&self) -> u64 {
        // Positions in the index are u32; keep segments below 2 GiB like Kafka.
        self.config
            .borrow()
            .segment_bytes
            .clamp(SEGMENT_MIN_BYTES, i32::MAX as u64)
    }

    fn needs_roll(&self, len: u64, records: i64) -> bool {
        let log = self.log.borrow();
        let active = log.active();
        let size = active.size_bytes.get();
        if size == 0 {
            return false;
        }
        let seg_ms = self.config.borrow().segment_ms;
        size + len > self.segment_bytes_max()
            || active.created.elapsed() >= Duration::from_millis(seg_ms)
            || log.next_offset + records - active.base_offset > i64::from(i32::MAX)
    }

    /// Appends `batches` (one or more concatenated record batches v2). See the crate docs.
    /// Offsets are assigned, idempotent producers checked; partitionLeaderEpoch is stored
    /// as sent.
    pub async fn append(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<AppendInfo, AppendError> {
        self.append_inner(batches, durability, None, None).await
    }

    /// `append` as a replica: as the leader (epoch stamped into every batch) or as a
    /// follower (the leader's offsets kept). See `AppendMode`. Durability is the same as
    /// for `append`: a follower may append with `Durability::None` or `Written` and still
    /// have its log recovered to a prefix of what it appended after a crash.
    pub async fn append_with(
        &self,
        batches: Bytes,
        durability: Durability,
        mode: AppendMode,
    ) -> Result<AppendInfo, AppendError> {
        self.append_inner(batches, durability, Some(mode), None)
            .await
    }

    /// `append_with` for a client's batches under KIP-890: a transactional batch of a
    /// producer with no open transaction here must carry `guard`, the verification guard
    /// (`txn_verification_guard`) its coordinator confirmed, else
    /// `AppendError::TxnNotVerified` and nothing is stored.
    pub async fn append_verified(
        &self,
        batches: Bytes,
        durability: Durability,
        mode: AppendMode,
        guard: Option<u64>,
    ) -> Result<AppendInfo, AppendError> {
        self.append_inner(batches, durability, Some(mode), Some(guard))
            .await
    }

    async fn append_inner(
        &self,
        batches: Bytes,
        durability: Durability,
        mode: Option<AppendMode>,
        verify: Option<Option<u64>>,
    ) -> Result<AppendInfo, AppendError> {
        let batch_max = self.store.config().batch_max_bytes;
        if batches.len() > batch_max {
            return Err(AppendError::RecordListTooLarge {
                size_bytes: batches.len(),
                max_bytes: batch_max,
            });
        }
        self.check_running()?;
        let max_message = self.config.borrow().max_message_bytes as usize;
        // The batch list reuses one Vec per partition (taken out, so no borrow is held
        // across the waits below; concurrent appends past the first allocate their own).
        let mut validated = std::mem::take(&mut *self.validated_scratch.borrow_mut());
        validated.clear();
        if mode == Some(AppendMode::Follower) {
            batch::validate_each_stored(&batches, max_message, |v| validated.push(v))?;
        } else {
            batch::validate_each(&batches, max_message, |v| validated.push(v))?;
            if self.config.borrow().cleanup_compact
                && let Err(e) = self.check_keys(&batches, &validated)
            {
                *self.validated_scratch.borrow_mut() = validated;
                return Err(e);
            }
        }
        let len = batches.len();
        let records: i64 = validated
            .iter()
            .map(|v| i64::from(v.header.last_offset_delta) + 1)
            .sum();

        // Waits (backpressure, roll) happen before the state is touched.
        loop {
            self.check_running()?;
            let (pending, rolling) = {
                let w = self.write.borrow();
                (w.pending_bytes, w.rolling || w.truncating)
            };
            if pending > 0 && pending + len > PENDING_MAX_BYTES {
                self.kick();
                self.progress
                    .wait_until(|| {
                        let w = self.write.borrow();
                        w.pending_bytes == 0
                            || w.pending_bytes + len <= PENDING_MAX_BYTES
                            || w.stopped.is_some()
                    })
                    .await;
                continue;
            }
            if rolling {
                self.progress
                    .wait_until(|| {
                        let w = self.write.borrow();
                        !(w.rolling || w.truncating) || w.stopped.is_some()
                    })
                    .await;
                continue;
            }
            if self.needs_roll(len as u64, records) {
                self.roll().await?;
                continue;
            }
            break;
        }

        // A full disk refuses the append before anything of it is stored: the partition
        // keeps running and takes writes again once space is freed (a write failing with
        // ENOSPC instead would stop it, with offsets already handed out).
        self.store
            .admit_append(&self.dir, len as u64)
            .map_err(AppendError::Storage)?;
        // From here to the enqueue there is no .await: offsets, producer state, index, cache
        // and pending queue change together.
        let enqueued = self.enqueue(batches, &validated, durability, mode, verify);
        *self.validated_scratch.borrow_mut() = validated;
        let info = match enqueued? {
            Ok(info) => info,
            Err(dup) => return Ok(dup),
        };
        let end = info.last_offset + 1;
        // Truncations from here on may cut these batches away while we wait.
        let cuts_seen = self.write.borrow().cuts.done;
        let waiters = match durability {
            Durability::None => return Ok(info),
            Durability::Written => &self.written_waiters,
            Durability::Fsync => &self.synced_waiters,
        };
        let reached = |w: &WriteState| match durability {
            Durability::Written => w.written_offset >= end,
            _ => w.synced_offset >= end,
        };
        waiters
            .wait(end, || {
                let w = self.write.borrow();
                reached(&w) || w.stopped.is_some() || w.cuts.cut_away(cuts_seen, end)
            })
            .await;
        let (reached, cut) = {
            let w = self.write.borrow();
            (reached(&w), w.cuts.cut_away(cuts_seen, end))
        };
        if cut {
            return Err(AppendError::Truncated {
                log_end_offset: self.log_end_offset(),
            });
        }
        if !reached {
            self.check_running()?;
        }
        Ok(info)
    }

    /// The synchronous part of an append. Outer Err: refused; inner Err: duplicate answer.
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        batches: Bytes,
        validated: &[batch::ValidatedBatch],
        durability: Durability,
        mode: Option<AppendMode>,
        verify: Option<Option<u64>>,
    ) -> Result<Result<AppendInfo, AppendInfo>, AppendError> {
        let mut log = self.log.borrow_mut();
        let follower = mode == Some(AppendMode::Follower);
        if follower {
            // The leader's offsets are kept: they must continue this log exactly. Checked
            // here, in the synchronous section, against the log end as it is now.
            // A compacted leader log may have gaps (batches the cleaner removed): offsets
            // only have to grow.
            let mut expected = log.next_offset;
            for v in validated {
                if v.header.base_offset < expected {
                    return Err(AppendError::OffsetMismatch {
                        expected,
                        got: v.header.base_offset,
                    });
                }
                expected = v.header.last_offset() + 1;
            }
        }
        let stamp = match mode {
            Some(AppendMode::Leader { leader_epoch } | AppendMode::Marker { leader_epoch }) => {
                Some(leader_epoch)
            }
            _ => None,
        };
        let markers = matches!(mode, Some(AppendMode::Marker { .. }));
        if !follower && validated.iter().any(|v| v.header.is_control() != markers) {
            return Err(AppendError::InvalidRecord(if markers {
                "a marker append holds only control batches".into()
            } else {
                "clients may not write control batches".into()
            }));
        }
        // Producer checks: all batches, against the state as it will be after the earlier ones.
        // A follower records what its leader accepted, without checks.
        let mut scratch: Option<ProducerTable> = None;
        let mut dup: Option<(i64, i64)> = None;
        for (i, v) in validated.iter().enumerate().filter(|_| !follower) {
            let table = scratch.as_ref().unwrap_or(&log.producers);
            if let Some(guard) = verify
                && !table.txn_verified(&v.header, guard)
            {
                return Err(AppendError::TxnNotVerified {
                    producer_id: v.header.producer_id,
                });
            }
            match table.check(&v.header)? {
                SeqCheck::Append => {
                    if dup.is_some() {
                        return Err(AppendError::InvalidRecord(
                            "append mixes duplicate and new batches".into(),
                        ));
                    }
                    if validated.len() > 1 && v.header.has_producer_id() {
                        let t = scratch.get_or_insert_with(|| log.producers.clone());
                        let mut h = v.header;
                        h.base_offset = log.next_offset; // placeholder, only sequences matter here
                        t.record(&h, None);
                    }
                }
                SeqCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    if i > 0 && dup.is_none() {
                        return Err(AppendError::InvalidRecord(
                            "append mixes new and duplicate batches".into(),
                        ));
                    }
                    dup = Some((dup.map_or(base_offset, |d| d.0), last_offset));
                }
            }
        }
        if let Some((base_offset, last_offset)) = dup {
            self.counters
                .duplicates
                .set(self.counters.duplicates.get() + 1);
            return Ok(Err(AppendInfo {
                base_offset,
                last_offset,
                log_start_offset: log.log_start_offset,
                duplicate: true,
                log_append_time: -1,
            }));
        }

        // A follower's batches are stored as they are (no copy, even of a shared buffer).
        // Ok: made mutable to rewrite offsets (and epochs); Err: kept as it is.
        let mut data: Result<BytesMut, Bytes> = if follower {
            Err(batches)
        } else {
            Ok(match batches.try_into_mut() {
                Ok(m) => m,
                Err(b) => BytesMut::from(&b[..]),
            })
        };
        let seg = log.active().clone();
        let seg_pos = seg.size_bytes.get();
        let first = log.next_offset;
        let mut off = first;
        // LogAppendTime topics: one broker timestamp for the whole append, as Kafka (a
        // follower keeps the time its leader stamped).
        let log_append_time = if !follower && self.config.borrow().log_append_time {
            now_ms()
        } else {
            -1
        };
        {
            let mut index = seg.index.borrow_mut();
            for v in validated {
                let total = v.header.total_bytes();
                let mut h: BatchHeader = v.header;
                if let Ok(data) = data.as_mut() {
                    let b = &mut data[v.position..v.position + total];
                    batch::set_base_offset(b, off);
                    if let Some(epoch) = stamp {
                        batch::set_partition_leader_epoch(b, epoch);
                        h.partition_leader_epoch = epoch;
                    }
                    if log_append_time >= 0 {
                        batch::stamp_log_append_time(b, log_append_time);
                        h.attributes |= batch::TIMESTAMP_TYPE_LOG_APPEND_TIME;
                        h.max_timestamp = log_append_time;
                    }
                } else {
                    assert!(h.base_offset >= off, "follower offsets are checked above");
                    off = h.base_offset;
                }
                h.base_offset = off;
                let control = if h.is_control() {
                    let bytes: &[u8] = match &data {
                        Ok(d) => d,
                        Err(b) => b,
                    };
                    bytes
                        .get(v.position..v.position + total)
                        .and_then(batch::control_type)
                } else {
                    None
                };
                index.on_batch(
                    (off - seg.base_offset) as u32,
                    seg_pos + v.position as u64,
                    total as u64,
                    h.max_timestamp,
                );
                log.producers.record(&h, control);
                log.epochs.assign(h.partition_leader_epoch, h.base_offset);
                off = h.last_offset() + 1;
            }
        }
        assert!(off > first, "offsets must grow");
        let data = match data {
            Ok(d) => d.freeze(),
            Err(b) => b,
        };
        let len = data.len();
        seg.size_bytes.set(seg_pos + len as u64);
        seg.next_offset.set(off);
        log.next_offset = off;
        log.cache.push_back(CacheEntry {
            base_offset: first,
            next_offset: off,
            data: data.clone(),
        });
        log.cache_bytes += len;
        let log_start = log.log_start_offset;
        drop(log);
        self.store.cache_added(len);
        {
            let mut w = self.write.borrow_mut();
            w.pending.push_back(Pending {
                segment: seg,
                data,
                next_offset: off,
            });
            w.pending_bytes += len;
            w.queued_bytes += len;
            w.unsynced_since.get_or_insert_with(Instant::now);
            let flush_messages = self.config.borrow().flush_messages;
            if durability == Durability::Fsync || (off - w.synced_offset) as u64 >= flush_messages {
                w.sync_requested = w.sync_requested.max(off);
            }
        }
        self.counters.appends.set(self.counters.appends.get() + 1);
        self.kick();
        self.store.enforce_cache_limit();
        Ok(Ok(AppendInfo {
            base_offset: first,
            last_offset: off - 1,
            log_start_offset: log_start,
            duplicate: false,
            log_append_time,
        }))
    }

    /// Journals a producer snapshot just written (it fsyncs the directory too) for
    /// power-loss tests; a no-op otherwise.
    fn journal_snapshot_written(&self) {
        self.store
            .journal_renamed(&self.dir.join(crate::producer::SNAPSHOT_FILE), true);
        self.store.journal_dir_synced(&self.dir);
    }

    /// Starts the new active segment at the log end offset.
    async fn roll(&self) -> Result<(), StorageError> {
        self.write.borrow_mut().rolling = true;
        let base = self.log_end_offset();
        let seg = Rc::new(Segment::create(&self.dir, base, &self.store));
        if let Some(bytes) = self.take_spare(&seg.path) {
            seg.adopt_recycled(bytes);
            self.counters
                .recycled_segments
                .set(self.counters.recycled_segments.get() + 1);
        }
        let res = async {
            seg.file().await?;
            // The new file's directory entry must be durable before data in it is acked.
            sync_dir(&self.dir).await?;
            self.store.journal_dir_synced(&self.dir);
            Ok(())
        }
        .await;
        self.write.borrow_mut().rolling = false;
        self.progress.notify_all();
        if let Err(e) = res {
            self.stop(format!("segment roll failed: {e}"));
            return Err(e);
        }
        {
            let mut log = self.log.borrow_mut();
            assert_eq!(log.next_offset, base, "appends happened during a roll");
            let old = log.active().clone();
            old.sealed.set(true);
            old.drop_dsync_file();
            self.store.note_segment_sealed(&old);
            self.write.borrow_mut().to_finalize.push(old);
            log.segments.insert(base, seg);
            // Before the producer snapshot: its directory fsync makes this rename durable.
            if let Err(e) = log.epochs.write_file(&self.dir, base) {
                log::warn!(
                    "{}: leader-epoch checkpoint not written ({e}); recovery will scan more",
                    self.dir.display()
                );
            } else {
                self.store
                    .journal_renamed(&self.dir.join(crate::epochs::EPOCHS_FILE), true);
            }
            let log_start = log.log_start_offset;
            log.producers.trim_aborted(log_start);
            if let Err(e) = log.producers.write_snapshot(&self.dir, base) {
                log::warn!(
                    "{}: producer snapshot not written ({e}); recovery will rebuild it",
                    self.dir.display()
                );
            } else {
                self.journal_snapshot_written();
            }
        }
        log::info!("{}: rolled to segment {base}", self.dir.display());
        self.kick();
        Ok(())
    }

    /// Starts the writer task if data is pending and it is not running, and the syncer task
    /// if a sync or a finalize is due and it is not running.
    fn kick(&self) {
        let (write, sync) = {
            let mut w = self.write.borrow_mut();
            if w.stopped.is_some() || w.cutting {
                return;
            }
            let write = !w.writing && !w.pending.is_empty();
            let sync = !w.syncing && (self.sync_wanted(&w) || Self::finalize_ready(&w));
            w.writing |= write;
            w.syncing |= sync;
            if !write && w.writing && w.queued_bytes >= self.store.config().round_min_bytes {
                // The running writer waits for enough queued data: tell it.
                drop(w);
                self.progress.notify_all();
            }
            (write, sync)
        };
        let Some(me) = self.me.upgrade() else {
            let mut w = self.write.borrow_mut();
            w.writing &= !write;
            w.syncing &= !sync;
            return;
        };
        if write {
            let me = me.clone();
            glommio::spawn_local(async move { me.write_loop().await }).detach();
        }
        if sync {
            glommio::spawn_local(async move { me.sync_loop().await }).detach();
        }
    }

    /// Some written data is not synced and an appender (Fsync, flush, flush.ms) asked for a
    /// sync beyond the synced offset, or flush.messages is reached. The sync covers what is
    /// written when it starts; appends written meanwhile share the next one.
    fn sync_wanted(&self, w: &WriteState) -> bool {
        if w.written_offset <= w.sync_issued_offset {
            return false;
        }
        let flush_messages = self.config.borrow().flush_messages;
        w.sync_requested > w.sync_issued_offset
            || (w.written_offset - w.sync_issued_offset) as u64 >= flush_messages
    }

    fn finalize_ready(w: &WriteState) -> bool {
        w.to_finalize
            .iter()
            .any(|s| s.written_bytes.get() == s.size_bytes.get())
    }

    /// Whether the writer should issue a round now. With no round in flight, at once
    /// (latency). With rounds in flight (and below `inflight_writes_max` of them), once
    /// `round_min_bytes` are queued, or in the scheduling pass in which a publication woke
    /// appenders (`wake_pass`): what those appenders append then goes out together
    /// instead of waiting a whole write latency for more. On this class of virtio disk a
    /// write costs ~100+ us of its own whatever its size, so many small writes in flight
    /// are slower than a few large ones (measured: 62 KiB writes, 8 in flight, 1.1 ms each
    /// = 450 MB/s); one round per publication keeps rounds large under load.
    fn round_due(&self, w: &WriteState) -> bool {
        let inflight = w.rounds_issued - w.rounds_finished;
        let config = self.store.config();
        let max = config.inflight_writes_max.max(1) as u64;
        w.queued_bytes > 0
            && (inflight == 0
                || (inflight < max && (w.queued_bytes >= config.round_min_bytes || w.wake_pass)))
    }

    /// The writer: forms rounds of pending data and issues their writes without waiting
    /// for earlier rounds to complete, up to `inflight_writes_max` rounds in flight. Each
    /// round's completion is awaited by its own task (`complete_round`), in round order.
    async fn write_loop(self: Rc<Self>) {
        loop {
            self.progress
                .wait_until(|| {
                    let w = self.write.borrow();
                    w.stopped.is_some() || w.queued_bytes == 0 || self.round_due(&w)
                })
                .await;
            if self.write.borrow().wake_pass {
                // Let every appender woken by the publication run first and append, so
                // their data shares this round.
                futures_lite::future::yield_now().await;
            }
            match self.issue_round().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.stop(e.to_string());
                    break;
                }
            }
        }
        self.write.borrow_mut().writing = false;
        self.progress.notify_all();
        // Appends that arrived after the last pending check kicked nothing (writing was
        // still set): look again.
        self.kick();
    }

    /// Takes up to `round_max_bytes` of pending data, forms its aligned writes and
    /// issues them. False if there was nothing to write (or the partition stopped).
    async fn issue_round(self: &Rc<Self>) -> Result<bool, StorageError> {
        let (runs, round_start, round_next, round_bytes, dsync, appends) = {
            let mut w = self.write.borrow_mut();
            if w.stopped.is_some() || w.pending.is_empty() {
                // Nobody appended in the pass that set it: it must not let a later,
                // unrelated append skip `round_min_bytes`.
                w.wake_pass = false;
                return Ok(false);
            }
            let start = w.issued_offset;
            // Somebody waits for a sync of data in this round (or beyond it), and everything
            // before it is or will be durable without another fdatasync.
            let dsync = self.store.config().sync_method == SyncMethod::DsyncWrites
                && w.sync_requested > start
                && w.durable_issued_offset >= start;
            let round_max_bytes = self.store.config().round_max_bytes;
            let mut runs: Vec<(Rc<Segment>, Vec<Bytes>)> = Vec::new();
            let mut bytes = 0usize;
            let mut appends = 0u64;
            let mut next = w.issued_offset;
            while let Some(front) = w.pending.front() {
                if bytes > 0 && bytes + front.data.len() > round_max_bytes {
                    break;
                }
                let Some(p) = w.pending.pop_front() else {
                    break;
                };
                bytes += p.data.len();
                appends += 1;
                assert!(p.next_offset > next, "pending offsets must grow");
                next = p.next_offset;
                match runs.last_mut() {
                    Some((s, v)) if Rc::ptr_eq(s, &p.segment) => v.push(p.data),
                    _ => runs.push((p.segment, vec![p.data])),
                }
            }
            w.issued_offset = next;
            w.queued_bytes -= bytes;
            w.wake_pass = false;
            if dsync {
                w.durable_issued_offset = next;
            }
            (runs, start, next, bytes, dsync, appends)
        };
        // Growing the file may wait; the taken data is not written by anybody else
        // meanwhile (one writer task), and earlier rounds continue in flight.
        let mut files = Vec::with_capacity(runs.len());
        for (seg, items) in &runs {
            let file = seg.file().await?;
            let data_len: u64 = items.iter().map(|b| b.len() as u64).sum();
            let needed = align_up(seg.issued_bytes.get() + data_len);
            seg.ensure_allocated(&self.store, &file, needed, self.segment_bytes_max())
                .await?;
            // Data goes through the O_DSYNC descriptor in a dsync round; growth (zeroing
            // ahead) always through the plain one.
            let data_file = if dsync {
                seg.dsync_file().await?
            } else {
                file.clone()
            };
            files.push((file, data_file));
        }
        let seq = {
            let mut w = self.write.borrow_mut();
            if w.stopped.is_some() {
                return Ok(false);
            }
            w.rounds_issued += 1;
            w.rounds_issued
        };
        let mut round = RoundInFlight {
            seq,
            runs: Vec::with_capacity(runs.len()),
            body: Vec::new(),
            start_offset: round_start,
            next_offset: round_next,
            bytes: round_bytes,
            dsync,
            appends,
            issued_at: Instant::now(),
        };
        for ((seg, items), (file, data_file)) in runs.iter().zip(files) {
            let writes = seg.prepare_run(&file, items);
            let n = writes.body.len();
            for (i, (pos, buf)) in writes.body.into_iter().enumerate() {
                let done = (i + 1 == n && !writes.last_is_head).then(|| writes.last_done.clone());
                round
                    .body
                    .push(self.spawn_write(&data_file, &seg.path, buf, pos, done, dsync));
            }
            seg.grow_ahead(&self.store, &file, self.segment_bytes_max());
            round.runs.push(RunInFlight {
                segment: seg.clone(),
                file: data_file,
                head: writes.head.map(|(pos, buf)| HeadWrite {
                    pos,
                    buf,
                    after: writes.head_after.unwrap_or_default(),
                    done: writes.last_is_head.then_some(writes.last_done),
                }),
                end: writes.end,
            });
        }
        let me = self.clone();
        glommio::spawn_local(async move { me.complete_round(round).await }).detach();
        Ok(true)
    }

    /// Issues one aligned write; if `done` is given, sets it and wakes waiters when the
    /// write completes (a later write of the same block waits for it).
    fn spawn_write(
        &self,
        file: &Rc<glommio::io::DmaFile>,
        path: &Path,
        buf: glommio::io::DmaBuffer,
        pos: u64,
        done: Option<Rc<Cell<bool>>>,
        dsync: bool,
    ) -> glommio::Task<Result<(), StorageError>> {
        let t = self
            .store
            .spawn_write(file.clone(), path.to_path_buf(), buf, pos, dsync);
        let Some(done) = done else {
            return t;
        };
        let progress = self.progress.clone();
        glommio::spawn_local(async move {
            let r = t.await;
            done.set(true);
            progress.notify_all();
            r
        })
    }

    /// Waits for one round: issues each held-back shared block once the earlier write of
    /// that block completed, awaits all its writes, then publishes it (written offset, segments'
    /// written bytes, dirty list) and wakes Written appenders and the syncer. Rounds are
    /// published strictly in order, so `written_offset` always ends a fully written prefix.
    async fn complete_round(self: Rc<Self>, round: RoundInFlight) {
        let RoundInFlight {
            seq,
            runs,
            body,
            start_offset,
            next_offset,
            bytes,
            dsync,
            appends,
            issued_at,
        } = round;
        let mut writes = body;
        let mut runs = runs;
        for run in &mut runs {
            let Some(head) = run.head.take() else {
                continue;
            };
            self.progress
                .wait_until(|| head.after.get() || self.write.borrow().stopped.is_some())
                .await;
            if self.write.borrow().stopped.is_some() {
                break;
            }
            assert!(
                head.after.get(),
                "shared block rewritten while its earlier write is in flight"
            );
            self.counters
                .head_writes
                .set(self.counters.head_writes.get() + 1);
            writes.push(self.spawn_write(
                &run.file,
                &run.segment.path,
                head.buf,
                head.pos,
                head.done,
                dsync,
            ));
        }
        // Every issued write is awaited, even after a failure, so that none is still in
        // flight when the partition reports itself idle.
        let mut result = Ok(());
        for t in writes {
            if let Err(e) = t.await {
                result = Err(e);
            }
        }
        match result {
            Ok(()) => {
                let m = self.store.metrics();
                let us = issued_at.elapsed().as_micros() as u64;
                if dsync {
                    m.dsync_round_us.record(us);
                } else {
                    m.write_round_us.record(us);
                }
                m.round_appends.record(appends);
                m.round_bytes.record(bytes as u64);
            }
            Err(e) => self.stop(e.to_string()),
        }
        // Publish in round order.
        self.progress
            .wait_until(|| {
                let w = self.write.borrow();
                w.rounds_done + 1 == seq || w.stopped.is_some()
            })
            .await;
        if self.write.borrow().stopped.is_some() {
            // This or an earlier round failed (or the partition was stopped): nothing more
            // is published.
            self.write.borrow_mut().rounds_finished += 1;
            self.progress.notify_all();
            return;
        }
        {
            let mut w = self.write.borrow_mut();
            w.rounds_finished += 1;
            assert_eq!(w.rounds_done + 1, seq, "rounds complete in order");
            assert!(next_offset > w.written_offset, "written offset must grow");
            for run in &runs {
                assert!(run.end >= run.segment.written_bytes.get());
                run.segment.written_bytes.set(run.end);
                if !w.dirty.iter().any(|d| Rc::ptr_eq(d, &run.segment)) {
                    w.dirty.push(run.segment.clone());
                }
            }
            w.rounds_done = seq;
            w.written_offset = next_offset;
            w.pending_bytes -= bytes;
        }
        self.counters
            .write_rounds
            .set(self.counters.write_rounds.get() + 1);
        // A dsync round's writes are durable; on top of a synced prefix it is a group
        // commit of its own (no fdatasync). Otherwise the syncer covers it as usual.
        let synced = dsync && {
            let end = self.log_end_offset();
            let mut w = self.write.borrow_mut();
            if w.synced_offset >= start_offset {
                w.synced_offset = next_offset;
                w.sync_issued_offset = w.sync_issued_offset.max(next_offset);
                w.unsynced_since = (next_offset != end).then(Instant::now);
                true
            } else {
                false
            }
        };
        if synced {
            self.counters
                .dsync_rounds
                .set(self.counters.dsync_rounds.get() + 1);
            // Unlike after a fdatasync (see complete_sync), the woken Fsync appenders
            // form the next round together: one O_DSYNC write per group commit. Measured
            // at 8 appenders: 179-196 MB/s merged against 122-131 in two alternating
            // groups and 139-149 with fdatasync, same session.
            if self.synced_waiters.wake_upto(next_offset) > 0 {
                self.write.borrow_mut().wake_pass = true;
            }
        }
        if self.written_waiters.wake_upto(next_offset) > 0 {
            self.write.borrow_mut().wake_pass = true;
        }
        self.progress.notify_all();
        self.store.enforce_cache_limit();
        self.kick();
    }

    /// The syncer: finalizes sealed segments whose data is all written, and issues a
    /// fdatasync whenever `sync_wanted` (published data beyond the last sync's target that
    /// someone asked to sync), up to SYNCS_INFLIGHT_MAX in flight; `complete_sync` publishes
    /// them. Group commit pipelined with the writer, which keeps issuing rounds meanwhile.
    async fn sync_loop(self: Rc<Self>) {
        loop {
            self.progress
                .wait_until(|| {
                    let w = self.write.borrow();
                    w.stopped.is_some() || w.syncs_issued - w.syncs_finished < SYNCS_INFLIGHT_MAX
                })
                .await;
            if let Err(e) = self.sync_round().await {
                self.stop(e.to_string());
                break;
            }
            let w = self.write.borrow();
            if w.stopped.is_some() || !(self.sync_wanted(&w) || Self::finalize_ready(&w)) {
                break;
            }
        }
        self.write.borrow_mut().syncing = false;
        self.progress.notify_all();
    }

    async fn sync_round(&self) -> Result<(), StorageError> {
        let ready: Vec<Rc<Segment>> = {
            let w = self.write.borrow();
            w.to_finalize
                .iter()
                .filter(|s| s.written_bytes.get() == s.size_bytes.get())
                .cloned()
                .collect()
        };
        for seg in ready {
            seg.finalize(&self.store).await?;
            self.counters
                .fdatasyncs
                .set(self.counters.fdatasyncs.get() + 1);
            let mut w = self.write.borrow_mut();
            w.to_finalize.retain(|s| !Rc::ptr_eq(s, &seg));
            w.dirty.retain(|s| !Rc::ptr_eq(s, &seg));
        }
        let sync = {
            let w = self.write.borrow();
            self.sync_wanted(&w)
        };
        if sync {
            // Everything below `target` completed its writes before this point, so the
            // fdatasyncs issued below (after it) cover it.
            let (dirty, target, seq) = {
                let mut w = self.write.borrow_mut();
                w.syncs_issued += 1;
                w.sync_issued_offset = w.written_offset;
                w.durable_issued_offset = w.durable_issued_offset.max(w.written_offset);
                (
                    std::mem::take(&mut w.dirty),
                    w.written_offset,
                    w.syncs_issued,
                )
            };
            let me = self.me.upgrade();
            if let Some(me) = me {
                glommio::spawn_local(async move { me.complete_sync(seq, dirty, target).await })
                    .detach();
            } else {
                self.write.borrow_mut().syncs_finished += 1;
            }
        }
        Ok(())
    }

    /// One group commit: fdatasync of every segment dirty when it was issued, then, in
    /// issue order (an earlier sync may have taken a segment this one did not), publish
    /// `target` as synced and wake the Fsync appenders below it.
    async fn complete_sync(self: Rc<Self>, seq: u64, dirty: Vec<Rc<Segment>>, target: i64) {
        let mut result = Ok(());
        for seg in &dirty {
            if let Err(e) = seg.sync(&self.store).await {
                result = Err(e);
                break;
            }
            self.counters
                .fdatasyncs
                .set(self.counters.fdatasyncs.get() + 1);
        }
        if let Err(e) = result {
            self.stop(e.to_string());
        }
        self.progress
            .wait_until(|| {
                let w = self.write.borrow();
                w.syncs_done + 1 == seq || w.stopped.is_some()
            })
            .await;
        let end = self.log_end_offset();
        let published = {
            let mut w = self.write.borrow_mut();
            w.syncs_finished += 1;
            if w.stopped.is_none() {
                w.syncs_done = seq;
                // A dsync round may have published beyond this sync's target already.
                if target > w.synced_offset {
                    w.synced_offset = target;
                    w.unsynced_since = if target == end {
                        None
                    } else {
                        Some(Instant::now())
                    };
                }
                true
            } else {
                false
            }
        };
        // No `wake_pass` here: Fsync appenders woken by a sync queue for the next round in
        // the usual way, so two groups of appenders alternate (one group's write overlaps
        // the other's fdatasync). Merging them into one round per sync measured ~2x slower
        // for 8 appenders (write and fdatasync serialized).
        if published {
            self.synced_waiters.wake_upto(target);
        }
        self.progress.notify_all();
        self.kick();
    }

    /// Evicts up to `want` bytes of written batches from the front of this partition's cache.
    pub(crate) fn evict_cache(&self, want: usize) -> usize {
        let written = self.write.borrow().written_offset;
        let mut log = self.log.borrow_mut();
        let mut freed = 0;
        while freed < want {
            match log.cache.front() {
                Some(e) if e.next_offset <= written => {
                    freed += e.data.len();
                    log.cache.pop_front();
                }
                _ => break,
            }
        }
        log.cache_bytes -= freed;
        drop(log);
        if freed > 0 {
            self.store.cache_removed(freed);
        }
        freed
    }

    /// Like `read`, but returns only whole batches whose last offset is below `max_offset`
    /// (the high watermark a consumer may see): empty when the batch containing `offset`
    /// ends at or beyond it. `offset` is checked against the log as in `read` (a fetch
    /// between the bound and the log end is empty, not out of range). `high_watermark` of
    /// the output is `max_offset` (at most the log end).
    pub async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadOutput, ReadError> {
        let start = self.log.borrow().log_start_offset;
        let end = self.readable_end();
        let bound = max_offset.min(end);
        if offset >= start && offset <= end && offset >= bound {
            return Ok(ReadOutput {
                chunks: Vec::new(),
                high_watermark: bound,
                log_start_offset: start,
            });
        }
        let mut out = self.read_to_log_end(offset, max_bytes).await?;
        // (index of the first chunk reaching the bound, its part below the bound)
        let mut cut: Option<(usize, Option<Chunk>)> = None;
        for (i, c) in out.chunks.iter().enumerate() {
            // Chunks hold whole batches (one each, as `read` returns them).
            let mut p = 0;
            while p < c.len() {
                let h = batch::parse_header(&c[p..]).map_err(|e| ReadError::Corrupt {
                    offset,
                    reason: e.to_string(),
                })?;
                if h.last_offset() >= bound {
                    break;
                }
                p += h.total_bytes();
            }
            if p < c.len() {
                let part = match c {
                    _ if p == 0 => None,
                    Chunk::Cached(b) => Some(Chunk::Cached(b.slice(..p))),
                    Chunk::Disk(r) => ReadResult::slice(r, 0, p).map(Chunk::Disk),
                };
                cut = Some((i, part));
                break;
            }
        }
        if let Some((i, part)) = cut {
            out.chunks.truncate(i);
            out.chunks.extend(part);
        }
        out.high_watermark = bound.min(out.high_watermark);
        Ok(out)
    }

    /// Reads whole batches from the batch containing `offset`, up to `max_bytes` (at least
    /// one batch when `offset` < log end).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutput, ReadError> {
        let end = self.readable_end();
        if end < self.log.borrow().next_offset {
            return self.read_bounded(offset, max_bytes, end).await;
        }
        self.read_to_log_end(offset, max_bytes).await
    }

    /// `read` up to the log end, batches past `readable_end` included.
    async fn read_to_log_end(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadOutput, ReadError> {
        let (start, end) = {
            let log = self.log.borrow();
            (log.log_start_offset, log.next_offset)
        };
        let out = |chunks| ReadOutput {
            chunks,
            high_watermark: end,
            log_start_offset: start,
        };
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset == end {
            return Ok(out(Vec::new()));
        }
        let count = |cache: bool, chunks: &[Chunk]| {
            let bytes = chunks.iter().map(Chunk::len).sum();
            self.store.metrics().read(cache, bytes);
        };
        if let Some(chunks) = self.read_cache(offset, max_bytes) {
            count(true, &chunks);
            return Ok(out(chunks));
        }
        let mut seg = {
            let log = self.log.borrow();
            log.segments
                .range(..=offset)
                .next_back()
                .map(|(_, s)| s.clone())
        };
        while let Some(s) = seg {
            let chunks = self.read_disk(&s, offset, max_bytes).await?;
            if !chunks.is_empty() {
                count(false, &chunks);
                return Ok(out(chunks));
            }
            // The offset is past this segment's written data (or in a gap a cleaner left at
            // its end): the next batch is in a later segment, whose batches all come after.
            seg = {
                let log = self.log.borrow();
                log.segments
                    .range(s.base_offset + 1..)
                    .next()
                    .map(|(_, s)| s.clone())
            };
        }
        if let Some(chunks) = self.read_cache(offset, max_bytes) {
            count(true, &chunks);
            return Ok(out(chunks));
        }
        // No batch at or after `offset` below the log end: it falls in a gap at the end of
        // the log (a truncation into a gap of a cleaned segment ends the log above its last
        // batch until the next append). There is nothing to read.
        Ok(out(Vec::new()))
    }

    fn read_cache(&self, offset: i64, max_bytes: usize) -> Option<Vec<Chunk>> {
        let log = self.log.borrow();
        let front = log.cache.front()?;
        if offset < front.base_offset {
            return None;
        }
        let i = log.cache.partition_point(|e| e.next_offset <= offset);
        let mut chunks = Vec::new();
        let mut total = 0usize;
        for e in log.cache.iter().skip(i) {
            // An entry may hold several batches: start at the one containing `offset`.
            let mut p = 0usize;
            while p < e.data.len() {
                let Ok(h) = batch::parse_header(&e.data[p..]) else {
                    break;
                };
                let n = h.total_bytes();
                if h.last_offset() >= offset {
                    if !chunks.is_empty() && total + n > max_bytes {
                        return Some(chunks);
                    }
                    chunks.push(Chunk::Cached(e.data.slice(p..p + n)));
                    total += n;
                    if total >= max_bytes {
                        return Some(chunks);
                    }
                }
                p += n;
            }
        }
        Some(chunks)
    }

    async fn read_disk(
        &self,
        seg: &Rc<Segment>,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Chunk>, ReadError> {
        let limit = seg.written_bytes.get();
        let rel = (offset - seg.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut pos = seg.index.borrow().lookup_offset(rel);
        if pos >= limit {
            return Ok(Vec::new());
        }
        let file = seg.file().await?;
        let want =
            max_bytes.min(READ_MAX_BYTES) as u64 + INDEX_INTERVAL_BYTES + BATCH_HEADER_BYTES as u64;
        let mut buf_start = align_down(pos);
        let mut buf = read_aligned(
            &file,
            &seg.path,
            buf_start,
            (align_up(limit.min(pos + want)) - buf_start) as usize,
        )
        .await?;
        let mut chunks = Vec::new();
        let mut total = 0usize;
        let mut expected: Option<i64> = None;
        let corrupt = |pos: u64, reason: String| {
            log::error!(
                "{}: refusing to serve corrupt batch at byte {pos} (fetch offset {offset}): {reason}",
                seg.path.display()
            );
            ReadError::Corrupt {
                offset,
                reason: format!("{}: byte {pos}: {reason}", seg.path.display()),
            }
        };
        while pos < limit {
            if pos + BATCH_HEADER_BYTES as u64 > limit {
                return Err(corrupt(
                    pos,
                    "batch header crosses the end of written data".into(),
                ));
            }
            for need in [BATCH_HEADER_BYTES as u64, 0] {
                let need = if need == 0 {
                    let rel = (pos - buf_start) as usize;
                    match batch::parse_header(&buf[rel..]) {
                        Ok(h) => h.total_bytes() as u64,
                        Err(e) => {
                            if chunks.is_empty() {
                                return Err(corrupt(pos, e.to_string()));
                            }
                            return Ok(chunks);
                        }
                    }
                } else {
                    need
                };
                if pos + need > limit {
                    if chunks.is_empty() {
                        return Err(corrupt(
                            pos,
                            format!("batch of {need} bytes crosses the end of written data"),
                        ));
                    }
                    return Ok(chunks);
                }
                if pos + need > buf_start + buf.len() as u64 {
                    if !chunks.is_empty() {
                        return Ok(chunks);
                    }
                    buf_start = align_down(pos);
                    let len = align_up(limit.min(pos + need.max(want))) - buf_start;
                    buf = read_aligned(&file, &seg.path, buf_start, len as usize).await?;
                    if pos + need > buf_start + buf.len() as u64 {
                        return Err(corrupt(pos, "short read".into()));
                    }
                }
            }
            let rel = (pos - buf_start) as usize;
            // Batches before the requested offset are skipped by their header alone: their
            // CRC is checked only when they are served, so damage there does not hide the
            // batches after it.
            // Offsets grow from batch to batch, with gaps in a compacted (cleaned) segment.
            if let Ok(h) = batch::parse_header(&buf[rel..])
                && h.last_offset() < offset
                && expected.is_none_or(|e| e <= h.base_offset)
            {
                expected = Some(h.last_offset() + 1);
                pos += h.total_bytes() as u64;
                continue;
            }
            let h = match batch::check_one(&buf[rel..], pos as usize) {
                Ok(h) => h,
                Err(e) => {
                    if chunks.is_empty() {
                        return Err(corrupt(pos, e.to_string()));
                    }
                    return Ok(chunks);
                }
            };
            let n = h.total_bytes();
            if let Some(e) = expected
                && h.base_offset < e
            {
                let reason = format!("base offset {} below {e}", h.base_offset);
                if chunks.is_empty() {
                    return Err(corrupt(pos, reason));
                }
                return Ok(chunks);
            }
            if h.last_offset() >= offset {
                if !chunks.is_empty() && total + n > max_bytes {
                    break;
                }
                let Some(slice) = ReadResult::slice(&buf, rel, n) else {
                    return Err(corrupt(pos, "slice outside the read buffer".into()));
                };
                chunks.push(Chunk::Disk(slice));
                total += n;
                if total >= max_bytes {
                    break;
                }
            }
            expected = Some(h.last_offset() + 1);
            pos += n as u64;
        }
        Ok(chunks)
    }

    /// Largest batch maxTimestamp in the log (-1 when it holds none): the target of
    /// ListOffsets' MAX_TIMESTAMP (-3).
    pub fn max_timestamp(&self) -> i64 {
        self.log
            .borrow()
            .segments
            .values()
            .map(|s| s.index.borrow().max_timestamp)
            .max()
            .unwrap_or(-1)
    }

    /// First record whose timestamp is >= `ts`: (its offset, its timestamp), or None. See
    /// [`Partition::offset_for_timestamp_with`]; compressed batches are answered at batch
    /// granularity (base offset, maxTimestamp) since this crate has no codecs.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, ReadError> {
        self.offset_for_timestamp_with(ts, None).await
    }

    /// First record whose timestamp is >= `ts` and whose offset is >= the log start offset:
    /// (its offset, its timestamp), or None (Kafka's `LogSegment.findOffsetByTimestamp`).
    /// Batches whose maxTimestamp is below `ts` are skipped by header; inside the first batch
    /// that reaches `ts` the records are walked (a batch whose records all fall short, as a
    /// producer may claim a maxTimestamp its records lack, passes to the next). The records of
    /// a compressed batch go through `decompress(codec, compressed records)`; without it such
    /// a batch answers (base offset, maxTimestamp).
    pub async fn offset_for_timestamp_with(
        &self,
        ts: i64,
        decompress: Option<Decompress<'_>>,
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let start = {
            let log = self.log.borrow();
            let seg = log
                .segments
                .values()
                .find(|s| s.index.borrow().max_timestamp >= ts);
            match seg {
                None => return Ok(None),
                Some(s) => {
                    let (rel, _) = s.index.borrow().lookup_time(ts);
                    s.base_offset + i64::from(rel)
                }
            }
        };
        let mut off = start.max(self.log_start_offset());
        loop {
            let out = match self.read(off, SCAN_READ_BYTES).await {
                Ok(o) => o,
                Err(ReadError::OffsetOutOfRange { log_start, .. }) if off < log_start => {
                    off = log_start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if out.chunks.is_empty() {
                return Ok(None);
            }
            let min_offset = out.log_start_offset;
            for c in &out.chunks {
                let mut rest: &[u8] = c;
                while !rest.is_empty() {
                    let at = off;
                    let corrupt = move |reason: String| ReadError::Corrupt { offset: at, reason };
                    let h = batch::parse_header(rest).map_err(|e| corrupt(e.to_string()))?;
                    let n = h.total_bytes();
                    if rest.len() < n {
                        return Err(corrupt(format!("batch of {n} bytes truncated")));
                    }
                    let (this, next) = rest.split_at(n);
                    rest = next;
                    off = h.last_offset() + 1;
                    if h.max_timestamp < ts || h.last_offset() < min_offset {
                        continue;
                    }
                    let records = &this[BATCH_HEADER_BYTES..];
                    let found = match (h.compression(), decompress) {
                        (0, _) => batch::find_record_at_or_after(&h, records, ts, min_offset),
                        (codec, Some(d)) => {
                            let plain = d(codec, records).map_err(corrupt)?;
                            batch::find_record_at_or_after(&h, &plain, ts, min_offset)
                        }
                        (_, None) => Ok(Some((h.base_offset.max(min_offset), h.max_timestamp))),
                    };
                    if let Some(hit) = found.map_err(|e| corrupt(e.to_string()))? {
                        return Ok(Some(hit));
                    }
                }
            }
        }
    }

    /// Removes every batch at or after `offset` (if `offset` falls inside a batch, that
    /// whole batch goes; no-op at or beyond the log end; below the log start, everything
    /// goes and the log continues at the log start). Returns the new log end offset.
    ///
    /// Appends (either mode), rolls and retention wait while it runs. It first waits until
    /// every appended byte is written and every sync and finalize is done, then cuts the
    /// in-memory state in one synchronous section (segments, tail cache, index, offsets,
    /// leader epochs), then makes the cut durable: the segment holding `offset` is
    /// truncated at the batch boundary and fdatasync'ed (from here a crash recovers the cut
    /// log: later segments no longer follow on and are discarded by recovery), whole
    /// segments above are deleted (never kept as a recycled spare: their batches are above
    /// the new end), producer state is rebuilt as of the new end (from the producer
    /// snapshot if it is below the cut, else from the log start), the snapshot and the
    /// leader-epoch checkpoint are replaced and the directory fsync'ed. On return the whole
    /// remaining log is durable (`synced_offset` = `written_offset` = the new end).
    /// Appenders still waiting for batches that were cut get `AppendError::Truncated`.
    /// A failure stops the partition (its state may be half cut).
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        // One truncation at a time, never during a roll.
        loop {
            self.check_running()?;
            let busy = {
                let w = self.write.borrow();
                w.rolling || w.truncating
            };
            if !busy {
                break;
            }
            self.progress
                .wait_until(|| {
                    let w = self.write.borrow();
                    !(w.rolling || w.truncating) || w.stopped.is_some()
                })
                .await;
        }
        let end = self.log_end_offset();
        if offset.max(self.log_start_offset()) >= end {
            return Ok(end);
        }
        self.write.borrow_mut().truncating = true;
        let res = self.truncate_locked(offset).await;
        {
            let mut w = self.write.borrow_mut();
            w.truncating = false;
            w.cutting = false;
        }
        if let Err(e) = &res {
            self.stop(format!("truncation to offset {offset} failed: {e}"));
        }
        // Appenders waiting across the cut find out whether their batches are still there.
        self.wake_everyone();
        self.kick();
        res
    }

    async fn truncate_locked(&self, offset: i64) -> Result<i64, StorageError> {
        // Every appended byte written, every sync and finalize done: no write is in flight
        // and every sealed segment is finalized (synced).
        self.kick();
        self.progress
            .wait_until(|| {
                let w = self.write.borrow();
                w.stopped.is_some()
                    || (w.pending.is_empty()
                        && !w.writing
                        && !w.syncing
                        && w.rounds_finished == w.rounds_issued
                        && w.syncs_finished == w.syncs_issued
                        && w.to_finalize.is_empty())
            })
            .await;
        self.check_running()?;
        // From here the writer and syncer are not started again until the cut is done.
        self.write.borrow_mut().cutting = true;
        let (offset, seg) = {
            let log = self.log.borrow();
            let offset = offset.max(log.log_start_offset);
            assert!(
                offset < log.next_offset,
                "the log end moved during a truncation"
            );
            let seg = log
                .segments
                .range(..=offset)
                .next_back()
                .map(|(_, s)| s.clone())
                .expect("a segment holds every offset from the log start");
            (offset, seg)
        };
        let (pos, new_end, batches) = self.cut_position(&seg, offset).await?;
        let tail = seg.read_tail_block(pos).await?;
        let mut index = seg.index.borrow().clone();
        index.cut(pos, &batches);
        if cfg!(debug_assertions) {
            // The cut index is what a scan (recovery) of the cut segment builds.
            // A scan ends the log after the last batch kept; the cut may end it higher
            // when the batch cut follows a gap of a cleaned segment (no record between).
            let scanned = seg.scan(pos, |_, _| {}).await?;
            assert_eq!(scanned.valid_bytes, pos, "cut not at a batch boundary");
            assert!(
                scanned.next_offset <= new_end,
                "cut end {new_end} below the scan's {}",
                scanned.next_offset
            );
            assert_eq!(scanned.index, index, "cut index differs from a scan");
        }
        let was_sealed = seg.sealed.get();
        // A zero write landing after the truncate would grow the file again (and reset
        // allocated_bytes); the same for the active segment if it is removed.
        let active = self.log.borrow().active().clone();
        active.wait_growth().await;
        drop(active);
        seg.wait_growth().await;

        // The in-memory cut, in one synchronous section: readers see the old or the new log.
        let (removed, freed) = {
            let mut log = self.log.borrow_mut();
            let removed: Vec<Rc<Segment>> = log
                .segments
                .split_off(&(seg.base_offset + 1))
                .into_values()
                .collect();
            assert!(
                Rc::ptr_eq(log.active(), &seg),
                "cut segment is the last one"
            );
            seg.cut(pos, new_end, tail, index);
            log.next_offset = new_end;
            log.epochs.truncate_from(new_end);
            // Batches appended from the new end on are dirty for the log cleaner.
            self.first_dirty.set(self.first_dirty.get().min(new_end));
            // The cache stays a contiguous suffix of the log: entries at or beyond the new
            // end go, an entry holding it keeps its batches below it.
            let mut freed = 0;
            while let Some(back) = log.cache.back_mut() {
                if back.next_offset <= new_end {
                    break;
                }
                if back.base_offset >= new_end {
                    let n = back.data.len();
                    log.cache.pop_back();
                    freed += n;
                    continue;
                }
                let mut p = 0;
                while p < back.data.len() {
                    match batch::parse_header(&back.data[p..]) {
                        Ok(h) if h.base_offset < new_end => p += h.total_bytes(),
                        Ok(h) => {
                            assert_eq!(h.base_offset, new_end, "cache cut inside a batch");
                            break;
                        }
                        Err(e) => panic!("cached batch unparsable: {e}"),
                    }
                }
                assert!(p > 0 && p < back.data.len(), "cache cut at an entry edge");
                freed += back.data.len() - p;
                back.data = back.data.slice(..p);
                back.next_offset = new_end;
                break;
            }
            log.cache_bytes -= freed;
            (removed, freed)
        };
        self.store.cache_removed(freed);
        {
            let mut w = self.write.borrow_mut();
            assert!(
                w.pending.is_empty() && w.pending_bytes == 0 && w.queued_bytes == 0,
                "truncating with pending data"
            );
            w.issued_offset = new_end;
            w.written_offset = new_end;
            w.synced_offset = w.synced_offset.min(new_end);
            w.sync_issued_offset = w.sync_issued_offset.min(new_end);
            w.durable_issued_offset = w.durable_issued_offset.min(new_end);
            w.sync_requested = w.sync_requested.min(new_end);
            w.dirty
                .retain(|d| !removed.iter().any(|r| Rc::ptr_eq(r, d)));
        }

        // The durable cut: the segment's file ends at the boundary, synced.
        if was_sealed {
            // Stale now; written again when the segment is sealed and finalized.
            seg.remove_index_files()?;
        }
        let file = seg.file().await?;
        file.truncate(pos)
            .await
            .map_err(|e| StorageError::glommio("truncate", &seg.path, e))?;
        self.store.fdatasync(&file, &seg.path).await?;
        self.counters
            .fdatasyncs
            .set(self.counters.fdatasyncs.get() + 1);
        drop(file);
        for r in removed.iter().rev() {
            r.forget_file();
            r.remove_files()?;
        }
        // Producer state as of the new end (snapshot if below the cut, else from the log
        // start). The snapshot and the epoch checkpoint on disk may describe cut batches:
        // they are removed before their replacements are written, and the directory fsync
        // makes both durable before any append continues the log.
        self.recover_replay(false).await?;
        for name in [SNAPSHOT_FILE, EPOCHS_FILE] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", path, e)),
            }
        }
        {
            let log = self.log.borrow();
            if let Err(e) = log.epochs.write_file(&self.dir, new_end) {
                log::warn!(
                    "{}: leader-epoch checkpoint not written ({e}); recovery will scan the log",
                    self.dir.display()
                );
            } else {
                self.store
                    .journal_renamed(&self.dir.join(crate::epochs::EPOCHS_FILE), true);
            }
            if let Err(e) = log.producers.write_snapshot(&self.dir, new_end) {
                log::warn!(
                    "{}: producer snapshot not written ({e}); recovery will rebuild it",
                    self.dir.display()
                );
            } else {
                self.journal_snapshot_written();
            }
        }
        sync_dir(&self.dir).await?;
        self.store.journal_dir_synced(&self.dir);
        {
            let mut w = self.write.borrow_mut();
            // Sealed segments are all finalized and the cut one was just synced.
            w.synced_offset = new_end;
            w.sync_issued_offset = new_end;
            w.durable_issued_offset = new_end;
            w.sync_requested = new_end;
            w.dirty.clear();
            w.unsynced_since = None;
            w.cuts.record(new_end);
        }
        log::info!(
            "{}: truncated to offset {new_end} (asked {offset}; {} segments removed)",
            self.dir.display(),
            removed.len()
        );
        Ok(new_end)
    }

    /// Where the batch holding `offset` (or the first after it) starts in `seg` (every
    /// write of it completed): (byte position, the log end offset once cut there,
    /// (position, maxTimestamp) of the batches walked before it). The walk starts at the
    /// index entry before the one `offset` maps to, so it covers every batch after the
    /// last index entry that stays.
    async fn cut_position(
        &self,
        seg: &Rc<Segment>,
        offset: i64,
    ) -> Result<(u64, i64, Vec<(u64, i64)>), StorageError> {
        let rel = u32::try_from(offset - seg.base_offset).unwrap_or(u32::MAX);
        let mut pos = {
            let idx = seg.index.borrow();
            let k = idx.entries.partition_point(|e| e.relative_offset <= rel);
            if k >= 2 {
                u64::from(idx.entries[k - 2].position)
            } else {
                0
            }
        };
        let limit = seg.size_bytes.get();
        let file = seg.file().await?;
        let corrupt = |pos: u64, reason: String| StorageError::Corrupt {
            path: seg.path.clone(),
            reason: format!("byte {pos}: {reason} (truncating to offset {offset})"),
        };
        let mut batches = Vec::new();
        let mut buf = ReadResult::default();
        let mut buf_start = 0u64;
        // End offset of the batch before the one at `pos` (None: none walked yet; the walk
        // starts at an indexed batch whose base is at or below `offset`, or at byte 0).
        let mut prev_end: Option<i64> = None;
        while pos < limit {
            if pos < buf_start || pos + BATCH_HEADER_BYTES as u64 > buf_start + buf.len() as u64 {
                buf_start = align_down(pos);
                let len = align_up(limit.min(pos + SCAN_READ_BYTES as u64)) - buf_start;
                buf = read_aligned(&file, &seg.path, buf_start, len as usize).await?;
            }
            let h = batch::parse_header(&buf[(pos - buf_start) as usize..])
                .map_err(|e| corrupt(pos, e.to_string()))?;
            if h.last_offset() >= offset {
                // The log then ends at this batch's base offset (as Kafka's truncateTo), or,
                // when `offset` falls in a gap a cleaner left before it, right after the
                // batch before it. When a gap precedes the cut batch, a restart before the
                // next append ends the log after the batch before it instead (a scan finds
                // no end of the gap); the offsets between hold no record either way.
                let new_end = if h.base_offset <= offset {
                    h.base_offset
                } else {
                    prev_end.unwrap_or(seg.base_offset)
                };
                return Ok((pos, new_end, batches));
            }
            batches.push((pos, h.max_timestamp));
            prev_end = Some(h.last_offset() + 1);
            pos += h.total_bytes() as u64;
        }
        Err(corrupt(pos, "offset not found in its segment".into()))
    }

    async fn wait_not_truncating(&self) {
        self.progress
            .wait_until(|| !self.write.borrow().truncating)
            .await;
    }

    /// Leader-epoch cache (Kafka's leader-epoch-checkpoint): (epoch, start offset) for each
    /// epoch seen in stored batches' partitionLeaderEpoch (>= 0), in order. Maintained on
    /// append, trimmed by retention, rebuilt at recovery (checkpoint + scan), cut by
    /// `truncate_to`.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.log.borrow().epochs.entries().to_vec()
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` known here and its end offset
    /// (the start offset of the next larger epoch, or the log end offset for the latest);
    /// (-1, -1) when none.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let log = self.log.borrow();
        log.epochs.end_offset_for(epoch, log.next_offset)
    }

    /// Writes and fdatasyncs everything appended so far.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.check_running()?;
        let end = self.log_end_offset();
        {
            let mut w = self.write.borrow_mut();
            if w.synced_offset >= end {
                return Ok(());
            }
            w.sync_requested = w.sync_requested.max(end);
        }
        let cuts_seen = self.write.borrow().cuts.done;
        self.kick();
        self.synced_waiters
            .wait(end, || {
                let w = self.write.borrow();
                w.synced_offset >= end || w.stopped.is_some() || w.cuts.done != cuts_seen
            })
            .await;
        // A truncation meanwhile made everything left in the log durable.
        if self.write.borrow().synced_offset >= end {
            Ok(())
        } else {
            self.check_running()
        }
    }

    /// Waits until no writer, syncer or round task runs (so no write is in flight).
    async fn wait_flusher_idle(&self) {
        self.progress
            .wait_until(|| {
                let w = self.write.borrow();
                !w.writing
                    && !w.syncing
                    && w.rounds_finished == w.rounds_issued
                    && w.syncs_finished == w.syncs_issued
            })
            .await;
    }

    /// Syncs, writes the producer snapshot and the active segment's index, trims the active
    /// segment's preallocation, and stops the partition.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.wait_not_truncating().await;
        if self.write.borrow().stopped.is_some() {
            return Ok(());
        }
        let res = self.flush().await;
        self.wait_flusher_idle().await;
        res?;
        self.stop_quietly("closed");
        let (active, next) = {
            let log = self.log.borrow();
            (log.active().clone(), log.next_offset)
        };
        // A background zero write landing after the truncate would grow the file again.
        active.wait_growth().await;
        let f = active.file().await?;
        f.truncate(active.size_bytes.get())
            .await
            .map_err(|e| StorageError::glommio("truncate", &active.path, e))?;
        self.store.fdatasync(&f, &active.path).await?;
        if let Err(e) = self.log.borrow().epochs.write_file(&self.dir, next) {
            log::warn!(
                "{}: leader-epoch checkpoint not written: {e}",
                self.dir.display()
            );
        } else {
            self.store
                .journal_renamed(&self.dir.join(crate::epochs::EPOCHS_FILE), true);
        }
        if let Err(e) = self.log.borrow().producers.write_snapshot(&self.dir, next) {
            log::warn!("{}: producer snapshot not written: {e}", self.dir.display());
        } else {
            self.journal_snapshot_written();
        }
        self.store.unregister(self);
        Ok(())
    }

    fn stop_quietly(&self, reason: &str) {
        let mut w = self.write.borrow_mut();
        if w.stopped.is_none() {
            w.stopped = Some(reason.to_string());
        }
        drop(w);
        self.wake_everyone();
    }

    /// Closes and removes the partition's files and directory: renamed to a `-delete` name
    /// first, durably, so a crash part-way never leaves a directory that a partition of the
    /// same name would recover (`discard::discard_dir`).
    pub async fn delete(self: Rc<Self>) -> Result<(), StorageError> {
        self.forget("deleted").await;
        crate::discard::discard_dir(&self.dir)
    }

    /// True once a failed write, sync, roll or truncation stopped the partition (not a
    /// close or delete).
    pub fn failed(&self) -> bool {
        self.write.borrow().failed
    }

    /// Lets go of a partition a failure stopped, leaving its directory as it is, so that it
    /// can be opened again: the new `Partition` recovers the log from disk (to its last
    /// whole batch, at most `written_offset`), as a restart would. Waits for every write
    /// still in flight. Readers holding this object get errors or nothing from then on.
    pub async fn abandon(&self) {
        assert!(self.failed(), "only a failed partition is abandoned");
        self.forget("abandoned after a failure").await;
    }

    /// Stops the partition, waits until no write or sync is in flight, and drops its cache,
    /// segments (files) and its place in the store.
    async fn forget(&self, reason: &str) {
        self.wait_not_truncating().await;
        self.stop_quietly(reason);
        self.wait_flusher_idle().await;
        let freed = {
            let mut log = self.log.borrow_mut();
            log.cache.clear();
            let n = log.cache_bytes;
            log.cache_bytes = 0;
            log.segments.clear();
            n
        };
        self.store.cache_removed(freed);
        self.store.unregister(self);
    }

    /// Kafka's DeleteRecords: raises the log start offset to `offset` (at most the log end;
    /// a lower or equal one changes nothing) and returns the log start offset. Reads below
    /// it answer `OffsetOutOfRange` from now on. Durable on return (the checkpoint file is
    /// written, fsync'ed and renamed, the directory fsync'ed), so a restart keeps it. Whole
    /// segments below it are deleted at once when finalized, else by a later retention pass;
    /// the segment holding the new start keeps its earlier batches on disk (as Kafka).
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        self.wait_not_truncating().await;
        self.check_running()?;
        let offset = offset.min(self.log_end_offset());
        if offset <= self.log_start_offset() {
            return Ok(self.log_start_offset());
        }
        write_log_start(&self.dir, offset)?;
        self.store
            .journal_renamed(&self.dir.join(LOG_START_FILE), true);
        self.store.journal_dir_synced(&self.dir);
        let freed = {
            let mut log = self.log.borrow_mut();
            log.log_start_offset = log.log_start_offset.max(offset);
            log.epochs.truncate_start(offset);
            let mut freed = 0;
            while log.cache.front().is_some_and(|e| e.next_offset <= offset) {
                if let Some(e) = log.cache.pop_front() {
                    freed += e.data.len();
                }
            }
            log.cache_bytes -= freed;
            freed
        };
        self.store.cache_removed(freed);
        log::info!(
            "{}: records deleted before offset {offset} (DeleteRecords)",
            self.dir.display()
        );
        self.enforce_retention()?;
        Ok(self.log_start_offset())
    }

    /// Deletes sealed segments beyond retention.ms / retention.bytes, or wholly below the log
    /// start offset (`delete_records_before`); returns how many.
    pub fn enforce_retention(&self) -> Result<usize, StorageError> {
        if self.write.borrow().truncating {
            return Ok(0);
        }
        let cfg = self.config.borrow().clone();
        let now = now_ms();
        let mut deleted = 0;
        loop {
            let victim = {
                let mut log = self.log.borrow_mut();
                if log.segments.len() <= 1 {
                    break;
                }
                let Some(first) = log.segments.values().next().cloned() else {
                    break;
                };
                if !first.finalized.get() {
                    break;
                }
                let total: u64 = log.segments.values().map(|s| s.size_bytes.get()).sum();
                // retention.ms / retention.bytes apply only with cleanup.policy=delete (or
                // compact,delete), as in Kafka; the log start offset always applies.
                let by_size = cfg.cleanup_delete
                    && cfg.retention_bytes >= 0
                    && total.saturating_sub(cfg.retention_bytes as u64) >= first.size_bytes.get()
                    && total > cfg.retention_bytes as u64;
                let by_time = cfg.cleanup_delete
                    && cfg.retention_ms >= 0
                    && first.index.borrow().max_timestamp < now.saturating_sub(cfg.retention_ms);
                let by_start = first.next_offset.get() <= log.log_start_offset;
                if !(by_size || by_time || by_start) {
                    break;
                }
                log.segments.remove(&first.base_offset);
                let new_start = *log
                    .segments
                    .keys()
                    .next()
                    .unwrap_or(&first.next_offset.get());
                assert!(
                    new_start > log.log_start_offset || by_start,
                    "log start must grow"
                );
                // A start raised by DeleteRecords may be past the next segment's base.
                let new_start = new_start.max(log.log_start_offset);
                log.log_start_offset = new_start;
                log.epochs.truncate_start(new_start);
                let mut freed = 0;
                while log
                    .cache
                    .front()
                    .is_some_and(|e| e.next_offset <= new_start)
                {
                    if let Some(e) = log.cache.pop_front() {
                        freed += e.data.len();
                    }
                }
                log.cache_bytes -= freed;
                drop(log);
                self.store.cache_removed(freed);
                log::info!(
                    "{}: retention deletes segment {} ({} bytes; by {}); log start offset now {new_start}",
                    self.dir.display(),
                    first.base_offset,
                    first.size_bytes.get(),
                    if by_start {
                        "log start"
                    } else if by_size {
                        "size"
                    } else {
                        "time"
                    }
                );
                first
            };
            if !self.keep_spare(&victim) {
                victim.remove_files()?;
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Keeps the log file of a segment retention just removed from the log as the spare
    /// for the next roll, if recycling is on, no spare is kept yet and nobody (a reader)
    /// still holds the segment or its file. Its index files are removed. False: the caller
    /// removes the files.
    fn keep_spare(&self, victim: &Rc<Segment>) -> bool {
        if !self.store.config().recycle_segments
            || self.spare.borrow().is_some()
            || Rc::strong_count(victim) > 1
        {
            return false;
        }
        if victim.has_open_file() {
            if !victim.try_close_file() {
                return false;
            }
            self.store.note_file_closed();
        }
        let spare = self.dir.join(RECYCLED_SEGMENT_FILE);
        let kept = victim.remove_index_files().and_then(|()| {
            std::fs::rename(&victim.path, &spare)
                .map_err(|e| StorageError::io("rename", &victim.path, e))
        });
        match kept {
            Ok(()) => {
                *self.spare.borrow_mut() = Some(spare);
                true
            }
            Err(e) => {
                log::warn!("{}: segment not kept for reuse: {e}", self.dir.display());
                false
            }
        }
    }

    /// Moves the spare segment file (if any) to `path` for a new segment; its size.
    /// The old batches in it have offsets below the new segment's base, so recovery, which
    /// requires each batch to continue the offset sequence from the base, never takes them.
    fn take_spare(&self, path: &Path) -> Option<u64> {
        let spare = self.spare.borrow_mut().take()?;
        let moved = std::fs::rename(&spare, path).and_then(|()| std::fs::metadata(path));
        match moved {
            Ok(meta) => Some(meta.len()),
            Err(e) => {
                log::warn!(
                    "{}: recycled segment file not reused ({e}); creating a new one",
                    spare.display()
                );
                let _ = std::fs::remove_file(&spare);
                None
            }
        }
    }

    /// One tick of the shard's background task: flush.ms bound, then retention.
    pub(crate) async fn background_tick(&self) {
        let flush_ms = self.config.borrow().flush_ms;
        let due = {
            let w = self.write.borrow();
            w.stopped.is_none()
                && w.unsynced_since
                    .is_some_and(|t| t.elapsed() >= Duration::from_millis(flush_ms))
        };
        if due {
            let end = self.log_end_offset();
            let mut w = self.write.borrow_mut();
            w.sync_requested = w.sync_requested.max(end);
            drop(w);
            self.kick();
        }
        if let Err(e) = self.enforce_retention() {
            log::warn!("{}: retention: {e}", self.dir.display());
        }
    }

    /// Bytes appended and not yet written (queued or in flight): admitted, but not yet
    /// taking space on the filesystem.
    pub(crate) fn unwritten_bytes(&self) -> u64 {
        self.write.borrow().pending_bytes as u64
    }

    pub fn stats(&self) -> PartitionStats {
        let log = self.log.borrow();
        let w = self.write.borrow();
        PartitionStats {
            log_start_offset: log.log_start_offset,
            log_end_offset: log.next_offset,
            written_offset: w.written_offset,
            synced_offset: w.synced_offset,
            size_bytes: log.segments.values().map(|s| s.size_bytes.get()).sum(),
            segments: log.segments.len(),
            segments_unfinalized: log
                .segments
                .values()
                .filter(|s| s.sealed.get() && !s.finalized.get())
                .count(),
            cache_bytes: log.cache_bytes,
            pending_bytes: w.pending_bytes,
            appends: self.counters.appends.get(),
            duplicates: self.counters.duplicates.get(),
            write_rounds: self.counters.write_rounds.get(),
            dsync_rounds: self.counters.dsync_rounds.get(),
            recycled_segments: self.counters.recycled_segments.get(),
            fdatasyncs: self.counters.fdatasyncs.get(),
            head_writes: self.counters.head_writes.get(),
            producers: log.producers.len(),
        }
    }

    /// Bounds the log cleaner to segments that end at or below `offset` (a replicated
    /// partition's high watermark: batches above it may still be truncated, and a record
    /// must never be removed for a later one that a truncation then takes away, as in
    /// Kafka). i64::MAX (the default): no bound, for a log whose appends are final.
    pub fn set_cleanable_end(&self, offset: i64) {
        self.cleanable_end.set(offset);
    }

    /// Runs one log-cleaner pass over this partition now (what the shard's cleaner task
    /// does every `StoreConfig::cleaner_backoff_ms`): None when the log is not compacted or
    /// nothing is due per its configs. See `cleaner`.
    pub async fn clean(&self) -> Result<Option<cleaner::CleanReport>, StorageError> {
        self.store.clean(self, now_ms()).await
    }

    /// `clean` as if the wall clock read `now_ms` (tests of the delete horizon and the
    /// compaction lags run on a clock of their own).
    pub async fn clean_at(
        &self,
        now_ms: i64,
    ) -> Result<Option<cleaner::CleanReport>, StorageError> {
        self.store.clean(self, now_ms).await
    }

    /// Why the partition stopped accepting writes, if it did.
    pub fn stopped_reason(&self) -> Option<String> {
        self.write.borrow().stopped.clone()
    }
}

const _: () = assert!((READ_MAX_BYTES as u64).is_multiple_of(BLOCK_BYTES));

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an appender that waited across truncations is told its batches were cut
    // exactly when one of those cuts went below its end (or too many passed to tell).
    #[test]
    fn cut_history() {
        let mut h = CutHistory::default();
        assert!(!h.cut_away(0, 100));
        h.record(50);
        assert!(h.cut_away(0, 51));
        assert!(!h.cut_away(0, 50));
        assert!(!h.cut_away(1, 1000), "appended after the cut");
        h.record(80);
        assert!(h.cut_away(0, 51), "the first cut removed it");
        assert!(!h.cut_away(1, 80));
        assert!(h.cut_away(1, 81));
        for _ in 0..CUTS_KEPT {
            h.record(1000);
        }
        assert!(h.cut_away(0, 10), "history too short to tell");
        assert!(!h.cut_away(h.done - 1, 1000));
    }
}
