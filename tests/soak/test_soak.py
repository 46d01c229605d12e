"""Soak (``make soak``; marked slow, not in ``make test``): 8 reader threads and 2 reader
processes follow a feed while a producer process runs 500 cycles of random upserts and
deletes; every answer is checked against the truth of the version it was read from.

``FEEDKIT_SOAK_CYCLES`` changes the cycle count (500 by default). The run prints the
lookups done and the wrong answers, and writes them to ``soak-report.json`` in its
temporary folder; the test fails on any wrong answer.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import feedkit
from tests.soak.history import History, check_view

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SEED = 20261129
THREADS = 8
PROCESSES = 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak(tmp_path: Path) -> None:
    cycles = int(os.environ.get("FEEDKIT_SOAK_CYCLES", "500"))
    history = History(SEED, cycles)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    store_dir = tmp_path / "store"
    started = time.monotonic()
    # Generation 0 first, so that every reader has a version to open.
    first = subprocess.run([sys.executable, str(HERE / "producer_process.py"), str(store_dir),
                            str(tmp_path / "work"), str(SEED), "0"], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True)
    gen_of = {json.loads(first.stdout)["version"]: 0}

    stop = threading.Event()
    wrong: list[str] = []
    seen: list[dict[int, int]] = [{} for _ in range(THREADS)]
    lookups = [0] * THREADS
    store = feedkit.open_store(str(store_dir))
    consumer = feedkit.Consumer(store, feed="soak", cache_dir=tmp_path / "cache-threads",
                                poll_interval=0.05).open()

    def reader(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            with consumer.view() as view:
                lookups[i] += check_view(view, history, rng, seen[i], wrong)
            time.sleep(0.0005)  # let the refresher and the GIL breathe

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    stop_file = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, str(HERE / "reader_process.py"), str(store_dir),
                                 str(tmp_path / "cache-procs"), str(SEED), str(cycles),
                                 str(stop_file)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
    producer = subprocess.run([sys.executable, str(HERE / "producer_process.py"),
                               str(store_dir), str(tmp_path / "work"), str(SEED), str(cycles)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=800)
    try:
        assert producer.returncode == 0, producer.stderr[-3000:]
        published = [json.loads(line) for line in producer.stdout.splitlines()]
        gen_of.update({p["version"]: p["gen"] for p in published if p["version"] is not None})
        final = max(gen_of)
        deadline = time.monotonic() + 60
        while consumer.version != final and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the processes catch up too, and everyone reads the last version
    finally:
        stop.set()
        stop_file.touch()
        for t in threads:
            t.join(timeout=30)
        outs = [p.communicate(timeout=60) for p in readers]
        served = consumer.version
        consumer.close()
    procs = []
    for p, (out, err) in zip(readers, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        procs.append(json.loads(out))

    total = sum(lookups) + sum(p["lookups"] for p in procs)
    wrong_total = len(wrong) + sum(p["wrong_count"] for p in procs)
    versions_seen = set().union(*[set(s) for s in seen],
                                *[{int(v) for v in p["seen"]} for p in procs])
    report = {"cycles": cycles, "versions_published": len(gen_of), "lookups": total,
              "wrong_answers": wrong_total, "versions_seen_by_readers": len(versions_seen),
              "thread_lookups": sum(lookups), "process_lookups": [p["lookups"] for p in procs],
              "seconds": round(time.monotonic() - started, 1)}
    (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=1))
    print(f"\nsoak: {json.dumps(report)}")
    assert wrong_total == 0, (wrong[:5], [p["wrong"][:5] for p in procs])
    # Every version a reader saw was published, with the generation the reader found in it.
    for s in [*seen, *[{int(v): g for v, g in p["seen"].items()} for p in procs]]:
        for version, gen in s.items():
            assert gen_of.get(version) == gen, (version, gen)
    assert served == final and all(p["final"] == final for p in procs)
    assert all(n > 0 for n in lookups) and all(p["lookups"] > 0 for p in procs)
    assert len(gen_of) == cycles + 1  # every cycle changed something, so every one published
