//! Pipelined write rounds and segment preallocation: the partly filled block shared by
//! rounds in flight together, the acknowledgement rules, and recovery under every
//! `Preallocation` mode.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::*;
use shards::{Durability, FaultInjector, LogConfig, Preallocation, Store, StoreConfig, SyncMethod};

fn seg0(dir: &Path) -> std::path::PathBuf {
    dir.join("00000000000000000000.log")
}

/// Reads the whole log from `from` and returns (base offset, last offset) of every batch.
async fn read_all(p: &shards::Partition) -> Vec<(i64, i64)> {
    let mut v = Vec::new();
    let mut off = p.log_start_offset();
    while off < p.log_end_offset() {
        let out = p.read(off, 1 << 20).await.unwrap();
        assert!(!out.chunks.is_empty(), "no data at offset {off}");
        for c in &out.chunks {
            let mut pos = 0;
            while pos < c.len() {
                let h = shards::batch::parse_header(&c[pos..]).unwrap();
                v.push((h.base_offset, h.last_offset()));
                pos += h.total_bytes();
                off = h.last_offset() + 1;
            }
        }
    }
    v
}

fn assert_dense(batches: &[(i64, i64)], end: i64) {
    let mut next = 0;
    for &(b, l) in batches {
        assert_eq!(b, next, "batches not dense");
        next = l + 1;
    }
    assert_eq!(next, end);
}

// Proves rounds that overlap in flight keep the shared partial block correct: 32 tasks
// append batches of odd sizes (so nearly every round ends inside a block) fast enough that
// later rounds are issued while earlier ones are in flight (head_writes > 0 shows the
// held-back shared block was used), with every write delayed at random so that writes in
// flight together complete in shuffled order; every batch then reads back CRC-valid from
// disk (the cache is off) before and after a reopen. A stale shared block (an older write
// of it landing last) fails the CRC check or cuts the log at recovery.
#[test]
fn pipelined_rounds_keep_shared_blocks_intact() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = StoreConfig {
            cache_max_bytes: 0,
            ..StoreConfig::default()
        };
        let store = Store::new(config.clone());
        let faults = Rc::new(FaultInjector::default());
        faults.shuffle_writes.set(true);
        store.set_fault_injector(Some(faults));
        let p = store
            .open_partition(path.clone(), LogConfig::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..120usize {
                    let records = 1 + (t + i) % 7;
                    let value = 300 + (t * 131 + i * 977) % 2900;
                    // Mostly None (queues up fast), every 8th waits for its write.
                    let d = if i % 8 == 7 {
                        Durability::Written
                    } else {
                        Durability::None
                    };
                    let info = p.append(batch(records, value, i as i64), d).await.unwrap();
                    if d == Durability::Written {
                        assert!(p.stats().written_offset > info.last_offset);
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        p.flush().await.unwrap();
        let s = p.stats();
        assert!(s.head_writes > 0, "no round was pipelined: {s:?}");
        assert!(s.write_rounds > 1, "{s:?}");
        let end = p.log_end_offset();
        assert_dense(&read_all(&p).await, end);
        store.close_all().await.unwrap();
        drop(p);
        let store = Store::new(config);
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        assert_eq!(p.log_end_offset(), end);
        assert_dense(&read_all(&p).await, end);
    });
}

// Proves the acknowledgement rules with rounds and fdatasyncs pipelined: a Written
// append returns only once every write up to its end completed, and a Fsync append only
// once a fdatasync issued after that covered it.
#[test]
fn acks_follow_written_and_synced_offsets() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (_store, p) = open(path, LogConfig::default()).await;
        let mut tasks = Vec::new();
        for t in 0..16usize {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..30usize {
                    let d = if (t + i) % 2 == 0 {
                        Durability::Written
                    } else {
                        Durability::Fsync
                    };
                    let info = p.append(batch(3, 5000 + t * 10, 0), d).await.unwrap();
                    let s = p.stats();
                    assert!(s.written_offset > info.last_offset, "{d:?} {s:?}");
                    if d == Durability::Fsync {
                        assert!(s.synced_offset > info.last_offset, "{s:?}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let s = p.stats();
        assert_eq!(s.log_end_offset, 16 * 30 * 3);
        assert!(s.fdatasyncs >= 1 && s.fdatasyncs < s.appends, "{s:?}");
    });
}

// Proves, for every preallocation mode, that a crash image taken after Fsync acks spanning
// more than one preallocation step (so ZeroAhead zeroes in the background meanwhile) keeps
// every acknowledged batch and cuts the zero-filled or fallocated rest; and that close()
// leaves the file exactly as long as its data (no zero write lands after the truncate).
#[test]
fn every_preallocation_mode_recovers_and_closes_exactly() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        for mode in [
            Preallocation::Fallocate,
            Preallocation::Zero,
            Preallocation::ZeroAhead,
        ] {
            let config = StoreConfig {
                segment_preallocation: mode,
                ..StoreConfig::default()
            };
            let src = root.join(format!("{mode:?}"));
            let store = Store::new(config.clone());
            let p = store
                .open_partition(src.clone(), LogConfig::default())
                .await
                .unwrap();
            // ~12 MiB in 8 concurrent Fsync appenders: crosses the 8 MiB step.
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let p = p.clone();
                tasks.push(glommio::spawn_local(async move {
                    let mut acked = 0;
                    for i in 0..48 {
                        let info = p
                            .append(batch(8, 4000, i), Durability::Fsync)
                            .await
                            .unwrap();
                        acked = info.last_offset + 1;
                    }
                    acked
                }));
            }
            let mut acked = 0;
            for t in tasks {
                acked = acked.max(t.await);
            }
            let image = root.join(format!("{mode:?}-image"));
            std::fs::create_dir_all(&image).unwrap();
            std::fs::copy(seg0(&src), seg0(&image)).unwrap();
            let data_bytes = p.stats().size_bytes;
            assert!(data_bytes > 8 << 20);
            assert!(
                std::fs::metadata(seg0(&image)).unwrap().len() >= data_bytes,
                "{mode:?}: preallocated file shorter than its data"
            );
            store.close_all().await.unwrap();
            drop(p);
            assert_eq!(
                std::fs::metadata(seg0(&src)).unwrap().len(),
                data_bytes,
                "{mode:?}: closed file not cut to its data"
            );
            for d in [image, src] {
                let store = Store::new(config.clone());
                let p = store
                    .open_partition(d.clone(), LogConfig::default())
                    .await
                    .unwrap();
                assert!(p.log_end_offset() >= acked, "{mode:?} {}", d.display());
                let end = p.log_end_offset();
                assert_dense(&read_all(&p).await, end);
                store.close_all().await.unwrap();
            }
        }
    });
}

// Proves Fsync acks stay durable when rounds and fdatasyncs overlap across segment rolls:
// 16 concurrent Fsync appenders on 64 KiB segments (a round may span a sealed and a new
// segment, syncs in flight together take different dirty segments); a crash image taken
// after the acks holds every acknowledged offset, and the segments follow on densely.
#[test]
fn fsync_acks_survive_rolls_with_overlapping_syncs() {
    fsync_acks_survive_rolls(SyncMethod::Fdatasync);
}

// The same with group commits made by O_DSYNC rounds (the default).
#[test]
fn dsync_acks_survive_rolls() {
    fsync_acks_survive_rolls(SyncMethod::DsyncWrites);
}

fn fsync_acks_survive_rolls(sync_method: SyncMethod) {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let src = root.join("src");
        let cfg = small_segments();
        let store_cfg = StoreConfig {
            sync_method,
            ..StoreConfig::default()
        };
        let (store, p) = open_with(src.clone(), cfg.clone(), store_cfg).await;
        let mut tasks = Vec::new();
        for t in 0..16usize {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut acked = 0;
                for i in 0..25usize {
                    let info = p
                        .append(
                            batch(2, 900 + (t * 37 + i * 11) % 1500, 0),
                            Durability::Fsync,
                        )
                        .await
                        .unwrap();
                    assert!(p.stats().synced_offset > info.last_offset);
                    acked = acked.max(info.last_offset + 1);
                }
                acked
            }));
        }
        let mut acked = 0;
        for t in tasks {
            acked = acked.max(t.await);
        }
        assert!(p.stats().segments > 5, "{:?}", p.stats());
        let image = root.join("image");
        copy_dir(&src, &image);
        drop(p);
        drop(store);
        let (_store, p) = open(image, cfg).await;
        assert!(
            p.log_end_offset() >= acked,
            "{} < {acked}",
            p.log_end_offset()
        );
        let end = p.log_end_offset();
        assert_dense(&read_all(&p).await, end);
    });
}

// Proves segment recycling keeps the log exact: with small segments and retention, rolls
// reuse the file retention retired (recycled_segments > 0); every batch from the log start
// reads back CRC-valid from disk (cache off); and a crash image taken right after a roll
// into a recycled file, whose tail still holds the old segment's batches, recovers to
// exactly the acknowledged end (the old batches' offsets do not continue the sequence, so
// recovery never takes them), as does a clean reopen that picks the spare up again.
#[test]
fn recycled_segments_keep_the_log_exact() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let src = root.join("src");
        let cfg = LogConfig {
            segment_bytes: 64 << 10,
            retention_bytes: 160 << 10,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let store_cfg = StoreConfig {
            cache_max_bytes: 0,
            ..StoreConfig::default()
        };
        let (store, p) = open_with(src.clone(), cfg.clone(), store_cfg.clone()).await;
        let mut acked = 0;
        let mut round = 0usize;
        // Fill until at least two rolls took a recycled file (bounded).
        while p.stats().recycled_segments < 2 {
            assert!(
                round < 200,
                "no recycling after {round} rounds: {:?}",
                p.stats()
            );
            let mut tasks = Vec::new();
            for t in 0..8usize {
                let p = p.clone();
                tasks.push(glommio::spawn_local(async move {
                    let info = p
                        .append(
                            batch(3, 700 + (t * 131 + round * 17) % 1900, 0),
                            Durability::Fsync,
                        )
                        .await
                        .unwrap();
                    info.last_offset + 1
                }));
            }
            for t in tasks {
                acked = acked.max(t.await);
            }
            p.enforce_retention().unwrap();
            round += 1;
        }
        // Right after the roll into a recycled file: two more acked appends, then a crash
        // image while the old tail is still in the active segment's file.
        for _ in 0..2 {
            let info = p.append(batch(2, 500, 0), Durability::Fsync).await.unwrap();
            acked = info.last_offset + 1;
        }
        let s = p.stats();
        assert_eq!(s.log_end_offset, acked);
        assert!(s.log_start_offset > 0, "{s:?}");
        let start = s.log_start_offset;
        let check = |batches: Vec<(i64, i64)>, end: i64| {
            let mut next = start;
            for (b, l) in batches {
                assert_eq!(b, next, "batches not dense");
                next = l + 1;
            }
            assert_eq!(next, end);
        };
        check(read_all(&p).await, acked);
        let image = root.join("image");
        copy_dir(&src, &image);
        // The active segment's file is longer than its data: the old segment's batches.
        let active = std::fs::read_dir(&image)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .unwrap();
        assert!(std::fs::metadata(&active).unwrap().len() > 8 << 10);
        {
            let (_store, img) = open_with(image, cfg.clone(), store_cfg.clone()).await;
            assert_eq!(img.log_end_offset(), acked, "{:?}", img.stats());
            assert_eq!(img.log_start_offset(), start);
            check(read_all(&img).await, acked);
        }
        // Clean close keeps the spare (if one is kept) and reopens exactly.
        store.close_all().await.unwrap();
        drop(p);
        drop(store);
        let (_store, p) = open_with(src, cfg, store_cfg).await;
        assert_eq!(p.log_end_offset(), acked);
        check(read_all(&p).await, acked);
    });
}

// Proves the write-round size is the configured one, within its bounds: Store::new clamps
// out-of-range settings to ROUND_MAX_BYTES_FLOOR..ROUND_MAX_BYTES_CAP and
// 1..INFLIGHT_WRITES_CAP; with 16 KiB rounds, 16 tasks appending ~3 KiB batches without
// waiting write at least one round per 16 KiB + one batch of log, far more rounds than
// the default 512 KiB rounds would take.
#[test]
fn configured_round_size_bounds_rounds() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let wild = Store::new(StoreConfig {
            round_max_bytes: 1,
            round_min_bytes: 1 << 30,
            inflight_writes_max: 1 << 20,
            ..StoreConfig::default()
        });
        assert_eq!(wild.config().round_max_bytes, shards::ROUND_MAX_BYTES_FLOOR);
        assert_eq!(wild.config().round_min_bytes, shards::ROUND_MAX_BYTES_FLOOR);
        assert_eq!(
            wild.config().inflight_writes_max,
            shards::INFLIGHT_WRITES_CAP
        );
        let round = 16 << 10;
        let store = Store::new(StoreConfig {
            round_max_bytes: round,
            round_min_bytes: round / 2,
            ..StoreConfig::default()
        });
        assert_eq!(store.config().round_max_bytes, round);
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        let mut biggest = 0;
        for t in 0..16usize {
            let p = p.clone();
            let b = batch(1, 3000 + t * 10, t as i64);
            biggest = biggest.max(b.len());
            tasks.push(glommio::spawn_local(async move {
                for i in 0..40usize {
                    p.append(batch(1, 3000 + t * 10, i as i64), Durability::None)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        p.flush().await.unwrap();
        let s = p.stats();
        let logged = 16 * 40 * 3000;
        assert!(
            s.write_rounds as usize >= logged / (round + biggest),
            "{} rounds for {logged} bytes: {s:?}",
            s.write_rounds
        );
        // No round went past the 64 KiB bucket (16 KiB + one batch + alignment).
        let rounds = store.metrics().round_bytes.snapshot();
        let within: u64 = rounds
            .cumulative()
            .find(|(bound, _)| *bound == Some(64 << 10))
            .map_or(0, |(_, n)| n);
        assert_eq!(within, rounds.count(), "{rounds:?}");
        store.close_all().await.unwrap();
    });
}
