#!/usr/bin/env python3
"""Produce/consume benchmark of the Python Kafka clients users run against a broker.

For each client (kafka-python, confluent-kafka, aiokafka): a consumer is assigned every
partition of a fresh topic at its end offsets, then a producer sends N messages open-loop at
a fixed rate (each message has an intended send time; latency counts from it). Each value
starts with the intended send time in wall-clock nanoseconds, so the consumer measures
end-to-end latency. Prints a table and writes JSON (--json) with throughput, publish and
end-to-end percentiles, and counts (sent, acked, consumed, errors).

Usage: bench_clients.py --bootstrap 127.0.0.1:9092 [--messages 20000] [--rate 5000]
       [--size 1024] [--partitions 4] [--acks 1] [--linger-ms 1] [--clients a,b,c] [--json F]
"""
import argparse
import asyncio
import json
import os
import struct
import sys
import threading
import time

PCTS = [50, 75, 95, 99, 99.9, 99.99]


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(len(sorted_vals) * p / 100.0))
    return sorted_vals[i]


def summary(lat_ns):
    v = sorted(x / 1e6 for x in lat_ns)
    out = {f"{p}pct": pct(v, p) for p in PCTS}
    out["max"] = v[-1] if v else None
    out["avg"] = sum(v) / len(v) if v else None
    out["count"] = len(v)
    return out


def make_value(intended_ns, size, filler):
    return struct.pack(">Q", intended_ns) + filler[: size - 8]


def create_topic(bootstrap, topic, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    # Wait for leaders, then read the end offsets every consumer starts from.
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.time() + 30
    while True:
        parts = c.partitions_for_topic(topic)
        if parts and len(parts) == partitions:
            break
        if time.time() > deadline:
            raise RuntimeError(f"topic {topic} has no metadata after 30 s")
        time.sleep(0.1)
        c.poll(timeout_ms=10)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = c.end_offsets(tps)
    c.close()
    return {tp.partition: off for tp, off in ends.items()}


class Result:
    def __init__(self):
        self.publish = []
        self.delay = []
        self.e2e = []
        self.sent = 0
        self.acked = 0
        self.consumed = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.t_first = None
        self.t_last_ack = None

    def ack(self, intended, ok):
        now = time.time_ns()
        with self.lock:
            if ok:
                self.acked += 1
                self.publish.append(now - intended)
                self.t_last_ack = now
            else:
                self.errors += 1

    def got(self, value):
        now = time.time_ns()
        if value and len(value) >= 8:
            ts = struct.unpack(">Q", value[:8])[0]
            with self.lock:
                self.consumed += 1
                self.e2e.append(now - ts)

    def to_json(self, a):
        dur = max(1e-9, ((self.t_last_ack or 0) - (self.t_first or 0)) / 1e9)
        return {
            "sent": self.sent, "acked": self.acked, "consumed": self.consumed, "errors": self.errors,
            "publishMsgPerSec": self.acked / dur if self.acked else 0.0,
            "publishMBPerSec": self.acked * a.size / dur / 1e6 if self.acked else 0.0,
            "publishLatency": summary(self.publish),
            "publishDelayLatency": summary(self.delay),
            "endToEndLatency": summary(self.e2e),
        }


def paced(a, res, send_one):
    """Open-loop schedule: message i is due at start + i/rate, whatever happened before."""
    interval = 1e9 / a.rate if a.rate > 0 else 0
    start = time.time_ns()
    res.t_first = start
    for i in range(a.messages):
        intended = start + int(i * interval) if interval else time.time_ns()
        now = time.time_ns()
        if intended > now:
            time.sleep((intended - now) / 1e9)
        res.delay.append(max(0, time.time_ns() - intended))
        send_one(intended)
        res.sent += 1


def consume_until(res, a, poll_once, deadline):
    while res.consumed < a.messages and time.time() < deadline:
        poll_once()


def run_kafka_python(a, topic, ends, filler):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    res = Result()
    cons = KafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False, group_id=None,
                         fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in ends]
    cons.assign(tps)
    for tp in tps:
        cons.seek(tp, ends[tp.partition])

    def poll_once():
        for recs in cons.poll(timeout_ms=100).values():
            for r in recs:
                res.got(r.value)

    t = threading.Thread(target=consume_until, args=(res, a, poll_once, time.time() + a.timeout))
    t.start()
    prod = KafkaProducer(bootstrap_servers=a.bootstrap, acks=a.acks_py, linger_ms=a.linger_ms,
                         enable_idempotence=False)

    def send_one(intended):
        f = prod.send(topic, make_value(intended, a.size, filler))
        f.add_callback(lambda _md, i=intended: res.ack(i, True))
        f.add_errback(lambda _e, i=intended: res.ack(i, False))

    paced(a, res, send_one)
    prod.flush(timeout=a.timeout)
    prod.close()
    t.join(a.timeout)
    cons.close()
    return res


def run_confluent(a, topic, ends, filler):
    from confluent_kafka import Consumer, Producer, TopicPartition
    res = Result()
    cons = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"bench-{topic}",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    cons.assign([TopicPartition(topic, p, off) for p, off in ends.items()])

    def poll_once():
        for m in cons.consume(num_messages=1000, timeout=0.1):
            if m.error() is None:
                res.got(m.value())

    t = threading.Thread(target=consume_until, args=(res, a, poll_once, time.time() + a.timeout))
    t.start()
    prod = Producer({"bootstrap.servers": a.bootstrap, "acks": str(a.acks), "linger.ms": a.linger_ms})

    def send_one(intended):
        while True:
            try:
                prod.produce(topic, make_value(intended, a.size, filler),
                             on_delivery=lambda err, _m, i=intended: res.ack(i, err is None))
                break
            except BufferError:
                prod.poll(0.001)
        prod.poll(0)

    paced(a, res, send_one)
    prod.flush(a.timeout)
    t.join(a.timeout)
    cons.close()
    return res


def run_aiokafka(a, topic, ends, filler):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    res = Result()

    async def main():
        cons = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False,
                                group_id=None, fetch_max_wait_ms=100)
        await cons.start()
        tps = [TopicPartition(topic, p) for p in ends]
        cons.assign(tps)
        for tp in tps:
            cons.seek(tp, ends[tp.partition])

        async def consume():
            deadline = time.time() + a.timeout
            while res.consumed < a.messages and time.time() < deadline:
                batches = await cons.getmany(timeout_ms=100)
                for recs in batches.values():
                    for r in recs:
                        res.got(r.value)

        ct = asyncio.create_task(consume())
        prod = AIOKafkaProducer(bootstrap_servers=a.bootstrap, acks=a.acks_py, linger_ms=a.linger_ms)
        await prod.start()
        interval = 1e9 / a.rate if a.rate > 0 else 0
        start = time.time_ns()
        res.t_first = start
        pending = []

        def done(fut, intended):
            res.ack(intended, fut.exception() is None)

        for i in range(a.messages):
            intended = start + int(i * interval) if interval else time.time_ns()
            now = time.time_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
            res.delay.append(max(0, time.time_ns() - intended))
            fut = await prod.send(topic, make_value(intended, a.size, filler))
            fut.add_done_callback(lambda f, i=intended: done(f, i))
            pending.append(fut)
            res.sent += 1
        await asyncio.gather(*pending, return_exceptions=True)
        await prod.stop()
        await asyncio.wait_for(ct, a.timeout)
        await cons.stop()

    asyncio.run(main())
    return res


CLIENTS = {"kafka-python": run_kafka_python, "confluent-kafka": run_confluent, "aiokafka": run_aiokafka}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--acks", default="1")
    p.add_argument("--linger-ms", type=int, default=1)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json")
    a = p.parse_args()
    if a.size < 8:
        sys.exit("--size must be >= 8")
    a.acks_py = "all" if a.acks in ("-1", "all") else int(a.acks)
    filler = os.urandom(max(0, a.size - 8))
    out = {"bootstrap": a.bootstrap, "messages": a.messages, "rate": a.rate, "size": a.size,
           "partitions": a.partitions, "acks": a.acks, "lingerMs": a.linger_ms, "clients": {}}
    for name in a.clients.split(","):
        topic = f"pybench-{name}-{os.getpid()}-{int(time.time())}"
        try:
            ends = create_topic(a.bootstrap, topic, a.partitions)
            res = CLIENTS[name](a, topic, ends, filler)
            out["clients"][name] = res.to_json(a)
        except Exception as e:  # report, never hide
            out["clients"][name] = {"error": f"{type(e).__name__}: {e}"}
    hdr = f"{'client':<16} {'sent':>7} {'acked':>7} {'consumed':>8} {'err':>4} {'msg/s':>9} {'pub p50':>8} {'pub p99':>8} {'e2e p50':>8} {'e2e p99':>8}"
    print(hdr)
    for name, r in out["clients"].items():
        if "error" in r:
            print(f"{name:<16} ERROR {r['error']}")
            continue
        f = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"{name:<16} {r['sent']:>7} {r['acked']:>7} {r['consumed']:>8} {r['errors']:>4} "
              f"{r['publishMsgPerSec']:>9.0f} {f(r['publishLatency']['50pct']):>8} {f(r['publishLatency']['99pct']):>8} "
              f"{f(r['endToEndLatency']['50pct']):>8} {f(r['endToEndLatency']['99pct']):>8}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
    bad = any("error" in r or r["errors"] or r["consumed"] != r["sent"] for r in out["clients"].values())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
