//! `Partition::truncate_to` (in the active segment, across rolls, with writes in flight,
//! crash images right after, appends and producer state after) and the leader-epoch cache
//! (across reopen, crash images and truncation).

mod common;

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use shards::batch::BatchHeader;
use shards::{
    AppendError, AppendMode, Durability, LogConfig, Partition, Store, StoreConfig, codes,
};

fn log_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

/// The log's bytes up to `end`, taken from a full read (whole batches).
fn prefix(bytes: &[u8], end: i64) -> Vec<u8> {
    let mut n = 0;
    for h in headers(bytes) {
        if h.base_offset >= end {
            break;
        }
        n += h.total_bytes();
    }
    bytes[..n].to_vec()
}

/// Opens a crash image of `p` (its files copied now, as a crash would leave them).
async fn crash_image(p: &Partition, to: &Path, cfg: LogConfig) -> (Rc<Store>, Rc<Partition>) {
    copy_dir(p.dir(), to);
    open(to.to_path_buf(), cfg).await
}

// Proves a cut inside the active segment (inside a batch: the whole batch goes) leaves the
// log, offsets and tail cache consistent, is durable at once (a crash image right after
// recovers exactly the cut log, never the removed batches, also once appends of other
// batches at the same offsets were made but not written), that appends continue at the new
// end, and that cuts at or beyond the end are no-ops.
#[test]
fn truncate_inside_the_active_segment() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig::default();
        let (_s, p) = open(root.join("p"), cfg.clone()).await;
        for i in 0..10 {
            p.append(batch(2, 300, i), Durability::Written)
                .await
                .unwrap();
        }
        let before = log_bytes(&p, 0).await;
        assert_eq!(p.truncate_to(25).await.unwrap(), 20, "no-op beyond the end");
        assert_eq!(p.truncate_to(20).await.unwrap(), 20, "no-op at the end");
        assert_eq!(p.truncate_to(7).await.unwrap(), 6);
        assert_eq!(p.log_end_offset(), 6);
        let st = p.stats();
        assert_eq!((st.written_offset, st.synced_offset), (6, 6));
        assert_eq!(st.pending_bytes, 0);
        let want = prefix(&before, 6);
        assert_eq!(log_bytes(&p, 0).await, want);
        assert_eq!(
            st.cache_bytes,
            want.len(),
            "the cache holds exactly the cut log"
        );
        assert_eq!(p.read(6, 1 << 20).await.unwrap().chunks.len(), 0);
        assert!(p.read(7, 1 << 20).await.is_err());

        let (_s1, img) = crash_image(&p, &root.join("img1"), cfg.clone()).await;
        assert_eq!(log_bytes(&img, 0).await, want);
        assert_eq!(img.log_end_offset(), 6);

        // New, different batches at the cut offsets; not written when the image is taken.
        let info = p.append(batch(1, 50, 100), Durability::None).await.unwrap();
        assert_eq!(info.base_offset, 6);
        let (_s2, img) = crash_image(&p, &root.join("img2"), cfg.clone()).await;
        let got = log_bytes(&img, 0).await;
        assert!(
            got == want || got == log_bytes(&p, 0).await,
            "only the new batch may follow"
        );
        p.flush().await.unwrap();
        p.append(batch(3, 50, 101), Durability::Fsync)
            .await
            .unwrap();
        assert_eq!(
            offsets(&p.read(0, 1 << 20).await.unwrap()),
            vec![0, 2, 4, 6, 7]
        );
        let (_s3, img) = crash_image(&p, &root.join("img3"), cfg).await;
        assert_eq!(log_bytes(&img, 0).await, log_bytes(&p, 0).await);
        assert_eq!(img.log_end_offset(), 10);
    });
}

// Proves cuts across rolls: inside an older (sealed) segment and exactly at a segment base;
// later segments' files are removed, the cut segment becomes the active one again, the log
// reads as the prefix, crash images right after and a close/reopen recover it, and appends
// after roll into new segments as usual.
#[test]
fn truncate_across_rolls() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = small_segments();
        let d = root.join("p");
        let (store, p) = open(d.clone(), cfg.clone()).await;
        for i in 0..80 {
            p.append(batch(3, 1500, i), Durability::Written)
                .await
                .unwrap();
        }
        let before = log_bytes(&p, 0).await;
        let segs = log_files(&d);
        assert!(segs.len() >= 4, "{segs:?}");
        let bases: Vec<i64> = segs.iter().map(|n| n[..20].parse().unwrap()).collect();

        // Inside the second segment, in the middle of a batch.
        let cut = bases[1] + 7;
        let new_end = p.truncate_to(cut).await.unwrap();
        assert_eq!(new_end, bases[1] + 6);
        assert_eq!(log_files(&d), segs[..2].to_vec());
        assert!(!d.join(format!("{:020}.index", bases[1])).exists());
        assert_eq!(p.stats().segments, 2);
        let want = prefix(&before, new_end);
        assert_eq!(log_bytes(&p, 0).await, want);
        assert_eq!(p.stats().synced_offset, new_end);
        let (_s1, img) = crash_image(&p, &root.join("img1"), cfg.clone()).await;
        assert_eq!(log_bytes(&img, 0).await, want);

        // Appends roll again; then cut exactly at a segment base.
        for i in 0..40 {
            p.append(batch(2, 1800, 1000 + i), Durability::Written)
                .await
                .unwrap();
        }
        let grown = log_bytes(&p, 0).await;
        let segs = log_files(&d);
        assert!(segs.len() >= 3);
        let base2: i64 = segs[2][..20].parse().unwrap();
        assert_eq!(p.truncate_to(base2).await.unwrap(), base2);
        assert_eq!(
            log_files(&d),
            segs[..3].to_vec(),
            "an empty active segment stays"
        );
        let want = prefix(&grown, base2);
        assert_eq!(log_bytes(&p, 0).await, want);
        let (_s2, img) = crash_image(&p, &root.join("img2"), cfg.clone()).await;
        assert_eq!(log_bytes(&img, 0).await, want);
        assert_eq!(img.log_end_offset(), base2);

        let info = p.append(batch(1, 10, 5), Durability::Fsync).await.unwrap();
        assert_eq!(info.base_offset, base2);
        store.close_all().await.unwrap();
        drop(p);
        let (store, p) = open(d.clone(), cfg.clone()).await;
        let mut want2 = want.clone();
        want2.extend_from_slice(&batch_at(batch(1, 10, 5), base2));
        assert_eq!(log_bytes(&p, 0).await, want2);
        // A cut below the log start (0 here) removes the whole log.
        assert_eq!(p.truncate_to(-5).await.unwrap(), 0);
        assert_eq!(log_files(&d), vec![format!("{:020}.log", 0)]);
        assert_eq!(p.read(0, 1 << 20).await.unwrap().chunks.len(), 0);
        let info = p.append(batch(1, 10, 5), Durability::Fsync).await.unwrap();
        assert_eq!(info.base_offset, 0);
        store.close_all().await.unwrap();
        drop(p);
        let (_s, p) = open(d, cfg).await;
        assert_eq!(offsets(&p.read(0, 1 << 20).await.unwrap()), vec![0]);
    });
}

fn batch_at(b: Bytes, base: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    shards::batch::set_base_offset(&mut v, base);
    v
}

// Proves a truncation while appends of every durability are in flight: it waits for
// their writes (their appenders are answered as usual: an acknowledgement before the cut
// stands, as in Kafka; one still waiting when its batches are cut gets Truncated), every
// batch acknowledged below the cut is in the log at its offset and nothing beyond it is,
// appends started during the truncation continue at the new end, and a crash image right
// after recovers exactly the cut log.
#[test]
fn truncate_with_writes_in_flight() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig::default();
        let (_s, p) = open(root.join("p"), cfg.clone()).await;
        for i in 0..5 {
            p.append(batch(2, 100, i), Durability::Fsync).await.unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..60i64 {
            let p = p.clone();
            let d = match i % 3 {
                0 => Durability::Fsync,
                1 => Durability::Written,
                _ => Durability::None,
            };
            tasks.push(glommio::spawn_local(async move {
                (i, p.append(batch(2, 2000, 100 + i), d).await)
            }));
        }
        // Let every appender enqueue; their writes are in flight or queued.
        futures_lite::future::yield_now().await;
        assert_eq!(p.log_end_offset(), 130, "every appender enqueued");
        assert!(p.stats().written_offset < 130, "writes in flight");
        let trunc = {
            let p = p.clone();
            glommio::spawn_local(async move { p.truncate_to(40).await })
        };
        futures_lite::future::yield_now().await;
        // Appends arriving during the truncation wait for it and continue at the new end.
        let late = {
            let p = p.clone();
            glommio::spawn_local(
                async move { p.append(batch(1, 10, 999), Durability::Fsync).await },
            )
        };
        assert_eq!(trunc.await.unwrap(), 40);
        let late = late.await.unwrap();
        assert_eq!(late.base_offset, 40);
        let log = log_bytes(&p, 0).await;
        let stored: Vec<BatchHeader> = headers(&log);
        let mut ours = 0;
        for t in tasks {
            let (i, r) = t.await;
            let ts = 100 + i;
            let at = stored.iter().find(|h| h.base_timestamp == ts);
            match r {
                Ok(info) if info.last_offset < 40 => {
                    ours += 1;
                    assert_eq!(at.map(|h| h.base_offset), Some(info.base_offset), "{i}");
                }
                Ok(_) | Err(AppendError::Truncated { .. }) => {
                    assert!(at.is_none(), "batch {i} beyond the cut still stored");
                }
                Err(e) => panic!("append {i}: {e}"),
            }
        }
        assert_eq!(
            stored.len(),
            5 + ours + 1,
            "every stored batch was acknowledged"
        );
        assert_eq!(
            AppendError::Truncated { log_end_offset: 0 }.kafka_error_code(),
            codes::NOT_LEADER_OR_FOLLOWER
        );
        let (_s2, img) = crash_image(&p, &root.join("img"), cfg).await;
        assert_eq!(log_bytes(&img, 0).await, log);
        assert!(p.stopped_reason().is_none());
    });
}

// Proves producer state after a cut is that of the remaining log: a sequence whose batch
// was cut is accepted again (not a duplicate), a retry of a kept batch is a duplicate with
// its offsets, also after a crash image, and when the cut goes below the last roll (the
// producer snapshot of the roll is beyond the cut and is not used).
#[test]
fn producer_state_after_truncate() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = small_segments();
        let (_s, p) = open(root.join("p"), cfg.clone()).await;
        // pid 5: seq 0..=1 at 0, 2..=3 at 2, then filler, then 4..=5 and on.
        p.append(pbatch(5, 0, 0, 2), Durability::Written)
            .await
            .unwrap();
        p.append(pbatch(5, 0, 2, 2), Durability::Written)
            .await
            .unwrap();
        let mut seq = 4;
        let mut cut_at = 0;
        for i in 0..60 {
            p.append(batch(3, 1500, i), Durability::Written)
                .await
                .unwrap();
            if i % 10 == 9 {
                let info = p
                    .append(pbatch(5, 0, seq, 2), Durability::Written)
                    .await
                    .unwrap();
                if seq == 4 {
                    cut_at = info.base_offset;
                }
                seq += 2;
            }
        }
        assert!(
            p.stats().segments > 2,
            "rolled: the snapshot is beyond the cut"
        );
        assert_eq!(p.truncate_to(cut_at).await.unwrap(), cut_at);
        let check = |p: Rc<Partition>| async move {
            let dup = p
                .append(pbatch(5, 0, 2, 2), Durability::Written)
                .await
                .unwrap();
            assert!(dup.duplicate);
            assert_eq!((dup.base_offset, dup.last_offset), (2, 3));
            let e = p
                .append(pbatch(5, 0, 6, 2), Durability::Written)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    AppendError::OutOfOrderSequence {
                        expected_sequence: 4,
                        ..
                    }
                ),
                "{e}"
            );
            let ok = p
                .append(pbatch(5, 0, 4, 2), Durability::Fsync)
                .await
                .unwrap();
            assert!(!ok.duplicate);
            assert_eq!(ok.base_offset, cut_at);
        };
        let (_s2, img) = crash_image(&p, &root.join("img"), cfg).await;
        check(img).await;
        check(p).await;
    });
}

/// Leader appends of 2-record batches in `epoch`; returns the first offset.
async fn lead(p: &Partition, epoch: i32, n: usize) -> i64 {
    let mut first = None;
    for i in 0..n {
        let info = p
            .append_with(
                batch(2, 1200, i as i64),
                Durability::Written,
                AppendMode::Leader {
                    leader_epoch: epoch,
                },
            )
            .await
            .unwrap();
        first.get_or_insert(info.base_offset);
    }
    first.unwrap()
}

// Proves the leader-epoch cache: built from appended batches' epochs (unstamped ones
// ignored), answers OffsetForLeaderEpoch, is the same after a close/reopen and after a
// crash image (checkpoint at rolls + scan), is cut by truncate_to (also after a reopen
// and a crash image right after the cut, though checkpoints of the longer log were
// written), continues with later epochs, and is copied by a follower.
#[test]
fn leader_epoch_cache() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = small_segments();
        let d = root.join("p");
        let (store, p) = open(d.clone(), cfg.clone()).await;
        p.append(batch(1, 10, 0), Durability::Written)
            .await
            .unwrap();
        assert!(p.leader_epochs().is_empty());
        assert_eq!(p.end_offset_for_epoch(0), (-1, -1));
        let s1 = lead(&p, 1, 30).await;
        let s3 = lead(&p, 3, 30).await;
        let s5 = lead(&p, 5, 30).await;
        let end = p.log_end_offset();
        let want = vec![(1, s1), (3, s3), (5, s5)];
        let check = |p: &Partition, want: &[(i32, i64)]| {
            assert_eq!(p.leader_epochs(), want);
        };
        check(&p, &want);
        assert_eq!(p.end_offset_for_epoch(0), (-1, -1));
        assert_eq!(p.end_offset_for_epoch(1), (1, s3));
        assert_eq!(p.end_offset_for_epoch(2), (1, s3));
        assert_eq!(p.end_offset_for_epoch(3), (3, s5));
        assert_eq!(p.end_offset_for_epoch(5), (5, end));
        assert_eq!(p.end_offset_for_epoch(8), (5, end));

        // A follower copying the log has the same cache.
        let (_fs, f) = open(root.join("f"), cfg.clone()).await;
        let bytes = log_bytes(&p, 0).await;
        f.append_with(
            Bytes::from(bytes),
            Durability::Written,
            AppendMode::Follower,
        )
        .await
        .unwrap();
        check(&f, &want);

        let (_s1, img) = crash_image(&p, &root.join("img1"), cfg.clone()).await;
        check(&img, &want);
        store.close_all().await.unwrap();
        drop(p);
        let (store, p) = open(d.clone(), cfg.clone()).await;
        check(&p, &want);

        // Cut inside epoch 3: epoch 5 goes; the checkpoint written at close said more.
        let new_end = p.truncate_to(s5 - 3).await.unwrap();
        assert!(new_end > s3 && new_end < s5);
        let want = vec![(1, s1), (3, s3)];
        check(&p, &want);
        assert_eq!(p.end_offset_for_epoch(5), (3, new_end));
        let (_s2, img) = crash_image(&p, &root.join("img2"), cfg.clone()).await;
        check(&img, &want);
        // Cut at the start of epoch 3: it goes too.
        assert_eq!(p.truncate_to(s3).await.unwrap(), s3);
        check(&p, &[(1, s1)]);
        let s6 = lead(&p, 6, 40).await;
        assert_eq!(s6, s3);
        let want = vec![(1, s1), (6, s6)];
        check(&p, &want);
        let (_s3, img) = crash_image(&p, &root.join("img3"), cfg.clone()).await;
        check(&img, &want);
        store.close_all().await.unwrap();
        drop(p);
        let (_s, p) = open(d, cfg).await;
        check(&p, &want);
        assert_eq!(p.end_offset_for_epoch(4), (1, s6));
    });
}

// Proves truncation on a store with the fdatasync SyncMethod and recycled segments keeps a
// crash image right after the cut exact, and that a spare segment file is never a cut one.
#[test]
fn truncate_with_fdatasync_and_recycling() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig {
            retention_bytes: 200 << 10,
            ..small_segments()
        };
        let store_cfg = StoreConfig {
            sync_method: shards::SyncMethod::Fdatasync,
            ..StoreConfig::default()
        };
        let d = root.join("p");
        let (_store, p) = open_with(d.clone(), cfg.clone(), store_cfg.clone()).await;
        for i in 0..120 {
            p.append(batch(3, 1500, i), Durability::Fsync)
                .await
                .unwrap();
            if i % 20 == 19 {
                p.enforce_retention().unwrap();
            }
        }
        let start = p.log_start_offset();
        assert!(start > 0);
        let before = log_bytes(&p, start).await;
        let cut = p.log_end_offset() - 100;
        let new_end = p.truncate_to(cut).await.unwrap();
        let want = prefix(&before, new_end);
        assert_eq!(log_bytes(&p, start).await, want);
        copy_dir(&d, &root.join("img"));
        let (_s, img) = open_with(root.join("img"), cfg.clone(), store_cfg.clone()).await;
        assert_eq!(log_bytes(&img, start).await, want);
        // Appends after, rolling (possibly into the recycled file), read back whole.
        for i in 0..60 {
            p.append(batch(3, 1500, 500 + i), Durability::Fsync)
                .await
                .unwrap();
        }
        let now = log_bytes(&p, p.log_start_offset()).await;
        copy_dir(&d, &root.join("img2"));
        let (_s, img) = open_with(root.join("img2"), cfg, store_cfg).await;
        assert_eq!(log_bytes(&img, p.log_start_offset()).await, now);
    });
}

// Proves the producer snapshot and leader-epoch checkpoint written at a close, which
// describe batches a later truncate_to cut, never come back: after the cut the log grows
// past their offsets again in the same segment (no roll rewrites them), and a crash image
// then recovers the producer state and epochs of the new log.
#[test]
fn stale_checkpoints_never_come_back() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig::default();
        let d = root.join("p");
        let (store, p) = open(d.clone(), cfg.clone()).await;
        let mut cut_at = 0;
        for seq in (0..10).step_by(2) {
            let info = p
                .append_with(
                    pbatch(5, 0, seq, 2),
                    Durability::Written,
                    AppendMode::Leader {
                        leader_epoch: 2 + seq,
                    },
                )
                .await
                .unwrap();
            if seq == 4 {
                cut_at = info.base_offset;
            }
        }
        let old_end = p.log_end_offset();
        store.close_all().await.unwrap();
        drop(p);
        let (_store, p) = open(d.clone(), cfg.clone()).await;
        assert_eq!(p.truncate_to(cut_at).await.unwrap(), cut_at);
        // Grow past the old end with other batches of a new epoch.
        for i in 0..10 {
            p.append_with(
                batch(2, 10, i),
                Durability::Written,
                AppendMode::Leader { leader_epoch: 20 },
            )
            .await
            .unwrap();
        }
        assert!(p.log_end_offset() > old_end);
        assert_eq!(p.stats().segments, 1);
        let want = vec![(2, 0), (4, 2), (20, cut_at)];
        assert_eq!(p.leader_epochs(), want);
        let (_s, img) = crash_image(&p, &root.join("img"), cfg).await;
        assert_eq!(img.leader_epochs(), want);
        for q in [&p, &img] {
            let e = q
                .append(pbatch(5, 0, 6, 2), Durability::Written)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    AppendError::OutOfOrderSequence {
                        expected_sequence: 4,
                        ..
                    }
                ),
                "{e}"
            );
            let ok = q
                .append(pbatch(5, 0, 4, 2), Durability::Written)
                .await
                .unwrap();
            assert!(!ok.duplicate, "seq 4 was cut: new, not a duplicate");
        }
    });
}

// Proves cuts at many offsets of segments with many index entries (the active one, and
// sealed ones whose index was loaded from its files at open) leave an index equal to what
// a scan builds (asserted inside truncate_to in debug builds), reads from disk that find
// every remaining batch, and timestamp lookups that see only the remaining batches.
#[test]
fn truncate_keeps_the_index_exact() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = LogConfig {
            segment_bytes: 512 << 10,
            ..LogConfig::default()
        };
        let d = root.join("p");
        let (store, p) = open(d.clone(), cfg.clone()).await;
        for i in 0..400 {
            p.append(
                batch(1 + (i % 3) as usize, 1200, 10 * i),
                Durability::Written,
            )
            .await
            .unwrap();
        }
        let full = log_bytes(&p, 0).await;
        store.close_all().await.unwrap();
        drop(p);
        let (_s, p) = open(d.clone(), cfg.clone()).await;
        assert!(p.stats().segments >= 2);
        let mut end = p.log_end_offset();
        let mut cut = end;
        while cut > 40 {
            cut -= 37;
            end = p.truncate_to(cut).await.unwrap();
            assert!(end <= cut && end > cut - 3);
            // From disk: the cache holds nothing read before (it was reopened).
            let got = log_bytes(&p, 0).await;
            assert_eq!(got, prefix(&full, end));
            let last = *headers(&got).last().unwrap();
            let ts = last.max_timestamp;
            // Record-exact: the first record of the last batch that carries its max timestamp.
            let found = p.offset_for_timestamp(ts).await.unwrap().map(|x| x.0);
            assert!(
                found.is_some_and(|o| o >= last.base_offset && o <= last.last_offset()),
                "{found:?} not in the last batch {}..={}",
                last.base_offset,
                last.last_offset()
            );
            assert_eq!(p.offset_for_timestamp(ts + 1).await.unwrap(), None);
        }
    });
}
