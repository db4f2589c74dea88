"""Security at the wire with real clients: Kafka's listeners (each answering Metadata with its
own endpoints), SASL (PLAIN, SCRAM-SHA-256/512) and the ACL authorizer."""

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from conftest import Broker, wait_until


def topic():
    return "sec-" + uuid.uuid4().hex[:8]


def produce_consume(conf, t, n=5, timeout_s=20):
    """Produces n records with confluent-kafka under `conf` and reads them back."""
    p = Producer({**conf, "message.timeout.ms": timeout_s * 1000})
    for i in range(n):
        p.produce(t, value=b"v%d" % i)
    assert p.flush(timeout_s) == 0
    c = Consumer({**conf, "group.id": "g-" + t, "auto.offset.reset": "earliest"})
    c.subscribe([t])
    got = []
    import time
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


# Two listeners on one broker: Metadata through each names that listener's own ports (and
# its advertised host), and a client bootstrapped on the second listener produces and
# consumes through it alone.
def test_metadata_answers_the_listener_the_client_came_through(tmp_path):
    b = Broker(tmp_path / "d", cores=2, extra=[
        "--listeners", "INTERNAL://127.0.0.1:0",
        "--listener-security-protocol-map", "INTERNAL:PLAINTEXT",
        "--advertised-listeners", "INTERNAL://localhost",
    ]).start()
    try:
        assert set(b.listeners) == {"PLAINTEXT", "INTERNAL"}
        assert b.listeners["PLAINTEXT"] == b.bootstrap
        plain = AdminClient({"bootstrap.servers": b.listeners["PLAINTEXT"]}).list_topics(timeout=10)
        internal = AdminClient({"bootstrap.servers": b.listeners["INTERNAL"]}).list_topics(timeout=10)
        plain_eps = {(x.host, x.port) for x in plain.brokers.values()}
        internal_eps = {(x.host, x.port) for x in internal.brokers.values()}
        assert len(plain_eps) == 2 and len(internal_eps) == 2
        assert {h for h, _ in plain_eps} == {"127.0.0.1"}
        assert {h for h, _ in internal_eps} == {"localhost"}
        assert not ({p for _, p in plain_eps} & {p for _, p in internal_eps})
        t = topic()
        got = produce_consume({"bootstrap.servers": b.listeners["INTERNAL"]}, t)
        assert got == [b"v%d" % i for i in range(5)]
        # kafka-python finds the group coordinator on the same listener.
        a = KafkaAdminClient(bootstrap_servers=b.listeners["INTERNAL"])
        assert t in a.list_topics()
        a.close()
    finally:
        b.kill()


OSPREY_USERS = {
    # user: (mechanism, password) created with `osprey users create --data-dir` before start.
    "alice": ("SCRAM-SHA-256", "alice-secret"),
    "carol": ("SCRAM-SHA-512", "carol-secret"),
}
PLAIN_USERS = {"bob": "bob-secret"}


def osprey(*args, check=True):
    import subprocess
    from conftest import broker_binary
    r = subprocess.run([broker_binary(), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def sasl_broker(tmp_path):
    """A broker with its default PLAINTEXT listener and a SASL_PLAINTEXT one: SCRAM users
    made in the data directory before the first start, PLAIN users from a file."""
    data = tmp_path / "data"
    for user, (mech, pw) in OSPREY_USERS.items():
        osprey("users", "create", user, "--mechanism", mech, "--password", pw, "--data-dir", str(data))
    plain = tmp_path / "plain-users"
    plain.write_text("".join(f"{u} = {p}\n" for u, p in PLAIN_USERS.items()))
    b = Broker(data, cores=2, extra=[
        "--listeners", "SASL_PLAINTEXT://127.0.0.1:0",
        "--sasl-plain-users", str(plain),
    ]).start()
    yield b
    b.kill()


def sasl_conf(b, mech, user, password):
    return {"bootstrap.servers": b.listeners["SASL_PLAINTEXT"], "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mech, "sasl.username": user, "sasl.password": password}


CREDS = [("PLAIN", "bob", "bob-secret"), ("SCRAM-SHA-256", "alice", "alice-secret"),
         ("SCRAM-SHA-512", "carol", "carol-secret")]


# confluent-kafka (librdkafka) authenticates with each mechanism on the SASL listener and
# produces and consumes (group coordinator included) through it.
@pytest.mark.parametrize("mech,user,password", CREDS)
def test_confluent_sasl_produce_consume(sasl_broker, mech, user, password):
    t = topic()
    got = produce_consume(sasl_conf(sasl_broker, mech, user, password), t)
    assert got == [b"v%d" % i for i in range(5)]


# kafka-python authenticates with each mechanism and produces and consumes.
@pytest.mark.parametrize("mech,user,password", CREDS)
def test_kafka_python_sasl_produce_consume(sasl_broker, mech, user, password):
    from kafka import KafkaConsumer, KafkaProducer
    conf = dict(bootstrap_servers=sasl_broker.listeners["SASL_PLAINTEXT"], security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=mech, sasl_plain_username=user, sasl_plain_password=password)
    t = topic()
    p = KafkaProducer(**conf)
    for i in range(3):
        p.send(t, b"k%d" % i).get(timeout=20)
    p.close()
    c = KafkaConsumer(t, auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id="g" + t, **conf)
    assert [m.value for m in c] == [b"k0", b"k1", b"k2"]
    c.close()


def delivered(conf):
    """Whether one record produced under `conf` is delivered within 2 s."""
    done = []
    p = Producer({**conf, "message.timeout.ms": 2000})
    p.produce("probe", b"x", on_delivery=lambda err, m: done.append(err is None))
    p.flush(5)
    return done == [True]


def failed_auth(b, conf):
    """Runs a producer that must fail to authenticate: nothing is delivered, and the broker
    logs a failed authentication from the client's address. Returns the client's error
    strings (librdkafka reports SASL_AUTHENTICATION_FAILED with the broker's message)."""
    before = sum("failed authentication from 127.0.0.1" in line for line in b.log_lines)
    errors, delivered = [], []
    p = Producer({**conf, "error_cb": lambda e: errors.append(e.str()), "message.timeout.ms": 2000})
    p.produce("never", b"x", on_delivery=lambda err, m: delivered.append(err is None))
    p.flush(5)
    after = sum("failed authentication from 127.0.0.1" in line for line in b.log_lines)
    assert delivered == [False]
    assert after > before
    return errors


# A wrong password, an unknown user and a known user with the wrong mechanism are each
# refused with SASL_AUTHENTICATION_FAILED, the broker logs the client address without
# telling the client which part was wrong, and a right client still works afterwards.
def test_wrong_credentials_are_refused_and_the_broker_stays_up(sasl_broker):
    b = sasl_broker
    for mech, user, pw in [("SCRAM-SHA-256", "alice", "wrong"), ("SCRAM-SHA-256", "nobody", "x"),
                           ("SCRAM-SHA-512", "alice", "alice-secret"), ("PLAIN", "bob", "wrong"),
                           ("PLAIN", "alice", "alice-secret")]:
        errs = failed_auth(b, sasl_conf(b, mech, user, pw))
        # The client is told only that authentication failed, never why.
        assert all("password" not in e and user not in e for e in errs), errs
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KpError
    with pytest.raises(KpError):
        KafkaProducer(bootstrap_servers=b.listeners["SASL_PLAINTEXT"], security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                      sasl_plain_password="nope", max_block_ms=3000)
    assert b.proc.poll() is None
    got = produce_consume(sasl_conf(b, "SCRAM-SHA-256", "alice", "alice-secret"), topic())
    assert len(got) == 5


# Before authentication a SASL listener serves only ApiVersions and SaslHandshake: a
# Metadata request closes the connection (as Kafka), while on the PLAINTEXT listener the
# same bytes get an answer.
def test_requests_before_authentication_close_the_connection(sasl_broker):
    import socket
    import struct
    body = struct.pack(">hhih", 3, 1, 7, -1) + struct.pack(">i", -1)  # Metadata v1, all topics
    frame = struct.pack(">i", len(body)) + body

    def send(addr):
        host, port = addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(frame)
        data = s.recv(4)
        s.close()
        return data

    assert send(sasl_broker.listeners["SASL_PLAINTEXT"]) == b""
    assert len(send(sasl_broker.listeners["PLAINTEXT"])) == 4
    assert any("before SASL authentication" in line for line in sasl_broker.log_lines)


# SCRAM credentials managed through the Admin API (AlterUserScramCredentials and
# DescribeUserScramCredentials, confluent-kafka) and the CLI: a user created at run time
# authenticates at once, is listed, and after deletion is refused.
def test_scram_credentials_through_the_admin_api_and_cli(sasl_broker):
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    b = sasl_broker
    admin = AdminClient({"bootstrap.servers": b.listeners["PLAINTEXT"]})
    futs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"dave-pw")])
    for f in futs.values():
        f.result(timeout=20)
    described = admin.describe_user_scram_credentials().result(timeout=20)
    assert set(described) == {"alice", "carol", "dave"}
    infos = described["dave"].scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_512, 8192)]
    assert len(produce_consume(sasl_conf(b, "SCRAM-SHA-512", "dave", "dave-pw"), topic())) == 5
    # Too few iterations is refused per user.
    futs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")])
    with pytest.raises(Exception):
        futs["erin"].result(timeout=20)
    listed = osprey("users", "list", "--bootstrap", b.listeners["PLAINTEXT"]).stdout
    assert "dave\tSCRAM-SHA-512(iterations=8192)" in listed
    osprey("users", "create", "frank", "--password", "frank-pw", "--bootstrap", b.listeners["PLAINTEXT"])
    assert len(produce_consume(sasl_conf(b, "SCRAM-SHA-256", "frank", "frank-pw"), topic())) == 5
    osprey("users", "delete", "dave", "--bootstrap", b.listeners["PLAINTEXT"])
    futs = admin.alter_user_scram_credentials([UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)])
    with pytest.raises(Exception):
        futs["dave"].result(timeout=20)  # already gone: RESOURCE_NOT_FOUND
    failed_auth(b, sasl_conf(b, "SCRAM-SHA-512", "dave", "dave-pw"))


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate
    (CN=alice,O=osprey-test), made with Debian's openssl at test time (no key is committed)."""
    import subprocess

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=osprey-test-ca")
    # X.509 v3 with extensions: webpki refuses v1 certificates.
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in [("server", "/CN=localhost", ["-extfile", "server.ext"]),
                            ("client", "/O=osprey-test/CN=alice", ["-extfile", "client.ext"])]:
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *ext)
    return d


@pytest.fixture
def tls_broker(tmp_path):
    """PLAINTEXT (--listen), SSL and SASL_SSL listeners; client certificates requested."""
    pki = make_pki(tmp_path)
    data = tmp_path / "data"
    osprey("users", "create", "alice", "--mechanism", "SCRAM-SHA-512", "--password", "alice-secret",
           "--data-dir", str(data))
    plain = tmp_path / "plain-users"
    plain.write_text("bob = bob-secret\n")
    b = Broker(data, cores=2, extra=[
        "--listeners", "SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-ca", str(pki / "ca.pem"), "--ssl-client-auth", "requested",
        "--sasl-plain-users", str(plain),
    ]).start()
    b.pki = pki
    yield b
    b.kill()


# SSL with server authentication: confluent-kafka and kafka-python verify the broker's
# certificate against the test CA and produce and consume over TLS (Fetch answers go
# through rustls instead of the zero-copy sendmsg path).
def test_ssl_produce_consume(tls_broker):
    b = tls_broker
    conf = {"bootstrap.servers": b.listeners["SSL"], "security.protocol": "SSL",
            "ssl.ca.location": str(b.pki / "ca.pem")}
    big = produce_consume(conf, topic(), n=50)
    assert len(big) == 50
    from kafka import KafkaConsumer, KafkaProducer
    kp = dict(bootstrap_servers=b.listeners["SSL"], security_protocol="SSL", ssl_cafile=str(b.pki / "ca.pem"))
    t = topic()
    p = KafkaProducer(**kp)
    p.send(t, b"x" * 100_000).get(timeout=20)
    p.close()
    c = KafkaConsumer(t, auto_offset_reset="earliest", consumer_timeout_ms=5000, **kp)
    assert [len(m.value) for m in c] == [100_000]
    c.close()


# SASL_SSL: SCRAM-SHA-512 (confluent-kafka) and PLAIN (kafka-python) over TLS; a wrong
# password over TLS is refused like on SASL_PLAINTEXT.
def test_sasl_ssl(tls_broker):
    b = tls_broker
    conf = {"bootstrap.servers": b.listeners["SASL_SSL"], "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(b.pki / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice", "sasl.password": "alice-secret"}
    assert len(produce_consume(conf, topic())) == 5
    failed_auth(b, {**conf, "sasl.password": "wrong"})
    from kafka import KafkaConsumer, KafkaProducer
    kp = dict(bootstrap_servers=b.listeners["SASL_SSL"], security_protocol="SASL_SSL",
              ssl_cafile=str(b.pki / "ca.pem"), sasl_mechanism="PLAIN",
              sasl_plain_username="bob", sasl_plain_password="bob-secret")
    t = topic()
    p = KafkaProducer(**kp)
    p.send(t, b"over sasl_ssl").get(timeout=20)
    p.close()
    c = KafkaConsumer(t, auto_offset_reset="earliest", consumer_timeout_ms=5000, **kp)
    assert [m.value for m in c] == [b"over sasl_ssl"]
    c.close()


# A plaintext client on the TLS port is refused (its bytes are no TLS handshake: the
# connection closes, with a log line), a TLS client that does not trust the broker's CA
# fails, and other clients are unaffected.
def test_plaintext_client_on_a_tls_port(tls_broker):
    import socket
    import struct
    b = tls_broker
    host, port = b.listeners["SSL"].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    body = struct.pack(">hhih", 3, 1, 7, -1) + struct.pack(">i", -1)
    s.sendall(struct.pack(">i", len(body)) + body)
    data = s.recv(4096)
    s.close()
    assert not data.startswith(struct.pack(">i", 7))  # never a Kafka answer
    assert wait_until(lambda: any("TLS handshake failed" in line for line in b.log_lines), 5)
    # Not delivered: the system CAs do not know the test CA.
    assert not delivered({"bootstrap.servers": b.listeners["SSL"], "security.protocol": "SSL"})
    conf = {"bootstrap.servers": b.listeners["SSL"], "security.protocol": "SSL",
            "ssl.ca.location": str(b.pki / "ca.pem")}
    assert len(produce_consume(conf, topic())) == 5


# mTLS with ssl.client.auth=required: a client presenting a certificate from the CA
# produces and consumes; one without a certificate is refused in the handshake.
def test_mtls_required(tmp_path):
    pki = make_pki(tmp_path)
    b = Broker(tmp_path / "data", cores=1, extra=[
        "--listeners", "SSL://127.0.0.1:0",
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-ca", str(pki / "ca.pem"), "--ssl-client-auth", "required",
    ]).start()
    try:
        base = {"bootstrap.servers": b.listeners["SSL"], "security.protocol": "SSL",
                "ssl.ca.location": str(pki / "ca.pem")}
        with_cert = {**base, "ssl.certificate.location": str(pki / "client.pem"),
                     "ssl.key.location": str(pki / "client.key")}
        assert len(produce_consume(with_cert, topic())) == 5
        assert not delivered(base)
        assert wait_until(lambda: any("TLS handshake failed" in line for line in b.log_lines), 5)
    finally:
        b.kill()


@pytest.fixture
def acl_broker(tmp_path):
    """The ACL authorizer on: SASL_PLAINTEXT (PLAIN users admin, alice, bob) for the
    applications, and the PLAINTEXT listener as the operators' port (User:ANONYMOUS is a
    super user there, so the osprey CLI administers through it)."""
    plain = tmp_path / "plain-users"
    plain.write_text("admin = admin-pw\nalice = alice-pw\nbob = bob-pw\n")
    b = Broker(tmp_path / "data", cores=2, extra=[
        "--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "--sasl-plain-users", str(plain),
        "--authorizer", "acl", "--super-users", "User:admin;User:ANONYMOUS",
    ]).start()
    yield b
    b.kill()


def plain_conf(b, user):
    return sasl_conf(b, "PLAIN", user, f"{user}-pw")


def acl_cli(b, action, *args):
    return osprey("acls", "--bootstrap", b.listeners["PLAINTEXT"], action, *args)


# The authorizer end to end: alice may write and read topic A with group G, read every
# topic prefixed logs- except logs-secret (deny beats allow), nothing else; Metadata shows
# her only what she may describe; bob, with DESCRIBE but no READ on A, gets
# TOPIC_AUTHORIZATION_FAILED from Fetch. ACLs are made with the CLI and confluent-kafka's
# AdminClient, listed and deleted.
def test_acls(acl_broker):
    from confluent_kafka import KafkaError, TopicPartition
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                       NewTopic, ResourcePatternType, ResourceType)
    b = acl_broker
    admin = AdminClient(plain_conf(b, "admin"))
    for f in admin.create_topics([NewTopic(t, 1) for t in ["A", "B", "logs-app", "logs-secret"]]).values():
        f.result(timeout=20)
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "WRITE", "--topic", "A")
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "READ", "--topic", "A")
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "READ", "--group", "G")
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "READ", "--topic", "logs-",
            "--pattern", "prefixed")
    for f in admin.create_acls([
        AclBinding(ResourceType.TOPIC, "logs-secret", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.DENY),
        AclBinding(ResourceType.TOPIC, "A", ResourcePatternType.LITERAL, "User:bob", "*",
                   AclOperation.DESCRIBE, AclPermissionType.ALLOW),
    ]).values():
        f.result(timeout=20)
    listed = acl_cli(b, "list").stdout
    assert listed.count("principal=User:alice") == 5 and "principal=User:bob" in listed

    alice = plain_conf(b, "alice")
    # Metadata hides what alice may not describe (B); her prefixed READ implies DESCRIBE
    # of logs-secret, whose deny is of READ only (as in Kafka).
    seen = set(AdminClient(alice).list_topics(timeout=10).topics)
    assert seen == {"A", "logs-app", "logs-secret"}, seen

    # Produce: A allowed, B refused per partition.
    results = {}
    p = Producer({**alice, "message.timeout.ms": 5000})
    p.produce("A", b"ok", on_delivery=lambda e, m: results.__setitem__("A", e))
    p.produce("B", b"no", on_delivery=lambda e, m: results.__setitem__("B", e))
    p.flush(10)
    assert results["A"] is None
    assert results["B"] is not None and results["B"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # Consume with group G works; group H is refused.
    c = Consumer({**alice, "group.id": "G", "auto.offset.reset": "earliest"})
    c.subscribe(["A"])
    got = None
    for _ in range(40):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got = m.value()
            break
    c.close()
    assert got == b"ok"
    c = Consumer({**alice, "group.id": "H", "auto.offset.reset": "earliest"})
    c.subscribe(["A"])
    codes = set()
    for _ in range(20):
        m = c.poll(0.5)
        if m is not None and m.error() is not None:
            codes.add(m.error().code())
            if KafkaError.GROUP_AUTHORIZATION_FAILED in codes:
                break
    c.close()
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in codes, codes
    # Committing offsets needs READ on the topic too: B is refused per partition, A not.
    from confluent_kafka import KafkaException
    c = Consumer({**alice, "group.id": "G", "enable.auto.commit": False})
    try:
        committed = c.commit(offsets=[TopicPartition("A", 0, 1), TopicPartition("B", 0, 1)],
                             asynchronous=False)
        errs = {tp.topic: tp.error for tp in committed}
    except KafkaException as e:
        errs = {tp.topic: tp.error for tp in (e.args[0].partitions if hasattr(e.args[0], "partitions") else [])}
        errs = errs or {"B": e.args[0]}
    c.close()
    assert errs.get("A") is None
    assert errs["B"] is not None and errs["B"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errs
    # ListGroups shows alice only the groups she may describe; the super user sees all.
    admin_groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=20).valid}
    alice_admin = AdminClient(alice)
    alice_groups = {g.group_id for g in alice_admin.list_consumer_groups().result(timeout=20).valid}
    assert alice_groups == {"G"} and alice_groups <= admin_groups, (alice_groups, admin_groups)

    def fetch_error(conf, t):
        # The group "unused" is not theirs either: FindCoordinator answers
        # GROUP_AUTHORIZATION_FAILED too (as Kafka), so poll past it for the fetch's code.
        c = Consumer({**conf, "group.id": "unused", "enable.auto.commit": False})
        c.assign([TopicPartition(t, 0, 0)])
        codes = set()
        for _ in range(20):
            m = c.poll(0.5)
            if m is not None and m.error() is not None:
                codes.add(m.error().code())
                if KafkaError.TOPIC_AUTHORIZATION_FAILED in codes:
                    break
        c.close()
        return codes

    # bob may describe A but not read it; alice is denied logs-secret despite the prefix.
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in fetch_error(plain_conf(b, "bob"), "A")
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in fetch_error(alice, "logs-secret")

    # Deleting alice's WRITE takes effect at once.
    deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "A", ResourcePatternType.LITERAL,
                                                  "User:alice", "*", AclOperation.WRITE,
                                                  AclPermissionType.ALLOW)])
    assert [len(f.result(timeout=20)) for f in deleted.values()] == [1]
    results.clear()
    p = Producer({**alice, "message.timeout.ms": 5000})
    p.produce("A", b"late", on_delivery=lambda e, m: results.__setitem__("A", e))
    p.flush(10)
    assert results["A"] is not None and results["A"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    acl_cli(b, "delete", "--principal", "User:alice", "--operation", "READ", "--group", "G")
    assert acl_cli(b, "list", "--principal", "User:alice").stdout.count("principal=User:alice") == 3
    # Creating and deleting topics need CREATE / DELETE: refused per topic.
    for futs in (alice_admin.create_topics([NewTopic("alice-new", 1)]), alice_admin.delete_topics(["A"])):
        for f in futs.values():
            with pytest.raises(Exception) as e:
                f.result(timeout=20)
            assert "TOPIC_AUTHORIZATION_FAILED" in str(e.value)
    # A non-super user cannot manage ACLs: CLUSTER_AUTHORIZATION_FAILED.
    with pytest.raises(Exception):
        [f.result(timeout=20) for f in AdminClient(alice).create_acls([
            AclBinding(ResourceType.TOPIC, "B", ResourcePatternType.LITERAL, "User:alice", "*",
                       AclOperation.ALL, AclPermissionType.ALLOW)]).values()]
    assert b.proc.poll() is None


# Transactions under the authorizer, as Kafka: InitProducerId, AddPartitionsToTxn, EndTxn
# need WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, fatal for the
# producer), AddPartitionsToTxn WRITE on each topic (TOPIC_AUTHORIZATION_FAILED, the
# transaction must abort); ListTransactions lists and DescribeTransactions describes only
# the ids the principal may DESCRIBE (WRITE implies it), the super user sees all.
def test_transaction_acls(acl_broker):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic
    from kafka.admin import KafkaAdminClient
    b = acl_broker
    admin = AdminClient(plain_conf(b, "admin"))
    for f in admin.create_topics([NewTopic(t, 1) for t in ["TX", "TX-no"]]).values():
        f.result(timeout=20)
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "WRITE", "--topic", "TX")
    acl_cli(b, "create", "--principal", "User:alice", "--operation", "WRITE", "--transactional-id",
            "tx-alice")
    alice = plain_conf(b, "alice")

    p = Producer({**alice, "transactional.id": "tx-alice", "linger.ms": 1})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("TX", b"in")
    p.commit_transaction(20)
    # A topic alice may not write: the partition is refused, the transaction must abort.
    errors = []
    p.begin_transaction()
    p.produce("TX-no", b"no", on_delivery=lambda e, m: errors.append(e))
    with pytest.raises(KafkaException) as e:
        p.commit_transaction(20)
    assert e.value.args[0].txn_requires_abort(), e.value
    p.abort_transaction(20)
    p.flush(5)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors

    # A transactional id alice may not write: InitProducerId refuses it.
    q = Producer({**alice, "transactional.id": "tx-other"})
    with pytest.raises(KafkaException) as e:
        q.init_transactions(20)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value

    # The super user's own transactional id exists too; alice sees only hers.
    r = Producer({**plain_conf(b, "admin"), "transactional.id": "tx-admin"})
    r.init_transactions(20)

    def kadmin(user):
        return KafkaAdminClient(bootstrap_servers=b.listeners["SASL_PLAINTEXT"],
                                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                sasl_plain_username=user, sasl_plain_password=f"{user}-pw")

    def listed(user):
        a = kadmin(user)
        try:
            return sorted(t.transactional_id for ts in a.list_transactions().values() for t in ts)
        finally:
            a.close()

    assert listed("alice") == ["tx-alice"]
    assert listed("admin") == ["tx-admin", "tx-alice"]
    a = kadmin("alice")
    try:
        assert a.describe_transactions(["tx-alice"])["tx-alice"].producer_id >= 0
        with pytest.raises(Exception) as e:
            a.describe_transactions(["tx-admin"])
        assert "TransactionalIdAuthorization" in repr(e.value), repr(e.value)
    finally:
        a.close()
    assert b.proc.poll() is None


# Without --authorizer the ACL APIs answer SECURITY_DISABLED (as Kafka) and everything is
# allowed as before.
def test_acl_apis_without_an_authorizer(broker):
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futs = admin.create_acls([AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:x", "*",
                                         AclOperation.READ, AclPermissionType.ALLOW)])
    with pytest.raises(Exception) as e:
        [f.result(timeout=20) for f in futs.values()]
    assert "SECURITY_DISABLED" in str(e.value) or "No Authorizer" in str(e.value)
    assert len(produce_consume({"bootstrap.servers": broker.bootstrap}, topic())) == 5


# Kafka's legacy framing (SaslHandshake v0): after the handshake the PLAIN token goes as a
# bare size-prefixed frame and the answer is a bare (empty) frame; then requests are
# served. A wrong password in this framing just closes the connection.
def test_sasl_handshake_v0_raw_tokens(sasl_broker):
    import socket
    import struct

    def frame(body):
        return struct.pack(">i", len(body)) + body

    def recv_frame(s):
        head = s.recv(4, socket.MSG_WAITALL)
        if len(head) < 4:
            return None
        (n,) = struct.unpack(">i", head)
        return s.recv(n, socket.MSG_WAITALL) if n else b""

    def connect(password):
        host, port = sasl_broker.listeners["SASL_PLAINTEXT"].rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        mech = b"PLAIN"
        s.sendall(frame(struct.pack(">hhih", 17, 0, 1, -1) + struct.pack(">h", len(mech)) + mech))
        resp = recv_frame(s)
        corr, err = struct.unpack(">ih", resp[:6])
        assert (corr, err) == (1, 0)
        s.sendall(frame(b"\0bob\0" + password))
        return s, recv_frame(s)

    s, answer = connect(b"bob-secret")
    assert answer == b""
    s.sendall(frame(struct.pack(">hhih", 3, 1, 2, -1) + struct.pack(">i", -1)))  # Metadata v1
    resp = recv_frame(s)
    assert resp is not None and struct.unpack(">i", resp[:4])[0] == 2
    s.close()
    s, answer = connect(b"wrong")
    assert answer is None
    s.close()


# kcat over SASL_SSL (PLAIN): produce two lines, consume them back. (Debian's kcat links
# librdkafka 2.0.2, whose SCRAM client echoes a wrong nonce in its final message; osprey
# refuses that as RFC 5802 requires, so SCRAM is tested with confluent-kafka.)
def test_kcat_sasl_ssl(tls_broker):
    import subprocess
    from test_clients import kcat_binary
    b = tls_broker
    t = topic()
    sec = ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={b.pki / 'ca.pem'}",
           "-X", "sasl.mechanism=PLAIN", "-X", "sasl.username=bob", "-X", "sasl.password=bob-secret"]
    kcat = kcat_binary()
    subprocess.run([kcat, "-b", b.listeners["SASL_SSL"], *sec, "-P", "-t", t], input=b"one\ntwo\n",
                   check=True, timeout=60)
    out = subprocess.run([kcat, "-b", b.listeners["SASL_SSL"], *sec, "-C", "-t", t, "-o", "beginning", "-e"],
                         check=True, capture_output=True, timeout=60).stdout
    assert out.split() == [b"one", b"two"]


# aiokafka over SASL_PLAINTEXT with SCRAM-SHA-256: produce and consume.
def test_aiokafka_sasl(sasl_broker):
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    conf = dict(bootstrap_servers=sasl_broker.listeners["SASL_PLAINTEXT"], security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice", sasl_plain_password="alice-secret")
    t = topic()

    async def run():
        p = AIOKafkaProducer(**conf)
        await p.start()
        try:
            await p.send_and_wait(t, b"from aiokafka")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(t, auto_offset_reset="earliest", **conf)
        await c.start()
        try:
            m = await asyncio.wait_for(c.getone(), 20)
            return m.value
        finally:
            await c.stop()

    assert asyncio.run(run()) == b"from aiokafka"


# KIP-368 with --connections-max-reauth-ms 1500: SaslAuthenticate tells clients the
# session lifetime; confluent-kafka re-authenticates on its open connections and keeps
# producing past several lifetimes; a raw client that does not re-authenticate is closed
# at its first request after the lifetime.
def test_reauthentication(tmp_path):
    import socket
    import struct
    import time
    data = tmp_path / "data"
    osprey("users", "create", "alice", "--mechanism", "SCRAM-SHA-256", "--password", "alice-secret",
           "--data-dir", str(data))
    plain = tmp_path / "plain-users"
    plain.write_text("bob = bob-secret\n")
    b = Broker(data, cores=1, extra=["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "--sasl-plain-users", str(plain),
                                     "--connections-max-reauth-ms", "1500"]).start()
    try:
        conf = sasl_conf(b, "SCRAM-SHA-256", "alice", "alice-secret")
        done = []
        p = Producer({**conf, "message.timeout.ms": 10000})
        t = topic()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            p.produce(t, b"x", on_delivery=lambda e, m: done.append(e is None))
            p.poll(0.1)
        p.flush(10)
        assert done and all(done), done.count(False)
        assert wait_until(lambda: any("re-authenticated as User:alice" in line for line in b.log_lines), 5)
        assert not any("session expired" in line for line in b.log_lines)

        def frame(body):
            return struct.pack(">i", len(body)) + body

        def recv_frame(s):
            head = s.recv(4, socket.MSG_WAITALL)
            if len(head) < 4:
                return None
            (n,) = struct.unpack(">i", head)
            return s.recv(n, socket.MSG_WAITALL)

        host, port = b.listeners["SASL_PLAINTEXT"].rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(frame(struct.pack(">hhih", 17, 1, 1, -1) + struct.pack(">h", 5) + b"PLAIN"))
        assert struct.unpack(">ih", recv_frame(s)[:6]) == (1, 0)
        token = b"\0bob\0bob-secret"
        s.sendall(frame(struct.pack(">hhih", 36, 1, 2, -1) + struct.pack(">i", len(token)) + token))
        resp = recv_frame(s)
        corr, err = struct.unpack(">ih", resp[:6])
        assert (corr, err) == (2, 0)
        assert struct.unpack(">q", resp[-8:])[0] == 1500  # session_lifetime_ms
        metadata = frame(struct.pack(">hhih", 3, 1, 3, -1) + struct.pack(">i", -1))
        s.sendall(metadata)
        assert recv_frame(s) is not None
        time.sleep(1.7)
        s.sendall(metadata)
        assert recv_frame(s) is None
        s.close()
        assert wait_until(lambda: any("session expired" in line for line in b.log_lines), 5)
    finally:
        b.kill()


# SIGHUP reloads the TLS certificate files: after the server's certificate and key are
# replaced by ones from a new CA and the broker gets SIGHUP, new connections verify
# against the new CA (and no longer against the old one), without a restart.
def test_sighup_reloads_certificates(tls_broker):
    import shutil
    import signal
    b = tls_broker
    old_ca = b.pki / "ca.pem"
    conf = {"bootstrap.servers": b.listeners["SSL"], "security.protocol": "SSL"}
    assert delivered({**conf, "ssl.ca.location": str(old_ca)})
    new = b.pki / "new"
    new.mkdir()
    make_pki(new)
    shutil.copy(new / "server.pem", b.pki / "server.pem")
    shutil.copy(new / "server.key", b.pki / "server.key")
    b.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: any("SIGHUP" in line for line in b.log_lines), 5)
    assert delivered({**conf, "ssl.ca.location": str(new / "ca.pem")})
    assert not delivered({**conf, "ssl.ca.location": str(old_ca)})
    assert any("TLS certificates reloaded" in line for line in b.log_lines)
    assert b.proc.poll() is None


# The admin APIs authorize per resource, as Kafka, and refusals are error codes: alice may
# alter, reconfigure and delete records of p-ok (ALTER, ALTER_CONFIGS, DELETE) and only
# describe p-desc; she has nothing on p-no, nor on the cluster. With confluent-kafka's
# AdminClient each request mixes an allowed and a refused resource: the allowed one is
# done, the refused one answers TOPIC_/CLUSTER_AUTHORIZATION_FAILED, and the one client
# (its connections) keeps working; the super user admin does everything.
def test_admin_apis_authorize_per_resource(acl_broker):
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AlterConfigOpType,
                                       ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                       ResourcePatternType, ResourceType)
    b = acl_broker
    admin = AdminClient(plain_conf(b, "admin"))
    for f in admin.create_topics([NewTopic(t, 1) for t in ["p-ok", "p-desc", "p-no"]]).values():
        f.result(timeout=20)
    allow = [("p-ok", op) for op in (AclOperation.ALTER, AclOperation.ALTER_CONFIGS, AclOperation.DELETE)]
    allow += [("p-desc", AclOperation.DESCRIBE)]
    for f in admin.create_acls(
            [AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, "User:alice", "*", op,
                        AclPermissionType.ALLOW) for t, op in allow]
            + [AclBinding(ResourceType.GROUP, "G", ResourcePatternType.LITERAL, "User:alice", "*",
                          AclOperation.DESCRIBE, AclPermissionType.ALLOW)]).values():
        f.result(timeout=20)
    alice = AdminClient(plain_conf(b, "alice"))

    def code(f):
        """The Kafka error code a future fails with, None when it succeeds."""
        try:
            f.result(timeout=20)
            return None
        except Exception as e:
            err = e.args[0] if e.args else e
            return err.code() if hasattr(err, "code") else err

    TAF, CAF = KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED

    # CreatePartitions: ALTER on the topic.
    futs = alice.create_partitions([NewPartitions("p-ok", 2), NewPartitions("p-desc", 2)])
    assert {t: code(f) for t, f in futs.items()} == {"p-ok": None, "p-desc": TAF}

    # IncrementalAlterConfigs and AlterConfigs: ALTER_CONFIGS on the topic, on the cluster
    # for a broker.
    topic_res = lambda t: ConfigResource(ResourceType.TOPIC, t, incremental_configs=[  # noqa: E731
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    broker_res = ConfigResource(ResourceType.BROKER, "0", incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    futs = alice.incremental_alter_configs([topic_res("p-ok"), topic_res("p-desc"), broker_res])
    assert {r.name: code(f) for r, f in futs.items()} == {"p-ok": None, "p-desc": TAF, "0": CAF}
    for t, want in (("p-ok", None), ("p-desc", TAF)):
        futs = alice.alter_configs([ConfigResource(ResourceType.TOPIC, t, set_config={"retention.ms": "7200000"})])
        assert [code(f) for f in futs.values()] == [want], t

    # DescribeConfigs: DESCRIBE_CONFIGS (implied by ALTER_CONFIGS on p-ok).
    futs = alice.describe_configs([ConfigResource(ResourceType.TOPIC, "p-ok"),
                                   ConfigResource(ResourceType.TOPIC, "p-desc"),
                                   ConfigResource(ResourceType.BROKER, "0")])
    got = {r.name: code(f) for r, f in futs.items()}
    assert got == {"p-ok": None, "p-desc": TAF, "0": CAF}, got
    [f] = alice.describe_configs([ConfigResource(ResourceType.TOPIC, "p-ok")]).values()
    assert f.result(timeout=20)["retention.ms"].value == "7200000"

    # DeleteRecords: DELETE on the topic.
    for t, want in (("p-ok", None), ("p-desc", TAF)):
        futs = alice.delete_records([TopicPartition(t, 0, -1)])
        assert [code(f) for f in futs.values()] == [want], t

    # OffsetFetch: DESCRIBE on the group, and per topic: all topics leave out p-no (no
    # DESCRIBE); p-no named answers TOPIC_AUTHORIZATION_FAILED on its partition.
    c = Consumer({**plain_conf(b, "admin"), "group.id": "G", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(t, 0, 0) for t in ("p-ok", "p-desc", "p-no")], asynchronous=False)
    c.close()
    [f] = alice.list_consumer_group_offsets([ConsumerGroupTopicPartitions("G")]).values()
    assert sorted(tp.topic for tp in f.result(timeout=20).topic_partitions) == ["p-desc", "p-ok"]
    [f] = alice.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        "G", [TopicPartition("p-ok", 0), TopicPartition("p-no", 0)])]).values()
    errs = {tp.topic: tp.error.code() if tp.error else None for tp in f.result(timeout=20).topic_partitions}
    assert errs == {"p-ok": None, "p-no": TAF}, errs
    bob = AdminClient(plain_conf(b, "bob"))  # kept: a dropped client fails its futures
    [f] = bob.list_consumer_group_offsets([ConsumerGroupTopicPartitions("G")]).values()
    assert code(f) == KafkaError.GROUP_AUTHORIZATION_FAILED

    # Metadata's authorized operations are alice's own.
    [f] = alice.describe_topics(
        __import__("confluent_kafka").TopicCollection(["p-ok"]), include_authorized_operations=True).values()
    ops = {o.name for o in f.result(timeout=20).authorized_operations}
    assert ops == {"ALTER", "ALTER_CONFIGS", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS"}, ops

    # The super user gets everything.
    assert code(list(admin.create_partitions([NewPartitions("p-desc", 2)]).values())[0]) is None
    futs = admin.incremental_alter_configs([topic_res("p-desc")])
    assert [code(f) for f in futs.values()] == [None]
    futs = admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")])
    assert [code(f) for f in futs.values()] == [None]
    assert [code(f) for f in admin.delete_records([TopicPartition("p-no", 0, -1)]).values()] == [None]
    assert b.proc.poll() is None
