"""Consumer processes sharing one cache folder: one build, shared files, no torn reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import feedkit
from tests.conftest import titles_table

WORKER = r"""
import json, os, sys, time
import feedkit
store_url, cache_dir, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start_at:
    time.sleep(0.001)
store = feedkit.open_store(store_url)
with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
    with feed.view() as view:
        paths = [str(f.path) for f in view.files]
        inodes = [os.stat(p).st_ino for p in paths]
        total = sum(1 for _ in feed.items())
        ok = all(feed.get(k).title == f"title {k}" for k in range(0, 20000, 7))
        maps = open("/proc/self/maps").read()
        deleted = [p for p in paths if f"{p} (deleted)" in maps]
    print(json.dumps({"paths": paths, "inodes": inodes, "total": total, "ok": ok,
                      "deleted": deleted, "version": feed.version}))
"""


def run_workers(store: feedkit.BlobStore, cache_dir: Path, n: int) -> list[dict]:
    import time

    start_at = time.time() + 1.5  # all workers start loading at the same moment
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, store.url, str(cache_dir),
                               str(start_at)], stdout=subprocess.PIPE, env=env)
             for _ in range(n)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return [json.loads(o) for o in outs]


def test_processes_share_one_build_of_the_state(store, cache_dir) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id")
    producer.publish(titles_table(20000))
    first = run_workers(store, cache_dir, 3)
    assert all(r["ok"] and r["total"] == 20000 and not r["deleted"] for r in first)
    assert len({tuple(r["inodes"]) for r in first}) == 1, "the state file was built once"
    stat = os.stat(first[0]["paths"][0])
    second = run_workers(store, cache_dir, 2)  # a cached state: nothing is fetched again
    assert [r["inodes"] for r in second] == [first[0]["inodes"]] * 2
    assert os.stat(first[0]["paths"][0]).st_mtime_ns == stat.st_mtime_ns
    producer.close()
