//! The machine's own limits, measured beside a run so results can be stated as a fraction
//! of them: loopback TCP bandwidth, O_DIRECT sequential write bandwidth and the
//! 4 KiB append + fdatasync rate of the data directory. Main thread only (blocking std I/O).
//! The probes themselves live in the `tuning` crate.

use std::path::Path;

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Loopback TCP, one stream, MB/s (10^6 bytes).
    pub loopback_tcp_mb_per_s: f64,
    /// O_DIRECT sequential write, MB/s (None if the directory refused O_DIRECT).
    pub disk_write_mb_per_s: Option<f64>,
    /// 4 KiB append + fdatasync, operations per second.
    pub fdatasync_per_s: Option<f64>,
    /// p99 of one append + fdatasync, ms.
    pub fdatasync_p99_ms: Option<f64>,
    /// The directory probed.
    pub dir: String,
    /// Bytes moved per bandwidth probe.
    pub bytes: u64,
}

impl Limits {
    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "loopbackTcpMBps": self.loopback_tcp_mb_per_s,
            "diskODirectWriteMBps": self.disk_write_mb_per_s,
            "fdatasyncPerSec": self.fdatasync_per_s,
            "fdatasyncP99Ms": self.fdatasync_p99_ms,
            "dir": self.dir,
            "bytes": self.bytes,
            "source": "tuning::probe_disk + tuning::probe_loopback_tcp",
        })
    }
}

/// Measures loopback TCP and the disk of `dir` with `bytes` per bandwidth probe, using the
/// `tuning` crate's probes (the same ones `osprey tune` and the storage benches report).
pub fn probe_limits(dir: &Path, bytes: u64) -> Result<Limits, String> {
    let tcp = tuning::probe_loopback_tcp(bytes).map_err(|e| format!("loopback probe: {e}"))?;
    let disk = tuning::probe_disk(dir, bytes);
    if let Err(e) = &disk {
        log::warn!("disk probe of {}: {e}", dir.display());
    }
    let disk = disk.ok();
    Ok(Limits {
        loopback_tcp_mb_per_s: tcp / 1e6,
        disk_write_mb_per_s: disk.as_ref().map(|d| d.direct_write_bytes_per_sec / 1e6),
        fdatasync_per_s: disk.as_ref().map(|d| d.fdatasync_ops_per_sec),
        fdatasync_p99_ms: disk.as_ref().map(|d| d.fdatasync_p99_us as f64 / 1000.0),
        dir: dir.display().to_string(),
        bytes,
    })
}
