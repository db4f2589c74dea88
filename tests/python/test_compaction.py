"""Compacted topics with real clients: keyed updates and tombstones produced with
confluent-kafka to a topic with cleanup.policy=compact, cleaned by the broker's cleaner
(--log-cleaner-backoff-ms 100, small segments, min.cleanable.dirty.ratio=0.01,
delete.retention.ms=0), then read from the beginning by confluent-kafka and kafka-python
consumers: exactly the latest value per live key, offsets growing with gaps; batches of
every codec, cleaned ones compressed again by the broker. Keyless records are refused
with INVALID_RECORD."""

import time
import uuid

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

from conftest import wait_until

TIMEOUT_S = 30
KEYS = 50
ROUNDS = 10


def value(rnd, k):
    return (b"r%d-k%d-" % (rnd, k)).ljust(400, b"x")


def compacted_topic(broker):
    topic = f"compacted-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cfg = {"cleanup.policy": "compact", "segment.bytes": "65536", "segment.ms": "1000",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    for f in admin.create_topics([NewTopic(topic, 1, 1, config=cfg)]).values():
        f.result(TIMEOUT_S)
    return topic


CODECS = ["none", "lz4", "zstd", "gzip", "snappy"]


def fill(broker, topic):
    """Produces ROUNDS updates of KEYS keys (tombstones for every 5th key last), then one
    record after segment.ms so that every update sits in a sealed segment. Each round goes
    through a producer with another compression codec, so the last round's batches (snappy,
    several records each) lose their tombstones in the cleaner and are compressed again.
    Returns (latest live value per key, log end offset)."""
    producers = {c: CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                                "compression.type": c}) for c in CODECS}
    want = {}
    for rnd in range(ROUNDS):
        p = producers[CODECS[rnd % len(CODECS)]]
        for k in range(KEYS):
            key = b"key-%d" % k
            v = None if (rnd == ROUNDS - 1 and k % 5 == 0) else value(rnd, k)
            p.produce(topic, key=key, value=v, partition=0)
            want[key] = v
        assert p.flush(TIMEOUT_S) == 0
    time.sleep(1.1)
    p = producers["none"]
    p.produce(topic, key=b"end", value=b"x", partition=0)
    assert p.flush(TIMEOUT_S) == 0
    want[b"end"] = b"x"
    live = {k: v for k, v in want.items() if v is not None}
    return live, ROUNDS * KEYS + 1


def read_confluent(broker, topic, end):
    """Every record from offset 0 up to `end` with confluent-kafka: [(offset, key, value)]."""
    c = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": uuid.uuid4().hex,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([CKTopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append((m.offset(), m.key(), m.value()))
        if m.offset() == end - 1:
            break
    c.close()
    return out


def read_kafka_python(broker, topic, end):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = []
    for m in c:
        out.append((m.offset, m.key, m.value))
        if m.offset == end - 1:
            break
    c.close()
    return out


def check_compacted(recs, live, end):
    offsets = [r[0] for r in recs]
    assert offsets == sorted(set(offsets)), "offsets grow"
    assert offsets[-1] == end - 1, "the last record keeps its offset"
    assert len(recs) == len(live), f"{len(recs)} records for {len(live)} live keys"
    assert {k: v for _, k, v in recs} == live
    assert len(offsets) < end, "gaps where records were removed"


def test_compacted_topic_read_from_beginning_by_every_client(broker_factory):
    broker = broker_factory(cores=1, extra=["--log-cleaner-backoff-ms", "100"])
    topic = compacted_topic(broker)
    live, end = fill(broker, topic)
    # The cleaner runs every 100 ms: wait until a reader sees the compacted log.
    assert wait_until(lambda: len(read_confluent(broker, topic, end)) == len(live),
                      timeout_s=TIMEOUT_S, interval_s=0.3)
    check_compacted(read_confluent(broker, topic, end), live, end)
    check_compacted(read_kafka_python(broker, topic, end), live, end)


def test_keyless_record_refused_on_compacted_topic(broker_factory):
    broker = broker_factory(cores=1)
    topic = compacted_topic(broker)
    errors = []
    p = CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "retries": 0})
    p.produce(topic, value=b"no key", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT_S)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
