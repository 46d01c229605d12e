"""One record: keys typed on a command line, values as JSON, ``feedkit get``."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

from feedkit.cache import FeedCache
from feedkit.errors import KeyTypeError
from feedkit.keys import KeySpec
from feedkit.loader import Loader
from feedkit.state import State
from feedkit.store import BlobStore

from .versions import read_manifest, resolve_version

__all__ = ["Lookup", "cache_folder", "get_record", "jsonable", "parse_key", "record_json"]


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
def cache_folder(cache_dir: str | Path | None) -> Iterator[Path]:
    """``cache_dir``, or a temporary folder removed afterwards."""
    if cache_dir is not None:
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="feedkit-cli-") as tmp:
        yield Path(tmp)


def record_json(rec: Any, names_: list[str]) -> dict[str, Any]:
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
    version, _ = resolve_version(store, feed, version)
    m = read_manifest(store, feed, version)
    if isinstance(key, str):
        key = parse_key(key, m.key)
    with cache_folder(cache_dir) as folder:
        state = State(Loader(store, feed, FeedCache(folder, feed)).load(version, None))
        rec = state.get(key)
        return Lookup(feed, version, key, None if rec is None else record_json(rec, state.names))




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
