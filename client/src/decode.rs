//! Response decoding that skips tagged fields the message's version does not define.
//! Pure code, any shard.
//!
//! kafka-protocol 0.17 (like Kafka's generated Java classes) rejects a tag that only a later
//! version of the message defines: Fetch v12-15 with tag 0 (NodeEndpoints, v16+) fails with
//! `Tag 0 is not valid for version 12`, and so do Produce v9 responses with tag 0 (v10+) at
//! the top or partition level. Tansu sends such a Fetch v12 tag. librdkafka skips every tag
//! it does not read, and the protocol says unknown tagged fields are ignorable, so this
//! client does too: when the crate refuses a Fetch or Produce response, it is decoded again
//! here with every tagged field of the affected structures kept as unknown (the fields the
//! client reads are all untagged). Any other decode error is returned unchanged.

use std::any::Any;
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{FetchResponse, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};

/// Decodes the response of `R` at `version`, skipping tagged fields the version does not
/// define (see the module notes).
pub fn decode_response<R: Request>(body: &Bytes, version: i16) -> Result<R::Response>
where
    R::Response: 'static,
{
    let strict = <R::Response as Decodable>::decode(&mut body.clone(), version);
    let Err(e) = strict else {
        return strict;
    };
    let lenient: Option<Result<Box<dyn Any>>> = match R::KEY {
        0 if version == 9 => {
            Some(produce_v9(&mut body.clone()).map(|r| Box::new(r) as Box<dyn Any>))
        }
        1 if (12..16).contains(&version) => {
            Some(fetch_v12_to_15(&mut body.clone(), version).map(|r| Box::new(r) as Box<dyn Any>))
        }
        _ => None,
    };
    match lenient {
        Some(Ok(any)) => match any.downcast::<R::Response>() {
            Ok(r) => Ok(*r),
            Err(_) => Err(e),
        },
        // The lenient reading failed too: report the crate's error, it names the cause.
        Some(Err(_)) | None => Err(e),
    }
}

fn need(buf: &Bytes, n: usize) -> Result<()> {
    if buf.remaining() < n {
        bail!("response truncated");
    }
    Ok(())
}

fn i16_(buf: &mut Bytes) -> Result<i16> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn i32_(buf: &mut Bytes) -> Result<i32> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn i64_(buf: &mut Bytes) -> Result<i64> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn uvarint(buf: &mut Bytes) -> Result<u32> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        need(buf, 1)?;
        let b = buf.get_u8();
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// A compact array's length (None = null).
fn compact_len(buf: &mut Bytes) -> Result<Option<usize>> {
    Ok(match uvarint(buf)? {
        0 => None,
        n => Some(n as usize - 1),
    })
}

fn compact_string(buf: &mut Bytes) -> Result<Option<StrBytes>> {
    match compact_len(buf)? {
        None => Ok(None),
        Some(n) => {
            need(buf, n)?;
            Ok(Some(StrBytes::try_from(buf.split_to(n))?))
        }
    }
}

fn compact_array<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<Vec<T>> {
    let n = compact_len(buf)?.unwrap_or(0);
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(T::decode(buf, version)?);
    }
    Ok(out)
}

/// Reads a tagged-field section, keeping every field as unknown.
fn tagged_fields(buf: &mut Bytes) -> Result<BTreeMap<i32, Bytes>> {
    let mut out = BTreeMap::new();
    for _ in 0..uvarint(buf)? {
        let tag = uvarint(buf)?;
        let size = uvarint(buf)? as usize;
        need(buf, size)?;
        out.insert(tag as i32, buf.split_to(size));
    }
    Ok(out)
}

/// FetchResponse v12-15: the nested structures define no version-gated tags.
fn fetch_v12_to_15(buf: &mut Bytes, version: i16) -> Result<FetchResponse> {
    let mut r = FetchResponse::default();
    r.throttle_time_ms = i32_(buf)?;
    r.error_code = i16_(buf)?;
    r.session_id = i32_(buf)?;
    r.responses = compact_array::<FetchableTopicResponse>(buf, version)?;
    r.unknown_tagged_fields = tagged_fields(buf)?;
    Ok(r)
}

/// ProduceResponse v9: both the top level and every partition may carry tag 0.
fn produce_v9(buf: &mut Bytes) -> Result<ProduceResponse> {
    let mut r = ProduceResponse::default();
    let topics = compact_len(buf)?.unwrap_or(0);
    for _ in 0..topics {
        let mut t = TopicProduceResponse::default();
        t.name = TopicName(compact_string(buf)?.unwrap_or_default());
        let parts = compact_len(buf)?.unwrap_or(0);
        for _ in 0..parts {
            let mut p = PartitionProduceResponse::default();
            p.index = i32_(buf)?;
            p.error_code = i16_(buf)?;
            p.base_offset = i64_(buf)?;
            p.log_append_time_ms = i64_(buf)?;
            p.log_start_offset = i64_(buf)?;
            p.record_errors = compact_array::<BatchIndexAndErrorMessage>(buf, 9)?;
            p.error_message = compact_string(buf)?;
            p.unknown_tagged_fields = tagged_fields(buf)?;
            t.partition_responses.push(p);
        }
        t.unknown_tagged_fields = tagged_fields(buf)?;
        r.responses.push(t);
    }
    r.throttle_time_ms = i32_(buf)?;
    r.unknown_tagged_fields = tagged_fields(buf)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_response::PartitionData;
    use kafka_protocol::messages::{FetchRequest, ProduceRequest};
    use kafka_protocol::protocol::Encodable;

    // Proves an unknown tagged field is skipped, not an error: a Fetch v12 response carrying
    // top-level tag 0 (NodeEndpoints, defined from v16; what Tansu sends) and an unknown
    // tag 5 is refused by the crate ("Tag 0 is not valid for version 12") and decoded here
    // with the data intact.
    #[test]
    fn fetch_v12_with_a_later_versions_tag_is_decoded() {
        let mut resp = FetchResponse::default();
        resp.session_id = 7;
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        let mut p = PartitionData::default();
        p.partition_index = 3;
        p.high_watermark = 42;
        p.records = Some(Bytes::from_static(b"abc"));
        t.partitions.push(p);
        resp.responses.push(t);
        let mut b = BytesMut::new();
        resp.encode(&mut b, 12).unwrap();
        let plain = b.clone().freeze();
        // The encoding ends with the top-level tagged-field count (0); the crate's encoder
        // never writes tag 0 below v16, so the section is written by hand: 2 fields.
        assert_eq!(b.last(), Some(&0));
        b.truncate(b.len() - 1);
        b.extend_from_slice(&[2, 0, 5, 1, 0, 0, 0, 1, 5, 2, 9, 9]);
        let body = b.freeze();
        let strict = FetchResponse::decode(&mut body.clone(), 12).unwrap_err();
        assert!(
            strict
                .to_string()
                .contains("Tag 0 is not valid for version 12"),
            "{strict}"
        );
        let got = decode_response::<FetchRequest>(&body, 12).unwrap();
        assert_eq!(got.session_id, 7);
        assert_eq!(got.responses.len(), 1);
        assert_eq!(got.responses[0].partitions[0].partition_index, 3);
        assert_eq!(got.responses[0].partitions[0].high_watermark, 42);
        assert_eq!(
            got.responses[0].partitions[0].records.as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(got.unknown_tagged_fields.len(), 2);
        assert_eq!(got.unknown_tagged_fields[&5].as_ref(), &[9, 9]);
        // Without the offending tag the crate's own decoding gives the same data.
        let strict_ok = decode_response::<FetchRequest>(&plain, 12).unwrap();
        assert_eq!(strict_ok.responses, got.responses);
        // A truncated body still fails.
        let cut = body.slice(..body.len() - 3);
        assert!(decode_response::<FetchRequest>(&cut, 12).is_err());
    }

    // Proves the same for Produce v9 with tag 0 (CurrentLeader, v10+) on a partition and at
    // the top level (NodeEndpoints, v10+), written by hand (the crate cannot encode them).
    #[test]
    fn produce_v9_with_later_versions_tags_is_decoded() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[2, 6]); // 1 topic; name of 5 bytes
        b.extend_from_slice(b"topic");
        b.extend_from_slice(&[2]); // 1 partition
        b.extend_from_slice(&2i32.to_be_bytes()); // index
        b.extend_from_slice(&0i16.to_be_bytes()); // error code
        b.extend_from_slice(&100i64.to_be_bytes()); // base offset
        b.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
        b.extend_from_slice(&0i64.to_be_bytes()); // log start offset
        b.extend_from_slice(&[1, 2, b'm']); // no record errors; error message "m"
        b.extend_from_slice(&[1, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0]); // tag 0: CurrentLeader
        b.extend_from_slice(&[0]); // topic tags
        b.extend_from_slice(&5i32.to_be_bytes()); // throttle time
        b.extend_from_slice(&[1, 0, 1, 1]); // tag 0: NodeEndpoints (empty)
        let body = b.freeze();
        let strict = ProduceResponse::decode(&mut body.clone(), 9).unwrap_err();
        assert!(
            strict
                .to_string()
                .contains("Tag 0 is not valid for version 9")
        );
        let got = decode_response::<ProduceRequest>(&body, 9).unwrap();
        assert_eq!(got.throttle_time_ms, 5);
        assert_eq!(got.responses[0].name.0.as_str(), "topic");
        let p = &got.responses[0].partition_responses[0];
        assert_eq!((p.index, p.error_code, p.base_offset), (2, 0, 100));
        assert_eq!(p.error_message.as_deref(), Some("m"));
        assert_eq!(p.unknown_tagged_fields.len(), 1);
        assert_eq!(got.unknown_tagged_fields.len(), 1);
        let cut = body.slice(..body.len() - 3);
        assert!(decode_response::<ProduceRequest>(&cut, 9).is_err());
    }
}
