"""One version of a feed as served: a base file and at most one overlay, memory-mapped.

A ``State`` is immutable; the consumer swaps whole states. Holding a reference to
one (``Consumer.view()``) keeps its files mapped, so a request sees one version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import msgpack
import numpy as np

from feedkit import codec
from feedkit.errors import ConfigurationError, IntegrityError, KeyTypeError
from feedkit.format import DECODE_ERRORS, TOMBSTONE, StateFile, byte_ranges, make_get
from feedkit.keys import value_hash

__all__ = ["State"]


class State:
    """Lookups over ``files`` (``[overlay, base]`` or ``[base]``) at one version."""

    def __init__(self, files: list[StateFile]) -> None:
        self.files = files
        self.base = files[-1]
        self.overlay = files[0] if len(files) == 2 else None
        header = files[0].header
        self.feed: str = header["feed"]
        self.version: int = header["version"]
        self.record_count: int = header["record_count"]
        self.schema: list[dict[str, Any]] = header["schema"]
        self.names = [c["name"] for c in self.schema]
        self.spec = self.base.spec
        self.index_fields: list[str] = header["index_fields"]
        self.use_list: bool = header["use_list"]
        self.Record = codec.record_class(tuple(self.names))
        self._key_pos = [self.names.index(c) for c in self.spec.columns]
        self._decode_opts = codec.decode_options(self.schema, self.use_list)
        # normalize must not be a bound method of self: State -> get -> self would be a
        # reference cycle, keeping every old version mapped until the cyclic collector runs.
        self.get = make_get(files, self.Record, self.use_list,
                            partial(self.spec.normalize, feed=self.feed))

    def __repr__(self) -> str:
        return f"<State {self.feed} v{self.version} {self.record_count} records>"

    # -- single keys --------------------------------------------------------------------

    def _normalize(self, key: Any) -> Any:
        return self.spec.normalize(key, self.feed)

    def __getitem__(self, key: Any) -> Any:
        rec = self.get(key)
        if rec is None:
            raise KeyError(key)
        return rec

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self.record_count

    # -- many keys ----------------------------------------------------------------------

    def _slot_keys(self, keys: list[Any]) -> tuple[np.ndarray, list[Any], np.ndarray]:
        """Slot keys for ``keys``, the normalised keys, and the positions worth probing."""
        if self.spec.slot_kind == "int":
            try:
                array = np.array(keys)
            except (TypeError, ValueError, OverflowError):
                array = np.empty(0)
            if array.dtype.kind == "i" and array.ndim == 1 and set(map(type, keys)) == {int}:
                return array.astype(np.int64, copy=False), keys, np.arange(len(keys))
            norm = [self._normalize(k) for k in keys]
            # An int outside int64 cannot be a key of the feed: it is not probed.
            fits = np.array([-(1 << 63) <= k < 1 << 63 for k in norm], dtype=bool)
            array = np.array([k if ok else 0 for k, ok in zip(norm, fits, strict=True)],
                             dtype=np.int64)
            return array, norm, np.flatnonzero(fits)
        norm = [self._normalize(k) for k in keys]
        hashes = np.fromiter((self.spec.hash_normalized(k, self.feed) for k in norm), dtype=np.uint64,
                             count=len(norm))
        return hashes, norm, np.arange(len(keys))

    def _decode_many(self, sf: StateFile, slots: np.ndarray) -> list[Any]:
        starts, lengths = sf.record_ranges(slots)
        n = len(slots)
        # One msgpack array around the records: a single unpackb call decodes them all.
        buf = np.empty(5 + int(lengths.sum()), dtype=np.uint8)
        buf[:5] = np.frombuffer(b"\xdd" + n.to_bytes(4, "big"), dtype=np.uint8)
        buf[5:] = sf.heap[byte_ranges(starts, lengths)]
        try:
            rows = msgpack.unpackb(buf, **self._decode_opts)
            return list(map(partial(tuple.__new__, self.Record), rows))
        except DECODE_ERRORS as exc:  # record bytes that are not what the writer packed
            raise IntegrityError(f"feed {self.feed!r}: unreadable records in {sf.path}: {exc}") from exc

    def get_many(self, keys: Iterable[Any]) -> list[Any]:
        """Records for ``keys``, aligned with them; None where a key is absent.

        The probe runs vectorised over all keys, and the records decode in one
        msgpack call.
        """
        keys = list(keys)
        slot_keys, norm, pending = self._slot_keys(keys)
        result: list[Any] = [None] * len(keys)
        for sf in self.files:
            slots = sf.probe_many(slot_keys[pending])
            hit = slots >= 0
            where, found = pending[hit], slots[hit]
            pending = pending[~hit]
            if sf.kind == "overlay":
                live = sf.heap[sf.record_ranges(found)[0]] != TOMBSTONE
                where, found = where[live], found[live]
            if not len(found):
                continue
            records = self._decode_many(sf, found)
            if len(where) == len(keys):
                result = records
            else:
                for i, rec in zip(where.tolist(), records, strict=True):
                    result[i] = rec
        if self.spec.slot_kind != "int":
            result = [r if r is None or self._record_key(r) == k else None
                      for r, k in zip(result, norm, strict=True)]
        return result

    def _record_key(self, rec: Any) -> Any:
        if len(self._key_pos) == 1:
            return rec[self._key_pos[0]]
        return tuple(rec[p] for p in self._key_pos)

    # -- secondary indexes ------------------------------------------------------------------

    def find(self, field: str, value: Any) -> list[Any]:
        """Records whose ``field`` equals ``value``, through the field's secondary index.

        Raises:
            ConfigurationError: ``field`` has no index in this feed.
        """
        if field not in self.index_fields:
            raise ConfigurationError(
                f"feed {self.feed!r}: no secondary index on {field!r} "
                f"(indexed: {', '.join(self.index_fields) or 'none'}); declare it at publish")
        try:
            value = codec.coerce_for_column(self.schema[self.names.index(field)], value)
            vh = value_hash(value)
        except TypeError as exc:
            raise KeyTypeError(f"feed {self.feed!r}: cannot look up {field}={value!r}") from exc
        pos = self.names.index(field)
        out: list[Any] = []
        shadow = self.overlay
        for sf in self.files:
            slots = sf.postings(field, vh).astype(np.int64)
            if sf is not shadow and shadow is not None and len(slots):
                slots = slots[shadow.probe_many(sf.slot_keys(slots)) < 0]
            if len(slots):
                out.extend(r for r in self._decode_many(sf, slots) if r[pos] == value)
        return out

    # -- iteration ------------------------------------------------------------------------

    def _live_slots(self) -> list[tuple[StateFile, np.ndarray]]:
        parts = []
        if self.overlay is not None:
            o = self.overlay.occupied()
            starts, _ = self.overlay.record_ranges(o)
            parts.append((self.overlay, o[self.overlay.heap[starts] != TOMBSTONE]))
            b = self.base.occupied()
            parts.append((self.base, b[self.overlay.probe_many(self.base.slot_keys(b)) < 0]))
        else:
            parts.append((self.base, self.base.occupied()))
        return parts

    def keys(self) -> Iterator[Any]:
        """Every key, in no particular order."""
        for sf, slots in self._live_slots():
            if self.spec.slot_kind == "int":
                yield from sf.slot_keys(slots).tolist()
            else:
                for start in range(0, len(slots), 4096):
                    yield from map(self._record_key, self._decode_many(sf, slots[start:start + 4096]))

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, record) pairs, in no particular order."""
        for sf, slots in self._live_slots():
            for start in range(0, len(slots), 4096):
                for rec in self._decode_many(sf, slots[start:start + 4096]):
                    yield self._record_key(rec), rec

    def __iter__(self) -> Iterator[Any]:
        return self.keys()
