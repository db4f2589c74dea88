//! Black-box tests of Kafka semantics that clients depend on beyond the byte format: record-
//! level ListOffsets, OffsetCommit to unknown partitions, authorized operations, group
//! configs and LogAppendTime topics. Each starts the real binary and speaks Kafka bytes.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One batch with one record per timestamp (value "v<i>"). The crate's encoder starts a new
/// batch where offset - sequence changes, so sequences follow offsets from -1 (base -1).
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
            sequence: i as i32 - 1,
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
    let buf = buf.freeze();
    assert_eq!(batch_headers(&buf).len(), 1, "one batch");
    assert_eq!(&buf[53..57], &(-1i32).to_be_bytes(), "baseSequence -1");
    buf
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

/// OffsetCommit v`version` of (topic, partition, offset); the error codes in request order.
fn commit_codes(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    offsets: &[(&str, i32, i64)],
    version: i16,
) -> Vec<i16> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let topics = offsets
        .iter()
        .map(|(t, p, o)| {
            OffsetCommitRequestTopic::default()
                .with_name(name(t))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(*o)
                        .with_committed_leader_epoch(-1),
                ])
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(if generation < 0 { "" } else { "m" }))
        .with_topics(topics);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = conn.request(&req, version);
        let codes: Vec<i16> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        // COORDINATOR_LOAD_IN_PROGRESS right after start-up.
        if codes.contains(&14) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        return codes;
    }
}

/// Committed (topic, partition, offset) of `group`, all topics (OffsetFetch v7).
fn committed(conn: &mut Conn, group: &str) -> Vec<(String, i32, i64)> {
    let r = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None),
        7,
    );
    assert_eq!(r.error_code, 0);
    let mut out: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
        })
        .collect();
    out.sort();
    out
}

// OffsetCommit (and so the admin's alter-group-offsets, a commit with generation -1)
// answers UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist and for a partition
// index beyond the topic's count, stores only the others, and leaves a group alone when
// every partition is unknown.
#[test]
fn offset_commit_to_unknown_partitions_is_refused() {
    let broker = Broker::start(2);
    assert_eq!(create_topic(&mut broker.connect(), "oc", 2, &[]), 0);
    let g = "g-unknown-topics";
    let mut conn = coord_conn(&broker, g);
    for version in [2, 8, 9] {
        let codes = commit_codes(
            &mut conn,
            g,
            -1,
            &[("oc", 1, 7), ("oc", 2, 8), ("nope", 0, 9), ("oc", -1, 1)],
            version,
        );
        assert_eq!(codes, vec![0, 3, 3, 3], "v{version}");
    }
    assert_eq!(committed(&mut conn, g), vec![("oc".into(), 1, 7)]);

    // Only unknown partitions: answered per partition, the group is not created.
    let g2 = "g-only-unknown";
    let mut conn2 = coord_conn(&broker, g2);
    assert_eq!(
        commit_codes(&mut conn2, g2, -1, &[("nope", 0, 1)], 9),
        vec![3]
    );
    let listed = conn2.request(&ListGroupsRequest::default(), 4);
    assert!(
        !listed.groups.iter().any(|x| x.group_id.0.as_str() == g2),
        "no group created"
    );
    // A group error still answers the known partitions; unknown ones stay unknown.
    let codes = commit_codes(&mut conn2, "g-ghost", 3, &[("oc", 0, 1), ("nope", 0, 1)], 9);
    assert_eq!(codes[1], 3);
    assert_ne!(codes[0], 0);
}

// Authorized operations, asked for, are every operation the resource supports (no
// authorizer, as Kafka without one): Metadata's topic (v8+) and cluster (v8-10) fields,
// DescribeCluster (key 60, implemented and advertised) and DescribeGroups; not asked for,
// Kafka's "omitted" marker i32::MIN.
#[test]
fn authorized_operations_are_every_supported_operation() {
    // Kafka's AclOperation codes: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
    // CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
    let ops = |codes: &[i32]| codes.iter().fold(0i32, |v, c| v | (1 << c));
    let topic_ops = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);
    let cluster_ops = ops(&[5, 7, 8, 9, 10, 11, 12]);
    let group_ops = ops(&[3, 6, 8, 10, 11]);

    let broker = Broker::start(2);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "authz", 1, &[]), 0);
    let md = |conn: &mut Conn, version: i16, include: bool| {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("authz"))),
            ]))
            // The cluster's field is gone from v11 on (moved to DescribeCluster).
            .with_include_cluster_authorized_operations(include && version < 11)
            .with_include_topic_authorized_operations(include);
        conn.request(&req, version)
    };
    let r = md(&mut conn, 10, true);
    assert_eq!(r.topics[0].topic_authorized_operations, topic_ops);
    assert_eq!(r.cluster_authorized_operations, cluster_ops);
    let r = md(&mut conn, 12, true);
    assert_eq!(r.topics[0].topic_authorized_operations, topic_ops);
    let r = md(&mut conn, 12, false);
    assert_eq!(r.topics[0].topic_authorized_operations, i32::MIN);

    let versions = conn.request(&ApiVersionsRequest::default(), 3);
    let dc = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == 60)
        .expect("DescribeCluster advertised");
    assert_eq!((dc.min_version, dc.max_version), (0, 2));
    for version in 0..=2 {
        let req = DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true)
            .with_endpoint_type(1);
        let r = conn.request(&req, version);
        assert_eq!(r.error_code, 0, "v{version}");
        assert_eq!(r.cluster_authorized_operations, cluster_ops, "v{version}");
        // The cluster id the controller quorum chose when it first started (a UUID).
        assert_eq!(r.cluster_id.len(), 32, "{}", r.cluster_id.as_str());
        let mut ids: Vec<i32> = r.brokers.iter().map(|b| b.broker_id.0).collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1], "one node per shard");
        assert!(r.brokers.iter().all(|b| b.port > 0));
    }
    let r = conn.request(&DescribeClusterRequest::default().with_endpoint_type(1), 1);
    assert_eq!(r.cluster_authorized_operations, i32::MIN);
    let r = conn.request(&DescribeClusterRequest::default().with_endpoint_type(2), 1);
    assert_eq!(
        r.error_code, 115,
        "controllers endpoint: UNSUPPORTED_ENDPOINT_TYPE"
    );

    let g = "g-authz";
    let mut gc = coord_conn(&broker, g);
    assert_eq!(commit_codes(&mut gc, g, -1, &[("authz", 0, 1)], 9), vec![0]);
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(s(g))])
        .with_include_authorized_operations(true);
    let r = gc.request(&req, 5);
    assert_eq!(r.groups[0].error_code, 0);
    assert_eq!(r.groups[0].authorized_operations, group_ops);
    let r = gc.request(&req.clone().with_include_authorized_operations(false), 5);
    assert_eq!(r.groups[0].authorized_operations, i32::MIN);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Fetch v12 from offset 0: the stored batches.
fn fetch_all(conn: &mut Conn, topic: &str) -> Bytes {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(10 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(10 << 20)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1),
                ]),
        ]);
    let r = conn.request(&req, 12);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

/// (attributes, maxTimestamp) of every batch in `bytes`.
fn batch_headers(bytes: &Bytes) -> Vec<(i16, i64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 61 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let attributes = i16::from_be_bytes(bytes[pos + 21..pos + 23].try_into().unwrap());
        let max_ts = i64::from_be_bytes(bytes[pos + 35..pos + 43].try_into().unwrap());
        out.push((attributes, max_ts));
        pos += 12 + len;
    }
    out
}

// A topic may set message.timestamp.type=LogAppendTime (and CreateTime): its batches are
// stamped with the broker's clock on append (timestamp-type bit 3, maxTimestamp, valid CRC),
// the Produce answer carries log_append_time_ms, and timestamp lookups use the stamped time.
// CreateTime topics keep the producer's timestamps and answer log_append_time_ms -1.
#[test]
fn log_append_time_topics_are_stamped_by_the_broker() {
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    let ty = "message.timestamp.type";
    assert_eq!(
        create_topic(&mut conn, "lat", 1, &[(ty, "LogAppendTime")]),
        0
    );
    assert_eq!(create_topic(&mut conn, "ct", 1, &[(ty, "CreateTime")]), 0);
    assert_eq!(create_topic(&mut conn, "bad", 1, &[(ty, "WallClock")]), 40);

    let mut lat = leader_conn(&broker, "lat", 0);
    let before = now_ms();
    let (e, base, t1) = produce(
        &mut lat,
        "lat",
        0,
        batch_at(&[1000, 1001, 1002], Compression::None),
    );
    assert_eq!((e, base), (0, 0));
    let (e, base, t2) = produce(&mut lat, "lat", 0, batch_at(&[5, 6], Compression::Lz4));
    assert_eq!((e, base), (0, 3));
    let after = now_ms();
    assert!(
        before <= t1 && t1 <= t2 && t2 <= after,
        "{before} {t1} {t2} {after}"
    );

    let data = fetch_all(&mut lat, "lat");
    assert_eq!(decode_records(&data).len(), 5, "CRC32C still valid");
    let headers = batch_headers(&data);
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[0], (0x08, t1));
    assert_eq!(
        headers[1],
        (0x08 | 3, t2),
        "lz4 bits kept, timestamp type set"
    );
    // Every record of a LogAppendTime batch carries the batch's time.
    assert_eq!(list_offset(&mut lat, "lat", t1, 7), (0, t1, 0));
    assert_eq!(list_offset(&mut lat, "lat", -3, 7), (0, t2, 3));

    let mut ct = leader_conn(&broker, "ct", 0);
    let (e, _, t) = produce(&mut ct, "ct", 0, batch_at(&[1000, 1001], Compression::None));
    assert_eq!((e, t), (0, -1));
    assert_eq!(batch_headers(&fetch_all(&mut ct, "ct")), vec![(0, 1001)]);

    // DescribeConfigs reports the topic's type.
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("lat"))
            .with_configuration_keys(Some(vec![s(ty)])),
    ]);
    let r = conn.request(&req, 4);
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(
        r.results[0].configs[0].value.as_deref(),
        Some("LogAppendTime")
    );
}

// DescribeConfigs for a group resource (type 32) answers Kafka 4's consumer-group configs
// at their defaults, for any group name; an empty name is INVALID_REQUEST.
#[test]
fn describe_configs_for_a_group() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    let group = |n: &str, keys: Option<Vec<StrBytes>>| {
        DescribeConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(s(n))
            .with_configuration_keys(keys)
    };
    for version in [1, 4] {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            group("any-group", None),
            group("g2", Some(vec![s("consumer.heartbeat.interval.ms")])),
            group("", None),
        ]);
        let r = conn.request(&req, version);
        assert_eq!(r.results.len(), 3);
        assert_eq!(r.results[0].error_code, 0, "v{version}");
        assert_eq!(r.results[0].resource_type, 32);
        let mut got: Vec<(String, String)> = r.results[0]
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_deref().unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("consumer.heartbeat.interval.ms".into(), "5000".into()),
                ("consumer.session.timeout.ms".into(), "45000".into()),
            ]
        );
        assert_eq!(r.results[1].configs.len(), 1);
        assert_eq!(
            r.results[1].configs[0].name.as_str(),
            "consumer.heartbeat.interval.ms"
        );
        assert_eq!(r.results[2].error_code, 42, "empty group name");
    }
}
