"""What the service tests share: the feed's versions and their truth, a server process
group started and stopped by the test, a load that records every answer, and the shared
pages of the workers read from ``/proc/PID/smaps``."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

import feedkit
from feedkit import names
from feedkit.manifest import Announcement

HERE = Path(__file__).resolve().parent
FEED = "service.titles"

# Big enough that the state file (about 36 MB) dominates what a worker maps.
RECORDS = 150_000
HOT = 2_000          # keys 0..HOT-1 change in every generation
EXTRA = RECORDS      # key EXTRA + g exists in generation g only (added, then deleted)
GENERATIONS = 4      # the first version, then 3 published while the workers serve


@cache
def table(gen: int) -> pa.Table:
    """Generation ``gen`` of the feed: every record says which generation it belongs to."""
    ids = [*range(RECORDS), EXTRA + gen]
    hot = [i < HOT or i >= EXTRA for i in ids]
    return pa.table({
        "key": pa.array(ids, pa.int64()),
        "gen": pa.array([gen if h else 0 for h in hot], pa.int64()),
        "value": [f"{i}:{gen}" if h else f"{i}:static" for i, h in zip(ids, hot, strict=True)],
        "payload": [f"x{i:07d}" * 20 for i in ids],
    })


def truth(key: int, gen: int) -> dict[str, Any] | None:
    """The record of ``key`` in generation ``gen`` (None: absent), as ``_asdict()`` has it."""
    if key >= EXTRA:
        if key != EXTRA + gen:
            return None
    elif not 0 <= key < RECORDS:
        return None
    hot = key < HOT or key >= EXTRA
    return {"key": key, "gen": gen if hot else 0,
            "value": f"{key}:{gen}" if hot else f"{key}:static", "payload": f"x{key:07d}" * 20}


def random_key(rng: random.Random) -> int:
    """Mostly keys that change, some that never do, the added/deleted ones, a missing one."""
    r = rng.random()
    if r < 0.6:
        return rng.randrange(HOT)
    if r < 0.85:
        return rng.randrange(HOT, RECORDS)
    if r < 0.97:
        return EXTRA + rng.randrange(GENERATIONS)
    return -1 - rng.randrange(1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """One request on a new connection (so that the server hands it to any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# -- processes ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process, None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


class Server:
    """A server (its own process group) on 127.0.0.1:``port``, logging to ``log``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int, *,
                 ready_path: str = "/health") -> None:
        self.argv, self.port, self.log, self.ready_path = argv, port, log, ready_path
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the master leads its own group

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log: {exc})"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``ready_path`` answers 200 (one worker is ready)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[2]} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if get_json(self.port, self.ready_path, timeout=2.0)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[2]} not ready in {timeout:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def children(self) -> set[int]:
        """Live children of the master, with what multiprocessing adds left out."""
        out = set()
        for pid in _all_pids():
            st = _stat(pid)
            if st and st[1] == self.proc.pid and st[0] != "Z" and \
                    "resource_tracker" not in cmdline(pid):
                out.add(pid)
        return out

    def group(self) -> set[int]:
        """Live (not zombie) processes of the server's process group."""
        out = set()
        for pid in _all_pids():
            st = _stat(pid)
            if st and st[2] == self.pgid and st[0] != "Z":
                out.add(pid)
        return out

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group; returns the master's exit code (None
        when it had to be killed). Leaves no process of the group behind."""
        code: int | None = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.proc.returncode
        deadline = time.monotonic() + 10
        while self.group() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.proc.poll() is None or self.group():
            code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            deadline = time.monotonic() + 10
            while self.group() and time.monotonic() < deadline:
                time.sleep(0.1)
        return code


# -- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float           # time.monotonic() when the answer had arrived
    pid: int
    seq: int
    version: int
    key: int
    record: dict[str, Any] | None


class Load:
    """``threads`` clients asking ``/get`` for random keys on new connections, until
    stopped; every answer is kept, every failure counted."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        while not self._stop.is_set():
            key = random_key(rng)
            try:
                status, body = get_json(self.port, f"/get?key={key}")
            except (OSError, ValueError) as exc:
                self.errors.append(f"key {key}: {exc!r}")
                time.sleep(0.05)
                continue
            if status != 200:
                self.errors.append(f"key {key}: HTTP {status} {body}")
                continue
            self.samples.append(Sample(time.monotonic(), body["pid"], body["seq"],
                                       body["version"], body["key"], body["record"]))

    def pids(self) -> set[int]:
        return {s.pid for s in list(self.samples)}

    def wait_pids(self, n: int, timeout: float) -> set[int]:
        """Until answers came from ``n`` workers (or ``timeout``): the workers' pids."""
        deadline = time.monotonic() + timeout
        while len(self.pids()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.pids()

    def first_serving(self, version: int, pids: set[int], since: float,
                      timeout: float) -> dict[int, float | None]:
        """For each worker, the time of its first answer from ``version`` (or a later
        one) after ``since``; None for those that had not served it by ``timeout``."""
        deadline = time.monotonic() + timeout
        found: dict[int, float] = {}
        seen = 0
        while True:
            samples = self.samples[seen:]
            seen += len(samples)
            for s in samples:
                if s.pid in pids and s.pid not in found and s.version >= version and \
                        s.at >= since:
                    found[s.pid] = s.at
            if len(found) == len(pids) or time.monotonic() > deadline:
                return {pid: found.get(pid) for pid in pids}
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def ask_every_worker(port: int, path: str, pids: set[int],
                     timeout: float = 30.0) -> dict[int, dict[str, Any]]:
    """``path`` asked until every worker in ``pids`` answered once (or ``timeout``)."""
    answers: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def run() -> None:
        while time.monotonic() < deadline:
            with lock:
                if pids <= answers.keys():
                    return
            with contextlib.suppress(OSError, ValueError):
                status, body = get_json(port, path, timeout=timeout)
                with lock:
                    answers.setdefault(body["pid"], {"status": status, **body})

    threads = [threading.Thread(target=run, daemon=True) for _ in range(2 * len(pids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return answers


# -- shared pages ---------------------------------------------------------------------------


def mapped_files(pid: int, folder: Path) -> dict[str, dict[str, int]]:
    """Rss and Pss (bytes) of each file under ``folder`` that ``pid`` maps, by path
    (`` (deleted)`` kept when the file was removed while mapped)."""
    out: dict[str, dict[str, int]] = {}
    prefix = str(folder.resolve())
    current: dict[str, int] | None = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
                path = head[5].strip() if len(head) == 6 else ""
                current = out.setdefault(path, {"rss": 0, "pss": 0}) \
                    if path.startswith(prefix) else None
            elif current is not None and head[0] in ("Rss:", "Pss:"):
                current[head[0][:-1].lower()] += int(head[1]) * 1024
    return out


def rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in bytes: Rss, Pss, Pss_Anon, Anonymous, ..."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0][:-1]] = int(parts[1]) * 1024
    return out


def announced_at_monotonic(store: feedkit.BlobStore, feed: str) -> float:
    """When the announcement was last moved, on the ``time.monotonic()`` clock."""
    key = names.announcement_key(feed)
    announcement = Announcement.from_bytes(store.get_bytes(key), key)
    at = dt.datetime.fromisoformat(announcement.announced_at)
    wall = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()
    return time.monotonic() - (time.time() - wall)
