//! Latency histograms and counters. Workers record into `Stats` (one per worker thread) and
//! ship interval snapshots to the main thread, which pools them by merging histograms:
//! percentiles are never averaged across actors.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to one hour, 3 significant digits (0.1%).
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
const SIGFIG: u8 = 3;

/// A fresh latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy hdrhistogram's preconditions.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGFIG).expect("valid histogram bounds")
}

/// The percentiles reported everywhere (OMB's set).
pub const PERCENTILES: &[(f64, &str)] = &[
    (50.0, "50pct"),
    (75.0, "75pct"),
    (95.0, "95pct"),
    (99.0, "99pct"),
    (99.9, "999pct"),
    (99.99, "9999pct"),
];

/// Counters and histograms for one interval (or the total).
#[derive(Clone)]
pub struct Stats {
    /// Messages handed to the client (appended to a batch).
    pub sent: u64,
    /// Messages acknowledged (acks=0: written to the socket queue).
    pub acked: u64,
    /// Value bytes acknowledged.
    pub acked_bytes: u64,
    /// Messages whose produce failed.
    pub publish_errors: u64,
    /// Messages consumed.
    pub consumed: u64,
    /// Value bytes consumed.
    pub consumed_bytes: u64,
    /// Consumer errors (failed fetches, bad payloads).
    pub consume_errors: u64,
    /// Offset commits that succeeded (consumer groups).
    pub commits: u64,
    /// Offset commits that failed (also counted in `consume_errors`).
    pub commit_errors: u64,
    /// Times a group member rejoined after its first assignment.
    pub rebalances: u64,
    /// Error text -> count (first words of each error).
    pub error_kinds: BTreeMap<String, u64>,
    /// Intended send -> ack, microseconds (OMB publishLatency).
    pub publish: Histogram<u64>,
    /// Intended send -> handed to the client, microseconds (OMB publishDelayLatency).
    pub publish_delay: Histogram<u64>,
    /// Intended send -> consumed, microseconds (OMB endToEndLatency).
    pub end_to_end: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: 0,
            acked: 0,
            acked_bytes: 0,
            publish_errors: 0,
            consumed: 0,
            consumed_bytes: 0,
            consume_errors: 0,
            commits: 0,
            commit_errors: 0,
            rebalances: 0,
            error_kinds: BTreeMap::new(),
            publish: new_histogram(),
            publish_delay: new_histogram(),
            end_to_end: new_histogram(),
        }
    }
}

impl Stats {
    /// Adds `other` into `self`: counters summed, histograms merged (pooled samples).
    pub fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.acked_bytes += other.acked_bytes;
        self.publish_errors += other.publish_errors;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        self.consume_errors += other.consume_errors;
        self.commits += other.commits;
        self.commit_errors += other.commit_errors;
        self.rebalances += other.rebalances;
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        // Same bounds everywhere, so add cannot fail; saturate rather than panic regardless.
        let _ = self.publish.add(&other.publish);
        let _ = self.publish_delay.add(&other.publish_delay);
        let _ = self.end_to_end.add(&other.end_to_end);
    }

    /// Records an error of some kind for `n` messages.
    pub fn error(&mut self, what: &str, n: u64, publish: bool) {
        if publish {
            self.publish_errors += n;
        } else {
            self.consume_errors += n;
        }
        let key: String = what.chars().take(120).collect();
        *self.error_kinds.entry(key).or_default() += n;
    }

    /// Takes the current contents, leaving empty stats behind.
    pub fn take(&mut self) -> Stats {
        std::mem::take(self)
    }
}

/// A histogram as base64 of HdrHistogram's V2 encoding (readable by every HdrHistogram
/// implementation), for shipping a worker's samples to the coordinator.
pub fn histogram_to_base64(h: &Histogram<u64>) -> Result<String, String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer as _, V2Serializer};
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("serialize histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// The inverse of `histogram_to_base64`.
pub fn histogram_from_base64(s: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("histogram base64: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("histogram V2: {e:?}"))
}

impl Stats {
    /// The stats as JSON: counters, error kinds and the histograms (V2, base64).
    pub fn to_wire(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({
            "sent": self.sent,
            "acked": self.acked,
            "ackedBytes": self.acked_bytes,
            "publishErrors": self.publish_errors,
            "consumed": self.consumed,
            "consumedBytes": self.consumed_bytes,
            "consumeErrors": self.consume_errors,
            "commits": self.commits,
            "commitErrors": self.commit_errors,
            "rebalances": self.rebalances,
            "errorKinds": self.error_kinds,
            "publish": histogram_to_base64(&self.publish)?,
            "publishDelay": histogram_to_base64(&self.publish_delay)?,
            "endToEnd": histogram_to_base64(&self.end_to_end)?,
        }))
    }

    /// The inverse of `to_wire`.
    pub fn from_wire(v: &serde_json::Value) -> Result<Stats, String> {
        let n = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("stats: {k} missing or not a count"))
        };
        let h = |k: &str| {
            histogram_from_base64(v[k].as_str().ok_or_else(|| format!("stats: {k} missing"))?)
        };
        let mut error_kinds = BTreeMap::new();
        for (k, c) in v["errorKinds"].as_object().into_iter().flatten() {
            error_kinds.insert(k.clone(), c.as_u64().unwrap_or(0));
        }
        Ok(Stats {
            sent: n("sent")?,
            acked: n("acked")?,
            acked_bytes: n("ackedBytes")?,
            publish_errors: n("publishErrors")?,
            consumed: n("consumed")?,
            consumed_bytes: n("consumedBytes")?,
            consume_errors: n("consumeErrors")?,
            commits: n("commits")?,
            commit_errors: n("commitErrors")?,
            rebalances: n("rebalances")?,
            error_kinds,
            publish: h("publish")?,
            publish_delay: h("publishDelay")?,
            end_to_end: h("endToEnd")?,
        })
    }
}

/// Records nanoseconds into a microsecond histogram (sub-microsecond values count as 1 us).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).clamp(1, LATENCY_MAX_US));
}

/// A latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Mean, ms.
    pub avg_ms: f64,
    /// Percentile values in `PERCENTILES` order, ms.
    pub pct_ms: [f64; 6],
    /// Maximum, ms.
    pub max_ms: f64,
}

/// Summarizes a microsecond histogram in milliseconds.
pub fn summarize(h: &Histogram<u64>) -> Summary {
    let mut pct_ms = [0.0; 6];
    for (i, (p, _)) in PERCENTILES.iter().enumerate() {
        pct_ms[i] = if h.is_empty() {
            0.0
        } else {
            h.value_at_percentile(*p) as f64 / 1000.0
        };
    }
    Summary {
        count: h.len(),
        avg_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        pct_ms,
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// The percentile distribution (HdrHistogram's classic plot points), ms.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, f64)> = h
        .iter_quantiles(2)
        .map(|v| {
            (
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves pooling merges samples, not percentiles: an actor with 1000 fast samples and one
    // with 10 slow ones pool to a p99 that an average of per-actor p99s would get wrong.
    #[test]
    fn pooling_merges_samples() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for _ in 0..990 {
            record_ns(&mut a.publish, 1_000_000); // 1 ms
        }
        for _ in 0..10 {
            record_ns(&mut b.publish, 100_000_000); // 100 ms
        }
        a.acked = 990;
        b.acked = 10;
        b.error("timed out", 2, true);
        let per_actor_avg_p99 =
            (summarize(&a.publish).pct_ms[3] + summarize(&b.publish).pct_ms[3]) / 2.0;
        let mut pooled = Stats::default();
        pooled.merge(&a);
        pooled.merge(&b);
        let s = summarize(&pooled.publish);
        assert_eq!(s.count, 1000);
        assert_eq!(pooled.acked, 1000);
        assert_eq!(pooled.publish_errors, 2);
        // p99 of the pooled samples: 1% are 100 ms, so the 99th percentile is still 1 ms
        // and p99.9 is 100 ms; the per-actor average (50.5 ms) is neither.
        assert!((s.pct_ms[3] - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.pct_ms[4] - 100.0).abs() < 0.1, "{s:?}");
        assert!((per_actor_avg_p99 - 50.5).abs() < 0.1);
        assert!(!distribution(&pooled.publish).is_empty());
        // take() leaves an empty Stats behind.
        let t = pooled.take();
        assert_eq!(t.acked, 1000);
        assert_eq!(pooled.acked, 0);
        assert!(pooled.publish.is_empty());
    }

    // Stats survive the wire: counters, error kinds and every histogram sample (V2 +
    // base64), so a coordinator merging workers' stats pools the same samples.
    #[test]
    fn wire_round_trip_keeps_samples() {
        let mut a = Stats::default();
        for v in [1_000u64, 2_000, 3_000_000, 40] {
            record_ns(&mut a.publish, v * 1000);
            record_ns(&mut a.end_to_end, v * 2000);
        }
        a.acked = 4;
        a.acked_bytes = 4096;
        a.error("timed out", 1, true);
        let wire = serde_json::to_string(&a.to_wire().unwrap()).unwrap();
        let b = Stats::from_wire(&serde_json::from_str(&wire).unwrap()).unwrap();
        assert_eq!(b.acked, 4);
        assert_eq!(b.acked_bytes, 4096);
        assert_eq!(b.publish_errors, 1);
        assert_eq!(b.error_kinds.get("timed out"), Some(&1));
        assert_eq!(b.publish, a.publish);
        assert_eq!(b.end_to_end, a.end_to_end);
        assert!(b.publish_delay.is_empty());
        assert!(Stats::from_wire(&serde_json::json!({"sent": 1})).is_err());
    }
}
