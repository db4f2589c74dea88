"""Long failover run for the report (not part of the test command): a 3-host cluster in
network namespaces, an idempotent acks=all producer and a committing consumer group
running throughout, and N fault cycles, alternating kill -9 + immediate restart of a
partition leader's host and isolation + healing of one, then the checker over everything
acknowledged. Needs root.

    .venv/bin/python tests/python/chaos.py --cycles 50 [--binary target/release/osprey]
"""

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OSPREY_BIN", str(Path(__file__).resolve().parents[2] / "target" / "debug" / "osprey"))

from checker import check  # noqa: E402
from conftest import NetnsCluster  # noqa: E402
from test_failover import Workload, all_in_sync, create_rf3, key_of, leader_host, logs_identical, read_all, unique, wait_for  # noqa: E402,E501


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--binary")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=int, default=500, help="messages per second")
    args = ap.parse_args()
    if args.binary:
        os.environ["OSPREY_BIN"] = str(Path(args.binary).resolve())
    random.seed(args.seed)
    root = Path(__file__).resolve().parents[2] / "target" / "chaos"
    shutil.rmtree(root, ignore_errors=True)
    c = NetnsCluster(root, extra=["--broker-session-timeout-ms", "2000", "--replica-lag-time-max-ms", "3000",
                                  "--group-initial-rebalance-delay-ms", "100"])
    try:
        c.start()
        topic, partitions = unique("chaos"), 6
        create_rf3(c, topic, partitions)
        w = Workload(c.bootstrap(), topic, rate_per_s=args.rate)
        w.start()
        stopped = False
        wait_for("first acks", lambda: len(w.ack_times) > 100)
        recoveries = []
        kill_recoveries = []
        for cycle in range(1, args.cycles + 1):
            # A partition the producer writes to (its keys need not cover every partition).
            written = sorted({q for _, q in list(w.ack_times)})
            p = random.choice(written)
            victim = wait_for("a leader", lambda: leader_host(c.bootstrap(), topic, p) or None)
            kind = "kill" if cycle % 2 else "isolate"
            print(f"cycle {cycle}: {kind} host {victim}, leader of p{p} ...", flush=True)
            t0 = time.monotonic()
            if kind == "kill":
                c.hosts[victim].kill()
            else:
                c.isolate(victim)
            others = [h for h in c.hosts if h != victim]
            wait_for("a new leader", lambda: leader_host(c.bootstrap(*others), topic, p) in others)
            wait_for("acks again", lambda: any(t > t0 and q == p for t, q in list(w.ack_times)))
            rec = min(t for t, q in list(w.ack_times) if t > t0 and q == p) - t0
            recoveries.append(rec)
            if kind == "kill":
                kill_recoveries.append(rec)
            if kind == "kill":
                c.restart(victim)
            else:
                c.heal(victim)
            # Every host must see the full ISR (one host's view may lag), or the next fault
            # would leave fewer than min.insync.replicas in sync: unavailable by design.
            wait_for("a full ISR on every host", lambda: all(
                all_in_sync(c.bootstrap(h), topic, partitions) for h in c.hosts), timeout_s=90)
            print(f"cycle {cycle}: {kind} host {victim} (leader of p{p}); acked again after {rec:.2f} s; "
                  f"acked so far {len(w.acked)}", flush=True)
        w.stop()
        stopped = True
        final = read_all(c.bootstrap(), topic, partitions)
        report = check(w.acked, final, w.observed, key_of)
        wait_for("byte-identical replicas", lambda: logs_identical(c, topic, partitions), timeout_s=90)
        recoveries.sort()
        kill_recoveries.sort()
        if kill_recoveries:
            print(f"after kill -9 of a leader's host: acks again after median "
                  f"{kill_recoveries[len(kill_recoveries) // 2]:.2f} s, max {kill_recoveries[-1]:.2f} s")
        print(f"cycles={args.cycles} sent={w.sent} {report}")
        print(f"time to acks again after a fault: median {recoveries[len(recoveries) // 2]:.2f} s, "
              f"max {recoveries[-1]:.2f} s (broker.session.timeout.ms=2000)")
        print(f"producer errors: {len(w.failed)}; fatal client errors (producer restarted): {w.fatal}")
        sys.exit(0 if report.ok and not w.failed else 1)
    except BaseException:
        if os.environ.get("CHAOS_HOLD"):
            print("holding the cluster for inspection:", {i: b.proc.pid for i, b in c.hosts.items() if b.proc},
                  flush=True)
            time.sleep(float(os.environ["CHAOS_HOLD"]))
        raise
    finally:
        if "w" in locals() and not stopped:
            w.stopping.set()
        c.teardown()


if __name__ == "__main__":
    main()
