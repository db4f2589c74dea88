//! Sparse offset index and time index of one segment: in memory while the segment is open,
//! persisted as `<base>.index` / `<base>.timeindex` when the segment is sealed or closed.
//!
//! Runs on the shard's own core. Index files are a cache of what a scan of the segment would
//! rebuild: each carries the segment size it describes and a CRC32C, and a missing, damaged
//! or stale one (size differs from the segment file) is ignored and rebuilt by scanning.

use std::io;
use std::path::Path;

use crate::config::INDEX_INTERVAL_BYTES;

const OFFSET_MAGIC: &[u8; 8] = b"OSPIDX01";
const TIME_MAGIC: &[u8; 8] = b"OSPTIX01";
/// magic 8 + base 8 + covered 8 + next offset 8 + max ts 8 + count 4.
const HEADER_BYTES: usize = 44;
/// Hard bound of entries read back from a file (1 GiB segments at 32 KiB intervals need 32 Ki).
pub const INDEX_ENTRIES_MAX: usize = 1 << 20;

/// One sparse index point: the batch starting at `position` has base offset
/// `base_offset + relative_offset`; `max_timestamp` is the largest batch maxTimestamp of the
/// segment up to and including that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
    pub max_timestamp: i64,
}

/// What a segment's index knows about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub entries: Vec<IndexEntry>,
    /// Log bytes since the last entry.
    bytes_since_entry: u64,
    /// Largest timestamp seen so far in the segment (-1 = none).
    pub max_timestamp: i64,
}

impl Default for SegmentIndex {
    fn default() -> Self {
        SegmentIndex {
            entries: Vec::new(),
            bytes_since_entry: 0,
            max_timestamp: -1,
        }
    }
}

/// Segment facts stored in the index file headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMeta {
    pub base_offset: i64,
    pub covered_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
}

impl SegmentIndex {
    /// Records a batch appended at `position` (monotonic) with the given relative offset.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u64,
        size_bytes: u64,
        max_timestamp: i64,
    ) {
        if let Some(last) = self.entries.last() {
            assert!(relative_offset > last.relative_offset || self.entries.is_empty());
            assert!(position > u64::from(last.position));
        }
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if self.entries.is_empty() || self.bytes_since_entry >= INDEX_INTERVAL_BYTES {
            assert!(
                position <= u64::from(u32::MAX),
                "segment position beyond u32"
            );
            self.entries.push(IndexEntry {
                relative_offset,
                position: position as u32,
                max_timestamp: self.max_timestamp,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size_bytes;
    }

    /// Position of the last indexed batch whose base offset is <= `relative_offset` (0 if none).
    pub fn lookup_offset(&self, relative_offset: u32) -> u64 {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            u64::from(self.entries[i - 1].position)
        }
    }

    /// (relative offset, position) from where a scan finds the first batch whose
    /// maxTimestamp >= `ts`: the indexed batch before the first entry reaching `ts`.
    pub fn lookup_time(&self, ts: i64) -> (u32, u64) {
        let i = self.entries.partition_point(|e| e.max_timestamp < ts);
        if i == 0 {
            (0, 0)
        } else {
            let e = self.entries[i - 1];
            (e.relative_offset, u64::from(e.position))
        }
    }

    /// The segment now ends at `position` (a batch boundary; `Partition::truncate_to`):
    /// drops the entries at or beyond it and makes the index what appends of the remaining
    /// batches would have built. `batches`: (position, maxTimestamp) of the batches before
    /// `position`, at least of every one after the last entry kept.
    pub fn cut(&mut self, position: u64, batches: &[(u64, i64)]) {
        self.entries.retain(|e| u64::from(e.position) < position);
        let Some(last) = self.entries.last() else {
            // The first batch of a segment always has an entry.
            assert_eq!(position, 0, "index without an entry for the first batch");
            *self = SegmentIndex::default();
            return;
        };
        let from = u64::from(last.position);
        assert!(
            batches.first().is_some_and(|(p, _)| *p <= from),
            "batches after the last kept entry missing"
        );
        self.max_timestamp = batches
            .iter()
            .filter(|(p, _)| *p > from && *p < position)
            .fold(last.max_timestamp, |m, (_, t)| m.max(*t));
        self.bytes_since_entry = position - from;
    }

    /// Drops entries at or beyond `position` (used when a scan cuts a torn tail).
    pub fn truncate_to(&mut self, position: u64) {
        self.entries.retain(|e| u64::from(e.position) < position);
    }

    fn encode(&self, meta: &IndexMeta, magic: &[u8; 8], time: bool) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + self.entries.len() * 12 + 4);
        b.extend_from_slice(magic);
        b.extend_from_slice(&meta.base_offset.to_be_bytes());
        b.extend_from_slice(&meta.covered_bytes.to_be_bytes());
        b.extend_from_slice(&meta.next_offset.to_be_bytes());
        b.extend_from_slice(&meta.max_timestamp.to_be_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            if time {
                b.extend_from_slice(&e.max_timestamp.to_be_bytes());
                b.extend_from_slice(&e.relative_offset.to_be_bytes());
            } else {
                b.extend_from_slice(&e.relative_offset.to_be_bytes());
                b.extend_from_slice(&e.position.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Writes both index files (temp file + rename, so a crash leaves the old or the new one;
    /// not fsync'ed: a lost or stale index is rebuilt on open).
    pub fn write_files(
        &self,
        meta: &IndexMeta,
        offset_path: &Path,
        time_path: &Path,
    ) -> io::Result<()> {
        for (path, magic, time) in [
            (offset_path, OFFSET_MAGIC, false),
            (time_path, TIME_MAGIC, true),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, self.encode(meta, magic, time))?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }

    /// Reads both index files; None if either is missing, damaged, or they disagree.
    pub fn read_files(offset_path: &Path, time_path: &Path) -> Option<(SegmentIndex, IndexMeta)> {
        let o = std::fs::read(offset_path).ok()?;
        let t = std::fs::read(time_path).ok()?;
        let (meta_o, offs) = decode(&o, OFFSET_MAGIC)?;
        let (meta_t, times) = decode(&t, TIME_MAGIC)?;
        if meta_o != meta_t || offs.len() != times.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(offs.len());
        let mut prev: Option<IndexEntry> = None;
        for (a, b) in offs.iter().zip(times.iter()) {
            // offs: (relative offset, position); times: (max ts, relative offset).
            let rel = u32::from_be_bytes(a[0..4].try_into().ok()?);
            let pos = u32::from_be_bytes(a[4..8].try_into().ok()?);
            let ts = i64::from_be_bytes(b[0..8].try_into().ok()?);
            let rel_t = u32::from_be_bytes(b[8..12].try_into().ok()?);
            if rel != rel_t || u64::from(pos) >= meta_o.covered_bytes.max(1) {
                return None;
            }
            if let Some(p) = prev
                && (rel <= p.relative_offset || pos <= p.position || ts < p.max_timestamp)
            {
                return None;
            }
            let e = IndexEntry {
                relative_offset: rel,
                position: pos,
                max_timestamp: ts,
            };
            entries.push(e);
            prev = Some(e);
        }
        let idx = SegmentIndex {
            entries,
            bytes_since_entry: INDEX_INTERVAL_BYTES,
            max_timestamp: meta_o.max_timestamp,
        };
        Some((idx, meta_o))
    }
}

fn decode<'a>(b: &'a [u8], magic: &[u8; 8]) -> Option<(IndexMeta, Vec<&'a [u8]>)> {
    if b.len() < HEADER_BYTES + 4 || &b[0..8] != magic {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let rd = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let meta = IndexMeta {
        base_offset: rd(8),
        covered_bytes: rd(16) as u64,
        next_offset: rd(24),
        max_timestamp: rd(32),
    };
    let count = u32::from_be_bytes(body[40..44].try_into().ok()?) as usize;
    let entry_bytes = if magic == TIME_MAGIC { 12 } else { 8 };
    if count > INDEX_ENTRIES_MAX || body.len() != HEADER_BYTES + count * entry_bytes {
        return None;
    }
    let entries = body[HEADER_BYTES..].chunks_exact(entry_bytes).collect();
    Some((meta, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(sizes: &[(u32, u64, i64)]) -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        let (mut rel, mut pos) = (0u32, 0u64);
        for &(n, size, ts) in sizes {
            idx.on_batch(rel, pos, size, ts);
            rel += n;
            pos += size;
        }
        idx
    }

    proptest! {
        // Proves lookup_offset never points past the batch holding the offset: the position
        // returned belongs to an indexed batch whose base offset is <= the target.
        #[test]
        fn lookup_offset_is_at_or_before(batches in proptest::collection::vec((1u32..50, 61u64..40_000, 0i64..1000), 1..200), probe in 0u32..10_000) {
            let idx = build(&batches);
            let pos = idx.lookup_offset(probe);
            let e = idx.entries.iter().find(|e| u64::from(e.position) == pos).unwrap();
            prop_assert!(e.relative_offset <= probe || e.relative_offset == 0);
        }

        // Proves the files round-trip exactly and any flipped byte makes them rejected.
        #[test]
        fn files_round_trip_and_detect_damage(batches in proptest::collection::vec((1u32..50, 61u64..40_000, 0i64..1000), 1..100), flip in any::<prop::sample::Index>()) {
            let dir = tempfile::tempdir().unwrap();
            let (o, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
            let idx = build(&batches);
            let meta = IndexMeta { base_offset: 5, covered_bytes: batches.iter().map(|b| b.1).sum(), next_offset: 99, max_timestamp: idx.max_timestamp };
            idx.write_files(&meta, &o, &t).unwrap();
            let (back, m) = SegmentIndex::read_files(&o, &t).unwrap();
            prop_assert_eq!(&back.entries, &idx.entries);
            prop_assert_eq!(m, meta);
            let mut raw = std::fs::read(&o).unwrap();
            let i = flip.index(raw.len());
            raw[i] ^= 0x01;
            std::fs::write(&o, &raw).unwrap();
            prop_assert!(SegmentIndex::read_files(&o, &t).is_none());
        }
    }

    // Proves the time lookup starts at or before the first batch reaching the timestamp.
    #[test]
    fn lookup_time_starts_before_target() {
        let idx = build(&[
            (1, 40_000, 10),
            (1, 40_000, 20),
            (1, 40_000, 30),
            (1, 40_000, 40),
        ]);
        assert_eq!(idx.lookup_time(5), (0, 0));
        assert_eq!(idx.lookup_time(25), (1, 40_000));
        assert_eq!(idx.lookup_time(40), (2, 80_000));
    }
}
