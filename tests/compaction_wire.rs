//! Log compaction over the wire: compacted topics' configs (validation, DescribeConfigs
//! defaults), keyless records refused, and a compacted topic read back from offset 0 after
//! the broker's cleaner ran (`--log-cleaner-backoff-ms`): exactly the latest value per key,
//! no tombstoned key, offsets kept with gaps, and a fetch inside a gap answering the next
//! batch.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shards::batch::BatchHeader;

/// A record to produce: (key, value; None is a tombstone).
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);
/// A record read back: (offset, key, value).
type Read = (i64, Vec<u8>, Option<Vec<u8>>);

/// Distinct keys written.
const KEYS: usize = 100;
/// Updates of every key.
const ROUNDS: usize = 10;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of (key, value) records; value None is a tombstone.
fn keyed(records: &[KeyValue], compression: Compression) -> Bytes {
    let now = now_ms();
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: k.clone().map(Bytes::from),
            value: v.clone().map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> (i16, Option<String>) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.request(&req, 9);
    let p = &resp.responses[0].partition_responses[0];
    (
        p.error_code,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// One fetch at `offset`: (error, high watermark, bytes).
fn fetch(conn: &mut Conn, topic: &str, offset: i64, max_bytes: i32) -> (i16, i64, Bytes) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1),
                ]),
        ]);
    let resp = conn.request(&req, 12);
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

/// Every record from offset 0 to the high watermark, as a consumer reads them: (offset,
/// key, value). The next fetch offset follows each response's last batch (lastOffsetDelta),
/// as clients do.
fn read_all(conn: &mut Conn, topic: &str) -> (Vec<Read>, i64, Vec<BatchHeader>) {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    let mut offset = 0;
    loop {
        let (err, hw, bytes) = fetch(conn, topic, offset, 64 << 10);
        assert_eq!(err, 0);
        if offset >= hw || bytes.is_empty() {
            return (out, hw, headers);
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let h = shards::batch::parse_header(&bytes[pos..]).unwrap();
            offset = h.last_offset() + 1;
            pos += h.total_bytes();
            headers.push(h);
        }
        for r in decode_records(&bytes) {
            out.push((
                r.offset,
                r.key.unwrap().to_vec(),
                r.value.map(|v| v.to_vec()),
            ));
        }
    }
}

fn value(round: usize, key: usize) -> Vec<u8> {
    let mut v = format!("r{round}-k{key}-").into_bytes();
    v.resize(400, b'x');
    v
}

/// The topic's configs as DescribeConfigs reports them: name -> (value, source).
fn describe(conn: &mut Conn, topic: &str) -> BTreeMap<String, (String, i8)> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None),
    ]);
    let resp = conn.request(&req, 4);
    resp.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    c.config_source,
                ),
            )
        })
        .collect()
}

// Proves compaction end to end over the wire: keyed updates and tombstones produced to a
// topic with cleanup.policy=compact, small segments, min.cleanable.dirty.ratio=0.01 and
// delete.retention.ms=0 are cleaned by the broker's cleaner; reading from offset 0 then
// gives exactly the latest value of each live key (no tombstoned key), in growing offsets
// with gaps, the high watermark unchanged; a fetch at a removed offset answers the next
// batch; compressed batches are cleaned too.
#[test]
fn compacted_topic_reads_latest_value_per_key() {
    let tmp = tmpdir();
    let mut broker = Broker::start_in(tmp.path(), 1, &["--log-cleaner-backoff-ms", "100"]);
    let mut c = broker.connect();
    let topic = "compacted";
    let code = create_topic(
        &mut c,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "65536"),
            ("segment.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    );
    assert_eq!(code, 0);
    let mut p = leader_conn(&broker, topic, 0);
    let mut want: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut produced = 0i64;
    for round in 0..ROUNDS {
        for k0 in (0..KEYS).step_by(10) {
            let recs: Vec<KeyValue> = (k0..k0 + 10)
                .map(|k| {
                    let v = (round + 1 < ROUNDS || k % 5 != 0).then(|| value(round, k));
                    (Some(format!("key-{k}").into_bytes()), v)
                })
                .collect();
            // Every other round compressed: the cleaner reads those through the broker's
            // decompressor.
            let compression = if round % 2 == 0 {
                Compression::None
            } else {
                Compression::Lz4
            };
            assert_eq!(produce(&mut p, topic, keyed(&recs, compression)).0, 0);
            produced += recs.len() as i64;
            for (k, v) in recs {
                want.insert(k.unwrap(), v);
            }
        }
    }
    // segment.ms passes: the next record rolls, so every update is in a sealed segment.
    std::thread::sleep(Duration::from_millis(1100));
    let end = vec![(Some(b"end".to_vec()), Some(b"x".to_vec()))];
    assert_eq!(produce(&mut p, topic, keyed(&end, Compression::None)).0, 0);
    produced += 1;
    want.insert(b"end".to_vec(), Some(b"x".to_vec()));
    let live: BTreeMap<Vec<u8>, Vec<u8>> = want
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (recs, hw, headers) = loop {
        let (recs, hw, headers) = read_all(&mut c_leader(&broker, topic), topic);
        if recs.len() == live.len() || Instant::now() > deadline {
            break (recs, hw, headers);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(hw, produced, "the high watermark stays the log end");
    assert_eq!(
        recs.len(),
        live.len(),
        "one record per live key after cleaning"
    );
    let got: BTreeMap<Vec<u8>, Vec<u8>> = recs
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone().expect("no tombstone left")))
        .collect();
    assert_eq!(got, live);
    for w in recs.windows(2) {
        assert!(w[0].0 < w[1].0, "offsets grow");
    }
    assert_eq!(
        recs.last().unwrap().0,
        produced - 1,
        "the last record keeps its offset"
    );
    // The last round's values came in LZ4 batches (the encoder made one batch per record
    // here): they are served as stored, still compressed.
    assert!(
        headers.iter().any(|h| h.compression() == 3),
        "no LZ4 batch left among {} batches",
        headers.len()
    );
    // Offset 0 held key-0's first value in a batch whose records were all superseded: the
    // fetch answers the next batch still there (possibly one the cleaner emptied to keep
    // a segment's end offset), never an error, and no record before the first kept one.
    let first_kept = recs[0].0;
    assert!(first_kept > 0);
    let (err, _, bytes) = fetch(&mut p, topic, 0, 1);
    assert_eq!(err, 0);
    let h = shards::batch::parse_header(&bytes).unwrap();
    assert!(h.base_offset > 0, "the removed batch at 0 was answered");
    assert!(
        decode_records(&bytes)
            .iter()
            .all(|r| r.offset >= first_kept)
    );
    // Keyless records are refused on a compacted topic, as Kafka does.
    let (err, msg) = produce(
        &mut p,
        topic,
        keyed(&[(None, Some(b"v".to_vec()))], Compression::None),
    );
    assert_eq!(err, 87, "INVALID_RECORD");
    assert!(msg.unwrap_or_default().contains("without key"));
    let (err, _) = produce(
        &mut p,
        topic,
        keyed(&[(None, Some(b"v".to_vec()))], Compression::Lz4),
    );
    assert_eq!(err, 87, "INVALID_RECORD (compressed)");
    // After a restart the compacted log recovers as it was (gapped segments scanned or
    // their index files loaded).
    drop((c, p));
    assert_eq!(broker.stop(), Some(0));
    let broker = Broker::start_in(tmp.path(), 1, &[]);
    let (again, hw2, _) = read_all(&mut c_leader(&broker, topic), topic);
    assert_eq!(hw2, produced);
    assert_eq!(again, recs);
}

fn c_leader(broker: &Broker, topic: &str) -> Conn {
    leader_conn(broker, topic, 0)
}

// Proves the compaction configs are validated as Kafka does (policy list items, ratio in
// [0, 1], lags and retention ranges) and that DescribeConfigs shows them with Kafka's
// defaults when the topic sets none.
#[test]
fn compaction_configs_validated_and_described() {
    let broker = Broker::start(1);
    let mut c = broker.connect();
    for (k, v) in [
        ("cleanup.policy", "compacted"),
        ("cleanup.policy", "compact,bogus"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "abc"),
        ("min.compaction.lag.ms", "-1"),
        ("max.compaction.lag.ms", "0"),
        ("delete.retention.ms", "-5"),
    ] {
        assert_eq!(create_topic(&mut c, "bad", 1, &[(k, v)]), 40, "{k}={v}");
    }
    assert_eq!(
        create_topic(&mut c, "both", 1, &[("cleanup.policy", "compact,delete")]),
        0
    );
    let d = describe(&mut c, "both");
    assert_eq!(d["cleanup.policy"], ("compact,delete".to_string(), 1));
    // Kafka's defaults (source 5 = DEFAULT_CONFIG).
    assert_eq!(d["min.cleanable.dirty.ratio"], ("0.5".to_string(), 5));
    assert_eq!(d["min.compaction.lag.ms"], ("0".to_string(), 5));
    assert_eq!(
        d["max.compaction.lag.ms"],
        ("9223372036854775807".to_string(), 5)
    );
    assert_eq!(d["delete.retention.ms"], ("86400000".to_string(), 5));
    let d = describe(&mut c, "bad");
    assert!(d.is_empty(), "no topic was created with a bad config");
}
