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
            use osprey_client::{Client, ClientConfig, OffsetSpec};
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
// latency fields, the machine, the broker's ApiVersions and the placement, the worker
// thread's CPU use and (given --broker-pid) the broker's CPU-seconds per GB moved.
#[test]
fn smoke_run_counts_add_up_and_json_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, addr) = start_broker(dir.path());
    let broker_pid = broker.0.id().to_string();
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
        .args(["--broker-pid", &broker_pid])
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
    // One worker thread (--cpus 0), its CPU over the measured seconds.
    let threads = j["clientCpu"]["threads"].as_array().expect("clientCpu");
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0]["cpu"].as_u64(), Some(0));
    assert!(threads[0]["busy"].as_f64().is_some_and(|b| b >= 0.0));
    assert!(j["clientCpu"]["saturated"].is_boolean());
    assert!(table.contains("loadgen thread 0 (cpu 0)"), "{table}");
    let b = &j["brokerCpu"];
    assert!(b["error"].is_null(), "broker CPU not read: {b}");
    assert!(b["cpuSeconds"].as_f64().is_some_and(|c| c >= 0.0), "{b}");
    assert!(b["bytesMoved"].as_u64().is_some_and(|m| m > 0), "{b}");
    assert!(b["cpuSecondsPerGB"].as_f64().is_some(), "{b}");
    assert!(table.contains("CPU-s per GB moved"), "{table}");
}

// Proves `loadgen sweep` runs every step against a live broker and writes a complete
// result: 3 steps of 1 s (rates low enough for a debug build on a shared machine), each
// with sent = acked = consumed = rate x 1 s, the knee fields, and an SVG with the p50,
// p99 and p99.9 lines (one point per step). No latency figure is asserted.
#[test]
fn sweep_of_three_short_steps_writes_json_and_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path());
    let out = dir.path().join("sweep");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["sweep", "--bootstrap", &addr, "--scenario", "smoke"])
        .args(["--rates", "200,400,800", "--step-duration", "1"])
        .args(["--step-warmup", "0", "--keep-going"])
        .args(["--broker-name", "under-test", "--cpus", "0", "--quiet"])
        .arg("--out-dir")
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen sweep");
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let stdout = child.wait_with_output().expect("output").stdout;
    let text = String::from_utf8_lossy(&stdout);
    assert!(status.success(), "sweep failed ({status}):\n{text}");
    assert!(text.contains("== sweep under-test"), "{text}");

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).expect("sweep.json"))
            .expect("valid json");
    let brokers = j["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1);
    let b = &brokers[0];
    assert_eq!(b["name"].as_str(), Some("under-test"));
    let steps = b["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    for (s, rate) in steps.iter().zip([200u64, 400, 800]) {
        assert_eq!(s["targetMsgPerSec"].as_f64(), Some(rate as f64));
        let c = &s["counts"];
        assert_eq!(c["sent"].as_u64(), Some(rate), "{s}");
        assert_eq!(c["acked"].as_u64(), Some(rate), "{s}");
        assert_eq!(c["consumed"].as_u64(), Some(rate), "{s}");
        assert!(s["publishLatency99pct"].as_f64().is_some());
        assert!(s["keepsRate"].is_boolean());
    }
    assert!(b["p99BoundMs"].as_f64().is_some());
    assert!(b.get("knee").is_some() && b["note"].is_string());
    assert!(j["kneeRule"].is_string());
    for rate in [200, 400, 800] {
        assert!(out.join(format!("under-test-{rate}.json")).exists());
    }
    let svg = std::fs::read_to_string(out.join("sweep.svg")).expect("sweep.svg");
    assert_eq!(svg.matches("<polyline").count(), 3, "p50, p99, p99.9");
    assert_eq!(
        svg.matches(r#"r="2.5""#).count(),
        9,
        "a dot per step and line"
    );
    assert!(svg.contains("under-test publish p99.9"));
}

/// A `loadgen worker` process, killed when the test ends.
struct Worker(Child, String);
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker() -> Worker {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["worker", "--listen", "127.0.0.1:0", "--cpus", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loadgen worker");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("worker's first line");
    let addr = line
        .trim()
        .strip_prefix("loadgen worker listening on ")
        .unwrap_or_else(|| panic!("unexpected worker line {line:?}"))
        .to_string();
    Worker(child, addr)
}

// Proves a run through two `loadgen worker`s (started here on 127.0.0.1) against a live
// broker splits the actors over them (each worker runs one producer and one consumer) and
// merges what they report: the coordinator's counts and merged histogram counts equal the
// sums of each worker's own totals, and every message is acknowledged and consumed.
#[test]
fn run_through_two_workers_merges_their_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr) = start_broker(dir.path());
    let (w1, w2) = (start_worker(), start_worker());
    let workers = format!("{},{}", w1.1, w2.1);
    let json_path = dir.path().join("workers.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--bootstrap", &addr, "--scenario", "smoke"])
        .args(["--duration", "2", "--rate", "1000", "--partitions", "4"])
        .args([
            "--producers",
            "2",
            "--consumers",
            "2",
            "--workers",
            &workers,
        ])
        .args(["--quiet", "--strict", "--json"])
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
    assert_eq!(c["sent"].as_u64(), Some(2000), "1000 msg/s for 2 s");
    assert_eq!(c["acked"].as_u64(), Some(2000));
    assert_eq!(c["consumed"].as_u64(), Some(2000));
    let ws = j["placement"]["workers"].as_array().expect("workers");
    assert_eq!(ws.len(), 2);
    let sum = |k: &str| -> u64 {
        ws.iter()
            .map(|w| w["reported"][k].as_u64().expect("worker's own count"))
            .sum()
    };
    assert_eq!(sum("sent"), 2000);
    assert_eq!(Some(sum("acked")), c["acked"].as_u64());
    assert_eq!(Some(sum("consumed")), c["consumed"].as_u64());
    assert_eq!(
        Some(sum("publishCount")),
        j["aggregatedPublishLatencyCount"].as_u64(),
        "merged publish histogram = sum of the workers'"
    );
    assert_eq!(
        Some(sum("endToEndCount")),
        j["aggregatedEndToEndLatencyCount"].as_u64()
    );
    for (w, addr) in ws.iter().zip([&w1.1, &w2.1]) {
        assert_eq!(w["worker"].as_str(), Some(addr.as_str()));
        assert_eq!(w["producers"].as_array().map(Vec::len), Some(1), "{w}");
        assert_eq!(w["consumers"].as_array().map(Vec::len), Some(1), "{w}");
        assert_eq!(w["acked"], w["reported"]["acked"], "{w}");
        assert!(w["reported"]["acked"].as_u64() > Some(0));
    }
}

// Proves the compare harness serves a peer whose topics must be created first: with
// --peer-create-topics it runs the command (here osprey's own CLI) before the peer's
// round and loadgen uses that topic without CreateTopics; both sides (osprey twice, one
// round, 1 s) account for every message, and compare.json says both could consume.
#[test]
fn compare_creates_the_peers_topic_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = broker_bin();
    assert!(bin.exists(), "build osprey first (cargo build)");
    let start = format!(
        "{} serve --listen 127.0.0.1:{{port}} --admin-listen 127.0.0.1:0 --data-dir {{dir}} --cores 1",
        bin.display()
    );
    let create = format!(
        "{} topics --bootstrap {{bootstrap}} create {{topic}} --partitions 2",
        bin.display()
    );
    let out = dir.path().join("cmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "compare",
            "--rounds",
            "1",
            "--broker-cpus",
            "",
            "--cpus",
            "0",
        ])
        .args(["--osprey-start-cmd", &start, "--peer-name", "peer"])
        .args(["--peer-start-cmd", &start, "--peer-create-topics", &create])
        .arg("--out-dir")
        .arg(&out)
        .args([
            "--",
            "--scenario",
            "smoke",
            "--duration",
            "1",
            "--rate",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run loadgen compare");
    let status = wait_bounded(&mut child, Duration::from_secs(180));
    let o = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        status.success(),
        "compare failed ({status}):\n{text}\n{err}"
    );
    assert!(
        err.contains("created topic loadgen-compare-peer-r0"),
        "{err}"
    );

    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("compare.json")).expect("compare.json"),
    )
    .expect("valid json");
    for side in j["sides"].as_array().expect("sides") {
        assert_eq!(side["canConsume"], serde_json::json!(true), "{side}");
    }
    for (s, name) in [(0, "osprey"), (1, "peer")] {
        let run = &j["runs"][s][0]["loadgen"];
        let c = &run["counts"];
        assert_eq!(c["sent"].as_u64(), Some(500), "{name}: {c}");
        assert_eq!(c["consumed"].as_u64(), Some(500), "{name}: {c}");
        assert!(run["brokerCpu"]["cpuSeconds"].as_f64().is_some(), "{name}");
    }
    let peer_topic = j["runs"][1][0]["loadgen"]["topicNames"][0]
        .as_str()
        .expect("peer topic");
    assert!(
        peer_topic.starts_with("loadgen-compare-peer-r0"),
        "{peer_topic}"
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
