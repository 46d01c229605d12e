"""Producers that die mid-cycle (SIGKILL at each step) and two producers racing on one feed.

Producers run as separate processes (``producer_process.py``) on a real local store;
consumers (reader threads here, a reader process) check every answer. After a kill and a
restart the feed is consistent: the announced versions form one parent chain with no
orphan in it, nothing is announced twice, and consumers saw versions only in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit import names
from feedkit.format import StateFile
from feedkit.manifest import Announcement, Manifest
from tests.faults.harness import (
    FEED,
    ROOT,
    ProcessReader,
    ThreadReaders,
    check_reports,
    serving,
    wait_until,
)

SCRIPT = Path(__file__).with_name("producer_process.py")


def run_producer(store_dir: Path, work_dir: Path, *gens: int, kill_at: str = "none",
                 start_at: float = 0.0, wait: bool = True) -> Any:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(store_dir), str(work_dir), kill_at,
                             str(start_at), *map(str, gens)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=120)
    return proc.returncode, [json.loads(line) for line in out.splitlines()], err


def announced(store: feedkit.BlobStore) -> int:
    key = names.announcement_key(FEED)
    data, _ = store.read_if_changed(key) or (b"", None)
    return Announcement.from_bytes(data, key).version


def chain(store: feedkit.BlobStore, version: int) -> list[int]:
    """The announced version's ancestry, oldest first, through manifest parents."""
    out = []
    v: int | None = version
    while v is not None:
        out.append(v)
        key = names.manifest_key(FEED, v)
        v = Manifest.from_bytes(store.get_bytes(key), key).parent
    return out[::-1]


@pytest.mark.parametrize("kill_at", ["before-blobs", "after-blobs", "after-manifest",
                                     "after-announcement"])
def test_producer_killed_mid_cycle_then_restarted(tmp_path: Path, kill_at: str) -> None:
    store_dir, work = tmp_path / "store", tmp_path / "work"
    store = feedkit.open_store(str(store_dir))
    code, out, err = run_producer(store_dir, work, 1, 2)
    assert code == 0, err
    gen_of = {o["version"]: o["gen"] for o in out}
    v2 = out[-1]["version"]
    consumer = feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                                poll_interval=0.1, max_backoff=0.4).open()
    threads = ThreadReaders(consumer)
    proc = ProcessReader(str(store_dir), tmp_path / "cache", tmp_path)
    reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
    try:
        wait_until(lambda: serving(reports, v2), 60, f"consumers serving {v2}")
        code, out, _ = run_producer(store_dir, work, 3, kill_at=kill_at)
        assert code == -9 and out == []  # killed before it could report a version
        killed_version = announced(store)
        if kill_at == "after-announcement":
            assert killed_version != v2  # it did announce: consumers move to it
            gen_of[killed_version] = 3
            wait_until(lambda: serving(reports, killed_version), 30, "consumers on gen 3")
        else:
            assert killed_version == v2
            time.sleep(0.3)
            assert consumer.version == v2 and serving(reports, v2)
        # Restarted with the same work dir: gen 3 again (nothing to do if it was announced),
        # then gen 4.
        code, out, err = run_producer(store_dir, work, 3, 4)
        assert code == 0, err
        assert (out[0]["version"] is None) == (kill_at == "after-announcement")
        gen_of.update({o["version"]: o["gen"] for o in out if o["version"] is not None})
        final = out[-1]["version"]
        wait_until(lambda: serving(reports, final), 30, f"consumers serving {final}")
    finally:
        thread_reports = threads.stop()
        proc_report = proc.stop()
        consumer.close()
    check_reports([*thread_reports, proc_report], gen_of)
    # One chain through every version published and announced, in order, no orphan in it.
    assert chain(store, final) == sorted(gen_of)
    assert len(set(gen_of.values())) == len(gen_of)  # no generation announced twice
    for r in [*thread_reports, proc_report]:
        assert set(r.versions) <= set(gen_of)
    # A fresh consumer agrees with the followers.
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "fresh", watch=False) as fresh:
        assert fresh.version == final and fresh.get(0).gen == 4


def test_two_producers_at_once_one_wins_the_other_is_fenced(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = feedkit.open_store(str(store_dir))
    code, out, err = run_producer(store_dir, tmp_path / "work-a", 1)
    assert code == 0, err
    gen_of = {out[0]["version"]: 1}
    consumer = feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                                poll_interval=0.1, max_backoff=0.4).open()
    threads = ThreadReaders(consumer)
    proc = ProcessReader(str(store_dir), tmp_path / "cache", tmp_path)
    reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
    outcomes = []
    try:
        for rnd in range(4):
            # Both restore the announced version, then publish different generations at
            # the same moment: exactly one compare-and-swap of the announcement wins.
            start_at = time.time() + 1.5
            gens = (10 * rnd + 2, 10 * rnd + 3)
            procs = [run_producer(store_dir, tmp_path / f"work-{i}-{rnd}", g, start_at=start_at,
                                  wait=False) for i, g in enumerate(gens)]
            results = []
            for p in procs:
                o, e = p.communicate(timeout=120)
                results.append((p.returncode, [json.loads(line) for line in o.splitlines()], e))
            codes = sorted(r[0] for r in results)
            assert codes == [0, 3], results
            winner = next(r[1][0] for r in results if r[0] == 0)
            loser = next(r[1][0] for r in results if r[0] == 3)
            assert "another producer" in loser["fenced"] or "moved" in loser["fenced"]
            outcomes.append((winner["gen"], loser["gen"]))
            gen_of[winner["version"]] = winner["gen"]
            assert announced(store) == winner["version"]
            wait_until(lambda v=winner["version"]: serving(reports, v), 30,
                       f"consumers serving round {rnd}'s winner")
    finally:
        thread_reports = threads.stop()
        proc_report = proc.stop()
        consumer.close()
    check_reports([*thread_reports, proc_report], gen_of)
    assert chain(store, max(gen_of)) == sorted(gen_of)  # only winners are announced
    # Each loser wrote blobs and a manifest the announcement never named: orphans, unseen.
    manifests = [v for k in store.list(names.manifests_prefix(FEED))
                 if (v := names.parse_manifest_key(k)) is not None]
    assert len(manifests) >= len(gen_of)


# Kill points that each leave their own kind of leftover in the work dir: spill; the
# state, delta and blob files of a version never announced (at later and later steps);
# the previous version's state (the announcement moved); a half-done restore.
KILLS = {"mid-encode": ".spill.", "before-blobs": ".delta.zst", "after-blobs": ".delta",
         "after-manifest": ".state", "after-announcement": ".state", "mid-restore": "restore/"}


def work_files(work: Path) -> dict[str, int]:
    """Every file under ``work`` (relative name -> size)."""
    return {str(p.relative_to(work)): p.stat().st_size for p in work.rglob("*") if p.is_file()}


def test_killed_producers_leave_nothing_the_next_one_does_not_clean(tmp_path: Path) -> None:
    store_dir, work = tmp_path / "store", tmp_path / "work"
    store = feedkit.open_store(str(store_dir))
    code, _, err = run_producer(store_dir, work, 1)
    assert code == 0, err
    for gen, (kill_at, mark) in enumerate(KILLS.items(), start=2):
        if kill_at == "mid-restore":  # the announced state lost: restored from the store
            for path in [*work.glob("*.state"), *work.glob("*.overlay")]:
                path.unlink()
        code, out, err = run_producer(store_dir, work, gen, kill_at=kill_at)
        assert code == -9 and out == [], (kill_at, err)
        needed = f"{announced(store):020d}.state"
        left = [n for n in work_files(work) if n != needed]
        # Each kill left files no announced version needs (the next producer removes them).
        assert any(mark in n for n in left), (kill_at, left)

    # The next producer restores the announced version and removes the rest.
    final_gen = len(KILLS) + 2
    code, out, err = run_producer(store_dir, work, final_gen)
    assert code == 0, err
    version = announced(store)
    assert out == [{"gen": final_gen, "version": version}]
    # A clean work dir to compare with: a fresh producer that restores the same version.
    code, out, err = run_producer(store_dir, tmp_path / "clean", final_gen)
    assert code == 0 and out == [{"gen": final_gen, "version": None}], err
    clean, after = work_files(tmp_path / "clean"), work_files(work)
    assert set(clean) == {f"{version:020d}.state"}
    # The producer that went on holds the announced state's files alone: a base, or (a
    # small change) its overlay and the base that overlay sits on.
    overlay = work / f"{version:020d}.overlay"
    base = (f"{StateFile(overlay).header['base_version']:020d}.state" if overlay.exists()
            else f"{version:020d}.state")
    assert set(after) == {base} | ({overlay.name} if overlay.exists() else set())
    assert sum(after.values()) <= 2 * sum(clean.values())
