"""The fault suite's harness: a feed whose every answer can be checked, readers that check
every answer they get (threads here, and a separate process), and a producer whose
uploads pass through a fault before consumers can see them.

Truth. Generation ``g`` of the feed holds the keys ``0 <= k < KEYS`` with
``present(g, k)``; record ``k`` is ``(k, u, f"g{u}:k{k}")`` with ``u = changed_at(g, k)``
(``u = g`` for key 0). Key 0 is in every generation, so a reader learns the generation of the version it holds from one lookup
and then checks every other answer of that version (presence and content) against it.
The test knows which version carries which generation; readers report what they saw,
and :func:`check_reports` compares.

Faults in transit. The producer (a real :class:`feedkit.Producer`) publishes to a
staging store; :meth:`Feed.promote` copies the new version's objects into the real
store that consumers follow, applying a fault to one of them (flip a byte, truncate,
drop, or rewrite a manifest so it lies), then moves the real announcement with
compare-and-swap, as the producer would. Consumers therefore meet the fault exactly as
they would meet a damaged upload, and the good bytes are kept for :meth:`Feed.repair`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

import feedkit
from feedkit import names
from feedkit.manifest import Announcement

KEYS = 300
FEED = "faults"
ROOT = Path(__file__).resolve().parents[2]


def present(gen: int, key: int) -> bool:
    return key == 0 or (key + 3 * gen) % 50 != 0


def changed_at(gen: int, key: int) -> int:
    """The generation whose content key ``key`` holds at ``gen``: a tenth of the keys (and
    key 0) change with each generation, so a version is a small delta from the last."""
    return gen if key == 0 else gen - (key + gen) % 10


def expected_title(gen: int, key: int) -> str:
    return f"g{changed_at(gen, key)}:k{key}"


def table(gen: int, extra: bool = False) -> pa.Table:
    """Generation ``gen``; ``extra`` adds a column (a new schema: a snapshot, no delta)."""
    keys = [k for k in range(KEYS) if present(gen, k)]
    cols: dict[str, Any] = {"k": pa.array(keys, pa.int64()),
                            "gen": pa.array([changed_at(gen, k) for k in keys], pa.int64()),
                            "title": [expected_title(gen, k) for k in keys]}
    if extra:
        cols["extra"] = [f"x{k}" for k in keys]
    return pa.table(cols)


# -- checking readers ---------------------------------------------------------------------


@dataclass
class ReaderReport:
    lookups: int = 0
    wrong: list[str] = field(default_factory=list)
    gen_of: dict[int, int] = field(default_factory=dict)  # version -> generation seen
    versions: list[int] = field(default_factory=list)  # distinct versions, in the order seen
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"lookups": self.lookups, "wrong": self.wrong[:20], "wrong_count": len(self.wrong),
                "gen_of": {str(v): g for v, g in self.gen_of.items()},
                "versions": self.versions, "last_error": self.last_error}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ReaderReport:
        r = cls(doc["lookups"], list(doc["wrong"]), {int(v): g for v, g in doc["gen_of"].items()},
                list(doc["versions"]), doc["last_error"])
        r.wrong += ["(more)"] * (doc["wrong_count"] - len(doc["wrong"]))
        return r


def check_once(feed: feedkit.Consumer, rng: random.Random, report: ReaderReport) -> None:
    """One "request": a view, its generation from key 0, then 20 random keys checked."""
    with feed.view() as view:
        version = view.version
        first = view.get(0)
        if first is None:
            report.wrong.append(f"version {version}: key 0 absent")
            return
        gen = first.gen
        if report.gen_of.setdefault(version, gen) != gen:
            report.wrong.append(f"version {version}: generation {gen}, before "
                                f"{report.gen_of[version]}")
        if not report.versions or report.versions[-1] != version:
            report.versions.append(version)
        keys = [rng.randrange(KEYS) for _ in range(20)]
        for key in keys:
            rec = view.get(key)
            if not present(gen, key):
                if rec is not None:
                    report.wrong.append(f"version {version}: {key} should be absent, got {rec}")
            elif (rec is None or rec.gen != changed_at(gen, key)
                  or rec.title != expected_title(gen, key)):
                report.wrong.append(f"version {version}: {key} -> {rec}")
        many = view.get_many(keys)
        if [r.title if r else None for r in many] != [
                expected_title(gen, k) if present(gen, k) else None for k in keys]:
            report.wrong.append(f"version {version}: get_many mismatch")
        report.lookups += 2 * len(keys) + 1
    err = feed.last_error
    report.last_error = None if err is None else f"{type(err).__name__}: {err}"


class ThreadReaders:
    """``n`` threads checking answers from one consumer until stopped."""

    def __init__(self, feed: feedkit.Consumer, n: int = 2) -> None:
        self.feed = feed
        self.reports = [ReaderReport() for _ in range(n)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        while not self._stop.is_set():
            check_once(self.feed, rng, self.reports[i])
            time.sleep(0.001)

    def stop(self) -> list[ReaderReport]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        return self.reports


class ProcessReader:
    """A consumer in a separate process (``reader_process.py``) checking answers; it
    writes its report to a JSON file every 50 ms and exits when the stop file appears."""

    def __init__(self, store_url: str, cache_dir: Path, work: Path, name: str = "proc",
                 endpoint_url: str | None = None) -> None:
        self.out = work / f"{name}.json"
        self.stop_file = work / f"{name}.stop"
        self.log = work / f"{name}.log"
        args = [sys.executable, str(Path(__file__).with_name("reader_process.py")), store_url,
                str(cache_dir), str(self.out), str(self.stop_file)]
        if endpoint_url:
            args.append(endpoint_url)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=ROOT)

    def report(self) -> ReaderReport | None:
        try:
            return ReaderReport.from_json(json.loads(self.out.read_text()))
        except (OSError, ValueError):
            return None

    def stop(self) -> ReaderReport:
        self.stop_file.touch()
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        report = self.report()
        assert code == 0 and report is not None, self.log.read_text()[-3000:]
        return report


def serving(reports: Callable[[], list[ReaderReport | None]], version: int) -> bool:
    return all(r is not None and r.versions and r.versions[-1] == version for r in reports())


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def check_reports(reports: list[ReaderReport], gen_of: dict[int, int]) -> int:
    """Zero wrong answers, every version seen carries the generation published under it,
    and versions were seen in increasing order (never back, never a skipped one counted
    twice). Returns the lookups done."""
    for r in reports:
        assert not r.wrong, r.wrong[:5]
        for version, gen in r.gen_of.items():
            assert gen_of.get(version) == gen, (version, gen, gen_of)
        assert r.versions == sorted(r.versions), r.versions
    return sum(r.lookups for r in reports)


# -- a producer whose uploads pass through a fault -----------------------------------------


Fault = Callable[[str, bytes], bytes | None]  # (object name, good bytes) -> bytes to store, None: drop


def flip(at: float = 0.5) -> Fault:
    def apply(key: str, data: bytes) -> bytes:
        i = int(len(data) * at)
        return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]
    return apply


def truncate(keep: float = 0.5) -> Fault:
    return lambda key, data: data[: int(len(data) * keep)]


def drop() -> Fault:
    return lambda key, data: None


def rewrite_manifest(edit: Callable[[dict[str, Any]], None]) -> Fault:
    def apply(key: str, data: bytes) -> bytes:
        doc = json.loads(data)
        edit(doc)
        return json.dumps(doc, indent=1, sort_keys=True).encode()
    return apply


class Feed:
    """The real store consumers follow, and a producer publishing through a staging store."""

    def __init__(self, tmp: Path, *, snapshot_every: int = 100,
                 store: feedkit.BlobStore | None = None) -> None:
        self.tmp = tmp
        self.store = store or feedkit.open_store(f"file://{tmp}/store")
        self.url = self.store.url
        self.staging = feedkit.open_store(f"file://{tmp}/staging")
        self.producer = feedkit.Producer(self.staging, feed=FEED, primary_key="k",
                                         snapshot_every=snapshot_every, work_dir=tmp / "work")
        self.gen_of: dict[int, int] = {}
        self.good: dict[str, bytes] = {}  # objects stored damaged or not at all: their good bytes
        self._copied: set[str] = set()

    def publish(self, gen: int, *, extra: bool = False, target: str | None = None,
                fault: Fault | None = None) -> int:
        """Publish generation ``gen`` and promote it; ``target`` ("snapshot", "delta",
        "manifest") names the object ``fault`` applies to."""
        version = self.producer.publish(table(gen, extra))
        assert version is not None
        self.gen_of[version] = gen
        self.promote(version, target, fault)
        return version

    def objects(self, version: int) -> dict[str, str]:
        m = self.producer.manifest
        assert m is not None and m.version == version
        out = {"manifest": names.manifest_key(FEED, version)}
        if m.snapshot is not None:
            out["snapshot"] = m.snapshot.key
        if m.delta is not None:
            out["delta"] = m.delta.key
        return out

    def promote(self, version: int, target: str | None = None, fault: Fault | None = None) -> None:
        objects = self.objects(version)
        if target is not None:
            assert target in objects, f"version {version} has no {target}: {objects}"
        for kind in ("delta", "snapshot", "manifest"):  # blobs first, as the producer does
            key = objects.get(kind)
            if key is None:
                continue
            data = self.staging.get_bytes(key)
            stored = fault(key, data) if (fault is not None and kind == target) else data
            if stored != data:
                self.good[key] = data
            if stored is not None:
                self.store.put_new_bytes(key, stored)
        self.announce(version)

    def announce(self, version: int) -> None:
        """Move the real announcement to ``version`` (compare-and-swap, as a producer)."""
        key = names.announcement_key(FEED)
        try:
            _, etag = self.store.read_if_changed(key) or (b"", None)
        except feedkit.BlobNotFoundError:
            etag = None
        doc = Announcement(FEED, version, producer="fault-harness")
        self.store.replace_if_match(key, doc.to_bytes(), etag)

    def repair(self) -> None:
        """Put the good bytes back in place of every damaged or dropped object."""
        for key, data in self.good.items():
            self.store.delete(key)
            self.store.put_new_bytes(key, data)
        self.good.clear()

    def close(self) -> None:
        self.producer.close()
        self.store.close()
        self.staging.close()
