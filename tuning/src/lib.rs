//! tuning: measures this host's own limits so benchmarks and `osprey tune` can state results
//! as a fraction of them. Std + libc only (no glommio), runs on whichever thread calls it.
//!
//! - [`probe_disk`]: O_DIRECT sequential write bandwidth (1 MiB aligned writes to a new
//!   file) and the rate of 4 KiB write + fdatasync on a preallocated, pre-written file
//!   (ops/s, p50 and p99 latency).
//! - [`probe_loopback_tcp`]: one-way bulk TCP throughput over 127.0.0.1 with std threads.
//!
//! Every probe is bounded: by the byte count it is given and by fixed operation caps.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Block size of O_DIRECT writes.
pub const DIRECT_BLOCK_BYTES: usize = 4096;
/// Size of each sequential write of the bandwidth probe.
pub const SEQ_WRITE_BYTES: usize = 1 << 20;
/// Upper bound of 4 KiB fdatasync'd writes in one probe.
pub const SYNC_OPS_MAX: usize = 2000;
/// Upper bound of the time spent on fdatasync'd writes.
pub const SYNC_PROBE_MAX_MS: u64 = 3000;
/// Chunk size of the loopback TCP probe.
pub const TCP_CHUNK_BYTES: usize = 256 << 10;

const _: () = assert!(SEQ_WRITE_BYTES.is_multiple_of(DIRECT_BLOCK_BYTES));

/// What the disk under a directory can do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskLimits {
    /// O_DIRECT sequential write bandwidth, bytes per second.
    pub direct_write_bytes_per_sec: f64,
    /// 4 KiB overwrite + fdatasync operations per second.
    pub fdatasync_ops_per_sec: f64,
    pub fdatasync_p50_us: u64,
    pub fdatasync_p99_us: u64,
}

/// A heap buffer aligned for O_DIRECT, freed on drop.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize, fill: u8) -> io::Result<AlignedBuf> {
        let mut ptr: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: posix_memalign writes a valid pointer on success (return 0).
        let rc = unsafe { libc::posix_memalign(&mut ptr, DIRECT_BLOCK_BYTES, len) };
        if rc != 0 || ptr.is_null() {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: ptr points to len writable bytes.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, fill, len) };
        Ok(AlignedBuf {
            ptr: ptr as *mut u8,
            len,
        })
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: allocated with len bytes, initialised in new.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by posix_memalign.
        unsafe { libc::free(self.ptr as *mut libc::c_void) };
    }
}

fn pwrite_all(f: &std::fs::File, buf: &[u8], pos: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, pos)
}

fn fdatasync(f: &std::fs::File) -> io::Result<()> {
    // SAFETY: valid fd for the life of f.
    if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Measures the disk under `dir` with `bytes` (rounded up to 1 MiB, at least 1 MiB) of
/// O_DIRECT sequential writes, then fdatasync'd 4 KiB overwrites of a preallocated
/// 4 MiB file (bounded by SYNC_OPS_MAX and SYNC_PROBE_MAX_MS). Removes its files.
pub fn probe_disk(dir: &Path, bytes: u64) -> io::Result<DiskLimits> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(".tuning-probe.bin");
    let result = probe_disk_at(&path, bytes);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe_disk_at(path: &Path, bytes: u64) -> io::Result<DiskLimits> {
    let writes = bytes.div_ceil(SEQ_WRITE_BYTES as u64).max(1);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let buf = AlignedBuf::new(SEQ_WRITE_BYTES, 0x5a)?;
    let t = Instant::now();
    for i in 0..writes {
        pwrite_all(&f, buf.as_slice(), i * SEQ_WRITE_BYTES as u64)?;
    }
    fdatasync(&f)?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    let direct_write_bytes_per_sec = (writes * SEQ_WRITE_BYTES as u64) as f64 / secs;

    // fdatasync'd 4 KiB overwrites of already written blocks (like a pre-zeroed segment).
    let small = AlignedBuf::new(DIRECT_BLOCK_BYTES, 0xa5)?;
    let span_blocks = ((writes * SEQ_WRITE_BYTES as u64) / DIRECT_BLOCK_BYTES as u64).max(1);
    let mut lat = Vec::with_capacity(SYNC_OPS_MAX);
    let start = Instant::now();
    let deadline = Duration::from_millis(SYNC_PROBE_MAX_MS);
    for i in 0..SYNC_OPS_MAX as u64 {
        let t = Instant::now();
        pwrite_all(
            &f,
            small.as_slice(),
            (i % span_blocks) * DIRECT_BLOCK_BYTES as u64,
        )?;
        fdatasync(&f)?;
        lat.push(t.elapsed().as_micros() as u64);
        if start.elapsed() > deadline {
            break;
        }
    }
    let total = start.elapsed().as_secs_f64().max(1e-9);
    let ops = lat.len() as f64 / total;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok(DiskLimits {
        direct_write_bytes_per_sec,
        fdatasync_ops_per_sec: ops,
        fdatasync_p50_us: pct(0.50),
        fdatasync_p99_us: pct(0.99),
    })
}

/// Sends `bytes` (at least one chunk) from one std thread to another over 127.0.0.1 and
/// returns the receive rate in bytes per second.
pub fn probe_loopback_tcp(bytes: u64) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total = bytes.max(TCP_CHUNK_BYTES as u64);
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        let chunk = vec![0x42u8; TCP_CHUNK_BYTES];
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(TCP_CHUNK_BYTES as u64) as usize;
            s.write_all(&chunk[..n])?;
            sent += n as u64;
        }
        Ok(())
    });
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = vec![0u8; TCP_CHUNK_BYTES];
    let mut got = 0u64;
    let t = Instant::now();
    while got < total {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    sender
        .join()
        .map_err(|_| io::Error::other("sender thread panicked"))??;
    if got < total {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("received {got} of {total} bytes"),
        ));
    }
    Ok(got as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the disk probe runs on a small size and returns positive, ordered figures.
    #[test]
    fn disk_probe_small() {
        let dir = std::env::temp_dir().join(format!("tuning-probe-{}", std::process::id()));
        let l = probe_disk(&dir, 2 << 20).unwrap();
        assert!(l.direct_write_bytes_per_sec > 0.0);
        assert!(l.fdatasync_ops_per_sec > 0.0);
        assert!(l.fdatasync_p50_us <= l.fdatasync_p99_us);
        assert!(!dir.join(".tuning-probe.bin").exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    // Proves the loopback probe moves all bytes and reports a positive rate.
    #[test]
    fn loopback_probe_small() {
        let r = probe_loopback_tcp(4 << 20).unwrap();
        assert!(r > 0.0);
    }
}
