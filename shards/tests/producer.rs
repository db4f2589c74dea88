//! Idempotent producers through the partition API, including restarts.

mod common;

use common::*;
use shards::{AppendError, Durability, LogConfig};

// Proves a retried batch returns its original offsets without being stored again, a gap
// is OutOfOrderSequence (45) and an old epoch InvalidProducerEpoch (47).
#[test]
fn duplicates_gaps_and_epochs() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (_store, p) = open(path, LogConfig::default()).await;
        let a = p
            .append(pbatch(7, 1, 0, 3), Durability::Fsync)
            .await
            .unwrap();
        let b = p
            .append(pbatch(7, 1, 3, 2), Durability::Fsync)
            .await
            .unwrap();
        assert_eq!((b.base_offset, b.last_offset), (3, 4));
        let d = p
            .append(pbatch(7, 1, 0, 3), Durability::Fsync)
            .await
            .unwrap();
        assert!(d.duplicate);
        assert_eq!(
            (d.base_offset, d.last_offset),
            (a.base_offset, a.last_offset)
        );
        assert_eq!(p.log_end_offset(), 5);
        let e = p
            .append(pbatch(7, 1, 9, 1), Durability::Fsync)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            AppendError::OutOfOrderSequence {
                expected_sequence: 5,
                ..
            }
        ));
        assert_eq!(e.kafka_error_code(), 45);
        let e = p
            .append(pbatch(7, 0, 5, 1), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 47);
        // Two batches of one producer in one append are checked in order.
        let mut two = pbatch(7, 1, 5, 1).to_vec();
        two.extend_from_slice(&pbatch(7, 1, 6, 2));
        let t = p.append(two.into(), Durability::Fsync).await.unwrap();
        assert_eq!((t.base_offset, t.last_offset), (5, 7));
        assert_eq!(p.log_end_offset(), 8);
    });
}

// Proves producer state survives a clean reopen (snapshot) and a crash (drop without close:
// rebuilt from the log), so a retry after restart is still recognised as a duplicate.
#[test]
fn producer_state_survives_reopen_and_crash() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = small_segments();
        let (store, p) = open(path.clone(), cfg.clone()).await;
        for i in 0..40 {
            p.append(pbatch(11, 0, i * 10, 10), Durability::Fsync)
                .await
                .unwrap();
            p.append(batch(1, 3000, 0), Durability::Fsync)
                .await
                .unwrap();
        }
        assert!(p.stats().segments > 1);
        store.close_all().await.unwrap();
        drop(p);
        let (store, p) = open(path.clone(), cfg.clone()).await;
        let d = p
            .append(pbatch(11, 0, 390, 10), Durability::Fsync)
            .await
            .unwrap();
        assert!(d.duplicate);
        assert_eq!(d.base_offset, 39 * 11);
        let n = p
            .append(pbatch(11, 0, 400, 10), Durability::Fsync)
            .await
            .unwrap();
        assert!(!n.duplicate);
        // Crash: no close, so the snapshot is older than the log end.
        drop(p);
        drop(store);
        let (store, p) = open(path.clone(), cfg.clone()).await;
        let d = p
            .append(pbatch(11, 0, 400, 10), Durability::Fsync)
            .await
            .unwrap();
        assert!(d.duplicate);
        assert_eq!(d.base_offset, n.base_offset);
        let e = p
            .append(pbatch(11, 0, 420, 1), Durability::Fsync)
            .await
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), 45);
        // Without any snapshot the state is rebuilt from the whole log.
        drop(p);
        drop(store);
        std::fs::remove_file(path.join("producer.snapshot")).unwrap();
        let (_store, p) = open(path, cfg).await;
        assert!(
            p.append(pbatch(11, 0, 400, 10), Durability::Fsync)
                .await
                .unwrap()
                .duplicate
        );
    });
}
