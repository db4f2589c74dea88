//! Log compaction (Kafka's log cleaner) of a partition whose cleanup.policy contains
//! `compact`: sealed segments are rewritten keeping the latest record per key.
//!
//! Runs on the shard that owns the partition: one cleaner task per shard
//! (`Store::start_background`) cleans its compacted partitions one at a time, one segment
//! at a time, with the shard's bounded key map (`StoreConfig::cleaner_key_map_max_bytes`),
//! one read and one write buffer of CLEANER_IO_BUFFER_BYTES, its writes under the shard's
//! write permits, and its I/O bounded by `StoreConfig::cleaner_io_max_bytes_per_sec`. A child module of `partition`: it works on the log's own state.
//!
//! A pass (`Partition::clean_pass`):
//! 1. The cleanable segments are the sealed, finalized ones (never the active segment)
//!    whose newest timestamp is at least min.compaction.lag.ms old and which end at or
//!    below `Partition::set_cleanable_end` (a replicated partition's high watermark: what
//!    a truncation may still take must never be what a removal relied on), a prefix of the
//!    log.
//!    The dirty part starts at the first dirty offset (`CLEANER_CHECKPOINT_FILE`, else the
//!    log start). A pass runs when dirty bytes / cleanable bytes reach
//!    min.cleanable.dirty.ratio, or when the first dirty segment's oldest batch is older
//!    than max.compaction.lag.ms.
//! 2. The key map (128-bit hash of the key -> latest offset) is built from the dirty
//!    records. When it fills, the pass maps only the records before that point (`map_end`)
//!    and cleans with that, as Kafka cleans a prefix of the dirty segments: a record is
//!    only ever removed for a later record of its key, so a partial map is always safe.
//! 3. Every cleanable segment holding offsets below `map_end` is rewritten, consecutive
//!    ones merged into one (`group_segments`, Kafka's groupSegmentsBySize: current sizes
//!    summing to at most segment.bytes, offsets spanning at most i32::MAX, index entries
//!    within INDEX_ENTRIES_MAX). A record goes when a later record of its key is mapped,
//!    when it has no key (Kafka's cleaner drops those too), or when it is a tombstone below
//!    `map_end` in a batch whose delete horizon has passed (KIP-534; no longer once the
//!    pass met a batch it cannot read: it is kept whole, unmapped, and could hide an older
//!    record of the tombstone's key). The delete horizon: the first cleaning that keeps a
//!    tombstone of a batch without one rewrites the batch with attributes bit 6 set and the
//!    base timestamp = cleaning time + delete.retention.ms, every kept record's timestamp
//!    delta rebased on it (`batch::rebase_records`, as Kafka's MemoryRecordsBuilder), so
//!    record timestamps, maxTimestamp, the time index and lookups by timestamp stay as they
//!    were. A later delete.retention.ms change does not move a stamped horizon (as in
//!    Kafka). The earliest horizon still ahead is kept in memory and makes a pass due when
//!    it passes, new writes or not (Kafka waits for the dirty ratio; after a restart so do
//!    we). A batch keeps its base offset, lastOffsetDelta and producer fields (Kafka's
//!    cleaner does the same), so offsets never change, only gaps appear; a batch left
//!    without records is dropped, except the rewrite's last batch, which stays as an
//!    empty batch so that the segment still ends at its original end offset (recovery
//!    checks that each segment starts where the previous one ends), and an idempotent
//!    producer's latest batch (its sequence state, as Kafka keeps it). Records of aborted
//!    transactions are neither mapped nor kept (Kafka's cleaner discards them), and a pass
//!    never goes past the first offset of an open transaction (the last stable offset).
//!    Control batches are kept whole (no transaction-marker removal yet). A compressed batch that is rebuilt is
//!    compressed again with its codec through the store's compressor (the broker's; the
//!    storage has no codecs), else stored uncompressed, unless that makes it larger than
//!    max.message.bytes (or the store's batch_max_bytes): then it stays whole, superseded
//!    records included, since a follower copying the log would refuse it.
//! 4. The swap: the rewrite goes to `<base>.cleaned`, is truncated to its length and
//!    fdatasync'ed. One segment: its old index files are removed, then the rewrite is
//!    renamed over `<base>.log` (atomic: a crash leaves the old or the new file, both whole
//!    logs of the same offsets). A merge of segments [base, end): the rewrite is renamed to
//!    `<base>-<end>.swap` (the commit point), the merged segments' index files and every
//!    merged log file but the first removed, then the swap file renamed over `<base>.log`;
//!    recovery (`complete_merges`, before the segments are listed) finishes any merge that
//!    reached its swap name, whichever of its steps a crash cut. In both cases the
//!    in-memory segments are replaced in the same synchronous section, then the index
//!    files written and the directory fsync'ed. Recovery removes a leftover `.cleaned`
//!    file; a stale index is rebuilt by a scan. The tail cache below the rewrite's end is
//!    evicted, so readers never see superseded records from it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use glommio::io::{DmaBuffer, DmaFile};

use super::*;
use crate::config::{CLEANER_IO_BUFFER_BYTES, CLEANER_MAP_ENTRY_BYTES};
use crate::segment::{open_dma, segment_file_name};

/// Suffix of a segment's rewrite before it is swapped in.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a merged rewrite at its commit point: `<base>-<end>.swap` holds every offset
/// of [base, end) and replaces the segments there (recovery completes the swap).
pub(crate) const SWAP_SUFFIX: &str = ".swap";
/// Most offsets one merged segment spans: its index keeps offsets relative to its base
/// (Kafka's groupSegmentsBySize bounds it the same way).
const MERGE_OFFSET_SPAN_MAX: i64 = i32::MAX as i64;
/// File of a partition directory holding the first dirty offset of the cleaner (offset,
/// crc32c). Not fsync'ed: a lost or older one only makes the next pass clean more.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset.checkpoint";

/// Where an injected crash stops a segment's cleaning (`FaultInjector::crash_cleaner_at`):
/// the cleaner returns an error right after the step and leaves the files as a crash
/// would, so a test can take a crash image there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanerCrashPoint {
    /// The rewrite's data is written to `<base>.cleaned`, not yet truncated nor synced.
    CleanedWritten,
    /// The rewrite is truncated and fdatasync'ed, not yet renamed over the segment.
    CleanedSynced,
    /// The rewrite was renamed over the segment; index files and directory not yet done.
    Swapped,
    /// A merge: the synced rewrite was renamed to `<base>-<end>.swap` (its commit point);
    /// the merged segments are all still there.
    MergeSwapNamed,
    /// A merge: the merged segments' index files and the second segment's log file are
    /// removed, the later ones not yet.
    MergeOneRemoved,
    /// A merge: every merged segment but the first is removed; the swap file is not yet
    /// renamed over the first.
    MergeOldRemoved,
}

/// The cleaner's key -> latest offset map, bounded in memory (see `KeyMap::new`).
pub(crate) struct KeyMap {
    map: HashMap<u128, i64>,
    max_entries: usize,
}

impl KeyMap {
    /// A map whose table fits `max_bytes`: the largest power of two of slots that fits,
    /// 7/8 of them usable, allocated at once (growing by doubling would hold the old and
    /// the new table together).
    pub(crate) fn new(max_bytes: usize) -> KeyMap {
        let slots = (max_bytes / CLEANER_MAP_ENTRY_BYTES).max(8);
        let slots = 1usize << (usize::BITS - 1 - slots.leading_zeros());
        let max_entries = slots / 8 * 7;
        KeyMap {
            map: HashMap::with_capacity(max_entries),
            max_entries,
        }
    }

    fn clear(&mut self) {
        self.map.clear();
    }

    /// Records `offset` as the latest of `key`; false (nothing recorded) when the key is
    /// new and the map is full.
    fn put(&mut self, key: u128, offset: i64) -> bool {
        if let Some(v) = self.map.get_mut(&key) {
            *v = (*v).max(offset);
            return true;
        }
        if self.map.len() >= self.max_entries {
            return false;
        }
        self.map.insert(key, offset);
        true
    }

    fn get(&self, key: u128) -> Option<i64> {
        self.map.get(&key).copied()
    }
}

/// 128 bits of hash of a record key (two SipHashes with different prefixes), so two keys
/// are taken for one with a probability far below that of a disk error. The map lives
/// for one pass only, so the hash need not be stable across processes.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What one cleaning pass over a partition did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments rewritten and swapped in (each merged segment counts).
    pub segments_cleaned: usize,
    /// Segments folded into the segment before them by a merge.
    pub segments_merged: usize,
    /// Tombstones removed because their batch's delete horizon had passed.
    pub tombstones_removed: u64,
    /// Batches newly stamped with a delete horizon.
    pub horizons_set: u64,
    /// Log bytes read (map building and rewriting).
    pub bytes_read: u64,
    /// Bytes of the segments rewritten, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// The first dirty offset after the pass.
    pub first_dirty_offset: i64,
    /// The key map filled: only a prefix of the dirty records was mapped.
    pub map_full: bool,
    /// Batches whose records could not be read (kept whole). Once one is met, the pass
    /// removes no more tombstones: an older record of a tombstone's key could hide there.
    pub unreadable_batches: u64,
}

pub(crate) fn read_checkpoint(dir: &Path) -> Option<i64> {
    let b = std::fs::read(dir.join(CLEANER_CHECKPOINT_FILE)).ok()?;
    if b.len() != 12 {
        return None;
    }
    let off: [u8; 8] = b[..8].try_into().ok()?;
    let crc = u32::from_le_bytes(b[8..].try_into().ok()?);
    (crc32c::crc32c(&off) == crc).then(|| i64::from_le_bytes(off))
}

fn write_checkpoint(dir: &Path, offset: i64) -> std::io::Result<()> {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32c::crc32c(&offset.to_le_bytes()).to_le_bytes());
    let tmp = dir.join("cleaner-offset.checkpoint.tmp");
    std::fs::write(&tmp, &b)?;
    std::fs::rename(&tmp, dir.join(CLEANER_CHECKPOINT_FILE))
}

/// Name of a merge's swap file: `<base>-<end>.swap` (both 20 digits).
fn swap_file_name(base: i64, end: i64) -> String {
    format!("{base:020}-{end:020}{SWAP_SUFFIX}")
}

/// Completes every merge of the cleaner in `dir` that reached its commit point (a
/// `<base>-<end>.swap` file, whole and synced before it got that name): removes the
/// segment files with a base in [base, end), whichever are left, and renames the swap
/// file to `<base>.log`. Synchronous: runs at open, before the segments are listed.
/// True if it changed the directory (the caller fsyncs it).
pub(crate) fn complete_merges(dir: &Path) -> Result<bool, StorageError> {
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("read dir", dir, e))?;
    let mut swaps = Vec::new();
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| StorageError::io("read dir", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            if let Some((b, e)) = stem.split_once('-')
                && b.len() == 20
                && e.len() == 20
                && let (Ok(b), Ok(e)) = (b.parse::<i64>(), e.parse::<i64>())
                && b < e
            {
                swaps.push((b, e, entry.path()));
            }
        } else if let Some((stem, ext)) = name.split_once('.')
            && stem.len() == 20
            && matches!(ext, "log" | "index" | "timeindex")
            && let Ok(base) = stem.parse::<i64>()
        {
            files.push((base, entry.path()));
        }
    }
    for (b, e, swap) in &swaps {
        for (base, path) in files.iter().filter(|(base, _)| (*b..*e).contains(base)) {
            log::info!(
                "{}: completing a merge of the log cleaner: removing {} (base {base})",
                swap.display(),
                path.display()
            );
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(StorageError::io("remove", path.clone(), err)),
            }
        }
        let target = dir.join(segment_file_name(*b));
        std::fs::rename(swap, &target).map_err(|err| StorageError::io("rename", swap, err))?;
    }
    Ok(!swaps.is_empty())
}

/// Groups consecutive segments to be cleaned into merges (Kafka's `groupSegmentsBySize`):
/// a group grows while its segments' current sizes sum to at most `max_bytes`, its
/// offsets span at most MERGE_OFFSET_SPAN_MAX and its index entries fit INDEX_ENTRIES_MAX.
/// A segment wholly below the log start (retention's to delete) stays alone, so that a
/// merge never keeps it alive. Every segment is in exactly one group, in order.
fn group_segments(segs: &[Rc<Segment>], max_bytes: u64, log_start: i64) -> Vec<Vec<Rc<Segment>>> {
    let mut groups: Vec<Vec<Rc<Segment>>> = Vec::new();
    let (mut bytes, mut entries) = (0u64, 0usize);
    for seg in segs {
        let size = seg.size_bytes.get();
        let n = seg.index.borrow().entries.len();
        let fits = groups.last().is_some_and(|g| {
            g[0].next_offset.get() > log_start
                && bytes.saturating_add(size) <= max_bytes
                && entries + n <= crate::index::INDEX_ENTRIES_MAX
                && seg.next_offset.get() - 1 - g[0].base_offset <= MERGE_OFFSET_SPAN_MAX
        });
        if fits {
            if let Some(g) = groups.last_mut() {
                g.push(seg.clone());
            }
            bytes += size;
            entries += n;
        } else {
            groups.push(vec![seg.clone()]);
            bytes = size;
            entries = n;
        }
    }
    groups
}

/// Reads the batches of a segment in order, CLEANER_IO_BUFFER_BYTES at a time (a larger
/// batch is read whole), each CRC-checked.
struct BatchReader {
    store: Rc<Store>,
    file: Rc<DmaFile>,
    path: PathBuf,
    limit: u64,
    pos: u64,
    buf: ReadResult,
    buf_start: u64,
    /// End offset of the last batch returned: offsets must grow (checked, never assumed).
    next_offset: Option<i64>,
}

impl BatchReader {
    fn new(
        store: Rc<Store>,
        file: Rc<DmaFile>,
        path: PathBuf,
        start: u64,
        limit: u64,
    ) -> BatchReader {
        BatchReader {
            store,
            file,
            path,
            limit,
            pos: start,
            buf: ReadResult::default(),
            buf_start: 0,
            next_offset: None,
        }
    }

    fn corrupt(&self, reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            reason: format!("byte {}: {reason} (log cleaner)", self.pos),
        }
    }

    async fn fill(&mut self, need: u64) -> Result<(), StorageError> {
        let end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + need <= end {
            return Ok(());
        }
        self.buf_start = align_down(self.pos);
        let want = need.max(CLEANER_IO_BUFFER_BYTES as u64);
        let len = align_up(self.limit.min(self.pos + want)) - self.buf_start;
        self.store.cleaner_throttle(len).await;
        self.buf = read_aligned(&self.file, &self.path, self.buf_start, len as usize).await?;
        if self.pos + need > self.buf_start + self.buf.len() as u64 {
            return Err(self.corrupt("short read".into()));
        }
        Ok(())
    }

    /// The next batch: (position, header, its bytes), None at the end.
    async fn next(&mut self) -> Result<Option<(u64, BatchHeader, ReadResult)>, StorageError> {
        if self.pos >= self.limit {
            return Ok(None);
        }
        if self.pos + BATCH_HEADER_BYTES as u64 > self.limit {
            return Err(self.corrupt("batch header crosses the segment end".into()));
        }
        self.fill(BATCH_HEADER_BYTES as u64).await?;
        let rel = (self.pos - self.buf_start) as usize;
        let h = batch::parse_header(&self.buf[rel..]).map_err(|e| self.corrupt(e.to_string()))?;
        let total = h.total_bytes() as u64;
        if self.pos + total > self.limit {
            return Err(self.corrupt(format!("batch of {total} bytes crosses the segment end")));
        }
        self.fill(total).await?;
        let rel = (self.pos - self.buf_start) as usize;
        batch::check_one(&self.buf[rel..rel + total as usize], rel)
            .map_err(|e| self.corrupt(e.to_string()))?;
        if self.next_offset.is_some_and(|n| h.base_offset < n) {
            return Err(self.corrupt(format!("batch offset {} goes back", h.base_offset)));
        }
        self.next_offset = Some(h.last_offset() + 1);
        let bytes = ReadResult::slice(&self.buf, rel, total as usize)
            .ok_or_else(|| self.corrupt("slice outside the read buffer".into()))?;
        let at = self.pos;
        self.pos += total;
        Ok(Some((at, h, bytes)))
    }
}

/// Writes a segment's rewrite through one CLEANER_IO_BUFFER_BYTES buffer, one aligned write
/// in flight (under the shard's write permits and fault hook).
struct CleanedWriter {
    store: Rc<Store>,
    file: Rc<DmaFile>,
    path: PathBuf,
    buf: DmaBuffer,
    filled: usize,
    /// File position of `buf`'s first byte.
    written: u64,
}

impl CleanedWriter {
    fn position(&self) -> u64 {
        self.written + self.filled as u64
    }

    async fn push(&mut self, mut data: &[u8]) -> Result<(), StorageError> {
        while !data.is_empty() {
            let k = (self.buf.len() - self.filled).min(data.len());
            self.buf.as_bytes_mut()[self.filled..self.filled + k].copy_from_slice(&data[..k]);
            self.filled += k;
            data = &data[k..];
            if self.filled == self.buf.len() {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes the buffer (padded with zeros) at its position; a partial last buffer's
    /// padding is cut by `finish`.
    async fn flush(&mut self) -> Result<(), StorageError> {
        if self.filled == 0 {
            return Ok(());
        }
        self.buf.as_bytes_mut()[self.filled..].fill(0);
        let cap = self.buf.len();
        let full = std::mem::replace(&mut self.buf, self.file.alloc_dma_buffer(cap));
        let pos = self.written;
        self.store.cleaner_throttle(cap as u64).await;
        self.store
            .spawn_write(self.file.clone(), self.path.clone(), full, pos, false)
            .await?;
        self.written += cap as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is buffered, cuts the file at the data's end and fdatasyncs it.
    async fn finish(&mut self) -> Result<u64, StorageError> {
        let size = self.position();
        self.flush().await?;
        self.file
            .truncate(size)
            .await
            .map_err(|e| StorageError::glommio("truncate", &self.path, e))?;
        self.store.fdatasync(&self.file, &self.path).await?;
        Ok(size)
    }
}

/// The records section of a batch, decompressed if needed: None if it cannot be read
/// (no decompressor installed, or the codec failed).
fn plain_records(store: &Store, h: &BatchHeader, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let records = &bytes[BATCH_HEADER_BYTES..];
    match h.compression() {
        0 => Ok(None),
        codec => match store.decompressor() {
            Some(d) => d(codec, records).map(Some),
            None => Err("no decompressor installed".into()),
        },
    }
}

impl Partition {
    /// Refuses batches holding a record without a key (a compacted log keeps the latest
    /// record per key; Kafka answers INVALID_RECORD the same way). Compressed batches are
    /// decompressed through the store's decompressor, if one is installed.
    pub(super) fn check_keys(
        &self,
        batches: &Bytes,
        validated: &[batch::ValidatedBatch],
    ) -> Result<(), AppendError> {
        for v in validated {
            let h = &v.header;
            if h.is_control() {
                continue;
            }
            let b = &batches[v.position..v.position + h.total_bytes()];
            let plain = match plain_records(&self.store, h, b) {
                Ok(p) => p,
                Err(e) if h.compression() != 0 && self.store.decompressor().is_none() => {
                    log::debug!("keys of a compressed batch not checked: {e}");
                    continue;
                }
                Err(e) => return Err(AppendError::InvalidRecord(e)),
            };
            let records = plain.as_deref().unwrap_or(&b[BATCH_HEADER_BYTES..]);
            let mut keyless = false;
            batch::walk_records(h, records, |r| keyless |= r.key.is_none())
                .map_err(|e| AppendError::InvalidRecord(e.0))?;
            if keyless {
                return Err(AppendError::InvalidRecord(
                    "Compacted topic cannot accept message without key".into(),
                ));
            }
        }
        Ok(())
    }

    /// One cleaning pass (see the module docs) with the shard's key map; None when the
    /// partition is not compacted or nothing is due.
    pub(crate) async fn clean_pass(
        &self,
        map: &mut KeyMap,
        now: i64,
    ) -> Result<Option<CleanReport>, StorageError> {
        let cfg = self.config();
        if !cfg.cleanup_compact {
            return Ok(None);
        }
        let (segs, first_dirty, cuts_seen) = {
            let w = self.write.borrow();
            if w.stopped.is_some() || w.truncating {
                return Ok(None);
            }
            let log = self.log.borrow();
            let horizon = now.saturating_sub(cfg.min_compaction_lag_ms);
            // Never past the first offset of an open transaction (Kafka's first uncleanable
            // offset includes the last stable offset): it may still abort, and a committed
            // record must not go for an uncommitted later one of its key.
            let bound = self
                .cleanable_end
                .get()
                .min(log.producers.first_unstable_offset().unwrap_or(i64::MAX));
            let sealed = log.segments.len().saturating_sub(1);
            let segs: Vec<Rc<Segment>> = log
                .segments
                .values()
                .take(sealed)
                .take_while(|s| {
                    s.sealed.get()
                        && s.finalized.get()
                        && s.next_offset.get() <= bound
                        && s.index.borrow().max_timestamp <= horizon
                })
                .cloned()
                .collect();
            (
                segs,
                self.first_dirty.get().max(log.log_start_offset),
                w.cuts.done,
            )
        };
        let Some(last) = segs.last() else {
            return Ok(None);
        };
        let end = last.next_offset.get();
        // A tombstone kept for its delete horizon makes a pass due once the horizon has
        // passed, dirty records or not (otherwise it would wait for new writes).
        let horizon_due = self.next_delete_horizon.get() <= now;
        if first_dirty >= end && !horizon_due {
            return Ok(None);
        }
        let total: u64 = segs.iter().map(|s| s.size_bytes.get()).sum();
        let dirty: u64 = segs
            .iter()
            .filter(|s| s.next_offset.get() > first_dirty)
            .map(|s| s.size_bytes.get())
            .sum();
        let ratio = if total == 0 {
            1.0
        } else {
            dirty as f64 / total as f64
        };
        let overdue = cfg.max_compaction_lag_ms < i64::MAX
            && segs
                .iter()
                .find(|s| s.next_offset.get() > first_dirty)
                .and_then(|s| s.index.borrow().entries.first().map(|e| e.max_timestamp))
                .is_some_and(|ts| ts < now.saturating_sub(cfg.max_compaction_lag_ms));
        if ratio < cfg.min_cleanable_dirty_ratio && !overdue && !horizon_due {
            return Ok(None);
        }
        let mut report = CleanReport::default();
        // Records of aborted transactions are never mapped and are removed (Kafka's
        // cleaner discards them too): an aborted record must not supersede a committed one.
        let aborted = {
            let log = self.log.borrow();
            log.producers.aborted_between(log.log_start_offset, end)
        };
        map.clear();
        let (map_end, full) = if first_dirty >= end {
            // Nothing dirty (a pass for an expired horizon): nothing to map, every
            // segment below the first dirty offset is cleaned with the empty map.
            (first_dirty, false)
        } else {
            self.build_map(&segs, first_dirty, end, map, &aborted, &mut report)
                .await?
        };
        if map_end <= first_dirty && !horizon_due {
            return Ok(None);
        }
        report.map_full = full;
        let to_clean: Vec<Rc<Segment>> = segs
            .iter()
            .filter(|s| s.base_offset < map_end)
            .cloned()
            .collect();
        let mut pass = PassState {
            map: &*map,
            aborted: &aborted,
            map_end,
            now,
            cfg: &cfg,
            cuts_seen,
            next_horizon: i64::MAX,
        };
        let log_start = self.log.borrow().log_start_offset;
        for group in group_segments(&to_clean, cfg.segment_bytes, log_start) {
            self.clean_group(&group, &mut pass, &mut report).await?;
        }
        // Every kept tombstone below `map_end` was seen by this pass; those above it sit in
        // dirty segments, which make the next pass due anyway.
        self.next_delete_horizon.set(pass.next_horizon);
        report.first_dirty_offset = map_end;
        if self.write.borrow().stopped.is_some() {
            // Closed or deleted meanwhile (its directory may belong to a new incarnation).
            return Ok(Some(report));
        }
        if self.write.borrow().cuts.done != cuts_seen {
            // A truncation during the pass (it lowered the first dirty offset itself): what
            // was mapped may be gone; the next pass starts from there.
            report.first_dirty_offset = self.first_dirty.get();
            return Ok(Some(report));
        }
        self.first_dirty.set(map_end);
        if let Err(e) = write_checkpoint(&self.dir, map_end) {
            log::warn!(
                "{}: cleaner checkpoint not written ({e}); the next pass cleans more",
                self.dir.display()
            );
        }
        log::info!(
            "{}: cleaned {} segments ({} merged away), {} -> {} bytes, {} records removed ({} tombstones past their delete horizon), {} delete horizons set; first dirty offset now {map_end}{}",
            self.dir.display(),
            report.segments_cleaned,
            report.segments_merged,
            report.bytes_before,
            report.bytes_after,
            report.records_removed,
            report.tombstones_removed,
            report.horizons_set,
            if full { " (key map full)" } else { "" }
        );
        Ok(Some(report))
    }

    /// Maps key -> latest offset over the dirty records [first_dirty, end); returns where
    /// the mapping stopped (`end`, or the first record the full map could not take) and
    /// whether the map filled.
    async fn build_map(
        &self,
        segs: &[Rc<Segment>],
        first_dirty: i64,
        end: i64,
        map: &mut KeyMap,
        aborted: &[crate::producer::AbortedTxn],
        report: &mut CleanReport,
    ) -> Result<(i64, bool), StorageError> {
        for seg in segs.iter().filter(|s| s.next_offset.get() > first_dirty) {
            let rel = (first_dirty - seg.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
            let start = seg.index.borrow().lookup_offset(rel);
            let file = seg.file().await?;
            let mut reader = BatchReader::new(
                self.store.clone(),
                file,
                seg.path.clone(),
                start,
                seg.size_bytes.get(),
            );
            while let Some((_, h, bytes)) = reader.next().await? {
                report.bytes_read += bytes.len() as u64;
                if h.last_offset() < first_dirty || h.is_control() || in_aborted(&h, aborted) {
                    continue;
                }
                // A batch whose records cannot be read is not mapped (and is kept whole by
                // the rewrite): a missing key only ever keeps more records, never fewer.
                let plain = match plain_records(&self.store, &h, &bytes) {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!(
                            "{}: cleaner cannot read batch {} (kept whole, not mapped): {e}",
                            self.dir.display(),
                            h.base_offset
                        );
                        continue;
                    }
                };
                let records = plain.as_deref().unwrap_or(&bytes[BATCH_HEADER_BYTES..]);
                let mut full_at = None;
                let walked = batch::walk_records(&h, records, |r| {
                    if full_at.is_some() || r.offset < first_dirty {
                        return;
                    }
                    if let Some(k) = r.key
                        && !map.put(key_hash(k), r.offset)
                    {
                        full_at = Some(r.offset);
                    }
                });
                if let Err(e) = walked {
                    log::warn!(
                        "{}: cleaner cannot read batch {} (kept whole, partly mapped): {e}",
                        self.dir.display(),
                        h.base_offset
                    );
                }
                if let Some(at) = full_at {
                    return Ok((at, true));
                }
            }
        }
        Ok((end, false))
    }

    /// Rewrites a group of consecutive sealed segments (`group_segments`; usually one)
    /// with the pass's map into one segment named after the first, and swaps it in (see
    /// the module docs). A single segment with nothing to change is left as it is.
    async fn clean_group(
        &self,
        group: &[Rc<Segment>],
        pass: &mut PassState<'_>,
        report: &mut CleanReport,
    ) -> Result<(), StorageError> {
        if self.write.borrow().stopped.is_some() {
            // Closed or deleted: its files are no longer the cleaner's to write.
            return Ok(());
        }
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        let base = first.base_offset;
        let end = last.next_offset.get();
        let merge = group.len() > 1;
        let batch_limit =
            (pass.cfg.max_message_bytes as usize).min(self.store.config().batch_max_bytes);
        let tmp = self.dir.join(format!("{base:020}{CLEANED_SUFFIX}"));
        let _ = std::fs::remove_file(&tmp);
        let out = Rc::new(open_dma(&tmp, true).await?);
        let mut w = CleanedWriter {
            store: self.store.clone(),
            buf: out.alloc_dma_buffer(CLEANER_IO_BUFFER_BYTES),
            file: out,
            path: tmp.clone(),
            filled: 0,
            written: 0,
        };
        let mut index = SegmentIndex::default();
        let (mut removed, mut tombstones_removed, mut horizons_set) = (0u64, 0u64, 0u64);
        let mut changed = false;
        let mut before = 0u64;
        let mut kept = Vec::new();
        let mut rebased = Vec::new();
        let result: Result<(), StorageError> = async {
            for (i, seg) in group.iter().enumerate() {
                let limit = seg.size_bytes.get();
                before += limit;
                let file = seg.file().await?;
                let mut reader =
                    BatchReader::new(self.store.clone(), file, seg.path.clone(), 0, limit);
                let last_seg = i + 1 == group.len();
                while let Some((_, h, bytes)) = reader.next().await? {
                    report.bytes_read += bytes.len() as u64;
                    // Only the group's last batch must stay (emptied if need be): the
                    // rewrite still ends at the group's end offset.
                    let is_last = last_seg && reader.pos >= limit;
                    let filtered = if h.is_control() {
                        None
                    } else {
                        let expire = report.unreadable_batches == 0;
                        let r = self.filter_batch(&h, &bytes, pass, expire, &mut kept);
                        if r.is_none() {
                            report.unreadable_batches += 1;
                        }
                        r
                    };
                    let mut rebuilt: Option<(Vec<u8>, i64)> = None;
                    let mut horizon_kept = h.delete_horizon_ms();
                    if let Some(f) = &filtered {
                        // KIP-534: the first cleaning that keeps a tombstone of the batch
                        // stamps the batch with its delete horizon.
                        let new_horizon = (f.tombstones_kept && h.delete_horizon_ms().is_none())
                            .then(|| pass.now.saturating_add(pass.cfg.delete_retention_ms));
                        if f.removed > 0 || new_horizon.is_some() {
                            if f.count == 0 && !is_last && !self.producers_last_batch(&h) {
                                removed += f.removed;
                                tombstones_removed += f.tombstones_removed;
                                changed = true;
                                continue;
                            }
                            let max_ts = if f.count == 0 {
                                h.max_timestamp
                            } else {
                                f.max_ts
                            };
                            let records = match new_horizon {
                                Some(hz) => {
                                    rebased.clear();
                                    batch::rebase_records(
                                        &kept,
                                        f.count as usize,
                                        h.base_timestamp,
                                        hz,
                                        &mut rebased,
                                    )
                                    .map(|()| &rebased[..])
                                    .map_err(|e| {
                                        log::warn!(
                                            "{}: cleaner keeps batch {} whole: {e}",
                                            self.dir.display(),
                                            h.base_offset
                                        )
                                    })
                                    .ok()
                                }
                                None => Some(&kept[..]),
                            };
                            if let Some(records) = records {
                                let b = self.rebuild(
                                    &h,
                                    &bytes,
                                    records,
                                    f.count as i32,
                                    max_ts,
                                    new_horizon,
                                );
                                // Larger than a batch the log takes (a compressed batch
                                // rebuilt uncompressed): a follower copying it would
                                // refuse it, so the batch stays whole.
                                if b.len() <= batch_limit || b.len() <= bytes.len() {
                                    removed += f.removed;
                                    tombstones_removed += f.tombstones_removed;
                                    horizons_set += u64::from(new_horizon.is_some());
                                    horizon_kept = new_horizon.or(horizon_kept);
                                    changed = true;
                                    rebuilt = Some((b, max_ts));
                                }
                            }
                        }
                        // Horizons still ahead (or just set: a zero delete.retention.ms
                        // sets one that has passed by the next pass) make a later pass
                        // due; a passed one kept by an unreadable batch waits for dirt.
                        let stamped = rebuilt.is_some() && new_horizon.is_some();
                        if f.tombstones_kept
                            && let Some(hz) = horizon_kept
                            && (hz > pass.now || stamped)
                        {
                            pass.next_horizon = pass.next_horizon.min(hz);
                        }
                    }
                    let (out, max_ts): (&[u8], i64) = match &rebuilt {
                        Some((b, max_ts)) => (b, *max_ts),
                        None => (&bytes, h.max_timestamp),
                    };
                    let rel = u32::try_from(h.base_offset - base)
                        .map_err(|_| reader.corrupt("offset beyond the index span".into()))?;
                    index.on_batch(rel, w.position(), out.len() as u64, max_ts);
                    w.push(out).await?;
                }
            }
            Ok(())
        }
        .await;
        let abandon = |tmp: &Path| {
            let _ = std::fs::remove_file(tmp);
        };
        if let Err(e) = result {
            abandon(&tmp);
            return Err(e);
        }
        if !changed && !merge {
            // Nothing to change: the segment stays as it is.
            abandon(&tmp);
            return Ok(());
        }
        self.store
            .cleaner_crash_point(CleanerCrashPoint::CleanedWritten, &tmp)?;
        let new_size = match w.finish().await {
            Ok(s) => s,
            Err(e) => {
                abandon(&tmp);
                return Err(e);
            }
        };
        drop(w);
        self.store
            .cleaner_crash_point(CleanerCrashPoint::CleanedSynced, &tmp)?;

        // The swap, in one synchronous section: the segments must still be the ones
        // cleaned (not removed by retention, not cut by a truncation), and the partition
        // running.
        let new = {
            let w = self.write.borrow();
            let mut log = self.log.borrow_mut();
            let current = group.iter().all(|g| {
                log.segments
                    .get(&g.base_offset)
                    .is_some_and(|s| Rc::ptr_eq(s, g))
            });
            if !current || w.stopped.is_some() || w.truncating || w.cuts.done != pass.cuts_seen {
                drop((w, log));
                abandon(&tmp);
                log::info!(
                    "{}: segments from {base} changed while they were cleaned; rewrite dropped",
                    self.dir.display(),
                );
                return Ok(());
            }
            let swapped = if merge {
                self.merge_files(group, &tmp, base, end)
            } else {
                self.swap_file(first, &tmp)
            };
            if let Err((e, committed)) = swapped {
                drop((w, log));
                if committed {
                    // The files are half swapped and no longer what the log in memory
                    // describes: the partition stops; reopening it completes the merge.
                    self.stop(format!("log cleaner merge from {base} interrupted: {e}"));
                } else {
                    abandon(&tmp);
                }
                return Err(e);
            }
            let new = Rc::new(Segment::new(&self.dir, base, &self.store));
            new.set_recovered(new_size, end, new_size, None, index);
            new.sealed.set(true);
            new.finalized.set(true);
            for g in &group[1..] {
                log.segments.remove(&g.base_offset);
            }
            log.segments.insert(base, new.clone());
            // The tail cache must not serve the superseded records any more.
            let mut freed = 0;
            while log.cache.front().is_some_and(|e| e.next_offset <= end) {
                if let Some(e) = log.cache.pop_front() {
                    freed += e.data.len();
                }
            }
            log.cache_bytes -= freed;
            drop((w, log));
            self.store.cache_removed(freed);
            new
        };
        for g in group {
            g.forget_file();
        }
        report.segments_cleaned += group.len();
        report.segments_merged += group.len() - 1;
        report.bytes_before += before;
        report.bytes_after += new_size;
        report.records_removed += removed;
        report.tombstones_removed += tombstones_removed;
        report.horizons_set += horizons_set;
        self.store
            .cleaner_crash_point(CleanerCrashPoint::Swapped, &new.path)?;
        if let Err(e) =
            new.index
                .borrow()
                .write_files(&new.meta(), &new.index_path, &new.time_index_path)
        {
            log::warn!("{}: could not write index files: {e}", new.path.display());
        }
        sync_dir(&self.dir).await
    }

    /// One segment's swap: its old index files go (before the new file takes its name, so
    /// that no crash leaves them beside it: their covered size is checked at open, but a
    /// rewrite could happen to have the old size), then the rewrite is renamed over it
    /// (atomic: a crash leaves the old or the new file, both whole logs of the same
    /// offsets). Err((error, false)): nothing committed.
    fn swap_file(&self, seg: &Segment, tmp: &Path) -> Result<(), (StorageError, bool)> {
        seg.remove_index_files().map_err(|e| (e, false))?;
        std::fs::rename(tmp, &seg.path).map_err(|e| (StorageError::io("rename", tmp, e), false))
    }

    /// A merge's swap: the synced rewrite is renamed to `<base>-<end>.swap` (the commit
    /// point: from there recovery completes the merge, `complete_merges`), the merged
    /// segments' index files and every merged log file but the first are removed, and the
    /// swap file is renamed over the first. Err((error, committed)).
    fn merge_files(
        &self,
        group: &[Rc<Segment>],
        tmp: &Path,
        base: i64,
        end: i64,
    ) -> Result<(), (StorageError, bool)> {
        let swap = self.dir.join(swap_file_name(base, end));
        std::fs::rename(tmp, &swap).map_err(|e| (StorageError::io("rename", tmp, e), false))?;
        let committed = |e| (e, true);
        self.store
            .cleaner_crash_point(CleanerCrashPoint::MergeSwapNamed, &swap)
            .map_err(committed)?;
        for g in group {
            g.remove_index_files().map_err(committed)?;
        }
        for (i, g) in group.iter().enumerate().skip(1) {
            match std::fs::remove_file(&g.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((StorageError::io("remove", g.path.clone(), e), true)),
            }
            if i == 1 {
                self.store
                    .cleaner_crash_point(CleanerCrashPoint::MergeOneRemoved, &g.path)
                    .map_err(committed)?;
            }
        }
        self.store
            .cleaner_crash_point(CleanerCrashPoint::MergeOldRemoved, &swap)
            .map_err(committed)?;
        std::fs::rename(&swap, &group[0].path)
            .map_err(|e| (StorageError::io("rename", swap.clone(), e), true))
    }

    /// `h` with only the `kept` records (uncompressed, back to back): compressed again with
    /// the batch's codec when the store has a compressor, else stored uncompressed.
    fn rebuild(
        &self,
        h: &BatchHeader,
        bytes: &[u8],
        kept: &[u8],
        count: i32,
        max_ts: i64,
        delete_horizon: Option<i64>,
    ) -> Vec<u8> {
        let codec = h.compression();
        if codec != 0
            && count > 0
            && let Some(compress) = self.store.compressor()
        {
            match compress(codec, kept) {
                Ok(c) => {
                    return batch::rebuild_batch(
                        bytes,
                        h,
                        &c,
                        count,
                        max_ts,
                        codec,
                        delete_horizon,
                    );
                }
                Err(e) => log::warn!(
                    "{}: batch {} stored uncompressed after cleaning: {e}",
                    self.dir.display(),
                    h.base_offset
                ),
            }
        }
        batch::rebuild_batch(bytes, h, kept, count, max_ts, 0, delete_horizon)
    }

    /// Whether `h` is the latest batch of its idempotent producer: kept (emptied if need be)
    /// so that the producer's sequence state survives a rebuild from the log, as Kafka's
    /// cleaner keeps it.
    fn producers_last_batch(&self, h: &BatchHeader) -> bool {
        h.has_producer_id()
            && self
                .log
                .borrow()
                .producers
                .get(h.producer_id)
                .and_then(|p| p.batches.back())
                .is_some_and(|b| b.last_offset == h.last_offset())
    }

    /// Which records of a (non-control) batch stay, as Kafka's cleaner decides
    /// (`shouldRetainRecord`): a record goes when it has no key, when a later record of its
    /// key is mapped, or when it is a tombstone below the map's end in a batch whose delete
    /// horizon has passed (and `expire`: no unreadable batch met in this pass). None if its
    /// records cannot be read (it is kept whole); else what stays, its bytes in `kept`.
    fn filter_batch(
        &self,
        h: &BatchHeader,
        bytes: &[u8],
        pass: &PassState<'_>,
        expire: bool,
        kept: &mut Vec<u8>,
    ) -> Option<Filtered> {
        kept.clear();
        let plain = match plain_records(&self.store, h, bytes) {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    "{}: cleaner keeps batch {} whole: {e}",
                    self.dir.display(),
                    h.base_offset
                );
                return None;
            }
        };
        let records = plain.as_deref().unwrap_or(&bytes[BATCH_HEADER_BYTES..]);
        let horizon_passed = expire && h.delete_horizon_ms().is_some_and(|hz| pass.now >= hz);
        let aborted = in_aborted(h, pass.aborted);
        let mut f = Filtered {
            max_ts: -1,
            ..Filtered::default()
        };
        let walked = batch::walk_records(h, records, |r| {
            let keep = match r.key {
                _ if aborted => false,
                None => false,
                Some(k) => {
                    let superseded = pass.map.get(key_hash(k)).is_some_and(|l| l > r.offset);
                    let expired = r.tombstone && r.offset < pass.map_end && horizon_passed;
                    if expired && !superseded {
                        f.tombstones_removed += 1;
                    }
                    !(superseded || expired)
                }
            };
            if keep {
                kept.extend_from_slice(r.bytes);
                f.count += 1;
                f.max_ts = f.max_ts.max(r.timestamp);
                f.tombstones_kept |= r.tombstone;
            } else {
                f.removed += 1;
            }
        });
        if let Err(e) = walked {
            log::warn!(
                "{}: cleaner keeps batch {} whole: {e}",
                self.dir.display(),
                h.base_offset
            );
            return None;
        }
        Some(f)
    }
}

/// What one cleaning pass applies to every group it cleans.
/// Whether a (data) batch belongs to one of the `aborted` transactions: transactional,
/// of the producer of one, within its first offset and its abort marker.
fn in_aborted(h: &BatchHeader, aborted: &[crate::producer::AbortedTxn]) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset <= a.last_offset
        })
}

struct PassState<'a> {
    map: &'a KeyMap,
    /// The partition's aborted transactions over the cleaned range.
    aborted: &'a [crate::producer::AbortedTxn],
    /// Records at or beyond this offset were not mapped: they all stay.
    map_end: i64,
    now: i64,
    cfg: &'a LogConfig,
    cuts_seen: u64,
    /// The earliest delete horizon still ahead of a tombstone the pass kept.
    next_horizon: i64,
}

/// What `filter_batch` keeps of a batch.
#[derive(Default)]
struct Filtered {
    removed: u64,
    count: u64,
    /// The largest timestamp of a kept record.
    max_ts: i64,
    /// A kept record is a tombstone.
    tombstones_kept: bool,
    /// Tombstones removed for their passed delete horizon.
    tombstones_removed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the key map keeps to its byte bound: its table is allocated once within
    // `max_bytes` and never grows while it fills to the point where it refuses new keys;
    // a full map still updates the keys it holds.
    #[test]
    fn key_map_stays_within_its_bytes() {
        for max_bytes in [1000, 1 << 20, 3 << 20] {
            let mut m = KeyMap::new(max_bytes);
            let cap = m.map.capacity();
            assert!(cap >= m.max_entries);
            assert!(cap.div_ceil(7) * 8 * CLEANER_MAP_ENTRY_BYTES <= max_bytes.max(8 * 33));
            let mut n = 0u128;
            while m.put(n, n as i64) {
                n += 1;
            }
            assert_eq!(n as usize, m.max_entries);
            assert_eq!(m.map.capacity(), cap, "the table grew");
            assert!(m.put(0, 99), "a held key is still updated");
            assert_eq!(m.get(0), Some(99));
            assert!(!m.put(n + 1, 1));
        }
    }
}
