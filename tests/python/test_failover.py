"""Failover of a 3-host cluster, each host a process in a network namespace of its own:
the leader's host killed with kill -9 and restarted, and a leader's host isolated from the
others by nftables while clients still reach it. Every run is checked by `checker.check`
for lost, duplicated and reordered acknowledged messages and for reads that vanished."""

import threading
import time
import uuid

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic as CKNewTopic

from checker import check

NODES_PER_HOST = 1024
KEYS = 12
TIMEOUT_S = 60


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def key_of(v):
    return v % KEYS


def metadata(bootstrap, timeout=10):
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)


def wait_for(what, predicate, timeout_s=TIMEOUT_S, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - a host may be down while we poll
            last = e
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def create_rf3(cluster, topic, partitions):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    admin.create_topics([CKNewTopic(topic, num_partitions=partitions, replication_factor=3,
                                    config={"min.insync.replicas": "2"})])[topic].result(timeout=30)
    wait_for("a full ISR", lambda: all_in_sync(cluster.bootstrap(), topic, partitions))


def all_in_sync(bootstrap, topic, partitions):
    md = metadata(bootstrap)
    t = md.topics.get(topic)
    return (t is not None and len(t.partitions) == partitions
            and all(sorted(p.isrs) == sorted(p.replicas) and p.leader >= 0 for p in t.partitions.values()))


def leader_host(bootstrap, topic, partition):
    return metadata(bootstrap).topics[topic].partitions[partition].leader // NODES_PER_HOST


def read_all(bootstrap, topic, partitions):
    """Everything in the topic, from offset 0 of every partition, up to its end."""
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                    "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        ends = {}
        for p in range(partitions):
            ends[p] = wait_for("watermarks", lambda p=p: c.get_watermark_offsets(
                TopicPartition(topic, p), timeout=5))[1]
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + TIMEOUT_S
        while any(len(got[p]) < ends[p] for p in got) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    got[m.partition()].append((m.offset(), int(m.value())))
        return got
    finally:
        c.close()


def partition_logs(cluster, topic, partition):
    out = {}
    for h, b in cluster.hosts.items():
        d = b.data_dir / "topics" / f"{topic}-{partition}"
        if d.exists():
            out[h] = b"".join(p.read_bytes() for p in sorted(d.glob("*.log"))).rstrip(b"\0")
    return out


def logs_identical(cluster, topic, partitions):
    for p in range(partitions):
        logs = partition_logs(cluster, topic, p)
        if len(logs) != 3 or len(set(logs.values())) != 1:
            return False
    return True


class Workload:
    """An idempotent acks=all producer (values 0, 1, 2, ... keyed value % KEYS) and a
    consumer group committing as it reads, each on a thread, until stop()."""

    def __init__(self, bootstrap, topic, rate_per_s=1000):
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate_per_s
        self.group = unique("group")
        self.acked, self.failed, self.observed = set(), [], set()
        self.ack_times = []
        self.acked_at = {}
        self.stopping = threading.Event()
        # Daemon threads: a failed test never leaves clients running against a torn-down cluster.
        self.threads = [threading.Thread(target=self.produce, daemon=True),
                        threading.Thread(target=self.consume, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=90)

    def produce(self):
        def on_delivery(err, m):
            if err is None:
                self.acked.add(int(m.value()))
                self.acked_at[int(m.value())] = (m.partition(), m.offset())
                self.ack_times.append((time.monotonic(), m.partition()))
            else:
                self.failed.append((int(m.value()), str(err)))

        def new_producer():
            return CKProducer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                               "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000,
                               "topic.metadata.refresh.interval.ms": 1000})

        p = new_producer()
        self.fatal = []
        i = 0
        start = time.monotonic()
        while not self.stopping.is_set():
            try:
                if i < (time.monotonic() - start) * self.rate:
                    try:
                        p.produce(self.topic, key=str(key_of(i)), value=str(i), on_delivery=on_delivery)
                        i += 1
                    except BufferError:
                        p.poll(0.05)
                p.poll(0.001)
            except KafkaException as e:
                # A fatal client error (librdkafka's idempotence bookkeeping can give up,
                # e.g. _INCONSISTENT): an application starts a new producer; what the old
                # one had not seen acknowledged is simply not acknowledged.
                self.fatal.append(str(e))
                p = new_producer()
        p.flush(90)
        self.sent = i

    def consume(self):
        c = CKConsumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                        "enable.auto.commit": False, "auto.offset.reset": "earliest",
                        "session.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 1000})
        c.subscribe([self.topic])
        last_commit = time.monotonic()
        try:
            while not self.stopping.is_set():
                for m in c.consume(num_messages=500, timeout=0.2):
                    if m.error() is None:
                        self.observed.add(int(m.value()))
                if time.monotonic() - last_commit > 0.5:
                    try:
                        c.commit(asynchronous=True)
                    except Exception:  # noqa: BLE001 - nothing to commit yet, or no coordinator
                        pass
                    last_commit = time.monotonic()
            try:
                c.commit(asynchronous=False)
            except Exception:  # noqa: BLE001
                pass
        finally:
            c.close()


def test_leader_host_kill_9_loses_no_acknowledged_message(netns_cluster):
    """kill -9 of the host leading partition 0 under an idempotent acks=all producer and a
    committing consumer group; the host restarts on the same data. Nothing acknowledged is
    lost, duplicated or reordered; the restarted host rejoins every ISR with a log
    byte-identical to the leader's; the group resumes at its committed offsets."""
    c = netns_cluster
    topic, partitions = unique("kill"), 6
    create_rf3(c, topic, partitions)
    w = Workload(c.bootstrap(), topic)
    w.start()
    time.sleep(3)
    victim = leader_host(c.bootstrap(), topic, 0)
    c.hosts[victim].kill()
    killed_at = time.monotonic()
    others = [h for h in c.hosts if h != victim]
    wait_for("a new leader for partition 0",
             lambda: leader_host(c.bootstrap(*others), topic, 0) not in (victim, -1))
    # Acknowledged again: the first ack of partition 0 after the kill.
    wait_for("acks on partition 0 after the kill",
             lambda: any(t > killed_at and p == 0 for t, p in list(w.ack_times)))
    recovered = min(t for t, p in list(w.ack_times) if t > killed_at and p == 0) - killed_at
    print(f"partition 0 acknowledged again {recovered:.2f} s after kill -9 of its leader's host {victim}")
    time.sleep(2)
    c.restart(victim)
    # Run on until the group has read well past the restart (its coordinator may have
    # been on the killed host).
    seen = len(w.observed)
    wait_for("the group reading after the restart", lambda: len(w.observed) > seen + 2000)
    time.sleep(1)
    w.stop()
    assert not w.failed, w.failed[:5]
    final = read_all(c.bootstrap(), topic, partitions)
    report = check(w.acked, final, w.observed, key_of)
    print(report)
    assert report.ok, f"{report}; where the first lost were acknowledged: " + str(
        [(v, w.acked_at.get(v)) for v in report.lost[:10]]) + f"; read per partition: { {p: len(m) for p, m in final.items()} }"
    if not w.fatal:
        assert len(w.acked) == w.sent
    else:
        print(f"client-side fatal errors (producer restarted): {w.fatal}")
    wait_for("every replica back in the ISR", lambda: all_in_sync(c.bootstrap(), topic, partitions))
    wait_for("byte-identical replicas", lambda: logs_identical(c, topic, partitions))
    # The group resumes where it committed.
    g = CKConsumer({"bootstrap.servers": c.bootstrap(), "group.id": w.group,
                    "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        committed = wait_for("committed offsets", lambda: g.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10))
        assert any(tp.offset > 0 for tp in committed), committed
        g.assign(committed)
        firsts = {}
        deadline = time.monotonic() + 20
        while len(firsts) < partitions and time.monotonic() < deadline:
            for m in g.consume(num_messages=100, timeout=0.5):
                if m.error() is None:
                    firsts.setdefault(m.partition(), m.offset())
            ends = {tp.partition: tp.offset for tp in committed}
            if all(ends[p] >= len(final[p]) for p in range(partitions) if p not in firsts):
                break
        for tp in committed:
            if tp.partition in firsts:
                assert firsts[tp.partition] == max(tp.offset, 0), (tp, firsts)
    finally:
        g.close()


def test_isolated_leader_cannot_acknowledge_and_is_truncated(netns_cluster):
    """The host leading a partition is cut off from the other hosts (clients still reach
    it): acks=all writes sent to it with min.insync.replicas=2 are never acknowledged; the
    majority fences it and elects a new leader that takes writes; after healing, the old
    leader truncates its divergent tail and every replica is byte-identical, holding every
    acknowledged write and none of the unacknowledged ones."""
    c = netns_cluster
    topic = unique("iso")
    create_rf3(c, topic, 1)
    acked = set()

    def producer(bootstrap, **extra):
        return CKProducer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1, **extra})

    def on(err, m):
        if err is None:
            acked.add(int(m.value()))

    p = producer(c.bootstrap())
    for i in range(100):
        p.produce(topic, value=str(i), on_delivery=on)
    assert p.flush(30) == 0 and len(acked) == 100
    victim = leader_host(c.bootstrap(), topic, 0)
    others = [h for h in c.hosts if h != victim]
    c.isolate(victim)
    # Timed out before the majority fences the victim (broker.session.timeout.ms 2000): by
    # then the victim closes its client connections and the client would find the new
    # leader, whose acknowledgements are legitimate. This window is the isolated leader's.
    lonely = producer(c.bootstrap(victim), **{"message.timeout.ms": 1500, "request.timeout.ms": 1000,
                                              "topic.metadata.refresh.interval.ms": 600000})
    lonely_failed = []
    for i in range(1000, 1020):
        lonely.produce(topic, value=str(i), on_delivery=lambda err, m: lonely_failed.append(err) if err else acked.add(int(m.value())))
    lonely.flush(20)
    assert len(lonely_failed) == 20, f"the isolated leader acknowledged writes: {sorted(acked)[-5:]}"
    wait_for("a leader on the majority side",
             lambda: leader_host(c.bootstrap(*others), topic, 0) in others)
    p2 = producer(c.bootstrap(*others))
    for i in range(2000, 2200):
        p2.produce(topic, value=str(i), on_delivery=on)
    assert p2.flush(30) == 0
    c.heal(victim)
    wait_for("the old leader back in the ISR", lambda: all_in_sync(c.bootstrap(), topic, 1))
    wait_for("byte-identical replicas", lambda: logs_identical(c, topic, 1))
    final = read_all(c.bootstrap(), topic, 1)
    report = check(acked, final)
    print(report)
    assert report.ok, str(report)
    assert not {v for _, v in final[0]} & set(range(1000, 1020)), "unacknowledged writes survived"
