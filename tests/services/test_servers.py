"""A Consumer inside real servers: gunicorn's sync workers (with and without --preload) and
uvicorn's workers, each serving ``feed_app`` (a Consumer opened at import) on 127.0.0.1.

While the workers answer a steady load, the producer (this process) publishes 3 versions.
Every worker must serve each new version within ``poll_interval + 2 s`` of its
announcement, every answer must be the truth of the version it reports, and the workers
must share the state file's pages (their PSS summed is about one copy, not one each).

One run per server (a module-scoped fixture) measures everything; the tests below judge
one property each, so that a failure names what broke.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import feedkit
from tests.s3server import S3Server
from tests.services.harness import (
    FEED,
    GENERATIONS,
    HERE,
    Load,
    Sample,
    Server,
    alive,
    announced_at_monotonic,
    ask_every_worker,
    free_port,
    mapped_files,
    rollup,
    table,
    truth,
)

POLL_INTERVAL = 1.0
DEADLINE = POLL_INTERVAL + 2.0  # what the issue allows a worker to follow an announcement

GUNICORN = ["gunicorn", "--workers", "4", "--worker-class", "sync", "--graceful-timeout", "5",
            "--pythonpath", str(HERE), "feed_app:wsgi"]
UVICORN = ["uvicorn", "--workers", "2", "--no-access-log", "--app-dir", str(HERE),
           "feed_app:asgi"]
SERVERS: dict[str, tuple[list[str], int, str]] = {
    # name: (the server's command line after `python -m`, its workers, the store)
    "gunicorn": (GUNICORN, 4, "file"),
    "gunicorn-preload": ([*GUNICORN[:-1], "--preload", GUNICORN[-1]], 4, "file"),
    "uvicorn": (UVICORN, 2, "file"),
    # A local folder wakes the consumers through a file-system watch; on S3 they only
    # poll, so this is the run where poll_interval is what the deadline measures.
    "gunicorn-preload-s3": ([*GUNICORN[:-1], "--preload", GUNICORN[-1]], 4, "s3"),
}


@dataclass
class Run:
    """What one server did while the feed moved under it."""

    name: str
    workers: int
    versions: list[int] = field(default_factory=list)  # by generation
    pids: set[int] = field(default_factory=set)        # the workers that answered
    children: set[int] = field(default_factory=set)    # the master's worker processes
    # generation -> worker -> seconds from the announcement to its first answer from
    # that version (an upper bound: the answer's arrival), None if not within the wait
    delays: dict[int, dict[int, float | None]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    health: dict[int, dict[str, Any]] = field(default_factory=dict)
    scans: dict[int, dict[str, Any]] = field(default_factory=dict)
    maps: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    rollups: dict[int, dict[str, int]] = field(default_factory=dict)
    exit_code: int | None = None
    leftovers: set[int] = field(default_factory=set)
    log: str = ""

    def __repr__(self) -> str:
        return f"<Run {self.name}>"


def _run(name: str, tmp: Path, s3: S3Server | None) -> Run:
    argv, workers, kind = SERVERS[name]
    cache = tmp / "cache"
    env = dict(os.environ)
    if kind == "s3":
        assert s3 is not None
        store = feedkit.open_store(s3.url(), endpoint_url=s3.endpoint)
        env["AWS_ENDPOINT_URL_S3"] = s3.endpoint  # for the app's open_store(url)
    else:
        store = feedkit.open_store(f"file://{tmp / 'store'}")
    run = Run(name, workers)
    producer = feedkit.Producer(store, feed=FEED, primary_key="key")
    run.versions.append(producer.publish(table(0)))
    port = free_port()
    if argv[0] == "gunicorn":
        argv = [*argv[:1], "--bind", f"127.0.0.1:{port}", *argv[1:]]
    else:
        argv = [*argv[:1], "--host", "127.0.0.1", "--port", str(port), *argv[1:]]
    env.update(SERVICE_STORE=store.url, SERVICE_FEED=FEED, SERVICE_CACHE=str(cache),
               SERVICE_POLL=str(POLL_INTERVAL), PYTHONUNBUFFERED="1",
               XDG_RUNTIME_DIR=str(tmp))  # gunicorn's control socket: not one per user
    server = Server([sys.executable, "-m", *argv], env, tmp / f"{name}.log", port)
    load: Load | None = None
    try:
        server.wait_ready()
        load = Load(port, threads=2 * workers)
        run.pids = load.wait_pids(workers, timeout=30)
        run.children = server.children()
        for gen in range(1, GENERATIONS):
            version = producer.publish(table(gen))
            assert version is not None
            run.versions.append(version)
            t0 = announced_at_monotonic(store, FEED)
            first = load.first_serving(version, run.pids, since=t0, timeout=DEADLINE + 3)
            run.delays[gen] = {pid: None if at is None else at - t0 for pid, at in first.items()}
        load.stop()
        run.samples, run.errors = list(load.samples), list(load.errors)
        run.health = ask_every_worker(port, "/health", run.pids)
        run.scans = ask_every_worker(port, "/scan", run.pids)
        for pid in run.pids:
            run.maps[pid] = mapped_files(pid, cache)
            run.rollups[pid] = rollup(pid)
        run.exit_code = server.stop()
        run.leftovers = server.group() | {pid for pid in run.pids if alive(pid)}
    finally:
        if load is not None:
            load.stop()
        server.stop()  # again, on the way out of a failure: SIGTERM, then SIGKILL to the group
        run.log = server.log_tail()
        producer.close()
        store.close()
    return run


@pytest.fixture(scope="module", params=list(SERVERS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    name = request.param
    s3 = request.getfixturevalue("s3_server") if SERVERS[name][2] == "s3" else None
    return _run(name, tmp_path_factory.mktemp(name), s3)


def _fmt(delays: dict[int, float | None]) -> str:
    return ", ".join("never" if d is None else f"{d:.2f}s" for d in delays.values())


def test_answers_come_from_every_worker(run: Run) -> None:
    assert len(run.pids) == run.workers, f"{run.name}: answers from {run.pids} only"
    assert run.pids == run.children, f"{run.name}: answering pids {run.pids} are not the " \
                                     f"master's worker processes {run.children}"
    assert not run.errors, f"{run.name}: {len(run.errors)} failed requests: {run.errors[:5]}"
    per_worker = {pid: sum(1 for s in run.samples if s.pid == pid) for pid in run.pids}
    print(f"\n{run.name}: {len(run.samples)} answers, per worker {sorted(per_worker.values())}")


def test_every_worker_serves_each_new_version_in_time(run: Run) -> None:
    late = {}
    for gen, delays in run.delays.items():
        print(f"\n{run.name}: version {gen} served after {_fmt(delays)}")
        if any(d is None or d > DEADLINE for d in delays.values()):
            late[gen] = _fmt(delays)
    assert not late, f"{run.name}: workers not serving a new version within {DEADLINE} s " \
                     f"of its announcement (by version: per-worker delays): {late}"


def test_every_answer_is_the_truth_of_the_version_it_reports(run: Run) -> None:
    gen_of = {v: g for g, v in enumerate(run.versions)}
    assert run.samples
    wrong = [s for s in run.samples
             if s.version not in gen_of or s.record != truth(s.key, gen_of[s.version])]
    assert not wrong, f"{run.name}: {len(wrong)} of {len(run.samples)} answers wrong, " \
                      f"e.g. {wrong[:3]}"
    # Within a worker (in the order it served), the version never goes back.
    for pid in run.pids:
        served = [s.version for s in sorted((s for s in run.samples if s.pid == pid),
                                            key=lambda s: s.seq)]
        assert served == sorted(served), f"{run.name}: worker {pid} went back a version"
    assert {s.version for s in run.samples} <= set(run.versions)
    print(f"\n{run.name}: {len(run.samples)} answers checked against their versions")


def test_workers_report_ready_and_current(run: Run) -> None:
    assert run.health.keys() >= run.pids, f"{run.name}: /health unanswered by some workers"
    last = run.versions[-1]
    for pid in run.pids:
        report = run.health[pid]
        assert report["status"] == 200 and report["ok"], f"{run.name}: worker {pid}: {report}"
        assert report["version"] == last and report["announced_version"] == last, \
            f"{run.name}: worker {pid} not current: {report}"
        assert report["versions_behind"] == 0, f"{run.name}: worker {pid}: {report}"


def test_workers_share_the_state_pages(run: Run) -> None:
    """Each worker has its whole state file resident through its mapping, and the PSS
    of those mappings, summed over the workers, is about one copy of the file."""
    assert run.scans.keys() >= run.pids, f"{run.name}: /scan unanswered by some workers"
    sizes, rss, pss = {}, {}, {}
    for pid in run.pids:
        files = run.scans[pid]["files"]
        sizes[pid] = sum(os.path.getsize(p) for p in files)
        rss[pid] = sum(run.maps[pid].get(p, {}).get("rss", 0) for p in files)
        pss[pid] = sum(run.maps[pid].get(p, {}).get("pss", 0) for p in files)
    size = statistics.mean(sizes.values())
    copies = sum(pss.values()) / size
    mib = 1 << 20
    print(f"\n{run.name}: state files {size / mib:.1f} MiB; per worker Rss "
          f"{[round(r / mib, 1) for r in rss.values()]} MiB, Pss "
          f"{[round(p / mib, 1) for p in pss.values()]} MiB; the workers' Pss = "
          f"{copies:.2f} copies of the file ({run.workers} private copies: {run.workers}.00); "
          f"whole-process Pss {[round(r['Pss'] / mib) for r in run.rollups.values()]} MiB, "
          f"anonymous {[round(r.get('Anonymous', 0) / mib) for r in run.rollups.values()]} MiB")
    for pid in run.pids:
        assert rss[pid] >= 0.9 * sizes[pid], \
            f"{run.name}: worker {pid} has {rss[pid]} of its {sizes[pid]} bytes of state " \
            "files resident through its mapping"
    # n private copies would be n; shared pages make it about 1 (less with --preload,
    # where the master maps the first version too).
    limit = min(2.0, 0.75 * run.workers)
    assert copies < limit, f"{run.name}: the workers' PSS is {copies:.2f} copies of the " \
                           f"state file (limit {limit}): pages are not shared"


def test_server_stops_cleanly(run: Run) -> None:
    assert run.exit_code == 0, f"{run.name}: exit code {run.exit_code} on SIGTERM:\n{run.log}"
    assert not run.leftovers, f"{run.name}: processes left after it stopped: {run.leftovers}"
