//! Metrics: the counters and histograms each shard keeps of its own work, the `Send`
//! snapshot a scrape gathers from every shard through the router, and the Prometheus text
//! rendering of those snapshots.
//!
//! Runs on: every shard keeps a `ShardMetrics` (plain `Cell`s, updated by the shard's own
//! tasks; no atomics, no lock, no allocation per request: the only map, errors by API and
//! code, allocates once per new pair). `gather` runs on the shard serving the admin port
//! (shard 0); `snapshot` runs on each shard via `Shard::call`; `render` is pure.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use shards::{Histogram, HistogramSnapshot};

use crate::shard::Shard;

/// Kafka API keys run 0..=92 in the protocol version osprey speaks: one slot per key.
pub const API_KEY_SLOTS: usize = 96;
const _: () = assert!(API_KEY_SLOTS > 92);

/// One shard's counters. Owned by `Shard`; only that shard's tasks touch it.
pub struct ShardMetrics {
    /// Requests dispatched, per API key.
    requests: Box<[Cell<u64>]>,
    /// Requests that could not be answered (undecodable, unsupported version): the
    /// connection is closed. Per API key.
    protocol_errors: Box<[Cell<u64>]>,
    /// Time from dispatch to the response being ready (Fetch includes its long-poll wait),
    /// microseconds, per API key.
    latency_us: Box<[Histogram]>,
    /// Error codes answered, per (API key, code), for every API: each error-code field of
    /// the response (top-level and per partition / resource / member), counted from the
    /// typed response by `handlers::respond` (Fetch: by its own encoder).
    errors: RefCell<HashMap<(i16, i16), u64>>,
    /// Request frame bytes read, length prefixes included.
    pub bytes_in: Cell<u64>,
    /// Response bytes written to clients.
    pub bytes_out: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    /// Connections refused at `connections-max`.
    pub connections_refused: Cell<u64>,
    /// Records appended by Produce on this shard (retries of stored batches not counted).
    pub messages_in: Cell<u64>,
    /// Record batch bytes appended by Produce on this shard.
    pub produce_bytes_in: Cell<u64>,
    /// Record bytes answered by Fetch from this shard (consumers and followers).
    pub fetch_bytes_out: Cell<u64>,
    /// Partitions whose first transactional batch a Produce on this shard had verified
    /// with the transaction coordinator (KIP-890), and of those the ones refused.
    pub txn_verifications: Cell<u64>,
    pub txn_verifications_refused: Cell<u64>,
    /// glommio's io_uring file counters, summed here: its `io_stats` resets them on every
    /// read, which only `snapshot` does.
    uring: UringTotals,
}

#[derive(Default)]
struct UringTotals {
    file_reads: Cell<u64>,
    file_read_bytes: Cell<u64>,
    file_writes: Cell<u64>,
    file_write_bytes: Cell<u64>,
    files_opened: Cell<u64>,
    files_closed: Cell<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        let cells = || (0..API_KEY_SLOTS).map(|_| Cell::new(0)).collect();
        ShardMetrics {
            requests: cells(),
            protocol_errors: cells(),
            latency_us: (0..API_KEY_SLOTS)
                .map(|_| Histogram::new(shards::metrics::LATENCY_US_BOUNDS))
                .collect(),
            errors: RefCell::new(HashMap::new()),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            messages_in: Cell::new(0),
            produce_bytes_in: Cell::new(0),
            txn_verifications: Cell::new(0),
            txn_verifications_refused: Cell::new(0),
            fetch_bytes_out: Cell::new(0),
            uring: UringTotals::default(),
        }
    }
}

fn slot(key: ApiKey) -> usize {
    (key as i16 as usize).min(API_KEY_SLOTS - 1)
}

pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl ShardMetrics {
    /// One request answered (or failed) after `us` microseconds.
    pub fn request(&self, key: ApiKey, us: u64, ok: bool) {
        let i = slot(key);
        add(&self.requests[i], 1);
        self.latency_us[i].record(us);
        if !ok {
            add(&self.protocol_errors[i], 1);
        }
    }

    /// An error code in an answer of `key` (codes 0 are not errors and are ignored).
    pub fn error(&self, key: ApiKey, code: i16) {
        if code != 0 {
            *self
                .errors
                .borrow_mut()
                .entry((key as i16, code))
                .or_insert(0) += 1;
        }
    }
}

/// io_uring figures of one shard's executor (all its rings).
#[derive(Debug, Clone, Default)]
pub struct UringSnapshot {
    pub file_reads: u64,
    pub file_read_bytes: u64,
    pub file_writes: u64,
    pub file_write_bytes: u64,
    pub files_opened: u64,
    pub files_closed: u64,
    /// Quantiles (0.5, 0.99) of file I/O latency since the previous scrape, microseconds.
    pub io_latency_us: Vec<(f64, f64)>,
}

/// One consumer group on its coordinating shard.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub group: String,
    pub state: &'static str,
    pub members: usize,
    /// (topic, partition, committed offset).
    pub offsets: Vec<(String, i32, i64)>,
}

/// One partition replica as a scrape sees it.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub leader: bool,
    pub replicas: usize,
    /// ISR size (leaders only; 0 on followers).
    pub isr: usize,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub segments: usize,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub fetch_bytes_consumer: u64,
    pub fetch_bytes_follower: u64,
}

/// Everything one shard reports, copied so it can travel to the scraping shard.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// (API key, requests, protocol errors, latency), for keys with requests.
    pub apis: Vec<(i16, u64, u64, HistogramSnapshot)>,
    /// (API key, error code, count).
    pub errors: Vec<(i16, i16, u64)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: usize,
    /// Fetch sessions (KIP-227) the shard keeps.
    pub fetch_sessions: usize,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub messages_in: u64,
    pub produce_bytes_in: u64,
    pub fetch_bytes_out: u64,
    pub txn_verifications: u64,
    pub txn_verifications_refused: u64,
    pub request_memory_bytes: u64,
    pub partitions: Vec<PartitionSnapshot>,
    pub store: shards::StoreStats,
    pub fdatasync_us: HistogramSnapshot,
    pub write_round_us: HistogramSnapshot,
    pub dsync_round_us: HistogramSnapshot,
    pub round_appends: HistogramSnapshot,
    pub round_bytes: HistogramSnapshot,
    pub cache_reads: u64,
    pub cache_read_bytes: u64,
    pub disk_reads: u64,
    pub disk_read_bytes: u64,
    pub uring: UringSnapshot,
    /// The groups this shard coordinates.
    pub groups: Vec<GroupSnapshot>,
    /// True once the shard applied metadata and is not shutting down.
    pub serving: bool,
}

/// Copies this shard's metrics (runs on the shard itself).
pub fn snapshot(shard: &Shard) -> ShardSnapshot {
    let m = &shard.metrics;
    let apis = (0..API_KEY_SLOTS)
        .filter(|&i| m.requests[i].get() > 0)
        .map(|i| {
            (
                i as i16,
                m.requests[i].get(),
                m.protocol_errors[i].get(),
                m.latency_us[i].snapshot(),
            )
        })
        .collect();
    let mut errors: Vec<(i16, i16, u64)> = m
        .errors
        .borrow()
        .iter()
        .map(|(&(k, c), &n)| (k, c, n))
        .collect();
    errors.sort_unstable();
    let mut partitions: Vec<PartitionSnapshot> = shard
        .local_partitions()
        .into_iter()
        .map(|(topic, partition, r)| {
            let st = r.log.stats();
            PartitionSnapshot {
                topic,
                partition,
                leader: r.is_leader(),
                replicas: r.replication_factor(),
                isr: r.isr_len(),
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
                high_watermark: r.high_watermark(),
                size_bytes: st.size_bytes,
                segments: st.segments,
                messages_in: r.counters.messages_in.get(),
                bytes_in: r.counters.bytes_in.get(),
                fetch_bytes_consumer: r.counters.fetch_bytes_consumer.get(),
                fetch_bytes_follower: r.counters.fetch_bytes_follower.get(),
            }
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let sm = shard.store.metrics();
    let mut groups: Vec<GroupSnapshot> = shard
        .groups
        .groups
        .borrow()
        .values()
        .map(|g| {
            let mut offsets: Vec<(String, i32, i64)> = g
                .offsets
                .iter()
                .map(|((t, p), c)| (t.clone(), *p, c.offset))
                .collect();
            offsets.sort();
            GroupSnapshot {
                group: g.id.clone(),
                state: g
                    .consumer
                    .as_deref()
                    .map_or(g.state.name(), |c| c.state_name()),
                members: g.members.len() + g.consumer.as_deref().map_or(0, |c| c.members.len()),
                offsets,
            }
        })
        .collect();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    let uring = uring_snapshot(&m.uring);
    ShardSnapshot {
        shard: shard.id,
        apis,
        errors,
        bytes_in: m.bytes_in.get(),
        bytes_out: m.bytes_out.get(),
        connections: shard.connections.get(),
        fetch_sessions: shard.fetch_sessions.borrow().len(),
        connections_accepted: m.connections_accepted.get(),
        connections_refused: m.connections_refused.get(),
        messages_in: m.messages_in.get(),
        produce_bytes_in: m.produce_bytes_in.get(),
        fetch_bytes_out: m.fetch_bytes_out.get(),
        txn_verifications: m.txn_verifications.get(),
        txn_verifications_refused: m.txn_verifications_refused.get(),
        request_memory_bytes: crate::config::REQUEST_MEMORY_PER_SHARD_MAX_BYTES
            .saturating_sub(shard.request_memory.available()),
        partitions,
        store: shard.store.stats(),
        fdatasync_us: sm.fdatasync_us.snapshot(),
        write_round_us: sm.write_round_us.snapshot(),
        dsync_round_us: sm.dsync_round_us.snapshot(),
        round_appends: sm.round_appends.snapshot(),
        round_bytes: sm.round_bytes.snapshot(),
        cache_reads: sm.cache_reads.get(),
        cache_read_bytes: sm.cache_read_bytes.get(),
        disk_reads: sm.disk_reads.get(),
        disk_read_bytes: sm.disk_read_bytes.get(),
        uring,
        groups,
        serving: shard.serving(),
    }
}

/// Adds glommio's io_uring counters since the last call to the shard's totals (on the
/// shard's own executor: `io_stats` is per thread and resets what it returns).
fn uring_snapshot(t: &UringTotals) -> UringSnapshot {
    let io = glommio::executor().io_stats().all_rings();
    let (reads, read_bytes) = io.file_reads();
    let (buffered_reads, buffered_read_bytes) = io.file_buffered_reads();
    let (writes, write_bytes) = io.file_writes();
    let (buffered_writes, buffered_write_bytes) = io.file_buffered_writes();
    add(&t.file_reads, reads + buffered_reads);
    add(&t.file_read_bytes, read_bytes + buffered_read_bytes);
    add(&t.file_writes, writes + buffered_writes);
    add(&t.file_write_bytes, write_bytes + buffered_write_bytes);
    add(&t.files_opened, io.files_opened());
    add(&t.files_closed, io.files_closed());
    let sketch = io.io_latency_us();
    let io_latency_us = [0.5, 0.99]
        .into_iter()
        .filter_map(|q| sketch.quantile(q).ok().flatten().map(|v| (q, v)))
        .collect();
    UringSnapshot {
        file_reads: t.file_reads.get(),
        file_read_bytes: t.file_read_bytes.get(),
        file_writes: t.file_writes.get(),
        file_write_bytes: t.file_write_bytes.get(),
        files_opened: t.files_opened.get(),
        files_closed: t.files_closed.get(),
        io_latency_us,
    }
}

/// How long a scrape waits for one shard's snapshot before leaving that shard out.
pub const SCRAPE_SHARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Gathers every shard's snapshot through the router. A shard that does not answer within
/// SCRAPE_SHARD_TIMEOUT (stopping, or its router channel full) is left out, so its series
/// vanish from that scrape and `osprey_shard_serving` has no sample for it; the result is
/// ordered by shard.
pub async fn gather(shard: &Rc<Shard>) -> Vec<ShardSnapshot> {
    let mut tasks = Vec::with_capacity(shard.count);
    for to in 0..shard.count {
        let me = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let call = async { Ok(me.call(to, |s| async move { snapshot(&s) }).await.ok()) };
            glommio::timer::timeout(SCRAPE_SHARD_TIMEOUT, call)
                .await
                .ok()
                .flatten()
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Some(s) => out.push(s),
            None => log::warn!("metrics: shard {i} did not answer the scrape"),
        }
    }
    out
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("ApiKey{key}"),
    }
}

fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(kafka_protocol::ResponseError::Unknown(_)) | None => "Unknown".into(),
        Some(e) => format!("{e:?}"),
    }
}

/// Prometheus label value escaping (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the text format: one `# HELP`/`# TYPE` per family, then its samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {v}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {v}");
        }
    }

    /// A histogram's `_bucket`, `_sum` and `_count` samples; `scale` divides bounds and sum
    /// (microseconds to seconds: 1e6).
    fn histogram(&mut self, name: &str, labels: &str, h: &HistogramSnapshot, scale: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, acc) in h.cumulative() {
            let le = match bound {
                Some(b) => format!("{}", b as f64 / scale),
                None => "+Inf".into(),
            };
            let _ = writeln!(self.text, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum as f64 / scale);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// A metric family: name, help, and how to read its value.
type Family<F> = (&'static str, &'static str, F);
type ShardField = fn(&ShardSnapshot) -> u64;
type StoreField = fn(&shards::StoreStats) -> u64;
type HistField = fn(&ShardSnapshot) -> &HistogramSnapshot;
type PartCounter = fn(&PartitionSnapshot) -> u64;

/// Renders the Prometheus text exposition (format 0.0.4) of the shards' snapshots.
pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut o = Out {
        text: String::with_capacity(16 << 10),
    };
    let sl = |s: &ShardSnapshot| format!("shard=\"{}\"", s.shard);
    let pl = |s: &ShardSnapshot, p: &PartitionSnapshot| {
        format!(
            "shard=\"{}\",topic=\"{}\",partition=\"{}\"",
            s.shard,
            esc(&p.topic),
            p.partition
        )
    };

    o.family(
        "osprey_shards",
        "gauge",
        "Shards (cores) of this broker process.",
    );
    o.sample("osprey_shards", "", shards.len());
    o.family(
        "osprey_shard_serving",
        "gauge",
        "1 while the shard serves clients (metadata applied, not stopping).",
    );
    for s in shards {
        o.sample("osprey_shard_serving", &sl(s), u8::from(s.serving));
    }

    o.family(
        "osprey_requests_total",
        "counter",
        "Kafka requests dispatched, by API.",
    );
    for s in shards {
        for (k, n, _, _) in &s.apis {
            o.sample(
                "osprey_requests_total",
                &format!("{},api=\"{}\"", sl(s), api_name(*k)),
                n,
            );
        }
    }
    o.family(
        "osprey_request_protocol_errors_total",
        "counter",
        "Requests that could not be answered (undecodable, unsupported version); each closes its connection.",
    );
    for s in shards {
        for (k, _, e, _) in &s.apis {
            o.sample(
                "osprey_request_protocol_errors_total",
                &format!("{},api=\"{}\"", sl(s), api_name(*k)),
                e,
            );
        }
    }
    o.family(
        "osprey_request_errors_total",
        "counter",
        "Kafka error codes answered, by API and code, for every API: each top-level, per-partition, per-resource or per-member code of a response counts once.",
    );
    for s in shards {
        for (k, c, n) in &s.errors {
            o.sample(
                "osprey_request_errors_total",
                &format!(
                    "{},api=\"{}\",code=\"{c}\",error=\"{}\"",
                    sl(s),
                    api_name(*k),
                    error_name(*c)
                ),
                n,
            );
        }
    }
    o.family(
        "osprey_request_latency_seconds",
        "histogram",
        "Time from dispatch to the response being ready, by API (Fetch includes its long-poll wait).",
    );
    for s in shards {
        for (k, _, _, h) in &s.apis {
            o.histogram(
                "osprey_request_latency_seconds",
                &format!("{},api=\"{}\"", sl(s), api_name(*k)),
                h,
                1e6,
            );
        }
    }

    let counters: [Family<ShardField>; 9] = [
        (
            "osprey_bytes_in_total",
            "Request frame bytes read from clients, length prefixes included.",
            |s| s.bytes_in,
        ),
        (
            "osprey_bytes_out_total",
            "Response bytes written to clients.",
            |s| s.bytes_out,
        ),
        (
            "osprey_messages_in_total",
            "Records appended by Produce (retried batches already stored are not counted).",
            |s| s.messages_in,
        ),
        (
            "osprey_produce_bytes_in_total",
            "Record batch bytes appended by Produce.",
            |s| s.produce_bytes_in,
        ),
        (
            "osprey_txn_verifications_total",
            "Partitions whose first transactional batch was checked with the transaction coordinator (KIP-890).",
            |s| s.txn_verifications,
        ),
        (
            "osprey_txn_verifications_refused_total",
            "Of those, the partitions the coordinator did not confirm (the batch was refused).",
            |s| s.txn_verifications_refused,
        ),
        (
            "osprey_fetch_bytes_out_total",
            "Record bytes answered by Fetch (consumers and follower replicas).",
            |s| s.fetch_bytes_out,
        ),
        (
            "osprey_connections_accepted_total",
            "Client connections accepted.",
            |s| s.connections_accepted,
        ),
        (
            "osprey_connections_refused_total",
            "Client connections refused at connections-max.",
            |s| s.connections_refused,
        ),
    ];
    for (name, help, f) in counters {
        o.family(name, "counter", help);
        for s in shards {
            o.sample(name, &sl(s), f(s));
        }
    }
    let gauges: [Family<ShardField>; 10] = [
        ("osprey_connections", "Open client connections.", |s| {
            s.connections as u64
        }),
        (
            "osprey_fetch_sessions",
            "Incremental fetch sessions kept (KIP-227; at most 1000 per shard).",
            |s| s.fetch_sessions as u64,
        ),
        (
            "osprey_request_memory_bytes",
            "Bytes of request frames held (bounded per shard).",
            |s| s.request_memory_bytes,
        ),
        (
            "osprey_cache_bytes",
            "Bytes in the shard's tail cache.",
            |s| s.store.cache_bytes as u64,
        ),
        (
            "osprey_cache_max_bytes",
            "Bound of the shard's tail cache (--cache-mib, or derived from iotune.json).",
            |s| s.store.cache_max_bytes as u64,
        ),
        (
            "osprey_write_round_max_bytes",
            "Largest write round of a partition (--write-round-max-kib, or derived from iotune.json).",
            |s| s.store.round_max_bytes as u64,
        ),
        (
            "osprey_write_round_min_bytes",
            "Queued bytes the next write round waits for while rounds are in flight.",
            |s| s.store.round_min_bytes as u64,
        ),
        (
            "osprey_inflight_writes_max",
            "Bound of the shard's concurrent DMA writes (--inflight-writes-max, or derived from iotune.json).",
            |s| s.store.inflight_writes_max as u64,
        ),
        (
            "osprey_open_files",
            "Segment files the shard's storage holds open.",
            |s| s.store.open_files as u64,
        ),
        (
            "osprey_partitions",
            "Partition replicas open on the shard (leaders and followers).",
            |s| s.partitions.len() as u64,
        ),
    ];
    for (name, help, f) in gauges {
        o.family(name, "gauge", help);
        for s in shards {
            o.sample(name, &sl(s), f(s));
        }
    }
    o.family(
        "osprey_leader_partitions",
        "gauge",
        "Partitions the shard leads.",
    );
    for s in shards {
        let n = s.partitions.iter().filter(|p| p.leader).count();
        o.sample("osprey_leader_partitions", &sl(s), n);
    }
    o.family(
        "osprey_under_replicated_partitions",
        "gauge",
        "Partitions led here whose ISR is smaller than their replica set.",
    );
    for s in shards {
        let n = s
            .partitions
            .iter()
            .filter(|p| p.leader && p.isr < p.replicas)
            .count();
        o.sample("osprey_under_replicated_partitions", &sl(s), n);
    }

    let read_counters: [Family<ShardField>; 4] = [
        (
            "osprey_cache_reads_total",
            "Partition reads answered from the tail cache.",
            |s| s.cache_reads,
        ),
        (
            "osprey_cache_read_bytes_total",
            "Bytes of partition reads answered from the tail cache.",
            |s| s.cache_read_bytes,
        ),
        (
            "osprey_disk_reads_total",
            "Partition reads that went to disk (direct I/O).",
            |s| s.disk_reads,
        ),
        (
            "osprey_disk_read_bytes_total",
            "Bytes of partition reads that went to disk.",
            |s| s.disk_read_bytes,
        ),
    ];
    for (name, help, f) in read_counters {
        o.family(name, "counter", help);
        for s in shards {
            o.sample(name, &sl(s), f(s));
        }
    }
    let uring_counters: [Family<ShardField>; 6] = [
        (
            "osprey_uring_file_reads_total",
            "File reads through the shard's io_uring rings (glommio).",
            |s| s.uring.file_reads,
        ),
        (
            "osprey_uring_file_read_bytes_total",
            "Bytes of file reads through the shard's io_uring rings.",
            |s| s.uring.file_read_bytes,
        ),
        (
            "osprey_uring_file_writes_total",
            "File writes through the shard's io_uring rings.",
            |s| s.uring.file_writes,
        ),
        (
            "osprey_uring_file_write_bytes_total",
            "Bytes of file writes through the shard's io_uring rings.",
            |s| s.uring.file_write_bytes,
        ),
        (
            "osprey_uring_files_opened_total",
            "Files opened through the shard's io_uring rings.",
            |s| s.uring.files_opened,
        ),
        (
            "osprey_uring_files_closed_total",
            "Files closed through the shard's io_uring rings.",
            |s| s.uring.files_closed,
        ),
    ];
    for (name, help, f) in uring_counters {
        o.family(name, "counter", help);
        for s in shards {
            o.sample(name, &sl(s), f(s));
        }
    }
    o.family(
        "osprey_uring_io_latency_seconds",
        "gauge",
        "Quantiles of io_uring file I/O latency over the interval since the previous scrape (glommio's sketch, reset by each scrape).",
    );
    for s in shards {
        for (q, us) in &s.uring.io_latency_us {
            o.sample(
                "osprey_uring_io_latency_seconds",
                &format!("{},quantile=\"{q}\"", sl(s)),
                us / 1e6,
            );
        }
    }
    let storage_counters: [Family<StoreField>; 3] = [
        (
            "osprey_storage_writes_total",
            "Direct-I/O writes issued.",
            |st| st.writes,
        ),
        (
            "osprey_storage_dsync_writes_total",
            "Direct-I/O writes through O_DSYNC descriptors (durable on completion).",
            |st| st.dsync_writes,
        ),
        (
            "osprey_storage_fdatasyncs_total",
            "fdatasync calls.",
            |st| st.fdatasyncs,
        ),
    ];
    for (name, help, f) in storage_counters {
        o.family(name, "counter", help);
        for s in shards {
            o.sample(name, &sl(s), f(&s.store));
        }
    }
    let hists: [(&str, &str, f64, HistField); 5] = [
        (
            "osprey_storage_fdatasync_seconds",
            "Latency of each fdatasync (group commits, segment finalization).",
            1e6,
            |s| &s.fdatasync_us,
        ),
        (
            "osprey_storage_write_round_seconds",
            "Write rounds through plain descriptors: issue to every write completed.",
            1e6,
            |s| &s.write_round_us,
        ),
        (
            "osprey_storage_dsync_round_seconds",
            "Write rounds through O_DSYNC descriptors: issue to every write completed (durable).",
            1e6,
            |s| &s.dsync_round_us,
        ),
        (
            "osprey_storage_round_appends",
            "Appends carried by one write round (the group commit's batch size).",
            1.0,
            |s| &s.round_appends,
        ),
        (
            "osprey_storage_round_bytes",
            "Data bytes carried by one write round.",
            1.0,
            |s| &s.round_bytes,
        ),
    ];
    for (name, help, scale, f) in hists {
        o.family(name, "histogram", help);
        for s in shards {
            o.histogram(name, &sl(s), f(s), scale);
        }
    }

    type PartField = fn(&PartitionSnapshot) -> i64;
    let partition_gauges: [(&str, &str, PartField); 6] = [
        (
            "osprey_partition_log_start_offset",
            "First offset of the partition's log.",
            |p| p.log_start_offset,
        ),
        (
            "osprey_partition_log_end_offset",
            "Offset the next appended record gets.",
            |p| p.log_end_offset,
        ),
        (
            "osprey_partition_high_watermark",
            "What consumers may read up to.",
            |p| p.high_watermark,
        ),
        (
            "osprey_partition_size_bytes",
            "Bytes of the partition's segment files.",
            |p| p.size_bytes as i64,
        ),
        (
            "osprey_partition_segments",
            "Segment files of the partition.",
            |p| p.segments as i64,
        ),
        (
            "osprey_partition_replicas",
            "Replicas of the partition.",
            |p| p.replicas as i64,
        ),
    ];
    for (name, help, f) in partition_gauges {
        o.family(name, "gauge", help);
        for s in shards {
            for p in &s.partitions {
                o.sample(name, &pl(s, p), f(p));
            }
        }
    }
    o.family(
        "osprey_partition_leader",
        "gauge",
        "1 where this shard leads the partition, 0 where it follows.",
    );
    for s in shards {
        for p in &s.partitions {
            o.sample("osprey_partition_leader", &pl(s, p), u8::from(p.leader));
        }
    }
    o.family(
        "osprey_partition_isr",
        "gauge",
        "In-sync replicas of the partition, as its leader sees them (leaders only).",
    );
    for s in shards {
        for p in s.partitions.iter().filter(|p| p.leader) {
            o.sample("osprey_partition_isr", &pl(s, p), p.isr);
        }
    }
    let partition_counters: [Family<PartCounter>; 2] = [
        (
            "osprey_partition_messages_in_total",
            "Records appended to the partition by Produce.",
            |p| p.messages_in,
        ),
        (
            "osprey_partition_bytes_in_total",
            "Record batch bytes appended to the partition by Produce.",
            |p| p.bytes_in,
        ),
    ];
    for (name, help, f) in partition_counters {
        o.family(name, "counter", help);
        for s in shards {
            for p in &s.partitions {
                o.sample(name, &pl(s, p), f(p));
            }
        }
    }
    let name = "osprey_partition_fetch_bytes_total";
    o.family(
        name,
        "counter",
        "Record bytes of the partition answered by Fetch on its own shard, to consumers and to follower replicas.",
    );
    for s in shards {
        for p in &s.partitions {
            let l = pl(s, p);
            o.sample(
                name,
                &format!("{l},reader=\"consumer\""),
                p.fetch_bytes_consumer,
            );
            o.sample(
                name,
                &format!("{l},reader=\"follower\""),
                p.fetch_bytes_follower,
            );
        }
    }

    o.family(
        "osprey_group_members",
        "gauge",
        "Members of each consumer group, on the shard coordinating it.",
    );
    for s in shards {
        for g in &s.groups {
            o.sample(
                "osprey_group_members",
                &format!(
                    "{},group=\"{}\",state=\"{}\"",
                    sl(s),
                    esc(&g.group),
                    g.state
                ),
                g.members,
            );
        }
    }
    o.family(
        "osprey_group_committed_offset",
        "gauge",
        "Offset each group committed per partition, on the shard coordinating it.",
    );
    // Lag needs the partition's high watermark: known when its leader is on this host.
    let mut hw: HashMap<(&str, i32), i64> = HashMap::new();
    for s in shards {
        for p in s.partitions.iter().filter(|p| p.leader) {
            hw.insert((p.topic.as_str(), p.partition), p.high_watermark);
        }
    }
    let gl = |s: &ShardSnapshot, g: &GroupSnapshot, t: &str, p: i32| {
        format!(
            "{},group=\"{}\",topic=\"{}\",partition=\"{p}\"",
            sl(s),
            esc(&g.group),
            esc(t)
        )
    };
    for s in shards {
        for g in &s.groups {
            for (t, p, off) in &g.offsets {
                o.sample("osprey_group_committed_offset", &gl(s, g, t, *p), off);
            }
        }
    }
    o.family(
        "osprey_group_lag",
        "gauge",
        "High watermark minus committed offset, for partitions led on this host.",
    );
    for s in shards {
        for g in &s.groups {
            for (t, p, off) in &g.offsets {
                if let Some(h) = hw.get(&(t.as_str(), *p)) {
                    o.sample("osprey_group_lag", &gl(s, g, t, *p), (h - off).max(0));
                }
            }
        }
    }
    o.family(
        "osprey_process_resident_bytes",
        "gauge",
        "Resident memory of the broker process (all shards).",
    );
    if let Some(rss) = resident_bytes() {
        o.sample("osprey_process_resident_bytes", "", rss);
    }
    // The standard Prometheus process collector's name, so loadgen, dashboards and
    // `rate(process_cpu_seconds_total[1m])` read the broker's CPU use without a pid.
    o.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the broker process (all threads), seconds.",
    );
    if let Some(cpu) = process_cpu_seconds() {
        o.sample("process_cpu_seconds_total", "", cpu);
    }

    o.family(
        "osprey_trailing_bytes_requests_total",
        "counter",
        "Requests whose body decoded with bytes left over (served; process-wide).",
    );
    o.sample(
        "osprey_trailing_bytes_requests_total",
        "",
        crate::protocol::TRAILING_BYTES_REQUESTS.load(Ordering::Relaxed),
    );
    o.text
}

/// utime + stime of this process from /proc/self/stat (clock ticks / CLK_TCK), seconds.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (utime, stime) = utime_stime_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (tck > 0).then(|| (utime + stime) as f64 / tck as f64)
}

/// Fields 14 and 15 (utime, stime) of a /proc/PID/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn utime_stime_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After ')': field 3 (state) is the first; utime is field 14, i.e. the 12th here.
    let utime = f.nth(11)?.parse().ok()?;
    let stime = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Resident set size from /proc/self/statm (pages x page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| pages * page as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The rendering is valid text exposition: every sample's family is declared once before
    // it with HELP and TYPE, histogram buckets are cumulative and end at +Inf = _count, and
    // label values are escaped.
    #[test]
    fn render_declares_families_and_escapes_labels() {
        let h = Histogram::new(shards::metrics::LATENCY_US_BOUNDS);
        h.record(700);
        h.record(20_000_000);
        let empty = Histogram::new(shards::metrics::LATENCY_US_BOUNDS).snapshot();
        let snap = ShardSnapshot {
            shard: 1,
            apis: vec![(0, 2, 0, h.snapshot())],
            errors: vec![(0, 6, 1)],
            bytes_in: 10,
            bytes_out: 20,
            connections: 1,
            fetch_sessions: 0,
            connections_accepted: 1,
            connections_refused: 0,
            messages_in: 3,
            produce_bytes_in: 4,
            fetch_bytes_out: 5,
            txn_verifications: 0,
            txn_verifications_refused: 0,
            request_memory_bytes: 0,
            partitions: vec![PartitionSnapshot {
                topic: "a\"b".into(),
                partition: 0,
                leader: true,
                replicas: 1,
                isr: 1,
                log_start_offset: 0,
                log_end_offset: 3,
                high_watermark: 3,
                size_bytes: 4096,
                segments: 1,
                messages_in: 3,
                bytes_in: 4,
                fetch_bytes_consumer: 5,
                fetch_bytes_follower: 0,
            }],
            store: Default::default(),
            fdatasync_us: empty.clone(),
            write_round_us: empty.clone(),
            dsync_round_us: empty.clone(),
            round_appends: Histogram::new(shards::metrics::COUNT_BOUNDS).snapshot(),
            round_bytes: Histogram::new(shards::metrics::BYTES_BOUNDS).snapshot(),
            cache_reads: 0,
            cache_read_bytes: 0,
            disk_reads: 0,
            disk_read_bytes: 0,
            uring: Default::default(),
            groups: vec![GroupSnapshot {
                group: "g".into(),
                state: "Empty",
                members: 0,
                offsets: vec![("a\"b".into(), 0, 1)],
            }],
            serving: true,
        };
        let text = render(&[snap]);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(
                declared.contains(family),
                "sample before its family: {line}"
            );
        }
        assert!(text.contains(
            "osprey_request_latency_seconds_bucket{shard=\"1\",api=\"Produce\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains(
            "osprey_request_latency_seconds_bucket{shard=\"1\",api=\"Produce\",le=\"+Inf\"} 2\n"
        ));
        assert!(
            text.contains("osprey_request_latency_seconds_count{shard=\"1\",api=\"Produce\"} 2\n")
        );
        assert!(text.contains(
            "osprey_request_errors_total{shard=\"1\",api=\"Produce\",code=\"6\",error=\"NotLeaderOrFollower\"} 1\n"
        ));
        assert!(text.contains(
            "osprey_partition_log_end_offset{shard=\"1\",topic=\"a\\\"b\",partition=\"0\"} 3\n"
        ));
        // Committed 1, high watermark 3.
        assert!(text.contains(
            "osprey_group_lag{shard=\"1\",group=\"g\",topic=\"a\\\"b\",partition=\"0\"} 2\n"
        ));
        // The process's own CPU time under the standard Prometheus name.
        let cpu = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .expect("process_cpu_seconds_total sample");
        assert!(cpu.parse::<f64>().expect("a number") >= 0.0);
    }

    // utime and stime are found by counting fields after the last ')' of the command name,
    // which may itself hold spaces and parentheses.
    #[test]
    fn stat_fields_after_command_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 129 0 0 20 0 3 0";
        assert_eq!(utime_stime_ticks(stat), Some((731, 129)));
        assert_eq!(utime_stime_ticks("4242 (x) S 1"), None);
    }
}
