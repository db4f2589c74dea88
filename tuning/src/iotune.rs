//! `osprey iotune DIR`: measures the disk under a directory the way the storage engine
//! uses it, and writes the result to `DIR/iotune.json` (read back by `osprey serve`, which
//! logs it at start-up when the file is in its data directory).
//!
//! Tests, on one scratch file (`IOTUNE_FILE_NAME`, removed at the end), each run for the
//! given duration:
//! - O_DIRECT write and read bandwidth at each block size and queue depth: the queue depth
//!   is that many threads, each issuing one block at a time over its own interleaved
//!   sequential slots of the file;
//! - latency percentiles of a 4 KiB overwrite followed by fdatasync, and of 4 KiB and
//!   128 KiB overwrites through an O_DIRECT|O_DSYNC descriptor (the engine's default group
//!   commit writes a round that way).
//!
//! Bounded: each test stops at its duration (the operations in flight finish), the latency
//! tests also at `LATENCY_OPS_MAX` operations; with the defaults the run takes about
//! 15 x 2 s plus the time to fill the scratch file once.
//!
//! Runs on: the calling thread plus short-lived std threads for queue depths above 1.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{AlignedBuf, DIRECT_BLOCK_BYTES, fdatasync};

/// The result file, in the measured directory.
pub const IOTUNE_RESULT_FILE: &str = "iotune.json";
/// The scratch file, removed after the run.
pub const IOTUNE_FILE_NAME: &str = ".osprey-iotune.tmp";
/// Default time per test.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(2);
/// Longest time per test accepted (15 tests: the whole run stays within minutes).
pub const DURATION_MAX: Duration = Duration::from_secs(30);
/// Default scratch file size (reads and writes cycle within it).
pub const FILE_BYTES_DEFAULT: u64 = 256 << 20;
/// Most operations one latency test records.
pub const LATENCY_OPS_MAX: usize = 100_000;
/// Block sizes of the bandwidth tests.
pub const BLOCK_SIZES: &[usize] = &[4 << 10, 64 << 10, 1 << 20];
/// Queue depths of the bandwidth tests.
pub const QUEUE_DEPTHS: &[usize] = &[1, 4];
/// Format version of iotune.json.
pub const FORMAT_VERSION: u32 = 1;

const _: () = assert!((1 << 20) % DIRECT_BLOCK_BYTES == 0);

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub file_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: DURATION_DEFAULT,
            file_bytes: FILE_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bandwidth {
    /// "write" or "read".
    pub op: String,
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub bytes_per_sec: f64,
    pub iops: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// "write+fdatasync" or "dsync write".
    pub op: String,
    pub block_bytes: usize,
    pub ops: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What `iotune` measured; the content of iotune.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub dir: PathBuf,
    /// Seconds since the epoch when the run ended.
    pub measured_at_unix: u64,
    pub duration_per_test_ms: u64,
    pub file_bytes: u64,
    pub bandwidth: Vec<Bandwidth>,
    pub latency: Vec<Latency>,
}

impl Report {
    /// The best bandwidth of an operation over block sizes and queue depths.
    pub fn best(&self, op: &str) -> Option<&Bandwidth> {
        self.bandwidth
            .iter()
            .filter(|b| b.op == op)
            .max_by(|a, b| a.bytes_per_sec.total_cmp(&b.bytes_per_sec))
    }

    pub fn latency_of(&self, op: &str, block_bytes: usize) -> Option<&Latency> {
        self.latency
            .iter()
            .find(|l| l.op == op && l.block_bytes == block_bytes)
    }

    /// Reads DIR/iotune.json, if there is one of this format.
    pub fn load(dir: &Path) -> io::Result<Report> {
        Self::load_file(&dir.join(IOTUNE_RESULT_FILE))
    }

    /// Reads a report written by `write_report` (of this format) from `path`.
    pub fn load_file(path: &Path) -> io::Result<Report> {
        let text = std::fs::read_to_string(path)?;
        let r: Report = serde_json::from_str(&text).map_err(io::Error::other)?;
        if r.version != FORMAT_VERSION {
            return Err(io::Error::other(format!(
                "iotune.json format {} (expected {FORMAT_VERSION}): run osprey iotune again",
                r.version
            )));
        }
        Ok(r)
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for op in ["write", "read"] {
            if let Some(b) = self.best(op) {
                parts.push(format!(
                    "O_DIRECT {op} {:.0} MB/s ({} KiB x qd {})",
                    b.bytes_per_sec / 1e6,
                    b.block_bytes >> 10,
                    b.queue_depth
                ));
            }
        }
        for l in &self.latency {
            parts.push(format!(
                "{} {} KiB p50 {} us p99 {} us",
                l.op,
                l.block_bytes >> 10,
                l.p50_us,
                l.p99_us
            ));
        }
        parts.join(", ")
    }

    /// The table `osprey iotune` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>4} {:>11} {:>10}",
            "OP", "BLOCK", "QD", "MB/s", "IOPS"
        );
        for b in &self.bandwidth {
            let _ = writeln!(
                out,
                "{:<8} {:>7}K {:>4} {:>11.1} {:>10.0}",
                b.op,
                b.block_bytes >> 10,
                b.queue_depth,
                b.bytes_per_sec / 1e6,
                b.iops
            );
        }
        let _ = writeln!(
            out,
            "\n{:<17} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "OP", "BLOCK", "OPS", "p50 us", "p99 us", "p99.9 us", "max us"
        );
        for l in &self.latency {
            let _ = writeln!(
                out,
                "{:<17} {:>7}K {:>7} {:>9} {:>9} {:>9} {:>9}",
                l.op,
                l.block_bytes >> 10,
                l.ops,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us
            );
        }
        out
    }
}

fn open_direct(path: &Path, dsync: bool) -> io::Result<File> {
    let mut flags = libc::O_DIRECT;
    if dsync {
        flags |= libc::O_DSYNC;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
}

/// Bandwidth of `qd` threads doing `block`-sized O_DIRECT operations for `duration`.
fn bandwidth(
    path: &Path,
    write: bool,
    block: usize,
    qd: usize,
    file_bytes: u64,
    duration: Duration,
) -> io::Result<Bandwidth> {
    let slots = (file_bytes / block as u64).max(1);
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<std::thread::JoinHandle<io::Result<u64>>> = (0..qd)
        .map(|t| {
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let f = open_direct(&path, false)?;
                let mut buf = AlignedBuf::new(block, 0x5a)?;
                let mut ops = 0u64;
                let mut slot = t as u64;
                while Instant::now() < deadline {
                    let pos = (slot % slots) * block as u64;
                    if write {
                        f.write_all_at(buf.as_slice(), pos)?;
                    } else {
                        f.read_exact_at(buf.as_mut_slice(), pos)?;
                    }
                    ops += 1;
                    slot += qd as u64;
                }
                Ok(ops)
            })
        })
        .collect();
    let mut ops = 0;
    for t in threads {
        ops += t
            .join()
            .map_err(|_| io::Error::other("iotune thread panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Bandwidth {
        op: if write { "write" } else { "read" }.into(),
        block_bytes: block,
        queue_depth: qd,
        // Whole numbers: they survive the JSON round trip exactly.
        bytes_per_sec: ((ops * block as u64) as f64 / secs).round(),
        iops: (ops as f64 / secs).round(),
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Latency of `block`-sized overwrites, each made durable (fdatasync after it, or through
/// an O_DSYNC descriptor), one at a time for `duration`.
fn latency(
    path: &Path,
    dsync: bool,
    block: usize,
    file_bytes: u64,
    duration: Duration,
) -> io::Result<Latency> {
    let f = open_direct(path, dsync)?;
    let buf = AlignedBuf::new(block, 0xa5)?;
    let slots = (file_bytes / block as u64).max(1);
    let deadline = Instant::now() + duration;
    let mut samples = Vec::new();
    let mut slot = 0u64;
    while Instant::now() < deadline && samples.len() < LATENCY_OPS_MAX {
        let t = Instant::now();
        f.write_all_at(buf.as_slice(), (slot % slots) * block as u64)?;
        if !dsync {
            fdatasync(&f)?;
        }
        samples.push(t.elapsed().as_micros() as u64);
        slot += 1;
    }
    samples.sort_unstable();
    Ok(Latency {
        op: if dsync {
            "dsync write"
        } else {
            "write+fdatasync"
        }
        .into(),
        block_bytes: block,
        ops: samples.len(),
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
        p999_us: percentile(&samples, 0.999),
        max_us: samples.last().copied().unwrap_or(0),
    })
}

/// Number of tests a run makes (for progress lines).
pub fn test_count() -> usize {
    2 * BLOCK_SIZES.len() * QUEUE_DEPTHS.len() + 3
}

/// Runs every test on a scratch file in `dir`, calling `progress` before each, and returns
/// the report (the caller writes it: `write_report`). The scratch file is removed even
/// when a test fails.
pub fn run(dir: &Path, opts: &Options, mut progress: impl FnMut(&str)) -> io::Result<Report> {
    if opts.duration.is_zero() || opts.duration > DURATION_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("duration per test must be within (0, {DURATION_MAX:?}]"),
        ));
    }
    let block_max = *BLOCK_SIZES.iter().max().unwrap_or(&DIRECT_BLOCK_BYTES) as u64;
    let file_bytes = opts.file_bytes.max(block_max).div_ceil(block_max) * block_max;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(IOTUNE_FILE_NAME);
    let result = run_on(&path, dir, opts.duration, file_bytes, &mut progress);
    let _ = std::fs::remove_file(&path);
    result
}

fn run_on(
    path: &Path,
    dir: &Path,
    duration: Duration,
    file_bytes: u64,
    progress: &mut impl FnMut(&str),
) -> io::Result<Report> {
    progress(&format!("filling a {} MiB scratch file", file_bytes >> 20));
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        let buf = AlignedBuf::new(1 << 20, 0x5a)?;
        let mut pos = 0;
        while pos < file_bytes {
            f.write_all_at(buf.as_slice(), pos)?;
            pos += 1 << 20;
        }
        fdatasync(&f)?;
    }
    let total = test_count();
    let mut n = 0;
    let mut step = |what: String, progress: &mut dyn FnMut(&str)| {
        n += 1;
        progress(&format!("[{n}/{total}] {what}"));
    };
    let mut bandwidth_results = Vec::new();
    for write in [true, false] {
        for &block in BLOCK_SIZES {
            for &qd in QUEUE_DEPTHS {
                step(
                    format!(
                        "O_DIRECT {} {} KiB x qd {qd}",
                        if write { "write" } else { "read" },
                        block >> 10
                    ),
                    progress,
                );
                bandwidth_results.push(bandwidth(path, write, block, qd, file_bytes, duration)?);
            }
        }
    }
    let mut latency_results = Vec::new();
    for (dsync, block) in [(false, 4 << 10), (true, 4 << 10), (true, 128 << 10)] {
        step(
            format!(
                "{} {} KiB latency",
                if dsync {
                    "O_DSYNC write"
                } else {
                    "write + fdatasync"
                },
                block >> 10
            ),
            progress,
        );
        latency_results.push(latency(path, dsync, block, file_bytes, duration)?);
    }
    Ok(Report {
        version: FORMAT_VERSION,
        dir: std::path::absolute(dir)?,
        measured_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        duration_per_test_ms: duration.as_millis() as u64,
        file_bytes,
        bandwidth: bandwidth_results,
        latency: latency_results,
    })
}

/// Writes the report to DIR/iotune.json (temp file, then rename).
pub fn write_report(dir: &Path, report: &Report) -> io::Result<PathBuf> {
    let path = dir.join(IOTUNE_RESULT_FILE);
    let tmp = dir.join(format!("{IOTUNE_RESULT_FILE}.tmp"));
    let text = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Percentiles pick the smallest sample at or above the rank (nearest-rank method).
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
