//! A short, bounded iotune run on a directory of the build's disk (cargo's target scratch
//! directory: O_DIRECT needs a real disk filesystem; /tmp may be tmpfs).

use std::time::{Duration, Instant};

use tuning::iotune::{self, Options, Report};

// Every test runs for its duration (so the whole run is bounded by 15 x duration plus the
// fill), each measures something, the scratch file is removed, and the report written to
// DIR/iotune.json loads back equal.
#[test]
fn short_run_measures_and_round_trips() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let opts = Options {
        duration: Duration::from_millis(50),
        file_bytes: 4 << 20,
    };
    let mut steps = Vec::new();
    let start = Instant::now();
    let report = iotune::run(dir.path(), &opts, |s| steps.push(s.to_string())).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(20), "bounded run took {took:?}");
    assert!(took >= opts.duration * iotune::test_count() as u32);
    assert_eq!(steps.len(), iotune::test_count() + 1, "{steps:?}");
    assert_eq!(
        report.bandwidth.len(),
        2 * iotune::BLOCK_SIZES.len() * iotune::QUEUE_DEPTHS.len()
    );
    for b in &report.bandwidth {
        assert!(b.bytes_per_sec > 0.0 && b.iops > 0.0, "{b:?}");
    }
    assert_eq!(report.latency.len(), 3);
    for l in &report.latency {
        assert!(l.ops > 0, "{l:?}");
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us);
    }
    assert!(!dir.path().join(iotune::IOTUNE_FILE_NAME).exists());
    iotune::write_report(dir.path(), &report).unwrap();
    assert_eq!(Report::load(dir.path()).unwrap(), report);
    assert!(report.summary().contains("O_DIRECT write"));
    assert!(report.table().contains("write+fdatasync"));
}

// Durations outside (0, DURATION_MAX] are refused before anything is written.
#[test]
fn unbounded_durations_are_refused() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for d in [
        Duration::ZERO,
        iotune::DURATION_MAX + Duration::from_secs(1),
    ] {
        let opts = Options {
            duration: d,
            file_bytes: 1 << 20,
        };
        assert!(iotune::run(dir.path(), &opts, |_| {}).is_err());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
