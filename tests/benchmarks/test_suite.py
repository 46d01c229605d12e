"""The benchmark suite runs end to end and writes what it promises (never a timing check).

A smoke run: every part at a few thousand records, results into a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MEASURES = {
    "get_median", "get_p99", "get_many", "open_cached", "memory_pss", "snapshot_load",
    "delta_refresh", "get_p99_during_refresh", "producer_full_cycle", "producer_append_cycle",
    "blob_size", "propagation_local", "propagation_s3",
}
PEERS = {"dict", "lmdb+msgpack", "sqlite3+msgpack", "get loop", "zstd decompress",
         "snapshot_load", "idle", "pyarrow scan", "full cycle", "parquet-zstd"}
KEYS = {"name", "unit", "feedkit", "peer", "peer_value", "ratio", "goal", "met"}


@pytest.mark.timeout(600)
def test_the_suite_runs_every_part_and_writes_rows_plots_and_results_md(tmp_path: Path) -> None:
    results = tmp_path / "results"
    md = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--size", "quick",
         "--records", "3000", "--results", str(results), "--results-md", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=580,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
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

    meta = json.loads((results / "quick-meta.json").read_text())
    assert meta["records"] == 3000 and meta["machine"]["cpus"] == os.cpu_count()
    assert set(meta["parts"]) == {"core", "refresh", "producer", "s3"}
    for png in meta["plots"]:
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quick-ratios.png" in meta["plots"]

    text = md.read_text()
    assert "| measure | unit | feedkit | peer |" in text
    assert f"{meta['machine']['cpus']} CPUs" in text and "make bench-quick" in text
    assert text.count("\n| ") >= len(rows)
