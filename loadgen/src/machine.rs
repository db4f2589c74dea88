//! What machine a result came from, read from /proc. Main thread only.

/// CPU model, core count, memory, kernel, hostname as JSON.
pub fn machine_json() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kb: Option<u64> = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let allowed = core_affinity::get_core_ids().map(|v| v.len()).unwrap_or(0);
    serde_json::json!({
        "cpuModel": model,
        "cores": cores,
        "coresAllowed": allowed,
        "memoryBytes": mem_kb.map(|k| k * 1024),
        "kernel": kernel,
        "hostname": hostname,
    })
}
