//! Append/read/roll/retention behaviour of a partition log through the public API.

mod common;

use common::*;
use shards::{Durability, LogConfig, Store, StoreConfig};

// Proves appended batches get consecutive offsets and read back byte-identical (apart from
// the rewritten baseOffset), from the cache and, after a reopen, from disk.
#[test]
fn append_then_read_back_from_cache_and_disk() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (store, p) = open(path.clone(), LogConfig::default()).await;
        let mut sent = Vec::new();
        for i in 0..20 {
            let b = batch(3, 100 + i * 50, 1000 + i as i64);
            let info = p.append(b.clone(), Durability::Fsync).await.unwrap();
            assert_eq!(info.base_offset, i as i64 * 3);
            assert_eq!(info.last_offset, i as i64 * 3 + 2);
            sent.push(b);
        }
        assert_eq!(p.log_end_offset(), 60);
        let out = p.read(0, 1 << 20).await.unwrap();
        assert_eq!(offsets(&out), (0..20).map(|i| i * 3).collect::<Vec<_>>());
        assert!(matches!(out.chunks[0], shards::Chunk::Cached(_)));
        for (c, s) in out.chunks.iter().zip(&sent) {
            assert_eq!(&c[12..], &s[12..]);
        }
        store.close_all().await.unwrap();
        drop(p);
        let (_store, p) = open(path.clone(), LogConfig::default()).await;
        assert_eq!(p.log_end_offset(), 60);
        let out = p.read(7, 1 << 20).await.unwrap();
        assert!(matches!(out.chunks[0], shards::Chunk::Disk(_)));
        assert_eq!(offsets(&out), (2..20).map(|i| i * 3).collect::<Vec<_>>());
        for (c, s) in out.chunks.iter().zip(&sent[2..]) {
            assert_eq!(&c[12..], &s[12..]);
        }
    });
}

// Proves KIP-74 reads: a small max_bytes still returns one whole batch, a read from the
// middle of a batch starts at that batch, and offsets outside [start, end] are refused.
#[test]
fn read_limits_and_ranges() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (_store, p) = open(path, LogConfig::default()).await;
        for i in 0..5 {
            p.append(batch(4, 200, i), Durability::Written)
                .await
                .unwrap();
        }
        let out = p.read(0, 1).await.unwrap();
        assert_eq!(offsets(&out), vec![0]);
        let one = out.bytes();
        let out = p.read(6, one * 2).await.unwrap();
        assert_eq!(offsets(&out), vec![4, 8]);
        assert_eq!(out.high_watermark, 20);
        assert!(p.read(20, 100).await.unwrap().chunks.is_empty());
        let e = p.read(21, 100).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 1);
        assert!(matches!(
            p.read(-1, 100).await,
            Err(shards::ReadError::OffsetOutOfRange { .. })
        ));
    });
}

// Proves bad input becomes the right typed error and Kafka code and stores nothing.
#[test]
fn invalid_appends_are_refused_with_codes() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig {
            batch_max_bytes: 64 << 10,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(
                path,
                LogConfig {
                    max_message_bytes: 8 << 10,
                    ..LogConfig::default()
                },
            )
            .await
            .unwrap();
        let mut bad = batch(2, 10, 0).to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let e = p.append(bad.into(), Durability::Fsync).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 2, "{e}");
        let e = p
            .append(batch(1, 9000, 0), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 10, "{e}");
        let e = p
            .append(batch(100, 1000, 0), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 18, "{e}");
        let e = p
            .append(bytes::Bytes::from_static(&[0u8; 30]), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 2, "{e}");
        // A batch followed by garbage is refused as a whole.
        let mut two = batch(1, 10, 0).to_vec();
        two.extend_from_slice(&[1, 2, 3]);
        assert!(p.append(two.into(), Durability::Fsync).await.is_err());
        assert_eq!(p.log_end_offset(), 0);
        p.append(batch(2, 10, 0), Durability::Fsync).await.unwrap();
        assert_eq!(p.log_end_offset(), 2);
    });
}

// Proves segments roll at segment.bytes, retention.bytes deletes the oldest sealed segments,
// the log start offset advances, and reads below it get OffsetOutOfRange, also after reopen.
#[test]
fn roll_and_size_retention() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        for i in 0..40 {
            p.append(batch(4, 1000, i), Durability::Written)
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
        let s = p.stats();
        assert!(s.segments >= 3, "{s:?}");
        let names: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.to_string_lossy() == "00000000000000000000.log")
        );
        assert!(
            names
                .iter()
                .any(|n| n.to_string_lossy() == "00000000000000000000.index")
        );
        p.set_config(LogConfig {
            retention_bytes: 70 << 10,
            ..cfg.clone()
        });
        let deleted = p.enforce_retention().unwrap();
        assert!(deleted >= 1);
        let start = p.log_start_offset();
        assert!(start > 0);
        assert!(p.stats().size_bytes >= 70 << 10 || p.stats().segments == 1);
        assert_eq!(
            p.read(start - 1, 100).await.unwrap_err().kafka_error_code(),
            1
        );
        assert_eq!(offsets(&p.read(start, 1).await.unwrap()), vec![start]);
        assert!(!path.join("00000000000000000000.log").exists());
        store.close_all().await.unwrap();
        let (_store, p) = open(path, cfg).await;
        assert_eq!(p.log_start_offset(), start);
        assert_eq!(p.log_end_offset(), 160);
    });
}

// Proves retention.ms deletes sealed segments whose newest timestamp is old, and that
// offset_for_timestamp finds the first record (not batch) whose timestamp reaches the target.
#[test]
fn time_retention_and_offset_for_timestamp() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let store = Store::new(StoreConfig {
            cache_max_bytes: 0,
            ..StoreConfig::default()
        });
        let p = store.open_partition(path, cfg.clone()).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        // 20 old batches (timestamps 1000 + 10 i), then 20 recent ones.
        for i in 0..20 {
            p.append(batch(2, 3000, 1000 + 10 * i), Durability::Written)
                .await
                .unwrap();
        }
        for i in 0..20 {
            p.append(batch(2, 3000, now + i), Durability::Written)
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
        // Batch i holds records at base and base + 1: ts 1055 is first reached by batch 6
        // (offsets 12, 13 at 1060, 1061), ts 1061 by its second record.
        assert_eq!(
            p.offset_for_timestamp(1055).await.unwrap(),
            Some((12, 1060))
        );
        assert_eq!(
            p.offset_for_timestamp(1061).await.unwrap(),
            Some((13, 1061))
        );
        assert_eq!(p.offset_for_timestamp(0).await.unwrap(), Some((0, 1000)));
        assert_eq!(
            p.offset_for_timestamp(now + 10).await.unwrap(),
            Some((59, now + 10))
        );
        assert_eq!(p.max_timestamp(), now + 20);
        assert_eq!(p.offset_for_timestamp(now + 1000).await.unwrap(), None);
        p.set_config(LogConfig {
            retention_ms: 3_600_000,
            ..cfg
        });
        assert!(p.enforce_retention().unwrap() >= 1);
        let start = p.log_start_offset();
        assert!(start > 0 && start <= 40, "start {start}");
        assert_eq!(
            p.offset_for_timestamp(0).await.unwrap().map(|r| r.0),
            Some(start)
        );
    });
}

// Proves the per-shard cache stays within cache_max_bytes once data is written, and that
// evicted data is served correctly from disk.
#[test]
fn cache_is_bounded_and_evicted_data_reads_from_disk() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig {
            cache_max_bytes: 100 << 10,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        for i in 0..50 {
            p.append(batch(4, 1000, i), Durability::Written)
                .await
                .unwrap();
        }
        assert!(
            store.stats().cache_bytes <= 100 << 10,
            "{:?}",
            store.stats()
        );
        let out = p.read(0, 1 << 20).await.unwrap();
        assert!(matches!(out.chunks[0], shards::Chunk::Disk(_)));
        let mut all = Vec::new();
        let mut off = 0;
        while off < 200 {
            let out = p.read(off, 50_000).await.unwrap();
            let o = offsets(&out);
            off = o.last().unwrap() + 4;
            all.extend(o);
        }
        assert_eq!(all, (0..50).map(|i| i * 4).collect::<Vec<_>>());
    });
}

// Proves a partition opened by a relative path (from the working directory) accepts Fsync
// appends: glommio opens directories relative to fd -1, so the storage makes the paths of
// the directories it fsyncs absolute.
#[test]
fn relative_partition_path_works() {
    let dir = tmpdir();
    let abs = dir.path().join("nested").join("t-0");
    // The same place as a relative path: up to / from the working directory, then down.
    let cwd = std::env::current_dir().unwrap();
    let mut rel = std::path::PathBuf::new();
    for _ in 1..cwd.components().count() {
        rel.push("..");
    }
    rel.push(abs.strip_prefix("/").unwrap());
    assert!(rel.is_relative());
    run(move || async move {
        let (_store, p) = open(rel, LogConfig::default()).await;
        let info = p.append(batch(2, 10, 0), Durability::Fsync).await.unwrap();
        assert_eq!(info.last_offset, 1);
        assert!(abs.is_dir());
    });
}

/// Descriptors of this process open on files under `dir`.
fn fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .count()
}

// Proves many rolls under concurrent Fsync appenders (O_DSYNC rounds still in flight for a
// just sealed segment) leave no descriptors behind: at most open_files_max segment files
// plus the active segment's two descriptors stay open.
#[test]
fn rolls_do_not_leak_descriptors() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig {
            open_files_max: 4,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(path.clone(), small_segments())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..40 {
                    p.append(batch(3, 900, 0), Durability::Fsync).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        p.flush().await.unwrap();
        // Let the syncer finalize the last sealed segments.
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        let s = p.stats();
        assert!(s.segments > 20, "{s:?}");
        let open = fds_under(&path);
        assert!(
            open <= 4 + 2,
            "{open} descriptors open under the partition: {s:?}"
        );
    });
}

// Proves a recycled segment file found in a directory without segments (left by a
// half-finished delete of an earlier partition there) is removed, never reused.
#[test]
fn spare_without_segments_is_removed() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    std::fs::create_dir_all(&path).unwrap();
    let spare = path.join(shards::RECYCLED_SEGMENT_FILE);
    // Old batches whose offsets start at 0: exactly what a new log would expect.
    std::fs::write(&spare, batch(5, 100, 0).repeat(20)).unwrap();
    run(move || async move {
        let (_store, p) = open(path, small_segments()).await;
        assert!(!spare.exists());
        assert_eq!(p.log_end_offset(), 0);
        assert_eq!(p.stats().recycled_segments, 0);
    });
}

// Proves delete_records_before raises the log start offset inside a segment (reads below it
// are OffsetOutOfRange, reads at it return its batch), deletes whole segments below it, is
// clamped to the log end, never moves the start back, and survives a reopen.
#[test]
fn delete_records_before_raises_the_log_start_durably() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        // Recent timestamps: time retention must not delete anything here.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for i in 0..40 {
            p.append(batch(4, 1000, now + i), Durability::Fsync)
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
        let before = p.stats();
        assert!(before.segments >= 3, "{before:?}");
        // Offset 2 is inside the first batch: nothing deleted, reads from 2 are fine.
        assert_eq!(p.delete_records_before(2).await.unwrap(), 2);
        assert_eq!(
            p.read(1, 100).await.unwrap_err().kafka_error_code(),
            1,
            "below the new start"
        );
        assert_eq!(offsets(&p.read(2, 1).await.unwrap()), vec![0]);
        assert_eq!(p.stats().segments, before.segments);
        // Into a later segment: every whole segment below it goes.
        assert_eq!(p.delete_records_before(101).await.unwrap(), 101);
        let after = p.stats();
        assert!(after.segments < before.segments, "{after:?}");
        assert!(!path.join("00000000000000000000.log").exists());
        assert!(after.size_bytes < before.size_bytes);
        assert_eq!(p.read(100, 10).await.unwrap_err().kafka_error_code(), 1);
        assert_eq!(offsets(&p.read(101, 1).await.unwrap()), vec![100]);
        // Lower: no change; beyond the end: clamped to the end.
        assert_eq!(p.delete_records_before(50).await.unwrap(), 101);
        store.close_all().await.unwrap();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        assert_eq!(p.log_start_offset(), 101);
        assert_eq!(p.log_end_offset(), 160);
        assert_eq!(p.read(99, 10).await.unwrap_err().kafka_error_code(), 1);
        assert_eq!(p.delete_records_before(1000).await.unwrap(), 160);
        assert_eq!(p.read(159, 10).await.unwrap_err().kafka_error_code(), 1);
        // Appends continue at the end, and the start stays after another reopen.
        p.append(batch(4, 1000, now), Durability::Fsync)
            .await
            .unwrap();
        store.close_all().await.unwrap();
        let (_store, p) = open(path, cfg).await;
        assert_eq!(p.log_start_offset(), 160);
        assert_eq!(offsets(&p.read(160, 1).await.unwrap()), vec![160]);
    });
}
