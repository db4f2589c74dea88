//! Group commit and the flush bounds (flush.ms, flush.messages).

mod common;

use std::time::Duration;

use common::*;
use shards::{Durability, LogConfig, Store, StoreConfig, SyncMethod};

// Proves 64 concurrent Fsync appenders share group commits, with either sync method: far
// fewer durable operations (O_DSYNC rounds or fdatasyncs) than appends, and every append is
// acknowledged only once synced.
fn fsync_appenders_share_group_commits(sync_method: SyncMethod) {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig {
            sync_method,
            ..StoreConfig::default()
        });
        let p = store
            .open_partition(path, LogConfig::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..5 {
                    let info = p.append(batch(4, 256, 0), Durability::Fsync).await.unwrap();
                    assert!(p.stats().synced_offset > info.last_offset);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let s = p.stats();
        assert_eq!(s.appends, 320);
        assert_eq!(s.log_end_offset, 1280);
        let commits = s.fdatasyncs + s.dsync_rounds;
        assert!(commits * 4 <= s.appends, "{s:?}");
        assert!(commits >= 1);
        match sync_method {
            SyncMethod::DsyncWrites => {
                assert!(s.dsync_rounds >= 1, "{s:?}");
                assert!(store.stats().dsync_writes >= s.dsync_rounds);
            }
            SyncMethod::Fdatasync => {
                assert_eq!(s.dsync_rounds, 0, "{s:?}");
                assert_eq!(store.stats().dsync_writes, 0);
            }
        }
    });
}

#[test]
fn concurrent_fsync_appenders_share_dsync_rounds() {
    fsync_appenders_share_group_commits(SyncMethod::DsyncWrites);
}

#[test]
fn concurrent_fsync_appenders_share_fdatasyncs() {
    fsync_appenders_share_group_commits(SyncMethod::Fdatasync);
}

// Proves Written appends do not fdatasync by themselves, and flush.ms (via the background
// task) then syncs them within a few ticks.
#[test]
fn flush_ms_bounds_unsynced_age() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig::default());
        let p = store
            .open_partition(
                path,
                LogConfig {
                    flush_ms: 100,
                    ..LogConfig::default()
                },
            )
            .await
            .unwrap();
        for _ in 0..10 {
            p.append(batch(1, 100, 0), Durability::Written)
                .await
                .unwrap();
        }
        let s = p.stats();
        assert_eq!(s.fdatasyncs, 0);
        assert_eq!(s.synced_offset, 0);
        store.start_background();
        glommio::timer::sleep(Duration::from_millis(400)).await;
        let s = p.stats();
        assert_eq!(s.synced_offset, 10, "{s:?}");
        assert!(s.fdatasyncs >= 1);
    });
}

// Proves flush.messages forces a sync once that many messages are un-synced.
#[test]
fn flush_messages_forces_sync() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let store = Store::new(StoreConfig::default());
        let cfg = LogConfig {
            flush_messages: 10,
            flush_ms: 3_600_000,
            ..LogConfig::default()
        };
        let p = store.open_partition(path, cfg).await.unwrap();
        for _ in 0..4 {
            p.append(batch(2, 100, 0), Durability::Written)
                .await
                .unwrap();
        }
        assert_eq!(p.stats().synced_offset, 0);
        p.append(batch(2, 100, 0), Durability::Written)
            .await
            .unwrap();
        // The sync runs right after the write that reached 10 messages.
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.stats().synced_offset, 10, "{:?}", p.stats());
    });
}

// Proves Durability::None returns before the write and the data still gets written.
#[test]
fn none_durability_is_queued_and_written() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (_store, p) = open(path, LogConfig::default()).await;
        let info = p.append(batch(3, 100, 0), Durability::None).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 2));
        assert!(p.stats().pending_bytes > 0);
        assert_eq!(offsets(&p.read(0, 1000).await.unwrap()), vec![0]);
        p.flush().await.unwrap();
        let s = p.stats();
        assert_eq!((s.pending_bytes, s.synced_offset), (0, 3));
    });
}

// Proves an Fsync append on top of unsynced Written data needs a fdatasync (for the
// Written prefix; its own round may be an O_DSYNC round issued beside it), and the next
// Fsync append, now on a synced prefix, is made durable by one O_DSYNC round alone.
#[test]
fn dsync_rounds_only_continue_a_durable_prefix() {
    let dir = tmpdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (_store, p) = open(path, LogConfig::default()).await;
        p.append(batch(2, 100, 0), Durability::Written)
            .await
            .unwrap();
        let s = p.stats();
        assert_eq!((s.synced_offset, s.fdatasyncs, s.dsync_rounds), (0, 0, 0));
        p.append(batch(2, 100, 0), Durability::Fsync).await.unwrap();
        let s = p.stats();
        assert_eq!(s.synced_offset, 4, "{s:?}");
        assert!(s.fdatasyncs >= 1, "{s:?}");
        let (syncs, dsyncs) = (s.fdatasyncs, s.dsync_rounds);
        p.append(batch(2, 100, 0), Durability::Fsync).await.unwrap();
        let s = p.stats();
        assert_eq!(s.synced_offset, 6, "{s:?}");
        assert_eq!(s.dsync_rounds, dsyncs + 1, "{s:?}");
        assert_eq!(s.fdatasyncs, syncs, "{s:?}");
    });
}
