"""feedkit.admin against a real local store and a real Producer: versions, inspect, get,
diff, pin/unpin and gc."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import feedkit
from feedkit import admin, names
from feedkit.manifest import Announcement, Manifest, Pin
from feedkit.store.local import LocalStore
from tests.conftest import titles_table, truth

FEED = "titles"


def mutate(table: pa.Table, rng: random.Random, next_id: list[int], *, changes: int = 30) -> pa.Table:
    """A few random updates, deletes and inserts (small deltas, as in real feeds)."""
    rows = table.to_pylist()
    rng.shuffle(rows)
    rows = rows[: len(rows) - rng.randint(1, 10)]
    for row in rng.sample(rows, min(len(rows), changes)):
        row["title"] = f"changed {rng.random():.6f}"
    for _ in range(rng.randint(1, 10)):
        rows.append({"movie_id": next_id[0], "title": "new", "year": 2000, "score": 0.5,
                     "country": "JP"})
        next_id[0] += 1
    return pa.Table.from_pylist(rows, schema=table.schema)


def publish_versions(store: feedkit.BlobStore, count: int, *, snapshot_every: int = 4,
                     n: int = 2000, seed: int = 3) -> tuple[list[int], list[pa.Table]]:
    """``count`` versions of FEED, each a small change of the last; their tables."""
    rng, next_id = random.Random(seed), [100_000]
    table = titles_table(n)
    versions, tables = [], []
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id", indexes=["country"],
                          snapshot_every=snapshot_every) as producer:
        for i in range(count):
            if i:
                table = mutate(table, rng, next_id)
            version = producer.publish(table, source={"table": "muse.titles",
                                                      "snapshot_id": 5000 + i})
            assert version is not None
            versions.append(version)
            tables.append(table)
    return versions, tables


def manifest(store: feedkit.BlobStore, version: int) -> Manifest:
    key = names.manifest_key(FEED, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def announcement(store: feedkit.BlobStore) -> Announcement:
    found = admin.read_announcement(store, FEED)
    assert found is not None
    return found[0]


def store_files(tmp_path: Path) -> dict[str, bytes]:
    root = tmp_path / "store"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


# -- the announcement's pin ------------------------------------------------------------------


def test_announcement_pin_is_written_only_when_pinned_and_read_back() -> None:
    plain = Announcement("f", 7, announced_at="2026-01-01T00:00:00.000+00:00", producer="p")
    assert b"pinned" not in plain.to_bytes()  # unpinned announcements keep their old bytes
    assert json.loads(plain.to_bytes()) == {"announced_at": "2026-01-01T00:00:00.000+00:00",
                                            "feed": "f", "format": 1, "producer": "p",
                                            "version": 7}
    assert Announcement.from_bytes(plain.to_bytes(), "x").pinned is None
    old = b'{"feed": "f", "version": 3}'  # written before pins existed
    assert Announcement.from_bytes(old, "x") == Announcement("f", 3, "", None, None)

    pin = Pin(at="2026-01-02T00:00:00.000+00:00", latest=9, by="ana@host", reason="bad data")
    pinned = Announcement("f", 7, announced_at="t", producer="p", pinned=pin)
    doc = json.loads(pinned.to_bytes())
    assert doc["pinned"] == {"at": "2026-01-02T00:00:00.000+00:00", "by": "ana@host",
                             "latest": 9, "reason": "bad data"}
    assert Announcement.from_bytes(pinned.to_bytes(), "x") == pinned
    assert "pinned to version 7 by ana@host" in pin.describe("f", 7)
    assert "'bad data'" in pin.describe("f", 7) and "latest version is 9" in pin.describe("f", 7)


@pytest.mark.parametrize("pinned", ['"yes"', '{"at": "t"}', '{"at": "t", "latest": true}',
                                    '{"at": "t", "latest": 3, "by": 5}'])
def test_a_damaged_pin_is_an_integrity_error(pinned: str) -> None:
    data = f'{{"feed": "f", "version": 3, "pinned": {pinned}}}'.encode()
    with pytest.raises(feedkit.IntegrityError, match="unreadable announcement where"):
        Announcement.from_bytes(data, "where")


# -- versions and inspect ----------------------------------------------------------------------


def test_versions_lists_every_version_newest_first(store) -> None:
    versions, tables = publish_versions(store, 5)
    result = admin.list_versions(store, FEED)
    assert [v.version for v in result.versions] == versions[::-1]
    assert result.announcement is not None and result.announcement.version == versions[-1]
    for info, table, i in zip(result.versions[::-1], tables, range(5), strict=True):
        m = manifest(store, info.version)
        assert info.record_count == table.num_rows == m.record_count
        assert info.created_at == m.created_at and info.parent == m.parent
        assert info.iceberg_snapshot == 5000 + i
        assert info.snapshot_size == (m.snapshot.size if m.snapshot else None)
        assert info.delta_size == (m.delta.size if m.delta else None)
        assert info.announced == (info.version == versions[-1]) and not info.pinned
    assert result.versions[-1].delta_size is None and result.versions[-1].snapshot_size
    assert [v.version for v in admin.list_versions(store, FEED, limit=2).versions] == \
        versions[:-3:-1]
    doc = result.to_json()
    assert doc["announced"] == versions[-1] and doc["pinned"] is None
    assert doc["versions"][0]["iceberg_snapshot"] == 5004


def test_versions_of_an_unknown_feed_is_an_error(store) -> None:
    publish_versions(store, 1)
    with pytest.raises(feedkit.VersionNotFoundError, match="'nosuch'"):
        admin.list_versions(store, "nosuch")


def test_inspect_shows_the_manifest_and_what_a_fresh_consumer_fetches(store) -> None:
    versions, _ = publish_versions(store, 7, snapshot_every=4)
    announced = admin.inspect_version(store, FEED)
    assert announced.manifest.version == versions[-1] and announced.announced
    # Snapshots at versions 0 and 4: version 6 loads from one of them plus the deltas since,
    # whichever costs fewer bytes (the consumer's planner decides).
    start = versions.index(announced.fetch_snapshot)
    assert start in (0, 4) and announced.fetch_deltas == versions[start + 1:]
    assert announced.fetch_bytes == manifest(store, versions[start]).snapshot.size + sum(
        manifest(store, v).delta.size for v in versions[start + 1:])
    m4, m5, m6 = (manifest(store, v) for v in versions[4:7])
    assert announced.fetch_bytes <= m4.snapshot.size + m5.delta.size + m6.delta.size
    older = admin.inspect_version(store, FEED, versions[1])
    assert not older.announced and older.manifest.parent == versions[0]
    doc = older.to_json()
    assert doc["key"] == {"columns": ["movie_id"], "parts": ["int"]}
    assert doc["index_fields"] == ["country"] and doc["source"]["snapshot_id"] == 5001
    assert [c["name"] for c in doc["schema"]] == ["movie_id", "title", "year", "score", "country"]
    assert doc["nearest_snapshot"] == versions[0] and doc["fetch"]["error"] is None
    with pytest.raises(feedkit.VersionNotFoundError, match="no version 12345"):
        admin.inspect_version(store, FEED, 12345)

    store.delete(m4.snapshot.key)
    assert admin.inspect_version(store, FEED).fetch_error is None  # the plan needs no fetch
    store.delete(names.manifest_key(FEED, versions[4]))
    store.delete(names.manifest_key(FEED, versions[3]))
    broken = admin.inspect_version(store, FEED)
    assert broken.fetch_snapshot is None and "no version" in broken.fetch_error


# -- get ---------------------------------------------------------------------------------------


def test_parse_key_follows_the_key_parts() -> None:
    assert admin.parse_key("42", {"columns": ["id"], "parts": ["int"]}) == 42
    assert admin.parse_key("-7", {"columns": ["id"], "parts": ["int"]}) == -7
    assert admin.parse_key("a,b", {"columns": ["s"], "parts": ["str"]}) == "a,b"
    assert admin.parse_key("0x0AfF", {"columns": ["b"], "parts": ["bytes"]}) == b"\x0a\xff"
    both = {"columns": ["id", "dim", "raw"], "parts": ["int", "str", "bytes"]}
    assert admin.parse_key('[1, "DE", "00ff"]', both) == (1, "DE", b"\x00\xff")
    assert admin.parse_key("1,DE,00ff", both) == (1, "DE", b"\x00\xff")
    two = {"columns": ["id", "dim"], "parts": ["int", "str"]}
    assert admin.parse_key("1,a,b", two) == (1, "a,b")  # the last part keeps its commas
    assert admin.parse_key('["1", "x"]', two) == (1, "x")
    with pytest.raises(feedkit.KeyTypeError, match="'id' is int"):
        admin.parse_key("x", {"columns": ["id"], "parts": ["int"]})
    with pytest.raises(feedkit.KeyTypeError, match="hex digits"):
        admin.parse_key("zz", {"columns": ["b"], "parts": ["bytes"]})
    with pytest.raises(feedkit.KeyTypeError, match="3 comma-separated parts"):
        admin.parse_key("1,DE", both)
    with pytest.raises(feedkit.KeyTypeError, match="JSON array of 2 parts"):
        admin.parse_key("[1]", two)
    with pytest.raises(feedkit.KeyTypeError, match="not a JSON array"):
        admin.parse_key("[1,", two)
    with pytest.raises(feedkit.KeyTypeError, match="'id' \\(int\\) cannot be 1.5"):
        admin.parse_key("[1.5, 2]", two)


def test_jsonable_gives_documented_forms() -> None:
    berlin = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert admin.jsonable(berlin) == "2024-05-01T12:30:00+02:00"
    assert admin.jsonable(dt.date(2024, 5, 1)) == "2024-05-01"
    assert admin.jsonable(dt.time(1, 2, 3, 4)) == "01:02:03.000004"
    assert admin.jsonable(Decimal("1.50")) == "1.50"
    assert admin.jsonable(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert admin.jsonable(b"\x00\xab") == "00ab"
    assert [admin.jsonable(x) for x in (math.nan, math.inf, -math.inf, 1.5)] == [
        "NaN", "Infinity", "-Infinity", 1.5]
    assert admin.jsonable({1: (b"\x01", None), "k": [True]}) == {"1": ["01", None], "k": [True]}
    json.dumps(admin.jsonable({b"\x01": {dt.date(2000, 1, 1): 1}}), allow_nan=False)


def test_get_record_loads_a_version_and_prints_values_as_json(store, tmp_path) -> None:
    moment = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    table = pa.table({
        "id": pa.array(["1", "2"], pa.string()),
        "raw": pa.array([b"\x00\x01", None], pa.binary()),
        "price": pa.array([Decimal("1.50"), None], pa.decimal128(10, 2)),
        "at": pa.array([moment, None], pa.timestamp("us", tz="UTC")),
        "day": pa.array([dt.date(2024, 5, 1), None], pa.date32()),
        "ratio": pa.array([float("nan"), 2.0], pa.float64()),
        "tags": pa.array([[("a", 1)], None], pa.map_(pa.string(), pa.int64())),
    })
    with feedkit.Producer(store, feed="values", primary_key="id") as producer:
        v1 = producer.publish(table)
        v2 = producer.publish(table.slice(1))
    got = admin.get_record(store, "values", "1", version=v1)
    assert got.version == v1 and got.key == "1"
    assert got.record == {"id": "1", "raw": "0001", "price": "1.50",
                          "at": "2024-05-01T10:00:00+00:00", "day": "2024-05-01",
                          "ratio": "NaN", "tags": {"a": 1}}
    json.dumps(got.record, allow_nan=False)  # strict JSON
    gone = admin.get_record(store, "values", "1")  # the announced version: v2
    assert gone.version == v2 and gone.record is None
    cache = tmp_path / "kept"
    assert admin.get_record(store, "values", "2", cache_dir=cache).record["ratio"] == 2.0
    assert any(cache.joinpath("values").iterdir())  # --cache-dir keeps what it loaded
    with pytest.raises(feedkit.VersionNotFoundError):
        admin.get_record(store, "values", "1", version=v2 + 1)


def test_get_record_with_a_composite_key(store) -> None:
    table = pa.table({"movie_id": pa.array([1, 1, 2], pa.int64()),
                      "dim": ["DE", "US", "DE"], "value": [10, 11, 20]})
    with feedkit.Producer(store, feed="dims", primary_key=("movie_id", "dim")) as producer:
        producer.publish(table)
    assert admin.get_record(store, "dims", "1,US").record == {"movie_id": 1, "dim": "US",
                                                             "value": 11}
    assert admin.get_record(store, "dims", '[2, "DE"]').record["value"] == 20
    assert admin.get_record(store, "dims", "2,US").record is None
    with pytest.raises(feedkit.KeyTypeError):
        admin.get_record(store, "dims", "2")


# -- diff --------------------------------------------------------------------------------------


def expected_diff(old: pa.Table, new: pa.Table, key: Any) -> tuple[set, set, set]:
    a, b = truth(old, key), truth(new, key)
    return (set(b) - set(a), set(a) - set(b), {k for k in set(a) & set(b) if a[k] != b[k]})


def test_diff_counts_added_removed_changed_like_the_tables_say(store) -> None:
    versions, tables = publish_versions(store, 6, snapshot_every=3)
    for i, j in ((0, 1), (1, 5), (5, 2), (0, 5)):
        d = admin.diff_versions(store, FEED, versions[i], versions[j], show=3)
        added, removed, changed = expected_diff(tables[i], tables[j], "movie_id")
        assert (d.added, d.removed, d.changed) == (len(added), len(removed), len(changed))
        assert d.unchanged == tables[j].num_rows - len(added) - len(changed)
        assert not d.schema_changed
        assert set(d.added_keys) <= added and len(d.added_keys) == min(3, len(added))
        assert set(d.removed_keys) <= removed and len(d.removed_keys) == min(3, len(removed))
        assert len(d.changed_records) == min(3, len(changed))
        old, new = truth(tables[i], "movie_id"), truth(tables[j], "movie_id")
        for c in d.changed_records:
            assert c.key in changed
            assert c.old == admin.jsonable(old[c.key]) and c.new == admin.jsonable(new[c.key])
    same = admin.diff_versions(store, FEED, versions[2], versions[2])
    assert (same.added, same.removed, same.changed, same.unchanged) == (
        0, 0, 0, tables[2].num_rows)
    doc = admin.diff_versions(store, FEED, versions[0], versions[1], show=1).to_json()
    assert set(doc["examples"]) == {"added", "removed", "changed"}
    assert doc["old"] == versions[0] and doc["new"] == versions[1]


def test_diff_with_hashed_keys_and_a_schema_change(store) -> None:
    rows = [{"code": f"c{i}", "n": i} for i in range(300)]
    t1 = pa.Table.from_pylist(rows)
    rows2 = [dict(r, n=r["n"] + 1) if r["n"] % 10 == 0 else r for r in rows[5:]]
    rows2 += [{"code": "new1", "n": -1}, {"code": "new2", "n": -2}]
    t2 = pa.Table.from_pylist(rows2)
    t3 = t2.append_column("extra", pa.array([1] * t2.num_rows))
    with feedkit.Producer(store, feed="codes", primary_key="code") as producer:
        v1, v2, v3 = producer.publish(t1), producer.publish(t2), producer.publish(t3)
    d = admin.diff_versions(store, "codes", v1, v2, show=10)
    assert (d.added, d.removed, d.changed) == (2, 5, 29)
    assert sorted(d.added_keys) == ["new1", "new2"]
    assert sorted(d.removed_keys) == ["c0", "c1", "c2", "c3", "c4"]
    assert all(c.new["n"] == c.old["n"] + 1 for c in d.changed_records)
    wider = admin.diff_versions(store, "codes", v2, v3, show=1)
    assert wider.schema_changed and wider.changed == t2.num_rows and wider.unchanged == 0
    assert wider.changed_records[0].new["extra"] == 1 and "extra" not in wider.changed_records[0].old


def test_diff_refuses_versions_with_different_keys(store) -> None:
    t = pa.table({"a": [1, 2], "b": ["x", "y"]})
    with feedkit.Producer(store, feed="rekey", primary_key="a") as p:
        v1 = p.publish(t)
    with feedkit.Producer(store, feed="rekey", primary_key="b") as p:
        v2 = p.publish(t)
    with pytest.raises(feedkit.ConfigurationError, match="different primary keys"):
        admin.diff_versions(store, "rekey", v1, v2)


# -- pin and unpin -----------------------------------------------------------------------------


def test_pin_announces_an_older_version_and_unpin_returns_to_the_latest(store) -> None:
    versions, _ = publish_versions(store, 4)
    change = admin.pin(store, FEED, versions[1], reason="bad data in 3", by="ana@box")
    assert change.changed and change.previous.version == versions[-1]
    now = announcement(store)
    assert now == change.announcement and now.version == versions[1]
    assert now.pinned == Pin(at=now.pinned.at, latest=versions[-1], by="ana@box",
                             reason="bad data in 3")
    dt.datetime.fromisoformat(now.pinned.at)  # an ISO time
    # Pinning again (further back) keeps the version announced before the first pin.
    admin.pin(store, FEED, versions[0])
    again = announcement(store)
    assert again.version == versions[0] and again.pinned.latest == versions[-1]
    assert again.pinned.by == admin.current_user() and again.pinned.reason is None
    listing = admin.list_versions(store, FEED)
    assert [(v.version, v.pinned, v.latest) for v in listing.versions if v.pinned or v.latest] \
        == [(versions[-1], False, True), (versions[0], True, False)]

    back = admin.unpin(store, FEED, by="ana@box")
    assert back.changed and back.previous.version == versions[0]
    final = announcement(store)
    assert final.version == versions[-1] and final.pinned is None
    assert "ana@box" in (final.producer or "")
    assert admin.unpin(store, FEED).changed is False  # not pinned: nothing to do
    assert announcement(store) == final


def write_unannounced_version(store: feedkit.BlobStore, tmp_path: Path,
                              table: pa.Table) -> int:
    """What a producer killed between writing its manifest and announcing leaves: a real
    cycle's blobs and manifest in the store, the announcement untouched. The cycle runs on
    a copy of the store; its new objects (all but the announcement) are copied back in the
    producer's order, blobs first."""
    copy = tmp_path / "killed-producer-store"
    shutil.copytree(tmp_path / "store", copy)
    with feedkit.Producer(feedkit.open_store(copy), feed=FEED, primary_key="movie_id",
                          indexes=["country"]) as producer:
        version = producer.publish(table)
    assert version is not None
    m = Manifest.from_bytes((copy / names.manifest_key(FEED, version)).read_bytes(), "copy")
    for blob in (m.delta, m.snapshot):
        if blob is not None:
            store.put_new(blob.key, copy / blob.key)
    key = names.manifest_key(FEED, version)
    store.put_new(key, copy / key)
    return version


def test_unpin_never_announces_a_version_its_producer_was_killed_before_announcing(
        store, tmp_path) -> None:
    versions, tables = publish_versions(store, 2)
    orphan = write_unannounced_version(store, tmp_path, tables[-1].slice(7))
    assert orphan > versions[-1] and announcement(store).version == versions[-1]
    key = tables[-1]["movie_id"][8].as_py()  # a whole version: it loads
    assert admin.get_record(store, FEED, key, version=orphan).record is not None
    admin.pin(store, FEED, versions[0], reason="bad data")
    change = admin.unpin(store, FEED)
    assert change.changed and change.announcement.version == versions[-1]
    now = announcement(store)
    assert now.version == versions[-1] and now.pinned is None
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == versions[-1]
        assert {k: r._asdict() for k, r in feed.items()} == truth(tables[-1], "movie_id")


def test_unpin_never_announces_a_version_whose_producer_the_pin_fenced(store, tmp_path) -> None:
    versions, tables = publish_versions(store, 3)
    # A cycle that wrote its version but lost the announcement to a pin landing meanwhile.
    racing = RacingStore(tmp_path / "store", "replace_if_match",
                         lambda: admin.pin(store, FEED, versions[0]))
    with (feedkit.Producer(racing, feed=FEED, primary_key="movie_id", indexes=["country"]) as p,
          pytest.raises(feedkit.ProducerFencedError)):
        p.publish(tables[-1].slice(10))
    orphan = admin.list_versions(store, FEED).versions[0]
    assert orphan.version > versions[-1] and not orphan.announced
    assert announcement(store).pinned.latest == versions[-1]
    assert admin.unpin(store, FEED).announcement.version == versions[-1]
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == versions[-1]
        assert {k: r._asdict() for k, r in feed.items()} == truth(tables[-1], "movie_id")
    # Re-pinning keeps the version announced before the first pin, never the orphan.
    admin.pin(store, FEED, versions[1])
    admin.pin(store, FEED, versions[0])
    assert announcement(store).pinned.latest == versions[-1]
    assert admin.unpin(store, FEED).announcement.version == versions[-1]


def test_unpin_refuses_when_the_version_before_the_pin_cannot_load(store, tmp_path) -> None:
    versions, tables = publish_versions(store, 3, snapshot_every=10)
    write_unannounced_version(store, tmp_path, tables[-1].slice(3))  # loadable, newer
    admin.pin(store, FEED, versions[0])
    pinned = store.get_bytes(names.announcement_key(FEED))
    store.delete(manifest(store, versions[-1]).delta.key)  # deleted by hand
    with pytest.raises(feedkit.BlobNotFoundError,
                       match=f"cannot unpin to version {versions[-1]}, the one announced "
                             "before the pin: .*is missing.*nothing changed"):
        admin.unpin(store, FEED)
    store.delete(names.manifest_key(FEED, versions[-1]))
    with pytest.raises(feedkit.VersionNotFoundError, match=f"cannot unpin to version "
                                                           f"{versions[-1]}"):
        admin.unpin(store, FEED)
    assert store.get_bytes(names.announcement_key(FEED)) == pinned  # still pinned, unchanged


def test_pin_refuses_a_missing_version_or_blob_and_changes_nothing(store, tmp_path) -> None:
    versions, _ = publish_versions(store, 6, snapshot_every=3)
    before = store_files(tmp_path)
    with pytest.raises(feedkit.VersionNotFoundError, match="no version 7"):
        admin.pin(store, FEED, 7)
    m4 = manifest(store, versions[4])
    assert m4.snapshot is None and m4.delta is not None  # every way to version 4 needs it
    store.delete(m4.delta.key)
    with pytest.raises(feedkit.BlobNotFoundError, match="cannot be loaded"):
        admin.pin(store, FEED, versions[4])
    del before[m4.delta.key]
    assert store_files(tmp_path) == before
    with pytest.raises(feedkit.VersionNotFoundError, match="nothing announced"):
        admin.pin(store, "other", 1)


class RacingStore(LocalStore):
    """A real local store on which something else happens just before a chosen call."""

    def __init__(self, root: Path, before: str, action: Any) -> None:
        super().__init__(root)
        self.before, self.action = before, action

    def _maybe(self, name: str) -> None:
        if name == self.before and self.action is not None:
            action, self.action = self.action, None
            action()

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        self._maybe("replace_if_match")
        return super().replace_if_match(key, data, etag)

    def list(self, prefix: str) -> list[str]:
        if "/snapshots/" in prefix:
            self._maybe("list_blobs")
        return super().list(prefix)


def test_pin_fails_cleanly_when_the_announcement_moves_meanwhile(store, tmp_path) -> None:
    versions, tables = publish_versions(store, 2)
    producer = feedkit.Producer(store, feed=FEED, primary_key="movie_id", indexes=["country"])
    moved: list[int | None] = []
    racing = RacingStore(tmp_path / "store", "replace_if_match",
                         lambda: moved.append(producer.publish(titles_table(50))))
    with pytest.raises(feedkit.ProducerFencedError, match="moved while pinning"):
        admin.pin(racing, FEED, versions[0], reason="x")
    now = announcement(store)
    assert moved[0] is not None and now.version == moved[0] and now.pinned is None
    producer.close()


# -- gc ----------------------------------------------------------------------------------------


def test_gc_keeps_what_retained_versions_need_and_deletes_the_rest(store, tmp_path) -> None:
    versions, tables = publish_versions(store, 11, snapshot_every=4)  # snapshots: 0, 4, 8
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "behind", watch=False) as behind:
        behind.pin(versions[2])  # a consumer still serving an old version
        assert behind.version == versions[2]
        admin.pin(store, FEED, versions[5], reason="rollback")

        before = store_files(tmp_path)
        dry = admin.collect_garbage(store, FEED, keep=2, dry_run=True)
        assert store_files(tmp_path) == before  # a dry run deletes nothing
        # Roots: the 2 newest (9, 10), the pinned 5 and the pin's latest (10). Chains back
        # to the nearest snapshots: 8..10 and 4..5.
        assert dry.roots == sorted({versions[9], versions[10], versions[5]})
        assert dry.retained == [versions[i] for i in (4, 5, 8, 9, 10)]
        assert dry.deleted_versions == [versions[i] for i in (0, 1, 2, 3, 6, 7)]
        doomed = {b.key for b in dry.deleted_blobs}
        kept = {b.key for v in dry.retained for b in (manifest(store, v).snapshot,
                                                      manifest(store, v).delta) if b}
        assert not doomed & kept
        gone = {b.key for i in (0, 1, 2, 3, 6, 7) for b in (manifest(store, versions[i]).snapshot,
                                                          manifest(store, versions[i]).delta) if b}
        assert doomed == gone
        assert dry.deleted_bytes == sum(len(before[names.manifest_key(FEED, v)])
                                        for v in dry.deleted_versions) + sum(
            len(before[k]) for k in doomed)

        done = admin.collect_garbage(store, FEED, keep=2)
        assert done.to_json() == dict(dry.to_json(), dry_run=False)
        after = store_files(tmp_path)
        assert set(before) - set(after) == doomed | {names.manifest_key(FEED, v)
                                                     for v in dry.deleted_versions}
        assert admin.collect_garbage(store, FEED, keep=2).deleted_blobs == []  # nothing left

        # Every retained version still loads in a fresh consumer cache, with the right records.
        for v in dry.retained:
            got = admin.get_record(store, FEED, str(tables[versions.index(v)]["movie_id"][0]),
                                   version=v)
            assert got.record is not None
        # The consumer that held a deleted version moves on to the pinned one. Its first
        # refresh may fail on manifests it remembers from before gc (the loader then forgets
        # them); the next one, as its refresher would retry, succeeds.
        with contextlib.suppress(feedkit.FeedkitError):
            behind.unpin()
        behind.refresh()
        assert behind.version == versions[5]
        assert {k: r._asdict() for k, r in behind.items()} == truth(tables[5], "movie_id")
    admin.unpin(store, FEED)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "fresh", watch=False) as fresh:
        assert fresh.version == versions[10]
        assert {k: r._asdict() for k, r in fresh.items()} == truth(tables[10], "movie_id")


def test_consumers_plan_past_garbage_collected_history(store, tmp_path) -> None:
    """Small deltas: a fresh consumer's planner walks back past the nearest snapshot, into
    versions gc deleted; it must stop there and use the snapshot."""
    versions, tables = publish_versions(store, 7, snapshot_every=4)  # snapshots: 0, 4
    m6 = manifest(store, versions[6])
    assert m6.delta is not None and manifest(store, versions[4]).snapshot is not None
    assert m6.delta.size * 3 < manifest(store, versions[4]).snapshot.size  # the walk goes on
    admin.collect_garbage(store, FEED, keep=1)
    assert not store.exists(names.manifest_key(FEED, versions[3]))
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == versions[6]
        assert {k: r._asdict() for k, r in feed.items()} == truth(tables[6], "movie_id")


def test_gc_deletes_orphan_blobs_only_when_older_than_the_newest_version(store, tmp_path) -> None:
    versions, _ = publish_versions(store, 3)
    old = names.snapshot_key(FEED, versions[0] + 1)  # a failed cycle's upload
    new = names.delta_key(FEED, versions[-1], versions[-1] + 10)  # maybe uploading right now
    other = f"{FEED}/snapshots/notes.txt"  # not a blob name: never touched
    for key in (old, new, other):
        store.put_new_bytes(key, b"x")
    report = admin.collect_garbage(store, FEED, keep=3)
    assert report.deleted_versions == [] and report.deleted_blobs == [admin.DeletedBlob(old, None)]
    assert not store.exists(old) and store.exists(new) and store.exists(other)


def test_gc_deletes_nothing_when_a_pin_moves_to_a_doomed_version_meanwhile(store, tmp_path) -> None:
    versions, _ = publish_versions(store, 6, snapshot_every=3)
    racing = RacingStore(tmp_path / "store", "list_blobs",
                         lambda: admin.pin(store, FEED, versions[0], reason="meanwhile"))
    before = store_files(tmp_path)
    with pytest.raises(feedkit.ProducerFencedError, match="nothing deleted"):
        admin.collect_garbage(racing, FEED, keep=1)
    after = store_files(tmp_path)
    assert set(after) == set(before)  # only the announcement changed
    assert announcement(store).version == versions[0]
    report = admin.collect_garbage(store, FEED, keep=1)  # run again: the pin is kept
    assert versions[0] in report.retained


def test_gc_refuses_bad_arguments_and_broken_stores(store) -> None:
    versions, _ = publish_versions(store, 3, snapshot_every=10)
    with pytest.raises(feedkit.ConfigurationError, match="keep must be at least 1"):
        admin.collect_garbage(store, FEED, keep=0)
    store.delete(names.manifest_key(FEED, versions[0]))  # the only snapshot's manifest
    with pytest.raises(feedkit.IntegrityError, match="no reachable snapshot"):
        admin.collect_garbage(store, FEED, keep=1)
    assert store.exists(names.manifest_key(FEED, versions[1]))


def leave_temporary(store_root: Path, key: str, data: bytes, *, age: float) -> Path:
    """A temporary file as LocalStore names its writes (``.{name}.{12 hex}.tmp``), last
    written ``age`` seconds ago: what a write killed or failed midway leaves."""
    path = store_root / key
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    then = tmp.stat().st_mtime - age
    os.utime(tmp, (then, then))
    return tmp


def test_gc_removes_temporary_files_failed_writes_left(store, tmp_path) -> None:
    versions, _ = publish_versions(store, 2)
    root = tmp_path / "store"
    m = manifest(store, versions[-1])
    partial = store.get_bytes(m.delta.key)[:100]
    hour = admin.TEMP_AGE
    old = [leave_temporary(root, names.snapshot_key(FEED, versions[-1] + 1), partial, age=hour),
           leave_temporary(root, names.manifest_key(FEED, versions[-1] + 1), b"{", age=2 * hour),
           leave_temporary(root, names.announcement_key(FEED), b"", age=3 * hour)]
    in_flight = leave_temporary(root, names.delta_key(FEED, versions[-1], versions[-1] + 1),
                                partial, age=60)
    other_feed = leave_temporary(root, names.snapshot_key("other", 5), b"x", age=2 * hour)
    not_ours = root / FEED / "snapshots" / ".notes.tmp"  # not a temporary's name
    not_ours.write_bytes(b"x")
    os.utime(not_ours, (0, 0))

    dry = admin.collect_garbage(store, FEED, keep=5, dry_run=True)
    assert sorted(t.key for t in dry.deleted_temporaries) == sorted(
        str(p.relative_to(root)) for p in old)
    assert dry.deleted_versions == [] and dry.deleted_blobs == []
    assert dry.deleted_bytes == len(partial) + 1
    assert all(p.exists() for p in old)  # a dry run deletes nothing
    assert dry.to_json()["deleted_temporaries"] == [{"key": t.key, "size": t.size}
                                                   for t in dry.deleted_temporaries]

    done = admin.collect_garbage(store, FEED, keep=5)
    assert done.deleted_temporaries == dry.deleted_temporaries
    assert not any(p.exists() for p in old)
    assert in_flight.exists() and other_feed.exists() and not_ours.exists()
    assert admin.collect_garbage(store, FEED, keep=5).deleted_temporaries == []
    # temp_age=0: every temporary of the feed (when nothing writes meanwhile).
    assert [t.key for t in admin.collect_garbage(store, FEED, keep=5, temp_age=0)
            .deleted_temporaries] == [str(in_flight.relative_to(root))]
    assert not in_flight.exists() and other_feed.exists()
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == versions[-1]
    for bad in (-1, float("nan"), "60", True):
        with pytest.raises(feedkit.ConfigurationError, match="temp_age"):
            admin.collect_garbage(store, FEED, keep=5, temp_age=bad)
