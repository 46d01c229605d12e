"""A seeded random-operations harness: the daemon's feed always equals a full read of its table.

``run_sequence(root, seed, ops, partitioning=...)`` makes a real pyiceberg SqlCatalog on
SQLite under ``root``, a table keyed by ``id`` (int64, unique, non-null) with a few value
columns, and a :class:`feedkit.producer.daemon.Daemon` over a local ``file://`` store with a
work dir. It then runs ``ops`` operations chosen by ``random.Random(seed)``, each a real
pyiceberg call (append, overwrite with a filter, dynamic partition overwrite, delete, upsert,
schema evolution, snapshot expiry, rollback, a no-op overwrite) or a daemon restart, now and
then two or three of them before one cycle. After each cycle (``FeedRunner.check()`` on the
daemon's one runner) it reads the whole feed through a real :class:`feedkit.Consumer` and
compares it with ``table.scan().to_arrow()``:

- the check's outcome is ``published``, ``unchanged`` or ``idle``;
- the feed holds the table's keys, and each record's ``_asdict()`` equals the table's row
  (column by column, in the table's current schema and column order);
- the consumer's version moved iff the table's rows or columns changed since the last cycle
  (an op that changes no row, an expiry, a compaction, a restart publishes nothing).

Only public behaviour is looked at (the outcome of a check, what a consumer serves), so the
harness holds for any way the producer plans a cycle (full reads, appended files, file diffs).

Two ops use this folder's ``iceberg_ops`` helpers (pyiceberg's public API cannot write their
snapshots): ``compact`` (a ``replace`` snapshot: other files, the same rows) and
``position_delete`` (merge-on-read position deletes). Equality deletes are left out: pyiceberg
0.12 cannot scan a table holding them, so there is no full read to compare with.

pyiceberg 0.12 writes bucket/day/... partitioned tables only with pyiceberg-core installed
(not here): ``table.append``, ``overwrite``, ``upsert`` and a ``delete`` that must rewrite a
file raise NotInstalledError on them. On the ``bucket`` and ``day`` sequences those writes
then go through ``iceberg_ops.append`` and ``position_delete`` (an overwrite becomes a delete
and an append, an upsert a position delete of the changed keys and an append), each counted
in ``Summary.limits``; with pyiceberg-core installed they are pyiceberg's own calls.
pyiceberg 0.12's ``upsert`` also fails on a table whose current snapshot was written in an
older schema (see ``known_limit``): such an upsert is counted there and another op drawn.

Each op also says what rows it means to leave (``expected``); when pyiceberg leaves others
the difference is kept in ``Summary.notes`` (a fact about pyiceberg, not about feedkit: the
feed is still compared with what the table reads).

A failure raises AssertionError naming the seed, the partitioning, the op index, the ops so
far, the first differing key and the log of the last check, so that the sequence replays with
the same arguments.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NotInstalledError
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

import feedkit
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon, FeedRunner

from .conftest import catalog_properties
from .iceberg_ops import append as python_append
from .iceberg_ops import compact, position_delete

__all__ = ["PARTITIONINGS", "Summary", "run_sequence"]

PARTITIONINGS = ("none", "identity", "bucket", "day")
TABLE = "harness.items"
FEED = "harness.items"
OK_OUTCOMES = ("published", "unchanged", "idle")

# Field ids of the columns the harness gives a role; names are looked up by id, since a
# schema change may rename any of them but the key.
ID, NAME, SCORE, QTY, TS, PART = 1, 2, 3, 4, 5, 6
ROLES = (ID, TS, PART)  # never deleted nor promoted
N_PARTS = 4  # values of ``part``
N_DAYS = 5  # days of ``ts``
BASE_TS = datetime(2024, 3, 1)
INITIAL_ROWS = 120
LOW, HIGH = 60, 400  # below LOW rows the ops favour appends, above HIGH deletes
MANY_SNAPSHOTS = 30  # past this the ops favour expiry
MANY_FILES = 80  # past this many live data and delete files the ops favour rewriting them

SCHEMA = Schema(
    NestedField(ID, "id", LongType(), required=True),
    NestedField(NAME, "name", StringType()),
    NestedField(SCORE, "score", DoubleType()),
    NestedField(QTY, "qty", IntegerType()),
    NestedField(TS, "ts", TimestampType()),
    NestedField(PART, "part", IntegerType()),
)

SPECS = {
    "none": UNPARTITIONED_PARTITION_SPEC,
    "identity": PartitionSpec(PartitionField(PART, 1000, IdentityTransform(), "part")),
    "bucket": PartitionSpec(PartitionField(ID, 1000, BucketTransform(8), "id_bucket")),
    "day": PartitionSpec(PartitionField(TS, 1000, DayTransform(), "ts_day")),
}

# op -> weight. ``dynamic_overwrite`` only on identity partitioning (pyiceberg 0.12 refuses
# an unpartitioned table and non-identity transforms).
WEIGHTS = {
    "append": 14, "overwrite_range": 8, "overwrite_partition": 6, "dynamic_overwrite": 6,
    "delete": 10, "upsert": 12, "noop_overwrite": 5, "schema": 6, "expire": 5, "rollback": 6,
    "compact": 3, "position_delete": 5, "restart": 3,
}
WORDS = ("alpha", "beta", "gamma", "delta", "épsilon", "zeta", "η", "theta", "", "kappa")

Rows = dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Filter:
    """A row filter twice: as a pyiceberg expression and as a test of a row dict."""

    expr: BooleanExpression
    test: Callable[[dict[str, Any]], bool]
    text: str


@dataclass
class Summary:
    """What a sequence did."""

    seed: int
    partitioning: str
    ops: Counter[str] = field(default_factory=Counter)  # op kind -> count
    variants: Counter[str] = field(default_factory=Counter)  # e.g. delete[keys] -> count
    outcomes: Counter[str] = field(default_factory=Counter)  # check outcome -> count
    skipped: Counter[str] = field(default_factory=Counter)  # op kind drawn but not applicable
    cycles: int = 0
    versions: int = 0  # versions the consumer saw published (the first one included)
    seconds: float = 0.0
    op_seconds: Counter[str] = field(default_factory=Counter)
    check_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # pyiceberg doing other than the op meant
    limits: Counter[str] = field(default_factory=Counter)  # ops pyiceberg could not do -> count
    plans: Counter[str] = field(default_factory=Counter)  # plan kind (full:cause) -> cycles


def report(summary: Summary) -> None:
    """Print a sequence's figures and pyiceberg's limits met; warn its notes."""
    print(f"seed={summary.seed} partitioning={summary.partitioning} ops={dict(summary.ops)} "
          f"cycles={summary.cycles} outcomes={dict(summary.outcomes)} "
          f"skipped={dict(summary.skipped)} plans={dict(summary.plans)} "
          f"versions={summary.versions} seconds={summary.seconds:.1f}")
    for limit, n in summary.limits.items():
        print(f"  pyiceberg limit x{n}: {limit}")
    for note in summary.notes:
        warnings.warn(note, stacklevel=2)


@dataclass(frozen=True)
class View:
    """What the table reads: its columns (name, type) and its rows by key."""

    columns: tuple[tuple[str, str], ...]
    rows: Rows


def run_sequence(root: Path, seed: int, ops: int, *, partitioning: str,
                 log: list[str] | None = None) -> Summary:
    """Run ``ops`` random operations on a fresh table under ``root``, checking the feed after
    every cycle (see the module docstring). ``log`` gets one line per op and per cycle.

    Raises:
        AssertionError: the feed differs from the table, a check failed, a version was
            published without a change (or not published with one); the message replays.
    """
    if partitioning not in SPECS:
        raise ValueError(f"partitioning must be one of {', '.join(PARTITIONINGS)}")
    harness = _Harness(Path(root), seed, ops, partitioning, log)
    try:
        harness.run()
    finally:
        harness.close()
    return harness.summary


class _Capture(logging.Handler):
    """The log lines of feedkit's loggers during one check."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _norm_type(t: pa.DataType | str) -> str:
    """A type's name, large and plain strings (and binaries) alike."""
    return {"large_string": "string", "large_binary": "binary"}.get(str(t), str(t))


def _write_config(root: Path, feed: dict[str, Any]) -> Path:
    lines = ["[store]", f"url = {json.dumps('file://' + str(root / 'store'))}", "",
             "[catalog]", 'name = "local"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in catalog_properties(root).items()]
    lines += ["", "[producer]", f"work_dir = {json.dumps(str(root / 'work'))}", "", "[[feed]]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in feed.items()]
    path = root / "producer.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _keys_text(keys: list[int] | set[int]) -> str:
    keys = sorted(keys)
    if len(keys) <= 8:
        return "[" + ",".join(map(str, keys)) + "]"
    return f"[{len(keys)} keys {keys[0]}..{keys[-1]}]"


class _Harness:
    def __init__(self, root: Path, seed: int, ops: int, partitioning: str,
                 log: list[str] | None) -> None:
        self.root = root
        self.seed = seed
        self.total_ops = ops
        self.partitioning = partitioning
        self.log = log if log is not None else []
        self.rng = random.Random(seed)
        self.summary = Summary(seed, partitioning)
        self.ops_done: list[str] = []
        self.index = -1
        self.next_id = 0
        self.column_counter = 0
        self.capture = _Capture()
        self.table: Table  # made by setup()
        self.daemon: Daemon | None = None
        self.consumer: feedkit.Consumer | None = None
        self.catalog: SqlCatalog | None = None
        self.last_view: View | None = None
        self.last_cycle_snapshot: int | None = None
        self.view = View((), {})
        self._logger = logging.getLogger("feedkit")
        # pyiceberg 0.12 splits rows into bucket/day/... partitions with pyiceberg-core's
        # transforms: without it table.append, overwrite and upsert (and a delete that rewrites
        # files) raise NotInstalledError on those tables, and the writes go through iceberg_ops.
        self.python_writes = (partitioning in ("bucket", "day")
                              and importlib.util.find_spec("pyiceberg_core") is None)
        self._old_level = self._logger.level

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        rng = self.rng
        (self.root / "warehouse").mkdir(parents=True, exist_ok=True)
        props = catalog_properties(self.root)
        self.catalog = SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})
        self.catalog.create_namespace("harness")
        merge = rng.random() < 0.3  # merged manifests on some tables, fast appends on others
        self.table = self.catalog.create_table(
            TABLE, schema=SCHEMA, partition_spec=SPECS[self.partitioning],
            # a short metadata log: each commit deep-copies the metadata (pyiceberg 0.12)
            properties={"commit.manifest-merge.enabled": str(merge).lower(),
                        "write.metadata.previous-versions-max": "5"})
        self.feed_settings = {"name": FEED, "table": TABLE, "primary_key": "id",
                              "poll_interval": 1.0, "snapshot_every": rng.choice([1, 3, 10]),
                              "format": rng.choice([1, 2, 2])}
        self.config_path = _write_config(self.root, self.feed_settings)
        self._logger.addHandler(self.capture)
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)
        self._new_daemon()
        self.store = feedkit.open_store(f"file://{self.root / 'store'}")
        self.view = self.read_table()
        self.note(f"setup: partitioning={self.partitioning} manifest_merge={merge} "
                  f"snapshot_every={self.feed_settings['snapshot_every']} "
                  f"format={self.feed_settings['format']}")

    def _new_daemon(self) -> None:
        self.daemon = Daemon(load_config(self.config_path))
        self.runner: FeedRunner = self.daemon.runners[0]

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
        if self.daemon is not None:
            self.daemon.close()
        if self.catalog is not None:
            self.catalog.engine.dispose()
        self._logger.removeHandler(self.capture)
        self._logger.setLevel(self._old_level)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        self.setup()
        self.index = 0
        self.apply("append", n=INITIAL_ROWS)
        self.cycle()
        done = 0
        unseen = {k for k in WEIGHTS if k != "dynamic_overwrite" or self.partitioning == "identity"}
        while done < self.total_ops:
            burst = 1 if self.rng.random() < 0.8 else self.rng.choice([2, 3])
            for _ in range(min(burst, self.total_ops - done)):
                self.index = done + 1
                kind = self.draw(unseen, self.total_ops - done)
                unseen.discard(kind)
                done += 1
            self.cycle()
        self.summary.seconds = time.monotonic() - started

    def draw(self, unseen: set[str], left: int) -> str:
        """Draw an op and apply it; the last ops go to kinds not seen yet, so that a
        sequence of at least ``len(WEIGHTS)`` ops covers every kind it can."""
        for _ in range(50):
            if unseen and left <= len(unseen):
                kind = sorted(unseen)[self.rng.randrange(len(unseen))]
            else:
                kinds = list(WEIGHTS)
                weights = [self.weight(k) for k in kinds]
                kind = self.rng.choices(kinds, weights)[0]
            if self.apply(kind):
                return kind
            self.summary.skipped[kind] += 1
            unseen.discard(kind)
        raise AssertionError("no applicable op in 50 draws")  # pragma: no cover

    def weight(self, kind: str) -> float:
        n = len(self.view.rows)
        w = float(WEIGHTS[kind])
        if kind == "dynamic_overwrite" and self.partitioning != "identity":
            return 0.0
        if n < LOW and kind in ("append", "upsert"):
            w *= 3
        if n > HIGH and kind in ("delete", "position_delete"):
            w *= 3
        if n > HIGH and kind == "append":
            w /= 4
        if kind == "expire" and len(self.table.metadata.snapshots) > MANY_SNAPSHOTS:
            w *= 4  # a long history makes every commit slower
        if kind in ("compact", "noop_overwrite") and self.live_files() > MANY_FILES:
            w *= 4  # many small files make every read slower
        return w

    def apply(self, kind: str, **kw: Any) -> bool:
        """Apply one op; False when it does not apply now (nothing done)."""
        began = time.monotonic()
        try:
            result = getattr(self, f"op_{kind}")(**kw)
        except Exception as exc:
            limit = self.known_limit(kind, exc)
            if limit is None:
                self.fail(f"op {kind} raised {type(exc).__name__}: {exc}", logs=False, exc=exc)
            self.summary.limits[limit] += 1
            self.note(f"op {self.index}: {kind} not done: {limit}")
            view = self.read_table()
            if view != self.view:
                self.fail(f"op {kind} failed ({exc}) but the table changed", logs=False)
            return False
        if result is None:
            return False
        text, expected = result
        self.summary.op_seconds[kind] += time.monotonic() - began
        self.summary.ops[kind] += 1
        self.summary.variants[text.split(" ", 1)[0]] += 1
        line = f"op {self.index}: {text}"
        self.ops_done.append(line)
        self.note(line)
        self.view = self.read_table()
        if expected is not None and expected != self.view.rows:
            detail = _first_difference(self.view.rows, expected, "table", "op's meaning")
            note = (f"seed={self.seed} partitioning={self.partitioning} {line}: pyiceberg left "
                    f"other rows than the op means: {detail}")
            self.summary.notes.append(note)
            self.note("NOTE " + note)
        return True

    def known_limit(self, kind: str, exc: Exception) -> str | None:
        """What pyiceberg 0.12 cannot do, when ``exc`` is that (else None: a failure)."""
        meta = self.table.metadata
        snap = meta.current_snapshot()
        if (kind == "upsert" and isinstance(exc, ValueError)  # pa.ArrowInvalid too
                and snap is not None and snap.schema_id != meta.current_schema_id):
            # Table.upsert scans the rows to match with use_ref("main"), which reads in the
            # schema of the branch's snapshot, then compares them with the frame of the
            # current schema: "field names are not matching" after an added, renamed or
            # deleted column, ArrowInvalid "not in range" after an int -> long promotion.
            return ("pyiceberg 0.12 upsert fails on a table whose current snapshot was written "
                    "in an older schema (after a schema-only change, or a rollback past one)")
        return None

    def live_files(self) -> int:
        snap = self.table.current_snapshot()
        summary = snap.summary if snap and snap.summary else {}
        return sum(int(summary.get(k, 0) or 0) for k in ("total-data-files", "total-delete-files"))

    def note(self, line: str) -> None:
        self.log.append(line)

    # -- reading ----------------------------------------------------------------------------

    def name(self, fid: int) -> str:
        return self.table.schema().find_field(fid).name

    def read_table(self) -> View:
        self.table.refresh()
        at = self.table.scan().to_arrow()
        id_name = self.name(ID)
        rows = at.to_pylist()
        by_key = {r[id_name]: r for r in rows}
        if len(by_key) != len(rows):
            dup = Counter(r[id_name] for r in rows).most_common(1)[0]
            self.fail(f"the table holds key {dup[0]} {dup[1]} times (the harness or pyiceberg "
                      "broke the key's uniqueness)", logs=False)
        columns = tuple((f.name, _norm_type(f.type)) for f in at.schema)
        return View(columns, by_key)

    # -- the cycle --------------------------------------------------------------------------

    def cycle(self) -> None:
        self.capture.lines.clear()
        began = time.monotonic()
        outcome = self.runner.check()
        self.summary.check_seconds += time.monotonic() - began
        self.summary.cycles += 1
        self.summary.outcomes[outcome] += 1
        if outcome != "idle":  # what the cycle read (Daemon.metrics(): the plan's kind)
            plan = self.runner.metrics()["freshness"]["last_plan"]
            self.summary.plans[plan["kind"] if plan["kind"] != "full"
                               else f"full:{plan['cause']}"] += 1
        if outcome not in OK_OUTCOMES:
            self.fail(f"check outcome {outcome!r} (expected one of {', '.join(OK_OUTCOMES)})")
        view = self.view  # the table as read after the last op (a check does not write it)
        changed = self.last_view is None or view != self.last_view
        if self.consumer is None:
            if outcome != "published":
                self.fail(f"the first check gave {outcome!r}, not 'published'")
            self.consumer = feedkit.Consumer(self.store, feed=FEED,
                                             cache_dir=self.root / "cache", watch=False)
            self.consumer.open()
            before = None
            moved = True
            self.summary.versions += 1
        else:
            before = self.consumer.version
            self.consumer.refresh()
            moved = self.consumer.version != before
            self.summary.versions += moved
        self.note(f"cycle {self.summary.cycles}: outcome={outcome} version={self.consumer.version}"
                  f" rows={len(view.rows)} changed={changed}")
        self.compare(view)
        if changed and not moved:
            self.fail(f"the table's rows or columns changed but the feed stayed at version "
                      f"{before} (outcome {outcome!r})",
                      _first_difference(view.rows, self.last_view.rows if self.last_view else {},
                                        "table now", "table at the last cycle"))
        if moved and not changed:
            self.fail(f"version {self.consumer.version} was published (from {before}, outcome "
                      f"{outcome!r}) though the table's rows and columns did not change")
        if changed != (outcome == "published"):
            self.fail(f"outcome {outcome!r} but the table {'did' if changed else 'did not'} "
                      "change")
        self.last_view = view
        snap = self.table.current_snapshot()
        self.last_cycle_snapshot = snap.snapshot_id if snap else None

    def compare(self, view: View) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        names = [c[0] for c in view.columns]
        feed_columns = [(c["name"], _norm_type(c["type"])) for c in consumer.schema]
        if [c[0] for c in feed_columns] != names:
            self.fail("the feed's columns differ from the table's",
                      f"feed: {[c[0] for c in feed_columns]}\ntable: {names}")
        if tuple(feed_columns) != view.columns:
            self.fail("the feed's column types differ from the table's",
                      f"feed: {feed_columns}\ntable: {list(view.columns)}")
        feed: Rows = {}
        for key, record in consumer.items():
            row = record._asdict()
            if list(row) != names:
                self.fail(f"record {key!r} has fields {list(row)}, the table's columns are "
                          f"{names}")
            feed[key] = row
        if len(feed) != len(consumer):
            self.fail(f"the consumer iterates {len(feed)} records but has len {len(consumer)}")
        if feed != view.rows:
            self.fail("the feed differs from the table",
                      _first_difference(feed, view.rows, "feed", "table"))

    # -- failing --------------------------------------------------------------------------

    def fail(self, what: str, detail: str = "", *, logs: bool = True,
             exc: BaseException | None = None) -> None:
        lines = [f"cycle harness: {what}",
                 f"replay: run_sequence(root, seed={self.seed}, ops={self.total_ops}, "
                 f"partitioning={self.partitioning!r})",
                 f"seed={self.seed} partitioning={self.partitioning} op index={self.index} "
                 f"(cycle {self.summary.cycles})",
                 "ops so far:", *(f"  {o}" for o in self.ops_done)]
        if detail:
            lines += ["", detail]
        if logs:
            lines += ["", "log of the last check:", *(f"  {x}" for x in self.capture.lines[-60:])]
        raise AssertionError("\n".join(lines)) from exc

    # -- values -----------------------------------------------------------------------------

    def value(self, f: NestedField) -> Any:
        rng = self.rng
        if f.field_id == PART:
            return rng.randrange(N_PARTS)
        if f.field_id == TS:
            return self.ts(rng.randrange(N_DAYS))
        if rng.random() < 0.06:
            return None
        t = f.field_type
        if isinstance(t, StringType):
            return f"{rng.choice(WORDS)} {rng.randrange(1000)}"
        if isinstance(t, LongType):
            return rng.randrange(-10**12, 10**12)
        if isinstance(t, IntegerType):
            return rng.randrange(-1000, 1000)
        if isinstance(t, DoubleType):
            # no NaN (unequal to itself) and no -0.0 (equal to 0.0, other bytes)
            return rng.choice([round(rng.uniform(-1000, 1000), 3), rng.random() + 1e-9, 1e300])
        if isinstance(t, BooleanType):
            return rng.random() < 0.5
        if isinstance(t, DateType):
            return date(2020, 1, 1) + timedelta(days=rng.randrange(2000))
        if isinstance(t, TimestampType):
            return self.ts(rng.randrange(400))
        raise AssertionError(f"no values for {t}")

    def ts(self, day: int) -> datetime:
        return BASE_TS + timedelta(days=day, seconds=self.rng.randrange(86400),
                                   microseconds=self.rng.randrange(10**6))

    def new_row(self, key: int, **fixed: Any) -> dict[str, Any]:
        row = {f.name: key if f.field_id == ID else self.value(f) for f in self.table.schema().fields}
        for fid, v in fixed.items():
            row[self.name(int(fid[1:]))] = v
        return row

    def changed(self, row: dict[str, Any], keep: tuple[int, ...] = ()) -> dict[str, Any]:
        """``row`` with one or two value columns changed (rarely a partition source)."""
        fields = [f for f in self.table.schema().fields if f.field_id != ID and f.field_id not in keep
                  and (f.field_id not in (TS, PART) or self.rng.random() < 0.15)]
        if not fields:
            return dict(row)
        out = dict(row)
        for f in self.rng.sample(fields, min(len(fields), self.rng.choice([1, 1, 2]))):
            for _ in range(5):
                v = self.value(f)
                if v != row[f.name]:
                    out[f.name] = v
                    break
        return out

    def new_keys(self, n: int, avoid: set[int] | None = None) -> list[int]:
        """``n`` keys not in the table: mostly never used, some deleted earlier."""
        present = self.view.rows
        absent = [k for k in range(self.next_id) if k not in present and k not in (avoid or ())]
        out: list[int] = []
        for _ in range(n):
            if absent and self.rng.random() < 0.3:
                k = absent.pop(self.rng.randrange(len(absent)))
            else:
                k = self.next_id
                self.next_id += 1
            out.append(k)
        return out

    def frame(self, rows: list[dict[str, Any]]) -> pa.Table:
        schema = self.table.schema().as_arrow()
        rows = list(rows)
        self.rng.shuffle(rows)
        return pa.Table.from_pylist(rows, schema=schema)

    # -- writes: pyiceberg's, or iceberg_ops' where pyiceberg needs pyiceberg-core ---------

    def limit(self, kind: str, what: str) -> None:
        self.summary.limits[f"{kind}: {what}"] += 1

    def w_append(self, df: pa.Table) -> str:
        if not self.python_writes:
            self.table.append(df)
            return ""
        self.limit("append", "table.append needs pyiceberg-core on bucket/day partitions: "
                   "iceberg_ops.append instead")
        if df.num_rows:
            python_append(self.table, df)
            self.table.refresh()
        return " via iceberg_ops.append"

    def w_delete(self, flt: Filter) -> str:
        try:
            self.table.delete(delete_filter=flt.expr)
            return ""
        except NotInstalledError:
            # only when a file must be rewritten: whole-file deletes need no pyiceberg-core
            self.limit("delete", "table.delete rewriting a data file needs pyiceberg-core on "
                       "bucket/day partitions: position_delete instead")
            position_delete(self.table, flt.expr)
            self.table.refresh()
            return " via position_delete"

    def w_overwrite(self, df: pa.Table, flt: Filter) -> str:
        if not self.python_writes:
            self.table.overwrite(df, overwrite_filter=flt.expr)
            return ""
        self.limit("overwrite", "table.overwrite needs pyiceberg-core on bucket/day partitions: "
                   "delete + iceberg_ops.append instead (two snapshots)")
        how = self.w_delete(flt) or " via table.delete"
        if df.num_rows:
            python_append(self.table, df)
            self.table.refresh()
        return f"{how}+iceberg_ops.append"

    # -- filters ----------------------------------------------------------------------------

    def key_range(self, longest: int = 30) -> Filter | None:
        keys = sorted(self.view.rows)
        if not keys:
            return None
        i = self.rng.randrange(len(keys))
        j = min(len(keys), i + self.rng.randint(1, longest)) - 1
        a, b = keys[i], keys[j] + 1
        idn = self.name(ID)
        return Filter(And(GreaterThanOrEqual(idn, a), LessThan(idn, b)),
                      lambda r: a <= r[idn] < b, f"{idn} in [{a},{b})")

    def partition(self) -> tuple[Filter, dict[str, Any]]:
        """A filter on one partition (a day of ``ts`` on day partitioning, else one value of
        ``part``), and the fixed values (``new_row`` keywords) of rows that fall in it."""
        if self.partitioning == "day":
            d = self.rng.randrange(N_DAYS)
            lo, hi = BASE_TS + timedelta(days=d), BASE_TS + timedelta(days=d + 1)
            tsn = self.name(TS)
            return (Filter(And(GreaterThanOrEqual(tsn, lo.isoformat()), LessThan(tsn, hi.isoformat())),
                           lambda r: r[tsn] is not None and lo <= r[tsn] < hi,
                           f"{tsn} on day {lo.date()}"),
                    {f"f{TS}": None, "_day": d})
        p = self.rng.randrange(N_PARTS)
        pn = self.name(PART)
        return Filter(EqualTo(pn, p), lambda r: r[pn] == p, f"{pn} == {p}"), {f"f{PART}": p}

    def in_partition(self, key: int, fixed: dict[str, Any]) -> dict[str, Any]:
        if "_day" in fixed:
            return self.new_row(key, **{f"f{TS}": self.ts(fixed["_day"])})
        return self.new_row(key, **fixed)

    def replaced(self, matched: list[dict[str, Any]], keep: tuple[int, ...] = ()) -> tuple[
            list[dict[str, Any]], Counter[str]]:
        """Rows replacing ``matched``: changed (1/2), kept as they are (3/10), dropped."""
        out, counts = [], Counter[str]()
        for row in matched:
            x = self.rng.random()
            if x < 0.5:
                out.append(self.changed(row, keep))
                counts["changed"] += 1
            elif x < 0.8:
                out.append(dict(row))
                counts["kept"] += 1
            else:
                counts["dropped"] += 1
        return out, counts

    # -- ops: each returns (description, expected rows or None), or None when it does not
    # apply now ------------------------------------------------------------------------------

    def op_append(self, n: int | None = None) -> tuple[str, Rows]:
        n = n if n is not None else self.rng.randint(1, 25)
        rows = [self.new_row(k) for k in self.new_keys(n)]
        how = self.w_append(self.frame(rows))
        idn = self.name(ID)
        return (f"append {_keys_text([r[idn] for r in rows])}{how}",
                {**self.view.rows, **{r[idn]: r for r in rows}})

    def _overwrite(self, variant: str, flt: Filter, fixed: dict[str, Any] | None) -> tuple[str, Rows]:
        idn = self.name(ID)
        matched = [r for r in self.view.rows.values() if flt.test(r)]
        keep = (TS, PART) if fixed is not None else ()
        rows, counts = self.replaced(matched, keep)
        new = self.new_keys(self.rng.randint(0, 5), avoid={r[idn] for r in matched})
        rows += [self.in_partition(k, fixed) if fixed is not None else self.new_row(k) for k in new]
        how = self.w_overwrite(self.frame(rows), flt)
        expected = {k: r for k, r in self.view.rows.items() if not flt.test(r)}
        expected.update({r[idn]: r for r in rows})
        return (f"{variant} filter=({flt.text}) matched={len(matched)} "
                f"changed={counts['changed']} kept={counts['kept']} dropped={counts['dropped']} "
                f"new={_keys_text(new)}{how}", expected)

    def op_overwrite_range(self) -> tuple[str, Rows] | None:
        flt = self.key_range()
        return self._overwrite("overwrite_range", flt, None) if flt else None

    def op_overwrite_partition(self) -> tuple[str, Rows]:
        flt, fixed = self.partition()
        return self._overwrite("overwrite_partition", flt, fixed)

    def op_dynamic_overwrite(self) -> tuple[str, Rows] | None:
        if self.partitioning != "identity":
            return None
        pn, idn = self.name(PART), self.name(ID)
        parts = self.rng.sample(range(N_PARTS), self.rng.choice([1, 1, 2]))
        matched = [r for r in self.view.rows.values() if r[pn] in parts]
        rows, counts = self.replaced(matched, (PART,))
        new: list[int] = []
        for p in parts:  # each partition named gets at least one row, or it is not replaced
            want = self.rng.randint(0, 4)
            if not any(r[pn] == p for r in rows):
                want = max(want, 1)
            for k in self.new_keys(want, avoid={r[idn] for r in matched} | set(new)):
                new.append(k)
                rows.append(self.new_row(k, **{f"f{PART}": p}))
        self.table.dynamic_partition_overwrite(self.frame(rows))
        expected = {k: r for k, r in self.view.rows.items() if r[pn] not in parts}
        expected.update({r[idn]: r for r in rows})
        return (f"dynamic_overwrite parts={sorted(parts)} matched={len(matched)} "
                f"changed={counts['changed']} kept={counts['kept']} dropped={counts['dropped']} "
                f"new={_keys_text(new)}", expected)

    def op_delete(self) -> tuple[str, Rows] | None:
        rows = self.view.rows
        if not rows:
            return None
        idn = self.name(ID)
        variant = self.rng.choice(["keys", "keys", "range", "partition", "mixed"])
        if variant == "keys":
            keys = set(self.rng.sample(sorted(rows), min(len(rows), self.rng.randint(1, 25))))
            if self.rng.random() < 0.3:
                keys.add(self.next_id + 1000)  # a key not in the table
            flt = Filter(In(idn, keys), lambda r: r[idn] in keys, f"{idn} in {_keys_text(keys)}")
        elif variant == "range":
            flt = self.key_range()  # type: ignore[assignment]
        elif variant == "partition":
            flt = self.partition()[0]
        else:
            numeric = [f for f in self.table.schema().fields if f.field_id not in ROLES
                       and isinstance(f.field_type, IntegerType | LongType | DoubleType)]
            if not numeric:
                flt = self.partition()[0]
            else:
                part_flt = self.partition()[0]
                col = self.rng.choice(numeric).name
                values = sorted(r[col] for r in rows.values() if r[col] is not None)
                cut = values[len(values) // 2] if values else 0
                flt = Filter(And(part_flt.expr, LessThan(col, cut)),
                             lambda r: part_flt.test(r) and r[col] is not None and r[col] < cut,
                             f"{part_flt.text} and {col} < {cut}")
        how = self.w_delete(flt)
        matched = [k for k, r in rows.items() if flt.test(r)]
        return (f"delete[{variant}] filter=({flt.text}) matched={len(matched)}{how}",
                {k: r for k, r in rows.items() if not flt.test(r)})

    def op_upsert(self) -> tuple[str, Rows]:
        rows = self.view.rows
        idn = self.name(ID)
        present = sorted(rows)
        picked = self.rng.sample(present, min(len(present), self.rng.randint(1, 20)))
        n_same = self.rng.randint(0, min(5, len(picked)))
        same, changed = picked[:n_same], picked[n_same:]
        new = self.new_keys(self.rng.randint(0, 10))
        df_rows = ([self.changed(rows[k]) for k in changed] + [dict(rows[k]) for k in same]
                   + [self.new_row(k) for k in new])
        if not df_rows:
            df_rows = [self.new_row(k) for k in self.new_keys(1)]
        if self.python_writes:
            self.limit("upsert", "table.upsert needs pyiceberg-core on bucket/day partitions: "
                       "position_delete of the changed keys + iceberg_ops.append instead")
            gone = {r[idn] for r in df_rows if r[idn] in rows and r != rows[r[idn]]}
            if gone:
                position_delete(self.table, In(idn, gone))
            python_append(self.table, self.frame([r for r in df_rows if r != rows.get(r[idn])]))
            self.table.refresh()
            how = " via position_delete+append"
        else:
            self.table.upsert(self.frame(df_rows), join_cols=[idn])
            how = ""
        return (f"upsert changed={_keys_text(changed)} same={_keys_text(same)} "
                f"new={_keys_text(new)}{how}",
                {**rows, **{r[idn]: r for r in df_rows}})

    def op_noop_overwrite(self) -> tuple[str, Rows]:
        variant = self.rng.choice(["all", "range", "partition"])
        if variant == "all" or not self.view.rows:
            flt = Filter(AlwaysTrue(), lambda r: True, "all rows")
        elif variant == "range":
            flt = self.key_range(60)  # type: ignore[assignment]
        else:
            flt = self.partition()[0]
        matched = [dict(r) for r in self.view.rows.values() if flt.test(r)]
        how = self.w_overwrite(self.frame(matched), flt)
        return f"noop_overwrite filter=({flt.text}) rows={len(matched)}{how}", dict(self.view.rows)

    def op_schema(self) -> tuple[str, None]:
        schema = self.table.schema()
        rng = self.rng
        values = [f for f in schema.fields if f.field_id != ID]
        deletable = [f for f in values if f.field_id not in ROLES]
        ints = [f for f in deletable if isinstance(f.field_type, IntegerType)]
        variant = rng.choices(["add", "rename", "add+rename", "delete", "promote"],
                              [5, 3, 1, 1 if len(deletable) > 2 else 0, 1 if ints else 0])[0]
        done = []
        with self.table.update_schema() as u:
            if "add" in variant:
                for _ in range(rng.choice([1, 1, 2])):
                    self.column_counter += 1
                    t: IcebergType = rng.choice([StringType(), LongType(), DoubleType(),
                                                 BooleanType(), DateType(), TimestampType()])
                    name = f"c{self.column_counter}"
                    u.add_column(name, t)
                    done.append(f"add {name} {t}")
            if "rename" in variant:
                f = rng.choice(values)
                self.column_counter += 1
                new = f"{f.name.split('_')[0]}_{self.column_counter}"
                u.rename_column(f.name, new)
                done.append(f"rename {f.name} -> {new}")
            if variant == "delete":
                f = rng.choice(deletable)
                u.delete_column(f.name)
                done.append(f"delete {f.name}")
            if variant == "promote":
                f = rng.choice(ints)
                u.update_column(f.name, field_type=LongType())
                done.append(f"promote {f.name} int -> long")
        return f"schema[{variant}] {'; '.join(done)}", None

    def op_expire(self) -> tuple[str, Rows] | None:
        meta = self.table.metadata
        current = meta.current_snapshot_id
        candidates = [s.snapshot_id for s in meta.snapshots if s.snapshot_id != current]
        if not candidates:
            return None
        rng = self.rng
        published = self.last_cycle_snapshot
        variant = rng.choices(["published", "oldest", "random", "all"], [3, 3, 3, 1])[0]
        if variant == "published" and published in candidates:
            others = [c for c in candidates if c != published]
            ids = [published, *rng.sample(others, min(len(others), rng.randint(0, 2)))]
        elif variant == "oldest" or variant == "published":
            variant = "oldest"
            ids = candidates[:rng.randint(1, len(candidates))]
        elif variant == "random":
            ids = rng.sample(candidates, rng.randint(1, len(candidates)))
        else:
            ids = candidates
        self.table.maintenance.expire_snapshots().by_ids(ids).commit()
        gone_published = published in ids
        return (f"expire[{variant}] {len(ids)} of {len(candidates)} older snapshots"
                f"{' (the last cycle`s snapshot among them)' if gone_published else ''}",
                dict(self.view.rows))

    def op_rollback(self) -> tuple[str, None] | None:
        meta = self.table.metadata
        current = meta.current_snapshot()
        if current is None:
            return None
        ancestors = [s.snapshot_id for s in ancestors_of(current, meta)][1:]
        others = [s.snapshot_id for s in meta.snapshots
                  if s.snapshot_id != current.snapshot_id and s.snapshot_id not in ancestors]
        choices = [("rollback_to_snapshot", a) for a in ancestors[:8]] + \
                  [("set_current_snapshot", o) for o in others[-8:]]
        if not choices:
            return None
        how, target = self.rng.choice(choices)
        position = [s.snapshot_id for s in meta.snapshots].index(target)
        ms = self.table.manage_snapshots()
        if how == "rollback_to_snapshot":
            ms.rollback_to_snapshot(target).commit()
            back = ancestors.index(target) + 1
            where = f"{back} snapshot(s) back"
        else:
            ms.set_current_snapshot(snapshot_id=target).commit()
            where = "not an ancestor"
        return (f"rollback[{how}] to snapshot #{position} of {len(meta.snapshots)} ({where})",
                None)

    def op_compact(self) -> tuple[str, Rows]:
        if self.partitioning == "identity" and self.rng.random() < 0.5:
            p = self.rng.randrange(N_PARTS)
            snapshot = compact(self.table, EqualTo(self.name(PART), p))
            what = f"{self.name(PART)} == {p}"
        else:
            snapshot = compact(self.table)
            what = "all files"
        self.table.refresh()
        return (f"compact {what}{'' if snapshot else ' (nothing to rewrite)'}",
                dict(self.view.rows))

    def op_position_delete(self) -> tuple[str, Rows] | None:
        rows = self.view.rows
        if not rows:
            return None
        idn = self.name(ID)
        keys = set(self.rng.sample(sorted(rows), min(len(rows), self.rng.randint(1, 15))))
        position_delete(self.table, In(idn, keys))
        self.table.refresh()
        return (f"position_delete {_keys_text(keys)}",
                {k: r for k, r in rows.items() if k not in keys})

    def op_restart(self) -> tuple[str, Rows]:
        assert self.daemon is not None
        self.daemon.close()
        wiped = self.rng.random() < 0.4
        if wiped:
            shutil.rmtree(self.root / "work", ignore_errors=True)
        self._new_daemon()
        return f"restart the daemon{' without its work dir' if wiped else ''}", dict(self.view.rows)


def _first_difference(got: Rows, want: Rows, got_name: str, want_name: str) -> str:
    only_got = got.keys() - want.keys()
    only_want = want.keys() - got.keys()
    differ = {k for k in got.keys() & want.keys() if got[k] != want[k]}
    bad = only_got | only_want | differ
    if not bad:
        return "no differing key"
    k = min(bad)
    lines = [f"first differing key {k!r}: {len(only_got)} key(s) only in the {got_name}, "
             f"{len(only_want)} only in the {want_name}, {len(differ)} with other values"]
    if k in only_got:
        lines.append(f"  only in the {got_name}: {got[k]!r}")
    elif k in only_want:
        lines.append(f"  only in the {want_name}: {want[k]!r}")
    else:
        a, b = got[k], want[k]
        for col in dict.fromkeys([*a, *b]):
            if a.get(col, "<missing>") != b.get(col, "<missing>"):
                lines.append(f"  column {col}: {got_name} {a.get(col, '<missing>')!r}, "
                             f"{want_name} {b.get(col, '<missing>')!r}")
    return "\n".join(lines)
