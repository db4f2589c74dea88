//! Workers on several hosts, as the OpenMessaging Benchmark does: `loadgen worker --listen`
//! serves runs over TCP, and `loadgen run --workers a:port,b:port` splits the producers and
//! consumers over them and merges what they report.
//!
//! The protocol is newline-delimited JSON, one run per connection, coordinator (C) and
//! worker (W):
//! - C `hello` -> W `hello` {host, cpus}: how many threads the worker runs (one per CPU).
//! - C `prepare` {bootstrap, workload, threads: [ThreadPlan]} -> W sets up its threads
//!   (connections, end offsets) and answers `ready`.
//! - C `go` to every worker at once: each starts its clock (a worker's latencies and
//!   seconds are relative to its own start; end-to-end latency across hosts needs their
//!   wall clocks in sync, NTP or better).
//! - W streams `interval` {thread, tick, cpu, wait, span, stats} every second per thread,
//!   `done` / `failed` per thread; `producersDone` once its producers finished. When every
//!   worker said so, C sends `allProducersDone` to all, and their consumers drain to the
//!   end offsets (a consumer must not stop while another host's producers still write).
//! - W ends with `summary` {sent, acked, consumed, publishCount} of its own totals.
//!
//! Stats travel as counters plus HdrHistograms (V2, base64); the coordinator merges the
//! histograms (pooled samples, never averaged percentiles). Main thread and one reader
//! thread per worker on the coordinator; one thread per run on the worker.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::stats::Stats;
use crate::worker::{self, ConsumerPlan, ProducerPlan, Report, SharedRun, ThreadPlan};
use crate::workload::Workload;

/// Largest protocol message, bytes (an interval carries three encoded histograms).
const MESSAGE_MAX_BYTES: u64 = 64 << 20;
/// A worker silent for this long is taken for gone (intervals come every second; setup
/// waits for topic leaders and connections).
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the worker's run thread looks for finished producers between reports.
const POLL: Duration = Duration::from_millis(50);

fn read_msg(r: &mut impl BufRead) -> Result<Option<Value>, String> {
    let mut line = String::new();
    let n = r
        .take(MESSAGE_MAX_BYTES)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        return Err(format!(
            "message longer than {MESSAGE_MAX_BYTES} bytes or cut off"
        ));
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| format!("bad message: {e}"))
}

fn write_msg(w: &mut impl Write, v: &Value) -> Result<(), String> {
    let mut s = v.to_string();
    s.push('\n');
    w.write_all(s.as_bytes())
        .and_then(|_| w.flush())
        .map_err(|e| format!("write: {e}"))
}

fn expect_type(v: Option<Value>, want: &str) -> Result<Value, String> {
    match v {
        Some(v) if v["type"] == want => Ok(v),
        Some(v) if v["type"] == "error" => Err(format!(
            "worker: {}",
            v["error"].as_str().unwrap_or("unknown error")
        )),
        Some(v) => Err(format!("expected {want}, got {}", v["type"])),
        None => Err(format!("connection closed before {want}")),
    }
}

fn plan_to_json(p: &ThreadPlan) -> Value {
    json!({
        "index": p.index,
        "cpu": p.cpu,
        "producers": p.producers.iter().map(|x| json!({"id": x.id, "topic": x.topic, "partitions": x.partitions, "rate": x.rate})).collect::<Vec<_>>(),
        "consumers": p.consumers.iter().map(|x| json!({"id": x.id, "topic": x.topic, "partitions": x.partitions})).collect::<Vec<_>>(),
    })
}

fn plan_from_json(v: &Value) -> Result<ThreadPlan, String> {
    let bad = || format!("bad thread plan: {v}");
    let u = |v: &Value, k: &str| v[k].as_u64().ok_or_else(bad);
    let s = |v: &Value, k: &str| v[k].as_str().map(str::to_owned).ok_or_else(bad);
    let mut producers = Vec::new();
    for p in v["producers"].as_array().ok_or_else(bad)? {
        producers.push(ProducerPlan {
            id: u(p, "id")? as u32,
            topic: s(p, "topic")?,
            partitions: u(p, "partitions")? as u32,
            rate: p["rate"].as_f64().ok_or_else(bad)?,
        });
    }
    let mut consumers = Vec::new();
    for c in v["consumers"].as_array().ok_or_else(bad)? {
        consumers.push(ConsumerPlan {
            id: u(c, "id")? as u32,
            topic: s(c, "topic")?,
            partitions: c["partitions"]
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|p| p.as_i64().map(|p| p as i32).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            group: None,
        });
    }
    Ok(ThreadPlan {
        index: u(v, "index")? as usize,
        cpu: v["cpu"].as_u64().map(|c| c as usize),
        producers,
        consumers,
    })
}

/// The workload as `key=value` settings that `Workload::set` reads back exactly.
fn workload_to_wire(w: &Workload) -> Value {
    let mut o = match w.to_json() {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    // Seconds, not minutes: no rounding on the way.
    o.remove("testDurationMinutes");
    o.remove("warmupDurationMinutes");
    o.insert("testDurationSeconds".into(), json!(w.test_duration_s));
    o.insert("warmupDurationSeconds".into(), json!(w.warmup_duration_s));
    Value::Object(o)
}

fn workload_from_wire(v: &Value) -> Result<Workload, String> {
    let mut w = Workload::default();
    for (k, v) in v.as_object().ok_or("workload is not an object")? {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        w.set(k, &text)?;
    }
    w.validate()?;
    Ok(w)
}

// ---------------------------------------------------------------- worker side

/// Serves runs, one connection at a time, until killed. `cpus`: one thread per CPU (pinned);
/// empty = one unpinned thread. Prints `loadgen worker listening on ADDR` on stdout.
pub fn serve(listen: &str, cpus: Vec<usize>) -> Result<(), String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    println!("loadgen worker listening on {addr}");
    let _ = std::io::stdout().flush();
    for conn in l.incoming() {
        match conn {
            Ok(s) => {
                let peer = s
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into());
                eprintln!("run from {peer}");
                match serve_run(s, &cpus) {
                    Ok(()) => eprintln!("run from {peer} finished"),
                    Err(e) => eprintln!("run from {peer} failed: {e}"),
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

fn serve_run(s: TcpStream, cpus: &[usize]) -> Result<(), String> {
    s.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut wr = s;
    let mut msg = read_msg(&mut r)?;
    if msg.as_ref().is_some_and(|m| m["type"] == "hello") {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        write_msg(
            &mut wr,
            &json!({"type": "hello", "host": host, "cpus": cpus, "version": env!("CARGO_PKG_VERSION")}),
        )?;
        msg = read_msg(&mut r)?;
    }
    let prep = expect_type(msg, "prepare")?;
    let setup = (|| {
        let w = workload_from_wire(&prep["workload"])?;
        let bootstrap = prep["bootstrap"]
            .as_str()
            .ok_or("prepare: no bootstrap")?
            .to_string();
        let plans: Vec<ThreadPlan> = prep["threads"]
            .as_array()
            .ok_or("prepare: no threads")?
            .iter()
            .map(plan_from_json)
            .collect::<Result<_, _>>()?;
        if plans.is_empty() {
            return Err("prepare: no threads".to_string());
        }
        Ok((w, bootstrap, plans))
    })();
    let (w, bootstrap, plans) = match setup {
        Ok(x) => x,
        Err(e) => {
            let _ = write_msg(&mut wr, &json!({"type": "error", "error": e}));
            return Err(e);
        }
    };
    let local_producers: u32 = plans.iter().map(|p| p.producers.len() as u32).sum();
    // One extra count holds the consumers back until every host's producers are done.
    let shared = Arc::new(SharedRun {
        ready: Barrier::new(plans.len() + 1),
        go: Barrier::new(plans.len() + 1),
        start: OnceLock::new(),
        producers_running: AtomicU32::new(local_producers + 1),
    });
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for p in &plans {
        handles.push(
            worker::spawn(
                p.clone(),
                bootstrap.clone(),
                // The coordinator refuses TLS/SASL runs with workers (`run::run`).
                osprey_client::Security::default(),
                w.clone(),
                shared.clone(),
                tx.clone(),
            )
            .map_err(|e| format!("spawn worker thread: {e}"))?,
        );
    }
    drop(tx);
    shared.ready.wait();
    write_msg(&mut wr, &json!({"type": "ready"}))?;
    let go = read_msg(&mut r);
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let _ = shared.start.set((Instant::now(), wall_ns));
    // The threads are waiting at the barrier: let them go even when the coordinator is
    // gone (they then run their schedule and stop), so none hangs.
    shared.go.wait();
    let go_err = expect_type(go.and_then(|g| g.ok_or_else(|| "closed".into())).ok(), "go").err();
    // The rest of the coordinator's messages: the all-producers-done signal, or EOF.
    let release = shared.clone();
    let reader = std::thread::Builder::new()
        .name("loadgen-worker-rx".into())
        .spawn(move || {
            loop {
                match read_msg(&mut r) {
                    Ok(Some(m)) if m["type"] == "allProducersDone" => break,
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            release.producers_running.fetch_sub(1, Ordering::SeqCst);
        })
        .map_err(|e| e.to_string())?;
    let mut totals = Stats::default();
    let mut done = 0usize;
    let mut producers_done_sent = false;
    let mut write_err = go_err;
    while done < plans.len() {
        let out = match rx.recv_timeout(POLL) {
            Ok(Report::Interval {
                thread,
                tick_end_ns,
                stats,
                cpu_ns,
                wait_ns,
                span_ns,
            }) => {
                totals.merge(&stats);
                Some(
                    json!({"type": "interval", "thread": thread, "tick": tick_end_ns,
                    "cpu": cpu_ns, "wait": wait_ns, "span": span_ns, "stats": stats.to_wire()?}),
                )
            }
            Ok(Report::Done { thread, stats }) => {
                done += 1;
                totals.merge(&stats);
                Some(json!({"type": "done", "thread": thread, "stats": stats.to_wire()?}))
            }
            Ok(Report::Failed { thread, error }) => {
                done += 1;
                Some(json!({"type": "failed", "thread": thread, "error": error}))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if !producers_done_sent && shared.producers_running.load(Ordering::SeqCst) <= 1 {
            producers_done_sent = true;
            if let Err(e) = write_msg(&mut wr, &json!({"type": "producersDone"})) {
                write_err.get_or_insert(e);
            }
        }
        if let Some(m) = out
            && write_err.is_none()
            && let Err(e) = write_msg(&mut wr, &m)
        {
            write_err = Some(e);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    if write_err.is_none() {
        let _ = write_msg(
            &mut wr,
            &json!({"type": "summary", "sent": totals.sent, "acked": totals.acked,
                "consumed": totals.consumed, "publishCount": totals.publish.len(),
                "endToEndCount": totals.end_to_end.len()}),
        );
    }
    let _ = wr.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    match write_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ----------------------------------------------------------- coordinator side

/// A worker the coordinator is connected to.
pub struct WorkerConn {
    /// Address as given.
    pub address: String,
    /// Its host name.
    pub host: String,
    /// Its CPUs (one thread each; empty = one unpinned thread).
    pub cpus: Vec<usize>,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl WorkerConn {
    /// Threads this worker runs.
    pub fn threads(&self) -> usize {
        self.cpus.len().max(1)
    }
}

/// Connects to every worker and asks what it runs.
pub fn connect(addrs: &[String]) -> Result<Vec<WorkerConn>, String> {
    let mut out = Vec::new();
    for a in addrs {
        let s = TcpStream::connect(a).map_err(|e| format!("worker {a}: {e}"))?;
        s.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut writer = s;
        write_msg(&mut writer, &json!({"type": "hello"}))
            .map_err(|e| format!("worker {a}: {e}"))?;
        let h =
            expect_type(read_msg(&mut reader)?, "hello").map_err(|e| format!("worker {a}: {e}"))?;
        out.push(WorkerConn {
            address: a.clone(),
            host: h["host"].as_str().unwrap_or("").to_string(),
            cpus: h["cpus"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_u64().map(|c| c as usize))
                .collect(),
            reader,
            writer,
        });
    }
    Ok(out)
}

/// Which worker runs each thread slot and on which of its CPUs: worker k's threads are
/// the slots after those of workers 0..k.
pub fn slots(workers: &[WorkerConn]) -> Vec<(usize, Option<usize>)> {
    workers
        .iter()
        .enumerate()
        .flat_map(|(k, w)| (0..w.threads()).map(move |j| (k, w.cpus.get(j).copied())))
        .collect()
}

/// A run in progress on the workers.
pub struct RemoteRun {
    readers: Vec<std::thread::JoinHandle<()>>,
    summaries: Arc<Mutex<Vec<Option<Value>>>>,
    addresses: Vec<(String, String, Vec<usize>)>,
    worker_of: Vec<usize>,
}

/// Sends each worker its threads, waits until all are ready, starts them together and
/// forwards their reports into `tx` (as local threads' reports would arrive).
pub fn launch(
    mut workers: Vec<WorkerConn>,
    plans: &[ThreadPlan],
    worker_of: Vec<usize>,
    bootstrap: &str,
    w: &Workload,
    tx: Sender<Report>,
) -> Result<RemoteRun, String> {
    let wl = workload_to_wire(w);
    for (k, wc) in workers.iter_mut().enumerate() {
        let mine: Vec<Value> = plans
            .iter()
            .filter(|p| worker_of[p.index] == k)
            .map(plan_to_json)
            .collect();
        write_msg(
            &mut wc.writer,
            &json!({"type": "prepare", "bootstrap": bootstrap, "workload": wl, "threads": mine}),
        )
        .map_err(|e| format!("worker {}: {e}", wc.address))?;
    }
    for wc in &mut workers {
        expect_type(read_msg(&mut wc.reader)?, "ready")
            .map_err(|e| format!("worker {}: {e}", wc.address))?;
    }
    for wc in &mut workers {
        write_msg(&mut wc.writer, &json!({"type": "go"}))
            .map_err(|e| format!("worker {}: {e}", wc.address))?;
    }
    let n = workers.len();
    let writers: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(
        workers
            .iter()
            .filter_map(|w| w.writer.try_clone().ok())
            .collect(),
    ));
    let producers_done = Arc::new(AtomicUsize::new(0));
    let summaries = Arc::new(Mutex::new(vec![None; n]));
    let addresses = workers
        .iter()
        .map(|w| (w.address.clone(), w.host.clone(), w.cpus.clone()))
        .collect();
    let mut readers = Vec::new();
    for (k, wc) in workers.into_iter().enumerate() {
        let threads: Vec<usize> = plans
            .iter()
            .filter(|p| worker_of[p.index] == k)
            .map(|p| p.index)
            .collect();
        let (tx, writers, producers_done, summaries) = (
            tx.clone(),
            writers.clone(),
            producers_done.clone(),
            summaries.clone(),
        );
        let h = std::thread::Builder::new()
            .name(format!("loadgen-remote-{k}"))
            .spawn(move || {
                forward(
                    k,
                    wc,
                    threads,
                    n,
                    &tx,
                    &writers,
                    &producers_done,
                    &summaries,
                )
            })
            .map_err(|e| e.to_string())?;
        readers.push(h);
    }
    Ok(RemoteRun {
        readers,
        summaries,
        addresses,
        worker_of,
    })
}

/// One worker's messages into reports; threads it never finished are reported failed.
#[allow(clippy::too_many_arguments)]
fn forward(
    k: usize,
    mut wc: WorkerConn,
    threads: Vec<usize>,
    workers: usize,
    tx: &Sender<Report>,
    writers: &Mutex<Vec<TcpStream>>,
    producers_done: &AtomicUsize,
    summaries: &Mutex<Vec<Option<Value>>>,
) {
    let mut open: Vec<usize> = threads;
    let err = loop {
        let m = match read_msg(&mut wc.reader) {
            Ok(Some(m)) => m,
            Ok(None) => break "connection closed".to_string(),
            Err(e) => break e,
        };
        let thread = m["thread"].as_u64().unwrap_or(u64::MAX) as usize;
        let report = match m["type"].as_str() {
            Some("interval") => match Stats::from_wire(&m["stats"]) {
                Ok(s) => Some(Report::Interval {
                    thread,
                    tick_end_ns: m["tick"].as_u64().unwrap_or(0),
                    stats: Box::new(s),
                    cpu_ns: m["cpu"].as_u64().unwrap_or(0),
                    wait_ns: m["wait"].as_u64().unwrap_or(0),
                    span_ns: m["span"].as_u64().unwrap_or(0),
                }),
                Err(e) => break e,
            },
            Some("done") => match Stats::from_wire(&m["stats"]) {
                Ok(s) => Some(Report::Done {
                    thread,
                    stats: Box::new(s),
                }),
                Err(e) => break e,
            },
            Some("failed") => Some(Report::Failed {
                thread,
                error: format!(
                    "worker {}: {}",
                    wc.address,
                    m["error"].as_str().unwrap_or("?")
                ),
            }),
            Some("producersDone") => {
                if producers_done.fetch_add(1, Ordering::SeqCst) + 1 == workers
                    && let Ok(mut ws) = writers.lock()
                {
                    for w in ws.iter_mut() {
                        let _ = write_msg(w, &json!({"type": "allProducersDone"}));
                    }
                }
                None
            }
            Some("summary") => {
                if let Ok(mut s) = summaries.lock() {
                    s[k] = Some(m.clone());
                }
                if open.is_empty() {
                    return;
                }
                None
            }
            _ => None,
        };
        if let Some(r) = report {
            if matches!(r, Report::Done { .. } | Report::Failed { .. }) {
                open.retain(|t| *t != thread);
            }
            let _ = tx.send(r);
        }
    };
    for thread in open {
        let _ = tx.send(Report::Failed {
            thread,
            error: format!("worker {}: {err}", wc.address),
        });
    }
}

impl RemoteRun {
    /// Waits for the readers; returns each worker's placement: address, host, its threads
    /// and what the coordinator counted from its reports beside the worker's own totals.
    pub fn finish(self, plans: &[ThreadPlan], per_thread: &[(u64, u64)]) -> Vec<Value> {
        for h in self.readers {
            let _ = h.join();
        }
        let summaries = self.summaries.lock().map(|s| s.clone()).unwrap_or_default();
        self.addresses
            .iter()
            .enumerate()
            .map(|(k, (addr, host, cpus))| {
                let mine: Vec<&ThreadPlan> = plans
                    .iter()
                    .filter(|p| self.worker_of.get(p.index) == Some(&k))
                    .collect();
                let (acked, consumed) = mine.iter().fold((0, 0), |(a, c), p| {
                    let t = per_thread.get(p.index).copied().unwrap_or((0, 0));
                    (a + t.0, c + t.1)
                });
                json!({
                    "worker": addr,
                    "host": host,
                    "cpus": cpus,
                    "threads": mine.iter().map(|p| p.index).collect::<Vec<_>>(),
                    "producers": mine.iter().flat_map(|p| p.producers.iter().map(|x| x.id)).collect::<Vec<_>>(),
                    "consumers": mine.iter().flat_map(|p| p.consumers.iter().map(|x| x.id)).collect::<Vec<_>>(),
                    "acked": acked,
                    "consumed": consumed,
                    "reported": summaries.get(k).cloned().flatten(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A thread plan and a workload survive the wire unchanged.
    #[test]
    fn plan_and_workload_round_trip() {
        let p = ThreadPlan {
            index: 3,
            cpu: Some(1),
            producers: vec![ProducerPlan {
                id: 2,
                topic: "t".into(),
                partitions: 8,
                rate: 12_500.5,
            }],
            consumers: vec![ConsumerPlan {
                id: 0,
                topic: "t".into(),
                partitions: vec![0, 2, 4],
                group: None,
            }],
        };
        let q = plan_from_json(&plan_to_json(&p)).unwrap();
        assert_eq!(format!("{p:?}"), format!("{q:?}"));
        let mut w = Workload::scenario("fixed-rate-latency").unwrap();
        w.test_duration_s = 7.0;
        w.warmup_duration_s = 1.5;
        let v = workload_from_wire(&workload_to_wire(&w)).unwrap();
        assert_eq!(v.to_json(), w.to_json());
        assert_eq!(v.test_duration_s, 7.0);
    }
}
