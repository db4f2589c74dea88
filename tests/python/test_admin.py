"""Admin APIs with real clients: config changes (IncrementalAlterConfigs, AlterConfigs),
DeleteRecords, OffsetDelete and DescribeLogDirs, through confluent-kafka's AdminClient and
kafka-python's KafkaAdminClient."""

import time
import uuid

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, ConfigSource, NewTopic as CKNewTopic)
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient

TIMEOUT_S = 30


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ck_admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(admin, topic, partitions=1):
    for f in admin.create_topics([CKNewTopic(topic, partitions, 1)]).values():
        f.result(TIMEOUT_S)


def described(admin, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([res])[res].result(TIMEOUT_S)


def produce(broker, topic, n, partition=0):
    p = CKProducer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, partition=partition)
    assert p.flush(TIMEOUT_S) == 0


def test_confluent_incremental_alter_configs(broker):
    admin = ck_admin(broker)
    topic = unique("iac")
    create(admin, topic)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "65536", incremental_operation=AlterConfigOpType.SET),
    ])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    cfg = described(admin, topic)
    assert cfg["retention.ms"].value == "123456"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["max.message.bytes"].value == "65536"
    assert cfg["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    # validate_only applies nothing.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], validate_only=True)[res].result(TIMEOUT_S)
    assert described(admin, topic)["retention.ms"].value == "123456"
    # DELETE goes back to the default.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    assert described(admin, topic)["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    # An invalid value: INVALID_CONFIG, nothing applied.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert described(admin, topic)["retention.ms"].value == "123456"
    # Broker configs are not dynamic in osprey: INVALID_REQUEST.
    res = ConfigResource(ConfigResource.Type.BROKER, "0", incremental_configs=[
        ConfigEntry("log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST


def test_confluent_alter_configs(broker):
    admin = ck_admin(broker)
    topic = unique("ac")
    create(admin, topic)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic,
                         set_config={"retention.ms": "7200000", "flush.ms": "500"})
    admin.alter_configs([res])[res].result(TIMEOUT_S)
    cfg = described(admin, topic)
    assert cfg["retention.ms"].value == "7200000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # The legacy API replaces the whole set: flush.ms goes back to its default.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "3600000"})
    admin.alter_configs([res])[res].result(TIMEOUT_S)
    cfg = described(admin, topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["flush.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"cleanup.policy": "bogus"})
    with pytest.raises(KafkaException) as e:
        admin.alter_configs([res])[res].result(TIMEOUT_S)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG


@pytest.mark.parametrize("incremental", [True, False])
def test_kafka_python_alter_configs(broker, incremental):
    topic = unique("kpac")
    create(ck_admin(broker), topic)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        res = KPConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "654321"})
        out = admin.alter_configs([res], incremental=incremental)
        assert out == {"topic": {topic: "OK"}}, out
        assert "654321" == described(ck_admin(broker), topic)["retention.ms"].value
        got = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, topic)])
        assert "retention.ms" in str(got) and "654321" in str(got)
        bad = KPConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "-7"})
        out = admin.alter_configs([bad], incremental=incremental)
        assert "[Error 40] InvalidConfigurationError" in out["topic"][topic], out
        assert "654321" == described(ck_admin(broker), topic)["retention.ms"].value
    finally:
        admin.close()


def test_confluent_delete_records(broker):
    admin = ck_admin(broker)
    topic = unique("dr")
    create(admin, topic)
    produce(broker, topic, 20)
    tp = CKTopicPartition(topic, 0, 7)
    out = admin.delete_records([tp])
    deleted = list(out.values())[0].result(TIMEOUT_S)
    assert deleted.low_watermark == 7
    # Past the high watermark: OFFSET_OUT_OF_RANGE.
    out = admin.delete_records([CKTopicPartition(topic, 0, 21)])
    with pytest.raises(KafkaException) as e:
        list(out.values())[0].result(TIMEOUT_S)
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    # A consumer from the earliest offset starts at the new log start.
    c = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.assign([CKTopicPartition(topic, 0)])
        first = None
        deadline = time.monotonic() + TIMEOUT_S
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                first = m
        assert first is not None and first.offset() == 7 and first.value() == b"v7"
        low, high = c.get_watermark_offsets(CKTopicPartition(topic, 0), TIMEOUT_S)
        assert (low, high) == (7, 20)
    finally:
        c.close()
    # kafka-python: up to the high watermark (-1).
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        out = kp.delete_records({TopicPartition(topic, 0): -1})
        assert out[TopicPartition(topic, 0)]["low_watermark"] == 20, out
    finally:
        kp.close()


def committed_offsets(admin, group, topic):
    from confluent_kafka import ConsumerGroupTopicPartitions
    req = ConsumerGroupTopicPartitions(group)
    res = admin.list_consumer_group_offsets([req])[group].result(TIMEOUT_S)
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic and tp.offset >= 0}


def test_kafka_python_delete_group_offsets(broker):
    admin = ck_admin(broker)
    topic = unique("od")
    create(admin, topic, partitions=2)
    group = unique("g")
    c = CKConsumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                    "enable.auto.commit": False})
    c.commit(offsets=[CKTopicPartition(topic, 0, 3), CKTopicPartition(topic, 1, 4)], asynchronous=False)
    c.close()
    assert committed_offsets(admin, group, topic) == {0: 3, 1: 4}
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        out = kp.delete_group_offsets(group, [TopicPartition(topic, 0)])
        assert out[TopicPartition(topic, 0)].__name__ == "NoError", out
        assert committed_offsets(admin, group, topic) == {1: 4}
        # A live member subscribed to the topic: GROUP_SUBSCRIBED_TO_TOPIC.
        live = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not live.assignment() and time.monotonic() < deadline:
                live.poll(timeout_ms=200)
            assert live.assignment()
            out = kp.delete_group_offsets(group, [TopicPartition(topic, 1)])
            assert out[TopicPartition(topic, 1)].__name__ == "GroupSubscribedToTopicError", out
        finally:
            live.close()
        assert committed_offsets(admin, group, topic) == {1: 4}
    finally:
        kp.close()


def test_kafka_python_describe_log_dirs(broker):
    admin = ck_admin(broker)
    topic = unique("ld")
    create(admin, topic, partitions=2)
    produce(broker, topic, 10, partition=0)
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        out = kp.describe_log_dirs()
    finally:
        kp.close()
    # One entry per node (shard), each listing the replicas that node holds.
    sizes = {}
    for node in out:
        assert len(node["log_dirs"]) == 1, out
        d = node["log_dirs"][0]
        assert d["error_code"] == 0 and d["log_dir"] == str(broker.data_dir.resolve()), out
        assert d["total_bytes"] > 0 and d["usable_bytes"] > 0
        for t in d["topics"]:
            if t["name"] == topic:
                for p in t["partitions"]:
                    assert p["partition_index"] not in sizes, "listed by two nodes"
                    sizes[p["partition_index"]] = p["partition_size"]
    assert sorted(sizes) == [0, 1], out
    assert sizes[0] > 0, out


def test_delete_records_reaches_the_followers(tmp_path):
    """RF=3 over three hosts: the followers raise their log start from the leader's (durably,
    the checkpoint file in each replica's directory), so after the leader's host is killed
    the new leader's earliest offset is still the one DeleteRecords set."""
    import struct

    from conftest import Cluster

    cluster = Cluster(tmp_path / "cluster", hosts=3, cores=1,
                      extra=["--broker-session-timeout-ms", "3000"]).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
        topic = unique("drr")
        admin.create_topics([CKNewTopic(topic, 1, 3)])[topic].result(TIMEOUT_S)
        p = CKProducer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
        for i in range(20):
            p.produce(topic, value=b"v%d" % i, partition=0)
        assert p.flush(TIMEOUT_S) == 0
        out = admin.delete_records([CKTopicPartition(topic, 0, 12)])
        assert list(out.values())[0].result(TIMEOUT_S).low_watermark == 12

        def starts():
            got = {}
            for h, b in cluster.hosts.items():
                f = b.data_dir / "topics" / f"{topic}-0" / "log-start-offset.checkpoint"
                if f.exists():
                    got[h] = struct.unpack("<q", f.read_bytes()[:8])[0]
            return got

        deadline = time.monotonic() + TIMEOUT_S
        while starts() != {1: 12, 2: 12, 3: 12} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert starts() == {1: 12, 2: 12, 3: 12}
        md = admin.list_topics(topic, timeout=10)
        leader_host = md.topics[topic].partitions[0].leader // 1024
        cluster.hosts[leader_host].kill()
        others = [h for h in cluster.hosts if h != leader_host]
        # A fresh admin client (fresh metadata) asks the new leader for the earliest offset.
        from confluent_kafka.admin import OffsetSpec
        deadline = time.monotonic() + 60
        low = None
        while time.monotonic() < deadline:
            fresh = AdminClient({"bootstrap.servers": cluster.bootstrap(*others)})
            try:
                fut = fresh.list_offsets({CKTopicPartition(topic, 0): OffsetSpec.earliest()},
                                         request_timeout=5)
                low = list(fut.values())[0].result(10).offset
                if low == 12:
                    break
            except KafkaException:
                pass
            time.sleep(0.5)
        assert low == 12
    finally:
        cluster.kill_all()
        cluster.save_logs()


def test_kafka_python_describe_topic_partitions(broker):
    """kafka-python's describe_topic_partitions (DescribeTopicPartitions, KIP-966) pages
    through a topic's partitions with the cursor the broker returns, and reports leaders
    and an unknown topic's error as describe_topics does."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        topic = unique("dtp")
        create(ck_admin(broker), topic, partitions=5)
        leaders = {p["partition_index"]: p["leader_id"]
                   for p in admin.describe_topics([topic])[0]["partitions"]}
        seen, cursor, pages = [], None, 0
        while True:
            page = admin.describe_topic_partitions([topic], response_partition_limit=2, cursor=cursor)
            pages += 1
            (t,) = page["topics"]
            assert t["name"] == topic and t["error_code"] == 0
            assert len(t["partitions"]) <= 2
            for p in t["partitions"]:
                assert p["leader_id"] == leaders[p["partition_index"]]
                seen.append(p["partition_index"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert cursor["topic_name"] == topic
        assert seen == [0, 1, 2, 3, 4] and pages == 3
        missing = admin.describe_topic_partitions([unique("missing")])["topics"]
        assert [t["error_code"] for t in missing] == [3]
    finally:
        admin.close()
