//! tuning: the host the broker runs on. Std + libc only (no glommio), runs on whichever
//! thread calls it.
//!
//! - [`tune`]: one tuner per host knob (`osprey tune check|apply|script`, and the
//!   warnings `osprey serve` logs at start-up), reading under a root path.
//! - [`iotune`]: the bounded disk measurement of `osprey iotune DIR` (bandwidth by block
//!   size and queue depth, durable-write latency percentiles) and its `iotune.json`.
//! - The probes below measure this host's own limits so benchmarks and `osprey probe` can
//!   state results as a fraction of them.
//!
//! - [`probe_disk`], on one scratch file in the given directory, one operation at a time
//!   (queue depth 1), all with O_DIRECT:
//!   1. sequential 1 MiB writes into the new, empty file (the filesystem allocates blocks
//!      as it goes), then fdatasync: new-file write bandwidth;
//!   2. the same 1 MiB writes again over the blocks pass 1 wrote, then fdatasync: overwrite
//!      bandwidth (no allocation; on ext4 over virtio about 2x pass 1);
//!   3. 4 KiB overwrite + fdatasync, repeated: sync ops/s with p50 and p99 latency;
//!   4. 128 KiB overwrite + fdatasync, repeated: the sync bandwidth of 128 KiB of data
//!      outstanding, i.e. of 8 closed-loop appenders of 16 KiB batches under acks=all;
//!   5. the same 128 KiB overwrites through an O_DSYNC descriptor (each write durable on
//!      completion, no fdatasync): what the storage engine's default group commit does.
//! - [`probe_loopback_tcp`]: one-way bulk TCP throughput over 127.0.0.1 with std threads.
//!
//! Every probe is bounded: by the byte count it is given and by fixed operation and time
//! caps (SYNC_OPS_MAX, SYNC_PROBE_MAX_MS per fdatasync probe).

pub mod iotune;
pub mod tune;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Block size of O_DIRECT writes.
pub const DIRECT_BLOCK_BYTES: usize = 4096;
/// Size of each sequential write of the bandwidth probes (new file and overwrite).
pub const SEQ_WRITE_BYTES: usize = 1 << 20;
/// Size of each write of the large fdatasync probe: 8 closed-loop appenders x 16 KiB
/// batches, the data an acks=all group commit of 8 producers carries.
pub const SYNC_WRITE_LARGE_BYTES: usize = 128 << 10;
/// Upper bound of write + fdatasync operations in each fdatasync probe (4 KiB, 128 KiB).
pub const SYNC_OPS_MAX: usize = 2000;
/// Upper bound of the time spent in each fdatasync probe, milliseconds (the operation in
/// progress when it passes is finished and counted).
pub const SYNC_PROBE_MAX_MS: u64 = 3000;
/// Chunk size of the loopback TCP probe.
pub const TCP_CHUNK_BYTES: usize = 256 << 10;

const _: () = assert!(SEQ_WRITE_BYTES.is_multiple_of(DIRECT_BLOCK_BYTES));
const _: () = assert!(SYNC_WRITE_LARGE_BYTES.is_multiple_of(DIRECT_BLOCK_BYTES));
// The large sync writes cycle over the blocks of the bandwidth probe (at least one
// SEQ_WRITE_BYTES write), so they always overwrite already written blocks.
const _: () = assert!(SEQ_WRITE_BYTES.is_multiple_of(SYNC_WRITE_LARGE_BYTES));

/// What the disk under a directory can do, each figure at queue depth 1 with O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskLimits {
    /// Sequential SEQ_WRITE_BYTES writes into a new, empty file (the filesystem allocates
    /// the blocks as they are written), then one fdatasync; bytes per second.
    pub direct_write_bytes_per_sec: f64,
    /// The same sequential writes again over the blocks the first pass wrote (and synced),
    /// then one fdatasync: overwrite bandwidth, no allocation; bytes per second.
    pub direct_overwrite_bytes_per_sec: f64,
    /// 4 KiB overwrite + fdatasync, one after the other: operations per second.
    pub fdatasync_ops_per_sec: f64,
    /// Median latency of one 4 KiB overwrite + fdatasync, microseconds.
    pub fdatasync_p50_us: u64,
    /// 99th percentile latency of one 4 KiB overwrite + fdatasync, microseconds.
    pub fdatasync_p99_us: u64,
    /// SYNC_WRITE_LARGE_BYTES (128 KiB) overwrite + fdatasync, one after the other:
    /// operations per second.
    pub sync_write_128k_ops_per_sec: f64,
    /// The same as bytes per second (ops/s x 128 KiB): the ceiling of 8 closed-loop
    /// appenders of 16 KiB batches under Durability::Fsync (128 KiB outstanding).
    pub sync_write_128k_bytes_per_sec: f64,
    /// SYNC_WRITE_LARGE_BYTES overwrites through an O_DIRECT|O_DSYNC descriptor, one after
    /// the other (durable when each completes): bytes per second. The same ceiling for
    /// O_DSYNC group commits (shards' `SyncMethod::DsyncWrites`).
    pub dsync_write_128k_bytes_per_sec: f64,
}

/// A heap buffer aligned for O_DIRECT, freed on drop.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize, fill: u8) -> io::Result<AlignedBuf> {
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
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: allocated with len bytes, initialised in new.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: allocated with len bytes, initialised in new; &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
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

pub(crate) fn fdatasync(f: &std::fs::File) -> io::Result<()> {
    // SAFETY: valid fd for the life of f.
    if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Measures the disk under `dir` (see the module doc): `bytes` (rounded up to 1 MiB, at
/// least 1 MiB) of O_DIRECT sequential writes into a new file, the same writes again over
/// it, then fdatasync'd 4 KiB and 128 KiB overwrites within it (each bounded by
/// SYNC_OPS_MAX and SYNC_PROBE_MAX_MS). Removes its file.
pub fn probe_disk(dir: &Path, bytes: u64) -> io::Result<DiskLimits> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(".tuning-probe.bin");
    let result = probe_disk_at(&path, bytes);
    let _ = std::fs::remove_file(&path);
    result
}

/// Writes `writes` x SEQ_WRITE_BYTES of `buf` from offset 0, then fdatasyncs; returns
/// bytes per second.
fn sequential_pass(f: &std::fs::File, buf: &AlignedBuf, writes: u64) -> io::Result<f64> {
    let t = Instant::now();
    for i in 0..writes {
        pwrite_all(f, buf.as_slice(), i * SEQ_WRITE_BYTES as u64)?;
    }
    fdatasync(f)?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    Ok((writes * SEQ_WRITE_BYTES as u64) as f64 / secs)
}

/// Latencies of write + fdatasync operations, one at a time.
struct SyncProbe {
    /// Latency of each operation, microseconds, sorted ascending (never empty).
    lat_us: Vec<u64>,
    /// Wall time of all operations, seconds.
    secs: f64,
}

impl SyncProbe {
    fn ops_per_sec(&self) -> f64 {
        self.lat_us.len() as f64 / self.secs
    }
    /// The `p` quantile (0..=1) of the latencies, microseconds.
    fn pct_us(&self, p: f64) -> u64 {
        let n = self.lat_us.len();
        self.lat_us[((n as f64 * p) as usize).min(n - 1)]
    }
}

/// Overwrites `buf` at successive buf-sized slots of the first `span_bytes` of `f` (wrapping
/// around), each followed by fdatasync if `fdatasync_each` (else `f` is expected to be an
/// O_DSYNC descriptor), at least once and until SYNC_OPS_MAX operations or
/// SYNC_PROBE_MAX_MS.
fn sync_probe(
    f: &std::fs::File,
    buf: &AlignedBuf,
    span_bytes: u64,
    fdatasync_each: bool,
) -> io::Result<SyncProbe> {
    let len = buf.as_slice().len() as u64;
    let slots = (span_bytes / len).max(1);
    let mut lat_us = Vec::with_capacity(SYNC_OPS_MAX);
    let start = Instant::now();
    let deadline = Duration::from_millis(SYNC_PROBE_MAX_MS);
    for i in 0..SYNC_OPS_MAX as u64 {
        let t = Instant::now();
        pwrite_all(f, buf.as_slice(), (i % slots) * len)?;
        if fdatasync_each {
            fdatasync(f)?;
        }
        lat_us.push(t.elapsed().as_micros() as u64);
        if start.elapsed() > deadline {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    lat_us.sort_unstable();
    Ok(SyncProbe { lat_us, secs })
}

fn probe_disk_at(path: &Path, bytes: u64) -> io::Result<DiskLimits> {
    let writes = bytes.div_ceil(SEQ_WRITE_BYTES as u64).max(1);
    let span_bytes = writes * SEQ_WRITE_BYTES as u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let buf = AlignedBuf::new(SEQ_WRITE_BYTES, 0x5a)?;
    let direct_write_bytes_per_sec = sequential_pass(&f, &buf, writes)?;
    let direct_overwrite_bytes_per_sec = sequential_pass(&f, &buf, writes)?;

    // fdatasync'd overwrites of already written blocks (like a pre-zeroed segment).
    let small = sync_probe(
        &f,
        &AlignedBuf::new(DIRECT_BLOCK_BYTES, 0xa5)?,
        span_bytes,
        true,
    )?;
    let large_buf = AlignedBuf::new(SYNC_WRITE_LARGE_BYTES, 0xa6)?;
    let large = sync_probe(&f, &large_buf, span_bytes, true)?;
    let dsync_file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)?;
    let dsync = sync_probe(&dsync_file, &large_buf, span_bytes, false)?;
    Ok(DiskLimits {
        direct_write_bytes_per_sec,
        direct_overwrite_bytes_per_sec,
        fdatasync_ops_per_sec: small.ops_per_sec(),
        fdatasync_p50_us: small.pct_us(0.50),
        fdatasync_p99_us: small.pct_us(0.99),
        sync_write_128k_ops_per_sec: large.ops_per_sec(),
        sync_write_128k_bytes_per_sec: large.ops_per_sec() * SYNC_WRITE_LARGE_BYTES as f64,
        dsync_write_128k_bytes_per_sec: dsync.ops_per_sec() * SYNC_WRITE_LARGE_BYTES as f64,
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
        assert!(l.direct_overwrite_bytes_per_sec > 0.0);
        assert!(l.fdatasync_ops_per_sec > 0.0);
        assert!(l.sync_write_128k_ops_per_sec > 0.0);
        assert_eq!(
            l.sync_write_128k_bytes_per_sec,
            l.sync_write_128k_ops_per_sec * SYNC_WRITE_LARGE_BYTES as f64
        );
        assert!(l.dsync_write_128k_bytes_per_sec > 0.0);
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
