//! Operating the broker's host: the logger (`--log-format text|json`), the commands
//! `osprey tune check|apply|script` and `osprey iotune DIR`, and what `serve` does with
//! them at start-up: `startup_checks` logs each tuner warning once; `apply_iotune` reads
//! iotune.json (`--iotune-file`, default DATA_DIR/iotune.json) and sizes the write rounds,
//! in-flight writes and tail cache that no flag set from the measured disk
//! (`derive_sizes`, pure), with one log line saying which values came from where.
//!
//! Runs on: the main thread, before any shard starts (the commands run no shard at all).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tuning::tune::{self, Applied, Context, Host, Status};

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: ts (RFC 3339, UTC), level, target, msg.
    Json,
}

/// Installs the `log` logger (glommio and every module log through it); RUST_LOG filters
/// as usual, default `info`.
pub fn init_logging(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        b.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_micros().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    b.init();
}

/// The tune subcommand's action.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum TuneAction {
    /// Print a table of every knob; exit 1 when an important one is off.
    Check,
    /// Set every knob that is off (root; writes /proc/sys and /sys files), print the ones
    /// that must be changed by hand (process limits).
    Apply,
    /// Print a shell script that sets every knob that is off.
    Script,
}

/// How `tune check` and `iotune` print their result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// Flags of `osprey tune`.
#[derive(clap::Args, Debug, Clone)]
pub struct TuneArgs {
    #[command(subcommand)]
    pub action: TuneAction,
    /// `check`: a table, or a JSON array of the findings.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The broker's data directory (its disk's scheduler and merges are checked).
    #[arg(long, global = true, default_value = "osprey-data")]
    pub data_dir: PathBuf,
    /// Shards the broker will run (as serve's --cores; default: every allowed CPU).
    #[arg(long, global = true)]
    pub cores: Option<usize>,
    /// Root of the /proc and /sys trees to read and write (tests use a fake tree).
    #[arg(long, global = true, default_value = "/")]
    pub root: PathBuf,
}

fn context(data_dir: &Path, cores: Option<usize>) -> Result<Context, String> {
    let cpus = crate::runtime::choose_cpus(cores).map_err(|e| e.to_string())?;
    Ok(Context::for_broker(cpus, data_dir))
}

/// `osprey tune`: Ok(exit code).
pub fn tune(args: TuneArgs) -> Result<i32, String> {
    let host = Host::new(&args.root);
    let ctx = context(&args.data_dir, args.cores)?;
    let findings = tune::check_all(&host, &ctx);
    match args.action {
        TuneAction::Check => {
            match args.output {
                Output::Table => print!("{}", tune::render_table(&findings)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&findings).map_err(|e| e.to_string())?
                ),
            }
            Ok(i32::from(findings.iter().any(|f| f.is_important_off())))
        }
        TuneAction::Script => {
            print!("{}", tune::render_script(&findings));
            Ok(0)
        }
        TuneAction::Apply => {
            if host.is_real() && !ctx.is_root {
                return Err(
                    "tune apply writes /proc/sys and /sys: run it as root, or print the commands \
                     with `osprey tune script`"
                        .into(),
                );
            }
            let mut failed = false;
            for (knob, applied) in tune::apply(&host, &findings) {
                match applied {
                    Applied::Set => println!("{knob}: set"),
                    Applied::Manual(cmds) => {
                        println!("{knob}: change by hand:");
                        for c in cmds {
                            println!("    {c}");
                        }
                    }
                    Applied::Failed(e) => {
                        failed = true;
                        println!("{knob}: FAILED: {e}");
                    }
                }
            }
            // What is still off after the writes (limits need a new shell or unit).
            let after = tune::check_all(&host, &ctx);
            let off: Vec<&str> = after
                .iter()
                .filter(|f| f.status == Status::Off)
                .map(|f| f.knob)
                .collect();
            if !off.is_empty() {
                println!("still off: {}", off.join(", "));
            }
            Ok(i32::from(
                failed || after.iter().any(|f| f.is_important_off()),
            ))
        }
    }
}

/// Flags of `osprey iotune`.
#[derive(clap::Args, Debug, Clone)]
pub struct IotuneArgs {
    /// Directory on the disk to measure (normally the data directory: the default is
    /// serve's default data directory); iotune.json is written there, where `serve` looks
    /// for it.
    #[arg(default_value = crate::config::DATA_DIR_DEFAULT)]
    pub dir: PathBuf,
    /// Seconds per test (15 tests), e.g. 0.5.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Size of the scratch file the tests cycle over, MiB.
    #[arg(long, default_value_t = 256)]
    pub file_mib: u64,
    /// A table, or the report as JSON (what iotune.json holds).
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `osprey iotune DIR`.
pub fn iotune(args: IotuneArgs) -> Result<(), String> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let opts = tuning::iotune::Options {
        duration: Duration::from_secs_f64(args.duration),
        file_bytes: args.file_mib << 20,
    };
    let report = tuning::iotune::run(&args.dir, &opts, |step| eprintln!("iotune: {step}"))
        .map_err(|e| format!("iotune of {}: {e}", args.dir.display()))?;
    let path = tuning::iotune::write_report(&args.dir, &report)
        .map_err(|e| format!("writing the result: {e}"))?;
    match args.output {
        Output::Table => {
            print!("{}", report.table());
            println!("\nwritten to {}", path.display());
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// At `serve` start-up: logs one warning per tuner that is off (each once: this runs once).
pub fn startup_checks(data_dir: &Path, cpus: &[usize]) {
    let ctx = Context::for_broker(cpus.to_vec(), data_dir);
    let findings = tune::check_all(&Host::new("/"), &ctx);
    let mut off = 0;
    for f in findings.iter().filter(|f| f.status == Status::Off) {
        off += 1;
        log::warn!(
            "host tuning: {} is {} (recommended {}): {}",
            f.knob,
            f.current,
            f.recommended,
            f.why
        );
    }
    if off > 0 {
        log::warn!(
            "host tuning: {off} knobs off; `osprey tune check` shows them all, `osprey tune script` prints the fixes"
        );
    }
}

/// A write size whose bandwidth is at least this share of the best measured write
/// bandwidth counts as saturating the disk.
pub const BANDWIDTH_SATURATED_FRACTION: f64 = 0.9;
/// Bounds of a write round derived from iotune.json (then `Store::new`'s own bounds):
/// smaller rounds cost more per byte on every disk measured so far.
pub const IOTUNE_ROUND_MIN_BYTES: usize = 64 << 10;
pub const IOTUNE_ROUND_MAX_BYTES: usize = 4 << 20;
/// The derived tail cache holds this many seconds of writes at the measured bandwidth: a
/// consumer that far behind the producers still reads from memory.
pub const CACHE_WRITE_SECONDS: f64 = 2.0;
/// The derived tail cache takes at most 1/this of the host's memory, and at most
/// IOTUNE_CACHE_MAX_BYTES, at least IOTUNE_CACHE_MIN_BYTES.
pub const CACHE_MEMORY_DIVISOR: u64 = 4;
pub const IOTUNE_CACHE_MAX_BYTES: u64 = 16 << 30;
pub const IOTUNE_CACHE_MIN_BYTES: u64 = 64 << 20;
const _: () = assert!(IOTUNE_ROUND_MIN_BYTES <= IOTUNE_ROUND_MAX_BYTES);
const _: () = assert!(IOTUNE_ROUND_MAX_BYTES <= shards::ROUND_MAX_BYTES_CAP);
const _: () = assert!(IOTUNE_CACHE_MIN_BYTES <= IOTUNE_CACHE_MAX_BYTES);

/// Write-path and cache sizes derived from a disk measurement; None where the report
/// lacks (or has nonsense for) what a value needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskSizes {
    /// The smallest measured write size that saturates the disk.
    pub write_round_max_bytes: Option<usize>,
    /// What arrives at the best write bandwidth during one O_DSYNC write (p50): waiting
    /// for that much more data costs about one device round trip.
    pub write_round_min_bytes: Option<usize>,
    /// Twice the queue depth of the best write bandwidth: that many rounds being written,
    /// as many being formed.
    pub inflight_writes_max: Option<usize>,
    /// All shards' tail cache.
    pub cache_bytes: Option<usize>,
}

fn usable(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Sizes from iotune's report, within the IOTUNE_* bounds; `memory_bytes` is the host's
/// memory (0: unknown, then the cache is not derived). Pure.
pub fn derive_sizes(report: &tuning::iotune::Report, memory_bytes: u64) -> DiskSizes {
    let writes: Vec<&tuning::iotune::Bandwidth> = report
        .bandwidth
        .iter()
        .filter(|b| b.op == "write" && usable(b.bytes_per_sec) && b.block_bytes > 0)
        .collect();
    let Some(best) = writes
        .iter()
        .max_by(|a, b| a.bytes_per_sec.total_cmp(&b.bytes_per_sec))
    else {
        return DiskSizes::default();
    };
    let saturating = writes
        .iter()
        .filter(|b| b.bytes_per_sec >= BANDWIDTH_SATURATED_FRACTION * best.bytes_per_sec)
        .map(|b| b.block_bytes)
        .min()
        .unwrap_or(best.block_bytes);
    let round_max = saturating.clamp(IOTUNE_ROUND_MIN_BYTES, IOTUNE_ROUND_MAX_BYTES);
    let round_min = report
        .latency
        .iter()
        .filter(|l| l.op == "dsync write" && l.p50_us > 0)
        .map(|l| l.p50_us)
        .min()
        .map(|us| {
            let bytes = best.bytes_per_sec * us as f64 / 1e6;
            (bytes.min(round_max as f64) as usize).max(shards::BLOCK_BYTES as usize)
        });
    let inflight = best
        .queue_depth
        .saturating_mul(2)
        .clamp(2, shards::INFLIGHT_WRITES_CAP);
    let cache = (memory_bytes > 0).then(|| {
        let want = best.bytes_per_sec * CACHE_WRITE_SECONDS;
        let cap = (memory_bytes / CACHE_MEMORY_DIVISOR).min(IOTUNE_CACHE_MAX_BYTES);
        (want.min(cap as f64) as u64).max(IOTUNE_CACHE_MIN_BYTES.min(cap)) as usize
    });
    DiskSizes {
        write_round_max_bytes: Some(round_max),
        write_round_min_bytes: round_min,
        inflight_writes_max: Some(inflight),
        cache_bytes: cache,
    }
}

/// The host's physical memory in bytes (0 when unknown).
fn host_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads system values.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as u64).saturating_mul(page as u64)
    } else {
        0
    }
}

/// At `serve` start-up: reads `config.iotune_file` and replaces every write-path and cache
/// size that no flag set with the one derived from it; logs one line naming the file and
/// which values came from it (or why none did).
pub fn apply_iotune(config: &mut crate::config::BrokerConfig) {
    let file = config.iotune_file.clone();
    let report = match tuning::iotune::Report::load_file(&file) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::info!(
                "iotune: no {} (`osprey iotune {}` measures the disk): write round {} KiB, \
                 inflight writes {}, cache {} MiB from flags/defaults",
                file.display(),
                config.data_dir.display(),
                config.write_round_max_bytes >> 10,
                config.inflight_writes_max,
                config.cache_bytes >> 20
            );
            return;
        }
        Err(e) => {
            log::warn!(
                "iotune: cannot use {}: {e}; write round {} KiB, inflight writes {}, cache {} MiB from flags/defaults",
                file.display(),
                config.write_round_max_bytes >> 10,
                config.inflight_writes_max,
                config.cache_bytes >> 20
            );
            return;
        }
    };
    let sizes = derive_sizes(&report, host_memory_bytes());
    let mut from_iotune = Vec::new();
    let mut from_flags = Vec::new();
    let set = config.sizes_set;
    if set.write_round {
        from_flags.push(format!(
            "write round {} KiB",
            config.write_round_max_bytes >> 10
        ));
    } else if let Some(max) = sizes.write_round_max_bytes {
        config.write_round_max_bytes = max;
        config.write_round_min_bytes = sizes.write_round_min_bytes.unwrap_or(max / 2).min(max);
        from_iotune.push(format!(
            "write round {} KiB (next round waits for {} KiB)",
            max >> 10,
            config.write_round_min_bytes >> 10
        ));
    }
    if set.inflight_writes {
        from_flags.push(format!("inflight writes {}", config.inflight_writes_max));
    } else if let Some(n) = sizes.inflight_writes_max {
        config.inflight_writes_max = n;
        from_iotune.push(format!("inflight writes {n}"));
    }
    if set.cache {
        from_flags.push(format!("cache {} MiB", config.cache_bytes >> 20));
    } else if let Some(c) = sizes.cache_bytes {
        config.cache_bytes = c;
        from_iotune.push(format!("cache {} MiB", c >> 20));
    }
    let age_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(report.measured_at_unix))
        .unwrap_or(0);
    log::info!(
        "iotune: from {} (measured {age_s} s ago: {}): {}; set by flags: {}",
        file.display(),
        report.summary(),
        if from_iotune.is_empty() {
            "nothing".to_string()
        } else {
            from_iotune.join(", ")
        },
        if from_flags.is_empty() {
            "nothing".to_string()
        } else {
            from_flags.join(", ")
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuning::iotune::{Bandwidth, Latency, Report};

    fn bw(block_bytes: usize, queue_depth: usize, mb_per_sec: f64) -> Bandwidth {
        Bandwidth {
            op: "write".into(),
            block_bytes,
            queue_depth,
            bytes_per_sec: mb_per_sec * 1e6,
            iops: mb_per_sec * 1e6 / block_bytes as f64,
        }
    }

    fn report(bandwidth: Vec<Bandwidth>, dsync_p50_us: u64) -> Report {
        Report {
            version: tuning::iotune::FORMAT_VERSION,
            dir: "/d".into(),
            measured_at_unix: 0,
            duration_per_test_ms: 500,
            file_bytes: 64 << 20,
            bandwidth,
            latency: vec![Latency {
                op: "dsync write".into(),
                block_bytes: 4096,
                ops: 100,
                p50_us: dsync_p50_us,
                p99_us: dsync_p50_us * 2,
                p999_us: dsync_p50_us * 3,
                max_us: dsync_p50_us * 4,
            }],
        }
    }

    // A virtio-like disk that needs 1 MiB writes at queue depth 4 to saturate: rounds of
    // 1 MiB, 8 writes in flight, round minimum = bandwidth x O_DSYNC latency, and a cache
    // of 2 s of writes.
    #[test]
    fn large_writes_saturate() {
        let r = report(
            vec![
                bw(4 << 10, 1, 20.0),
                bw(4 << 10, 4, 60.0),
                bw(64 << 10, 1, 200.0),
                bw(64 << 10, 4, 500.0),
                bw(1 << 20, 1, 700.0),
                bw(1 << 20, 4, 1000.0),
            ],
            200,
        );
        let s = derive_sizes(&r, 64 << 30);
        assert_eq!(s.write_round_max_bytes, Some(1 << 20));
        assert_eq!(s.inflight_writes_max, Some(8));
        // 1e9 B/s x 200 us = 200 kB.
        assert_eq!(s.write_round_min_bytes, Some(200_000));
        assert_eq!(s.cache_bytes, Some(2_000_000_000));
    }

    // A disk saturated by 64 KiB writes at depth 1 gets small rounds (the floor), two
    // writes in flight; the cache is bounded by a quarter of a small host's memory, and
    // the round minimum by the round.
    #[test]
    fn small_writes_saturate_and_memory_bounds_the_cache() {
        let r = report(
            vec![
                bw(4 << 10, 1, 100.0),
                bw(64 << 10, 1, 1950.0),
                bw(64 << 10, 4, 1900.0),
                bw(1 << 20, 1, 2000.0),
            ],
            10_000,
        );
        let s = derive_sizes(&r, 1 << 30);
        assert_eq!(s.write_round_max_bytes, Some(IOTUNE_ROUND_MIN_BYTES));
        assert_eq!(s.inflight_writes_max, Some(2));
        assert_eq!(s.write_round_min_bytes, Some(IOTUNE_ROUND_MIN_BYTES));
        assert_eq!(s.cache_bytes, Some(256 << 20));
    }

    // Nonsense or missing measurements derive nothing, and huge ones stay within the caps.
    #[test]
    fn bad_reports_derive_nothing_and_caps_hold() {
        let s = derive_sizes(&report(vec![bw(1 << 20, 4, f64::NAN)], 100), 1 << 30);
        assert_eq!(s, DiskSizes::default());
        let s = derive_sizes(&report(vec![], 100), 1 << 30);
        assert_eq!(s, DiskSizes::default());
        let s = derive_sizes(&report(vec![bw(1 << 30, 1 << 20, 1e9)], 1_000_000), 1 << 50);
        assert_eq!(s.write_round_max_bytes, Some(IOTUNE_ROUND_MAX_BYTES));
        assert_eq!(s.write_round_min_bytes, Some(IOTUNE_ROUND_MAX_BYTES));
        assert_eq!(s.inflight_writes_max, Some(shards::INFLIGHT_WRITES_CAP));
        assert_eq!(s.cache_bytes, Some(IOTUNE_CACHE_MAX_BYTES as usize));
        // Memory unknown: no cache size.
        assert_eq!(
            derive_sizes(&report(vec![bw(1 << 20, 4, 500.0)], 100), 0).cache_bytes,
            None
        );
    }
}
