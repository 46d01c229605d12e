"""The generated-Python ``get`` the Reader replaced (``format.make_get`` once): a probe
of each file's slot table with ``memoryview`` indexing and ``msgpack.unpackb``."""

from __future__ import annotations

import struct
import textwrap
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgpack

from feedkit import codec
from feedkit.errors import IntegrityError
from feedkit.format import TOMBSTONE, StateFile, damaged_record
from feedkit.keys import FIB, M64, unencodable_key, xxh3

__all__ = ["make_get"]


_HOME = {
    "low": "(key & {mask}) << 1",
    "fib": "((key * {fib} & {m64}) >> {shift}) << 1",
    "xxh3": "(h >> {shift}) << 1",
}

_PROBE = """
    i = {home}
    k = S{n}[i]
    while k != {probe_key}:
        if k == E{n}:
            break
        i += 2
        k = S{n}[i]
    else:
        if {probe_key} != E{n}:  # the empty marker matches empty slots, never a record
{found}
"""

_FOUND_BASE = """            rec = tn(R, u(M{n}[S{n}[i + 1]:S{n}[i + 3]], {opts}))
            return {ret}"""

_FOUND_OVERLAY = """            a = S{n}[i + 1]
            if M{n}[a] == {tomb}:
                return None
            rec = tn(R, u(M{n}[a:S{n}[i + 3]], {opts}))
            return {ret}"""

# What decoding damaged record bytes raises: msgpack's errors (ValueError, StackError,
# ExtraData...), a record that is not an array (TypeError), a key column missing from a
# short record (IndexError), and codec.decode_ext's IntegrityError for a bad ext value.
DECODE_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, struct.error,
                 msgpack.UnpackException, IntegrityError)

_PART_TYPES = {"int": "int", "str": "str", "bytes": "bytes"}  # key part kind -> type in get

def make_get(
    files: Sequence[StateFile], record_cls: type, use_list: bool, normalize: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """Build ``get(key) -> Record | None`` over an overlay (first) and a base (last).

    ``normalize(key)`` turns a key of another accepted type (numpy ints, bytearray,
    lists for composite keys) into the canonical form, or raises KeyTypeError.

    The generated code holds no text taken from a file: header values reach it as
    closure variables, as numbers, or through a fixed table (``_PART_TYPES``), so a
    hostile header cannot inject code. Probing stays inside the slot table on any file
    that opened (homes lie below the terminal slot, an IndexError ends a walk past a
    damaged one), and a record that cannot be decoded raises ``IntegrityError``. The
    ``try`` costs nothing until something is raised (Python 3.11 zero-cost exceptions),
    so ``get`` carries no per-lookup check.
    """
    spec = files[-1].spec
    env: dict[str, Any] = {
        "tn": tuple.__new__, "R": record_cls, "u": msgpack.unpackb, "ext": codec.decode_ext,
        "norm": normalize, "xxh3": xxh3, "packb": msgpack.packb, "DAMAGE": DECODE_ERRORS,
        "damaged": partial(damaged_record, list(files)),
        "badkey": partial(unencodable_key, files[-1].feed),
    }
    # decode_options gives ext_hook and booleans only: render them as literals, never as text.
    opts = ", ".join(f"{k}={'ext' if k == 'ext_hook' else bool(v)}"
                     for k, v in codec.decode_options(files[-1].header["schema"], use_list).items())
    if spec.slot_kind == "int":
        head = "    if type(key) is not int:\n        key = norm(key)\n"
        probe_key, ret = "key", "rec"
    else:
        if spec.composite:
            parts = " or ".join(f"type(key[{i}]) is not {_PART_TYPES[kind]}"
                                for i, kind in enumerate(spec.parts))
            # An int part beyond 64 bits cannot be packed, and is no key of any feed.
            head = (f"    if type(key) is not tuple or len(key) != {len(spec.parts)} or {parts}:\n"
                    "        key = norm(key)\n"
                    "    try:\n        h = xxh3(packb(key))\n"
                    "    except OverflowError:\n        return None\n"
                    "    except UnicodeEncodeError as exc:\n        raise badkey(key, exc) from None\n")
        elif spec.parts[0] == "str":
            head = ("    if type(key) is not str:\n        key = norm(key)\n"
                    "    try:\n        h = xxh3(key.encode())\n"
                    "    except UnicodeEncodeError as exc:\n        raise badkey(key, exc) from None\n")
        else:
            head = "    if type(key) is not bytes:\n        key = norm(key)\n    h = xxh3(key)\n"
        probe_key = "h"
        names = [column["name"] for column in files[-1].header["schema"]]
        fields = [f"rec[{names.index(c)}]" for c in spec.columns]
        # Decode, then make sure the record's key is the asked key: a 64-bit hash
        # could be shared with a key the feed does not hold.
        check = fields[0] if len(fields) == 1 else f"({', '.join(fields)})"
        ret = f"rec if {check} == key else None"
    probes = []
    for n, sf in enumerate(files):
        env[f"S{n}"], env[f"M{n}"], env[f"E{n}"] = sf.slots, sf.mm, sf.empty
        bits = int(sf.bits)
        home = _HOME[sf.method].format(mask=(1 << bits) - 1, fib=FIB, m64=M64, shift=64 - bits)
        found = _FOUND_OVERLAY if sf.kind == "overlay" else _FOUND_BASE
        found = found.format(n=n, tomb=TOMBSTONE, opts=opts, ret=ret)
        probes.append(_PROBE.format(home=home, n=n, probe_key=probe_key, found=found))
    source = (f"def get(key):\n{head}    try:\n"
              + textwrap.indent("".join(probes), "    ")
              + "    except DAMAGE as exc:\n        raise damaged(key, exc) from exc\n"
              + "    return None\n")
    exec(compile(source, f"<feedkit get {files[-1].feed}>", "exec"), env)  # noqa: S102
    # Popped, not read: env is get's globals, and env holding get would be a reference
    # cycle (the mappings then wait for the cyclic collector to be released).
    get = env.pop("get")
    get.__doc__ = "Return the record for key, or None when the feed has no such key."
    get.source = source  # type: ignore[attr-defined]
    return get  # type: ignore[no-any-return]
