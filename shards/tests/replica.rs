//! Replication support: leader appends (partitionLeaderEpoch stamped), follower appends
//! (the leader's offsets kept), bounded reads (high watermark).

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::*;
use shards::batch;
use shards::{AppendError, AppendMode, Durability, LogConfig, Partition, codes};

/// Copies the leader's log from the follower's end, as fetch responses of `max_bytes`.
async fn replicate(leader: &Partition, follower: &Partition, max_bytes: usize, d: Durability) {
    loop {
        let off = follower.log_end_offset();
        let r = leader.read(off, max_bytes).await.unwrap();
        if r.chunks.is_empty() {
            break;
        }
        let mut buf = Vec::new();
        for c in &r.chunks {
            buf.extend_from_slice(c);
        }
        let info = follower
            .append_with(Bytes::from(buf), d, AppendMode::Follower)
            .await
            .unwrap();
        assert_eq!(info.base_offset, off);
        assert!(!info.duplicate);
    }
}

/// Appends a mix of plain and idempotent batches as the leader of `epoch`.
async fn lead(p: &Partition, epoch: i32, n: usize, seq: &mut i32) {
    for i in 0..n {
        let b = if i % 3 == 0 {
            let b = pbatch(42, 1, *seq, 2);
            *seq += 2;
            b
        } else {
            batch(1 + i % 4, 700 + 13 * i, i as i64)
        };
        p.append_with(
            b,
            Durability::Written,
            AppendMode::Leader {
                leader_epoch: epoch,
            },
        )
        .await
        .unwrap();
    }
}

// Proves a follower fed with the leader's read bytes (across several rolls, in fetches of
// several sizes) ends byte-identical to the leader's log, with the leader's producer state,
// and that a crash image of it, taken after a flush, reopens to the same log and takes
// further follower appends.
#[test]
fn follower_copy_is_byte_identical_and_survives_a_crash_image() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = small_segments();
        let (_ls, leader) = open(root.join("leader"), cfg.clone()).await;
        let (_fs, follower) = open(root.join("follower"), cfg.clone()).await;
        let mut seq = 0;
        lead(&leader, 3, 60, &mut seq).await;
        replicate(&leader, &follower, 5000, Durability::None).await;
        lead(&leader, 4, 60, &mut seq).await;
        replicate(&leader, &follower, 1 << 20, Durability::Written).await;
        assert!(follower.stats().segments > 1, "the follower rolled");
        let want = log_bytes(&leader, 0).await;
        assert_eq!(log_bytes(&follower, 0).await, want);
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(follower.stats().producers, 1);
        let epochs: Vec<i32> = headers(&want)
            .iter()
            .map(|h| h.partition_leader_epoch)
            .collect();
        assert!(epochs.iter().all(|e| *e == 3 || *e == 4));

        // The follower's producer state is the leader's: the next sequence is accepted as
        // the leader would, a retry is a duplicate.
        let dup = follower
            .append(pbatch(42, 1, seq - 2, 2), Durability::None)
            .await
            .unwrap();
        assert!(dup.duplicate);

        follower.flush().await.unwrap();
        let image = root.join("image");
        copy_dir(follower.dir(), &image);
        let (_is, reopened) = open(image, cfg).await;
        assert_eq!(log_bytes(&reopened, 0).await, want);
        assert_eq!(reopened.stats().producers, 1);
        let dup = reopened
            .append(pbatch(42, 1, seq - 2, 2), Durability::None)
            .await
            .unwrap();
        assert!(dup.duplicate);
        lead(&leader, 5, 10, &mut seq).await;
        replicate(&leader, &reopened, 3000, Durability::Fsync).await;
        assert_eq!(log_bytes(&reopened, 0).await, log_bytes(&leader, 0).await);
    });
}

// Proves a crash image of a follower taken without any flush recovers a prefix of the
// leader's log that ends at a batch boundary.
#[test]
fn follower_crash_image_without_flush_is_a_prefix() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let cfg = small_segments();
        let (_ls, leader) = open(root.join("leader"), cfg.clone()).await;
        let (_fs, follower) = open(root.join("follower"), cfg.clone()).await;
        let mut seq = 0;
        lead(&leader, 1, 80, &mut seq).await;
        replicate(&leader, &follower, 7000, Durability::None).await;
        let image = root.join("image");
        copy_dir(follower.dir(), &image);
        let (_is, reopened) = open(image, cfg).await;
        let got = log_bytes(&reopened, 0).await;
        let want = log_bytes(&leader, 0).await;
        assert_eq!(&want[..got.len()], &got[..]);
        let end = reopened.log_end_offset();
        assert!(end <= leader.log_end_offset());
        // It continues from where it recovered.
        replicate(&leader, &reopened, 7000, Durability::Written).await;
        assert_eq!(log_bytes(&reopened, 0).await, want);
    });
}

// Proves follower appends whose base offsets go back (an overlap with the log, or a second
// batch overlapping the first) are refused with OffsetMismatch (OFFSET_OUT_OF_RANGE) and
// store nothing, while a gap (as a compacted leader log has) continues the log.
#[test]
fn follower_refuses_wrong_base_offsets() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let (_s, p) = open(root.join("p"), LogConfig::default()).await;
        let at = |base: i64, records: usize| {
            let mut b = batch(records, 10, 0).to_vec();
            batch::set_base_offset(&mut b, base);
            b
        };
        let ok = p
            .append_with(
                Bytes::from(at(0, 3)),
                Durability::Written,
                AppendMode::Follower,
            )
            .await
            .unwrap();
        assert_eq!((ok.base_offset, ok.last_offset), (0, 2));
        // Offsets that go back are refused; gaps are not (a compacted leader log has them).
        for (bytes, expected, got) in [(at(2, 1), 3, 2), ([at(3, 2), at(4, 1)].concat(), 5, 4)] {
            let e = p
                .append_with(
                    Bytes::from(bytes),
                    Durability::Written,
                    AppendMode::Follower,
                )
                .await
                .unwrap_err();
            assert!(
                matches!(e, AppendError::OffsetMismatch { expected: x, got: y } if x == expected && y == got),
                "{e}"
            );
            assert_eq!(e.kafka_error_code(), codes::OFFSET_OUT_OF_RANGE);
            assert_eq!(p.log_end_offset(), 3);
        }
        // A corrupt batch is refused as in a produce.
        let mut bad = at(3, 1);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let e = p
            .append_with(Bytes::from(bad), Durability::Written, AppendMode::Follower)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), codes::CORRUPT_MESSAGE);
        let ok = p
            .append_with(
                Bytes::from([at(3, 2), at(5, 1)].concat()),
                Durability::Written,
                AppendMode::Follower,
            )
            .await
            .unwrap();
        assert_eq!((ok.base_offset, ok.last_offset), (3, 5));
        assert_eq!(offsets(&p.read(0, 1 << 20).await.unwrap()), vec![0, 3, 5]);
        // A gap (batches 6..8 removed by the leader's cleaner) continues the log.
        let ok = p
            .append_with(
                Bytes::from(at(8, 1)),
                Durability::Written,
                AppendMode::Follower,
            )
            .await
            .unwrap();
        assert_eq!(ok.last_offset, 8);
        assert_eq!(p.log_end_offset(), 9);
        assert_eq!(offsets(&p.read(6, 1 << 20).await.unwrap()), vec![8]);
    });
}

// Proves a leader append stamps partitionLeaderEpoch into every batch of the append and
// the CRC still verifies (in the cache and on disk after a reopen), while a plain append
// keeps the field as sent.
#[test]
fn leader_epoch_is_stamped_and_crc_stays_valid() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), LogConfig::default()).await;
        p.append(batch(2, 10, 0), Durability::Written)
            .await
            .unwrap();
        let two = Bytes::from([batch(1, 10, 0), batch(3, 10, 0)].concat());
        p.append_with(
            two,
            Durability::Written,
            AppendMode::Leader { leader_epoch: 7 },
        )
        .await
        .unwrap();
        p.append_with(
            batch(1, 10, 0),
            Durability::Fsync,
            AppendMode::Leader { leader_epoch: 9 },
        )
        .await
        .unwrap();
        let check = |bytes: Vec<u8>| {
            let hs = headers(&bytes); // check_one verifies every CRC
            let got: Vec<(i64, i32)> = hs
                .iter()
                .map(|h| (h.base_offset, h.partition_leader_epoch))
                .collect();
            assert_eq!(got, vec![(0, -1), (2, 7), (3, 7), (6, 9)]);
        };
        check(log_bytes(&p, 0).await);
        store.close_all().await.unwrap();
        drop(p);
        let (_s, p) = open(d, LogConfig::default()).await;
        check(log_bytes(&p, 0).await);
    });
}

// Proves read_bounded returns only whole batches whose last offset is below the bound,
// from the cache and from disk, is empty (not out of range) between the bound and the log
// end, and refuses offsets beyond the log end.
#[test]
fn read_bounded_cuts_at_batch_boundaries() {
    let dir = tmpdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let d = root.join("p");
        let (store, p) = open(d.clone(), LogConfig::default()).await;
        // Batches at 0, 3, 6, 9 (3 records each), log end 12.
        for i in 0..4 {
            p.append(batch(3, 100, i), Durability::Fsync).await.unwrap();
        }
        async fn check(p: &Rc<Partition>) {
            let b = |o: i64, bound: i64| async move {
                let r = p.read_bounded(o, 1 << 20, bound).await.unwrap();
                (offsets(&r), r.high_watermark)
            };
            assert_eq!(b(0, 6).await, (vec![0, 3], 6));
            assert_eq!(b(0, 7).await, (vec![0, 3], 7));
            assert_eq!(b(0, 12).await, (vec![0, 3, 6, 9], 12));
            assert_eq!(b(0, 100).await, (vec![0, 3, 6, 9], 12));
            assert_eq!(b(4, 9).await, (vec![3, 6], 9));
            assert_eq!(b(4, 5).await, (vec![], 5));
            assert_eq!(b(0, 2).await, (vec![], 2));
            assert_eq!(b(7, 7).await, (vec![], 7));
            assert_eq!(b(12, 7).await, (vec![], 7));
            let one = p.read_bounded(0, 1, 12).await.unwrap();
            assert_eq!(offsets(&one), vec![0], "at least one batch, as read");
            let e = p.read_bounded(13, 1 << 20, 12).await.unwrap_err();
            assert_eq!(e.kafka_error_code(), codes::OFFSET_OUT_OF_RANGE);
        }
        check(&p).await;
        store.close_all().await.unwrap();
        drop(p);
        let (_s, p) = open(d, LogConfig::default()).await;
        assert_eq!(p.stats().cache_bytes, 0, "reads come from disk");
        check(&p).await;
    });
}
