//! Black-box test harness: starts the real `osprey` binary on free ports in a temporary
//! data directory, and speaks Kafka bytes to it over plain blocking sockets.
#![allow(dead_code)]

pub mod cli;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// `--listen 127.0.0.1:0`: every listener on a free port.
pub const LOCALHOST_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A temporary directory under cargo's per-target scratch directory: on the build's disk,
/// which takes O_DIRECT (a tmpfs /tmp would not).
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

pub struct Broker {
    child: Option<Child>,
    pub bootstrap: SocketAddr,
    pub nodes: Vec<SocketAddr>,
    /// The admin HTTP address (/metrics, /health) from the ready line.
    pub admin: Option<SocketAddr>,
    /// Listener name -> its bootstrap address (the ready line's `listeners=`).
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    pub data_dir: PathBuf,
    pub cores: usize,
    _tmp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with `cores` shards in a fresh temporary data directory.
    pub fn start(cores: usize) -> Broker {
        let tmp = tmpdir();
        let dir = tmp.path().to_path_buf();
        let mut b = Broker::start_in(&dir, cores, &[]);
        b._tmp = Some(tmp);
        b
    }

    /// Starts a broker on an existing data directory (restart tests), with extra flags.
    pub fn start_in(dir: &Path, cores: usize, extra: &[&str]) -> Broker {
        Broker::spawn(Some(dir), None, LOCALHOST_ANY_PORT, cores, extra)
    }

    /// Starts a broker on an existing data directory with a fixed bootstrap address
    /// (shard i then listens on its port + 1 + i), for restarts on the same ports.
    pub fn start_on(dir: &Path, listen: SocketAddr, cores: usize, extra: &[&str]) -> Broker {
        Broker::spawn(Some(dir), None, listen, cores, extra)
    }

    /// Starts a broker as the README does: without --data-dir (the default, relative
    /// `./osprey-data`), in a fresh temporary working directory.
    pub fn start_default_dir(cores: usize) -> Broker {
        let tmp = tmpdir();
        let mut b = Broker::spawn(None, Some(tmp.path()), LOCALHOST_ANY_PORT, cores, &[]);
        b.data_dir = tmp.path().join("osprey-data");
        b._tmp = Some(tmp);
        b
    }

    fn spawn(
        dir: Option<&Path>,
        cwd: Option<&Path>,
        listen: SocketAddr,
        cores: usize,
        extra: &[&str],
    ) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osprey"));
        cmd.arg("serve").arg("--listen").arg(listen.to_string());
        if let Some(dir) = dir {
            cmd.arg("--data-dir").arg(dir);
        }
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        // Brokers on fixed ports (restart tests) would otherwise all take the default admin
        // port 9644 and contend for it when tests run in parallel.
        if !extra.contains(&"--admin-listen") {
            cmd.arg("--admin-listen").arg("127.0.0.1:0");
        }
        cmd.arg("--cores")
            .arg(cores.to_string())
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn osprey");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("osprey ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed before the ready line: the broker exited (its error is on
                // the inherited stderr).
                let status = child.wait().expect("wait");
                panic!("osprey exited before reporting ready: {status}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("osprey did not report ready within {STARTUP_TIMEOUT:?}");
            }
        };
        let mut bootstrap = None;
        let mut admin = None;
        let mut nodes = Vec::new();
        let mut listeners = std::collections::HashMap::new();
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("listeners=") {
                for e in v.split(',') {
                    if let Some((name, addr)) = e.split_once('=')
                        && let Ok(addr) = addr.parse()
                    {
                        listeners.insert(name.to_owned(), addr);
                    }
                }
            }
            if let Some(v) = part.strip_prefix("bootstrap=") {
                bootstrap = Some(v.parse().expect("bootstrap addr"));
            }
            if let Some(v) = part.strip_prefix("admin=") {
                admin = Some(v.parse().expect("admin addr"));
            }
            if let Some(v) = part.strip_prefix("nodes=") {
                nodes = v
                    .split(',')
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse::<u16>().expect("port"))))
                    .collect();
            }
        }
        Broker {
            child: Some(child),
            bootstrap: bootstrap.expect("bootstrap in ready line"),
            nodes,
            admin,
            listeners,
            data_dir: dir.map(Path::to_path_buf).unwrap_or_default(),
            cores,
            _tmp: None,
        }
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.bootstrap)
    }

    pub fn connect_node(&self, node: usize) -> Conn {
        Conn::connect(self.nodes[node])
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("osprey did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, nothing flushed by the broker itself.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the broker process now (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.pid().expect("running broker");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Conn {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            next_correlation: 1,
        }
    }

    pub fn encode_request<R: Request>(&mut self, req: &R, version: i16) -> (i32, Bytes) {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("osprey-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        (correlation, frame.freeze())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one response frame; `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let len = i32::from_be_bytes(len) as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    pub fn request<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let (correlation, frame) = self.encode_request(req, version);
        self.send_raw(&frame);
        self.read_response::<R>(correlation, version)
    }

    pub fn read_response<R: Request>(&mut self, correlation: i32, version: i16) -> R::Response {
        let mut frame = self.read_frame().expect("broker closed the connection");
        let header =
            ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(
            header.correlation_id, correlation,
            "responses must come in request order"
        );
        let resp = R::Response::decode(&mut frame, version).unwrap();
        assert_eq!(
            frame.remaining(),
            0,
            "trailing bytes in {:?} response",
            ApiKey::try_from(R::KEY)
        );
        resp
    }

    /// True when the broker has closed this connection (read returns EOF or reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// One record batch v2 with `n` records of `size` bytes (key "k<i>", one header).
pub fn batch(n: usize, size: usize, compression: Compression) -> Bytes {
    batch_with_producer(n, size, compression, -1, -1, -1)
}

pub fn batch_with_producer(
    n: usize,
    size: usize,
    compression: Compression,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if base_sequence < 0 {
                -1
            } else {
                base_sequence + i as i32
            },
            timestamp: now,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; size])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
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

/// Records decoded from fetched bytes (CRC checked by the decoder).
pub fn decode_records(bytes: &Bytes) -> Vec<Record> {
    let mut b = bytes.clone();
    let mut out = Vec::new();
    while b.has_remaining() {
        let set =
            kafka_protocol::records::RecordBatchDecoder::decode(&mut b).expect("decodable batch");
        out.extend(set.records);
    }
    out
}

/// A topic name for request structs.
pub fn name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_string()))
}

/// A string for request structs.
pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// CreateTopics v7 of one topic (replication factor 1) with configs; its error code.
pub fn create_topic(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
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
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                ),
        ]);
    conn.request(&req, 7).topics[0].error_code
}

/// Connection to the node that leads `topic`/`partition`.
pub fn leader_conn(broker: &Broker, topic: &str, partition: i32) -> Conn {
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
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

/// Connection to the coordinator node of `group`.
pub fn coord_conn(broker: &Broker, group: &str) -> Conn {
    use kafka_protocol::messages::FindCoordinatorRequest;
    let r = broker.connect().request(
        &FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(0),
        3,
    );
    assert_eq!(r.error_code, 0);
    broker.connect_node(r.node_id.0 as usize)
}

/// Produces `records` to `topic`/`partition` with `acks` (Produce v9): (error code, base
/// offset).
pub fn produce_to(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
) -> (i16, i64) {
    produce_to_v(conn, topic, partition, acks, records, 9)
}

/// `produce_to` with the Produce version to send.
pub fn produce_to_v(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
    version: i16,
) -> (i16, i64) {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let req = ProduceRequest::default()
        .with_acks(acks)
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
    let resp = conn.request(&req, version);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// One Fetch (v12, no wait) of `topic`/`partition` from `offset`: (error code, high
/// watermark, log start offset, record bytes).
pub fn fetch_once(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, i64, Bytes) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
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
    let resp = conn.request(&req, 12);
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.log_start_offset,
        p.records.clone().unwrap_or_default(),
    )
}

/// Every record of `topic`/`partition` from `from` up to the high watermark (bounded:
/// stops when a fetch brings nothing new); with the high watermark.
pub fn fetch_all_from(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    from: i64,
) -> (i64, Vec<Record>) {
    let mut out: Vec<Record> = Vec::new();
    let mut next = from;
    loop {
        let (err, hw, _, bytes) = fetch_once(conn, topic, partition, next);
        assert_eq!(err, 0, "fetch {topic}-{partition} at {next}");
        if next >= hw || bytes.is_empty() {
            return (hw, out);
        }
        let records = decode_records(&bytes);
        let before = next;
        for r in records {
            if r.offset >= next {
                next = r.offset + 1;
                out.push(r);
            }
        }
        if next == before {
            return (hw, out);
        }
    }
}

/// DeleteTopics v6 of one topic by name; its error code.
pub fn delete_topic(conn: &mut Conn, topic: &str) -> i16 {
    use kafka_protocol::messages::DeleteTopicsRequest;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(name(topic))),
        ]);
    conn.request(&req, 6).responses[0].error_code
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}
