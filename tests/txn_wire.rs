//! Transactions at the wire: KIP-890 part 1 (a partition leader verifies a producer's
//! first transactional batch with the coordinator), AddPartitionsToTxn v4 VerifyOnly,
//! transactional id expiration, ListTransactions v2 and InitProducerId's input checks.
//! Hand-written requests against the real binary.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_REQUEST: i16 = 42;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// Bound of every wait for the coordinator (topic creation, markers).
const WAIT: Duration = Duration::from_secs(20);

/// One transactional batch of `n` records of producer `pid`/`epoch` from `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000,
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
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A connection to the coordinator of `txn_id`, waiting out the topic's creation.
fn txn_coordinator(broker: &Broker, txn_id: &str) -> Conn {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = broker.connect().request(
            &FindCoordinatorRequest::default()
                .with_key(s(txn_id))
                .with_key_type(1),
            3,
        );
        if r.error_code == 0 {
            return broker.connect_node(r.node_id.0 as usize);
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// InitProducerId for `txn_id` on its coordinator, retried while it loads: (pid, epoch).
fn init_pid(coord: &mut Conn, txn_id: &str) -> (i64, i16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = coord.request(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(txn_id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            4,
        );
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        assert!(
            Instant::now() < deadline,
            "InitProducerId: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn add_partitions(coord: &mut Conn, txn_id: &str, pid: i64, epoch: i16, topic: &str, ps: &[i32]) {
    let r = coord.request(
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(txn_id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(name(topic))
                    .with_partitions(ps.to_vec()),
            ]),
        3,
    );
    for p in &r.results_by_topic_v3_and_below[0].results_by_partition {
        assert_eq!(p.partition_error_code, 0, "AddPartitionsToTxn");
    }
}

/// Produce v9 of `records` as transactional producer `txn_id` (None: no id in the request).
fn txn_produce(conn: &mut Conn, txn_id: Option<&str>, topic: &str, p: i32, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(txn_id.map(|t| TransactionalId(s(t))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(records)),
                ]),
        ]);
    conn.request(&req, 9).responses[0].partition_responses[0].error_code
}

/// The transaction's state name on its coordinator (DescribeTransactions).
fn txn_state(coord: &mut Conn, txn_id: &str) -> String {
    let r = coord.request(
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s(txn_id))]),
        0,
    );
    r.transaction_states[0].transaction_state.to_string()
}

fn end_txn(coord: &mut Conn, txn_id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    coord
        .request(
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(txn_id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(commit),
            3,
        )
        .error_code
}

fn wait_state(coord: &mut Conn, txn_id: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    while txn_state(coord, txn_id) != want {
        assert!(Instant::now() < deadline, "{txn_id} never reached {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// KIP-890 part 1: a transactional batch to a partition never added to the transaction is
// refused with INVALID_TXN_STATE and nothing is stored (the high watermark stays 0); once
// the partition is added the same batch is taken, and the next batch needs no new check.
// Without a transactional id in the request the batch is refused (Kafka's
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, with or without an authorizer).
#[test]
fn transactional_produce_to_a_partition_not_added_is_refused() {
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "v", 2, &[]), 0);
    let mut coord = txn_coordinator(&broker, "t-verify");
    let (pid, epoch) = init_pid(&mut coord, "t-verify");
    let mut leader = leader_conn(&broker, "v", 0);

    let code = txn_produce(
        &mut leader,
        Some("t-verify"),
        "v",
        0,
        txn_batch(pid, epoch, 0, 3),
    );
    assert_eq!(code, INVALID_TXN_STATE);
    assert_eq!(fetch_once(&mut leader, "v", 0, 0).1, 0, "nothing appended");

    // Partition 1 is added, partition 0 still not: only 1 takes the batch.
    add_partitions(&mut coord, "t-verify", pid, epoch, "v", &[1]);
    let code = txn_produce(
        &mut leader,
        Some("t-verify"),
        "v",
        0,
        txn_batch(pid, epoch, 0, 3),
    );
    assert_eq!(code, INVALID_TXN_STATE);
    let mut leader1 = leader_conn(&broker, "v", 1);
    // As Kafka: transactional records without a transactional id in the request.
    let code = txn_produce(&mut leader1, None, "v", 1, txn_batch(pid, epoch, 0, 3));
    assert_eq!(code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    let code = txn_produce(
        &mut leader1,
        Some("t-verify"),
        "v",
        1,
        txn_batch(pid, epoch, 0, 3),
    );
    assert_eq!(code, 0);
    // The open transaction is known to the partition now: the next batch needs no check.
    let code = txn_produce(
        &mut leader1,
        Some("t-verify"),
        "v",
        1,
        txn_batch(pid, epoch, 3, 2),
    );
    assert_eq!(code, 0);
    assert_eq!(end_txn(&mut coord, "t-verify", pid, epoch, true), 0);
    wait_state(&mut coord, "t-verify", "CompleteCommit");
    assert_eq!(
        fetch_once(&mut leader, "v", 0, 0).1,
        0,
        "partition 0 stays empty"
    );
}

// The hanging transaction KIP-890 prevents: a batch delayed until after its transaction
// was aborted (and its markers written) arrives at a partition that was added but never
// written. It would open a transaction no marker ever ends (stalling read_committed
// consumers); the leader asks the coordinator, which has no open transaction, and refuses.
#[test]
fn a_batch_arriving_after_its_transaction_was_aborted_is_refused() {
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "h", 1, &[]), 0);
    let mut coord = txn_coordinator(&broker, "t-hang");
    let (pid, epoch) = init_pid(&mut coord, "t-hang");
    add_partitions(&mut coord, "t-hang", pid, epoch, "h", &[0]);
    assert_eq!(end_txn(&mut coord, "t-hang", pid, epoch, false), 0);
    wait_state(&mut coord, "t-hang", "CompleteAbort");

    let mut leader = leader_conn(&broker, "h", 0);
    let code = txn_produce(
        &mut leader,
        Some("t-hang"),
        "h",
        0,
        txn_batch(pid, epoch, 0, 2),
    );
    assert_eq!(code, INVALID_TXN_STATE);
    let (err, hw, _, _) = fetch_once(&mut leader, "h", 0, 0);
    assert_eq!((err, hw), (0, 0), "no hanging transaction was opened");
    // A fenced zombie (older epoch after a new InitProducerId) is refused too.
    let (pid2, epoch2) = init_pid(&mut coord, "t-hang");
    assert_eq!(pid2, pid);
    assert!(epoch2 > epoch);
    let code = txn_produce(
        &mut leader,
        Some("t-hang"),
        "h",
        0,
        txn_batch(pid, epoch, 0, 2),
    );
    assert_eq!(code, 47, "INVALID_PRODUCER_EPOCH for the zombie");
    assert_eq!(fetch_once(&mut leader, "h", 0, 0).1, 0);
}

// AddPartitionsToTxn v4 (the brokers' batched form) with VerifyOnly: NONE for a partition
// in the open transaction, INVALID_TXN_STATE for one that is not, and the producer-id
// checks of the coordinator (unknown id: INVALID_PRODUCER_ID_MAPPING); nothing is added.
#[test]
fn add_partitions_v4_verify_only() {
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "w", 2, &[]), 0);
    let mut coord = txn_coordinator(&broker, "t-v4");
    let (pid, epoch) = init_pid(&mut coord, "t-v4");
    add_partitions(&mut coord, "t-v4", pid, epoch, "w", &[0]);
    let txn = |id: &str| {
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(name("w"))
                    .with_partitions(vec![0, 1]),
            ])
    };
    for version in [4, 5] {
        let r = coord.request(
            &AddPartitionsToTxnRequest::default().with_transactions(vec![txn("t-v4"), txn("nope")]),
            version,
        );
        assert_eq!(r.error_code, 0);
        assert_eq!(r.results_by_transaction.len(), 2);
        let codes = |i: usize| -> Vec<i16> {
            r.results_by_transaction[i].topic_results[0]
                .results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
                .collect()
        };
        assert_eq!(codes(0), vec![0, INVALID_TXN_STATE]);
        let unknown = codes(1);
        assert!(
            unknown
                .iter()
                .all(|c| *c == INVALID_PRODUCER_ID_MAPPING || *c == 16),
            "{unknown:?}"
        );
    }
    let d = coord.request(
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("t-v4"))]),
        0,
    );
    assert_eq!(
        d.transaction_states[0].topics[0].partitions,
        vec![0],
        "verify adds nothing"
    );
}

// InitProducerId with an empty (not null) transactional id is INVALID_REQUEST, as Kafka.
#[test]
fn init_producer_id_with_an_empty_transactional_id_is_invalid() {
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    for version in [0, 4] {
        let r = conn.request(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(""))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            version,
        );
        assert_eq!(r.error_code, INVALID_REQUEST, "v{version}");
    }
    // A null id is an idempotent producer.
    let r = conn.request(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        4,
    );
    assert_eq!(r.error_code, 0);
    assert!(r.producer_id.0 >= 0);
}

/// The ids ListTransactions (v`version`) lists on every node of `broker`.
fn list_ids(broker: &Broker, version: i16, pattern: Option<&str>) -> (i16, Vec<String>) {
    let mut ids = Vec::new();
    let mut code = 0;
    for node in 0..broker.cores {
        let r = broker.connect_node(node).request(
            &ListTransactionsRequest::default()
                .with_duration_filter(-1)
                .with_transactional_id_pattern(pattern.filter(|_| version >= 2).map(s)),
            version,
        );
        code = code.max(r.error_code);
        ids.extend(
            r.transaction_states
                .iter()
                .map(|t| t.transactional_id.0.to_string()),
        );
    }
    ids.sort();
    (code, ids)
}

// ListTransactions v2 (KIP-1152): the TransactionalIdPattern regular expression keeps the
// ids it is found in; an empty or null pattern lists all; a pattern that does not compile
// is INVALID_REGULAR_EXPRESSION (128). v1's DurationFilter keeps only transactions open
// longer than it.
#[test]
fn list_transactions_v2_filters_by_pattern() {
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "l", 1, &[]), 0);
    for id in ["app-a", "app-b", "other"] {
        let mut coord = txn_coordinator(&broker, id);
        init_pid(&mut coord, id);
    }
    let all = vec!["app-a".to_string(), "app-b".into(), "other".into()];
    assert_eq!(list_ids(&broker, 2, None), (0, all.clone()));
    assert_eq!(list_ids(&broker, 2, Some("")), (0, all.clone()));
    assert_eq!(list_ids(&broker, 1, None), (0, all));
    assert_eq!(
        list_ids(&broker, 2, Some("^app-")),
        (0, vec!["app-a".to_string(), "app-b".into()])
    );
    assert_eq!(
        list_ids(&broker, 2, Some("b$")),
        (0, vec!["app-b".to_string()])
    );
    assert_eq!(list_ids(&broker, 2, Some("(unclosed")).0, 128);

    // DurationFilter: an open transaction shows once it ran longer than the filter.
    let mut coord = txn_coordinator(&broker, "app-a");
    let (pid, epoch) = init_pid(&mut coord, "app-a");
    add_partitions(&mut coord, "app-a", pid, epoch, "l", &[0]);
    let open_longer_than = |ms: i64| -> Vec<String> {
        let mut ids = Vec::new();
        for node in 0..broker.cores {
            let r = broker.connect_node(node).request(
                &ListTransactionsRequest::default().with_duration_filter(ms),
                1,
            );
            ids.extend(
                r.transaction_states
                    .iter()
                    .map(|t| t.transactional_id.0.to_string()),
            );
        }
        ids
    };
    assert_eq!(open_longer_than(0), vec!["app-a".to_string()]);
    assert!(open_longer_than(600_000).is_empty());
}

// transactional.id.expiration.ms: an id with no open transaction and no request for longer
// than the flag is removed (a Dead record in the transaction log, so the removal survives
// a restart: the reloading coordinator agrees), while an id with an open transaction
// stays. A later InitProducerId for the expired id starts over.
#[test]
fn idle_transactional_ids_expire() {
    let dir = tmpdir();
    let flags = ["--transactional-id-expiration-ms", "1500"];
    let mut broker = Broker::start_in(dir.path(), 1, &flags);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "e", 1, &[]), 0);
    let mut coord = txn_coordinator(&broker, "idle");
    init_pid(&mut coord, "idle");
    let mut coord2 = txn_coordinator(&broker, "busy");
    let (pid, epoch) = init_pid(&mut coord2, "busy");
    add_partitions(&mut coord2, "busy", pid, epoch, "e", &[0]);
    assert_eq!(list_ids(&broker, 0, None).1, vec!["busy", "idle"]);

    let deadline = Instant::now() + WAIT;
    while list_ids(&broker, 0, None).1.contains(&"idle".to_string()) {
        assert!(Instant::now() < deadline, "idle id never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = coord.request(
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("idle"))]),
        0,
    );
    assert_eq!(
        d.transaction_states[0].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );
    assert_eq!(
        list_ids(&broker, 0, None).1,
        vec!["busy"],
        "open transactions stay"
    );

    broker.stop();
    let broker = Broker::start_in(dir.path(), 1, &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, ids) = list_ids(&broker, 0, None);
        if code == 0 && !ids.is_empty() {
            assert_eq!(ids, vec!["busy"], "the reloaded coordinator agrees");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "coordinator never loaded: {code}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut coord = txn_coordinator(&broker, "idle");
    let (_, epoch) = init_pid(&mut coord, "idle");
    assert_eq!(epoch, 0, "an expired id starts over");
}

/// The sum over shards of the /metrics counter `name`.
fn counter(broker: &Broker, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&broker.admin.expect("admin"), IO_TIMEOUT)
        .expect("connect admin");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

// Only the first batch of a transaction in a partition costs a round trip to the
// coordinator: four batches to one partition and one to another are two verifications;
// the commit marker ends the transaction there, so the next transaction's first batch is
// verified again. A refused batch counts as refused.
#[test]
fn only_the_first_batch_per_partition_is_verified() {
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "c", 2, &[]), 0);
    let mut coord = txn_coordinator(&broker, "t-count");
    let (pid, epoch) = init_pid(&mut coord, "t-count");
    let verified = || counter(&broker, "osprey_txn_verifications_total");
    let refused = || counter(&broker, "osprey_txn_verifications_refused_total");
    let (v0, r0) = (verified(), refused());
    let mut leader = leader_conn(&broker, "c", 0);

    add_partitions(&mut coord, "t-count", pid, epoch, "c", &[0, 1]);
    for i in 0..4 {
        let b = txn_batch(pid, epoch, i * 2, 2);
        assert_eq!(txn_produce(&mut leader, Some("t-count"), "c", 0, b), 0);
    }
    let b = txn_batch(pid, epoch, 0, 1);
    assert_eq!(txn_produce(&mut leader, Some("t-count"), "c", 1, b), 0);
    assert_eq!(verified() - v0, 2.0);
    assert_eq!(end_txn(&mut coord, "t-count", pid, epoch, true), 0);
    wait_state(&mut coord, "t-count", "CompleteCommit");

    add_partitions(&mut coord, "t-count", pid, epoch, "c", &[0]);
    let b = txn_batch(pid, epoch, 8, 1);
    assert_eq!(txn_produce(&mut leader, Some("t-count"), "c", 0, b), 0);
    assert_eq!(verified() - v0, 3.0, "a new transaction is verified again");
    let b = txn_batch(pid, epoch, 1, 1);
    assert_eq!(
        txn_produce(&mut leader, Some("t-count"), "c", 1, b),
        INVALID_TXN_STATE
    );
    assert_eq!((verified() - v0, refused() - r0), (4.0, 1.0));
}
