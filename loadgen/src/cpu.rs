//! CPU accounting: loadgen's own worker threads (to say when the client, not the broker,
//! is the bottleneck) and the broker's process (CPU-seconds per GB moved). Worker threads
//! read their own time with `getrusage(RUSAGE_THREAD)`; the main thread reads the broker's
//! from `/proc/PID/stat` or from `process_cpu_seconds_total` on its Prometheus /metrics.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A worker thread that was running or waiting to run (run queue) more than this fraction
/// of the measured window (or of a second, in the live line) is reported as saturated: its
/// results may show the client's limit, not the broker's.
pub const CLIENT_SATURATED_BUSY: f64 = 0.90;
/// Connect, write and read limit of one /metrics scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest /metrics response read, bytes (a broker with many partitions writes a lot).
const SCRAPE_MAX_BYTES: u64 = 64 << 20;

/// CPU time (user + system) the calling thread has used so far, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_THREAD is Linux's.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Time the calling thread has spent runnable but waiting for a CPU (the run queue), ns,
/// from `/proc/thread-self/schedstat`; 0 where the kernel does not keep it. On a shared
/// machine a client thread can be starved without being busy: busy + waiting is what it
/// wanted of its core.
pub fn thread_run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Where the broker's CPU time is read from.
#[derive(Debug, Clone)]
pub enum BrokerCpuSource {
    /// `/proc/PID/stat` of a broker process on this host.
    Pid(u32),
    /// `process_cpu_seconds_total` from a Prometheus text endpoint (http:// only).
    Metrics(String),
}

impl BrokerCpuSource {
    /// A label for reports.
    pub fn describe(&self) -> String {
        match self {
            BrokerCpuSource::Pid(p) => format!("/proc/{p}/stat"),
            BrokerCpuSource::Metrics(u) => format!("{u} process_cpu_seconds_total"),
        }
    }

    /// The broker's CPU seconds so far (user + system, all threads).
    pub fn read_seconds(&self) -> Result<f64, String> {
        match self {
            BrokerCpuSource::Pid(pid) => {
                let path = format!("/proc/{pid}/stat");
                let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                let (u, s) = osprey::metrics::utime_stime_ticks(&stat)
                    .ok_or_else(|| format!("{path}: unexpected format"))?;
                // SAFETY: sysconf has no preconditions.
                let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
                if tck <= 0 {
                    return Err("sysconf(_SC_CLK_TCK) failed".into());
                }
                Ok((u + s) as f64 / tck as f64)
            }
            BrokerCpuSource::Metrics(url) => {
                let body = http_get(url)?;
                parse_process_cpu(&body)
                    .ok_or_else(|| format!("{url}: no process_cpu_seconds_total sample"))
            }
        }
    }
}

/// The value of the unlabelled `process_cpu_seconds_total` sample in Prometheus text.
pub fn parse_process_cpu(text: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("process_cpu_seconds_total")?;
        // Labelled ({...}) samples would be another process's; take the plain one.
        v.strip_prefix(' ')?.split_whitespace().next()?.parse().ok()
    })
}

/// GET over plain HTTP/1.1 (`http://host:port/path`), returning the body of a 200 answer.
pub fn http_get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(SCRAPE_TIMEOUT)))
        .map_err(|e| format!("{url}: {e}"))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = Vec::new();
    s.take(SCRAPE_MAX_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: no HTTP header end"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The plain process sample is found among others; labelled ones and prefixes of other
    // names are not taken for it.
    #[test]
    fn finds_process_cpu_sample() {
        let text = "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total_other 9\nprocess_cpu_seconds_total{pid=\"1\"} 7\nprocess_cpu_seconds_total 12.5\n";
        assert_eq!(parse_process_cpu(text), Some(12.5));
        assert_eq!(parse_process_cpu("osprey_x 1\n"), None);
    }

    // A thread that spins for a while has used CPU time by its own account, and the time
    // of this thread only grows.
    #[test]
    fn thread_cpu_grows_while_busy() {
        let a = thread_cpu_ns();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let b = thread_cpu_ns();
        assert!(b > a, "{a} -> {b}");
    }

    // /proc/self/stat of this very process parses.
    #[test]
    fn reads_own_process() {
        let s = BrokerCpuSource::Pid(std::process::id());
        assert!(s.read_seconds().expect("own stat") >= 0.0);
    }
}
