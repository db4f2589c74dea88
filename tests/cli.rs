//! The admin subcommands against a running broker, through the project's own client.

mod common;

use std::process::Command;

use common::{Broker, tmpdir};

fn osprey(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run osprey");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// `osprey topics` creates (with configs), lists and deletes topics, and reports Kafka errors
// with a non-zero exit status.
#[test]
fn topics_create_list_delete() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    let (ok, out, err) = osprey(&[
        "topics",
        "--bootstrap",
        &bs,
        "create",
        "cli-t",
        "--partitions",
        "4",
        "--config",
        "retention.ms=60000",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("created cli-t"));
    let (ok, _, err) = osprey(&["topics", "--bootstrap", &bs, "create", "cli-t"]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let (ok, _, err) = osprey(&[
        "topics",
        "--bootstrap",
        &bs,
        "create",
        "bad",
        "--config",
        "retention.ms=x",
    ]);
    assert!(!ok, "invalid config must fail: {err}");
    let (ok, out, _) = osprey(&["topics", "--bootstrap", &bs, "list"]);
    assert!(ok);
    assert!(out.contains("cli-t\tpartitions=4"), "{out}");
    // describe: one line per partition with leader, replicas and ISR (one copy each on a
    // one-host broker: the replica is the leader, in sync).
    let (ok, out, err) = osprey(&["topics", "--bootstrap", &bs, "describe", "cli-t"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], "cli-t");
        assert_eq!(r[1], i.to_string());
        assert!(r[2] == "0" || r[2] == "1", "{out}");
        assert_eq!(r[3], r[2]);
        assert_eq!(r[4], r[2]);
    }
    let (ok, out, _) = osprey(&["topics", "--bootstrap", &bs, "delete", "cli-t"]);
    assert!(ok && out.contains("deleted cli-t"));
    let (ok, out, _) = osprey(&["topics", "--bootstrap", &bs, "list"]);
    assert!(ok && !out.contains("cli-t"));
}

// `osprey probe` measures the disk and loopback limits and prints all three figures.
#[test]
fn probe_prints_limits() {
    let dir = tmpdir();
    let (ok, out, err) = osprey(&[
        "probe",
        "--dir",
        dir.path().to_str().unwrap(),
        "--bytes",
        "8388608",
    ]);
    assert!(ok, "{err}");
    for what in ["O_DIRECT sequential write", "fdatasync", "loopback TCP"] {
        assert!(out.contains(what), "{out}");
    }
}

// A config that cannot be parsed is refused with exit status 2 before anything starts.
#[test]
fn bad_config_is_refused() {
    let (ok, _, err) = osprey(&["serve", "--cores", "0"]);
    assert!(!ok);
    assert!(err.contains("--cores"), "{err}");
}
