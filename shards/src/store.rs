//! The per-shard store: owns the shard's partitions, its limits (tail-cache bytes, in-flight
//! DMA writes, open files), its background task, and the fault-injection hook.
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

use crate::config::{BACKGROUND_TICK_MS, BLOCK_BYTES, LogConfig, StoreConfig};
use crate::error::StorageError;
use crate::partition::Partition;
use crate::segment::Segment;

/// glommio decides once per device and process whether DMA reads go to its io-poll ring, by
/// reading from the first DmaFile opened there. On an empty file that read succeeds even on
/// devices without io-poll support (virtio), and every later read fails with EOPNOTSUPP. So
/// before the first real segment is opened, open a one-block file: the probe then sees the
/// real answer.
async fn probe_iopoll(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
    let path = dir.join(".iopoll-probe.tmp");
    std::fs::write(&path, vec![0u8; BLOCK_BYTES as usize])
        .map_err(|e| StorageError::io("write", &path, e))?;
    let f = crate::segment::open_dma(&path).await?;
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
}

/// Shard-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub partitions: usize,
    pub cache_bytes: usize,
    pub open_files: usize,
    pub fdatasyncs: u64,
    pub writes: u64,
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
}

impl Store {
    /// Creates the store of the current shard.
    pub fn new(config: StoreConfig) -> Rc<Store> {
        let inflight = config.inflight_writes_max.max(1) as u64;
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
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Installs (or removes) the fault-injection hook.
    pub fn set_fault_injector(&self, faults: Option<Rc<FaultInjector>>) {
        *self.faults.borrow_mut() = faults;
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
            open_files: self.open_files.get(),
            fdatasyncs: self.fdatasyncs.get(),
            writes: self.writes.get(),
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
        let parts = self.partitions();
        if parts.is_empty() {
            return;
        }
        let mut idle_rounds = 0;
        while self.cache_bytes.get() > self.config.cache_max_bytes && idle_rounds < parts.len() {
            let i = self.evict_cursor.get() % parts.len();
            self.evict_cursor.set(i + 1);
            let over = self.cache_bytes.get() - self.config.cache_max_bytes;
            if parts[i].evict_cache(over) == 0 {
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

    /// Spawns one aligned DMA write, bounded by inflight_writes_max.
    pub(crate) fn spawn_write(
        &self,
        file: Rc<DmaFile>,
        path: PathBuf,
        buf: DmaBuffer,
        pos: u64,
    ) -> glommio::Task<Result<(), StorageError>> {
        assert_eq!(pos % BLOCK_BYTES, 0, "unaligned write position");
        assert_eq!(buf.len() as u64 % BLOCK_BYTES, 0, "unaligned write length");
        let permits = self.write_permits.clone();
        let fail = self
            .faults
            .borrow()
            .as_ref()
            .is_some_and(|f| f.fail_writes.get());
        self.writes.set(self.writes.get() + 1);
        glommio::spawn_local(async move {
            let _permit = permits
                .acquire_static_permit(1)
                .await
                .map_err(|e| StorageError::glommio("write permit", &path, e))?;
            if fail {
                return Err(StorageError::io(
                    "write",
                    path,
                    io::Error::other("injected write fault"),
                ));
            }
            let len = buf.len();
            let n = file
                .write_at(buf, pos)
                .await
                .map_err(|e| StorageError::glommio("write", &path, e))?;
            if n != len {
                return Err(StorageError::io(
                    "write",
                    path,
                    io::Error::other(format!("short write: {n} of {len} bytes")),
                ));
            }
            Ok(())
        })
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
        file.fdatasync()
            .await
            .map_err(|e| StorageError::glommio("fdatasync", path, e))
    }
}
