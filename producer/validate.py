"""Validators: rules a new state must pass before it is announced.

A validator is a callable taking a :class:`CycleSummary` and returning a
:class:`ValidationResult` (Hollow's habit: report, do not throw from deep inside).
The producer runs every validator after the new state is built and before any
blob is uploaded; one failure refuses the cycle with a :class:`RefusedError` that
lists every failed result. Key rules (unique, non-null keys) are not validators:
they are checked while encoding and no flag lets a table past them.

Built in: :class:`MaxChangeRatio` and :class:`MinRecords`, the threshold rules that
``publish(force=True)`` (``feedkit-producer once --force``) skips. Custom validators
are named ``"package.module:function"`` in the daemon's config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from feedkit.errors import ConfigurationError

if TYPE_CHECKING:
    from feedkit.state import State

__all__ = [
    "CycleSummary",
    "MaxChangeRatio",
    "MinRecords",
    "ValidationResult",
    "Validator",
    "load_validator",
]


@dataclass(frozen=True)
class ValidationResult:
    """What one validator found: passed or not, a message, and the figures behind it."""

    passed: bool
    message: str = ""
    rule: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, message: str = "", **details: Any) -> ValidationResult:
        return cls(True, message, details=details)

    @classmethod
    def failed(cls, message: str, **details: Any) -> ValidationResult:
        return cls(False, message, details=details)


@dataclass(frozen=True)
class CycleSummary:
    """The candidate version a validator judges.

    ``state`` answers lookups on the new state (``get``, ``[]``, ``in``, ``find``, ``len``)
    exactly as a consumer would. ``previous_record_count`` is None for a feed's first
    version.
    """

    feed: str
    version: int
    previous_version: int | None
    record_count: int
    previous_record_count: int | None
    added: int
    changed: int
    removed: int
    source: dict[str, Any] | None
    state: State

    @property
    def change_ratio(self) -> float:
        """Added, changed and removed records over the previous record count.

        0.0 for a feed's first version and after an empty one: a share of no records is
        not defined (the count is for :class:`MinRecords` to judge).
        """
        if not self.previous_record_count:
            return 0.0
        return (self.added + self.changed + self.removed) / self.previous_record_count


Validator = Callable[[CycleSummary], "ValidationResult | bool"]


class MaxChangeRatio:
    """Refuse a version that adds, changes or removes more than ``limit`` of the records.

    The share is taken of the previous version's record count. A feed's first version
    always passes, and so does a version after an empty one (a new, empty table): a share
    of no records is not defined, and ``min_records`` is the rule for counts.
    """

    rule = "max_change_ratio"
    overridable = True

    def __init__(self, limit: float) -> None:
        if not limit >= 0:  # also refuses NaN
            raise ConfigurationError(f"max_change_ratio must be >= 0, not {limit!r}")
        self.limit = limit

    def __call__(self, s: CycleSummary) -> ValidationResult:
        if not s.previous_record_count:
            before = "no previous version" if s.previous_record_count is None else \
                f"version {s.previous_version} had no records"
            return ValidationResult.ok(
                f"{before}: {s.added} added, {s.changed} changed, {s.removed} removed; no "
                "change ratio to judge (min_records judges the count)",
                added=s.added, changed=s.changed, removed=s.removed,
                previous_records=s.previous_record_count, ratio=None, limit=self.limit)
        changes = s.added + s.changed + s.removed
        figures = {"added": s.added, "changed": s.changed, "removed": s.removed,
                   "previous_records": s.previous_record_count, "ratio": round(s.change_ratio, 6),
                   "limit": self.limit}
        text = (f"{s.change_ratio:.1%} of records changed ({changes} of "
                f"{s.previous_record_count}: {s.added} added, {s.changed} changed, "
                f"{s.removed} removed), limit {self.limit:.1%}")
        if s.change_ratio > self.limit:
            return ValidationResult.failed(text, **figures)
        return ValidationResult.ok(text, **figures)


class MinRecords:
    """Refuse a version holding fewer than ``minimum`` records."""

    rule = "min_records"
    overridable = True

    def __init__(self, minimum: int) -> None:
        if minimum < 0:
            raise ConfigurationError(f"min_records must be >= 0, not {minimum!r}")
        self.minimum = minimum

    def __call__(self, s: CycleSummary) -> ValidationResult:
        text = f"{s.record_count} records, minimum {self.minimum}"
        figures = {"records": s.record_count, "minimum": self.minimum}
        if s.record_count < self.minimum:
            return ValidationResult.failed(text, **figures)
        return ValidationResult.ok(text, **figures)


def rule_name(validator: Any) -> str:
    """The name a validator's results are reported under."""
    name = getattr(validator, "rule", None)
    if isinstance(name, str) and name:
        return name
    module = getattr(validator, "__module__", None) or "?"
    return f"{module}:{getattr(validator, '__qualname__', type(validator).__qualname__)}"


def run_validator(validator: Any, summary: CycleSummary) -> ValidationResult:
    """Call one validator and bring its answer to a named :class:`ValidationResult`.

    A validator may return a ValidationResult or a bool; one that raises fails with the
    exception as its message (a broken validator must not let a version through).
    """
    name = rule_name(validator)
    try:
        result = validator(summary)
    except Exception as exc:  # noqa: BLE001 - reported as a failed rule, never swallowed
        return ValidationResult(False, f"validator raised {type(exc).__name__}: {exc}", name)
    if isinstance(result, bool):
        return ValidationResult(result, "passed" if result else "returned False", name)
    if not isinstance(result, ValidationResult):
        return ValidationResult(False, f"validator returned {type(result).__name__}, not a "
                                       "ValidationResult or bool", name)
    return result if result.rule else ValidationResult(result.passed, result.message, name,
                                                       result.details)


def load_validator(spec: str) -> Validator:
    """Import ``"package.module:function"`` (or ``"package.module:Class.attr"``).

    Raises:
        ConfigurationError: the spec is malformed, the module cannot be imported, or the
            name is not a callable in it.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"validator {spec!r} must read 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"validator {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"validator {spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigurationError(f"validator {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]
