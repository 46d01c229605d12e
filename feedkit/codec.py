"""The record codec: how one value and one record become msgpack bytes, and back.

A record is one msgpack array, fields in schema order. Values msgpack has no
type for travel as msgpack ext types (codes below); ``docs/FORMAT.md`` lists
them. The canonical encoding of a value is ``pack_value(value)``: the producer's
vectorised encoders must produce exactly these bytes, because key hashes and
secondary-index hashes are taken over them.

Decoding gives back the Python objects ``pyarrow.Table.to_pylist()`` gives,
with maps as dicts.
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid
from collections import namedtuple
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from feedkit.errors import IntegrityError

__all__ = [
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DATETIME_TZ",
    "EXT_DECIMAL",
    "EXT_TIME",
    "EXT_UUID",
    "coerce_for_column",
    "decode_ext",
    "decode_options",
    "encode_ext",
    "pack_value",
    "record_class",
    "unpack_record",
]

EXT_DECIMAL = 1  # ASCII str(Decimal): keeps the exponent, so Decimal("1.50") stays "1.50"
EXT_DATE = 2  # int32 big-endian: days since 1970-01-01
EXT_TIME = 3  # int64 big-endian: microseconds since midnight
EXT_DATETIME = 4  # int64 big-endian: microseconds since 1970-01-01T00:00 (naive)
EXT_DATETIME_TZ = 5  # int64 big-endian microseconds since the UTC epoch, then the zone name
EXT_UUID = 6  # 16 raw bytes

_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_US = _dt.timedelta(microseconds=1)
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def _zone_name(tz: _dt.tzinfo) -> str:
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
    if isinstance(key, str):
        return key
    offset = tz.utcoffset(None)
    if offset is None:
        raise TypeError(f"cannot encode time zone {tz!r}")
    sign = "-" if offset < _dt.timedelta(0) else "+"
    minutes = abs(offset) // _dt.timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@lru_cache(maxsize=256)
def _zone(name: str) -> _dt.tzinfo:
    if name[:1] in "+-":
        hours, minutes = int(name[1:3]), int(name[4:6])
        offset = _dt.timedelta(hours=hours, minutes=minutes)
        return _dt.timezone(-offset if name[0] == "-" else offset)
    return ZoneInfo(name)


def encode_ext(obj: Any) -> msgpack.ExtType:
    """The ``default`` hook for ``msgpack.packb``: values msgpack cannot pack natively."""
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            return msgpack.ExtType(EXT_DATETIME, _I64.pack((obj - _EPOCH) // _US))
        micros = (obj - _EPOCH_UTC) // _US
        return msgpack.ExtType(EXT_DATETIME_TZ, _I64.pack(micros) + _zone_name(obj.tzinfo).encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(EXT_DATE, _I32.pack(obj.toordinal() - _EPOCH_ORDINAL))
    if isinstance(obj, _dt.time):
        micros = ((obj.hour * 60 + obj.minute) * 60 + obj.second) * 1_000_000 + obj.microsecond
        return msgpack.ExtType(EXT_TIME, _I64.pack(micros))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode("ascii"))
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    raise TypeError(f"cannot encode a value of type {type(obj).__name__}")


def decode_ext(code: int, data: bytes) -> Any:
    """The ``ext_hook`` for ``msgpack.unpackb``; the inverse of :func:`encode_ext`.

    Raises:
        IntegrityError: the payload is not one :func:`encode_ext` writes (a short or
            out-of-range value, an unknown time zone, a malformed decimal).
    """
    # One try around the body (free until something raises): a helper call per ext value
    # would cost every lookup of a record holding dates or decimals.
    try:
        if code == EXT_DATETIME_TZ:
            micros = _I64.unpack_from(data)[0]
            return (_EPOCH_UTC + micros * _US).astimezone(_zone(data[8:].decode()))
        if code == EXT_DATETIME:
            return _EPOCH + _I64.unpack(data)[0] * _US
        if code == EXT_DATE:
            return _dt.date.fromordinal(_I32.unpack(data)[0] + _EPOCH_ORDINAL)
        if code == EXT_TIME:
            micros = _I64.unpack(data)[0]
            seconds, micros = divmod(micros, 1_000_000)
            minutes, seconds = divmod(seconds, 60)
            return _dt.time(minutes // 60, minutes % 60, seconds, micros)
        if code == EXT_DECIMAL:
            return Decimal(data.decode("ascii"))
        if code == EXT_UUID:
            return uuid.UUID(bytes=bytes(data))
        return msgpack.ExtType(code, data)  # refuses a negative (reserved) code
    except (ValueError, TypeError, LookupError, ArithmeticError, struct.error) as exc:
        # LookupError: ZoneInfoNotFoundError; ArithmeticError: OverflowError and
        # decimal.InvalidOperation. Bytes from a file, so damage, not a caller's bug.
        raise IntegrityError(f"unreadable msgpack ext value (type {code}, "
                             f"{len(data)} bytes): {exc}") from exc


def pack_value(value: Any) -> bytes:
    """The canonical bytes of one value (or of a list of values: a composite key)."""
    return msgpack.packb(value, default=encode_ext)


_PLAIN_KINDS = {"int", "float", "bool", "str", "bytes", "null"}


def coerce_for_column(column: dict[str, Any], value: Any) -> Any:
    """``value`` as the producer would have encoded it in ``column``.

    Secondary indexes match canonical bytes, so an int asked of a float column, a
    datetime in another zone, or a Decimal with another exponent is first brought to
    the column's form. Values that cannot be brought over are returned unchanged.
    """
    kind, arrow_type = column["kind"], column.get("type", "")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "timestamptz" and isinstance(value, _dt.datetime) and value.tzinfo is not None:
        zone = arrow_type.partition("tz=")[2].rstrip("]")
        return value.astimezone(_zone(zone)) if zone else value
    if kind == "decimal" and isinstance(value, Decimal | int):
        scale = arrow_type.rstrip(")").rpartition(",")[2].strip()
        if scale.lstrip("-").isdigit():
            return Decimal(value).quantize(Decimal(1).scaleb(-int(scale)))
    return value


def decode_options(schema: list[dict[str, Any]], use_list: bool) -> dict[str, Any]:
    """The ``msgpack.unpackb`` options a schema needs, and no more.

    Every keyword costs time on the lookup path, so the ext hook and non-string map
    keys are only asked for when a column may hold them.
    """
    kinds = {column["kind"] for column in schema}
    options: dict[str, Any] = {"use_list": use_list}
    if kinds - _PLAIN_KINDS:
        options["ext_hook"] = decode_ext
    if kinds & {"map", "list", "struct"}:
        options["strict_map_key"] = False
    return options


def unpack_record(data: bytes, use_list: bool = True) -> Any:
    """Decode one record (or value) whatever its schema."""
    return msgpack.unpackb(data, ext_hook=decode_ext, strict_map_key=False, use_list=use_list)


@lru_cache(maxsize=1024)
def record_class(names: tuple[str, ...]) -> type:
    """The immutable named tuple type for a schema's column names (one class per schema)."""
    return namedtuple("Record", names)  # type: ignore[misc]
