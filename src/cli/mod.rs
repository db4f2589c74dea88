//! The admin command line of the `osprey` binary: `topics`, `produce`, `consume`, `groups`
//! and `cluster`, one file each, all speaking Kafka through the project's client
//! (`osprey_client`, the `client/` crate) to any Kafka-compatible broker named by `--bootstrap`.
//!
//! Runs in the CLI process on one glommio executor (`run`), never inside a broker. This file
//! holds what the subcommands share: the `--bootstrap`/`--output`/`--progress` flags,
//! `CliError` (what went wrong and how to fix it), aligned tables, JSON printing and
//! `Progress` (the throttled progress line of long operations, on stderr only).

pub mod acls;
pub mod cluster;
pub mod consume;
pub mod groups;
pub mod produce;
pub mod topics;
pub mod users;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use osprey_client::{Client, ClientConfig, ClientError, Security, kafka_error_name};

/// The client's per-request timeout and the broker-side timeout of admin requests.
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// Memory the CLI's executor reserves for io_uring buffers.
const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;

/// Flags every broker-facing subcommand takes (before or after the action).
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker addresses, HOST:PORT[,HOST:PORT...] (any Kafka-compatible broker).
    #[arg(
        long,
        global = true,
        alias = "bootstrap-server",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Kafka client properties file (security.protocol, sasl.mechanism, sasl.username,
    /// sasl.password or sasl.jaas.config, ssl.ca.location, ssl.certificate.location,
    /// ssl.key.location), as kafka-topics.sh --command-config.
    #[arg(long, global = true, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Show a progress line on stderr during long operations even when stderr is not a
    /// terminal or the output is JSON (stdout is unchanged either way).
    #[arg(long, global = true, overrides_with = "no_progress")]
    pub progress: bool,
    /// Never show a progress line (default: shown when stderr is a terminal and the
    /// output is a table).
    #[arg(long, global = true, overrides_with = "progress")]
    pub no_progress: bool,
    /// Milliseconds between two progress updates.
    #[arg(long, global = true, hide = true, default_value_t = PROGRESS_INTERVAL_MS)]
    pub progress_interval_ms: u64,
}

/// Default time between two updates of the progress line.
pub const PROGRESS_INTERVAL_MS: u64 = 250;

/// The progress line of a long operation: written to stderr (never stdout) as
/// `\r<text>` with the rest of the line erased, at most once per interval, and erased by
/// `finish` (or on drop). Off unless `--progress`, or stderr is a terminal, the output is
/// a table and `--no-progress` is absent.
pub struct Progress {
    enabled: bool,
    interval: std::time::Duration,
    /// When the line was last shown, or the operation started.
    last: std::time::Instant,
    shown: bool,
}

impl Progress {
    /// The progress line for a command with these flags. `quiet_if_stdout_terminal`: the
    /// command prints its results to stdout as it goes (consume), so a terminal showing
    /// stdout needs no progress line (it would mix with the results).
    pub fn new(common: &Common, quiet_if_stdout_terminal: bool) -> Progress {
        use std::io::IsTerminal as _;
        let enabled = if common.no_progress {
            false
        } else if common.progress {
            true
        } else {
            std::io::stderr().is_terminal()
                && common.output == Output::Table
                && !(quiet_if_stdout_terminal && std::io::stdout().is_terminal())
        };
        Progress {
            enabled,
            interval: std::time::Duration::from_millis(common.progress_interval_ms),
            last: std::time::Instant::now(),
            shown: false,
        }
    }

    /// Shows `text()` unless the line was shown (or the operation started) less than an
    /// interval ago: operations quicker than one interval show nothing.
    pub fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        if now.duration_since(self.last) < self.interval {
            return;
        }
        self.last = now;
        self.shown = true;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
    }

    /// Awaits `fut`, showing `what` and the time spent each interval while it runs.
    pub async fn during<T>(&mut self, what: &str, fut: impl Future<Output = T>) -> T {
        if !self.enabled {
            return fut.await;
        }
        let started = std::time::Instant::now();
        let mut fut = std::pin::pin!(fut);
        loop {
            let tick =
                glommio::timer::sleep(self.interval.max(std::time::Duration::from_millis(1)));
            let done = futures_lite::future::or(async { Some(fut.as_mut().await) }, async {
                tick.await;
                None
            })
            .await;
            match done {
                Some(v) => return v,
                None => {
                    self.update(|| format!("{what} ({:.1} s)", started.elapsed().as_secs_f64()))
                }
            }
        }
    }

    /// Erases the progress line, if one was shown.
    pub fn finish(&mut self) {
        if self.shown {
            self.shown = false;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// One JSON document (consume: one JSON object per line).
    Json,
}

/// A failed command: what went wrong, and how to fix it when we know.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl CliError {
    /// An error with a fix.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A client error while doing `what`, with the fix its kind suggests.
    pub fn client(what: impl fmt::Display, e: ClientError) -> CliError {
        let hint = hint_for(&e);
        CliError {
            message: format!("{what}: {e}"),
            hint,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, CliError>;

/// What to do about a client error, by kind and Kafka error code.
pub fn hint_for(e: &ClientError) -> Option<String> {
    let h = match e {
        ClientError::Io { .. } | ClientError::ConnectionClosed { .. } => {
            "is a broker running there? Pass its address with --bootstrap HOST:PORT; if its \
             listener is SSL or SASL, pass --command-config FILE with security.protocol"
        }
        ClientError::Tls { .. } => {
            "check security.protocol in the --command-config file, ssl.ca.location (the CA \
             that signed the broker's certificate), and that the --bootstrap host is a name \
             in that certificate"
        }
        ClientError::Authentication { .. } => {
            "check sasl.mechanism, sasl.username and sasl.password (or sasl.jaas.config) in \
             the --command-config file"
        }
        ClientError::Timeout { .. } => {
            "the broker did not answer in time: check that it is healthy and reachable"
        }
        ClientError::UnsupportedApi { .. } => {
            "this broker does not implement the request (or not a version this tool speaks)"
        }
        ClientError::NoLeader { .. } => {
            "the partition has no leader now: check `osprey topics describe` and retry"
        }
        ClientError::Kafka { code, .. } => match code {
            3 => "no such topic or partition: `osprey topics list` shows what exists",
            5 | 6 => "leadership is moving; retry in a moment",
            7 => "the broker timed out; retry, or raise the broker's timeouts",
            10 => "the message is larger than the topic's max.message.bytes",
            14..=16 => "the group coordinator is not ready; retry in a moment",
            19 | 20 => "too few in-sync replicas for acks=all; check the replicas' hosts",
            25 => "the group forgot this member; rerun the command",
            36 => "pick another name, or delete the topic first",
            37 => "the partition count must be positive, and above today's count when adding",
            38 => "give --replication-factor between 1 and the number of nodes",
            40 => "check the config name and value (`osprey topics describe` lists them)",
            42 => "check the request's parameters",
            68 => "the group still has members: stop its consumers first",
            69 => "no such group: `osprey groups list` shows what exists",
            86 => "the group's members still consume this topic: stop them first",
            87 => "broker configs are static on osprey; set it in the broker's config file",
            _ => return None,
        },
        ClientError::InvalidArgument(_) => "check the command's arguments (--help)",
        _ => return None,
    };
    Some(h.to_owned())
}

/// The client settings of the CLI: its timeouts, and the security of `--command-config`.
pub fn client_config(command_config: Option<&Path>) -> CliResult<ClientConfig> {
    let security = match command_config {
        Some(p) => Security::from_properties_file(p).map_err(|e| {
            CliError::new(
                format!("--command-config: {e}"),
                "write Kafka client properties, e.g. security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, sasl.username=..., sasl.password=..., ssl.ca.location=ca.pem",
            )
        })?,
        None => Security::default(),
    };
    Ok(ClientConfig {
        client_id: "osprey-cli".into(),
        request_timeout: std::time::Duration::from_millis(ADMIN_TIMEOUT_MS as u64 + 5_000),
        security,
        ..ClientConfig::default()
    })
}

/// Runs `f` with a client connected to `common.bootstrap` (secured as `--command-config`
/// says) on a fresh executor on this thread.
pub fn run<F, Fut, T>(common: &Common, f: F) -> CliResult<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = CliResult<T>>,
{
    let config = client_config(common.command_config.as_deref())?;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .make()
        .map_err(|e| {
            CliError::new(
                format!("cannot start the client runtime: {e}"),
                "io_uring must be usable (kernel 5.8+, kernel.io_uring_disabled=0, memlock limit)",
            )
        })?;
    let bootstrap = common.bootstrap.clone();
    ex.run(async move {
        let client = Client::connect(&bootstrap, config)
            .await
            .map_err(|e| CliError::client(format_args!("cannot reach {bootstrap}"), e))?;
        f(client).await
    })
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(format!("encoding JSON: {e}"), "this is a bug"))?;
    write_stdout(format_args!("{text}\n"))
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
pub fn write_stdout(args: fmt::Arguments<'_>) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            format!("writing to stdout: {e}"),
            "check where the output goes (disk full? closed terminal?)",
        )),
    }
}

/// A table printed with aligned columns (two spaces apart, the last column unpadded).
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let last = r.len().saturating_sub(1);
            for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                if i == last {
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) -> CliResult {
        write_stdout(format_args!("{}", self.render()))
    }
}

/// The outcome of a command over several items: Ok, its one failure, or each failure printed
/// and a summary.
pub fn failures(mut errors: Vec<CliError>, total: usize, what: &str) -> CliResult {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            for e in &errors {
                eprintln!("osprey: {e}");
            }
            Err(CliError::new(
                format!("{n} of {total} {what} failed (see above)"),
                "fix the causes above and retry those",
            ))
        }
    }
}

/// Node ids as "1,2,3".
pub fn node_list(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// "name=value" into its two halves.
pub fn parse_key_value(s: &str, flag: &str) -> CliResult<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(CliError::new(
            format!("{flag} {s:?} is not name=value"),
            format!("write it as {flag} name=value"),
        )),
    }
}

/// A Kafka error code's name and number, e.g. "UnknownTopicOrPartition (3)".
pub fn kafka_error(code: i16) -> String {
    format!("{} ({code})", kafka_error_name(code))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves columns are padded to the widest cell and the last column is not padded.
    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONG"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    LONG\nxyz  1\n");
    }
}
