"""Fuzzing the columnar snapshot blob's rebuild, ``format.build_snapshot`` (FORMAT.md, 11):
real blobs damaged at random and re-sealed (their SHA-256 and size put in the manifest's
blob object, so that the checksum cannot catch the damage), with the manifest's raw size
told true or not.

The property: the rebuild raises ``IntegrityError`` and leaves no file, or it returns and
the file it wrote verifies with every record and holds the manifest's records (count and
digest); it never raises anything else, never crashes and never hangs.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import feedkit
from feedkit import IntegrityError, names
from feedkit.blobs import BlobInfo
from feedkit.format import StateFile, build_snapshot
from feedkit.manifest import Manifest
from feedkit.merge import base_records, record_digest
from tests.fuzz.support import TIMEOUT, Mutation, byte_mutations, fuzz_settings

pytestmark = pytest.mark.timeout(TIMEOUT)

FEED = "fuzz.feed"
WORDS = ["alpha", "beta", "gamma", "delta"]


def _tables() -> dict[str, tuple[str | tuple[str, str], pa.Table]]:
    n = 300
    return {
        "int key, dictionaries": ("id", pa.table({
            "id": pa.array([5 * i - 700 for i in range(n)], pa.int64()),
            "word": [WORDS[i % 3] for i in range(n)],
            "tags": pa.array([[WORDS[(i * 7 + k) % 4] for k in range(i % 5)] for i in range(n)],
                             pa.list_(pa.string())),
            "score": [i * 0.25 if i % 9 else None for i in range(n)],
            "meta": pa.array([{"a": i, "b": WORDS[i % 4]} for i in range(n)],
                             pa.struct([("a", pa.int64()), ("b", pa.string())])),
        })),
        "composite key, nulls and maps": (("a", "b"), pa.table({
            "a": [i % 11 for i in range(n)], "b": [f"k{i // 11}" for i in range(n)],
            "m": pa.array([[(WORDS[i % 4], i)] if i % 3 else None for i in range(n)],
                          pa.map_(pa.string(), pa.int64())),
            "blob": [bytes([i % 256]) * (i % 7) for i in range(n)],
        })),
    }


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, Manifest]]:
    """A real blob per table, with its manifest."""
    out = {}
    for i, (name, (pk, table)) in enumerate(_tables().items()):
        folder = tmp_path_factory.mktemp(f"snapshot-seed-{i}")
        store = feedkit.open_store(f"file://{folder}/store")
        with feedkit.Producer(store, feed=FEED, primary_key=pk, indexes=["word" if "word" in table.column_names else "blob"],
                              work_dir=folder / "work") as producer:
            v = producer.publish(table)
        key = names.manifest_key(FEED, v)
        m = Manifest.from_bytes(store.get_bytes(key), key)
        assert m.snapshot is not None and m.state_format == 2
        out[name] = (store.get_bytes(m.snapshot.key), m)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("snapshot-fuzz")


_counter = itertools.count()


def _rebuild(folder: Path, blob: bytes, m: Manifest, raw_size: int) -> StateFile | None:
    n = next(_counter)
    src, out = folder / f"{n}.blob", folder / f"{n}.base"
    src.write_bytes(blob)
    assert m.snapshot is not None
    info = BlobInfo(m.snapshot.key, len(blob), hashlib.sha256(blob).hexdigest(), raw_size)
    expected: dict[str, Any] = {
        "feed": FEED, "version": m.version, "key": m.key, "schema": m.schema,
        "index_fields": m.index_fields, "record_count": m.record_count,
        "state_digest": m.state_digest}
    try:
        build_snapshot(src, info, expected, out)
    except IntegrityError:
        assert not out.exists()
        return None
    finally:
        src.unlink()
    sf = StateFile(out)
    sf.verify(records=True)
    rs = base_records(sf)
    assert len(rs) == m.record_count
    digest = sum(record_digest(heap, rs.starts[mask], rs.lengths[mask])
                 for i, heap in enumerate(rs.sources)
                 for mask in [rs.source == i if rs.source is not None else slice(None)])
    assert digest % 2**64 == m.state_digest
    return sf


@fuzz_settings(examples=150)
@given(table=st.sampled_from(sorted(_tables())), damage=byte_mutations(),
       raw_delta=st.sampled_from([0, 0, 0, -1, 1, -(1 << 10), 1 << 30]))
def test_a_damaged_blob_is_refused_or_rebuilds_the_manifests_state(
        seeds: dict[str, tuple[bytes, Manifest]], folder: Path, table: str, damage: Mutation,
        raw_delta: int) -> None:
    blob, m = seeds[table]
    assert m.snapshot is not None
    _rebuild(folder, damage(blob), m, max(0, m.snapshot.raw_size + raw_delta))


def test_the_seeds_rebuild(seeds: dict[str, tuple[bytes, Manifest]], folder: Path) -> None:
    """Undamaged, every seed rebuilds (so the property above is not vacuous)."""
    for blob, m in seeds.values():
        assert m.snapshot is not None
        assert _rebuild(folder, blob, m, m.snapshot.raw_size) is not None
