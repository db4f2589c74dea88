//! Host tuners behind `osprey tune check|apply|script` and the start-up checks of
//! `osprey serve`: one tuner per knob, each reading the current value under a root
//! directory (`/` on a real host; tests pass a fake /proc and /sys tree), comparing it with
//! its recommendation and saying why it matters, with the shell commands that set it and
//! the file writes that `apply` makes.
//!
//! Runs on: whichever thread calls it (std only, no runtime). Nothing here writes anything
//! except `apply`, and only the files the findings name, under the given root.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// glommio's io_memory per executor (10 MiB) x 3 rings: the locked memory one shard wants.
pub const MEMLOCK_PER_SHARD_BYTES: u64 = 3 * (10 << 20);
/// The least io_memory (512 KiB) x 3 rings a shard starts with (`runtime::io_memory_for`).
pub const MEMLOCK_PER_SHARD_MIN_BYTES: u64 = 3 * (512 << 10);
/// Open files recommended: client connections, segment files and indexes of every shard.
pub const OPEN_FILES_MIN: u64 = 65_536;
/// The broker's listen backlog; the kernel caps it at net.core.somaxconn.
pub const LISTEN_BACKLOG: u64 = 4096;
pub const SWAPPINESS_MAX: u64 = 1;

/// The host as seen under a root directory.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` (an absolute host path such as "/proc/sys/vm/swappiness") under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// True when the root is the real host's (writes change the running system).
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// What the broker will run with, for the tuners that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// CPUs the broker's shards run on.
    pub broker_cpus: Vec<usize>,
    /// The data directory's block device (major, minor), if known.
    pub data_dev: Option<(u32, u32)>,
    /// The checking process runs as root (root ignores RLIMIT_MEMLOCK: CAP_IPC_LOCK).
    pub is_root: bool,
}

impl Context {
    /// The context of a broker about to run on `broker_cpus` with data in `data_dir`.
    pub fn for_broker(broker_cpus: Vec<usize>, data_dir: &Path) -> Context {
        Context {
            broker_cpus,
            data_dev: device_of(data_dir),
            is_root: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// (major, minor) of the device holding `path` (or its nearest existing ancestor).
pub fn device_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut p = std::path::absolute(path).ok()?;
    loop {
        if let Ok(m) = std::fs::metadata(&p) {
            let dev = m.dev();
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            return Some((major as u32, minor as u32));
        }
        if !p.pop() {
            return None;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Off means the broker fails, or loses much of its speed: `check` exits non-zero.
    Important,
    Recommended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Off,
    /// The knob does not exist here (VM, older kernel) or does not apply.
    NotApplicable,
    /// The current value could not be read.
    Unknown,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Off => "OFF",
            Status::NotApplicable => "n/a",
            Status::Unknown => "unknown",
        }
    }
}

/// One tuner's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub knob: &'static str,
    pub severity: Severity,
    pub status: Status,
    pub current: String,
    pub recommended: String,
    pub why: &'static str,
    /// Shell commands that set it on the real host (empty unless Off); lines starting with
    /// `#` are steps to take by hand (process limits belong to the shell or unit).
    pub commands: Vec<String>,
    /// Files `apply` writes: (host path, value). Empty when it cannot be set by a write
    /// (process limits: the commands say what to change).
    pub writes: Vec<(String, String)>,
}

impl Finding {
    fn new(knob: &'static str, severity: Severity, why: &'static str) -> Finding {
        Finding {
            knob,
            severity,
            status: Status::Unknown,
            current: "?".into(),
            recommended: String::new(),
            why,
            commands: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Off and important: `check` fails.
    pub fn is_important_off(&self) -> bool {
        self.status == Status::Off && self.severity == Severity::Important
    }

    /// Adds a write of `value` to `path` and the matching shell command.
    fn write(&mut self, path: &str, value: &str) {
        self.commands.push(format!("echo {value} > {path}"));
        self.writes.push((path.to_string(), value.to_string()));
    }

    fn sysctl(&mut self, name: &str, value: &str) {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        self.commands.push(format!("sysctl -w {name}={value}"));
        self.writes.push((path, value.to_string()));
    }
}

type Tuner = fn(&Host, &Context) -> Finding;

/// Every tuner, in the order `check` prints them.
pub const TUNERS: &[Tuner] = &[
    memlock,
    open_files,
    io_uring_disabled,
    cpu_governor,
    transparent_hugepages,
    swappiness,
    disk_scheduler,
    disk_nomerges,
    somaxconn,
    tcp_max_syn_backlog,
    clocksource,
    irq_affinity,
];

/// Runs every tuner.
pub fn check_all(host: &Host, ctx: &Context) -> Vec<Finding> {
    TUNERS.iter().map(|t| t(host, ctx)).collect()
}

/// A limit line of /proc/self/limits: (soft, hard), None for "unlimited".
fn limit(host: &Host, name: &str) -> Option<(Option<u64>, Option<u64>)> {
    let text = host.read("/proc/self/limits")?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let rest = line[name.len()..].split_whitespace().collect::<Vec<_>>();
    let parse = |v: &str| {
        if v == "unlimited" {
            Some(None)
        } else {
            v.parse().ok().map(Some)
        }
    };
    Some((parse(rest.first()?)?, parse(rest.get(1)?)?))
}

fn show_limit(v: Option<u64>) -> String {
    v.map_or("unlimited".into(), |v| v.to_string())
}

fn memlock(host: &Host, ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "memlock limit",
        Severity::Important,
        "each shard registers 3 io_uring rings of up to 10 MiB of locked memory; below that \
         osprey shrinks them and glommio may skip its registered buffers, below 3 x 512 KiB \
         per shard it cannot start (root is exempt: CAP_IPC_LOCK)",
    );
    let shards = ctx.broker_cpus.len().max(1) as u64;
    let need = MEMLOCK_PER_SHARD_BYTES * shards;
    let min = MEMLOCK_PER_SHARD_MIN_BYTES * shards;
    f.recommended = format!("unlimited (>= {need} bytes)");
    let Some((soft, _)) = limit(host, "Max locked memory") else {
        return f;
    };
    f.current = show_limit(soft);
    let ok = ctx.is_root || soft.is_none_or(|s| s >= need);
    f.status = if ok { Status::Ok } else { Status::Off };
    if ctx.is_root && soft.is_some_and(|s| s < need) {
        f.current.push_str(" (not enforced for root)");
    }
    // Between the minimum and the full size the broker runs, with smaller rings: worth
    // fixing, not failing `check` over.
    if !ok && soft.is_some_and(|s| s >= min) {
        f.severity = Severity::Recommended;
    }
    if !ok {
        f.commands = vec![
            "# ulimit -l unlimited in the shell that starts osprey".into(),
            "# systemd: LimitMEMLOCK=infinity in osprey.service".into(),
            "# or /etc/security/limits.conf: osprey - memlock unlimited".into(),
        ];
    }
    f
}

fn open_files(host: &Host, _ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "open files limit",
        Severity::Important,
        "every client connection, segment file and index takes a descriptor; at the limit \
         accepts and segment rolls fail",
    );
    f.recommended = format!(">= {OPEN_FILES_MIN}");
    let Some((soft, _)) = limit(host, "Max open files") else {
        return f;
    };
    f.current = show_limit(soft);
    f.status = if soft.is_none_or(|s| s >= OPEN_FILES_MIN) {
        Status::Ok
    } else {
        Status::Off
    };
    if f.status == Status::Off {
        f.commands = vec![
            format!("# ulimit -n {OPEN_FILES_MIN} in the shell that starts osprey"),
            "# systemd: LimitNOFILE=1048576 in osprey.service".into(),
        ];
    }
    f
}

fn io_uring_disabled(host: &Host, _ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "kernel.io_uring_disabled",
        Severity::Important,
        "osprey does all its disk and network I/O through io_uring; 1 allows it only to \
         members of kernel.io_uring_group, 2 refuses it to everyone",
    );
    f.recommended = "0".into();
    match host.read("/proc/sys/kernel/io_uring_disabled") {
        None if host.path("/proc/sys/kernel").is_dir() => {
            f.current = "absent (kernel < 6.6: always allowed)".into();
            f.status = Status::NotApplicable;
        }
        None => {}
        Some(v) => {
            f.status = if v == "0" { Status::Ok } else { Status::Off };
            f.current = v;
            if f.status == Status::Off {
                f.sysctl("kernel.io_uring_disabled", "0");
            }
        }
    }
    f
}

fn cpu_governor(host: &Host, ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "CPU frequency governor",
        Severity::Recommended,
        "a shard polls its rings and spins before parking; powersave/ondemand clock its core \
         down between bursts and add latency to the next request",
    );
    f.recommended = "performance".into();
    let mut seen = BTreeSet::new();
    for cpu in &ctx.broker_cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        if let Some(g) = host.read(&path) {
            if g != "performance" {
                f.write(&path, "performance");
            }
            seen.insert(g);
        }
    }
    if seen.is_empty() {
        f.current = "no cpufreq (VM or fixed frequency)".into();
        f.status = Status::NotApplicable;
    } else {
        f.current = seen.into_iter().collect::<Vec<_>>().join(",");
        f.status = if f.writes.is_empty() {
            Status::Ok
        } else {
            Status::Off
        };
    }
    f
}

/// The bracketed choice of a sysfs selection file ("always [madvise] never"); a file of
/// one bare word is that word.
fn selected(text: &str) -> Option<&str> {
    let Some(start) = text.find('[').map(|i| i + 1) else {
        return (!text.is_empty() && !text.contains(char::is_whitespace)).then_some(text);
    };
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

fn transparent_hugepages(host: &Host, _ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "transparent huge pages",
        Severity::Recommended,
        "with `always` the kernel may compact memory inside a page fault of a shard's thread \
         (stalls of milliseconds on its core); `madvise` keeps huge pages for code that asks",
    );
    f.recommended = "madvise (or never)".into();
    let path = "/sys/kernel/mm/transparent_hugepage/enabled";
    let Some(text) = host.read(path) else {
        f.current = "absent".into();
        f.status = Status::NotApplicable;
        return f;
    };
    let Some(sel) = selected(&text) else {
        return f;
    };
    f.current = sel.to_string();
    if sel == "always" {
        f.status = Status::Off;
        f.write(path, "madvise");
    } else {
        f.status = Status::Ok;
    }
    f
}

/// A numeric /proc/sys knob that should be at least (or at most) a value.
fn sysctl_bound(host: &Host, mut f: Finding, name: &str, bound: u64, at_least: bool) -> Finding {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    f.recommended = format!("{} {bound}", if at_least { ">=" } else { "<=" });
    let Some(v) = host.read(&path) else {
        return f;
    };
    let Ok(n) = v.parse::<u64>() else {
        f.current = v;
        return f;
    };
    f.current = v;
    let ok = if at_least { n >= bound } else { n <= bound };
    f.status = if ok { Status::Ok } else { Status::Off };
    if !ok {
        f.sysctl(name, &bound.to_string());
    }
    f
}

fn swappiness(host: &Host, _ctx: &Context) -> Finding {
    let f = Finding::new(
        "vm.swappiness",
        Severity::Recommended,
        "the tail cache and request buffers are the broker's working set; swapping them out \
         turns a memory read on a shard into a disk read",
    );
    sysctl_bound(host, f, "vm.swappiness", SWAPPINESS_MAX, false)
}

fn somaxconn(host: &Host, _ctx: &Context) -> Finding {
    let f = Finding::new(
        "net.core.somaxconn",
        Severity::Recommended,
        "the broker listens with a backlog of 4096, which the kernel silently caps at \
         somaxconn: a reconnect storm beyond it sees dropped SYNs and retries",
    );
    sysctl_bound(host, f, "net.core.somaxconn", LISTEN_BACKLOG, true)
}

fn tcp_max_syn_backlog(host: &Host, _ctx: &Context) -> Finding {
    let f = Finding::new(
        "net.ipv4.tcp_max_syn_backlog",
        Severity::Recommended,
        "half-open connections queued per listener; below the listen backlog, many clients \
         connecting at once (a restart, a failover) wait for SYN retries",
    );
    sysctl_bound(
        host,
        f,
        "net.ipv4.tcp_max_syn_backlog",
        LISTEN_BACKLOG,
        true,
    )
}

/// The whole disk under the data directory: the block device of `dev`, or the disk a
/// partition belongs to (its queue settings are the disk's).
pub fn data_disk(host: &Host, dev: (u32, u32)) -> Option<String> {
    let link = host.path(&format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    let real = std::fs::canonicalize(link).ok()?;
    let dir = if real.join("partition").exists() {
        real.parent()?.to_path_buf()
    } else {
        real
    };
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// The data disk's name, or why there is none to tune (for a not-applicable finding).
fn data_disk_name(host: &Host, ctx: &Context) -> Result<String, String> {
    match ctx.data_dev.and_then(|d| data_disk(host, d)) {
        Some(disk) if host.path(&format!("/sys/block/{disk}/queue")).is_dir() => Ok(disk),
        Some(d) => Err(format!("{d}: no queue settings")),
        None => {
            Err("data directory's disk not found (tmpfs, overlay, or not a block device)".into())
        }
    }
}

/// Marks `f` not applicable with `why`.
fn not_applicable(mut f: Finding, why: String) -> Finding {
    f.status = Status::NotApplicable;
    f.current = why;
    f
}

fn disk_scheduler(host: &Host, ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "data disk I/O scheduler",
        Severity::Recommended,
        "the storage already batches (group commit, aligned rounds) and orders its own \
         writes; a scheduler on a fast disk only adds CPU and queueing latency",
    );
    f.recommended = "none".into();
    let disk = match data_disk_name(host, ctx) {
        Ok(d) => d,
        Err(why) => return not_applicable(f, why),
    };
    let path = format!("/sys/block/{disk}/queue/scheduler");
    let Some(text) = host.read(&path) else {
        return f;
    };
    let available: Vec<&str> = text
        .split_whitespace()
        .map(|s| s.trim_matches(['[', ']']))
        .collect();
    let want = ["none", "noop"].into_iter().find(|w| available.contains(w));
    let current = selected(&text).unwrap_or(text.as_str()).to_string();
    f.current = format!("{disk}: {current}");
    match want {
        None => f.status = Status::NotApplicable,
        Some(w) => {
            f.recommended = w.to_string();
            if current == w {
                f.status = Status::Ok;
            } else {
                f.status = Status::Off;
                f.write(&path, w);
            }
        }
    }
    f
}

fn disk_nomerges(host: &Host, ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "data disk nomerges",
        Severity::Recommended,
        "osprey's writes are already large and aligned; 2 stops the block layer from \
         searching for merges on every request",
    );
    f.recommended = "2".into();
    let disk = match data_disk_name(host, ctx) {
        Ok(d) => d,
        Err(why) => return not_applicable(f, why),
    };
    let path = format!("/sys/block/{disk}/queue/nomerges");
    let Some(v) = host.read(&path) else {
        return f;
    };
    f.status = if v == "2" { Status::Ok } else { Status::Off };
    f.current = format!("{disk}: {v}");
    if f.status == Status::Off {
        f.write(&path, "2");
    }
    f
}

/// Clock sources with a vDSO fast path: reading the time costs no system call.
const FAST_CLOCKSOURCES: &[&str] = &["tsc", "kvm-clock", "arch_sys_counter"];

fn clocksource(host: &Host, _ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "clocksource",
        Severity::Recommended,
        "every request is timed (latency metrics, timeouts); hpet, acpi_pm or xen make each \
         clock read a system call or a slow device access",
    );
    f.recommended = "tsc (kvm-clock, arch_sys_counter fine)".into();
    let base = "/sys/devices/system/clocksource/clocksource0";
    let Some(cur) = host.read(&format!("{base}/current_clocksource")) else {
        return f;
    };
    let available = host
        .read(&format!("{base}/available_clocksource"))
        .unwrap_or_default();
    f.status = if FAST_CLOCKSOURCES.contains(&cur.as_str()) {
        Status::Ok
    } else {
        Status::Off
    };
    f.current = cur;
    if f.status == Status::Off && available.split_whitespace().any(|c| c == "tsc") {
        f.write(&format!("{base}/current_clocksource"), "tsc");
    }
    f
}

/// Parses a CPU list ("0-3,5"); None if malformed.
pub fn parse_cpu_list(s: &str) -> Option<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().ok()?);
            }
        }
    }
    Some(out)
}

/// Formats a CPU set as a list with ranges ("0-3,5").
pub fn format_cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut out = String::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
    }
    out
}

/// True for the interrupt of a disk or network queue, by its /proc/interrupts name.
fn is_device_queue_irq(name: &str) -> bool {
    const NIC_PREFIXES: &[&str] = &[
        "eth", "ens", "enp", "eno", "mlx", "ixgbe", "i40e", "ice", "ena", "bnxt", "igb", "e1000",
    ];
    name.starts_with("nvme")
        // virtio-blk request queues (virtio1-req.0) and virtio-net queues
        // (virtio2-input.0, virtio2-output.0); not virtio-input devices (virtio4-input).
        || (name.starts_with("virtio")
            && ["-req.", "-input.", "-output."].iter().any(|q| name.contains(q)))
        || NIC_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn irq_affinity(host: &Host, ctx: &Context) -> Finding {
    let mut f = Finding::new(
        "IRQ affinity",
        Severity::Recommended,
        "a disk or NIC interrupt handled on a shard's core steals it from that shard's \
         requests; steer them to the cores osprey does not use (irqbalance may undo this: \
         stop it or ban the broker cores; kernel-managed IRQs such as NVMe queues refuse it)",
    );
    let online = host
        .read("/sys/devices/system/cpu/online")
        .and_then(|s| parse_cpu_list(&s));
    let broker: BTreeSet<usize> = ctx.broker_cpus.iter().copied().collect();
    let Some(online) = online else {
        return f;
    };
    let spare: BTreeSet<usize> = online.difference(&broker).copied().collect();
    f.recommended = if spare.is_empty() {
        "n/a".into()
    } else {
        format!("disk/NIC IRQs on CPUs {}", format_cpu_list(&spare))
    };
    let Some(interrupts) = host.read("/proc/interrupts") else {
        return f;
    };
    let mut on_broker = Vec::new();
    let mut device_irqs = 0;
    for line in interrupts.lines() {
        let Some((irq, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.parse::<u32>() else {
            continue;
        };
        let Some(name) = rest.split_whitespace().last() else {
            continue;
        };
        if !is_device_queue_irq(name) {
            continue;
        }
        device_irqs += 1;
        let path = format!("/proc/irq/{irq}/smp_affinity_list");
        let Some(aff) = host.read(&path).and_then(|s| parse_cpu_list(&s)) else {
            continue;
        };
        if !aff.is_disjoint(&broker) {
            on_broker.push(format!("{irq}({name})"));
            if !spare.is_empty() {
                f.write(&path, &format_cpu_list(&spare));
            }
        }
    }
    if device_irqs == 0 {
        f.current = "no disk/NIC queue IRQs visible".into();
        f.status = Status::NotApplicable;
    } else if spare.is_empty() {
        f.current = "the broker uses every CPU".into();
        f.status = Status::NotApplicable;
    } else if on_broker.is_empty() {
        f.current = "off the broker's CPUs".into();
        f.status = Status::Ok;
    } else {
        f.current = format!("on broker CPUs: {}", on_broker.join(" "));
        f.status = Status::Off;
    }
    f
}

/// The `check` table: one row per knob, then why each knob that is off matters.
pub fn render_table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            [
                f.knob.to_string(),
                f.status.label().to_string(),
                match f.severity {
                    Severity::Important => "important".into(),
                    Severity::Recommended => "recommended".into(),
                },
                f.current.clone(),
                f.recommended.clone(),
            ]
        })
        .collect();
    let head = ["KNOB", "STATUS", "SEVERITY", "CURRENT", "RECOMMENDED"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head.map(String::from));
    for r in &rows {
        line(r);
    }
    let off: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.status == Status::Off)
        .collect();
    if !off.is_empty() {
        out.push('\n');
        for f in off {
            let _ = writeln!(out, "{}: {}", f.knob, f.why);
        }
    }
    out
}

/// A shell script that sets every knob that is off (as root).
pub fn render_script(findings: &[Finding]) -> String {
    let mut out = String::from("#!/bin/sh\n# osprey tune script: run as root\nset -e\n");
    for f in findings.iter().filter(|f| f.status == Status::Off) {
        let _ = writeln!(
            out,
            "\n# {} ({} -> {}): {}",
            f.knob, f.current, f.recommended, f.why
        );
        for c in &f.commands {
            let _ = writeln!(out, "{c}");
        }
    }
    out
}

/// What `apply` did for one knob.
#[derive(Debug)]
pub enum Applied {
    /// Every write was made.
    Set,
    /// It cannot be set by a file write: do these by hand.
    Manual(Vec<String>),
    /// A write failed.
    Failed(String),
}

/// Writes every off knob's files under the host's root. On the real host this needs root.
pub fn apply(host: &Host, findings: &[Finding]) -> Vec<(&'static str, Applied)> {
    let mut out = Vec::new();
    for f in findings.iter().filter(|f| f.status == Status::Off) {
        if f.writes.is_empty() {
            out.push((f.knob, Applied::Manual(f.commands.clone())));
            continue;
        }
        let mut result = Applied::Set;
        for (path, value) in &f.writes {
            if let Err(e) = std::fs::write(host.path(path), format!("{value}\n")) {
                result = Applied::Failed(format!("{path}: {e}"));
                break;
            }
        }
        out.push((f.knob, result));
    }
    out
}
