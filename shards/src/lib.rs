//! shards: osprey's per-core storage engine: partition logs on direct I/O (glommio DmaFile),
//! a bounded per-shard tail cache, group-commit fsync, retention and crash recovery.
//!
//! Everything here runs inside one glommio LocalExecutor (one per core): a [`Store`] per
//! shard owns that shard's [`Partition`]s; state is `Rc`/`RefCell`/`Cell`, never shared
//! across threads. This crate opens no sockets. [`batch`] is pure and usable on any core.
//!
//! On disk, per partition directory: `<base offset, 20 digits>.log` segments of record
//! batches v2 exactly as produced (baseOffset and partitionLeaderEpoch rewritten; on
//! LogAppendTime logs also the timestamp type, maxTimestamp and CRC), `.index` /
//! `.timeindex` sparse indexes per sealed segment, `producer.snapshot`,
//! `leader-epoch.checkpoint`, and on compacted logs `cleaner-offset.checkpoint` (the log
//! cleaner rewrites sealed segments keeping the latest record per key; offsets keep their
//! values, with gaps: see `partition::cleaner`).
//!
//! Recovery on open: the last segment (and any sealed segment whose index is missing or
//! stale) is scanned batch by batch with CRC checks; the log ends at the last whole valid
//! batch in offset sequence, and anything after it (torn write, zero-filled preallocation)
//! is cut with a `log::warn!` saying how many bytes. Segments that do not follow on are
//! removed. Data acknowledged under [`Durability::Fsync`] was written and fdatasync'ed
//! before the acknowledgement, so it is always before the cut.

pub mod batch;
mod config;
pub mod discard;
pub mod epochs;
mod error;
pub mod index;
pub mod metrics;
mod partition;
pub mod power;
pub mod producer;
mod segment;
mod store;

pub use config::*;
pub use discard::{discard_dir, remove_deleted_dirs};
pub use error::{AppendError, ReadError, StorageError, codes};
pub use metrics::{Histogram, HistogramSnapshot, StoreMetrics};
pub use partition::cleaner::{CLEANER_CHECKPOINT_FILE, CleanReport, CleanerCrashPoint};
pub use partition::{
    AppendInfo, AppendMode, Chunk, Decompress, Partition, PartitionStats, ReadOutput,
};
pub use producer::AbortedTxn;
pub use segment::segment_file_name;
pub use store::{CompressFn, DecompressFn, FaultInjector, Store, StoreStats};
