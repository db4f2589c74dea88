//! One log segment: the file `<base offset, 20 digits>.log` holding whole record batches
//! back to back, written with direct I/O, plus its in-memory sparse index.
//!
//! Runs on the shard's own core. Write discipline: every write is 4096-aligned in offset and
//! length; the partly filled last block is kept in memory (`tail`) and rewritten, padded
//! with zeros, by the next write. The file is grown in PREALLOC_STEP_BYTES steps (written
//! with zeros or fallocated), so bytes past the logical end are zeros or stale and
//! recovery (`scan`) stops at the first batch that is not whole, valid and in sequence.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Instant;

use glommio::io::{DmaFile, OpenOptions, ReadResult};

use crate::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use crate::config::{BLOCK_BYTES, PREALLOC_STEP_BYTES, SCAN_READ_BYTES, WRITE_CHUNK_BYTES};
use crate::error::StorageError;
use crate::index::{IndexMeta, SegmentIndex};
use crate::store::Store;

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

pub(crate) async fn open_dma(path: &Path) -> Result<DmaFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::glommio("open", path, e))
}

/// A segment of a partition log.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
    store: Weak<Store>,
    file: RefCell<Option<Rc<DmaFile>>>,
    /// Bytes assigned to batches (queued or written).
    pub size_bytes: Cell<u64>,
    /// Bytes whose write completed.
    pub written_bytes: Cell<u64>,
    /// File size reached by preallocation (a multiple of BLOCK_BYTES once grown).
    pub allocated_bytes: Cell<u64>,
    /// Content of the block [align_down(written_bytes), written_bytes).
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
    pub fn new(dir: &Path, base_offset: i64, store: &Rc<Store>) -> Segment {
        let path = dir.join(segment_file_name(base_offset));
        Segment {
            base_offset,
            index_path: path.with_extension("index"),
            time_index_path: path.with_extension("timeindex"),
            path,
            store: Rc::downgrade(store),
            file: RefCell::new(None),
            size_bytes: Cell::new(0),
            written_bytes: Cell::new(0),
            allocated_bytes: Cell::new(0),
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
        let f = Rc::new(open_dma(&self.path).await?);
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
        self.allocated_bytes.set(allocated);
        self.next_offset.set(next_offset);
        *self.tail.borrow_mut() = tail;
        *self.index.borrow_mut() = index;
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
            if h.base_offset != expected {
                stop_reason = Some(format!(
                    "batch base offset {} where {expected} was expected",
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

    /// Writes `items` (whole batches, contiguous from `written_bytes`) with the kept tail
    /// block, in aligned chunks issued concurrently. Grows the file first if needed.
    pub async fn write_run(
        self: &Rc<Self>,
        store: &Rc<Store>,
        items: &[bytes::Bytes],
    ) -> Result<(), StorageError> {
        let file = self.file().await?;
        let start = self.written_bytes.get();
        let block_pos = align_down(start);
        let data_len: u64 = items.iter().map(|b| b.len() as u64).sum();
        let end = start + data_len;
        assert!(
            end <= self.size_bytes.get(),
            "writing beyond assigned bytes"
        );
        let aligned_end = align_up(end);
        self.grow(store, &file, aligned_end, prezero_start(aligned_end))
            .await?;

        let tail = std::mem::take(&mut *self.tail.borrow_mut());
        assert_eq!(
            tail.len() as u64,
            start - block_pos,
            "tail block out of step"
        );
        let mut sources: Vec<&[u8]> = Vec::with_capacity(items.len() + 1);
        sources.push(&tail);
        sources.extend(items.iter().map(|b| &b[..]));
        let mut cursor = Cursor {
            sources: &sources,
            idx: 0,
            off: 0,
        };
        let mut tasks = Vec::new();
        let mut chunk_pos = block_pos;
        let mut new_tail = Vec::new();
        while chunk_pos < aligned_end {
            let len = ((aligned_end - chunk_pos) as usize).min(WRITE_CHUNK_BYTES);
            let mut buf = file.alloc_dma_buffer(len);
            let dst = buf.as_bytes_mut();
            let filled = cursor.fill(dst);
            dst[filled..].fill(0);
            if chunk_pos + len as u64 == aligned_end {
                let keep_from = (align_down(end) - chunk_pos) as usize;
                new_tail = dst[keep_from..filled].to_vec();
            }
            tasks.push(store.spawn_write(file.clone(), self.path.clone(), buf, chunk_pos));
            chunk_pos += len as u64;
        }
        let mut result = Ok(());
        for t in tasks {
            if let Err(e) = t.await {
                result = Err(e);
            }
        }
        if let Err(e) = result {
            // Keep the old tail so that the state stays consistent; the partition stops anyway.
            *self.tail.borrow_mut() = tail.clone();
            return Err(e);
        }
        assert_eq!(new_tail.len() as u64, end - align_down(end));
        *self.tail.borrow_mut() = new_tail;
        self.written_bytes.set(end);
        Ok(())
    }

    /// Makes the file at least `needed` bytes long, in PREALLOC_STEP_BYTES steps: with
    /// pre-zeroing, zeros are written over [max(old end, data_end), new end) (the data write
    /// covers the rest); otherwise the range is fallocated.
    async fn grow(
        &self,
        store: &Rc<Store>,
        file: &Rc<DmaFile>,
        needed: u64,
        data_end: u64,
    ) -> Result<(), StorageError> {
        let allocated = self.allocated_bytes.get();
        if needed <= allocated {
            return Ok(());
        }
        let new_end = needed.div_ceil(PREALLOC_STEP_BYTES) * PREALLOC_STEP_BYTES;
        assert_eq!(new_end % BLOCK_BYTES, 0);
        if store.config().segment_prezero {
            let mut pos = align_up(allocated).max(data_end);
            let mut tasks = Vec::new();
            while pos < new_end {
                let len = ((new_end - pos) as usize).min(WRITE_CHUNK_BYTES);
                let mut buf = file.alloc_dma_buffer(len);
                buf.as_bytes_mut().fill(0);
                tasks.push(store.spawn_write(file.clone(), self.path.clone(), buf, pos));
                pos += len as u64;
            }
            for t in tasks {
                t.await?;
            }
        } else {
            file.pre_allocate(new_end, false)
                .await
                .map_err(|e| StorageError::glommio("fallocate", &self.path, e))?;
        }
        self.allocated_bytes.set(new_end);
        Ok(())
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
        }
        self.finalized.set(true);
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

/// With pre-zeroing, zeros start where the data write ends.
fn prezero_start(aligned_end: u64) -> u64 {
    aligned_end
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

/// Copies a sequence of byte slices into consecutive buffers.
struct Cursor<'a> {
    sources: &'a [&'a [u8]],
    idx: usize,
    off: usize,
}

impl Cursor<'_> {
    fn fill(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() && self.idx < self.sources.len() {
            let src = &self.sources[self.idx][self.off..];
            let k = src.len().min(dst.len() - n);
            dst[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            self.off += k;
            if self.off == self.sources[self.idx].len() {
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
        fn cursor_concatenates(srcs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..10), chunk in 1usize..64) {
            let refs: Vec<&[u8]> = srcs.iter().map(|v| &v[..]).collect();
            let want: Vec<u8> = srcs.concat();
            let mut c = Cursor { sources: &refs, idx: 0, off: 0 };
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
