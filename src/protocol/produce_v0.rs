//! Produce v0-2: advertised but refused, as Apache Kafka 4 does (KAFKA-18659).
//!
//! Runs on: any shard. Old librdkafka versions only enable compression when the broker's
//! Produce range starts at 0, so the range is advertised from 0 while requests below v3
//! (message format v0/v1) are answered with UNSUPPORTED_VERSION for every partition. The
//! kafka-protocol crate cannot encode these versions, so this file reads and writes them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::UNSUPPORTED_VERSION;

/// Largest topic or partition count accepted in one old-format request.
const ENTRIES_MAX: i32 = 100_000;

pub struct OldProduce {
    pub acks: i16,
    pub topics: Vec<(String, Vec<i32>)>,
}

fn take_string(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
    if len < 0 || b.remaining() < len as usize {
        return None;
    }
    String::from_utf8(b.split_to(len as usize).to_vec()).ok()
}

/// Reads the topic and partition ids of a Produce v0-2 body; `None` if malformed.
pub fn parse(mut body: Bytes) -> Option<OldProduce> {
    if body.remaining() < 10 {
        return None;
    }
    let acks = body.get_i16();
    let _timeout = body.get_i32();
    let n_topics = body.get_i32();
    if !(0..=ENTRIES_MAX).contains(&n_topics) {
        return None;
    }
    let mut topics = Vec::new();
    for _ in 0..n_topics {
        let name = take_string(&mut body)?;
        if body.remaining() < 4 {
            return None;
        }
        let n_parts = body.get_i32();
        if !(0..=ENTRIES_MAX).contains(&n_parts) {
            return None;
        }
        let mut parts = Vec::new();
        for _ in 0..n_parts {
            if body.remaining() < 8 {
                return None;
            }
            parts.push(body.get_i32());
            let len = body.get_i32();
            if len > 0 {
                if body.remaining() < len as usize {
                    return None;
                }
                body.advance(len as usize);
            }
        }
        topics.push((name, parts));
    }
    Some(OldProduce { acks, topics })
}

/// The whole response frame: UNSUPPORTED_VERSION for every partition.
pub fn encode_unsupported(version: i16, correlation_id: i32, req: &OldProduce) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.put_i32(req.topics.len() as i32);
    for (name, parts) in &req.topics {
        buf.put_i16(name.len() as i16);
        buf.put_slice(name.as_bytes());
        buf.put_i32(parts.len() as i32);
        for p in parts {
            buf.put_i32(*p);
            buf.put_i16(UNSUPPORTED_VERSION);
            buf.put_i64(-1);
            if version >= 2 {
                buf.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(0);
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A v2 request round-trips into a response that names each partition with error 35.
    #[test]
    fn old_produce_gets_unsupported_version() {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(1);
        b.put_i16(1);
        b.put_slice(b"t");
        b.put_i32(1);
        b.put_i32(4);
        b.put_i32(3);
        b.put_slice(&[1, 2, 3]);
        let req = parse(b.freeze()).unwrap();
        assert_eq!(req.topics, vec![("t".to_string(), vec![4])]);
        let resp = encode_unsupported(2, 5, &req);
        let mut r = resp.clone();
        assert_eq!(r.get_i32() as usize, resp.len() - 4);
        assert_eq!(r.get_i32(), 5);
        assert_eq!(r.get_i32(), 1);
        assert_eq!(r.get_i16(), 1);
        r.advance(1);
        assert_eq!(r.get_i32(), 1);
        assert_eq!(r.get_i32(), 4);
        assert_eq!(r.get_i16(), UNSUPPORTED_VERSION);
    }

    // Truncated or absurd input is refused, not trusted.
    #[test]
    fn malformed_old_produce_is_none() {
        assert!(parse(Bytes::from_static(&[0, 1, 0, 0])).is_none());
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(i32::MAX);
        assert!(parse(b.freeze()).is_none());
    }
}
