"""What a producer's cycles did: the counters behind ``Producer.metrics()``.

A cycle runs on one thread and ``metrics()`` may be read from another (a Prometheus
scrape), so updates and the copy out hold one small lock. The daemon keeps one
``CycleStats`` per feed across the producers it makes (it makes a new one after being
fenced), so its counters never go back to zero.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from feedkit.errors import FeedPinnedError, RefusedError, ValidationError
from feedkit.metrics import Durations

if TYPE_CHECKING:
    from .producer import CycleReport

__all__ = ["OUTCOMES", "CycleStats"]

OUTCOMES = ("published", "unchanged", "refused", "pinned", "failed")
TABLE_RULE = "table"  # refusals before the validators: null or duplicate keys, bad columns


class _Figure:
    """A running total and the last value."""

    __slots__ = ("last", "total")

    def __init__(self) -> None:
        self.total = self.last = 0

    def add(self, n: int) -> None:
        self.total += n
        self.last = n


class CycleStats:
    """Cycle outcomes, step durations, records, bytes and refusals of one feed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cycles = dict.fromkeys(OUTCOMES, 0)
        self.steps: dict[str, Durations] = {}
        self.figures = {k: _Figure() for k in ("rows_read", "records_added", "records_changed",
                                               "records_removed", "bytes_written")}
        self.refusals: Counter[str] = Counter()
        self.last_outcome: str | None = None
        self.last_error: str | None = None
        self.last_published_version: int | None = None
        self.last_published_time: float | None = None
        self.record_count: int | None = None

    def record(self, report: CycleReport | None, seconds: float,
               error: BaseException | None = None) -> str:
        """Count one cycle: ``report`` is None when it failed before reading (restore).

        Returns its outcome: ``published``, ``unchanged``, ``refused``, ``pinned`` (an
        operator pinned the feed: nothing published, by intent) or ``failed``.
        """
        if isinstance(error, ValidationError):
            outcome = "refused"
        elif isinstance(error, FeedPinnedError):
            outcome = "pinned"
        elif error is not None:
            outcome = "failed"
        else:
            outcome = "unchanged" if report is None or report.version is None else "published"
        with self.lock:
            self.cycles[outcome] += 1
            self.last_outcome = outcome
            if error is not None and outcome == "failed":
                self.last_error = f"{type(error).__name__}: {error}"
            if isinstance(error, RefusedError) and error.results:
                self.refusals.update({getattr(r, "rule", "") or "custom" for r in error.results})
            elif outcome == "refused":
                self.refusals[TABLE_RULE] += 1
            steps = dict(report.seconds) if report is not None else {}
            steps.setdefault("total", seconds)
            for step, s in steps.items():
                self.steps.setdefault(step, Durations()).add(s)
            if report is not None and "encode" in report.seconds:
                self.figures["rows_read"].add(report.rows_read)
            if outcome == "published" and report is not None:
                for key in ("added", "changed", "removed"):
                    self.figures[f"records_{key}"].add(getattr(report, key))
                self.figures["bytes_written"].add(report.bytes_written)
                self.last_published_version = report.version
                self.last_published_time = time.time()
                self.record_count = report.record_count
        return outcome

    def as_dict(self, feed: str, version: int | None = None,
                record_count: int | None = None) -> dict[str, Any]:
        """The metrics dict of :meth:`feedkit.producer.Producer.metrics`.

        ``version`` and ``record_count`` are the producer's current ones (restored or
        published); without them, the last published ones counted here.
        """
        with self.lock:
            out: dict[str, Any] = {
                "feed": feed,
                "version": version if version is not None else self.last_published_version,
                "record_count": record_count if record_count is not None else self.record_count,
                "cycles": dict(self.cycles),
                "last_outcome": self.last_outcome,
                "last_error": self.last_error,
                "step_seconds": {k: d.as_dict() for k, d in self.steps.items()},
                "refusals": dict(self.refusals),
                "last_published_version": self.last_published_version,
                "last_published_time": self.last_published_time,
            }
            out.update({k: {"total": f.total, "last": f.last} for k, f in self.figures.items()})
            return out
