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
use osprey::client::{Client, ClientConfig, NewTopic, Security};
use serde_json::{Map, Value, json};

use crate::limits::Limits;
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
            for o in client
                .create_topics(&new, 30_000)
                .await
                .map_err(|e| e.to_string())?
            {
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
                if t.elapsed() > SETUP_TIMEOUT {
                    return Err(format!("topics not ready after {SETUP_TIMEOUT:?}: {md:?}"));
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
    let topics: Vec<String> = (0..w.topics)
        .map(|t| format!("loadgen-{run_id}-{}-{t}", std::process::id()))
        .collect();
    let info = setup(
        opts.bootstrap.clone(),
        opts.security.clone(),
        w.clone(),
        topics.clone(),
    )?;
    let plans = plan_threads(w, &topics, &opts.cpus);
    let shared = Arc::new(SharedRun {
        ready: Barrier::new(plans.len() + 1),
        go: Barrier::new(plans.len() + 1),
        start: OnceLock::new(),
        producers_running: AtomicU32::new(w.producers()),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
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
    drop(tx);
    shared.ready.wait();
    let start = Instant::now();
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let _ = shared.start.set((start, wall_ns));
    shared.go.wait();

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
    let mut done = 0usize;
    let mut last_print = Instant::now();
    let tty = std::io::stderr().is_terminal();
    while done < plans.len() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Report::Interval {
                thread,
                tick_end_ns,
                stats,
            }) => {
                if let Some(t) = per_thread.get_mut(thread) {
                    t.0 += stats.acked;
                    t.1 += stats.consumed;
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
                let line = format!(
                    "{bar} {el:5.1}s {phase:7} pub {:8.0} msg/s {:7.2} MB/s | cons {:8.0} msg/s | pub p99 {} ms (so far {} ms) | e2e p99 {} ms | errors {}",
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
    for h in handles {
        if h.join().is_err() {
            failures.push("a worker thread panicked".into());
        }
    }
    if !opts.keep_topics
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
    o.insert("driver".into(), json!("osprey::client (Kafka protocol)"));
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
    for (k, v) in &total.error_kinds {
        let _ = writeln!(out, "  error x{v}: {k}");
    }
    for f in failures {
        let _ = writeln!(out, "  worker failure: {f}");
    }
}
