//! One benchmark run: set up topics, start the worker threads, aggregate their reports
//! (live line each second), then print the end table and build the JSON result.
//! Main thread (setup and teardown run on a short-lived executor thread of their own).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicU32;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};
use osprey_client::{Client, ClientConfig, NewTopic, Security};
use serde_json::{Map, Value, json};

use crate::cpu::{BrokerCpuSource, CLIENT_SATURATED_BUSY};
use crate::limits::Limits;
use crate::remote;
use crate::stats::{PERCENTILES, Stats, distribution, summarize};
use crate::worker::{self, ConsumerPlan, GroupPlan, ProducerPlan, Report, SharedRun, ThreadPlan};
use crate::workload::Workload;

/// How long topic setup (create + leaders known) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of one run besides the workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// TLS and SASL of every connection (`--command-config`; default PLAINTEXT).
    pub security: Security,
    /// Worker CPUs (one thread each); empty = one unpinned thread.
    pub cpus: Vec<usize>,
    /// A label for the broker (e.g. osprey, tansu, kafka-3.9).
    pub broker_name: String,
    /// A free-text note of where the broker runs (e.g. "taskset -c 0").
    pub broker_placement: Option<String>,
    /// Keep the topics after the run.
    pub keep_topics: bool,
    /// Include the detailed percentile distribution.
    pub histograms: bool,
    /// Measured limits to relate the results to.
    pub limits: Option<Limits>,
    /// No live line.
    pub quiet: bool,
    /// Where to read the broker's CPU time (same host), for CPU-seconds per GB moved.
    pub broker_cpu: Option<BrokerCpuSource>,
    /// `loadgen worker` addresses to run the producers and consumers on (empty: here).
    pub workers: Vec<String>,
    /// Use these topics (one per workload topic) instead of fresh ones; never deleted.
    pub topic_names: Vec<String>,
    /// Create the topics (CreateTopics; existing ones are fine). False: they must exist.
    pub create_topics: bool,
}

/// One worker thread's CPU use, from the intervals it reported.
#[derive(Debug, Clone, Default)]
struct ThreadCpu {
    /// Busy fraction (running + waiting for a CPU) of the last interval.
    last_busy: f64,
    /// CPU, run-queue wait and wall ns of the intervals inside the measured window.
    measured_cpu_ns: u64,
    measured_wait_ns: u64,
    measured_span_ns: u64,
    /// Highest busy fraction of one measured interval.
    max_busy: f64,
    /// Measured intervals above `CLIENT_SATURATED_BUSY`, and all measured intervals.
    saturated_intervals: u64,
    intervals: u64,
}

impl ThreadCpu {
    /// Running + waiting to run, as a fraction of the measured window.
    fn busy(&self) -> f64 {
        self.running() + self.waiting()
    }
    fn running(&self) -> f64 {
        self.measured_cpu_ns as f64 / self.measured_span_ns.max(1) as f64
    }
    fn waiting(&self) -> f64 {
        self.measured_wait_ns as f64 / self.measured_span_ns.max(1) as f64
    }
}

/// The broker's CPU time at the start and the end of the measured window.
#[derive(Debug, Default)]
struct BrokerCpuWindow {
    start: Option<(Instant, f64)>,
    end: Option<(Instant, f64)>,
    error: Option<String>,
}

impl BrokerCpuWindow {
    fn sample(&mut self, src: &BrokerCpuSource) -> Option<(Instant, f64)> {
        match src.read_seconds() {
            Ok(v) => Some((Instant::now(), v)),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

/// Broker facts gathered at setup.
#[derive(Debug, Clone, Default)]
pub struct BrokerInfo {
    api_versions: BTreeMap<String, (i16, i16)>,
    api_versions_version: i16,
    cluster_id: Option<String>,
    brokers: Vec<String>,
}

fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("ApiKey{key}"),
    }
}

fn block_on<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> Result<T, String> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .name(name)
        .spawn(f)
        .map_err(|e| format!("executor: {e}"))?
        .join()
        .map_err(|e| format!("executor: {e}"))
}

fn setup(
    bootstrap: String,
    security: Security,
    w: Workload,
    topics: Vec<String>,
    create: bool,
) -> Result<BrokerInfo, String> {
    block_on("loadgen-setup", move || {
        Box::pin(async move {
            let config = ClientConfig {
                security,
                ..ClientConfig::default()
            };
            let client = Client::connect(&bootstrap, config)
                .await
                .map_err(|e| format!("connect {bootstrap}: {e}"))?;
            let conn = client.any_connection().await.map_err(|e| e.to_string())?;
            let mut info = BrokerInfo {
                api_versions: conn
                    .broker_versions()
                    .into_iter()
                    .map(|(k, r)| (api_name(k), (r.min, r.max)))
                    .collect(),
                api_versions_version: conn.api_versions_version(),
                ..BrokerInfo::default()
            };
            let new: Vec<NewTopic> = topics
                .iter()
                .map(|t| NewTopic {
                    name: t.clone(),
                    partitions: w.partitions_per_topic as i32,
                    // The cluster's default.replication.factor (as OMB's Kafka driver
                    // leaves it to the cluster unless configured).
                    replication_factor: -1,
                    configs: Vec::new(),
                })
                .collect();
            // A peer whose topics were made with its own tool may not serve CreateTopics.
            let outcomes = if create {
                client
                    .create_topics(&new, 30_000)
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                Vec::new()
            };
            for o in outcomes {
                if let Err(e) = o.result
                    && e.kafka_code() != Some(36)
                {
                    return Err(format!("create topic {}: {e}", o.name));
                }
            }
            // Wait until every partition has a leader.
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let t = Instant::now();
            loop {
                let md = client
                    .metadata(Some(&names))
                    .await
                    .map_err(|e| e.to_string())?;
                let ok = md.topics.len() == names.len()
                    && md.topics.iter().all(|t| {
                        t.error_code == 0
                            && t.partitions.len() == w.partitions_per_topic as usize
                            && t.partitions.iter().all(|p| p.leader >= 0)
                    });
                if ok {
                    info.cluster_id = md.cluster_id.clone();
                    info.brokers = md
                        .brokers
                        .iter()
                        .map(|b| format!("{}@{}:{}", b.node_id, b.host, b.port))
                        .collect();
                    return Ok(info);
                }
                if let Some(t) = md.topics.iter().find(|t| {
                    !create
                        && t.error_code == 0
                        && t.partitions.len() != w.partitions_per_topic as usize
                }) {
                    return Err(format!(
                        "topic {:?} has {} partitions, the workload {} (set --partitions)",
                        t.name,
                        t.partitions.len(),
                        w.partitions_per_topic
                    ));
                }
                if t.elapsed() > SETUP_TIMEOUT {
                    return Err(format!(
                        "topics not ready after {SETUP_TIMEOUT:?}{}: {md:?}",
                        if create {
                            ""
                        } else {
                            " (--no-create-topics: they must exist)"
                        }
                    ));
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        })
    })?
}

fn teardown(bootstrap: String, security: Security, topics: Vec<String>) -> Result<(), String> {
    block_on("loadgen-teardown", move || {
        Box::pin(async move {
            let config = ClientConfig {
                security,
                ..ClientConfig::default()
            };
            let client = Client::connect(&bootstrap, config)
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            for o in client
                .delete_topics(&names, 30_000)
                .await
                .map_err(|e| e.to_string())?
            {
                if let Err(e) = o.result {
                    log::warn!("delete topic {}: {e}", o.name);
                }
            }
            Ok(())
        })
    })?
}

/// Assigns actors to threads: producers first, then consumers, round-robin.
pub fn plan_threads(w: &Workload, topics: &[String], cpus: &[usize]) -> Vec<ThreadPlan> {
    let n = cpus.len().max(1);
    let mut plans: Vec<ThreadPlan> = (0..n)
        .map(|i| ThreadPlan {
            index: i,
            cpu: cpus.get(i).copied(),
            producers: Vec::new(),
            consumers: Vec::new(),
        })
        .collect();
    let per_rate = if w.producer_rate > 0.0 {
        w.producer_rate / f64::from(w.producers())
    } else {
        0.0
    };
    let mut slot = 0usize;
    let mut id = 0u32;
    for t in topics {
        for _ in 0..w.producers_per_topic {
            plans[slot % n].producers.push(ProducerPlan {
                id,
                topic: t.clone(),
                partitions: w.partitions_per_topic,
                rate: per_rate,
            });
            id += 1;
            slot += 1;
        }
    }
    let mut cid = 0u32;
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    for t in topics {
        for sub in 0..w.subscriptions_per_topic {
            let c = w.consumer_per_subscription;
            if w.consumer_group {
                // One group per subscription; every member knows all partitions, the
                // leader's range assignment decides who reads which.
                let group = Arc::new(GroupPlan {
                    id: format!("loadgen-{t}-sub{sub}-{salt:08x}"),
                    draining: AtomicU32::new(c),
                });
                for _ in 0..c {
                    plans[slot % n].consumers.push(ConsumerPlan {
                        id: cid,
                        topic: t.clone(),
                        partitions: (0..w.partitions_per_topic as i32).collect(),
                        group: Some(group.clone()),
                    });
                    cid += 1;
                    slot += 1;
                }
                continue;
            }
            for k in 0..c {
                // Range assignment of the topic's partitions within the subscription.
                let parts: Vec<i32> = (0..w.partitions_per_topic)
                    .filter(|p| p % c == k)
                    .map(|p| p as i32)
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                plans[slot % n].consumers.push(ConsumerPlan {
                    id: cid,
                    topic: t.clone(),
                    partitions: parts,
                    group: None,
                });
                cid += 1;
                slot += 1;
            }
        }
    }
    plans
}

/// The outcome of a run.
pub struct RunResult {
    /// The JSON document (OMB-style names).
    pub json: Value,
    /// True when no message was lost or failed.
    pub clean: bool,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Runs the workload and returns the result.
pub fn run(w: &Workload, opts: &RunOptions) -> Result<RunResult, String> {
    w.validate()?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    let topics: Vec<String> = if opts.topic_names.is_empty() {
        (0..w.topics)
            .map(|t| format!("loadgen-{run_id}-{}-{t}", std::process::id()))
            .collect()
    } else if opts.topic_names.len() == w.topics as usize {
        opts.topic_names.clone()
    } else {
        return Err(format!(
            "{} --topic names for {} topics",
            opts.topic_names.len(),
            w.topics
        ));
    };
    // Topics loadgen did not name are someone else's: never deleted.
    let keep_topics = opts.keep_topics || !opts.topic_names.is_empty();
    if !opts.workers.is_empty() && w.consumer_group {
        // Members on several hosts cannot share the drain count that keeps a group from
        // rebalancing at the end of the run.
        return Err("consumer groups are not supported with --workers yet".into());
    }
    if !opts.workers.is_empty() && opts.security.protocol.name() != "PLAINTEXT" {
        // Workers build their own clients from what the coordinator sends them: plaintext.
        return Err("--command-config (TLS/SASL) is not supported with --workers yet".into());
    }
    let info = setup(
        opts.bootstrap.clone(),
        opts.security.clone(),
        w.clone(),
        topics.clone(),
        opts.create_topics,
    )?;
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    let (plans, remote, start) = if opts.workers.is_empty() {
        let plans = plan_threads(w, &topics, &opts.cpus);
        let shared = Arc::new(SharedRun {
            ready: Barrier::new(plans.len() + 1),
            go: Barrier::new(plans.len() + 1),
            start: OnceLock::new(),
            producers_running: AtomicU32::new(w.producers()),
        });
        for p in &plans {
            let h = worker::spawn(
                p.clone(),
                opts.bootstrap.clone(),
                opts.security.clone(),
                w.clone(),
                shared.clone(),
                tx.clone(),
            )
            .map_err(|e| format!("spawn worker: {e}"))?;
            handles.push(h);
        }
        shared.ready.wait();
        let start = Instant::now();
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let _ = shared.start.set((start, wall_ns));
        shared.go.wait();
        (plans, None, start)
    } else {
        let launched = (|| {
            let conns = remote::connect(&opts.workers)?;
            let slots = remote::slots(&conns);
            let mut plans = plan_threads(w, &topics, &vec![0; slots.len()]);
            for (p, (_, cpu)) in plans.iter_mut().zip(&slots) {
                p.cpu = *cpu;
            }
            let worker_of = slots.iter().map(|s| s.0).collect();
            let r = remote::launch(conns, &plans, worker_of, &opts.bootstrap, w, tx.clone())?;
            Ok::<_, String>((plans, r))
        })();
        match launched {
            Ok((plans, r)) => (plans, Some(r), Instant::now()),
            Err(e) => {
                if !keep_topics {
                    let _ = teardown(
                        opts.bootstrap.clone(),
                        opts.security.clone(),
                        topics.clone(),
                    );
                }
                return Err(e);
            }
        }
    };
    drop(tx);

    let warmup_ns = (w.warmup_duration_s * 1e9) as u64;
    let end_ns = ((w.warmup_duration_s + w.test_duration_s) * 1e9) as u64;
    let mut total = Stats::default(); // everything, all phases
    let mut measured = Stats::default(); // after warm-up (latencies; incl. drain)
    let mut window = Stats::default(); // intervals inside (warm-up, end] (throughput)
    let mut per_second: Vec<(u64, Stats)> = Vec::new();
    let mut since_print = Stats::default();
    let mut live_cum = Stats::default();
    let mut failures = Vec::new();
    let mut per_thread: Vec<(u64, u64)> = vec![(0, 0); plans.len()];
    let mut thread_cpu: Vec<ThreadCpu> = vec![ThreadCpu::default(); plans.len()];
    let mut broker_cpu = BrokerCpuWindow::default();
    let mut done = 0usize;
    let mut last_print = Instant::now();
    let tty = std::io::stderr().is_terminal();
    while done < plans.len() {
        // Wake up at the window's edges, so the broker's CPU is read when they pass.
        let el_ns = start.elapsed().as_nanos() as u64;
        let edge = [warmup_ns, end_ns]
            .into_iter()
            .find(|e| *e > el_ns)
            .map_or(u64::MAX, |e| e - el_ns);
        let wait = Duration::from_millis(200).min(Duration::from_nanos(edge));
        let msg = rx.recv_timeout(wait);
        if let Some(src) = &opts.broker_cpu {
            let el_ns = start.elapsed().as_nanos() as u64;
            if broker_cpu.start.is_none() && el_ns >= warmup_ns {
                broker_cpu.start = broker_cpu.sample(src);
            }
            if broker_cpu.end.is_none() && el_ns >= end_ns {
                broker_cpu.end = broker_cpu.sample(src);
            }
        }
        match msg {
            Ok(Report::Interval {
                thread,
                tick_end_ns,
                stats,
                cpu_ns,
                wait_ns,
                span_ns,
            }) => {
                if let Some(t) = per_thread.get_mut(thread) {
                    t.0 += stats.acked;
                    t.1 += stats.consumed;
                }
                if let Some(c) = thread_cpu.get_mut(thread)
                    && span_ns > 0
                {
                    let busy = (cpu_ns + wait_ns) as f64 / span_ns as f64;
                    c.last_busy = busy;
                    if tick_end_ns > warmup_ns && tick_end_ns <= end_ns {
                        c.measured_cpu_ns += cpu_ns;
                        c.measured_wait_ns += wait_ns;
                        c.measured_span_ns += span_ns;
                        c.max_busy = c.max_busy.max(busy);
                        c.intervals += 1;
                        if busy > CLIENT_SATURATED_BUSY {
                            c.saturated_intervals += 1;
                        }
                    }
                }
                total.merge(&stats);
                since_print.merge(&stats);
                if tick_end_ns > warmup_ns {
                    measured.merge(&stats);
                    if tick_end_ns <= end_ns {
                        window.merge(&stats);
                    }
                }
                match per_second.iter_mut().find(|(t, _)| *t == tick_end_ns) {
                    Some((_, s)) => s.merge(&stats),
                    None => per_second.push((tick_end_ns, *stats)),
                }
            }
            Ok(Report::Done { thread, stats }) => {
                if let Some(t) = per_thread.get_mut(thread) {
                    t.0 += stats.acked;
                    t.1 += stats.consumed;
                }
                total.merge(&stats);
                measured.merge(&stats);
                since_print.merge(&stats);
                done += 1;
            }
            Ok(Report::Failed { thread, error }) => {
                failures.push(format!("thread {thread}: {error}"));
                done += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let dt = last_print.elapsed();
        if dt >= Duration::from_secs(1) {
            live_cum.merge(&since_print);
            if !opts.quiet {
                let s = since_print.take();
                let secs = dt.as_secs_f64();
                let el = start.elapsed().as_secs_f64();
                let frac = (el / (end_ns as f64 / 1e9)).min(1.0);
                let bar_w = 20usize;
                let filled = (frac * bar_w as f64) as usize;
                let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(bar_w - filled));
                let phase = if (el * 1e9) < warmup_ns as f64 {
                    "warm-up"
                } else if (el * 1e9) < end_ns as f64 {
                    "measure"
                } else {
                    "drain"
                };
                // The busiest worker thread of the last second, when it is near its core's limit.
                let hot = thread_cpu
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.last_busy > CLIENT_SATURATED_BUSY)
                    .max_by(|a, b| a.1.last_busy.total_cmp(&b.1.last_busy))
                    .map(|(i, c)| {
                        format!(
                            " | CLIENT-BOUND: thread {i}{} {:.0}% busy",
                            plans
                                .get(i)
                                .and_then(|p| p.cpu)
                                .map(|c| format!(" (cpu {c})"))
                                .unwrap_or_default(),
                            c.last_busy * 100.0
                        )
                    })
                    .unwrap_or_default();
                let line = format!(
                    "{bar} {el:5.1}s {phase:7} pub {:8.0} msg/s {:7.2} MB/s | cons {:8.0} msg/s | pub p99 {} ms (so far {} ms) | e2e p99 {} ms | errors {}{hot}",
                    s.acked as f64 / secs,
                    s.acked_bytes as f64 / secs / 1e6,
                    s.consumed as f64 / secs,
                    ms(summarize(&s.publish).pct_ms[3]),
                    ms(summarize(&live_cum.publish).pct_ms[3]),
                    ms(summarize(&s.end_to_end).pct_ms[3]),
                    live_cum.publish_errors + live_cum.consume_errors,
                );
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            } else {
                since_print = Stats::default();
            }
            last_print = Instant::now();
        }
    }
    if tty && !opts.quiet {
        eprintln!();
    }
    // A run that ended early (failures) still reports the CPU over what it measured.
    if let Some(src) = &opts.broker_cpu {
        if broker_cpu.start.is_none() {
            broker_cpu.start = broker_cpu.sample(src);
        }
        if broker_cpu.end.is_none() {
            broker_cpu.end = broker_cpu.sample(src);
        }
    }
    for h in handles {
        if h.join().is_err() {
            failures.push("a worker thread panicked".into());
        }
    }
    let workers_placement = remote.map(|r| r.finish(&plans, &per_thread));
    if !keep_topics
        && let Err(e) = teardown(
            opts.bootstrap.clone(),
            opts.security.clone(),
            topics.clone(),
        )
    {
        log::warn!("teardown: {e}");
    }
    per_second.sort_by_key(|(t, _)| *t);
    let json = build_json(
        w,
        opts,
        &info,
        &plans,
        &total,
        &measured,
        &window,
        &per_second,
        &failures,
        &per_thread,
        &thread_cpu,
        &broker_cpu,
        workers_placement.as_deref(),
    );
    let subs = u64::from(w.subscriptions_per_topic);
    let clean = failures.is_empty()
        && total.publish_errors == 0
        && total.consume_errors == 0
        && total.sent == total.acked
        && (subs == 0 || total.consumed == total.acked * subs);
    print_table(w, opts, &json, &total, &measured, &failures);
    Ok(RunResult { json, clean })
}

fn latency_fields(
    out: &mut Map<String, Value>,
    prefix: &str,
    s: &Stats,
    which: &str,
    detail: bool,
) {
    let h = match which {
        "PublishLatency" => &s.publish,
        "PublishDelayLatency" => &s.publish_delay,
        _ => &s.end_to_end,
    };
    let sum = summarize(h);
    out.insert(format!("{prefix}{which}Avg"), json!(sum.avg_ms));
    for (i, (_, name)) in PERCENTILES.iter().enumerate() {
        out.insert(format!("{prefix}{which}{name}"), json!(sum.pct_ms[i]));
    }
    out.insert(format!("{prefix}{which}Max"), json!(sum.max_ms));
    out.insert(format!("{prefix}{which}Count"), json!(sum.count));
    if !prefix.is_empty() {
        let dist: Map<String, Value> = if detail {
            h.iter_quantiles(10)
                .map(|v| {
                    (
                        format!("{:.6}", v.quantile_iterated_to() * 100.0),
                        json!(v.value_iterated_to() as f64 / 1000.0),
                    )
                })
                .collect()
        } else {
            distribution(h)
                .into_iter()
                .map(|(p, v)| (format!("{p:.6}"), json!(v)))
                .collect()
        };
        out.insert(format!("{prefix}{which}Quantiles"), Value::Object(dist));
    }
}

#[allow(clippy::too_many_arguments)]
fn build_json(
    w: &Workload,
    opts: &RunOptions,
    info: &BrokerInfo,
    plans: &[ThreadPlan],
    total: &Stats,
    measured: &Stats,
    window: &Stats,
    per_second: &[(u64, Stats)],
    failures: &[String],
    per_thread: &[(u64, u64)],
    thread_cpu: &[ThreadCpu],
    broker_cpu: &BrokerCpuWindow,
    workers: Option<&[Value]>,
) -> Value {
    let mut o = Map::new();
    o.insert("tool".into(), json!("osprey-loadgen"));
    o.insert("toolVersion".into(), json!(env!("CARGO_PKG_VERSION")));
    o.insert("units".into(), json!({"latency": "ms", "rate": "msg/s", "throughput": "MB/s (10^6 bytes of message values)"}));
    o.insert(
        "timestamp".into(),
        json!(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    );
    o.insert("workload".into(), w.to_json());
    o.insert("driver".into(), json!("osprey_client (Kafka protocol)"));
    o.insert("messageSize".into(), json!(w.message_size));
    o.insert("topics".into(), json!(w.topics));
    o.insert("partitions".into(), json!(w.partitions_per_topic));
    o.insert("producersPerTopic".into(), json!(w.producers_per_topic));
    o.insert(
        "consumersPerTopic".into(),
        json!(w.subscriptions_per_topic * w.consumer_per_subscription),
    );
    o.insert(
        "broker".into(),
        json!({
            "name": opts.broker_name,
            "bootstrap": opts.bootstrap,
            "securityProtocol": opts.security.protocol.name(),
            "saslMechanism": opts.security.sasl.as_ref().map(|s| s.mechanism.name()),
            "clusterId": info.cluster_id,
            "nodes": info.brokers,
            "apiVersionsVersion": info.api_versions_version,
            "apiVersions": info.api_versions.iter().map(|(k, (a, b))| (k.clone(), json!([a, b]))).collect::<Map<String, Value>>(),
            "placement": opts.broker_placement,
        }),
    );
    let mut groups: Vec<String> = plans
        .iter()
        .flat_map(|p| p.consumers.iter())
        .filter_map(|c| c.group.as_ref().map(|g| g.id.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    o.insert("consumerGroups".into(), json!(groups));
    let mut topic_names: Vec<String> = plans
        .iter()
        .flat_map(|p| p.producers.iter().map(|x| x.topic.clone()))
        .collect();
    topic_names.sort();
    topic_names.dedup();
    o.insert("topicNames".into(), json!(topic_names));
    o.insert("machine".into(), crate::machine::machine_json());
    o.insert(
        "placement".into(),
        json!({
            "loadgenCpus": opts.cpus,
            "brokerPlacement": opts.broker_placement,
            "workers": workers,
            "threads": plans.iter().map(|p| json!({
                "thread": p.index,
                "cpu": p.cpu,
                "producers": p.producers.iter().map(|x| x.id).collect::<Vec<_>>(),
                "consumers": p.consumers.iter().map(|x| x.id).collect::<Vec<_>>(),
                "acked": per_thread.get(p.index).map(|t| t.0),
                "consumed": per_thread.get(p.index).map(|t| t.1),
            })).collect::<Vec<_>>(),
        }),
    );
    // Per-second windows (OMB's publishRate etc.).
    o.insert(
        "publishRate".into(),
        json!(per_second.iter().map(|(_, s)| s.acked).collect::<Vec<_>>()),
    );
    o.insert(
        "consumeRate".into(),
        json!(
            per_second
                .iter()
                .map(|(_, s)| s.consumed)
                .collect::<Vec<_>>()
        ),
    );
    o.insert(
        "publishErrorRate".into(),
        json!(
            per_second
                .iter()
                .map(|(_, s)| s.publish_errors)
                .collect::<Vec<_>>()
        ),
    );
    o.insert(
        "publishLatency99pct".into(),
        json!(
            per_second
                .iter()
                .map(|(_, s)| summarize(&s.publish).pct_ms[3])
                .collect::<Vec<_>>()
        ),
    );
    o.insert(
        "endToEndLatency99pct".into(),
        json!(
            per_second
                .iter()
                .map(|(_, s)| summarize(&s.end_to_end).pct_ms[3])
                .collect::<Vec<_>>()
        ),
    );
    let secs = w.test_duration_s;
    let pub_rate = window.acked as f64 / secs;
    let pub_mb = window.acked_bytes as f64 / secs / 1e6;
    o.insert(
        "throughput".into(),
        json!({
            "publishMsgPerSec": pub_rate,
            "publishMBPerSec": pub_mb,
            "consumeMsgPerSec": window.consumed as f64 / secs,
            "consumeMBPerSec": window.consumed_bytes as f64 / secs / 1e6,
            "measuredSeconds": secs,
        }),
    );
    for which in ["PublishLatency", "PublishDelayLatency", "EndToEndLatency"] {
        latency_fields(&mut o, "aggregated", measured, which, opts.histograms);
    }
    o.insert(
        "counts".into(),
        json!({
            "sent": total.sent,
            "acked": total.acked,
            "consumed": total.consumed,
            "expectedConsumed": total.acked * u64::from(w.subscriptions_per_topic),
            "publishErrors": total.publish_errors,
            "consumeErrors": total.consume_errors,
            "commits": total.commits,
            "commitErrors": total.commit_errors,
            "rebalances": total.rebalances,
            "errorKinds": total.error_kinds,
            "workerFailures": failures,
        }),
    );
    o.insert(
        "clientCpu".into(),
        client_cpu_json(plans, thread_cpu, w.test_duration_s),
    );
    if let Some(src) = &opts.broker_cpu {
        o.insert("brokerCpu".into(), broker_cpu_json(src, broker_cpu, window));
    }
    if let Some(l) = &opts.limits {
        o.insert("limits".into(), l.to_json());
        o.insert(
            "fractionOfLimit".into(),
            json!({
                "publishVsLoopbackTcp": pub_mb / l.loopback_tcp_mb_per_s,
                "publishVsDiskWrite": l.disk_write_mb_per_s.map(|d| pub_mb / d),
            }),
        );
    }
    Value::Object(o)
}

/// Each worker thread's CPU use over the measured window and whether it was saturated.
fn client_cpu_json(plans: &[ThreadPlan], cpu: &[ThreadCpu], measured_s: f64) -> Value {
    let threads: Vec<Value> = plans
        .iter()
        .zip(cpu)
        .map(|(p, c)| {
            json!({
                "thread": p.index,
                "cpu": p.cpu,
                "cpuSeconds": c.measured_cpu_ns as f64 / 1e9,
                "running": c.running(),
                "waitingForCpu": c.waiting(),
                "busy": c.busy(),
                "maxBusy": c.max_busy,
                "saturatedSeconds": c.saturated_intervals,
                "measuredSeconds": c.intervals,
                "saturated": c.busy() > CLIENT_SATURATED_BUSY,
            })
        })
        .collect();
    let hot: Vec<String> = plans
        .iter()
        .zip(cpu)
        .filter(|(_, c)| c.busy() > CLIENT_SATURATED_BUSY)
        .map(|(p, c)| {
            format!(
                "thread {}{} {:.0}% busy ({:.0}% running, {:.0}% waiting for its CPU)",
                p.index,
                p.cpu.map(|c| format!(" (cpu {c})")).unwrap_or_default(),
                c.busy() * 100.0,
                c.running() * 100.0,
                c.waiting() * 100.0
            )
        })
        .collect();
    let warning = (!hot.is_empty()).then(|| {
        format!(
            "loadgen is the bottleneck: {} over the {measured_s} s measured (> {:.0}%); the results show the client's limit, read the broker's CPU-seconds per GB instead",
            hot.join(", "),
            CLIENT_SATURATED_BUSY * 100.0
        )
    });
    json!({
        "source": "per worker thread: getrusage(RUSAGE_THREAD) running + /proc/thread-self/schedstat run-queue wait",
        "saturatedAbove": CLIENT_SATURATED_BUSY,
        "saturated": warning.is_some(),
        "warning": warning,
        "threads": threads,
    })
}

/// The broker's CPU time over the measured window against the bytes moved in it.
fn broker_cpu_json(src: &BrokerCpuSource, b: &BrokerCpuWindow, window: &Stats) -> Value {
    let moved = window.acked_bytes + window.consumed_bytes;
    match (b.start, b.end) {
        (Some((t0, c0)), Some((t1, c1))) => {
            let cpu = (c1 - c0).max(0.0);
            let wall = t1.duration_since(t0).as_secs_f64();
            let gb = moved as f64 / 1e9;
            json!({
                "source": src.describe(),
                "cpuSeconds": cpu,
                "wallSeconds": wall,
                "cores": if wall > 0.0 { cpu / wall } else { 0.0 },
                "bytesProduced": window.acked_bytes,
                "bytesConsumed": window.consumed_bytes,
                "bytesMoved": moved,
                "cpuSecondsPerGB": if gb > 0.0 { Some(cpu / gb) } else { None },
                "error": b.error,
            })
        }
        _ => json!({
            "source": src.describe(),
            "error": b.error.clone().unwrap_or_else(|| "not sampled".into()),
        }),
    }
}

fn print_table(
    w: &Workload,
    opts: &RunOptions,
    j: &Value,
    total: &Stats,
    measured: &Stats,
    failures: &[String],
) {
    let mut out = std::io::stdout().lock();
    let t = &j["throughput"];
    let _ = writeln!(
        out,
        "\n== {} against {} ({}) ==",
        w.name, opts.broker_name, opts.bootstrap
    );
    let _ = writeln!(out, "{}", w.summary());
    let _ = writeln!(
        out,
        "placement: loadgen cpus {:?}; broker {}",
        opts.cpus,
        opts.broker_placement.as_deref().unwrap_or("(not given)")
    );
    for wk in j["placement"]["workers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  worker {} ({}, cpus {}): threads {} producers {} consumers {} | acked {} consumed {} (worker's own count: acked {} consumed {})",
            wk["worker"].as_str().unwrap_or("?"),
            wk["host"].as_str().unwrap_or("?"),
            wk["cpus"],
            wk["threads"],
            wk["producers"],
            wk["consumers"],
            wk["acked"],
            wk["consumed"],
            wk["reported"]["acked"],
            wk["reported"]["consumed"],
        );
    }
    let _ = writeln!(
        out,
        "throughput: publish {:.0} msg/s {:.2} MB/s | consume {:.0} msg/s {:.2} MB/s (over {} s measured)",
        t["publishMsgPerSec"].as_f64().unwrap_or(0.0),
        t["publishMBPerSec"].as_f64().unwrap_or(0.0),
        t["consumeMsgPerSec"].as_f64().unwrap_or(0.0),
        t["consumeMBPerSec"].as_f64().unwrap_or(0.0),
        w.test_duration_s
    );
    if let Some(f) = j.get("fractionOfLimit") {
        let _ = writeln!(
            out,
            "vs this machine: publish = {:.1}% of loopback TCP ({:.0} MB/s){}",
            f["publishVsLoopbackTcp"].as_f64().unwrap_or(0.0) * 100.0,
            j["limits"]["loopbackTcpMBps"].as_f64().unwrap_or(0.0),
            match f["publishVsDiskWrite"].as_f64() {
                Some(d) => format!(
                    ", {:.1}% of O_DIRECT write ({:.0} MB/s); fdatasync {:.0}/s p99 {:.2} ms",
                    d * 100.0,
                    j["limits"]["diskODirectWriteMBps"].as_f64().unwrap_or(0.0),
                    j["limits"]["fdatasyncPerSec"].as_f64().unwrap_or(0.0),
                    j["limits"]["fdatasyncP99Ms"].as_f64().unwrap_or(0.0)
                ),
                None => String::new(),
            }
        );
    }
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "avg", "p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"
    );
    for (name, h) in [
        ("publish (intended->ack)", &measured.publish),
        ("publish delay", &measured.publish_delay),
        ("end-to-end", &measured.end_to_end),
    ] {
        let s = summarize(h);
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name.chars().take(22).collect::<String>(),
            s.count,
            ms(s.avg_ms),
            ms(s.pct_ms[0]),
            ms(s.pct_ms[1]),
            ms(s.pct_ms[2]),
            ms(s.pct_ms[3]),
            ms(s.pct_ms[4]),
            ms(s.pct_ms[5]),
            ms(s.max_ms)
        );
    }
    let _ = writeln!(
        out,
        "counts: sent {} acked {} consumed {} (expected {}) | errors: publish {} consume {}",
        total.sent,
        total.acked,
        total.consumed,
        total.acked * u64::from(w.subscriptions_per_topic),
        total.publish_errors,
        total.consume_errors
    );
    if w.consumer_group {
        let _ = writeln!(
            out,
            "groups: commits {} commit errors {} rebalances {}",
            total.commits, total.commit_errors, total.rebalances
        );
    }
    for t in j["clientCpu"]["threads"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "loadgen thread {} (cpu {}): {:.0}% busy over the measured window ({:.0}% running, {:.0}% waiting for its CPU), max {:.0}% in a second{}",
            t["thread"],
            t["cpu"].as_u64().map_or("-".into(), |c| c.to_string()),
            t["busy"].as_f64().unwrap_or(0.0) * 100.0,
            t["running"].as_f64().unwrap_or(0.0) * 100.0,
            t["waitingForCpu"].as_f64().unwrap_or(0.0) * 100.0,
            t["maxBusy"].as_f64().unwrap_or(0.0) * 100.0,
            if t["saturated"].as_bool() == Some(true) {
                " SATURATED"
            } else {
                ""
            }
        );
    }
    if let Some(wn) = j["clientCpu"]["warning"].as_str() {
        let _ = writeln!(out, "WARNING: {wn}");
    }
    if let Some(b) = j.get("brokerCpu") {
        match b["cpuSeconds"].as_f64() {
            Some(cpu) => {
                let _ = writeln!(
                    out,
                    "broker CPU ({}): {cpu:.2} s over {:.1} s ({:.0}% of a core); {} CPU-s per GB moved ({:.3} GB produced + {:.3} GB consumed)",
                    b["source"].as_str().unwrap_or(""),
                    b["wallSeconds"].as_f64().unwrap_or(0.0),
                    b["cores"].as_f64().unwrap_or(0.0) * 100.0,
                    b["cpuSecondsPerGB"]
                        .as_f64()
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    b["bytesProduced"].as_f64().unwrap_or(0.0) / 1e9,
                    b["bytesConsumed"].as_f64().unwrap_or(0.0) / 1e9,
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "broker CPU: not measured: {}",
                    b["error"].as_str().unwrap_or("?")
                );
            }
        }
    }
    for (k, v) in &total.error_kinds {
        let _ = writeln!(out, "  error x{v}: {k}");
    }
    for f in failures {
        let _ = writeln!(out, "  worker failure: {f}");
    }
}
