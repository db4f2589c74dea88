"""End-to-end tests with the real clients users run: kafka-python, confluent-kafka, kcat."""

import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic as CKNewTopic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

PARTITIONS = 6
COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]
CONSUME_TIMEOUT_S = 60


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap, name, partitions=PARTITIONS):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def consume_all(bootstrap, topic, expected, partitions=PARTITIONS):
    """kafka-python consumer with manual assignment; returns {partition: [(key, value, headers)]}."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000, fetch_max_wait_ms=200)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = {p: [] for p in range(partitions)}
        count = 0
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while count < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    got[m.partition].append((m.offset, m.key, m.value, m.headers))
                    count += 1
        return got, count
    finally:
        consumer.close()


def check_in_order(got):
    for p, msgs in got.items():
        offsets = [m[0] for m in msgs]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"partition {p} out of order"
        seqs = [int(m[2].split(b":")[1]) for m in msgs]
        assert seqs == sorted(seqs), f"partition {p}: messages reordered"


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_kafka_python_produce_consume_every_compression_and_acks(broker, compression):
    """Thousands of keyed messages with headers under every acks level round-trip complete
    and in order per partition through kafka-python."""
    topic = unique(f"kp-{compression}")
    create_topic(broker.bootstrap, topic)
    sent = 0
    for acks in (0, 1, "all"):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=acks,
                                 compression_type=None if compression == "none" else compression,
                                 enable_idempotence=False, linger_ms=5)
        futures = []
        for i in range(1000):
            futures.append(producer.send(topic, key=f"key-{i % 50}".encode(), value=f"{acks}:{sent:08d}".encode(),
                                         headers=[("h", str(i).encode())]))
            sent += 1
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=30)
        producer.close()
    got, count = consume_all(broker.bootstrap, topic, sent)
    assert count == sent
    check_in_order(got)
    # Same key -> same partition, and headers come back.
    key_partitions = {}
    for p, msgs in got.items():
        for _, key, _, headers in msgs:
            assert key_partitions.setdefault(key, p) == p
            assert headers and headers[0][0] == "h"


def test_kafka_python_default_idempotent_producer(broker):
    """kafka-python 3's default producer (idempotent, acks=all) works against osprey."""
    topic = unique("idem")
    create_topic(broker.bootstrap, topic, partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert producer.config["enable_idempotence"] is True
    for i in range(2000):
        producer.send(topic, key=str(i % 7).encode(), value=f"v:{i:08d}".encode())
    producer.flush(timeout=60)
    producer.close()
    got, count = consume_all(broker.bootstrap, topic, 2000, partitions=3)
    assert count == 2000
    check_in_order(got)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_confluent_kafka_produce_consume(broker, compression):
    """librdkafka produces under each compression with acks 0/1/all and consumes it back."""
    topic = unique(f"ck-{compression}")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([CKNewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(timeout=30)
    sent = 0
    errors = []
    for acks in ("0", "1", "all"):
        p = CKProducer({"bootstrap.servers": broker.bootstrap, "acks": acks, "compression.type": compression,
                        "linger.ms": 5})

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(err)

        for i in range(1000):
            p.produce(topic, key=f"key-{i % 50}", value=f"{acks}:{sent:08d}", headers=[("h", b"1")],
                      on_delivery=on_delivery)
            sent += 1
            if i % 200 == 0:
                p.poll(0)
        assert p.flush(60) == 0
    assert not errors, errors[:3]
    consumer = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                           "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([CKTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got = {}
        count = 0
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while count < sent and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value(), m.headers()))
                count += 1
    finally:
        consumer.close()
    assert count == sent
    check_in_order(got)


def test_restart_keeps_acknowledged_data(broker_factory, tmp_path):
    """Everything acknowledged under acks=all is consumable after a kill -9 and restart."""
    b = broker_factory(cores=2, data_dir=tmp_path / "restart")
    topic = unique("restart")
    create_topic(b.bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", compression_type="lz4")
    futures = [producer.send(topic, key=str(i).encode(), value=f"x:{i:08d}".encode()) for i in range(3000)]
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=30)
    producer.close()
    b.kill()
    b2 = broker_factory(cores=2, data_dir=tmp_path / "restart")
    got, count = consume_all(b2.bootstrap, topic, 3000)
    assert count == 3000
    check_in_order(got)
    assert b2.stop() == 0


def kcat_binary():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is not installed: the test command installs it (apt-get install kcat)")
    return path


def test_kcat_metadata_produce_consume(broker):
    """kcat lists metadata, produces keyed lines and consumes them back."""
    kcat = kcat_binary()
    topic = unique("kcat")
    create_topic(broker.bootstrap, topic, partitions=2)
    meta = subprocess.run([kcat, "-b", broker.bootstrap, "-L", "-t", topic], capture_output=True, text=True, timeout=30)
    assert meta.returncode == 0, meta.stderr
    assert f'topic "{topic}" with 2 partitions' in meta.stdout
    assert "2 brokers" in meta.stdout
    lines = "".join(f"k{i}:v{i}\n" for i in range(500))
    prod = subprocess.run([kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-z", "snappy"], input=lines,
                          capture_output=True, text=True, timeout=60)
    assert prod.returncode == 0, prod.stderr
    cons = subprocess.run([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-e", "-f", "%k=%s\n", "-o", "beginning"],
                          capture_output=True, text=True, timeout=60)
    assert cons.returncode == 0, cons.stderr
    got = sorted(cons.stdout.split())
    assert got == sorted(f"k{i}=v{i}" for i in range(500))
