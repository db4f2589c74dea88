//! Fixed-bucket histograms for per-shard metrics, and the storage engine's own
//! (`StoreMetrics`: fdatasync and write-round latencies, group-commit sizes).
//!
//! Runs on: one shard each. Buckets are allocated once when the histogram is made; recording
//! is a binary search over a static bound list and two `Cell` increments (no allocation, no
//! atomics, no lock). `snapshot` copies the counts into a `Send` value so a scrape can carry
//! them to another shard.

use std::cell::Cell;

/// Latency bucket bounds in microseconds (50 us to 10 s, roughly 1-2.5-5 per decade).
pub const LATENCY_US_BOUNDS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Bounds of counts (appends per group commit).
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Bounds in bytes (bytes per write round), 4 KiB to 16 MiB.
pub const BYTES_BOUNDS: &[u64] = &[
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];

/// A histogram with fixed, increasing upper bounds (Prometheus `le` semantics: a value
/// lands in the first bucket whose bound is >= it; beyond the last bound, in +Inf).
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the +Inf bucket. Not cumulative.
    counts: Box<[Cell<u64>]>,
    sum: Cell<u64>,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0),
        }
    }

    #[inline]
    pub fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        let c = &self.counts[i];
        c.set(c.get() + 1);
        self.sum.set(self.sum.get().wrapping_add(value));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// The counts of a histogram at one moment; `Send`, and mergeable with another of the same
/// bounds (e.g. to sum shards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Per bucket (not cumulative), the last one +Inf.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts per bound (the Prometheus `_bucket` series), +Inf last.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut acc = 0;
        self.counts.iter().enumerate().map(move |(i, c)| {
            acc += c;
            (self.bounds.get(i).copied(), acc)
        })
    }
}

/// The storage engine's histograms of one shard.
pub struct StoreMetrics {
    /// Every fdatasync (group commits, segment finalization, flush), microseconds.
    pub fdatasync_us: Histogram,
    /// Write rounds through plain descriptors: issue to all writes completed, microseconds.
    pub write_round_us: Histogram,
    /// Write rounds through O_DSYNC descriptors (a group commit when durable on completion):
    /// issue to all writes completed, microseconds.
    pub dsync_round_us: Histogram,
    /// Appends (produce or follower batches sets) carried by one write round: the group
    /// commit's batch size.
    pub round_appends: Histogram,
    /// Data bytes carried by one write round.
    pub round_bytes: Histogram,
    /// Reads answered from the tail cache, and their bytes.
    pub cache_reads: Cell<u64>,
    pub cache_read_bytes: Cell<u64>,
    /// Reads that went to disk (direct I/O), and their bytes.
    pub disk_reads: Cell<u64>,
    pub disk_read_bytes: Cell<u64>,
}

impl StoreMetrics {
    /// Counts one read answered from the cache (`cache`) or from disk.
    pub(crate) fn read(&self, cache: bool, bytes: usize) {
        let (n, b) = if cache {
            (&self.cache_reads, &self.cache_read_bytes)
        } else {
            (&self.disk_reads, &self.disk_read_bytes)
        };
        n.set(n.get() + 1);
        b.set(b.get() + bytes as u64);
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            fdatasync_us: Histogram::new(LATENCY_US_BOUNDS),
            write_round_us: Histogram::new(LATENCY_US_BOUNDS),
            dsync_round_us: Histogram::new(LATENCY_US_BOUNDS),
            round_appends: Histogram::new(COUNT_BOUNDS),
            round_bytes: Histogram::new(BYTES_BOUNDS),
            cache_reads: Cell::new(0),
            cache_read_bytes: Cell::new(0),
            disk_reads: Cell::new(0),
            disk_read_bytes: Cell::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values land in the first bucket whose bound is >= them (bounds inclusive, as
    // Prometheus' `le`), beyond the last bound in +Inf, and the cumulative view ends at the
    // total count.
    #[test]
    fn buckets_follow_le_semantics() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2]);
        assert_eq!(s.sum, 5222);
        let cum: Vec<_> = s.cumulative().collect();
        assert_eq!(cum, vec![(Some(10), 2), (Some(100), 4), (None, 6)]);
        assert_eq!(s.count(), 6);
    }
}
