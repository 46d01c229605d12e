"""getDimensions(movieId, dimensionId), served in-process from a feedkit feed.

The use case comes from Netflix's write-up on Muse, an analytics application for
creative insights. Its UI offers filters per title ("countries where this title is
licensed", "audio languages", ...), and each filter needs the distinct values of one
dimension for one title, sorted by name. Muse used to ask Druid for them on every page
view: a group-by over a large fact table per request. The values change only when the
underlying data does, so they can be precomputed into a small table keyed by
(movie_id, dimension_id) and served from memory with a lookup that costs a microsecond.

This script does that end to end, locally and deterministically (seeded random data):

1. builds a raw fact table of licensing windows (movie_id, country, audio_language,
   subtitle_language, window_start, window_end), a few hundred thousand rows;
2. aggregates it with pyarrow (filter the windows open on AS_OF, group_by for the
   distinct (title, value) pairs, sort, one list per title) into rows (movie_id int64, dimension_id int32, vals list<string>);
3. writes those into a local Iceberg table `muse.title_dimensions`
   (pyiceberg SqlCatalog on SQLite);
4. publishes the table with `feedkit-producer once --config producer.toml`, the daemon's
   one-shot mode (the same code path as `feedkit-producer run`);
5. opens a feedkit.Consumer and defines get_dimensions(feed, movie_id, dimension_id);
6. checks every answer against the raw table, computed directly in plain Python, and
   compares the cost of a lookup with that of answering from the raw table per request.

Run: `.venv/bin/python examples/muse_dimensions.py [--keep]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog

import feedkit

TABLE = "muse.title_dimensions"
FEED = "muse.dimensions"
TITLES = 20_000
FIRST_ID = 81_000_000
AS_OF = dt.date(2025, 6, 1)  # "where is the title available" means: a window open on this day

# dimensionId -> the raw table's column it takes its values from
COUNTRY, AUDIO_LANGUAGE, SUBTITLE_LANGUAGE = 1, 2, 3
DIMENSIONS = {COUNTRY: "country", AUDIO_LANGUAGE: "audio_language",
              SUBTITLE_LANGUAGE: "subtitle_language"}
CONSTANTS = {COUNTRY: "COUNTRY", AUDIO_LANGUAGE: "AUDIO_LANGUAGE",
             SUBTITLE_LANGUAGE: "SUBTITLE_LANGUAGE"}

COUNTRIES = ["United States", "Brazil", "India", "United Kingdom", "Mexico", "Germany",
             "France", "Japan", "South Korea", "Canada", "Spain", "Italy", "Australia",
             "Argentina", "Turkey", "Poland", "Netherlands", "Colombia", "Sweden", "Nigeria",
             "Indonesia", "Philippines", "Egypt", "South Africa", "Thailand"]
LANGUAGES = ["English", "Spanish", "Portuguese", "Hindi", "Japanese", "Korean", "French",
             "German", "Italian", "Turkish", "Polish", "Arabic", "Indonesian", "Thai"]


def say(text: str = "") -> None:
    print(text, flush=True)


# -- 1. the raw fact table -------------------------------------------------------------------

def licensing_windows(seed: int = 7) -> pa.Table:
    """One row per licensing window of a title in a country, with its audio and subtitles.

    Popular countries and languages come up more often (Zipf-like weights); about 10% of
    the windows offer no subtitles (null).
    """
    rng = np.random.default_rng(seed)
    per_title = rng.integers(1, 30, TITLES)  # windows per title: ~15 on average
    rows = int(per_title.sum())
    movie_id = np.repeat(np.arange(FIRST_ID, FIRST_ID + TITLES, dtype=np.int64), per_title)

    def pick(pool: list[str]) -> np.ndarray:
        weights = 1.0 / np.arange(1, len(pool) + 1)
        return np.array(pool, dtype=object)[rng.choice(len(pool), rows, p=weights / weights.sum())]

    subtitles = pick(LANGUAGES)
    subtitles[rng.random(rows) < 0.1] = None
    start = np.datetime64("2018-01-01") + rng.integers(0, 8 * 365, rows).astype("timedelta64[D]")
    end = start + rng.integers(90, 4 * 365, rows).astype("timedelta64[D]")
    return pa.table({
        "movie_id": movie_id,
        "country": pa.array(pick(COUNTRIES), pa.string()),
        "audio_language": pa.array(pick(LANGUAGES), pa.string()),
        "subtitle_language": pa.array(subtitles, pa.string()),
        "window_start": pa.array(start, pa.date32()),
        "window_end": pa.array(end, pa.date32()),
    })


# -- 2. the aggregation (what the Druid query computed per request) ------------------------------

def active(raw: pa.Table, day: dt.date) -> pa.Table:
    """The windows open on ``day``: window_start <= day < window_end."""
    return raw.filter((pc.field("window_start") <= day) & (pc.field("window_end") > day))


def title_dimensions(raw: pa.Table, day: dt.date) -> pa.Table:
    """(movie_id, dimension_id, vals): each title's distinct values per dimension, sorted."""
    windows = active(raw, day)
    parts = []
    for dimension_id, column in DIMENSIONS.items():
        pairs = (windows.select(["movie_id", column]).drop_null()
                 .group_by(["movie_id", column]).aggregate([])  # distinct (title, value) pairs
                 .sort_by([("movie_id", "ascending"), (column, "ascending")]))
        # The pairs are sorted: each title's values are one run; cut the runs into lists.
        ids = pairs["movie_id"].to_numpy()
        starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
        offsets = pa.array(np.append(starts, len(ids)).astype(np.int32))
        parts.append(pa.table({
            "movie_id": pa.array(ids[starts]),
            "dimension_id": pa.array(np.full(len(starts), dimension_id, np.int32)),
            "vals": pa.ListArray.from_arrays(offsets, pairs[column].combine_chunks()),
        }))
    return pa.concat_tables(parts)


# -- 3 + 4. Iceberg table and the producer daemon ------------------------------------------------

def write_iceberg(root: Path, rows: pa.Table) -> None:
    (root / "warehouse").mkdir()
    catalog = SqlCatalog("local", uri=f"sqlite:///{root / 'catalog.db'}",
                         warehouse=f"file://{root / 'warehouse'}")
    catalog.create_namespace("muse")
    catalog.create_table(TABLE, schema=rows.schema).append(rows)


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
columns = ["movie_id", "dimension_id", "vals"]
max_change_ratio = 0.2
min_records = 1000
""")
    return config


def publish_once(config: Path) -> str:
    """`feedkit-producer once --config ...`; returns its `event=published` log line."""
    script = Path(sys.executable).parent / "feedkit-producer"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "feedkit.producer.cli"]
    done = subprocess.run([*command, "once", "--config", str(config)], capture_output=True,
                          text=True, timeout=120, cwd=config.parent)
    if done.returncode != 0:
        raise RuntimeError(f"feedkit-producer once exited with code {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    published = [ln for ln in done.stderr.splitlines() if "event=published" in ln]
    return published[-1] if published else "(nothing published)"


# -- 5. the lookup -----------------------------------------------------------------------------

def get_dimensions(feed: feedkit.Consumer, movie_id: int, dimension_id: int) -> list[str]:
    """The distinct values of a dimension for a title, sorted; [] when it has none."""
    record = feed.get((movie_id, dimension_id))
    return [] if record is None else record.vals


# -- 6. the check ------------------------------------------------------------------------------

def expected_from_raw(raw: pa.Table, day: dt.date) -> dict[tuple[int, int], list[str]]:
    """The same answers, computed from the raw rows in plain Python (no pyarrow compute)."""
    sets: dict[tuple[int, int], set[str]] = {}
    cols = raw.to_pydict()
    for i, movie_id in enumerate(cols["movie_id"]):
        if not cols["window_start"][i] <= day < cols["window_end"][i]:
            continue
        for dimension_id, column in DIMENSIONS.items():
            value = cols[column][i]
            if value is not None:
                sets.setdefault((movie_id, dimension_id), set()).add(value)
    return {k: sorted(v) for k, v in sets.items()}


def per_request_from_raw(raw: pa.Table, movie_id: int, dimension_id: int) -> list[str]:
    """What serving from the fact table costs: filter, distinct, sort on every request."""
    column = DIMENSIONS[dimension_id]
    rows = active(raw.filter(pc.field("movie_id") == movie_id), AS_OF)
    return sorted(pc.unique(rows[column].drop_null()).to_pylist())


def short(values: list[str], n: int = 6) -> str:
    shown = ", ".join(values[:n]) + (", ..." if len(values) > n else "")
    return f"[{shown}] ({len(values)})"


def run(root: Path) -> None:
    t = time.perf_counter()
    raw = licensing_windows()
    say(f"1. raw licensing windows: {raw.num_rows:,} rows for {TITLES:,} titles "
        f"({time.perf_counter() - t:.2f} s)")

    t = time.perf_counter()
    rows = title_dimensions(raw, AS_OF)
    say(f"2. aggregated with pyarrow (windows open on {AS_OF}, distinct, sorted): "
        f"{rows.num_rows:,} (movie_id, dimension_id, vals) rows ({time.perf_counter() - t:.2f} s)")

    t = time.perf_counter()
    write_iceberg(root, rows)
    say(f"3. written to the Iceberg table {TABLE} ({time.perf_counter() - t:.2f} s)")

    t = time.perf_counter()
    line = publish_once(write_config(root))
    fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
    say(f"4. `feedkit-producer once --config producer.toml`: version {fields.get('version')}, "
        f"{int(fields.get('records', 0)):,} records, {int(fields.get('bytes_written', 0)):,} "
        f"bytes ({time.perf_counter() - t:.2f} s with the process start)")

    store = feedkit.open_store(str(root / "store"))
    with feedkit.Consumer(store, feed=FEED, cache_dir=root / "cache", watch=False) as feed:
        say(f"5. consumer serving version {feed.version}")
        licensed = set(rows.filter(pc.field("dimension_id") == COUNTRY)["movie_id"].to_pylist())
        unlicensed = next(m for m in range(FIRST_ID, FIRST_ID + TITLES) if m not in licensed)
        for movie_id, dimension_id in [(FIRST_ID, COUNTRY), (FIRST_ID, AUDIO_LANGUAGE),
                                       (FIRST_ID + 2, SUBTITLE_LANGUAGE),
                                       (unlicensed, COUNTRY)]:
            answer = get_dimensions(feed, movie_id, dimension_id)
            call = f"get_dimensions(feed, {movie_id}, {CONSTANTS[dimension_id]})"
            say(f"   {call:<52} -> {short(answer)}")
        say(f"   ({unlicensed} has no licensing window open on {AS_OF}: no record, [])")

        t = time.perf_counter()
        expected = expected_from_raw(raw, AS_OF)
        asked = [(m, d) for m in range(FIRST_ID, FIRST_ID + TITLES) for d in DIMENSIONS]
        wrong = [k for k in asked if get_dimensions(feed, *k) != expected.get(k, [])]
        empty = sum(1 for k in asked if k not in expected)
        say(f"6. checked all {len(asked):,} (title, dimension) answers against the raw table "
            f"in plain Python: {len(asked) - len(wrong):,} equal, {len(wrong)} different "
            f"({empty:,} empty: no open window) ({time.perf_counter() - t:.2f} s)")
        if wrong:
            k = wrong[0]
            raise AssertionError(f"{k}: feed says {get_dimensions(feed, *k)}, "
                                 f"raw table says {expected.get(k, [])}")

        rng = np.random.default_rng(11)
        sample = list(zip(rng.integers(FIRST_ID, FIRST_ID + TITLES, 100_000).tolist(),
                          rng.integers(1, len(DIMENSIONS) + 1, 100_000).tolist(), strict=True))
        t = time.perf_counter_ns()
        for k in sample:
            get_dimensions(feed, *k)
        lookup_ns = (time.perf_counter_ns() - t) / len(sample)
        t = time.perf_counter_ns()
        for k in sample[:100]:
            assert per_request_from_raw(raw, *k) == expected.get(k, [])
        scan_ns = (time.perf_counter_ns() - t) / 100
        say(f"   per request: get_dimensions {lookup_ns / 1000:.1f} µs (mean of 100,000) vs "
            f"filter + distinct over the raw table {scan_ns / 1e6:.1f} ms (mean of 100): "
            f"{scan_ns / lookup_ns:,.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (warehouse, store, producer.toml)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="feedkit-muse-"))
    say(f"Muse getDimensions on feedkit (working folder {root})")
    started = time.perf_counter()
    try:
        run(root)
    except Exception as exc:  # noqa: BLE001 - an example: say what failed, keep the folder
        say(f"\nFAILED: {type(exc).__name__}: {exc}\n(kept {root})")
        return 1
    say(f"done in {time.perf_counter() - started:.1f} s")
    if args.keep:
        say(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
