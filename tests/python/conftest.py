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

    def __init__(self, data_dir: Path, cores: int = 2, extra=()):
        self.data_dir = data_dir
        self.cores = cores
        self.extra = list(extra)
        self.proc = None
        self.bootstrap = None
        self.log_lines = []

    def start(self):
        cmd = [broker_binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
               "--cores", str(self.cores), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_stdout():
            for line in self.proc.stdout:
                m = re.search(r"bootstrap=(\S+)", line)
                if line.startswith("osprey ready") and m:
                    self.bootstrap = m.group(1)
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
