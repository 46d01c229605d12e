"""Primary keys: their kinds, their normalisation and the hash functions fixed by the format.

Two slot kinds (``docs/FORMAT.md``):

* ``int`` -- a single integer key column. The slot holds the key itself (int64).
  The home slot is either ``key & (capacity - 1)`` ("low") or the Fibonacci mix
  ``((key * 0x9E3779B97F4A7C15) mod 2**64) >> (64 - bits)`` ("fib"); the writer
  picks whichever places the keys with fewer probe steps and records its choice.
* ``hash`` -- str, bytes and composite keys. The slot holds xxh3-64 of the key's
  canonical bytes (UTF-8 for str, the bytes themselves for bytes, the msgpack
  array of the parts for a composite key); the home slot is its top bits. Within
  one state no two keys may share a hash (the producer refuses such a table), so a
  hash identifies a key inside a state; lookups still compare the decoded key.

Values in secondary indexes are hashed the same way: xxh3-64 of ``pack_value(v)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import xxhash

from feedkit.codec import pack_value
from feedkit.errors import KeyTypeError

__all__ = ["FIB", "KeySpec", "unencodable_key", "value_hash", "xxh3"]

FIB = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
xxh3 = xxhash.xxh3_64_intdigest

PART_KINDS = ("int", "str", "bytes")


def value_hash(value: Any) -> int:
    """xxh3-64 of the value's canonical msgpack bytes (secondary indexes)."""
    return xxh3(pack_value(value))


def int_homes(keys: np.ndarray, method: str, bits: int) -> np.ndarray:
    """Vectorised home slots for int64 keys; the scalar forms live in the lookup templates."""
    if method == "low":
        return keys & np.int64((1 << bits) - 1)
    mixed = keys.view(np.uint64) * np.uint64(FIB)  # wraps mod 2**64, as the format says
    return (mixed >> np.uint64(64 - bits)).astype(np.int64)


def hash_homes(hashes: np.ndarray, bits: int) -> np.ndarray:
    return (hashes.view(np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


@dataclass(frozen=True)
class KeySpec:
    """The primary key of a feed: its columns and the kind of each part."""

    columns: tuple[str, ...]
    parts: tuple[str, ...]  # one of PART_KINDS per column

    @property
    def composite(self) -> bool:
        return len(self.columns) > 1

    @property
    def slot_kind(self) -> str:
        return "int" if self.parts == ("int",) else "hash"

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "parts": list(self.parts)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> KeySpec:
        return cls(tuple(doc["columns"]), tuple(doc["parts"]))

    def normalize(self, key: Any, feed: str) -> Any:
        """Return ``key`` in the canonical Python form for this feed.

        Raises:
            KeyTypeError: the key cannot be a key of this feed (names the feed and key).
        """
        if self.composite:
            if isinstance(key, tuple | list) and len(key) == len(self.parts):
                return tuple(
                    _normalize_part(part, kind, key, feed)
                    for part, kind in zip(key, self.parts, strict=True)
                )
            raise KeyTypeError(
                f"feed {feed!r}: key {key!r} must be a tuple of {len(self.parts)} parts "
                f"({', '.join(f'{c}: {k}' for c, k in zip(self.columns, self.parts, strict=True))})"
            )
        return _normalize_part(key, self.parts[0], key, feed)

    def hash_normalized(self, key: Any, feed: str) -> int:
        """The slot hash of a normalised key (``hash`` slot kind only).

        Raises:
            KeyTypeError: a str key (part) that is not valid text (a lone surrogate): no
                feed holds one, since keys are UTF-8.
        """
        try:
            if self.composite:
                try:
                    # The msgpack array of the parts, as get() hashes it.
                    return xxh3(msgpack.packb(key))
                except OverflowError:
                    # An int part past 64 bits: no stored key has one. Any hash will do,
                    # since lookups compare the record's key with the asked key on a match.
                    return xxh3(repr(key).encode())
            if self.parts[0] == "str":
                return xxh3(key.encode())
            return xxh3(key)
        except UnicodeEncodeError as exc:
            raise unencodable_key(feed, key, exc) from None

    def slot_key(self, key: Any, feed: str) -> int:
        """What the slot table holds for ``key``: the int itself or its 64-bit hash."""
        key = self.normalize(key, feed)
        return key if self.slot_kind == "int" else self.hash_normalized(key, feed)


def unencodable_key(feed: str, key: Any, exc: UnicodeEncodeError) -> KeyTypeError:
    """The error for a str key (part) that is not valid text (a lone surrogate): no feed
    holds one, since keys are UTF-8."""
    return KeyTypeError(f"feed {feed!r}: key {key!r} is not valid text ({exc.reason}): "
                        "it cannot be a key of the feed")


def _normalize_part(part: Any, kind: str, key: Any, feed: str) -> Any:
    if kind == "int":
        if type(part) is int:
            return part
        if isinstance(part, int | np.integer) and not isinstance(part, bool | np.bool_):
            return int(part)
    elif kind == "str":
        if isinstance(part, str):
            return str(part)
    elif isinstance(part, bytes | bytearray | memoryview):
        return bytes(part)
    raise KeyTypeError(
        f"feed {feed!r}: key {key!r} has a part of type {type(part).__name__}, expected {kind}"
    )
