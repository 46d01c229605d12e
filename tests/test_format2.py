"""Format 2 (compact bases, docs/FORMAT.md section 10) as users meet it: every coding
round-trips every value type, decoded values are shared only when immutable, and a
store holding versions of both formats serves every consumer, whatever it held."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import feedkit
from feedkit import names
from feedkit.format import StateFile
from feedkit.manifest import Manifest
from tests.conftest import titles_table
from tests.test_native_lookups import ELEMENTS, TYPES, _expected, _table

FEED = "compact.feed"


def _files(cache: Path, feed: str = FEED) -> list[StateFile]:
    return [StateFile(p) for p in sorted((cache / feed).iterdir())
            if p.name.endswith((".base", ".overlay"))]


@st.composite
def coded_tables(draw: st.DrawFn) -> tuple[list[str], dict[int, tuple[Any, ...]], list[str]]:
    """Int-keyed rows (enough of them that a format-2 file codes repeated values) whose
    columns draw from a pool of whole values, of list elements, or freely; and what
    coding each column should get."""
    columns = draw(st.lists(st.sampled_from(sorted(TYPES, reverse=True)), min_size=2, max_size=4,
                            unique=True))
    strategies, codings = [], []
    for c in columns:
        modes = ["pool"] + (["elements"] if c in ELEMENTS else []) + ["free"]
        mode = draw(st.sampled_from(modes))
        if mode == "pool":
            pool = draw(st.lists(TYPES[c][1], min_size=1, max_size=3, unique_by=repr))
            strategies.append(st.sampled_from(pool))
        elif mode == "elements":
            pool = draw(st.lists(ELEMENTS[c], min_size=2, max_size=5, unique=True))
            strategies.append(st.lists(st.sampled_from(pool), min_size=1, max_size=6))
        else:
            strategies.append(TYPES[c][1])
        codings.append(mode)
    n = draw(st.integers(64, 160))
    values = draw(st.lists(st.tuples(*(st.none() | s for s in strategies)), min_size=n, max_size=n))
    return columns, {i * 7 - 300: row for i, row in enumerate(values)}, codings


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(coded_tables())
def test_every_coding_round_trips_every_value_type(
        case: tuple[list[str], dict[int, tuple[Any, ...]], list[str]]) -> None:
    """Records of a format-2 base are the Arrow table's rows, value for value and type
    for type, whichever coding each column got."""
    columns, rows, modes = case
    table = _table("int", columns, rows)
    with tempfile.TemporaryDirectory() as tmp:
        store = feedkit.open_store(f"file://{tmp}/store")
        with feedkit.Producer(store, feed=FEED, primary_key="k", work_dir=Path(tmp) / "w") as p:
            p.publish(table)
        with feedkit.Consumer(store, feed=FEED, cache_dir=Path(tmp) / "c", watch=False) as feed:
            base = feed._state.base
            assert base.format == 2 and feed._state.overlay is None
            codings = [c["coding"] for c in base.header["columns"]]
            event(f"codings {codings[1:]} for {modes}")
            assert codings[0] == "key"  # the int key lives in the entries only
            for column, mode, coding in zip(columns, modes, codings[1:], strict=True):
                if column == "st":
                    assert coding in ("fields", "dict"), (column, mode, coding)
                elif mode == "elements":
                    assert coding in ("elements", "dict"), (column, mode, coding)
            want = {rec[0]: rec for rec in _expected(table)}
            for key, rec in want.items():
                got = feed.get(key)
                assert got == rec and type(got) is feed._state.Record
                assert [type(v) for v in got] == [type(v) for v in rec], key
            assert feed.get_many([*want, 10**9]) == [*want.values(), None]
            assert {k: r for k, r in feed.items()} == want
            assert sorted(feed.keys()) == sorted(want)


def test_decoded_values_are_shared_only_when_immutable(tmp_path: Path) -> None:
    """A dictionary's strings are decoded once and shared by every record holding them;
    lists and dicts are built anew for every lookup, so a caller changing one changes
    nothing else."""
    n = 400
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "country": [("DE", "FR", "US")[i % 3] for i in range(n)],
        "tags": [[("a", "b", "c", "d")[(i >> 2 * j) % 4] for j in range(i % 5 + 1)]  # digits of i
                 for i in range(n)],
        "info": [{"title": f"t{i % 7}", "year": 1990 + i % 3} for i in range(n)],
    })
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with feedkit.Producer(store, feed=FEED, primary_key="id", work_dir=tmp_path / "w") as p:
        p.publish(table)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        codings = [c["coding"] for c in feed._state.base.header["columns"]]
        assert codings == ["key", "dict", "elements", "dict"], codings
        a, b = feed[0], feed[3]
        assert a.country == b.country == "DE" and a.country is b.country  # one object
        a.tags.append("zzz")
        a.info["title"] = "changed"
        again = feed[0]
        assert again.tags == ["a"] and again.info == {"title": "t0", "year": 1990}
        assert again.tags is not a.tags and again.info is not a.info
        assert again.tags[0] is feed[4].tags[0]  # elements: shared strings in new lists


def _manifest(store: feedkit.BlobStore, version: int) -> dict[str, Any]:
    data, _ = store.read_if_changed(names.manifest_key(FEED, version))  # type: ignore[misc]
    return json.loads(data)  # type: ignore[no-any-return]


def _blob(store: feedkit.BlobStore, key: str) -> bytes:
    data, _ = store.read_if_changed(key)  # type: ignore[misc]
    return data  # type: ignore[no-any-return]


def test_a_store_holding_both_formats_serves_every_consumer(tmp_path: Path) -> None:
    """A feed moves to format 2 with a snapshot (no delta crosses formats), and back:
    a consumer that held a format-1 state takes the snapshot, a new one starts from it,
    and both serve every version exactly."""
    store = feedkit.open_store(f"file://{tmp_path}/store")
    work = tmp_path / "work"

    def producer(fmt: int) -> feedkit.Producer:
        return feedkit.Producer(store, feed=FEED, primary_key="movie_id", work_dir=work,
                                format=fmt)

    with producer(1) as p:
        v1 = p.publish(titles_table(300))
        v2 = p.publish(titles_table(310))
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "held", watch=False) as held:
        assert held.version == v2 and _files(tmp_path / "held")[0].format == 1
        with producer(2) as p:
            v3 = p.publish(titles_table(320, seed=1))
            v4 = p.publish(titles_table(330, seed=1))
        m1, m2, m3, m4 = (_manifest(store, v) for v in (v1, v2, v3, v4))  # type: ignore[arg-type]
        assert (m1["format"], m2["format"], m3["format"], m4["format"]) == (1, 1, 2, 2)
        assert m2["delta"] and m3["delta"] is None and m3["snapshot"] and m4["delta"]
        # format 1's delta is its state file compressed, format 2's a columnar delta
        # (FORMAT.md, 11.5) of the upserts and deleted keys, a fraction of the size
        d2, d4 = (_blob(store, m["delta"]["key"]) for m in (m2, m4))
        assert d2[:4] == b"\x28\xb5\x2f\xfd" and d4[:8] == b"FEEDKITD"
        assert m4["delta"]["raw_size"] < m2["delta"]["raw_size"]
        assert held.refresh() and held.version == v4
        formats = {sf.kind: sf.format for sf in held._state.files}
        assert formats == {"overlay": 1, "base": 2}  # a format-1 delta over a format-2 base
        assert {k: tuple(r) for k, r in held.items()} == {
            r["movie_id"]: tuple(r.values()) for r in titles_table(330, seed=1).to_pylist()}
        with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "new", watch=False) as new:
            assert new.version == v4 and dict(new.items()) == dict(held.items())
        with producer(1) as p:
            v5 = p.publish(titles_table(330, seed=2))
        m5 = _manifest(store, v5)  # type: ignore[arg-type]
        assert m5["format"] == 1 and m5["delta"] is None
        assert held.refresh() and held._state.base.format == 1
        assert {k: tuple(r) for k, r in held.items()} == {
            r["movie_id"]: tuple(r.values()) for r in titles_table(330, seed=2).to_pylist()}


def test_an_append_keeps_the_format_until_a_snapshot_is_due(tmp_path: Path) -> None:
    """An append has only the new rows at hand: it adds a delta in the last version's
    format, and the feed moves to format 2 with its next snapshot."""
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id", work_dir=tmp_path / "w",
                          format=1) as p:
        p.publish(titles_table(200))
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id", work_dir=tmp_path / "w",
                          snapshot_every=3) as p:
        v2 = p.append(titles_table(5, start=200))
        v3 = p.append(titles_table(5, start=205))
        v4 = p.append(titles_table(5, start=210))
    formats = [(_manifest(store, v)["format"], bool(_manifest(store, v)["snapshot"]))  # type: ignore[arg-type]
               for v in (v2, v3, v4)]
    assert formats == [(1, False), (1, False), (2, True)]
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed._state.base.format == 2 and len(feed) == 215
        assert feed[214].title == "title 214"


def test_unknown_formats_are_refused_clearly(tmp_path: Path) -> None:
    """What a feedkit that knows only format 1 does with format 2 (its manifest parser and
    its state-file check refuse any format they do not know), shown with format 3."""
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id", work_dir=tmp_path / "w") as p:
        version = p.publish(titles_table(50))
    doc = _manifest(store, version)  # type: ignore[arg-type]
    doc["format"] = 3
    with pytest.raises(feedkit.IntegrityError, match="manifest format 3, this feedkit reads 1, 2"):
        Manifest.from_bytes(json.dumps(doc).encode(), "m.json")
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False):
        path = next((tmp_path / "c" / FEED).glob("*.base"))
    data = bytearray(path.read_bytes())
    assert data[8] == 2
    data[8] = 3
    (tmp_path / "x.state").write_bytes(bytes(data))
    with pytest.raises(feedkit.IntegrityError, match="state format 3, this feedkit reads 1 and 2"):
        StateFile(tmp_path / "x.state")
