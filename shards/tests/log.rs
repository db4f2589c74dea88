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
        let store = Store::new(StoreConfig::default());
        let p = store
            .open_partition(path.clone(), LogConfig::default())
            .await
            .unwrap();
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
        let store = Store::new(StoreConfig::default());
        let p = store
            .open_partition(path.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(p.log_end_offset(), 60);
        let out = p.read(7, 1 << 20).await.unwrap();
        assert!(matches!(out.chunks[0], shards::Chunk::Disk(_)));
        assert_eq!(offsets(&out), (2..20).map(|i| i * 3).collect::<Vec<_>>());
        for (c, s) in out.chunks.iter().zip(&sent[2..]) {
            assert_eq!(&c[12..], &s[12..]);
        }
    });
}
