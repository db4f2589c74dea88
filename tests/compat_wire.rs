//! Black-box tests of Kafka semantics that clients depend on beyond the byte format: record-
//! level ListOffsets, OffsetCommit to unknown partitions, authorized operations, group
//! configs and LogAppendTime topics. Each starts the real binary and speaks Kafka bytes.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ]);
    conn.request(&req, 7).topics[0].error_code
}

/// Connection to the node that leads `topic`/`partition`.
fn leader_conn(broker: &Broker, topic: &str, partition: i32) -> Conn {
    let mut c = broker.connect();
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    let md = c.request(&req, 12);
    let leader = md.topics[0].partitions[partition as usize].leader_id.0;
    broker.connect_node(leader as usize)
}

/// A batch with one record per timestamp (value "v<i>").
fn batch_at(timestamps: &[i64], compression: Compression) -> Bytes {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Produces and returns (error, base offset, log_append_time_ms).
fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Bytes) -> (i16, i64, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.request(&req, 9);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset, p.log_append_time_ms)
}

/// ListOffsets v`version`: (error, timestamp, offset).
fn list_offset(conn: &mut Conn, topic: &str, ts: i64, version: i16) -> (i16, i64, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts),
                ]),
        ]);
    let resp = conn.request(&req, version);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.timestamp, p.offset)
}

// ListOffsets by timestamp answers the offset and timestamp of the first *record* at or
// after the target, inside uncompressed and compressed batches alike, and MAX_TIMESTAMP (-3)
// the first record carrying the largest timestamp.
#[test]
fn list_offsets_by_timestamp_is_record_exact() {
    let broker = Broker::start(2);
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    for (label, codec) in codecs {
        let topic = format!("lo-{label}");
        assert_eq!(create_topic(&mut broker.connect(), &topic, 1, &[]), 0);
        let mut conn = leader_conn(&broker, &topic, 0);
        // Offsets 0-3, then 4-7 with a tie at the largest timestamp (offsets 5 and 7).
        let (e, base, _) = produce(
            &mut conn,
            &topic,
            0,
            batch_at(&[1000, 1010, 1020, 1030], codec),
        );
        assert_eq!((e, base), (0, 0), "{label}");
        let (e, base, _) = produce(
            &mut conn,
            &topic,
            0,
            batch_at(&[2000, 5000, 3000, 5000], codec),
        );
        assert_eq!((e, base), (0, 4), "{label}");

        assert_eq!(
            list_offset(&mut conn, &topic, 1015, 7),
            (0, 1020, 2),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, 1010, 7),
            (0, 1010, 1),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, 0, 7),
            (0, 1000, 0),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, 1031, 7),
            (0, 2000, 4),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, 2500, 7),
            (0, 5000, 5),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, 5001, 7),
            (0, -1, -1),
            "{label}"
        );
        assert_eq!(
            list_offset(&mut conn, &topic, -3, 7),
            (0, 5000, 5),
            "{label}"
        );
        assert_eq!(list_offset(&mut conn, &topic, -1, 7).2, 8, "{label}");
        assert_eq!(list_offset(&mut conn, &topic, -2, 7).2, 0, "{label}");
    }
    // MAX_TIMESTAMP on an empty partition: offset and timestamp -1, as Kafka.
    assert_eq!(create_topic(&mut broker.connect(), "lo-empty", 1, &[]), 0);
    let mut conn = leader_conn(&broker, "lo-empty", 0);
    assert_eq!(list_offset(&mut conn, "lo-empty", -3, 7), (0, -1, -1));
}
