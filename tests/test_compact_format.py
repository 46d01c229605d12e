"""Format-2 state files (compact bases) damaged where only a structural check can see it.

Each file below is a real one ``write_state(..., format=2)`` wrote, damaged in one place
and re-sealed (its checksum recomputed), so that the checksum cannot catch the damage:
``verify()`` or ``verify(records=True)`` must refuse it with an ``IntegrityError`` naming
the problem, and a consumer must refuse it as a snapshot and keep serving the version it
had. The random counterpart is ``tests/fuzz/test_compact_state_file.py``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feedkit import IntegrityError
from feedkit.format import StateFile
from feedkit.keys import KeySpec
from feedkit.state import State
from tests.fuzz.support import (
    Section,
    compact_sections,
    fix_checksum,
    join_state,
    split_state,
    write_rows,
)

WORDS = ["alpha", "beta", "gamma"]


def _column(name: str, kind: str, arrow: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "type": arrow, "nullable": True}


SCHEMA = [_column("id", "int", "int64"), _column("word", "str", "string"),
          _column("tags", "list", "list<item: string>"), _column("title", "str", "string")]


def _rows(n: int = 60) -> list[list[Any]]:
    """``[id, word, tags, title]``: words and tags from three values (coded `dict` and
    `elements` at 2 bits), the tags the base-3 digits of the row number."""
    return [[3 * i - 50, WORDS[i % 3], [WORDS[(i // 3**e) % 3] for e in range(1 + i % 5)],
             f"title {i}"] for i in range(n)]


class File:
    """A valid format-2 file and where its sections and records lie."""

    def __init__(self, path: Path) -> None:
        rows = _rows()
        self.data = write_rows(path, key=KeySpec(("id",), ("int",)), schema=SCHEMA, rows=rows,
                               slot_keys=[r[0] for r in rows], index_fields=("word",), format=2)
        self.header, _ = split_state(self.data)
        assert [c["coding"] for c in self.header["columns"]] == ["key", "dict", "elements", "plain"]
        self.sections = {s.name: s for s in compact_sections(self.data)}
        sf = StateFile(path)
        self.offsets = [int(o) + sf.heap_offset for o in sf._entries["offset"]]
        self.keys = [int(k) for k in sf._entries["key"]]
        self.body = sf.body_offset
        self.bucket_count = self.header["buckets"]["count"]

    def section(self, name: str) -> Section:
        return self.sections[name]

    def record(self, j: int) -> tuple[int, int]:
        """Entry ``j``'s coded record: ``[word id, tags count, packed ids..., title]``."""
        return self.offsets[j], self.offsets[j + 1]

    def bucket(self, key: int) -> int:
        mixed = (key * 0x9E3779B97F4A7C15) % 2**64
        return (mixed * self.bucket_count) >> 64


@pytest.fixture
def good(tmp_path: Path) -> File:
    return File(tmp_path / "good")


# -- the damage: each a function of the valid file, giving the re-sealed damaged bytes --------

Damage = Callable[[File], bytes]


def words(section: str, changes: Callable[[File, Section], dict[int, int]]) -> Damage:
    """Words of ``section`` set as ``changes`` says (word number -> value), re-sealed."""
    def apply(f: File) -> bytes:
        s = f.section(section)
        data = bytearray(f.data)
        for i, value in changes(f, s).items():
            s.put(data, i, value)
        return fix_checksum(bytes(data))
    return apply


def record_bytes(j: int, changes: Callable[[File, int], dict[int, int]]) -> Damage:
    """Bytes of entry ``j``'s record set as ``changes`` says (offset in it -> byte)."""
    def apply(f: File) -> bytes:
        start, _ = f.record(j)
        data = bytearray(f.data)
        for at, byte in changes(f, start).items():
            data[start + at] = byte
        return fix_checksum(bytes(data))
    return apply


def header_edit(edit: Callable[[dict[str, Any]], None]) -> Damage:
    """The header edited (and the checksum recomputed)."""
    def apply(f: File) -> bytes:
        header, body = split_state(f.data)
        edit(header)
        return join_state(header, body, like=f.data)
    return apply


def _swap_neighbours_in_one_bucket(f: File, s: Section) -> dict[int, int]:
    j = next(j for j in range(59) if f.bucket(f.keys[j]) == f.bucket(f.keys[j + 1]))
    return {j: f.keys[j + 1], j + 1: f.keys[j]}


def _move_a_bucket_boundary(f: File, s: Section) -> dict[int, int]:
    i = next(i for i in range(1, f.bucket_count) if s.get(f.data, i) < s.get(f.data, i + 1))
    return {i: s.get(f.data, i) + 1}


def _share_a_dictionary(header: dict[str, Any]) -> None:
    words, tags = header["columns"][1], header["columns"][2]
    tags.update({k: v for k, v in words.items() if k != "coding"}, bits=2)


# (damage, the message verify gives, whether only verify(records=True) sees it)
CASES: dict[str, tuple[Damage, str, bool]] = {
    "dictionary offsets out of order": (
        words("dictionary 1 offsets", lambda f, s: {1: s.get(f.data, 2), 2: s.get(f.data, 1)}),
        "the dictionary of column 1: offsets decrease", False),
    "a dictionary offset past its length": (
        words("dictionary 1 offsets", lambda f, s: {3: s.get(f.data, 3) + 1}),
        "the dictionary of column 1: offsets do not span its values", False),
    "a dictionary offset past its length, then back": (  # with records=True it panicked
        words("dictionary 1 offsets", lambda f, s: {1: 2**30}),
        "the dictionary of column 1: offset 1 is past its 17 bytes of values", False),
    "a dictionary offset past the next one": (
        words("dictionary 1 offsets", lambda f, s: {1: s.get(f.data, 3)}),
        "the dictionary of column 1: offsets decrease", False),
    "a dictionary value that is not one msgpack value": (
        words("dictionary 1 values", lambda f, s: {0: 0xA6}),  # "alpha" as a 6-byte string
        "the dictionary of column 1: value 0 is not one msgpack value", True),
    "a dictionary value that is two": (
        words("dictionary 2 values", lambda f, s: {0: 0x01}),  # 01 'lpha'...
        "the dictionary of column 2: value 0 is not one msgpack value", True),
    "an id past its dictionary": (
        record_bytes(7, lambda f, at: {0: 3}),
        "the record of entry 7 does not decode: a dictionary id past its dictionary", True),
    "an element id past its dictionary": (
        record_bytes(0, lambda f, at: {2: f.data[at + 2] | 0x03}),  # 2 bits hold 3, of 3 values
        "an element id past its dictionary", True),
    "an elements count longer than its record": (
        record_bytes(9, lambda f, at: {1: 0x7F}),
        "the record of entry 9 does not decode: an elements field is longer than its record", True),
    "a directory that does not end at the entry count": (
        words("directory", lambda f, s: {len(s.at) - 1: 59}),
        "the bucket directory does not match the entries: it runs from 0 to 59, not from 0 to "
        "the 60 entries", False),
    "a bucket over max": (
        header_edit(lambda h: h["buckets"].update(max=h["buckets"]["max"] - 1)),
        "entries, over the header's max", False),
    "entries out of key order": (
        words("entry keys", _swap_neighbours_in_one_bucket), "entries out of key order", False),
    "a key in the wrong bucket": (
        words("directory", _move_a_bucket_boundary), "lies in bucket", False),
    "the terminal entry not empty": (
        words("entry keys", lambda f, s: {len(s.at) - 1: 12345}),
        "the terminal entry is not empty", False),
    "an entry holding the empty key": (
        words("entry keys", lambda f, s: {5: s.get(f.data, len(s.at) - 1)}),
        "entry 5 holds the empty key", False),
    "record offsets that decrease": (
        words("entry offsets", lambda f, s: {4: 1}), "record offsets do not match", False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_verify_names_the_damage(good: File, tmp_path: Path, name: str) -> None:
    damage, says, records_only = CASES[name]
    path = tmp_path / "damaged"
    path.write_bytes(damage(good))
    sf = StateFile(path)  # opening reads no body: the file opens
    if records_only:
        sf.verify()  # the tables are right: only the records' check sees it
        with pytest.raises(IntegrityError, match=f"{path}: .*{re.escape(says)}"):
            sf.verify(records=True)
    else:
        with pytest.raises(IntegrityError, match=f"{path}: .*{re.escape(says)}"):
            sf.verify()
        with pytest.raises(IntegrityError) as refused:  # what the loader asks, on its own
            sf.verify(records=True)
        assert "internal error" not in str(refused.value)
    # lookups on the file that opened raise nothing but IntegrityError
    state = State([sf])
    for key in [3 * i - 50 for i in range(60)] + [0, 2]:
        try:
            state.get(key)
        except IntegrityError as exc:
            assert "internal error" not in str(exc)


def test_dictionaries_that_overlap_are_refused_on_open(good: File, tmp_path: Path) -> None:
    """Two columns sharing one dictionary (each check passes on its own): the writer never
    overlaps sections, and a reader's work per dictionary must stay within the file's size."""
    path = tmp_path / "shared"
    path.write_bytes(header_edit(_share_a_dictionary)(good))
    with pytest.raises(IntegrityError, match="sections overlap"):
        StateFile(path)


def test_a_compact_base_under_an_overlay_of_another_schema(good: File, tmp_path: Path) -> None:
    """A damaged overlay whose schema lost a column, over a format-2 base: the files do not
    fit together, an IntegrityError naming them (it was a TypeError)."""
    overlay = tmp_path / "overlay"
    rows = _rows()[:5]
    write_rows(overlay, key=KeySpec(("id",), ("int",)), schema=SCHEMA, rows=rows,
               slot_keys=[r[0] for r in rows], kind="overlay", index_fields=("word",))
    data = overlay.read_bytes()
    header, body = split_state(data)
    del header["schema"][3]  # title: the overlay's records are not read before the State
    # padded to its length: format 1's record offsets are absolute, the body stays in place
    header["pad"] = ""
    header["pad"] = "x" * (struct.unpack_from("<I", data, 12)[0] - len(json.dumps(
        header, separators=(",", ":"), sort_keys=True)))
    overlay.write_bytes(join_state(header, body, like=data))
    base = StateFile(tmp_path / "good")
    with pytest.raises(IntegrityError, match=r"fuzz\.feed.*overlay over .*good: a format-2 file of "
                                             r"4 columns under a schema of 3"):
        State([StateFile(overlay), base])
