"""What a consumer's refreshes and lookups did: the counters behind ``Consumer.metrics()``.

The refresher thread writes them and any thread reads them, so every update and the
read that copies them out hold one small lock (never the consumer's refresh lock: a
scrape must not wait for a download).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from feedkit.metrics import Durations

__all__ = ["RefreshStats"]


class RefreshStats:
    """Refresh outcomes, swap durations, listener errors and get_many/find calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.successes = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.updates = 0
        self.listener_errors = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.last_success_time: float | None = None
        self._success_monotonic: float | None = None  # for ages: wall clocks jump
        self.last_update_time: float | None = None
        self.durations = Durations()
        self.get_many_calls = 0
        self.get_many_keys = 0
        self.find_calls = 0

    def succeeded(self) -> None:
        with self.lock:
            self.successes += 1
            self.consecutive_failures = 0
            self.last_success_time = time.time()
            self._success_monotonic = time.monotonic()

    def since_success(self) -> float | None:
        """Seconds since the last success (CLOCK_MONOTONIC is system-wide, so this holds
        in a forked child too), None before one."""
        at = self._success_monotonic
        return None if at is None else max(0.0, time.monotonic() - at)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held this one)."""
        self.lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            self.consecutive_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_error_time = time.time()

    def updated(self, seconds: float) -> None:
        """A new version is served, ``seconds`` after its refresh started."""
        with self.lock:
            self.updates += 1
            self.durations.add(seconds)
            self.last_update_time = time.time()

    def listener_failed(self) -> None:
        with self.lock:
            self.listener_errors += 1

    def many(self, keys: int) -> None:
        with self.lock:
            self.get_many_calls += 1
            self.get_many_keys += keys

    def found(self) -> None:
        with self.lock:
            self.find_calls += 1

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "refresh_successes": self.successes,
                "refresh_failures": self.failures,
                "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error,
                "last_error_time": self.last_error_time,
                "last_success_time": self.last_success_time,
                "updates": self.updates,
                "last_update_time": self.last_update_time,
                "refresh_seconds": self.durations.as_dict(),
                "listener_errors": self.listener_errors,
                "get_many_calls": self.get_many_calls,
                "get_many_keys": self.get_many_keys,
                "find_calls": self.find_calls,
            }
