"""A cluster of three osprey hosts (processes) on loopback with a Raft controller quorum,
driven with the real clients: every node of every host serves partitions, clients
bootstrapped from one host reach the others, and metadata changes go on when the active
controller is killed."""

import time
import uuid

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CKProducer
from confluent_kafka.admin import AdminClient, NewTopic as CKNewTopic

NODES_PER_HOST = 1024
TIMEOUT_S = 60


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap, name, partitions, rf=1, timeout_s=30):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([CKNewTopic(name, num_partitions=partitions, replication_factor=rf)],
                        operation_timeout=timeout_s)[name].result(timeout=timeout_s)


def wait_metadata(bootstrap, predicate, timeout_s=TIMEOUT_S):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    md = None
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if predicate(md):
            return md
        time.sleep(0.2)
    raise AssertionError(f"metadata never satisfied the condition: brokers={sorted(md.brokers)}")


def test_three_hosts_form_one_cluster(cluster):
    """Every host sees the same six nodes (host id x 1024 + shard); a topic created through
    one host has leaders on every node of every host; an idempotent acks=all producer
    bootstrapped from host 1 and a group consumer bootstrapped from host 3 move every
    message exactly once, in order per partition."""
    want = {h * NODES_PER_HOST + s for h in (1, 2, 3) for s in range(cluster.cores)}
    for h in (1, 2, 3):
        md = wait_metadata(cluster.bootstrap(h), lambda m: set(m.brokers) == want)
        assert md.cluster_id, "a cluster id is reported"
    topic = unique("spread")
    create_topic(cluster.bootstrap(1), topic, 12)
    md = wait_metadata(cluster.bootstrap(2), lambda m: topic in m.topics)
    leaders = {p.leader for p in md.topics[topic].partitions.values()}
    assert leaders == want, leaders

    errors = []
    p = CKProducer({"bootstrap.servers": cluster.bootstrap(1), "enable.idempotence": True,
                    "acks": "all", "linger.ms": 2})
    n = 1200
    for i in range(n):
        p.produce(topic, key=f"k{i % 24}", value=f"{i}",
                  on_delivery=lambda err, _m: err and errors.append(err))
        if i % 100 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]

    c = CKConsumer({"bootstrap.servers": cluster.bootstrap(3), "group.id": unique("g"),
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        count = 0
        while count < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got.setdefault(m.partition(), []).append((m.offset(), int(m.value())))
                count += 1
        c.commit(asynchronous=False)
    finally:
        c.close()
    values = sorted(v for msgs in got.values() for _, v in msgs)
    assert values == list(range(n)), f"lost or duplicated: {len(values)} of {n}"
    for part, msgs in got.items():
        offsets = [o for o, _ in msgs]
        assert offsets == list(range(len(msgs))), f"partition {part}: offsets {offsets[:5]}..."
        vals = [v for _, v in msgs]
        assert vals == sorted(vals), f"partition {part} reordered"


def test_metadata_survives_killing_the_active_controller(cluster):
    """kill -9 of the host whose controller leads the quorum: the two others elect a new
    leader and topic creation through them goes on; the killed host, restarted on the same
    ports and data, catches up with what was created while it was down."""
    before = unique("before")
    create_topic(cluster.bootstrap(1), before, 3)
    leader = cluster.leader()
    cluster.hosts[leader].kill()
    others = [h for h in (1, 2, 3) if h != leader]
    after = unique("after")
    start = time.monotonic()
    deadline = start + TIMEOUT_S
    while True:
        try:
            create_topic(cluster.bootstrap(*others), after, 4, timeout_s=20)
            break
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise
            print(f"create during failover: {e}")
            time.sleep(0.5)
    print(f"topic created {time.monotonic() - start:.1f} s after killing controller leader {leader}")
    new_leader = cluster.leader()
    assert new_leader != leader
    md = wait_metadata(cluster.bootstrap(*others), lambda m: after in m.topics and before in m.topics)
    assert len(md.topics[after].partitions) == 4

    cluster.restart(leader)
    md = wait_metadata(cluster.bootstrap(leader), lambda m: after in m.topics and before in m.topics)
    assert len(md.topics[before].partitions) == 3


def partition_logs(cluster, topic, partition):
    """The stored bytes of one partition on every host that holds it (trailing zeros of
    preallocated segment space stripped), by host id."""
    out = {}
    for h, b in cluster.hosts.items():
        d = b.data_dir / "topics" / f"{topic}-{partition}"
        if not d.exists():
            continue
        data = b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))
        out[h] = data.rstrip(b"\0")
    return out


def produce_numbered(bootstrap, topic, n, start=0, **conf):
    """Idempotent acks=all producer; returns the set of values acknowledged."""
    acked, errors = set(), []

    def on_delivery(err, m):
        if err is None:
            acked.add(int(m.value()))
        else:
            errors.append(err)

    p = CKProducer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                    "linger.ms": 2, **conf})
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i % 12}", value=f"{i}", on_delivery=on_delivery)
        if i % 100 == 0:
            p.poll(0)
    p.flush(60)
    return acked, errors


def consume_all(bootstrap, topic, expected, timeout_s=TIMEOUT_S):
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": unique("g"),
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})
    got = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        count = 0
        while count < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got.setdefault(m.partition(), []).append((m.offset(), int(m.value())))
                count += 1
    finally:
        c.close()
    return got


def test_replicated_topic_acks_all_on_every_replica(cluster):
    """RF=3 with min.insync.replicas=2: every partition has three replicas on three hosts,
    all in sync; acks=all writes are read back exactly once, in order; and every replica's
    stored bytes are identical to the leader's (followers keep the leader's offsets and
    leader epochs)."""
    topic = unique("rf3")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(1)})
    admin.create_topics([CKNewTopic(topic, num_partitions=6, replication_factor=3,
                                    config={"min.insync.replicas": "2"})])[topic].result(timeout=30)
    md = wait_metadata(cluster.bootstrap(2), lambda m: topic in m.topics)
    for p in md.topics[topic].partitions.values():
        assert len(p.replicas) == 3 and len({r // NODES_PER_HOST for r in p.replicas}) == 3, p.replicas
        assert sorted(p.isrs) == sorted(p.replicas), (p.replicas, p.isrs)
    n = 3000
    acked, errors = produce_numbered(cluster.bootstrap(1), topic, n)
    assert not errors, errors[:3]
    assert acked == set(range(n))
    got = consume_all(cluster.bootstrap(3), topic, n)
    values = sorted(v for msgs in got.values() for _, v in msgs)
    assert values == list(range(n))
    # Followers fetch continuously; give them a moment to reach the leader's end.
    deadline = time.monotonic() + 20
    while True:
        logs = {p: partition_logs(cluster, topic, p) for p in range(6)}
        same = all(len(v) == 3 and len(set(v.values())) == 1 for v in logs.values())
        if same or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for p, by_host in logs.items():
        assert len(by_host) == 3, f"partition {p} on hosts {sorted(by_host)}"
        sizes = {h: len(b) for h, b in by_host.items()}
        assert len(set(by_host.values())) == 1, f"partition {p} differs between replicas: {sizes}"
        assert all(s > 0 for s in sizes.values()), sizes


def test_sigterm_moves_leadership_before_stopping(cluster):
    """Kafka's controlled shutdown: a host stopped with SIGTERM has the quorum move every
    leadership it holds to an in-sync replica on another host before it stops, so the
    partitions never wait for broker.session.timeout.ms (9 s here); it exits cleanly."""
    topic = unique("ctl")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(1)})
    admin.create_topics([CKNewTopic(topic, num_partitions=6, replication_factor=3)])[topic].result(timeout=30)
    md = wait_metadata(cluster.bootstrap(1), lambda m: topic in m.topics and all(
        len(p.isrs) == 3 for p in m.topics[topic].partitions.values()))
    led = [p.id for p in md.topics[topic].partitions.values() if p.leader // NODES_PER_HOST == 2]
    assert led, "host 2 leads some partitions"
    stopped_at = time.monotonic()
    assert cluster.hosts[2].stop() == 0
    took = time.monotonic() - stopped_at
    metadata_now = AdminClient({"bootstrap.servers": cluster.bootstrap(1, 3)}).list_topics(timeout=10)
    for p in metadata_now.topics[topic].partitions.values():
        assert p.leader // NODES_PER_HOST in (1, 3), (p.id, p.leader)
        assert all(r // NODES_PER_HOST != 2 for r in p.isrs), (p.id, p.isrs)
    assert took < 9, f"stop took {took:.1f} s"
    acked, errors = produce_numbered(cluster.bootstrap(1, 3), topic, 200)
    assert not errors and len(acked) == 200


def test_idempotent_producers_on_different_hosts_get_distinct_ids(cluster):
    """Producer ids come from cluster-wide blocks: idempotent producers that initialise
    through different hosts, writing to the same partition, never share an id (with ids
    from per-host counters they did, and the broker saw one producer's sequences jump)."""
    topic = unique("pid")
    create_topic(cluster.bootstrap(1), topic, 1)
    wait_metadata(cluster.bootstrap(2), lambda m: topic in m.topics)
    producers = [CKProducer({"bootstrap.servers": cluster.bootstrap(h), "enable.idempotence": True,
                             "acks": "all", "linger.ms": 1}) for h in (1, 2, 3)]
    errors, acked = [], []
    for round_ in range(20):
        for i, p in enumerate(producers):
            p.produce(topic, value=f"{i}:{round_}",
                      on_delivery=lambda err, m: errors.append(err) if err else acked.append(m.value()))
        for p in producers:
            p.poll(0)
    for p in producers:
        assert p.flush(30) == 0
    assert not errors, errors[:3]
    assert len(acked) == 60


def test_group_offsets_survive_killing_the_coordinator_host(cluster):
    """Committed offsets live in the replicated __consumer_offsets topic (RF 3 on three
    hosts): after kill -9 of the host whose shard coordinates the group, the partition's new
    leader on another host coordinates it with every acknowledged commit, and the group
    resumes exactly where it committed."""
    from confluent_kafka import TopicPartition

    topic, group = unique("go"), unique("grp")
    create_topic(cluster.bootstrap(1), topic, 3, rf=3)
    wait_metadata(cluster.bootstrap(1), lambda m: topic in m.topics and all(
        len(p.isrs) == 3 for p in m.topics[topic].partitions.values()))
    n = 600
    acked, errors = produce_numbered(cluster.bootstrap(1), topic, n)
    assert not errors and len(acked) == n

    def consumer(bootstrap):
        return CKConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "auto.offset.reset": "earliest", "enable.auto.commit": False,
                           "session.timeout.ms": 6000})

    first = consumer(cluster.bootstrap())
    seen = []
    try:
        first.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while len(seen) < n // 2 and time.monotonic() < deadline:
            for m in first.consume(num_messages=50, timeout=0.5):
                assert m.error() is None, m.error()
                seen.append((m.partition(), m.offset(), int(m.value())))
                if len(seen) == n // 2:
                    break
        assert len(seen) == n // 2
        committed = first.commit(asynchronous=False)
        want = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        first.close()
    assert sum(want.values()) == n // 2, want

    md = wait_metadata(cluster.bootstrap(1), lambda m: "__consumer_offsets" in m.topics)
    for p in md.topics["__consumer_offsets"].partitions.values():
        assert len({r // NODES_PER_HOST for r in p.replicas}) == 3, p.replicas
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    host = desc.coordinator.id // NODES_PER_HOST
    cluster.hosts[host].kill()
    others = [h for h in cluster.hosts if h != host]

    second = consumer(cluster.bootstrap(*others))
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        deadline = time.monotonic() + TIMEOUT_S
        got = None
        while time.monotonic() < deadline:
            try:
                got = {tp.partition: tp.offset for tp in second.committed(tps, timeout=10)
                       if tp.offset >= 0}
                break
            except KafkaException:
                time.sleep(0.5)
        assert got == want, (got, want)
        second.subscribe([topic])
        rest = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(rest) < n - n // 2 and time.monotonic() < deadline:
            for m in second.consume(num_messages=100, timeout=0.5):
                assert m.error() is None, m.error()
                rest.append(int(m.value()))
    finally:
        second.close()
    values = sorted([v for _, _, v in seen] + rest)
    assert values == list(range(n)), "every message exactly once across the coordinator's death"


def test_transactions_span_hosts(cluster):
    """A transaction's partitions are led by shards of every host: the coordinator writes
    markers on its own host through the router and on the others with WriteTxnMarkers;
    read_committed consumers then see exactly the committed transactions, and the
    transaction state topic is replicated on three hosts."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    topic = unique("txc")
    create_topic(cluster.bootstrap(1), topic, 6, rf=3)
    md = wait_metadata(cluster.bootstrap(1), lambda m: topic in m.topics)
    assert len({p.leader // NODES_PER_HOST for p in md.topics[topic].partitions.values()}) == 3
    p = CKProducer({"bootstrap.servers": cluster.bootstrap(), "transactional.id": unique("tx"),
                    "linger.ms": 1})
    p.init_transactions(TIMEOUT_S)
    for round_, commit in enumerate([True, False, True]):
        p.begin_transaction()
        for i in range(60):
            p.produce(topic, key=f"k{i}", value=f"{round_}:{i}")
        if commit:
            p.commit_transaction(TIMEOUT_S)
        else:
            p.flush(TIMEOUT_S)
            p.abort_transaction(TIMEOUT_S)
    c = CKConsumer({"bootstrap.servers": cluster.bootstrap(), "group.id": unique("g"),
                    "isolation.level": "read_committed", "enable.auto.commit": False})
    got = []
    try:
        c.assign([TopicPartition(topic, i, OFFSET_BEGINNING) for i in range(6)])
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 120 and time.monotonic() < deadline:
            for m in c.consume(num_messages=200, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(m.value().decode())
        for m in c.consume(num_messages=200, timeout=1.0):
            got.append(m.value().decode())
    finally:
        c.close()
    assert sorted(got) == sorted([f"0:{i}" for i in range(60)] + [f"2:{i}" for i in range(60)])
    # KIP-890: each transaction's first batch in each partition was verified with the
    # coordinator (in-process on its host, AddPartitionsToTxn v4 from the others), none
    # refused; every host leads some partitions, so two of them verified remotely.
    from conftest import metric_sum
    hosts = cluster.hosts.values()
    per_host = [metric_sum(b, "osprey_txn_verifications_total") for b in hosts]
    assert sum(per_host) >= 18 and all(n > 0 for n in per_host), per_host
    assert sum(metric_sum(b, "osprey_txn_verifications_refused_total") for b in hosts) == 0
    md = wait_metadata(cluster.bootstrap(1), lambda m: "__transaction_state" in m.topics)
    for part in md.topics["__transaction_state"].partitions.values():
        assert len({r // NODES_PER_HOST for r in part.replicas}) == 3, part.replicas


def test_elect_leaders_moves_leadership_back_to_preferred_replicas(tmp_path):
    """ElectLeaders (kafka-leader-election.sh, AdminClient.elect_leaders): with the
    controller's automatic rebalance off (auto.leader.rebalance.enable=false), leaderships
    that moved away during a controlled shutdown stay away after the host returns; a
    preferred election through confluent-kafka moves them back to each partition's first
    replica, a second one answers ELECTION_NOT_NEEDED per partition, an unknown partition
    UNKNOWN_TOPIC_OR_PARTITION; kafka-python's elections (preferred over every partition,
    unclean for a partition that has a leader) find nothing to do."""
    from confluent_kafka import ElectionType, KafkaError, TopicPartition
    from conftest import Cluster
    from kafka.admin import KafkaAdminClient

    c = Cluster(tmp_path / "cluster", extra=["--auto-leader-rebalance-enable", "false"]).start()
    try:
        topic = unique("elect")
        create_topic(c.bootstrap(1), topic, 6, rf=3)
        full = lambda m: topic in m.topics and all(  # noqa: E731
            len(p.isrs) == 3 for p in m.topics[topic].partitions.values())
        md = wait_metadata(c.bootstrap(1), full)
        preferred = {p.id: p.replicas[0] for p in md.topics[topic].partitions.values()}
        on_2 = [pid for pid, r in preferred.items() if r // NODES_PER_HOST == 2]
        assert on_2, "host 2 is the preferred replica of some partitions"
        assert c.hosts[2].stop() == 0
        c.restart(2)
        md = wait_metadata(c.bootstrap(1), full)
        moved = [p.id for p in md.topics[topic].partitions.values() if p.leader != preferred[p.id]]
        assert sorted(moved) == sorted(on_2), (moved, on_2)
        # Still away a while later: nothing rebalances on its own.
        time.sleep(6)
        md = wait_metadata(c.bootstrap(1), full)
        assert all(md.topics[topic].partitions[pid].leader != preferred[pid] for pid in on_2)

        admin = AdminClient({"bootstrap.servers": c.bootstrap(1)})
        asked = [TopicPartition(topic, pid) for pid in range(6)] + [TopicPartition(topic, 99)]
        results = admin.elect_leaders(ElectionType.PREFERRED, asked).result(timeout=30)
        by_pid = {tp.partition: err for tp, err in results.items()}
        for pid in range(6):
            if pid in on_2:
                assert by_pid[pid] is None, (pid, by_pid[pid])
            else:
                assert by_pid[pid].code() == KafkaError.ELECTION_NOT_NEEDED, by_pid[pid]
        assert by_pid[99].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, by_pid[99]
        md = wait_metadata(c.bootstrap(1), lambda m: full(m) and all(
            p.leader == preferred[p.id] for p in m.topics[topic].partitions.values()))
        # Producers follow the new leaders.
        acked, errors = produce_numbered(c.bootstrap(1), topic, 120)
        assert not errors and len(acked) == 120, errors[:3]

        again = admin.elect_leaders(ElectionType.PREFERRED, asked[:6]).result(timeout=30)
        assert all(e.code() == KafkaError.ELECTION_NOT_NEEDED for e in again.values())

        kp = KafkaAdminClient(bootstrap_servers=c.bootstrap(3), request_timeout_ms=30000)
        try:
            # kafka-python lists every partition of every topic itself.
            resp = kp.elect_leaders(0, topic_partitions=None)  # 0: preferred
            assert resp.error_code == 0, resp
            codes = {p.error_code for r in resp.replica_election_results for p in r.partition_result}
            assert codes == {84}, resp
            unclean = kp.elect_leaders(1, topic_partitions={topic: [0]}, raise_errors=False)
            codes = [p.error_code for r in unclean.replica_election_results
                     for p in r.partition_result]
            assert codes == [84], unclean  # ELECTION_NOT_NEEDED: the partition has a leader
        finally:
            kp.close()
    finally:
        c.kill_all()
        c.save_logs()


def test_describe_metadata_quorum_follows_the_raft_leader(cluster):
    """DescribeQuorum (kafka-metadata-quorum.sh, kafka-python describe_metadata_quorum):
    every host answers with the same Raft leader (the one the logs name), the three voters
    with their controller endpoints, replicated log ends up to the high watermark; after a
    kill -9 of the leader's host a new leader with a higher epoch is reported."""
    from kafka.admin import KafkaAdminClient

    def quorum(host):
        kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(host), request_timeout_ms=20000)
        try:
            return kp.describe_metadata_quorum()
        finally:
            kp.close()

    def part(q):
        topic = q["topics"][0]
        assert topic["topic_name"] == "__cluster_metadata", q
        return topic["partitions"][0]

    leader = cluster.leader()
    answers = [part(quorum(h)) for h in (1, 2, 3)]
    assert {a["leader_id"] for a in answers} == {leader}, answers
    a = answers[0]
    assert a["error"] is None, a
    assert sorted(v["replica_id"] for v in a["current_voters"]) == [1, 2, 3], a
    assert a["high_watermark"] > 0
    assert all(0 < v["log_end_offset"] <= a["high_watermark"] + 1 for v in a["current_voters"]), a
    q = quorum(1)
    ports = {n["node_id"]: n["listeners"][0]["port"] for n in q["nodes"]}
    assert ports == {i: int(cluster.controller[i].rsplit(":", 1)[1]) for i in (1, 2, 3)}, q

    epoch = a["leader_epoch"]
    cluster.hosts[leader].kill()
    others = [h for h in (1, 2, 3) if h != leader]
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            b = part(quorum(others[0]))
            if b["leader_id"] in others and b["leader_epoch"] > epoch:
                break
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        assert time.monotonic() < deadline, "no new quorum leader reported"
        time.sleep(0.5)


def test_partition_reassignment_moves_replicas_between_hosts(cluster):
    """AlterPartitionReassignments / ListPartitionReassignments (kafka-reassign-partitions.sh,
    kafka-python's admin): a one-replica partition moved from its host onto two others
    (replication factor 1 -> 2) is listed as ongoing, completes once both new replicas are
    in sync, is led by the first target replica, keeps every acknowledged message, and its
    old host deletes its files. Bad targets get Kafka's codes."""
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KTP

    topic = unique("move")
    create_topic(cluster.bootstrap(1), topic, 2, rf=1)
    md = wait_metadata(cluster.bootstrap(1), lambda m: topic in m.topics)
    before = md.topics[topic].partitions[0]
    src_host = before.leader // NODES_PER_HOST
    acked, errors = produce_numbered(cluster.bootstrap(1), topic, 400)
    assert not errors and len(acked) == 400
    assert src_host in partition_logs(cluster, topic, 0)
    target = [h * NODES_PER_HOST + 1 for h in (1, 2, 3) if h != src_host]

    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(1), request_timeout_ms=30000)
    try:
        # Per-partition errors come back as Kafka error classes (not raised).
        bad = kp.alter_partition_reassignments(
            {KTP(topic, 1): [target[0], target[0]], KTP(topic, 9): [target[0]]})
        codes = {tp.partition: e.errno for tp, e in bad.items()}
        assert codes == {1: 39, 9: 3}, bad  # INVALID_REPLICA_ASSIGNMENT, UNKNOWN_TOPIC_OR_PARTITION
        ok = kp.alter_partition_reassignments({KTP(topic, 0): target})
        assert ok == {KTP(topic, 0): None}, ok
        # Ongoing (or already done: a small partition catches up fast).
        listed = kp.list_partition_reassignments({topic: [0, 1]})
        for tp, r in listed.items():
            assert tp == KTP(topic, 0), listed
            assert sorted(r["adding_replicas"]) == sorted(target), r
        md = wait_metadata(cluster.bootstrap(1), lambda m: (
            m.topics[topic].partitions[0].replicas == target
            and sorted(m.topics[topic].partitions[0].isrs) == sorted(target)))
        assert md.topics[topic].partitions[0].leader == target[0]
        deadline = time.monotonic() + TIMEOUT_S
        while kp.list_partition_reassignments({topic: [0]}):
            assert time.monotonic() < deadline, "reassignment never finished"
            time.sleep(0.2)
    finally:
        kp.close()
    more, errors = produce_numbered(cluster.bootstrap(1), topic, 200, start=400)
    assert not errors and len(more) == 200
    got = consume_all(cluster.bootstrap(2), topic, 600)
    values = sorted(v for msgs in got.values() for _, v in msgs)
    assert values == list(range(600)), (len(values), values[:5])
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        logs = partition_logs(cluster, topic, 0)
        if set(logs) == {t // NODES_PER_HOST for t in target}:
            break
        assert time.monotonic() < deadline, f"partition 0 files on hosts {sorted(logs)}"
        time.sleep(0.2)
