"""Operating a feed in a store: list and inspect versions, read one record, diff two versions,
pin and unpin (rollback), and garbage-collect. The logic behind the ``feedkit`` command line
(:mod:`feedkit.cli`), returning data classes that also render as JSON (``to_json``).

Nothing here imports pyarrow or pyiceberg: it works with a consumer-only install. It sits
above both sides of feedkit and borrows the consumer's loader and planner, so that it loads
and plans versions exactly as consumers do.

A pin is recorded in the announcement (:class:`feedkit.manifest.Pin`): consumers follow it
like any announcement, and producers publish nothing while it is there
(:class:`feedkit.FeedPinnedError`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import math
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from feedkit import codec, names
from feedkit.consumer.cache import FeedCache
from feedkit.consumer.loader import Loader
from feedkit.consumer.planner import plan
from feedkit.consumer.state import State
from feedkit.errors import (
    BlobNotFoundError,
    ConfigurationError,
    FeedkitError,
    IntegrityError,
    KeyTypeError,
    ProducerFencedError,
    VersionNotFoundError,
)
from feedkit.format import TOMBSTONE, StateFile, byte_ranges
from feedkit.keys import KeySpec
from feedkit.manifest import Announcement, Manifest, Pin, utc_now
from feedkit.store import BlobStore

__all__ = [
    "AnnouncementChange",
    "ChangedRecord",
    "DeletedBlob",
    "FeedVersions",
    "GcReport",
    "Inspection",
    "Lookup",
    "VersionDiff",
    "VersionInfo",
    "collect_garbage",
    "diff_versions",
    "get_record",
    "inspect_version",
    "jsonable",
    "list_versions",
    "operator",
    "parse_key",
    "pin",
    "read_announcement",
    "unpin",
]

_COMPARE_BYTES = 8 << 20  # record bytes compared per numpy pass in diff_versions


# -- reading the store ----------------------------------------------------------------------


def read_announcement(store: BlobStore, feed: str) -> tuple[Announcement, str] | None:
    """The feed's announcement and its ETag; None when the feed was never announced.

    Raises:
        ConfigurationError: an invalid feed name.
        IntegrityError: the announcement is unreadable.
        StoreError: the store failed.
    """
    key = names.announcement_key(names.validate_feed(feed))
    try:
        data, etag = store.read_if_changed(key) or (b"", "")
    except BlobNotFoundError:
        return None
    return Announcement.from_bytes(data, key), etag


def _manifest(store: BlobStore, feed: str, version: int) -> Manifest:
    """Read one manifest (what ``Loader.manifest`` does, without a cache folder).

    Raises:
        VersionNotFoundError: no manifest for ``version``.
        IntegrityError: unreadable, or it names another feed or version.
    """
    key = names.manifest_key(feed, version)
    try:
        data = store.get_bytes(key)
    except BlobNotFoundError as exc:
        raise VersionNotFoundError(f"feed {feed!r}: no version {version} ({key})") from exc
    m = Manifest.from_bytes(data, key)
    if m.feed != feed or m.version != version:
        raise IntegrityError(f"manifest {key} names feed {m.feed!r} version {m.version}")
    return m


def _listed_versions(store: BlobStore, feed: str) -> list[int]:
    """Every version with a manifest, ascending."""
    found = (names.parse_manifest_key(k) for k in store.list(names.manifests_prefix(feed)))
    return sorted(v for v in found if v is not None)


def _target(store: BlobStore, feed: str, version: int | None) -> tuple[int, Announcement | None]:
    """``version``, or the announced one when None."""
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    if version is not None:
        return names.validate_version(version), announcement
    if announcement is None:
        raise VersionNotFoundError(f"feed {feed!r}: nothing announced in {store.url}; "
                                   "name a version")
    return announcement.version, announcement


# -- versions and inspect ---------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """One line of ``feedkit versions``."""

    version: int
    created_at: str
    parent: int | None
    record_count: int
    snapshot_size: int | None  # bytes of the snapshot blob; None: no snapshot
    delta_size: int | None  # bytes of the delta blob; None: no delta
    iceberg_snapshot: int | None  # the manifest's source.snapshot_id, when recorded
    source: dict[str, Any] | None
    announced: bool
    pinned: bool  # announced, and held there by a pin
    latest: bool  # the version announced before the pin (``feedkit unpin`` returns to it)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "created_at": self.created_at, "parent": self.parent,
                "record_count": self.record_count, "snapshot_size": self.snapshot_size,
                "delta_size": self.delta_size, "iceberg_snapshot": self.iceberg_snapshot,
                "source": self.source, "announced": self.announced, "pinned": self.pinned,
                "latest": self.latest}


@dataclass(frozen=True)
class FeedVersions:
    """Every version of a feed, newest first, and its announcement."""

    feed: str
    announcement: Announcement | None
    versions: list[VersionInfo]

    def to_json(self) -> dict[str, Any]:
        a = self.announcement
        return {"feed": self.feed, "announced": a.version if a else None,
                "pinned": a.pinned.to_json() if a and a.pinned else None,
                "versions": [v.to_json() for v in self.versions]}


def list_versions(store: BlobStore, feed: str, *, limit: int | None = None) -> FeedVersions:
    """Every version in the store (from the manifests listing), newest first.

    Args:
        store: the store.
        feed: the feed.
        limit: only the newest ``limit`` versions (None: all).

    Raises:
        VersionNotFoundError: the store holds neither a manifest nor an announcement of
            ``feed`` (a misspelt name, or the wrong store).
        IntegrityError: a manifest or the announcement is unreadable.
        StoreError: the store failed.
    """
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    listed = _listed_versions(store, feed)
    if not listed and announcement is None:
        raise VersionNotFoundError(f"feed {feed!r}: no versions in {store.url}")
    listed.reverse()
    if limit is not None:
        listed = listed[:max(limit, 0)]
    pin = announcement.pinned if announcement else None
    rows = []
    for version in listed:
        m = _manifest(store, feed, version)
        src = m.source if isinstance(m.source, dict) else None
        snapshot_id = src.get("snapshot_id") if src else None
        announced = announcement is not None and announcement.version == version
        rows.append(VersionInfo(
            version=version, created_at=m.created_at, parent=m.parent,
            record_count=m.record_count,
            snapshot_size=m.snapshot.size if m.snapshot else None,
            delta_size=m.delta.size if m.delta else None,
            iceberg_snapshot=snapshot_id if isinstance(snapshot_id, int) else None,
            source=src, announced=announced, pinned=announced and pin is not None,
            latest=pin is not None and pin.latest == version))
    return FeedVersions(feed, announcement, rows)


@dataclass(frozen=True)
class Inspection:
    """One version's manifest, where it stands, and what a fresh consumer fetches for it."""

    manifest: Manifest
    announced: bool
    pin: Pin | None  # the pin holding the feed at this version, if it is pinned
    fetch_snapshot: int | None  # the snapshot a fresh consumer starts from
    fetch_deltas: list[int]  # then the deltas it applies (their versions)
    fetch_bytes: int | None
    fetch_error: str | None  # why no fresh consumer could load it (missing or broken chain)

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "feed": m.feed, "version": m.version, "announced": self.announced,
            "pinned": self.pin.to_json() if self.pin else None, "created_at": m.created_at,
            "parent": m.parent, "nearest_snapshot": m.nearest_snapshot,
            "record_count": m.record_count, "state_digest": f"{m.state_digest:016x}",
            "key": m.key, "index_fields": m.index_fields, "schema": m.schema,
            "snapshot": m.snapshot.to_json() if m.snapshot else None,
            "delta": m.delta.to_json() if m.delta else None, "source": m.source,
            "fetch": {"snapshot": self.fetch_snapshot, "deltas": self.fetch_deltas,
                      "bytes": self.fetch_bytes, "error": self.fetch_error},
        }


def inspect_version(store: BlobStore, feed: str, version: int | None = None) -> Inspection:
    """The manifest of ``version`` (default: the announced one) and how it loads.

    Raises:
        VersionNotFoundError: no such version, or nothing announced and no version given.
        IntegrityError: the manifest or the announcement is unreadable.
        StoreError: the store failed.
    """
    version, announcement = _target(store, feed, version)
    m = _manifest(store, feed, version)
    announced = announcement is not None and announcement.version == version
    try:
        p = plan(m, None, partial(_manifest, store, feed))
    except FeedkitError as exc:
        fetch: tuple[Any, ...] = (None, [], None, str(exc))
    else:
        fetch = (p.snapshot.version if p.snapshot else None, [d.version for d in p.deltas],
                 p.cost, None)
    return Inspection(m, announced, announcement.pinned if announced and announcement else None,
                      *fetch)


# -- one record --------------------------------------------------------------------------------


def parse_key(text: str, key: dict[str, Any]) -> Any:
    """A key typed on a command line, parsed by the feed's key parts (``manifest.key``).

    - an ``int`` part: decimal digits, optionally signed (``-12``);
    - a ``str`` part: the text as is;
    - a ``bytes`` part: hex digits, optionally after ``0x`` (``0a1b``);
    - a composite key: a JSON array with one element per part (``[42, "DE"]``; a bytes
      part is a hex string there), or the parts separated by commas (``42,DE``; the last
      part keeps any further commas, so use the JSON form when an earlier part has one).

    Raises:
        KeyTypeError: the text cannot be a key of the feed (names the column and its kind).
    """
    spec = KeySpec.from_json(key)
    if not spec.composite:
        return _parse_part(text, spec.parts[0], spec.columns[0])
    n = len(spec.parts)
    described = ", ".join(f"{c}: {k}" for c, k in zip(spec.columns, spec.parts, strict=True))
    if text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise KeyTypeError(f"key {text!r}: not a JSON array ({exc})") from None
        if not isinstance(doc, list) or len(doc) != n:
            raise KeyTypeError(f"key {text!r}: a JSON array of {n} parts expected ({described})")
        parts = []
        for value, kind, column in zip(doc, spec.parts, spec.columns, strict=True):
            if kind == "int" and type(value) is int:
                parts.append(value)
            elif isinstance(value, str):
                parts.append(_parse_part(value, kind, column))
            else:
                raise KeyTypeError(f"key {text!r}: part {column!r} ({kind}) cannot be "
                                   f"{json.dumps(value)}")
        return tuple(parts)
    pieces = text.split(",", n - 1)
    if len(pieces) != n:
        raise KeyTypeError(f"key {text!r}: {n} comma-separated parts expected ({described}), "
                           "or a JSON array")
    return tuple(_parse_part(p, k, c) for p, k, c in zip(pieces, spec.parts, spec.columns,
                                                          strict=True))


def _parse_part(text: str, kind: str, column: str) -> Any:
    if kind == "str":
        return text
    try:
        if kind == "int":
            return int(text)
        digits = text[2:] if text.lower().startswith("0x") else text
        return bytes.fromhex(digits)
    except ValueError:
        how = "an integer" if kind == "int" else "hex digits (e.g. 0a1b)"
        raise KeyTypeError(f"key column {column!r} is {kind}: expected {how}, "
                           f"got {text!r}") from None


@contextlib.contextmanager
def _cache_dir(cache_dir: str | Path | None) -> Iterator[Path]:
    """``cache_dir``, or a temporary folder removed afterwards."""
    if cache_dir is not None:
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="feedkit-cli-") as tmp:
        yield Path(tmp)


def _record_json(rec: Any, names_: list[str]) -> dict[str, Any]:
    return {name: jsonable(value) for name, value in zip(names_, rec, strict=True)}


@dataclass(frozen=True)
class Lookup:
    """The answer of :func:`get_record`."""

    feed: str
    version: int
    key: Any
    record: dict[str, Any] | None  # column -> JSON value (see :func:`jsonable`); None: absent


def get_record(store: BlobStore, feed: str, key: str | Any, *, version: int | None = None,
               cache_dir: str | Path | None = None) -> Lookup:
    """Load ``version`` (default: the announced one) as a consumer does and look ``key`` up.

    Args:
        store: the store.
        feed: the feed.
        key: a key, or its text (parsed with :func:`parse_key` by the manifest's key parts).
        version: the version to read; None reads the announced one.
        cache_dir: a consumer cache folder to load into (kept, and reused next time);
            None loads into a temporary folder, removed afterwards.

    Raises:
        VersionNotFoundError: no such version, or nothing announced and no version given.
        KeyTypeError: the key cannot be a key of the feed.
        IntegrityError: a blob failed verification.
        StoreError: the store or the cache folder failed.
    """
    version, _ = _target(store, feed, version)
    m = _manifest(store, feed, version)
    if isinstance(key, str):
        key = parse_key(key, m.key)
    with _cache_dir(cache_dir) as folder:
        state = State(Loader(store, feed, FeedCache(folder, feed)).load(version, None))
        rec = state.get(key)
        return Lookup(feed, version, key, None if rec is None else _record_json(rec, state.names))


# -- JSON values ------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A decoded value as JSON can hold it.

    - ``datetime``, ``date``, ``time``: ISO 8601 strings (``isoformat()``; an aware
      timestamp keeps its UTC offset, the zone's name is not kept);
    - ``Decimal``: its exact string (``"1.50"``); ``UUID``: the canonical string;
    - bytes: lower-case hex; non-finite floats: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
    - maps: objects whose keys are strings (a non-string key is written as its JSON text,
      e.g. ``1`` becomes ``"1"``); lists and tuples: arrays;
    - an unknown msgpack ext value: ``{"ext": code, "hex": payload}``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, _dt.date | _dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "hex": bytes(value.data).hex()}
    return str(value)


def _json_key(key: Any) -> str:
    value = jsonable(key)
    return value if isinstance(value, str) else json.dumps(value)


# -- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangedRecord:
    key: Any
    old: dict[str, Any]
    new: dict[str, Any]


@dataclass(frozen=True)
class VersionDiff:
    """How version ``new`` differs from version ``old``, record by record."""

    feed: str
    old: int
    new: int
    added: int
    removed: int
    changed: int
    unchanged: int
    schema_changed: bool  # the columns differ: every record counts as changed
    added_keys: list[Any] = field(default_factory=list)  # examples, at most ``show``
    removed_keys: list[Any] = field(default_factory=list)
    changed_records: list[ChangedRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "feed": self.feed, "old": self.old, "new": self.new, "added": self.added,
            "removed": self.removed, "changed": self.changed, "unchanged": self.unchanged,
            "schema_changed": self.schema_changed,
            "examples": {
                "added": [jsonable(k) for k in self.added_keys],
                "removed": [jsonable(k) for k in self.removed_keys],
                "changed": [{"key": jsonable(c.key), "old": c.old, "new": c.new}
                            for c in self.changed_records],
            },
        }


@dataclass
class _Live:
    """The live records of one state: slot key, file, record range, in slot-key order."""

    files: list[StateFile]
    keys: np.ndarray  # int64 (int keys, or the bits of uint64 key hashes)
    file: np.ndarray  # index into files
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, files: list[StateFile]) -> _Live:
        parts = []
        if len(files) == 2:
            overlay, base = files
            o = overlay.occupied()
            parts.append(o[overlay.heap[overlay.record_ranges(o)[0]] != TOMBSTONE])
            b = base.occupied()
            parts.append(b[overlay.probe_many(base.slot_keys(b)) < 0])
        else:
            parts.append(files[0].occupied())
        keys, which, starts, lengths = [], [], [], []
        for i, (sf, slots) in enumerate(zip(files, parts, strict=True)):
            keys.append(sf.slot_keys(slots).view(np.int64))
            which.append(np.full(len(slots), i, dtype=np.int64))
            s, n = sf.record_ranges(slots)
            starts.append(s)
            lengths.append(n)
        k = np.concatenate(keys)
        order = np.argsort(k, kind="stable")
        return cls(files, k[order], np.concatenate(which)[order],
                   np.concatenate(starts)[order], np.concatenate(lengths)[order])

    def record(self, i: int) -> Any:
        sf = self.files[int(self.file[i])]
        a = int(self.starts[i])
        data = sf.mm[a:a + int(self.lengths[i])]
        return codec.unpack_record(data, use_list=bool(sf.header["use_list"]))


def _same_bytes(a: _Live, ia: np.ndarray, b: _Live, ib: np.ndarray) -> np.ndarray:
    """Per pair (a record of ``a``, one of ``b``): are their bytes equal? Vectorised, in
    passes of at most ``_COMPARE_BYTES`` bytes."""
    same = np.zeros(len(ia), dtype=bool)
    equal_length = np.flatnonzero(a.lengths[ia] == b.lengths[ib])
    for fa in range(len(a.files)):
        for fb in range(len(b.files)):
            pick = equal_length[(a.file[ia[equal_length]] == fa) & (b.file[ib[equal_length]] == fb)]
            if not len(pick):
                continue
            heap_a, heap_b = a.files[fa].heap, b.files[fb].heap
            sa, sb, n = a.starts[ia[pick]], b.starts[ib[pick]], a.lengths[ia[pick]]
            ends = np.cumsum(n)
            i = 0
            while i < len(pick):
                j = max(int(np.searchsorted(ends, ends[i] - n[i] + _COMPARE_BYTES, "right")), i + 1)
                eq = heap_a[byte_ranges(sa[i:j], n[i:j])] == heap_b[byte_ranges(sb[i:j], n[i:j])]
                offsets = np.cumsum(n[i:j]) - n[i:j]  # records are never empty
                same[pick[i:j]] = np.logical_and.reduceat(eq, offsets)
                i = j
    return same


def diff_versions(store: BlobStore, feed: str, old: int, new: int, *, show: int = 0,
                  cache_dir: str | Path | None = None) -> VersionDiff:
    """Count the records added, removed and changed from version ``old`` to ``new``.

    Both versions are loaded as a consumer loads them (``new`` by deltas from ``old`` when
    it descends from it). Records are matched by slot key and compared as bytes, without
    decoding; only the ``show`` examples of each kind are decoded.

    Raises:
        VersionNotFoundError: either version does not exist.
        ConfigurationError: the two versions have different primary keys.
        IntegrityError: a blob failed verification, or a state does not hold its
            manifest's record count.
        StoreError: the store or the cache folder failed.
    """
    names.validate_feed(feed)
    ma = _manifest(store, feed, names.validate_version(old))
    mb = _manifest(store, feed, names.validate_version(new))
    if ma.key != mb.key:
        raise ConfigurationError(f"feed {feed!r}: versions {old} and {new} have different "
                                 f"primary keys ({ma.key} / {mb.key}); diff needs the same key")
    with _cache_dir(cache_dir) as folder:
        loader = Loader(store, feed, FeedCache(folder, feed))
        files_a = loader.load(old, None)
        files_b = loader.load(new, files_a)
        a, b = _Live.of(files_a), _Live.of(files_b)
        for live, m in ((a, ma), (b, mb)):
            if len(live.keys) != m.record_count:
                raise IntegrityError(f"feed {feed!r}: version {m.version} holds {len(live.keys)} "
                                     f"records, its manifest says {m.record_count}")
        _, ia, ib = np.intersect1d(a.keys, b.keys, assume_unique=True, return_indices=True)
        same = _same_bytes(a, ia, b, ib)
        changed_a, changed_b = ia[~same], ib[~same]
        spec = KeySpec.from_json(mb.key)
        names_a = [c["name"] for c in ma.schema]
        names_b = [c["name"] for c in mb.schema]
        pos_a = [names_a.index(c) for c in spec.columns]
        pos_b = [names_b.index(c) for c in spec.columns]

        def key_of(rec: Any, pos: list[int]) -> Any:
            return rec[pos[0]] if len(pos) == 1 else tuple(rec[p] for p in pos)

        removed_extra = added_extra = np.empty(0, dtype=np.int64)
        if spec.slot_kind == "hash" and len(changed_a):
            # A slot key is a 64-bit hash: two different keys, one in each version, could
            # share it. Such a pair is a removal and an addition, not a change.
            clash = np.array([key_of(a.record(i), pos_a) != key_of(b.record(j), pos_b)
                              for i, j in zip(changed_a.tolist(), changed_b.tolist(), strict=True)],
                             dtype=bool)
            removed_extra, added_extra = changed_a[clash], changed_b[clash]
            changed_a, changed_b = changed_a[~clash], changed_b[~clash]
        in_b = np.zeros(len(b.keys), dtype=bool)
        in_b[ib] = True
        in_a = np.zeros(len(a.keys), dtype=bool)
        in_a[ia] = True
        added = np.sort(np.concatenate([np.flatnonzero(~in_b), added_extra]))
        removed = np.sort(np.concatenate([np.flatnonzero(~in_a), removed_extra]))

        def example_key(live: _Live, i: int, pos: list[int]) -> Any:
            if spec.slot_kind == "int":
                return int(live.keys[i])
            return key_of(live.record(i), pos)

        return VersionDiff(
            feed=feed, old=old, new=new, added=len(added), removed=len(removed),
            changed=len(changed_a), unchanged=int(same.sum()),
            schema_changed=ma.schema != mb.schema,
            added_keys=[example_key(b, i, pos_b) for i in added[:show].tolist()],
            removed_keys=[example_key(a, i, pos_a) for i in removed[:show].tolist()],
            changed_records=[
                ChangedRecord(example_key(b, j, pos_b), _record_json(a.record(i), names_a),
                              _record_json(b.record(j), names_b))
                for i, j in zip(changed_a[:show].tolist(), changed_b[:show].tolist(),
                                strict=True)],
        )


# -- pin and unpin ----------------------------------------------------------------------------


def operator() -> str | None:
    """``user@host`` of whoever runs this, best effort (None when neither is known)."""
    user = host = None
    with contextlib.suppress(Exception):
        user = getpass.getuser()
    with contextlib.suppress(Exception):
        host = socket.gethostname()
    if user and host:
        return f"{user}@{host}"
    return user or host or None


@dataclass(frozen=True)
class AnnouncementChange:
    """What ``pin`` or ``unpin`` did to the announcement."""

    feed: str
    previous: Announcement
    announcement: Announcement  # the announcement now (``previous`` when nothing changed)
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "changed": self.changed,
                "previous": json.loads(self.previous.to_bytes()),
                "announcement": json.loads(self.announcement.to_bytes())}


def _check_loadable(store: BlobStore, feed: str, version: int) -> Manifest:
    """The manifest of ``version``, once every blob a fresh consumer needs for it exists.

    Raises:
        VersionNotFoundError: no manifest for ``version``.
        BlobNotFoundError: a blob the version needs is missing (garbage-collected?).
        IntegrityError: a manifest on the way is unreadable, or no snapshot is reachable.
    """
    m = _manifest(store, feed, version)
    p = plan(m, None, partial(_manifest, store, feed))
    needed = ([p.snapshot.snapshot] if p.snapshot and p.snapshot.snapshot else []) + [
        d.delta for d in p.deltas if d.delta]
    for blob in needed:
        if not store.exists(blob.key):
            raise BlobNotFoundError(f"feed {feed!r}: version {version} cannot be loaded: its "
                                    f"blob {blob.key} is missing from {store.url}")
    return m


def _announce(store: BlobStore, new: Announcement, etag: str, previous: Announcement,
              action: str) -> None:
    """Compare-and-swap the announcement, as a producer does.

    Raises:
        ProducerFencedError: it moved since it was read; nothing changed.
    """
    try:
        store.replace_if_match(names.announcement_key(new.feed), new.to_bytes(), etag)
    except ProducerFencedError as exc:
        raise ProducerFencedError(
            f"feed {new.feed!r}: the announcement moved while {action} (it was version "
            f"{previous.version}); nothing changed: look again (feedkit versions) and retry"
        ) from exc


def _read_for_change(store: BlobStore, feed: str) -> tuple[Announcement, str]:
    current = read_announcement(store, feed)
    if current is None:
        raise VersionNotFoundError(f"feed {feed!r}: nothing announced in {store.url}")
    return current


def pin(store: BlobStore, feed: str, version: int, *, reason: str | None = None,
        by: str | None = None) -> AnnouncementChange:
    """Announce ``version`` (a rollback, usually) and record the pin in the announcement.

    Consumers move to ``version`` at their next poll; producers publish nothing until
    :func:`unpin`. The pin's ``latest`` is the version announced before it (kept when
    re-pinning a pinned feed).

    Args:
        store: the store.
        feed: the feed.
        version: an existing version whose blobs are all in the store.
        reason: why, recorded in the announcement.
        by: who; None records :func:`operator`.

    Raises:
        VersionNotFoundError: nothing announced yet, or no manifest for ``version``.
        BlobNotFoundError: a blob ``version`` needs is missing from the store.
        ProducerFencedError: the announcement moved meanwhile; nothing changed.
        IntegrityError: an unreadable manifest or announcement.
        StoreError: the store failed.
    """
    names.validate_version(version)
    previous, etag = _read_for_change(store, feed)
    _check_loadable(store, feed, version)
    who = by if by is not None else operator()
    latest = previous.pinned.latest if previous.pinned else previous.version
    new = Announcement(feed, version, producer=f"feedkit pin ({who or 'unknown'})",
                       pinned=Pin(at=utc_now(), latest=latest, by=who, reason=reason))
    _announce(store, new, etag, previous, f"pinning version {version}")
    return AnnouncementChange(feed, previous, new, True)


def unpin(store: BlobStore, feed: str, *, by: str | None = None) -> AnnouncementChange:
    """Clear the pin and announce the pin's ``latest`` again, or the newest version in the
    store when it is newer (a cycle that lost its announcement to the pin) and loadable.

    An unpinned feed is left as it is (``changed`` is False).

    Raises:
        VersionNotFoundError: nothing announced yet, or the latest version is gone.
        BlobNotFoundError: a blob the latest version needs is missing.
        ProducerFencedError: the announcement moved meanwhile; nothing changed.
        IntegrityError: an unreadable manifest or announcement.
        StoreError: the store failed.
    """
    previous, etag = _read_for_change(store, feed)
    if previous.pinned is None:
        return AnnouncementChange(feed, previous, previous, False)
    target = previous.pinned.latest
    newest = max(_listed_versions(store, feed), default=0)
    checked = False
    if newest > target:
        try:
            _check_loadable(store, feed, newest)
            target, checked = newest, True
        except FeedkitError:
            pass  # an incomplete newer version: go back to the latest announced one
    if not checked:
        _check_loadable(store, feed, target)
    who = by if by is not None else operator()
    new = Announcement(feed, target, producer=f"feedkit unpin ({who or 'unknown'})")
    _announce(store, new, etag, previous, "unpinning")
    return AnnouncementChange(feed, previous, new, True)


# -- garbage collection -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeletedBlob:
    key: str
    size: int | None  # None: a blob no manifest names (left by a failed cycle)


@dataclass(frozen=True)
class GcReport:
    """What :func:`collect_garbage` kept and deleted (or would delete, in a dry run)."""

    feed: str
    keep: int
    dry_run: bool
    retained: list[int]  # versions whose manifests and blobs stay
    roots: list[int]  # why: the newest ``keep``, the announced, the pinned and its latest
    deleted_versions: list[int]  # their manifests go first
    deleted_manifest_bytes: int
    deleted_blobs: list[DeletedBlob]

    @property
    def deleted_bytes(self) -> int:
        """Bytes freed, as far as known (manifests, and blobs a manifest names)."""
        return self.deleted_manifest_bytes + sum(b.size or 0 for b in self.deleted_blobs)

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "keep": self.keep, "dry_run": self.dry_run,
                "retained": self.retained, "roots": self.roots,
                "deleted_versions": self.deleted_versions,
                "deleted_blobs": [{"key": b.key, "size": b.size} for b in self.deleted_blobs],
                "deleted_bytes": self.deleted_bytes}


def _referenced(announcement: Announcement | None) -> set[int]:
    if announcement is None:
        return set()
    out = {announcement.version}
    if announcement.pinned is not None:
        out.add(announcement.pinned.latest)
    return out


def collect_garbage(store: BlobStore, feed: str, *, keep: int,
                    dry_run: bool = False) -> GcReport:
    """Delete the manifests and blobs no retained version needs.

    Retained: the ``keep`` newest versions, the announced version, and the pin's
    ``latest`` (the announced version is the pinned one), each with its chain back to
    its nearest snapshot (every version a fresh consumer plans through). Every retained
    manifest keeps all its blobs, so whatever a consumer plans over the manifests left
    can be fetched; consumers stop walking back at the first missing manifest.
    Manifests are deleted before blobs, so no consumer starts planning on a version whose
    blobs are going. A blob no manifest names (a failed cycle's) goes only when it is
    older than the newest manifest: a newer one may belong to a cycle uploading now.

    Args:
        store: the store.
        feed: the feed.
        keep: how many of the newest versions to keep (at least 1).
        dry_run: report what would be deleted, delete nothing.

    Raises:
        ConfigurationError: ``keep`` below 1.
        VersionNotFoundError: a version the announcement names has no manifest.
        IntegrityError: a retained version has no reachable snapshot, or a manifest is
            unreadable: nothing is deleted.
        ProducerFencedError: the announcement moved to a version gc was about to delete
            (a pin meanwhile); nothing is deleted.
        StoreError: the store failed (part of the deletions may be done; run gc again).
    """
    names.validate_feed(feed)
    if type(keep) is not int or keep < 1:
        raise ConfigurationError(f"feed {feed!r}: keep must be at least 1, not {keep!r}")
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    listed = _listed_versions(store, feed)
    manifests: dict[int, Manifest] = {}
    sizes: dict[int, int] = {}
    for version in listed:
        key = names.manifest_key(feed, version)
        data = store.get_bytes(key)
        manifests[version] = m = Manifest.from_bytes(data, key)
        if m.feed != feed or m.version != version:
            raise IntegrityError(f"manifest {key} names feed {m.feed!r} version {m.version}")
        sizes[version] = len(data)
    roots = set(listed[-keep:]) | _referenced(announcement)
    retained: set[int] = set()
    for root in sorted(roots):
        if root not in manifests:
            raise VersionNotFoundError(f"feed {feed!r}: the announcement names version {root}, "
                                       "which has no manifest; gc deletes nothing")
        m = manifests[root]
        while True:
            retained.add(m.version)
            if m.snapshot is not None:
                break
            if m.parent not in manifests:
                raise IntegrityError(f"feed {feed!r}: version {root} has no reachable snapshot "
                                     f"(no manifest for {m.parent}); gc deletes nothing")
            m = manifests[m.parent]  # type: ignore[index]
    doomed = [v for v in listed if v not in retained]
    kept_blobs = {b.key for v in retained for b in (manifests[v].snapshot, manifests[v].delta)
                  if b is not None}
    blob_sizes = {b.key: b.size for m in manifests.values() for b in (m.snapshot, m.delta)
                  if b is not None}
    newest = listed[-1] if listed else 0
    blobs = []
    for prefix in names.blobs_prefixes(feed):
        for key in store.list(prefix):
            of = names.parse_blob_key(key)
            if key in kept_blobs or of is None:
                continue  # needed, or not a blob name: never ours to delete
            if key in blob_sizes or of < newest:
                blobs.append(DeletedBlob(key, blob_sizes.get(key)))
    report = GcReport(feed, keep, dry_run, sorted(retained), sorted(roots), doomed,
                      sum(sizes[v] for v in doomed), blobs)
    if dry_run or not (doomed or blobs):
        return report
    now = read_announcement(store, feed)
    if now is not None and (now[1] != (current[1] if current else None)):
        moved = sorted(v for v in _referenced(now[0]) if v in doomed)
        if moved:
            raise ProducerFencedError(
                f"feed {feed!r}: the announcement moved to version {now[0].version} while gc "
                f"ran, and names version(s) {moved} it was deleting; nothing deleted, run gc again")
    for version in doomed:  # manifests first: nobody starts planning on what goes next
        store.delete(names.manifest_key(feed, version))
    for blob in blobs:
        store.delete(blob.key)
    return report
