//! Criterion benchmarks of the storage engine, printed beside the disk's own limits
//! (tuning::probe_disk) measured in the same run: batch validation, appends of 16 KiB
//! batches (1 KiB records) with Durability::Written and group-commit Fsync at several
//! concurrencies, and reads from the tail cache and from disk.
//!
//! Each sample runs on a fresh glommio executor (one core, like a shard) in a fresh
//! directory (`OSPREY_BENCH_DIR`, else target/tmp/shards-bench); only the appends/reads
//! themselves are timed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutorBuilder, Placement};
use shards::batch::build::{ProducerFields, batch};
use shards::{Durability, LogConfig, Preallocation, Store, StoreConfig};

const BATCH_RECORDS: usize = 16;
const RECORD_VALUE_BYTES: usize = 1000;

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

/// Runs `f` on a fresh executor and returns what it measured.
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
                "    [{durability:?} x{concurrency} {prealloc:?}] {} appends, {} write rounds, {} fdatasyncs, {} writes (mean {} us in flight, {} us waiting for a permit)",
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
    use Preallocation::{Fallocate, Zero, ZeroAhead};
    for (durability, conc, prealloc) in [
        (Durability::Written, 1, ZeroAhead),
        (Durability::Written, 64, Fallocate),
        (Durability::Written, 64, Zero),
        (Durability::Written, 64, ZeroAhead),
        // 4 MiB outstanding instead of 1 MiB: shows whether the engine or the closed
        // loop's outstanding bytes bound the rate.
        (Durability::Written, 256, ZeroAhead),
        (Durability::Fsync, 1, ZeroAhead),
        (Durability::Fsync, 8, Fallocate),
        (Durability::Fsync, 8, Zero),
        (Durability::Fsync, 8, ZeroAhead),
        (Durability::Fsync, 64, ZeroAhead),
    ] {
        let id = BenchmarkId::new(format!("{durability:?}_{prealloc:?}"), conc);
        g.bench_function(id, |bench| {
            bench.iter_custom(|iters| append_sample(iters, conc, durability, prealloc))
        });
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

fn main() {
    let dir = bench_dir();
    match tuning::probe_disk(&dir, 512 << 20) {
        Ok(l) => eprintln!(
            "disk limits ({}): O_DIRECT seq write {:.0} MB/s; 4 KiB write+fdatasync {:.0} ops/s, p50 {} us, p99 {} us",
            dir.display(),
            l.direct_write_bytes_per_sec / 1e6,
            l.fdatasync_ops_per_sec,
            l.fdatasync_p50_us,
            l.fdatasync_p99_us
        ),
        Err(e) => eprintln!("disk probe failed: {e}"),
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
