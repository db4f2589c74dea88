//! Restarting a killed broker at once on the same ports and data directory, as a
//! supervisor (systemd Restart=always, a container runtime) does.
//!
//! A broker killed with SIGKILL leaves its listening sockets in LISTEN for a moment: each
//! has an io_uring accept in flight, and the kernel tears a dead process's rings down
//! asynchronously, so the sockets close only when that teardown gets to them. The restart
//! must wait that out instead of failing with "Address already in use".

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const CORES: usize = 2;
const PARTITIONS: i32 = 2;
const CYCLES: usize = 10;
const RECORDS_PER_CYCLE: usize = 5;
/// The whole loop; one start-up is bounded by the harness's STARTUP_TIMEOUT.
const LOOP_MAX: Duration = Duration::from_secs(180);
const TOPIC: &str = "restart";

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A bootstrap port P with P+1..=P+CORES (the shard ports) free too, chosen below the
/// kernel's ephemeral range so no client socket of a concurrent test takes one of them
/// between our probe and the broker's bind, or while the broker is down.
fn free_port_block() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let ephemeral_low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    let span = u32::from(ephemeral_low.saturating_sub(low + CORES as u16 + 1)).max(1);
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = low + ((seed >> 8) % span) as u16;
        let held: Result<Vec<TcpListener>, _> = (0..=CORES as u16)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no block of {} free ports found", CORES + 1);
}

fn create_topic(conn: &mut Conn) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(TOPIC))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(1),
        ]);
    assert_eq!(conn.request(&req, 7).topics[0].error_code, 0);
}

/// The leader of each partition, as Metadata (asked on the bootstrap port) names it.
fn leaders(broker: &Broker) -> Vec<SocketAddr> {
    let mut c = broker.connect();
    let md = c.request(
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(TOPIC))),
            ]))
            .with_allow_auto_topic_creation(false),
        12,
    );
    let t = &md.topics[0];
    assert_eq!(t.error_code, 0);
    (0..PARTITIONS)
        .map(|p| {
            let leader = t.partitions[p as usize].leader_id;
            let node = md
                .brokers
                .iter()
                .find(|b| b.node_id == leader)
                .expect("leader among the brokers");
            SocketAddr::new(node.host.parse().unwrap(), node.port as u16)
        })
        .collect()
}

/// The value of record `i` written in `cycle` to `partition`, so each record is checked.
fn value(cycle: usize, partition: i32, i: usize) -> Bytes {
    Bytes::from(format!("cycle {cycle} partition {partition} record {i}"))
}

fn tagged_batch(cycle: usize, partition: i32) -> Bytes {
    let records: Vec<Record> = (0..RECORDS_PER_CYCLE)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(value(cycle, partition, i)),
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

/// Produces one batch with acks=all; returns its base offset.
fn produce(conn: &mut Conn, partition: i32, records: Bytes) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.request(&req, 9);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "produce to partition {partition}");
    p.base_offset
}

/// Every record of `partition` from offset 0, with the high watermark.
fn fetch_all(conn: &mut Conn, partition: i32) -> (i64, Vec<Record>) {
    let mut out = Vec::new();
    loop {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name(TOPIC))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(out.len() as i64)
                            .with_partition_max_bytes(10 << 20)
                            .with_current_leader_epoch(-1)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1),
                    ]),
            ]);
        let resp = conn.request(&req, 12);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch from partition {partition}");
        let records = p.records.clone().unwrap_or_default();
        let hw = p.high_watermark;
        if records.is_empty() || out.len() as i64 >= hw {
            return (hw, out);
        }
        out.extend(decode_records(&records));
        if out.len() as i64 >= hw {
            return (hw, out);
        }
    }
}

// kill -9 and an immediate restart on the same ports and data directory, ten times over:
// every restart comes up on the same bootstrap and shard ports and serves, and every
// record acknowledged (acks=all) before any of the kills is there, in order.
#[test]
fn immediate_restart_after_kill_9_on_the_same_ports() {
    let tmp = tmpdir();
    let base = free_port_block();
    let listen = SocketAddr::from(([127, 0, 0, 1], base));
    let want_nodes: Vec<SocketAddr> = (1..=CORES as u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect();
    let started = Instant::now();

    let mut broker = Broker::start_on(tmp.path(), listen, CORES, &[]);
    create_topic(&mut broker.connect());
    for cycle in 0..CYCLES {
        assert_eq!(broker.bootstrap, listen, "cycle {cycle}: bootstrap port");
        assert_eq!(broker.nodes, want_nodes, "cycle {cycle}: shard ports");
        let leaders = leaders(&broker);
        for (p, leader) in leaders.iter().enumerate() {
            assert!(want_nodes.contains(leader), "advertised {leader}");
            let p = p as i32;
            let mut c = Conn::connect(*leader);
            // Everything acknowledged before the earlier kills is still there.
            let (hw, records) = fetch_all(&mut c, p);
            assert_eq!(hw, (cycle * RECORDS_PER_CYCLE) as i64, "cycle {cycle} p{p}");
            assert_eq!(records.len() as i64, hw, "cycle {cycle} p{p}: records");
            for (offset, r) in records.iter().enumerate() {
                assert_eq!(r.offset, offset as i64);
                let (c0, i) = (offset / RECORDS_PER_CYCLE, offset % RECORDS_PER_CYCLE);
                assert_eq!(r.value.as_ref(), Some(&value(c0, p, i)), "p{p} @{offset}");
            }
            // And the restarted broker takes new writes.
            assert_eq!(produce(&mut c, p, tagged_batch(cycle, p)), hw);
        }
        // Crash, then restart at once: no pause between the reaped process and the start.
        broker.kill();
        broker = Broker::start_on(tmp.path(), listen, CORES, &[]);
        assert!(
            started.elapsed() < LOOP_MAX,
            "{} cycles took {:?}",
            cycle + 1,
            started.elapsed()
        );
    }
    // The last restart holds every cycle's records too.
    for (p, leader) in leaders(&broker).iter().enumerate() {
        let (hw, records) = fetch_all(&mut Conn::connect(*leader), p as i32);
        assert_eq!(hw, (CYCLES * RECORDS_PER_CYCLE) as i64);
        assert_eq!(records.len() as i64, hw);
    }
    assert_eq!(broker.stop(), Some(0));
}
