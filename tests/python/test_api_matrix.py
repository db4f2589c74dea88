"""The client-API matrix: for each client family (confluent-kafka, kafka-python, aiokafka,
kcat) every call a typical application makes, against one broker this module starts, one
test case per (client, call) so the output has one line per call. Each case checks the
call's result, not only that it returned. The README's "Client API matrix" is this table.

The shared topic DATA has 3 partitions of 10 records each, record i of a partition stamped
BASE_TS + i seconds. Cases that change state (delete records, delete groups, configs,
transactions) work on topics and groups of their own."""

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupState, TopicCollection
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTP
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic as CKNewTopic)
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewTopic as KPNewTopic
from kafka.structs import OffsetAndMetadata

from conftest import Broker, wait_until

TIMEOUT_S = 20
DATA = "mx-data"
PARTITIONS = 3
PER_PARTITION = 10
BASE_TS = 1_700_000_000_000
CASES = {}


def case(client, call):
    def register(fn):
        CASES[(client, call)] = fn
        return fn
    return register


def unique(prefix):
    return f"mx-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("matrix") / "data", cores=2,
               extra=["--group-initial-rebalance-delay-ms", "100"]).start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([CKNewTopic(DATA, PARTITIONS, 1)])[DATA].result(TIMEOUT_S)
    p = CKProducer({"bootstrap.servers": b.bootstrap, "linger.ms": 1})
    for part in range(PARTITIONS):
        for i in range(PER_PARTITION):
            p.produce(DATA, partition=part, value=f"{part}:{i}".encode(), timestamp=BASE_TS + i * 1000)
    assert p.flush(TIMEOUT_S) == 0
    yield b
    b.kill()


def all_values():
    return sorted(f"{p}:{i}" for p in range(PARTITIONS) for i in range(PER_PARTITION))


def ck_admin(env):
    """One AdminClient for the module: futures of a collected client fail with _DESTROY."""
    if getattr(env, "ck_admin", None) is None:
        env.ck_admin = AdminClient({"bootstrap.servers": env.bootstrap})
    return env.ck_admin


def ck_create(env, topic, partitions=1, records=0):
    ck_admin(env).create_topics([CKNewTopic(topic, partitions, 1)])[topic].result(TIMEOUT_S)
    if records:
        p = CKProducer({"bootstrap.servers": env.bootstrap, "linger.ms": 1})
        for i in range(records):
            p.produce(topic, partition=0, value=f"v{i}".encode())
        assert p.flush(TIMEOUT_S) == 0


def ck_topics(env):
    return set(ck_admin(env).list_topics(timeout=TIMEOUT_S).topics)


def ck_commit(env, group, offsets):
    """A group that only has committed offsets (state Empty)."""
    c = CKConsumer({"bootstrap.servers": env.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[CKTP(t, p, o) for t, p, o in offsets], asynchronous=False)
    c.close()


def ck_watermarks(env, topic, partition):
    c = CKConsumer({"bootstrap.servers": env.bootstrap, "group.id": unique("wm")})
    try:
        return c.get_watermark_offsets(CKTP(topic, partition), timeout=TIMEOUT_S)
    finally:
        c.close()


def ck_consumer(env, **conf):
    return CKConsumer({"bootstrap.servers": env.bootstrap, "group.id": unique("g"),
                       "enable.auto.commit": False, "auto.offset.reset": "earliest",
                       "fetch.wait.max.ms": 50, **conf})


def ck_drain(c, want, timeout_s=TIMEOUT_S):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for m in c.consume(num_messages=100, timeout=0.2):
            assert m.error() is None, m.error()
            got.append(m)
    return got


def ck_group_ids(env):
    res = ck_admin(env).list_consumer_groups().result(TIMEOUT_S)
    return {g.group_id for g in res.valid}


# ---------------------------------------------------------------- confluent-kafka

@case("confluent-kafka", "list topics")
def _(env):
    md = ck_admin(env).list_topics(timeout=TIMEOUT_S)
    assert len(md.topics[DATA].partitions) == PARTITIONS


@case("confluent-kafka", "describe topics")
def _(env):
    d = ck_admin(env).describe_topics(TopicCollection([DATA]))[DATA].result(TIMEOUT_S)
    assert d.name == DATA and len(d.partitions) == PARTITIONS
    assert all(p.leader is not None for p in d.partitions)


@case("confluent-kafka", "create topic")
def _(env):
    t = unique("ck-create")
    ck_create(env, t, partitions=2)
    assert len(ck_admin(env).list_topics(t, timeout=TIMEOUT_S).topics[t].partitions) == 2


@case("confluent-kafka", "delete topic")
def _(env):
    t = unique("ck-delete")
    ck_create(env, t)
    ck_admin(env).delete_topics([t])[t].result(TIMEOUT_S)
    assert wait_until(lambda: t not in ck_topics(env))


@case("confluent-kafka", "alter configs")
def _(env):
    t = unique("ck-alter")
    ck_create(env, t)
    admin = ck_admin(env)
    res = ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    got = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)])
    assert list(got.values())[0].result(TIMEOUT_S)["retention.ms"].value == "123456"


@case("confluent-kafka", "describe configs")
def _(env):
    res = ConfigResource(ConfigResource.Type.TOPIC, DATA)
    cfg = ck_admin(env).describe_configs([res])[res].result(TIMEOUT_S)
    assert cfg["cleanup.policy"].value == "delete"


@case("confluent-kafka", "regex subscribe")
def _(env):
    c = ck_consumer(env)
    try:
        c.subscribe(["^mx-dat.*"])
        got = ck_drain(c, PARTITIONS * PER_PARTITION)
        assert sorted(m.value().decode() for m in got) == all_values()
    finally:
        c.close()


@case("confluent-kafka", "pause/resume")
def _(env):
    c = ck_consumer(env)
    try:
        tps = [CKTP(DATA, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        c.assign(tps)
        c.pause([CKTP(DATA, 0)])
        got = ck_drain(c, 2 * PER_PARTITION)
        got += ck_drain(c, 1, timeout_s=0.5)
        assert {m.partition() for m in got} == {1, 2} and len(got) == 2 * PER_PARTITION
        c.resume([CKTP(DATA, 0)])
        got = ck_drain(c, PER_PARTITION)
        assert [m.offset() for m in got] == list(range(PER_PARTITION))
        assert {m.partition() for m in got} == {0}
    finally:
        c.close()


@case("confluent-kafka", "seek")
def _(env):
    c = ck_consumer(env)
    try:
        c.assign([CKTP(DATA, 1, 0)])
        assert ck_drain(c, 1)[0].offset() == 0
        c.seek(CKTP(DATA, 1, 7))
        assert ck_drain(c, 1)[0].offset() == 7
    finally:
        c.close()


@case("confluent-kafka", "offsets_for_times")
def _(env):
    c = ck_consumer(env)
    try:
        (r,) = c.offsets_for_times([CKTP(DATA, 2, BASE_TS + 3000)], timeout=TIMEOUT_S)
        assert r.offset == 3
    finally:
        c.close()


@case("confluent-kafka", "committed")
def _(env):
    c = ck_consumer(env)
    try:
        c.commit(offsets=[CKTP(DATA, 0, 6)], asynchronous=False)
        (r,) = c.committed([CKTP(DATA, 0)], timeout=TIMEOUT_S)
        assert r.offset == 6
    finally:
        c.close()


@case("confluent-kafka", "position")
def _(env):
    c = ck_consumer(env)
    try:
        c.assign([CKTP(DATA, 0, 0)])
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 4 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None:
                got.append(m)
        (r,) = c.position([CKTP(DATA, 0)])
        assert r.offset == 4
    finally:
        c.close()


@case("confluent-kafka", "watermarks")
def _(env):
    assert ck_watermarks(env, DATA, 1) == (0, PER_PARTITION)


@case("confluent-kafka", "list groups")
def _(env):
    g = unique("ck-list")
    ck_commit(env, g, [(DATA, 0, 1)])
    assert g in ck_group_ids(env)


@case("confluent-kafka", "describe groups")
def _(env):
    g = unique("ck-describe")
    ck_commit(env, g, [(DATA, 0, 1)])
    d = ck_admin(env).describe_consumer_groups([g])[g].result(TIMEOUT_S)
    assert d.group_id == g and d.state == ConsumerGroupState.EMPTY and d.members == []


@case("confluent-kafka", "delete groups")
def _(env):
    g = unique("ck-delete")
    ck_commit(env, g, [(DATA, 0, 1)])
    ck_admin(env).delete_consumer_groups([g])[g].result(TIMEOUT_S)
    assert g not in ck_group_ids(env)


@case("confluent-kafka", "delete records")
def _(env):
    t = unique("ck-dr")
    ck_create(env, t, records=10)
    (f,) = ck_admin(env).delete_records([CKTP(t, 0, 4)]).values()
    assert f.result(TIMEOUT_S).low_watermark == 4
    assert ck_watermarks(env, t, 0) == (4, 10)


@case("confluent-kafka", "transactions")
def _(env):
    t = unique("ck-tx")
    ck_create(env, t)
    p = CKProducer({"bootstrap.servers": env.bootstrap, "transactional.id": unique("txid"), "linger.ms": 1})
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    for i in range(3):
        p.produce(t, value=f"c{i}".encode())
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    p.produce(t, value=b"aborted")
    p.abort_transaction(TIMEOUT_S)
    c = ck_consumer(env, **{"isolation.level": "read_committed"})
    try:
        c.assign([CKTP(t, 0, OFFSET_BEGINNING)])
        got = ck_drain(c, 3) + ck_drain(c, 1, timeout_s=0.5)
        assert [m.value() for m in got] == [b"c0", b"c1", b"c2"]
    finally:
        c.close()


# ---------------------------------------------------------------- kafka-python

def kp_admin(env):
    return KafkaAdminClient(bootstrap_servers=env.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)


def kp_consumer(env, **conf):
    conf.setdefault("group_id", None)
    return KafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=50, **conf)


def kp_drain(c, want, timeout_s=TIMEOUT_S):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for msgs in c.poll(timeout_ms=200).values():
            got.extend(msgs)
    return got


def kp_run(env, fn):
    a = kp_admin(env)
    try:
        return fn(a)
    finally:
        a.close()


@case("kafka-python", "list topics")
def _(env):
    assert DATA in kp_run(env, lambda a: a.list_topics())


@case("kafka-python", "describe topics")
def _(env):
    (d,) = kp_run(env, lambda a: a.describe_topics([DATA]))
    assert d["name"] == DATA and d["error_code"] == 0 and len(d["partitions"]) == PARTITIONS


@case("kafka-python", "create topic")
def _(env):
    t = unique("kp-create")
    kp_run(env, lambda a: a.create_topics([KPNewTopic(t, 2, 1)]))
    assert len(ck_admin(env).list_topics(t, timeout=TIMEOUT_S).topics[t].partitions) == 2


@case("kafka-python", "delete topic")
def _(env):
    t = unique("kp-delete")
    ck_create(env, t)
    kp_run(env, lambda a: a.delete_topics([t]))
    assert wait_until(lambda: t not in ck_topics(env))


@case("kafka-python", "alter configs")
def _(env):
    t = unique("kp-alter")
    ck_create(env, t)
    res = KPConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": "654321"})
    assert kp_run(env, lambda a: a.alter_configs([res], incremental=True)) == {"topic": {t: "OK"}}
    got = ck_admin(env).describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)])
    assert list(got.values())[0].result(TIMEOUT_S)["retention.ms"].value == "654321"


@case("kafka-python", "describe configs")
def _(env):
    got = kp_run(env, lambda a: a.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, DATA)],
                                                   config_filter="all"))
    assert "cleanup.policy" in str(got) and "'delete'" in str(got)


@case("kafka-python", "regex subscribe")
def _(env):
    c = kp_consumer(env, group_id=unique("kp-regex"))
    try:
        c.subscribe(pattern="^mx-dat.*")
        got = kp_drain(c, PARTITIONS * PER_PARTITION)
        assert sorted(m.value.decode() for m in got) == all_values()
    finally:
        c.close()


@case("kafka-python", "pause/resume")
def _(env):
    c = kp_consumer(env)
    try:
        tps = [KTP(DATA, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning()
        c.pause(tps[0])
        got = kp_drain(c, 2 * PER_PARTITION) + kp_drain(c, 1, timeout_s=0.5)
        assert {m.partition for m in got} == {1, 2} and len(got) == 2 * PER_PARTITION
        c.resume(tps[0])
        got = kp_drain(c, PER_PARTITION)
        assert [(m.partition, m.offset) for m in got] == [(0, i) for i in range(PER_PARTITION)]
    finally:
        c.close()


@case("kafka-python", "seek")
def _(env):
    c = kp_consumer(env)
    try:
        tp = KTP(DATA, 1)
        c.assign([tp])
        c.seek(tp, 7)
        assert kp_drain(c, 1)[0].offset == 7
    finally:
        c.close()


@case("kafka-python", "offsets_for_times")
def _(env):
    c = kp_consumer(env)
    try:
        r = c.offsets_for_times({KTP(DATA, 2): BASE_TS + 3000})
        assert r[KTP(DATA, 2)].offset == 3
    finally:
        c.close()


@case("kafka-python", "committed")
def _(env):
    c = kp_consumer(env, group_id=unique("kp-commit"))
    try:
        tp = KTP(DATA, 0)
        c.commit({tp: OffsetAndMetadata(6, "", -1)})
        assert c.committed(tp) == 6
    finally:
        c.close()


@case("kafka-python", "position")
def _(env):
    c = kp_consumer(env, max_poll_records=4)
    try:
        tp = KTP(DATA, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got = kp_drain(c, 4)
        assert len(got) == 4 and c.position(tp) == 4
    finally:
        c.close()


@case("kafka-python", "watermarks")
def _(env):
    c = kp_consumer(env)
    try:
        tp = KTP(DATA, 1)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: PER_PARTITION}
    finally:
        c.close()


@case("kafka-python", "list groups")
def _(env):
    g = unique("kp-list")
    ck_commit(env, g, [(DATA, 0, 1)])
    listed = kp_run(env, lambda a: a.list_groups())
    assert {"group_id": g, "group_state": "Empty"}.items() <= next(x for x in listed if x["group_id"] == g).items()


@case("kafka-python", "describe groups")
def _(env):
    g = unique("kp-describe")
    ck_commit(env, g, [(DATA, 0, 1)])
    d = kp_run(env, lambda a: a.describe_groups([g]))[g]
    assert d["error"] is None and d["group_state"] == "Empty" and d["members"] == []


@case("kafka-python", "delete groups")
def _(env):
    g = unique("kp-delete")
    ck_commit(env, g, [(DATA, 0, 1)])
    out = kp_run(env, lambda a: a.delete_groups([g]))
    assert out == {g: "OK"}, out
    assert g not in ck_group_ids(env)


@case("kafka-python", "delete records")
def _(env):
    t = unique("kp-dr")
    ck_create(env, t, records=10)
    kp_run(env, lambda a: a.delete_records({KTP(t, 0): 4}))
    assert ck_watermarks(env, t, 0) == (4, 10)


@case("kafka-python", "transactions")
def _(env):
    t = unique("kp-tx")
    ck_create(env, t)
    p = KafkaProducer(bootstrap_servers=env.bootstrap, transactional_id=unique("txid"))
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(t, value=f"c{i}".encode())
        p.commit_transaction()
        p.begin_transaction()
        p.send(t, value=b"aborted")
        p.flush()
        p.abort_transaction()
    finally:
        p.close()
    c = kp_consumer(env, isolation_level="read_committed")
    try:
        c.assign([KTP(t, 0)])
        c.seek(KTP(t, 0), 0)
        got = kp_drain(c, 3) + kp_drain(c, 1, timeout_s=0.5)
        assert [m.value for m in got] == [b"c0", b"c1", b"c2"]
    finally:
        c.close()


# ---------------------------------------------------------------- aiokafka

def aio(coro_fn):
    """Runs an async case in its own event loop."""
    return lambda env: asyncio.run(coro_fn(env))


async def aio_admin_call(env, fn):
    from aiokafka.admin import AIOKafkaAdminClient
    a = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    await a.start()
    try:
        return await fn(a)
    finally:
        await a.close()


async def aio_consumer(env, **conf):
    from aiokafka import AIOKafkaConsumer
    c = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=50, **conf)
    await c.start()
    return c


async def aio_drain(c, want, timeout_s=TIMEOUT_S):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for msgs in (await c.getmany(timeout_ms=200)).values():
            got.extend(msgs)
    return got


@case("aiokafka", "list topics")
@aio
async def _(env):
    assert DATA in await aio_admin_call(env, lambda a: a.list_topics())


@case("aiokafka", "describe topics")
@aio
async def _(env):
    (d,) = await aio_admin_call(env, lambda a: a.describe_topics([DATA]))
    assert d["topic"] == DATA and d["error_code"] == 0 and len(d["partitions"]) == PARTITIONS


@case("aiokafka", "create topic")
@aio
async def _(env):
    from aiokafka.admin import NewTopic
    t = unique("aio-create")
    await aio_admin_call(env, lambda a: a.create_topics([NewTopic(t, 2, 1)]))
    assert len(ck_admin(env).list_topics(t, timeout=TIMEOUT_S).topics[t].partitions) == 2


@case("aiokafka", "delete topic")
@aio
async def _(env):
    t = unique("aio-delete")
    ck_create(env, t)
    await aio_admin_call(env, lambda a: a.delete_topics([t]))
    assert wait_until(lambda: t not in ck_topics(env))


@case("aiokafka", "alter configs")
@aio
async def _(env):
    from aiokafka.admin.config_resource import ConfigResource as AIOConfigResource
    from aiokafka.admin.config_resource import ConfigResourceType as AIOType
    t = unique("aio-alter")
    ck_create(env, t)
    res = AIOConfigResource(AIOType.TOPIC, t, configs={"retention.ms": "777777"})
    out = await aio_admin_call(env, lambda a: a.alter_configs([res]))
    # Each resource answered as (error code, message, type, name).
    assert [r[0] for resp in out for r in resp.resources] == [0], out
    got = ck_admin(env).describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)])
    assert list(got.values())[0].result(TIMEOUT_S)["retention.ms"].value == "777777"


@case("aiokafka", "describe configs")
@aio
async def _(env):
    from aiokafka.admin.config_resource import ConfigResource as AIOConfigResource
    from aiokafka.admin.config_resource import ConfigResourceType as AIOType
    (resp,) = await aio_admin_call(env, lambda a: a.describe_configs([AIOConfigResource(AIOType.TOPIC, DATA)]))
    (res,) = resp.resources
    assert res[0] == 0  # error code
    configs = {e[0]: e[1] for e in res[4]}
    assert configs["cleanup.policy"] == "delete"


@case("aiokafka", "regex subscribe")
@aio
async def _(env):
    c = await aio_consumer(env, group_id=unique("aio-regex"))
    try:
        c.subscribe(pattern="^mx-dat.*")
        got = await aio_drain(c, PARTITIONS * PER_PARTITION)
        assert sorted(m.value.decode() for m in got) == all_values()
    finally:
        await c.stop()


@case("aiokafka", "pause/resume")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env)
    try:
        tps = [ATP(DATA, p) for p in range(PARTITIONS)]
        c.assign(tps)
        await c.seek_to_beginning()
        c.pause(tps[0])
        got = await aio_drain(c, 2 * PER_PARTITION) + await aio_drain(c, 1, timeout_s=0.5)
        assert {m.partition for m in got} == {1, 2} and len(got) == 2 * PER_PARTITION
        c.resume(tps[0])
        got = await aio_drain(c, PER_PARTITION)
        assert [(m.partition, m.offset) for m in got] == [(0, i) for i in range(PER_PARTITION)]
    finally:
        await c.stop()


@case("aiokafka", "seek")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env)
    try:
        tp = ATP(DATA, 1)
        c.assign([tp])
        c.seek(tp, 7)
        assert (await aio_drain(c, 1))[0].offset == 7
    finally:
        await c.stop()


@case("aiokafka", "offsets_for_times")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env)
    try:
        r = await c.offsets_for_times({ATP(DATA, 2): BASE_TS + 3000})
        assert r[ATP(DATA, 2)].offset == 3
    finally:
        await c.stop()


@case("aiokafka", "committed")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env, group_id=unique("aio-commit"))
    try:
        tp = ATP(DATA, 0)
        c.assign([tp])
        await c.commit({tp: 6})
        assert await c.committed(tp) == 6
    finally:
        await c.stop()


@case("aiokafka", "position")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env)
    try:
        tp = ATP(DATA, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got = (await c.getmany(tp, timeout_ms=TIMEOUT_S * 1000, max_records=4))[tp]
        assert len(got) == 4 and await c.position(tp) == 4
    finally:
        await c.stop()


@case("aiokafka", "watermarks")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    c = await aio_consumer(env)
    try:
        tp = ATP(DATA, 1)
        assert await c.beginning_offsets([tp]) == {tp: 0}
        assert await c.end_offsets([tp]) == {tp: PER_PARTITION}
    finally:
        await c.stop()


@case("aiokafka", "list groups")
@aio
async def _(env):
    g = unique("aio-list")
    ck_commit(env, g, [(DATA, 0, 1)])
    groups = await aio_admin_call(env, lambda a: a.list_consumer_groups())
    assert g in {x[0] for x in groups}


@case("aiokafka", "describe groups")
@aio
async def _(env):
    g = unique("aio-describe")
    ck_commit(env, g, [(DATA, 0, 1)])
    (resp,) = await aio_admin_call(env, lambda a: a.describe_consumer_groups([g]))
    (grp,) = resp.groups
    assert grp[0] == 0 and grp[1] == g and grp[2] == "Empty"


@case("aiokafka", "delete records")
@aio
async def _(env):
    from aiokafka import TopicPartition as ATP
    from aiokafka.admin import RecordsToDelete
    t = unique("aio-dr")
    ck_create(env, t, records=10)
    out = await aio_admin_call(env, lambda a: a.delete_records({ATP(t, 0): RecordsToDelete(4)}))
    assert out == {ATP(t, 0): 4}
    assert ck_watermarks(env, t, 0) == (4, 10)


@case("aiokafka", "transactions")
@aio
async def _(env):
    from aiokafka import AIOKafkaProducer
    from aiokafka import TopicPartition as ATP
    t = unique("aio-tx")
    ck_create(env, t)
    p = AIOKafkaProducer(bootstrap_servers=env.bootstrap, transactional_id=unique("txid"))
    await p.start()
    try:
        async with p.transaction():
            for i in range(3):
                await p.send(t, value=f"c{i}".encode(), partition=0)
        await p.begin_transaction()
        await p.send_and_wait(t, value=b"aborted", partition=0)
        await p.abort_transaction()
    finally:
        await p.stop()
    c = await aio_consumer(env, isolation_level="read_committed")
    try:
        c.assign([ATP(t, 0)])
        c.seek(ATP(t, 0), 0)
        got = await aio_drain(c, 3) + await aio_drain(c, 1, timeout_s=0.5)
        assert [m.value for m in got] == [b"c0", b"c1", b"c2"]
    finally:
        await c.stop()


# ---------------------------------------------------------------- kcat

def kcat(env, *args, input=None):
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat not installed")
    r = subprocess.run([path, "-b", env.bootstrap, *args], input=input, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    return r.stdout


@case("kcat", "list topics")
def _(env):
    assert f'topic "{DATA}" with {PARTITIONS} partitions' in kcat(env, "-L")


@case("kcat", "describe topics")
def _(env):
    out = kcat(env, "-L", "-t", DATA)
    assert f'topic "{DATA}" with {PARTITIONS} partitions' in out
    assert out.count("partition ") == PARTITIONS


@case("kcat", "regex subscribe")
def _(env):
    out = kcat(env, "-G", unique("kcat-regex"), "-o", "beginning", "-c", str(PARTITIONS * PER_PARTITION),
               "-f", "%s\n", "-X", "auto.offset.reset=earliest", "^mx-dat.*")
    assert sorted(out.split()) == all_values()


@case("kcat", "seek")
def _(env):
    assert kcat(env, "-C", "-t", DATA, "-p", "1", "-o", "7", "-c", "1", "-f", "%o %s\n") == "7 1:7\n"


@case("kcat", "offsets_for_times")
def _(env):
    out = kcat(env, "-C", "-t", DATA, "-p", "2", "-o", f"s@{BASE_TS + 3000}", "-c", "1", "-f", "%o\n")
    assert out == "3\n"


@case("kcat", "watermarks")
def _(env):
    # -Q asks ListOffsets: -2 earliest, -1 latest.
    assert f"offset {PER_PARTITION}" in kcat(env, "-Q", "-t", f"{DATA}:1:-1")
    assert "offset 0" in kcat(env, "-Q", "-t", f"{DATA}:1:-2")


@case("kcat", "produce and consume")
def _(env):
    t = unique("kcat-pc")
    ck_create(env, t)
    kcat(env, "-P", "-t", t, "-K:", input="".join(f"k{i}:v{i}\n" for i in range(5)))
    out = kcat(env, "-C", "-t", t, "-e", "-o", "beginning", "-f", "%k=%s\n")
    assert out.split() == [f"k{i}=v{i}" for i in range(5)]


@pytest.mark.parametrize("client,call", list(CASES), ids=[f"{c}: {k}" for c, k in CASES])
def test_call(env, client, call):
    CASES[(client, call)](env)


def test_matrix_is_written_in_the_readme():
    """The README's matrix lists every (client, call) this module checks."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Client API matrix", 1)[1].split("\n## ", 1)[0]
    calls = {k for _, k in CASES}
    for call in calls:
        row = [line for line in section.splitlines() if line.startswith(f"| {call} |")]
        assert row, f"README matrix has no row for {call}"
        for client in ("confluent-kafka", "kafka-python", "aiokafka", "kcat"):
            col = ["confluent-kafka", "kafka-python", "aiokafka", "kcat"].index(client)
            cell = row[0].strip("|").split("|")[col + 1].strip()
            assert (cell == "works") == ((client, call) in CASES), (client, call, cell)
