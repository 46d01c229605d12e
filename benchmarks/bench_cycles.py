"""Iceberg-driven cycles: what each kind of Iceberg snapshot costs the daemon, against a
full read of the same table, and how long it takes to reach a watching consumer.

The table: N rows (``--records``, default 1M) of (id, part, name, score, tags) in 100
identity partitions (``part = id % 100``), written by pyiceberg. Each round commits, in
turn:

- ``partition overwrite``: one partition (1% of the rows) rewritten with new scores
  (``table.overwrite(..., overwrite_filter=part == p)``);
- ``delete``: 0.1% of the rows, all in one partition (a copy-on-write ``table.delete``);
- ``upsert``: 10,000 rows (N / 100 below 1M rows), half changed rows of one partition,
  half new keys (``table.upsert(..., join_cols=["id"])``; pyiceberg's own commit takes
  15-30 s of it at 1M, outside every window);
- ``append``: 1,000 rows with new keys, in one partition (``table.append``; rows spread
  over all 100 partitions would be 100 small files, and pyiceberg's read of them alone
  takes 0.2-0.3 s here);
- ``replace``: a compaction of one partition (a ``replace`` snapshot: the same rows in a
  new file, committed by ``tests/producer/iceberg_ops.py``'s ``compact``).

Two feeds follow the table:

- ``file diff``: the real daemon (``feedkit-producer run``) as a subprocess, its watchdog
  on the warehouse; a watching ``Consumer`` in this process polls ``get`` every 2 ms
  until the commit shows. ``commit to serving`` is from just after the commit returns
  (pyiceberg's own commit time is printed); the daemon's cycle is its log's ``plan_s``
  plus the cycle's ``total_s``.
- ``full read``: a ``FeedRunner`` in this process whose source has no key, so every
  change but an append is read whole and diffed (the daemon before file-diff cycles),
  timed around its ``check()`` after the consumer of the first feed is served (the two
  never run at once). It is the peer of the file-diff cycle; for the replace it is the
  replace's own cycle (the plan needs no key to see a compaction).

One warm-up round, then ``--rounds`` rounds (default 3); medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from bench_producer import daemon_published, log_tail, poll_until, start_daemon, stop_daemon
from bench_producer import wait_for as wait_daemon
from common import RESULTS, load, print_rows, row, step, versions, write_rows
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo, In

import feedkit
from feedkit import names
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.producer.iceberg_ops import compact  # noqa: E402  (the replace snapshot)

TABLE = "bench.cycles"
FEED = "bench.cycles"
FEED_FULL = "bench.cycles-full"
PARTS = 100
DELETE_SHARE = 0.001
UPSERT_ROWS = 10_000
APPEND_ROWS = 1_000
OPS = ("partition_overwrite", "delete", "upsert", "append", "replace")
GOAL_VS_FULL = "<= 0.05x"
GOAL_SERVING = "<= 1 s"
GOAL_APPEND_SERVING = "<= 0.1 s"
GOAL_REPLACE = "<= 0.2 s"


def rows(ids: np.ndarray, parts: np.ndarray, tag: float) -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "part": pa.array(parts, pa.int64()),
        "name": pa.array([f"title {i}" for i in ids.tolist()], pa.string()),
        "score": pa.array(np.full(len(ids), tag) + ids % 97, pa.float64()),
        "tags": pa.array([[int(i % 7), int(i % 11)] for i in ids.tolist()],
                         pa.list_(pa.int64())),
    })


def config(root: Path, name: str, store: Path, work: Path) -> Path:
    lines = ["[store]", f'url = "{store}"', "", "[catalog]", 'name = "local"',
             'type = "sql"', f'uri = "sqlite:///{root}/catalog.db"',
             f'warehouse = "file://{root}/warehouse"', "", "[producer]",
             f'work_dir = "{work}"', "", "[[feed]]", f'name = "{name}"', f'table = "{TABLE}"',
             'primary_key = "id"', "poll_interval = 5.0"]
    path = root / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Workload:
    """The table and the commits the benchmark makes to it."""

    def __init__(self, root: Path, n: int) -> None:
        (root / "warehouse").mkdir()
        self.catalog = SqlCatalog("local", uri=f"sqlite:///{root}/catalog.db",
                                  warehouse=f"file://{root}/warehouse")
        self.catalog.create_namespace("bench")
        self.n, self.next_id, self.round = n, n, 0
        ids = np.arange(n, dtype=np.int64)
        data = rows(ids, ids % PARTS, 0.0)
        table = self.catalog.create_table(TABLE, schema=data.schema)
        with table.update_spec() as spec:
            spec.add_identity("part")
        table.append(data)
        self.live = {int(p): ids[ids % PARTS == p] for p in range(PARTS)}  # keys per part

    def table(self) -> Any:
        return self.catalog.load_table(TABLE)

    def _part(self, k: int) -> int:
        return (self.round * 5 + k * 17) % PARTS

    def commit(self, op: str) -> tuple[Any, float]:
        """Make the ``op`` commit; return (a predicate on the consumer that holds once
        it serves the commit, or None for a replace, and the commit's seconds)."""
        table = self.table()
        tag = 1000.0 * (self.round + 1)
        p = self._part(OPS.index(op))
        keys = self.live[p]
        t = time.perf_counter()
        check: Any = None
        if op == "partition_overwrite":
            table.overwrite(rows(keys, np.full(len(keys), p), tag),
                            overwrite_filter=EqualTo("part", p))
            k = int(keys[-1])
            check = (k, lambda r, k=k, tag=tag: r is not None and r.score == tag + k % 97)
        elif op == "delete":
            gone = keys[:max(1, int(self.n * DELETE_SHARE))]
            table.delete(In("id", gone.tolist()))
            self.live[p] = keys[len(gone):]
            check = (int(gone[-1]), lambda r: r is None)
        elif op == "upsert":
            size = min(UPSERT_ROWS, max(10, self.n // PARTS))
            half = min(size // 2, len(keys))
            new = np.arange(self.next_id, self.next_id + size - half, dtype=np.int64)
            self.next_id += len(new)
            ids = np.concatenate([keys[:half], new])
            table.upsert(rows(ids, np.full(len(ids), p), tag), join_cols=["id"])
            self.live[p] = np.concatenate([keys, new])
            k = int(keys[half - 1])
            check = (k, lambda r, k=k, tag=tag: r is not None and r.score == tag + k % 97)
        elif op == "append":
            new = np.arange(self.next_id, self.next_id + APPEND_ROWS, dtype=np.int64)
            self.next_id += len(new)
            table.append(rows(new, np.full(len(new), p), tag))  # the newest partition's
            self.live[p] = np.concatenate([keys, new])
            check = (int(new[-1]), lambda r: r is not None)
        else:
            compact(table, EqualTo("part", p))
        return check, time.perf_counter() - t


def cycle_seconds(log: Path, since: int) -> tuple[float, str] | None:
    """The daemon's last file-diff cycle after line ``since`` of its log: plan_s +
    total_s, and the plan kind."""
    text = log.read_text(errors="replace").splitlines()[since:]
    plan = [ln for ln in text if "event=read " in ln]
    done = daemon_published(log)
    if not plan or not done:
        return None
    fields = dict(f.split("=", 1) for f in plan[-1].split() if "=" in f and "'" not in f)
    return float(fields["plan_s"]) + done[-1]["total_s"], fields["plan"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    n = args.records
    started = time.monotonic()
    print(f"cycles benchmark: {n:,} rows in {PARTS} partitions; "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; load {load()}; "
          f"{versions('pyiceberg', 'pyarrow')}", flush=True)
    res: dict[str, dict[str, list[float]]] = {op: {"fast": [], "full": [], "serve": [],
                                                   "commit": []} for op in OPS}
    with tempfile.TemporaryDirectory(prefix="feedkit-bench-cycles-") as tmp:
        root = Path(tmp)
        step(f"writing the table ({n:,} rows)")
        work = Workload(root, n)
        full_daemon = Daemon(load_config(config(root, FEED_FULL, root / "store-full",
                                                root / "work-full")))
        full = full_daemon.runners[0]
        full.source.key = None  # no file diff: every change read whole
        step("the full-read feed's first version")
        if full.check() != "published":
            raise SystemExit(f"the full-read feed did not publish: {full.last_outcome}")
        store_dir, log = root / "store", root / "daemon.log"
        proc = start_daemon(config(root, FEED, store_dir, root / "work"), root, log)
        consumer = None
        try:
            wait_daemon((store_dir / names.announcement_key(FEED)).exists, 600,
                        "the first announcement", proc, log)
            wait_daemon(lambda: "event=watching" in log.read_text(errors="replace"), 60,
                        "the watch", proc, log)
            consumer = feedkit.Consumer(feedkit.open_store(str(store_dir)), feed=FEED,
                                        cache_dir=root / "cache", watch=True).open()
            for r in range(args.rounds + 1):
                work.round = r
                for op in OPS:
                    gc.collect()
                    lines = len(log.read_text(errors="replace").splitlines())
                    check, commit_s = work.commit(op)
                    t1 = time.perf_counter()
                    if check is not None:
                        key, served = check
                        t2 = poll_until(lambda key=key, served=served: served(
                            consumer.get(key)), proc, log, f"{op} round {r}")
                        got = cycle_seconds(log, lines)
                    else:  # a replace: no version; the daemon logs event=skipped
                        wait_daemon(lambda lines=lines: "event=skipped" in "".join(
                            log.read_text(errors="replace").splitlines()[lines:]), 60,
                            "the replace", proc, log)
                        t2, got = time.perf_counter(), None
                    t = time.perf_counter()
                    outcome = full.check()
                    full_s = time.perf_counter() - t
                    fast = got[0] if got else float("nan")
                    step(f"{'warm-up' if r == 0 else f'round {r}'} {op}: commit {commit_s:.2f} s; "
                         f"served {t2 - t1:.3f} s after it; daemon cycle {fast:.3f} s "
                         f"({got[1] if got else 'none'}); full-read cycle {full_s:.3f} s "
                         f"({outcome}, {full.freshness.as_dict()['last_plan']['kind']})")
                    if r:
                        res[op]["fast"].append(fast)
                        res[op]["full"].append(full_s)
                        res[op]["serve"].append(t2 - t1)
                        res[op]["commit"].append(commit_s)
            if len(consumer) != sum(len(v) for v in work.live.values()):
                raise SystemExit(f"the consumer serves {len(consumer)} records, the table "
                                 f"holds {sum(len(v) for v in work.live.values())}")
        finally:
            if consumer is not None:
                consumer.close()
            code = stop_daemon(proc, log)
            full_daemon.close()
        if code != 0:
            print(log_tail(log), file=sys.stderr)

    med = {op: {k: statistics.median(v) for k, v in d.items()} for op, d in res.items()}
    out = []
    for op in ("partition_overwrite", "delete", "upsert"):
        m = med[op]
        out.append(row(f"cycle_{op}", "s", m["fast"], "full-read cycle", m["full"],
                       GOAL_VS_FULL))
        out.append(row(f"serving_{op}", "s", m["serve"], None, None, GOAL_SERVING))
    out.append(row("serving_append", "s", med["append"]["serve"], None, None,
                   GOAL_APPEND_SERVING))
    out.append(row("cycle_replace", "s", med["replace"]["full"], None, None, GOAL_REPLACE))
    print()
    print_rows(out)
    print("commit seconds (pyiceberg's, outside every window): "
          + ", ".join(f"{op} {med[op]['commit']:.2f}" for op in OPS))
    path = write_rows(args.out or RESULTS / "cycles.json", out)
    print(f"wrote {path}; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
