"""One version of a feed as served: a base file and at most one overlay, memory-mapped.

A ``State`` is immutable; the consumer swaps whole states. Holding a reference to
one (``Consumer.view()``) keeps its files mapped, so a request sees one version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np

from feedkit import _native, codec
from feedkit.errors import ConfigurationError, IntegrityError, KeyTypeError
from feedkit.format import StateFile, damaged_record
from feedkit.keys import unencodable_key, value_hash

__all__ = ["State"]

_CHUNK = 4096  # records decoded per call while iterating


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
        # The lookups run compiled (native/src/reader.rs). Nothing handed to the Reader
        # refers back to self: State -> get -> self would be a reference cycle, keeping
        # every old version mapped until the cyclic collector runs.
        try:
            self._reader = _native.Reader(
                [sf.table_args() for sf in files],
                self.Record, len(self.names), list(self.spec.parts), self._key_pos, self.use_list,
                codec.decode_ext, partial(self.spec.normalize, feed=self.feed),
                partial(damaged_record, list(files)), partial(unencodable_key, self.feed))
        except IntegrityError as exc:  # files that do not fit together
            where = " over ".join(str(sf.path) for sf in files)
            raise IntegrityError(f"feed {self.feed!r}: {where}: {exc}") from None
        self.get = self._reader.get

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

    def _decode_many(self, sf: StateFile, slots: np.ndarray, what: str) -> list[Any]:
        """``what`` (the Reader's ``keys`` or ``items``) of ``slots`` of ``sf``."""
        try:
            return getattr(self._reader, what)(  # type: ignore[no-any-return]
                self.files.index(sf), np.ascontiguousarray(slots, dtype=np.int64))
        except IntegrityError as exc:  # record bytes that are not what the writer packed
            raise IntegrityError(f"feed {self.feed!r}: unreadable records in {sf.path}: {exc}") from exc

    def get_many(self, keys: Iterable[Any]) -> list[Any]:
        """Records for ``keys``, aligned with them; None where a key is absent.

        ``keys``: any iterable, a numpy integer array or a pyarrow array. Every key is
        probed before any record is decoded, in compiled code.
        """
        if type(keys).__module__.startswith("pyarrow"):
            # Arrow integers without nulls go as one int64 buffer; anything else as values.
            if self.spec.slot_kind == "int" and getattr(keys, "null_count", 1) == 0:
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    keys = keys.to_numpy()  # type: ignore[attr-defined]
            if not isinstance(keys, np.ndarray):
                keys = keys.to_pylist()  # type: ignore[attr-defined]
        if (isinstance(keys, np.ndarray) and keys.dtype.kind == "i" and keys.ndim == 1
                and self.spec.slot_kind == "int"):
            return self._reader.get_many_int(  # type: ignore[no-any-return]
                np.ascontiguousarray(keys, dtype=np.int64))
        if isinstance(keys, np.ndarray):
            keys = keys.tolist()
        return self._reader.get_many(keys)  # type: ignore[no-any-return]

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
        for i, sf in enumerate(self.files):
            bits = sf._index_meta(field)["bits"]
            try:
                out.extend(self._reader.find(i, sf.index_args(field), bits, vh, pos, value))
            except IntegrityError as exc:
                raise IntegrityError(
                    f"feed {self.feed!r}: unreadable records in {sf.path}: {exc}") from exc
        return out

    # -- iteration ------------------------------------------------------------------------

    def live_slots(self) -> list[tuple[StateFile, np.ndarray]]:
        """Each file with its slots holding the state's live records (the overlay-over-base
        rule: no tombstones, no base record the overlay shadows)."""
        return [(sf, self._live(self._reader.live_slots(i))) for i, sf in enumerate(self.files)]

    @staticmethod
    def _live(slots: bytes) -> np.ndarray:
        return np.frombuffer(slots, dtype=np.int64)

    def keys(self) -> Iterator[Any]:
        """Every key, in no particular order."""
        for sf, slots in self.live_slots():
            if self.spec.slot_kind == "int":
                yield from sf.slot_keys(slots).tolist()
            else:  # the slots hold hashes: the keys come out of the records
                for start in range(0, len(slots), _CHUNK):
                    yield from self._decode_many(sf, slots[start:start + _CHUNK], "keys")

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, record) pairs, in no particular order."""
        for sf, slots in self.live_slots():
            for start in range(0, len(slots), _CHUNK):
                yield from self._decode_many(sf, slots[start:start + _CHUNK], "items")

    def __iter__(self) -> Iterator[Any]:
        return self.keys()
