"""``Consumer.health()``: whether a consumer's data can be trusted to be fresh, for a
readiness probe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Health"]


@dataclass(frozen=True)
class Health:
    """A consumer's freshness at one moment. True (``bool(health)``) when ``ok``.

    Attributes:
        ok: open, serving a version, and its last successful check is at most
            ``max_staleness`` seconds old.
        reason: why not ``ok`` (None when ok).
        feed: the feed.
        state: ``new``, ``open`` or ``closed``.
        version: the version served (None when none is).
        announced_version: the version the announcement named at the last read (or, after
            a start from the cache with the store unreachable, the announcement the cache
            folder remembered).
        pinned_version: the version :meth:`Consumer.pin` holds, else None.
        versions_behind: versions published after the served one, up to the announced one
            (None: not known yet).
        seconds_since_check: seconds since the last successful refresh, that is since the
            announcement was last read and the version it asks for was found served (or
            was made so). None: never, in this process or the one it was forked from.
        max_staleness: the limit ``ok`` was judged against.
        last_error: the last refresh failure's message, if the latest refresh failed.
        consecutive_failures: refreshes failed in a row.
        pid: the process this was measured in.
    """

    ok: bool
    reason: str | None
    feed: str
    state: str
    version: int | None
    announced_version: int | None
    pinned_version: int | None
    versions_behind: int | None
    seconds_since_check: float | None
    max_staleness: float
    last_error: str | None
    consecutive_failures: int
    pid: int

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)
