"""S3 benchmark: a consumer's first load from S3 against a bare download + zstd, and a fleet's polling.

Run::

    .venv/bin/python benchmarks/bench_s3.py [--records 1000000] [--quick] [--profile]

``--quick`` is 100k records. The endpoint is moto's standalone server, started here on
127.0.0.1 as a subprocess (``tests/s3server.py``), or the server named by
``FEEDKIT_S3_ENDPOINT`` (bucket ``FEEDKIT_S3_BUCKET``, credentials from boto3's chain);
the kind used is printed. Timings are reported, never asserted. Results go to
``benchmarks/results/s3.json`` (``s3_quick.json`` with ``--quick``): a list of rows
``{name, unit, feedkit, peer, peer_value, ratio, goal, met}``, ``ratio`` = feedkit / peer
and ``goal`` the largest acceptable ratio (``poll_blob_reads``: no ratio, met when 0).

Method:

1. ``snapshot_load``: N records of a five-small-field table (``movie_id`` int64 key,
   ``title``, ``year``, ``score``, ``country``, generated vectorised) published once with
   ``feedkit.Producer(format=1)`` (a zstd blob: the transport is measured here) to a fresh
   prefix. The feedkit window is
   ``Consumer(store, feed=..., cache_dir=<new empty folder>, watch=False).open()`` until it
   returns, ready to serve: announcement and manifest reads, the snapshot download, the
   SHA-256 + zstd pass, the state file's checksum, the rename and the mapping (``close``
   is outside the window). The peer ``zstd decompress`` is a bare boto3 ``get_object``
   of the same snapshot blob streamed to a file in 1 MiB chunks, then ``zstandard``
   ``copy_stream`` of it to a file, then the blob file deleted (as feedkit deletes it);
   no verification. Both reuse one warm boto3 client (the store's, a plain one for the
   peer) and write to the same file system. One warm-up each, then ``ROUNDS``
   interleaved rounds (feedkit, peer, feedkit, ...), medians. The garbage collector
   stays on and is run between windows. For the lead, an informative breakdown of
   feedkit's steps (``store.download``, ``decompress_file``, ``StateFile.verify``) is
   timed on the side, and ``RSS_RUNS`` loads of each kind run in fresh subprocesses
   report their peak RSS growth against the blob size: after imports and client
   creation, ``VmHWM`` is reset through ``/proc/self/clear_refs`` and the peak during
   the load is compared with the RSS before it (where the reset is refused,
   ``ru_maxrss`` after minus before). The change of RssAnon and RssFile across the load
   is printed too (mapped state-file pages count as RssFile). ``--profile`` prints a
   cProfile of one extra feedkit load.
2. ``poll_requests``: a fleet of ``FLEET`` consumers in this process on the same,
   unchanged feed, each with its own store (``feedkit.open_store``, so its own boto3
   client), all sharing one cache folder (one host's cache: the first open downloads
   the snapshot under the cache lock, the others find it there), ``watch=True``,
   ``poll_interval=1.0``. Each runs in its own thread, which opens its consumer and then
   does one ``get`` every 100 ms until told to stop; each consumer also runs its own
   refresher thread. Once all are open, requests are counted for ``POLL_SECONDS``
   with boto3's event hooks on every client (``after-call.s3``: operation and HTTP
   status; the object key is taken from ``before-parameter-build.s3``; HTTP attempts,
   retries included, from ``before-send.s3``). ``poll_requests`` is calls per second
   against the goal of 50/s (one per consumer per second); ``poll_blob_reads`` is the
   number of ``GetObject`` calls answered 200 in the window (goal 0: an unchanged feed
   costs only conditional reads answered 304).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard
from common import RESULTS, load, print_rows, row, step, versions, write_rows

import feedkit

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240611
FEED = "bench.s3"
ROUNDS = 7
RSS_RUNS = 3
FLEET = 50
POLL_INTERVAL = 1.0
POLL_SECONDS = 10.0
GET_EVERY = 0.1  # seconds between lookups in each fleet thread
OPEN_TIMEOUT = 180.0
CHUNK = 1 << 20
COUNTRIES = ["DE", "US", "FR", "BR"]

GOAL_LOAD_VS_ZSTD = "<= 1.5x"
GOAL_POLL_RPS = 50.0


# -- data -------------------------------------------------------------------------------


def titles(n: int, seed: int) -> Any:
    """tests/conftest.py's titles_table, vectorised: movie_id 0..n-1, title, year, score,
    country."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    ids = pa.array(np.arange(n, dtype=np.int64), pa.int64())
    return pa.table({
        "movie_id": ids,
        "title": pc.binary_join_element_wise("title", pc.cast(ids, pa.string()), " "),
        "year": pa.array(1950 + np.arange(n, dtype=np.int32) % 70, pa.int32()),
        "score": pa.array(rng.random(n), pa.float64()),
        "country": pa.array(COUNTRIES, pa.string()).take(
            pa.array(np.arange(n, dtype=np.int64) % len(COUNTRIES))),
    })


def s3_server() -> Any:
    """tests/s3server.py's S3Server (moto on 127.0.0.1, or FEEDKIT_S3_ENDPOINT)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from s3server import S3Server
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return S3Server()


def open_s3(url: str, endpoint: str) -> Any:
    return feedkit.open_store(url, endpoint_url=endpoint)


# -- part 1: the snapshot load ----------------------------------------------------------


def feedkit_load(store: Any, cache_dir: Path) -> float:
    """Seconds for a fresh consumer to open on an empty cache folder (close not timed)."""
    t = time.perf_counter()
    consumer = feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, watch=False).open()
    elapsed = time.perf_counter() - t
    consumer.close()
    return elapsed


def peer_load(client: Any, bucket: str, key: str, folder: Path) -> float:
    """Seconds for a bare streamed get_object to a file + zstd decompression to a file."""
    folder.mkdir(parents=True, exist_ok=True)
    blob, out = folder / "blob.zst", folder / "state"
    t = time.perf_counter()
    response = client.get_object(Bucket=bucket, Key=key)
    with open(blob, "wb") as f:
        for chunk in response["Body"].iter_chunks(CHUNK):
            f.write(chunk)
    with open(blob, "rb") as fin, open(out, "wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=CHUNK, write_size=CHUNK)
    blob.unlink()
    return time.perf_counter() - t


def bench_load(store: Any, client: Any, blob_key: str, work: Path) -> dict[str, list[float]]:
    """One warm-up each, then ROUNDS interleaved rounds; a new empty folder every window."""
    res: dict[str, list[float]] = {"feedkit": [], "peer": []}
    runs: dict[str, Callable[[Path], float]] = {
        "feedkit": lambda d: feedkit_load(store, d),
        "peer": lambda d: peer_load(client, store.bucket, blob_key, d),
    }
    for r in range(ROUNDS + 1):
        last = {}
        for name, run in runs.items():
            folder = work / f"{name}-{r}"
            gc.collect()
            last[name] = run(folder)
            shutil.rmtree(folder, ignore_errors=True)
            if r:
                res[name].append(last[name])
        step(f"{f'round {r}' if r else 'warm-up'}: feedkit {last['feedkit']:.3f} s, "
             f"peer {last['peer']:.3f} s")
    return res


def breakdown(store: Any, snapshot: Any, work: Path, runs: int = 3) -> dict[str, float]:
    """Median seconds of the load's steps, each alone (informative)."""
    from feedkit.blobs import decompress_file
    from feedkit.format import StateFile

    times: dict[str, list[float]] = {"download": [], "decompress_file": [], "verify": []}
    work.mkdir(parents=True, exist_ok=True)
    blob, out = work / "blob.zst", work / "state"
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        store.download(snapshot.key, blob)
        times["download"].append(time.perf_counter() - t)
        t = time.perf_counter()
        decompress_file(blob, out, snapshot)
        times["decompress_file"].append(time.perf_counter() - t)
        t = time.perf_counter()
        sf = StateFile(out)
        sf.verify()
        times["verify"].append(time.perf_counter() - t)
        del sf
        blob.unlink()
        out.unlink()
    return {k: statistics.median(v) for k, v in times.items()}


def profile_load(store: Any, cache_dir: Path) -> str:
    prof = cProfile.Profile()
    prof.enable()
    feedkit_load(store, cache_dir)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(12)
    return buf.getvalue()


def _proc_status() -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                out[name] = int(value.split()[0])  # kB
    return out


def child(args: argparse.Namespace) -> int:
    """One load in this fresh process; prints its time and memory figures as JSON."""
    from feedkit.consumer import Consumer  # imports before the baseline

    store = open_s3(args.url, args.endpoint)
    client = store.client
    folder = Path(args.dir)
    gc.collect()
    try:  # reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the load's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    start = _proc_status()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.child == "feedkit":
        t = time.perf_counter()
        consumer = Consumer(store, feed=FEED, cache_dir=folder, watch=False).open()
        elapsed = time.perf_counter() - t
        status = _proc_status()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        consumer.close()
    else:
        elapsed = peer_load(client, store.bucket, args.blob, folder)
        status = _proc_status()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "maxrss_before_kib": before,
                      "maxrss_after_kib": after, "after": status, "before": start,
                      "hwm_reset": reset}))
    return 0


def rss_runs(url: str, endpoint: str, blob_key: str, work: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"feedkit": [], "peer": []}
    for r in range(RSS_RUNS):
        for kind in ("feedkit", "peer"):
            folder = work / f"rss-{kind}-{r}"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--url", url, "--endpoint", endpoint,
                 "--blob", blob_key, "--dir", str(folder)],
                capture_output=True, text=True, timeout=300, check=False)
            shutil.rmtree(folder, ignore_errors=True)
            if proc.returncode != 0:
                raise SystemExit(f"the {kind} load subprocess failed ({proc.returncode}):\n"
                                 f"{proc.stderr[-3000:]}")
            out[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


# -- part 2: a polling fleet ------------------------------------------------------------


class Requests:
    """Every call (and HTTP attempt) a set of boto3 clients sends, with a timestamp."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, str, int]] = []  # (t, op, kind, status)
        self.attempts: list[float] = []
        self.lock = threading.Lock()

    def watch(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-parameter-build.s3", self._tag)
        events.register("before-send.s3", self._attempt)
        events.register("after-call.s3", self._record)

    @staticmethod
    def _tag(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bench_key"] = params.get("Key")

    def _attempt(self, **_: Any) -> None:  # must return None, or it replaces the request
        with self.lock:
            self.attempts.append(time.monotonic())

    def _record(self, http_response: Any, model: Any, context: dict[str, Any] | None = None,
                **_: Any) -> None:
        kind = object_kind((context or {}).get("bench_key"))
        with self.lock:
            self.calls.append((time.monotonic(), model.name, kind, http_response.status_code))

    def window(self, t0: float, t1: float) -> tuple[Counter[tuple[str, str, int]], int]:
        with self.lock:
            calls = Counter((op, kind, status) for t, op, kind, status in self.calls
                            if t0 <= t < t1)
            attempts = sum(t0 <= t < t1 for t in self.attempts)
        return calls, attempts


def object_kind(key: str | None) -> str:
    if key is None:
        return "-"
    if key.endswith("/announced.json"):
        return "announcement"
    if "/versions/" in key:
        return "manifest"
    if "/snapshots/" in key or "/deltas/" in key:
        return "blob"
    return "other"


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def bench_fleet(url: str, endpoint: str, cache_dir: Path, n: int,
                server_pid: int | None) -> dict[str, Any]:
    requests = Requests()
    step(f"creating {FLEET} stores (one boto3 client each)")
    gc.collect()
    anon = _proc_status().get("RssAnon", 0)
    t = time.perf_counter()
    stores = [open_s3(url, endpoint) for _ in range(FLEET)]
    res: dict[str, Any] = {"stores_s": time.perf_counter() - t}
    gc.collect()
    res["stores_anon"] = (_proc_status().get("RssAnon", 0) - anon) * 1024
    for store in stores:
        requests.watch(store.client)
    ready = [threading.Event() for _ in range(FLEET)]
    errors: list[BaseException] = []
    stop = threading.Event()
    lookups = [0] * FLEET

    def worker(i: int) -> None:
        rnd = random.Random(SEED + i)
        try:
            consumer = feedkit.Consumer(stores[i], feed=FEED, cache_dir=cache_dir, watch=True,
                                        poll_interval=POLL_INTERVAL).open()
        except BaseException as exc:
            errors.append(exc)
            ready[i].set()
            return
        ready[i].set()
        try:
            while not stop.wait(GET_EVERY):
                if consumer.get(rnd.randrange(n)) is None:
                    errors.append(RuntimeError(f"consumer {i}: a key is missing"))
                    return
                lookups[i] += 1
        finally:
            consumer.close()

    step(f"opening {FLEET} consumers, each in its own thread (shared cache folder)")
    threads = [threading.Thread(target=worker, args=(i,), name=f"fleet-{i}", daemon=True)
               for i in range(FLEET)]
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + OPEN_TIMEOUT
    try:
        for event in ready:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise SystemExit(f"the fleet did not open within {OPEN_TIMEOUT:.0f} s")
        if errors:
            raise SystemExit(f"a fleet consumer failed to open: {errors[0]!r}")
        res["open_s"] = time.perf_counter() - t
        step(f"all {FLEET} open after {res['open_s']:.2f} s; counting requests for "
             f"{POLL_SECONDS:g} s")
        ticks = cpu_ticks(server_pid) if server_pid else None
        cpu = time.process_time()
        t0 = time.monotonic()
        time.sleep(POLL_SECONDS)
        t1 = time.monotonic()
        res["cpu"] = (time.process_time() - cpu) / (t1 - t0)
        if ticks is not None:
            end = cpu_ticks(server_pid)  # type: ignore[arg-type]
            if end is not None:
                res["server_cpu"] = (end - ticks) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
        res["window_s"] = t1 - t0
        res["calls"], res["attempts"] = requests.window(t0, t1)
        if errors:
            raise SystemExit(f"a fleet consumer failed: {errors[0]!r}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        for store in stores:
            store.close()
    res["lookups"] = sum(lookups)
    return res


# -- report -----------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def mib_signed(n: float) -> str:
    return f"{n / (1 << 20):+.1f} MiB"


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k records")
    ap.add_argument("--out", type=Path, help="where to write the JSON rows")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of one extra feedkit load")
    ap.add_argument("--child", choices=("feedkit", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--blob", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    n = 100_000 if args.quick else args.records
    if n < 1:
        ap.error("--records must be >= 1")

    now = dt.datetime.now().astimezone()
    print(f"feedkit S3 benchmark, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
          f"{platform.release()}; Python {platform.python_version()} "
          f"({platform.python_implementation()})")
    print(f"versions: {versions('boto3', 'botocore', 'moto', 'zstandard', 'pyarrow')}")
    print(f"load average at start: {load()} (other work on the machine skews the figures)")
    print(f"records: {n:,} (seed {SEED}); load rounds: {ROUNDS} (+1 warm-up); RSS runs: "
          f"{RSS_RUNS} each; fleet: {FLEET} consumers, poll_interval {POLL_INTERVAL:g} s, "
          f"counted for {POLL_SECONDS:g} s")

    root = Path(tempfile.mkdtemp(prefix="feedkit-bench-s3-"))
    server = None
    info: dict[str, Any] = {}
    try:
        step("starting the S3 endpoint")
        server = s3_server()
        kind = ("moto's standalone server (a subprocess on loopback)" if server.kind == "moto"
                else "external (FEEDKIT_S3_ENDPOINT)")
        print(f"endpoint: {server.endpoint}, {kind}")
        print(flush=True)
        url = server.url()
        store = open_s3(url, server.endpoint)

        step(f"generating {n:,} records and publishing them to {url}")
        table = titles(n, SEED)
        # Format 1: this benchmark measures the S3 transport against boto3 and zstd, whose
        # bytes must be the blob's; format 2's columnar snapshot (rebuilt, not
        # decompressed) is measured by bench_refresh.py and bench_storage.py.
        producer = feedkit.Producer(store, feed=FEED, primary_key="movie_id", format=1)
        t = time.perf_counter()
        producer.publish(table)
        info["publish_s"] = time.perf_counter() - t
        snapshot = producer.manifest.snapshot
        producer.close()
        blob_key = f"{store.prefix}/{snapshot.key}" if store.prefix else snapshot.key
        info["blob"], info["raw"] = snapshot.size, snapshot.raw_size

        # The feedkit load answers what was published; the peer writes the same bytes.
        with feedkit.Consumer(store, feed=FEED, cache_dir=root / "check", watch=False) as feed:
            if len(feed) != n:
                raise SystemExit(f"the feed serves {len(feed)} records, {n} were published")
            sample = table.slice(max(0, n // 2 - 500), 1000).to_pylist()
            for rec in sample:
                got = feed.get(rec["movie_id"])
                if got is None or got._asdict() != rec:
                    raise SystemExit(f"feed.get({rec['movie_id']}) = {got!r}, expected {rec!r}")
        shutil.rmtree(root / "check")
        del table
        client = server.client()
        peer_load(client, store.bucket, blob_key, root / "check")
        if (size := (root / "check" / "state").stat().st_size) != snapshot.raw_size:
            raise SystemExit(f"the peer wrote {size} bytes, the manifest says "
                             f"{snapshot.raw_size}")
        shutil.rmtree(root / "check")

        step(f"snapshot load: warm-up, then {ROUNDS} interleaved rounds")
        loads = bench_load(store, client, blob_key, root / "load")
        step("breakdown of feedkit's load steps (each alone, median of 3)")
        info["steps"] = breakdown(store, snapshot, root / "steps")
        step(f"peak RSS: {RSS_RUNS} loads of each kind in fresh subprocesses")
        info["rss"] = rss_runs(url, server.endpoint, blob_key, root / "rss")
        if args.profile:
            info["profile"] = profile_load(store, root / "profile")

        fleet = bench_fleet(url, server.endpoint, root / "fleet-cache", n,
                            server.proc.pid if server.proc is not None else None)
        store.close()
    finally:
        if server is not None:
            server.stop()
            if server.proc is not None:  # our moto's log folder
                shutil.rmtree(server.log.parent, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

    fk, peer = statistics.median(loads["feedkit"]), statistics.median(loads["peer"])
    calls: Counter[tuple[str, str, int]] = fleet["calls"]
    total = sum(calls.values())
    rps = total / fleet["window_s"]
    blob_reads = sum(c for (op, _, status), c in calls.items()
                     if op == "GetObject" and status == 200)
    rows = [
        row("snapshot_load_s3", "s", fk, "zstd decompress", peer, GOAL_LOAD_VS_ZSTD),
        row("poll_requests", "req/s", rps, "goal 50 req/s", GOAL_POLL_RPS, "<= 50 req/s"),
        row("poll_blob_reads", "count", blob_reads, "goal 0", 0, "== 0"),
    ]

    print()
    print(f"setup (not goals): publish of {n:,} records to S3 {info['publish_s']:.2f} s; "
          f"snapshot blob {info['blob']:,} bytes ({mib(info['blob'])}), state file "
          f"{info['raw']:,} bytes ({mib(info['raw'])})")
    print(f"snapshot load (median of {ROUNDS}): feedkit {fk:.3f} s "
          f"({mib(info['blob']) } at {info['blob'] / fk / (1 << 20):.0f} MiB/s of blob), "
          f"peer {peer:.3f} s; all feedkit: {', '.join(f'{x:.3f}' for x in loads['feedkit'])}; "
          f"all peer: {', '.join(f'{x:.3f}' for x in loads['peer'])}")
    s = info["steps"]
    print(f"  feedkit steps alone (median s, informative): store.download {s['download']:.3f}, "
          f"decompress_file (SHA-256 + zstd) {s['decompress_file']:.3f}, StateFile.verify "
          f"(xxh3 of the mapped file) {s['verify']:.3f}; sum {sum(s.values()):.3f}; the open's median minus "
          f"that sum (announcement, manifest, rename, State; noise when near 0) "
          f"{fk - sum(s.values()):+.3f}")
    for kind_name, runs in info["rss"].items():
        # With VmHWM reset before the load: peak RSS during the load minus RSS before it.
        # Otherwise ru_maxrss after minus before (0 when the imports set a higher mark).
        growth = [(r["after"]["VmHWM"] - r["before"]["VmRSS"]) * 1024
                  if r["hwm_reset"] and "VmHWM" in r["after"] and "VmRSS" in r["before"]
                  else (r["maxrss_after_kib"] - r["maxrss_before_kib"]) * 1024 for r in runs]
        how = "VmHWM reset" if all(r["hwm_reset"] for r in runs) else "ru_maxrss"
        anon = [(r["after"].get("RssAnon", 0) - r["before"].get("RssAnon", 0)) * 1024
                for r in runs]
        file_ = [(r["after"].get("RssFile", 0) - r["before"].get("RssFile", 0)) * 1024
                 for r in runs]
        print(f"  peak RSS growth during the load in a fresh process ({how}), {kind_name}: "
              f"median {mib(statistics.median(growth))} (max {mib(max(growth))}) = "
              f"{statistics.median(growth) / info['blob']:.2f}x the blob, "
              f"{statistics.median(growth) / info['raw']:.2f}x the state file; RSS after vs "
              f"before: RssAnon {mib_signed(statistics.median(anon))}, RssFile "
              f"{mib_signed(statistics.median(file_))}; load {statistics.median(r['seconds'] for r in runs):.3f} s "
              f"(cold process)")
    print(f"fleet: {FLEET} stores created in {fleet['stores_s']:.2f} s (RssAnon "
          f"+{mib(fleet['stores_anon'])}), all consumers open in "
          f"{fleet['open_s']:.2f} s (shared cache folder); in the {fleet['window_s']:.1f} s window "
          f"{total} calls ({rps:.1f}/s), {fleet['attempts']} HTTP attempts; "
          f"{fleet['lookups']:,} lookups served")
    for (op, what, status), c in sorted(calls.items()):
        print(f"  {op} {what} -> {status}: {c}")
    cpu = f"this process {fleet['cpu']:.0%} of a core"
    if "server_cpu" in fleet:
        cpu += f", the moto server {fleet['server_cpu']:.0%} of a core"
    print(f"  CPU during the window: {cpu}")
    print("ratio = feedkit / peer; poll_requests compares against the goal itself (50 req/s)")
    print()
    print_rows(rows)
    print(f"\nload average at end: {load()}")
    if "profile" in info:
        print("\ncProfile of one feedkit load:\n" + info["profile"])

    out_dir = RESULTS
    out_dir.mkdir(exist_ok=True)
    out = write_rows(args.out or out_dir / ("s3_quick.json" if args.quick else "s3.json"), rows)
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
