"""Consumer-group benchmark against any Kafka-compatible broker (osprey, Tansu, Kafka).

1. commit rate: one confluent-kafka consumer that commits synchronously after every poll
   (the OpenMessaging Benchmark consumer's pattern), for --seconds; reports commits/s and
   the commit latency percentiles.
2. leave -> stable: three consumers in a group; one leaves (LeaveGroup on close); the time
   until the other two own all partitions again, --rounds times.

Usage: python bench_groups.py --bootstrap 127.0.0.1:9092 --label osprey [--seconds 10]
Pin it to a CPU of its own (taskset -c 1) and the broker to another.
"""

import argparse
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6
HEARTBEAT_MS = 100
SESSION_MS = 6000
STABLE_TIMEOUT_S = 30


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        f.result(30)
    time.sleep(0.5)


def commit_rate(bootstrap, seconds, messages):
    topic, group = f"bench-commit-{uuid.uuid4().hex[:6]}", f"bench-g-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    for i in range(messages):
        p.produce(topic, value=b"x" * 16, partition=0)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
    c.subscribe([topic])
    # Warm up: join the group and receive the first message.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            c.commit(message=m, asynchronous=False)
            break
    lat = []
    commits = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        m = c.poll(1.0)
        if m is None or m.error() is not None:
            continue
        t0 = time.perf_counter()
        c.commit(message=m, asynchronous=False)
        lat.append(time.perf_counter() - t0)
        commits += 1
    elapsed = time.monotonic() - start
    c.close()
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")
    return commits / elapsed, pct(0.5), pct(0.99), commits


class Member:
    def __init__(self, bootstrap, group, topic):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
                           "heartbeat.interval.ms": HEARTBEAT_MS, "partition.assignment.strategy": "range"})
        self.c.subscribe([topic])
        self.assignment = set()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            self.c.poll(0.01)
            self.assignment = {tp.partition for tp in self.c.assignment()}
        self.c.close()

    def close(self):
        self.stop.set()
        self.t.join(30)


def balanced(ms):
    sets = [m.assignment for m in ms]
    return all(sets) and sum(map(len, sets)) == PARTITIONS and set().union(*sets) == set(range(PARTITIONS))


def wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.002)
    return False


def leave_to_stable(bootstrap, rounds):
    topic = f"bench-leave-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, PARTITIONS)
    times = []
    for _ in range(rounds):
        group = f"bench-leave-g-{uuid.uuid4().hex[:6]}"
        ms = [Member(bootstrap, group, topic) for _ in range(3)]
        if not wait(lambda: balanced(ms), STABLE_TIMEOUT_S):
            raise RuntimeError("group of 3 never balanced")
        leaver = ms.pop()
        t0 = time.monotonic()
        leaver.stop.set()  # close() -> LeaveGroup
        ok = wait(lambda: balanced(ms), STABLE_TIMEOUT_S)
        times.append((time.monotonic() - t0) * 1e3 if ok else float("inf"))
        leaver.t.join(30)
        for m in ms:
            m.close()
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--label", default="broker")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rate, p50, p99, n = commit_rate(a.bootstrap, a.seconds, a.messages)
    print(f"{a.label}: sync commit after every poll: {rate:.0f} commits/s ({n} in {a.seconds:.0f} s), "
          f"commit latency p50 {p50:.2f} ms p99 {p99:.2f} ms")
    times = leave_to_stable(a.bootstrap, a.rounds)
    print(f"{a.label}: leave -> stable group of the other 2 (heartbeat {HEARTBEAT_MS} ms): "
          f"median {statistics.median(times):.0f} ms, min {min(times):.0f} ms, max {max(times):.0f} ms "
          f"over {len(times)} rounds")


if __name__ == "__main__":
    main()
