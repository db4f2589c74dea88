//! The thin layer over the runtime and the host: io_uring and memlock checks, CPU
//! selection, and executor construction. Keeping these calls here keeps a later move off
//! glommio (see glommio-notes) confined to this file and `server`.
//!
//! Runs on: the main thread, before any shard starts.

use std::time::Duration;

/// glommio's default `io_memory` per executor; each executor registers 3 rings of it.
pub const IO_MEMORY_DEFAULT_BYTES: usize = 10 << 20;
/// Below this per-executor share glommio fails hard (`MemLockLimit`).
pub const IO_MEMORY_MIN_BYTES: usize = 512 << 10;
const RINGS_PER_EXECUTOR: usize = 3;
/// Spinning this long before parking keeps cross-shard hops fast (glommio-notes).
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

#[derive(Debug)]
pub struct HostError(pub String);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for HostError {}

/// Probes `io_uring_setup` directly, so a blocked io_uring (seccomp, sysctl) gets a clear
/// message instead of glommio's misleading kernel-version panic.
pub fn check_io_uring() -> Result<(), HostError> {
    // struct io_uring_params is 120 bytes; zeroed is a valid request.
    let mut params = [0u8; 120];
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        return Err(HostError(format!(
            "io_uring is not available: io_uring_setup failed with `{err}`. osprey needs Linux >= 5.8 \
             with io_uring allowed. Check /proc/sys/kernel/io_uring_disabled (now: {disabled}; 0 allows it: \
             `sysctl kernel.io_uring_disabled=0`), and in containers allow the io_uring_* syscalls \
             (e.g. docker run --security-opt seccomp=unconfined)."
        )));
    }
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Chooses each executor's `io_memory` so `shards x 3 x io_memory` fits RLIMIT_MEMLOCK.
pub fn io_memory_for(shards: usize) -> Result<usize, HostError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let is_root = unsafe { libc::geteuid() } == 0;
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY || is_root {
        // Root has CAP_IPC_LOCK: the limit is not enforced.
        return Ok(IO_MEMORY_DEFAULT_BYTES);
    }
    let per_executor = lim.rlim_cur as usize / (shards * RINGS_PER_EXECUTOR);
    if per_executor < IO_MEMORY_MIN_BYTES {
        return Err(HostError(format!(
            "the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB, too small for {shards} shards \
             ({} KiB each for 3 io_uring rings, at least {} KiB). Raise it (`ulimit -l unlimited`, \
             systemd `LimitMEMLOCK=infinity`, or /etc/security/limits.conf), or run fewer shards with --cores.",
            lim.rlim_cur / 1024,
            per_executor / 1024,
            IO_MEMORY_MIN_BYTES / 1024
        )));
    }
    let chosen = per_executor.min(IO_MEMORY_DEFAULT_BYTES) & !0xfff;
    log::info!(
        "memlock limit {} KiB: io_memory {} KiB per shard",
        lim.rlim_cur / 1024,
        chosen / 1024
    );
    Ok(chosen)
}

/// The CPUs this process may run on (taskset, cgroups), in ascending order.
pub fn allowed_cpus() -> Result<Vec<usize>, HostError> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(HostError(format!(
            "sched_getaffinity failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(HostError("no CPU is allowed for this process".into()));
    }
    Ok(cpus)
}

/// Picks the CPUs for `cores` shards from the allowed set.
pub fn choose_cpus(cores: Option<usize>) -> Result<Vec<usize>, HostError> {
    let allowed = allowed_cpus()?;
    match cores {
        None => Ok(allowed),
        Some(n) if n <= allowed.len() => Ok(allowed[..n].to_vec()),
        Some(n) => Err(HostError(format!(
            "--cores {n} asks for more shards than the {} CPUs this process may use ({:?}); \
             osprey runs one shard per CPU",
            allowed.len(),
            allowed
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // io_uring works on the machines the project targets, and the probe leaks no fd.
    #[test]
    fn io_uring_probe_succeeds_here() {
        check_io_uring().unwrap();
    }

    // The allowed CPU list honours affinity and refuses more cores than allowed.
    #[test]
    fn cpu_choice_honours_affinity() {
        let allowed = allowed_cpus().unwrap();
        assert_eq!(choose_cpus(Some(1)).unwrap(), vec![allowed[0]]);
        assert!(choose_cpus(Some(allowed.len() + 1)).is_err());
    }
}
