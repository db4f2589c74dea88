#!/usr/bin/env python3
"""Max producer and consumer throughput of confluent-kafka (librdkafka) against a broker,
and the same against a peer in the same run (A B A B rounds), each broker pinned apart
from the client.

The issue-3 benchmark: 1 KiB messages, 8 partitions, acks=all. For each round the broker
under test is started fresh (osprey: its data dir on the machine's disk, acks=all means
fdatasync before the ack; Tansu: memory storage), a topic is created, N messages are
produced as fast as the client goes (throughput = N / time from first send to last
delivery report), then consumed from the beginning with manual assignment (throughput =
N / time from the first to the last message). Prints a table with the median of each
broker, the ratio and the spread, and writes JSON with every round.

Usage: bench_throughput.py --osprey-bin target/release/osprey --tansu-bin PATH
          [--messages 200000] [--rounds 2] [--broker-cpu 0] [--client-cpu 1] [--json out.json]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 8
SIZE = 1024
READY_TIMEOUT_S = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout_s=READY_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker on port {port} did not come up")


def start_osprey(binary, cpu):
    data = tempfile.mkdtemp(prefix="osprey-bench-", dir=os.environ.get("BENCH_DATA_DIR", "/var/tmp"))
    proc = subprocess.Popen(["taskset", "-c", str(cpu), binary, "serve", "--listen", "127.0.0.1:0",
                             "--data-dir", data, "--cores", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"bootstrap=(\S+)", line or "")
        if m:
            return proc, m.group(1), data
    proc.kill()
    raise RuntimeError("osprey did not report ready")


def start_tansu(binary, cpu):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(["taskset", "-c", str(cpu), binary, "broker", "--listener-url", url,
                             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"127.0.0.1:{port}", None


def stop(proc, data):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if data:
        shutil.rmtree(data, ignore_errors=True)


def measure(bootstrap, messages):
    topic = f"tp-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(timeout=30)
    time.sleep(0.5)
    payload = os.urandom(SIZE)
    errors = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 262144,
                  "queue.buffering.max.kbytes": 262144, "enable.idempotence": False})
    start = time.perf_counter()
    for i in range(messages):
        while True:
            try:
                p.produce(topic, value=payload, partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(120)
    produce_s = time.perf_counter() - start
    if remaining or errors or delivered[0] != messages:
        raise RuntimeError(f"produce incomplete: remaining {remaining}, delivered {delivered[0]}, errors {errors[:3]}")

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 8388608})
    c.assign([TopicPartition(topic, part, 0) for part in range(PARTITIONS)])
    got = 0
    first = None
    deadline = time.monotonic() + 300
    while got < messages and time.monotonic() < deadline:
        for m in c.consume(num_messages=10000, timeout=1.0):
            if m.error() is not None:
                raise RuntimeError(f"consume error: {m.error()}")
            if first is None:
                first = time.perf_counter()
            got += 1
    consume_s = time.perf_counter() - (first or time.perf_counter())
    c.close()
    if got != messages:
        raise RuntimeError(f"consumed {got} of {messages}")
    return {"produce_msgs_per_s": messages / produce_s, "consume_msgs_per_s": messages / max(consume_s, 1e-9),
            "produce_mb_per_s": messages * SIZE / produce_s / 1e6, "consume_mb_per_s": messages * SIZE / max(consume_s, 1e-9) / 1e6}


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--osprey-bin", required=True)
    ap.add_argument("--tansu-bin", required=True)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--broker-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.client_cpu})
    results = {"osprey": [], "tansu": []}
    for r in range(a.rounds):
        for name, starter, binary in (("osprey", start_osprey, a.osprey_bin), ("tansu", start_tansu, a.tansu_bin)):
            proc, bootstrap, data = starter(binary, a.broker_cpu)
            try:
                res = measure(bootstrap, a.messages)
            finally:
                stop(proc, data)
            results[name].append(res)
            print(f"round {r + 1} {name:6s} produce {res['produce_msgs_per_s']:9.0f} msg/s "
                  f"({res['produce_mb_per_s']:.1f} MB/s)  consume {res['consume_msgs_per_s']:9.0f} msg/s "
                  f"({res['consume_mb_per_s']:.1f} MB/s)", flush=True)
    print(f"\nconfluent-kafka {a.messages} x {SIZE} B, {PARTITIONS} partitions, acks=all; "
          f"broker on CPU {a.broker_cpu} (taskset), client on CPU {a.client_cpu}")
    print(f"{'figure':24s} {'osprey':>12s} {'tansu':>12s} {'ratio':>8s}  spread (min-max osprey | tansu)")
    summary = {}
    for key in ("produce_msgs_per_s", "consume_msgs_per_s"):
        o = [x[key] for x in results["osprey"]]
        t = [x[key] for x in results["tansu"]]
        ratio = median(o) / median(t)
        summary[key] = {"osprey": median(o), "tansu": median(t), "ratio": ratio}
        print(f"{key:24s} {median(o):12.0f} {median(t):12.0f} {ratio:8.2f}  "
              f"{min(o):.0f}-{max(o):.0f} | {min(t):.0f}-{max(t):.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": results, "summary": summary, "messages": a.messages, "size": SIZE,
                       "partitions": PARTITIONS, "acks": "all",
                       "placement": {"broker_cpu": a.broker_cpu, "client_cpu": a.client_cpu}}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
