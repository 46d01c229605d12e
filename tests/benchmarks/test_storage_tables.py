"""The storage benchmark's tables are what its docstring says, and its change is a change.

The whole part runs in ``test_suite.py``; here its generated data is checked on its own,
in batches smaller than the table so that the batch seams are crossed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 2_000


@pytest.fixture()
def storage(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module("bench_storage")
    monkeypatch.setattr(module, "GEN_ROWS", 500)  # four batches of 500 rows
    return module


def keys_of(spec: Any, table: pa.Table) -> list[tuple[int, ...]]:
    return list(zip(*(table.column(k).to_pylist() for k in spec.key), strict=True))


def test_the_tables_have_the_shapes_the_docstring_gives(storage: ModuleType) -> None:
    five = storage.SPECS["five"].table(N, 1)
    assert five.schema == storage.FIVE_SCHEMA and five.num_rows == N
    rows = five.to_pylist()
    assert [r["id"] // 10 for r in rows] == list(range(N))  # sparse, ascending
    for r in rows:
        assert r["name"] == f"name {r['id']}"
        assert 0 <= r["count"] <= 100_000 and 0 <= r["score"] < 100
        assert round(r["score"], 3) == r["score"]
        assert len(r["pair"]) == 2 and all(0 <= x <= 1000 for x in r["pair"])
    assert {r["flag"] for r in rows} == {True, False}

    vocabulary = storage.vocabulary(storage.VOCABULARY, storage.SEED)
    assert len(set(vocabulary)) == 300 and all(5 <= len(v) <= 10 for v in vocabulary)
    assert {"action", "en-US", "4k-hdr"} <= set(vocabulary)
    muse = storage.SPECS["muse"].table(N, 2)
    keys = keys_of(storage.SPECS["muse"], muse)
    assert keys == sorted(set(keys))  # unique, ascending
    per_movie: dict[int, int] = {}
    for movie, _ in keys:
        per_movie[movie] = per_movie.get(movie, 0) + 1
    assert set(per_movie.values()) == {storage.DIMENSIONS}
    seen: set[str] = set()
    for values in muse.column("values").to_pylist():
        assert 3 <= len(values) <= 30 and len(set(values)) == len(values)
        seen.update(values)
    assert seen <= set(vocabulary) and len(seen) > 250

    nested = storage.SPECS["nested"].table(N, 3)
    assert nested.schema == storage.NESTED_SCHEMA
    lengths = set()
    for r in nested.to_pylist():
        assert r["info"]["title"] == f"title {r['id']}" and 1920 <= r["info"]["year"] <= 2025
        tags = [k for k, _ in r["tags"]]
        assert len(tags) <= 5 and len(set(tags)) == len(tags)
        assert len(r["cast"]) <= 4 and all(set(c) == {"name", "role"} for c in r["cast"])
        lengths.add((len(tags), len(r["cast"])))
    assert {t for t, _ in lengths} == set(range(6)) and {c for _, c in lengths} == set(range(5))

    assert storage.SPECS["nested"].table(N, 3).equals(nested)  # seeded: the same again


@pytest.mark.parametrize("name", ["five", "muse", "nested"])
def test_a_change_gives_new_values_to_one_percent_of_the_keys_and_keeps_the_rest(
        storage: ModuleType, name: str) -> None:
    spec = storage.SPECS[name]
    table = spec.table(N, 4)
    after, change = storage.changed(spec, table, 0.01, 5)
    assert after.schema == table.schema and after.num_rows == N
    assert 0 < change.num_rows <= 20
    old = {k: r for k, r in zip(keys_of(spec, table), table.to_pylist(), strict=True)}
    new = {k: r for k, r in zip(keys_of(spec, after), after.to_pylist(), strict=True)}
    assert set(new) == set(old)
    moved = {k for k in old if old[k] != new[k]}
    assert moved == set(keys_of(spec, change))
    assert all(new[k] == r for k, r in zip(keys_of(spec, change), change.to_pylist(),
                                           strict=True))
