//! Log compaction at the storage level: the cleaner keeps the latest record per key with the
//! original offsets (gaps between), removes tombstones once the delete horizon it stamped
//! on their batch has passed, cleans a prefix when its key map fills, merges small cleaned
//! segments, survives a crash at every step of a swap or a merge, and its gapped log reads,
//! recovers and replicates (follower appends) as a whole log.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use shards::batch::build::{KeyedRecord, keyed_batch};
use shards::{
    AppendMode, CleanerCrashPoint, Durability, FaultInjector, LogConfig, Partition, StoreConfig,
};

/// A record read back: (offset, key, value; None for a tombstone).
type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

/// Keys written by `fill`.
const KEYS: usize = 200;
/// Rounds of updates of every key.
const ROUNDS: usize = 8;
/// Bytes of each value.
const VALUE_BYTES: usize = 200;
/// Records per produced batch.
const PER_BATCH: usize = 20;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.01,
        delete_retention_ms: 0,
        ..LogConfig::default()
    }
}

fn value(round: usize, key: usize) -> Vec<u8> {
    let mut v = format!("v{round}-k{key}-").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

/// Writes ROUNDS updates of KEYS keys; in the last round every 7th key gets a tombstone.
/// Then forces a roll (segment.ms) with one more record, so that every update sits in a
/// sealed segment, and waits until those are finalized. Returns the expected latest value
/// per key (None: deleted) including the record that rolled.
async fn fill(p: &Partition) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut want = BTreeMap::new();
    for round in 0..ROUNDS {
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(PER_BATCH) {
            let keys: Vec<Vec<u8>> = chunk.iter().map(|k| format!("k{k}").into_bytes()).collect();
            let values: Vec<Option<Vec<u8>>> = chunk
                .iter()
                .map(|&k| (round + 1 < ROUNDS || k % 7 != 0).then(|| value(round, k)))
                .collect();
            let recs: Vec<KeyedRecord<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| (Some(&k[..]), v.as_deref()))
                .collect();
            p.append(Bytes::from(keyed_batch(&recs, 1_000)), Durability::Written)
                .await
                .unwrap();
            for (k, v) in keys.into_iter().zip(values) {
                want.insert(k, v);
            }
        }
    }
    roll_with_marker(p, &mut want).await;
    want
}

/// Appends one record ("end") after segment.ms passed, so the data before is sealed, and
/// waits until every sealed segment is finalized.
async fn roll_with_marker(p: &Partition, want: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    roll_with_key(p, want, b"end").await;
}

/// `roll_with_marker` with a marker record of key `key`.
async fn roll_with_key(p: &Partition, want: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>, key: &[u8]) {
    let cfg = p.config();
    p.set_config(LogConfig {
        segment_ms: 1,
        ..cfg.clone()
    });
    glommio::timer::sleep(Duration::from_millis(5)).await;
    p.append(
        Bytes::from(keyed_batch(&[(Some(key), Some(b"x"))], 1_000)),
        Durability::Fsync,
    )
    .await
    .unwrap();
    p.set_config(cfg);
    want.insert(key.to_vec(), Some(b"x".to_vec()));
    // The cleaner takes finalized segments only; the last sealed one finishes in the
    // background.
    for _ in 0..1000 {
        if p.stats().segments_unfinalized == 0 {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    panic!("sealed segments never finalized");
}

/// Every record readable from offset 0: (offset, key, value), checking that offsets grow.
async fn records(p: &Partition) -> Vec<Rec> {
    let bytes = log_bytes(p, 0).await;
    let mut out: Vec<Rec> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = shards::batch::check_one(&bytes[pos..], pos).unwrap();
        let recs = &bytes[pos + shards::batch::BATCH_HEADER_BYTES..pos + h.total_bytes()];
        shards::batch::walk_records(&h, recs, |r| {
            let key = r.key.unwrap().to_vec();
            let v = r.value.map(<[u8]>::to_vec);
            out.push((r.offset, key, v));
        })
        .unwrap();
        pos += h.total_bytes();
    }
    for w in out.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "offsets must grow: {} then {}",
            w[0].0,
            w[1].0
        );
    }
    out
}

/// Latest value per key as a consumer reading the whole log sees it.
fn latest(recs: &[Rec]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    for (_, k, v) in recs {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// The expected view with deleted keys dropped (what a cleaned log holds).
fn live(want: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    want.iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Runs cleaning passes until one does nothing; returns how many cleaned.
async fn clean_until_done(p: &Partition) -> usize {
    let mut passes = 0;
    for _ in 0..100 {
        match p.clean().await.unwrap() {
            Some(_) => passes += 1,
            None => return passes,
        }
    }
    panic!("cleaner never finished");
}

/// Checks the compacted log: each key exactly once with its latest value, no tombstoned
/// key, offsets kept (the "end" marker at its original offset, the log end unchanged), and
/// a read at every offset answers the batch holding it or the next one.
async fn assert_compacted(p: &Partition, want: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, end: i64) {
    let recs = records(p).await;
    let keys: Vec<&Vec<u8>> = recs.iter().map(|r| &r.1).collect();
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(
        dedup.len(),
        keys.len(),
        "a key appears twice after cleaning"
    );
    assert_eq!(latest(&recs), live(want));
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(
        recs.last().unwrap().0,
        end - 1,
        "the last record keeps its offset"
    );
    let offsets: Vec<i64> = recs.iter().map(|r| r.0).collect();
    for o in 0..end {
        let out = p.read(o, 1).await.unwrap();
        let first = shards::batch::parse_header(&out.chunks[0]).unwrap();
        assert!(
            first.last_offset() >= o,
            "read at {o} answered an earlier batch"
        );
        // No record between `o` and the batch answered was skipped.
        let next = offsets.iter().find(|&&x| x >= o).unwrap();
        assert!(
            first.base_offset <= *next,
            "read at {o} skipped record {next}"
        );
    }
}

// Proves the core of compaction: after keyed updates and tombstones and a cleaning, the log
// read from offset 0 holds exactly the latest value of each live key at its original
// offset, with gaps, in less space; a read at any offset answers the next batch; and the
// gapped log recovers the same after a restart, also with its index files lost.
#[test]
fn cleaner_keeps_latest_value_per_key() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), compact_config()).await;
        let want = fill(&p).await;
        let end = p.log_end_offset();
        let before = p.stats().size_bytes;
        assert!(
            p.stats().segments > 4,
            "the test needs several sealed segments"
        );
        assert!(clean_until_done(&p).await >= 1);
        assert_compacted(&p, &want, end).await;
        let after = p.stats().size_bytes;
        assert!(
            after * 4 < before,
            "cleaning shrank {before} bytes only to {after}"
        );
        let stats = store.stats();
        assert!(stats.cleaner_segments >= 4 && stats.cleaner_records_removed > 0);
        // Nothing left to do: a second pass finds nothing dirty.
        assert!(p.clean().await.unwrap().is_none());
        store.close_all().await.unwrap();
        drop(p);

        let (store, p) = open(d.clone(), compact_config()).await;
        assert_compacted(&p, &want, end).await;
        // Appends continue at the old end.
        let info = p
            .append(
                Bytes::from(keyed_batch(&[(Some(b"k1"), Some(b"new"))], 1_000)),
                Durability::Fsync,
            )
            .await
            .unwrap();
        assert_eq!(info.base_offset, end);
        store.close_all().await.unwrap();
        drop(p);

        // Lost index files: recovery scans the gapped segments and finds the same log.
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path
                .extension()
                .is_some_and(|x| x == "index" || x == "timeindex")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        let (_store, p) = open(d.clone(), compact_config()).await;
        assert_eq!(p.log_end_offset(), end + 1);
        let recs = records(&p).await;
        assert_eq!(recs.last().unwrap().2.as_deref(), Some(&b"new"[..]));
    });
}

/// Runs cleaning passes at the clock `now` until one does nothing; returns how many cleaned.
async fn clean_until_done_at(p: &Partition, now: i64) -> usize {
    let mut passes = 0;
    for _ in 0..100 {
        match p.clean_at(now).await.unwrap() {
            Some(_) => passes += 1,
            None => return passes,
        }
    }
    panic!("cleaner never finished");
}

/// Every record's timestamp by offset, as a consumer computes it (base timestamp + delta).
async fn timestamps(p: &Partition) -> BTreeMap<i64, i64> {
    let bytes = log_bytes(p, 0).await;
    let mut out = BTreeMap::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = shards::batch::check_one(&bytes[pos..], pos).unwrap();
        let recs = &bytes[pos + shards::batch::BATCH_HEADER_BYTES..pos + h.total_bytes()];
        shards::batch::walk_records(&h, recs, |r| {
            out.insert(r.offset, r.timestamp);
        })
        .unwrap();
        pos += h.total_bytes();
    }
    out
}

/// (delete horizon, holds a tombstone) of every batch of the log.
async fn horizons(p: &Partition) -> Vec<(Option<i64>, bool)> {
    let bytes = log_bytes(p, 0).await;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = shards::batch::check_one(&bytes[pos..], pos).unwrap();
        let recs = &bytes[pos + shards::batch::BATCH_HEADER_BYTES..pos + h.total_bytes()];
        let mut tomb = false;
        shards::batch::walk_records(&h, recs, |r| tomb |= r.tombstone).unwrap();
        out.push((h.delete_horizon_ms(), tomb));
        pos += h.total_bytes();
    }
    out
}

const HOUR_MS: i64 = 3_600_000;

// Proves KIP-534's delete horizon on a clock of the test's own: the first cleaning that
// keeps a tombstone stamps its batch (attributes bit 6, base timestamp = cleaning time +
// delete.retention.ms) and every record keeps its timestamp (deltas rebased: record
// timestamps, maxTimestamp and lookups by timestamp answer as before); a cleaning before
// the horizon keeps the tombstones although the segments are old and delete.retention.ms is
// 0 by then (the stamped horizon rules, not the segment's age), and a pass at the horizon
// removes them without any new write.
#[test]
fn delete_horizon_set_on_first_clean() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig {
            delete_retention_ms: HOUR_MS,
            ..compact_config()
        };
        let (_store, p) = open(root.join("p"), cfg.clone()).await;
        // Record timestamps are 1000.. ms: the segments are ancient at `t0`.
        let mut want = fill(&p).await;
        let ts_before = timestamps(&p).await;
        let max_ts_before = p.max_timestamp();
        let t0 = 1_000_000_000_000i64;
        assert!(clean_until_done_at(&p, t0).await >= 1);
        let recs = records(&p).await;
        let tombstones = recs.iter().filter(|r| r.2.is_none()).count();
        assert_eq!(tombstones, KEYS.div_ceil(7), "every tombstone kept, once");
        assert_eq!(latest(&recs), want, "each key once with its latest value");
        let hz = horizons(&p).await;
        assert!(hz.iter().any(|h| h.1), "tombstones in batches");
        for (horizon, tomb) in &hz {
            if *tomb {
                assert_eq!(*horizon, Some(t0 + HOUR_MS), "horizon stamped");
            } else {
                assert_eq!(*horizon, None, "no horizon without a tombstone");
            }
        }
        // Timestamps as before: per record, the partition's max, and lookups by time.
        let ts_after = timestamps(&p).await;
        for (o, t) in &ts_after {
            assert_eq!(Some(t), ts_before.get(o), "timestamp of offset {o} changed");
        }
        assert_eq!(p.max_timestamp(), max_ts_before);
        for t in [1_000, 1_005, 1_019] {
            let (o, found) = p.offset_for_timestamp(t).await.unwrap().unwrap();
            assert!(found >= t);
            assert_eq!(ts_after.get(&o), Some(&found), "lookup of {t}");
        }
        assert_eq!(
            p.offset_for_timestamp(t0).await.unwrap(),
            None,
            "a horizon is not a record timestamp"
        );

        // Before the horizon: even with delete.retention.ms 0 now and new dirt making a
        // pass due, the tombstones stay.
        let cfg0 = LogConfig {
            delete_retention_ms: 0,
            min_cleanable_dirty_ratio: 0.0,
            ..cfg
        };
        p.set_config(cfg0.clone());
        roll_with_key(&p, &mut want, b"end2").await;
        let end = p.log_end_offset();
        assert!(clean_until_done_at(&p, t0 + HOUR_MS - 1).await >= 1);
        let recs = records(&p).await;
        assert_eq!(recs.iter().filter(|r| r.2.is_none()).count(), tombstones);
        // At the horizon: the pass is due by the horizon alone and removes them.
        let r = p.clean_at(t0 + HOUR_MS).await.unwrap().expect("a pass due");
        assert_eq!(r.tombstones_removed, tombstones as u64);
        assert_compacted(&p, &want, end).await;
        assert!(p.clean_at(t0 + HOUR_MS + 1).await.unwrap().is_none());
    });
}

// Proves segment merging (Kafka's groupSegmentsBySize): once cleaning has shrunk the
// segments, consecutive ones whose sizes sum to at most segment.bytes become one: fewer
// segments (in memory and on disk), every offset readable and every latest value kept,
// and the merged log recovers the same, also with its index files lost.
#[test]
fn merge_reduces_segment_count() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), compact_config()).await;
        let mut want = fill(&p).await;
        let segs_before = p.stats().segments;
        assert!(segs_before >= 6, "the test needs several segments");
        clean_until_done(&p).await;
        roll_with_key(&p, &mut want, b"end2").await;
        let end = p.log_end_offset();
        clean_until_done(&p).await;
        assert_compacted(&p, &want, end).await;
        let segs_after = p.stats().segments;
        let logs_on_disk = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count();
        assert_eq!(logs_on_disk, segs_after);
        // ~44 KiB of live records in 64 KiB segments: one merged segment, the one holding
        // the last marker, and the active one at most.
        assert!(
            segs_after <= 3,
            "{segs_before} segments became {segs_after}"
        );
        assert!(store.stats().cleaner_segments_merged + 3 >= segs_before as u64);
        store.close_all().await.unwrap();
        drop(p);
        let (store, p) = open(d.clone(), compact_config()).await;
        assert_eq!(p.stats().segments, segs_after);
        assert_compacted(&p, &want, end).await;
        store.close_all().await.unwrap();
        drop(p);
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path
                .extension()
                .is_some_and(|x| x == "index" || x == "timeindex")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        let (_store, p) = open(d.clone(), compact_config()).await;
        assert_compacted(&p, &want, end).await;
    });
}

// Proves a key map too small for the dirty keys cleans a prefix per pass (as Kafka's
// cleaner), and that the passes together reach the fully compacted log.
#[test]
fn full_key_map_cleans_a_prefix_per_pass() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let store_cfg = StoreConfig {
            // 64 slots: room for 56 keys (KEYS = 200 distinct keys are dirty).
            cleaner_key_map_max_bytes: 64 * shards::CLEANER_MAP_ENTRY_BYTES,
            ..StoreConfig::default()
        };
        let (_store, p) = open_with(root.join("p"), compact_config(), store_cfg).await;
        let want = fill(&p).await;
        let end = p.log_end_offset();
        let first = p.clean().await.unwrap().expect("a pass");
        assert!(first.map_full, "56 entries cannot map 200 keys");
        assert!(first.first_dirty_offset < end);
        let passes = 1 + clean_until_done(&p).await;
        assert!(passes >= 4, "{passes} passes");
        assert_compacted(&p, &want, end).await;
    });
}

// Proves records without a key are refused on a compacted log (INVALID_RECORD, Kafka's
// "Compacted topic cannot accept message without key"), and accepted on a delete-only one.
#[test]
fn keyless_records_refused_when_compacted() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_s, p) = open(root.join("c"), compact_config()).await;
        let b = keyed_batch(&[(Some(b"a"), Some(b"1")), (None, Some(b"2"))], 1_000);
        let e = p
            .append(Bytes::from(b.clone()), Durability::Written)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 87, "{e}");
        assert!(e.to_string().contains("without key"), "{e}");
        assert_eq!(p.log_end_offset(), 0);
        let (_s2, q) = open(root.join("d"), LogConfig::default()).await;
        q.append(Bytes::from(b), Durability::Written).await.unwrap();
    });
}

// Proves a follower copies a compacted leader log (batches with gaps, a batch emptied of
// its records) byte for byte with AppendMode::Follower, ending at the leader's log end.
#[test]
fn follower_copies_gapped_log() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_s, p) = open(root.join("leader"), compact_config()).await;
        let want = fill(&p).await;
        clean_until_done(&p).await;
        let bytes = log_bytes(&p, 0).await;
        let (_s2, f) = open(root.join("follower"), compact_config()).await;
        // As a fetcher would: a response's worth of batches at a time.
        let mut pos = 0;
        while pos < bytes.len() {
            let mut end = pos;
            while end < bytes.len() && end - pos < 30_000 {
                end += shards::batch::parse_header(&bytes[end..])
                    .unwrap()
                    .total_bytes();
            }
            f.append_with(
                Bytes::copy_from_slice(&bytes[pos..end]),
                Durability::Fsync,
                AppendMode::Follower,
            )
            .await
            .unwrap();
            pos = end;
        }
        assert_eq!(f.log_end_offset(), p.log_end_offset());
        assert_eq!(log_bytes(&f, 0).await, bytes);
        assert_eq!(latest(&records(&f).await), live(&want));
        // A batch overlapping the follower's log is still refused.
        let again = Bytes::copy_from_slice(
            &bytes[..shards::batch::parse_header(&bytes).unwrap().total_bytes()],
        );
        assert!(
            f.append_with(again, Durability::Fsync, AppendMode::Follower)
                .await
                .is_err()
        );
    });
}

fn leftover_cleaned(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".cleaned")
    })
}

fn leftover_swap(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".swap"))
}

// Proves a crash at each step of a swap recovers a consistent log: for one segment (rewrite
// written, rewrite synced, renamed over the segment) and for a merge of several (renamed
// to its swap name, the second merged segment removed, all but the first removed), the
// recovered log has the same latest value per key as before the crash, offsets growing,
// the log end unchanged, no leftover rewrite or swap file (a merge past its commit point
// is completed: fewer segments); and cleaning the recovered log then reaches the fully
// compacted log.
#[test]
fn crash_at_each_cleaner_step_recovers() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        for (i, point) in [
            CleanerCrashPoint::CleanedWritten,
            CleanerCrashPoint::CleanedSynced,
            CleanerCrashPoint::Swapped,
            CleanerCrashPoint::MergeSwapNamed,
            CleanerCrashPoint::MergeOneRemoved,
            CleanerCrashPoint::MergeOldRemoved,
        ]
        .into_iter()
        .enumerate()
        {
            let merge_point = matches!(
                point,
                CleanerCrashPoint::MergeSwapNamed
                    | CleanerCrashPoint::MergeOneRemoved
                    | CleanerCrashPoint::MergeOldRemoved
            );
            let src = root.join(format!("src-{i}"));
            let (store, p) = open(src.clone(), compact_config()).await;
            let want = fill(&p).await;
            let end = p.log_end_offset();
            let faults = Rc::new(FaultInjector::default());
            faults.crash_cleaner_at.set(Some(point));
            store.set_fault_injector(Some(faults));
            // The first pass cleans the full segments one by one; a merge comes with the
            // pass after it (the horizons it set make it due).
            let mut crashed = None;
            for _ in 0..5 {
                let before = latest(&records(&p).await);
                let segments = p.stats().segments;
                match p.clean().await {
                    Err(e) => {
                        crashed = Some((e, before, segments));
                        break;
                    }
                    Ok(r) => assert!(r.is_some(), "{point:?}: no pass crashed"),
                }
            }
            let (e, before, segments) = crashed.expect("the cleaner never crashed");
            assert!(e.to_string().contains("injected crash"), "{point:?}: {e}");
            if matches!(
                point,
                CleanerCrashPoint::CleanedWritten | CleanerCrashPoint::CleanedSynced
            ) {
                assert!(leftover_cleaned(&src), "{point:?}: the rewrite is on disk");
            }
            if merge_point {
                assert!(leftover_swap(&src), "{point:?}: the merge is committed");
            }
            let image = root.join(format!("image-{i}"));
            copy_dir(&src, &image);
            let (_s2, q) = open(image.clone(), compact_config()).await;
            assert!(
                !leftover_cleaned(&image) && !leftover_swap(&image),
                "{point:?}: recovery removes the rewrite or completes the swap"
            );
            if merge_point {
                assert!(
                    q.stats().segments < segments,
                    "{point:?}: the merge is completed"
                );
            }
            assert_eq!(q.log_end_offset(), end, "{point:?}");
            // The pass may have removed tombstones past their horizon: compare live keys.
            let recs = records(&q).await;
            let (got, was) = (live(&latest(&recs)), live(&before));
            let diff: Vec<String> = got
                .keys()
                .chain(was.keys())
                .filter(|k| got.get(*k) != was.get(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            assert!(
                diff.is_empty(),
                "{point:?}: latest values changed: {diff:?}"
            );
            clean_until_done(&q).await;
            assert_compacted(&q, &want, end).await;
        }
    });
}

// Measures the cleaner's throughput (log bytes cleaned per second of cleaning, I/O bound
// off) on ~21 MiB of keyed updates in 1 MiB segments, and checks the result. Printed with
// --no-capture.
#[test]
fn cleaner_throughput() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            ..compact_config()
        };
        // Unthrottled: the cleaner's own speed.
        let store_cfg = StoreConfig {
            cleaner_io_max_bytes_per_sec: 0,
            ..StoreConfig::default()
        };
        let (store, p) = open_with(root.join("p"), cfg, store_cfg).await;
        let keys = 2_000usize;
        let rounds = 50usize;
        let mut want = BTreeMap::new();
        for round in 0..rounds {
            for k0 in (0..keys).step_by(100) {
                let ks: Vec<Vec<u8>> = (k0..k0 + 100)
                    .map(|k| format!("key-{k}").into_bytes())
                    .collect();
                let vs: Vec<Vec<u8>> = (k0..k0 + 100).map(|k| value(round, k)).collect();
                let recs: Vec<KeyedRecord<'_>> = ks
                    .iter()
                    .zip(&vs)
                    .map(|(k, v)| (Some(&k[..]), Some(&v[..])))
                    .collect();
                p.append(Bytes::from(keyed_batch(&recs, 1_000)), Durability::None)
                    .await
                    .unwrap();
                for (k, v) in ks.into_iter().zip(vs) {
                    want.insert(k, Some(v));
                }
            }
        }
        roll_with_marker(&p, &mut want).await;
        let size = p.stats().size_bytes;
        let t = std::time::Instant::now();
        clean_until_done(&p).await;
        let secs = t.elapsed().as_secs_f64();
        let s = store.stats();
        println!(
            "cleaner: {:.1} MiB of log in {} segments cleaned to {:.1} MiB in {secs:.2} s = {:.1} MiB/s ({} records removed, {:.1} MiB read)",
            s.cleaner_bytes_before as f64 / (1 << 20) as f64,
            s.cleaner_segments,
            s.cleaner_bytes_after as f64 / (1 << 20) as f64,
            s.cleaner_bytes_before as f64 / (1 << 20) as f64 / secs,
            s.cleaner_records_removed,
            s.cleaner_bytes_read as f64 / (1 << 20) as f64,
        );
        assert!(size > 20 << 20, "log of {size} bytes");
        assert_eq!(latest(&records(&p).await), live(&want));
    });
}

// Proves a truncation (a follower cutting a divergent log) to an offset in a gap of a
// cleaned segment cuts at a batch boundary at or below it: the log ends there (what a scan
// of the cut segment finds, asserted inside `truncate_to` in debug builds), keeps every
// record below, and recovers to the same end after a restart.
#[test]
fn truncate_into_a_gap() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), compact_config()).await;
        fill(&p).await;
        clean_until_done(&p).await;
        let recs = records(&p).await;
        let gap = recs
            .windows(2)
            .find(|w| w[1].0 > w[0].0 + 1)
            .map(|w| w[0].0 + 1)
            .expect("a gap");
        let new_end = p.truncate_to(gap).await.unwrap();
        assert!(new_end <= gap, "cut at {new_end} above {gap}");
        assert_eq!(p.log_end_offset(), new_end);
        let kept = records(&p).await;
        assert!(kept.iter().all(|r| r.0 < new_end));
        let below: Vec<&Rec> = recs.iter().filter(|r| r.0 < new_end).collect();
        assert_eq!(kept.iter().collect::<Vec<_>>(), below);
        // Appends continue at the cut.
        let info = p
            .append(
                Bytes::from(keyed_batch(&[(Some(b"k1"), Some(b"after"))], 1_000)),
                Durability::Fsync,
            )
            .await
            .unwrap();
        assert_eq!(info.base_offset, new_end);
        store.close_all().await.unwrap();
        drop(p);
        let (_s, q) = open(d, compact_config()).await;
        assert_eq!(q.log_end_offset(), new_end + 1);
        assert_eq!(
            records(&q).await.last().unwrap().2.as_deref(),
            Some(&b"after"[..])
        );
    });
}

// Proves the cleaner's I/O bound: with cleaner_io_max_bytes_per_sec at 2 MiB/s, a pass
// reading about a megabyte of log takes at least the time that bound allows for it.
#[test]
fn cleaner_io_is_bounded() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let limit = 2u64 << 20;
        let store_cfg = StoreConfig {
            cleaner_io_max_bytes_per_sec: limit,
            ..StoreConfig::default()
        };
        let (store, p) = open_with(root.join("p"), compact_config(), store_cfg).await;
        let want = fill(&p).await;
        let end = p.log_end_offset();
        let t = std::time::Instant::now();
        clean_until_done(&p).await;
        let secs = t.elapsed().as_secs_f64();
        let read = store.stats().cleaner_bytes_read;
        assert!(read > 600_000, "read {read} bytes");
        let floor = read as f64 / limit as f64;
        assert!(
            secs >= floor * 0.9,
            "{read} bytes in {secs:.2} s, bound {floor:.2} s"
        );
        assert_compacted(&p, &want, end).await;
    });
}

/// `keyed_batch` from idempotent producer `pid` (epoch 0) with base sequence `seq`.
fn producer_batch(recs: &[KeyedRecord<'_>], pid: i64, seq: i32) -> Bytes {
    let mut b = keyed_batch(recs, 1_000);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = shards::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

// Proves an idempotent producer's latest batch survives cleaning (emptied of its
// superseded records, as Kafka's cleaner keeps it) while its earlier batches go, so that
// after a restart without the producer snapshot a retry of that batch is still recognized
// as a duplicate.
#[test]
fn producers_last_batch_kept_empty() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), compact_config()).await;
        let pid = 7;
        p.append(
            producer_batch(&[(Some(b"a"), Some(b"1"))], pid, 0),
            Durability::Fsync,
        )
        .await
        .unwrap();
        let last = producer_batch(&[(Some(b"a"), Some(b"2"))], pid, 1);
        p.append(last.clone(), Durability::Fsync).await.unwrap();
        // Both of the producer's records superseded by a later, non-idempotent one.
        p.append(
            Bytes::from(keyed_batch(&[(Some(b"a"), Some(b"3"))], 1_000)),
            Durability::Fsync,
        )
        .await
        .unwrap();
        let mut want = BTreeMap::new();
        roll_with_marker(&p, &mut want).await;
        clean_until_done(&p).await;
        let hs = headers(&log_bytes(&p, 0).await);
        let bases: Vec<(i64, i32, i64)> = hs
            .iter()
            .map(|h| (h.base_offset, h.record_count, h.producer_id))
            .collect();
        assert_eq!(
            bases[0],
            (1, 0, pid),
            "the producer's last batch, emptied: {bases:?}"
        );
        assert!(
            hs.iter().all(|h| h.base_offset != 0),
            "its first batch removed"
        );
        assert_eq!(
            latest(&records(&p).await)[&b"a".to_vec()],
            Some(b"3".to_vec())
        );
        store.close_all().await.unwrap();
        drop(p);
        std::fs::remove_file(d.join(shards::producer::SNAPSHOT_FILE)).unwrap();
        let (_s, q) = open(d, compact_config()).await;
        let info = q.append(last, Durability::Fsync).await.unwrap();
        assert!(info.duplicate, "the retry is known from the kept batch");
        assert_eq!(info.base_offset, 1);
    });
}

// Proves the scheduling configs: min.cleanable.dirty.ratio holds a pass back while the
// dirty share is below it, max.compaction.lag.ms forces the pass once the dirty data is
// older, and min.compaction.lag.ms keeps segments younger than it out of cleaning.
#[test]
fn dirty_ratio_and_compaction_lags() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_s, p) = open(root.join("p"), compact_config()).await;
        let want = fill(&p).await;
        clean_until_done(&p).await;
        // A little dirty data: one update of one key, sealed by a roll.
        p.append(
            Bytes::from(keyed_batch(&[(Some(b"k1"), Some(b"again"))], 1_000)),
            Durability::Written,
        )
        .await
        .unwrap();
        let mut want2 = want.clone();
        want2.insert(b"k1".to_vec(), Some(b"again".to_vec()));
        roll_with_marker(&p, &mut want2).await;
        let base = p.config();
        p.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.9,
            ..base.clone()
        });
        assert!(p.clean().await.unwrap().is_none(), "below the dirty ratio");
        // The dirty records (timestamps at 1000 ms after the epoch) are older than 1 ms.
        p.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.9,
            max_compaction_lag_ms: 1,
            ..base.clone()
        });
        assert!(
            p.clean().await.unwrap().is_some(),
            "max.compaction.lag.ms forces it"
        );
        let recs = records(&p).await;
        assert_eq!(recs.iter().filter(|r| r.1 == b"k1").count(), 1);

        // min.compaction.lag.ms: fresh segments (timestamps now) wait.
        let (_s2, q) = open(root.join("q"), compact_config()).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for v in [&b"1"[..], b"2", b"3"] {
            q.append(
                Bytes::from(keyed_batch(&[(Some(b"x"), Some(v))], now)),
                Durability::Written,
            )
            .await
            .unwrap();
        }
        let mut w = BTreeMap::new();
        roll_with_marker(&q, &mut w).await;
        q.set_config(LogConfig {
            min_compaction_lag_ms: 3_600_000,
            ..compact_config()
        });
        assert!(
            q.clean().await.unwrap().is_none(),
            "younger than min.compaction.lag.ms"
        );
        q.set_config(compact_config());
        assert!(q.clean().await.unwrap().is_some());
        let recs = records(&q).await;
        assert_eq!(recs.iter().filter(|r| r.1 == b"x").count(), 1);
    });
}

// Proves the cleaner stays below `set_cleanable_end` (a replicated partition's high
// watermark): segments ending above it are neither mapped nor cleaned.
#[test]
fn cleaning_stays_below_the_cleanable_end() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_s, p) = open(root.join("p"), compact_config()).await;
        let want = fill(&p).await;
        let end = p.log_end_offset();
        p.set_cleanable_end(0);
        assert!(p.clean().await.unwrap().is_none(), "nothing below offset 0");
        // A bound inside the log: only the segments that end below it are cleaned.
        let bound = end / 2;
        p.set_cleanable_end(bound);
        let r = p.clean().await.unwrap().expect("a pass");
        assert!(
            r.first_dirty_offset <= bound,
            "mapped up to {}",
            r.first_dirty_offset
        );
        let recs = records(&p).await;
        assert!(recs.len() > want.len(), "records above the bound stay");
        p.set_cleanable_end(i64::MAX);
        clean_until_done(&p).await;
        assert_compacted(&p, &want, end).await;
    });
}

/// `keyed_batch` marked as compressed with codec 1, its records section replaced by
/// `stored` (None: left as it is).
fn fake_compressed(recs: &[KeyedRecord<'_>], stored: Option<&[u8]>) -> Bytes {
    let mut b = keyed_batch(recs, 1_000);
    if let Some(stored) = stored {
        b.truncate(shards::batch::BATCH_HEADER_BYTES);
        b.extend_from_slice(stored);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
    }
    b[21..23].copy_from_slice(&1i16.to_be_bytes());
    let crc = shards::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

// Proves compressed batches go through the store's codecs: keyless records in them are
// refused; one that loses records is compressed again with its codec when a compressor is
// installed, else rebuilt uncompressed; and one whose uncompressed rebuild would exceed
// max.message.bytes (a follower would refuse it) is kept whole instead.
#[test]
fn compressed_batches_cleaned_through_the_codecs() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let keys: Vec<Vec<u8>> = (0..20).map(|k| format!("k{k}").into_bytes()).collect();
        let big = [b'v'; 200];
        let recs: Vec<KeyedRecord<'_>> = keys
            .iter()
            .map(|k| (Some(&k[..]), Some(&big[..])))
            .collect();
        let plain = keyed_batch(&recs, 1_000)[shards::batch::BATCH_HEADER_BYTES..].to_vec();
        // The fake codec 1: "Z" stands for the 20 records above; anything else is itself.
        let decompress: Rc<shards::DecompressFn> = Rc::new(move |codec, b| {
            assert_eq!(codec, 1);
            Ok(if b == b"Z" { plain.clone() } else { b.to_vec() })
        });
        for (name, limit, compressor) in [
            ("uncompressed", 1 << 20, false),
            ("kept-whole", 1000, false),
            ("recompressed", 1000, true),
        ] {
            let (store, p) = open(root.join(name), compact_config()).await;
            store.set_decompressor(decompress.clone());
            if compressor {
                store.set_compressor(Rc::new(|codec, _| {
                    assert_eq!(codec, 1);
                    Ok(b"z".to_vec())
                }));
            }
            let e = p
                .append(
                    fake_compressed(&[(None, Some(b"x"))], None),
                    Durability::Written,
                )
                .await
                .unwrap_err();
            assert_eq!(e.kafka_error_code(), 87, "{e}");
            p.append(fake_compressed(&recs, Some(b"Z")), Durability::Written)
                .await
                .unwrap();
            p.append(
                Bytes::from(keyed_batch(&[(Some(b"k0"), Some(b"new"))], 1_000)),
                Durability::Written,
            )
            .await
            .unwrap();
            let mut want = BTreeMap::new();
            roll_with_marker(&p, &mut want).await;
            p.set_config(LogConfig {
                max_message_bytes: limit,
                ..p.config()
            });
            clean_until_done(&p).await;
            let bytes = log_bytes(&p, 0).await;
            let hs = headers(&bytes);
            let first = &bytes[..hs[0].total_bytes()];
            assert_eq!(hs[0].base_offset, 0, "{name}");
            let records_section = &first[shards::batch::BATCH_HEADER_BYTES..];
            match name {
                "uncompressed" => {
                    assert_eq!(hs[0].compression(), 0, "{name}: rebuilt uncompressed");
                    assert_eq!((hs[0].record_count, hs[0].last_offset_delta), (19, 19));
                    let k0 = records(&p).await.iter().filter(|r| r.1 == b"k0").count();
                    assert_eq!(k0, 1, "{name}");
                }
                "kept-whole" => {
                    assert_eq!(hs[0].compression(), 1, "{name}: kept as stored");
                    assert_eq!(hs[0].record_count, 20);
                    assert_eq!(records_section, b"Z");
                }
                _ => {
                    assert_eq!(hs[0].compression(), 1, "{name}: codec kept");
                    assert_eq!((hs[0].record_count, hs[0].last_offset_delta), (19, 19));
                    assert_eq!(records_section, b"z", "{name}: compressed again");
                }
            }
        }
    });
}

/// `producer_batch` with the transactional attribute set (producer `pid`, epoch 0).
fn txn_batch(recs: &[KeyedRecord<'_>], pid: i64, seq: i32) -> Bytes {
    let mut b = producer_batch(recs, pid, seq).to_vec();
    let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x10;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = shards::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Kafka's control types.
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

async fn marker(p: &Partition, pid: i64, control: i16) {
    let m = shards::batch::control_batch(pid, 0, control, 0, 1_000);
    p.append_with(
        Bytes::from(m),
        Durability::Fsync,
        AppendMode::Marker { leader_epoch: 0 },
    )
    .await
    .unwrap();
}

/// The latest value per data key (control records left out).
async fn data_latest(p: &Partition) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let bytes = log_bytes(p, 0).await;
    let mut out = BTreeMap::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = shards::batch::check_one(&bytes[pos..], pos).unwrap();
        if !h.is_control() {
            let recs = &bytes[pos + shards::batch::BATCH_HEADER_BYTES..pos + h.total_bytes()];
            shards::batch::walk_records(&h, recs, |r| {
                out.insert(r.key.unwrap().to_vec(), r.value.map(<[u8]>::to_vec));
            })
            .unwrap();
        }
        pos += h.total_bytes();
    }
    out
}

// Proves transactions and compaction together (Kafka Streams' exactly-once changelogs):
// a record of an aborted transaction never supersedes the committed value of its key (it
// is removed instead), and nothing at or past an open transaction's first offset is
// cleaned until the transaction ends; once committed, its record supersedes as any other.
#[test]
fn aborted_and_open_transactions_never_cost_a_committed_value() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_store, p) = open(root.join("p"), compact_config()).await;
        p.append(
            Bytes::from(keyed_batch(&[(Some(b"a"), Some(b"1"))], 1_000)),
            Durability::Fsync,
        )
        .await
        .unwrap();
        p.append(
            txn_batch(&[(Some(b"a"), Some(b"aborted"))], 9, 0),
            Durability::Fsync,
        )
        .await
        .unwrap();
        marker(&p, 9, ABORT).await;
        let mut want = BTreeMap::new();
        roll_with_marker(&p, &mut want).await;
        clean_until_done(&p).await;
        let got = data_latest(&p).await;
        assert_eq!(got[&b"a".to_vec()], Some(b"1".to_vec()), "{got:?}");
        let recs = records(&p).await;
        assert!(
            recs.iter().all(|r| r.2.as_deref() != Some(b"aborted")),
            "the aborted record is removed: {recs:?}"
        );

        // An open transaction writes a new value of `a`: not cleaned past its start.
        p.append(
            txn_batch(&[(Some(b"a"), Some(b"open"))], 10, 0),
            Durability::Fsync,
        )
        .await
        .unwrap();
        roll_with_key(&p, &mut want, b"end2").await;
        clean_until_done(&p).await;
        let recs = records(&p).await;
        assert!(
            recs.iter().any(|r| r.2.as_deref() == Some(b"1")),
            "the committed value stays while the transaction is open: {recs:?}"
        );
        // Committed: now it supersedes the old value.
        marker(&p, 10, COMMIT).await;
        roll_with_key(&p, &mut want, b"end3").await;
        clean_until_done(&p).await;
        let recs = records(&p).await;
        assert!(
            recs.iter().all(|r| r.2.as_deref() != Some(b"1")),
            "superseded by the committed transaction: {recs:?}"
        );
        assert_eq!(
            data_latest(&p).await[&b"a".to_vec()],
            Some(b"open".to_vec())
        );
    });
}
