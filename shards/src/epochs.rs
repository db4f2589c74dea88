//! Leader-epoch cache of one partition (Kafka's leader-epoch-checkpoint): for each leader
//! epoch seen in stored batches' partitionLeaderEpoch (>= 0), the offset of its first batch,
//! in increasing epoch and offset order; and its checkpoint file.
//!
//! Runs on the shard's own core. Maintained by appends, trimmed by retention (log start)
//! and by `Partition::truncate_to` (log end). The checkpoint file records the entries and the
//! offset up to which they are complete (`covered`): it is written at roll, close and
//! truncate; recovery loads it, drops entries at or beyond the recovered log end and scans
//! the batch headers from `covered` on (no file: from the log start). A truncate writes it
//! durably, so a checkpoint describing batches that were cut away never comes back.

use std::io;
use std::path::Path;

/// File name of the leader-epoch checkpoint inside a partition directory.
pub const EPOCHS_FILE: &str = "leader-epoch.checkpoint";
const MAGIC: &[u8; 8] = b"OSPLEP01";
/// Hard bound of entries read back from a file.
const ENTRIES_MAX: usize = 1 << 20;

/// (epoch, start offset) entries, epochs and start offsets strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// Notes a stored batch of leader epoch `epoch` starting at `base_offset`: a new entry
    /// if the epoch is larger than the latest one. Negative epochs (no leader stamped the
    /// batch) and older epochs are ignored, as in Kafka. True if an entry was added.
    pub fn assign(&mut self, epoch: i32, base_offset: i64) -> bool {
        if epoch < 0 || self.entries.last().is_some_and(|(e, _)| *e >= epoch) {
            return false;
        }
        // An entry whose epoch had no batch left (the log start was moved up to the log
        // end, so its start is where this batch begins) gives way, as in Kafka's `assign`.
        if let Some(&(_, start)) = self.entries.last() {
            assert!(base_offset >= start, "epoch start offsets must not go back");
            if base_offset == start {
                self.entries.pop();
            }
        }
        self.entries.push((epoch, base_offset));
        true
    }

    /// Removes the entries of epochs starting at or after `end` (the log was cut there).
    pub fn truncate_from(&mut self, end: i64) {
        let keep = self.entries.partition_point(|(_, s)| *s < end);
        self.entries.truncate(keep);
    }

    /// The log now starts at `start`: entries of epochs wholly below it are dropped, and
    /// the epoch `start` belongs to starts there.
    pub fn truncate_start(&mut self, start: i64) {
        let below = self.entries.partition_point(|(_, s)| *s <= start);
        if below > 1 {
            self.entries.drain(..below - 1);
        }
        if let Some(first) = self.entries.first_mut()
            && first.1 < start
        {
            first.1 = start;
        }
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` known here and its end offset
    /// (the start of the next larger epoch, or `log_end` for the latest); (-1, -1) if none.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let end = self.entries.get(i).map_or(log_end, |(_, s)| *s);
        (self.entries[i - 1].0, end)
    }

    /// Serializes the entries, complete for the log below `covered`.
    pub fn encode(&self, covered: i64) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.entries.len() * 12);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&covered.to_be_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (e, s) in &self.entries {
            b.extend_from_slice(&e.to_be_bytes());
            b.extend_from_slice(&s.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses a checkpoint: (entries, covered offset); None if damaged or out of order.
    pub fn decode(b: &[u8]) -> Option<(LeaderEpochs, i64)> {
        if b.len() < 24 || &b[..8] != MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let covered = i64::from_be_bytes(body[8..16].try_into().ok()?);
        let count = u32::from_be_bytes(body[16..20].try_into().ok()?) as usize;
        if count > ENTRIES_MAX || body.len() != 20 + count * 12 {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for c in body[20..].chunks_exact(12) {
            let e = i32::from_be_bytes(c[..4].try_into().ok()?);
            let s = i64::from_be_bytes(c[4..].try_into().ok()?);
            if e < 0 || entries.last().is_some_and(|&(le, ls)| le >= e || ls >= s) {
                return None;
            }
            entries.push((e, s));
        }
        Some((LeaderEpochs { entries }, covered))
    }

    /// Writes the checkpoint (temp file, fdatasync, rename). The rename is made durable by
    /// the caller's directory fsync (the producer snapshot's at roll, truncate's own).
    pub fn write_file(&self, dir: &Path, covered: i64) -> io::Result<()> {
        use std::io::Write;
        let tmp = dir.join("leader-epoch.checkpoint.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode(covered))?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(EPOCHS_FILE))
    }

    /// Reads the checkpoint if present and valid.
    pub fn read_file(dir: &Path) -> Option<(LeaderEpochs, i64)> {
        std::fs::read(dir.join(EPOCHS_FILE))
            .ok()
            .and_then(|b| LeaderEpochs::decode(&b))
    }
}

#[cfg(test)]
mod tests {

    // DeleteRecords up to the log end leaves the latest entry starting at the log end; a
    // new leader's first batch there replaces it instead of panicking.
    #[test]
    fn assign_at_the_start_of_an_emptied_epoch() {
        let mut e = LeaderEpochs::default();
        assert!(e.assign(0, 0));
        assert!(e.assign(1, 10));
        e.truncate_start(20);
        assert_eq!(e.entries(), &[(1, 20)]);
        assert!(e.assign(2, 20));
        assert_eq!(e.entries(), &[(2, 20)]);
    }

    use super::*;
    use proptest::prelude::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochs {
        LeaderEpochs {
            entries: entries.to_vec(),
        }
    }

    // Proves assign keeps only increasing epochs and ignores unstamped batches.
    #[test]
    fn assign_keeps_increasing_epochs() {
        let mut c = LeaderEpochs::default();
        assert!(!c.assign(-1, 0));
        assert!(c.assign(2, 0));
        assert!(!c.assign(2, 5));
        assert!(!c.assign(1, 6));
        assert!(c.assign(5, 10));
        assert_eq!(c.entries(), &[(2, 0), (5, 10)]);
    }

    // Proves OffsetForLeaderEpoch answers: the largest epoch <= the requested one and the
    // start of the next, the log end for the latest, (-1, -1) below the first.
    #[test]
    fn end_offset_for_epoch() {
        let c = cache(&[(2, 0), (5, 10), (6, 30)]);
        assert_eq!(c.end_offset_for(1, 50), (-1, -1));
        assert_eq!(c.end_offset_for(2, 50), (2, 10));
        assert_eq!(c.end_offset_for(4, 50), (2, 10));
        assert_eq!(c.end_offset_for(5, 50), (5, 30));
        assert_eq!(c.end_offset_for(6, 50), (6, 50));
        assert_eq!(c.end_offset_for(9, 50), (6, 50));
        assert_eq!(LeaderEpochs::default().end_offset_for(3, 5), (-1, -1));
    }

    // Proves cuts at the end and at the start keep exactly the epochs of the remaining log.
    #[test]
    fn truncation() {
        let mut c = cache(&[(2, 0), (5, 10), (6, 30)]);
        c.truncate_from(31);
        assert_eq!(c.entries(), &[(2, 0), (5, 10), (6, 30)]);
        c.truncate_from(30);
        assert_eq!(c.entries(), &[(2, 0), (5, 10)]);
        c.truncate_start(12);
        assert_eq!(c.entries(), &[(5, 12)]);
        let mut c = cache(&[(2, 0), (5, 10)]);
        c.truncate_start(10);
        assert_eq!(c.entries(), &[(5, 10)]);
        c.truncate_from(10);
        assert!(c.entries().is_empty());
    }

    proptest! {
        // Proves a checkpoint decodes to what was encoded, and any damage is detected.
        #[test]
        fn checkpoint_round_trips(n in 0usize..20, covered in 0i64..1000, flip in 0usize..400) {
            let mut c = LeaderEpochs::default();
            for i in 0..n {
                c.assign(i as i32 * 2, i as i64 * 7);
            }
            let b = c.encode(covered);
            prop_assert_eq!(LeaderEpochs::decode(&b), Some((c.clone(), covered)));
            let mut d = b.clone();
            let i = flip % d.len();
            d[i] ^= 0x10;
            prop_assert_eq!(LeaderEpochs::decode(&d), None);
        }
    }
}
