//! `osprey produce`, `osprey consume` and `osprey groups` against a running broker, as a
//! user runs them: lines in, formatted records out, group offsets committed, described with
//! their lag, reset and deleted; exit codes and `--output json` checked.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Broker;
use common::cli::{osprey, osprey_with_input, spawn, wait};
use serde_json::Value;

const RECORDS: usize = 30;

fn create(bs: &str, topic: &str, partitions: &str, extra: &[&str]) {
    let mut args = vec![
        "topics",
        "create",
        topic,
        "--partitions",
        partitions,
        "--bootstrap",
        bs,
    ];
    args.extend_from_slice(extra);
    let r = osprey(&args);
    assert!(r.ok, "{}", r.stderr);
}

fn describe_group(bs: &str, group: &str) -> Value {
    let r = osprey(&[
        "groups",
        "describe",
        group,
        "--bootstrap",
        bs,
        "--output",
        "json",
    ]);
    assert!(r.ok, "{}", r.stderr);
    r.json()[0].clone()
}

/// (committed, log end, lag) per partition of a described group.
fn lags(g: &Value) -> BTreeMap<i64, (Value, Value, Value)> {
    g["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                (
                    p["committed_offset"].clone(),
                    p["log_end_offset"].clone(),
                    p["lag"].clone(),
                ),
            )
        })
        .collect()
}

/// Lines "key<i>:value <i>" for i in 0..n.
fn input(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("key{i}:value {i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Checks consumed "key|value|partition|offset|headers" lines: every record once, key and
/// value paired, the headers, one partition per key, offsets dense from 0 per partition.
fn check_consumed(stdout: &str, n: usize) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), n, "{stdout}");
    let mut seen = BTreeMap::new();
    let mut offsets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split('|').collect();
        assert_eq!(f.len(), 5, "{l}");
        let i: usize = f[0].strip_prefix("key").unwrap().parse().unwrap();
        assert_eq!(f[1], format!("value {i}"));
        assert_eq!(f[4], "source=cli,n=1");
        let p: i64 = f[2].parse().unwrap();
        assert!(seen.insert(i, p).is_none(), "key{i} twice");
        offsets.entry(p).or_default().push(f[3].parse().unwrap());
    }
    assert_eq!(seen.len(), n);
    for (p, mut os) in offsets {
        os.sort();
        assert_eq!(
            os,
            (0..os.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
}

// The round trip: N lines with keys and headers produced, read back with --format (all
// partitions, one partition from an offset, as JSON, up to --max-messages, from a
// timestamp); a group member reads them all and commits, so `groups describe` shows lag 0;
// `reset-offsets --to-earliest` is a dry run until --execute, after which the lag is N
// and the group reads everything again; shift-by, delete-offsets and delete finish it.
#[test]
fn produce_consume_group_round_trip() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    create(&bs, "rt", "3", &[]);
    let r = osprey_with_input(
        &[
            "produce",
            "rt",
            "--key-separator",
            ":",
            "--header",
            "source=cli",
            "--header",
            "n=1",
            "--bootstrap",
            &bs,
            "--output",
            "json",
        ],
        &input(RECORDS),
    );
    assert!(r.ok, "{}", r.stderr);
    let p = r.json();
    assert_eq!(p["produced"], RECORDS);
    assert_eq!(p["failed"], 0);
    let fmt = "%k|%v|%p|%o|%h\\n";
    let r = osprey(&[
        "consume",
        "rt",
        "--from-beginning",
        "--exit-at-end",
        "--format",
        fmt,
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    check_consumed(&r.stdout, RECORDS);
    // Keys land where Kafka's partitioner puts them: spread over more than one partition.
    let parts: std::collections::BTreeSet<&str> = r
        .stdout
        .lines()
        .map(|l| l.split('|').nth(2).unwrap())
        .collect();
    assert!(parts.len() > 1, "{}", r.stdout);

    // One partition from an offset.
    let r = osprey(&[
        "consume",
        "rt",
        "--partition",
        "0",
        "--offset",
        "2",
        "-e",
        "--format",
        "%o\\n",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let offs: Vec<i64> = r.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert!(!offs.is_empty() && offs[0] == 2, "{}", r.stdout);
    assert!(offs.windows(2).all(|w| w[1] == w[0] + 1));

    // JSON lines, and --max-messages.
    let r = osprey(&[
        "consume",
        "rt",
        "--from-beginning",
        "--max-messages",
        "7",
        "--output",
        "json",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let recs: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 7);
    for rec in &recs {
        let i: usize = rec["key"]
            .as_str()
            .unwrap()
            .strip_prefix("key")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rec["value"], format!("value {i}"));
        assert_eq!(rec["headers"]["source"], "cli");
        assert_eq!(rec["topic"], "rt");
    }
    // From a timestamp: one far in the future finds nothing, one in the past finds all.
    let ts = |t: &str| {
        osprey(&[
            "consume",
            "rt",
            "--timestamp",
            t,
            "-e",
            "--format",
            "%o\\n",
            "--bootstrap",
            &bs,
        ])
    };
    let r = ts("4102444800000");
    assert!(r.ok && r.stdout.is_empty(), "{}{}", r.stdout, r.stderr);
    let r = ts("0");
    assert_eq!(r.stdout.lines().count(), RECORDS);

    // A group member reads everything and commits: lag 0.
    let r = osprey(&[
        "consume",
        "rt",
        "--group",
        "g",
        "--from-beginning",
        "--exit-at-end",
        "--format",
        fmt,
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    check_consumed(&r.stdout, RECORDS);
    let g = describe_group(&bs, "g");
    assert_eq!(g["state"], "Empty", "{g}");
    assert_eq!(g["total_lag"], 0, "{g}");
    let l = lags(&g);
    assert_eq!(l.len(), 3, "{g}");
    let ends: i64 = l.values().map(|(_, e, _)| e.as_i64().unwrap()).sum();
    assert_eq!(ends, RECORDS as i64);
    for (c, e, lag) in l.values() {
        assert_eq!(c, e);
        assert_eq!(lag, 0);
    }
    let r = osprey(&["groups", "describe", "g", "--bootstrap", &bs]);
    assert!(r.stdout.contains("total lag: 0"), "{}", r.stdout);
    let r = osprey(&["groups", "list", "--bootstrap", &bs, "--output", "json"]);
    let listed = r.json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["group"] == "g" && x["protocol_type"] == "consumer"),
        "{listed}"
    );

    // reset-offsets: a dry run changes nothing; --execute moves the group back.
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "g",
        "--all-topics",
        "--to-earliest",
        "--bootstrap",
        &bs,
        "--output",
        "json",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let plan = r.json();
    assert_eq!(plan["executed"], false);
    assert!(
        plan["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["new_offset"] == 0)
    );
    assert_eq!(describe_group(&bs, "g")["total_lag"], 0);
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "g",
        "--topic",
        "rt",
        "--to-earliest",
        "--execute",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let g = describe_group(&bs, "g");
    assert_eq!(g["total_lag"], RECORDS, "{g}");
    for (c, _, _) in lags(&g).values() {
        assert_eq!(c, 0);
    }
    let r = osprey(&[
        "consume",
        "rt",
        "--group",
        "g",
        "-e",
        "--format",
        fmt,
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    check_consumed(&r.stdout, RECORDS);
    assert_eq!(describe_group(&bs, "g")["total_lag"], 0);

    // shift-by moves one partition back by 2; to-offset past the end is kept at the end.
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "g",
        "--topic",
        "rt:0",
        "--shift-by",
        "-2",
        "--execute",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let g = describe_group(&bs, "g");
    let (c0, e0, lag0) = lags(&g)[&0].clone();
    let expected_lag = e0.as_i64().unwrap().min(2);
    assert_eq!(lag0, expected_lag, "{g}");
    assert_eq!(c0, e0.as_i64().unwrap() - expected_lag);
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "g",
        "--topic",
        "rt:0",
        "--to-offset",
        "1000000",
        "--execute",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lags(&describe_group(&bs, "g"))[&0].2, 0);

    // By time (dry runs): before every record is the log start, after them the log end.
    let by_time = |flag: &str, value: &str| {
        let r = osprey(&[
            "groups",
            "reset-offsets",
            "g",
            "--topic",
            "rt",
            flag,
            value,
            "--bootstrap",
            &bs,
            "--output",
            "json",
        ]);
        assert!(r.ok, "{}", r.stderr);
        r.json()["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["partition"].as_i64().unwrap(),
                    p["new_offset"].as_i64().unwrap(),
                )
            })
            .collect::<BTreeMap<i64, i64>>()
    };
    let ends: BTreeMap<i64, i64> = lags(&describe_group(&bs, "g"))
        .into_iter()
        .map(|(p, (_, e, _))| (p, e.as_i64().unwrap()))
        .collect();
    assert!(by_time("--to-timestamp", "0").values().all(|&o| o == 0));
    assert_eq!(by_time("--to-datetime", "2100-01-01T00:00:00Z"), ends);

    // delete-offsets removes partition 1's commit only.
    let r = osprey(&[
        "groups",
        "delete-offsets",
        "g",
        "--topic",
        "rt:1",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let l = lags(&describe_group(&bs, "g"));
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(!l.contains_key(&1));

    // delete: the group is gone.
    let r = osprey(&["groups", "delete", "g", "--bootstrap", &bs]);
    assert!(r.ok, "{}", r.stderr);
    let r = osprey(&["groups", "describe", "g", "--bootstrap", &bs]);
    assert!(!r.ok);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

// A live member blocks reset-offsets and delete (with a hint to stop it); Ctrl-C (SIGINT)
// stops the consumer cleanly: it exits 0, commits what it printed and leaves, so the group
// is Empty with lag 0.
#[test]
fn live_group_is_protected_and_ctrl_c_commits() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    create(&bs, "live", "2", &[]);
    let r = osprey_with_input(
        &[
            "produce",
            "live",
            "--key-separator",
            ":",
            "--bootstrap",
            &bs,
        ],
        &input(10),
    );
    assert!(r.ok, "{}", r.stderr);
    let consumer = spawn(
        &[
            "consume",
            "live",
            "--group",
            "lg",
            "--from-beginning",
            "--bootstrap",
            &bs,
        ],
        None,
    );
    // Stable with one member that owns both partitions and has read all 10.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = osprey(&[
            "groups",
            "describe",
            "lg",
            "--bootstrap",
            &bs,
            "--output",
            "json",
        ]);
        if !r.ok {
            // Until the consumer's JoinGroup arrives the group does not exist.
            assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
            assert!(Instant::now() < deadline, "the group never appeared");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let g = r.json()[0].clone();
        let members = g["members"].as_array().map_or(0, Vec::len);
        if g["state"] == "Stable" && members == 1 && g["total_lag"] == 0 && lags(&g).len() == 2 {
            let m = &g["members"][0];
            assert_eq!(m["assignment"]["live"], serde_json::json!([0, 1]), "{g}");
            assert_eq!(m["host"], "/127.0.0.1", "{g}");
            assert_eq!(m["client_id"], "osprey-cli");
            break;
        }
        assert!(Instant::now() < deadline, "group never settled: {g}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "lg",
        "--all-topics",
        "--to-earliest",
        "--execute",
        "--bootstrap",
        &bs,
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("empty"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let r = osprey(&["groups", "delete", "lg", "--bootstrap", &bs]);
    assert!(!r.ok);
    assert!(r.stderr.contains("NonEmptyGroup"), "{}", r.stderr);
    let r = osprey(&[
        "groups",
        "delete-offsets",
        "lg",
        "--topic",
        "live",
        "--bootstrap",
        &bs,
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("GroupSubscribedToTopic"), "{}", r.stderr);

    // SAFETY: signalling our own child process by its pid.
    unsafe { libc::kill(consumer.id() as i32, libc::SIGINT) };
    let r = wait(consumer, Duration::from_secs(20));
    assert!(r.ok, "Ctrl-C must exit 0: {:?} {}", r.code, r.stderr);
    assert_eq!(r.stdout.lines().count(), 10, "{}", r.stdout);
    assert!(r.stderr.contains("consumed 10"), "{}", r.stderr);
    let g = describe_group(&bs, "lg");
    assert_eq!(g["state"], "Empty", "{g}");
    assert_eq!(g["total_lag"], 0, "{g}");
}

// produce reports what failed and exits non-zero: a record above the topic's
// max.message.bytes fails alone (its line named) while the others are written; a missing
// topic and contradictory flags are refused with a hint. Idempotent, compressed produce
// writes every line exactly once.
#[test]
fn produce_failures_and_idempotence() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    create(&bs, "small", "1", &["--config", "max.message.bytes=200"]);
    let big = "x".repeat(1000);
    let r = osprey_with_input(
        &["produce", "small", "--batch-size", "1", "--bootstrap", &bs],
        format!("ok1\n{big}\nok2\n").as_bytes(),
    );
    assert!(!r.ok);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("(line 2)"), "{}", r.stderr);
    assert!(r.stderr.contains("MessageTooLarge"), "{}", r.stderr);
    assert!(r.stdout.contains("produced 2 record(s)"), "{}", r.stdout);
    assert!(r.stdout.contains("1 failed"), "{}", r.stdout);
    let r = osprey(&[
        "consume",
        "small",
        "--from-beginning",
        "-e",
        "--bootstrap",
        &bs,
    ]);
    assert_eq!(r.stdout, "ok1\nok2\n");

    let r = osprey_with_input(&["produce", "missing", "--bootstrap", &bs], b"x\n");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("osprey topics create missing"),
        "{}",
        r.stderr
    );
    let r = osprey_with_input(
        &[
            "produce",
            "small",
            "--idempotence",
            "--acks",
            "1",
            "--bootstrap",
            &bs,
        ],
        b"x\n",
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("acks"), "{}", r.stderr);
    let r = osprey(&["consume", "small", "--offset", "3", "--bootstrap", &bs]);
    assert!(!r.ok);
    assert!(r.stderr.contains("--partition"), "{}", r.stderr);

    // --file instead of stdin.
    let dir = common::tmpdir();
    let path = dir.path().join("lines.txt");
    std::fs::write(&path, "f1\nf2\nf3\n").unwrap();
    create(&bs, "fromfile", "1", &[]);
    let r = osprey(&[
        "produce",
        "fromfile",
        "--file",
        path.to_str().unwrap(),
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    let r = osprey(&[
        "consume",
        "fromfile",
        "--from-beginning",
        "-e",
        "--format",
        "%v,",
        "--bootstrap",
        &bs,
    ]);
    assert_eq!(r.stdout, "f1,f2,f3,");
    let r = osprey(&[
        "produce",
        "fromfile",
        "--file",
        "/nonexistent/lines",
        "--bootstrap",
        &bs,
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("--file"), "{}", r.stderr);

    create(&bs, "idem", "2", &[]);
    let lines: String = (0..500).map(|i| format!("{i}\n")).collect();
    let r = osprey_with_input(
        &[
            "produce",
            "idem",
            "--idempotence",
            "--compression",
            "lz4",
            "--batch-size",
            "64",
            "--bootstrap",
            &bs,
            "--output",
            "json",
        ],
        lines.as_bytes(),
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.json()["produced"], 500);
    let r = osprey(&[
        "consume",
        "idem",
        "--from-beginning",
        "-e",
        "--bootstrap",
        &bs,
    ]);
    let mut got: Vec<u32> = r.stdout.lines().map(|l| l.parse().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

// `groups describe` still describes a group whose committed offsets name a deleted topic:
// that topic's log end and lag are unknown (null, with a warning), the others are there.
// The offsets-only group is made by `reset-offsets --execute` on topics nobody consumed.
#[test]
fn describe_survives_a_deleted_topic() {
    let broker = Broker::start(1);
    let bs = broker.bootstrap.to_string();
    create(&bs, "gone", "2", &[]);
    create(&bs, "kept", "1", &[]);
    let r = osprey(&[
        "groups",
        "reset-offsets",
        "og",
        "--topic",
        "gone",
        "--topic",
        "kept",
        "--to-earliest",
        "--execute",
        "--bootstrap",
        &bs,
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    let r = osprey(&["topics", "delete", "gone", "--bootstrap", &bs]);
    assert!(r.ok, "{}", r.stderr);
    let r = osprey(&[
        "groups",
        "describe",
        "og",
        "--bootstrap",
        &bs,
        "--output",
        "json",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("warning"), "{}", r.stderr);
    let g = r.json()[0].clone();
    for p in g["partitions"].as_array().unwrap() {
        if p["topic"] == "kept" {
            assert_eq!(p["log_end_offset"], 0, "{g}");
            assert_eq!(p["lag"], 0, "{g}");
        } else if p["topic"] == "gone" {
            assert!(p["log_end_offset"].is_null(), "{g}");
            assert!(p["lag"].is_null(), "{g}");
        }
    }
}

// --progress forces the progress line on (stderr is a pipe here, where it is off by
// default): produce, consume --max-messages, topics create and delete, and reset-offsets
// --execute show their line on stderr and erase it at the end, while stdout is exactly
// what the same commands print without it (--no-progress), in table and JSON output.
#[test]
fn progress_line_on_stderr_only() {
    const N: usize = 3000;
    const SHOW: &str = "\r\x1b[2K";
    let broker = Broker::start(2);
    let bs = broker.bootstrap.to_string();
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--progress", "--progress-interval-ms", "0"][..]].concat()
    }
    fn quiet<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--no-progress"][..]].concat()
    }

    let create_args = [
        "topics",
        "create",
        "progress",
        "--partitions",
        "3",
        "--bootstrap",
        &bs,
    ];
    let r = osprey(&with(&create_args));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "created progress\n");
    assert!(
        r.stderr.contains(&format!("{SHOW}creating progress")),
        "{:?}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with(SHOW),
        "the line is erased: {:?}",
        r.stderr
    );

    let produce = [
        "produce",
        "progress",
        "--batch-size",
        "10",
        "--bootstrap",
        &bs,
    ];
    let r = osprey_with_input(&with(&produce), &input(N));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, format!("produced {N} record(s) to progress\n"));
    assert!(
        r.stderr.contains(&format!("{SHOW}produced ")),
        "{:?}",
        r.stderr
    );
    assert!(r.stderr.ends_with(SHOW), "{:?}", r.stderr);
    let r = osprey_with_input(&quiet(&produce), &input(N));
    assert_eq!(r.stdout, format!("produced {N} record(s) to progress\n"));
    assert_eq!(r.stderr, "", "--no-progress shows nothing");

    let max = (2 * N).to_string();
    let consume = [
        "consume",
        "progress",
        "--from-beginning",
        "--max-messages",
        &max,
        "--format",
        "%k|%v\\n",
        "--bootstrap",
        &bs,
    ];
    let shown = osprey(&with(&consume));
    let plain = osprey(&quiet(&consume));
    assert!(shown.ok && plain.ok, "{} {}", shown.stderr, plain.stderr);
    assert_eq!(shown.stdout.lines().count(), 2 * N);
    let sorted = |s: &str| {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    assert_eq!(sorted(&shown.stdout), sorted(&plain.stdout));
    assert!(
        shown.stderr.contains(&format!("{SHOW}consumed "))
            && shown.stderr.contains(&format!("/{max} message(s)")),
        "{:?}",
        shown.stderr
    );
    assert!(!plain.stderr.contains(SHOW));
    assert!(
        plain
            .stderr
            .ends_with(&format!("osprey: consumed {max} message(s)\n"))
    );

    // JSON output stays one parsable document on stdout.
    let group = osprey(&with(&[
        "groups",
        "reset-offsets",
        "progress-group",
        "--topic",
        "progress",
        "--to-latest",
        "--execute",
        "--bootstrap",
        &bs,
        "--output",
        "json",
    ]));
    assert!(group.ok, "{}", group.stderr);
    assert_eq!(group.json()["executed"], true);
    // A phase quicker than one tick (1 ms here) draws nothing: either phase may show.
    assert!(
        group
            .stderr
            .contains(&format!("{SHOW}reading the offsets of 3 partition(s)"))
            || group
                .stderr
                .contains(&format!("{SHOW}committing 3 offset(s) of progress-group")),
        "{:?}",
        group.stderr
    );

    let r = osprey(&with(&[
        "topics",
        "delete",
        "progress",
        "--bootstrap",
        &bs,
        "--output",
        "json",
    ]));
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.json()["deleted"][0], "progress");
    assert!(
        r.stderr.contains(&format!("{SHOW}deleting 1 topic(s)")),
        "{:?}",
        r.stderr
    );
}
