//! Black-box tests of the broker over the wire: each starts the real binary on free ports
//! and speaks Kafka bytes to it.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

fn metadata(conn: &mut Conn, topics: Option<&[&str]>, auto_create: bool) -> MetadataResponse {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|t| {
            t.iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(auto_create);
    conn.request(&req, 12)
}

/// Connection to the node that leads `topic`/`partition`.
fn leader_conn(broker: &Broker, topic: &str, partition: i32) -> Conn {
    let mut c = broker.connect();
    let md = metadata(&mut c, Some(&[topic]), false);
    let leader = md.topics[0].partitions[partition as usize].leader_id.0;
    broker.connect_node(leader as usize)
}

fn produce(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
    version: i16,
) -> (i16, i64) {
    produce_to_v(conn, topic, partition, acks, records, version)
}

fn fetch(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    version: i16,
) -> (i16, i64, Bytes) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(10 << 20)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1),
                ]),
        ]);
    let resp = conn.request(&req, version);
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

/// The batches as the broker stores them: each baseOffset rewritten, the rest unchanged.
/// The batches as the leader stores them: offsets from `base` on, and its leader epoch
/// (0: a topic that never changed leader) in partitionLeaderEpoch, as Kafka stamps it.
fn rebase(batches: &Bytes, mut base: i64) -> Bytes {
    let mut out = BytesMut::from(&batches[..]);
    let mut pos = 0;
    while pos < out.len() {
        let len = i32::from_be_bytes(out[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let last_delta = i32::from_be_bytes(out[pos + 23..pos + 27].try_into().unwrap()) as i64;
        out[pos..pos + 8].copy_from_slice(&base.to_be_bytes());
        out[pos + 12..pos + 16].copy_from_slice(&0i32.to_be_bytes());
        base += last_delta + 1;
        pos += 12 + len;
    }
    out.freeze()
}

fn list_offset(conn: &mut Conn, topic: &str, partition: i32, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(ts),
                ]),
        ]);
    let resp = conn.request(&req, 7);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

// ApiVersions answers every version 0..=4 with the registry, and an unknown version with
// error 35 plus the list in v0 format, which is how clients negotiate down.
#[test]
fn api_versions_negotiation() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    for v in 0..=4 {
        let resp = c.request(&ApiVersionsRequest::default(), v);
        assert_eq!(resp.error_code, 0);
        let produce = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == 0)
            .expect("produce advertised");
        assert_eq!((produce.min_version, produce.max_version), (0, 9));
        let fetch = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == 1)
            .expect("fetch advertised");
        assert!(fetch.max_version >= 12);
    }
    // A future ApiVersions v9: the broker answers in v0 with UNSUPPORTED_VERSION.
    let (corr, frame) = c.encode_request(&ApiVersionsRequest::default(), 3);
    let mut raw = BytesMut::from(&frame[..]);
    raw[6..8].copy_from_slice(&9i16.to_be_bytes());
    c.send_raw(&raw);
    let resp = c.read_response::<ApiVersionsRequest>(corr, 0);
    assert_eq!(resp.error_code, 35);
    assert!(!resp.api_keys.is_empty());
}

// Metadata lists one broker node per shard, auto-creates a requested topic (Kafka's
// default), and reports unknown topics when the client disallows auto-creation.
#[test]
fn metadata_nodes_and_auto_create() {
    let broker = Broker::start(2);
    let mut c = broker.connect();
    let md = metadata(&mut c, Some(&["auto-topic"]), true);
    assert_eq!(md.brokers.len(), 2);
    assert_eq!(md.brokers[1].port as u16, broker.nodes[1].port());
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 1);
    let md = metadata(&mut c, Some(&["not-created"]), false);
    assert_eq!(md.topics[0].error_code, 3);
    let md = metadata(&mut c, None, false);
    assert_eq!(md.topics.len(), 1);
}

// CreateTopics validates like Kafka: duplicates, bad names, bad configs, replication > 1,
// validate_only creates nothing; DeleteTopics and CreatePartitions change the metadata.
#[test]
fn topic_admin_operations() {
    let broker = Broker::start(2);
    let mut c = broker.connect();
    assert_eq!(
        create_topic(&mut c, "orders", 4, &[("retention.ms", "60000")]),
        0
    );
    assert_eq!(create_topic(&mut c, "orders", 4, &[]), 36);
    assert_eq!(create_topic(&mut c, "bad/name", 1, &[]), 17);
    assert_eq!(
        create_topic(&mut c, "cfg", 1, &[("retention.ms", "abc")]),
        40
    );
    assert_eq!(create_topic(&mut c, "cfg", 1, &[("no.such", "1")]), 40);
    assert_eq!(create_topic(&mut c, "zero", 0, &[]), 37);
    let rf3 = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("rf3"))
            .with_num_partitions(1)
            .with_replication_factor(3),
    ]);
    assert_eq!(c.request(&rf3, 7).topics[0].error_code, 38);
    let validate = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("dry"))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]);
    assert_eq!(c.request(&validate, 7).topics[0].error_code, 0);
    assert_eq!(
        metadata(&mut c, Some(&["dry"]), false).topics[0].error_code,
        3
    );

    let md = metadata(&mut c, Some(&["orders"]), false);
    let leaders: std::collections::BTreeSet<i32> = md.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_id.0)
        .collect();
    assert_eq!(leaders.len(), 2, "partitions spread over both shards");

    let grow = CreatePartitionsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
            .with_name(name("orders"))
            .with_count(6),
    ]);
    assert_eq!(c.request(&grow, 3).results[0].error_code, 0);
    assert_eq!(
        metadata(&mut c, Some(&["orders"]), false).topics[0]
            .partitions
            .len(),
        6
    );
    assert_eq!(
        c.request(&grow, 3).results[0].error_code,
        37,
        "shrinking or same count refused"
    );

    let configs = c.request(
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders")),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("0")),
        ]),
        4,
    );
    let retention = configs.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_ref().unwrap().as_str(), "60000");
    assert_eq!(retention.config_source, 1);
    assert!(
        configs.results[1]
            .configs
            .iter()
            .any(|c| c.name.as_str() == "num.partitions")
    );

    let del =
        DeleteTopicsRequest::default().with_topic_names(vec![name("orders"), name("missing")]);
    let resp = c.request(&del, 5);
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[1].error_code, 3);
    assert_eq!(
        metadata(&mut c, Some(&["orders"]), false).topics[0].error_code,
        3
    );
    // Recreating the name starts an empty log.
    assert_eq!(create_topic(&mut c, "orders", 1, &[]), 0);
    let mut l = leader_conn(&broker, "orders", 0);
    assert_eq!(list_offset(&mut l, "orders", 0, -1), (0, 0));
}

// Produce with acks=1 and acks=all returns consecutive base offsets; Fetch at every
// flexible and non-flexible version returns the stored batches byte for byte.
#[test]
fn produce_and_fetch_roundtrip() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "t", 1, &[]), 0);
    let mut l = leader_conn(&broker, "t", 0);
    let mut sent = BytesMut::new();
    let mut expected_offset = 0;
    for (i, compression) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let b = batch(10, 100, compression);
        let acks = if i % 2 == 0 { -1 } else { 1 };
        let (err, base) = produce(&mut l, "t", 0, b.clone(), acks, 9);
        assert_eq!(err, 0);
        assert_eq!(base, expected_offset);
        expected_offset += 10;
        sent.extend_from_slice(&rebase(&b, base));
    }
    for version in [4, 7, 11, 12] {
        let (err, hw, records) = fetch(&mut l, "t", 0, 0, 100, version);
        assert_eq!(err, 0);
        assert_eq!(hw, 50);
        assert!(
            records == sent.clone().freeze(),
            "fetch v{version} must return the stored bytes"
        );
    }
    let recs = decode_records(&fetch(&mut l, "t", 0, 0, 0, 12).2);
    assert_eq!(recs.len(), 50);
    assert_eq!(recs[49].offset, 49);
    assert_eq!(recs[3].key.as_deref(), Some(&b"k3"[..]));
    // Out of range and unknown partition are error codes, not closed connections.
    assert_eq!(fetch(&mut l, "t", 0, 1000, 0, 12).0, 1);
    assert_eq!(fetch(&mut l, "t", 7, 0, 0, 12).0, 3);
    assert_eq!(list_offset(&mut l, "t", 0, -2), (0, 0));
    assert_eq!(list_offset(&mut l, "t", 0, -1), (0, 50));
    let (err, off) = list_offset(&mut l, "t", 0, 0);
    assert_eq!((err, off), (0, 0));
    assert_eq!(list_offset(&mut l, "t", 0, i64::MAX / 2).1, -1);
}

// A long-poll Fetch returns as soon as another connection produces, far before max_wait.
#[test]
fn fetch_long_poll_wakes_on_produce() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "lp", 1, &[]), 0);
    let mut consumer = leader_conn(&broker, "lp", 0);
    let mut producer = leader_conn(&broker, "lp", 0);
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(10_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("lp"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let (corr, frame) = consumer.encode_request(&req, 12);
    let start = Instant::now();
    consumer.send_raw(&frame);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        produce(
            &mut producer,
            "lp",
            0,
            batch(1, 10, Compression::None),
            1,
            9
        )
        .0,
        0
    );
    let resp = consumer.read_response::<FetchRequest>(corr, 12);
    let waited = start.elapsed();
    assert!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(
        waited < Duration::from_secs(3),
        "long-poll took {waited:?}, should wake on produce"
    );
}

// With two shards, a partition owned by shard 1 can be produced to and fetched through
// shard 0's port: the router forwards instead of failing.
#[test]
fn requests_for_another_shard_are_forwarded() {
    let broker = Broker::start(2);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "fw", 2, &[]), 0);
    let md = metadata(&mut c, Some(&["fw"]), false);
    for p in &md.topics[0].partitions {
        let other = 1 - p.leader_id.0 as usize;
        let mut wrong = broker.connect_node(other);
        let (err, base) = produce(
            &mut wrong,
            "fw",
            p.partition_index,
            batch(3, 10, Compression::None),
            -1,
            9,
        );
        assert_eq!((err, base), (0, 0));
        let (err, hw, records) = fetch(&mut wrong, "fw", p.partition_index, 0, 0, 12);
        assert_eq!((err, hw), (0, 3));
        assert_eq!(decode_records(&records).len(), 3);
    }
}

// Idempotent producer: a retried batch gets its original offset and is stored once; a
// sequence gap gets OUT_OF_ORDER_SEQUENCE_NUMBER; the state survives a restart.
#[test]
fn idempotent_producer_dedup_and_gaps() {
    let tmp = tmpdir();
    let mut broker = Broker::start_in(tmp.path(), 1, &[]);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "idem", 1, &[]), 0);
    let init = c.request(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
        4,
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let init2 = c.request(
        &InitProducerIdRequest::default().with_transactional_id(None),
        4,
    );
    assert_ne!(init2.producer_id.0, pid, "ids are unique");
    let mut l = leader_conn(&broker, "idem", 0);
    let b0 = batch_with_producer(5, 10, Compression::None, pid, 0, 0);
    assert_eq!(produce(&mut l, "idem", 0, b0.clone(), -1, 9), (0, 0));
    assert_eq!(
        produce(&mut l, "idem", 0, b0.clone(), -1, 9),
        (0, 0),
        "retry returns the original offset"
    );
    let b1 = batch_with_producer(5, 10, Compression::None, pid, 0, 5);
    assert_eq!(produce(&mut l, "idem", 0, b1.clone(), -1, 9), (0, 5));
    let gap = batch_with_producer(5, 10, Compression::None, pid, 0, 20);
    assert_eq!(produce(&mut l, "idem", 0, gap, -1, 9).0, 45);
    assert_eq!(list_offset(&mut l, "idem", 0, -1), (0, 10));
    drop(l);
    drop(c);
    assert_eq!(broker.stop(), Some(0));
    let broker = Broker::start_in(tmp.path(), 1, &[]);
    let mut l = leader_conn(&broker, "idem", 0);
    assert_eq!(
        produce(&mut l, "idem", 0, b1, -1, 9),
        (0, 5),
        "dedup state survives restart"
    );
    let b2 = batch_with_producer(1, 10, Compression::None, pid, 0, 10);
    assert_eq!(produce(&mut l, "idem", 0, b2, -1, 9), (0, 10));
    let mut c = broker.connect();
    let after = c.request(
        &InitProducerIdRequest::default().with_transactional_id(None),
        4,
    );
    assert!(
        after.producer_id.0 != pid && after.producer_id.0 != init2.producer_id.0,
        "no id reuse after restart"
    );
}

// A batch with a flipped byte is refused with CORRUPT_MESSAGE and nothing is stored; the
// connection stays usable.
#[test]
fn corrupt_batch_is_refused() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "crc", 1, &[]), 0);
    let mut l = leader_conn(&broker, "crc", 0);
    let mut b = BytesMut::from(&batch(3, 50, Compression::None)[..]);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert_eq!(produce(&mut l, "crc", 0, b.freeze(), -1, 9).0, 2);
    assert_eq!(list_offset(&mut l, "crc", 0, -1), (0, 0));
    assert_eq!(
        produce(&mut l, "crc", 0, Bytes::from_static(b"garbage"), 1, 9).0,
        2
    );
    assert_eq!(
        produce(&mut l, "crc", 0, batch(1, 1, Compression::None), 1, 9),
        (0, 0)
    );
}

// Oversized, negative and truncated frames, unknown API keys and undecodable bodies close
// that connection only; the broker keeps serving others and never crashes.
#[test]
fn bad_frames_close_the_connection_only() {
    let mut broker = Broker::start(1);
    let cases: Vec<Vec<u8>> = vec![
        (200 * 1024 * 1024i32).to_be_bytes().to_vec(),
        (-5i32).to_be_bytes().to_vec(),
        {
            let mut b = BytesMut::new();
            b.put_i32(10);
            b.put_i16(999);
            b.put_i16(0);
            b.put_i32(1);
            b.put_i16(-1);
            b.to_vec()
        },
        {
            let mut b = BytesMut::new();
            b.put_i32(16);
            b.put_i16(3);
            b.put_i16(12);
            b.put_i32(1);
            b.put_i16(-1);
            b.put_u8(0);
            b.put_slice(&[0xff; 5]);
            b.to_vec()
        },
        {
            // Fetch v1: below the supported range.
            let mut b = BytesMut::new();
            b.put_i32(10);
            b.put_i16(1);
            b.put_i16(1);
            b.put_i32(1);
            b.put_i16(-1);
            b.to_vec()
        },
    ];
    for case in cases {
        let mut c = broker.connect();
        c.send_raw(&case);
        assert!(
            c.is_closed_by_peer(),
            "connection closed after {:?}",
            &case[..case.len().min(12)]
        );
    }
    // Truncated frame: length says 100, the client sends 20 bytes and hangs up.
    {
        let mut c = broker.connect();
        let mut b = BytesMut::new();
        b.put_i32(100);
        b.put_slice(&[0u8; 20]);
        c.send_raw(&b);
        drop(c);
    }
    assert!(broker.is_running());
    let mut c = broker.connect();
    assert_eq!(c.request(&ApiVersionsRequest::default(), 3).error_code, 0);
}

// Produce v2 (message format v1) is answered UNSUPPORTED_VERSION per partition, as Kafka 4.
#[test]
fn old_produce_versions_get_unsupported_version() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    let mut body = BytesMut::new();
    body.put_i16(0); // api key: Produce
    body.put_i16(2);
    body.put_i32(77);
    body.put_i16(-1);
    body.put_i16(1); // acks
    body.put_i32(1000);
    body.put_i32(1);
    body.put_i16(1);
    body.put_slice(b"x");
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(0);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    c.send_raw(&frame);
    let resp = c.read_frame().expect("a response");
    assert_eq!(&resp[0..4], &77i32.to_be_bytes());
    // topics(1) name(x) partitions(1) index(0) error(35)
    assert_eq!(
        &resp[4 + 4 + 3 + 4 + 4..4 + 4 + 3 + 4 + 4 + 2],
        &35i16.to_be_bytes()
    );
}

// Acknowledged acks=all data, topics and their configs survive a kill -9 and restart.
#[test]
fn acks_all_data_survives_kill_9() {
    let tmp = tmpdir();
    let mut broker = Broker::start_in(tmp.path(), 2, &[]);
    let mut c = broker.connect();
    assert_eq!(
        create_topic(&mut c, "durable", 4, &[("segment.bytes", "1048576")]),
        0
    );
    let mut total = 0;
    for p in 0..4 {
        let mut l = leader_conn(&broker, "durable", p);
        for _ in 0..20 {
            assert_eq!(
                produce(
                    &mut l,
                    "durable",
                    p,
                    batch(10, 200, Compression::Lz4),
                    -1,
                    9
                )
                .0,
                0
            );
            total += 10;
        }
    }
    broker.kill();
    let broker = Broker::start_in(tmp.path(), 2, &[]);
    let mut got = 0;
    for p in 0..4 {
        let mut l = leader_conn(&broker, "durable", p);
        let mut offset = 0;
        loop {
            let (err, hw, records) = fetch(&mut l, "durable", p, offset, 0, 12);
            assert_eq!(err, 0);
            assert_eq!(hw, 200);
            if records.is_empty() {
                break;
            }
            let recs = decode_records(&records);
            offset = recs.last().unwrap().offset + 1;
            got += recs.len();
            if offset >= hw {
                break;
            }
        }
    }
    assert_eq!(got, total);
    let mut c = broker.connect();
    let cfg = c.request(
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("durable")),
        ]),
        1,
    );
    let seg = cfg.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "segment.bytes")
        .unwrap();
    assert_eq!(seg.value.as_ref().unwrap().as_str(), "1048576");
}

// SIGTERM stops the broker cleanly (exit 0) while a client is connected mid-session.
#[test]
fn sigterm_shuts_down_cleanly() {
    let mut broker = Broker::start(2);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "bye", 1, &[]), 0);
    let _idle = broker.connect();
    assert_eq!(broker.stop(), Some(0));
}

// Two brokers on one data directory: the second fails with a clear error instead of
// corrupting the first one's files.
#[test]
fn data_dir_is_locked() {
    let broker = Broker::start(1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--data-dir",
        ])
        .arg(&broker.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another osprey"));
}

// Fetch honours max_bytes across partitions as Kafka does (KIP-74): the first partition's
// first batch comes back even when larger than the limit, later partitions report their
// high watermark without data.
#[test]
fn fetch_max_bytes_across_partitions() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "mb", 2, &[]), 0);
    let mut l = leader_conn(&broker, "mb", 0);
    for p in 0..2 {
        assert_eq!(
            produce(&mut l, "mb", p, batch(4, 1000, Compression::None), 1, 9).0,
            0
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(100)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("mb"))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(100)
                        })
                        .collect(),
                ),
        ]);
    let resp = l.request(&req, 12);
    let parts = &resp.responses[0].partitions;
    let first = parts[0].records.clone().unwrap_or_default();
    assert!(first.len() > 100, "one whole batch despite max_bytes");
    assert!(!decode_records(&first).is_empty());
    assert!(parts[1].records.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(parts[1].high_watermark, 4);
}

// SIGTERM does not wait for a parked long-poll Fetch (max_wait 30 s): shutdown answers it
// and exits cleanly within a few seconds.
#[test]
fn shutdown_does_not_wait_for_long_polls() {
    let mut broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "park", 1, &[]), 0);
    let mut consumer = leader_conn(&broker, "park", 0);
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(30_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("park"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let (_, frame) = consumer.encode_request(&req, 12);
    consumer.send_raw(&frame);
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(broker.stop(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        start.elapsed()
    );
}

// min_bytes = 0 at the log end answers at once (Kafka's rule: 0 bytes satisfy it), and a
// partition named twice is answered once.
#[test]
fn fetch_min_bytes_zero_and_duplicate_partitions() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "mz", 1, &[]), 0);
    let mut l = leader_conn(&broker, "mz", 0);
    let part = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(10_000)
        .with_min_bytes(0)
        .with_max_bytes(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("mz"))
                .with_partitions(vec![part.clone(), part]),
        ]);
    let start = Instant::now();
    let resp = l.request(&req, 12);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "min_bytes 0 waited {:?}",
        start.elapsed()
    );
    assert_eq!(resp.responses[0].partitions.len(), 1);
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
}

// The README's start command: no --data-dir, so the default relative ./osprey-data under
// the working directory. Topics are created, acks=all produce is acknowledged and fetched
// back, and the data is under the working directory (glommio opens directories relative
// to fd -1, so every directory the storage syncs must be absolute).
#[test]
fn default_relative_data_dir_serves_produce_and_fetch() {
    let broker = Broker::start_default_dir(1);
    let mut c = broker.connect();
    assert_eq!(create_topic(&mut c, "rel", 2, &[]), 0);
    let mut l = leader_conn(&broker, "rel", 1);
    let b = batch(5, 100, Compression::None);
    assert_eq!(produce(&mut l, "rel", 1, b.clone(), -1, 9), (0, 0));
    let (err, hw, records) = fetch(&mut l, "rel", 1, 0, 0, 12);
    assert_eq!((err, hw), (0, 5));
    assert!(records == rebase(&b, 0));
    assert!(broker.data_dir.join("topics").join("rel-1").is_dir());
}
