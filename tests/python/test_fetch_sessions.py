"""Fetch sessions (KIP-227) with real consumers of a topic with many partitions, written
to in waves so that each fetch finds data on a few partitions only: kafka-python (which
opens incremental fetch sessions) must see every message once and keep its sessions
(no invalid or refused session answers), and librdkafka (confluent-kafka, which fetches
without sessions) must keep working beside it."""

import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

TIMEOUT_S = 30
PARTITIONS = 48
WAVES = 4
PER_WAVE = 12


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce_wave(bootstrap, topic, wave):
    """PER_WAVE messages, each on its own partition (a different set each wave)."""
    p = CKProducer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    sent = []
    for i in range(PER_WAVE):
        part = (wave * PER_WAVE + i * 5) % PARTITIONS
        v = f"w{wave}-{i}"
        p.produce(topic, partition=part, value=v.encode())
        sent.append(v)
    assert p.flush(TIMEOUT_S) == 0
    return sent


def drain_kafka_python(c, want, timeout_s=TIMEOUT_S):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for msgs in c.poll(timeout_ms=200).values():
            got.extend(m.value.decode() for m in msgs)
    return got


def drain_confluent(c, want):
    got = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < want and time.monotonic() < deadline:
        for m in c.consume(num_messages=100, timeout=0.2):
            assert m.error() is None, m.error()
            got.append(m.value().decode())
    return got


def test_many_partitions_with_fetch_sessions(broker, caplog):
    caplog.set_level(logging.DEBUG, logger="kafka.consumer.fetcher")
    topic = unique("sessions")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(TIMEOUT_S)

    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                       auto_offset_reset="earliest", fetch_max_wait_ms=100)
    kp.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    kp.seek_to_beginning()
    ck = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                     "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    ck.assign([CKTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    try:
        for wave in range(WAVES):
            sent = produce_wave(broker.bootstrap, topic, wave)
            assert sorted(drain_kafka_python(kp, len(sent))) == sorted(sent), f"wave {wave}"
            assert sorted(drain_confluent(ck, len(sent))) == sorted(sent), f"wave {wave}"
        # Nothing more, nothing twice.
        assert drain_kafka_python(kp, 1, timeout_s=1.0) == []
        handlers = kp._fetcher._session_handlers
        assert handlers, "kafka-python fetched without sessions"
        for node, h in handlers.items():
            assert h.next_metadata.session_id > 0, (node, h.next_metadata)
            assert h.next_metadata.epoch > WAVES, (node, h.next_metadata)
        log = caplog.text
        assert "incremental fetch response for session" in log
        for bad in ("invalid full fetch response", "invalid incremental fetch response",
                    "unable to process the fetch request"):
            assert bad not in log, bad
    finally:
        kp.close()
        ck.close()
