"""Consumer groups end to end with the real clients: kafka-python, confluent-kafka and aiokafka
consumers share a 12-partition topic, rebalance when members leave and join, and resume from
their committed offsets after the broker was killed and restarted."""

import asyncio
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CKProducer
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor

from conftest import wait_until

PARTITIONS = 12
PER_PARTITION = 10
DELAY = ["--group-initial-rebalance-delay-ms", "100"]
SESSION_MS = 6000
HEARTBEAT_MS = 500
BALANCE_TIMEOUT_S = 40
CONSUME_TIMEOUT_S = 40


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap, name):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()


def produce_round(bootstrap, topic, round_no):
    """PER_PARTITION messages to every partition, values 'r<round>:<partition>:<i>'."""
    p = CKProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for part in range(PARTITIONS):
        for i in range(PER_PARTITION):
            p.produce(topic, value=f"r{round_no}:{part}:{i}".encode(), partition=part)
    assert p.flush(30) == 0, "producer did not deliver everything"
    return {f"r{round_no}:{part}:{i}" for part in range(PARTITIONS) for i in range(PER_PARTITION)}


class Member:
    """One group member of a client library, polling in its own thread and committing
    synchronously after every poll that returned records."""

    def __init__(self, kind, bootstrap, group, topic, assignor=None):
        self.kind, self.bootstrap, self.group, self.topic, self.assignor = kind, bootstrap, group, topic, assignor
        self.records = []  # (partition, offset, value)
        self.assignment = set()
        self.stop_flag = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop_flag.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.kind} consumer did not close"
        assert self.error is None, f"{self.kind} consumer failed: {self.error!r}"
        self.assignment = set()

    def _run(self):
        try:
            {"kafka-python": self._kafka_python, "confluent": self._confluent,
             "aiokafka": lambda: asyncio.run(self._aiokafka())}[self.kind]()
        except Exception as e:  # surfaced by close()
            self.error = e

    def _kafka_python(self):
        kw = {}
        if self.assignor == "range":
            kw["partition_assignment_strategy"] = [RangePartitionAssignor]
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
                          auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
                          heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100, **kw)
        c.subscribe([self.topic])
        try:
            while not self.stop_flag.is_set():
                batches = c.poll(timeout_ms=100)
                for tp, msgs in batches.items():
                    self.records.extend((m.partition, m.offset, m.value.decode()) for m in msgs)
                if batches:
                    try:
                        c.commit()
                    except Exception:
                        pass  # a rebalance interrupted the commit: the records are re-read
                self.assignment = {tp.partition for tp in c.assignment()}
        finally:
            c.close()

    def _confluent(self):
        c = CKConsumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
                        "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
                        "heartbeat.interval.ms": HEARTBEAT_MS, "fetch.wait.max.ms": 100,
                        "partition.assignment.strategy": self.assignor or "range,roundrobin"})
        c.subscribe([self.topic])
        try:
            while not self.stop_flag.is_set():
                msgs = c.consume(num_messages=500, timeout=0.1)
                good = [m for m in msgs if m.error() is None]
                self.records.extend((m.partition(), m.offset(), m.value().decode()) for m in good)
                if good:
                    try:
                        c.commit(asynchronous=False)
                    except KafkaException:
                        pass
                self.assignment = {tp.partition for tp in c.assignment()}
        finally:
            c.close()

    async def _aiokafka(self):
        from aiokafka import AIOKafkaConsumer
        c = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                             fetch_max_wait_ms=100)
        await c.start()
        try:
            while not self.stop_flag.is_set():
                data = await c.getmany(timeout_ms=100)
                for tp, msgs in data.items():
                    self.records.extend((m.partition, m.offset, m.value.decode()) for m in msgs)
                if data:
                    try:
                        await c.commit()
                    except Exception:
                        pass
                self.assignment = {tp.partition for tp in c.assignment()}
        finally:
            await c.stop()


def balanced(members):
    """Every member owns something, no partition twice, all partitions owned."""
    sets = [m.assignment for m in members]
    return (all(sets) and sum(len(s) for s in sets) == PARTITIONS
            and set().union(*sets) == set(range(PARTITIONS)))


def wait_balanced(members, what):
    assert wait_until(lambda: balanced(members), BALANCE_TIMEOUT_S), \
        f"{what}: assignments never balanced: {[(m.kind, sorted(m.assignment)) for m in members]}"


def consumed(everyone):
    return [r for m in everyone for r in m.records]


def wait_consumed(everyone, expected, what):
    def done():
        return {r[2] for r in consumed(everyone)} >= expected
    assert wait_until(done, CONSUME_TIMEOUT_S), \
        f"{what}: missing {len(expected - {r[2] for r in consumed(everyone)})} messages"
    time.sleep(0.5)  # a duplicate would show up within the next polls
    values = [r[2] for r in consumed(everyone) if r[2] in expected]
    assert len(values) == len(set(values)), f"{what}: some messages were consumed twice"


def check_owners(members, expected):
    """Every message of `expected` was consumed by the member that owns its partition now."""
    for m in members:
        for part, _, value in m.records:
            if value in expected:
                assert part in m.assignment, f"{m.kind} consumed partition {part} it does not own"


def lifecycle(broker_factory, tmp_path, kinds, assignor=None):
    data_dir = tmp_path / "data"
    broker = broker_factory(cores=2, data_dir=data_dir, extra=DELAY)
    topic, group = unique("groups"), unique("g")
    create_topic(broker.bootstrap, topic)
    members = [Member(k, broker.bootstrap, group, topic, assignor).start() for k in kinds]
    everyone = list(members)
    try:
        wait_balanced(members, "initial join")
        expected = produce_round(broker.bootstrap, topic, 0)
        wait_consumed(everyone, expected, "first round")
        check_owners(members, expected)

        # One member leaves: the others take over its partitions.
        members.pop().close()
        wait_balanced(members, "after a leave")
        expected = produce_round(broker.bootstrap, topic, 1)
        wait_consumed(everyone, expected, "after a leave")
        check_owners(members, expected)

        # A new member joins and gets a share.
        newcomer = Member(kinds[-1], broker.bootstrap, group, topic, assignor).start()
        members.append(newcomer)
        everyone.append(newcomer)
        wait_balanced(members, "after a join")
        expected = produce_round(broker.bootstrap, topic, 2)
        wait_consumed(everyone, expected, "after a join")
        check_owners(members, expected)
    finally:
        for m in members:
            m.close()
    before = {(r[0], r[1]) for r in consumed(everyone)}
    assert len(before) == 3 * PARTITIONS * PER_PARTITION

    # Crash and restart the broker: new consumers resume at the committed offsets.
    broker.kill()
    broker = broker_factory(cores=2, data_dir=data_dir, extra=DELAY)
    expected = produce_round(broker.bootstrap, topic, 3)
    members = [Member(k, broker.bootstrap, group, topic, assignor).start() for k in kinds]
    try:
        wait_consumed(members, expected, "after a restart")
        replayed = [r for r in consumed(members) if r[2] not in expected]
        assert not replayed, f"re-consumed committed messages after the restart: {replayed[:5]}"
        firsts = {}
        for part, offset, _ in sorted(consumed(members)):
            firsts.setdefault(part, offset)
        assert firsts == {p: 3 * PER_PARTITION for p in range(PARTITIONS)}
    finally:
        for m in members:
            m.close()


@pytest.mark.parametrize("kind", ["kafka-python", "confluent", "aiokafka"])
def test_three_consumers_share_rebalance_and_resume(broker_factory, tmp_path, kind):
    """Three consumers of one library in a group: each partition has exactly one owner, every
    message is consumed once, a leaving member's partitions and a joining member's share are
    rebalanced, and after kill -9 + restart consumers resume at their committed offsets."""
    lifecycle(broker_factory, tmp_path, [kind] * 3)


def test_mixed_libraries_with_a_shared_assignor(broker_factory, tmp_path):
    """kafka-python and confluent-kafka members in one group, both with the 'range' assignor:
    they agree on one protocol, the leader's assignment reaches the other library's member,
    and every message is consumed once by the partition's owner."""
    broker = broker_factory(cores=2, extra=DELAY)
    topic, group = unique("mixed"), unique("g")
    create_topic(broker.bootstrap, topic)
    members = [Member(k, broker.bootstrap, group, topic, "range").start()
               for k in ["kafka-python", "confluent", "kafka-python", "confluent"]]
    try:
        wait_balanced(members, "mixed join")
        expected = produce_round(broker.bootstrap, topic, 0)
        wait_consumed(members, expected, "mixed group")
        check_owners(members, expected)
        # Range gives each member a contiguous block of partitions.
        for m in members:
            part = sorted(m.assignment)
            assert part == list(range(part[0], part[0] + len(part))), f"not a range assignment: {part}"
    finally:
        for m in members:
            m.close()
