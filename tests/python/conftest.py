"""Shared fixtures: start the real osprey binary on free ports in a temporary data dir."""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30


def broker_binary() -> str:
    path = os.environ.get("OSPREY_BIN", str(ROOT / "target" / "debug" / "osprey"))
    if not Path(path).exists():
        pytest.fail(f"osprey binary not found at {path}: run `cargo build` or set OSPREY_BIN")
    return path


class Broker:
    """One osprey process; `bootstrap` is its host:port for clients."""

    def __init__(self, data_dir: Path, cores: int = 2, extra=(), listen="127.0.0.1:0"):
        self.listen = listen
        self.prefix = []
        self.data_dir = data_dir
        self.cores = cores
        self.extra = list(extra)
        self.proc = None
        self.bootstrap = None
        # Listener name -> bootstrap host:port (the ready line's `listeners=`).
        self.listeners = {}
        # The admin HTTP port's host:port (/metrics, /health), from the ready line.
        self.admin = None
        self.log_lines = []

    def start(self):
        cmd = [*self.prefix, broker_binary(), "serve", "--listen", self.listen, "--data-dir", str(self.data_dir),
               "--cores", str(self.cores), *self.extra]
        # Several brokers on fixed ports (clusters, restarts) must not contend for the
        # default admin port 9644: a free one each.
        if "--admin-listen" not in self.extra:
            cmd += ["--admin-listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_stdout():
            for line in self.proc.stdout:
                m = re.search(r"bootstrap=(\S+)", line)
                if line.startswith("osprey ready") and m:
                    self.bootstrap = m.group(1)
                    ls = re.search(r"listeners=(\S+)", line)
                    if ls:
                        self.listeners = dict(e.split("=", 1) for e in ls.group(1).split(","))
                    adm = re.search(r"admin=(\S+)", line)
                    self.admin = adm.group(1) if adm else None
                    ready.set()

        def read_stderr():
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip())

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        if not ready.wait(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError("osprey did not start:\n" + "\n".join(self.log_lines[-30:]))
        return self

    def stop(self) -> int:
        """SIGTERM, wait for a clean exit; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self.proc = None
        return code

    def kill(self):
        """SIGKILL: a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", cores=2).start()
    yield b
    b.kill()


@pytest.fixture
def broker_factory(tmp_path):
    started = []

    def make(cores=2, data_dir=None, extra=()):
        b = Broker(data_dir or (tmp_path / "data"), cores=cores, extra=extra).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.kill()


def wait_until(predicate, timeout_s=20.0, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def free_port_block(count: int) -> int:
    """A base port such that base..base+count-1 are all free on 127.0.0.1 right now."""
    import random
    import socket
    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


class Cluster:
    """Several osprey hosts (processes) on loopback forming one cluster: host ids 1..n,
    every host a controller voter, fixed ports so a killed host restarts on the same ones."""

    def __init__(self, root: Path, hosts: int = 3, cores: int = 2, extra=()):
        self.root = root
        self.cores = cores
        self.extra = list(extra)
        base = free_port_block(hosts * (cores + 2))
        self.listen = {}
        self.controller = {}
        for i in range(1, hosts + 1):
            off = base + (i - 1) * (cores + 2)
            self.listen[i] = f"127.0.0.1:{off}"
            self.controller[i] = f"127.0.0.1:{off + cores + 1}"
        self.voters = ",".join(f"{i}@{a}" for i, a in self.controller.items())
        self.hosts = {}

    def make(self, i: int) -> Broker:
        return Broker(self.root / f"host-{i}", cores=self.cores, listen=self.listen[i],
                      extra=["--node-id", str(i), "--controller-quorum-voters", self.voters, *self.extra])

    def start(self):
        """Starts every host at once (each waits for the quorum before it is ready)."""
        brokers = {i: self.make(i) for i in self.listen}
        errors = []

        def run(b):
            try:
                b.start()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(b,)) for b in brokers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.hosts = brokers
        if errors:
            self.kill_all()
            raise errors[0]
        return self

    def restart(self, i: int) -> Broker:
        self.hosts[i] = self.make(i).start()
        return self.hosts[i]

    def bootstrap(self, *ids) -> str:
        ids = ids or [i for i, b in self.hosts.items() if b.proc is not None]
        return ",".join(self.hosts[i].bootstrap for i in ids)

    def leader(self, timeout_s=20.0):
        """The host id the quorum last named its leader, read from the hosts' logs."""
        deadline = time.monotonic() + timeout_s
        pat = re.compile(r"quorum leader is node (\d+) \(term (\d+)\)")
        while time.monotonic() < deadline:
            best = None
            for b in self.hosts.values():
                if b.proc is None:
                    continue
                for line in b.log_lines:
                    m = pat.search(line)
                    if m and (best is None or int(m.group(2)) > best[1]):
                        best = (int(m.group(1)), int(m.group(2)))
            if best is not None and self.hosts[best[0]].proc is not None:
                return best[0]
            time.sleep(0.1)
        raise RuntimeError("no controller leader named in the logs")

    def kill_all(self):
        for b in self.hosts.values():
            b.kill()

    def save_logs(self):
        """Each host's log (this incarnation's) beside its data dir, for a failed test."""
        for i, b in self.hosts.items():
            try:
                (self.root / f"host-{i}.log").write_text("\n".join(b.log_lines))
            except OSError:
                pass


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster").start()
    yield c
    c.kill_all()
    c.save_logs()


def metric_sum(broker, name):
    """The sum over shards of the /metrics counter `name` of one broker."""
    import urllib.request
    with urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{"))


def run(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


class NetnsCluster(Cluster):
    """A cluster whose hosts each run in a network namespace of their own, joined by veth
    pairs to a bridge in the root namespace, where the test's clients run; `isolate(i)`
    cuts host i off from the other hosts with nftables (clients still reach it), `heal(i)`
    undoes it. Needs root (CI has it)."""

    def __init__(self, root: Path, hosts: int = 3, cores: int = 2, extra=()):
        import random
        rng = random.Random(os.urandom(8))  # independent of any seed a caller set
        self.root = root
        self.cores = cores
        self.extra = list(extra)
        tag = "%04x" % rng.randint(0, 0xFFFF)
        self.tag = tag
        self.subnet = f"10.213.{rng.randint(1, 250)}"
        self.bridge = f"ospbr{tag}"
        self.ns = {i: f"osp{tag}h{i}" for i in range(1, hosts + 1)}
        self.ip = {i: f"{self.subnet}.{10 + i}" for i in range(1, hosts + 1)}
        self.listen = {i: f"{self.ip[i]}:9092" for i in self.ns}
        self.controller = {i: f"{self.ip[i]}:9099" for i in self.ns}
        self.voters = ",".join(f"{i}@{a}" for i, a in self.controller.items())
        self.hosts = {}
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for i, ns in self.ns.items():
            a, b = f"v{tag}{i}a", f"v{tag}{i}b"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            run("ip", "link", "set", a, "master", self.bridge)
            run("ip", "link", "set", a, "up")
            run("ip", "link", "set", b, "netns", ns)
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip[i]}/24", "dev", b)
            run("ip", "netns", "exec", ns, "ip", "link", "set", b, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def make(self, i: int) -> Broker:
        b = super().make(i)
        b.prefix = ["ip", "netns", "exec", self.ns[i]]
        return b

    def isolate(self, i: int):
        others = ", ".join(self.ip[j] for j in self.ns if j != i)
        ns = ["ip", "netns", "exec", self.ns[i], "nft"]
        run(*ns, "add", "table", "inet", "osp_isolate")
        run(*ns, "add", "chain", "inet", "osp_isolate", "in", "{ type filter hook input priority 0; }")
        run(*ns, "add", "chain", "inet", "osp_isolate", "out", "{ type filter hook output priority 0; }")
        run(*ns, "add", "rule", "inet", "osp_isolate", "in", "ip", "saddr", "{ " + others + " }", "drop")
        run(*ns, "add", "rule", "inet", "osp_isolate", "out", "ip", "daddr", "{ " + others + " }", "drop")

    def heal(self, i: int):
        run("ip", "netns", "exec", self.ns[i], "nft", "delete", "table", "inet", "osp_isolate", check=False)

    def teardown(self):
        self.kill_all()
        self.save_logs()
        for ns in self.ns.values():
            run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def netns_cluster(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    c = NetnsCluster(tmp_path / "cluster", extra=["--broker-session-timeout-ms", "2000",
                                                   "--replica-lag-time-max-ms", "3000",
                                                   "--group-initial-rebalance-delay-ms", "100"])
    try:
        c.start()
        yield c
    finally:
        c.teardown()
