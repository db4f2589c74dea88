"""Admin APIs with real clients: config changes (IncrementalAlterConfigs, AlterConfigs)
through confluent-kafka's AdminClient and kafka-python's KafkaAdminClient."""

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
