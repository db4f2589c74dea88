//! `osprey tune`, `osprey iotune` and `--log-format json`, run as the binary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tmpdir;

fn osprey(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run osprey");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{text}\n")).unwrap();
}

// Against a fake tree where io_uring is disabled: `check` prints the table and exits 1
// (an important knob is off), `script` prints the sysctl, `apply` (allowed without root on
// a fake root) writes it, and `check` then exits 0. The real host is not touched.
#[test]
fn tune_check_script_apply_on_a_fake_root() {
    let root = tmpdir();
    let r = root.path();
    put(r, "proc/sys/kernel/io_uring_disabled", "2");
    put(r, "proc/sys/vm/swappiness", "1");
    let root_s = r.to_str().unwrap();
    let (code, out, err) = osprey(&["tune", "check", "--root", root_s, "--cores", "1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("KNOB"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("kernel.io_uring_disabled") && l.contains(" OFF ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("vm.swappiness") && l.contains(" ok ")),
        "{out}"
    );
    let (code, out, _) = osprey(&["tune", "check", "--root", root_s, "--output", "json"]);
    assert_eq!(code, Some(1));
    let findings: serde_json::Value = serde_json::from_str(&out).expect("json findings");
    let io_uring = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["knob"] == "kernel.io_uring_disabled")
        .expect("io_uring finding");
    assert_eq!(io_uring["status"], "off");
    assert_eq!(io_uring["severity"], "important");
    assert_eq!(io_uring["current"], "2");
    let (code, out, _) = osprey(&["tune", "script", "--root", root_s]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("sysctl -w kernel.io_uring_disabled=0\n"),
        "{out}"
    );
    let (code, out, err) = osprey(&["tune", "apply", "--root", root_s, "--cores", "1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("kernel.io_uring_disabled: set"), "{out}");
    assert_eq!(
        std::fs::read_to_string(r.join("proc/sys/kernel/io_uring_disabled")).unwrap(),
        "0\n"
    );
    let (code, _, _) = osprey(&["tune", "check", "--root", root_s, "--cores", "1"]);
    assert_eq!(code, Some(0));
}

// `osprey iotune DIR` with a short duration prints its table and writes DIR/iotune.json;
// `serve` on that directory with --log-format json logs the measurement at start-up, every
// stderr line one JSON object with level, target and msg.
#[test]
fn iotune_result_is_read_by_serve_and_logs_are_json() {
    let dir = tmpdir();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = osprey(&["iotune", d, "--duration", "0.05", "--file-mib", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("write+fdatasync"), "{out}");
    assert!(err.contains("[15/15]"), "progress lines: {err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("iotune.json")).unwrap())
            .unwrap();
    assert_eq!(json["bandwidth"].as_array().unwrap().len(), 12);
    let (code, out, err) = osprey(&[
        "iotune",
        d,
        "--duration",
        "0.02",
        "--file-mib",
        "4",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let printed: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(printed["latency"].as_array().unwrap().len(), 3);
    assert_eq!(printed["duration_per_test_ms"], 20);

    let mut child = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--data-dir",
            d,
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["target"].is_string() && v["ts"].is_string());
        let msg = v["msg"].as_str().unwrap().to_string();
        if msg.starts_with("iotune: from ") {
            found = Some(msg);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let msg = found.expect("serve logged the iotune result");
    assert!(msg.contains("O_DIRECT write"), "{msg}");
    // Nothing set by flags: the real measurement sized the write path.
    assert!(
        msg.contains("write round ") && msg.contains("; set by flags: nothing"),
        "{msg}"
    );
}
