//! End-to-end: a real broker process on a free 127.0.0.1 port, driven by the `loadgen` binary.
//!
//! The broker is `$OSPREY_BIN` (default: the workspace's `target/debug/osprey`, build it
//! first with `cargo build`). A binary whose file name contains "tansu" is started as
//! `tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url
//! tcp://127.0.0.1:PORT --storage-engine memory://tansu/`; any other as
//! `osprey serve --listen 127.0.0.1:PORT --data-dir TMPDIR --cores 1`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the broker when the test ends, whatever happens.
struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker_bin() -> PathBuf {
    match std::env::var_os("OSPREY_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/osprey"),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn start_broker(data_dir: &std::path::Path) -> (Broker, String) {
    start_broker_with(data_dir, &[])
}

/// Starts the broker; `osprey_args` are added to osprey's command line (not Tansu's).
fn start_broker_with(data_dir: &std::path::Path, osprey_args: &[&str]) -> (Broker, String) {
    let bin = broker_bin();
    assert!(
        bin.exists(),
        "broker binary {} not found: build osprey (cargo build) or set OSPREY_BIN",
        bin.display()
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let is_tansu = bin
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("tansu"));
    let mut cmd = Command::new(&bin);
    if is_tansu {
        let url = format!("tcp://{addr}");
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"]);
    } else {
        // A free admin port: brokers of parallel tests must not contend for 9644.
        cmd.args(["serve", "--listen", &addr, "--admin-listen", "127.0.0.1:0"])
            .args(["--cores", "1", "--data-dir"])
            .arg(data_dir)
            .args(osprey_args);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let broker = Broker(child);
    let t = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "broker did not listen on {addr} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (broker, addr)
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait loadgen") {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("loadgen did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Proves that loadgen's consumer groups work end to end: 2 members of one group on a
// 4-partition topic split it (range assignment by the elected leader), every message is
// consumed exactly once across the group (consumed = acked = sent, no errors, so no commit
// failed), commits happened, and afterwards OffsetFetch returns for every partition a
// committed offset equal to the partition's end offset (the members commit synchronously
// after draining to the end offsets, so equality is exact, not approximate).
#[test]
fn group_run_consumes_each_message_once_and_commits_end_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) =
        start_broker_with(dir.path(), &["--group-initial-rebalance-delay-ms", "100"]);
    let json_path = dir.path().join("group.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--bootstrap", &addr, "--scenario", "smoke"])
        .args(["--duration", "3", "--partitions", "4", "--rate", "1000"])
        .args(["--consumers", "2", "--group", "--keep-topics"])
        .args(["--cpus", "0", "--quiet", "--strict", "--json"])
        .arg(&json_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let out = child.wait_with_output().expect("loadgen output");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "loadgen failed ({status}):\n{table}");
    assert!(
        table.contains("groups: commits"),
        "group line missing:\n{table}"
    );

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
            .expect("valid json");
    let c = &j["counts"];
    let sent = c["sent"].as_u64().unwrap();
    assert_eq!(sent, 3000, "1000 msg/s for 3 s");
    assert_eq!(c["acked"].as_u64(), Some(sent));
    assert_eq!(
        c["consumed"].as_u64(),
        Some(sent),
        "each message exactly once"
    );
    assert_eq!(c["consumeErrors"].as_u64(), Some(0));
    assert_eq!(c["commitErrors"].as_u64(), Some(0));
    assert!(c["commits"].as_u64().unwrap() > 0, "no commits");
    assert!(c["rebalances"].as_u64().is_some());
    assert_eq!(j["workload"]["consumerGroup"], serde_json::json!(true));
    let group = j["consumerGroups"][0]
        .as_str()
        .expect("group id")
        .to_string();
    let topic = j["topicNames"][0].as_str().expect("topic").to_string();
    assert_eq!(j["consumerGroups"].as_array().unwrap().len(), 1);

    let (committed, ends) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            use osprey::client::{Client, ClientConfig, OffsetSpec};
            let client = Client::connect(&addr, ClientConfig::default())
                .await
                .expect("connect");
            let parts = [0, 1, 2, 3];
            let committed = client
                .offset_fetch(&group, Some(&[(topic.as_str(), &parts[..])]))
                .await
                .expect("offset fetch");
            let ends = client
                .list_offsets(&topic, &parts, OffsetSpec::Latest)
                .await
                .expect("list offsets");
            let committed: Vec<(i32, i64)> = committed
                .into_iter()
                .map(|c| (c.partition, c.offset.expect("partition offset")))
                .collect();
            let ends: Vec<(i32, i64)> = ends
                .into_iter()
                .map(|o| (o.partition, o.offset.expect("end offset")))
                .collect();
            (committed, ends)
        })
        .expect("executor")
        .join()
        .expect("join executor");
    assert_eq!(committed, ends, "committed offsets = end offsets");
    assert_eq!(
        ends.iter().map(|(_, o)| *o as u64).sum::<u64>(),
        sent,
        "the topic holds exactly the run's messages"
    );
}

// Proves that a short open-loop workload against a live broker accounts for every message:
// sent = acknowledged = consumed, no errors, and that the JSON result carries the OMB-named
// latency fields, the machine, the broker's ApiVersions and the placement.
#[test]
fn smoke_run_counts_add_up_and_json_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path());
    let json_path = dir.path().join("result.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--bootstrap",
            &addr,
            "--scenario",
            "smoke",
            "--duration",
            "2",
        ])
        .args([
            "--partitions",
            "3",
            "--rate",
            "1500",
            "--cpus",
            "0",
            "--quiet",
            "--strict",
        ])
        .args(["--broker-name", "under-test", "--histograms", "--json"])
        .arg(&json_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen");
    // Bounded wait: 2 s of load, setup and up to 15 s of drain fit well within 90 s.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait loadgen") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("loadgen did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("loadgen output");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "loadgen failed ({status}):\n{table}");
    assert!(table.contains("p99.99"), "end table missing:\n{table}");

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
            .expect("valid json");
    let c = &j["counts"];
    let sent = c["sent"].as_u64().unwrap();
    assert_eq!(sent, 3000, "1500 msg/s for 2 s");
    assert_eq!(c["acked"].as_u64(), Some(sent));
    assert_eq!(c["consumed"].as_u64(), Some(sent));
    assert_eq!(c["publishErrors"].as_u64(), Some(0));
    assert_eq!(c["consumeErrors"].as_u64(), Some(0));
    for which in ["PublishLatency", "PublishDelayLatency", "EndToEndLatency"] {
        for suffix in [
            "Avg", "50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "Max",
        ] {
            let k = format!("aggregated{which}{suffix}");
            assert!(j[&k].as_f64().is_some(), "missing {k}");
        }
        let q = format!("aggregated{which}Quantiles");
        assert!(!j[&q].as_object().unwrap().is_empty(), "empty {q}");
    }
    assert!(j["aggregatedEndToEndLatencyMax"].as_f64().unwrap() > 0.0);
    assert_eq!(j["aggregatedPublishLatencyCount"].as_u64(), Some(sent));
    assert!(j["throughput"]["publishMsgPerSec"].as_f64().unwrap() > 1000.0);
    assert!(j["machine"]["cpuModel"].is_string());
    assert!(
        j["machine"]["kernel"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(j["broker"]["apiVersions"]["Produce"].is_array());
    assert_eq!(j["broker"]["bootstrap"].as_str(), Some(addr.as_str()));
    assert_eq!(j["placement"]["loadgenCpus"], serde_json::json!([0]));
    assert_eq!(j["workload"]["partitionsPerTopic"].as_u64(), Some(3));
    let per_second: u64 = j["publishRate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        per_second <= sent,
        "per-second publish counts exceed the total"
    );
}

// Proves loadgen benchmarks a secured listener: a broker whose only client listener besides
// PLAINTEXT is SASL_SSL (certificate and CA made here with rcgen), a SCRAM-SHA-256 user
// created before the start, and `--command-config` with Kafka's property names. Every
// producer and consumer connection goes through TLS and SCRAM: the run's counts add up
// (sent = acked = consumed, no errors) and the JSON names the protocol and mechanism. The
// broker's SASL sessions last 1.5 s, shorter than the run: connections are replaced before
// they expire, so no request is lost to the broker closing an expired session.
#[test]
fn sasl_ssl_run_counts_add_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(d.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(d.join("server.key"), server_key.serialize_pem()).unwrap();
    let data = d.join("data");
    let status = Command::new(broker_bin())
        .args(["users", "create", "bench", "--mechanism", "SCRAM-SHA-256"])
        .args(["--password", "bench-pw", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .expect("osprey users create");
    assert!(status.success());
    let port = free_port();
    let sasl_ssl = format!("127.0.0.1:{port}");
    let (_broker, _plain) = start_broker_with(
        &data,
        &[
            "--listeners",
            &format!("SASL_SSL://{sasl_ssl}"),
            "--tls-cert",
            d.join("server.pem").to_str().unwrap(),
            "--tls-key",
            d.join("server.key").to_str().unwrap(),
            // SASL sessions of 1.5 s (KIP-368): the 3 s run outlives several, and the
            // client must replace its connections before the broker closes them.
            "--connections-max-reauth-ms",
            "1500",
        ],
    );
    let t = Instant::now();
    while TcpStream::connect(&sasl_ssl).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no SASL_SSL listener"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let props = d.join("client.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=bench\n\
             sasl.password=bench-pw\nssl.ca.location={}\n",
            d.join("ca.pem").display()
        ),
    )
    .unwrap();
    let json_path = d.join("sasl-ssl.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--bootstrap", &sasl_ssl, "--scenario", "smoke"])
        .args(["--duration", "3", "--partitions", "2", "--rate", "1000"])
        .arg("--command-config")
        .arg(&props)
        .args(["--cpus", "0", "--quiet", "--strict", "--json"])
        .arg(&json_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let out = child.wait_with_output().expect("loadgen output");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "loadgen failed ({status}):\n{table}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
            .expect("valid json");
    let c = &j["counts"];
    let sent = c["sent"].as_u64().unwrap();
    assert_eq!(sent, 3000, "1000 msg/s for 3 s");
    assert_eq!(c["acked"].as_u64(), Some(sent));
    assert_eq!(c["consumed"].as_u64(), Some(sent));
    assert_eq!(c["publishErrors"].as_u64(), Some(0));
    assert_eq!(c["consumeErrors"].as_u64(), Some(0));
    assert_eq!(j["broker"]["securityProtocol"], "SASL_SSL");
    assert_eq!(j["broker"]["saslMechanism"], "SCRAM-SHA-256");
}
