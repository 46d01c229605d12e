"""Producer benchmark: feedkit's Iceberg cycles against a bare scan, and commit-to-consumer time.

Run::

    .venv/bin/python benchmarks/bench_producer.py [--rows 1000000] [--quick] [--cycles-only]

``--quick`` is 100k rows (``--records`` is another name for ``--rows``); ``--cycles-only``
runs parts 1 to 3 and skips the daemon and S3 parts (4 and 5). Everything runs against a real pyiceberg ``SqlCatalog`` on
SQLite with a local warehouse and a local feedkit store, in a temporary folder. The
table is Muse-like: ``movie_id`` int64 key, ``title`` string, ``year`` int32, ``score``
float64, ``country`` string, ``genres`` list<string> (1 to 3 short values). It is
written with ``write.target-file-size-bytes`` set so that it spans about
``FILES_PER_TABLE`` data files, as a real table would (an overwrite of a key range then
rewrites one file, not the whole table). Timings are reported, never asserted.
Results go to ``benchmarks/results/producer.json`` (``producer_quick.json`` with
``--quick``): a list of rows ``{name, unit, feedkit, peer, peer_value, ratio, goal,
met}``, ``ratio`` = feedkit / peer, ``goal`` the condition (on the ratio when it
ends in ``x``, else on feedkit's own value).

Method:

0. ``producer_first_publish``: the first cycle into an empty feed (load, plan, read,
   encode, write the base, compress the snapshot, upload, announce). Its peer is the
   full cycle's peer, the median pyarrow scan of the rounds below. The table is scanned
   and drained once, untimed, before it: a process's first Iceberg read pays one-time
   costs that the warm peer does not.
1. ``producer_full_cycle``: the steady state of the daemon on a table that is not only
   appended to. One long-lived ``Producer`` with a work dir (as the daemon keeps one
   per feed) has published the table; each round an Iceberg overwrite rewrites 1% of
   the rows (a key range, new ``score``), and the timed cycle is what the daemon does
   once it notices the snapshot: ``IcebergSource.load``, ``plan`` (-> "full"),
   ``read`` of the whole table and ``Producer.publish`` of it, which diffs against the
   last version and writes a delta (a snapshot too when one is due, every 10th
   version). This was chosen over "publish into a fresh feed" because a real full
   cycle always has a previous version to diff against. A cycle with a snapshot due
   costs more (it writes a whole base and compresses it): the median hides it, so the
   output lists every round that wrote a snapshot, and after the rounds one more
   overwrite is published by a producer restored with ``snapshot_every=1`` (a snapshot
   due on a full cycle), printed as "snapshot-due full cycle" with its steps. The peer is the same table
   read by pyiceberg, ``catalog.load_table(...).scan().to_arrow()`` (the load is in
   both windows; it costs milliseconds). For the breakdown, the same read through
   ``IcebergSource.read`` (a batch reader, as the cycle uses it) drained without
   encoding is timed as a reference: ``CycleReport.seconds["encode"]`` includes it,
   since the producer pulls batches from the reader as it encodes them.
2. ``producer_append_cycle``: each round also appends 1k rows with new keys to the
   table; the timed cycle is load, ``plan`` (-> "append"), ``read`` (incremental),
   ``Producer.can_append`` and ``Producer.append``. Its peer is the full cycle's median.
   Iceberg commits are the user's, not feedkit's: they are outside every window (their
   times are printed).
   Parts 1 and 2 run one warm-up round, then ``ROUNDS`` rounds; inside a round the
   full cycle, the scan and the reader drain run in rotating order. Medians are
   reported. The garbage collector stays on (the daemon runs with it) and is run
   between windows.
3. ``blob_size``: the first publish's snapshot blob (found by the store listing and
   checked against version 1's manifest) against the same rows and columns written by
   ``pyarrow.parquet.write_table(table, path, compression="zstd")`` at pyarrow's default
   zstd level (printed; 1 in pyarrow 26), in MiB. The producer's uncompressed state file
   (what a consumer memory-maps) is printed for reference.
4. ``propagation_local``: the real daemon (``feedkit-producer run``) as a subprocess,
   ``poll_interval = 5`` s so its watchdog wake-up is what is measured, and a watching
   ``Consumer`` (default ``poll_interval`` of 1 s, watchdog on the local store) in this
   process. Each round commits an Iceberg append of 100 rows with new keys and polls
   ``consumer.get(new_key)`` every 2 ms until it answers. The value is the time from
   just before the commit starts; the time from just after it returns is printed too.
   One warm-up round, then ``LIVE_APPENDS`` rounds, median. ``propagation_local_overwrite``
   is the same with a 1% overwrite (a full read and diff in the daemon), polling until
   a rewritten key shows its new score; one warm-up, then ``LIVE_OVERWRITES`` rounds.
   The peer is the goal itself (1 s). The daemon is stopped with SIGTERM and must
   exit 0.
5. ``propagation_s3``: the same append rounds (one warm-up, then ``LIVE_S3_APPENDS``)
   with the daemon publishing to S3 (``[store] url = "s3://..."``, ``endpoint_url``):
   moto's standalone server started by ``tests/s3server.py``'s ``S3Server``, or the
   server in ``FEEDKIT_S3_ENDPOINT`` (printed). The consumer here has no watch on S3:
   it polls the announcement every ``S3_POLL`` (P = 1 s, with jitter), so the goal and
   its peer are P + 1 s. The pause before each round is uniform over 0.5 .. 0.5 + P s,
   so that the commit lands at a random phase of the consumer's poll timer (which
   restarts at each swap; the local part's 0.5 .. 1 s pause would phase-lock the
   rounds to it). Each round is also split at the daemon's ``event=published``
   log line (wall clock, ms): commit -> published, published -> served.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import RESULTS, load, print_rows, row, step, versions, write_rows
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

import feedkit
from feedkit import names
from feedkit.manifest import Manifest
from feedkit.producer import CycleReport, Producer
from feedkit.producer.iceberg import IcebergSource, TablePosition

SEED = 20240611
NAMESPACE = "muse"
TABLE = "muse.titles"
FEED = "bench.producer"
FEED_LIVE = "bench.producer-live"
ROUNDS = 5
APPEND_ROWS = 1000  # rows per Iceberg append, part 2
OVERWRITE_SHARE = 0.01  # share of the rows rewritten by an overwrite
FILES_PER_TABLE = 8  # data files the initial table is written as
LIVE_APPENDS = 7
LIVE_OVERWRITES = 5
LIVE_APPEND_ROWS = 100
DAEMON_POLL = 5.0
POLL_SLEEP = 0.002  # seconds between consumer.get polls
S3_POLL = 1.0  # the S3 consumer's poll_interval (P): no watch on S3, it polls
LIVE_S3_APPENDS = 7
MiB = 1 << 20
PROPAGATION_TIMEOUT = 120.0
STARTUP_TIMEOUT = 300.0
COUNTRIES = ["US", "GB", "FR", "DE", "BR", "JP", "IN", "IT"]
GENRES = ["Drama", "Comedy", "Action", "Thriller", "Romance", "Horror", "Documentary",
          "Animation", "Sci-Fi", "Crime"]
SCHEMA = pa.schema([
    ("movie_id", pa.int64()),
    ("title", pa.string()),
    ("year", pa.int32()),
    ("score", pa.float64()),
    ("country", pa.string()),
    ("genres", pa.list_(pa.string())),
])
STEPS = ("encode", "diff", "write", "validate", "compress", "upload", "total")

GOAL_FULL_VS_SCAN = "<= 3x"
GOAL_FIRST_VS_SCAN = "<= 4x"
GOAL_APPEND_VS_FULL = "<= 0.1x"
GOAL_PROPAGATION_S = "<= 1 s"
GOAL_BLOB_VS_PARQUET = "<= 1.0x"
GOAL_PROPAGATION_S3 = f"<= {S3_POLL + 1:g} s"  # P + 1 s: one poll interval plus the work


# -- data -------------------------------------------------------------------------------


def generate(start: int, m: int, rng: np.random.Generator) -> pa.Table:
    """Rows ``start .. start+m-1``: key 10*i + 0..9 (sparse, ascending, disjoint per i)."""
    idx = np.arange(start, start + m, dtype=np.int64)
    ids = pa.array(idx * 10 + rng.integers(0, 10, m), pa.int64())
    title = pc.binary_join_element_wise("title", pc.cast(ids, pa.string()), " ")
    year = pa.array(rng.integers(1920, 2026, m, dtype=np.int32), pa.int32())
    score = pa.array(np.round(rng.random(m) * 10, 2), pa.float64())
    country = pa.array(COUNTRIES, pa.string()).take(
        pa.array(rng.integers(0, len(COUNTRIES), m, dtype=np.int32)))
    lengths = rng.integers(1, 4, m)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    values = pa.array(GENRES, pa.string()).take(
        pa.array(rng.integers(0, len(GENRES), int(lengths.sum()), dtype=np.int32)))
    genres = pa.ListArray.from_arrays(offsets, values)
    return pa.Table.from_arrays([ids, title, year, score, country, genres], schema=SCHEMA)


def catalog_properties(root: Path) -> dict[str, str]:
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog.db",
            "warehouse": f"file://{root}/warehouse"}


def make_catalog(root: Path) -> SqlCatalog:
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    props = catalog_properties(root)
    cat = SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})
    cat.create_namespace(NAMESPACE)
    return cat


class Workload:
    """The Iceberg side: the table and the commits the benchmark makes to it."""

    def __init__(self, catalog: SqlCatalog, n: int, seed: int) -> None:
        self.catalog = catalog
        self.n = n
        self.rng = np.random.default_rng(seed)
        data = generate(0, n, self.rng)
        self.base_ids = data.column("movie_id").to_numpy()
        self.next_index = n  # rows appended later take indexes from here: new keys
        target = max(1 << 20, data.nbytes // FILES_PER_TABLE + 1)
        table = catalog.create_table(TABLE, schema=SCHEMA, properties={
            "write.target-file-size-bytes": str(target)})
        table.append(data)
        self.initial = data  # the rows as first written (the blob size peer writes them)
        self.rows = n
        self.score_tag = 1000.0

    def table(self) -> Table:
        return self.catalog.load_table(TABLE)

    def files(self) -> int:
        return len(self.table().inspect.files())

    def new_rows(self, m: int) -> pa.Table:
        data = generate(self.next_index, m, self.rng)
        self.next_index += m
        return data

    def append(self, data: pa.Table) -> float:
        """Commit ``data`` as an append; return the commit's seconds."""
        table = self.table()
        data = data.cast(table.schema().as_arrow())
        t = time.perf_counter()
        table.append(data)
        elapsed = time.perf_counter() - t
        self.rows += data.num_rows
        return elapsed

    def overwrite_prepare(self) -> tuple[str, pa.Table, float]:
        """A key range of OVERWRITE_SHARE of the rows, read back with a new, distinct score."""
        count = max(1, int(self.n * OVERWRITE_SHARE))
        start = int(self.rng.integers(0, self.n - count))
        end = int(self.base_ids[start + count]) if start + count < self.n else 10 * self.n
        flt = f"movie_id >= {int(self.base_ids[start])} and movie_id < {end}"
        rows = self.table().scan(row_filter=flt).to_arrow()
        if rows.num_rows != count:
            raise SystemExit(f"overwrite: the key range holds {rows.num_rows} rows, "
                             f"expected {count}")
        self.score_tag += 1
        score = pa.array(np.full(rows.num_rows, self.score_tag), rows.schema.field("score").type)
        rows = rows.set_column(rows.schema.get_field_index("score"), "score", score)
        return flt, rows, self.score_tag

    def overwrite(self, flt: str, rows: pa.Table) -> float:
        table = self.table()
        t = time.perf_counter()
        table.overwrite(rows, overwrite_filter=flt)
        return time.perf_counter() - t


# -- parts 1 and 2: cycles in this process ----------------------------------------------


class Cycles:
    """What the daemon does for one feed after noticing a snapshot, step by step."""

    def __init__(self, store: feedkit.BlobStore, catalog: SqlCatalog, work_dir: Path) -> None:
        self.catalog = catalog
        self.work_dir = work_dir
        self.source = IcebergSource(catalog, TABLE, feed=FEED)
        self.producer = Producer(store, feed=FEED, primary_key="movie_id", work_dir=work_dir)
        self.published: TablePosition | None = None

    def cycle(self, expect: str) -> tuple[float, CycleReport]:
        """One cycle (seconds, report); ``expect`` is the plan it must make."""
        gc.collect()
        t = time.perf_counter()
        table = self.source.load()
        plan = self.source.plan(table, self.published)
        if plan.kind != expect:
            raise SystemExit(f"the cycle planned {plan.kind!r} ({plan.reason}), "
                             f"expected {expect!r}")
        reader = self.source.read(table, plan)
        source = self.source.source(table, plan.position)
        if plan.kind == "append":
            if not self.producer.can_append(reader.schema):
                raise SystemExit("Producer.can_append refused the appended rows' schema")
            version = self.producer.append(reader, source=source)
        else:
            version = self.producer.publish(reader, source=source)
        elapsed = time.perf_counter() - t
        report = self.producer.last_report
        assert report is not None
        if version is None:
            raise SystemExit(f"the {plan.kind} cycle published nothing")
        self.published = plan.position
        return elapsed, report

    def scan(self) -> tuple[float, int]:
        """The peer: pyiceberg's own read of the whole table into Arrow."""
        gc.collect()
        t = time.perf_counter()
        arrow = self.catalog.load_table(TABLE).scan().to_arrow()
        return time.perf_counter() - t, arrow.num_rows

    def drain(self) -> tuple[float, int]:
        """The read the full cycle does (IcebergSource.read's batch reader), not encoded."""
        gc.collect()
        t = time.perf_counter()
        table = self.source.load()
        plan = self.source.plan(table, None)
        rows = sum(b.num_rows for b in self.source.read(table, plan))
        return time.perf_counter() - t, rows

    def snapshot_due_cycle(self, store: feedkit.BlobStore, work: Workload) -> tuple[float, CycleReport]:
        """One more overwrite, published by a producer restored from the work dir with
        ``snapshot_every=1``: a full cycle with a snapshot due (it takes over the feed)."""
        self.producer.close()
        self.producer = Producer(store, feed=FEED, primary_key="movie_id",
                                 work_dir=self.work_dir, snapshot_every=1)
        self.producer.restore()
        flt, rows, _ = work.overwrite_prepare()
        work.overwrite(flt, rows)
        elapsed, report = self.cycle("full")
        if not report.snapshot or report.changed != rows.num_rows:
            raise SystemExit(f"the snapshot-due cycle: snapshot={report.snapshot}, "
                             f"changed={report.changed}; expected a snapshot and "
                             f"{rows.num_rows} changed")
        return elapsed, report

    def restore_time(self, store: feedkit.BlobStore) -> float:
        """A fresh producer restoring the last version from the work dir (daemon start)."""
        fresh = Producer(store, feed=FEED, primary_key="movie_id", work_dir=self.work_dir)
        t = time.perf_counter()
        fresh.restore()
        elapsed = time.perf_counter() - t
        fresh.close()
        return elapsed


def bench_cycles(work: Workload, cycles: Cycles) -> dict[str, Any]:
    """Parts 1 and 2: one warm-up round then ROUNDS rounds."""
    res: dict[str, list[Any]] = {k: [] for k in (
        "full", "full_report", "scan", "drain", "append", "append_report",
        "overwrite_commit", "append_commit")}
    step(f"cycles: one warm-up round, then {ROUNDS} rounds (overwrite {OVERWRITE_SHARE:.0%} "
         f"-> full cycle, scan, drain in rotating order; append {APPEND_ROWS:,} -> append cycle)")
    for r in range(ROUNDS + 1):
        flt, rows, _ = work.overwrite_prepare()
        ow_commit = work.overwrite(flt, rows)
        out: dict[str, Any] = {}

        def full(out: dict[str, Any] = out, changed: int = rows.num_rows) -> None:
            out["full"], rep = cycles.cycle("full")
            if (rep.changed, rep.added, rep.removed, rep.rows_read) != (changed, 0, 0, work.rows):
                raise SystemExit(f"full cycle: changed={rep.changed} added={rep.added} "
                                 f"removed={rep.removed} rows_read={rep.rows_read}; expected "
                                 f"changed={changed}, rows_read={work.rows}")
            out["full_report"] = rep

        def scan(out: dict[str, Any] = out) -> None:
            out["scan"], got = cycles.scan()
            if got != work.rows:
                raise SystemExit(f"scan read {got} rows, expected {work.rows}")

        def drain(out: dict[str, Any] = out) -> None:
            out["drain"], got = cycles.drain()
            if got != work.rows:
                raise SystemExit(f"drain read {got} rows, expected {work.rows}")

        runs: list[Callable[[], None]] = [full, scan, drain]
        for run in runs[r % 3:] + runs[:r % 3]:
            run()

        ap_commit = work.append(work.new_rows(APPEND_ROWS))
        out["append"], rep = cycles.cycle("append")
        if (rep.added, rep.rows_read, rep.record_count) != (APPEND_ROWS, APPEND_ROWS, work.rows):
            raise SystemExit(f"append cycle: added={rep.added} rows_read={rep.rows_read} "
                             f"records={rep.record_count}")
        out["append_report"] = rep
        out["overwrite_commit"], out["append_commit"] = ow_commit, ap_commit
        fr, ar = out["full_report"], out["append_report"]
        step(f"{'warm-up' if r == 0 else f'round {r}'}: full cycle {out['full']:.3f} s"
             f"{' (+snapshot)' if fr.snapshot else ''}, scan {out['scan']:.3f} s, drain "
             f"{out['drain']:.3f} s, append cycle {out['append']:.3f} s"
             f"{' (+snapshot)' if ar.snapshot else ''}; commits: overwrite {ow_commit:.3f} s, "
             f"append {ap_commit:.3f} s")
        if r:
            for k, v in out.items():
                res[k].append(v)
    return res


# -- part 3: blob size ------------------------------------------------------------------


def bench_blob_size(store: feedkit.BlobStore, store_dir: Path, work_dir: Path, version: int,
                    data: pa.Table, root: Path) -> dict[str, Any]:
    """The first publish's snapshot blob (from the store listing and the manifest) against
    the same rows written by ``pyarrow.parquet.write_table(..., compression="zstd")``."""
    key = names.snapshot_key(FEED, version)
    listed = store.list(f"{FEED}/snapshots/")
    if key not in listed:
        raise SystemExit(f"the first publish's snapshot {key} is not in the store listing "
                         f"{listed}")
    manifest = Manifest.from_bytes(store.get_bytes(names.manifest_key(FEED, version)),
                                   names.manifest_key(FEED, version))
    if manifest.snapshot is None or manifest.snapshot.key != key:
        raise SystemExit(f"version {version}'s manifest names snapshot {manifest.snapshot}, "
                         f"expected {key}")
    on_disk = (store_dir / key).stat().st_size
    if on_disk != manifest.snapshot.size:
        raise SystemExit(f"snapshot {key}: {on_disk} bytes in the store, the manifest says "
                         f"{manifest.snapshot.size}")
    state = work_dir / f"{version:020d}.state"  # the producer's uncompressed state file
    state_size = state.stat().st_size if state.exists() else None

    path = root / "peer.parquet"
    level = pa.Codec.default_compression_level("zstd")
    t = time.perf_counter()
    pq.write_table(data, path, compression="zstd")
    parquet_s = time.perf_counter() - t
    back = pq.read_metadata(path)
    if back.num_rows != manifest.record_count or back.num_columns != len(data.schema):
        raise SystemExit(f"parquet peer: {back.num_rows} rows x {back.num_columns} columns, "
                         f"the snapshot {manifest.record_count} records")
    return {"snapshot": on_disk, "raw": manifest.snapshot.raw_size, "state": state_size,
            "parquet": path.stat().st_size, "parquet_level": level, "parquet_s": parquet_s,
            "row_groups": back.num_row_groups, "arrow": data.nbytes}


# -- part 4: the daemon and a watching consumer -----------------------------------------


def write_config(root: Path, name: str, store_url: str, work_dir: Path,
                 endpoint_url: str | None = None) -> Path:
    lines = ["[store]", f'url = "{store_url}"']
    if endpoint_url:
        lines.append(f'endpoint_url = "{endpoint_url}"')
    lines += ["", "[catalog]", 'name = "local"']
    lines += [f'{k} = "{v}"' for k, v in catalog_properties(root).items()]
    lines += ["", "[producer]", f'work_dir = "{work_dir}"', "",
              "[[feed]]", f'name = "{FEED_LIVE}"', f'table = "{TABLE}"',
              'primary_key = "movie_id"', f"poll_interval = {DAEMON_POLL}"]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes],
             log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode} while waiting for "
                             f"{what}; its log:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}; daemon "
                             f"log:\n{log_tail(log)}")
        time.sleep(0.05)


def poll_until(cond: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               what: str) -> float:
    """Poll ``cond`` every POLL_SLEEP seconds; return perf_counter when it holds."""
    deadline = time.perf_counter() + PROPAGATION_TIMEOUT
    while True:
        if cond():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit(f"{what} did not reach the consumer within "
                             f"{PROPAGATION_TIMEOUT:.0f} s; daemon log:\n{log_tail(log)}")
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode} during {what}; "
                             f"its log:\n{log_tail(log)}")
        time.sleep(POLL_SLEEP)


_PUBLISHED = re.compile(r"^(\S+)Z .*?event=published (.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


def daemon_published(log: Path) -> list[dict[str, Any]]:
    """Every event=published line of the daemon's log: its fields, ``wall`` (the line's
    UTC timestamp as epoch seconds, ms resolution), ``rows_read`` and ``total_s``."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _PUBLISHED.search(line)
        if m:
            fields: dict[str, Any] = dict(_FIELD.findall(m.group(2)))
            fields["wall"] = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                tzinfo=dt.UTC).timestamp()
            fields["rows_read"] = int(fields["rows_read"])
            fields["total_s"] = float(fields["total_s"])
            out.append(fields)
    return out


def daemon_cycles(log: Path) -> list[tuple[int, float]]:
    """(rows_read, total_s) of every event=published line in the daemon's log."""
    return [(p["rows_read"], p["total_s"]) for p in daemon_published(log)]


def start_daemon(config: Path, live: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("feedkit-producer")
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the package (make test or pip install -e .)")
    with open(log, "wb") as log_file:
        return subprocess.Popen([str(exe), "run", "--config", str(config)], stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=live)


def stop_daemon(proc: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM the daemon (if it still runs) and return its exit code (expected 0)."""
    if proc.poll() is None:
        step("stopping the daemon with SIGTERM")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SystemExit(f"the daemon did not stop within 60 s of SIGTERM; its log:\n"
                             f"{log_tail(log)}") from None
    if proc.returncode != 0:
        print(f"WARNING: the daemon exited with {proc.returncode} after SIGTERM (expected 0); "
              f"its log:\n{log_tail(log)}", file=sys.stderr)
    return proc.returncode


def wait_ready(proc: subprocess.Popen[bytes], log: Path, announced: Callable[[], bool]) -> None:
    """Until the daemon has announced its first version and watches the metadata folder."""
    wait_for(announced, STARTUP_TIMEOUT, "the first announcement", proc, log)
    wait_for(lambda: "event=watching" in log.read_text(errors="replace"), STARTUP_TIMEOUT,
             "the daemon's watch on the metadata folder", proc, log)


class Idle:
    """Sleep between rounds (uniform over ``low .. high`` seconds: the daemon idle, waiting
    on its poll timer), counting this process's CPU meanwhile (a consumer's refresher
    should use next to none)."""

    def __init__(self, seed: int, low: float = 0.5, high: float = 1.0) -> None:
        self.rnd = random.Random(seed)
        self.low, self.high = low, high
        self.wall = self.cpu = 0.0

    def __call__(self) -> None:
        seconds = self.rnd.uniform(self.low, self.high)
        cpu = time.process_time()
        time.sleep(seconds)
        self.wall += seconds
        self.cpu += time.process_time() - cpu

    @property
    def share(self) -> float:
        return self.cpu / self.wall if self.wall else float("nan")


def append_rounds(feed: feedkit.Consumer, work: Workload, proc: subprocess.Popen[bytes],
                  log: Path, rounds: int, idle: Idle) -> list[tuple[float, ...]]:
    """One warm-up then ``rounds`` appends of LIVE_APPEND_ROWS new keys, each polled until
    the consumer serves the last one. Per round: (seconds from before the commit, from
    after it, the commit's seconds, wall clock before the commit, after it, when served)."""
    out: list[tuple[float, ...]] = []
    for r in range(rounds + 1):
        idle()
        data = work.new_rows(LIVE_APPEND_ROWS)
        key = int(data.column("movie_id")[-1].as_py())
        if feed.get(key) is not None:
            raise SystemExit(f"key {key} is already served before its append")

        # feed.get is looked up on every poll: the consumer rebinds it on each swap.
        def arrived(key: int = key) -> bool:
            return feed.get(key) is not None

        w0, t0 = time.time(), time.perf_counter()
        work.append(data)
        w1, t1 = time.time(), time.perf_counter()
        t2 = poll_until(arrived, proc, log, f"append round {r}")
        w2 = time.time()
        step(f"{'warm-up' if r == 0 else f'append {r}'}: {t2 - t0:.3f} s from before the "
             f"commit, {t2 - t1:.3f} s from after it (commit {t1 - t0:.3f} s)")
        if r:
            out.append((t2 - t0, t2 - t1, t1 - t0, w0, w1, w2))
    return out


def bench_propagation(root: Path, work: Workload) -> dict[str, Any]:
    """Part 4: the real daemon as a subprocess, a watching consumer here (local store)."""
    live = root / "live"
    live.mkdir()
    store_dir, log = live / "store", live / "daemon.log"
    config = write_config(root, "producer.toml", str(store_dir), live / "work")
    step(f"starting feedkit-producer run (poll_interval {DAEMON_POLL:g} s); initial publish "
         f"of {work.rows:,} rows")
    t_start = time.perf_counter()
    proc = start_daemon(config, live, log)
    res: dict[str, Any] = {"append": [], "overwrite": []}
    consumer: feedkit.Consumer | None = None
    try:
        announcement = store_dir / names.announcement_key(FEED_LIVE)
        wait_ready(proc, log, announcement.exists)
        res["startup_s"] = time.perf_counter() - t_start
        store = feedkit.open_store(str(store_dir))
        t = time.perf_counter()
        feed = feedkit.Consumer(store, feed=FEED_LIVE, cache_dir=live / "cache",
                                watch=True).open()
        consumer = feed
        res["consumer_open_s"] = time.perf_counter() - t
        if len(feed) != work.rows:
            raise SystemExit(f"the consumer serves {len(feed)} records, the table holds "
                             f"{work.rows}")
        idle = Idle(SEED)

        step(f"propagation: append {LIVE_APPEND_ROWS} rows, one warm-up + {LIVE_APPENDS} rounds")
        res["append"] = append_rounds(feed, work, proc, log, LIVE_APPENDS, idle)

        step(f"propagation: overwrite {OVERWRITE_SHARE:.0%} of the rows, one warm-up + "
             f"{LIVE_OVERWRITES} rounds")
        for r in range(LIVE_OVERWRITES + 1):
            idle()
            flt, rows, tag = work.overwrite_prepare()
            key = int(rows.column("movie_id")[-1].as_py())

            def moved(key: int = key, tag: float = tag) -> bool:
                rec = feed.get(key)
                return rec is not None and rec.score == tag

            t0 = time.perf_counter()
            work.overwrite(flt, rows)
            t1 = time.perf_counter()
            t2 = poll_until(moved, proc, log, f"overwrite round {r}")
            step(f"{'warm-up' if r == 0 else f'overwrite {r}'}: {t2 - t0:.3f} s from before "
                 f"the commit, {t2 - t1:.3f} s from after it (commit {t1 - t0:.3f} s)")
            if r:
                res["overwrite"].append((t2 - t0, t2 - t1, t1 - t0))
        if len(feed) != work.rows:
            raise SystemExit(f"the consumer serves {len(feed)} records at the end, the "
                             f"table holds {work.rows}")
        res["idle_cpu"] = idle.share
    finally:
        if consumer is not None:
            consumer.close()
        res["exit_code"] = stop_daemon(proc, log)
    published = daemon_cycles(log)[1:]  # the first is the initial publish
    res["daemon_append_s"] = [s for n, s in published if n == LIVE_APPEND_ROWS][1:]
    res["daemon_full_s"] = [s for n, s in published if n != LIVE_APPEND_ROWS][1:]
    res["log"] = log.read_text(errors="replace")
    return res


def s3_server() -> Any:
    """tests/s3server.py's S3Server (moto on 127.0.0.1, or FEEDKIT_S3_ENDPOINT)."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    sys.path.insert(0, tests)
    try:
        from s3server import S3Server
    finally:
        sys.path.remove(tests)
    return S3Server()


def bench_propagation_s3(root: Path, work: Workload, rounds: int) -> dict[str, Any]:
    """Part 5: the daemon publishing to S3, a polling consumer (poll_interval S3_POLL) here."""
    live = root / "live-s3"
    live.mkdir()
    log = live / "daemon.log"
    t = time.perf_counter()
    server = s3_server()
    res: dict[str, Any] = {"append": [], "server": server.kind, "endpoint": server.endpoint,
                           "server_start_s": time.perf_counter() - t}
    consumer: feedkit.Consumer | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        url = server.url()
        res["url"] = url
        step(f"S3: {'moto standalone server (tests/s3server.py)' if server.kind == 'moto' else 'FEEDKIT_S3_ENDPOINT'}"
             f" at {server.endpoint}, store {url}, up in {res['server_start_s']:.2f} s")
        store = feedkit.open_store(url, endpoint_url=server.endpoint)
        config = write_config(root, "producer-s3.toml", url, live / "work", server.endpoint)
        step(f"starting feedkit-producer run on S3 (poll_interval {DAEMON_POLL:g} s); initial "
             f"publish of {work.rows:,} rows")
        t_start = time.perf_counter()
        proc = start_daemon(config, live, log)
        announcement = names.announcement_key(FEED_LIVE)
        wait_ready(proc, log, lambda: store.exists(announcement))
        res["startup_s"] = time.perf_counter() - t_start
        t = time.perf_counter()
        feed = feedkit.Consumer(store, feed=FEED_LIVE, cache_dir=live / "cache", watch=True,
                                poll_interval=S3_POLL).open()
        consumer = feed
        res["consumer_open_s"] = time.perf_counter() - t
        if len(feed) != work.rows:
            raise SystemExit(f"the consumer serves {len(feed)} records, the table holds "
                             f"{work.rows}")
        # A polling consumer's timer restarts at each swap, and a round starts right after
        # one: a pause spanning a whole poll interval puts the commit at a random phase
        # of that timer (a shorter one would phase-lock the rounds to it).
        idle = Idle(SEED + 1, 0.5, 0.5 + S3_POLL)
        step(f"propagation on S3: append {LIVE_APPEND_ROWS} rows, consumer poll_interval "
             f"{S3_POLL:g} s, one warm-up + {rounds} rounds")
        res["append"] = append_rounds(feed, work, proc, log, rounds, idle)
        if len(feed) != work.rows:
            raise SystemExit(f"the consumer serves {len(feed)} records at the end, the "
                             f"table holds {work.rows}")
        res["idle_cpu"] = idle.share
    finally:
        if consumer is not None:
            consumer.close()
        if proc is not None:
            res["exit_code"] = stop_daemon(proc, log)
        server.stop()
        moto_log = getattr(server, "log", None)  # S3Server.stop() leaves its temp folder
        if server.kind == "moto" and moto_log is not None:
            shutil.rmtree(moto_log.parent, ignore_errors=True)
    # Split each round at the daemon's event=published line (wall clock, ms): commit end
    # -> published (the daemon notices, reads, uploads, announces), published -> served
    # (the consumer's next poll, its download and swap).
    published = daemon_published(log)[1:]
    res["daemon_append_s"] = [p["total_s"] for p in published
                              if p["rows_read"] == LIVE_APPEND_ROWS][1:]
    res["daemon_upload_s"] = [float(p.get("upload_s", "nan")) for p in published
                              if p["rows_read"] == LIVE_APPEND_ROWS][1:]
    split = []
    for x in res["append"]:
        w0, w1, w2 = x[3], x[4], x[5]
        hits = [p["wall"] for p in published if w0 - 0.002 <= p["wall"] <= w2 + 0.002]
        if len(hits) == 1:
            split.append((hits[0] - w1, w2 - hits[0]))
    res["split"] = split
    return res


# -- report -----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def breakdown(reports: list[CycleReport], elapsed: list[float]) -> str:
    """Median seconds per step, and the part of the cycle outside Producer (load, plan)."""
    parts = [f"{s} {med([r.seconds.get(s, 0.0) for r in reports]):.3f}" for s in STEPS]
    outside = med([e - r.seconds.get("total", 0.0) for e, r in zip(elapsed, reports,
                                                                    strict=True)])
    return ", ".join(parts) + f"; outside Producer (load, plan, read setup) {outside:.3f}"


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rows", "--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k rows")
    ap.add_argument("--cycles-only", action="store_true",
                    help="parts 1 to 3 only (no daemon, no S3)")
    ap.add_argument("--out", type=Path, help="where to write the JSON rows")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.rows
    if n < 1000:
        ap.error("--rows must be >= 1000")
    s3_rounds = LIVE_S3_APPENDS

    now = dt.datetime.now().astimezone()
    print(f"feedkit producer benchmark, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()} "
          f"({platform.python_implementation()})")
    print(f"versions: {versions('pyarrow', 'pyiceberg', 'numpy', 'zstandard', 'watchdog')}")
    print(f"load average at start: {load()} (other work on the machine skews the figures)")
    print(f"rows: {n:,} (seed {SEED}); rounds: {ROUNDS} (+1 warm-up); overwrite share "
          f"{OVERWRITE_SHARE:.0%}; appends of {APPEND_ROWS:,} rows; propagation: "
          f"{LIVE_APPENDS} appends of {LIVE_APPEND_ROWS}, {LIVE_OVERWRITES} overwrites; "
          f"S3: {s3_rounds} appends, consumer poll_interval {S3_POLL:g} s")
    print(flush=True)

    root = Path(tempfile.mkdtemp(prefix="feedkit-bench-producer-"))
    info: dict[str, Any] = {}
    try:
        step(f"creating the Iceberg table with {n:,} rows")
        t = time.perf_counter()
        catalog = make_catalog(root)
        work = Workload(catalog, n, SEED)
        info["create_s"] = time.perf_counter() - t
        info["files"] = work.files()

        store = feedkit.open_store(str(root / "store"))
        cycles = Cycles(store, catalog, root / "work")
        # The process's first Iceberg read pays one-time costs (lazy imports, the first
        # file IO) that the peer, measured later and warm, does not: read once untimed.
        cycles.scan()
        cycles.drain()
        step("initial publish (first version: a snapshot, no diff)")
        info["first_s"], info["first_report"] = cycles.cycle("full")
        step("blob size: the first snapshot vs the same rows as Parquet (zstd)")
        blob = bench_blob_size(store, root / "store", root / "work",
                               info["first_report"].version, work.initial, root)
        del work.initial

        res = bench_cycles(work, cycles)
        step("a snapshot-due full cycle (a producer restored with snapshot_every=1)")
        info["snap_s"], info["snap_report"] = cycles.snapshot_due_cycle(store, work)
        info["files_after"] = work.files()
        info["restore_s"] = cycles.restore_time(store)

        # The published feed answers what the table holds.
        with feedkit.Consumer(store, feed=FEED, cache_dir=root / "cache", watch=False) as feed:
            if len(feed) != work.rows:
                raise SystemExit(f"feed holds {len(feed)} records, the table {work.rows}")
            sample = work.table().scan(limit=1000).to_arrow().to_pylist()
            for rec in sample:
                got = feed.get(rec["movie_id"])
                if got is None or got._asdict() != rec:
                    raise SystemExit(f"feed.get({rec['movie_id']}) = {got!r}, table has {rec!r}")
        cycles.producer.close()

        live = s3 = None
        if not args.cycles_only:
            live = bench_propagation(root, work)
            s3 = bench_propagation_s3(root, work, s3_rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    full, scan, drain, app = (med(res[k]) for k in ("full", "scan", "drain", "append"))
    rows = [
        row("producer_first_publish", "s", info["first_s"], "pyarrow scan", scan,
            GOAL_FIRST_VS_SCAN),
        row("producer_full_cycle", "s", full, "pyarrow scan", scan, GOAL_FULL_VS_SCAN),
        row("producer_full_cycle", "s", full, "iceberg batch reader", drain, None),
        row("producer_append_cycle", "s", app, "full cycle", full, GOAL_APPEND_VS_FULL),
        row("blob_size", "MiB", blob["snapshot"] / MiB, "parquet-zstd", blob["parquet"] / MiB,
            GOAL_BLOB_VS_PARQUET),
    ]
    if live is not None and s3 is not None:
        prop_app = med([x[0] for x in live["append"]])
        prop_ow = med([x[0] for x in live["overwrite"]])
        prop_s3 = med([x[0] for x in s3["append"]])
        rows += [
            row("propagation_local", "s", prop_app, "goal 1 s", 1.0, GOAL_PROPAGATION_S),
            row("propagation_local_overwrite", "s", prop_ow, "goal 1 s", 1.0,
                GOAL_PROPAGATION_S),
            row("propagation_s3", "s", prop_s3, f"goal {S3_POLL + 1:g} s", S3_POLL + 1,
                GOAL_PROPAGATION_S3),
        ]

    first: CycleReport = info["first_report"]
    first_steps = ", ".join(f"{k} {v:.3f}" for k, v in first.seconds.items())
    print()
    print(f"setup (not goals): table of {n:,} rows in {info['files']} data files, created in "
          f"{info['create_s']:.2f} s ({info['files_after']} files after the rounds); first "
          f"publish {info['first_s']:.3f} s ({first_steps}); "
          f"restore from the work dir {info['restore_s'] * 1000:.1f} ms")
    print(f"full cycle (median of {ROUNDS}): {full:.3f} s; steps (median s): "
          f"{breakdown(res['full_report'], res['full'])}")
    print(f"  encode includes the Iceberg read: the batch reader alone takes {drain:.3f} s "
          f"(median), the bare scan (load + scan().to_arrow()) {scan:.3f} s")
    print(f"  first publish {info['first_s'] / scan:.2f}x the scan; full cycle, mean of the "
          f"{ROUNDS} rounds (the snapshot rounds in it) {statistics.fmean(res['full']):.3f} s")
    for kind in ("full", "append"):
        for i, (e, r) in enumerate(zip(res[kind], res[f"{kind}_report"], strict=True)):
            if r.snapshot:
                print(f"  round {i + 1}'s {kind} cycle also wrote a snapshot: {e:.3f} s "
                      f"({steps_of(r)})")
    snap_s, snap_r = info["snap_s"], info["snap_report"]
    print(f"snapshot-due full cycle (one, snapshot_every=1): {snap_s:.3f} s = "
          f"{snap_s / scan:.2f}x the scan ({steps_of(snap_r)}; outside Producer "
          f"{snap_s - snap_r.seconds.get('total', 0.0):.3f})")
    print(f"append cycle (median of {ROUNDS}): {app:.3f} s; steps (median s): "
          f"{breakdown(res['append_report'], res['append'])}")
    print(f"Iceberg commits (outside the windows, median): overwrite of {OVERWRITE_SHARE:.0%} "
          f"{med(res['overwrite_commit']):.3f} s, append of {APPEND_ROWS:,} "
          f"{med(res['append_commit']):.3f} s")
    if live is not None and s3 is not None:
        print_live(live, s3, prop_s3)
    print(f"blob size: the first snapshot {blob['snapshot'] / MiB:.2f} MiB (zstd level "
          f"{cycles.producer.compression_level}, raw {blob['raw'] / MiB:.2f} MiB); the same "
          f"{n:,} rows x {len(SCHEMA)} columns as Parquet, pyarrow.parquet.write_table("
          f"compression=\"zstd\") at the default level {blob['parquet_level']}: "
          f"{blob['parquet'] / MiB:.2f} MiB ({blob['row_groups']} row groups, written in "
          f"{blob['parquet_s']:.3f} s); for reference: the state file (uncompressed, what a "
          f"consumer maps) "
          + (f"{blob['state'] / MiB:.2f} MiB" if blob["state"] is not None else "not found")
          + f", the Arrow table in memory {blob['arrow'] / MiB:.2f} MiB")
    print(f"ratio = feedkit / peer; propagation rows compare against the goal itself (1 s; "
          f"P + 1 s = {S3_POLL + 1:g} s on S3)")
    print()
    print_rows(rows)
    print(f"\nload average at end: {load()}")

    out_dir = RESULTS
    out_dir.mkdir(exist_ok=True)
    out = write_rows(args.out or out_dir / ("producer_quick.json" if args.quick else "producer.json"), rows)
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    if live is None or s3 is None:
        return 0
    return 0 if live["exit_code"] == 0 and s3.get("exit_code") == 0 else 1


def steps_of(report: CycleReport) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in report.seconds.items())


def print_live(live: dict[str, Any], s3: dict[str, Any], prop_s3: float) -> None:
    """The daemon and S3 parts' lines."""
    for kind, items, daemon_s in (("append", live["append"], live["daemon_append_s"]),
                                  ("overwrite", live["overwrite"], live["daemon_full_s"])):
        print(f"propagation, {kind} (median of {len(items)}): {med([x[0] for x in items]):.3f} s "
              f"from before the commit, {med([x[1] for x in items]):.3f} s from after it; "
              f"commit {med([x[2] for x in items]):.3f} s; daemon cycle (total_s) "
              f"{med(daemon_s):.3f} s; all from before: "
              f"{', '.join(f'{x[0]:.3f}' for x in items)}")
    print(f"daemon: up and watching after {live['startup_s']:.2f} s (includes the initial "
          f"publish); consumer open {live['consumer_open_s']:.3f} s; exit code after SIGTERM "
          f"{live['exit_code']}")
    print(f"benchmark process CPU between propagation rounds (idle, a watching consumer): "
          f"{live['idle_cpu']:.0%} of a core")
    items = s3["append"]
    print(f"propagation on S3 ({s3['server']} at {s3['endpoint']}; consumer poll_interval "
          f"{S3_POLL:g} s, median of {len(items)}): {prop_s3:.3f} s from before the commit, "
          f"{med([x[1] for x in items]):.3f} s from after it; commit "
          f"{med([x[2] for x in items]):.3f} s; daemon cycle (total_s) "
          f"{med(s3['daemon_append_s']):.3f} s, of which upload {med(s3['daemon_upload_s']):.3f}"
          f" s; all from before: {', '.join(f'{x[0]:.3f}' for x in items)}")
    if s3["split"]:
        print(f"  split at the daemon's published log line (ms clock, {len(s3['split'])} "
              f"rounds, median): commit end -> published {med([a for a, _ in s3['split']]):.3f}"
              f" s, published -> served {med([b for _, b in s3['split']]):.3f} s (the "
              f"consumer's poll wait, download and swap; the wait alone averages about P/2)")
    print(f"  S3 server up in {s3['server_start_s']:.2f} s; daemon up and watching after "
          f"{s3['startup_s']:.2f} s (includes the initial publish to S3); consumer open "
          f"{s3['consumer_open_s']:.3f} s; exit code after SIGTERM {s3.get('exit_code')}; "
          f"benchmark process CPU between rounds (a polling consumer) {s3['idle_cpu']:.0%} "
          f"of a core")


if __name__ == "__main__":
    sys.exit(main())
