//! The client's one error type. Runs on any shard (the client is per-executor).
//!
//! `ClientError` is `Clone` because one connection failure must be delivered to every request
//! that was in flight on it; I/O errors are therefore kept as kind + text.

use std::fmt;

use kafka_protocol::ResponseError;

/// Everything a client call can fail with. Kafka error codes are surfaced as `Kafka`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// A socket operation failed (connect, read, write).
    Io {
        /// What was being done, e.g. "connect 127.0.0.1:9092".
        context: String,
        /// The OS error kind.
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
    /// The broker closed the connection (or it was closed after an earlier failure).
    ConnectionClosed {
        /// The broker address.
        addr: String,
        /// Why the connection is no longer usable.
        reason: String,
    },
    /// No answer within the configured time.
    Timeout {
        /// What timed out.
        what: String,
    },
    /// A frame announced a length above the allowed maximum (or below the minimum).
    FrameLength {
        /// The announced length.
        len: i64,
        /// The allowed maximum.
        max: usize,
    },
    /// The bytes from the broker could not be decoded or made no sense (e.g. correlation id).
    Protocol(String),
    /// A request could not be encoded (a bug or a value out of range).
    Encode(String),
    /// No version of an API is supported by both this client and the broker.
    UnsupportedApi {
        /// The API key.
        api_key: i16,
        /// The broker's advertised range, if it advertised the API at all.
        broker_range: Option<(i16, i16)>,
    },
    /// The broker answered with a Kafka error code.
    Kafka {
        /// The Kafka error code.
        code: i16,
        /// Where: topic/partition or API name.
        context: String,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },
    /// A topic or partition is unknown or has no leader in the metadata.
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The caller passed something unusable (bad address, empty list...).
    InvalidArgument(String),
    /// The TLS handshake failed (unknown CA, wrong host name, not a TLS port...).
    Tls {
        /// The broker address.
        addr: String,
        /// What rustls said.
        message: String,
    },
    /// SASL authentication failed: refused by the broker (SASL_AUTHENTICATION_FAILED,
    /// UNSUPPORTED_SASL_MECHANISM) or by this client (the server's SCRAM proof was wrong).
    Authentication {
        /// The broker address.
        addr: String,
        /// The broker's or the client's reason.
        message: String,
    },
}

impl ClientError {
    pub(crate) fn io(context: impl Into<String>, e: &std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The Kafka error code, if this is a broker-side error.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for errors that a refresh of metadata may cure (leader moved, topic appearing).
    pub fn is_stale_metadata(&self) -> bool {
        matches!(self, ClientError::NoLeader { .. })
            || matches!(self.kafka_code(), Some(3 | 5 | 6 | 74 | 75))
    }
}

/// The symbolic name of a Kafka error code, e.g. `NotLeaderOrFollower`.
pub fn kafka_error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("UnknownErrorCode({code})"),
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io {
                context, message, ..
            } => write!(f, "{context}: {message}"),
            ClientError::ConnectionClosed { addr, reason } => {
                write!(f, "connection to {addr} closed: {reason}")
            }
            ClientError::Timeout { what } => write!(f, "timed out: {what}"),
            ClientError::FrameLength { len, max } => {
                write!(f, "frame length {len} outside 4..={max}")
            }
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Encode(m) => write!(f, "encode error: {m}"),
            ClientError::UnsupportedApi {
                api_key,
                broker_range,
            } => write!(
                f,
                "no common version for api key {api_key} (broker: {broker_range:?})"
            ),
            ClientError::Kafka {
                code,
                context,
                message,
            } => {
                write!(f, "{context}: {} ({code})", kafka_error_name(*code))?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            ClientError::NoLeader { topic, partition } => {
                write!(f, "no leader known for {topic}/{partition}")
            }
            ClientError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            ClientError::Tls { addr, message } => {
                write!(f, "TLS handshake with {addr} failed: {message}")
            }
            ClientError::Authentication { addr, message } => {
                write!(f, "SASL authentication with {addr} failed: {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Result with the client's error.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Turns a Kafka error code into `Ok(())` or a `ClientError::Kafka`.
pub(crate) fn check_code(
    code: i16,
    context: impl FnOnce() -> String,
    message: Option<&str>,
) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::Kafka {
            code,
            context: context(),
            message: message.map(str::to_owned),
        })
    }
}
