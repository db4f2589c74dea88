//! One log segment: the file `<base offset, 20 digits>.log` holding whole record batches
//! back to back, written with direct I/O, plus its in-memory sparse index.
//!
//! Runs on the shard's own core. Write discipline: every write is 4096-aligned in offset and
//! length; the partly filled last block is kept in memory (`tail`) and rewritten, padded
//! with zeros, by the next write, never while an earlier write of it is in flight
//! (`prepare_run` splits it off as a held-back `head`). The file is grown in
//! PREALLOC_STEP_BYTES steps (zeroed in place, zeroed ahead in the background, or
//! fallocated: `Preallocation`), so bytes past the logical end are zeros or stale and
//! recovery (`scan`) stops at the first batch that is not whole, valid and in sequence.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Instant;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use crate::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use crate::config::{
    BLOCK_BYTES, PREALLOC_STEP_BYTES, PREZERO_AHEAD_BYTES, Preallocation, SCAN_READ_BYTES,
    WRITE_CHUNK_BYTES,
};
use crate::error::StorageError;
use crate::index::{IndexMeta, SegmentIndex};
use crate::store::Store;

/// Zero writes in flight at once when zeroing ahead in the background.
const PREZERO_BACKGROUND_WRITES: usize = 2;

/// Rounds down to the direct I/O block.
pub fn align_down(v: u64) -> u64 {
    v / BLOCK_BYTES * BLOCK_BYTES
}
/// Rounds up to the direct I/O block.
pub fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// File name of the segment with this base offset.
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// Opens a file for direct I/O; creates it only if `create` (a new segment): reopening an
/// existing segment must never recreate a file that retention removed meanwhile.
pub(crate) async fn open_dma(path: &Path, create: bool) -> Result<DmaFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::glommio("open", path, e))
}

/// Opens an existing segment file for writes that are durable on completion (O_DSYNC).
async fn open_dma_dsync(path: &Path) -> Result<DmaFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::glommio("open (O_DSYNC)", path, e))
}

/// A segment of a partition log.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
    store: Weak<Store>,
    file: RefCell<Option<Rc<DmaFile>>>,
    /// The next open may create the file (a new segment not opened yet).
    create: Cell<bool>,
    /// The same file opened again with O_DSYNC, for write rounds made durable by their
    /// writes (`SyncMethod::DsyncWrites`). Opened by rounds of the active segment (and of a
    /// just sealed one whose last rounds are still being written); dropped at seal and
    /// again at finalize, when every write of the segment completed, so it adds at most
    /// two descriptors per partition (during a roll) beyond the open_files_max count.
    dsync_file: RefCell<Option<Rc<DmaFile>>>,
    /// Bytes assigned to batches (queued or written).
    pub size_bytes: Cell<u64>,
    /// Bytes whose write completed (this and every earlier write of the segment).
    pub written_bytes: Cell<u64>,
    /// Bytes whose write has been formed and issued (>= written_bytes).
    pub issued_bytes: Cell<u64>,
    /// File size reached by preallocation (a multiple of BLOCK_BYTES once grown).
    pub allocated_bytes: Cell<u64>,
    /// A background zeroing (`Preallocation::ZeroAhead`) is in flight.
    growing: Cell<bool>,
    growth: RefCell<Option<glommio::Task<()>>>,
    /// Completion flag of the latest issued write of the block at align_down(issued_bytes).
    last_block_write: RefCell<Option<Rc<Cell<bool>>>>,
    /// Content of the block [align_down(issued_bytes), issued_bytes).
    tail: RefCell<Vec<u8>>,
    /// Offset after the last batch assigned to this segment.
    pub next_offset: Cell<i64>,
    pub created: Instant,
    pub index: RefCell<SegmentIndex>,
    /// No more batches go into this segment.
    pub sealed: Cell<bool>,
    /// Sealed, all data written, file truncated and synced, index files written.
    pub finalized: Cell<bool>,
}

/// What a scan of a segment file found.
pub(crate) struct ScanOutcome {
    pub valid_bytes: u64,
    pub next_offset: i64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop_reason: Option<String>,
    pub index: SegmentIndex,
}

impl Segment {
    /// A segment whose file exists (recovery).
    pub fn new(dir: &Path, base_offset: i64, store: &Rc<Store>) -> Segment {
        Segment::with_create(dir, base_offset, store, false)
    }

    /// A new segment: its first open creates the file (roll, a new partition).
    pub fn create(dir: &Path, base_offset: i64, store: &Rc<Store>) -> Segment {
        Segment::with_create(dir, base_offset, store, true)
    }

    fn with_create(dir: &Path, base_offset: i64, store: &Rc<Store>, create: bool) -> Segment {
        let path = dir.join(segment_file_name(base_offset));
        Segment {
            create: Cell::new(create),
            base_offset,
            index_path: path.with_extension("index"),
            time_index_path: path.with_extension("timeindex"),
            path,
            store: Rc::downgrade(store),
            file: RefCell::new(None),
            dsync_file: RefCell::new(None),
            size_bytes: Cell::new(0),
            written_bytes: Cell::new(0),
            issued_bytes: Cell::new(0),
            allocated_bytes: Cell::new(0),
            growing: Cell::new(false),
            growth: RefCell::new(None),
            last_block_write: RefCell::new(None),
            tail: RefCell::new(Vec::new()),
            next_offset: Cell::new(base_offset),
            created: Instant::now(),
            index: RefCell::new(SegmentIndex::default()),
            sealed: Cell::new(false),
            finalized: Cell::new(false),
        }
    }

    /// The open file, opening it (and counting it against the shard's open-files limit) if
    /// it was closed.
    pub async fn file(self: &Rc<Self>) -> Result<Rc<DmaFile>, StorageError> {
        if let Some(f) = self.file.borrow().as_ref() {
            return Ok(f.clone());
        }
        let created = self.create.get();
        let f = Rc::new(open_dma(&self.path, created).await?);
        self.create.set(false);
        if created && let Some(store) = self.store.upgrade() {
            store.journal_created(&self.path);
        }
        // Another task may have opened it meanwhile; keep one.
        if let Some(existing) = self.file.borrow().as_ref() {
            return Ok(existing.clone());
        }
        *self.file.borrow_mut() = Some(f.clone());
        if let Some(store) = self.store.upgrade() {
            store.note_file_opened(self);
        }
        Ok(f)
    }

    /// Drops the file handle if nobody uses it (for the open-files limit). True if closed.
    /// The O_DSYNC descriptor of the file (see `dsync_file`), opened on first use.
    pub async fn dsync_file(self: &Rc<Self>) -> Result<Rc<DmaFile>, StorageError> {
        if let Some(f) = self.dsync_file.borrow().as_ref() {
            return Ok(f.clone());
        }
        // The plain descriptor creates the file if needed and is the one accounted for.
        self.file().await?;
        let f = Rc::new(open_dma_dsync(&self.path).await?);
        if let Some(existing) = self.dsync_file.borrow().as_ref() {
            return Ok(existing.clone());
        }
        *self.dsync_file.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    /// Drops the O_DSYNC descriptor (the segment was sealed); writes in flight keep it.
    pub fn drop_dsync_file(&self) {
        self.dsync_file.borrow_mut().take();
    }

    pub fn try_close_file(&self) -> bool {
        let mut slot = self.file.borrow_mut();
        match slot.as_ref() {
            Some(f) if Rc::strong_count(f) == 1 => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    /// Drops the file handle (for removal); readers holding a clone keep it valid.
    pub fn forget_file(&self) {
        self.drop_dsync_file();
        if self.file.borrow_mut().take().is_some()
            && let Some(store) = self.store.upgrade()
        {
            store.note_file_closed();
        }
    }

    pub fn has_open_file(&self) -> bool {
        self.file.borrow().is_some()
    }

    pub fn meta(&self) -> IndexMeta {
        IndexMeta {
            base_offset: self.base_offset,
            covered_bytes: self.size_bytes.get(),
            next_offset: self.next_offset.get(),
            max_timestamp: self.index.borrow().max_timestamp,
        }
    }

    /// Sets the in-memory state after recovery found `valid_bytes` of good batches.
    /// `tail` is needed only for the segment that will be written (the active one).
    pub fn set_recovered(
        &self,
        valid_bytes: u64,
        next_offset: i64,
        allocated: u64,
        tail: Option<Vec<u8>>,
        index: SegmentIndex,
    ) {
        let tail = tail.unwrap_or_default();
        if !tail.is_empty() {
            assert_eq!(tail.len() as u64, valid_bytes - align_down(valid_bytes));
        }
        self.size_bytes.set(valid_bytes);
        self.written_bytes.set(valid_bytes);
        self.issued_bytes.set(valid_bytes);
        self.allocated_bytes.set(allocated);
        self.next_offset.set(next_offset);
        *self.tail.borrow_mut() = tail;
        *self.index.borrow_mut() = index;
    }

    /// The segment now ends at `size` bytes and `next_offset` (`Partition::truncate_to`,
    /// every write of it completed) and is the active one again: write state as after a
    /// recovery of that prefix, with `tail` the bytes of its partial last block and `index`
    /// cut there. The file itself is truncated by the caller.
    pub fn cut(&self, size: u64, next_offset: i64, tail: Vec<u8>, index: SegmentIndex) {
        assert_eq!(
            self.written_bytes.get(),
            self.size_bytes.get(),
            "cutting a segment with writes in flight"
        );
        assert!(size <= self.size_bytes.get());
        self.set_recovered(size, next_offset, size, Some(tail), index);
        self.last_block_write.borrow_mut().take();
        self.sealed.set(false);
        self.finalized.set(false);
    }

    /// Reads the bytes of the partial last block (for the write path after recovery).
    pub async fn read_tail_block(
        self: &Rc<Self>,
        valid_bytes: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let start = align_down(valid_bytes);
        if start == valid_bytes {
            return Ok(Vec::new());
        }
        let f = self.file().await?;
        let r = f
            .read_at_aligned(start, BLOCK_BYTES as usize)
            .await
            .map_err(|e| StorageError::glommio("read", &self.path, e))?;
        let need = (valid_bytes - start) as usize;
        if r.len() < need {
            return Err(StorageError::Corrupt {
                path: self.path.clone(),
                reason: format!("short read of tail block: {} of {need} bytes", r.len()),
            });
        }
        Ok(r[..need].to_vec())
    }

    /// Scans the file from position 0, verifying every batch (CRC, length, offsets in sequence
    /// from the base offset), and stops at the first one that is not valid. Calls `each` for
    /// every valid batch with its position.
    pub async fn scan(
        self: &Rc<Self>,
        file_size: u64,
        mut each: impl FnMut(u64, &BatchHeader),
    ) -> Result<ScanOutcome, StorageError> {
        let f = self.file().await?;
        let mut index = SegmentIndex::default();
        let mut pos = 0u64;
        let mut expected = self.base_offset;
        let mut buf = ReadResult::default();
        let mut buf_start = 0u64;
        let stop_reason;
        loop {
            if pos >= file_size {
                stop_reason = None;
                break;
            }
            if pos + BATCH_HEADER_BYTES as u64 > file_size {
                stop_reason = Some(format!(
                    "{} bytes too short for a batch header",
                    file_size - pos
                ));
                break;
            }
            // Make sure the header is in the buffer.
            if pos < buf_start || pos + BATCH_HEADER_BYTES as u64 > buf_start + buf.len() as u64 {
                buf_start = align_down(pos);
                let len = (align_up(file_size) - buf_start).min(SCAN_READ_BYTES as u64) as usize;
                buf = read_aligned(&f, &self.path, buf_start, len).await?;
            }
            let rel = (pos - buf_start) as usize;
            let head = &buf[rel..(rel + BATCH_HEADER_BYTES).min(buf.len())];
            if head.len() < BATCH_HEADER_BYTES {
                stop_reason = Some("short read".into());
                break;
            }
            if head.iter().all(|&b| b == 0) {
                stop_reason = Some("zero-filled tail".into());
                break;
            }
            let h = match batch::parse_header(head) {
                Ok(h) => h,
                Err(e) => {
                    stop_reason = Some(e.to_string());
                    break;
                }
            };
            let total = h.total_bytes() as u64;
            if pos + total > file_size {
                stop_reason = Some(format!(
                    "torn batch: {total} bytes, {} in file",
                    file_size - pos
                ));
                break;
            }
            if pos + total > buf_start + buf.len() as u64 {
                buf_start = align_down(pos);
                let len = (align_up(pos + total) - buf_start).max(SCAN_READ_BYTES as u64);
                let len = len.min(align_up(file_size) - buf_start) as usize;
                buf = read_aligned(&f, &self.path, buf_start, len).await?;
                if pos + total > buf_start + buf.len() as u64 {
                    stop_reason = Some("short read".into());
                    break;
                }
            }
            let rel = (pos - buf_start) as usize;
            let whole = &buf[rel..rel + total as usize];
            if let Err(e) = batch::check_one(whole, pos as usize) {
                stop_reason = Some(e.to_string());
                break;
            }
            // Offsets increase from batch to batch; a compacted (cleaned) segment may skip
            // some (whole batches removed by the cleaner), never go back. Stale batches of
            // a recycled file are below the segment's base, so they still stop the scan.
            if h.base_offset < expected {
                stop_reason = Some(format!(
                    "batch base offset {} below {expected}",
                    h.base_offset
                ));
                break;
            }
            let relative = (h.base_offset - self.base_offset) as u32;
            index.on_batch(relative, pos, total, h.max_timestamp);
            each(pos, &h);
            expected = h.last_offset() + 1;
            pos += total;
        }
        Ok(ScanOutcome {
            valid_bytes: pos,
            next_offset: expected,
            stop_reason,
            index,
        })
    }

    /// Forms the aligned writes of `items` (whole batches, contiguous from `issued_bytes`)
    /// with the kept tail block, and advances `issued_bytes` and the tail. Nothing is
    /// written here: the caller issues the writes, and sets `written_bytes` to `end` once
    /// they (and every earlier write of the segment) completed.
    ///
    /// When the run starts in the partly filled block and the earlier write of that block
    /// is still in flight, that block is formed as a separate write (`head`) that the
    /// caller must issue only once `head_after` is set (that earlier write completed): two
    /// writes of one block in flight at once may land in either order, and the older
    /// content must not win. The rest (`body`) can go out at once. The caller must set
    /// `last_done` when the write holding this run's last block completes (`head` if
    /// `last_is_head`, else the last of `body`).
    pub fn prepare_run(&self, file: &DmaFile, items: &[bytes::Bytes]) -> RunWrites {
        let start = self.issued_bytes.get();
        let block_pos = align_down(start);
        let data_len: u64 = items.iter().map(|b| b.len() as u64).sum();
        let end = start + data_len;
        assert!(
            end <= self.size_bytes.get(),
            "writing beyond assigned bytes"
        );
        assert!(!self.finalized.get(), "writing a finalized segment");
        let aligned_end = align_up(end);
        assert!(
            aligned_end <= self.allocated_bytes.get(),
            "writing beyond the preallocated end"
        );
        // The tail's Vec is reused for the new tail (no allocation per round).
        let mut tail = std::mem::take(&mut *self.tail.borrow_mut());
        assert_eq!(
            tail.len() as u64,
            start - block_pos,
            "tail block out of step"
        );
        let shares_block = start != block_pos;
        let prev = self.last_block_write.borrow_mut().take();
        let head_after = prev.filter(|done| shares_block && !done.get());
        let split_head = head_after.is_some();
        let last_done = Rc::new(Cell::new(false));
        *self.last_block_write.borrow_mut() = Some(last_done.clone());
        let mut out = RunWrites {
            head: None,
            head_after,
            last_done,
            last_is_head: false,
            body: Vec::with_capacity(
                (aligned_end - block_pos).div_ceil(WRITE_CHUNK_BYTES as u64) as usize + 1,
            ),
            end,
        };
        {
            let mut cursor = Cursor {
                tail: &tail,
                items,
                idx: 0,
                off: 0,
            };
            let mut chunk_pos = block_pos;
            while chunk_pos < aligned_end {
                let head = chunk_pos == block_pos && shares_block && split_head;
                let len = if head {
                    BLOCK_BYTES as usize
                } else {
                    ((aligned_end - chunk_pos) as usize).min(WRITE_CHUNK_BYTES)
                };
                let mut buf = file.alloc_dma_buffer(len);
                let dst = buf.as_bytes_mut();
                let filled = cursor.fill(dst);
                dst[filled..].fill(0);
                if head {
                    out.head = Some((chunk_pos, buf));
                } else {
                    out.body.push((chunk_pos, buf));
                }
                chunk_pos += len as u64;
            }
        }
        out.last_is_head = out.body.is_empty();
        // Keep the partly filled last block for the next run, copied from the last buffer.
        tail.clear();
        if let Some((pos, buf)) = out.body.last().or(out.head.as_ref()) {
            let keep_from = (align_down(end) - pos) as usize;
            tail.extend_from_slice(&buf.as_bytes()[keep_from..(end - pos) as usize]);
        }
        assert_eq!(tail.len() as u64, end - align_down(end));
        *self.tail.borrow_mut() = tail;
        self.issued_bytes.set(end);
        out
    }

    /// Makes sure the file is preallocated up to `needed` bytes before data is written
    /// there: waits for a background zeroing in progress, then grows in place if still
    /// short. Zeros are only ever written beyond every issued data write, and no data write
    /// is issued into a range being zeroed, so zeros never overwrite data.
    pub async fn ensure_allocated(
        self: &Rc<Self>,
        store: &Rc<Store>,
        file: &Rc<DmaFile>,
        needed: u64,
        segment_bytes_max: u64,
    ) -> Result<(), StorageError> {
        if needed <= self.allocated_bytes.get() {
            return Ok(());
        }
        self.wait_growth().await;
        let allocated = self.allocated_bytes.get();
        if needed <= allocated {
            return Ok(());
        }
        // A step, but never past the segment's size (a 1 MiB segment took 8 MiB until its
        // roll trimmed it: on a nearly full disk that went through the free-space reserve),
        // and never less than `needed` (a batch larger than the segment still fits).
        let new_end = (needed.div_ceil(PREALLOC_STEP_BYTES) * PREALLOC_STEP_BYTES)
            .min(align_up(segment_bytes_max))
            .max(needed);
        assert_eq!(new_end % BLOCK_BYTES, 0);
        // Every issued write ends at or before `allocated`, and the round that asked for
        // `needed` writes all of [issued, needed) itself: zeros go beyond.
        assert!(align_up(self.issued_bytes.get()) <= align_up(allocated).max(needed));
        let from = align_up(allocated).max(needed);
        grow_range(store, file, &self.path, from, new_end, false).await?;
        self.allocated_bytes.set(new_end);
        Ok(())
    }

    /// With `Preallocation::ZeroAhead`: starts zeroing the next step in the background when
    /// the issued data comes within PREZERO_AHEAD_BYTES of the preallocated end, never
    /// beyond `segment_bytes_max` (the segment rolls before it; a batch that still needs
    /// more is grown in place by `ensure_allocated`).
    pub fn grow_ahead(
        self: &Rc<Self>,
        store: &Rc<Store>,
        file: &Rc<DmaFile>,
        segment_bytes_max: u64,
    ) {
        if store.config().segment_preallocation != Preallocation::ZeroAhead
            || self.growing.get()
            || self.sealed.get()
        {
            return;
        }
        let allocated = self.allocated_bytes.get();
        let issued = align_up(self.issued_bytes.get());
        if allocated == 0 || issued + PREZERO_AHEAD_BYTES <= allocated {
            return;
        }
        let limit = align_up(segment_bytes_max);
        if allocated >= limit {
            return;
        }
        let new_end =
            ((allocated + 1).div_ceil(PREALLOC_STEP_BYTES) * PREALLOC_STEP_BYTES).min(limit);
        let from = align_up(allocated).max(issued);
        self.growing.set(true);
        let (seg, store, file) = (self.clone(), store.clone(), file.clone());
        let task = glommio::spawn_local(async move {
            match grow_range(&store, &file, &seg.path, from, new_end, true).await {
                Ok(()) => seg
                    .allocated_bytes
                    .set(new_end.max(seg.allocated_bytes.get())),
                // Not fatal here: the round that needs the space grows it in place and
                // reports the error then.
                Err(e) => log::warn!("{}: background pre-zeroing: {e}", seg.path.display()),
            }
            seg.growing.set(false);
        });
        // A finished earlier task (if any) is simply dropped.
        *self.growth.borrow_mut() = Some(task);
    }

    /// Waits until no background zeroing of this segment is in flight.
    pub async fn wait_growth(&self) {
        let task = self.growth.borrow_mut().take();
        if let Some(t) = task {
            t.await;
        }
        assert!(!self.growing.get(), "background zeroing still in flight");
    }

    /// fdatasync of the segment file (through the shard's fault hook).
    pub async fn sync(self: &Rc<Self>, store: &Store) -> Result<(), StorageError> {
        let f = self.file().await?;
        store.fdatasync(&f, &self.path).await
    }

    /// After sealing and the last write: cut the preallocation, sync, write the index files.
    pub async fn finalize(self: &Rc<Self>, store: &Store) -> Result<(), StorageError> {
        assert!(self.sealed.get());
        assert_eq!(self.written_bytes.get(), self.size_bytes.get());
        // A zero write landing after the truncate would grow the file again.
        self.wait_growth().await;
        // Every write completed (written == size): no round needs O_DSYNC any more.
        self.drop_dsync_file();
        let f = self.file().await?;
        f.truncate(self.size_bytes.get())
            .await
            .map_err(|e| StorageError::glommio("truncate", &self.path, e))?;
        self.allocated_bytes.set(self.size_bytes.get());
        store.fdatasync(&f, &self.path).await?;
        let meta = self.meta();
        if let Err(e) =
            self.index
                .borrow()
                .write_files(&meta, &self.index_path, &self.time_index_path)
        {
            // The index is a cache of a scan: losing it costs a rebuild on the next open only.
            log::warn!("{}: could not write index files: {e}", self.path.display());
        } else {
            store.journal_renamed(&self.index_path, false);
            store.journal_renamed(&self.time_index_path, false);
        }
        self.finalized.set(true);
        Ok(())
    }

    /// Takes a recycled file (already renamed to this segment's path) of `file_bytes`:
    /// its blocks are allocated and written, so they count as preallocated.
    pub fn adopt_recycled(&self, file_bytes: u64) {
        assert_eq!(
            self.issued_bytes.get(),
            0,
            "adopting a file into a written segment"
        );
        self.allocated_bytes.set(align_down(file_bytes));
    }

    /// Removes the segment's index files only (its log file is recycled).
    pub fn remove_index_files(&self) -> Result<(), StorageError> {
        for p in [&self.index_path, &self.time_index_path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", p.clone(), e)),
            }
        }
        Ok(())
    }

    /// Removes the segment's files (the open handle, if any, stays valid for readers).
    pub fn remove_files(&self) -> Result<(), StorageError> {
        for p in [&self.path, &self.index_path, &self.time_index_path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", p.clone(), e)),
            }
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.file.get_mut().take().is_some()
            && let Some(store) = self.store.upgrade()
        {
            store.note_file_closed();
        }
    }
}

/// The writes of one run of batches into one segment, formed by `Segment::prepare_run`.
pub(crate) struct RunWrites {
    /// The shared partial block, to be written only once `head_after` is set.
    pub head: Option<(u64, DmaBuffer)>,
    /// Completion flag of the earlier in-flight write of the shared block.
    pub head_after: Option<Rc<Cell<bool>>>,
    /// To be set when the write of this run's last block completed.
    pub last_done: Rc<Cell<bool>>,
    /// This run's last block is in `head` (else in the last `body` write).
    pub last_is_head: bool,
    /// Aligned chunks that may be written at once, concurrently.
    pub body: Vec<(u64, DmaBuffer)>,
    /// Segment position after the run (the new `written_bytes` once all writes completed).
    pub end: u64,
}

/// Grows `[from, to)` of the file per the store's `Preallocation`: zeros written in
/// WRITE_CHUNK_BYTES chunks concurrently, or one fallocate.
/// `background`: at most PREZERO_BACKGROUND_WRITES zero writes in flight, so that zeroing
/// ahead takes few of the shard's write permits from data writes.
async fn grow_range(
    store: &Rc<Store>,
    file: &Rc<DmaFile>,
    path: &Path,
    from: u64,
    to: u64,
    background: bool,
) -> Result<(), StorageError> {
    assert_eq!(from % BLOCK_BYTES, 0);
    assert_eq!(to % BLOCK_BYTES, 0);
    match store.config().segment_preallocation {
        Preallocation::Zero | Preallocation::ZeroAhead => {
            let mut pos = from;
            let mut tasks = std::collections::VecDeque::new();
            let mut res = Ok(());
            let zeros = store.zeros(file);
            while pos < to {
                if background
                    && tasks.len() >= PREZERO_BACKGROUND_WRITES
                    && let Some(t) = tasks.pop_front()
                    && let Err(e) = t.await
                {
                    res = Err(e);
                }
                let len = ((to - pos) as usize).min(WRITE_CHUNK_BYTES);
                let t = if len == zeros.len() {
                    store.spawn_write(file.clone(), path.to_path_buf(), zeros.clone(), pos, false)
                } else {
                    let mut buf = file.alloc_dma_buffer(len);
                    buf.as_bytes_mut().fill(0);
                    store.spawn_write(file.clone(), path.to_path_buf(), buf, pos, false)
                };
                tasks.push_back(t);
                pos += len as u64;
            }
            for t in tasks {
                if let Err(e) = t.await {
                    res = Err(e);
                }
            }
            res
        }
        Preallocation::Fallocate => file
            .pre_allocate(to, false)
            .await
            .map_err(|e| StorageError::glommio("fallocate", path, e)),
    }
}

pub(crate) async fn read_aligned(
    f: &DmaFile,
    path: &Path,
    pos: u64,
    len: usize,
) -> Result<ReadResult, StorageError> {
    debug_assert_eq!(pos % BLOCK_BYTES, 0);
    debug_assert_eq!(len as u64 % BLOCK_BYTES, 0);
    f.read_at_aligned(pos, len)
        .await
        .map_err(|e| StorageError::glommio("read", path, e))
}

/// Copies the kept tail block and then a sequence of batches into consecutive buffers
/// (without collecting them into a list first: no allocation per round).
struct Cursor<'a> {
    tail: &'a [u8],
    items: &'a [bytes::Bytes],
    /// 0 is the tail, i > 0 is items[i - 1].
    idx: usize,
    off: usize,
}

impl Cursor<'_> {
    fn source(&self, idx: usize) -> Option<&[u8]> {
        if idx == 0 {
            Some(self.tail)
        } else {
            self.items.get(idx - 1).map(|b| &b[..])
        }
    }

    fn fill(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let Some(src) = self.source(self.idx) else {
                break;
            };
            let src_len = src.len();
            let src = &src[self.off..];
            let k = src.len().min(dst.len() - n);
            dst[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            self.off += k;
            if self.off == src_len {
                self.idx += 1;
                self.off = 0;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Proves the cursor copies the concatenation of its sources exactly, whatever the chunking.
        #[test]
        fn cursor_concatenates(tail in proptest::collection::vec(any::<u8>(), 0..50), srcs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..10), chunk in 1usize..64) {
            let items: Vec<bytes::Bytes> = srcs.iter().map(|v| bytes::Bytes::copy_from_slice(v)).collect();
            let want: Vec<u8> = [vec![tail.clone()], srcs].concat().concat();
            let mut c = Cursor { tail: &tail, items: &items, idx: 0, off: 0 };
            let mut got = Vec::new();
            loop {
                let mut buf = vec![0u8; chunk];
                let n = c.fill(&mut buf);
                got.extend_from_slice(&buf[..n]);
                if n < chunk { break; }
            }
            prop_assert_eq!(got, want);
        }

        // Proves the alignment helpers bracket every value by whole blocks.
        #[test]
        fn alignment(v in 0u64..(1 << 40)) {
            prop_assert!(align_down(v) <= v && v <= align_up(v));
            prop_assert_eq!(align_down(v) % BLOCK_BYTES, 0);
            prop_assert_eq!(align_up(v) % BLOCK_BYTES, 0);
            prop_assert!(align_up(v) - align_down(v) <= BLOCK_BYTES);
        }
    }
}
