"""The soak test's truth: a seeded history of random upserts and deletes that the producer,
the test and every reader process rebuild identically, so any reader can check any
answer against the version it read it from.

Generation ``g`` is the feed after ``g`` cycles. Key 0 is rewritten by every cycle, so
``get(0).gen`` tells a reader which generation its view holds; every other record is
``(k, u, f"{k}/{u}")`` where ``u`` is the generation that last wrote it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator

KEY_SPACE = 4000  # keys 0..KEY_SPACE-1; about half are present at any time
UPSERTS = 40  # records written per cycle (updates and inserts)
DELETES = 15  # records deleted per cycle


class History:
    def __init__(self, seed: int, cycles: int) -> None:
        self.cycles = cycles
        rng = random.Random(seed)
        state = {k: 0 for k in range(KEY_SPACE) if k == 0 or rng.random() < 0.5}
        self._gens: dict[int, list[int]] = {k: [0] for k in state}  # key -> change generations
        self._values: dict[int, list[int]] = {k: [0] for k in state}  # -1: deleted
        self._initial = dict(state)
        for gen in range(1, cycles + 1):
            for k in rng.sample(range(1, KEY_SPACE), UPSERTS) + [0]:
                state[k] = gen
                self._change(k, gen, gen)
            for k in rng.sample(sorted(k for k in state if k), DELETES):
                if state.get(k, gen) != gen:  # not written in this same cycle
                    del state[k]
                    self._change(k, gen, -1)

    def _change(self, key: int, gen: int, value: int) -> None:
        gens, values = self._gens.setdefault(key, []), self._values.setdefault(key, [])
        if gens and gens[-1] == gen:
            values[-1] = value
        else:
            gens.append(gen)
            values.append(value)

    def written_at(self, gen: int, key: int) -> int | None:
        """The generation whose record ``key`` holds at ``gen``; None when absent."""
        gens = self._gens.get(key)
        if not gens:
            return None
        i = bisect.bisect_right(gens, gen) - 1
        if i < 0:
            return None
        value = self._values[key][i]
        return None if value < 0 else value

    def rows(self, gen: int) -> Iterator[tuple[int, int, str]]:
        for k in sorted(self._gens):
            u = self.written_at(gen, k)
            if u is not None:
                yield k, u, f"{k}/{u}"


def check_view(view: object, history: History, rng: random.Random,
               seen: dict[int, int], wrong: list[str], lookups: int = 16) -> int:
    """One request on a ``Consumer.view()``: its generation from key 0, then ``lookups``
    random keys and one ``get_many`` checked. Returns the lookups done."""
    version = view.version  # type: ignore[attr-defined]
    first = view.get(0)  # type: ignore[attr-defined]
    if first is None:
        wrong.append(f"version {version}: key 0 absent")
        return 1
    gen = first.gen
    if seen.setdefault(version, gen) != gen:
        wrong.append(f"version {version}: generation {gen}, earlier {seen[version]}")
    keys = [rng.randrange(KEY_SPACE) for _ in range(lookups)]
    for k in keys:
        rec = view.get(k)  # type: ignore[attr-defined]
        u = history.written_at(gen, k)
        got = None if rec is None else (rec.gen, rec.title)
        if got != (None if u is None else (u, f"{k}/{u}")):
            wrong.append(f"version {version} (gen {gen}): {k} -> {got}, expected {u}")
    many = view.get_many(keys)  # type: ignore[attr-defined]
    expected = [None if (u := history.written_at(gen, k)) is None else f"{k}/{u}" for k in keys]
    if [None if r is None else r.title for r in many] != expected:
        wrong.append(f"version {version} (gen {gen}): get_many mismatch")
    return 1 + 2 * len(keys)
