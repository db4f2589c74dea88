//! The tuners against fake /proc and /sys trees in a temporary directory: no root needed,
//! nothing on the real host read or changed.

use std::path::Path;

use tuning::tune::{self, Applied, Context, Host, Severity, Status};

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{text}\n")).unwrap();
}

fn limits(memlock: &str, nofile: &str) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max cpu time              unlimited            unlimited            seconds   \n\
         Max open files            {nofile:<20} {nofile:<20} files     \n\
         Max locked memory         {memlock:<20} {memlock:<20} bytes     \n"
    )
}

/// A host of 4 CPUs with an NVMe data disk (partition nvme0n1p1 = 259:1), every knob as
/// given. The broker of `ctx` runs on CPUs 0-1.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(bad: bool) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let pick = |b: &'static str, g: &'static str| if bad { b } else { g };
        put(
            r,
            "proc/self/limits",
            &limits(pick("1048576", "unlimited"), pick("1024", "1048576")),
        );
        put(r, "proc/sys/kernel/io_uring_disabled", pick("2", "0"));
        for cpu in 0..4 {
            put(
                r,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                pick("powersave", "performance"),
            );
        }
        put(r, "sys/devices/system/cpu/online", "0-3");
        put(
            r,
            "sys/kernel/mm/transparent_hugepage/enabled",
            pick("[always] madvise never", "always [madvise] never"),
        );
        put(r, "proc/sys/vm/swappiness", pick("60", "1"));
        let disk = "sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1";
        put(r, &format!("{disk}/nvme0n1p1/partition"), "1");
        std::fs::create_dir_all(r.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../{}/nvme0n1p1", disk.trim_start_matches("sys/")),
            r.join("sys/dev/block/259:1"),
        )
        .unwrap();
        put(
            r,
            "sys/block/nvme0n1/queue/scheduler",
            pick("[mq-deadline] kyber none", "[none] mq-deadline kyber"),
        );
        put(r, "sys/block/nvme0n1/queue/nomerges", pick("0", "2"));
        put(r, "proc/sys/net/core/somaxconn", pick("128", "4096"));
        put(
            r,
            "proc/sys/net/ipv4/tcp_max_syn_backlog",
            pick("512", "8192"),
        );
        put(
            r,
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            pick("hpet", "tsc"),
        );
        put(
            r,
            "sys/devices/system/clocksource/clocksource0/available_clocksource",
            "tsc hpet acpi_pm",
        );
        put(
            r,
            "proc/interrupts",
            "           CPU0       CPU1       CPU2       CPU3\n \
             24:          1          0          0          0  IO-APIC   5-edge      ACPI:Ged\n \
             40:        100          0          0          0  PCI-MSIX-0000:00:04.0   0-edge      nvme0q0\n \
             41:        100          0          0          0  PCI-MSIX-0000:00:04.0   1-edge      nvme0q1\n \
             50:          0          5          0          0  PCI-MSIX-0000:00:05.0   1-edge      virtio4-input\n \
             NMI:          0          0          0          0   Non-maskable interrupts",
        );
        for irq in [24, 40, 41, 50] {
            put(
                r,
                &format!("proc/irq/{irq}/smp_affinity_list"),
                pick("0-3", "2-3"),
            );
        }
        Fake { dir }
    }

    fn host(&self) -> Host {
        Host::new(self.dir.path())
    }
}

fn ctx() -> Context {
    Context {
        broker_cpus: vec![0, 1],
        data_dev: Some((259, 1)),
        is_root: false,
    }
}

fn by_knob<'a>(findings: &'a [tune::Finding], knob: &str) -> &'a tune::Finding {
    findings
        .iter()
        .find(|f| f.knob == knob)
        .unwrap_or_else(|| panic!("no finding {knob}"))
}

// A badly tuned host: every tuner reports its knob off with the value it read, the
// important ones make `check` fail, and the writes name the right files (the data disk
// found through the partition's /sys/dev/block link; only disk and NIC queue IRQs moved,
// to the CPUs the broker does not use).
#[test]
fn every_knob_off_on_a_badly_tuned_host() {
    let fake = Fake::new(true);
    let findings = tune::check_all(&fake.host(), &ctx());
    assert_eq!(findings.len(), tune::TUNERS.len());
    for f in &findings {
        assert_eq!(f.status, Status::Off, "{f:?}");
        assert!(!f.commands.is_empty(), "{f:?}");
    }
    assert!(findings.iter().any(|f| f.is_important_off()));
    let important: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Important)
        .map(|f| f.knob)
        .collect();
    assert_eq!(
        important,
        [
            "memlock limit",
            "open files limit",
            "kernel.io_uring_disabled"
        ]
    );
    assert_eq!(by_knob(&findings, "memlock limit").current, "1048576");
    assert_eq!(by_knob(&findings, "vm.swappiness").current, "60");
    let sched = by_knob(&findings, "data disk I/O scheduler");
    assert_eq!(sched.current, "nvme0n1: mq-deadline");
    assert_eq!(
        sched.writes,
        [(
            "/sys/block/nvme0n1/queue/scheduler".to_string(),
            "none".to_string()
        )]
    );
    let gov = by_knob(&findings, "CPU frequency governor");
    assert_eq!(gov.writes.len(), 2, "only the broker's CPUs: {gov:?}");
    let irq = by_knob(&findings, "IRQ affinity");
    assert_eq!(
        irq.writes,
        [
            (
                "/proc/irq/40/smp_affinity_list".to_string(),
                "2-3".to_string()
            ),
            (
                "/proc/irq/41/smp_affinity_list".to_string(),
                "2-3".to_string()
            ),
        ]
    );
    assert_eq!(
        by_knob(&findings, "kernel.io_uring_disabled").commands,
        ["sysctl -w kernel.io_uring_disabled=0"]
    );
    let table = tune::render_table(&findings);
    assert!(table.starts_with("KNOB"));
    assert_eq!(
        table.lines().filter(|l| l.contains(" OFF ")).count(),
        tune::TUNERS.len()
    );
    let script = tune::render_script(&findings);
    assert!(script.contains("echo none > /sys/block/nvme0n1/queue/scheduler\n"));
    assert!(script.contains("sysctl -w net.core.somaxconn=4096\n"));
}

// `apply` writes every settable knob under the root, after which those check ok; the
// process limits stay off and come back as steps to take by hand.
#[test]
fn apply_sets_the_fake_tree() {
    let fake = Fake::new(true);
    let host = fake.host();
    let findings = tune::check_all(&host, &ctx());
    let applied = tune::apply(&host, &findings);
    for (knob, a) in &applied {
        match a {
            Applied::Set => {}
            Applied::Manual(steps) => {
                assert!(
                    ["memlock limit", "open files limit"].contains(knob),
                    "{knob}"
                );
                assert!(steps.iter().all(|s| s.starts_with('#')));
            }
            Applied::Failed(e) => panic!("{knob}: {e}"),
        }
    }
    let after = tune::check_all(&host, &ctx());
    for f in &after {
        let expected = if ["memlock limit", "open files limit"].contains(&f.knob) {
            Status::Off
        } else {
            Status::Ok
        };
        assert_eq!(f.status, expected, "{f:?}");
    }
    let swappiness = std::fs::read_to_string(fake.dir.path().join("proc/sys/vm/swappiness"));
    assert_eq!(swappiness.unwrap(), "1\n");
}

// A well tuned host checks clean, and root is exempt from the memlock limit.
#[test]
fn a_tuned_host_checks_clean() {
    let fake = Fake::new(false);
    let findings = tune::check_all(&fake.host(), &ctx());
    for f in &findings {
        assert_eq!(f.status, Status::Ok, "{f:?}");
        assert!(f.writes.is_empty());
    }
    let bad = Fake::new(true);
    let root = Context {
        is_root: true,
        ..ctx()
    };
    let memlock = &tune::check_all(&bad.host(), &root)[0];
    assert_eq!(memlock.knob, "memlock limit");
    assert_eq!(memlock.status, Status::Ok);
    // 8 MiB for 2 shards: above the 3 MiB they need to start, below the 60 MiB of full
    // rings: off, but not important.
    put(
        fake.dir.path(),
        "proc/self/limits",
        &limits("8388608", "1048576"),
    );
    let memlock = &tune::check_all(&fake.host(), &ctx())[0];
    assert_eq!(memlock.status, Status::Off);
    assert_eq!(memlock.severity, Severity::Recommended);
}

// Knobs this host does not have are not applicable (no cpufreq in a VM, io_uring switch
// before Linux 6.6, a data directory on no block device, a broker on every CPU), and an
// empty tree is unknown everywhere: nothing is reported off that could not be read.
#[test]
fn missing_knobs_are_not_reported_off() {
    let fake = Fake::new(true);
    let r = fake.dir.path();
    for cpu in 0..4 {
        std::fs::remove_dir_all(r.join(format!("sys/devices/system/cpu/cpu{cpu}"))).unwrap();
    }
    std::fs::remove_file(r.join("proc/sys/kernel/io_uring_disabled")).unwrap();
    let c = Context {
        broker_cpus: vec![0, 1, 2, 3],
        data_dev: Some((0, 42)),
        is_root: false,
    };
    let findings = tune::check_all(&fake.host(), &c);
    for knob in [
        "CPU frequency governor",
        "kernel.io_uring_disabled",
        "data disk I/O scheduler",
        "data disk nomerges",
        "IRQ affinity",
    ] {
        assert_eq!(
            by_knob(&findings, knob).status,
            Status::NotApplicable,
            "{knob}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    for f in tune::check_all(&Host::new(empty.path()), &ctx()) {
        assert_ne!(f.status, Status::Off, "{f:?}");
        assert!(f.writes.is_empty());
    }
}

// CPU lists round-trip through the kernel's range notation, and malformed ones are refused.
#[test]
fn cpu_lists() {
    let s = tune::parse_cpu_list("0-3,5,7-8").unwrap();
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 5, 7, 8]);
    assert_eq!(tune::format_cpu_list(&s), "0-3,5,7-8");
    assert!(tune::parse_cpu_list("3-1").is_none());
    assert!(tune::parse_cpu_list("x").is_none());
}
