"""Exactly-once transactions (KIP-98) with the real clients' transactional APIs:
commit/abort seen through read_committed, consume-transform-produce with
send_offsets_to_transaction, zombie fencing, transaction timeouts, and a transaction open at
a kill -9 aborted after the restart."""

import asyncio
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until

TIMEOUT_S = 30


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(bootstrap, name, partitions=3):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(TIMEOUT_S)


def txn_producer(bootstrap, txn_id, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 1, **conf})
    p.init_transactions(TIMEOUT_S)
    return p


def read_all(bootstrap, topic, isolation, expected=None, idle_s=3.0):
    """Every message value from the beginning, by partition in offset order; stops after
    `expected` messages, or once nothing arrived for idle_s."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": isolation})
    got = {}
    try:
        # Assigned, not subscribed: no group join delays the first fetch.
        parts = c.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + TIMEOUT_S
        last = time.monotonic()
        count = 0
        while time.monotonic() < deadline:
            msgs = c.consume(num_messages=500, timeout=0.3)
            for m in msgs:
                assert m.error() is None, m.error()
                got.setdefault(m.partition(), []).append(m.value().decode())
                count += 1
            if msgs:
                last = time.monotonic()
            if expected is not None and count >= expected:
                time.sleep(0.5)  # would anything more (wrongly) arrive?
                for m in c.consume(num_messages=500, timeout=0.5):
                    got.setdefault(m.partition(), []).append(m.value().decode())
                break
            if expected is None and time.monotonic() - last > idle_s:
                break
    finally:
        c.close()
    return got


def values(got):
    return sorted(v for vs in got.values() for v in vs)


def test_commit_and_abort_seen_through_read_committed(broker):
    """Committed transactions are read, aborted ones are not (read_committed); a
    read_uncommitted consumer sees both; order within each partition is kept."""
    topic = unique("tx")
    create(broker.bootstrap, topic)
    p = txn_producer(broker.bootstrap, unique("txid"))
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=f"k{i}", value=f"c{i}")
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=f"k{i}", value=f"a{i}")
    p.flush(TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(10, 15):
        p.produce(topic, key=f"k{i}", value=f"c{i}")
    p.commit_transaction(TIMEOUT_S)

    committed = read_all(broker.bootstrap, topic, "read_committed", expected=15)
    assert values(committed) == sorted(f"c{i}" for i in range(15))
    for vs in committed.values():
        nums = [int(v[1:]) for v in vs]
        assert nums == sorted(nums), vs
    everything = read_all(broker.bootstrap, topic, "read_uncommitted", expected=25)
    assert values(everything) == sorted([f"c{i}" for i in range(15)] + [f"a{i}" for i in range(10)])


def test_open_transaction_holds_back_read_committed(broker):
    """While a transaction is open, read_committed consumers stop at its first record (the
    last stable offset); the commit releases it."""
    topic = unique("lso")
    create(broker.bootstrap, topic, partitions=1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic, value="before")
    plain.flush(TIMEOUT_S)
    p = txn_producer(broker.bootstrap, unique("txid"))
    p.begin_transaction()
    p.produce(topic, value="inside")
    p.flush(TIMEOUT_S)
    plain.produce(topic, value="after")
    plain.flush(TIMEOUT_S)
    held = read_all(broker.bootstrap, topic, "read_committed", idle_s=2.0)
    assert values(held) == ["before"]
    p.commit_transaction(TIMEOUT_S)
    released = read_all(broker.bootstrap, topic, "read_committed", expected=3)
    assert released[0] == ["before", "inside", "after"]


def test_consume_transform_produce_is_exactly_once(broker):
    """The classic exactly-once loop: read from `in`, write to `out` and commit the input
    offsets in the same transaction. An aborted round changes neither the output nor the
    group's committed offsets; in the end every input appears once in the output and the
    group's offsets are at the end of the input."""
    src, dst, group = unique("in"), unique("out"), unique("eos")
    create(broker.bootstrap, src)
    create(broker.bootstrap, dst)
    n = 120
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(n):
        plain.produce(src, key=f"k{i % 7}", value=f"{i}")
    plain.flush(TIMEOUT_S)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    producer = txn_producer(broker.bootstrap, unique("eos-txid"))
    consumer.subscribe([src])
    done, rounds, aborted_once = 0, 0, False
    deadline = time.monotonic() + 60
    try:
        while done < n and time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(num_messages=25, timeout=0.5) if m.error() is None]
            if not msgs:
                continue
            rounds += 1
            producer.begin_transaction()
            for m in msgs:
                producer.produce(dst, key=m.key(), value=b"out-" + m.value())
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata(), TIMEOUT_S)
            if not aborted_once:
                aborted_once = True
                producer.abort_transaction(TIMEOUT_S)
                # Rewind to the committed offsets: the aborted round is done again.
                committed = consumer.committed(consumer.assignment(), timeout=TIMEOUT_S)
                for tp in committed:
                    assert tp.offset < 0, f"an aborted transaction committed offsets: {tp}"
                    consumer.seek(TopicPartition(tp.topic, tp.partition, 0))
                continue
            producer.commit_transaction(TIMEOUT_S)
            done += len(msgs)
    finally:
        consumer.close()
    assert done == n, f"processed {done} of {n} in {rounds} rounds"
    out = read_all(broker.bootstrap, dst, "read_committed", expected=n)
    assert values(out) == sorted(f"out-{i}" for i in range(n))
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        committed = check.committed([TopicPartition(src, p) for p in range(3)], timeout=TIMEOUT_S)
    finally:
        check.close()
    assert sum(tp.offset for tp in committed) == n, committed


def test_a_new_instance_fences_the_zombie(broker):
    """Two producers with one transactional.id: the second's init aborts the first's open
    transaction and fences it; the zombie's commit fails, and its records are never read."""
    topic, txid = unique("zombie"), unique("txid")
    create(broker.bootstrap, topic)
    zombie = txn_producer(broker.bootstrap, txid)
    zombie.begin_transaction()
    zombie.produce(topic, value="zombie")
    zombie.flush(TIMEOUT_S)
    fresh = txn_producer(broker.bootstrap, txid)
    fresh.begin_transaction()
    fresh.produce(topic, value="fresh")
    fresh.commit_transaction(TIMEOUT_S)
    with pytest.raises(KafkaException) as e:
        zombie.commit_transaction(TIMEOUT_S)
    assert e.value.args[0].fatal() or e.value.args[0].txn_requires_abort(), e.value
    assert values(read_all(broker.bootstrap, topic, "read_committed", expected=1)) == ["fresh"]


def test_transaction_timeout_aborts(broker):
    """A transaction left open past transaction.timeout.ms is aborted by the coordinator:
    read_committed consumers move past it and never see its records."""
    topic = unique("timeout")
    create(broker.bootstrap, topic, partitions=1)
    p = txn_producer(broker.bootstrap, unique("txid"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, value="never")
    p.flush(TIMEOUT_S)
    time.sleep(4)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic, value="later")
    plain.flush(TIMEOUT_S)
    assert read_all(broker.bootstrap, topic, "read_committed", expected=1) == {0: ["later"]}
    with pytest.raises(KafkaException):
        p.commit_transaction(TIMEOUT_S)


def test_transactions_survive_kill_9(broker_factory, tmp_path):
    """Committed transactions stay committed across a kill -9 and restart; a transaction
    open at the crash is aborted after the restart (its timeout), so read_committed
    consumers are not held back for ever."""
    b = broker_factory()
    topic, txid = unique("crash"), unique("txid")
    create(b.bootstrap, topic, partitions=1)
    p = txn_producer(b.bootstrap, txid, **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    p.produce(topic, value="kept")
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    p.produce(topic, value="open")
    p.flush(TIMEOUT_S)
    b.kill()
    b2 = broker_factory(data_dir=tmp_path / "data")
    plain = Producer({"bootstrap.servers": b2.bootstrap})
    plain.produce(topic, value="after")
    plain.flush(TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    got = {}
    while time.monotonic() < deadline:
        got = read_all(b2.bootstrap, topic, "read_committed", idle_s=1.5)
        if values(got) == ["after", "kept"]:
            break
    assert got == {0: ["kept", "after"]}
    # The same transactional id starts again at once (its epoch bumped past the crash).
    again = txn_producer(b2.bootstrap, txid)
    again.begin_transaction()
    again.produce(topic, value="again")
    again.commit_transaction(TIMEOUT_S)


def test_kafka_python_transactions(broker):
    """kafka-python's transactional producer: a committed and an aborted transaction."""
    from kafka import KafkaProducer

    topic = unique("kp-tx")
    create(broker.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique("kp-txid"))
    p.init_transactions()
    p.begin_transaction()
    for i in range(5):
        p.send(topic, value=f"c{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic, value=b"aborted")
    p.flush()
    p.abort_transaction()
    p.close()
    assert values(read_all(broker.bootstrap, topic, "read_committed", expected=5)) == [f"c{i}" for i in range(5)]


def test_aiokafka_transactions(broker):
    """aiokafka's transactional producer and read_committed consumer."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique("aio-tx")
    create(broker.bootstrap, topic, partitions=1)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique("aio-txid"))
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(topic, b"committed")
            await p.begin_transaction()
            await p.send_and_wait(topic, b"aborted")
            await p.abort_transaction()
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", group_id=unique("aio-g"))
        await c.start()
        try:
            got = []
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and not got:
                batch = await c.getmany(timeout_ms=500)
                for msgs in batch.values():
                    got.extend(m.value for m in msgs)
            more = await c.getmany(timeout_ms=1000)
            got.extend(m.value for msgs in more.values() for m in msgs)
            return got
        finally:
            await c.stop()

    assert asyncio.run(run()) == [b"committed"]


def test_transaction_admin_apis(broker):
    """kafka-python's transaction admin (KIP-664) against an open transaction:
    list_transactions (state and producer-id filters) lists it Ongoing on its coordinator,
    describe_transactions shows its partitions and start time, describe_producers shows the
    producer with its open transaction's first offset; after the commit the transaction is
    CompleteCommit and no longer open in the partition. abort_transaction (WriteTxnMarkers
    from an operator) then ends a second open transaction so read_committed reads past it."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.admin._transactions import AbortTransactionSpec, TransactionState

    topic = unique("txadm")
    create(broker.bootstrap, topic, partitions=2)
    txn_id = unique("txid")
    p = txn_producer(broker.bootstrap, txn_id)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        p.begin_transaction()
        for i in range(3):
            p.produce(topic, partition=1, value=f"t{i}".encode())
        p.flush(TIMEOUT_S)

        listed = admin.list_transactions()
        mine = [t for ts in listed.values() for t in ts if t.transactional_id == txn_id]
        assert len(mine) == 1 and mine[0].state == TransactionState.ONGOING, listed
        pid = mine[0].producer_id
        assert pid >= 0
        ongoing = admin.list_transactions(state_filters=["Ongoing"], producer_id_filters=[pid])
        assert [t.transactional_id for ts in ongoing.values() for t in ts] == [txn_id]
        assert not any(admin.list_transactions(state_filters=["CompleteAbort"],
                                               producer_id_filters=[pid]).values())

        desc = admin.describe_transactions([txn_id])[txn_id]
        assert desc.state == TransactionState.ONGOING
        assert desc.producer_id == pid
        assert desc.topic_partitions == {KTP(topic, 1)}
        assert abs(desc.transaction_start_time_ms - time.time() * 1000) < 60_000

        prod = admin.describe_producers([KTP(topic, 1), KTP(topic, 0)])
        (state,) = prod[KTP(topic, 1)].active_producers
        assert state.producer_id == pid
        assert state.last_sequence == 2
        assert abs(state.last_timestamp - time.time() * 1000) < 60_000
        assert state.current_transaction_start_offset == 0
        assert prod[KTP(topic, 0)].active_producers == []
        assert admin.find_hanging_transactions() == []

        p.commit_transaction(TIMEOUT_S)
        # EndTxn answers once PrepareCommit is durable; the markers follow.
        assert wait_until(lambda: admin.describe_transactions([txn_id])[txn_id].state
                          == TransactionState.COMPLETE_COMMIT)
        (state,) = admin.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
        assert state.current_transaction_start_offset == -1

        # An operator aborts an open transaction on one partition.
        p.begin_transaction()
        p.produce(topic, partition=1, value=b"hung")
        p.flush(TIMEOUT_S)
        (state,) = admin.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
        assert state.current_transaction_start_offset > 0
        admin.abort_transaction(AbortTransactionSpec(KTP(topic, 1), state.producer_id,
                                                     state.producer_epoch))
        (state,) = admin.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
        assert state.current_transaction_start_offset == -1
    finally:
        admin.close()
    got = read_all(broker.bootstrap, topic, "read_committed", expected=3)
    assert got.get(1) == ["t0", "t1", "t2"], got
