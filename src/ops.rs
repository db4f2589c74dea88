//! Operating the broker's host: the logger (`--log-format text|json`), the commands
//! `osprey tune check|apply|script` and `osprey iotune DIR`, and what `serve` does with
//! them at start-up (`startup_checks`: each tuner warning logged once, and the data
//! directory's iotune.json logged when present).
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
    /// Directory on the disk to measure (normally the data directory); iotune.json is
    /// written there.
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

/// At `serve` start-up: logs one warning per tuner that is off (each once: this runs once)
/// and the data directory's iotune result, if any.
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
    match tuning::iotune::Report::load(data_dir) {
        Ok(r) => log::info!(
            "disk of {} as measured by osprey iotune ({} s ago): {}",
            data_dir.display(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs().saturating_sub(r.measured_at_unix))
                .unwrap_or(0),
            r.summary()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => log::info!(
            "no iotune.json in {}: `osprey iotune {}` measures its disk",
            data_dir.display(),
            data_dir.display()
        ),
        Err(e) => log::warn!("cannot read iotune.json in {}: {e}", data_dir.display()),
    }
}
