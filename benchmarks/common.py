"""What every benchmark script shares: result rows, goals, the printed table, the run's
context (versions, load), and where results go.

A result row is ``{name, unit, feedkit, peer, peer_value, ratio, goal, met}`` with
``ratio = feedkit / peer_value``. ``goal`` is a readable condition: on the ratio when it
ends in ``x`` (``"<= 0.75x"``, ``">= 4x"``), else on feedkit's own value in ``unit``
(``"<= 20 ms"``, ``"<= 1 s"``, ``"== 0"``); None for a reference row without a goal.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

RESULTS = Path(__file__).resolve().parent / "results"

_GOAL = re.compile(r"\s*(<=|>=|==)\s*([0-9.eE+-]+)\s*(x?)")

T = TypeVar("T")


def window(body: Callable[[], T]) -> T:
    """Run one timing window with the garbage collector off (for every library alike)."""
    gc.disable()
    try:
        return body()
    finally:
        gc.enable()


def goal_met(goal: str | None, value: float, ratio: float | None) -> bool | None:
    """Whether ``value`` (or ``ratio``, for an ``...x`` goal) meets ``goal``."""
    if goal is None:
        return None
    m = _GOAL.match(goal)
    if m is None:
        raise ValueError(f"unreadable goal {goal!r}")
    op, number, on_ratio = m.group(1), float(m.group(2)), bool(m.group(3))
    subject = ratio if on_ratio else value
    if subject is None:
        return False
    return {"<=": subject <= number, ">=": subject >= number, "==": subject == number}[op]


def _sig(x: float, digits: int = 5) -> float:
    """``x`` to ``digits`` significant digits (milliseconds and nanoseconds alike)."""
    return float(f"{x:.{digits}g}")


def row(name: str, unit: str, value: float, peer: str | None, peer_value: float | None,
        goal: str | None) -> dict[str, Any]:
    """One result row (see the module docstring); ``ratio`` is taken on the unrounded values."""
    ratio = value / peer_value if peer_value else None
    return {"name": name, "unit": unit, "feedkit": _sig(value), "peer": peer,
            "peer_value": None if peer_value is None else _sig(peer_value),
            "ratio": None if ratio is None else _sig(ratio, 4), "goal": goal,
            "met": goal_met(goal, value, ratio)}


def _num(x: float | None) -> str:
    if x is None:
        return ""
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    cols = [("metric", "name"), ("unit", "unit"), ("feedkit", "feedkit"), ("peer", "peer"),
            ("peer value", "peer_value"), ("ratio", "ratio"), ("goal", "goal"), ("met", "met")]
    cells = []
    for r in rows:
        met = "" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        cells.append([r["name"], r["unit"], _num(r["feedkit"]), r["peer"] or "-",
                      _num(r["peer_value"]), "" if r["ratio"] is None else f"{r['ratio']:.3f}x",
                      r["goal"] or "(reference)", met])
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(cols)]
    right = {2, 4, 5}
    lines = ["  ".join(h.rjust(w) if i in right else h.ljust(w)
                       for i, ((h, _), w) in enumerate(zip(cols, widths, strict=True)))]
    lines.append("-" * len(lines[0]))
    for c in cells:
        lines.append("  ".join(v.rjust(w) if i in right else v.ljust(w)
                               for i, (v, w) in enumerate(zip(c, widths, strict=True))).rstrip())
    return "\n".join(lines)


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(table(rows), flush=True)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


def versions(*dists: str) -> str:
    out = []
    for dist in ("feedkit", *dists):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def step(msg: str) -> None:
    print(f"  .. {msg}", flush=True)
