//! Black-box tests of fetch sessions (KIP-227) over the wire: a full fetch opens a
//! session, incremental fetches carry only changed partitions both ways, and the error
//! paths answer as Kafka. Each starts the real binary and speaks Kafka bytes.

mod common;

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;

const TOPIC: &str = "fs";

/// The broker's `osprey_fetch_sessions` gauge of shard 0, read from /metrics.
fn sessions_gauge(broker: &Broker) -> f64 {
    use std::io::{Read, Write};
    let addr = broker.admin.expect("admin address");
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read /metrics");
    out.lines()
        .find_map(|l| l.strip_prefix("osprey_fetch_sessions{shard=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .expect("osprey_fetch_sessions sample")
}

fn produce(conn: &mut Conn, partition: i32, n: usize) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch(n, 100, Compression::None))),
                ]),
        ]);
    let r = conn.request(&req, 9);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

/// (partition, error, high watermark, record bytes) of one answered partition.
type Part = (i32, i16, i64, usize);

/// One fetch in a session: `parts` as (partition, fetch offset), `forget` partitions.
/// Returns (error, session id, the answered partitions).
fn fetch(
    conn: &mut Conn,
    session_id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
    forget: &[i32],
) -> (i16, i32, Vec<Part>) {
    let topics = if parts.is_empty() {
        vec![]
    } else {
        vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20)
                                .with_current_leader_epoch(-1)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect(),
                ),
        ]
    };
    let forgotten = if forget.is_empty() {
        vec![]
    } else {
        vec![
            ForgottenTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(forget.to_vec()),
        ]
    };
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(50 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    let r = conn.request(&req, 12);
    let mut out = Vec::new();
    for t in &r.responses {
        assert_eq!(t.topic.0.as_str(), TOPIC);
        for p in &t.partitions {
            let bytes = p.records.as_ref().map(|b| b.len()).unwrap_or(0);
            out.push((p.partition_index, p.error_code, p.high_watermark, bytes));
        }
    }
    (r.error_code, r.session_id, out)
}

/// Partition ids of an answer.
fn ids(parts: &[Part]) -> Vec<i32> {
    parts.iter().map(|p| p.0).collect()
}

// Proves the session protocol end to end: epoch 0 opens a session and answers every
// partition; an incremental fetch with nothing new answers none; new data on one partition
// answers that one only; a forgotten partition is not answered even with new data; a
// partition added back (and an erroring one) is answered; a wrong epoch is
// INVALID_FETCH_SESSION_EPOCH and an unknown id FETCH_SESSION_ID_NOT_FOUND, each with no
// partitions and session id 0; epoch -1 closes the session and fetches without one.
#[test]
fn incremental_fetch_sessions() {
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, TOPIC, 3, &[]), 0);
    produce(&mut conn, 0, 2);

    let all = [(0, 0), (1, 0), (2, 0)];
    let (code, id, parts) = fetch(&mut conn, 0, 0, &all, &[]);
    assert_eq!(code, 0);
    assert!(id > 0, "a full fetch with epoch 0 opens a session");
    assert_eq!(sessions_gauge(&broker), 1.0);
    assert_eq!(ids(&parts), vec![0, 1, 2]);
    assert_eq!((parts[0].2, parts[0].3 > 0), (2, true));

    // The client moved past partition 0's records; nothing else changed.
    let (code, sid, parts) = fetch(&mut conn, id, 1, &[(0, 2)], &[]);
    assert_eq!((code, sid), (0, id));
    assert!(
        parts.is_empty(),
        "unchanged partitions are left out: {parts:?}"
    );

    produce(&mut conn, 1, 1);
    let (code, _, parts) = fetch(&mut conn, id, 2, &[], &[]);
    assert_eq!(code, 0);
    assert_eq!(ids(&parts), vec![1], "only the partition with new data");
    assert_eq!((parts[0].2, parts[0].3 > 0), (1, true));

    // Error paths: a replayed epoch, an unknown session.
    let (code, sid, parts) = fetch(&mut conn, id, 2, &[], &[]);
    assert_eq!((code, sid, parts.len()), (71, 0, 0));
    let other = if id == i32::MAX { id - 1 } else { id + 1 };
    let (code, sid, parts) = fetch(&mut conn, other, 1, &[], &[]);
    assert_eq!((code, sid, parts.len()), (70, 0, 0));

    // Forget partition 1, then write to it: not answered.
    let (code, _, parts) = fetch(&mut conn, id, 3, &[(1, 1)], &[1]);
    assert_eq!((code, parts.len()), (0, 0));
    produce(&mut conn, 1, 1);
    let (code, _, parts) = fetch(&mut conn, id, 4, &[], &[]);
    assert_eq!((code, parts.len()), (0, 0), "{parts:?}");

    // Add it back, and a partition that does not exist: both answered; the error again
    // on the next fetch (errors are always answered), partition 1 not (nothing new).
    let (code, _, parts) = fetch(&mut conn, id, 5, &[(1, 2), (9, 0)], &[]);
    assert_eq!(code, 0);
    assert_eq!(ids(&parts), vec![1, 9]);
    assert_eq!((parts[0].2, parts[0].3 > 0, parts[1].1), (2, false, 3));
    let (_, _, parts) = fetch(&mut conn, id, 6, &[], &[]);
    assert_eq!(ids(&parts), vec![9]);

    // Epoch -1 closes the session: a full sessionless answer, then the id is gone.
    let (code, sid, parts) = fetch(&mut conn, id, -1, &all, &[]);
    assert_eq!((code, sid, ids(&parts)), (0, 0, vec![0, 1, 2]));
    let (code, _, _) = fetch(&mut conn, id, 7, &[], &[]);
    assert_eq!(code, 70);
    assert_eq!(sessions_gauge(&broker), 0.0);

    // A session lives on its node, not on the connection: a new connection continues it.
    let (_, id, _) = fetch(&mut conn, 0, 0, &all, &[]);
    let mut conn2 = broker.connect();
    let (code, sid, parts) = fetch(&mut conn2, id, 1, &[(0, 2), (1, 2)], &[]);
    assert_eq!((code, sid, parts.len()), (0, id, 0), "{parts:?}");
}
