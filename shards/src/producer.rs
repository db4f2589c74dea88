//! Idempotent-producer state of one partition: per producer id its epoch and the sequence
//! ranges and offsets of its last few batches, for duplicate and gap detection; plus its
//! snapshot file (`producer.snapshot`), written at segment roll and close.
//!
//! Runs on the shard's own core. On open the state is loaded from the snapshot (if it is
//! valid and not beyond the recovered log end) and completed by replaying the batch headers
//! after the snapshot's offset; with no usable snapshot it is rebuilt from the whole log.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;

use crate::batch::BatchHeader;
use crate::config::{PRODUCER_BATCHES_MAX, PRODUCERS_MAX_PER_PARTITION};
use crate::error::AppendError;

const SNAPSHOT_MAGIC: &[u8; 8] = b"OSPPRS01";

/// Sequence range and offsets of one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqEntry {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// State of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<SeqEntry>,
}

/// Outcome of checking a batch against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, new producer, or next in sequence: append it.
    Append,
    /// A retry of a stored batch: answer with its original offsets, store nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// All producers of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Bumped on every update; used to find the least recently updated producer to evict.
    touched: HashMap<i64, u64>,
    clock: u64,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX { 0 } else { s + 1 }
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks batch `h` (producer fields as sent) against the state.
    pub fn check(&self, h: &BatchHeader) -> Result<SeqCheck, AppendError> {
        if !h.has_producer_id() {
            return Ok(SeqCheck::Append);
        }
        let Some(e) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state expired): accept its sequence as a start.
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                current_epoch: e.epoch,
                received_epoch: h.producer_epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            // A bumped epoch restarts the sequence at 0.
            if h.base_sequence != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected_sequence: 0,
                    received_sequence: h.base_sequence,
                });
            }
            return Ok(SeqCheck::Append);
        }
        let last_seq = h.last_sequence();
        if let Some(d) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate {
                base_offset: d.base_offset,
                last_offset: d.last_offset,
            });
        }
        let expected = e
            .batches
            .back()
            .map(|b| next_seq(b.last_seq))
            .unwrap_or(h.base_sequence);
        if h.base_sequence != expected {
            return Err(AppendError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected_sequence: expected,
                received_sequence: h.base_sequence,
            });
        }
        Ok(SeqCheck::Append)
    }

    /// Records stored batch `h` (with its assigned base offset).
    pub fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() {
            return;
        }
        self.clock += 1;
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(SeqEntry {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        self.touched.insert(h.producer_id, self.clock);
        if self.producers.len() > PRODUCERS_MAX_PER_PARTITION
            && let Some((&oldest, _)) = self.touched.iter().min_by_key(|(_, t)| **t)
        {
            self.producers.remove(&oldest);
            self.touched.remove(&oldest);
        }
    }

    /// Serializes the table as the state of the log prefix below `next_offset`.
    pub fn encode(&self, next_offset: i64) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.producers.len() * 100);
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&next_offset.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&self.touched.get(&id).copied().unwrap_or(0).to_be_bytes());
            b.push(e.batches.len() as u8);
            for s in &e.batches {
                b.extend_from_slice(&s.first_seq.to_be_bytes());
                b.extend_from_slice(&s.last_seq.to_be_bytes());
                b.extend_from_slice(&s.base_offset.to_be_bytes());
                b.extend_from_slice(&s.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses a snapshot: (table, next offset it describes); None if damaged.
    pub fn decode(b: &[u8]) -> Option<(ProducerTable, i64)> {
        if b.len() < 24 || &b[..8] != SNAPSHOT_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader { b: body, at: 8 };
        let next_offset = r.i64()?;
        let count = r.u32()? as usize;
        if count > PRODUCERS_MAX_PER_PARTITION {
            return None;
        }
        let mut t = ProducerTable::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let touched = r.i64()? as u64;
            let n = r.u8()? as usize;
            if n > PRODUCER_BATCHES_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(SeqEntry {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            t.clock = t.clock.max(touched);
            t.touched.insert(id, touched);
            t.producers.insert(id, ProducerEntry { epoch, batches });
        }
        if r.at != body.len() {
            return None;
        }
        Some((t, next_offset))
    }

    /// Writes the snapshot durably (temp file, fsync, rename, fsync directory).
    pub fn write_snapshot(&self, dir: &Path, next_offset: i64) -> io::Result<()> {
        use std::io::Write;
        let tmp = dir.join("producer.snapshot.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode(next_offset))?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// File name of the producer state snapshot inside a partition directory.
pub const SNAPSHOT_FILE: &str = "producer.snapshot";

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.at..self.at + N)?;
        self.at += N;
        s.try_into().ok()
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|a| a[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build, parse_header, set_base_offset};

    fn hdr(pid: i64, epoch: i16, seq: i32, n: usize, base: i64) -> BatchHeader {
        let mut b = build::batch(
            n,
            1,
            0,
            build::ProducerFields {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
            },
            0,
        );
        set_base_offset(&mut b, base);
        parse_header(&b).unwrap()
    }

    // Proves the sequence rules: next accepted, retry of any of the last 5 is a duplicate with
    // its original offsets, gaps and old epochs refused, a new epoch must restart at 0.
    #[test]
    fn sequence_rules() {
        let mut t = ProducerTable::default();
        for i in 0..7 {
            let h = hdr(1, 0, i * 2, 2, 100 + i64::from(i) * 2);
            assert_eq!(t.check(&h).unwrap(), SeqCheck::Append);
            t.record(&h);
        }
        assert_eq!(
            t.check(&hdr(1, 0, 12, 2, 0)).unwrap(),
            SeqCheck::Duplicate {
                base_offset: 112,
                last_offset: 113
            }
        );
        assert_eq!(
            t.check(&hdr(1, 0, 4, 2, 0)).unwrap(),
            SeqCheck::Duplicate {
                base_offset: 104,
                last_offset: 105
            }
        );
        // Older than the last 5 batches: no longer a known duplicate, so out of order.
        assert!(matches!(
            t.check(&hdr(1, 0, 2, 2, 0)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            t.check(&hdr(1, 0, 15, 1, 0)),
            Err(AppendError::OutOfOrderSequence {
                expected_sequence: 14,
                ..
            })
        ));
        assert!(matches!(
            t.check(&hdr(1, -1, 14, 1, 0)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            t.check(&hdr(1, 1, 3, 1, 0)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        assert_eq!(t.check(&hdr(1, 1, 0, 1, 0)).unwrap(), SeqCheck::Append);
        assert_eq!(t.check(&hdr(-1, -1, -1, 1, 0)).unwrap(), SeqCheck::Append);
    }

    // Proves the snapshot encoding round-trips and rejects damage.
    #[test]
    fn snapshot_round_trip() {
        let mut t = ProducerTable::default();
        t.record(&hdr(5, 3, 0, 4, 10));
        t.record(&hdr(9, 0, 7, 1, 14));
        let enc = t.encode(15);
        let (back, off) = ProducerTable::decode(&enc).unwrap();
        assert_eq!(off, 15);
        assert_eq!(back.producers, t.producers);
        let mut bad = enc.clone();
        bad[20] ^= 1;
        assert!(ProducerTable::decode(&bad).is_none());
    }
}
