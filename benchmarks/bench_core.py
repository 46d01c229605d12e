"""Core benchmark: feedkit lookups and open time against py-lmdb + msgpack and a dict.

Run::

    .venv/bin/python benchmarks/bench_core.py [--records 1000000] [--large 10000000] [--quick]

``--quick`` is 100k records and no large open test; ``--large 0`` skips the large open
test. Everything runs in one process, on the same records and the same seeded random
keys for every library, and the ratios are printed side by side. Timings are reported,
never asserted. Results go to ``benchmarks/results/core.json`` (``core-quick.json``
with ``--quick``): a list of rows ``{name, unit, feedkit, peer, peer_value, ratio, goal,
met}``. For the ratio rows ``goal`` is the largest acceptable feedkit/peer ratio; for
the open rows it is the largest acceptable feedkit time in ``unit`` (ms), and ``ratio``
is only informative.

Method:

1. get(): a warm-up pass over all sample keys for each library, then 7 interleaved
   rounds (feedkit, lmdb, dict, feedkit, ...). Each round times batches of 100 lookups
   with ``time.perf_counter_ns``; per-lookup time = batch time / 100. The median and
   p99 over a round's batches are taken, and the median over rounds is reported.
2. get_many(): ``feed.get_many`` over chunks of 1000 keys against a loop of
   ``feed.get`` over the same chunks (and lmdb ``Cursor.getmulti`` + msgpack for
   reference), 7 interleaved rounds, per-key time per chunk, median over chunks, median
   over rounds.
3. Open on an already cached state: ``Consumer(store, feed=..., cache_dir=..., watch=False)
   .open()`` plus one get, median of 7 opens, at N records and at the large count;
   lmdb ``open(readonly=True, lock=False)`` plus one get at N for comparison.

The garbage collector is disabled inside every timing window, for every library alike,
and enabled between them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import feedkit

SEED = 20240611
FEED = "bench.core"
FEED_LARGE = "bench.core-large"
SAMPLE_KEYS = 200_000
ROUNDS = 7
BATCH = 100  # lookups per timed batch (get)
CHUNK = 1000  # keys per get_many call
OPENS = 7
GEN_ROWS = 1 << 20  # rows per generated record batch
COUNTRIES = ["US", "GB", "FR", "DE"]
SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("title", pa.string()),
    ("year", pa.int32()),
    ("score", pa.float64()),
    ("country", pa.string()),
])
Row = namedtuple("Row", SCHEMA.names)  # the dict peer's decoded records
_BE64 = struct.Struct(">q")  # lmdb keys: big-endian, so ascending ids are sorted keys

GOAL_GET_LMDB = 0.75
GOAL_GET_DICT = 3.0
GOAL_GET_MANY = 0.25
GOAL_OPEN_MS = 20.0


# -- data -------------------------------------------------------------------------------


def generate(n: int, seed: int) -> Iterator[pa.RecordBatch]:
    """N records in batches: sparse ascending ids (10*i + 0..9), vectorised columns."""
    rng = np.random.default_rng(seed)
    countries = pa.array(COUNTRIES, pa.string())
    for start in range(0, n, GEN_ROWS):
        m = min(GEN_ROWS, n - start)
        ids = np.arange(start, start + m, dtype=np.int64) * 10 + rng.integers(0, 10, m)
        id_arr = pa.array(ids, pa.int64())
        title = pc.binary_join_element_wise("title", pc.cast(id_arr, pa.string()), " ")
        year = pa.array(rng.integers(1920, 2026, m, dtype=np.int32), pa.int32())
        score = pa.array(np.round(rng.random(m) * 10, 2), pa.float64())
        country = countries.take(pa.array(rng.integers(0, len(COUNTRIES), m, dtype=np.int32)))
        yield pa.record_batch([id_arr, title, year, score, country], schema=SCHEMA)


def build_lmdb(path: Path, table: pa.Table) -> None:
    """The same records, msgpack-packed as arrays in column order, keyed by big-endian id."""
    cols = [table.column(name).to_pylist() for name in SCHEMA.names]
    packb, pack = msgpack.packb, _BE64.pack
    items = [(pack(r[0]), packb(list(r))) for r in zip(*cols, strict=True)]
    map_size = max(1 << 30, 4 * sum(len(k) + len(v) + 64 for k, v in items))
    env = lmdb.open(str(path), map_size=map_size, sync=False, metasync=False)
    with env.begin(write=True) as txn:
        txn.cursor().putmulti(items, append=True)
    env.sync(True)
    env.close()


def build_dict(table: pa.Table) -> dict[int, Row]:
    cols = [table.column(name).to_pylist() for name in SCHEMA.names]
    return {r[0]: Row(*r) for r in zip(*cols, strict=True)}


# -- timing windows ---------------------------------------------------------------------
# One function per library, with the lookup inlined in the loop, so that no library pays
# for an extra call layer. Chunks are sliced before the window opens.


def _window(body: Callable[[], list[int]]) -> list[int]:
    gc.disable()
    try:
        return body()
    finally:
        gc.enable()


def time_feedkit_get(get: Callable[[Any], Any], chunks: list[list[int]]) -> list[int]:
    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            for k in chunk:
                get(k)
            out.append(clock() - t)
        return out
    return _window(body)


def time_lmdb_get(txn: lmdb.Transaction, chunks: list[list[int]]) -> list[int]:
    tget, pack, unpackb = txn.get, _BE64.pack, msgpack.unpackb

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            for k in chunk:
                unpackb(tget(pack(k)))
            out.append(clock() - t)
        return out
    return _window(body)


def time_dict_get(d: dict[int, Row], chunks: list[list[int]]) -> list[int]:
    dget = d.get

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            for k in chunk:
                dget(k)
            out.append(clock() - t)
        return out
    return _window(body)


def time_feedkit_get_many(get_many: Callable[[Any], Any], chunks: list[list[int]]) -> list[int]:
    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            get_many(chunk)
            out.append(clock() - t)
        return out
    return _window(body)


def time_lmdb_getmulti(cursor: lmdb.Cursor, chunks: list[list[int]]) -> list[int]:
    getmulti, pack, unpackb = cursor.getmulti, _BE64.pack, msgpack.unpackb

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            [unpackb(v) for _, v in getmulti([pack(k) for k in chunk])]
            out.append(clock() - t)
        return out
    return _window(body)


def summarize(rounds: list[list[int]], per: int) -> tuple[float, float]:
    """(median over rounds of the per-item median, same for p99), in ns per item."""
    medians, p99s = [], []
    for r in rounds:
        a = np.asarray(r, dtype=np.float64) / per
        medians.append(float(np.median(a)))
        p99s.append(float(np.percentile(a, 99)))
    return statistics.median(medians), statistics.median(p99s)


def interleaved(runs: dict[str, Callable[[], list[int]]]) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            out[name].append(run())
    return out


def bench_lookups(consumer: Any, txn: lmdb.Transaction, cursor: lmdb.Cursor,
                  d: dict[int, Row], get_chunks: list[list[int]],
                  many_chunks: list[list[int]]) -> dict[str, float]:
    """Parts 1 and 2: get() and get_many(), warm-up then interleaved rounds."""
    fk_get, fk_get_many = consumer.get, consumer.get_many
    step(f"get(): warm-up, then {ROUNDS} interleaved rounds")
    get_runs = {
        "feedkit": lambda: time_feedkit_get(fk_get, get_chunks),
        "lmdb": lambda: time_lmdb_get(txn, get_chunks),
        "dict": lambda: time_dict_get(d, get_chunks),
    }
    for run in get_runs.values():
        run()
    res = interleaved(get_runs)
    f: dict[str, float] = {}
    f["fk_med"], f["fk_p99"] = summarize(res["feedkit"], BATCH)
    f["lm_med"], f["lm_p99"] = summarize(res["lmdb"], BATCH)
    f["dc_med"], f["dc_p99"] = summarize(res["dict"], BATCH)

    step(f"get_many(): warm-up, then {ROUNDS} interleaved rounds")
    many_runs = {
        "get_many": lambda: time_feedkit_get_many(fk_get_many, many_chunks),
        "get loop": lambda: time_feedkit_get(fk_get, many_chunks),
        "getmulti": lambda: time_lmdb_getmulti(cursor, many_chunks),
    }
    for run in many_runs.values():
        run()
    res = interleaved(many_runs)
    f["gm"] = summarize(res["get_many"], CHUNK)[0]
    f["loop"] = summarize(res["get loop"], CHUNK)[0]
    f["multi"] = summarize(res["getmulti"], CHUNK)[0]
    return f


def time_consumer_open(store: feedkit.BlobStore, feed: str, cache_dir: Path, key: int) -> float:
    """Median ms of OPENS cached opens (+ one get)."""
    times = []
    for _ in range(OPENS):
        gc.disable()
        try:
            t = time.perf_counter_ns()
            consumer = feedkit.Consumer(store, feed=feed, cache_dir=cache_dir, watch=False).open()
            rec = consumer.get(key)
            elapsed = time.perf_counter_ns() - t
        finally:
            gc.enable()
        consumer.close()
        if rec is None:
            raise SystemExit(f"feedkit {feed}: key {key} missing after open")
        times.append(elapsed / 1e6)
    return statistics.median(times)


def time_lmdb_open(path: Path, key: int) -> float:
    times = []
    for _ in range(OPENS):
        gc.disable()
        try:
            t = time.perf_counter_ns()
            env = lmdb.open(str(path), readonly=True, lock=False)
            with env.begin(buffers=True) as txn:
                rec = msgpack.unpackb(txn.get(_BE64.pack(key)))
            elapsed = time.perf_counter_ns() - t
        finally:
            gc.enable()
        env.close()
        if rec is None:
            raise SystemExit(f"lmdb: key {key} missing after open")
        times.append(elapsed / 1e6)
    return statistics.median(times)


# -- report -----------------------------------------------------------------------------


def row(name: str, unit: str, value: float, peer: str | None, peer_value: float | None,
        goal: float | None, *, absolute: bool = False) -> dict[str, Any]:
    ratio = value / peer_value if peer_value else None
    if goal is None:
        met = None
    elif absolute:
        met = value <= goal
    else:
        met = ratio is not None and ratio <= goal
    return {"name": name, "unit": unit, "feedkit": round(value, 4), "peer": peer,
            "peer_value": None if peer_value is None else round(peer_value, 4),
            "ratio": None if ratio is None else round(ratio, 3), "goal": goal, "met": met}


def print_rows(rows: list[dict[str, Any]]) -> None:
    head = (f"{'metric':<18} {'unit':<7} {'feedkit':>10}  {'peer':<13} {'peer value':>10}  "
            f"{'ratio':>7}  {'goal':<11} {'met'}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        spec = ",.3f" if r["unit"] == "ms" else ",.1f"
        peer_value = "" if r["peer_value"] is None else format(r["peer_value"], spec)
        if r["goal"] is None:
            goal = "(reference)"
        elif r["unit"] == "ms":
            goal = f"<= {r['goal']:g} ms"
        else:
            goal = f"<= {r['goal']:g}x"
        met = "" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        print(f"{r['name']:<18} {r['unit']:<7} {format(r['feedkit'], spec):>10}  "
              f"{r['peer'] or '-':<13} "
              f"{peer_value:>10}  {ratio:>7}  {goal:<11} {met}")


def versions() -> str:
    out = []
    for dist in ("feedkit", "lmdb", "msgpack", "numpy", "pyarrow"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def step(msg: str) -> None:
    print(f"  .. {msg}", flush=True)


# -- main -------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--large", type=int, default=10_000_000,
                    help="records for the large open test (0 skips it)")
    ap.add_argument("--quick", action="store_true", help="100k records, no large open test")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.records
    large = 0 if args.quick else args.large
    if n < 1:
        ap.error("--records must be >= 1")

    now = dt.datetime.now().astimezone()
    print(f"feedkit core benchmark, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()} "
          f"({platform.python_implementation()})")
    print(f"versions: {versions()}")
    print(f"load average at start: {load()} (other work on the machine skews the figures)")
    print(f"records: {n:,}; large open test: {f'{large:,} records' if large else 'skipped'}; "
          f"sample keys: {SAMPLE_KEYS:,} (seed {SEED}); rounds: {ROUNDS}")
    print(flush=True)

    root = Path(tempfile.mkdtemp(prefix="feedkit-bench-"))
    info: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    try:
        store = feedkit.open_store(root / "store")
        cache_dir = root / "cache"

        step(f"generating {n:,} records")
        table = pa.Table.from_batches(list(generate(n, SEED)), schema=SCHEMA)
        rng = np.random.default_rng(SEED + 1)
        ids = table.column("id").to_numpy()
        keys = ids[rng.integers(0, n, SAMPLE_KEYS)].tolist()
        get_chunks = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]
        many_chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]

        step("publishing with feedkit.Producer")
        producer = feedkit.Producer(store, feed=FEED, primary_key="id")
        t = time.perf_counter()
        producer.publish(table)
        info["publish_s"] = time.perf_counter() - t
        producer.close()

        step("filling lmdb")
        lmdb_path = root / "lmdb"
        t = time.perf_counter()
        build_lmdb(lmdb_path, table)
        info["lmdb_fill_s"] = time.perf_counter() - t

        step("building the dict")
        d = build_dict(table)

        t = time.perf_counter()
        consumer = feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, watch=False).open()
        info["first_open_ms"] = (time.perf_counter() - t) * 1000
        env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
        txn = env.begin(buffers=True)
        cursor = txn.cursor()

        # Same answers from all three before anything is timed.
        for k in keys[:2000]:
            want = d[k]
            if tuple(consumer.get(k)) != tuple(want):
                raise SystemExit(f"feedkit get({k}) = {consumer.get(k)!r}, expected {want!r}")
            if msgpack.unpackb(txn.get(_BE64.pack(k))) != list(want):
                raise SystemExit(f"lmdb get({k}) disagrees with {want!r}")
        got = consumer.get_many(many_chunks[0])
        multi = [msgpack.unpackb(v) for _, v in
                 cursor.getmulti([_BE64.pack(k) for k in many_chunks[0]])]
        for k, rec, lrec in zip(many_chunks[0], got, multi, strict=True):
            if tuple(rec) != tuple(d[k]) or lrec != list(d[k]):
                raise SystemExit(f"get_many/getmulti disagree for key {k}")

        figures = bench_lookups(consumer, txn, cursor, d, get_chunks, many_chunks)
        txn.abort()
        env.close()
        consumer.close()
        del consumer, txn, cursor, env

        step(f"open on a cached state: {OPENS} opens each")
        open_ms = time_consumer_open(store, FEED, cache_dir, keys[0])
        lmdb_open_ms = time_lmdb_open(lmdb_path, keys[0])

        f = figures
        rows += [
            row("get_median", "ns", f["fk_med"], "lmdb+msgpack", f["lm_med"], GOAL_GET_LMDB),
            row("get_median", "ns", f["fk_med"], "dict", f["dc_med"], GOAL_GET_DICT),
            row("get_p99", "ns", f["fk_p99"], "lmdb+msgpack", f["lm_p99"], GOAL_GET_LMDB),
            row("get_p99", "ns", f["fk_p99"], "dict", f["dc_p99"], GOAL_GET_DICT),
            row("get_many", "ns/key", f["gm"], "get loop", f["loop"], GOAL_GET_MANY),
            row("get_many", "ns/key", f["gm"], "lmdb+msgpack", f["multi"], None),
            row("open_cached", "ms", open_ms, "lmdb open", lmdb_open_ms, GOAL_OPEN_MS,
                absolute=True),
        ]
        del d, table

        if large:
            step(f"publishing {large:,} records (generated in batches of {GEN_ROWS:,})")
            first: list[int] = []

            def batches() -> Iterator[pa.RecordBatch]:
                for b in generate(large, SEED + 2):
                    if not first:
                        first.append(int(b.column(0)[0].as_py()))
                    yield b

            producer = feedkit.Producer(store, feed=FEED_LARGE, primary_key="id")
            t = time.perf_counter()
            producer.publish(pa.RecordBatchReader.from_batches(SCHEMA, batches()))
            info["large_publish_s"] = time.perf_counter() - t
            producer.close()
            t = time.perf_counter()
            feedkit.Consumer(store, feed=FEED_LARGE, cache_dir=cache_dir, watch=False).open().close()
            info["large_first_open_ms"] = (time.perf_counter() - t) * 1000
            step(f"open on the cached large state: {OPENS} opens")
            large_ms = time_consumer_open(store, FEED_LARGE, cache_dir, first[0])
            rows.append(row("open_cached_large", "ms", large_ms, None, None, GOAL_OPEN_MS,
                            absolute=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"setup (not goals): feedkit publish of {n:,} records {info['publish_s']:.2f} s; "
          f"lmdb fill {info['lmdb_fill_s']:.2f} s; first feedkit open (fetch, decompress, "
          f"verify) {info['first_open_ms']:.0f} ms")
    if large:
        print(f"large: feedkit publish of {large:,} records {info['large_publish_s']:.1f} s; "
              f"first open {info['large_first_open_ms']:.0f} ms")
    print(f"get: per lookup, batches of {BATCH}; get_many: per key, chunks of {CHUNK}; "
          f"medians over {ROUNDS} rounds; open: median of {OPENS}, including one get")
    print("ratio = feedkit / peer; get_many vs lmdb+msgpack is Cursor.getmulti + unpackb "
          "(reference, no goal); open_cached's lmdb peer is lmdb.open at the same N")
    print()
    print_rows(rows)
    print(f"\nload average at end: {load()}")

    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / ("core-quick.json" if args.quick else "core.json")
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    sys.exit(main())
