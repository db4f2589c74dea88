//! Configuration of the store (per shard) and of each partition log (Kafka topic configs),
//! plus the compile-time constants every limit derives from.
//!
//! Runs on the shard's own core; configs are plain values copied into each shard.

/// Direct I/O block: every write offset and length is a multiple of it.
pub const BLOCK_BYTES: u64 = 4096;
/// Segments grow by this much at a time (preallocated, and pre-zeroed if configured).
pub const PREALLOC_STEP_BYTES: u64 = 8 << 20;
/// Default `StoreConfig::disk_free_min_bytes`: a few preallocation steps (a zero-ahead step
/// of each of several active segments, their indexes and snapshots).
pub const DISK_FREE_MIN_BYTES_DEFAULT: u64 = 4 * PREALLOC_STEP_BYTES;
/// The free space of the data's filesystem is asked (statvfs, and the shard's unwritten
/// bytes summed over its partitions) again after this many bytes were admitted by a shard
/// since the last look (admitted bytes are counted in between, so this bounds only how
/// late space taken by others is seen), or after DISK_FREE_RECHECK_MS, or while it was
/// below the minimum after DISK_FREE_SHORT_RECHECK_MS (refused appends resume within it,
/// and clients retrying against a full disk cost one look per interval, not one each).
pub const DISK_FREE_RECHECK_BYTES: u64 = 64 << 20;
pub const DISK_FREE_RECHECK_MS: u64 = 100;
pub const DISK_FREE_SHORT_RECHECK_MS: u64 = 10;
const _: () = assert!(DISK_FREE_SHORT_RECHECK_MS <= DISK_FREE_RECHECK_MS);
/// Name of a partition's kept segment file awaiting reuse (`StoreConfig::recycle_segments`).
/// Not a segment name, so recovery never reads it as part of the log.
pub const RECYCLED_SEGMENT_FILE: &str = "recycled-segment.spare";
/// Largest single DMA write; a bigger round (one batch over ROUND_MAX_BYTES) is split in chunks of this size that go
/// out concurrently (bounded by StoreConfig::inflight_writes_max).
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Default `StoreConfig::round_min_bytes`: while a write round is in flight, the next one
/// is formed only once this much data is queued (or nothing is in flight any more): fewer,
/// larger writes (see `round_due`).
pub const ROUND_MIN_BYTES: usize = 256 << 10;
/// fdatasyncs in flight at once per partition: a sync is issued as soon as a round
/// completes that Fsync appenders wait for, even while earlier syncs are in flight.
pub const SYNCS_INFLIGHT_MAX: u64 = 4;
/// Default `StoreConfig::round_max_bytes`: the largest amount of queued data one write
/// round takes (at least one batch). Under load
/// this keeps several rounds in flight, so the appenders that one round's completion wakes
/// refill the pipeline while the others are still being written: 64 closed-loop appenders
/// of 16 KiB (1 MiB outstanding) measured ~1.0 GB/s with 512 KiB rounds against ~0.9 with
/// one 1 MiB round and ~0.7 with 256 KiB rounds (more, smaller writes), same session.
pub const ROUND_MAX_BYTES: usize = 512 << 10;
/// Bounds of `StoreConfig::round_max_bytes` whatever configures it (flags, iotune.json):
/// below one block a round is all alignment overhead; above the cap one round holds a
/// large share of the partition's PENDING_MAX_BYTES and appenders stall behind it.
pub const ROUND_MAX_BYTES_FLOOR: usize = BLOCK_BYTES as usize;
pub const ROUND_MAX_BYTES_CAP: usize = 8 << 20;
/// Bound of `StoreConfig::inflight_writes_max` whatever configures it.
pub const INFLIGHT_WRITES_CAP: usize = 64;
/// With `Preallocation::ZeroAhead`, the next preallocation step is zeroed in the background
/// once fewer than this many preallocated bytes are left ahead of the write position.
pub const PREZERO_AHEAD_BYTES: u64 = PREALLOC_STEP_BYTES / 2;
/// Appended but not yet written bytes per partition above which appenders wait (all
/// durabilities, including None): bounds the memory of un-written data.
pub const PENDING_MAX_BYTES: usize = 64 << 20;
/// An offset-index and time-index entry is added every this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u64 = 32 << 10;
/// Size of the aligned reads used by recovery scans.
pub const SCAN_READ_BYTES: usize = 1 << 20;
/// Largest single disk read served by `Partition::read` (a fetch's max_bytes is capped here,
/// except that one whole batch is always returned).
pub const READ_MAX_BYTES: usize = 8 << 20;
/// Idempotent producers remembered per partition; the least recently used is dropped beyond.
pub const PRODUCERS_MAX_PER_PARTITION: usize = 8192;
/// Transactional producers whose first batch in a partition awaits its coordinator's
/// confirmation (KIP-890 verification guards), per partition.
pub const VERIFYING_MAX_PER_PARTITION: usize = 8192;
/// Batches remembered per producer for duplicate detection (Kafka: 5 in flight).
pub const PRODUCER_BATCHES_MAX: usize = 5;
/// Aborted transactions a partition remembers for read_committed fetches (24 bytes each,
/// so 2.4 MB at most); beyond it the oldest are forgotten with a warning (Kafka keeps them
/// in per-segment .txnindex files instead).
pub const ABORTED_TXNS_MAX_PER_PARTITION: usize = 100_000;
/// Period of the shard's background task (flush.ms, retention).
pub const BACKGROUND_TICK_MS: u64 = 50;
/// Smallest segment.bytes accepted (smaller values are raised to it).
pub const SEGMENT_MIN_BYTES: u64 = 64 << 10;
/// Memory one slot of the log cleaner's key map costs: a (128-bit key hash, i64 offset)
/// pair (32 bytes with the u128's alignment) plus the hash table's control byte. The
/// table has a power of two of slots, at most 7/8 of them used (hashbrown's load factor).
pub const CLEANER_MAP_ENTRY_BYTES: usize = std::mem::size_of::<(u128, i64)>() + 1;
/// Size of the log cleaner's read buffer and of its write buffer (one each per shard: the
/// cleaner cleans one partition at a time). A batch larger than this is read whole.
pub const CLEANER_IO_BUFFER_BYTES: usize = 1 << 20;
/// Default pause between two passes of a shard's log cleaner over its compacted
/// partitions (Kafka's log.cleaner.backoff.ms).
pub const CLEANER_BACKOFF_DEFAULT_MS: u64 = 15_000;
/// Default bound of a shard's log cleaner I/O (bytes read plus written per second), so
/// that cleaning leaves the disk to the data path (Kafka's
/// log.cleaner.io.max.bytes.per.second, unbounded there; this disk does 1.2-2.1 GB/s).
pub const CLEANER_IO_DEFAULT_BYTES_PER_SEC: u64 = 128 << 20;
/// Default memory of a shard's log cleaner key map (Kafka's log.cleaner.dedupe.buffer.size
/// is 128 MiB for all cleaner threads of a broker; here it is per core).
pub const CLEANER_KEY_MAP_DEFAULT_BYTES: usize = 16 << 20;

const _: () = assert!(PREALLOC_STEP_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!((WRITE_CHUNK_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!((SCAN_READ_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(ROUND_MAX_BYTES <= PENDING_MAX_BYTES);
const _: () = assert!(ROUND_MIN_BYTES <= ROUND_MAX_BYTES);
const _: () =
    assert!(ROUND_MAX_BYTES_FLOOR <= ROUND_MAX_BYTES && ROUND_MAX_BYTES <= ROUND_MAX_BYTES_CAP);
const _: () = assert!(ROUND_MAX_BYTES_CAP <= PENDING_MAX_BYTES);
const _: () = assert!(PREZERO_AHEAD_BYTES <= PREALLOC_STEP_BYTES);
const _: () = assert!(SEGMENT_MIN_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(INDEX_INTERVAL_BYTES >= BLOCK_BYTES);
const _: () = assert!((CLEANER_IO_BUFFER_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(CLEANER_KEY_MAP_DEFAULT_BYTES >= CLEANER_MAP_ENTRY_BYTES);

/// Per-shard limits. One `Store` per core uses one of these.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bound of the shard's tail cache of recent batches. Data not yet written to disk is
    /// pinned and may exceed it by at most PENDING_MAX_BYTES per partition.
    pub cache_max_bytes: usize,
    /// Bound of concurrent DMA writes of the shard, and of write rounds in flight per
    /// partition (a round is formed and issued while earlier rounds are still being written).
    pub inflight_writes_max: usize,
    /// Largest amount of queued data one write round of a partition takes (at least one
    /// batch); `Store::new` clamps it to [ROUND_MAX_BYTES_FLOOR, ROUND_MAX_BYTES_CAP].
    pub round_max_bytes: usize,
    /// With rounds in flight, the next round waits for this much queued data (see
    /// `round_due`); `Store::new` clamps it to at most `round_max_bytes`.
    pub round_min_bytes: usize,
    /// Bound of open segment files of the shard (active segments always stay open; sealed
    /// segments' files are closed least-recently-opened first beyond it).
    pub open_files_max: usize,
    /// Hard cap of one append call's buffer (RECORD_LIST_TOO_LARGE beyond).
    pub batch_max_bytes: usize,
    /// How segment files grow ahead of the data (see `Preallocation`).
    pub segment_preallocation: Preallocation,
    /// How appends under `Durability::Fsync` are made durable (see `SyncMethod`).
    pub sync_method: SyncMethod,
    /// Keep the file of a segment that retention removes (one per partition, as
    /// RECYCLED_SEGMENT_FILE in the partition directory) and reuse it for the next roll:
    /// writes then overwrite already allocated, initialized blocks (no zeroing, no extent
    /// conversion, no metadata for O_DSYNC writes to commit), as database logs recycle
    /// their segment files. Costs up to one segment of disk per partition beyond retention.
    pub recycle_segments: bool,
    /// Appends are refused (`StorageError::DiskFull`, KAFKA_STORAGE_ERROR) while the
    /// filesystem of the partition has less free space than this, before any offset is
    /// assigned, so the partition keeps running and takes writes again once space is freed.
    /// The reserve covers what writes need beyond the data itself: preallocation steps,
    /// indexes at roll, snapshots and checkpoints. 0 turns the check off.
    pub disk_free_min_bytes: u64,
    /// Pause between two passes of the shard's log cleaner (compacted partitions), in ms.
    pub cleaner_backoff_ms: u64,
    /// Memory bound of the shard's log cleaner key map, in bytes (CLEANER_MAP_ENTRY_BYTES
    /// per key); a pass whose dirty records have more distinct keys cleans a prefix of them.
    pub cleaner_key_map_max_bytes: usize,
    /// Bound of the shard's log cleaner I/O, bytes read plus written per second (0: none).
    pub cleaner_io_max_bytes_per_sec: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_max_bytes: 128 << 20,
            inflight_writes_max: 8,
            round_max_bytes: ROUND_MAX_BYTES,
            round_min_bytes: ROUND_MIN_BYTES,
            open_files_max: 1024,
            batch_max_bytes: 8 << 20,
            segment_preallocation: Preallocation::default(),
            sync_method: SyncMethod::default(),
            recycle_segments: true,
            disk_free_min_bytes: DISK_FREE_MIN_BYTES_DEFAULT,
            cleaner_backoff_ms: CLEANER_BACKOFF_DEFAULT_MS,
            cleaner_key_map_max_bytes: CLEANER_KEY_MAP_DEFAULT_BYTES,
            cleaner_io_max_bytes_per_sec: CLEANER_IO_DEFAULT_BYTES_PER_SEC,
        }
    }
}

/// How a write round that Fsync appenders (or `flush`) wait for is made durable.
/// Measurements behind the default are in shards/ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// The round's writes go through a second descriptor of the segment opened with
    /// O_DSYNC: each write is durable when it completes (the kernel writes and flushes in
    /// one operation), so a group commit costs one device round trip. A round published
    /// on top of a synced prefix advances the synced offset itself; otherwise (earlier
    /// data written without O_DSYNC and not yet synced) a fdatasync still covers it.
    #[default]
    DsyncWrites,
    /// Plain writes, then a fdatasync of the dirty segments once the round completed.
    Fdatasync,
}

/// How a segment file is grown, PREALLOC_STEP_BYTES at a time. Measurements behind the
/// default are in shards/ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// fallocate the step: no extra bytes written, but ext4 marks the extents unwritten and
    /// the first fdatasync after writing into them also commits their conversion.
    Fallocate,
    /// Write zeros over the step when the write position reaches it (the round that needs
    /// it waits). fdatasync is then a pure data flush, at the cost of writing every byte
    /// twice.
    Zero,
    /// Like `Zero`, but the next step is zeroed in the background as soon as the write
    /// position comes within PREZERO_AHEAD_BYTES of the preallocated end, so rounds rarely
    /// wait for it.
    #[default]
    ZeroAhead,
}

/// Per-partition log settings with Kafka topic-config semantics and names.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes: roll to a new segment before this size is exceeded (default 1 GiB).
    pub segment_bytes: u64,
    /// segment.ms: roll when the active segment is older than this at append (default 7 days).
    pub segment_ms: u64,
    /// retention.ms: delete sealed segments whose newest timestamp is older (-1 = unlimited).
    pub retention_ms: i64,
    /// retention.bytes: delete oldest sealed segments while the log is larger (-1 = unlimited).
    pub retention_bytes: i64,
    /// max.message.bytes: largest single batch accepted (default 1048588).
    pub max_message_bytes: u32,
    /// flush.ms: longest time appended data stays un-synced (default 1000 ms; Kafka's
    /// default is "never", but this store acknowledges acks=1/0 before fsync, so it bounds
    /// their exposure to one second).
    pub flush_ms: u64,
    /// flush.messages: fdatasync once this many messages are un-synced (default u64::MAX = off).
    pub flush_messages: u64,
    /// message.timestamp.type=LogAppendTime: every appended batch is stamped with the
    /// broker's clock (timestamp-type bit, maxTimestamp, CRC rewritten), as Kafka does.
    pub log_append_time: bool,
    /// cleanup.policy contains `delete`: retention.ms / retention.bytes delete old segments.
    pub cleanup_delete: bool,
    /// cleanup.policy contains `compact`: the shard's log cleaner keeps the latest record
    /// per key in sealed segments, and appends of records without a key are refused.
    pub cleanup_compact: bool,
    /// min.cleanable.dirty.ratio: clean once dirty bytes / cleanable bytes reach it.
    pub min_cleanable_dirty_ratio: f64,
    /// min.compaction.lag.ms: a segment whose newest timestamp is younger is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// max.compaction.lag.ms: dirty data older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// delete.retention.ms: tombstones (null values) stay this long after the cleaning that
    /// first kept them, which stamps their batch with that delete horizon (KIP-534); a
    /// later change does not move a stamped horizon.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_ms: 1000,
            flush_messages: u64::MAX,
            log_append_time: false,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// How long an append waits before returning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// acks=all: after the data is written and fdatasync'ed (group commit).
    #[default]
    Fsync,
    /// acks=1: after the DMA write completed (in the device, not yet synced).
    Written,
    /// acks=0: as soon as the data is in memory and queued for writing.
    None,
}
