//! The per-shard store: owns the shard's partitions, its limits (tail-cache bytes, in-flight
//! DMA writes, open files), its background tasks (flush.ms and retention; the log cleaner
//! of compacted partitions with its key map and I/O bound), and the fault-injection hook.
//!
//! Runs on exactly one core: one `Store` per glommio LocalExecutor, shared by `Rc`, never
//! sent across threads. Nothing here holds a RefCell borrow across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;

use crate::config::{
    BACKGROUND_TICK_MS, BLOCK_BYTES, DISK_FREE_RECHECK_BYTES, DISK_FREE_RECHECK_MS,
    DISK_FREE_SHORT_RECHECK_MS, INFLIGHT_WRITES_CAP, LogConfig, ROUND_MAX_BYTES_CAP,
    ROUND_MAX_BYTES_FLOOR, StoreConfig, WRITE_CHUNK_BYTES,
};
use crate::error::StorageError;
use crate::metrics::StoreMetrics;
use crate::partition::Partition;
use crate::partition::cleaner::{CleanReport, CleanerCrashPoint, KeyMap};
use crate::power::PowerJournal;
use crate::segment::Segment;

/// glommio decides once per device and process whether DMA reads go to its io-poll ring, by
/// reading from the first DmaFile opened there. On an empty file that read succeeds even on
/// devices without io-poll support (virtio), and every later read fails with EOPNOTSUPP. So
/// before the first real segment is opened, open a one-block file: the probe then sees the
/// real answer.
/// The probe goes into the nearest existing directory at or above `dir` (on the same
/// device), so that creating the partition directory stays `Partition::open`'s job (which
/// fsyncs new directories in their parents).
async fn probe_iopoll(dir: &Path) -> Result<(), StorageError> {
    let mut at = dir;
    while !at.is_dir() {
        at = match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    // Several shards may probe in one directory at once: a name of its own each.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = at.join(format!(".iopoll-probe-{}-{n}.tmp", std::process::id()));
    std::fs::write(&path, vec![0u8; BLOCK_BYTES as usize])
        .map_err(|e| StorageError::io("write", &path, e))?;
    let f = crate::segment::open_dma(&path, false).await?;
    let _ = f.close().await;
    std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))
}

/// Test hook: makes chosen I/O calls fail, to prove how the store reacts. Installed with
/// `Store::set_fault_injector`; the data path only reads two `Cell`s when it is present.
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// Every fdatasync fails with EIO while set.
    pub fail_fdatasync: Cell<bool>,
    /// Every data write fails with EIO while set.
    pub fail_writes: Cell<bool>,
    /// While set, every write is delayed by a pseudo-random 0-2 ms before it is issued, so
    /// writes in flight together complete in a shuffled order (proves the write path does
    /// not depend on completion order).
    pub shuffle_writes: Cell<bool>,
    /// The log cleaner stops right after this step of a segment's cleaning, leaving its
    /// files as a crash there would (a test then takes a crash image).
    pub crash_cleaner_at: Cell<Option<CleanerCrashPoint>>,
    /// While set, every file operation of the log is journaled (`PowerJournal`), so a test
    /// can build the crash images a power cut at any point of the run may leave.
    pub journal: RefCell<Option<PowerJournal>>,
}

/// Decompresses the records of a compressed batch: (codec = attributes bits 0-2,
/// compressed records) -> the records. Installed by the broker (`Store::set_decompressor`;
/// the storage has no codecs) for the log cleaner and the key check of compacted logs; it
/// must bound what it produces (a stored batch can be a decompression bomb).
pub type DecompressFn = dyn Fn(u8, &[u8]) -> Result<Vec<u8>, String>;

/// Compresses records with a codec (attributes bits 0-2): the log cleaner compresses a
/// cleaned batch again with its own codec. Installed by the broker (`set_compressor`).
pub type CompressFn = dyn Fn(u8, &[u8]) -> Result<Vec<u8>, String>;

/// The buffer of one DMA write: owned (data) or shared (the shard's zeros).
pub(crate) enum WriteBuf {
    Owned(DmaBuffer),
    Shared(Rc<DmaBuffer>),
}

impl WriteBuf {
    fn len(&self) -> usize {
        match self {
            WriteBuf::Owned(b) => b.len(),
            WriteBuf::Shared(b) => b.len(),
        }
    }
}

impl From<DmaBuffer> for WriteBuf {
    fn from(b: DmaBuffer) -> Self {
        WriteBuf::Owned(b)
    }
}

impl From<Rc<DmaBuffer>> for WriteBuf {
    fn from(b: Rc<DmaBuffer>) -> Self {
        WriteBuf::Shared(b)
    }
}

/// Shard-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub partitions: usize,
    pub cache_bytes: usize,
    /// The store's write-path and cache sizes as configured (after `Store::new`'s bounds):
    /// `StoreConfig::cache_max_bytes`, `round_max_bytes`, `round_min_bytes`,
    /// `inflight_writes_max`.
    pub cache_max_bytes: usize,
    pub round_max_bytes: usize,
    pub round_min_bytes: usize,
    pub inflight_writes_max: usize,
    pub open_files: usize,
    pub fdatasyncs: u64,
    pub writes: u64,
    /// Sum over DMA writes of the time from issue (after the permit) to completion, in us.
    pub write_latency_us_total: u64,
    /// Sum over DMA writes of the time spent waiting for a write permit, in us.
    pub write_permit_wait_us_total: u64,
    /// Sum over fdatasyncs of the time from issue to completion, in us.
    pub fdatasync_latency_us_total: u64,
    /// DMA writes made through an O_DSYNC descriptor (durable on completion).
    pub dsync_writes: u64,
    /// Log cleaner: passes that cleaned something, segments swapped, bytes read, bytes of
    /// the cleaned segments before and after, records removed, time spent in passes (us).
    pub cleaner_passes: u64,
    pub cleaner_segments: u64,
    /// Log cleaner: segments that a merge folded into the segment before them.
    pub cleaner_segments_merged: u64,
    pub cleaner_bytes_read: u64,
    pub cleaner_bytes_before: u64,
    pub cleaner_bytes_after: u64,
    pub cleaner_records_removed: u64,
    pub cleaner_busy_us: u64,
}

/// The storage of one shard (core).
pub struct Store {
    config: StoreConfig,
    write_permits: Rc<Semaphore>,
    partitions: RefCell<Vec<Weak<Partition>>>,
    cache_bytes: Cell<usize>,
    evict_cursor: Cell<usize>,
    open_files: Cell<usize>,
    /// Sealed segments with an open file, oldest opened first (closed beyond open_files_max).
    open_sealed: RefCell<VecDeque<Weak<Segment>>>,
    faults: RefCell<Option<Rc<FaultInjector>>>,
    background: Cell<bool>,
    iopoll_probed: Cell<bool>,
    fdatasyncs: Cell<u64>,
    writes: Cell<u64>,
    write_latency_us: Rc<Cell<u64>>,
    write_permit_wait_us: Rc<Cell<u64>>,
    fdatasync_latency_us: Cell<u64>,
    dsync_writes: Cell<u64>,
    zeros: RefCell<Option<Rc<DmaBuffer>>>,
    metrics: StoreMetrics,
    disk: RefCell<DiskSpace>,
    decompressor: RefCell<Option<Rc<DecompressFn>>>,
    compressor: RefCell<Option<Rc<CompressFn>>>,
    /// One cleaning pass at a time per shard: it holds the key map.
    cleaner_lock: Rc<Semaphore>,
    /// The shard's cleaner key map, allocated at the first pass, kept between passes.
    cleaner_map: RefCell<Option<KeyMap>>,
    cleaner_stats: RefCell<StoreStats>,
    /// Cleaner I/O of the current throttling window: (its start, bytes since).
    cleaner_io: Cell<(Option<std::time::Instant>, u64)>,
}

/// What the shard last learned of its filesystem's free space (`Store::admit_append`).
struct DiskSpace {
    free_bytes: u64,
    checked_at: Option<std::time::Instant>,
    admitted_since_check: u64,
}

impl Store {
    /// Creates the store of the current shard.
    pub fn new(mut config: StoreConfig) -> Rc<Store> {
        // Whatever set them (flags, iotune.json, tests), the write pipeline stays within
        // its safe bounds.
        config.inflight_writes_max = config.inflight_writes_max.clamp(1, INFLIGHT_WRITES_CAP);
        config.round_max_bytes = config
            .round_max_bytes
            .clamp(ROUND_MAX_BYTES_FLOOR, ROUND_MAX_BYTES_CAP);
        config.round_min_bytes = config.round_min_bytes.min(config.round_max_bytes);
        let inflight = config.inflight_writes_max as u64;
        Rc::new(Store {
            config,
            write_permits: Rc::new(Semaphore::new(inflight)),
            partitions: RefCell::new(Vec::new()),
            cache_bytes: Cell::new(0),
            evict_cursor: Cell::new(0),
            open_files: Cell::new(0),
            open_sealed: RefCell::new(VecDeque::new()),
            faults: RefCell::new(None),
            background: Cell::new(false),
            iopoll_probed: Cell::new(false),
            fdatasyncs: Cell::new(0),
            writes: Cell::new(0),
            write_latency_us: Rc::new(Cell::new(0)),
            write_permit_wait_us: Rc::new(Cell::new(0)),
            fdatasync_latency_us: Cell::new(0),
            dsync_writes: Cell::new(0),
            zeros: RefCell::new(None),
            metrics: StoreMetrics::default(),
            disk: RefCell::new(DiskSpace {
                free_bytes: 0,
                checked_at: None,
                admitted_since_check: 0,
            }),
            decompressor: RefCell::new(None),
            compressor: RefCell::new(None),
            cleaner_lock: Rc::new(Semaphore::new(1)),
            cleaner_map: RefCell::new(None),
            cleaner_stats: RefCell::new(StoreStats::default()),
            cleaner_io: Cell::new((None, 0)),
        })
    }

    /// Bytes appended to this shard's partitions and not yet written.
    fn unwritten_bytes(&self) -> u64 {
        self.partitions
            .borrow()
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|p| p.unwritten_bytes())
            .sum()
    }

    /// Admits an append of `len` bytes to a partition in `dir` only while the filesystem
    /// keeps `disk_free_min_bytes` free (see `StoreConfig`). Looks at the free space again
    /// (statvfs, a cheap call) every DISK_FREE_RECHECK_BYTES admitted or
    /// DISK_FREE_RECHECK_MS, and every DISK_FREE_SHORT_RECHECK_MS while it was short; in
    /// between it counts the admitted bytes against the last figure. Bytes admitted but not yet written do not
    /// show in statvfs yet: each fresh look counts the shard's unwritten bytes as admitted
    /// (without that, a disk filling under load went past the reserve by what was in
    /// flight). A failing statvfs admits (the write itself then reports what is wrong).
    pub(crate) fn admit_append(&self, dir: &std::path::Path, len: u64) -> Result<(), StorageError> {
        let min = self.config.disk_free_min_bytes;
        if min == 0 {
            return Ok(());
        }
        let mut d = self.disk.borrow_mut();
        let now = std::time::Instant::now();
        let stale = match d.checked_at {
            None => true,
            Some(at) => {
                let age_ms = now.duration_since(at).as_millis() as u64;
                let short = d.free_bytes < min.saturating_add(d.admitted_since_check + len);
                (short && age_ms >= DISK_FREE_SHORT_RECHECK_MS)
                    || d.admitted_since_check + len > DISK_FREE_RECHECK_BYTES
                    || age_ms >= DISK_FREE_RECHECK_MS
            }
        };
        if stale {
            match free_bytes(dir) {
                Ok(free) => {
                    d.free_bytes = free;
                    d.checked_at = Some(now);
                    d.admitted_since_check = self.unwritten_bytes();
                }
                Err(e) => {
                    log::warn!("statvfs {}: {e}", dir.display());
                    return Ok(());
                }
            }
        }
        let free = d.free_bytes.saturating_sub(d.admitted_since_check);
        if free < min.saturating_add(len) {
            return Err(StorageError::DiskFull {
                path: dir.to_path_buf(),
                free_bytes: free,
                min_bytes: min.saturating_add(len),
            });
        }
        d.admitted_since_check += len;
        Ok(())
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The shard's storage histograms (fdatasync and write-round latency, group-commit sizes).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Installs (or removes) the fault-injection hook.
    pub fn set_fault_injector(&self, faults: Option<Rc<FaultInjector>>) {
        *self.faults.borrow_mut() = faults;
    }

    /// Installs the decompressor the log cleaner and the key check of compacted logs use
    /// for compressed batches (without one, such batches are kept whole and not mapped).
    pub fn set_decompressor(&self, d: Rc<DecompressFn>) {
        *self.decompressor.borrow_mut() = Some(d);
    }

    pub(crate) fn decompressor(&self) -> Option<Rc<DecompressFn>> {
        self.decompressor.borrow().clone()
    }

    /// Installs the compressor the log cleaner compresses cleaned batches with (without
    /// one, a compressed batch that loses records is stored uncompressed).
    pub fn set_compressor(&self, c: Rc<CompressFn>) {
        *self.compressor.borrow_mut() = Some(c);
    }

    pub(crate) fn compressor(&self) -> Option<Rc<CompressFn>> {
        self.compressor.borrow().clone()
    }

    /// Fails with an injected crash if the fault hook asks to stop the cleaner at `point`.
    pub(crate) fn cleaner_crash_point(
        &self,
        point: CleanerCrashPoint,
        path: &Path,
    ) -> Result<(), StorageError> {
        let hit = self
            .faults
            .borrow()
            .as_ref()
            .is_some_and(|f| f.crash_cleaner_at.get() == Some(point));
        if hit {
            return Err(StorageError::io(
                "log cleaner",
                path,
                io::Error::other(format!("injected crash after {point:?}")),
            ));
        }
        Ok(())
    }

    /// Accounts `bytes` of cleaner I/O and sleeps as long as the shard's cleaner is ahead
    /// of `cleaner_io_max_bytes_per_sec` (a window restarts after a second of idleness).
    pub(crate) async fn cleaner_throttle(&self, bytes: u64) {
        let limit = self.config.cleaner_io_max_bytes_per_sec;
        if limit == 0 {
            return;
        }
        let now = std::time::Instant::now();
        let (start, done) = self.cleaner_io.get();
        let (start, done) = match start {
            Some(s) if now.duration_since(s) < Duration::from_secs(1) || done > 0 => (s, done),
            _ => (now, 0),
        };
        let done = done + bytes;
        let due = Duration::from_secs_f64(done as f64 / limit as f64);
        let elapsed = now.duration_since(start);
        if elapsed >= due + Duration::from_secs(1) {
            // Idle long enough: a new window.
            self.cleaner_io.set((Some(now), 0));
            return;
        }
        self.cleaner_io.set((Some(start), done));
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }

    /// One log-cleaner pass over `p` with the shard's key map (one pass at a time per
    /// shard; see `partition::cleaner`).
    pub(crate) async fn clean(
        &self,
        p: &Partition,
        now_ms: i64,
    ) -> Result<Option<CleanReport>, StorageError> {
        let _permit = self
            .cleaner_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::glommio("cleaner lock", p.dir(), e))?;
        // Taken out for the pass: no RefCell borrow is held across its awaits.
        let mut map = self
            .cleaner_map
            .borrow_mut()
            .take()
            .unwrap_or_else(|| KeyMap::new(self.config.cleaner_key_map_max_bytes));
        let t0 = std::time::Instant::now();
        let res = p.clean_pass(&mut map, now_ms).await;
        *self.cleaner_map.borrow_mut() = Some(map);
        if let Ok(Some(r)) = &res {
            let mut s = self.cleaner_stats.borrow_mut();
            s.cleaner_passes += 1;
            s.cleaner_segments += r.segments_cleaned as u64;
            s.cleaner_segments_merged += r.segments_merged as u64;
            s.cleaner_bytes_read += r.bytes_read;
            s.cleaner_bytes_before += r.bytes_before;
            s.cleaner_bytes_after += r.bytes_after;
            s.cleaner_records_removed += r.records_removed;
            s.cleaner_busy_us += t0.elapsed().as_micros() as u64;
        }
        res
    }

    /// Opens (recovering) or creates the partition log stored in `dir`.
    pub async fn open_partition(
        self: &Rc<Self>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Rc<Partition>, StorageError> {
        if !self.iopoll_probed.replace(true) {
            probe_iopoll(&dir).await?;
        }
        let p = Partition::open(self.clone(), dir, config).await?;
        let mut parts = self.partitions.borrow_mut();
        parts.retain(|w| w.strong_count() > 0);
        parts.push(Rc::downgrade(&p));
        Ok(p)
    }

    /// Live partitions of this shard.
    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .iter()
            .filter_map(|w| w.upgrade())
            .collect()
    }

    pub(crate) fn unregister(&self, p: &Partition) {
        self.partitions
            .borrow_mut()
            .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), p));
    }

    /// Starts the shard's background task on the current executor: every BACKGROUND_TICK_MS
    /// it bounds un-synced age (flush.ms) and enforces retention. Idempotent. The task ends
    /// when the store is dropped.
    pub fn start_background(self: &Rc<Self>) {
        if self.background.replace(true) {
            return;
        }
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(BACKGROUND_TICK_MS)).await;
                let Some(store) = weak.upgrade() else { return };
                let parts = store.partitions();
                drop(store);
                for p in parts {
                    p.background_tick().await;
                }
            }
        })
        .detach();
        // The log cleaner: every cleaner_backoff_ms, one pass over each compacted partition
        // of the shard, one partition at a time.
        let backoff = Duration::from_millis(self.config.cleaner_backoff_ms.max(1));
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(backoff).await;
                let Some(store) = weak.upgrade() else { return };
                for p in store.partitions() {
                    if !p.config().cleanup_compact {
                        continue;
                    }
                    if let Err(e) = store.clean(&p, crate::partition::now_ms()).await {
                        log::warn!("{}: log cleaner: {e}", p.dir().display());
                    }
                }
            }
        })
        .detach();
    }

    /// Syncs and closes every partition (graceful shutdown). Returns the first error after
    /// trying all of them.
    pub async fn close_all(&self) -> Result<(), StorageError> {
        let mut first = Ok(());
        for p in self.partitions() {
            if let Err(e) = p.close().await {
                log::error!("closing partition {}: {e}", p.dir().display());
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        self.partitions.borrow_mut().clear();
        first
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            partitions: self
                .partitions
                .borrow()
                .iter()
                .filter(|w| w.strong_count() > 0)
                .count(),
            cache_bytes: self.cache_bytes.get(),
            cache_max_bytes: self.config.cache_max_bytes,
            round_max_bytes: self.config.round_max_bytes,
            round_min_bytes: self.config.round_min_bytes,
            inflight_writes_max: self.config.inflight_writes_max,
            open_files: self.open_files.get(),
            fdatasyncs: self.fdatasyncs.get(),
            writes: self.writes.get(),
            write_latency_us_total: self.write_latency_us.get(),
            write_permit_wait_us_total: self.write_permit_wait_us.get(),
            fdatasync_latency_us_total: self.fdatasync_latency_us.get(),
            dsync_writes: self.dsync_writes.get(),
            ..self.cleaner_stats.borrow().clone()
        }
    }

    // ----- tail cache accounting -----

    pub(crate) fn cache_added(&self, bytes: usize) {
        self.cache_bytes.set(self.cache_bytes.get() + bytes);
    }

    pub(crate) fn cache_removed(&self, bytes: usize) {
        let cur = self.cache_bytes.get();
        assert!(bytes <= cur, "cache accounting underflow");
        self.cache_bytes.set(cur - bytes);
    }

    /// Evicts written batches, oldest first, from the shard's partitions in turn until the
    /// cache fits cache_max_bytes (or nothing is evictable: un-written data is pinned).
    pub(crate) fn enforce_cache_limit(&self) {
        if self.cache_bytes.get() <= self.config.cache_max_bytes {
            return;
        }
        // Runs per append once the cache is full: walk the registry in place (no Vec of
        // partitions per call). Evicting touches only the partition's own state and this
        // store's Cells, never the registry.
        let parts = self.partitions.borrow();
        if parts.is_empty() {
            return;
        }
        let mut idle_rounds = 0;
        while self.cache_bytes.get() > self.config.cache_max_bytes && idle_rounds < parts.len() {
            let i = self.evict_cursor.get() % parts.len();
            self.evict_cursor.set(i + 1);
            let over = self.cache_bytes.get() - self.config.cache_max_bytes;
            let freed = parts[i].upgrade().map_or(0, |p| p.evict_cache(over));
            if freed == 0 {
                idle_rounds += 1;
            } else {
                idle_rounds = 0;
            }
        }
    }

    // ----- open files -----

    pub(crate) fn note_file_opened(&self, seg: &Rc<Segment>) {
        self.open_files.set(self.open_files.get() + 1);
        if seg.sealed.get() {
            self.open_sealed.borrow_mut().push_back(Rc::downgrade(seg));
        }
        self.trim_open_files();
    }

    pub(crate) fn note_segment_sealed(&self, seg: &Rc<Segment>) {
        if seg.has_open_file() {
            self.open_sealed.borrow_mut().push_back(Rc::downgrade(seg));
        }
    }

    pub(crate) fn note_file_closed(&self) {
        self.open_files.set(self.open_files.get().saturating_sub(1));
    }

    /// Closes finalized sealed segments' files, oldest opened first, beyond open_files_max.
    fn trim_open_files(&self) {
        let mut budget = self.open_sealed.borrow().len();
        while self.open_files.get() > self.config.open_files_max && budget > 0 {
            budget -= 1;
            let Some(w) = self.open_sealed.borrow_mut().pop_front() else {
                break;
            };
            let Some(seg) = w.upgrade() else { continue };
            if seg.finalized.get() && seg.try_close_file() {
                self.note_file_closed();
            } else if seg.has_open_file() {
                self.open_sealed.borrow_mut().push_back(w);
            }
        }
    }

    // ----- I/O through the limits and the fault hook -----

    /// A WRITE_CHUNK_BYTES buffer of zeros, allocated once per shard and shared by every
    /// pre-zeroing write (never written to after creation).
    pub(crate) fn zeros(&self, file: &DmaFile) -> Rc<DmaBuffer> {
        if let Some(z) = self.zeros.borrow().as_ref() {
            return z.clone();
        }
        let mut buf = file.alloc_dma_buffer(WRITE_CHUNK_BYTES);
        buf.as_bytes_mut().fill(0);
        let z = Rc::new(buf);
        *self.zeros.borrow_mut() = Some(z.clone());
        z
    }

    /// Spawns one aligned DMA write, bounded by inflight_writes_max. `dsync`: `file` is an
    /// O_DSYNC descriptor, so the write includes a sync (an injected fdatasync fault fails it).
    pub(crate) fn spawn_write(
        &self,
        file: Rc<DmaFile>,
        path: PathBuf,
        buf: impl Into<WriteBuf>,
        pos: u64,
        dsync: bool,
    ) -> glommio::Task<Result<(), StorageError>> {
        let buf = buf.into();
        assert_eq!(pos % BLOCK_BYTES, 0, "unaligned write position");
        assert_eq!(buf.len() as u64 % BLOCK_BYTES, 0, "unaligned write length");
        assert!(buf.len() > 0, "empty write");
        let permits = self.write_permits.clone();
        let (fail, shuffle, fail_sync) =
            self.faults
                .borrow()
                .as_ref()
                .map_or((false, false, false), |f| {
                    (
                        f.fail_writes.get(),
                        f.shuffle_writes.get(),
                        f.fail_fdatasync.get(),
                    )
                });
        self.writes.set(self.writes.get() + 1);
        if dsync {
            self.dsync_writes.set(self.dsync_writes.get() + 1);
        }
        let delay_us = if shuffle {
            // splitmix64 of the write count: deterministic, well spread.
            let mut z = self.writes.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % 2000
        } else {
            0
        };
        let (lat, wait) = (
            self.write_latency_us.clone(),
            self.write_permit_wait_us.clone(),
        );
        let journaled = if fail || (dsync && fail_sync) {
            None
        } else {
            self.journaling().map(|f| {
                let bytes = match &buf {
                    WriteBuf::Owned(b) => b.as_bytes(),
                    WriteBuf::Shared(b) => b.as_bytes(),
                };
                let id = f
                    .journal
                    .borrow_mut()
                    .as_mut()
                    .map_or(0, |j| j.write_issued(&path, pos, bytes, dsync));
                (f, id)
            })
        };
        glommio::spawn_local(async move {
            let t0 = std::time::Instant::now();
            let _permit = permits
                .acquire_static_permit(1)
                .await
                .map_err(|e| StorageError::glommio("write permit", &path, e))?;
            let t1 = std::time::Instant::now();
            wait.set(wait.get() + (t1 - t0).as_micros() as u64);
            if delay_us > 0 {
                glommio::timer::sleep(Duration::from_micros(delay_us)).await;
            }
            if fail {
                return Err(StorageError::io(
                    "write",
                    path,
                    io::Error::other("injected write fault"),
                ));
            }
            if dsync && fail_sync {
                return Err(StorageError::io(
                    "O_DSYNC write",
                    path,
                    io::Error::other("injected fdatasync fault (EIO)"),
                ));
            }
            let len = buf.len();
            let n = match buf {
                WriteBuf::Owned(b) => file.write_at(b, pos).await,
                WriteBuf::Shared(b) => file.write_rc_at(b, pos).await,
            }
            .map_err(|e| StorageError::glommio("write", &path, e))?;
            lat.set(lat.get() + t1.elapsed().as_micros() as u64);
            if n != len {
                return Err(StorageError::io(
                    "write",
                    path,
                    io::Error::other(format!("short write: {n} of {len} bytes")),
                ));
            }
            if let Some((f, id)) = journaled
                && let Some(j) = f.journal.borrow_mut().as_mut()
            {
                j.write_completed(id);
            }
            Ok(())
        })
    }

    /// The fault injector if it journals file operations (power-loss tests).
    fn journaling(&self) -> Option<Rc<FaultInjector>> {
        self.faults
            .borrow()
            .as_ref()
            .filter(|f| f.journal.borrow().is_some())
            .cloned()
    }

    /// Journals the creation of a segment file (power-loss tests; no-op otherwise).
    pub(crate) fn journal_created(&self, path: &Path) {
        if let Some(f) = self.journaling()
            && let Some(j) = f.journal.borrow_mut().as_mut()
        {
            j.file_created(path);
        }
    }

    /// Journals a small file just replaced by rename, read back from disk (power-loss
    /// tests; no-op otherwise). `data_synced`: its data was fdatasync'ed before the rename.
    pub(crate) fn journal_renamed(&self, path: &Path, data_synced: bool) {
        if let Some(f) = self.journaling()
            && let Some(j) = f.journal.borrow_mut().as_mut()
        {
            let bytes = std::fs::read(path).unwrap_or_default();
            j.file_renamed(path, bytes, data_synced);
        }
    }

    /// Journals a completed directory fsync (power-loss tests; no-op otherwise).
    pub(crate) fn journal_dir_synced(&self, dir: &Path) {
        if let Some(f) = self.journaling()
            && let Some(j) = f.journal.borrow_mut().as_mut()
        {
            j.dir_synced(dir);
        }
    }

    /// fdatasync through the fault hook, counted in the stats.
    pub(crate) async fn fdatasync(&self, file: &DmaFile, path: &Path) -> Result<(), StorageError> {
        self.fdatasyncs.set(self.fdatasyncs.get() + 1);
        if self
            .faults
            .borrow()
            .as_ref()
            .is_some_and(|f| f.fail_fdatasync.get())
        {
            return Err(StorageError::io(
                "fdatasync",
                path,
                io::Error::other("injected fdatasync fault (EIO)"),
            ));
        }
        let journaled = self.journaling().map(|f| {
            let id = f
                .journal
                .borrow_mut()
                .as_mut()
                .map_or(0, |j| j.sync_issued(path));
            (f, id)
        });
        let t = std::time::Instant::now();
        let r = file
            .fdatasync()
            .await
            .map_err(|e| StorageError::glommio("fdatasync", path, e));
        if r.is_ok()
            && let Some((f, id)) = journaled
            && let Some(j) = f.journal.borrow_mut().as_mut()
        {
            j.sync_completed(id);
        }
        let us = t.elapsed().as_micros() as u64;
        self.fdatasync_latency_us
            .set(self.fdatasync_latency_us.get() + us);
        self.metrics.fdatasync_us.record(us);
        r
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
