"""``feedkit diff``: what changed between two versions, compared as bytes by slot key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedkit import codec, names
from feedkit.cache import FeedCache
from feedkit.errors import ConfigurationError, IntegrityError
from feedkit.format import StateFile, byte_ranges
from feedkit.keys import KeySpec
from feedkit.loader import Loader
from feedkit.state import State
from feedkit.store import BlobStore

from .records import cache_folder, jsonable, record_json
from .versions import read_manifest

__all__ = ["ChangedRecord", "VersionDiff", "diff_versions"]

_COMPARE_BYTES = 8 << 20  # record bytes compared per numpy pass


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
    schema_changed: bool  # the schemas differ (a new column changes every record's bytes)
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
    heaps: list[np.ndarray]  # per file: the heap its records' canonical bytes lie in
    keys: np.ndarray  # int64 (int keys, or the bits of uint64 key hashes)
    file: np.ndarray  # index into files
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, files: list[StateFile]) -> _Live:
        keys, which, starts, lengths, heaps = [], [], [], [], []
        for i, (sf, slots) in enumerate(State(files).live_slots()):
            keys.append(sf.slot_keys(slots).view(np.int64))
            which.append(np.full(len(slots), i, dtype=np.int64))
            heap, s, n = sf.canonical(slots)  # a format-2 file's records rebuilt
            heaps.append(heap)
            starts.append(s)
            lengths.append(n)
        k = np.concatenate(keys)
        order = np.argsort(k, kind="stable")
        return cls(files, heaps, k[order], np.concatenate(which)[order],
                   np.concatenate(starts)[order], np.concatenate(lengths)[order])

    def record(self, i: int) -> Any:
        sf = self.files[int(self.file[i])]
        a = int(self.starts[i])
        data = self.heaps[int(self.file[i])][a:a + int(self.lengths[i])].tobytes()
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
            heap_a, heap_b = a.heaps[fa], b.heaps[fb]
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
    ma = read_manifest(store, feed, names.validate_version(old))
    mb = read_manifest(store, feed, names.validate_version(new))
    if ma.key != mb.key:
        raise ConfigurationError(f"feed {feed!r}: versions {old} and {new} have different "
                                 f"primary keys ({ma.key} / {mb.key}); diff needs the same key")
    with cache_folder(cache_dir) as folder:
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
                ChangedRecord(example_key(b, j, pos_b), record_json(a.record(i), names_a),
                              record_json(b.record(j), names_b))
                for i, j in zip(changed_a[:show].tolist(), changed_b[:show].tolist(),
                                strict=True)],
        )
