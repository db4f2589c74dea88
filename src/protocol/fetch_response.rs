//! Hand-written Fetch response encoder (versions 4..=12) that never copies record data.
//!
//! Runs on: any shard. The response is a list of pieces: small header buffers encoded here
//! and, between them, the stored record-batch bytes exactly as the storage handed them out.
//! The connection writes the pieces with one vectored write. A test checks the bytes are
//! identical to the kafka-protocol crate's encoding of the same response.

use bytes::{BufMut, Bytes, BytesMut};

/// Lowest and highest Fetch versions this encoder writes.
pub const FETCH_VERSION_MIN: i16 = 4;
pub const FETCH_VERSION_MAX: i16 = 12;
/// Fetch v12 is the first flexible version (compact strings/arrays, tagged fields).
const FETCH_FLEXIBLE_VERSION_MIN: i16 = 12;

/// One partition's answer. `records` are whole stored batches in log order.
pub struct PartitionOut<C> {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// v12+: the follower's log diverges from the leader's after this (epoch, end offset)
    /// (Kafka's DivergingEpoch, partition tagged field 0); it truncates there.
    pub diverging_epoch: Option<(i32, i64)>,
    /// read_committed fetches: the aborted transactions (producer id, first offset) that
    /// overlap the records; None (null on the wire) for read_uncommitted, as Kafka.
    pub aborted: Option<Vec<(i64, i64)>>,
    pub records: Vec<C>,
}

pub struct TopicOut<C> {
    pub name: String,
    pub partitions: Vec<PartitionOut<C>>,
}

/// A piece of an encoded response frame: either encoder-owned header bytes or stored data.
pub enum Piece<C> {
    Head(Bytes),
    Data(C),
}

impl<C: AsRef<[u8]>> Piece<C> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Head(b) => b,
            Piece::Data(c) => c.as_ref(),
        }
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_string(buf: &mut BytesMut, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, s.len() as u64 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

fn put_array_len(buf: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes a whole Fetch response frame: length prefix, response header (v0, or v1 with
/// empty tagged fields for flexible versions) and body.
///
/// Returns the pieces and the total frame length including the 4-byte prefix.
pub fn encode<C: AsRef<[u8]>>(
    version: i16,
    correlation_id: i32,
    throttle_time_ms: i32,
    error_code: i16,
    session_id: i32,
    topics: Vec<TopicOut<C>>,
) -> (Vec<Piece<C>>, usize) {
    assert!((FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version));
    let flexible = version >= FETCH_FLEXIBLE_VERSION_MIN;
    let mut pieces: Vec<Piece<C>> = Vec::new();
    let mut heads: Vec<BytesMut> = Vec::new();
    // The first head carries the length prefix, patched once the total is known.
    let mut cur = BytesMut::with_capacity(256);
    cur.put_i32(0);
    cur.put_i32(correlation_id);
    if flexible {
        put_uvarint(&mut cur, 0); // response header tagged fields
    }
    cur.put_i32(throttle_time_ms);
    if version >= 7 {
        cur.put_i16(error_code);
        cur.put_i32(session_id); // 0: no fetch session (KIP-227)
    }
    put_array_len(&mut cur, topics.len(), flexible);
    // Pieces are recorded as (head index | data) and assembled after patching the length.
    enum Slot<C> {
        Head(usize),
        Data(C),
    }
    let mut slots: Vec<Slot<C>> = Vec::new();
    let mut total = 0usize;
    for topic in topics {
        put_string(&mut cur, &topic.name, flexible);
        put_array_len(&mut cur, topic.partitions.len(), flexible);
        for p in topic.partitions {
            cur.put_i32(p.partition);
            cur.put_i16(p.error_code);
            cur.put_i64(p.high_watermark);
            cur.put_i64(p.last_stable_offset);
            if version >= 5 {
                cur.put_i64(p.log_start_offset);
            }
            match &p.aborted {
                None if flexible => put_uvarint(&mut cur, 0),
                None => cur.put_i32(-1),
                Some(list) => {
                    put_array_len(&mut cur, list.len(), flexible);
                    for (producer_id, first_offset) in list {
                        cur.put_i64(*producer_id);
                        cur.put_i64(*first_offset);
                        if flexible {
                            put_uvarint(&mut cur, 0);
                        }
                    }
                }
            }
            if version >= 11 {
                cur.put_i32(-1); // preferred_read_replica
            }
            let records_len: usize = p.records.iter().map(|c| c.as_ref().len()).sum();
            if flexible {
                put_uvarint(&mut cur, records_len as u64 + 1);
            } else {
                cur.put_i32(records_len as i32);
            }
            if records_len > 0 {
                total += cur.len();
                heads.push(std::mem::replace(&mut cur, BytesMut::with_capacity(128)));
                slots.push(Slot::Head(heads.len() - 1));
                for c in p.records {
                    if !c.as_ref().is_empty() {
                        total += c.as_ref().len();
                        slots.push(Slot::Data(c));
                    }
                }
            }
            if flexible {
                match p.diverging_epoch {
                    // Tagged field 0: EpochEndOffset { epoch i32, end_offset i64, tags }.
                    Some((epoch, end_offset)) => {
                        put_uvarint(&mut cur, 1);
                        put_uvarint(&mut cur, 0);
                        put_uvarint(&mut cur, 4 + 8 + 1);
                        cur.put_i32(epoch);
                        cur.put_i64(end_offset);
                        put_uvarint(&mut cur, 0);
                    }
                    None => put_uvarint(&mut cur, 0), // partition tagged fields
                }
            }
        }
        if flexible {
            put_uvarint(&mut cur, 0); // topic tagged fields
        }
    }
    if flexible {
        put_uvarint(&mut cur, 0); // response tagged fields
    }
    total += cur.len();
    heads.push(cur);
    slots.push(Slot::Head(heads.len() - 1));
    let body_len = (total - 4) as i32;
    heads[0][0..4].copy_from_slice(&body_len.to_be_bytes());
    let mut frozen: Vec<Option<Bytes>> = heads.into_iter().map(|h| Some(h.freeze())).collect();
    for slot in slots {
        match slot {
            Slot::Head(i) => {
                if let Some(b) = frozen[i].take() {
                    pieces.push(Piece::Head(b));
                }
            }
            Slot::Data(c) => pieces.push(Piece::Data(c)),
        }
    }
    (pieces, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn sample(with_data: bool) -> Vec<TopicOut<Bytes>> {
        let batch_a = Bytes::from(vec![7u8; 70]);
        let batch_b = Bytes::from(vec![9u8; 130]);
        vec![
            TopicOut {
                name: "orders".into(),
                partitions: vec![
                    PartitionOut {
                        partition: 0,
                        error_code: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 0,
                        diverging_epoch: None,
                        aborted: Some(vec![(77, 3), (78, 9)]),
                        records: if with_data {
                            vec![batch_a.clone(), batch_b.clone()]
                        } else {
                            vec![]
                        },
                    },
                    PartitionOut {
                        partition: 3,
                        error_code: 1,
                        high_watermark: 5,
                        last_stable_offset: 5,
                        log_start_offset: 2,
                        diverging_epoch: Some((3, 42)),
                        aborted: Some(vec![]),
                        records: vec![],
                    },
                ],
            },
            TopicOut {
                name: "t2".into(),
                partitions: vec![PartitionOut {
                    partition: 1,
                    error_code: 0,
                    high_watermark: 1,
                    last_stable_offset: 1,
                    log_start_offset: 0,
                    diverging_epoch: None,
                    aborted: None,
                    records: if with_data { vec![batch_b] } else { vec![] },
                }],
            },
        ]
    }

    /// A session id the encoding must carry through (v7+).
    const SAMPLE_SESSION_ID: i32 = 0x1234_5678;

    fn crate_encoding(version: i16, topics: &[TopicOut<Bytes>]) -> Bytes {
        let responses = topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut data = Vec::new();
                                for c in &p.records {
                                    data.extend_from_slice(c);
                                }
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.last_stable_offset)
                                    .with_log_start_offset(if version >= 5 {
                                        p.log_start_offset
                                    } else {
                                        -1
                                    })
                                    .with_aborted_transactions(p.aborted.as_ref().map(|l| {
                                        l.iter()
                                            .map(|(pid, first)| {
                                                kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                                                    .with_producer_id(kafka_protocol::messages::ProducerId(*pid))
                                                    .with_first_offset(*first)
                                            })
                                            .collect()
                                    }))
                                    .with_preferred_read_replica(
                                        kafka_protocol::messages::BrokerId(-1),
                                    )
                                    .with_diverging_epoch(match p.diverging_epoch {
                                        Some((e, o)) if version >= 12 => {
                                            kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                                                .with_epoch(e)
                                                .with_end_offset(o)
                                        }
                                        _ => Default::default(),
                                    })
                                    .with_records(Some(Bytes::from(data)))
                            })
                            .collect(),
                    )
            })
            .collect();
        let resp = FetchResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(0)
            // Fetch sessions exist from v7; before, the field is not on the wire.
            .with_session_id(if version >= 7 { SAMPLE_SESSION_ID } else { 0 })
            .with_responses(responses);
        super::super::encode_frame(
            ApiKey::Fetch,
            99,
            ApiKey::Fetch.response_header_version(version),
            &resp,
            version,
        )
        .unwrap()
    }

    // Every advertised Fetch version encodes byte-for-byte like the kafka-protocol crate,
    // with and without record data, while the data pieces are the caller's own buffers.
    #[test]
    fn matches_crate_encoding_for_all_versions() {
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            for with_data in [false, true] {
                let topics = sample(with_data);
                let expected = crate_encoding(version, &topics);
                let (pieces, total) = encode(version, 99, 0, 0, SAMPLE_SESSION_ID, topics);
                let mut got = Vec::new();
                for p in &pieces {
                    got.extend_from_slice(p.as_slice());
                }
                assert_eq!(total, got.len());
                assert_eq!(got, expected.to_vec(), "version {version} data {with_data}");
                let data_pieces = pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Data(_)))
                    .count();
                assert_eq!(data_pieces, if with_data { 3 } else { 0 });
            }
        }
    }
}
