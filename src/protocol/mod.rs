//! The Kafka wire codec: frame lengths, request headers, response framing and the
//! hand-written zero-copy Fetch response encoder.
//!
//! Runs on: any shard. Pure: no runtime imports and no I/O, so every function here can be
//! tested byte for byte against the kafka-protocol crate.

pub mod acl;
pub mod error_codes;
pub mod fetch_response;
pub mod produce_v0;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kafka's `socket.request.max.bytes` default: the largest request frame accepted.
pub const REQUEST_FRAME_MAX_BYTES: usize = 100 * 1024 * 1024;
/// Size of the big-endian i32 length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Requests whose body decoded completely with bytes left over (served, as Kafka serves
/// them). Process-wide; a plain atomic counter, touched only on that rare path.
pub static TRAILING_BYTES_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Why a connection is being closed instead of answered. Logged with the client address.
#[derive(Debug)]
pub enum ProtocolError {
    FrameTooLarge {
        len: i64,
        max: usize,
    },
    FrameTooSmall {
        len: i64,
    },
    UnknownApiKey {
        key: i16,
    },
    UnsupportedVersion {
        key: ApiKey,
        version: i16,
    },
    Malformed {
        key: ApiKey,
        version: i16,
        reason: String,
    },
    Encode {
        key: ApiKey,
        reason: String,
    },
    /// The authorizer refused an API that has no per-resource error answer here.
    Unauthorized {
        key: ApiKey,
        principal: String,
    },
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "request frame of {len} bytes exceeds the {max}-byte limit"
                )
            }
            ProtocolError::FrameTooSmall { len } => {
                write!(f, "request frame length {len} is too small for a header")
            }
            ProtocolError::UnknownApiKey { key } => write!(f, "unknown API key {key}"),
            ProtocolError::UnsupportedVersion { key, version } => {
                write!(f, "unsupported version {version} of {key:?}")
            }
            ProtocolError::Malformed {
                key,
                version,
                reason,
            } => write!(f, "malformed {key:?} v{version} request: {reason}"),
            ProtocolError::Unauthorized { key, principal } => {
                write!(
                    f,
                    "{principal} is not authorized for {key:?} (cluster authorization failed)"
                )
            }
            ProtocolError::Encode { key, reason } => {
                write!(f, "could not encode {key:?} response: {reason}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Checks a frame length read off the wire before anything is allocated for it.
pub fn check_frame_len(len: i32) -> Result<usize, ProtocolError> {
    // api_key(2) + api_version(2) + correlation_id(4) + client_id length(2)
    const HEADER_MIN_BYTES: i32 = 10;
    if len < HEADER_MIN_BYTES {
        return Err(ProtocolError::FrameTooSmall { len: len as i64 });
    }
    let len = len as usize;
    if len > REQUEST_FRAME_MAX_BYTES {
        return Err(ProtocolError::FrameTooLarge {
            len: len as i64,
            max: REQUEST_FRAME_MAX_BYTES,
        });
    }
    Ok(len)
}

/// A request whose header is decoded and whose body is still raw bytes.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
    /// The client's address, set by the connection (None until then): JoinGroup records
    /// its host for DescribeGroups.
    pub peer: Option<std::net::SocketAddr>,
}

/// The raw key/version/correlation id, readable even when the key is unknown, so that an
/// error can name them.
pub fn peek_ids(frame: &[u8]) -> (i16, i16, i32) {
    let mut b = frame;
    let key = b.get_i16();
    let version = b.get_i16();
    let correlation_id = b.get_i32();
    (key, version, correlation_id)
}

/// Decodes the request header. The frame is the bytes after the length prefix; the
/// returned body shares its memory (no copy of record data).
pub fn decode_request(mut frame: Bytes) -> Result<RequestFrame, ProtocolError> {
    let (raw_key, version, _) = peek_ids(&frame);
    let api_key =
        ApiKey::try_from(raw_key).map_err(|_| ProtocolError::UnknownApiKey { key: raw_key })?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| {
        ProtocolError::Malformed {
            key: api_key,
            version,
            reason: format!("header: {e}"),
        }
    })?;
    Ok(RequestFrame {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        body: frame,
        peer: None,
    })
}

impl RequestFrame {
    /// Decodes the body as `T` at this frame's version. Bytes left after a completely
    /// decoded body are ignored, as Kafka's broker ignores them (`AbstractRequest.parseRequest`
    /// never checks): librdkafka >= 2.1 sends 3 of them in every all-topics Metadata v9+
    /// request. They are counted in `TRAILING_BYTES_REQUESTS` so a client that sends them
    /// stays visible.
    pub fn decode<T: Decodable>(&self) -> Result<T, ProtocolError> {
        let mut body = self.body.clone();
        let value = T::decode(&mut body, self.version).map_err(|e| ProtocolError::Malformed {
            key: self.api_key,
            version: self.version,
            reason: e.to_string(),
        })?;
        if body.has_remaining() {
            TRAILING_BYTES_REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }

    pub fn response_header_version(&self) -> i16 {
        self.api_key.response_header_version(self.version)
    }

    /// Encodes a whole response frame (length prefix, header, body) for this request.
    pub fn encode_response<T: Encodable>(&self, body: &T) -> Result<Bytes, ProtocolError> {
        encode_frame(
            self.api_key,
            self.correlation_id,
            self.response_header_version(),
            body,
            self.version,
        )
    }
}

/// Length prefix + response header + body.
pub fn encode_frame<T: Encodable>(
    key: ApiKey,
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> Result<Bytes, ProtocolError> {
    let err = |e: anyhow::Error| ProtocolError::Encode {
        key,
        reason: e.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(err)?
        + body.compute_size(version).map_err(err)?;
    let mut buf = BytesMut::with_capacity(FRAME_PREFIX_BYTES + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(err)?;
    body.encode(&mut buf, version).map_err(err)?;
    debug_assert_eq!(buf.len(), FRAME_PREFIX_BYTES + size);
    Ok(buf.freeze())
}

/// Kafka error codes used by the broker (Kafka's `Errors` enum).
pub mod error {
    // The codes the storage engine reports are defined once, in shards::codes.
    pub use shards::codes::{
        CORRUPT_MESSAGE, INVALID_PRODUCER_EPOCH, INVALID_RECORD, KAFKA_STORAGE_ERROR,
        MESSAGE_TOO_LARGE, OFFSET_OUT_OF_RANGE, OUT_OF_ORDER_SEQUENCE_NUMBER,
        RECORD_LIST_TOO_LARGE,
    };
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const NONE: i16 = 0;
    pub const INVALID_FETCH_SIZE: i16 = 4;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    pub const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const DUPLICATE_RESOURCE: i16 = 92;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    // Lengths outside (header minimum, 100 MiB] are refused before any allocation.
    #[test]
    fn frame_length_limits() {
        assert!(check_frame_len(-1).is_err());
        assert!(check_frame_len(3).is_err());
        assert!(check_frame_len((REQUEST_FRAME_MAX_BYTES + 1) as i32).is_err());
        assert_eq!(check_frame_len(10).unwrap(), 10);
    }

    // A request encoded by the crate decodes back to the same header and body.
    #[test]
    fn decode_roundtrip_flexible_header() {
        let version = 12;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                "c",
            )));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, ApiKey::Metadata.request_header_version(version))
            .unwrap();
        MetadataRequest::default()
            .encode(&mut buf, version)
            .unwrap();
        let frame = decode_request(buf.freeze()).unwrap();
        assert_eq!(frame.api_key, ApiKey::Metadata);
        assert_eq!(frame.correlation_id, 42);
        assert_eq!(frame.client_id.as_deref(), Some("c"));
        let _req: MetadataRequest = frame.decode().unwrap();
    }

    // A body decoded completely with bytes left over is served and counted, as Kafka
    // serves it: librdkafka's all-topics Metadata v12 carries 3 such bytes.
    #[test]
    fn trailing_bytes_are_served_and_counted() {
        let version = 12;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(&mut buf, ApiKey::Metadata.request_header_version(version))
            .unwrap();
        MetadataRequest::default()
            .with_topics(None)
            .encode(&mut buf, version)
            .unwrap();
        buf.put_slice(&[0, 0, 0]);
        let frame = decode_request(buf.freeze()).unwrap();
        let before = TRAILING_BYTES_REQUESTS.load(Ordering::Relaxed);
        let req: MetadataRequest = frame.decode().unwrap();
        assert!(req.topics.is_none());
        assert!(TRAILING_BYTES_REQUESTS.load(Ordering::Relaxed) > before);
    }

    // Unknown keys and garbage bodies become typed errors, never panics.
    #[test]
    fn garbage_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_i16(999);
        buf.put_i16(0);
        buf.put_i32(1);
        buf.put_i16(-1);
        assert!(matches!(
            decode_request(buf.freeze()),
            Err(ProtocolError::UnknownApiKey { key: 999 })
        ));
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Metadata as i16);
        buf.put_i16(12);
        buf.put_i32(1);
        buf.put_i16(-1);
        buf.put_u8(0);
        buf.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        let frame = decode_request(buf.freeze()).unwrap();
        assert!(frame.decode::<MetadataRequest>().is_err());
    }
}
