//! Idempotent-producer state of one partition: per producer id its epoch and the sequence
//! ranges and offsets of its last few batches, for duplicate and gap detection; the open
//! transactions (producer id -> offset of its first batch in the transaction, which bounds
//! the last stable offset) and the aborted transactions that read_committed fetches report;
//! plus its snapshot file (`producer.snapshot`), written at segment roll and close.
//!
//! Runs on the shard's own core. On open the state is loaded from the snapshot (if it is
//! valid and not beyond the recovered log end) and completed by replaying the batch headers
//! after the snapshot's offset; with no usable snapshot it is rebuilt from the whole log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::Path;

use crate::batch::BatchHeader;
use crate::config::{
    ABORTED_TXNS_MAX_PER_PARTITION, PRODUCER_BATCHES_MAX, PRODUCERS_MAX_PER_PARTITION,
    VERIFYING_MAX_PER_PARTITION,
};
use crate::error::AppendError;

/// Snapshot formats: 01 without transactions, 02 with open and aborted transactions.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"OSPPRS01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"OSPPRS02";

/// One aborted transaction of a partition: its producer and its offsets from the first
/// batch to the abort marker (Kafka's AbortedTxn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// One producer's state as operators see it (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence of its last stored record, -1 when none is remembered (after a marker
    /// bumped its epoch).
    pub last_sequence: i32,
    /// Max timestamp of its last batch, -1 when not known (after a restart).
    pub last_timestamp: i64,
    /// Offset of the first batch of its open transaction here, if one is open.
    pub txn_start_offset: Option<i64>,
}

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
    /// Open transactions: producer id -> offset of its first batch in the transaction.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions in marker order (ascending last offset).
    aborted: VecDeque<AbortedTxn>,
    /// Max timestamp of each producer's last batch (DescribeProducers). Not in the
    /// snapshot: after a restart it is known again from the producer's next batch (or
    /// from the batches recovery replays after the snapshot).
    last_timestamp: HashMap<i64, i64>,
    /// KIP-890 verification guards: producer id -> (epoch, guard) of a transactional
    /// producer whose first batch here is being checked with its transaction coordinator.
    /// The append of that batch must show the same guard; a marker for the producer (or the
    /// batch starting the transaction here) removes it, so a check that raced with the end
    /// of the transaction cannot let a late batch open a hanging one. Not in the snapshot,
    /// as Kafka's: a restart only costs another check.
    verifying: HashMap<i64, (i16, u64)>,
    /// Source of guard values (never 0, never reused in this table).
    next_guard: u64,
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
        if h.is_control() {
            // A marker carries no sequence; its epoch may be a bumped one (a coordinator
            // aborting a timed-out transaction fences the producer with it).
            return Ok(SeqCheck::Append);
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

    /// Records stored batch `h` (with its assigned base offset); `control` is its control
    /// record type when it is a control batch (`batch::control_type`).
    pub fn record(&mut self, h: &BatchHeader, control: Option<i16>) {
        if !h.has_producer_id() {
            return;
        }
        self.clock += 1;
        self.last_timestamp.insert(h.producer_id, h.max_timestamp);
        if h.is_control() {
            self.verifying.remove(&h.producer_id);
            let first = self.ongoing.remove(&h.producer_id);
            if let (Some(first_offset), Some(crate::batch::CONTROL_ABORT)) = (first, control) {
                if self.aborted.len() == ABORTED_TXNS_MAX_PER_PARTITION {
                    self.aborted.pop_front();
                    log::warn!(
                        "aborted transactions above {ABORTED_TXNS_MAX_PER_PARTITION} in one partition: the oldest is forgotten"
                    );
                }
                self.aborted.push_back(AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset,
                    last_offset: h.base_offset,
                });
            }
            if let Some(entry) = self.producers.get_mut(&h.producer_id)
                && h.producer_epoch > entry.epoch
            {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            self.touched.insert(h.producer_id, self.clock);
            return;
        }
        if h.is_transactional() {
            self.ongoing.entry(h.producer_id).or_insert(h.base_offset);
            self.verifying.remove(&h.producer_id);
        }
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
            && let Some((&oldest, _)) = self
                .touched
                .iter()
                .filter(|(id, _)| !self.ongoing.contains_key(id))
                .min_by_key(|(_, t)| **t)
        {
            self.producers.remove(&oldest);
            self.touched.remove(&oldest);
            self.last_timestamp.remove(&oldest);
        }
    }

    /// The offset of the first batch of the oldest open transaction: read_committed
    /// consumers read below it only (the last stable offset is min(this, high watermark)).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// The producer's open transaction here, if any: the offset of its first batch.
    pub fn ongoing_txn(&self, producer_id: i64) -> Option<i64> {
        self.ongoing.get(&producer_id).copied()
    }

    /// KIP-890: the guard a transactional batch of `producer_id` must carry once its
    /// coordinator confirmed the partition is in the transaction, or None when the
    /// producer already has an open transaction here (no check needed). A check in flight
    /// for the same epoch shares its guard; a newer epoch replaces it.
    pub fn verification_guard(&mut self, producer_id: i64, epoch: i16) -> Option<u64> {
        if self.ongoing.contains_key(&producer_id) {
            return None;
        }
        if let Some(&(e, guard)) = self.verifying.get(&producer_id)
            && e >= epoch
        {
            return Some(guard);
        }
        if self.verifying.len() >= VERIFYING_MAX_PER_PARTITION
            && let Some(&victim) = self.verifying.keys().next()
        {
            // A producer whose check is dropped has its batch refused (INVALID_TXN_STATE,
            // abortable) rather than the table growing without bound.
            self.verifying.remove(&victim);
        }
        self.next_guard += 1;
        let guard = self.next_guard;
        self.verifying.insert(producer_id, (epoch, guard));
        Some(guard)
    }

    /// Forgets the producer's verification (its transaction ended here without a marker).
    pub fn clear_verification(&mut self, producer_id: i64) {
        self.verifying.remove(&producer_id);
    }

    /// Whether transactional batch `h` may be appended: the producer has an open
    /// transaction here, or `guard` is the one its verification holds.
    pub fn txn_verified(&self, h: &BatchHeader, guard: Option<u64>) -> bool {
        if !h.is_transactional() || h.is_control() || self.ongoing.contains_key(&h.producer_id) {
            return true;
        }
        matches!((self.verifying.get(&h.producer_id), guard), (Some(&(_, g)), Some(x)) if g == x)
    }

    /// Every producer with state here, by id: what DescribeProducers reports.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&id, e)| ActiveProducer {
                producer_id: id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map(|b| b.last_seq).unwrap_or(-1),
                last_timestamp: self.last_timestamp.get(&id).copied().unwrap_or(-1),
                txn_start_offset: self.ongoing.get(&id).copied(),
            })
            .collect();
        out.sort_unstable_by_key(|a| a.producer_id);
        out
    }

    /// Aborted transactions that overlap [from, to): what a read_committed fetch of that
    /// range must be told about.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn trim_aborted(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
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
        b.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (id, first) in &self.ongoing {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&first.to_be_bytes());
        }
        b.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            b.extend_from_slice(&a.producer_id.to_be_bytes());
            b.extend_from_slice(&a.first_offset.to_be_bytes());
            b.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses a snapshot: (table, next offset it describes); None if damaged.
    pub fn decode(b: &[u8]) -> Option<(ProducerTable, i64)> {
        if b.len() < 24 || (&b[..8] != SNAPSHOT_MAGIC && &b[..8] != SNAPSHOT_MAGIC_V1) {
            return None;
        }
        let with_txns = &b[..8] == SNAPSHOT_MAGIC;
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
        if with_txns {
            let n = r.u32()? as usize;
            if n > PRODUCERS_MAX_PER_PARTITION * 2 {
                return None;
            }
            for _ in 0..n {
                let id = r.i64()?;
                let first = r.i64()?;
                t.ongoing.insert(id, first);
            }
            let n = r.u32()? as usize;
            if n > ABORTED_TXNS_MAX_PER_PARTITION {
                return None;
            }
            for _ in 0..n {
                t.aborted.push_back(AbortedTxn {
                    producer_id: r.i64()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
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
            t.record(&h, None);
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

    // Proves DescribeProducers' view: per producer its epoch, last sequence and the max
    // timestamp of its last batch (a marker's included), and its open transaction.
    #[test]
    fn active_view() {
        let mut t = ProducerTable::default();
        let mut b = build::batch(
            3,
            1,
            1_000,
            build::ProducerFields {
                producer_id: 7,
                producer_epoch: 0,
                base_sequence: 0,
            },
            0,
        );
        set_base_offset(&mut b, 0);
        t.record(&parse_header(&b).unwrap(), None);
        let want = ActiveProducer {
            producer_id: 7,
            epoch: 0,
            last_sequence: 2,
            last_timestamp: 1_002,
            txn_start_offset: None,
        };
        assert_eq!(t.active(), vec![want]);
        let mut m = crate::batch::control_batch(7, 0, crate::batch::CONTROL_ABORT, 0, 5_000);
        set_base_offset(&mut m, 3);
        t.record(
            &parse_header(&m).unwrap(),
            Some(crate::batch::CONTROL_ABORT),
        );
        assert_eq!(t.active()[0].last_timestamp, 5_000);
    }

    // Proves the snapshot encoding round-trips and rejects damage.
    #[test]
    fn snapshot_round_trip() {
        let mut t = ProducerTable::default();
        t.record(&hdr(5, 3, 0, 4, 10), None);
        t.record(&hdr(9, 0, 7, 1, 14), None);
        let enc = t.encode(15);
        let (back, off) = ProducerTable::decode(&enc).unwrap();
        assert_eq!(off, 15);
        assert_eq!(back.producers, t.producers);
        let mut bad = enc.clone();
        bad[20] ^= 1;
        assert!(ProducerTable::decode(&bad).is_none());
    }

    fn txn_hdr(pid: i64, epoch: i16, seq: i32, base: i64) -> BatchHeader {
        let mut h = hdr(pid, epoch, seq, 2, base);
        h.attributes |= crate::batch::ATTR_TRANSACTIONAL;
        h
    }

    fn marker(pid: i64, epoch: i16, base: i64) -> BatchHeader {
        let mut b = crate::batch::control_batch(pid, epoch, crate::batch::CONTROL_ABORT, 0, 0);
        set_base_offset(&mut b, base);
        parse_header(&b).unwrap()
    }

    // Proves open transactions bound the first unstable offset, markers close them, aborts
    // are remembered for read_committed with their range, a bumped marker epoch fences the
    // old one, and all of it survives a snapshot.
    #[test]
    fn transactions_and_aborts() {
        use crate::batch::{CONTROL_ABORT, CONTROL_COMMIT};
        let mut t = ProducerTable::default();
        t.record(&txn_hdr(1, 0, 0, 10), None);
        t.record(&hdr(2, 0, 0, 2, 12), None);
        t.record(&txn_hdr(3, 0, 0, 14), None);
        t.record(&txn_hdr(1, 0, 2, 16), None);
        assert_eq!(t.first_unstable_offset(), Some(10));
        assert_eq!(t.ongoing_txn(3), Some(14));
        let active: Vec<_> = t
            .active()
            .iter()
            .map(|p| (p.producer_id, p.last_sequence, p.txn_start_offset))
            .collect();
        assert_eq!(
            active,
            vec![(1, 3, Some(10)), (2, 1, None), (3, 1, Some(14))]
        );
        // A marker's epoch check ignores sequences; an older epoch is refused.
        assert_eq!(t.check(&marker(1, 0, 18)).unwrap(), SeqCheck::Append);
        assert!(matches!(
            t.check(&marker(1, -1, 18)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        t.record(&marker(1, 0, 18), Some(CONTROL_COMMIT));
        assert_eq!(t.first_unstable_offset(), Some(14));
        t.record(&marker(3, 1, 19), Some(CONTROL_ABORT));
        assert_eq!(t.first_unstable_offset(), None);
        assert_eq!(
            t.aborted_between(0, 100),
            vec![AbortedTxn {
                producer_id: 3,
                first_offset: 14,
                last_offset: 19
            }]
        );
        assert!(t.aborted_between(20, 100).is_empty());
        assert!(t.aborted_between(0, 14).is_empty());
        // The abort with epoch 1 fenced producer 3's epoch 0.
        assert!(matches!(
            t.check(&txn_hdr(3, 0, 2, 0)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        t.record(&txn_hdr(2, 0, 2, 20), None);
        let (back, _) = ProducerTable::decode(&t.encode(22)).unwrap();
        assert_eq!(back.first_unstable_offset(), Some(20));
        assert_eq!(back.aborted_between(0, 100), t.aborted_between(0, 100));
        t.trim_aborted(20);
        assert!(t.aborted_between(0, 100).is_empty());
    }

    // Proves the KIP-890 verification guard: a transactional batch with no open transaction
    // needs the guard handed out for its producer (not another's, not none); once its first
    // batch is recorded the transaction is open and later batches need none; a marker
    // (commit/abort) voids a guard handed out before it, so a check that raced with the end
    // of the transaction cannot open a hanging one; non-transactional batches never need one.
    #[test]
    fn verification_guards() {
        let mut t = ProducerTable::default();
        assert!(
            t.txn_verified(&hdr(9, 0, 0, 1, 0), None),
            "not transactional"
        );
        let first = txn_hdr(1, 0, 0, 10);
        assert!(!t.txn_verified(&first, None));
        let g = t
            .verification_guard(1, 0)
            .expect("no open transaction: a check is needed");
        assert_eq!(
            t.verification_guard(1, 0),
            Some(g),
            "a check in flight shares its guard"
        );
        let other = t.verification_guard(2, 0).unwrap();
        assert_ne!(other, g);
        assert!(!t.txn_verified(&first, Some(other)));
        assert!(t.txn_verified(&first, Some(g)));
        t.record(&first, None);
        assert_eq!(t.verification_guard(1, 0), None, "open here: no check");
        assert!(t.txn_verified(&txn_hdr(1, 0, 2, 12), None));
        t.record(&marker(1, 0, 14), Some(crate::batch::CONTROL_ABORT));
        // A guard from before a marker is void.
        let stale = t.verification_guard(1, 0).unwrap();
        t.record(&marker(1, 0, 15), Some(crate::batch::CONTROL_ABORT));
        assert!(!t.txn_verified(&txn_hdr(1, 0, 4, 16), Some(stale)));
        // The coordinator's marker-less end of a transaction voids it too.
        let g2 = t.verification_guard(2, 0).unwrap();
        t.clear_verification(2);
        assert!(!t.txn_verified(&txn_hdr(2, 0, 0, 17), Some(g2)));
    }
}
