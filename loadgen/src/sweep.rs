//! `loadgen sweep`: the same workload at fixed rates from low to saturation, each step a
//! full run (its own topics, warm-up, measured window), for one or several brokers; the
//! result is a latency-vs-throughput chart (p50/p99/p99.9 by achieved rate), a JSON
//! document and the knee of each broker. Main thread (each step runs `run::run`).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::chart::{self, XySeries};
use crate::run::{RunOptions, run};
use crate::workload::Workload;

/// A step holds its rate when it achieves at least this fraction of it, by default.
pub const TOLERANCE_DEFAULT: f64 = 0.05;
/// Without `--p99-bound-ms`, a step's publish p99 may be at most this many times the
/// smallest p99 of the sweep (the broker's unloaded latency on this machine; the lowest
/// step alone can catch a one-off stall, seen: 369 ms, which would excuse anything) ...
pub const KNEE_P99_FACTOR: f64 = 5.0;
/// ... and at least this bound, ms (so a very fast lowest step does not make the bound
/// tighter than the noise of a shared machine).
pub const KNEE_P99_FLOOR_MS: f64 = 5.0;
/// Steps at most (a list or a geometric range longer than this is refused).
const STEPS_MAX: usize = 64;

/// A broker to sweep.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label.
    pub name: String,
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Where to read this broker's CPU time (else the run options').
    pub cpu: Option<crate::cpu::BrokerCpuSource>,
}

impl Target {
    /// Parses `NAME=BOOTSTRAP[;pid=PID|;metrics=URL]`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("--broker {s:?}: expected NAME=BOOTSTRAP"))?;
        let mut parts = rest.split(';');
        let bootstrap = parts.next().unwrap_or("").to_string();
        let mut cpu = None;
        for p in parts {
            cpu = Some(match p.split_once('=') {
                Some(("pid", v)) => crate::cpu::BrokerCpuSource::Pid(
                    v.parse()
                        .map_err(|_| format!("--broker {s:?}: bad pid {v:?}"))?,
                ),
                Some(("metrics", v)) => crate::cpu::BrokerCpuSource::Metrics(v.to_string()),
                _ => return Err(format!("--broker {s:?}: unknown option {p:?}")),
            });
        }
        if name.is_empty() || bootstrap.is_empty() {
            return Err(format!("--broker {s:?}: expected NAME=BOOTSTRAP"));
        }
        Ok(Target {
            name: name.to_string(),
            bootstrap,
            cpu,
        })
    }
}

/// Sweep settings besides the workload.
pub struct SweepOptions {
    /// Brokers, swept one after the other.
    pub targets: Vec<Target>,
    /// Target rates, msg/s, increasing.
    pub rates: Vec<f64>,
    /// Measured seconds per step.
    pub step_duration_s: f64,
    /// Warm-up seconds per step (left out of the step's figures).
    pub step_warmup_s: f64,
    /// Achieved >= (1 - tolerance) x target for a step to hold its rate.
    pub tolerance: f64,
    /// Publish p99 bound of the knee, ms; None: KNEE_P99_FACTOR x the smallest step p99, at
    /// least KNEE_P99_FLOOR_MS.
    pub p99_bound_ms: Option<f64>,
    /// Go on after the first step that falls short of its rate.
    pub keep_going: bool,
    /// Where sweep.json, sweep.svg and every step's result go.
    pub out_dir: PathBuf,
    /// Options of every step's run (bootstrap and name are replaced per target).
    pub run: RunOptions,
}

/// Rates from `from` to `to` (inclusive) multiplying by `factor`.
pub fn geometric_rates(from: f64, to: f64, factor: f64) -> Result<Vec<f64>, String> {
    if !(from > 0.0 && to >= from && factor > 1.0) {
        return Err("--from > 0, --to >= --from and --factor > 1 are needed".into());
    }
    let mut out = Vec::new();
    let mut r = from;
    while r <= to * (1.0 + 1e-9) {
        out.push(r.round());
        r *= factor;
        if out.len() > STEPS_MAX {
            return Err(format!("more than {STEPS_MAX} steps"));
        }
    }
    if out.last().is_some_and(|l| *l < to.round()) {
        out.push(to.round());
    }
    Ok(out)
}

/// Parses "1000,5000,20000" (increasing).
pub fn parse_rates(s: &str) -> Result<Vec<f64>, String> {
    let rates: Vec<f64> = s
        .split(',')
        .map(|r| {
            r.trim()
                .parse::<f64>()
                .map_err(|_| format!("bad rate {r:?}"))
        })
        .collect::<Result<_, _>>()?;
    if rates.is_empty() || rates.len() > STEPS_MAX {
        return Err(format!("1 to {STEPS_MAX} rates"));
    }
    if rates.iter().any(|r| *r <= 0.0 || !r.is_finite()) || rates.windows(2).any(|w| w[1] <= w[0]) {
        return Err("rates must be > 0 and increasing".into());
    }
    Ok(rates)
}

/// One step's figures, taken from its run's JSON.
#[derive(Debug, Clone)]
pub struct Step {
    /// Target msg/s.
    pub target: f64,
    /// Achieved (acknowledged) msg/s over the measured window.
    pub achieved: f64,
    /// Publish latency p50, p99, p99.9, ms.
    pub p50: f64,
    /// p99.
    pub p99: f64,
    /// p99.9.
    pub p999: f64,
    /// Publish and consume errors.
    pub errors: u64,
    /// The run's JSON.
    pub json: Value,
}

impl Step {
    fn from_json(target: f64, j: Value) -> Step {
        let f = |p: &str| j.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let u = |p: &str| j.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        Step {
            target,
            achieved: f("/throughput/publishMsgPerSec"),
            p50: f("/aggregatedPublishLatency50pct"),
            p99: f("/aggregatedPublishLatency99pct"),
            p999: f("/aggregatedPublishLatency999pct"),
            errors: u("/counts/publishErrors") + u("/counts/consumeErrors"),
            json: j,
        }
    }

    /// Achieved at least (1 - tolerance) of the target.
    pub fn keeps_rate(&self, tolerance: f64) -> bool {
        self.achieved >= (1.0 - tolerance) * self.target
    }
}

/// Why a step does not hold, or None when it does.
pub fn shortfall(s: &Step, tolerance: f64, p99_bound_ms: f64) -> Option<String> {
    if !s.keeps_rate(tolerance) {
        Some(format!(
            "achieved {:.0} msg/s < {:.0}% of the target {:.0}",
            s.achieved,
            (1.0 - tolerance) * 100.0,
            s.target
        ))
    } else if s.errors > 0 {
        Some(format!("{} errors", s.errors))
    } else if s.p99.is_nan() || s.p99 > p99_bound_ms {
        // No latency at all (nothing acknowledged) does not hold either.
        Some(format!(
            "publish p99 {:.2} ms > bound {p99_bound_ms:.2} ms",
            s.p99
        ))
    } else {
        None
    }
}

/// The p99 bound used for the knee.
pub fn p99_bound(steps: &[Step], given: Option<f64>) -> f64 {
    given.unwrap_or_else(|| {
        let least = steps
            .iter()
            .map(|s| s.p99)
            .filter(|p| p.is_finite())
            .fold(f64::INFINITY, f64::min);
        if least.is_finite() {
            (KNEE_P99_FACTOR * least).max(KNEE_P99_FLOOR_MS)
        } else {
            KNEE_P99_FLOOR_MS
        }
    })
}

/// The knee: the last step that holds (rate within tolerance, no errors, p99 within the
/// bound) before the first that does not. Returns (index of the knee, index and reason of
/// the first step that does not hold).
pub fn knee(
    steps: &[Step],
    tolerance: f64,
    bound: f64,
) -> (Option<usize>, Option<(usize, String)>) {
    for (i, s) in steps.iter().enumerate() {
        if let Some(why) = shortfall(s, tolerance, bound) {
            return (i.checked_sub(1), Some((i, why)));
        }
    }
    (steps.len().checked_sub(1), None)
}

/// Runs the sweep; returns the JSON document (also written to out_dir/sweep.json).
pub fn sweep(w: &Workload, o: &SweepOptions) -> Result<Value, String> {
    std::fs::create_dir_all(&o.out_dir).map_err(|e| format!("{}: {e}", o.out_dir.display()))?;
    let mut brokers = Vec::new();
    let mut chart_series = Vec::new();
    for (bi, t) in o.targets.iter().enumerate() {
        let mut steps: Vec<Step> = Vec::new();
        for &rate in &o.rates {
            let mut ws = w.clone();
            ws.producer_rate = rate;
            ws.test_duration_s = o.step_duration_s;
            ws.warmup_duration_s = o.step_warmup_s;
            let mut ro = o.run.clone();
            ro.bootstrap = t.bootstrap.clone();
            ro.broker_name = t.name.clone();
            if t.cpu.is_some() {
                ro.broker_cpu = t.cpu.clone();
            }
            eprintln!("sweep {}: step {rate:.0} msg/s", t.name);
            let r = run(&ws, &ro)?;
            let path = o.out_dir.join(format!("{}-{rate:.0}.json", t.name));
            let text = serde_json::to_string_pretty(&r.json).map_err(|e| e.to_string())?;
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            let step = Step::from_json(rate, r.json);
            let short = !step.keeps_rate(o.tolerance);
            steps.push(step);
            if short && !o.keep_going {
                eprintln!(
                    "sweep {}: {rate:.0} msg/s not sustained; stopping (--keep-going to go on)",
                    t.name
                );
                break;
            }
        }
        let bound = p99_bound(&steps, o.p99_bound_ms);
        let (k, first_bad) = knee(&steps, o.tolerance, bound);
        for (pi, (label, f, dash)) in [
            ("p50", (|s: &Step| s.p50) as fn(&Step) -> f64, ""),
            ("p99", |s: &Step| s.p99, "8 4"),
            ("p99.9", |s: &Step| s.p999, "2 3"),
        ]
        .into_iter()
        .enumerate()
        {
            chart_series.push(XySeries {
                label: format!("{} publish {label}", t.name),
                color: bi,
                dash,
                points: steps.iter().map(|s| (s.achieved, f(s))).collect(),
                // The knee is circled on the p99 line, the one it is defined on.
                mark: k
                    .filter(|_| pi == 1)
                    .map(|i| (steps[i].achieved, steps[i].p99)),
            });
        }
        let step_json: Vec<Value> = steps
            .iter()
            .map(|s| {
                json!({
                    "targetMsgPerSec": s.target,
                    "achievedMsgPerSec": s.achieved,
                    "achievedMBPerSec": s.json.pointer("/throughput/publishMBPerSec"),
                    "publishLatency50pct": s.p50,
                    "publishLatency99pct": s.p99,
                    "publishLatency999pct": s.p999,
                    "endToEndLatency99pct": s.json.get("aggregatedEndToEndLatency99pct"),
                    "errors": s.errors,
                    "counts": s.json.get("counts"),
                    "keepsRate": s.keeps_rate(o.tolerance),
                    "clientSaturated": s.json.pointer("/clientCpu/saturated"),
                    "brokerCpuSecondsPerGB": s.json.pointer("/brokerCpu/cpuSecondsPerGB"),
                })
            })
            .collect();
        let knee_json = k.map(|i| {
            json!({
                "targetMsgPerSec": steps[i].target,
                "achievedMsgPerSec": steps[i].achieved,
                "publishLatency99pct": steps[i].p99,
            })
        });
        let note = match (&k, &first_bad) {
            (_, None) => "every step held: the broker did not saturate, raise the top rate".into(),
            (None, Some((_, why))) => format!("the lowest step did not hold: {why}"),
            (Some(_), Some((i, why))) => {
                format!("next step {:.0} msg/s: {why}", steps[*i].target)
            }
        };
        println!(
            "\n== sweep {} ({}): knee {} ({note}; p99 bound {bound:.2} ms) ==",
            t.name,
            t.bootstrap,
            k.map_or("none".into(), |i| format!(
                "{:.0} msg/s (achieved {:.0}, p99 {:.2} ms)",
                steps[i].target, steps[i].achieved, steps[i].p99
            )),
        );
        println!(
            "{:>12} {:>12} {:>9} {:>9} {:>9} {:>7} {:>6} {:>10}",
            "target/s",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "client",
            "CPU-s/GB"
        );
        for s in &steps {
            println!(
                "{:>12.0} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>6} {:>10}",
                s.target,
                s.achieved,
                s.p50,
                s.p99,
                s.p999,
                s.errors,
                if s.json.pointer("/clientCpu/saturated") == Some(&json!(true)) {
                    "SAT"
                } else {
                    "ok"
                },
                s.json
                    .pointer("/brokerCpu/cpuSecondsPerGB")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |v| format!("{v:.2}"))
            );
        }
        brokers.push(json!({
            "name": t.name,
            "bootstrap": t.bootstrap,
            "p99BoundMs": bound,
            "knee": knee_json,
            "firstShortStep": first_bad.as_ref().map(|(i, why)| json!({"targetMsgPerSec": steps[*i].target, "reason": why})),
            "note": note,
            "steps": step_json,
        }));
    }
    let doc = json!({
        "tool": "osprey-loadgen sweep",
        "workload": w.to_json(),
        "rates": o.rates,
        "stepDurationSeconds": o.step_duration_s,
        "stepWarmupSeconds": o.step_warmup_s,
        "tolerance": o.tolerance,
        "kneeRule": format!(
            "the last step with achieved >= (1 - tolerance) x target, no errors and publish p99 <= the bound, before the first step without; bound = --p99-bound-ms or {KNEE_P99_FACTOR} x the smallest step p99, at least {KNEE_P99_FLOOR_MS} ms"
        ),
        "machine": crate::machine::machine_json(),
        "brokers": brokers,
    });
    let jp = o.out_dir.join("sweep.json");
    std::fs::write(
        &jp,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", jp.display()))?;
    let sp = o.out_dir.join("sweep.svg");
    let title = format!(
        "Publish latency by achieved rate: {} ({} B, {} partitions, acks={})",
        w.name, w.message_size, w.partitions_per_topic, w.acks
    );
    std::fs::write(
        &sp,
        chart::render_xy(&title, "achieved msg/s (log)", &chart_series),
    )
    .map_err(|e| format!("{}: {e}", sp.display()))?;
    eprintln!("wrote {} and {}", jp.display(), sp.display());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(target: f64, achieved: f64, p99: f64) -> Step {
        Step {
            target,
            achieved,
            p50: p99 / 2.0,
            p99,
            p999: p99 * 2.0,
            errors: 0,
            json: Value::Null,
        }
    }

    // The knee is the last step that holds before the first that does not, by rate or by
    // latency; a sweep whose every step holds has its last step as the knee, and one whose
    // first step fails has none.
    #[test]
    fn knee_rule() {
        let s = vec![
            step(1000.0, 1000.0, 2.0),
            step(2000.0, 1990.0, 3.0),
            step(4000.0, 3000.0, 3.0),
        ];
        let b = p99_bound(&s, None);
        assert_eq!(b, 10.0);
        let (k, bad) = knee(&s, 0.05, b);
        assert_eq!(k, Some(1));
        assert_eq!(bad.as_ref().map(|b| b.0), Some(2));
        // Latency past the bound ends it too, even at the full rate.
        let s2 = vec![step(1000.0, 1000.0, 2.0), step(2000.0, 2000.0, 11.0)];
        assert_eq!(knee(&s2, 0.05, p99_bound(&s2, None)).0, Some(0));
        assert_eq!(knee(&s2, 0.05, 20.0), (Some(1), None));
        let s3 = vec![step(1000.0, 500.0, 2.0)];
        assert_eq!(knee(&s3, 0.05, 10.0).0, None);
        // The floor: a 0.3 ms lowest step gives a 5 ms bound, not 1.5 ms.
        assert_eq!(p99_bound(&[step(1.0, 1.0, 0.3)], None), KNEE_P99_FLOOR_MS);
        // A stall in the lowest step does not set the bound: the smallest p99 does.
        let s4 = vec![step(1000.0, 1000.0, 369.0), step(2000.0, 2000.0, 9.0)];
        assert_eq!(p99_bound(&s4, None), 45.0);
        assert_eq!(
            knee(&s4, 0.05, 45.0),
            (
                None,
                Some((0, "publish p99 369.00 ms > bound 45.00 ms".into()))
            )
        );
    }

    // Geometric steps include both ends; lists must increase.
    #[test]
    fn rate_lists() {
        assert_eq!(
            geometric_rates(1000.0, 10_000.0, 2.0).unwrap(),
            vec![1000.0, 2000.0, 4000.0, 8000.0, 10_000.0]
        );
        assert_eq!(
            geometric_rates(1000.0, 8000.0, 2.0).unwrap(),
            vec![1000.0, 2000.0, 4000.0, 8000.0]
        );
        assert!(geometric_rates(1000.0, 10.0, 2.0).is_err());
        assert_eq!(parse_rates("5, 10,20").unwrap(), vec![5.0, 10.0, 20.0]);
        assert!(parse_rates("10,5").is_err());
    }

    // --broker takes a name, a bootstrap list and optionally where its CPU is read.
    #[test]
    fn broker_targets() {
        let t = Target::parse("osprey=a:1,b:2;pid=42").unwrap();
        assert_eq!(
            (t.name.as_str(), t.bootstrap.as_str()),
            ("osprey", "a:1,b:2")
        );
        assert!(matches!(t.cpu, Some(crate::cpu::BrokerCpuSource::Pid(42))));
        let t = Target::parse("k=h:9092;metrics=http://h:9644/metrics").unwrap();
        assert!(matches!(
            t.cpu,
            Some(crate::cpu::BrokerCpuSource::Metrics(_))
        ));
        assert!(Target::parse("k=h:1").unwrap().cpu.is_none());
        assert!(Target::parse("h:1").is_err());
        assert!(Target::parse("k=h:1;cpu=3").is_err());
    }
}
