//! Shared helpers of the integration tests: an executor runner, batch builders and a
//! temporary data directory.
#![allow(dead_code)]

use std::future::Future;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use shards::batch::build::{self, ProducerFields};

/// Runs `f` on a fresh single-core executor, as the broker would on one shard.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let _ = env_logger_init();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("spawn executor")
        .join()
        .expect("executor panicked");
}

fn env_logger_init() -> Result<(), ()> {
    Ok(())
}

/// Default log config with 64 KiB segments, so a test rolls after a few appends.
pub fn small_segments() -> shards::LogConfig {
    shards::LogConfig {
        segment_bytes: 64 << 10,
        ..shards::LogConfig::default()
    }
}

/// Copies every file of `from` into `to` (created): a crash image of a live partition.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A temporary directory under cargo's per-target scratch directory: on the build's disk,
/// which takes O_DIRECT (a tmpfs /tmp would not).
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shards-test")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

/// A batch of `records` records of `value_bytes` bytes, timestamps from `ts`.
pub fn batch(records: usize, value_bytes: usize, ts: i64) -> Bytes {
    Bytes::from(build::batch(
        records,
        value_bytes,
        ts,
        ProducerFields::NONE,
        7,
    ))
}

/// A batch from idempotent producer `pid` with epoch and base sequence.
pub fn pbatch(pid: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
    Bytes::from(build::batch(
        records,
        16,
        1_000,
        ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        },
        3,
    ))
}

/// Parses the base offsets of all batches in a read output.
pub fn offsets(out: &shards::ReadOutput) -> Vec<i64> {
    let mut v = Vec::new();
    for c in &out.chunks {
        let mut p = 0;
        while p < c.len() {
            let h = shards::batch::parse_header(&c[p..]).expect("valid batch");
            v.push(h.base_offset);
            p += h.total_bytes();
        }
    }
    v
}

/// A fresh store with default limits and the partition in `dir`, as a shard opens it.
pub async fn open(
    dir: std::path::PathBuf,
    config: shards::LogConfig,
) -> (std::rc::Rc<shards::Store>, std::rc::Rc<shards::Partition>) {
    open_with(dir, config, shards::StoreConfig::default()).await
}

/// `open` with a given store configuration.
pub async fn open_with(
    dir: std::path::PathBuf,
    config: shards::LogConfig,
    store_config: shards::StoreConfig,
) -> (std::rc::Rc<shards::Store>, std::rc::Rc<shards::Partition>) {
    let store = shards::Store::new(store_config);
    let p = store
        .open_partition(dir, config)
        .await
        .expect("open partition");
    (store, p)
}

/// Every byte of the log from `from` to its end, read as a consumer would.
pub async fn log_bytes(p: &shards::Partition, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let r = p.read(off, 64 << 10).await.unwrap();
        if r.chunks.is_empty() {
            break;
        }
        for c in &r.chunks {
            out.extend_from_slice(c);
        }
        off = last_header(&r.chunks).last_offset() + 1;
    }
    out
}

pub fn headers(bytes: &[u8]) -> Vec<shards::batch::BatchHeader> {
    let mut v = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let h = shards::batch::check_one(&bytes[p..], p).expect("valid batch");
        v.push(h);
        p += h.total_bytes();
    }
    v
}

pub fn last_header(chunks: &[shards::Chunk]) -> shards::batch::BatchHeader {
    let c = chunks.last().unwrap();
    *headers(c).last().unwrap()
}
