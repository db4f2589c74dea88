//! Black-box tests of the admin HTTP port: /metrics counters move by exactly what a client
//! did over the Kafka wire, and /health answers for every shard.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::{Buf, Bytes};
use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion};
use kafka_protocol::records::Compression;

/// One HTTP/1.1 request; (status, body).
fn http(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect admin");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read admin answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("http head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("content length");
    assert_eq!(body.len(), len, "body matches Content-Length");
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Samples of a text exposition: `name{labels}` -> value.
fn scrape(broker: &Broker) -> HashMap<String, f64> {
    let (status, body) = get(broker.admin.expect("admin address"), "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse().expect("sample value"))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let a = after
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} after"));
    a - before.get(key).copied().unwrap_or(0.0)
}

/// Sends one request and reads its response frame, counting the bytes both ways as the
/// broker does (length prefixes included).
fn exchange<R: kafka_protocol::protocol::Request>(
    conn: &mut Conn,
    req: &R,
    version: i16,
    sent: &mut u64,
    received: &mut u64,
) -> R::Response {
    let (_, frame) = conn.encode_request(req, version);
    *sent += frame.len() as u64;
    conn.send_raw(&frame);
    let mut body = conn.read_frame().expect("response");
    *received += body.len() as u64 + 4;
    kafka_protocol::messages::ResponseHeader::decode(
        &mut body,
        R::Response::header_version(version),
    )
    .unwrap();
    R::Response::decode(&mut body, version).unwrap()
}

fn produce_req(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
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
        ])
}

fn fetch_req(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(10 << 20)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1),
                ]),
        ])
}

// Produces 5 batches of 10 records (acks=all) and one to a partition that does not exist,
// then consumes everything back, all on the partition leader's connection; the scrape
// after differs from the one before by exactly that traffic: requests per API, the error
// code answered, records and batch bytes in, record bytes fetched, frame bytes both ways,
// the latency histogram counts, the group commit carrying the 5 appends, and the log end;
// process_cpu_seconds_total is served and does not decrease.
#[test]
fn metrics_move_by_exactly_the_traffic() {
    const BATCHES: usize = 5;
    const RECORDS: usize = 10;
    let broker = Broker::start(2);
    let topic = "metered";
    assert_eq!(create_topic(&mut broker.connect(), topic, 2, &[]), 0);
    let mut conn = leader_conn(&broker, topic, 0);
    let shard = broker
        .nodes
        .iter()
        .position(|n| *n == conn.stream.peer_addr().unwrap())
        .expect("leader is a shard of this broker");
    let before = scrape(&broker);

    let (mut sent, mut received) = (0u64, 0u64);
    let batch = batch(RECORDS, 100, Compression::None);
    for _ in 0..BATCHES {
        let r = exchange(
            &mut conn,
            &produce_req(topic, 0, batch.clone()),
            9,
            &mut sent,
            &mut received,
        );
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let r = exchange(
        &mut conn,
        &produce_req(topic, 7, batch.clone()),
        9,
        &mut sent,
        &mut received,
    );
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
    let mut offset = 0i64;
    let mut fetched_bytes = 0u64;
    let mut fetches = 0;
    while offset < (BATCHES * RECORDS) as i64 {
        fetches += 1;
        assert!(fetches < 50, "consumed only up to {offset}");
        let r = exchange(
            &mut conn,
            &fetch_req(topic, offset),
            12,
            &mut sent,
            &mut received,
        );
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let records = p.records.clone().unwrap_or_default();
        fetched_bytes += records.len() as u64;
        let mut b = records.clone();
        while b.has_remaining() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
            offset = set.records.last().unwrap().offset + 1;
        }
    }
    assert_eq!(offset, (BATCHES * RECORDS) as i64);

    let after = scrape(&broker);
    let sl = format!("shard=\"{shard}\"");
    let pl = format!("shard=\"{shard}\",topic=\"{topic}\",partition=\"0\"");
    let d = |key: String| delta(&before, &after, &key);
    assert_eq!(
        d(format!("osprey_requests_total{{{sl},api=\"Produce\"}}")),
        (BATCHES + 1) as f64
    );
    assert_eq!(
        d(format!("osprey_requests_total{{{sl},api=\"Fetch\"}}")),
        fetches as f64
    );
    assert_eq!(
        d(format!(
            "osprey_request_latency_seconds_count{{{sl},api=\"Produce\"}}"
        )),
        (BATCHES + 1) as f64
    );
    assert_eq!(
        d(format!(
            "osprey_request_latency_seconds_bucket{{{sl},api=\"Fetch\",le=\"+Inf\"}}"
        )),
        fetches as f64
    );
    assert_eq!(
        d(format!(
            "osprey_request_errors_total{{{sl},api=\"Produce\",code=\"3\",error=\"UnknownTopicOrPartition\"}}"
        )),
        1.0
    );
    let records_in = (BATCHES * RECORDS) as f64;
    let bytes_in = (BATCHES * batch.len()) as f64;
    assert_eq!(d(format!("osprey_messages_in_total{{{sl}}}")), records_in);
    assert_eq!(
        d(format!("osprey_partition_messages_in_total{{{pl}}}")),
        records_in
    );
    assert_eq!(
        d(format!("osprey_produce_bytes_in_total{{{sl}}}")),
        bytes_in
    );
    assert_eq!(
        d(format!("osprey_partition_bytes_in_total{{{pl}}}")),
        bytes_in
    );
    assert_eq!(fetched_bytes as f64, bytes_in, "everything came back");
    assert_eq!(
        d(format!(
            "osprey_partition_fetch_bytes_total{{{pl},reader=\"consumer\"}}"
        )),
        fetched_bytes as f64
    );
    assert_eq!(
        d(format!("osprey_fetch_bytes_out_total{{{sl}}}")),
        fetched_bytes as f64
    );
    assert_eq!(d(format!("osprey_bytes_in_total{{{sl}}}")), sent as f64);
    assert_eq!(
        d(format!("osprey_bytes_out_total{{{sl}}}")),
        received as f64
    );
    // Every acks=all append was written by some write round of this shard.
    assert_eq!(
        d(format!("osprey_storage_round_appends_sum{{{sl}}}")),
        BATCHES as f64
    );
    assert!(
        d(format!("osprey_storage_fdatasyncs_total{{{sl}}}"))
            + d(format!("osprey_storage_dsync_round_seconds_count{{{sl}}}"))
            >= 1.0,
        "acks=all made at least one group commit"
    );
    assert_eq!(
        after[&format!("osprey_partition_log_end_offset{{{pl}}}")],
        records_in
    );
    assert_eq!(after[&format!("osprey_partition_isr{{{pl}}}")], 1.0);
    assert_eq!(after[&format!("osprey_connections{{{sl}}}")], 1.0);
    // Every fetched byte was read once, from the tail cache or from disk.
    assert_eq!(
        d(format!("osprey_cache_read_bytes_total{{{sl}}}"))
            + d(format!("osprey_disk_read_bytes_total{{{sl}}}")),
        fetched_bytes as f64
    );

    // A group commits offset 20 of the 50: the coordinator's shard reports the committed
    // offset and a lag of 30, and one more OffsetCommit in its latency histogram.
    let group = "metered-group";
    let mut coord = coord_conn(&broker, group);
    let coord_shard = broker
        .nodes
        .iter()
        .position(|n| *n == coord.stream.peer_addr().unwrap())
        .unwrap();
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(20)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let mut commits = 0;
    loop {
        commits += 1;
        let r = coord.request(&commit, 8);
        let code = r.topics[0].partitions[0].error_code;
        if code == 0 {
            break;
        }
        // COORDINATOR_LOAD_IN_PROGRESS right after start-up.
        assert_eq!(code, 14, "commit refused");
        assert!(commits < 100, "coordinator never loaded");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let last = scrape(&broker);
    let cl = format!("shard=\"{coord_shard}\",group=\"{group}\",topic=\"{topic}\",partition=\"0\"");
    assert_eq!(
        last[&format!("osprey_group_committed_offset{{{cl}}}")],
        20.0
    );
    assert_eq!(last[&format!("osprey_group_lag{{{cl}}}")], 30.0);
    // The process's CPU time (the standard Prometheus name) is there and never goes back.
    let cpu = |m: &HashMap<String, f64>| m["process_cpu_seconds_total"];
    assert!(cpu(&last) >= cpu(&after) && cpu(&after) >= 0.0);
    assert_eq!(
        delta(
            &after,
            &last,
            &format!(
                "osprey_request_latency_seconds_count{{shard=\"{coord_shard}\",api=\"OffsetCommit\"}}"
            )
        ),
        commits as f64
    );
}

// /health says 200 with every shard serving; unknown paths, other methods, garbage and
// an oversized head get their HTTP errors instead of a hang or a dropped connection.
#[test]
fn health_and_http_errors() {
    let broker = Broker::start(2);
    let admin = broker.admin.expect("admin address");
    let (status, body) = get(admin, "/health");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["shards"], 2);
    assert_eq!(v["serving"], 2);
    assert_eq!(get(admin, "/nope").0, 404);
    assert_eq!(http(admin, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(admin, b"hello\r\n\r\n").0, 400);
    // A head that fills the 8 KiB bound without ending (exactly that much, so the broker
    // has read everything when it answers and closes).
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(8 << 10, b'a');
    assert_eq!(http(admin, &big).0, 431);
}

// Every series the Grafana dashboard in deploy/ queries is one the broker renders (a
// renamed metric would leave a panel silently empty).
#[test]
fn dashboard_queries_name_rendered_series() {
    let broker = Broker::start(1);
    let (_, body) = get(broker.admin.unwrap(), "/metrics");
    let families: std::collections::HashSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/osprey-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("osprey_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
                    .unwrap_or(name);
                assert!(
                    families.contains(family),
                    "panel {:?} queries {name}, not rendered",
                    panel["title"]
                );
                checked += 1;
                rest = &tail[end..];
            }
        }
    }
    assert!(checked > 30, "only {checked} series found in the dashboard");
}

// /health is served from the start and answers 503 naming every shard while they do not
// serve yet: here a host whose controller quorum (itself and a voter nobody runs) never
// forms, so start-up never completes.
#[test]
fn health_is_503_while_the_shards_do_not_serve() {
    use std::process::{Command, Stdio};
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (controller, absent, admin) = (free(), free(), free());
    let dir = tmpdir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "2",
            "--node-id",
            "1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--controller-quorum-voters")
        .arg(format!("1@{controller},2@{absent}"))
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    let answer = loop {
        if TcpStream::connect_timeout(&admin, IO_TIMEOUT).is_ok() {
            break get(admin, "/health");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin port never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let (status, body) = answer;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["serving"], 0);
    assert_eq!(v["not_serving"], serde_json::json!([0, 1]));
}

// Errors are counted for every API, from the response the broker sends: after a
// CreateTopics of an existing topic, a DeleteTopics of an unknown one, a DescribeGroups
// (v6) of an unknown group, an OffsetCommit to an unknown topic, a DescribeConfigs of an
// unknown topic and a Metadata of an unknown topic (no auto-creation), each
// (api, code) counter moved by exactly the codes that the responses carried. One shard,
// so the connection's shard answers everything.
#[test]
fn error_codes_are_counted_for_every_api() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let broker = Broker::start(1);
    let mut conn = broker.connect();
    assert_eq!(create_topic(&mut conn, "exists", 1, &[]), 0);
    // The group coordinator loads its offsets partitions after the first FindCoordinator:
    // wait (bounded) until the groups used below are answered by a loaded coordinator.
    let _ = coord_conn(&broker, "committer");
    let describe = DescribeGroupsRequest::default().with_groups(vec![
        GroupId(s("no-such-group")),
        GroupId(s("no-such-group-2")),
        GroupId(s("committer")),
    ]);
    let mut tries = 0;
    while !conn
        .request(&describe, 6)
        .groups
        .iter()
        .all(|g| g.error_code == 69)
    {
        tries += 1;
        assert!(tries < 200, "coordinator never loaded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = scrape(&broker);

    assert_eq!(create_topic(&mut conn, "exists", 1, &[]), 36);
    assert_eq!(create_topic(&mut conn, "exists", 1, &[]), 36);
    assert_eq!(delete_topic(&mut conn, "no-such-topic"), 3);
    let groups = conn.request(
        &DescribeGroupsRequest::default().with_groups(vec![
            GroupId(s("no-such-group")),
            GroupId(s("no-such-group-2")),
        ]),
        6,
    );
    assert!(groups.groups.iter().all(|g| g.error_code == 69));
    let commit = conn.request(
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("committer")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name("no-such-topic"))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(5),
                    ]),
            ]),
        8,
    );
    let commit_codes: Vec<i16> = commit.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(commit_codes, vec![3, 3]);
    let configs = conn.request(
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("no-such-topic")),
        ]),
        4,
    );
    assert_eq!(configs.results[0].error_code, 3);
    let md = conn.request(
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("no-such-topic"))),
            ]))
            .with_allow_auto_topic_creation(false),
        12,
    );
    assert_eq!(md.topics[0].error_code, 3);

    let after = scrape(&broker);
    let d = |api: &str, code: i16, error: &str| {
        delta(
            &before,
            &after,
            &format!(
                "osprey_request_errors_total{{shard=\"0\",api=\"{api}\",code=\"{code}\",error=\"{error}\"}}"
            ),
        )
    };
    assert_eq!(d("CreateTopics", 36, "TopicAlreadyExists"), 2.0);
    assert_eq!(d("DeleteTopics", 3, "UnknownTopicOrPartition"), 1.0);
    assert_eq!(d("DescribeGroups", 69, "GroupIdNotFound"), 2.0);
    assert_eq!(d("OffsetCommit", 3, "UnknownTopicOrPartition"), 2.0);
    assert_eq!(d("DescribeConfigs", 3, "UnknownTopicOrPartition"), 1.0);
    assert_eq!(d("Metadata", 3, "UnknownTopicOrPartition"), 1.0);
    // Nothing else moved: the successful CreateTopics before the first scrape counted no
    // error, and every error series is one of the above.
    let errors: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("osprey_request_errors_total"))
        .map(|(k, _)| delta(&before, &after, k))
        .sum();
    assert_eq!(errors, 9.0);
}
