"""Fuzzing the manifest and announcement parsers (``Manifest.from_bytes``,
``Announcement.from_bytes``) with mutations of documents feedkit wrote, random JSON
documents, deep nesting and random bytes.

The property: a parse raises ``IntegrityError`` naming the object, or gives a document
whose every field a consumer uses is of the type and range feedkit writes (so that
no later use of it, in a name, a plan or a comparison, can fail), and which survives
a round trip through ``to_bytes``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedkit import IntegrityError
from feedkit.blobs import BlobInfo
from feedkit.manifest import Announcement, Manifest, Pin
from feedkit.names import MAX_VERSION, check_object_name, validate_feed
from tests.fuzz.support import (
    DEEP_JSON,
    TIMEOUT,
    apply_edits,
    byte_mutations,
    fuzz_settings,
    json_edits,
)

pytestmark = pytest.mark.timeout(TIMEOUT)

WHERE = "fuzz.feed/versions/00000000000000000009.json"
SHA = "ab" * 32


def _blob(key: str, size: int, raw: int) -> BlobInfo:
    return BlobInfo(key, size, SHA, raw)


MANIFESTS = [
    Manifest(feed="fuzz.feed", version=9, parent=None, nearest_snapshot=9, record_count=3,
             state_digest=0x0123456789ABCDEF,
             key={"columns": ["id"], "parts": ["int"]},
             schema=[{"name": "id", "kind": "int", "type": "int64", "nullable": False}],
             index_fields=[], snapshot=_blob("fuzz.feed/snapshots/00000000000000000009.snapshot.zst",
                                             120, 900)).to_bytes(),
    Manifest(feed="fuzz.feed", version=9, parent=8, nearest_snapshot=5, record_count=2**40,
             state_digest=2**64 - 1, key={"columns": ["a", "b"], "parts": ["int", "str"]},
             schema=[{"name": "a", "kind": "int", "type": "int64", "nullable": False},
                     {"name": "b", "kind": "str", "type": "string", "nullable": True}],
             index_fields=["b"],
             delta=_blob("fuzz.feed/deltas/00000000000000000008-00000000000000000009.delta.zst",
                         50, 400),
             source={"table": "db.t", "snapshot_id": 7}, signature={"alg": "x", "mac": "y"},
             ).to_bytes(),
]
ANNOUNCEMENTS = [
    Announcement("fuzz.feed", 9, producer="host:1:abcd1234").to_bytes(),
    Announcement("fuzz.feed", MAX_VERSION, pinned=Pin(at="2026-01-01T00:00:00.000+00:00",
                                                      latest=12, by="me@host", reason="bad")
                 ).to_bytes(),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _valid_version(v: Any) -> bool:
    return type(v) is int and 0 < v <= MAX_VERSION


def check_manifest(data: bytes) -> None:
    try:
        m = Manifest.from_bytes(data, WHERE)
    except IntegrityError as exc:
        assert WHERE in str(exc)
        return
    assert validate_feed(m.feed) == m.feed
    assert _valid_version(m.version) and _valid_version(m.nearest_snapshot)
    assert m.nearest_snapshot <= m.version
    assert m.parent is None or (_valid_version(m.parent) and m.parent < m.version)
    assert type(m.record_count) is int and 0 <= m.record_count <= MAX_VERSION
    assert type(m.state_digest) is int and 0 <= m.state_digest < 2**64
    assert isinstance(m.key, dict) and isinstance(m.schema, list)
    assert isinstance(m.index_fields, list) and isinstance(m.source, dict | None)
    assert m.snapshot is not None or m.delta is not None
    assert m.delta is None or m.parent is not None
    for blob in (m.snapshot, m.delta):
        if blob is not None:
            check_object_name(blob.key, "test")  # a name that stays inside the store
            assert type(blob.size) is int and 0 <= blob.size < 2**63
            assert type(blob.raw_size) is int and 0 <= blob.raw_size < 2**63
            assert len(blob.sha256) == 64 and int(blob.sha256, 16) >= 0
    assert Manifest.from_bytes(m.to_bytes(), WHERE) == m


def check_announcement(data: bytes) -> None:
    try:
        a = Announcement.from_bytes(data, WHERE)
    except IntegrityError as exc:
        assert WHERE in str(exc)
        return
    assert validate_feed(a.feed) == a.feed and _valid_version(a.version)
    assert isinstance(a.announced_at, str) and isinstance(a.producer, str | None)
    assert a.pinned is None or type(a.pinned.latest) is int
    assert Announcement.from_bytes(a.to_bytes(), WHERE) == a


def test_the_seeds_parse() -> None:
    for data in MANIFESTS:
        check_manifest(data)
        Manifest.from_bytes(data, WHERE)
    for data in ANNOUNCEMENTS:
        check_announcement(data)
        Announcement.from_bytes(data, WHERE)


@fuzz_settings(400)
@given(st.data())
def test_edited_manifests(data: st.DataObject) -> None:
    """Fields of real manifests replaced by huge, negative or ill-typed values, or removed."""
    doc = json.loads(data.draw(st.sampled_from(MANIFESTS)))
    check_manifest(json.dumps(apply_edits(doc, data.draw(json_edits(doc)))).encode())


@fuzz_settings(200)
@given(st.data())
def test_edited_announcements(data: st.DataObject) -> None:
    doc = json.loads(data.draw(st.sampled_from(ANNOUNCEMENTS)))
    check_announcement(json.dumps(apply_edits(doc, data.draw(json_edits(doc)))).encode())


@fuzz_settings(300)
@given(st.data())
def test_damaged_bytes(data: st.DataObject) -> None:
    """Flipped, truncated and spliced documents, parsed as both kinds."""
    source = data.draw(st.sampled_from(MANIFESTS + ANNOUNCEMENTS))
    damaged = data.draw(byte_mutations())(source)
    check_manifest(damaged)
    check_announcement(damaged)


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=300), st.sampled_from(DEEP_JSON),
                 json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(sorted(json.loads(MANIFESTS[1]))), json_values,
                                 max_size=16).map(lambda d: json.dumps(d).encode())))
def test_random_documents(data: bytes) -> None:
    """Random bytes, deep nesting, huge numbers, and objects with the right field names."""
    check_manifest(data)
    check_announcement(data)


@pytest.mark.parametrize("field, value", [
    ("version", 1.5), ("version", "9"), ("version", True), ("version", 2**63),
    ("parent", 9), ("parent", 10), ("nearest_snapshot", 10), ("record_count", -1),
    ("record_count", 2**63), ("state_digest", "-000000000000001"), ("state_digest", "0x1"),
    ("state_digest", "0123456789ABCDEF"), ("schema", {"a": 1}), ("source", [1]),
])
def test_values_int_and_int16_would_have_taken_are_refused(field: str, value: Any) -> None:
    doc = json.loads(MANIFESTS[1])
    doc[field] = value
    with pytest.raises(IntegrityError, match=field):
        Manifest.from_bytes(json.dumps(doc).encode(), WHERE)


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "fuzz.feed//x", "a\0b",
                                 "x" * 2000, 7, ""])
def test_a_blob_key_outside_the_store_is_refused(key: Any) -> None:
    doc = json.loads(MANIFESTS[0])
    doc["snapshot"]["key"] = key
    with pytest.raises(IntegrityError, match="blob key"):
        Manifest.from_bytes(json.dumps(doc).encode(), WHERE)


@pytest.mark.parametrize("field, value", [("size", -1), ("raw_size", 10.5), ("raw_size", 2**63),
                                          ("sha256", "AB" * 32), ("sha256", "ab")])
def test_blob_sizes_and_checksums_are_checked(field: str, value: Any) -> None:
    doc = json.loads(MANIFESTS[0])
    doc["snapshot"][field] = value
    with pytest.raises(IntegrityError, match=field):
        Manifest.from_bytes(json.dumps(doc).encode(), WHERE)


def test_deep_json_is_an_integrity_error() -> None:
    for data in DEEP_JSON:
        with pytest.raises(IntegrityError):
            Manifest.from_bytes(data, WHERE)
        with pytest.raises(IntegrityError):
            Announcement.from_bytes(data, WHERE)
