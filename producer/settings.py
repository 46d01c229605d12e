"""One frozen, validated description of how a feed is produced.

``Producer``'s keyword arguments and the daemon's ``[[feed]]`` entries are the same
settings: :class:`ProducerSettings` checks every rule once, when it is made, and the
daemon's :class:`~feedkit.producer.config.FeedConfig` extends it with what only the
daemon needs (the table, the columns, the poll interval, the validators by name). A
broken rule is a :class:`SettingsError` naming the feed and the setting; the daemon's
config loader adds the file and the TOML key to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import zstandard

from feedkit import names
from feedkit.errors import ConfigurationError
from feedkit.format import FORMATS

__all__ = ["MAX_COMPRESSION_LEVEL", "MIN_COMPRESSION_LEVEL", "ProducerSettings", "SettingsError",
           "compression_level_problem"]

# zstd's whole range of levels: its negative "fast" levels down to ZSTD_minCLevel()
# (-2**17; python-zstandard does not export it) trade ratio for speed, and are worth it
# for large feeds; 0 means zstd's default (3).
MIN_COMPRESSION_LEVEL = -(1 << 17)
MAX_COMPRESSION_LEVEL = zstandard.MAX_COMPRESSION_LEVEL


def compression_level_problem(level: object) -> str | None:
    """What is wrong with a zstd ``level`` (None: nothing), for a message."""
    if type(level) is not int or not MIN_COMPRESSION_LEVEL <= level <= MAX_COMPRESSION_LEVEL:
        return (f"{level!r} is outside zstd's range {MIN_COMPRESSION_LEVEL}.."
                f"{MAX_COMPRESSION_LEVEL} (an integer; negative levels are zstd's fast modes, "
                "0 its default)")
    return None


class SettingsError(ConfigurationError):
    """A setting breaks its rule: ``setting`` names it, ``problem`` says what is wrong."""

    def __init__(self, feed: str, setting: str, problem: str) -> None:
        super().__init__(f"feed {feed!r}: {setting} {problem}")
        self.feed, self.setting, self.problem = feed, setting, problem


def _number(value: object) -> bool:
    return type(value) in (int, float) and not math.isnan(value)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ProducerSettings:
    """How one feed is produced (see :class:`~feedkit.producer.Producer` for each setting).

    ``primary_key`` may be given as one column name; it is kept as a tuple. ``indexes``
    keeps the first of repeated names.

    Raises:
        SettingsError: a setting breaks its rule (the message names the feed and it).
        ConfigurationError: an invalid feed name.
    """

    feed: str
    primary_key: tuple[str, ...]
    indexes: tuple[str, ...] = ()
    snapshot_every: int = 10
    max_delta_ratio: float = 0.5
    max_change_ratio: float | None = None
    min_records: int = 0
    compression_level: int = 3
    batch_rows: int = 65536
    allow_unsigned: bool = False
    format: int = 2

    def __post_init__(self) -> None:
        feed = names.validate_feed(self.feed)

        def bad(setting: str, problem: str) -> SettingsError:
            return SettingsError(feed, setting, problem)

        key: Any = self.primary_key
        if key is None:
            raise bad("primary_key", "is required: name the key column, or a tuple of "
                                     "columns for a composite key")
        try:
            key = (key,) if isinstance(key, str) else tuple(key)
        except TypeError:
            key = ()
        if not key or not all(isinstance(c, str) and c for c in key):
            raise bad("primary_key", f"must name one or more columns, not {self.primary_key!r}")
        if len(set(key)) != len(key):
            raise bad("primary_key", f"repeats a column: {key}")
        object.__setattr__(self, "primary_key", key)
        indexes = tuple(dict.fromkeys(self.indexes))
        if not all(isinstance(c, str) and c for c in indexes):
            raise bad("indexes", f"must name columns, not {self.indexes!r}")
        object.__setattr__(self, "indexes", indexes)
        for setting in ("snapshot_every", "batch_rows"):
            value = getattr(self, setting)
            if type(value) is not int or value < 1:
                raise bad(setting, f"must be >= 1, not {value!r}")
        if type(self.min_records) is not int or self.min_records < 0:
            raise bad("min_records", f"must be >= 0, not {self.min_records!r}")
        ratio = self.max_change_ratio
        if ratio is not None and not (_number(ratio) and ratio >= 0):
            raise bad("max_change_ratio", f"must be >= 0, not {ratio!r}")
        if not (_number(self.max_delta_ratio) and self.max_delta_ratio >= 0):
            raise bad("max_delta_ratio", f"must be >= 0, not {self.max_delta_ratio!r}")
        problem = compression_level_problem(self.compression_level)
        if problem:
            raise bad("compression_level", problem)
        if type(self.format) is not int or self.format not in FORMATS:
            raise bad("format", f"must be one of {', '.join(map(str, FORMATS))} (the formats "
                                f"feedkit writes), not {self.format!r}")
        if type(self.allow_unsigned) is not bool:
            raise bad("allow_unsigned", f"must be true or false, not {self.allow_unsigned!r}")
