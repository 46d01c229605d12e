"""Columnar snapshot blobs (docs/FORMAT.md, 11): what a format-2 version's manifest names
as its snapshot, and what a consumer rebuilds its state file from.

A real producer publishes; the blob is then damaged and re-sealed (the manifest's
SHA-256, size and, where the test says, raw size, record count and digest made to
match), so that only the rebuild's own checks can refuse it. A consumer must refuse it
with an ``IntegrityError`` naming the damage and keep serving the version it had, with
nothing of the new version left in its cache folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import zstandard

import feedkit
from feedkit import IntegrityError, _native, names
from feedkit.format import RecordSet, StateFile, write_snapshot_blob
from feedkit.keys import xxh3
from feedkit.merge import base_records

FEED = "columnar.feed"
WORDS = ["alpha", "beta", "gamma"]


def _table(n: int = 60, extra: bool = False) -> pa.Table:
    data: dict[str, Any] = {
        "id": pa.array([3 * i - 50 for i in range(n)], pa.int64()),
        "word": pa.array([WORDS[i % 3] for i in range(n)], pa.string()),
        "tags": pa.array([[WORDS[(i // 3**e) % 3] for e in range(1 + i % 5)] for i in range(n)],
                         pa.list_(pa.string())),
        "title": pa.array([f"title {i}" for i in range(n)], pa.string()),
    }
    if extra:  # a new column: the version is a snapshot without a delta
        data["extra"] = pa.array([i * 7 for i in range(n)], pa.int64())
    return pa.table(data)


def _manifest(store: feedkit.BlobStore, version: int) -> dict[str, Any]:
    return json.loads(store.get_bytes(names.manifest_key(FEED, version)))


def test_a_format2_snapshot_is_a_columnar_blob_of_the_canonical_records(tmp_path: Path) -> None:
    store = feedkit.open_store(f"file://{tmp_path}/store")
    table = _table(2000)
    with feedkit.Producer(store, feed=FEED, primary_key="id", indexes=["word"],
                          work_dir=tmp_path / "work") as producer:
        v1 = producer.publish(table)
        own = StateFile(producer._base_path(v1))  # the producer's own (format-1) base
        canonical = int(base_records(own).lengths.sum())
    m = _manifest(store, v1)
    blob = store.get_bytes(m["snapshot"]["key"])
    assert m["format"] == 2 and blob[:8] == b"FEEDKITC"
    assert m["snapshot"]["raw_size"] == canonical and m["snapshot"]["size"] == len(blob)
    (head,) = struct.unpack_from("<I", blob, 8)
    header = json.loads(blob[12:12 + head])
    assert (header["feed"], header["version"], header["kind"], header["record_count"]) == \
        (FEED, v1, "base", 2000)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        base = feed._state.base
        assert base.format == 2 and feed._state.overlay is None
        base.verify(records=True)
        want = table.to_pylist()
        assert [feed.get(r["id"])._asdict() for r in want] == want
        assert sorted(r.id for r in feed.find("word", "beta")) == \
            [r["id"] for r in want if r["word"] == "beta"]
        # the blob is smaller than the state file it rebuilds, compressed whole
        packed = zstandard.ZstdCompressor(level=3).compress(base.path.read_bytes())
        assert len(blob) < len(packed)


def test_the_blob_rebuilds_every_key_kind(tmp_path: Path) -> None:
    """Str, bytes and composite keys: the consumer derives the same slot hashes as the
    producer's encoder (lookups find every record)."""
    n = 500
    table = pa.table({"s": [f"key {i}" for i in range(n)], "b": [b"%d" % i for i in range(n)],
                      "a": [i % 7 for i in range(n)], "c": [i // 7 for i in range(n)],
                      "v": [WORDS[i % 3] for i in range(n)]})
    for i, pk in enumerate(["s", "b", ("a", "c")]):
        store = feedkit.open_store(f"file://{tmp_path}/store{i}")
        with feedkit.Producer(store, feed=FEED, primary_key=pk, work_dir=tmp_path / f"w{i}") as p:
            p.publish(table)
        with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / f"c{i}", watch=False) as feed:
            assert feed._state.base.format == 2
            for row in table.to_pylist():
                key = tuple(row[c] for c in pk) if isinstance(pk, tuple) else row[pk]
                assert feed.get(key)._asdict() == row, (pk, key)
            assert len(feed) == n


# -- damaged blobs, re-sealed ------------------------------------------------------------


def _reseal(store: feedkit.BlobStore, version: int, damage: Callable[[bytes], bytes],
            manifest_edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Version ``version``'s snapshot blob replaced by ``damage`` of it, the manifest's
    SHA-256 and size made to match (then ``manifest_edit`` applied to the manifest)."""
    key = names.manifest_key(FEED, version)
    manifest = json.loads(store.get_bytes(key))
    info = manifest["snapshot"]
    assert manifest["delta"] is None and manifest["format"] == 2
    blob = damage(store.get_bytes(info["key"]))
    store.delete(info["key"])
    store.put_new_bytes(info["key"], blob)
    info.update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    if manifest_edit is not None:
        manifest_edit(manifest)
    store.delete(key)
    store.put_new_bytes(key, json.dumps(manifest, indent=1, sort_keys=True).encode())


def _header_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        (n,) = struct.unpack_from("<I", blob, 8)
        header = json.loads(blob[12:12 + n])
        edit(header)
        head = json.dumps(header).encode()
        return blob[:8] + struct.pack("<I", len(head)) + head + blob[12 + n:]
    return apply


def _flip(at: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        data = bytearray(blob)
        data[at(blob)] ^= 0x41
        return bytes(data)
    return apply


def _body_at(blob: bytes, offset: int) -> int:
    (n,) = struct.unpack_from("<I", blob, 8)
    return 12 + n + offset


def _duplicated_record(tmp_path: Path) -> tuple[Callable[[bytes], bytes], Callable[[dict[str, Any]], None]]:
    """A blob holding one record twice, count, digest and raw size made to match: only
    the rebuild's placement sees two records with one key."""
    made: dict[str, Any] = {}

    def damage(blob: bytes) -> bytes:
        (n,) = struct.unpack_from("<I", blob, 8)
        header = json.loads(blob[12:12 + n])
        files = sorted((tmp_path / "work").glob("*.state"))
        rs = base_records(StateFile(files[-1]))
        twice = np.concatenate([np.arange(len(rs)), [0]])
        dup = RecordSet(keys=rs.keys[twice], starts=rs.starts[twice], lengths=rs.lengths[twice],
                        sources=rs.sources, source=None if rs.source is None else rs.source[twice])
        records = [bytes(memoryview(rs.sources[0 if rs.source is None else int(rs.source[i])])
                         [int(rs.starts[i]):int(rs.starts[i] + rs.lengths[i])]) for i in twice]
        header["record_count"] = len(records)
        digest = 0
        for r in records:
            digest = (digest + xxh3(r)) % 2**64
        header["state_digest"] = f"{digest:016x}"
        out = tmp_path / "dup.blob"
        info = write_snapshot_blob(out, header, dup, "k", 3)
        made.update(count=len(records), digest=digest, raw=info.raw_size)
        return out.read_bytes()

    def edit(manifest: dict[str, Any]) -> None:
        manifest.update(record_count=made["count"], state_digest=f"{made['digest']:016x}")
        manifest["snapshot"]["raw_size"] = made["raw"]

    return damage, edit


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], Callable[[dict[str, Any]], None] | None, str]] = {
    "no magic": (lambda b: b"FEEDKITX" + b[8:], None, "no FEEDKITC magic"),
    "a header longer than the blob": (lambda b: b[:8] + struct.pack("<I", len(b)) + b[12:], None,
                                      "ends inside its"),
    "a header of another feed": (_header_edit(lambda h: h.update(feed="other.feed")), None,
                                 "does not match its manifest"),
    "a header of another record count": (_header_edit(lambda h: h.update(record_count=61)), None,
                                         "does not match its manifest"),
    "a header that is not JSON": (_header_edit(lambda h: h.update(schema="x")), None,
                                  "its header is not one feedkit writes"),
    "a body without its magic": (_flip(lambda b: _body_at(b, 0)), None, "no FKC1 magic"),
    "a truncated body": (lambda b: b[:-7], None, "columnar body"),
    "a damaged stream": (_flip(lambda b: len(b) - 3), None, "snapshot blob"),
    "a blob longer than its manifest says": (
        lambda b: b + b"x", lambda m: m["snapshot"].update(size=m["snapshot"]["size"] - 1),
        "bytes, the manifest says"),
    "a raw size the records do not have": (
        lambda b: b, lambda m: m["snapshot"].update(raw_size=m["snapshot"]["raw_size"] + 1),
        "the manifest says"),
    "a record count the records do not have": (
        lambda b: b, lambda m: m.update(record_count=m["record_count"] - 1),
        "does not match its manifest"),
}


@pytest.mark.parametrize("name", [*DAMAGE, "two records with one key"])
def test_a_consumer_refuses_a_damaged_blob_and_keeps_serving(tmp_path: Path, name: str) -> None:
    if name == "two records with one key":
        damage, edit = _duplicated_record(tmp_path)
        says = "two records with one key"
    else:
        damage, edit, says = DAMAGE[name]
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with feedkit.Producer(store, feed=FEED, primary_key="id", work_dir=tmp_path / "work") as producer:
        v1 = producer.publish(_table())
        with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
            assert feed.version == v1 and feed.get(-50).title == "title 0"
            v2 = producer.publish(_table(extra=True))
            assert v2 is not None
            _reseal(store, v2, damage, edit)
            with pytest.raises(IntegrityError, match=re.escape(says)) as caught:
                feed.refresh()
            assert FEED in str(caught.value)
            assert feed.version == v1
            assert feed.get(-50) == (-50, "alpha", ["alpha"], "title 0")
            assert len(list(feed.items())) == 60
            assert not any(p.name.startswith(f"{v2:020d}") for p in (tmp_path / "cache").rglob("*"))


def test_the_native_reader_refuses_heads_that_are_not_blobs(tmp_path: Path) -> None:
    for data, says in [(b"", "no FEEDKITC magic"), (b"FEEDKITC\x01", "no FEEDKITC magic"),
                       (b"FEEDKITC\x05\x00\x00\x00{}", "ends inside its 5-byte header"),
                       (b"FEEDKITC\xff\xff\xff\x7f", "a header of")]:
        path = tmp_path / "blob"
        path.write_bytes(data)
        with pytest.raises(IntegrityError, match=re.escape(says)):
            _native.snapshot_blob_header(path)
