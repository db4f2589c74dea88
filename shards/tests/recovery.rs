//! Crash recovery and fault injection: torn tails, zero tails, lost or stale indexes, CRC
//! damage, fdatasync errors and crashes after acknowledged appends.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::*;
use shards::{Durability, FaultInjector, LogConfig, Store, StoreConfig, SyncMethod};

fn seg0(dir: &Path) -> std::path::PathBuf {
    dir.join("00000000000000000000.log")
}

// Proves a last batch torn at every byte boundary (and the same followed by zeros) is cut:
// the log ends after the previous whole batch and appends continue at the right offset.
#[test]
fn torn_last_batch_cut_at_every_byte() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let src = root.join("src");
        let (store, p) = open(src.clone(), LogConfig::default()).await;
        let (b1, b2, b3) = (batch(2, 20, 0), batch(3, 20, 0), batch(2, 30, 0));
        let good = b1.len() + b2.len();
        for b in [b1, b2, b3] {
            p.append(b, Durability::Fsync).await.unwrap();
        }
        store.close_all().await.unwrap();
        drop(p);
        let full = std::fs::read(seg0(&src)).unwrap();
        let last_len = full.len() - good;
        assert!(last_len > 61);
        for cut in 0..last_len {
            for zeros in [0usize, 8192] {
                let d = root.join(format!("cut-{cut}-{zeros}"));
                std::fs::create_dir_all(&d).unwrap();
                let mut bytes = full[..good + cut].to_vec();
                bytes.resize(bytes.len() + zeros, 0);
                std::fs::write(seg0(&d), &bytes).unwrap();
                let (_store, p) = open(d.clone(), LogConfig::default()).await;
                // Zero padding can restore a cut that removed only trailing zero bytes:
                // then the whole last batch is there again and must be kept.
                let whole = bytes.len() >= full.len() && bytes[..full.len()] == full[..];
                let (end, batches) = if whole {
                    (7, vec![0, 2, 5])
                } else {
                    (5, vec![0, 2])
                };
                assert_eq!(p.log_end_offset(), end, "cut {cut} zeros {zeros}");
                assert_eq!(offsets(&p.read(0, 1 << 20).await.unwrap()), batches);
                let info = p.append(batch(1, 5, 0), Durability::Fsync).await.unwrap();
                assert_eq!(info.base_offset, end);
                p.delete().await.unwrap();
            }
        }
    });
}

// Proves a crash image (files copied while the partition is live, after Fsync acks) and a
// drop without close both keep every batch acknowledged under Durability::Fsync.
#[test]
fn crash_keeps_every_fsync_acknowledged_batch() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let src = root.join("src");
        let cfg = small_segments();
        let (store, p) = open(src.clone(), cfg.clone()).await;
        let mut acked = 0;
        for i in 0..60 {
            let info = p
                .append(batch(3, 1500, i), Durability::Fsync)
                .await
                .unwrap();
            acked = info.last_offset + 1;
        }
        // Un-awaited, un-synced appends after the last ack may or may not survive.
        for i in 0..5 {
            p.append(batch(3, 1500, i), Durability::None).await.unwrap();
        }
        copy_dir(&src, &root.join("image"));
        drop(p);
        drop(store);
        for d in [root.join("image"), src] {
            let (_store, p) = open(d.clone(), cfg.clone()).await;
            assert!(
                p.log_end_offset() >= acked,
                "{}: {} < {acked}",
                d.display(),
                p.log_end_offset()
            );
            let mut off = 0;
            let mut seen = Vec::new();
            while off < acked {
                let out = p.read(off, 1 << 20).await.unwrap();
                let o = offsets(&out);
                off = o.last().unwrap() + 3;
                seen.extend(o);
            }
            assert_eq!(seen[..60], (0..60).map(|i| i * 3).collect::<Vec<_>>()[..]);
        }
    });
}

// Proves missing and stale/damaged index files are rebuilt by a scan, with reads and
// timestamp lookups still correct.
#[test]
fn missing_and_stale_indexes_are_rebuilt() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        for i in 0..60 {
            p.append(batch(2, 2000, 100 * i), Durability::Written)
                .await
                .unwrap();
        }
        store.close_all().await.unwrap();
        drop(p);
        let mut idx: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        idx.sort();
        assert!(idx.len() >= 2);
        std::fs::remove_file(&idx[0]).unwrap();
        // Stale: an index describing another segment size.
        let other = std::fs::read(&idx[1]).unwrap();
        std::fs::write(&idx[1], &other[..other.len() / 2]).unwrap();
        std::fs::write(idx[1].with_extension("timeindex"), b"garbage").unwrap();
        let store = Store::new(StoreConfig {
            cache_max_bytes: 0,
            ..StoreConfig::default()
        });
        let p = store.open_partition(path.clone(), cfg).await.unwrap();
        assert_eq!(p.log_end_offset(), 120);
        for off in (0..120).step_by(7) {
            let out = p.read(off, 1).await.unwrap();
            assert_eq!(offsets(&out), vec![off / 2 * 2]);
        }
        assert_eq!(
            p.offset_for_timestamp(2950).await.unwrap(),
            Some((60, 3000))
        );
        assert!(idx[0].exists(), "index rewritten");
    });
}

// Proves a CRC flip in the middle of a sealed segment is refused on read with
// ReadError::Corrupt (code 2) naming the file, earlier batches are still served, and
// nothing panics.
#[test]
fn crc_flip_mid_segment_is_refused_on_read() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        let b = batch(2, 2000, 0);
        let blen = b.len() as u64;
        for _ in 0..60 {
            p.append(b.clone(), Durability::Written).await.unwrap();
        }
        store.close_all().await.unwrap();
        drop(p);
        // Flip a record byte of the 10th batch (offsets 18-19) of the first, sealed segment.
        let seg = seg0(&path);
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = (9 * blen + 100) as usize;
        bytes[at] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let store = Store::new(StoreConfig {
            cache_max_bytes: 0,
            ..StoreConfig::default()
        });
        let p = store.open_partition(path.clone(), cfg).await.unwrap();
        assert_eq!(p.log_end_offset(), 120);
        let e = p.read(18, 1 << 20).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 2);
        assert!(e.to_string().contains("00000000000000000000.log"), "{e}");
        assert!(e.to_string().contains("CRC"), "{e}");
        let out = p.read(0, 1 << 20).await.unwrap();
        assert_eq!(offsets(&out), (0..9).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(offsets(&p.read(20, 1).await.unwrap()), vec![20]);
    });
}

// Proves an fdatasync error stops the partition: the Fsync append fails with
// KAFKA_STORAGE_ERROR, the reason names fdatasync, and later appends are refused.
#[test]
fn fdatasync_error_stops_partition() {
    sync_error_stops_partition(SyncMethod::Fdatasync);
}

// The same when the sync is part of an O_DSYNC write (the default sync method).
#[test]
fn dsync_write_error_stops_partition() {
    sync_error_stops_partition(SyncMethod::DsyncWrites);
}

fn sync_error_stops_partition(sync_method: SyncMethod) {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig {
            sync_method,
            ..StoreConfig::default()
        });
        let faults = Rc::new(FaultInjector::default());
        store.set_fault_injector(Some(faults.clone()));
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        p.append(batch(1, 10, 0), Durability::Fsync).await.unwrap();
        faults.fail_fdatasync.set(true);
        let e = p
            .append(batch(1, 10, 0), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 56);
        assert!(e.to_string().contains("fdatasync"), "{e}");
        assert!(p.stopped_reason().unwrap().contains("fdatasync"));
        faults.fail_fdatasync.set(false);
        let e = p
            .append(batch(1, 10, 0), Durability::Written)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            shards::AppendError::Storage(shards::StorageError::Stopped { .. })
        ));
        assert!(e.to_string().contains("fdatasync"), "{e}");
        assert!(p.flush().await.is_err());
    });
}

// Proves a write error also stops the partition and fails a Written append.
#[test]
fn write_error_stops_partition() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig::default());
        let faults = Rc::new(FaultInjector::default());
        store.set_fault_injector(Some(faults.clone()));
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        faults.fail_writes.set(true);
        let e = p
            .append(batch(1, 10, 0), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 56);
        assert!(p.stopped_reason().unwrap().contains("write"));
    });
}

// Proves readers never see batches a failed write left behind: they have offsets (the
// append assigned them before the write failed) but will never be on disk, so after the
// failure the high watermark and every read end at what was written, as after a restart.
#[test]
fn failed_write_hides_the_unwritten_batches_from_readers() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig::default());
        let faults = Rc::new(FaultInjector::default());
        store.set_fault_injector(Some(faults.clone()));
        let p = store
            .open_partition(path.clone(), LogConfig::default())
            .await
            .unwrap();
        p.append(batch(3, 10, 0), Durability::Fsync).await.unwrap();
        faults.fail_writes.set(true);
        p.append(batch(2, 10, 0), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(p.log_end_offset(), 5, "the failed batch had offsets 3..5");
        assert_eq!(p.high_watermark(), 3);
        let all = p.read(0, 1 << 20).await.unwrap();
        assert_eq!(all.high_watermark, 3);
        let bytes: usize = all.chunks.iter().map(|c| c.len()).sum();
        assert_eq!(bytes, batch(3, 10, 0).len(), "only the written batch");
        let past = p.read(3, 1 << 20).await.unwrap();
        assert!(past.chunks.is_empty());
        let bounded = p.read_bounded(0, 1 << 20, 5).await.unwrap();
        assert_eq!(bounded.high_watermark, 3);
        assert_eq!(bounded.chunks.iter().map(|c| c.len()).sum::<usize>(), bytes);
    });
}
