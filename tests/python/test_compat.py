"""Calls every application makes that once broke on osprey's strictness, with the real clients."""

import time
import uuid

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka.admin import AdminClient, NewTopic as CKNewTopic

CONSUME_TIMEOUT_S = 60


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_confluent_list_topics_and_regex_subscription(broker):
    """librdkafka >= 2.1 sends all-topics Metadata v12 with 3 bytes after the body; Kafka
    ignores them, so AdminClient.list_topics(), Consumer.list_topics() and regex
    subscriptions must work and the connection must stay open."""
    prefix = unique("orders")
    topics = [f"{prefix}-{i}" for i in range(3)]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([CKNewTopic(t, num_partitions=2, replication_factor=1) for t in topics]).values():
        f.result(timeout=30)

    md = admin.list_topics(timeout=15)
    assert set(topics) <= set(md.topics), sorted(md.topics)
    for t in topics:
        assert len(md.topics[t].partitions) == 2
        assert md.topics[t].error is None
    assert len(md.brokers) >= 1

    p = CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    for i, t in enumerate(topics):
        for j in range(10):
            p.produce(t, key=f"k{j}", value=f"{t}:{j}")
    assert p.flush(30) == 0

    consumer = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("regex"),
                           "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    try:
        cmd = consumer.list_topics(timeout=15)
        assert set(topics) <= set(cmd.topics)
        consumer.subscribe([f"^{prefix}-.*"])
        got = set()
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(got) < 30 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.add(m.value().decode())
        assert got == {f"{t}:{j}" for t in topics for j in range(10)}
    finally:
        consumer.close()
    assert not any("trailing bytes" in line for line in broker.log_lines), broker.log_lines[-5:]


def retry_while_loading(call, timeout_s=30):
    """Calls `call` again while the group coordinators answer COORDINATOR_LOAD_IN_PROGRESS
    (right after the broker starts), as Kafka's own clients retry it."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.COORDINATOR_LOAD_IN_PROGRESS or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_confluent_authorized_operations(broker):
    """With no authorizer Kafka answers every operation a resource supports; AdminClient's
    describe_cluster / describe_topics / describe_consumer_groups with
    include_authorized_operations=True must see them, not an empty list."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicCollection, TopicPartition
    from confluent_kafka.admin import AclOperation

    topic = unique("authz")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([CKNewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        f.result(timeout=30)

    cluster = admin.describe_cluster(include_authorized_operations=True, request_timeout=15).result(timeout=30)
    md = admin.list_topics(timeout=15)
    assert cluster.cluster_id and cluster.cluster_id == md.cluster_id
    assert len(cluster.nodes) == broker.cores
    assert set(cluster.authorized_operations) == {
        AclOperation.CREATE, AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CLUSTER_ACTION,
        AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE}

    futures = admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True,
                                    request_timeout=15)
    desc = futures[topic].result(timeout=30)
    assert set(desc.authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}

    group = unique("authz-g")

    def describe_group():
        # Creates the group (a commit with generation -1), then describes it; both answer
        # COORDINATOR_LOAD_IN_PROGRESS while the coordinators load after start-up.
        res = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])])[group].result(timeout=30)
        for tp in res.topic_partitions:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return admin.describe_consumer_groups([group], include_authorized_operations=True,
                                              request_timeout=15)[group].result(timeout=30)

    g = retry_while_loading(describe_group)
    assert set(g.authorized_operations) == {
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
        AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}


def test_offsets_for_times_answers_the_record_not_the_batch(broker):
    """Records produced in one batch with their own timestamps: offsets_for_times (ListOffsets
    by timestamp) answers the first record at or after the target, as Kafka does, also when
    the batch is compressed."""
    from confluent_kafka import TopicPartition
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    for codec in ("none", "zstd"):
        topic = unique(f"times-{codec}")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for f in admin.create_topics([CKNewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            f.result(timeout=30)
        # linger long enough that the ten records go out as one batch.
        p = CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "compression.type": codec})
        base = 1_700_000_000_000
        for i in range(10):
            p.produce(topic, value=f"v{i}", partition=0, timestamp=base + 10 * i)
        assert p.flush(30) == 0

        kc = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        try:
            tp = KTopicPartition(topic, 0)
            got = kc.offsets_for_times({tp: base + 45})[tp]
            assert (got.offset, got.timestamp) == (5, base + 50), codec
        finally:
            kc.close()

        c = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("times")})
        try:
            [r] = c.offsets_for_times([TopicPartition(topic, 0, base + 71)], timeout=15)
            assert r.offset == 8, codec
        finally:
            c.close()


def test_log_append_time_topic(broker):
    """A topic created with message.timestamp.type=LogAppendTime: the broker stamps its own
    time and consumers see timestamp type LogAppendTime (kafka-python and confluent-kafka)."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
    from kafka import KafkaConsumer

    topic = unique("lat")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    new = CKNewTopic(topic, num_partitions=1, replication_factor=1,
                     config={"message.timestamp.type": "LogAppendTime"})
    for f in admin.create_topics([new]).values():
        f.result(timeout=30)

    old = 1_000_000_000_000  # 2001: far from the broker's clock
    before = int(time.time() * 1000)
    p = CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    delivered = []
    for i in range(5):
        p.produce(topic, value=f"v{i}", timestamp=old + i,
                  on_delivery=lambda err, msg: delivered.append((err, msg.timestamp())))
    assert p.flush(30) == 0
    after = int(time.time() * 1000)
    assert all(err is None for err, _ in delivered), delivered
    for _, (ts_type, ts) in delivered:
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, delivered

    c = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("lat"),
                    "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(got) < 5 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append(m.timestamp())
        assert len(got) == 5
        for ts_type, ts in got:
            assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, got
    finally:
        c.close()

    kc = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                       consumer_timeout_ms=10_000)
    try:
        records = [r for _, r in zip(range(5), kc)]
        assert len(records) == 5
        for r in records:
            assert r.timestamp_type == 1 and before <= r.timestamp <= after, r
    finally:
        kc.close()


def test_describe_group_configs_and_unknown_topic_offsets(broker):
    """DescribeConfigs for a group resource answers Kafka 4's consumer-group configs (kafka-python);
    altering a group's offsets for a topic that does not exist fails per partition with
    UNKNOWN_TOPIC_OR_PARTITION (confluent-kafka's alter_consumer_group_offsets)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        res = ka.describe_configs([ConfigResource(ConfigResourceType.GROUP, "some-group")], config_filter="all")
        configs = res["group"]["some-group"]
        assert set(configs) == {"consumer.session.timeout.ms", "consumer.heartbeat.interval.ms"}, configs
    finally:
        ka.close()

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    group = unique("alter")
    missing = unique("missing")
    deadline = time.monotonic() + 30
    while True:
        fut = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(missing, 0, 5)])])[group]
        try:
            result = fut.result(timeout=30)
            errors = [tp.error for tp in result.topic_partitions]
        except KafkaException as e:
            errors = [e.args[0]]
        loading = any(e is not None and e.code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS for e in errors)
        if not loading or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert errors and all(e is not None and e.code() == KafkaError.UNKNOWN_TOPIC_OR_PART for e in errors), errors
