"""The benchmark suite: every measure, side by side with its peers, in one command.

Run::

    make bench          # 1M records   -> benchmarks/results/bench.json
    make bench-large    # 10M records  -> benchmarks/results/large.json
    make bench-quick    # 100k records -> benchmarks/results/quick.json
    .venv/bin/python benchmarks/suite.py --size quick|full|large [--only core,storage,...]
    .venv/bin/python benchmarks/suite.py --size large --only refresh --reuse core,producer,s3

Each part is one script, run as its own process (so memory and CPU of one part never
leak into the next), with the same record count:

- ``bench_core.py``     get() latency (median, p99, p99.9) vs dict, lmdb+msgpack,
                        sqlite3+msgpack, rocksdict+msgpack and Redis on 127.0.0.1; get() by
                        str and composite key vs dict; get_many vs a get() loop, a dict
                        comprehension, lmdb getmulti, rocksdict's batch get and Redis MGET;
                        open on a cached state; PSS of 4 consumer processes vs 4 processes
                        holding a dict
- ``bench_refresh.py``  snapshot load vs a bare zstd decompression; a 1% delta refresh vs
                        a snapshot load; lookup p99 while refreshes run vs idle
- ``bench_producer.py`` the daemon's full and append cycles vs a pyarrow scan, blob size vs
                        Parquet-zstd, Iceberg commit to a consumer serving it (local, S3)
- ``bench_storage.py``  bytes per record of the state files a consumer maps and of the
                        snapshot and delta blobs vs Parquet-zstd, lmdb+msgpack and a dict, on
                        three tables (five fields; Muse-like filter values; nested structs,
                        maps and lists)
- ``bench_s3.py``       snapshot load from S3 vs a bare download + zstd; a polling fleet

S3 parts use the server in ``FEEDKIT_S3_ENDPOINT`` (MinIO from
``benchmarks/docker-compose.yml``, or AWS), else they start moto's standalone server on
127.0.0.1. The core part starts Debian's ``redis-server`` itself (the Makefile's bench
targets install it when it is missing and apt-get is usable); without one its Redis rows
are skipped with a note in its log. The suite merges the parts' rows into ``results/<run>.json``, draws the plots
(``results/<run>-*.png``), writes what ran where to ``results/<run>-meta.json``, and
regenerates ``benchmarks/RESULTS.md`` from every run present.
Each part's own output goes to ``results/<run>-<part>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, table, write_rows

HERE = Path(__file__).resolve().parent
SIZES = {"quick": 100_000, "full": 1_000_000, "large": 10_000_000}
RUN_NAMES = {"quick": "quick", "full": "bench", "large": "large"}
PARTS = ("core", "refresh", "producer", "storage", "s3", "cycles")


def part_command(part: str, size: str, out: Path, records: int | None = None) -> list[str]:
    n = records or SIZES[size]
    script = str(HERE / f"bench_{part}.py")
    if part == "core":
        # Open time is measured at 100k, 1M and 10M in full and large runs (goal: flat).
        opens = str(n) if size == "quick" or records else "100000,1000000,10000000"
        large = "0" if size == "quick" or records else "10000000"
        return [sys.executable, script, "--records", str(n), "--large", large,
                "--open-sizes", opens, "--out", str(out)]
    if part == "producer":
        return [sys.executable, script, "--rows", str(n), "--out", str(out)]
    if part == "cycles":
        return [sys.executable, script, "--records", str(n), "--out", str(out),
                "--rounds", "1" if size == "quick" else "3"]
    # refresh, storage and s3
    return [sys.executable, script, "--records", str(n), "--out", str(out)]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    endpoint = os.environ.get("FEEDKIT_S3_ENDPOINT")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "s3": f"FEEDKIT_S3_ENDPOINT={endpoint}" if endpoint
        else "moto's standalone server on 127.0.0.1 (no FEEDKIT_S3_ENDPOINT)",
    }


def run_parts(size: str, parts: list[str], keep_going: bool, results: Path,
              records: int | None, reuse: tuple[str, ...] = ()
              ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Run ``parts`` in turn; a part named in ``reuse`` is not run: its rows come from the
    part file an earlier run left (``results/parts/<run>-<part>.json``), and its status
    says when that run wrote it (to finish a run whose other parts failed)."""
    from tqdm import tqdm

    run = RUN_NAMES[size]
    rows: list[dict[str, Any]] = []
    status: dict[str, str] = {}
    # The bar moves per part; its text follows the part's own "  .. step" lines. On
    # anything but a terminal (CI logs) it stays quiet and only the per-part lines print.
    bar = tqdm(parts, desc=f"{run} ({records or SIZES[size]:,} records)", unit="part",
               bar_format="{desc}: {n_fmt}/{total_fmt} parts |{bar}| {elapsed} {postfix}",
               disable=None)
    for part in bar:
        bar.set_postfix_str(part)
        out = results / "parts" / f"{run}-{part}.json"
        log = results / f"{run}-{part}.log"
        if part in reuse:
            if not out.exists():
                raise SystemExit(f"--reuse {part}: no {out} from an earlier run")
            written = dt.datetime.fromtimestamp(out.stat().st_mtime, dt.UTC)
            rows += [dict(r, part=r.get("part", part)) for r in json.loads(out.read_text())]
            status[part] = f"ok (reused: the part file an earlier run wrote at {written:%Y-%m-%d %H:%M} UTC)"
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        started = time.monotonic()
        with open(log, "w", buffering=1) as f, subprocess.Popen(
                part_command(part, size, out, records), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd=HERE.parent, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
            assert child.stdout is not None
            for line in child.stdout:
                f.write(line)
                if line.startswith("  .. "):
                    bar.set_postfix_str(f"{part}: {line[5:].strip()}"[:70])
        returncode = child.returncode
        seconds = time.monotonic() - started
        if returncode != 0 or not out.exists():
            status[part] = f"failed (exit {returncode}, {seconds:.0f} s; see {log.name})"
            tqdm.write(f"{part}: FAILED, exit {returncode}; last lines of {log}:\n"
                       + "\n".join(log.read_text().splitlines()[-15:]))
            if not keep_going:
                break
            continue
        part_rows = json.loads(out.read_text())
        for r in part_rows:
            r.setdefault("part", part)
        rows += part_rows
        status[part] = f"ok ({seconds:.0f} s)"
        tqdm.write(f"{part}: {len(part_rows)} rows in {seconds:.0f} s")
    return rows, status


# -- plots --------------------------------------------------------------------------------


def _records_label(r: dict[str, Any]) -> str:
    n = r.get("records")
    if not n:
        return ""
    return f" ({n // 1_000_000}M)" if n % 1_000_000 == 0 else f" ({n // 1000}k)" \
        if n % 1000 == 0 else f" ({n:,})"


def plot(run: str, rows: list[dict[str, Any]], results: Path) -> list[Path]:
    """Ratio-vs-goal bars for every row with a ratio, get() latencies per library, open
    time against size, and bytes per record per table (the storage part)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    ratio_rows = [r for r in rows if r.get("ratio") is not None and r.get("peer")]
    if ratio_rows:
        fig, ax = plt.subplots(figsize=(10, 0.38 * len(ratio_rows) + 1.5))
        labels = [f"{r['name']}{_records_label(r)} vs {r['peer']}"
                  + ("" if (r.get("goal") or "x").endswith("x") else f" (goal {r['goal']})")
                  for r in ratio_rows]
        colors = ["#2a9d8f" if r["met"] else "#e76f51" if r["met"] is False else "#8d99ae"
                  for r in ratio_rows]
        y = range(len(ratio_rows))
        ax.barh(list(y), [r["ratio"] for r in ratio_rows], color=colors)
        for i, r in enumerate(ratio_rows):
            goal = r.get("goal") or ""
            # A ratio goal has its tick at the goal; a measure whose peer is its goal
            # (propagation) at 1.
            value = float(goal.split()[1].rstrip("x")) if goal.endswith("x") else \
                1.0 if str(r["peer"]).startswith("goal") else None
            if value is not None:
                ax.plot([value, value], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("feedkit / peer (log scale); black tick: the goal; "
                      "green met, red not met, grey no goal")
        ax.set_title(f"feedkit against its peers ({run})")
        fig.tight_layout()
        path = results / f"{run}-ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    lat = [r for r in rows if r["name"] in ("get_median", "get_p99", "get_p999")]
    if lat:
        measures = [m for m in ("get_median", "get_p99", "get_p999")
                    if any(r["name"] == m for r in lat)]
        libraries = ["feedkit"] + sorted({r["peer"] for r in lat})
        fig, ax = plt.subplots(figsize=(9, 4.5))
        width = 0.8 / len(libraries)
        for j, lib in enumerate(libraries):
            values = []
            for m in measures:
                same = [r for r in lat if r["name"] == m]
                if lib == "feedkit":
                    values.append(same[0]["feedkit"] if same else 0)
                else:
                    values.append(next((r["peer_value"] for r in same if r["peer"] == lib), 0))
            ax.bar([i + j * width for i in range(len(measures))], values, width, label=lib)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(measures))], measures)
        ax.set_yscale("log")
        ax.set_ylabel("ns per lookup (log scale)")
        ax.set_title(f"get() latency by library ({run})")
        ax.legend()
        fig.tight_layout()
        path = results / f"{run}-get-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    opens = [r for r in rows if r["name"] == "open_cached" and r.get("records")]
    if len(opens) > 1:
        opens.sort(key=lambda r: r["records"])
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["records"] for r in opens], [r["feedkit"] for r in opens], "o-",
                label="feedkit open (cached state)")
        if all(r.get("peer_value") is not None for r in opens):
            ax.plot([r["records"] for r in opens], [r["peer_value"] for r in opens], "s--",
                    label="lmdb open")
        ax.axhline(20, color="black", linewidth=1, linestyle=":", label="goal 20 ms")
        ax.set_xscale("log")
        ax.set_xlabel("records")
        ax.set_ylabel("ms")
        ax.set_title(f"open time against size ({run})")
        ax.legend()
        fig.tight_layout()
        path = results / f"{run}-open.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    storage = storage_bytes(rows)
    if storage:
        tables = list(storage)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        width = 0.8 / len(STORAGE_SERIES)
        for j, series in enumerate(STORAGE_SERIES):
            values = [storage[t].get(series, 0) for t in tables]
            bars = ax.bar([i + j * width for i in range(len(tables))], values, width,
                          label=series)
            ax.bar_label(bars, [f"{v:,.0f}" if v else "" for v in values], fontsize=7)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tables))], tables)
        ax.set_yscale("log")
        ax.set_ylabel("bytes per record (log scale)")
        ax.set_title(f"bytes per record by table ({run})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = results / f"{run}-storage.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


STORAGE_SERIES = ("feedkit state", "feedkit blob", "Parquet-zstd", "lmdb+msgpack", "dict")
_STORAGE_PEERS = {"parquet-zstd": "Parquet-zstd", "lmdb+msgpack": "lmdb+msgpack", "dict": "dict"}


def storage_bytes(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The storage part's bytes per record, table -> series -> value: the state files and
    their peers from the ``state_files_<table>`` rows, the blob from ``snapshot_blob_<table>``."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        table = r.get("table")
        if r.get("part", "storage") != "storage" or not table:
            continue
        values = out.setdefault(table, {})
        if r["name"] == f"state_files_{table}":
            values["feedkit state"] = r["feedkit"]
            if r["peer"] in _STORAGE_PEERS:
                values[_STORAGE_PEERS[r["peer"]]] = r["peer_value"]
        elif r["name"] == f"snapshot_blob_{table}":
            values["feedkit blob"] = r["feedkit"]
    return out


# -- RESULTS.md ---------------------------------------------------------------------------


def _md_value(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| measure | unit | feedkit | peer | peer value | ratio | goal | met |\n" \
           "|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        name = r["name"] + (f" ({r['records']:,})" if r.get("records") else "")
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}x"
        lines.append(f"| {name} | {r['unit']} | {_md_value(r['feedkit'])} | {r['peer'] or ''} | "
                     f"{_md_value(r['peer_value'])} | {ratio} | {r['goal'] or ''} | {met} |")
    return head + "\n".join(lines) + "\n"


PEERS_MD = """\
Peers, on the same records and the same random keys in one run, interleaved rounds,
medians over rounds:

- lookups (`bench_core.py`): a Python dict of decoded records (namedtuples; the
  in-process floor); py-lmdb + msgpack (read-only, one read transaction); sqlite3 +
  msgpack (read-only, memory-mapped); RocksDB through rocksdict + msgpack (bulk-loaded,
  opened read-only, a block cache holding every block; batches through its MultiGet,
  `get(list)`); Redis on 127.0.0.1 + msgpack (Debian's `redis-server`, started by the
  benchmark on a free port without persistence, filled with pipelined SETs, read with
  the `redis` client and hiredis; single `GET`s on the first 10,000 sample keys, `MGET`
  per chunk of 1,000; skipped with a note when there is no redis-server). The stores hold
  the big-endian id and the msgpack record; all but lmdb return the same namedtuple as
  the dict. `get_many` (chunks of 1,000) is also compared with a get() loop and a dict
  comprehension over the same keys; str- and composite-key get() with dicts keyed alike
  (the same table published keyed by `title` and by `(id, year)`).
- refreshes (`bench_refresh.py`): a bare zstd decompression of the blob (snapshot load),
  a snapshot load (delta refresh), lookups with no refresh running (p99 during refreshes).
- the producer (`bench_producer.py`): a pyarrow scan of the Iceberg table and its batch
  reader (cycles), the full cycle (append cycle), the same table as Parquet-zstd (blob size).
- storage (`bench_storage.py`), bytes per record on three tables (five fields; Muse-like
  filter values; nested structs, maps and lists): the same table as Parquet-zstd
  (level 3, as feedkit's blobs), for the state files a consumer maps and the snapshot
  blob; the changed rows alone as Parquet-zstd, for the delta blob of a 1% change;
  lmdb + msgpack (`data.mdb`) and a Python dict of tuples (tracemalloc's traced total,
  in a child process) as references for the state files.
- S3 (`bench_s3.py`): a bare boto3 download + zstd decompression (snapshot load).
- Iceberg-driven cycles (`bench_cycles.py`): the same commit read by a feed without a key
  (every change but an append read whole: the full-read cycle) for the file-diff cycles
  of a partition overwrite, a delete and an upsert; commit-to-serving and the replace
  cycle against their goals.
"""


def write_results_md(results: Path, out: Path) -> Path:
    sections = []
    for size in ("full", "large", "quick"):
        run = RUN_NAMES[size]
        path, meta_path = results / f"{run}.json", results / f"{run}-meta.json"
        if not path.exists() or not meta_path.exists():
            continue
        rows, doc = json.loads(path.read_text()), json.loads(meta_path.read_text())
        meta = doc["machine"]
        met = sum(1 for r in rows if r["met"] is True)
        missed = sum(1 for r in rows if r["met"] is False)
        text = [f"## `{doc['command']}`: {doc['records']:,} records\n",
                f"{meta['date']}; {meta['cpus']} CPUs ({meta['cpu_model']}), "
                f"{meta['memory_gib']} GiB, Python {meta['python']}; S3: {meta['s3']}. "
                f"Parts: {', '.join(f'{k} {v}' for k, v in doc['parts'].items())}. "
                f"Goals met: {met}, not met: {missed}.\n",
                markdown_table(rows)]
        for png in doc.get("plots", []):
            text.append(f"![{png}]({os.path.relpath(results / png, out.parent)})\n")
        sections.append("\n".join(text))
    body = "\n".join(sections) if sections else "No run yet: `make bench-quick`.\n"
    out.write_text(
        "# Benchmark results\n\n"
        "Regenerated by `benchmarks/suite.py` (`make bench`, `make bench-large`, "
        "`make bench-quick`) from every run in `benchmarks/results/`. `ratio` is feedkit / "
        "peer; a goal ending in `x` is on the ratio, any other on feedkit's own value. A goal "
        "not met is shown as not met. How each part measures is in its script's docstring "
        "(`benchmarks/bench_*.py`).\n\n" + PEERS_MD + "\n" + body)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    ap.add_argument("--only", help=f"comma-separated parts ({', '.join(PARTS)})")
    ap.add_argument("--reuse", default="",
                    help="comma-separated parts whose rows come from an earlier run's part file")
    ap.add_argument("--keep-going", action="store_true", help="run the other parts after a failure")
    ap.add_argument("--records", type=int, help="override the size's record count (smoke runs)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    ap.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md",
                    help="the RESULTS.md to regenerate")
    args = ap.parse_args()
    reuse = tuple(filter(None, args.reuse.split(",")))
    parts = args.only.split(",") if args.only else list(PARTS)
    unknown = [p for p in (*parts, *reuse) if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    parts = [p for p in PARTS if p in parts or p in reuse]  # in the suite's order
    run = RUN_NAMES[args.size]
    meta = machine()
    records = args.records or SIZES[args.size]
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    print(f"feedkit benchmark suite: {run}, {records:,} records, {meta['cpus']} CPUs, "
          f"S3: {meta['s3']}", flush=True)
    started = time.monotonic()
    rows, status = run_parts(args.size, parts, args.keep_going, results, args.records, reuse)
    command = {"full": "make bench", "large": "make bench-large", "quick": "make bench-quick"}[
        args.size]
    plots = [p.name for p in plot(run, rows, results)] if rows else []
    doc = {"command": command, "records": records, "machine": meta, "parts": status,
           "plots": plots, "seconds": round(time.monotonic() - started, 1)}
    write_rows(results / f"{run}.json", rows)
    (results / f"{run}-meta.json").write_text(json.dumps(doc, indent=1) + "\n")
    results_md = write_results_md(results, args.results_md)
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows in {doc['seconds']:.0f} s; wrote {results / (run + '.json')}, "
          f"{', '.join(plots) or 'no plots'}, {results_md}")
    return 0 if all(s.startswith("ok") for s in status.values()) and len(status) == len(parts) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
