//! The records of `__consumer_offsets` and the reader of the offsets osprey kept before
//! that topic existed.
//!
//! Runs on: the shard leading an offsets partition (encode on commit, decode on load).
//! - Each OffsetCommit / group deletion / OffsetDelete is one record batch v2 whose single
//!   record's value is an rkyv-encoded [`LogEntry`] (`encode_batch`, `decode_batches`).
//! - Before the topic, each shard kept `<data_dir>/groups/shard-<id>/`: `log-<generation>/`
//!   logs of the same records plus `offsets.snapshot` ([`Snapshot`], the state up to log
//!   generation `log_gen`). `read_snapshot`, `list_log_gens` and `list_shard_dirs` read
//!   them once for the import into the topic; `write_snapshot` remains for tests that build
//!   such a directory.
//!
//! Every record carries a `stamp` = (epoch << 40) | sequence, increasing within a group's
//! history across leaders and restarts: replaying keeps, per partition, the value with the
//! highest stamp, and a tombstone removes whatever is older than it.

use std::path::{Path, PathBuf};

use bytes::Bytes;

pub const SNAPSHOT_FILE: &str = "offsets.snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"OSPYOFFS";
const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// magic(8) + format(4) + crc32c(4) + payload length(8)
const SNAPSHOT_HEADER_BYTES: usize = 24;
/// Bits of a stamp that hold the per-run sequence.
pub const STAMP_SEQ_BITS: u32 = 40;

/// One committed offset, as stored and as served.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
    pub stamp: u64,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OffsetEntry {
    pub topic: String,
    pub partition: i32,
    pub value: CommittedOffset,
}

/// One record of the offsets log.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum LogEntry {
    Commit {
        group: String,
        offsets: Vec<OffsetEntry>,
    },
    /// DeleteGroups or retention expiry: every offset of the group older than `stamp` goes.
    Tombstone { group: String, stamp: u64 },
    /// OffsetDelete. Added after the variants above and boxed, so the archived enum keeps
    /// its tags and its size and logs written before it decode unchanged.
    PartitionTombstones(Box<PartitionTombstones>),
    /// TxnOffsetCommit: offsets held for a transaction until its marker (added later,
    /// boxed, as above).
    TxnOffsets(Box<TxnOffsets>),
    /// The transaction's marker reached this offsets partition: its held offsets are
    /// committed (with `stamp`) or dropped.
    TxnMarker(Box<TxnMarker>),
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TxnOffsets {
    pub group: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub offsets: Vec<OffsetEntry>,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub commit: bool,
    pub stamp: u64,
}

/// OffsetDelete: these partitions' offsets older than `stamp` go.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionTombstones {
    pub group: String,
    pub partitions: Vec<(String, i32)>,
    pub stamp: u64,
}

/// A group's stored offsets (snapshot content; also what shards hand each other when the
/// shard count changed).
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupOffsets {
    pub group: String,
    pub deleted_stamp: u64,
    pub offsets: Vec<OffsetEntry>,
}

impl GroupOffsets {
    pub fn max_stamp(&self) -> u64 {
        self.offsets
            .iter()
            .map(|o| o.value.stamp)
            .max()
            .unwrap_or(0)
            .max(self.deleted_stamp)
    }
}

#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    /// The snapshot covers every log generation below this one.
    pub log_gen: u64,
    pub groups: Vec<GroupOffsets>,
}

#[derive(Debug)]
pub struct OffsetsError(pub String);

impl std::fmt::Display for OffsetsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OffsetsError {}

pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join("groups").join(format!("shard-{shard}"))
}

pub fn log_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:020}"))
}

/// Log generations present in a shard directory, ascending.
pub fn list_log_gens(dir: &Path) -> Result<Vec<u64>, OffsetsError> {
    let mut gens = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(gens),
        Err(e) => return Err(OffsetsError(format!("list {}: {e}", dir.display()))),
    };
    for e in entries {
        let e = e.map_err(|e| OffsetsError(format!("list {}: {e}", dir.display())))?;
        if let Some(g) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("log-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Shard directories `groups/shard-<k>` present under the data dir.
pub fn list_shard_dirs(data_dir: &Path) -> Result<Vec<usize>, OffsetsError> {
    let root = data_dir.join("groups");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(OffsetsError(format!("list {}: {e}", root.display()))),
    };
    for e in entries {
        let e = e.map_err(|e| OffsetsError(format!("list {}: {e}", root.display())))?;
        if let Some(k) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            out.push(k);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One log entry as a record batch v2 (one record, value = rkyv bytes).
pub fn encode_batch(entry: &LogEntry) -> Result<Bytes, OffsetsError> {
    let value = rkyv::to_bytes::<rkyv::rancor::Error>(entry)
        .map_err(|e| OffsetsError(format!("serialise offsets entry: {e}")))?;
    crate::internal_topic::encode_value(&value).map_err(OffsetsError)
}

/// The log entries of whole stored batches (as `Partition::read` returns them).
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<LogEntry>, OffsetsError> {
    let mut out = Vec::new();
    for v in crate::internal_topic::decode_values(bytes).map_err(OffsetsError)? {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(v.len());
        aligned.extend_from_slice(&v);
        let entry = rkyv::from_bytes::<LogEntry, rkyv::rancor::Error>(&aligned)
            .map_err(|e| OffsetsError(format!("decode offsets entry: {e}")))?;
        out.push(entry);
    }
    Ok(out)
}

pub fn encode_snapshot(s: &Snapshot) -> Result<Vec<u8>, OffsetsError> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(s)
        .map_err(|e| OffsetsError(format!("serialise offsets snapshot: {e}")))?;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, OffsetsError> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(OffsetsError("not an osprey offsets snapshot".into()));
    }
    let word = |r: std::ops::Range<usize>| -> [u8; 4] { bytes[r].try_into().unwrap_or_default() };
    let format = u32::from_le_bytes(word(8..12));
    if format != SNAPSHOT_FORMAT_VERSION {
        return Err(OffsetsError(format!(
            "unknown offsets snapshot format {format}"
        )));
    }
    let crc = u32::from_le_bytes(word(12..16));
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default()) as usize;
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if payload.len() != len || crc32c::crc32c(payload) != crc {
        return Err(OffsetsError(
            "offsets snapshot length or checksum mismatch".into(),
        ));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned)
        .map_err(|e| OffsetsError(format!("decode offsets snapshot: {e}")))
}

/// Reads a shard directory's snapshot; `None` when there is none yet.
pub fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, OffsetsError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => decode_snapshot(&b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OffsetsError(format!(
            "read {}: {e}",
            dir.join(SNAPSHOT_FILE).display()
        ))),
    }
}

/// Writes the snapshot atomically (`durable::write_atomic`). Blocking: run it on a
/// blocking thread.
pub fn write_snapshot(dir: &Path, bytes: &[u8]) -> Result<(), OffsetsError> {
    crate::durable::write_atomic(dir, SNAPSHOT_FILE, bytes).map_err(OffsetsError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LogEntry {
        LogEntry::Commit {
            group: "g".into(),
            offsets: vec![OffsetEntry {
                topic: "t".into(),
                partition: 3,
                value: CommittedOffset {
                    offset: 42,
                    leader_epoch: -1,
                    metadata: "meta".into(),
                    commit_ms: 1,
                    stamp: (1 << STAMP_SEQ_BITS) | 7,
                },
            }],
        }
    }

    // A log entry survives the trip through a record batch (CRC-checked) unchanged, and the
    // batch passes the storage engine's validation.
    #[test]
    fn log_entry_roundtrip_through_a_batch() {
        let b = encode_batch(&entry()).unwrap();
        assert!(shards::batch::validate(&b, 1 << 20).is_ok());
        assert_eq!(decode_batches(&b).unwrap(), vec![entry()]);
    }

    /// `LogEntry` as it was before OffsetDelete added `PartitionTombstones`.
    #[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    enum LogEntryV1 {
        Commit {
            group: String,
            offsets: Vec<OffsetEntry>,
        },
        Tombstone {
            group: String,
            stamp: u64,
        },
    }

    // Offsets logs written before PartitionTombstones existed decode unchanged (same tags,
    // same archived size), and the new record round-trips.
    #[test]
    fn older_log_entries_still_decode() {
        assert_eq!(
            std::mem::size_of::<ArchivedLogEntry>(),
            std::mem::size_of::<ArchivedLogEntryV1>()
        );
        let LogEntry::Commit { group, offsets } = entry() else {
            unreachable!()
        };
        let old = [
            (
                LogEntryV1::Commit {
                    group: group.clone(),
                    offsets: offsets.clone(),
                },
                LogEntry::Commit { group, offsets },
            ),
            (
                LogEntryV1::Tombstone {
                    group: "g".into(),
                    stamp: 9,
                },
                LogEntry::Tombstone {
                    group: "g".into(),
                    stamp: 9,
                },
            ),
        ];
        for (v1, now) in old {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&v1).unwrap();
            let got = rkyv::from_bytes::<LogEntry, rkyv::rancor::Error>(&bytes).unwrap();
            assert_eq!(got, now);
        }
        let t = LogEntry::PartitionTombstones(Box::new(PartitionTombstones {
            group: "g".into(),
            partitions: vec![("t".into(), 1), ("u".into(), 0)],
            stamp: 11,
        }));
        assert_eq!(decode_batches(&encode_batch(&t).unwrap()).unwrap(), vec![t]);
    }

    // A snapshot decodes to what was encoded; a flipped byte is detected, not misread.
    #[test]
    fn snapshot_roundtrip_and_corruption() {
        let s = Snapshot {
            log_gen: 5,
            groups: vec![GroupOffsets {
                group: "g".into(),
                deleted_stamp: 0,
                offsets: vec![],
            }],
        };
        let mut b = encode_snapshot(&s).unwrap();
        assert_eq!(decode_snapshot(&b).unwrap(), s);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(decode_snapshot(&b).is_err());
    }
}
