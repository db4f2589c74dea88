//! The admin subcommands (`topics`, `cluster`, `probe`) against a running broker, as a user
//! runs them: exit codes, table output, and `--output json` parsed.

mod common;

use common::cli::{osprey, osprey_with_input};
use common::{Broker, tmpdir};
use serde_json::Value;

fn partitions_of(describe: &Value, topic: &str) -> Vec<Value> {
    describe
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_else(|| panic!("{topic} not in {describe}"))["partitions"]
        .as_array()
        .unwrap()
        .clone()
}

fn config_of(describe: &Value, topic: &str, name: &str) -> (String, String) {
    let t = describe
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap();
    let c = t["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {t}"));
    (
        c["value"].as_str().unwrap_or_default().to_owned(),
        c["source"].as_str().unwrap().to_owned(),
    )
}

// `osprey topics` creates (with configs), lists and deletes topics, and reports Kafka errors
// with a non-zero exit status and a hint.
#[test]
fn topics_create_list_delete() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    let r = osprey(&[
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
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("created cli-t"));
    let r = osprey(&["topics", "--bootstrap", &bs, "create", "cli-t"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let r = osprey(&[
        "topics",
        "--bootstrap",
        &bs,
        "create",
        "bad",
        "--config",
        "retention.ms=x",
    ]);
    assert!(!r.ok, "invalid config must fail: {}", r.stderr);
    // Table: a header, then one row per topic.
    let r = osprey(&["topics", "list", "--bootstrap", &bs]);
    assert!(r.ok);
    let row: Vec<&str> = r
        .stdout
        .lines()
        .find(|l| l.starts_with("cli-t "))
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["cli-t", "4", "1"]);
    let r = osprey(&["topics", "list", "--bootstrap", &bs, "--output", "json"]);
    let list = r.json();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "cli-t")
        .unwrap();
    assert_eq!(t["partitions"], 4);
    assert_eq!(t["replication_factor"], 1);
    // describe: every partition with its leader, replicas and ISR (one copy each on a
    // one-host broker: the replica is the leader, in sync).
    let r = osprey(&[
        "topics",
        "describe",
        "cli-t",
        "--bootstrap",
        &bs,
        "--output",
        "json",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let d = r.json();
    let parts = partitions_of(&d, "cli-t");
    assert_eq!(parts.len(), 4);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i as i64);
        let leader = p["leader"].as_i64().unwrap();
        assert!(leader == 0 || leader == 1, "{p}");
        assert_eq!(p["replicas"], serde_json::json!([leader]));
        assert_eq!(p["isr"], serde_json::json!([leader]));
        assert_eq!(p["log_start_offset"], 0);
        assert_eq!(p["log_end_offset"], 0);
    }
    assert_eq!(
        config_of(&d, "cli-t", "retention.ms"),
        ("60000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    let r = osprey(&["topics", "describe", "nope", "--bootstrap", &bs]);
    assert!(!r.ok);
    assert!(r.stderr.contains("osprey topics list"), "{}", r.stderr);
    let r = osprey(&["topics", "--bootstrap", &bs, "delete", "cli-t"]);
    assert!(r.ok && r.stdout.contains("deleted cli-t"));
    let r = osprey(&["topics", "--bootstrap", &bs, "list"]);
    assert!(r.ok && !r.stdout.contains("cli-t"));
    let r = osprey(&["topics", "--bootstrap", &bs, "delete", "cli-t"]);
    assert!(!r.ok, "deleting a missing topic must fail");
}

// `topics describe` shows log start/end offsets and sizes that follow produced data;
// `topics alter` sets and deletes configs (their source changes from default to the
// topic's and back) and refuses invalid values; `topics add-partitions` grows a topic and
// refuses to shrink it.
#[test]
fn topics_describe_alter_add_partitions() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    let r = osprey(&[
        "topics",
        "create",
        "alt",
        "--partitions",
        "2",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let r = osprey_with_input(
        &["produce", "alt", "--partition", "0", "--bootstrap", &bs],
        b"a\nb\nc\nd\ne\n",
    );
    assert!(r.ok, "{}", r.stderr);
    let describe = || {
        let r = osprey(&[
            "topics",
            "describe",
            "alt",
            "--bootstrap",
            &bs,
            "--output",
            "json",
        ]);
        assert!(r.ok, "{}", r.stderr);
        r.json()
    };
    let d = describe();
    let parts = partitions_of(&d, "alt");
    assert_eq!(parts[0]["log_start_offset"], 0);
    assert_eq!(parts[0]["log_end_offset"], 5);
    assert!(parts[0]["size_bytes"].as_i64().unwrap() > 0, "{d}");
    assert_eq!(parts[1]["log_end_offset"], 0);
    assert_eq!(parts[1]["size_bytes"], 0);
    assert_eq!(config_of(&d, "alt", "retention.ms").1, "DEFAULT_CONFIG");
    // The table has the same figures.
    let r = osprey(&["topics", "describe", "alt", "--bootstrap", &bs]);
    let row: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..1], ["0"]);
    assert_eq!(&row[4..6], ["0", "5"], "{}", r.stdout);

    let r = osprey(&[
        "topics",
        "alter",
        "alt",
        "--set",
        "retention.ms=60000",
        "--set",
        "segment.ms=3600000",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("altered alt"), "{}", r.stdout);
    let d = describe();
    assert_eq!(
        config_of(&d, "alt", "retention.ms"),
        ("60000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    assert_eq!(
        config_of(&d, "alt", "segment.ms"),
        ("3600000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    let r = osprey(&[
        "topics",
        "alter",
        "alt",
        "--delete",
        "retention.ms",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let d = describe();
    assert_eq!(config_of(&d, "alt", "retention.ms").1, "DEFAULT_CONFIG");
    assert_eq!(config_of(&d, "alt", "segment.ms").1, "DYNAMIC_TOPIC_CONFIG");
    let r = osprey(&[
        "topics",
        "alter",
        "alt",
        "--set",
        "retention.ms=soon",
        "--bootstrap",
        &bs,
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("InvalidConfig"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let r = osprey(&["topics", "alter", "alt", "--bootstrap", &bs]);
    assert!(!r.ok, "an alter without changes must fail");

    let r = osprey(&[
        "topics",
        "add-partitions",
        "alt",
        "--count",
        "3",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(partitions_of(&describe(), "alt").len(), 3);
    let r = osprey(&[
        "topics",
        "add-partitions",
        "alt",
        "--count",
        "2",
        "--bootstrap",
        &bs,
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("InvalidPartitions"), "{}", r.stderr);
}

// `osprey cluster info` names the cluster, its controller and every node (one per shard
// here), and lists the broker's API versions.
#[test]
fn cluster_info() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    let r = osprey(&["cluster", "info", "--bootstrap", &bs, "--output", "json"]);
    assert!(r.ok, "{}", r.stderr);
    let c = r.json();
    assert!(!c["cluster_id"].as_str().unwrap().is_empty(), "{c}");
    let nodes = c["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{c}");
    let ports: Vec<i64> = nodes.iter().map(|n| n["port"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = broker.nodes.iter().map(|a| i64::from(a.port())).collect();
    assert_eq!(ports, expected);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["osprey_shard"], i as i64);
        assert_eq!(n["osprey_host_id"], 0);
        assert_eq!(n["rack"], "host-0");
    }
    let controller = c["controller_id"].as_i64().unwrap();
    assert!(nodes.iter().any(|n| n["node_id"] == controller), "{c}");
    let apis = c["api_versions"].as_array().unwrap();
    assert!(
        apis.iter()
            .any(|a| a["name"] == "OffsetDelete" && a["max"].as_i64().unwrap() >= 0),
        "{c}"
    );
    let r = osprey(&["cluster", "info", "--bootstrap", &bs]);
    assert!(r.ok);
    assert!(r.stdout.contains("cluster id:"), "{}", r.stdout);
    assert!(r.stdout.contains("controller"), "{}", r.stdout);
}

// A broker that is not there is an error that names the address and says what to do.
#[test]
fn unreachable_broker_is_explained() {
    let r = osprey(&["topics", "list", "--bootstrap", "127.0.0.1:1"]);
    assert!(!r.ok);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
    assert!(r.stderr.contains("--bootstrap"), "{}", r.stderr);
}

// `osprey probe` measures the disk and loopback limits and prints all three figures.
#[test]
fn probe_prints_limits() {
    let dir = tmpdir();
    let r = osprey(&[
        "probe",
        "--dir",
        dir.path().to_str().unwrap(),
        "--bytes",
        "8388608",
    ]);
    assert!(r.ok, "{}", r.stderr);
    for what in ["O_DIRECT sequential write", "fdatasync", "loopback TCP"] {
        assert!(r.stdout.contains(what), "{}", r.stdout);
    }
}

// A config that cannot be parsed is refused with exit status 2 before anything starts.
#[test]
fn bad_config_is_refused() {
    let r = osprey(&["serve", "--cores", "0"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("--cores"), "{}", r.stderr);
}
