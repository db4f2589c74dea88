//! The machine's own limits, measured beside a run so results can be stated as a fraction
//! of them: loopback TCP bandwidth, O_DIRECT sequential write bandwidth and the
//! 4 KiB append + fdatasync rate of the data directory. Main thread only (blocking std I/O).
//!
//! `probe_limits` is the one switch point: when the `tuning` crate ships
//! `tuning::probe_disk` / `tuning::probe_loopback_tcp`, call those here instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

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
            "source": "loadgen::limits (own probe; tuning crate probe not yet merged)",
        })
    }
}

/// Measures loopback TCP and the disk of `dir` with `bytes` per bandwidth probe.
pub fn probe_limits(dir: &Path, bytes: u64) -> Result<Limits, String> {
    let tcp = probe_loopback_tcp(bytes)?;
    let disk = probe_disk(dir, bytes);
    if let Err(e) = &disk {
        log::warn!("disk probe of {}: {e}", dir.display());
    }
    let (w, f, p) = disk.unwrap_or((None, None, None));
    Ok(Limits {
        loopback_tcp_mb_per_s: tcp,
        disk_write_mb_per_s: w,
        fdatasync_per_s: f,
        fdatasync_p99_ms: p,
        dir: dir.display().to_string(),
        bytes,
    })
}

const CHUNK_BYTES: usize = 1 << 20;

fn probe_loopback_tcp(bytes: u64) -> Result<f64, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; CHUNK_BYTES];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf).map_err(|e| e.to_string())?;
        sent += CHUNK_BYTES as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| "reader thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(got as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// A 4096-aligned heap buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Option<Aligned> {
        let layout = std::alloc::Layout::from_size_align(len, 4096).ok()?;
        // SAFETY: layout has non-zero size (callers pass >= 4096).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            None
        } else {
            Some(Aligned { ptr, layout })
        }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

type DiskResult = (Option<f64>, Option<f64>, Option<f64>);

fn probe_disk(dir: &Path, bytes: u64) -> Result<DiskResult, String> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!(".loadgen-probe-{}", std::process::id()));
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let buf = Aligned::new(CHUNK_BYTES).ok_or("aligned alloc failed")?;
    // SAFETY: plain syscalls on a path we own; the buffer is aligned and CHUNK_BYTES long.
    let result = unsafe {
        let fd = libc::open(
            cpath.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECT,
            0o600,
        );
        if fd < 0 {
            return Err(format!(
                "open O_DIRECT: {}",
                std::io::Error::last_os_error()
            ));
        }
        let t = Instant::now();
        let mut off = 0u64;
        let mut err = None;
        while off < bytes {
            let n = libc::pwrite(fd, buf.ptr as *const libc::c_void, CHUNK_BYTES, off as i64);
            if n != CHUNK_BYTES as isize {
                err = Some(format!("pwrite: {}", std::io::Error::last_os_error()));
                break;
            }
            off += CHUNK_BYTES as u64;
        }
        libc::fdatasync(fd);
        let write = err
            .is_none()
            .then(|| off as f64 / t.elapsed().as_secs_f64() / 1e6);
        // Appends of one 4 KiB block, each followed by fdatasync: the acks=all floor.
        let mut lat = Vec::new();
        let t = Instant::now();
        let mut pos = off;
        while lat.len() < 5000 && t.elapsed() < Duration::from_secs(2) {
            let s = Instant::now();
            if libc::pwrite(fd, buf.ptr as *const libc::c_void, 4096, pos as i64) != 4096 {
                break;
            }
            if libc::fdatasync(fd) != 0 {
                break;
            }
            pos += 4096;
            lat.push(s.elapsed().as_secs_f64() * 1e3);
        }
        let secs = t.elapsed().as_secs_f64();
        libc::close(fd);
        let (rate, p99) = if lat.is_empty() {
            (None, None)
        } else {
            let rate = lat.len() as f64 / secs;
            lat.sort_by(f64::total_cmp);
            let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)];
            (Some(rate), Some(p99))
        };
        Ok((write, rate, p99))
    };
    let _ = std::fs::remove_file(&path);
    result
}
