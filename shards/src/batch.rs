//! Record batch v2 header parsing and validation: pure functions, no I/O, no runtime.
//!
//! Runs on any core (the broker may validate on the connection's core before handing a
//! produce to the owning shard; the shard validates again on append). Layout (Kafka record
//! batch v2, 61-byte header): baseOffset i64, batchLength i32, partitionLeaderEpoch i32,
//! magic i8 (= 2), crc u32 (CRC32C over attributes..end), attributes i16,
//! lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64, producerId i64,
//! producerEpoch i16, baseSequence i32, recordCount i32, then the records.
//! All integers big-endian. The CRC does not cover baseOffset, batchLength,
//! partitionLeaderEpoch or magic, so the broker rewrites baseOffset without recomputing it.

use std::fmt;

/// Size of the fixed record batch v2 header, bytes.
pub const BATCH_HEADER_BYTES: usize = 61;
/// baseOffset (8) + batchLength (4): the part of a batch not counted in batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Offset of the magic byte inside a batch.
pub const MAGIC_OFFSET: usize = 16;
/// Offset of the CRC field inside a batch.
pub const CRC_OFFSET: usize = 17;
/// Offset of the attributes field: the CRC covers from here to the end of the batch.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// The only record batch format this store accepts.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal batchLength: the header after the log overhead.
pub const BATCH_LENGTH_MIN_BYTES: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// Upper bound for any single batch this code will ever parse, whatever the topic config
/// says: protects readers of corrupt files from allocating on a garbage length.
pub const BATCH_HARD_MAX_BYTES: usize = 64 << 20;

const _: () = assert!(ATTRIBUTES_OFFSET == CRC_OFFSET + 4);
const _: () = assert!(BATCH_HEADER_BYTES == 61);

/// Why a batch (or a concatenation of batches) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, or than batchLength says.
    Truncated {
        at: usize,
        needed: usize,
        available: usize,
    },
    /// batchLength smaller than the header or larger than the hard bound.
    BadLength { at: usize, batch_length: i32 },
    /// magic is not 2.
    BadMagic { at: usize, magic: i8 },
    /// Stored CRC does not match the CRC32C of attributes..end.
    CrcMismatch {
        at: usize,
        stored: u32,
        computed: u32,
    },
    /// recordCount negative, zero where records are required, or inconsistent with lastOffsetDelta.
    InvalidRecordCount {
        at: usize,
        record_count: i32,
        last_offset_delta: i32,
    },
    /// One batch larger than max.message.bytes.
    TooLarge {
        at: usize,
        size_bytes: usize,
        max_bytes: usize,
    },
    /// The buffer holds no batch at all.
    Empty,
}

impl BatchError {
    /// True for errors that mean the bytes are damaged (Kafka CORRUPT_MESSAGE).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::Truncated { .. }
                | BatchError::BadLength { .. }
                | BatchError::BadMagic { .. }
                | BatchError::CrcMismatch { .. }
                | BatchError::Empty
        )
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated {
                at,
                needed,
                available,
            } => write!(
                f,
                "batch at byte {at} truncated: needs {needed} bytes, {available} available"
            ),
            BatchError::BadLength { at, batch_length } => {
                write!(
                    f,
                    "batch at byte {at} has invalid batchLength {batch_length}"
                )
            }
            BatchError::BadMagic { at, magic } => {
                write!(
                    f,
                    "batch at byte {at} has magic {magic}, only 2 is supported"
                )
            }
            BatchError::CrcMismatch {
                at,
                stored,
                computed,
            } => write!(
                f,
                "batch at byte {at} fails CRC32C: stored {stored:#010x}, computed {computed:#010x}"
            ),
            BatchError::InvalidRecordCount {
                at,
                record_count,
                last_offset_delta,
            } => write!(
                f,
                "batch at byte {at}: recordCount {record_count} inconsistent with lastOffsetDelta {last_offset_delta}"
            ),
            BatchError::TooLarge {
                at,
                size_bytes,
                max_bytes,
            } => write!(
                f,
                "batch at byte {at} is {size_bytes} bytes, more than max.message.bytes {max_bytes}"
            ),
            BatchError::Empty => write!(f, "no record batch in buffer"),
        }
    }
}

impl std::error::Error for BatchError {}

/// The decoded fixed header of one record batch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Whole size of the batch on the wire and on disk, bytes.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }
    /// Offset of the last record (baseOffset + lastOffsetDelta).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// Sequence number of the last record, wrapping at i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
    /// Compression codec (attributes bits 0-2).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }
    /// Transactional flag (attributes bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    /// Control batch flag (attributes bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// The delete horizon (ms since the epoch) the log cleaner stamped on the batch: its
    /// baseTimestamp when attributes bit 6 is set (Kafka's `RecordBatch.deleteHorizonMs`).
    /// The records' timestamp deltas are then relative to it, so their timestamps stay
    /// right.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
    /// True if the batch comes from an idempotent producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the fixed header at the start of `buf`. Checks: enough bytes for a header, magic 2,
/// batchLength within [49, BATCH_HARD_MAX_BYTES]. Does not check the CRC nor that the whole
/// batch is present.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    parse_header_at(buf, 0)
}

fn parse_header_at(buf: &[u8], at: usize) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            at,
            needed: BATCH_HEADER_BYTES,
            available: buf.len(),
        });
    }
    let batch_length = be_i32(buf, 8);
    if batch_length < BATCH_LENGTH_MIN_BYTES
        || batch_length as usize > BATCH_HARD_MAX_BYTES - LOG_OVERHEAD_BYTES
    {
        return Err(BatchError::BadLength { at, batch_length });
    }
    let magic = buf[MAGIC_OFFSET] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic { at, magic });
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length,
        partition_leader_epoch: be_i32(buf, 12),
        magic,
        crc: be_i32(buf, CRC_OFFSET) as u32,
        attributes: be_i16(buf, ATTRIBUTES_OFFSET),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    })
}

/// Attributes bit of a transactional batch (Kafka's isTransactional).
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attributes bit of a control batch (commit/abort markers).
pub const ATTR_CONTROL: i16 = 0x20;
/// Delete-horizon flag (attributes bit 6, KIP-534 hasDeleteHorizonMs): set by the log
/// cleaner on a batch whose kept tombstones it will remove once the batch's base
/// timestamp, then the delete horizon, has passed.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;
/// Offset of the baseTimestamp field inside a batch.
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Control record types (the key's second field): Kafka's ControlRecordType.
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

/// Reads a zig-zag varint at `at`; (value, bytes used).
fn get_varint(b: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(at + i)?;
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// The control record type (CONTROL_ABORT, CONTROL_COMMIT, ...) of a control batch: the
/// second i16 of its first record's key. None for other batches, a compressed control
/// batch (Kafka never compresses them) or bytes that do not hold a whole first record.
pub fn control_type(batch: &[u8]) -> Option<i16> {
    let h = parse_header(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || h.record_count < 1 {
        return None;
    }
    let mut at = BATCH_HEADER_BYTES;
    let (_len, n) = get_varint(batch, at)?;
    at += n + 1; // record length, attributes
    let (_, n) = get_varint(batch, at)?; // timestamp delta
    at += n;
    let (_, n) = get_varint(batch, at)?; // offset delta
    at += n;
    let (key_len, n) = get_varint(batch, at)?;
    at += n;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

/// A control batch of one marker record (Kafka's EndTransactionMarker): key = version 0 +
/// type, value = version 0 + coordinator epoch; transactional and control attributes set,
/// base sequence -1, baseOffset 0 (the log assigns it).
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    control: i16,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut rec = Vec::with_capacity(24);
    rec.push(0); // attributes
    rec.push(0); // timestamp delta 0
    rec.push(0); // offset delta 0
    rec.push(8); // key length 4 (zig-zag)
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&control.to_be_bytes());
    rec.push(12); // value length 6 (zig-zag)
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&coordinator_epoch.to_be_bytes());
    rec.push(0); // no headers
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + rec.len() + 1);
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + rec.len() + 1) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.push((rec.len() as u8) << 1); // record length (zig-zag, < 64)
    b.extend_from_slice(&rec);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// CRC32C of a whole batch's covered range (attributes..end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks that `batch` (exactly one whole batch) carries a correct CRC.
pub fn verify_crc(batch: &[u8], header: &BatchHeader, at: usize) -> Result<(), BatchError> {
    debug_assert_eq!(batch.len(), header.total_bytes());
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            at,
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Parses and fully checks the batch at the start of `buf` (header, length vs buffer, CRC,
/// record count). Returns the header; the batch occupies `header.total_bytes()` bytes.
pub fn check_one(buf: &[u8], at: usize) -> Result<BatchHeader, BatchError> {
    let h = parse_header_at(buf, at)?;
    let total = h.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            at,
            needed: total,
            available: buf.len(),
        });
    }
    verify_crc(&buf[..total], &h, at)?;
    // A stored batch may hold fewer records than its offset span, or none: the log cleaner
    // keeps a batch's base offset and lastOffsetDelta when it removes records from it (as
    // Kafka's cleaner). A produced batch must be dense (`validate_each`).
    if h.record_count < 0
        || h.last_offset_delta < 0
        || i64::from(h.record_count) > i64::from(h.last_offset_delta) + 1
    {
        return Err(BatchError::InvalidRecordCount {
            at,
            record_count: h.record_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    Ok(h)
}

/// One validated batch inside a produce buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatch {
    /// Byte position of the batch inside the buffer.
    pub position: usize,
    pub header: BatchHeader,
}

/// Validates every batch of `buf` (one or more concatenated record batches v2, as found in a
/// Produce request's records field): header, batchLength vs buffer, CRC32C, record count >= 1
/// and consistent with lastOffsetDelta, size vs `max_message_bytes`. The buffer must end
/// exactly at a batch boundary. Calls `each` for every batch, in order, and returns the count.
pub fn validate_each(
    buf: &[u8],
    max_message_bytes: usize,
    each: impl FnMut(ValidatedBatch),
) -> Result<usize, BatchError> {
    validate_each_with(buf, max_message_bytes, true, each)
}

/// [`validate_each`] for batches copied from a leader's log (replication): these may be
/// cleaned batches of a compacted log, with fewer records than their offset span or none.
pub fn validate_each_stored(
    buf: &[u8],
    max_message_bytes: usize,
    each: impl FnMut(ValidatedBatch),
) -> Result<usize, BatchError> {
    validate_each_with(buf, max_message_bytes, false, each)
}

fn validate_each_with(
    buf: &[u8],
    max_message_bytes: usize,
    produced: bool,
    mut each: impl FnMut(ValidatedBatch),
) -> Result<usize, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut pos = 0usize;
    let mut count = 0usize;
    while pos < buf.len() {
        let h = check_one(&buf[pos..], pos)?;
        let total = h.total_bytes();
        if total > max_message_bytes {
            return Err(BatchError::TooLarge {
                at: pos,
                size_bytes: total,
                max_bytes: max_message_bytes,
            });
        }
        if produced && (h.record_count == 0 || h.last_offset_delta != h.record_count - 1) {
            // A produced batch must carry records, one per offset: offsets are assigned
            // per record.
            return Err(BatchError::InvalidRecordCount {
                at: pos,
                record_count: h.record_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        each(ValidatedBatch {
            position: pos,
            header: h,
        });
        count += 1;
        pos += total;
    }
    debug_assert_eq!(pos, buf.len());
    Ok(count)
}

/// Validates every batch of `buf` and returns them (see [`validate_each`]).
pub fn validate(buf: &[u8], max_message_bytes: usize) -> Result<Vec<ValidatedBatch>, BatchError> {
    let mut out = Vec::new();
    validate_each(buf, max_message_bytes, |b| out.push(b))?;
    Ok(out)
}

/// Rewrites baseOffset of the batch starting at `batch[0]` (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Offset of partitionLeaderEpoch in a batch (before magic; not covered by the CRC).
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;

/// Rewrites partitionLeaderEpoch of the batch starting at `batch[0]` (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Timestamp type flag (attributes bit 3): set for LogAppendTime batches, whose records all
/// carry the batch's maxTimestamp (the broker's append time) whatever their own deltas say.
pub const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;
/// Offset of the maxTimestamp field inside a batch.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;

impl BatchHeader {
    /// True for a LogAppendTime batch (attributes bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0
    }
}

/// Stamps a whole batch with the broker's append time, as Kafka does for topics with
/// `message.timestamp.type=LogAppendTime`: sets the timestamp-type bit, writes `now_ms` as
/// maxTimestamp and recomputes the CRC (both fields are covered by it). The records are
/// untouched: readers take every record's timestamp from maxTimestamp.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    debug_assert!(batch.len() >= BATCH_HEADER_BYTES);
    let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND_TIME;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a zigzag varint (up to 64 bits) at `*pos`, advancing it. None if truncated or longer
/// than 10 bytes.
fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Appends `v` as a zigzag varint (up to 10 bytes).
fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Re-encodes `count` records (back to back, uncompressed, as `RecordView::bytes`) of a
/// batch whose base timestamp was `old_base` for a batch whose base timestamp is
/// `new_base`: each timestamp delta becomes `old_base + delta - new_base` (so every
/// record keeps its timestamp) and its length prefix follows. Kafka's MemoryRecordsBuilder
/// does the same when the cleaner sets a delete horizon. Appends to `out`.
pub fn rebase_records(
    records: &[u8],
    count: usize,
    old_base: i64,
    new_base: i64,
    out: &mut Vec<u8>,
) -> Result<(), RecordsError> {
    let bad = |what: &str, i: usize| RecordsError(format!("record {i}: {what} (rebase)"));
    let mut pos = 0usize;
    for i in 0..count {
        let len = read_varlong(records, &mut pos).ok_or_else(|| bad("bad length", i))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len() && e > pos)
            .ok_or_else(|| bad("length beyond the records", i))?;
        let attributes = records[pos];
        let mut p = pos + 1;
        let delta =
            read_varlong(&records[..end], &mut p).ok_or_else(|| bad("bad timestamp delta", i))?;
        let rest = &records[p..end];
        let new_delta = old_base.wrapping_add(delta).wrapping_sub(new_base);
        let mut head = Vec::with_capacity(11);
        head.push(attributes);
        write_varlong(&mut head, new_delta);
        write_varlong(out, (head.len() + rest.len()) as i64);
        out.extend_from_slice(&head);
        out.extend_from_slice(rest);
        pos = end;
    }
    if pos != records.len() {
        return Err(bad("bytes after the last record", count));
    }
    Ok(())
}

/// Why the records of a batch could not be walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsError(pub String);

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordsError {}

/// One record of a batch, as `walk_records` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The whole record as stored (its length varint included): copied verbatim when a
    /// batch is rebuilt with the same base offset and base timestamp.
    pub bytes: &'a [u8],
    pub offset: i64,
    pub timestamp: i64,
    /// None for a record without a key (key length -1).
    pub key: Option<&'a [u8]>,
    /// None for a tombstone (value length -1).
    pub value: Option<&'a [u8]>,
    /// A tombstone: value length -1.
    pub tombstone: bool,
}

/// Walks every record of an uncompressed records section (`records`: the batch after its
/// header, or a compressed batch's records once decompressed), checking each record's
/// framing against the batch. Bad framing is an error, never a panic.
pub fn walk_records<'a>(
    h: &BatchHeader,
    records: &'a [u8],
    mut each: impl FnMut(RecordView<'a>),
) -> Result<(), RecordsError> {
    let bad = |what: &str, i: i32| {
        RecordsError(format!(
            "batch at offset {}: record {i}: {what}",
            h.base_offset
        ))
    };
    let mut pos = 0usize;
    for i in 0..h.record_count.max(0) {
        let start = pos;
        let len = read_varlong(records, &mut pos).ok_or_else(|| bad("bad length", i))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(|| bad("length beyond the batch", i))?;
        let body = &records[..end];
        let mut p = pos + 1; // attributes
        let ts_delta = read_varlong(body, &mut p).ok_or_else(|| bad("bad timestamp delta", i))?;
        let offset_delta = read_varlong(body, &mut p).ok_or_else(|| bad("bad offset delta", i))?;
        let key_len = read_varlong(body, &mut p).ok_or_else(|| bad("bad key length", i))?;
        let key = if key_len < 0 {
            None
        } else {
            let k_end = usize::try_from(key_len)
                .ok()
                .and_then(|l| p.checked_add(l))
                .filter(|&e| e <= end)
                .ok_or_else(|| bad("key beyond the record", i))?;
            let k = &body[p..k_end];
            p = k_end;
            Some(k)
        };
        let value_len = read_varlong(body, &mut p).ok_or_else(|| bad("bad value length", i))?;
        let value = if value_len < 0 {
            None
        } else {
            let v_end = usize::try_from(value_len)
                .ok()
                .and_then(|l| p.checked_add(l))
                .filter(|&e| e <= end)
                .ok_or_else(|| bad("value beyond the record", i))?;
            Some(&body[p..v_end])
        };
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(ts_delta)
        };
        each(RecordView {
            bytes: &records[start..end],
            offset: h.base_offset.wrapping_add(offset_delta),
            timestamp,
            key,
            value,
            tombstone: value_len < 0,
        });
        pos = end;
    }
    Ok(())
}

/// Rebuilds a batch with a subset of its records, as Kafka's cleaner does: same base
/// offset, lastOffsetDelta, producer fields and partitionLeaderEpoch (so the log end and
/// the records' offsets stay as they were); record count, batch length and CRC new;
/// maxTimestamp the largest kept record timestamp (kept as it is on LogAppendTime
/// batches). `records`: the kept records back to back (`RecordView::bytes`, or
/// `rebase_records` output when a horizon is newly set), compressed with `codec`
/// (attributes bits 0-2; 0: none). `delete_horizon`: Some(ms) sets attributes bit 6 and
/// the base timestamp to it (the records' deltas must be relative to it); None keeps
/// the original's bit and base timestamp.
pub fn rebuild_batch(
    original_header: &[u8],
    h: &BatchHeader,
    records: &[u8],
    count: i32,
    max_timestamp: i64,
    codec: u8,
    delete_horizon: Option<i64>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&original_header[..BATCH_HEADER_BYTES]);
    b.extend_from_slice(records);
    let batch_length = (b.len() - LOG_OVERHEAD_BYTES) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let mut attributes = (h.attributes & !0x7) | i16::from(codec & 0x7);
    if let Some(horizon) = delete_horizon {
        attributes |= ATTR_DELETE_HORIZON;
        b[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8].copy_from_slice(&horizon.to_be_bytes());
    }
    b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    if !h.is_log_append_time() {
        b[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_timestamp.to_be_bytes());
    }
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Walks the records of one batch and returns (offset, timestamp) of the first record whose
/// timestamp is >= `ts` and whose offset is >= `min_offset` (Kafka's
/// `LogSegment.findOffsetByTimestamp`). `records` is the batch's records section, already
/// decompressed when the batch is compressed (for an uncompressed batch:
/// `&batch[BATCH_HEADER_BYTES..]`). In a LogAppendTime batch every record's timestamp is the
/// batch's maxTimestamp. Only the timestamp and offset deltas are decoded; keys, values and
/// headers are skipped by the record length.
pub fn find_record_at_or_after(
    h: &BatchHeader,
    records: &[u8],
    ts: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RecordsError> {
    let bad = |what: &str, i: i32| {
        RecordsError(format!(
            "batch at offset {}: record {i}: {what}",
            h.base_offset
        ))
    };
    let mut pos = 0usize;
    for i in 0..h.record_count.max(0) {
        let len = read_varlong(records, &mut pos).ok_or_else(|| bad("bad length", i))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(|| bad("length beyond the batch", i))?;
        let body = &records[..end];
        let mut p = pos + 1; // attributes
        let ts_delta = read_varlong(body, &mut p).ok_or_else(|| bad("bad timestamp delta", i))?;
        let offset_delta = read_varlong(body, &mut p).ok_or_else(|| bad("bad offset delta", i))?;
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(ts_delta)
        };
        let offset = h.base_offset.wrapping_add(offset_delta);
        if timestamp >= ts && offset >= min_offset {
            return Ok(Some((offset, timestamp)));
        }
        pos = end;
    }
    Ok(None)
}

/// Builders of well-formed batches, for tests and benches (not used on the data path).
pub mod build {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// One record of `keyed_batch`: (key, value).
    pub type KeyedRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// A batch of keyed records (key None: no key; value None: a tombstone), record i at
    /// offset delta i and timestamp `base_timestamp + i`, no producer id.
    pub fn keyed_batch(records: &[KeyedRecord<'_>], base_timestamp: i64) -> Vec<u8> {
        assert!(!records.is_empty());
        let mut body = Vec::new();
        for (i, (k, v)) in records.iter().enumerate() {
            let mut rec = Vec::new();
            rec.push(0); // attributes
            put_varint(&mut rec, i as i64); // timestamp delta
            put_varint(&mut rec, i as i64); // offset delta
            for part in [k, v] {
                match part {
                    Some(b) => {
                        put_varint(&mut rec, b.len() as i64);
                        rec.extend_from_slice(b);
                    }
                    None => put_varint(&mut rec, -1),
                }
            }
            put_varint(&mut rec, 0); // headers
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let n = records.len();
        let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&((n - 1) as i32).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&(base_timestamp + n as i64 - 1).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(n as i32).to_be_bytes());
        b.extend_from_slice(&body);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Producer identity of a built batch.
    #[derive(Debug, Clone, Copy)]
    pub struct ProducerFields {
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
    }

    impl ProducerFields {
        /// A non-idempotent producer.
        pub const NONE: ProducerFields = ProducerFields {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
    }

    /// Builds an uncompressed batch of `records` records each with a `value_bytes`-byte value
    /// (filled with `fill`), timestamps starting at `base_timestamp` (1 ms apart).
    pub fn batch(
        records: usize,
        value_bytes: usize,
        base_timestamp: i64,
        producer: ProducerFields,
        fill: u8,
    ) -> Vec<u8> {
        assert!(records >= 1);
        let mut body = Vec::with_capacity(records * (value_bytes + 16));
        let value = vec![fill; value_bytes];
        for i in 0..records {
            let mut rec = Vec::with_capacity(value_bytes + 16);
            rec.push(0); // attributes
            put_varint(&mut rec, i as i64); // timestamp delta
            put_varint(&mut rec, i as i64); // offset delta
            put_varint(&mut rec, -1); // key: null
            put_varint(&mut rec, value_bytes as i64);
            rec.extend_from_slice(&value);
            put_varint(&mut rec, 0); // headers
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&((records - 1) as i32).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&(base_timestamp + records as i64 - 1).to_be_bytes());
        b.extend_from_slice(&producer.producer_id.to_be_bytes());
        b.extend_from_slice(&producer.producer_epoch.to_be_bytes());
        b.extend_from_slice(&producer.base_sequence.to_be_bytes());
        b.extend_from_slice(&(records as i32).to_be_bytes());
        b.extend_from_slice(&body);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::build::{ProducerFields, batch};
    use super::*;
    use proptest::prelude::*;

    // Proves a delete horizon keeps every record's timestamp: records rebased from base
    // timestamp 1000 onto a horizon far after it (negative deltas, longer varints) and
    // rebuilt with the horizon carry attributes bit 6 and base timestamp = horizon, pass
    // the CRC check, and walk back to the same offsets, keys, values and timestamps; a
    // tombstone among them stays one. A rebuild without a horizon keeps the original's.
    #[test]
    fn delete_horizon_rebase_keeps_timestamps() {
        let recs: Vec<build::KeyedRecord<'_>> = vec![
            (Some(b"a"), Some(b"1")),
            (Some(b"b"), None),
            (Some(b"c"), Some(b"333")),
        ];
        let b = build::keyed_batch(&recs, 1000);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.delete_horizon_ms(), None);
        let mut before = Vec::new();
        walk_records(&h, &b[BATCH_HEADER_BYTES..], |r| {
            before.push((r.offset, r.timestamp, r.key, r.value, r.tombstone));
        })
        .unwrap();
        let horizon = 1_700_000_000_000i64;
        let mut rebased = Vec::new();
        rebase_records(&b[BATCH_HEADER_BYTES..], 3, 1000, horizon, &mut rebased).unwrap();
        assert!(
            rebased.len() > b.len() - BATCH_HEADER_BYTES,
            "deltas got longer"
        );
        let nb = rebuild_batch(&b, &h, &rebased, 3, h.max_timestamp, 0, Some(horizon));
        let nh = check_one(&nb, 0).unwrap();
        assert_eq!(nh.delete_horizon_ms(), Some(horizon));
        assert_eq!(nh.attributes & ATTR_DELETE_HORIZON, ATTR_DELETE_HORIZON);
        assert_eq!(nh.max_timestamp, h.max_timestamp);
        let mut after = Vec::new();
        walk_records(&nh, &nb[BATCH_HEADER_BYTES..], |r| {
            after.push((r.offset, r.timestamp, r.key, r.value, r.tombstone));
        })
        .unwrap();
        assert_eq!(after, before);
        // Without a horizon a rebuild keeps the stamped one.
        let again = rebuild_batch(
            &nb,
            &nh,
            &nb[BATCH_HEADER_BYTES..],
            3,
            nh.max_timestamp,
            0,
            None,
        );
        assert_eq!(
            check_one(&again, 0).unwrap().delete_horizon_ms(),
            Some(horizon)
        );
        // Framing errors are errors, not panics.
        assert!(
            rebase_records(
                &rebased[..rebased.len() - 1],
                3,
                horizon,
                0,
                &mut Vec::new()
            )
            .is_err()
        );
        assert!(rebase_records(&rebased, 2, horizon, 0, &mut Vec::new()).is_err());
    }

    // Proves a built batch parses back to the fields written and passes validation.
    #[test]
    fn built_batch_round_trips() {
        let b = batch(
            3,
            10,
            1000,
            ProducerFields {
                producer_id: 7,
                producer_epoch: 2,
                base_sequence: 5,
            },
            1,
        );
        let v = validate(&b, 1 << 20).unwrap();
        assert_eq!(v.len(), 1);
        let h = v[0].header;
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.last_sequence(), 7);
        assert_eq!(h.total_bytes(), b.len());
    }

    // Proves the record walk answers the first record at or after a timestamp (and at or
    // after the log start), LogAppendTime batches answer their maxTimestamp, stamping keeps
    // the CRC valid, and damaged records are an error, not a panic.
    #[test]
    fn record_walk_and_log_append_time() {
        let mut b = batch(4, 3, 1000, ProducerFields::NONE, 1);
        set_base_offset(&mut b, 10);
        let h = check_one(&b, 0).unwrap();
        let recs = &b[BATCH_HEADER_BYTES..];
        assert_eq!(
            find_record_at_or_after(&h, recs, 0, 0),
            Ok(Some((10, 1000)))
        );
        assert_eq!(
            find_record_at_or_after(&h, recs, 1002, 0),
            Ok(Some((12, 1002)))
        );
        assert_eq!(
            find_record_at_or_after(&h, recs, 1001, 13),
            Ok(Some((13, 1003)))
        );
        assert_eq!(find_record_at_or_after(&h, recs, 1004, 0), Ok(None));
        assert!(find_record_at_or_after(&h, &recs[..recs.len() - 2], 1003, 0).is_err());
        assert!(find_record_at_or_after(&h, &[0xff; 12], 0, 0).is_err());

        stamp_log_append_time(&mut b, 5000);
        let h = check_one(&b, 0).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5000);
        assert_eq!(h.base_timestamp, 1000);
        let recs = &b[BATCH_HEADER_BYTES..];
        assert_eq!(
            find_record_at_or_after(&h, recs, 4000, 0),
            Ok(Some((10, 5000)))
        );
        assert_eq!(find_record_at_or_after(&h, recs, 5001, 0), Ok(None));
    }

    // Proves that rewriting baseOffset keeps the CRC valid, since the CRC starts at attributes.
    #[test]
    fn base_offset_rewrite_keeps_crc() {
        let mut b = batch(2, 5, 0, ProducerFields::NONE, 2);
        set_base_offset(&mut b, 123_456);
        let h = check_one(&b, 0).unwrap();
        assert_eq!(h.base_offset, 123_456);
    }

    // Proves each class of damage maps to its own error.
    #[test]
    fn rejects_each_kind_of_damage() {
        let b = batch(2, 5, 0, ProducerFields::NONE, 2);
        let mut m = b.clone();
        m[MAGIC_OFFSET] = 1;
        assert!(matches!(
            validate(&m, 1 << 20),
            Err(BatchError::BadMagic { .. })
        ));
        let mut c = b.clone();
        let last = c.len() - 1;
        c[last] ^= 0x40;
        assert!(matches!(
            validate(&c, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
        assert!(matches!(validate(&[], 10), Err(BatchError::Empty)));
        let mut l = b.clone();
        l[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            validate(&l, 1 << 20),
            Err(BatchError::BadLength { .. })
        ));
        // recordCount inconsistent with lastOffsetDelta (CRC recomputed so only that is wrong).
        let mut r = b.clone();
        r[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&r);
        r[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&r, 1 << 20),
            Err(BatchError::InvalidRecordCount { .. })
        ));
    }

    // Proves sequence numbers wrap at i32::MAX like Kafka's.
    #[test]
    fn last_sequence_wraps() {
        let b = batch(
            3,
            1,
            0,
            ProducerFields {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence: i32::MAX - 1,
            },
            0,
        );
        assert_eq!(parse_header(&b).unwrap().last_sequence(), 0);
    }

    proptest! {
        // Proves validation never panics on arbitrary bytes and accepts only CRC-correct input.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = validate(&data, 1 << 20) {
                for b in v {
                    let end = b.position + b.header.total_bytes();
                    prop_assert_eq!(compute_crc(&data[b.position..end]), b.header.crc);
                }
            }
        }

        // Proves concatenations of valid batches validate and are split at the right places,
        // and that any single flipped bit in the covered range is detected.
        #[test]
        fn concatenations_split_and_flips_detected(
            sizes in proptest::collection::vec((1usize..5, 0usize..40), 1..5),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = Vec::new();
            let mut starts = Vec::new();
            for (i, (n, v)) in sizes.iter().enumerate() {
                starts.push(buf.len());
                buf.extend(batch(*n, *v, i as i64, ProducerFields::NONE, i as u8));
            }
            let v = validate(&buf, 1 << 20).unwrap();
            prop_assert_eq!(v.iter().map(|b| b.position).collect::<Vec<_>>(), starts.clone());
            // Flip one bit somewhere in a CRC-covered range.
            let b0 = v[0].header;
            let covered = b0.total_bytes() - ATTRIBUTES_OFFSET;
            let at = ATTRIBUTES_OFFSET + flip.index(covered);
            let mut damaged = buf.clone();
            damaged[at] ^= 1 << bit;
            prop_assert!(validate(&damaged, 1 << 20).is_err());
        }
    }
}

#[cfg(test)]
mod control_tests {
    use super::*;

    // Proves a built marker is a valid v2 batch (CRC, lengths, one record) whose control
    // type reads back, and that data batches have none.
    #[test]
    fn control_batches_round_trip() {
        for (kind, coord_epoch) in [(CONTROL_COMMIT, 7), (CONTROL_ABORT, 0)] {
            let b = control_batch(42, 3, kind, coord_epoch, 1_700_000_000_000);
            let v = validate(&b, 1 << 20).unwrap();
            assert_eq!(v.len(), 1);
            let h = v[0].header;
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!((h.record_count, h.last_offset_delta), (1, 0));
            assert_eq!(control_type(&b), Some(kind));
        }
        let data = build::batch(2, 10, 0, build::ProducerFields::NONE, 1);
        assert_eq!(control_type(&data), None);
        assert_eq!(control_type(&[0u8; 3]), None);
    }
}
