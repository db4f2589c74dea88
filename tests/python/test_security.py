"""Security at the wire with real clients: Kafka's listeners (each answering Metadata with its
own endpoints), SASL (PLAIN, SCRAM-SHA-256/512) and the ACL authorizer."""

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from conftest import Broker


def topic():
    return "sec-" + uuid.uuid4().hex[:8]


def produce_consume(conf, t, n=5, timeout_s=20):
    """Produces n records with confluent-kafka under `conf` and reads them back."""
    p = Producer({**conf, "message.timeout.ms": timeout_s * 1000})
    for i in range(n):
        p.produce(t, value=b"v%d" % i)
    assert p.flush(timeout_s) == 0
    c = Consumer({**conf, "group.id": "g-" + t, "auto.offset.reset": "earliest"})
    c.subscribe([t])
    got = []
    import time
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


# Two listeners on one broker: Metadata through each names that listener's own ports (and
# its advertised host), and a client bootstrapped on the second listener produces and
# consumes through it alone.
def test_metadata_answers_the_listener_the_client_came_through(tmp_path):
    b = Broker(tmp_path / "d", cores=2, extra=[
        "--listeners", "INTERNAL://127.0.0.1:0",
        "--listener-security-protocol-map", "INTERNAL:PLAINTEXT",
        "--advertised-listeners", "INTERNAL://localhost",
    ]).start()
    try:
        assert set(b.listeners) == {"PLAINTEXT", "INTERNAL"}
        assert b.listeners["PLAINTEXT"] == b.bootstrap
        plain = AdminClient({"bootstrap.servers": b.listeners["PLAINTEXT"]}).list_topics(timeout=10)
        internal = AdminClient({"bootstrap.servers": b.listeners["INTERNAL"]}).list_topics(timeout=10)
        plain_eps = {(x.host, x.port) for x in plain.brokers.values()}
        internal_eps = {(x.host, x.port) for x in internal.brokers.values()}
        assert len(plain_eps) == 2 and len(internal_eps) == 2
        assert {h for h, _ in plain_eps} == {"127.0.0.1"}
        assert {h for h, _ in internal_eps} == {"localhost"}
        assert not ({p for _, p in plain_eps} & {p for _, p in internal_eps})
        t = topic()
        got = produce_consume({"bootstrap.servers": b.listeners["INTERNAL"]}, t)
        assert got == [b"v%d" % i for i in range(5)]
        # kafka-python finds the group coordinator on the same listener.
        a = KafkaAdminClient(bootstrap_servers=b.listeners["INTERNAL"])
        assert t in a.list_topics()
        a.close()
    finally:
        b.kill()
