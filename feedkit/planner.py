"""Delta planning: the cheapest way from the state a consumer holds to the target version.

Walk back from the target through each manifest's parent. The walk ends at the
version held (then the deltas alone get there) or gives up once the deltas
gathered cost more than the best snapshot met on the way. Cost is bytes to fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from feedkit.errors import IntegrityError, VersionNotFoundError
from feedkit.manifest import Manifest

__all__ = ["Plan", "plan"]

MAX_CHAIN = 1000


@dataclass
class Plan:
    """Load ``snapshot`` (None: keep the current state), then apply ``deltas`` in order."""

    snapshot: Manifest | None
    deltas: list[Manifest] = field(default_factory=list)

    @property
    def cost(self) -> int:
        snap = self.snapshot.snapshot.size if self.snapshot and self.snapshot.snapshot else 0
        return snap + sum(m.delta.size for m in self.deltas if m.delta)


def plan(target: Manifest, current: int | None, load: Callable[[int], Manifest],
         use_deltas_from_current: bool = True) -> Plan:
    """Plan the fetches from ``current`` (None: nothing held) to ``target``.

    Raises:
        IntegrityError: the chain is broken (no snapshot reachable).
        VersionNotFoundError: a manifest on the chain is missing before any snapshot
            (past one, a missing manifest ends the walk: garbage-collected history).
    """
    best: Plan | None = None
    chain: list[Manifest] = []  # target first, walking back
    m = target
    delta_cost = 0
    for _ in range(MAX_CHAIN):
        if current is not None and m.version == current and use_deltas_from_current:
            candidate = Plan(None, list(reversed(chain)))
            if best is None or candidate.cost <= best.cost:
                best = candidate
            break
        if m.snapshot is not None:
            candidate = Plan(m, list(reversed(chain)))
            if best is None or candidate.cost < best.cost:
                best = candidate
        if m.delta is None or m.parent is None:
            break
        if current is not None and m.version <= current:
            # Walked past what we hold (or the target is older: a rollback): only a snapshot
            # gets us there, so look on as a fresh load would.
            current = None
        delta_cost += m.delta.size
        if best is not None and delta_cost >= best.cost:
            break
        chain.append(m)
        if use_deltas_from_current and current is not None and m.parent == current:
            # The held version is the parent: the deltas alone get there. Its manifest is
            # not needed (nor read: it may predate signing, or be garbage-collected).
            candidate = Plan(None, list(reversed(chain)))
            if best is None or candidate.cost <= best.cost:
                best = candidate
            break
        try:
            m = load(m.parent)
        except (VersionNotFoundError, IntegrityError):
            if best is None:
                raise
            # Older versions were garbage-collected (feedkit gc), or cannot be used (an
            # unsigned manifest from before signing): use the best plan met.
            break
    if best is None:
        raise IntegrityError(f"feed {target.feed!r}: no snapshot reachable from version "
                             f"{target.version}")
    return best
