//! Criterion benchmarks of the storage engine, printed beside the disk's own limits
//! (tuning::probe_disk, measured before and after the criterion run: this VM's disk swings
//! ~2x over minutes): batch validation, appends of 16 KiB batches (1 KiB records) with
//! Durability::Written and group-commit Fsync at several concurrencies, and reads from the
//! tail cache and from disk. Everything writes under `OSPREY_BENCH_DIR`, else
//! target/tmp/shards-bench; only the appends/reads themselves are timed.
//!
//! Appends are measured two ways, because they answer different questions:
//! - `append_16KiB/cold_*`: each criterion sample runs on a fresh glommio executor (one
//!   core, like a shard) with a fresh Store and partition directory, so every sample also
//!   pays what a just-created partition pays: first-segment creation, synchronous zeroing
//!   of the first preallocation step, page faults of a fresh malloc arena and io_memory.
//!   Samples are short, so this setup weighs heavily: what a new partition's first
//!   seconds cost, and a sensitive check of that path.
//! - `append_16KiB/steady_*`: one long-lived shard per benchmark id (a thread running a
//!   glommio executor that owns a Store and one partition with 256 MiB segments and 1 GiB
//!   retention) serves all of that id's samples, commanded over a channel: segments roll,
//!   retention deletes, the tail cache is full and evicting, and the store's background
//!   task (flush.ms, retention) runs as in the broker, so Written rows also show about one
//!   flush.ms fdatasync a second. Before its first sample the shard writes STEADY_PREFILL
//!   bytes (retention plus two segments, untimed), so every sample runs on a log at its
//!   retention bound, where rolls reuse the segment files retention retires
//!   (`StoreConfig::recycle_segments`). This is what a broker's long-lived partition
//!   sustains (a long run on one partition measured ~40% more than the cold bench).
//! - `append_16KiB/growing_*`: the same long-lived shard without retention (and a prefill
//!   of GROWING_PREFILL_BYTES only), so every segment is a new file that preallocation
//!   must grow: a log that has not reached its retention bound yet (Kafka's default
//!   retention.ms is 7 days), the regime where `Preallocation` matters.
//!
//! Appenders are closed loop: each awaits its append before issuing the next (except
//! `steady_Fsync_ZeroAhead/8x5`: 8 producers each keeping 5 appends in flight, Kafka's
//! default max.in.flight.requests.per.connection), each with a fresh Bytes as a produce
//! request would bring. Both kinds print, once per benchmark id (cold: per sample of
//! >= 1000 appends), the appends, write rounds, fdatasyncs and DMA writes it made.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use shards::batch::build::{ProducerFields, batch};
use shards::{Durability, LogConfig, Partition, Preallocation, Store, StoreConfig, SyncMethod};

const BATCH_RECORDS: usize = 16;
const RECORD_VALUE_BYTES: usize = 1000;
/// segment.bytes of the steady benches' partition: several rolls per GiB appended.
const STEADY_SEGMENT_BYTES: u64 = 256 << 20;
/// retention.bytes of the steady benches' partition (retention.ms is off): bounds their
/// disk use to about this plus one segment.
const STEADY_RETENTION_BYTES: i64 = 1 << 30;
/// Untimed appends before a steady shard's first sample: the log reaches its retention
/// bound and at least one roll reuses a retired segment file.
const STEADY_PREFILL_BYTES: u64 = STEADY_RETENTION_BYTES as u64 + 2 * STEADY_SEGMENT_BYTES;
/// Prefill of a growing shard: fills the tail cache, stays within the first segment.
const GROWING_PREFILL_BYTES: u64 = 192 << 20;
/// Concurrent appenders of the prefill.
const STEADY_PREFILL_APPENDERS: usize = 64;
/// How often an idle steady shard checks for its next command; between commands its
/// executor keeps running the store's background tasks.
const STEADY_IDLE_POLL_MS: u64 = 1;
/// Appends each producer of `steady_Fsync_ZeroAhead/8x5` keeps in flight (Kafka's default
/// max.in.flight.requests.per.connection).
const PRODUCER_IN_FLIGHT: usize = 5;
/// Bytes of the disk probe's bandwidth passes.
const PROBE_BYTES: u64 = 512 << 20;

/// Where the benches write: `OSPREY_BENCH_DIR` (point it at the disk the broker will use),
/// else cargo's per-target scratch directory.
fn bench_dir() -> PathBuf {
    let d = std::env::var_os("OSPREY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shards-bench"));
    std::fs::create_dir_all(&d).ok();
    d
}

fn sample_batch() -> Bytes {
    Bytes::from(batch(
        BATCH_RECORDS,
        RECORD_VALUE_BYTES,
        1_700_000_000_000,
        ProducerFields::NONE,
        0x61,
    ))
}

/// Runs `f` on a fresh executor and returns what it measured (cold benches).
fn on_shard<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Duration> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("executor panicked")
}

/// One cold sample: `iters` closed-loop appends by `concurrency` appenders on a fresh
/// executor, Store and partition directory.
fn append_sample(
    iters: u64,
    concurrency: usize,
    durability: Durability,
    prealloc: Preallocation,
) -> Duration {
    on_shard(move || async move {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let store = Store::new(StoreConfig {
            segment_preallocation: prealloc,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(dir.path().join("b-0"), LogConfig::default())
            .await
            .expect("open");
        let b = sample_batch();
        let per_task = iters.div_ceil(concurrency as u64);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (p, b) = (p.clone(), b.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..per_task {
                    // A fresh Bytes per append, as a produce request would bring.
                    p.append(Bytes::copy_from_slice(&b), durability)
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let el = t.elapsed();
        let s = p.stats();
        let ss = store.stats();
        if iters >= 1000 {
            eprintln!(
                "    [cold {durability:?} x{concurrency} {prealloc:?}] {} appends, {} write rounds, {} fdatasyncs, {} writes (mean {} us in flight, {} us waiting for a permit)",
                s.appends,
                s.write_rounds,
                s.fdatasyncs,
                ss.writes,
                ss.write_latency_us_total / ss.writes.max(1),
                ss.write_permit_wait_us_total / ss.writes.max(1)
            );
        }
        drop(p);
        drop(store);
        el
    })
}

/// One read sample on a fresh executor: `iters` 1 MiB reads of a 32 MiB log, from the tail
/// cache or (with no cache) from disk.
fn read_sample(iters: u64, from_cache: bool) -> Duration {
    on_shard(move || async move {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let path = dir.path().join("r-0");
        let cache = if from_cache { 256 << 20 } else { 0 };
        let store = Store::new(StoreConfig {
            cache_max_bytes: cache,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .expect("open");
        let b = sample_batch();
        // 32 MiB of log, read round and round in 1 MiB fetches.
        let batches = (32 << 20) / b.len();
        for _ in 0..batches {
            p.append(Bytes::copy_from_slice(&b), Durability::None)
                .await
                .expect("append");
        }
        p.flush().await.expect("flush");
        let end = p.log_end_offset();
        let mut off = 0;
        let t = Instant::now();
        for _ in 0..iters {
            let out = p.read(off, 1 << 20).await.expect("read");
            let last = shards::batch::parse_header(out.chunks.last().expect("chunk")).expect("hdr");
            off = last.last_offset() + 1;
            if off >= end {
                off = 0;
            }
        }
        t.elapsed()
    })
}

/// One command to a steady shard: `iters` appends (rounded up to a multiple of
/// `producers`) of the bench batch at `durability`.
#[derive(Clone, Copy, Debug)]
struct SteadyRun {
    iters: u64,
    /// Concurrent producers, each appending its share in order.
    producers: usize,
    /// Appends each producer keeps outstanding (1 = closed loop).
    in_flight: usize,
    durability: Durability,
}

/// What one SteadyRun measured: the time of its appends and the counters they moved.
#[derive(Clone, Copy, Debug, Default)]
struct SteadySample {
    elapsed: Duration,
    appends: u64,
    write_rounds: u64,
    /// Rounds written through O_DSYNC that were a group commit of their own.
    dsync_rounds: u64,
    /// Rolls that reused a segment file retention retired.
    recycled_segments: u64,
    fdatasyncs: u64,
    writes: u64,
    write_latency_us: u64,
    write_permit_wait_us: u64,
    /// Acks a producer got for an offset below one it was acked before (0 if offsets are
    /// assigned in each producer's order).
    reordered: u64,
    /// Size of the log on disk after the run and retention, bytes.
    log_bytes: u64,
    /// Segments of the log after the run and retention.
    segments: usize,
}

/// A long-lived shard that serves every sample of one steady benchmark id: a thread runs a
/// glommio executor owning a Store and one partition (see `serve_steady`); `run` sends it
/// a SteadyRun and waits for the SteadySample. Dropping it closes the store, removes the
/// partition directory and prints the id's totals.
struct SteadyShard {
    label: String,
    commands: Option<mpsc::Sender<SteadyRun>>,
    samples: mpsc::Receiver<SteadySample>,
    executor: Option<ExecutorJoinHandle<()>>,
    /// Sums over the runs so far (log_bytes and segments: the largest seen).
    totals: SteadySample,
    runs: u64,
}

impl SteadyShard {
    fn start(
        label: String,
        prealloc: Preallocation,
        sync_method: SyncMethod,
        growing: bool,
    ) -> SteadyShard {
        let (commands, command_rx) = mpsc::channel();
        let (sample_tx, samples) = mpsc::channel();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("steady-shard")
            .spawn(move || serve_steady(prealloc, sync_method, growing, command_rx, sample_tx))
            .expect("steady shard executor");
        // Wait for the prefill (untimed).
        let prefill = samples.recv().expect("steady shard died in its prefill");
        eprintln!(
            "    [{label}] prefill: {} appends in {:.1} s, {} rolls into recycled files",
            prefill.appends,
            prefill.elapsed.as_secs_f64(),
            prefill.recycled_segments
        );
        SteadyShard {
            label,
            commands: Some(commands),
            samples,
            executor: Some(executor),
            totals: SteadySample::default(),
            runs: 0,
        }
    }

    /// Runs one sample on the shard; returns the time its appends took.
    fn run(&mut self, run: SteadyRun) -> Duration {
        self.commands
            .as_ref()
            .expect("steady shard open")
            .send(run)
            .expect("steady shard gone");
        let s = self.samples.recv().expect("steady shard died");
        let t = &mut self.totals;
        t.elapsed += s.elapsed;
        t.appends += s.appends;
        t.write_rounds += s.write_rounds;
        t.dsync_rounds += s.dsync_rounds;
        t.recycled_segments += s.recycled_segments;
        t.fdatasyncs += s.fdatasyncs;
        t.writes += s.writes;
        t.write_latency_us += s.write_latency_us;
        t.write_permit_wait_us += s.write_permit_wait_us;
        t.reordered += s.reordered;
        t.log_bytes = t.log_bytes.max(s.log_bytes);
        t.segments = t.segments.max(s.segments);
        self.runs += 1;
        s.elapsed
    }
}

impl Drop for SteadyShard {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(executor) = self.executor.take()
            && executor.join().is_err()
        {
            eprintln!("    [{}] steady shard failed", self.label);
        }
        let t = &self.totals;
        let secs = t.elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "    [{}] {} samples (warm-up included): {} appends ({:.0} MB/s), {} write rounds ({} O_DSYNC group commits), {} fdatasyncs, {} writes (mean {} us in flight, {} us waiting for a permit), {} reordered acks; {} rolls into recycled files; log at most {} MiB in {} segment(s) after retention",
            self.label,
            self.runs,
            t.appends,
            (t.appends * sample_batch().len() as u64) as f64 / secs / 1e6,
            t.write_rounds,
            t.dsync_rounds,
            t.fdatasyncs,
            t.writes,
            t.write_latency_us / t.writes.max(1),
            t.write_permit_wait_us / t.writes.max(1),
            t.reordered,
            t.recycled_segments,
            t.log_bytes >> 20,
            t.segments
        );
    }
}

/// The steady shard's executor: opens the store (with the broker's background task:
/// flush.ms and retention every BACKGROUND_TICK_MS) and one partition with
/// STEADY_SEGMENT_BYTES segments and STEADY_RETENTION_BYTES retention (retention.ms off),
/// serves commands until the sender is dropped (polling every STEADY_IDLE_POLL_MS so
/// background work keeps running between samples), then closes the store and removes the
/// directory. `growing`: no retention and only GROWING_PREFILL_BYTES of prefill, so every
/// segment is a new file (a log that has not reached its retention bound yet, e.g. under
/// Kafka's default 7-day retention.ms).
async fn serve_steady(
    prealloc: Preallocation,
    sync_method: SyncMethod,
    growing: bool,
    commands: mpsc::Receiver<SteadyRun>,
    samples: mpsc::Sender<SteadySample>,
) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let store = Store::new(StoreConfig {
        segment_preallocation: prealloc,
        sync_method,
        ..StoreConfig::default()
    });
    store.start_background();
    let p = store
        .open_partition(
            dir.path().join("s-0"),
            LogConfig {
                segment_bytes: STEADY_SEGMENT_BYTES,
                retention_bytes: if growing { -1 } else { STEADY_RETENTION_BYTES },
                // The bench batch's timestamps are from 2023: under the default 7-day
                // retention.ms every segment would be deleted as soon as it is sealed.
                retention_ms: -1,
                ..LogConfig::default()
            },
        )
        .await
        .expect("open");
    let b = sample_batch();
    let prefill = SteadyRun {
        iters: if growing {
            GROWING_PREFILL_BYTES
        } else {
            STEADY_PREFILL_BYTES
        }
        .div_ceil(b.len() as u64),
        producers: STEADY_PREFILL_APPENDERS,
        in_flight: 1,
        durability: Durability::Written,
    };
    // The prefill's sample tells `SteadyShard::start` the shard is ready.
    if samples
        .send(steady_run(&store, &p, &b, prefill).await)
        .is_err()
    {
        return;
    }
    loop {
        match commands.try_recv() {
            Ok(run) => {
                let s = steady_run(&store, &p, &b, run).await;
                if samples.send(s).is_err() {
                    break;
                }
            }
            Err(mpsc::TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_millis(STEADY_IDLE_POLL_MS)).await
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    store.close_all().await.expect("close store");
    drop(p);
    drop(store);
    dir.close().expect("remove steady bench dir");
}

/// Runs one SteadyRun on the steady shard's partition; only the appends are timed. Applies
/// retention after them (the background task also does, every BACKGROUND_TICK_MS).
async fn steady_run(
    store: &Rc<Store>,
    p: &Rc<Partition>,
    b: &Bytes,
    run: SteadyRun,
) -> SteadySample {
    let (ps0, ss0) = (p.stats(), store.stats());
    let per_producer = run.iters.div_ceil(run.producers as u64);
    let t = Instant::now();
    let tasks: Vec<_> = (0..run.producers)
        .map(|_| {
            glommio::spawn_local(produce(
                p.clone(),
                b.clone(),
                per_producer,
                run.in_flight,
                run.durability,
            ))
        })
        .collect();
    let mut reordered = 0;
    for task in tasks {
        reordered += task.await;
    }
    let elapsed = t.elapsed();
    p.enforce_retention().expect("retention");
    let (ps, ss) = (p.stats(), store.stats());
    SteadySample {
        elapsed,
        appends: ps.appends - ps0.appends,
        write_rounds: ps.write_rounds - ps0.write_rounds,
        dsync_rounds: ps.dsync_rounds - ps0.dsync_rounds,
        recycled_segments: ps.recycled_segments - ps0.recycled_segments,
        fdatasyncs: ps.fdatasyncs - ps0.fdatasyncs,
        writes: ss.writes - ss0.writes,
        write_latency_us: ss.write_latency_us_total - ss0.write_latency_us_total,
        write_permit_wait_us: ss.write_permit_wait_us_total - ss0.write_permit_wait_us_total,
        reordered,
        log_bytes: ps.size_bytes,
        segments: ps.segments,
    }
}

/// One producer: `appends` appends of a fresh copy of `b` (as a produce request would
/// bring), issued in order with at most `in_flight` outstanding: closed loop for 1, else
/// each append is spawned after the previous one and the oldest is awaited once the window
/// is full. Returns how many acks came with a base offset below an earlier ack's.
async fn produce(
    p: Rc<Partition>,
    b: Bytes,
    appends: u64,
    in_flight: usize,
    durability: Durability,
) -> u64 {
    if in_flight <= 1 {
        for _ in 0..appends {
            p.append(Bytes::copy_from_slice(&b), durability)
                .await
                .expect("append");
        }
        return 0;
    }
    let mut window = VecDeque::with_capacity(in_flight);
    let mut last_offset = -1;
    let mut reordered = 0;
    let mut ack = |base_offset: i64| {
        if base_offset < last_offset {
            reordered += 1;
        }
        last_offset = base_offset;
    };
    for _ in 0..appends {
        if window.len() == in_flight
            && let Some(oldest) = window.pop_front()
        {
            ack(oldest.await);
        }
        let (p, data) = (p.clone(), Bytes::copy_from_slice(&b));
        window.push_back(glommio::spawn_local(async move {
            p.append(data, durability)
                .await
                .expect("append")
                .base_offset
        }));
    }
    for oldest in window {
        ack(oldest.await);
    }
    reordered
}

fn benches(c: &mut Criterion) {
    let b = sample_batch();
    let mut buf = Vec::new();
    while buf.len() < (1 << 20) {
        buf.extend_from_slice(&b);
    }
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("validate_1MiB_of_16KiB_batches", |bench| {
        bench.iter(|| shards::batch::validate(std::hint::black_box(&buf), 1 << 20).expect("valid"))
    });
    g.finish();

    let mut g = c.benchmark_group("append_16KiB");
    g.throughput(Throughput::Bytes(b.len() as u64));
    use Preallocation::{Fallocate, ZeroAhead};
    // Cold: a fresh shard per sample (see the module doc); kept for the rows that show
    // a new partition's cost beside the steady rows below.
    for (durability, conc, prealloc) in [
        (Durability::Written, 64, Fallocate),
        (Durability::Written, 64, ZeroAhead),
        (Durability::Fsync, 8, Fallocate),
        (Durability::Fsync, 8, ZeroAhead),
    ] {
        let id = BenchmarkId::new(format!("cold_{durability:?}_{prealloc:?}"), conc);
        g.bench_function(id, |bench| {
            bench.iter_custom(|iters| append_sample(iters, conc, durability, prealloc))
        });
    }
    // Steady: one long-lived shard per id serves all its samples.
    // Fsync rows use the default SyncMethod (O_DSYNC rounds) unless they say Fdatasync.
    use SyncMethod::{DsyncWrites, Fdatasync};
    // Growing rows: the same long-lived shard without retention, every segment a new file.
    let growing_rows = [
        (Durability::Written, 64, 1, Fallocate, DsyncWrites, true),
        (Durability::Written, 64, 1, ZeroAhead, DsyncWrites, true),
        (Durability::Fsync, 8, 1, Fallocate, DsyncWrites, true),
        (Durability::Fsync, 8, 1, ZeroAhead, DsyncWrites, true),
    ];
    let steady_rows = [
        (Durability::Written, 1, 1, ZeroAhead, DsyncWrites),
        (Durability::Written, 64, 1, Fallocate, DsyncWrites),
        (Durability::Written, 64, 1, ZeroAhead, DsyncWrites),
        (Durability::Fsync, 1, 1, ZeroAhead, DsyncWrites),
        (Durability::Fsync, 1, 1, ZeroAhead, Fdatasync),
        (Durability::Fsync, 8, 1, Fallocate, DsyncWrites),
        (Durability::Fsync, 8, 1, ZeroAhead, DsyncWrites),
        (Durability::Fsync, 8, 1, ZeroAhead, Fdatasync),
        (Durability::Fsync, 64, 1, ZeroAhead, DsyncWrites),
        (
            Durability::Fsync,
            8,
            PRODUCER_IN_FLIGHT,
            ZeroAhead,
            DsyncWrites,
        ),
    ]
    .map(|(d, p, f, a, m)| (d, p, f, a, m, false));
    for (durability, producers, in_flight, prealloc, sync_method, growing) in
        steady_rows.into_iter().chain(growing_rows)
    {
        let param = if in_flight > 1 {
            format!("{producers}x{in_flight}")
        } else {
            producers.to_string()
        };
        let method = if sync_method == Fdatasync {
            "_Fdatasync"
        } else {
            ""
        };
        let regime = if growing { "growing" } else { "steady" };
        let label = format!("{regime} {durability:?}{method} x{param} {prealloc:?}");
        let id = BenchmarkId::new(
            format!("{regime}_{durability:?}{method}_{prealloc:?}"),
            param,
        );
        // Started (and prefilled) on the first call of this id's routine, outside
        // iter_custom: criterion plans its samples from iter_custom's whole call time, and
        // ids filtered out never create a shard.
        let mut shard = None;
        g.bench_function(id, |bench| {
            let shard = shard.get_or_insert_with(|| {
                SteadyShard::start(label.clone(), prealloc, sync_method, growing)
            });
            bench.iter_custom(|iters| {
                shard.run(SteadyRun {
                    iters,
                    producers,
                    in_flight,
                    durability,
                })
            })
        });
        drop(shard);
    }
    g.finish();

    let mut g = c.benchmark_group("read_1MiB");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("from_cache", |bench| {
        bench.iter_custom(|iters| read_sample(iters, true))
    });
    g.bench_function("from_disk", |bench| {
        bench.iter_custom(|iters| read_sample(iters, false))
    });
    g.finish();
}

/// Probes the disk under `dir` and prints its limits on one line, tagged `when`.
fn print_disk_limits(when: &str, dir: &std::path::Path) {
    match tuning::probe_disk(dir, PROBE_BYTES) {
        Ok(l) => eprintln!(
            "disk limits {when} ({}): new-file O_DIRECT write {:.0} MB/s; overwrite O_DIRECT write {:.0} MB/s; 4 KiB write+fdatasync {:.0} ops/s, p50 {} us, p99 {} us; 128 KiB write+fdatasync {:.0} MB/s, 128 KiB O_DSYNC write {:.0} MB/s (ceilings of 8 closed-loop 16 KiB Fsync appenders)",
            dir.display(),
            l.direct_write_bytes_per_sec / 1e6,
            l.direct_overwrite_bytes_per_sec / 1e6,
            l.fdatasync_ops_per_sec,
            l.fdatasync_p50_us,
            l.fdatasync_p99_us,
            l.sync_write_128k_bytes_per_sec / 1e6,
            l.dsync_write_128k_bytes_per_sec / 1e6
        ),
        Err(e) => eprintln!("disk probe {when} failed: {e}"),
    }
}

fn main() {
    let dir = bench_dir();
    // Before and after: this VM's disk swings ~2x over minutes.
    print_disk_limits("before", &dir);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    print_disk_limits("after", &dir);
}
