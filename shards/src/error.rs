//! Error types of the storage engine: one enum per kind of caller (append, read, storage).
//!
//! Runs on the shard's own core. Operating errors (bad client input, disk errors, corrupt
//! files) are typed values that the broker maps to Kafka error codes; bugs are assertions.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;

/// Kafka error codes used by the storage engine.
pub mod codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
}

/// A failure of the storage itself (disk, files, or a stopped partition).
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The partition no longer accepts writes (an earlier write or fdatasync failed, or it was
    /// closed or deleted). `reason` says which.
    Stopped { reason: String },
    /// A file of the partition is damaged in a way recovery cannot repair.
    Corrupt { path: PathBuf, reason: String },
    /// The filesystem's free space is below `StoreConfig::disk_free_min_bytes`: the append
    /// was refused before anything was stored; the partition keeps running.
    DiskFull {
        path: PathBuf,
        free_bytes: u64,
        min_bytes: u64,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
    pub(crate) fn glommio<T>(
        op: &'static str,
        path: impl Into<PathBuf>,
        e: glommio::GlommioError<T>,
    ) -> Self {
        let source = match e {
            glommio::GlommioError::IoError(e) => e,
            glommio::GlommioError::EnhancedIoError { source, .. } => source,
            other => io::Error::other(other.to_string()),
        };
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { op, path, source } => {
                write!(f, "{op} failed on {}: {source}", path.display())
            }
            StorageError::Stopped { reason } => write!(f, "partition stopped: {reason}"),
            StorageError::Corrupt { path, reason } => {
                write!(f, "corrupt file {}: {reason}", path.display())
            }
            StorageError::DiskFull {
                path,
                free_bytes,
                min_bytes,
            } => write!(
                f,
                "disk full: {free_bytes} bytes free on the filesystem of {}, appends need {min_bytes}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why an append was refused. Nothing of a refused append is stored.
#[derive(Debug)]
pub enum AppendError {
    /// Damaged bytes: bad magic, length, CRC (CORRUPT_MESSAGE).
    Corrupt(String),
    /// One batch larger than max.message.bytes (MESSAGE_TOO_LARGE).
    MessageTooLarge { size_bytes: usize, max_bytes: usize },
    /// The whole append buffer larger than StoreConfig::batch_max_bytes (RECORD_LIST_TOO_LARGE).
    RecordListTooLarge { size_bytes: usize, max_bytes: usize },
    /// Structurally valid but semantically wrong (INVALID_RECORD).
    InvalidRecord(String),
    /// Idempotent producer sent a sequence that does not follow the last one stored.
    OutOfOrderSequence {
        producer_id: i64,
        expected_sequence: i32,
        received_sequence: i32,
    },
    /// Idempotent producer's epoch is older than the one stored.
    InvalidProducerEpoch {
        producer_id: i64,
        current_epoch: i16,
        received_epoch: i16,
    },
    /// A transactional batch of a producer with no open transaction in this partition that
    /// does not carry the verification guard of a coordinator check (KIP-890): the
    /// partition was never added to the transaction, or the transaction ended meanwhile
    /// (INVALID_TXN_STATE).
    TxnNotVerified { producer_id: i64 },
    /// A follower append (`AppendMode::Follower`) whose batches do not continue the log:
    /// the first batch's baseOffset is not the log end offset, or a batch does not start
    /// right after the previous one (OFFSET_OUT_OF_RANGE). `expected` is where the batch
    /// had to start, `got` its baseOffset.
    OffsetMismatch { expected: i64, got: i64 },
    /// The log was cut (`Partition::truncate_to`) below the end of this append's batches
    /// while it waited for them to be written or synced: they are no longer in the log
    /// (NOT_LEADER_OR_FOLLOWER, retriable: a replica truncates when it follows a new leader).
    Truncated { log_end_offset: i64 },
    /// The storage failed or the partition is stopped (KAFKA_STORAGE_ERROR).
    Storage(StorageError),
}

impl AppendError {
    /// The Kafka error code to answer the producer with.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AppendError::Corrupt(_) => codes::CORRUPT_MESSAGE,
            AppendError::MessageTooLarge { .. } => codes::MESSAGE_TOO_LARGE,
            AppendError::RecordListTooLarge { .. } => codes::RECORD_LIST_TOO_LARGE,
            AppendError::InvalidRecord(_) => codes::INVALID_RECORD,
            AppendError::OutOfOrderSequence { .. } => codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
            AppendError::InvalidProducerEpoch { .. } => codes::INVALID_PRODUCER_EPOCH,
            AppendError::TxnNotVerified { .. } => codes::INVALID_TXN_STATE,
            AppendError::OffsetMismatch { .. } => codes::OFFSET_OUT_OF_RANGE,
            AppendError::Truncated { .. } => codes::NOT_LEADER_OR_FOLLOWER,
            AppendError::Storage(_) => codes::KAFKA_STORAGE_ERROR,
        }
    }
}

impl From<BatchError> for AppendError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::TooLarge {
                size_bytes,
                max_bytes,
                ..
            } => AppendError::MessageTooLarge {
                size_bytes,
                max_bytes,
            },
            BatchError::InvalidRecordCount { .. } => AppendError::InvalidRecord(e.to_string()),
            other => AppendError::Corrupt(other.to_string()),
        }
    }
}

impl From<StorageError> for AppendError {
    fn from(e: StorageError) -> Self {
        AppendError::Storage(e)
    }
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Corrupt(s) => write!(f, "corrupt message: {s}"),
            AppendError::MessageTooLarge {
                size_bytes,
                max_bytes,
            } => {
                write!(
                    f,
                    "batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}"
                )
            }
            AppendError::RecordListTooLarge {
                size_bytes,
                max_bytes,
            } => {
                write!(
                    f,
                    "record list of {size_bytes} bytes exceeds batch_max_bytes {max_bytes}"
                )
            }
            AppendError::InvalidRecord(s) => write!(f, "invalid record: {s}"),
            AppendError::OutOfOrderSequence {
                producer_id,
                expected_sequence,
                received_sequence,
            } => {
                write!(
                    f,
                    "producer {producer_id}: out of order sequence {received_sequence}, expected {expected_sequence}"
                )
            }
            AppendError::InvalidProducerEpoch {
                producer_id,
                current_epoch,
                received_epoch,
            } => {
                write!(
                    f,
                    "producer {producer_id}: epoch {received_epoch} older than current {current_epoch}"
                )
            }
            AppendError::TxnNotVerified { producer_id } => write!(
                f,
                "producer {producer_id}: partition was not added to the transaction"
            ),
            AppendError::OffsetMismatch { expected, got } => {
                write!(
                    f,
                    "batch base offset {got} does not continue the log (expected {expected})"
                )
            }
            AppendError::Truncated { log_end_offset } => {
                write!(
                    f,
                    "log truncated to offset {log_end_offset} before the append completed"
                )
            }
            AppendError::Storage(e) => write!(f, "storage error: {e}"),
        }
    }
}

impl std::error::Error for AppendError {}

/// Why a read was refused.
#[derive(Debug)]
pub enum ReadError {
    /// The requested offset is below the log start or above the log end.
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// A stored batch failed its checks on read; it is not served.
    Corrupt { offset: i64, reason: String },
    /// The storage failed.
    Storage(StorageError),
}

impl ReadError {
    /// The Kafka error code to answer the consumer with.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ReadError::OffsetOutOfRange { .. } => codes::OFFSET_OUT_OF_RANGE,
            ReadError::Corrupt { .. } => codes::CORRUPT_MESSAGE,
            ReadError::Storage(_) => codes::KAFKA_STORAGE_ERROR,
        }
    }
}

impl From<StorageError> for ReadError {
    fn from(e: StorageError) -> Self {
        ReadError::Storage(e)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => {
                write!(f, "offset {offset} out of range [{log_start}, {log_end}]")
            }
            ReadError::Corrupt { offset, reason } => {
                write!(f, "corrupt batch at or after offset {offset}: {reason}")
            }
            ReadError::Storage(e) => write!(f, "storage error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}
