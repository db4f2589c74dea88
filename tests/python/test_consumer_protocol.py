"""The consumer group protocol (KIP-848, `group.protocol=consumer`) end to end with
confluent-kafka (librdkafka): members split a topic's partitions with no partition owned by
two members at any time (from their assign/revoke callbacks), a third member takes its share,
a leaving one gives its partitions back, commits resume where they left off, and a classic
consumer cannot join the consumer-protocol group."""

import json
import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, ConsumerGroupType, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, broker_binary, wait_until

PARTITIONS = 6
PER_PARTITION = 10
FLAGS = ["--group-consumer-session-timeout-ms", "6000",
         "--group-consumer-heartbeat-interval-ms", "300",
         "--group-initial-rebalance-delay-ms", "100"]
TIMEOUT_S = 40


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce(bootstrap, topic, tag):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for part in range(PARTITIONS):
        for i in range(PER_PARTITION):
            p.produce(topic, value=f"{tag}:{part}:{i}".encode(), partition=part)
    assert p.flush(30) == 0
    return {f"{tag}:{part}:{i}" for part in range(PARTITIONS) for i in range(PER_PARTITION)}


class Ledger:
    """Who owns which partition, from the members' callbacks; records double ownership."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner = {}
        self.violations = []
        self.values = []

    def assign(self, name, parts):
        with self.lock:
            for p in parts:
                other = self.owner.get(p)
                if other is not None and other != name:
                    self.violations.append((p, other, name))
                self.owner[p] = name

    def revoke(self, name, parts):
        with self.lock:
            for p in parts:
                if self.owner.get(p) == name:
                    del self.owner[p]

    def of(self, name):
        with self.lock:
            return {p for p, o in self.owner.items() if o == name}


class Member:
    def __init__(self, name, bootstrap, group, topic, ledger, **conf):
        self.name, self.ledger, self.errors, self.commit_errors = name, ledger, [], []
        self.stop = threading.Event()
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "group.protocol": "consumer", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False, **conf})
        self.c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                         on_lost=self.on_revoke)
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def on_assign(self, c, parts):
        self.ledger.assign(self.name, [p.partition for p in parts])

    def on_revoke(self, c, parts):
        self.ledger.revoke(self.name, [p.partition for p in parts])

    def run(self):
        while not self.stop.is_set():
            m = self.c.poll(0.2)
            if m is None:
                continue
            if m.error():
                self.errors.append(m.error())
                continue
            with self.ledger.lock:
                self.ledger.values.append(m.value().decode())
            try:
                self.c.commit(message=m, asynchronous=False)
            except KafkaException as e:  # e.g. UNKNOWN_MEMBER_ID right after a coordinator move
                self.commit_errors.append(e.args[0].code())

    def close(self):
        self.stop.set()
        self.t.join(10)
        self.c.close()


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    f = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    for fut in f.values():
        fut.result(20)


def test_consumer_protocol_split_join_leave_resume(tmp_path):
    b = Broker(tmp_path / "data", cores=2, extra=FLAGS).start()
    members = []
    try:
        topic, group = unique("kip848"), unique("g")
        create_topic(b.bootstrap, topic)
        sent = produce(b.bootstrap, topic, "r1")
        ledger = Ledger()
        a = Member("a", b.bootstrap, group, topic, ledger)
        members.append(a)
        bm = Member("b", b.bootstrap, group, topic, ledger)
        members.append(bm)

        def split(names, each):
            return all(len(ledger.of(n)) == each for n in names)

        assert wait_until(lambda: split("ab", 3), TIMEOUT_S), ledger.owner
        c = Member("c", b.bootstrap, group, topic, ledger)
        members.append(c)
        assert wait_until(lambda: split("abc", 2), TIMEOUT_S), ledger.owner
        bm.close()
        members.remove(bm)
        assert wait_until(lambda: split("ac", 3), TIMEOUT_S), ledger.owner
        assert wait_until(lambda: sent <= set(ledger.values), TIMEOUT_S)

        # The admin client sees a consumer-protocol group (ConsumerGroupDescribe, ListGroups).
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(20)
        assert desc.type == ConsumerGroupType.CONSUMER, desc.type
        assert len(desc.members) == 2
        owned = sorted(tp.partition for m in desc.members for tp in m.assignment.topic_partitions)
        assert owned == list(range(PARTITIONS)), owned
        # `osprey groups describe` (DescribeGroups, then ConsumerGroupDescribe) shows it too.
        out = subprocess.run([broker_binary(), "groups", "describe", group, "--bootstrap",
                              b.bootstrap, "--output", "json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        doc = doc[0] if isinstance(doc, list) else doc
        assert doc["protocol_type"] == "consumer" and doc["protocol"] == "uniform", doc
        assert len(doc["members"]) == 2, doc
        owned = sorted(p for m in doc["members"] for p in m["assignment"].get(topic, []))
        assert owned == list(range(PARTITIONS)), doc
        listed = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(20)
        assert group in [g.group_id for g in listed.valid]
        listed = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(20)
        assert group not in [g.group_id for g in listed.valid]
        assert ledger.violations == [], ledger.violations
        assert all(not m.errors and not m.commit_errors for m in members), \
            [(m.errors, m.commit_errors) for m in members]

        # A classic consumer cannot join the live consumer-protocol group.
        classic = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                            "group.protocol": "classic", "session.timeout.ms": 6000})
        classic.subscribe([topic])
        codes, deadline = set(), time.monotonic() + 15
        while time.monotonic() < deadline and KafkaError.INCONSISTENT_GROUP_PROTOCOL not in codes:
            m = classic.poll(0.2)
            if m is not None and m.error():
                codes.add(m.error().code())
        assert KafkaError.INCONSISTENT_GROUP_PROTOCOL in codes, codes
        assert classic.assignment() == []
        classic.close()

        # Every member leaves; a new one resumes from the committed offsets.
        for m in members:
            m.close()
        members.clear()
        second = produce(b.bootstrap, topic, "r2")
        ledger2 = Ledger()
        d = Member("d", b.bootstrap, group, topic, ledger2)
        members.append(d)
        assert wait_until(lambda: second <= set(ledger2.values), TIMEOUT_S), len(ledger2.values)
        time.sleep(1)
        assert not (set(ledger2.values) & sent), "records consumed again after their commit"
        assert len(ledger2.values) == len(second)
    finally:
        for m in members:
            try:
                m.close()
            except Exception:
                pass
        b.kill()


def test_consumer_protocol_static_member_keeps_its_partitions(tmp_path):
    """A static member (group.instance.id) that closes and comes back under a new member id
    gets the same partitions, and the other member never took them meanwhile."""
    b = Broker(tmp_path / "data", cores=2, extra=FLAGS).start()
    members = []
    try:
        topic, group = unique("kip848s"), unique("g")
        create_topic(b.bootstrap, topic)
        ledger = Ledger()
        a = Member("a", b.bootstrap, group, topic, ledger, **{"group.instance.id": "ia"})
        members.append(a)
        other = Member("o", b.bootstrap, group, topic, ledger, **{"group.remote.assignor": "range"})
        members.append(other)
        assert wait_until(lambda: len(ledger.of("a")) == 3 and len(ledger.of("o")) == 3,
                          TIMEOUT_S), ledger.owner
        before = ledger.of("a")
        a.close()
        members.remove(a)
        time.sleep(1.5)
        assert ledger.of("o") == set(range(PARTITIONS)) - before, "o took a static member's partitions"
        a2 = Member("a2", b.bootstrap, group, topic, ledger, **{"group.instance.id": "ia"})
        members.append(a2)
        assert wait_until(lambda: ledger.of("a2") == before, TIMEOUT_S), ledger.owner
        assert ledger.violations == [], ledger.violations
    finally:
        for m in members:
            try:
                m.close()
            except Exception:
                pass
        b.kill()


def test_consumer_protocol_coordinator_host_killed(tmp_path):
    """kill -9 of the host coordinating a consumer-protocol group: the members hear
    UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH from the new coordinator (membership is in
    memory), rejoin, and go on from their committed offsets."""
    from conftest import Cluster
    c = Cluster(tmp_path / "cluster", extra=FLAGS).start()
    members = []
    try:
        topic, group = unique("kip848f"), unique("g")
        admin = AdminClient({"bootstrap.servers": c.bootstrap()})
        f = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])
        for fut in f.values():
            fut.result(30)
        sent = produce(c.bootstrap(), topic, "r1")
        ledger = Ledger()
        for name in "ab":
            members.append(Member(name, c.bootstrap(), group, topic, ledger))
        assert wait_until(lambda: sent <= set(ledger.values), TIMEOUT_S)
        assert wait_until(lambda: len(ledger.of("a")) == 3 and len(ledger.of("b")) == 3, TIMEOUT_S)
        time.sleep(1)  # the last synchronous commits complete
        coord = admin.describe_consumer_groups([group])[group].result(20).coordinator
        victim = next(i for i, b in c.hosts.items()
                      if int(b.bootstrap.rsplit(":", 1)[1]) < coord.port <= int(b.bootstrap.rsplit(":", 1)[1]) + c.cores)
        c.hosts[victim].kill()
        rest = [i for i in c.hosts if i != victim]
        second = produce(c.bootstrap(*rest), topic, "r2")
        assert wait_until(lambda: second <= set(ledger.values), 60), len(ledger.values)
        assert wait_until(lambda: len(ledger.of("a")) == 3 and len(ledger.of("b")) == 3, TIMEOUT_S), ledger.owner
        assert ledger.violations == [], ledger.violations
        # Commits were synchronous: nothing of the first round is read twice.
        assert len([v for v in ledger.values if v.startswith("r1:")]) == len(sent)
    finally:
        for m in members:
            try:
                m.close()
            except Exception:
                pass
        c.kill_all()
        c.save_logs()
