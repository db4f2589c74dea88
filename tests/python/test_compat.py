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


def test_confluent_authorized_operations(broker):
    """With no authorizer Kafka answers every operation a resource supports; AdminClient's
    describe_cluster / describe_topics / describe_consumer_groups with
    include_authorized_operations=True must see them, not an empty list."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection, TopicPartition
    from confluent_kafka.admin import AclOperation

    topic = unique("authz")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([CKNewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        f.result(timeout=30)

    cluster = admin.describe_cluster(include_authorized_operations=True, request_timeout=15).result(timeout=30)
    assert cluster.cluster_id == "osprey-single-node"
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
    admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])])[group].result(timeout=30)
    g = admin.describe_consumer_groups([group], include_authorized_operations=True,
                                       request_timeout=15)[group].result(timeout=30)
    assert {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE} <= set(g.authorized_operations)
