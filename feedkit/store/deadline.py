"""One total time budget for a block of store operations, per thread.

A refresh reads the announcement, a manifest or two and some blobs, each with retries;
a timeout per request bounds none of that in total. ``with deadline(30, what=...)``
sets an absolute (monotonic) deadline for the current thread, and every store operation
run inside the block honours it: no attempt starts after it, each attempt's timeouts
are capped by the time left, retries stop at it, and a download checks it between
chunks. An operation that runs out of time raises :class:`StoreTimeoutError`.

    with deadline(self.refresh_timeout, what=f"feed {feed!r}: refresh"):
        ...  # every S3 call in here ends by the deadline

Deadlines nest, and the earlier one wins: an inner block can shorten the budget, never
extend it. The deadline belongs to the thread that set it; work handed to another thread
does not inherit it (pass :func:`remaining` along and open a ``deadline`` there).

This module imports nothing heavy: consumers import it on their lookup path.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from feedkit.errors import ConfigurationError, StoreTimeoutError

__all__ = ["Deadline", "StoreTimeoutError", "check", "current", "deadline", "remaining"]


@dataclass(frozen=True)
class Deadline:
    """An active deadline: ``at`` on the :func:`time.monotonic` clock, the ``seconds``
    it was opened with, and ``what`` it bounds (for error messages)."""

    at: float
    seconds: float
    what: str

    def remaining(self) -> float:
        """Seconds left, 0.0 once it has passed."""
        return max(0.0, self.at - time.monotonic())

    def error(self, what: str, detail: str = "") -> StoreTimeoutError:
        """The error for ``what`` running out of this deadline's time."""
        tail = f" ({detail})" if detail else ""
        return StoreTimeoutError(f"{what}: the deadline of {self.what} ({self.seconds:g} s) "
                                 f"passed{tail}")


class _Local(threading.local):
    current: Deadline | None = None


_local = _Local()


@contextlib.contextmanager
def deadline(seconds: float | None, what: str = "the operation") -> Iterator[Deadline | None]:
    """Bound everything the block does in this thread to ``seconds`` from now.

    Nested deadlines keep the earlier one: an inner ``deadline(60)`` inside an outer
    ``deadline(5)`` still ends at the outer one (and errors name the outer ``what``).

    Args:
        seconds: the budget; None (or infinity) sets no deadline of its own.
        what: what is bounded, for messages: ``"feed 'titles': refresh"``.

    Yields:
        The deadline now in force (None when there is none).

    Raises:
        ConfigurationError: ``seconds`` is zero, negative or NaN.
    """
    outer = _local.current
    if seconds is None or seconds == math.inf:
        yield outer
        return
    if not seconds > 0:  # also NaN
        raise ConfigurationError(f"{what}: a deadline must be a positive number of seconds, "
                                 f"not {seconds!r}")
    mine = Deadline(time.monotonic() + seconds, float(seconds), what)
    active = outer if outer is not None and outer.at <= mine.at else mine
    _local.current = active
    try:
        yield active
    finally:
        _local.current = outer


def current() -> Deadline | None:
    """The deadline in force in this thread, or None."""
    return _local.current


def remaining() -> float | None:
    """Seconds left before this thread's deadline (0.0 once passed); None: no deadline."""
    active = _local.current
    return None if active is None else active.remaining()


def check(what: str) -> None:
    """Raise when this thread's deadline has passed; do nothing without one.

    Args:
        what: the operation about to run or continue, for the message:
            ``"store s3://bucket: reading s3://bucket/titles/announced.json"``.

    Raises:
        StoreTimeoutError: the deadline has passed.
    """
    active = _local.current
    if active is not None and active.remaining() <= 0:
        raise active.error(what)
