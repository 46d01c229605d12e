"""Refresh benchmark: snapshot load vs bare zstd, a 1% delta refresh vs a snapshot load, and
get() p99 while refreshes run vs idle, on a local store.

Run::

    .venv/bin/python benchmarks/bench_refresh.py [--records 1000000] [--quick] [--profile]

``--quick`` is 100k records. Timings are reported, never asserted. Results go to
``benchmarks/results/refresh.json`` (``refresh_quick.json`` with ``--quick``, or
``--out``): rows ``{name, unit, feedkit, peer, peer_value, ratio, goal, met}``, ``ratio``
= feedkit / peer and ``goal`` the largest acceptable ratio.

Two processes. This one generates the records (N rows of five small fields: ``id``
int64 key, ``title``, ``year``, ``score``, ``country``, vectorised with numpy/pyarrow)
and publishes with ``feedkit.Producer`` to ``feedkit.open_store(<temp folder>)``:
version V0 (a snapshot), then a chain of ``CHAIN`` versions V1..V30, each changing 1% of
the previous one's records (``score`` of N/100 random existing keys), deleting N/1000
and inserting N/1000 new keys (producer defaults: a snapshot blob every 10 versions,
every version has a delta). Every version's announcement bytes are kept, and the
announcement is set back to V0. Then every measurement runs in a fresh child process
(``--child``) that imports feedkit's consumer side only, never pyarrow, as a real
consumer does: ``write_state`` copies records through pyarrow when the process has
loaded it, through numpy otherwise, so a consumer timed beside its producer would not
be timing the consumer's code path. The child moves the store's announcement itself
(``store.replace_if_match`` with one of the kept announcements): consumers see exactly
what a producer announcing that version writes.

Method:

1. ``snapshot_load``: ``Consumer(store, feed=..., cache_dir=<new empty folder>,
   watch=False).open()`` on V0 until it returns ready to serve (announcement and
   manifest reads, the blob copied out of the store folder, SHA-256 + zstd + xxh3 of the
   body in one pass, the header and offsets checks, the rename, the mapping and the
   generated lookup; ``close`` is outside the window). Peer ``zstd decompress``:
   ``zstandard.ZstdDecompressor().copy_stream`` of the same blob file, read in place in
   the store folder, to a file in a new folder, 1 MiB reads/writes, no verification (so
   the peer does not copy the blob; feedkit does). A format-2 snapshot is a columnar blob
   that feedkit rebuilds its state file from (FORMAT.md, 11), not a zstd frame: the peer
   then decompresses that state file, compressed once at level 3 before the rounds (what
   the snapshot blob was before). Same file system for both. One
   warm-up each, then ``ROUNDS`` interleaved rounds (feedkit, peer, ...), medians;
   GC on, collected before each window. An informative breakdown of feedkit's steps
   (``store.download``, ``decompress_file``, ``StateFile`` + ``verify``) is timed
   apart, median of 5.
2. ``delta_refresh``: the time of ``feed.refresh()`` alone, taking a consumer that holds
   V0 (a base file, no overlay) to V1. Each round opens a fresh consumer on a copy
   (hard links) of a cache folder that holds only V0's verified base file, with V0
   announced (untimed; no snapshot is fetched), then announces V1 (untimed) and times
   the refresh: announcement read, manifest, plan, the delta blob copied, checked and
   decompressed, ``apply_delta`` (count and digest against the manifest), the merged
   overlay written and verified, the swap, the cache prune. This is chosen over timing
   successive refreshes of one consumer because the consumer rewrites its whole
   overlay on every refresh (base + one overlay holding every change since the base),
   so the cost of refresh k grows with k until the overlay passes ``compact_ratio``
   (25% of the base) and that refresh also rewrites the base, inline: the
   ``_maybe_compact`` call is in ``Consumer._refresh``, so it runs in ``refresh()``
   and ``pin()`` of any consumer, ``watch=False`` or not. The headline is the cheapest,
   cleanest case (empty overlay); the whole cycle is reported beside it: one consumer
   refreshed through V1..V30 in turn, each refresh timed with its overlay's record
   count and file size, the compaction (when reached) named. One warm-up round, then
   ``ROUNDS``, median; GC on, collected first. The peer is row 1's feedkit median.
3. ``get_p99_during_refresh``: single ``feed.get(key)`` latencies in the main thread,
   ``perf_counter_ns`` around each call (``feed.get`` is looked up per call, as a user
   does, so each swap is seen), over 200k random keys present in every version, GC
   off in the windows (for both threads), latencies kept in an ``array("q")``. The
   median timer overhead (two ``perf_counter_ns`` calls around nothing) is subtracted.
   Each of ``WINDOW_ROUNDS`` rounds opens a fresh consumer at V0 (as in part 2) and
   makes one pass over the keys, which warms the code and the pages (timed too,
   printed for reference: a base alone, no overlay to probe first, the cheapest get);
   so there is no separate warm-up round. Refresh window: a thread steps the consumer
   through V1, V2, ... with ``feed.pin(v)`` back to back (pin loads a version by the
   same path as ``refresh()``, minus the announcement read: each is a delta applied
   to the held state, the overlay growing by about 1% each, far below the compaction
   threshold); no new refresh starts after ``WINDOW_MAX_S`` (the window ends when the
   last one has finished, so a refresh runs during all of it), at most
   ``WINDOW_VERSIONS``. The versions were published beforehand, so no producer runs in
   the window. The main thread looks keys up until the thread is done. Idle window:
   right after, on the same consumer (base + overlay, as during most of the refresh
   window), the same number of lookups with no refresh running. Per window p50, p99,
   p99.9 and max; the row is the median over rounds of the p99s. The refresh thread
   and the lookups share the GIL. Whenever the refresh thread gives the GIL up (file
   I/O, and most numpy calls on more than about a thousand elements release it), it
   waits up to ``sys.getswitchinterval()`` (5 ms) for the lookup thread to hand it
   back, and the lookup running then stalls while the refresh holds it. This is the
   effect a consumer refreshing in its background thread has on a thread serving
   lookups: rare multi-millisecond stalls (p99.9 and max, printed; in p99 only if they
   reached 1% of the lookups), and a refresh that takes much longer (printed, against
   the same refreshes alone).

``--profile`` prints a cProfile of one more V0 -> V1 refresh (child process).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, load, print_rows, row, step, versions, write_rows

import feedkit
from feedkit import names

SEED = 20240611
FEED = "bench.refresh"
ROUNDS = 7
CHAIN = 30  # versions published after V0, each a 1% change
WINDOW_VERSIONS = 10  # refreshes per lookup window (part 3)
WINDOW_MAX_S = 1.5  # no new refresh starts in a window after this
WINDOW_ROUNDS = 5  # lookup rounds (part 3); each opens a fresh consumer and warms it first
SAMPLE_KEYS = 200_000
CHUNK = 1000  # lookups between checks of the window's end
GEN_ROWS = 1 << 20
COUNTRIES = ["US", "GB", "FR", "DE"]
NAMES = ["id", "title", "year", "score", "country"]
IO_CHUNK = 1 << 20
CHECK_KEYS = 20

GOAL_LOAD_VS_ZSTD = "<= 1.2x"
GOAL_DELTA_VS_LOAD = "<= 0.05x"
GOAL_P99_VS_IDLE = "<= 1.5x"
GOAL_BESIDE_VS_ALONE = "<= 1.5x"


# -- producer side (parent process; the only place pyarrow is imported) ---------------------


def make_table(ids: np.ndarray, rng: np.random.Generator) -> Any:
    """Records for ``ids``: bench_core's five small fields, vectorised."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = len(ids)
    id_arr = pa.array(ids, pa.int64())
    return pa.table({
        "id": id_arr,
        "title": pc.binary_join_element_wise("title", pc.cast(id_arr, pa.string()), " "),
        "year": pa.array(rng.integers(1920, 2026, m, dtype=np.int32), pa.int32()),
        "score": pa.array(np.round(rng.random(m) * 10, 2), pa.float64()),
        "country": pa.array(COUNTRIES, pa.string()).take(
            pa.array(rng.integers(0, len(COUNTRIES), m, dtype=np.int32))),
    })


def first_table(n: int, rng: np.random.Generator) -> Any:
    """N records, sparse ascending ids (10*i + 0..9), built in batches."""
    import pyarrow as pa

    parts = []
    for start in range(0, n, GEN_ROWS):
        m = min(GEN_ROWS, n - start)
        ids = np.arange(start, start + m, dtype=np.int64) * 10 + rng.integers(0, 10, m)
        parts.append(make_table(ids, rng))
    return pa.concat_tables(parts).combine_chunks()


def next_table(table: Any, n: int, rng: np.random.Generator,
               next_id: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The next version: N/100 scores changed, N/1000 rows deleted, N/1000 new ids.

    Returns the table, the updated ids, the deleted ids and the inserted ids.
    """
    import pyarrow as pa

    n_upd, n_del = max(1, n // 100), max(1, n // 1000)
    m = table.num_rows
    rows = rng.choice(m, n_upd + n_del, replace=False)
    upd, dele = rows[:n_upd], rows[n_upd:]
    ids = table.column("id").to_numpy()
    score = table.column("score").to_numpy().copy()
    # A shift of 1..2 (mod 10) always changes the value, so every update is a real change.
    score[upd] = np.round((score[upd] + 1 + rng.random(n_upd)) % 10, 2)
    table = table.set_column(NAMES.index("score"), "score", pa.array(score, pa.float64()))
    keep = np.ones(m, dtype=bool)
    keep[dele] = False
    new_ids = next_id + 10 * np.arange(n_del, dtype=np.int64)
    table = pa.concat_tables([table.filter(pa.array(keep)), make_table(new_ids, rng)])
    return table.combine_chunks(), ids[upd], ids[dele], new_ids


def expected(table: Any, keys: list[int]) -> list[list[Any]]:
    """The records of ``keys`` as lists in column order (for the child's checks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = table.filter(pc.is_in(table.column("id"), pa.array(keys, pa.int64()))).to_pylist()
    by_id = {r["id"]: [r[c] for c in NAMES] for r in found}
    return [by_id[k] for k in keys]


def announcement(store: Any) -> bytes:
    data, _ = store.read_if_changed(names.announcement_key(FEED))
    return data  # type: ignore[no-any-return]


def announce(store: Any, data: bytes) -> None:
    """Make ``data`` (a kept announcement) the feed's announcement."""
    key = names.announcement_key(FEED)
    _, etag = store.read_if_changed(key)
    store.replace_if_match(key, data, etag)


def publish_all(n: int, root: Path) -> dict[str, Any]:
    """V0 and the CHAIN versions after it; the child's configuration."""
    store = feedkit.open_store(root / "store")
    rng = np.random.default_rng(SEED)
    step(f"generating {n:,} records")
    table = first_table(n, rng)
    ids0 = table.column("id").to_numpy()
    check0 = ids0[rng.integers(0, n, CHECK_KEYS)].tolist()
    exp0 = expected(table, check0)

    ann_dir = root / "announcements"
    ann_dir.mkdir()
    producer = feedkit.Producer(store, feed=FEED, primary_key="id", work_dir=root / "producer")
    step("publishing V0 (snapshot)")
    t = time.perf_counter()
    v0 = producer.publish(table)
    publish0 = time.perf_counter() - t
    assert v0 is not None and producer.manifest is not None
    snapshot = producer.manifest.snapshot
    assert snapshot is not None
    vs, counts, delta_sizes = [v0], [producer.manifest.record_count], []
    (ann_dir / str(v0)).write_bytes(announcement(store))

    step(f"publishing V1..V{CHAIN}: each {max(1, n // 100):,} updates, "
         f"{max(1, n // 1000):,} deletes, {max(1, n // 1000):,} inserts")
    next_id = int(ids0.max()) + 10
    deleted: list[np.ndarray] = []
    publish_times = []
    check1: list[int] = []
    exp1: list[list[Any]] = []
    for k in range(1, CHAIN + 1):
        table, upd, dele, ins = next_table(table, n, rng, next_id)
        next_id += 10 * len(ins)
        deleted.append(dele)
        t = time.perf_counter()
        v = producer.publish(table)
        publish_times.append(time.perf_counter() - t)
        m = producer.manifest
        assert v is not None and m is not None and m.delta is not None
        if k == 1:  # changed, inserted and untouched records of V1, for the child's checks
            check1 = (upd[:CHECK_KEYS // 2].tolist() + ins[:2].tolist()
                      + check0[:CHECK_KEYS // 2])
            check1 = [x for x in dict.fromkeys(check1) if x not in set(dele.tolist())]
            exp1 = expected(table, check1)
        vs.append(v)
        counts.append(m.record_count)
        delta_sizes.append([m.delta.size, m.delta.raw_size])
        (ann_dir / str(v)).write_bytes(announcement(store))
    producer.close()
    step(f"published V1..V{CHAIN}: median {statistics.median(publish_times):.2f} s each")
    announce(store, (ann_dir / str(v0)).read_bytes())

    stable = np.setdiff1d(ids0, np.concatenate(deleted))
    keys = stable[np.random.default_rng(SEED + 1).integers(0, len(stable), SAMPLE_KEYS)]
    np.save(root / "keys.npy", keys)
    return {
        "root": str(root), "store": str(root / "store"), "n": n, "versions": vs,
        "counts": counts, "snapshot": snapshot.to_json(), "delta_sizes": delta_sizes,
        "announcements": str(ann_dir), "keys": str(root / "keys.npy"),
        "check": [[check0, exp0], [check1, exp1]],
        "publish0_s": publish0, "publish_chain_s": publish_times,
    }


# -- consumer side (the child process) -------------------------------------------------------


class Child:
    """Everything measured, in a process that never imports pyarrow."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.store = feedkit.open_store(cfg["store"])
        self.work = Path(cfg["root"]) / "child"
        self.work.mkdir()
        self.vs: list[int] = cfg["versions"]
        self.ann = {v: (Path(cfg["announcements"]) / str(v)).read_bytes() for v in self.vs}
        self.template = self.work / "template"
        self.Consumer = feedkit.Consumer

    def announce(self, version: int) -> None:
        announce(self.store, self.ann[version])

    def check(self, feed: Any, which: int) -> None:
        count = self.cfg["counts"][which]
        if len(feed) != count:
            raise SystemExit(f"version {feed.version} serves {len(feed)} records, "
                             f"{count} were published")
        keys, want = self.cfg["check"][which]
        for k, rec in zip(keys, want, strict=True):
            got = feed.get(k)
            if got is None or list(got) != rec:
                raise SystemExit(f"version {feed.version}: get({k}) = {got!r}, expected {rec!r}")

    def fresh(self, folder: Path) -> Any:
        """A consumer at V0 on a copy (hard links) of a cache holding V0's base only."""
        shutil.copytree(self.template, folder, copy_function=os.link,
                        ignore=shutil.ignore_patterns(".lock"))
        feed = self.Consumer(self.store, feed=FEED, cache_dir=folder, watch=False).open()
        if feed.version != self.vs[0]:
            raise SystemExit(f"the fresh consumer opened {feed.version}, not V0")
        return feed

    # part 1 ---------------------------------------------------------------------------

    def feedkit_load(self, folder: Path, check: bool) -> float:
        t = time.perf_counter()
        feed = self.Consumer(self.store, feed=FEED, cache_dir=folder, watch=False).open()
        elapsed = time.perf_counter() - t
        if feed.version != self.vs[0]:
            raise SystemExit(f"the consumer opened {feed.version}, not V0")
        if check:
            self.check(feed, 0)
        feed.close()
        return elapsed

    def peer_blob(self) -> tuple[Path, int]:
        """The peer's zstd file and its decompressed size: the snapshot blob itself when
        it is a compressed state file (format 1); for a columnar snapshot (format 2) the
        state file a consumer builds from it, compressed once at the same level (what
        the blob was before format 2's columnar blobs)."""
        import zstandard

        blob = Path(self.cfg["store"]).joinpath(*self.cfg["snapshot"]["key"].split("/"))
        with open(blob, "rb") as f:
            if f.read(4) == b"\x28\xb5\x2f\xfd":
                return blob, self.cfg["snapshot"]["raw_size"]
        folder = self.work / "peer-blob"
        feed = self.Consumer(self.store, feed=FEED, cache_dir=folder, watch=False).open()
        state = feed._state.files[0].path  # noqa: SLF001 (the benchmark's own setup)
        feed.close()
        out = self.work / "peer.zst"
        with open(state, "rb") as fin, open(out, "wb") as fout:
            zstandard.ZstdCompressor(level=3).copy_stream(fin, fout)
        size = state.stat().st_size
        shutil.rmtree(folder)
        return out, size

    def peer_load(self, folder: Path) -> float:
        import zstandard

        blob, raw_size = self._peer
        folder.mkdir(parents=True)
        out = folder / "state"
        t = time.perf_counter()
        with open(blob, "rb") as fin, open(out, "wb") as fout:
            zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=IO_CHUNK,
                                                     write_size=IO_CHUNK)
        elapsed = time.perf_counter() - t
        if out.stat().st_size != raw_size:
            raise SystemExit("the peer's output is not the state file's size")
        return elapsed

    def part1(self) -> dict[str, Any]:
        step(f"snapshot load: warm-up, then {ROUNDS} interleaved rounds")
        self._peer = self.peer_blob()
        res: dict[str, list[float]] = {"feedkit": [], "peer": []}
        runs: dict[str, Callable[[Path, bool], float]] = {
            "feedkit": self.feedkit_load,
            "peer": lambda d, _check: self.peer_load(d),
        }
        for r in range(ROUNDS + 1):
            last = {}
            for name, run in runs.items():
                folder = self.work / f"load-{name}-{r}"
                gc.collect()
                last[name] = run(folder, r == 0)
                shutil.rmtree(folder)
                if r:
                    res[name].append(last[name])
            step(f"{f'round {r}' if r else 'warm-up'}: feedkit {last['feedkit']:.3f} s, "
                 f"peer {last['peer']:.3f} s")
        self.feedkit_load(self.template, False)  # the cache folder parts 2 and 3 copy
        return {"load": res, "steps": self.breakdown()}

    def breakdown(self, runs: int = 5) -> dict[str, float]:
        """Median seconds of the load's steps, each alone (informative)."""
        from feedkit.blobs import BlobInfo, decompress_file
        from feedkit.format import PREFIX_SIZE, StateFile, build_snapshot
        from feedkit.manifest import Manifest
        from feedkit.names import manifest_key

        info = BlobInfo.from_json(self.cfg["snapshot"])
        key = manifest_key(FEED, self.vs[0])
        m = Manifest.from_bytes(self.store.get_bytes(key), key)
        columnar = m.state_format == 2
        folder = self.work / "steps"
        folder.mkdir()
        blob, out = folder / "blob.zst", folder / "state"
        times: dict[str, list[float]] = {"download": [], "decompress_file": [], "verify": []}
        for _ in range(runs):
            gc.collect()
            t = time.perf_counter()
            self.store.download(info.key, blob)
            times["download"].append(time.perf_counter() - t)
            t = time.perf_counter()
            if columnar:  # decode, derive keys, write the format-2 file
                digest = None
                build_snapshot(blob, info, {
                    "feed": FEED, "version": m.version, "key": m.key, "schema": m.schema,
                    "index_fields": m.index_fields, "record_count": m.record_count,
                    "state_digest": m.state_digest}, out)
            else:
                digest = decompress_file(blob, out, info, hash_after=PREFIX_SIZE)
            times["decompress_file"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sf = StateFile(out)
            sf.verify(digest, records=columnar)
            times["verify"].append(time.perf_counter() - t)
            del sf
            blob.unlink()
            out.unlink()
        shutil.rmtree(folder)
        return {k: statistics.median(v) for k, v in times.items()}

    # part 2 ---------------------------------------------------------------------------

    def one_refresh(self, r: int, check: bool,
                    profile: cProfile.Profile | None = None) -> float:
        self.announce(self.vs[0])
        folder = self.work / f"refresh-{r}"
        feed = self.fresh(folder)
        self.announce(self.vs[1])
        gc.collect()
        if profile is not None:
            profile.enable()
        t = time.perf_counter()
        moved = feed.refresh()
        elapsed = time.perf_counter() - t
        if profile is not None:
            profile.disable()
        if not moved or feed.version != self.vs[1]:
            raise SystemExit(f"refresh did not move to V1 (serving {feed.version})")
        if check:
            self.check(feed, 1)
        feed.close()
        shutil.rmtree(folder)
        return elapsed

    def part2(self) -> dict[str, Any]:
        step(f"delta refresh V0 -> V1: warm-up, then {ROUNDS} rounds (fresh consumer each)")
        times = []
        for r in range(ROUNDS + 1):
            elapsed = self.one_refresh(r, r == 0)
            if r:
                times.append(elapsed)
            step(f"{f'round {r}' if r else 'warm-up'}: refresh {elapsed * 1000:.1f} ms")
        return {"refresh": times}

    def growth(self) -> list[dict[str, Any]]:
        """One consumer refreshed through V1..V_CHAIN: time, overlay records and bytes."""
        step(f"overlay growth: one consumer refreshed V0 -> V1 -> ... -> V{CHAIN}")
        self.announce(self.vs[0])
        folder = self.work / "growth"
        feed = self.fresh(folder)
        out = []
        for k, v in enumerate(self.vs[1:], 1):
            self.announce(v)
            gc.collect()
            t = time.perf_counter()
            feed.refresh()
            elapsed = time.perf_counter() - t
            with feed.view() as state:
                overlay = state.overlay
                out.append({"k": k, "s": elapsed,
                            "overlay": overlay.count if overlay is not None else 0,
                            "bytes": overlay.path.stat().st_size if overlay is not None else 0})
            if feed.version != v:
                raise SystemExit(f"refresh {k} serves {feed.version}, not {v}")
        self.check_count(feed, CHAIN)
        feed.close()
        shutil.rmtree(folder)
        return out

    def check_count(self, feed: Any, which: int) -> None:
        if len(feed) != self.cfg["counts"][which]:
            raise SystemExit(f"version {feed.version}: {len(feed)} records, "
                             f"{self.cfg['counts'][which]} published")

    # part 3 ---------------------------------------------------------------------------

    @staticmethod
    def timer_overhead(n: int = 200_000) -> float:
        out: array[int] = array("q")
        append, clock = out.append, time.perf_counter_ns
        gc.disable()
        try:
            for _ in range(n):
                t = clock()
                append(clock() - t)
        finally:
            gc.enable()
        return float(np.median(out))

    @staticmethod
    def lookups(feed: Any, chunks: list[list[int]], out: array[int],
                stop: Callable[[], bool] | None = None, limit: int = 0) -> None:
        """Time every feed.get(k) (looked up per call: swaps are seen) until ``stop()``
        or ``limit`` lookups, checked after each chunk."""
        append, clock = out.append, time.perf_counter_ns
        while True:
            for chunk in chunks:
                for k in chunk:
                    t = clock()
                    feed.get(k)
                    append(clock() - t)
                if (stop is not None and stop()) or (limit and len(out) >= limit):
                    return

    def windows(self, feed: Any, chunks: list[list[int]]) -> dict[str, Any]:
        """A refresh window (V1..V_WINDOW_VERSIONS pinned in a thread), then an idle one."""
        done = [False]
        pins: list[float] = []
        errors: list[BaseException] = []

        def stepper() -> None:
            start = time.perf_counter()
            try:
                for v in self.vs[1:WINDOW_VERSIONS + 1]:
                    t = time.perf_counter()
                    if pins and t - start > WINDOW_MAX_S:
                        break
                    feed.pin(v)
                    pins.append(time.perf_counter() - t)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done[0] = True

        busy: array[int] = array("q")
        idle: array[int] = array("q")
        thread = threading.Thread(target=stepper, name="bench-refresher")
        gc.disable()
        try:
            t = time.perf_counter()
            thread.start()
            self.lookups(feed, chunks, busy, lambda: done[0])
            busy_s = time.perf_counter() - t
            thread.join()
            if errors:
                raise SystemExit(f"a refresh failed in the window: {errors[0]!r}")
            t = time.perf_counter()
            self.lookups(feed, chunks, idle, limit=len(busy))
            idle_s = time.perf_counter() - t
        finally:
            gc.enable()
        if feed.version != self.vs[len(pins)]:
            raise SystemExit(f"the window ended at {feed.version}, not V{len(pins)}")
        return {"busy": busy, "idle": idle, "busy_s": busy_s, "idle_s": idle_s, "pins": pins}

    def pins_alone(self, folder: Path, n: int) -> list[float]:
        """The window's refreshes (V1..Vn pinned in turn) on a fresh consumer at V0, with
        no lookups beside them: the peer of ``refresh_beside_lookups``, in the same round."""
        self.announce(self.vs[0])
        feed = self.fresh(folder)
        out = []
        gc.disable()
        try:
            for v in self.vs[1:n + 1]:
                t = time.perf_counter()
                feed.pin(v)
                out.append(time.perf_counter() - t)
        finally:
            gc.enable()
        feed.close()
        shutil.rmtree(folder)
        return out

    def part3(self) -> dict[str, Any]:
        keys = np.load(self.cfg["keys"]).tolist()
        chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]
        overhead = self.timer_overhead()
        step(f"get() during refresh: timer overhead {overhead:.0f} ns; "
             f"{WINDOW_ROUNDS} rounds of (refresh window: V1..V{WINDOW_VERSIONS} pinned in a "
             "thread; idle window)")
        stats: dict[str, list[dict[str, float]]] = {"busy": [], "idle": [], "base": []}
        extra: dict[str, list[float]] = {"busy_calls": [], "busy_s": [], "idle_s": [],
                                         "pin_ms": [], "pins": [], "alone_ms": []}
        for r in range(1, WINDOW_ROUNDS + 1):
            self.announce(self.vs[0])
            folder = self.work / f"window-{r}"
            feed = self.fresh(folder)
            base: array[int] = array("q")  # warms the code and the pages; timed, for reference
            gc.disable()
            try:
                self.lookups(feed, chunks, base, limit=len(keys))
            finally:
                gc.enable()
            w = self.windows(feed, chunks)
            feed.close()
            shutil.rmtree(folder)
            w["alone"] = self.pins_alone(folder, len(w["pins"]))
            w["base"] = base
            s = {kind: percentiles(w[kind], overhead) for kind in ("busy", "idle", "base")}
            step(f"round {r}: {len(w['busy']):,} lookups in "
                 f"{w['busy_s'] * 1000:.0f} ms during {len(w['pins'])} refreshes "
                 f"(median {statistics.median(w['pins']) * 1000:.1f} ms each): p99 "
                 f"{s['busy']['p99']:.0f} ns; idle: same count in {w['idle_s'] * 1000:.0f} ms, "
                 f"p99 {s['idle']['p99']:.0f} ns")
            for kind in ("busy", "idle", "base"):
                stats[kind].append(s[kind])
            extra["busy_calls"].append(len(w["busy"]))
            extra["busy_s"].append(w["busy_s"])
            extra["idle_s"].append(w["idle_s"])
            extra["pin_ms"] += [p * 1000 for p in w["pins"]]
            extra["alone_ms"] += [p * 1000 for p in w["alone"]]
            extra["pins"].append(len(w["pins"]))
        return {"overhead": overhead, "stats": stats, "extra": extra,
                "switch_interval": sys.getswitchinterval()}


def percentiles(lat: array[int], overhead: float) -> dict[str, float]:
    a = np.frombuffer(lat, dtype=np.int64).astype(np.float64) - overhead
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "p999": float(np.percentile(a, 99.9)), "max": float(a.max())}


def child(cfg_path: Path, result_path: Path, profile: bool) -> int:
    cfg = json.loads(cfg_path.read_text())
    c = Child(cfg)
    res: dict[str, Any] = {}
    res.update(c.part1())
    res.update(c.part2())
    res["growth"] = c.growth()
    res.update(c.part3())
    if profile:
        prof = cProfile.Profile()
        c.one_refresh(ROUNDS + 1, False, prof)
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
        res["profile"] = buf.getvalue()
    res["pyarrow_loaded"] = "pyarrow" in sys.modules
    result_path.write_text(json.dumps(res))
    return 0


# -- report -----------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(cfg: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    load_fk, load_peer = med(res["load"]["feedkit"]), med(res["load"]["peer"])
    refresh = med(res["refresh"])
    busy = {k: med([s[k] for s in res["stats"]["busy"]]) for k in ("p50", "p99", "p999", "max")}
    idle = {k: med([s[k] for s in res["stats"]["idle"]]) for k in ("p50", "p99", "p999", "max")}
    base = {k: med([s[k] for s in res["stats"]["base"]]) for k in ("p50", "p99", "p999", "max")}
    rows = [
        row("snapshot_load", "s", load_fk, "zstd decompress", load_peer, GOAL_LOAD_VS_ZSTD),
        row("delta_refresh", "s", refresh, "snapshot_load", load_fk, GOAL_DELTA_VS_LOAD),
        row("get_p99_during_refresh", "ns", busy["p99"], "idle", idle["p99"], GOAL_P99_VS_IDLE),
        row("refresh_beside_lookups", "ms", med(res["extra"]["pin_ms"]), "alone",
            med(res["extra"]["alone_ms"]), GOAL_BESIDE_VS_ALONE),
    ]

    snap = cfg["snapshot"]
    d_size, d_raw = cfg["delta_sizes"][0]
    print()
    print(f"setup (not goals): publish of V0 ({cfg['n']:,} records) {cfg['publish0_s']:.2f} s; "
          f"V1..V{CHAIN} median {med(cfg['publish_chain_s']):.2f} s each; snapshot blob "
          f"{snap['size']:,} bytes ({mib(snap['size'])}), state file {mib(snap['raw_size'])}; "
          f"delta blob V0->V1 {d_size:,} bytes ({mib(d_size)}), its overlay file {mib(d_raw)}")
    print(f"consumer process loaded pyarrow: {res['pyarrow_loaded']} (a real consumer does not)")
    print(f"snapshot load (median of {ROUNDS}): feedkit {load_fk:.3f} s "
          f"({snap['size'] / load_fk / (1 << 20):.0f} MiB/s of blob), peer {load_peer:.3f} s; "
          f"all feedkit: {', '.join(f'{x:.3f}' for x in res['load']['feedkit'])}; all peer: "
          f"{', '.join(f'{x:.3f}' for x in res['load']['peer'])}")
    s = res["steps"]
    print(f"  feedkit steps alone (median s, informative): store.download (copy out of the "
          f"store) {s['download']:.3f}, decompress_file (SHA-256 + zstd + xxh3; format 2: "
          f"build_snapshot, SHA-256 + columnar decode + keys + write) "
          f"{s['decompress_file']:.3f}, StateFile + verify(digest; format 2: records too) "
          f"{s['verify']:.3f}; sum "
          f"{sum(s.values()):.3f}; the open's median minus that sum {load_fk - sum(s.values()):+.3f}")
    print(f"delta refresh V0 -> V1 (median of {ROUNDS}): {refresh * 1000:.1f} ms; all: "
          f"{', '.join(f'{x * 1000:.1f}' for x in res['refresh'])} ms")
    g = res["growth"]
    compactions = [e for e, prev in zip(g[1:], g[:-1], strict=False)
                   if e["overlay"] < prev["overlay"]]
    print(f"overlay growth, one consumer refreshed V0 -> V{CHAIN} (refresh k: ms, overlay "
          f"records as % of V0's {cfg['counts'][0]:,}):")
    line = []
    for e in g:
        mark = "*" if e in compactions else ""
        line.append(f"{e['k']}: {e['s'] * 1000:.0f}{mark} ({100 * e['overlay'] / cfg['counts'][0]:.1f}%)")
    for i in range(0, len(line), 6):
        print("  " + ", ".join(line[i:i + 6]))
    if compactions:
        e = compactions[0]
        print(f"  * compaction inside refresh(): refresh {e['k']} took {e['s'] * 1000:.0f} ms, "
              f"{e['s'] / refresh:.0f}x the V0->V1 refresh (overlay "
              f"{g[e['k'] - 2]['overlay']:,} records, {mib(g[e['k'] - 2]['bytes'])}, before)")
        cycle = [x["s"] for x in g[:e["k"]]]
        print(f"  one cycle (refreshes 1..{e['k']}, compaction included): mean "
              f"{statistics.mean(cycle) * 1000:.0f} ms per refresh = "
              f"{statistics.mean(cycle) / load_fk:.2f}x snapshot_load, "
              f"{statistics.mean(cycle) / refresh:.1f}x the V0->V1 refresh")
    else:
        print(f"  no compaction within {CHAIN} refreshes")
    x = res["extra"]
    alone = med([e["s"] for e in g[:max(1, round(med(x["pins"])))]])
    print(f"get() during refresh (medians over {WINDOW_ROUNDS} rounds, ns, timer overhead "
          f"{res['overhead']:.0f} ns subtracted, switch interval "
          f"{res['switch_interval'] * 1000:g} ms): busy p50 {busy['p50']:.0f}, p99 {busy['p99']:.0f}, "
          f"p99.9 {busy['p999']:.0f}, max {busy['max']:,.0f}; idle p50 {idle['p50']:.0f}, "
          f"p99 {idle['p99']:.0f}, p99.9 {idle['p999']:.0f}, max {idle['max']:,.0f}; idle on "
          f"V0 before the window (base only, no overlay to probe first; {len(res['stats']['base'])} "
          f"passes of {SAMPLE_KEYS:,}): p50 {base['p50']:.0f}, p99 {base['p99']:.0f}")
    print(f"  refresh window: median {med(x['busy_calls']):,.0f} lookups in "
          f"{med(x['busy_s']) * 1000:.0f} ms ({med(x['busy_calls']) / med(x['busy_s']) / 1e6:.2f} M/s) "
          f"while {med(x['pins']):.0f} refreshes ran (of {WINDOW_VERSIONS}; none starts after "
          f"{WINDOW_MAX_S:g} s), each median {med(x['pin_ms']):.1f} ms (max "
          f"{max(x['pin_ms']):.1f}; the same refreshes alone, pinned in each round right after "
          f"its windows: median {med(x['alone_ms']):.1f} ms, so "
          f"{med(x['pin_ms']) / med(x['alone_ms']):.2f}x beside the lookups; in the growth "
          f"series: median {alone * 1000:.1f} ms); idle: the same count in "
          f"{med(x['idle_s']) * 1000:.0f} ms "
          f"({med(x['busy_calls']) / med(x['idle_s']) / 1e6:.2f} M/s)")
    print("ratio = feedkit / peer")
    print()
    print_rows(rows)
    if "profile" in res:
        print("\ncProfile of one V0 -> V1 refresh (child process):\n" + res["profile"])
    return rows


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k records")
    ap.add_argument("--out", type=Path, help="where to write the JSON rows")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of one more delta refresh")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.result, args.profile)
    n = 100_000 if args.quick else args.records
    if n < 1000:
        ap.error("--records must be >= 1000")

    started = time.perf_counter()
    now = dt.datetime.now().astimezone()
    print(f"feedkit refresh benchmark, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()} "
          f"({platform.python_implementation()})")
    print(f"versions: {versions('zstandard', 'numpy', 'msgpack', 'xxhash', 'pyarrow')}")
    print(f"load average at start: {load()} (other work on the machine skews the figures)")
    print(f"records: {n:,} (seed {SEED}); rounds: {ROUNDS} (+1 warm-up), {WINDOW_ROUNDS} for "
          f"the lookup windows; chain: {CHAIN} versions of 1% changes; lookup windows: up to "
          f"{WINDOW_VERSIONS} refreshes, "
          f"{SAMPLE_KEYS:,} keys")
    print(flush=True)

    root = Path(tempfile.mkdtemp(prefix="feedkit-bench-refresh-"))
    try:
        cfg = publish_all(n, root)
        cfg_path, result_path = root / "config.json", root / "result.json"
        cfg_path.write_text(json.dumps(cfg))
        step("measuring in a fresh consumer process (no pyarrow)")
        cmd = [sys.executable, __file__, "--child", str(cfg_path), "--result", str(result_path)]
        done = subprocess.run(cmd + (["--profile"] if args.profile else []), check=False)
        if done.returncode != 0:
            raise SystemExit(f"the measuring process failed (exit {done.returncode})")
        res = json.loads(result_path.read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = report(cfg, res)
    print(f"\nload average at end: {load()}; wall time {time.perf_counter() - started:.0f} s")
    out = write_rows(args.out or RESULTS / ("refresh_quick.json" if args.quick else "refresh.json"),
                     rows)
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
