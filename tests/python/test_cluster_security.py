"""A secured cluster: three osprey hosts on loopback whose own connections between hosts
(follower fetchers, transaction markers) go over a SASL_SSL listener (SCRAM-SHA-512, TLS
with client certificates required on that listener) with the ACL authorizer on, driven
by confluent-kafka over the same listener. The brokers' SCRAM user is made with
`osprey users create --data-dir` before the first start and is a super user."""

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Cluster, free_port_block, wait_until
from test_security import make_pki, osprey

NODES_PER_HOST = 1024
TIMEOUT_S = 60
MECH = "SCRAM-SHA-512"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class SecureCluster(Cluster):
    """Three hosts, one core each: the PLAINTEXT `--listen` listener (anonymous, so allowed
    nothing by the authorizer) and a SASL_SSL listener that carries the traffic between
    hosts. `passwords[i]` is the inter-broker password host i presents."""

    def __init__(self, root: Path, passwords, extra=(), super_users="User:broker;User:admin",
                 controller_tls=False):
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, hosts=3, cores=1, extra=extra)
        self.super_users = super_users
        self.controller_tls = controller_tls
        self.pki = make_pki(root)
        self.passwords = passwords
        base = free_port_block(3 * 2)
        self.secure = {i: f"127.0.0.1:{base + (i - 1) * 2}" for i in (1, 2, 3)}
        for i in (1, 2, 3):
            data = root / f"host-{i}"
            osprey("users", "create", "broker", "--mechanism", MECH, "--password", "broker-secret",
                   "--data-dir", str(data))
            osprey("users", "create", "admin", "--mechanism", MECH, "--password", "admin-secret",
                   "--data-dir", str(data))

    def make(self, i):
        creds = self.root / f"broker-{i}.properties"
        creds.write_text(f"username=broker\npassword={self.passwords[i]}\n")
        b = super().make(i)
        b.extra += [
            "--listeners", f"SASL_SSL://{self.secure[i]}",
            "--inter-broker-listener-name", "SASL_SSL",
            "--sasl-mechanism-inter-broker-protocol", MECH,
            "--inter-broker-credentials", str(creds),
            "--tls-cert", str(self.pki / "server.pem"), "--tls-key", str(self.pki / "server.key"),
            "--tls-ca", str(self.pki / "ca.pem"),
            "--listener-ssl-client-auth", "SASL_SSL=required",
            "--authorizer", "acl", "--super-users", self.super_users,
        ]
        if self.controller_tls:
            b.extra += ["--controller-tls", "true"]
        return b

    def conf(self, *hosts):
        """confluent-kafka settings of the admin user on the SASL_SSL listener."""
        hosts = hosts or [i for i, b in self.hosts.items() if b.proc is not None]
        return {"bootstrap.servers": ",".join(self.secure[i] for i in hosts),
                "security.protocol": "SASL_SSL", "ssl.ca.location": str(self.pki / "ca.pem"),
                "ssl.certificate.location": str(self.pki / "client.pem"),
                "ssl.key.location": str(self.pki / "client.key"),
                "sasl.mechanism": MECH, "sasl.username": "admin", "sasl.password": "admin-secret"}


def start(root, passwords, extra=(), **kw):
    c = SecureCluster(root, passwords, extra, **kw)
    try:
        c.start()
    except Exception:
        c.save_logs()
        raise
    return c


def create_topic(c, name, partitions, config=None):
    admin = AdminClient(c.conf())
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3,
                                  config=config or {})],
                        operation_timeout=30)[name].result(timeout=30)


def metadata(c, name, predicate, timeout_s=TIMEOUT_S, hosts=()):
    admin = AdminClient(c.conf(*hosts))
    deadline = time.monotonic() + timeout_s
    md = None
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if name in md.topics and md.topics[name].partitions and predicate(md.topics[name]):
            return md.topics[name]
        time.sleep(0.2)
    raise AssertionError(f"metadata of {name} never satisfied the condition: "
                         f"{md.topics.get(name) and {p.id: p.isrs for p in md.topics[name].partitions.values()}}")


def read_all(conf, topic, partitions, expected, isolation="read_uncommitted"):
    c = Consumer({**conf, "group.id": unique("g"), "enable.auto.commit": False,
                  "isolation.level": isolation})
    got = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(m.value().decode())
        for m in c.consume(num_messages=500, timeout=1.0):
            got.append(m.value().decode())
    finally:
        c.close()
    return got


def plain_controller_frame_unanswered(c, host):
    """Sends a WatchMeta frame in the clear to `host`'s controller port: with mutual TLS
    the connection closes without an answer and the host logs the failed handshake."""
    import json
    import socket
    import struct
    addr, port = c.controller[host].rsplit(":", 1)
    body = json.dumps({"WatchMeta": {"after_epoch": 0, "wait_ms": 0}}).encode()
    s = socket.create_connection((addr, int(port)), timeout=5)
    got = b""
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        while b"Meta" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass  # reset or timed out: no answer (what was read is kept)
    finally:
        s.close()
    assert b"Meta" not in got, got[:200]
    assert wait_until(lambda: any("controller: TLS handshake with" in line
                                  for line in c.hosts[host].log_lines), timeout_s=10)


def test_replication_and_transactions_over_sasl_ssl(tmp_path):
    """Followers fetch over SASL_SSL: acks=all with min.insync.replicas=3 completes only
    once both followers have every batch on disk, and each host logs its fetchers on that
    listener; after the host leading partition 0 is killed, every acknowledged message is
    read back from the survivors. A transaction whose partitions are led on every host
    commits (markers over SASL_SSL) and read_committed sees exactly it. The controller
    quorum runs over mutual TLS (--controller-tls): a plain TCP frame to a voter's
    controller port is not answered, and the voter logs the failed handshake."""
    c = start(tmp_path / "cluster", {1: "broker-secret", 2: "broker-secret", 3: "broker-secret"},
              controller_tls=True)
    try:
        plain_controller_frame_unanswered(c, 1)
        topic = unique("sec-rf3")
        create_topic(c, topic, 3, {"min.insync.replicas": "3"})
        md = metadata(c, topic, lambda t: all(len(p.isrs) == 3 for p in t.partitions.values()))
        assert len({p.leader // NODES_PER_HOST for p in md.partitions.values()}) == 3
        acked, errors = set(), []
        p = Producer({**c.conf(), "acks": "all", "enable.idempotence": True, "linger.ms": 2,
                      "message.timeout.ms": 30000})
        n = 600

        def on_delivery(err, m):
            (errors.append(err) if err else acked.add(int(m.value())))

        for i in range(n):
            p.produce(topic, key=f"k{i % 9}", value=f"{i}", on_delivery=on_delivery)
        assert p.flush(TIMEOUT_S) == 0
        assert not errors, errors[:3]
        assert acked == set(range(n))
        for i, b in c.hosts.items():
            assert any("listener SASL_SSL" in line and "fetcher for leader" in line
                       for line in b.log_lines), f"host {i} started no fetcher on SASL_SSL"
        # Kill the host leading partition 0; the survivors serve everything acknowledged.
        victim = md.partitions[0].leader // NODES_PER_HOST
        c.hosts[victim].kill()
        survivors = [i for i in (1, 2, 3) if i != victim]
        metadata(c, topic, lambda t: all(p.leader >= 0 and p.leader // NODES_PER_HOST != victim
                                         for p in t.partitions.values()), hosts=survivors)
        got = read_all(c.conf(*survivors), topic, 3, n)
        assert sorted(int(v) for v in got) == list(range(n))
        c.restart(victim)
        metadata(c, topic, lambda t: all(len(p.isrs) == 3 for p in t.partitions.values()))

        # A transaction across hosts: markers go to the other hosts as WriteTxnMarkers.
        tx_topic = unique("sec-tx")
        create_topic(c, tx_topic, 3)
        md = metadata(c, tx_topic, lambda t: all(p.leader >= 0 for p in t.partitions.values()))
        assert len({p.leader // NODES_PER_HOST for p in md.partitions.values()}) == 3
        tp = Producer({**c.conf(), "transactional.id": unique("tx"), "linger.ms": 1})
        tp.init_transactions(TIMEOUT_S)
        for round_, commit in enumerate([True, False]):
            tp.begin_transaction()
            for i in range(30):
                tp.produce(tx_topic, key=f"k{i}", value=f"{round_}:{i}")
            if commit:
                tp.commit_transaction(TIMEOUT_S)
            else:
                tp.flush(TIMEOUT_S)
                tp.abort_transaction(TIMEOUT_S)
        got = read_all(c.conf(), tx_topic, 3, 30, isolation="read_committed")
        assert sorted(got) == sorted(f"0:{i}" for i in range(30))
    finally:
        c.kill_all()
        c.save_logs()


@pytest.mark.parametrize("case", ["wrong-password", "not-authorized"])
def test_refused_followers_stay_out_of_the_isr(tmp_path, case):
    """Host 3's followers are refused by the other hosts: with a wrong inter-broker password
    (SASL authentication fails) or, authenticated, when the brokers' principal is no super
    user and holds no CLUSTER_ACTION (the leader answers TOPIC_AUTHORIZATION_FAILED to a
    replica fetch, as Kafka). Once the leaders drop host 3 (replica.lag.time.max.ms) it
    never comes back into their partitions' ISRs, and host 3 logs the refusal."""
    if case == "wrong-password":
        c = start(tmp_path / "cluster", {1: "broker-secret", 2: "broker-secret", 3: "wrong"},
                  extra=["--replica-lag-time-max-ms", "1000"])
        expect = "SASL authentication"
    else:
        c = start(tmp_path / "cluster", {i: "broker-secret" for i in (1, 2, 3)},
                  extra=["--replica-lag-time-max-ms", "1000"], super_users="User:admin")
        expect = "TopicAuthorizationFailed"
    try:
        topic = unique("sec-bad")
        create_topic(c, topic, 3)
        md = metadata(c, topic, lambda t: all(p.leader >= 0 for p in t.partitions.values()))
        p = Producer({**c.conf(), "acks": "1", "linger.ms": 2})
        for i in range(60):
            p.produce(topic, value=f"{i}", partition=i % 3)
        assert p.flush(TIMEOUT_S) == 0
        host3 = {3 * NODES_PER_HOST + s for s in range(c.cores)}
        others = [pid for pid, part in md.partitions.items() if part.leader // NODES_PER_HOST != 3]
        assert others

        def host3_out(t):
            return all(not (set(t.partitions[pid].isrs) & host3) for pid in others)

        metadata(c, topic, host3_out, timeout_s=30)
        # ... and stays out, while host 3 keeps retrying.
        time.sleep(3)
        metadata(c, topic, host3_out, timeout_s=1)
        assert wait_until(lambda: any(expect in line and "refused" in line
                                      for line in c.hosts[3].log_lines), timeout_s=20), \
            f"host 3 never logged the refusal ({expect})"
    finally:
        c.kill_all()
        c.save_logs()
