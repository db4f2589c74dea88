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


def compacted_topic(broker, **overrides):
    topic = f"compacted-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cfg = {"cleanup.policy": "compact", "segment.bytes": "65536", "segment.ms": "1000",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    cfg.update({k.replace("_", "."): v for k, v in overrides.items()})
    for f in admin.create_topics([NewTopic(topic, 1, 1, config=cfg)]).values():
        f.result(TIMEOUT_S)
    return topic


CODECS = ["none", "lz4", "zstd", "gzip", "snappy"]


def fill(broker, topic, with_tombstones=False):
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
    if with_tombstones:
        return want, live, ROUNDS * KEYS + 1
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


def segment_files(broker, topic):
    """The partition's segment files in the broker's data dir."""
    dirs = [d for d in broker.data_dir.rglob(f"{topic}-0") if d.is_dir()]
    assert len(dirs) == 1, dirs
    return sorted(dirs[0].glob("*.log"))


def test_tombstones_kept_until_delete_horizon_and_segments_merged(broker_factory):
    """KIP-534 over the wire: with delete.retention.ms=4000 the first cleaning keeps the
    tombstones (stamping their batches' delete horizon), a consumer still reads them with
    the latest value of every other key; once the horizon has passed the cleaner removes
    them without any new write, and a consumer reads exactly the latest live value per
    key. Meanwhile the cleaned segments were merged: ~200 KB produced into 32 KiB segments
    (at least 6 of them, which cleaning alone keeps) end as one merged segment beside the
    active one in the data dir (the cleaner runs during the fill, so the count before is
    the produced bytes' lower bound, not a listing)."""
    broker = broker_factory(cores=1, extra=["--log-cleaner-backoff-ms", "100"])
    segment_bytes = 32768
    topic = compacted_topic(broker, delete_retention_ms="4000", segment_bytes=str(segment_bytes))
    want, live, end = fill(broker, topic, with_tombstones=True)
    files_before = ROUNDS * KEYS * len(value(0, 0)) // segment_bytes
    assert files_before >= 6, files_before
    # Compacted, tombstones kept: one record per key, tombstones included.
    assert wait_until(lambda: len(read_confluent(broker, topic, end)) == len(want),
                      timeout_s=TIMEOUT_S, interval_s=0.2)
    seen = read_confluent(broker, topic, end)
    assert len(seen) == len(want) and {k: v for _, k, v in seen} == want
    # After the horizon: the tombstones are gone.
    assert wait_until(lambda: len(read_confluent(broker, topic, end)) == len(live),
                      timeout_s=TIMEOUT_S, interval_s=0.3)
    check_compacted(read_confluent(broker, topic, end), live, end)
    check_compacted(read_kafka_python(broker, topic, end), live, end)
    files_after = len(segment_files(broker, topic))
    assert files_after <= 2, (files_before, files_after)
