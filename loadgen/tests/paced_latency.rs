//! Regression: one producer paced at 50k msg/s must see the broker's latency, not its own
//! queueing. Before the fix the producer busy-yielded whenever its next message was due
//! within 20 us, which kept glommio from running its reactor except on the 100 ms preempt
//! timer: batches and acks moved in 100 ms bursts and the median publish latency was
//! hundreds of ms (on the machine 460 ms at 50k msg/s, 1 KiB).
//!
//! The broker is `$OSPREY_BIN` (default: the workspace's `target/debug/osprey`), the load
//! generator `$LOADGEN_BIN` (default: this build's `loadgen`, settable to show an old
//! binary failing). Bounded: about 10 s.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

// Proves one producer sustains 50k msg/s (acks=all, 8 partitions) with a median publish
// latency of milliseconds, not the 100 ms+ of batches held back by a starved reactor.
#[test]
fn one_producer_at_50k_per_second_is_not_held_back() {
    let bin = std::env::var_os("OSPREY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/osprey"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "broker {} not found: build osprey or set OSPREY_BIN",
        bin.display()
    );
    let loadgen = std::env::var_os("LOADGEN_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_loadgen")),
        PathBuf::from,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let _broker = Broker(
        Command::new(&bin)
            .args(["serve", "--listen", &addr, "--admin-listen", "127.0.0.1:0"])
            .args(["--cores", "1", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start broker"),
    );
    let t = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "broker did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let json = dir.path().join("paced.json");
    let mut child = Command::new(&loadgen)
        .args([
            "run",
            "--bootstrap",
            &addr,
            "--scenario",
            "fixed-rate-latency",
        ])
        .args(["--rate", "50000", "--producers", "1", "--partitions", "8"])
        .args(["--message-size", "256", "--acks", "all", "--consumers", "0"])
        .args(["--duration", "3", "--warmup", "1", "--quiet", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .spawn()
        .expect("run loadgen");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait loadgen") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("loadgen did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "loadgen failed: {status}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read json")).expect("json");
    let rate = j["throughput"]["publishMsgPerSec"].as_f64().expect("rate");
    let p50 = j["aggregatedPublishLatency50pct"].as_f64().expect("p50");
    let p99 = j["aggregatedPublishLatency99pct"].as_f64().expect("p99");
    eprintln!("50k msg/s, 1 producer: {rate:.0} msg/s, publish p50 {p50:.2} ms, p99 {p99:.2} ms");
    assert!(rate > 45_000.0, "published only {rate:.0} msg/s of 50000");
    // 100 ms, not less: with a release build and other tests beside it on this 2-core
    // machine the median was seen at > 20 ms; the defect put it at 270-460 ms.
    assert!(
        p50 < 100.0,
        "publish p50 {p50:.2} ms: batches are held back in the producer"
    );
    // The tail is not asserted: the test command runs other tests beside this one on a
    // 2-core machine, so p99 measures them too (seen: 127 ms). The defect this guards
    // against moved the median to hundreds of ms; benches/paced-latency.sh measures tails
    // on a quiet, pinned machine.
    let _ = p99;
}
