"""Operating the broker: `serve` sizes its write path and cache from a hand-written
iotune.json (the log line names the file and the values; /metrics shows them), flags win."""

import json
import time
import urllib.request

from conftest import Broker


def iotune_report(path):
    """A report as `osprey iotune` writes it: a disk that needs 1 MiB writes at queue depth
    4 to saturate (1 GB/s), O_DSYNC 4 KiB p50 200 us."""
    def bw(op, block, qd, mbps):
        return {"op": op, "block_bytes": block, "queue_depth": qd,
                "bytes_per_sec": mbps * 1e6, "iops": mbps * 1e6 / block}

    report = {
        "version": 1, "dir": str(path.parent), "measured_at_unix": int(time.time()) - 60,
        "duration_per_test_ms": 500, "file_bytes": 64 << 20,
        "bandwidth": [bw("write", 4096, 1, 20), bw("write", 65536, 4, 500),
                      bw("write", 1 << 20, 1, 700), bw("write", 1 << 20, 4, 1000),
                      bw("read", 1 << 20, 4, 1500)],
        "latency": [{"op": "dsync write", "block_bytes": 4096, "ops": 100, "p50_us": 200,
                     "p99_us": 400, "p999_us": 800, "max_us": 900}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def scrape(broker):
    with urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=10) as r:
        body = r.read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def iotune_line(broker):
    lines = [l for l in broker.log_lines if "iotune: " in l]
    assert len(lines) == 1, lines
    return lines[0]


# The data directory's iotune.json (the default place) sizes the write round (1 MiB: the
# smallest write that reaches 90% of the best bandwidth), its minimum (1 GB/s x 200 us)
# and the in-flight writes (2 x queue depth 4); --cache-mib wins over the derived cache.
def test_serve_sizes_from_data_dir_iotune_json(tmp_path):
    data = tmp_path / "data"
    iotune_report(data / "iotune.json")
    b = Broker(data, cores=2, extra=["--cache-mib", "100"]).start()
    try:
        line = iotune_line(b)
        assert f"from {data / 'iotune.json'}" in line, line
        assert "write round 1024 KiB (next round waits for 195 KiB)" in line, line
        assert "inflight writes 8" in line, line
        assert "set by flags: cache 100 MiB" in line, line
        m = scrape(b)
        for shard in ("0", "1"):
            assert m[f'osprey_write_round_max_bytes{{shard="{shard}"}}'] == 1 << 20
            assert m[f'osprey_write_round_min_bytes{{shard="{shard}"}}'] == 200_000
            assert m[f'osprey_inflight_writes_max{{shard="{shard}"}}'] == 8
            assert m[f'osprey_cache_max_bytes{{shard="{shard}"}}'] == 50 << 20
    finally:
        b.kill()


# --iotune-file names another file; flags for every value leave nothing to iotune.json,
# and the flags' values are what the shards run with.
def test_iotune_file_flag_and_flags_win(tmp_path):
    other = tmp_path / "elsewhere" / "disk.json"
    iotune_report(other)
    b = Broker(tmp_path / "data", cores=1,
               extra=["--iotune-file", str(other), "--write-round-max-kib", "256",
                      "--inflight-writes-max", "3", "--cache-mib", "64"]).start()
    try:
        line = iotune_line(b)
        assert f"from {other}" in line, line
        assert ": nothing; set by flags: write round 256 KiB, inflight writes 3, cache 64 MiB" in line, line
        m = scrape(b)
        assert m['osprey_write_round_max_bytes{shard="0"}'] == 256 << 10
        assert m['osprey_inflight_writes_max{shard="0"}'] == 3
        assert m['osprey_cache_max_bytes{shard="0"}'] == 64 << 20
    finally:
        b.kill()


# Without any iotune.json the line says so and names where it looked; defaults apply.
def test_no_iotune_json(tmp_path):
    b = Broker(tmp_path / "data", cores=1).start()
    try:
        line = iotune_line(b)
        assert f"no {tmp_path / 'data' / 'iotune.json'}" in line, line
        m = scrape(b)
        assert m['osprey_write_round_max_bytes{shard="0"}'] == 512 << 10
        assert m['osprey_inflight_writes_max{shard="0"}'] == 8
    finally:
        b.kill()
