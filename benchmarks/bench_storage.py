"""Storage benchmark: bytes per record of feedkit's state files and blobs against
Parquet-zstd, lmdb+msgpack and a Python dict, on three tables.

Run::

    .venv/bin/python benchmarks/bench_storage.py [--records 1000000] [--quick]
        [--format N] [--out PATH]

``--quick`` is 100k records. ``--format N`` is passed to the Producer as ``format=N``
(the state-file format to write); without it the Producer writes its default and is not
given the keyword. Sizes are measured, never timings. Results go to
``benchmarks/results/storage.json`` (``storage-quick.json`` with ``--quick``, or
``--out``): rows ``{name, unit, feedkit, peer, peer_value, ratio, goal, met}`` (see
``common.py``), ``ratio = feedkit / peer``, each with ``table`` (which table),
``feedkit_bytes`` and ``peer_bytes`` (the totals the per-record figures come from) and,
on the state-file rows, ``state_format`` (read from the state file's header).

The tables, N rows each, generated vectorised (numpy, pyarrow) in batches of
``GEN_ROWS``, seeded:

- ``five``: ``id`` int64 key, sparse ascending (10*i + 0..9); ``name`` unique string
  (``"name <id>"``); ``count`` int64 0..100000; ``score`` float64 0..100 rounded to 3
  decimals; ``flag`` bool; ``pair`` list<int64> of 2 ints 0..1000.
- ``muse``: Netflix's Muse-like filter values: key (``movie_id`` int64, sparse
  ascending; ``dimension_id`` int64, ``DIMENSIONS`` per movie, 3*j + 0..2) and
  ``values`` list<string>: 3..30 distinct strings of a vocabulary of ``VOCABULARY``
  short ones (5..10 characters: "action", "en-US", "4k-hdr", ...), drawn uniformly.
- ``nested``: ``id`` int64 key as ``five``'s; ``info`` struct<title: string, year: int32,
  rating: float64>; ``tags`` map<string, int64> of 0..5 distinct keys from 20 tags;
  ``cast`` list<struct<name: string, role: string>> of 0..4 entries from 200 names and 6
  roles.

Method, per table, in a temporary folder:

1. ``parquet-zstd``: ``pyarrow.parquet.write_table(table, path, compression="zstd",
   compression_level=3)`` (feedkit's blobs are zstd level 3 too); its file size.
2. ``state_files``: ``feedkit.Producer(store, feed=..., primary_key=..., work_dir=...)``
   publishes the table to ``feedkit.open_store("file://...")``; a ``Consumer(store,
   feed=..., cache_dir=..., watch=False)`` opens it and serves ``CHECK_KEYS`` random keys
   exactly as the table holds them (checked, not timed). The value is the sum of the
   state files in its cache folder for the feed (``\\d{20}.base`` and
   ``\\d{20}-\\d{20}.overlay``, docs/FORMAT.md section 8): the files a host maps. Its
   peers are the Parquet file (goal), lmdb and the dict (references).
3. ``snapshot_blob``: the first version's ``.snapshot.zst`` in the store (its size,
   checked against the manifest), against the Parquet file.
4. ``delta_blob``: ``CHANGE_SHARE`` of the rows, at random positions, get new values
   (keys kept; rows that happen to come out equal are dropped, so every one counts) and
   the whole table is published again by the same Producer: the ``.delta.zst`` of that
   version, per changed record, against the changed rows alone as Parquet-zstd (same
   options), per record. The consumer refreshes to it and serves the new values
   (checked); its cache folder after the refresh is printed.
5. ``lmdb+msgpack``: an lmdb environment filled as bench_core's peer is
   (``build_lmdb``: one write transaction, keys in order): the key as big-endian int64s,
   the value ``msgpack.packb`` of the row's values (a tuple, from ``to_pylist``); the
   size of ``data.mdb`` (what lmdb maps).
6. ``dict``: in a child process (``--child-dict``), a Python dict of key -> tuple of the
   row's values (``to_pylist`` of the Parquet file read back, batch by batch; a composite
   key is a tuple of the row's own key objects): its size is tracemalloc's traced
   total after building it minus before (Python's own allocations: the objects, the
   tuples, the dict's table; pyarrow's buffers are not traced). The child first builds
   the same dict without tracemalloc and prints its RSS growth, for reference (it
   includes the allocator's arenas).

Goals (issue 13): state files <= 5x Parquet-zstd on ``five`` and ``nested``, <= 3x on
``muse``; the snapshot blob <= 1.0x Parquet-zstd on every table; the delta blob per
changed record <= 1.0x Parquet-zstd of the changed rows per record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_core import build_lmdb
from common import RESULTS, load, print_rows, row, step, versions, write_rows

import feedkit
from feedkit import names
from feedkit.format import StateFile
from feedkit.manifest import Manifest

SEED = 20240613
FEED = "bench.storage"  # the feeds are bench.storage-<table>
GEN_ROWS = 1_000_000  # rows per generated batch (a multiple of DIMENSIONS)
CHANGE_SHARE = 0.01  # share of the rows the second version changes
CHECK_KEYS = 200  # keys checked against the table, per version
PARQUET_LEVEL = 3
UNIT = "B/record"

DIMENSIONS = 20  # muse: dimensions per movie
VOCABULARY = 300  # muse: distinct filter values
TAGS = 20  # nested: the tags' vocabulary
NAMES = 200  # nested: distinct cast names
PICK_SPARE = 8  # draws beyond a row's length, so that dropping repeats leaves enough
ROLES = ["actor", "director", "writer", "producer", "composer", "voice"]

GOAL_STATE = {"five": "<= 5x", "muse": "<= 3x", "nested": "<= 5x"}
GOAL_SNAPSHOT = "<= 1.0x"
GOAL_DELTA = "<= 1.0x"

STATE_NAME = re.compile(r"\d{20}\.base|\d{20}-\d{20}\.overlay")  # docs/FORMAT.md, section 8

# Filter values as Muse shows them; the vocabulary is filled up to VOCABULARY with made-up
# ones of the same shape (5..10 characters).
FILTER_VALUES = [
    "action", "comedy", "drama", "horror", "thriller", "romance", "sci-fi", "anime",
    "family", "crime", "en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "es-MX", "pt-BR",
    "ja-JP", "ko-KR", "it-IT", "hi-IN", "4k-hdr", "dolby", "atmos", "hdr10", "sdr-hd",
    "kids-7", "teen-13", "adult", "award", "classic", "indie", "nature", "reality", "sports",
]


# -- the tables -------------------------------------------------------------------------


def vocabulary(count: int, seed: int) -> list[str]:
    """``count`` distinct short strings (5..10 characters): FILTER_VALUES, then made-up
    ones of syllables, some with a region or a number, as filter values look."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ro", "ta", "vi", "zu", "be", "do", "fa", "gu",
                 "sha", "tri", "pl", "str"]
    suffixes = ["", "", "", "-us", "-eu", "-hd", "-4k", "-2", "-3"]
    out = list(dict.fromkeys(FILTER_VALUES))[:count]
    seen = set(out)
    while len(out) < count:
        word = "".join(rng.choice(syllables, int(rng.integers(2, 4)))) + str(
            rng.choice(suffixes))
        if 5 <= len(word) <= 10 and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _ids(start: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse ascending int64 keys of rows ``start .. start+m-1``: 10*i + 0..9."""
    return np.arange(start, start + m, dtype=np.int64) * 10 + rng.integers(0, 10, m)


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), pa.int32())


def _distinct_picks(lengths: np.ndarray, size: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For row i, up to ``lengths[i]`` distinct indexes into a vocabulary of ``size``,
    uniform, in random order: ``lengths[i] + PICK_SPARE`` draws, repeats within the row
    dropped, the first ``lengths[i]`` kept (fewer only when the spares ran out, which
    almost never happens). Returns (the indexes, row after row; each row's count)."""
    m = len(lengths)
    owner = np.repeat(np.arange(m, dtype=np.int64), lengths + PICK_SPARE)
    # One sorted int64 carries (row, index): sorting it groups a row's repeats together.
    # (np.unique is far slower than a sort here; the stable sort of nearly sorted ints is
    # the fastest numpy has.)
    pairs = np.sort(owner * size + rng.integers(0, size, len(owner)), kind="stable")
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:] != pairs[:-1]
    pairs = pairs[first]
    owner, picks = pairs // size, pairs % size
    # Then (row, random, index) in one int64, sorted: each row's picks in random order.
    shuffled = np.sort((owner << 40) | (rng.integers(0, 1 << 20, len(owner)) << 20) | picks,
                       kind="stable")
    owner, picks = shuffled >> 40, shuffled & ((1 << 20) - 1)
    counts = np.bincount(owner, minlength=m)
    position = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return picks[position < lengths[owner]], np.minimum(lengths, counts)


@dataclass(frozen=True)
class Spec:
    """One table: its schema and key, how its keys and values are generated."""

    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    keys: Callable[[int, int, np.random.Generator], dict[str, np.ndarray]]
    values: Callable[[dict[str, np.ndarray], np.random.Generator], pa.RecordBatch]

    @property
    def primary_key(self) -> str | tuple[str, ...]:
        return self.key[0] if len(self.key) == 1 else self.key

    def batches(self, n: int, seed: int) -> Iterator[pa.RecordBatch]:
        rng = np.random.default_rng(seed)
        for start in range(0, n, GEN_ROWS):
            yield self.values(self.keys(start, min(GEN_ROWS, n - start), rng), rng)

    def table(self, n: int, seed: int) -> pa.Table:
        return pa.Table.from_batches(list(self.batches(n, seed)), schema=self.schema)


FIVE_SCHEMA = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("count", pa.int64()),
    ("score", pa.float64()), ("flag", pa.bool_()), ("pair", pa.list_(pa.int64())),
])


def five_values(keys: dict[str, np.ndarray], rng: np.random.Generator) -> pa.RecordBatch:
    ids = pa.array(keys["id"], pa.int64())
    m = len(ids)
    name = pc.binary_join_element_wise("name", pc.cast(ids, pa.string()), " ")
    count = pa.array(rng.integers(0, 100_001, m), pa.int64())
    score = pa.array(np.round(rng.random(m) * 100, 3), pa.float64())
    flag = pa.array(rng.random(m) < 0.5, pa.bool_())
    pair = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * m + 1, 2, dtype=np.int32)),
                                    pa.array(rng.integers(0, 1001, 2 * m), pa.int64()))
    return pa.RecordBatch.from_arrays([ids, name, count, score, flag, pair], schema=FIVE_SCHEMA)


MUSE_SCHEMA = pa.schema([
    ("movie_id", pa.int64()), ("dimension_id", pa.int64()), ("values", pa.list_(pa.string())),
])
MUSE_VOCABULARY = pa.array(vocabulary(VOCABULARY, SEED), pa.string())


def muse_keys(start: int, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows ``start .. start+m-1`` (``start`` a multiple of DIMENSIONS): movie i holds
    rows DIMENSIONS*i .. DIMENSIONS*i + DIMENSIONS-1, one per dimension j, id 3*j + 0..2."""
    first = start // DIMENSIONS
    movies = -(-m // DIMENSIONS)
    movie = np.repeat(_ids(first, movies, rng), DIMENSIONS)[:m]
    j = np.tile(np.arange(DIMENSIONS, dtype=np.int64), movies)[:m]
    return {"movie_id": movie, "dimension_id": j * 3 + rng.integers(0, 3, m)}


def muse_values(keys: dict[str, np.ndarray], rng: np.random.Generator) -> pa.RecordBatch:
    m = len(keys["movie_id"])
    picks, lengths = _distinct_picks(rng.integers(3, 31, m), VOCABULARY, rng)
    values = pa.ListArray.from_arrays(_offsets(lengths), MUSE_VOCABULARY.take(pa.array(picks)))
    return pa.RecordBatch.from_arrays(
        [pa.array(keys["movie_id"], pa.int64()), pa.array(keys["dimension_id"], pa.int64()),
         values], schema=MUSE_SCHEMA)


INFO = pa.struct([("title", pa.string()), ("year", pa.int32()), ("rating", pa.float64())])
CAST = pa.struct([("name", pa.string()), ("role", pa.string())])
NESTED_SCHEMA = pa.schema([
    ("id", pa.int64()), ("info", INFO), ("tags", pa.map_(pa.string(), pa.int64())),
    ("cast", pa.list_(CAST)),
])
TAG_VOCABULARY = pa.array(FILTER_VALUES[:TAGS], pa.string())
NAME_VOCABULARY = pa.array([f"{first} {last}" for first in (
    "Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gia", "Hugo", "Ines", "Jon", "Kai", "Lea",
    "Max", "Nia", "Omar", "Pia", "Rui", "Sia", "Tom", "Uma") for last in (
    "Abe", "Berg", "Cruz", "Diaz", "Eng", "Fox", "Gray", "Holm", "Ito", "Jung")][:NAMES],
    pa.string())
ROLE_VOCABULARY = pa.array(ROLES, pa.string())


def nested_values(keys: dict[str, np.ndarray], rng: np.random.Generator) -> pa.RecordBatch:
    ids = pa.array(keys["id"], pa.int64())
    m = len(ids)
    info = pa.StructArray.from_arrays(
        [pc.binary_join_element_wise("title", pc.cast(ids, pa.string()), " "),
         pa.array(rng.integers(1920, 2026, m, dtype=np.int32), pa.int32()),
         pa.array(np.round(rng.random(m) * 10, 1), pa.float64())], fields=list(INFO))
    tag_picks, tag_lengths = _distinct_picks(rng.integers(0, 6, m), TAGS, rng)
    tag_keys = TAG_VOCABULARY.take(pa.array(tag_picks))
    tag_items = pa.array(rng.integers(0, 1001, int(tag_lengths.sum())), pa.int64())
    tags = pa.MapArray.from_arrays(_offsets(tag_lengths), tag_keys, tag_items,
                                   type=NESTED_SCHEMA.field("tags").type)
    cast_lengths = rng.integers(0, 5, m)
    total = int(cast_lengths.sum())
    members = pa.StructArray.from_arrays(
        [NAME_VOCABULARY.take(pa.array(rng.integers(0, len(NAME_VOCABULARY), total))),
         ROLE_VOCABULARY.take(pa.array(rng.integers(0, len(ROLES), total)))],
        fields=list(CAST))
    cast = pa.ListArray.from_arrays(_offsets(cast_lengths), members,
                                    type=NESTED_SCHEMA.field("cast").type)
    return pa.RecordBatch.from_arrays([ids, info, tags, cast], schema=NESTED_SCHEMA)


SPECS = {
    "five": Spec("five", ("id",), FIVE_SCHEMA, lambda s, m, rng: {"id": _ids(s, m, rng)},
                 five_values),
    "muse": Spec("muse", ("movie_id", "dimension_id"), MUSE_SCHEMA, muse_keys, muse_values),
    "nested": Spec("nested", ("id",), NESTED_SCHEMA, lambda s, m, rng: {"id": _ids(s, m, rng)},
                   nested_values),
}


def changed(spec: Spec, table: pa.Table, share: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """(the table with ``share`` of its rows given new values, the changed rows alone).

    The rows are at random positions; their keys stay and their values are generated
    again. A row that comes out equal to its old self is dropped from the change, so
    every row of the second table differs from the one it replaces."""
    rng = np.random.default_rng(seed)
    n = table.num_rows
    positions = np.sort(rng.choice(n, max(1, round(n * share)), replace=False))
    at = pa.array(positions)
    keys = {k: table.column(k).take(at).to_numpy() for k in spec.key}
    new = pa.Table.from_batches([spec.values(keys, rng)], schema=spec.schema)
    differs = [a != b for a, b in zip(table.take(at).to_pylist(), new.to_pylist(),
                                      strict=True)]
    new = new.filter(pa.array(differs))
    mask = np.zeros(n, bool)
    mask[positions[np.array(differs, bool)]] = True
    return pa.concat_tables([table.filter(pa.array(~mask)), new]), new


# -- the measures -----------------------------------------------------------------------


def parquet_bytes(table: pa.Table, path: Path) -> int:
    pq.write_table(table, path, compression="zstd", compression_level=PARQUET_LEVEL)
    back = pq.read_metadata(path)
    columns = back.schema.to_arrow_schema().names
    if back.num_rows != table.num_rows or columns != table.schema.names:
        raise SystemExit(f"{path}: {back.num_rows} rows of {columns}, expected "
                         f"{table.num_rows} of {table.schema.names}")
    return path.stat().st_size


def state_files(folder: Path) -> list[Path]:
    """The state files of a feed's cache folder (docs/FORMAT.md, section 8)."""
    return sorted(p for p in folder.iterdir() if STATE_NAME.fullmatch(p.name))


def state_formats(files: list[Path]) -> list[int]:
    """The formats named in the files' headers (the mappings go with the objects)."""
    return sorted({int(StateFile(path).header["format"]) for path in files})


def blob_bytes(store: feedkit.BlobStore, store_dir: Path, feed: str, version: int,
               kind: str) -> int:
    """The size of version ``version``'s ``kind`` blob ("snapshot" or "delta"), from the
    store folder, checked against the manifest."""
    key = names.manifest_key(feed, version)
    manifest = Manifest.from_bytes(store.get_bytes(key), key)
    blob = getattr(manifest, kind)
    if blob is None:
        raise SystemExit(f"version {version} of {feed} has no {kind} blob: {manifest}")
    size = (store_dir / blob.key).stat().st_size
    if size != blob.size:
        raise SystemExit(f"{blob.key}: {size} bytes in the store, the manifest says "
                         f"{blob.size}")
    return size


def _expected(spec: Spec, rec: dict[str, Any]) -> dict[str, Any]:
    """A row of ``to_pylist`` as the consumer returns it: maps as dicts."""
    for f in spec.schema:
        if pa.types.is_map(f.type):
            rec[f.name] = dict(rec[f.name])
    return rec


def check_serves(spec: Spec, feed: feedkit.Consumer, rows: pa.Table, count: int,
                 seed: int) -> None:
    """``count`` random rows of ``rows`` (all of them when fewer) come back from ``feed``
    exactly as the table holds them."""
    rng = np.random.default_rng(seed)
    at = rng.choice(rows.num_rows, min(count, rows.num_rows), replace=False)
    for rec in rows.take(pa.array(at)).to_pylist():
        key = rec[spec.key[0]] if len(spec.key) == 1 else tuple(rec[k] for k in spec.key)
        got = feed.get(key)
        want = _expected(spec, rec)
        if got is None or got._asdict() != want:
            raise SystemExit(f"{spec.name}: feed.get({key!r}) = {got!r}, the table has {want!r}")


def rows_of(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """The rows' values as tuples (``to_pylist``, column by column, batch by batch)."""
    for batch in table.to_batches(max_chunksize=65536):
        yield from zip(*(c.to_pylist() for c in batch.columns), strict=True)


def lmdb_bytes(spec: Spec, table: pa.Table, path: Path) -> int:
    """lmdb holding key -> msgpack of the row, as bench_core's peer; data.mdb's size."""
    width = len(spec.key)
    at = [table.schema.get_field_index(k) for k in spec.key]
    pack = struct.Struct(">" + "q" * width).pack  # big-endian: ascending keys sort
    packb = msgpack.packb

    def items() -> Iterator[tuple[bytes, bytes]]:
        for r in rows_of(table):
            yield pack(*(r[i] for i in at)), packb(r)

    build_lmdb(path, items(), table.num_rows)
    return (path / "data.mdb").stat().st_size


def dict_bytes(parquet: Path, key: tuple[str, ...]) -> dict[str, Any]:
    """The dict peer, measured in a child process (``--child-dict``)."""
    done = subprocess.run([sys.executable, __file__, "--child-dict", str(parquet),
                           "--key", ",".join(key)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the dict child failed (exit {done.returncode}): "
                         f"{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def child_dict(parquet: Path, key: list[str]) -> int:
    """Build the dict twice: without tracemalloc (RSS growth, for reference), then under
    it (the traced total after minus before: the figure). Prints one JSON line."""
    import tracemalloc

    table = pq.read_table(parquet)
    at = [table.schema.get_field_index(k) for k in key]

    def build() -> dict[Any, tuple[Any, ...]]:
        if len(at) == 1:
            i = at[0]
            return {r[i]: r for r in rows_of(table)}
        return {tuple(r[i] for i in at): r for r in rows_of(table)}

    gc.collect()
    rss0 = _rss()
    d = build()
    gc.collect()
    rss1 = _rss()
    records = len(d)
    del d
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = build()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if records != table.num_rows or len(d) != records:
        raise SystemExit(f"the dict holds {records} keys, the table {table.num_rows} rows")
    print(json.dumps({"records": records, "traced": traced,
                      "rss": None if rss0 is None or rss1 is None else rss1 - rss0}))
    return 0


# -- one table --------------------------------------------------------------------------


def bench_table(spec: Spec, n: int, root: Path, producer_options: dict[str, Any],
                seed: int) -> dict[str, Any]:
    res: dict[str, Any] = {"records": n}
    folder = root / spec.name
    folder.mkdir()
    feed_name = f"{FEED}-{spec.name}"
    store_dir = folder / "store"
    store = feedkit.open_store(f"file://{store_dir}")
    cache_dir = folder / "cache"

    step(f"{spec.name}: generating {n:,} rows")
    t = time.perf_counter()
    table = spec.table(n, seed)
    res["generate_s"] = time.perf_counter() - t
    res["arrow"] = table.nbytes

    step(f"{spec.name}: Parquet-zstd (level {PARQUET_LEVEL})")
    parquet = folder / "table.parquet"
    res["parquet"] = parquet_bytes(table, parquet)

    step(f"{spec.name}: publishing with feedkit.Producer"
         + (f" ({', '.join(f'{k}={v}' for k, v in producer_options.items())})"
            if producer_options else ""))
    producer = feedkit.Producer(store, feed=feed_name, primary_key=spec.primary_key,
                                work_dir=folder / "work", **producer_options)
    try:
        t = time.perf_counter()
        first = producer.publish(table)
        res["publish_s"] = time.perf_counter() - t
        if first is None:
            raise SystemExit(f"{spec.name}: the first publish published nothing")
        res["snapshot"] = blob_bytes(store, store_dir, feed_name, first, "snapshot")

        consumer = feedkit.Consumer(store, feed=feed_name, cache_dir=cache_dir,
                                    watch=False).open()
        try:
            if len(consumer) != n:
                raise SystemExit(f"{spec.name}: the consumer serves {len(consumer)} records, "
                                 f"the table holds {n}")
            check_serves(spec, consumer, table, CHECK_KEYS, seed + 1)
            files = state_files(cache_dir / feed_name)
            res["state"] = sum(p.stat().st_size for p in files)
            res["state_files"] = [p.name for p in files]
            res["state_format"] = state_formats(files)

            step(f"{spec.name}: lmdb+msgpack")
            res["lmdb"] = lmdb_bytes(spec, table, folder / "lmdb")
            shutil.rmtree(folder / "lmdb")

            step(f"{spec.name}: changing {CHANGE_SHARE:.0%} of the rows; publishing again")
            table2, change = changed(spec, table, CHANGE_SHARE, seed + 2)
            del table
            res["changed"] = change.num_rows
            res["parquet_changed"] = parquet_bytes(change, folder / "changed.parquet")
            second = producer.publish(table2)
            report = producer.last_report
            if second is None or report is None or (report.changed, report.added,
                                                    report.removed) != (change.num_rows, 0, 0):
                raise SystemExit(f"{spec.name}: the second publish reported {report}; "
                                 f"expected {change.num_rows} changed, none added or removed")
            res["delta"] = blob_bytes(store, store_dir, feed_name, second, "delta")
            res["second_snapshot"] = report.snapshot

            if not consumer.refresh():
                raise SystemExit(f"{spec.name}: the consumer did not move to version {second}")
            check_serves(spec, consumer, change, CHECK_KEYS, seed + 3)
            check_serves(spec, consumer, table2, CHECK_KEYS, seed + 4)
            after = state_files(cache_dir / feed_name)
            res["after_refresh"] = {p.name: p.stat().st_size for p in after}
            del table2, change
        finally:
            consumer.close()
    finally:
        producer.close()

    step(f"{spec.name}: the dict, in a child process")
    gc.collect()
    res["dict"] = dict_bytes(parquet, spec.key)
    shutil.rmtree(folder, ignore_errors=True)
    return res


def result_rows(name: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    n, c = res["records"], res["changed"]
    fmt = res["state_format"]
    state_format = fmt[0] if len(fmt) == 1 else fmt
    extra = {"table": name}

    def r(measure: str, value: int, count: int, peer: str, peer_value: int, peer_count: int,
          goal: str | None, **more: Any) -> dict[str, Any]:
        return {**row(f"{measure}_{name}", UNIT, value / count, peer, peer_value / peer_count,
                      goal), **extra, "feedkit_bytes": value, "peer_bytes": peer_value, **more}

    state = res["state"]
    return [
        r("state_files", state, n, "parquet-zstd", res["parquet"], n, GOAL_STATE[name],
          state_format=state_format),
        r("state_files", state, n, "lmdb+msgpack", res["lmdb"], n, None,
          state_format=state_format),
        r("state_files", state, n, "dict", res["dict"]["traced"], n, None,
          state_format=state_format),
        r("snapshot_blob", res["snapshot"], n, "parquet-zstd", res["parquet"], n,
          GOAL_SNAPSHOT),
        r("delta_blob", res["delta"], c, "parquet-zstd", res["parquet_changed"], c, GOAL_DELTA,
          changed=c),
    ]


def per_record_table(results: dict[str, dict[str, Any]]) -> str:
    """Bytes per record of every measure, one line per table."""
    cols = [("table", None), ("records", None), ("feedkit state", "state"),
            ("snapshot blob", "snapshot"), ("delta blob/chg", "delta"),
            ("parquet-zstd", "parquet"), ("parquet chg", "parquet_changed"),
            ("lmdb+msgpack", "lmdb"), ("dict", "dict"), ("dict RSS", "dict_rss"),
            ("arrow", "arrow"), ("format", None)]
    lines = []
    for name, res in results.items():
        n, c = res["records"], res["changed"]
        cells = [name, f"{n:,}"]
        for _, k in cols[2:-1]:
            if k == "dict":
                v = res["dict"]["traced"] / n
            elif k == "dict_rss":
                rss = res["dict"]["rss"]
                cells.append("?" if rss is None else f"{rss / n:,.1f}")
                continue
            else:
                v = res[k] / (c if k in ("delta", "parquet_changed") else n)
            cells.append(f"{v:,.1f}")
        cells.append(",".join(map(str, res["state_format"])))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, (h, _) in enumerate(cols)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w)
                     for i, ((h, _), w) in enumerate(zip(cols, widths, strict=True)))]
    out.append("-" * len(out[0]))
    out += ["  ".join(v.rjust(w) if i else v.ljust(w)
                      for i, (v, w) in enumerate(zip(c, widths, strict=True))) for c in lines]
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k records")
    ap.add_argument("--format", type=int, default=None,
                    help="the state-file format the Producer writes (passed as format=N); "
                    "default: the Producer's own, and no format keyword")
    ap.add_argument("--tables", default=",".join(SPECS),
                    help=f"comma-separated tables ({', '.join(SPECS)})")
    ap.add_argument("--out", type=Path, help="where to write the JSON rows")
    ap.add_argument("--child-dict", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_dict:
        return child_dict(args.child_dict, args.key.split(","))
    n = 100_000 if args.quick else args.records
    if n < 1000:
        ap.error("--records must be >= 1000")
    tables = args.tables.split(",")
    unknown = [t for t in tables if t not in SPECS]
    if unknown:
        ap.error(f"unknown tables {unknown}; choose from {', '.join(SPECS)}")
    producer_options = {} if args.format is None else {"format": args.format}

    started = time.monotonic()
    now = dt.datetime.now().astimezone()
    print(f"feedkit storage benchmark, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()} "
          f"({platform.python_implementation()})")
    print(f"versions: {versions('pyarrow', 'numpy', 'zstandard', 'lmdb', 'msgpack')}")
    print(f"load average at start: {load()}")
    print(f"records: {n:,} per table (seed {SEED}); tables: {', '.join(tables)}; change "
          f"{CHANGE_SHARE:.0%}; state-file format: "
          + (f"--format {args.format}" if args.format is not None
             else "the Producer's default (no --format)"))
    print(flush=True)

    root = Path(tempfile.mkdtemp(prefix="feedkit-bench-storage-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for i, name in enumerate(tables):
            results[name] = bench_table(SPECS[name], n, root, producer_options,
                                        SEED + 10 * i)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [r for name, res in results.items() for r in result_rows(name, res)]
    print()
    for name, res in results.items():
        print(f"{name}: generated in {res['generate_s']:.2f} s, published in "
              f"{res['publish_s']:.2f} s; state files at the first version "
              f"{', '.join(res['state_files'])} ({res['state']:,} bytes, format "
              f"{','.join(map(str, res['state_format']))}); after the delta refresh "
              + ", ".join(f"{k} ({v:,} bytes)" for k, v in res["after_refresh"].items())
              + f"; {res['changed']:,} rows changed"
              + (" (the second version also wrote a snapshot)" if res["second_snapshot"]
                 else ""))
    print(f"\nbytes per record (delta blob and parquet chg: per changed record; dict: "
          f"tracemalloc's traced total, dict RSS: its RSS growth, for reference; arrow: the "
          f"table's Arrow buffers):\n{per_record_table(results)}")
    print("ratio = feedkit / peer")
    print()
    print_rows(rows)
    print(f"\nload average at end: {load()}; wall time {time.monotonic() - started:.0f} s")

    out = write_rows(args.out or RESULTS / ("storage-quick.json" if args.quick
                                            else "storage.json"), rows)
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
