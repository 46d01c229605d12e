"""How fresh a daemon's feed is: Iceberg commit time to announce, and what each cycle read.

Per feed, the daemon's runner tells a :class:`Freshness` what it sees:

- at each check, the table's commits that the feed does not reflect yet (the oldest
  one's commit time is when the feed started to lag: ``pending``);
- each cycle's plan (``append`` / ``files`` / ``full`` / ``none``, and for a full read
  its cause, a short code, and the reason);
- each announce (``announced``): the seconds from the oldest commit it includes to the
  announcement go into a histogram; the feed is caught up.

``staleness_seconds`` is 0 while the feed reflects the table's current snapshot (as of
the last check), else the age of the oldest commit it does not reflect: the time the
table's readers have been ahead of the feed's. A feed the daemon cannot publish
(failing, refused, pinned) goes on growing stale, which is what an alert wants.

Updates and reads hold one small lock: ``metrics()`` may run on a scrape's thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from feedkit.metrics import Histogram

__all__ = ["COMMIT_TO_ANNOUNCE_BUCKETS", "Freshness"]

# seconds; Prometheus adds +Inf
COMMIT_TO_ANNOUNCE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Freshness:
    """The freshness figures of one feed (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: float | None = None  # unix time of the oldest commit not announced
        self._plans: Counter[str] = Counter()
        self._full_reads: Counter[str] = Counter()
        self._last_plan: dict[str, Any] | None = None
        self._latency = Histogram(COMMIT_TO_ANNOUNCE_BUCKETS)
        self._last_latency: float | None = None

    def pending(self, commit_time: float | None) -> None:
        """The table holds commits the feed does not reflect, the oldest made at
        ``commit_time`` (unix seconds; None: the feed is caught up)."""
        with self._lock:
            self._pending = commit_time

    def planned(self, kind: str, cause: str, reason: str) -> None:
        """A cycle read by a plan of ``kind`` (a full read's ``cause`` is counted)."""
        with self._lock:
            self._plans[kind] += 1
            if kind == "full":
                self._full_reads[cause] += 1
            self._last_plan = {"kind": kind, "cause": cause, "reason": reason}

    def announced(self, now: float | None = None) -> float | None:
        """A version reflecting the table's current snapshot was announced (or the table's
        change needed none): returns the seconds from the oldest commit it took in, which
        the histogram counts when a version was announced."""
        now = time.time() if now is None else now
        with self._lock:
            seconds = None if self._pending is None else max(0.0, now - self._pending)
            if seconds is not None:
                self._latency.observe(seconds)
                self._last_latency = seconds
            self._pending = None
            return seconds

    def caught_up(self) -> None:
        """The table's change needed no version (no change to the records)."""
        self.pending(None)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """``staleness_seconds``, ``pending_since``, ``commit_to_announce`` (histogram:
        ``buckets`` {upper bound: cumulative count}, ``count``, ``sum``, ``last``),
        ``plans`` {kind: count}, ``full_reads`` {cause: count}, ``last_plan``."""
        now = time.time() if now is None else now
        with self._lock:
            return {
                "staleness_seconds": 0.0 if self._pending is None
                else max(0.0, now - self._pending),
                "pending_since": self._pending,
                "commit_to_announce": dict(self._latency.as_dict(), last=self._last_latency),
                "plans": dict(self._plans),
                "full_reads": dict(self._full_reads),
                "last_plan": dict(self._last_plan) if self._last_plan else None,
            }
