#!/usr/bin/env python3
"""Producer and consumer throughput of confluent-kafka over PLAINTEXT, SSL and SASL_SSL
(SCRAM-SHA-512) listeners of one osprey process, in the same run (rounds alternate the
listeners), so TLS and SASL costs show against plaintext on the same machine.

1 KiB messages, one topic per round with 4 partitions, acks=all. Produce throughput = N /
time from first send to last delivery report; consume throughput = N / time to read them
back with manual assignment. Certificates are made with openssl into a temporary directory.

Usage: bench_security.py --osprey-bin target/debug/osprey [--messages 50000] [--rounds 2]
"""
import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SIZE = 1024
PARTITIONS = 4


def pki(d: Path):
    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=bench-ca")
    (d / "s.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "s.ext")


def measure(conf, topic, n):
    payload = b"x" * SIZE
    p = Producer({**conf, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20})
    t0 = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    produce = n / (time.monotonic() - t0)
    c = Consumer({**conf, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
    got, t0 = 0, time.monotonic()
    while got < n and time.monotonic() - t0 < 120:
        for m in c.consume(10000, 1.0):
            if m.error() is None:
                got += 1
    consume = got / (time.monotonic() - t0)
    c.close()
    return produce, consume


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--osprey-bin", required=True)
    ap.add_argument("--messages", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki(d)
        subprocess.run([a.osprey_bin, "users", "create", "bench", "--mechanism", "SCRAM-SHA-512",
                        "--password", "bench-pw", "--data-dir", str(d / "data")], check=True)
        proc = subprocess.Popen([a.osprey_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(d / "data"),
                                 "--cores", str(a.cores), "--listeners", "SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
                                 "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            ls = dict(e.split("=", 1) for e in re.search(r"listeners=(\S+)", line).group(1).split(","))
            tls = {"ssl.ca.location": str(d / "ca.pem")}
            confs = {
                "PLAINTEXT": {"bootstrap.servers": ls["PLAINTEXT"]},
                "SSL": {"bootstrap.servers": ls["SSL"], "security.protocol": "SSL", **tls},
                "SASL_SSL": {"bootstrap.servers": ls["SASL_SSL"], "security.protocol": "SASL_SSL", **tls,
                             "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench",
                             "sasl.password": "bench-pw"},
            }
            admin = AdminClient(confs["PLAINTEXT"])
            results = {k: [] for k in confs}
            for r in range(a.rounds):
                for name, conf in confs.items():
                    topic = f"bench-{name}-{r}"
                    admin.create_topics([NewTopic(topic, PARTITIONS)])[topic].result(30)
                    results[name].append(measure(conf, topic, a.messages))
            print(f"{a.messages} x {SIZE} B, {a.rounds} rounds, acks=all, {a.cores} shard(s); median msg/s")
            print("listener   produce   consume")
            for name, rs in results.items():
                prod = statistics.median(x[0] for x in rs)
                cons = statistics.median(x[1] for x in rs)
                print(f"{name:<10} {prod:>8.0f}  {cons:>8.0f}   (rounds: {[(round(p), round(c)) for p, c in rs]})")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
