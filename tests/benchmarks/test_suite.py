"""The benchmark suite runs end to end and writes what it promises (never a timing check).

A smoke run: every part at a few thousand records, results into a temporary folder. It
needs no Redis: it names a redis-server that does not exist, so the core part takes its
skip path (a printed note, no Redis rows) and still passes. The Redis peer's own server
lifecycle is checked on its own, where a redis-server is installed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]

MEASURES = {
    "get_median", "get_p99", "get_median_str_key", "get_median_composite_key", "get_many",
    "open_cached", "memory_pss", "snapshot_load",
    "delta_refresh", "get_p99_during_refresh", "refresh_beside_lookups",
    "producer_full_cycle", "producer_append_cycle",
    "blob_size", "propagation_local", "propagation_s3",
    "cycle_partition_overwrite", "cycle_delete", "cycle_upsert", "serving_append",
    "cycle_replace",
    *(f"{m}_{t}" for m in ("state_files", "snapshot_blob", "delta_blob")
      for t in ("five", "muse", "nested")),
}
PEERS = {"dict", "lmdb+msgpack", "sqlite3+msgpack", "rocksdict+msgpack", "get loop",
         "dict comprehension", "zstd decompress", "snapshot_load", "idle", "pyarrow scan",
         "full cycle", "parquet-zstd", "alone"}
NO_REDIS = "feedkit-test-no-such-redis-server"
KEYS = {"name", "unit", "feedkit", "peer", "peer_value", "ratio", "goal", "met"}


@pytest.mark.timeout(600)
def test_the_suite_runs_every_part_and_writes_rows_plots_and_results_md(tmp_path: Path) -> None:
    results = tmp_path / "results"
    md = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--size", "quick",
         "--records", "3000", "--results", str(results), "--results-md", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=580,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "FEEDKIT_BENCH_REDIS_SERVER": NO_REDIS})
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in results.glob("*.log"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + logs

    rows = json.loads((results / "quick.json").read_text())
    assert isinstance(rows, list) and rows
    for r in rows:
        assert set(r) >= KEYS, r
        if r["ratio"] is not None:
            assert r["ratio"] == pytest.approx(r["feedkit"] / r["peer_value"], rel=1e-2, abs=1e-3)
        assert r["met"] in (True, False, None)
    names = {r["name"] for r in rows}
    assert names >= MEASURES, MEASURES - names
    assert {r["peer"] for r in rows} >= PEERS, PEERS - {r["peer"] for r in rows}
    rocks = {r["name"] for r in rows if r["peer"] == "rocksdict+msgpack"}
    assert rocks == {"get_median", "get_p99", "get_p999", "get_many"}, rocks
    assert not [r for r in rows if r["peer"] == "redis+msgpack"]
    core_log = (results / "quick-core.log").read_text()
    assert f"note: the Redis rows are skipped: no {NO_REDIS} found" in core_log

    meta = json.loads((results / "quick-meta.json").read_text())
    assert meta["records"] == 3000 and meta["machine"]["cpus"] == os.cpu_count()
    assert set(meta["parts"]) == {"core", "refresh", "producer", "storage", "s3", "cycles"}
    for png in meta["plots"]:
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quick-ratios.png" in meta["plots"] and "quick-storage.png" in meta["plots"]

    # storage: per table, the state files against Parquet (with a goal), lmdb and the dict
    # (references), the blobs against Parquet; each row says which format the state had
    storage = [r for r in rows if r["part"] == "storage"]
    for table, goal in (("five", "<= 5x"), ("muse", "<= 3x"), ("nested", "<= 5x")):
        mine = {(r["name"], r["peer"]): r for r in storage if r["table"] == table}
        assert set(mine) == {(f"state_files_{table}", "parquet-zstd"),
                             (f"state_files_{table}", "lmdb+msgpack"),
                             (f"state_files_{table}", "dict"),
                             (f"snapshot_blob_{table}", "parquet-zstd"),
                             (f"delta_blob_{table}", "parquet-zstd")}, mine
        assert mine[(f"state_files_{table}", "parquet-zstd")]["goal"] == goal
        assert mine[(f"state_files_{table}", "dict")]["goal"] is None
        assert mine[(f"snapshot_blob_{table}", "parquet-zstd")]["goal"] == "<= 1.0x"
        assert mine[(f"delta_blob_{table}", "parquet-zstd")]["changed"] == 30
        for r in mine.values():
            assert r["unit"] == "B/record" and r["feedkit_bytes"] > 0 and r["peer_bytes"] > 0
            if r["name"].startswith("state_files_"):
                assert isinstance(r["state_format"], int) and r["state_format"] >= 1
                assert r["feedkit"] == pytest.approx(r["feedkit_bytes"] / 3000, rel=1e-4)
    storage_log = (results / "quick-storage.log").read_text()
    assert "bytes per record" in storage_log and "state-file format: the Producer's default" \
        in storage_log

    text = md.read_text()
    assert "| measure | unit | feedkit | peer |" in text
    assert f"{meta['machine']['cpus']} CPUs" in text and "make bench-quick" in text
    assert text.count("\n| ") >= len(rows)

    # --reuse: the parts' rows again from the part files, without running any part
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--size", "quick",
         "--reuse", "core,refresh,producer,storage,s3,cycles", "--results", str(results),
         "--results-md", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((results / "quick.json").read_text()) == rows
    meta = json.loads((results / "quick-meta.json").read_text())
    assert all(s.startswith("ok (reused: ") for s in meta["parts"].values()), meta["parts"]
    (results / "parts" / "quick-s3.json").unlink()
    missing = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--size", "quick",
         "--reuse", "s3", "--only", "s3", "--results", str(results), "--results-md", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--reuse s3: no " in missing.stderr + missing.stdout


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server installed")
def test_the_redis_peer_starts_its_own_server_serves_get_and_mget_and_stops_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    peers = importlib.import_module("peers")
    rec = namedtuple("rec", "id title")
    binary, why = peers.redis_server_binary()
    assert binary is not None, why
    with peers.RedisServer(binary, tmp_path / "redis") as server:
        client = server.start()
        items = [(peers.BE64.pack(i), msgpack.packb([i, f"t{i}"])) for i in range(2500)]
        assert peers.fill_redis(client, items) == 2500
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert len(peers.time_redis_mget(client, rec, [list(range(1000)), [7, 8]])) == 2
        got = client.mget([peers.BE64.pack(k) for k in (3, 2499)])
        assert [rec(*msgpack.unpackb(v)) for v in got] == [rec(3, "t3"), rec(2499, "t2499")]
        proc = server.proc
    assert proc is not None and proc.poll() is not None  # stopped on leaving the block
