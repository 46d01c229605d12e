"""Quickstart: an Iceberg table, the feedkit-producer daemon, and a Consumer following it.

Run with `make demo` (or `.venv/bin/python examples/quickstart.py [FOLDER] [--keep]`).
Everything is local: no network, no server.

1. Create an Iceberg warehouse (pyiceberg SqlCatalog on SQLite) holding
   `muse.title_dimensions`: 200,000 titles x 3 dimensions, one row per
   (movie_id, dimension_id) with the distinct, sorted filter values of that dimension
   (1 = countries where the title is licensed, 2 = audio languages, 3 = subtitle languages).
2. Write a producer.toml and start `feedkit-producer run --config producer.toml`, the
   daemon that watches the table and publishes a feed version for every Iceberg commit.
3. Open a `feedkit.Consumer` on the feed and time `get((movie_id, dimension_id))`.
4. Append new titles to the Iceberg table, and
5. overwrite some rows (a new country for 5,000 titles); time each change from the
   Iceberg commit to the moment the consumer serves it.
6. Stop the daemon with SIGTERM.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, EqualTo, LessThan

import feedkit

TABLE = "muse.title_dimensions"
FEED = "muse.dimensions"
TITLES = 200_000
FIRST_ID = 80_000_000
COUNTRY, AUDIO, SUBTITLES = 1, 2, 3
# (dimension_id, sorted pool of values, chance that a title has each value)
POOLS = [
    (COUNTRY, ["AR", "AU", "BR", "CA", "CH", "CO", "DE", "ES", "FR", "GB",
               "IN", "IT", "JP", "KR", "MX", "NL", "SE", "TR", "US", "ZA"], 0.5),
    (AUDIO, ["de", "en", "es", "fr", "hi", "it", "ja", "ko", "pt"], 0.25),
    (SUBTITLES, ["ar", "de", "en", "es", "fr", "hi", "it", "ja", "ko", "nl",
                 "pl", "pt", "sv", "tr", "zh"], 0.4),
]
NEW_COUNTRY = "PL"  # not in the country pool: the overwrite below launches it
LOOKUPS = 100_000


def say(text: str = "") -> None:
    print(text, flush=True)


def title_dimensions(first_id: int, titles: int, seed: int) -> pa.Table:
    """One row per (title, dimension): its distinct values, sorted (vectorised with numpy)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + titles, dtype=np.int64)
    parts = []
    for dim, pool, chance in POOLS:
        assert pool == sorted(pool)
        has = rng.random((titles, len(pool))) < chance
        has[np.arange(titles), rng.integers(0, len(pool), titles)] = True  # at least one
        offsets = np.concatenate([[0], np.cumsum(has.sum(axis=1))]).astype(np.int32)
        values = pa.array(np.array(pool)[np.nonzero(has)[1]])  # row-major: sorted per row
        parts.append(pa.table({
            "movie_id": ids,
            "dimension_id": pa.array(np.full(titles, dim, np.int32)),
            "vals": pa.ListArray.from_arrays(pa.array(offsets), values),
        }))
    return pa.concat_tables(parts)


def write_config(root: Path) -> Path:
    config = root / "producer.toml"
    config.write_text(f"""\
[store]
url = "{root / 'store'}"

[catalog]
name = "local"
type = "sql"
uri = "sqlite:///{root / 'catalog.db'}"
warehouse = "file://{root / 'warehouse'}"

[producer]
work_dir = "{root / 'work'}"

[[feed]]
name = "{FEED}"
table = "{TABLE}"
primary_key = ["movie_id", "dimension_id"]
max_change_ratio = 0.05    # refuse a version that changes more than 5% of the records
min_records = 100000       # ... or that has fewer records than this
poll_interval = 5.0        # the local warehouse is also watched: commits wake it at once
""")
    return config


def daemon_command() -> list[str]:
    script = Path(sys.executable).parent / "feedkit-producer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "feedkit.producer.cli"]


def published_line(log_path: Path, version: int, timeout: float = 5.0) -> dict[str, str]:
    """The key=value fields of the daemon's `event=published` log line for ``version``.

    The consumer may swap before the daemon has written that line: wait for it a moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        for line in log_path.read_text().splitlines():
            if "event=published" in line and f" version={version} " in line:
                return dict(p.split("=", 1) for p in line.split() if "=" in p)
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.05)


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-n:])
    except OSError:
        return "(no log)"


def open_consumer(store: feedkit.BlobStore, cache: Path, daemon: subprocess.Popen[bytes],
                  timeout: float = 60.0) -> feedkit.Consumer:
    """A Consumer, once the daemon has announced a first version."""
    deadline = time.monotonic() + timeout
    while True:
        feed = feedkit.Consumer(store, feed=FEED, cache_dir=cache, watch=True)
        try:
            return feed.open()
        except feedkit.VersionNotFoundError:
            if daemon.poll() is not None:
                raise RuntimeError(f"feedkit-producer exited with code {daemon.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no version announced after {timeout:.0f} s") from None
            time.sleep(0.1)


def median_get_ns(feed: feedkit.Consumer, keys: list[tuple[int, int]]) -> float:
    """Median per-lookup time of feed.get over chunks of 1,000 keys."""
    get = feed.get  # an alias keeps one version: fine for a measurement
    samples = []
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        t = time.perf_counter_ns()
        for k in chunk:
            get(k)
        samples.append((time.perf_counter_ns() - t) / len(chunk))
    return statistics.median(samples)


class Follower:
    """Records the consumer's swaps (on_refresh) and lets the main thread wait for one."""

    def __init__(self, feed: feedkit.Consumer) -> None:
        self.swaps: list[tuple[int | None, int]] = []
        self._event = threading.Event()
        feed.on_refresh(self._on_refresh)

    def _on_refresh(self, old: int | None, new: int) -> None:
        self.swaps.append((old, new))
        self._event.set()

    def wait_until(self, shown: Callable[[], bool], timeout: float = 60.0) -> float:
        """Wait until ``shown()`` is true; return the perf_counter time it was seen."""
        deadline = time.monotonic() + timeout
        while not shown():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the consumer did not show the change within {timeout:.0f} s")
            self._event.wait(0.002)
            self._event.clear()
        return time.perf_counter()

    def report(self, seen_before: int) -> None:
        for old, new in self.swaps[seen_before:]:
            say(f"   on_refresh: consumer moved from version {old} to {new}")


def change_report(log_path: Path, version: int, started: float, committed: float,
                  served: float) -> None:
    pub = published_line(log_path, version)
    if pub:
        say(f"   daemon: version {pub.get('version')}, read {int(pub.get('rows_read', 0)):,} rows, "
            f"{int(pub.get('added', 0)):,} added / {int(pub.get('changed', 0)):,} changed / "
            f"{int(pub.get('removed', 0)):,} removed, published in {float(pub.get('total_s', 0)):.2f} s")
    say(f"   commit-to-serving: {served - started:.2f} s (the Iceberg commit call took "
        f"{committed - started:.2f} s, then {served - committed:.2f} s until feed.get showed it)")


def demo(root: Path) -> None:
    # 1. The Iceberg table.
    t0 = time.perf_counter()
    (root / "warehouse").mkdir()
    catalog = SqlCatalog("local", uri=f"sqlite:///{root / 'catalog.db'}",
                         warehouse=f"file://{root / 'warehouse'}")
    catalog.create_namespace("muse")
    data = title_dimensions(FIRST_ID, TITLES, seed=1)
    table = catalog.create_table(TABLE, schema=data.schema)
    table.append(data)
    say(f"1. Iceberg table {TABLE}: {data.num_rows:,} rows ({TITLES:,} titles x "
        f"{len(POOLS)} dimensions) written in {time.perf_counter() - t0:.1f} s")

    # 2. The daemon.
    config = write_config(root)
    log_path = root / "producer.log"
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen([*daemon_command(), "run", "--config", str(config)],
                                  stdout=log_file, stderr=subprocess.STDOUT, cwd=root)
    say(f"2. started `feedkit-producer run --config {config.name}` (pid {daemon.pid})")
    say(f"   its log: {log_path}")
    try:
        follow(root, table, daemon, log_path)
    except Exception:
        say(f"\nsomething went wrong; the last lines of {log_path}:")
        say(tail(log_path))
        raise
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def follow(root: Path, table: Any, daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    # 3. The consumer.
    started = time.perf_counter()
    store = feedkit.open_store(str(root / "store"))
    with open_consumer(store, root / "cache", daemon) as feed:
        say(f"3. first version announced; consumer serving version {feed.version} "
            f"({len(feed):,} records) {time.perf_counter() - started:.1f} s after the daemon started")
        key = (FIRST_ID + 123, COUNTRY)
        say(f"   feed.get({key}).vals -> {feed.get(key).vals}")
        rng = np.random.default_rng(2)
        keys = list(zip(rng.integers(FIRST_ID, FIRST_ID + TITLES, LOOKUPS).tolist(),
                        rng.integers(1, len(POOLS) + 1, LOOKUPS).tolist(), strict=True))
        median_get_ns(feed, keys[:10_000])  # warm-up
        say(f"   feed.get(): median {median_get_ns(feed, keys):,.0f} ns per lookup "
            f"({LOOKUPS:,} random (movie_id, dimension_id) keys)")
        follower = Follower(feed)

        # 4. Append new titles: the daemon reads only the appended data file.
        new_titles = 1_000
        extra = title_dimensions(FIRST_ID + TITLES, new_titles, seed=3)
        extra = extra.cast(table.schema().as_arrow())
        new_key = (FIRST_ID + TITLES, AUDIO)
        say(f"4. append: {new_titles:,} new titles ({extra.num_rows:,} rows) to the Iceberg table")
        seen = len(follower.swaps)
        t_start = time.perf_counter()
        table.append(extra)
        t_commit = time.perf_counter()
        t_served = follower.wait_until(lambda: feed.get(new_key) is not None)
        follower.report(seen)
        say(f"   feed.get({new_key}).vals -> {feed.get(new_key).vals}")
        change_report(log_path, feed.version, t_start, t_commit, t_served)

        # 5. Overwrite: launch a new country for the first 5,000 titles (copy-on-write
        # rewrite of their country rows; the daemon re-reads the table and diffs it).
        launched = 5_000
        where = And(EqualTo("dimension_id", COUNTRY), LessThan("movie_id", FIRST_ID + launched))
        rows = table.scan(row_filter=where).to_arrow()
        vals = [sorted([*v, NEW_COUNTRY]) for v in rows["vals"].to_pylist()]
        rows = rows.set_column(rows.schema.get_field_index("vals"), "vals",
                               pa.array(vals, rows.schema.field("vals").type))
        rows = rows.cast(table.schema().as_arrow())
        say(f"5. overwrite: add {NEW_COUNTRY!r} to the countries of {launched:,} titles "
            "(table.overwrite with an overwrite_filter)")
        seen = len(follower.swaps)
        t_start = time.perf_counter()
        table.overwrite(rows, overwrite_filter=where)
        t_commit = time.perf_counter()
        t_served = follower.wait_until(lambda: NEW_COUNTRY in feed.get(key).vals)
        follower.report(seen)
        say(f"   feed.get({key}).vals -> {feed.get(key).vals}")
        change_report(log_path, feed.version, t_start, t_commit, t_served)

    # 6. Stop the daemon.
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=30)
    say(f"6. sent SIGTERM: feedkit-producer exited with code {code}")
    if code != 0:
        raise RuntimeError(f"feedkit-producer exited with code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path,
                        help="an empty or new folder to work in (kept); default: a temporary "
                             "folder, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    if args.folder is not None:
        root = args.folder.resolve()
        if root.exists() and any(root.iterdir()):
            parser.error(f"{root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
        remove = False
    else:
        root = Path(tempfile.mkdtemp(prefix="feedkit-quickstart-"))
        remove = not args.keep
    say("feedkit quickstart: Iceberg table -> feedkit-producer -> in-process Consumer")
    say(f"   working folder: {root}")
    started = time.perf_counter()
    try:
        demo(root)
    except Exception as exc:  # noqa: BLE001 - a demo: say what failed, keep the folder
        say(f"\nFAILED: {type(exc).__name__}: {exc}")
        say(f"(kept {root} for inspection)")
        return 1
    say(f"done in {time.perf_counter() - started:.1f} s")
    if remove:
        shutil.rmtree(root, ignore_errors=True)
        say(f"removed {root} (use --keep to keep it)")
    else:
        say(f"kept {root}: producer.toml, producer.log, warehouse/, store/, cache/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
