"""Fuzzing the columnar delta's refresh, ``Loader._apply`` (FORMAT.md, 11.5): real delta
blobs of a format-2 feed damaged at random and re-sealed (their SHA-256 and size put in
the manifest's blob object, so that the checksum cannot catch the damage), with the
manifest's raw size told true or not, applied to the state a consumer held.

The property: the refresh raises ``IntegrityError`` and leaves nothing in the cache
folder, or it returns an overlay that verifies with every record and, over its base,
serves exactly the version the undamaged delta gives; it never raises anything else,
never crashes and never hangs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import feedkit
from feedkit import IntegrityError, names
from feedkit.blobs import BlobInfo
from feedkit.cache import FeedCache
from feedkit.format import StateFile
from feedkit.loader import Loader
from feedkit.manifest import Manifest
from tests.fuzz.support import TIMEOUT, Mutation, byte_mutations, fuzz_settings

pytestmark = pytest.mark.timeout(TIMEOUT)

FEED = "fuzz.delta"
WORDS = ["alpha", "beta", "gamma", "delta"]


def _table(n: int, shift: int, str_keys: bool) -> pa.Table:
    """Rows ``shift..n`` (the first ``shift`` deleted), every 7th one changed by ``shift``."""
    rows = range(shift, n)
    return pa.table({
        "id": [f"k{i}" for i in rows] if str_keys else pa.array([3 * i - 100 for i in rows],
                                                               pa.int64()),
        "word": [WORDS[(i + (shift if i % 7 == 0 else 0)) % 4] for i in rows],
        "tags": pa.array([[WORDS[(i + k) % 4] for k in range(i % 4)] for i in rows],
                         pa.list_(pa.string())),
        "score": [i * 0.5 if i % 5 else None for i in rows],
    })


def served(files: list[StateFile]) -> dict[int, bytes]:
    """What ``[overlay, base]`` serves: slot key -> canonical record."""
    out: dict[int, bytes] = {}
    for sf in reversed(files):
        slots = sf.occupied()
        heap, starts, lengths = sf.canonical(slots)
        for k, a, n in zip(sf.slot_keys(slots).tolist(), starts.tolist(), lengths.tolist(),
                           strict=True):
            record = bytes(heap[a:a + n])
            if record == b"\xc0":
                out.pop(k, None)
            else:
                out[k] = record
    return out


@dataclasses.dataclass
class Seed:
    store: Any
    cache: FeedCache
    loader: Loader
    base: StateFile
    manifest: Manifest
    blob: bytes
    truth: dict[int, bytes]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    """Per key kind: a consumer's format-2 base, the columnar delta a producer wrote
    over it (changes, additions and deletions), and what the delta serves undamaged."""
    out = {}
    for kind in ("int", "str"):
        folder = tmp_path_factory.mktemp(f"delta-seed-{kind}")
        store = feedkit.open_store(f"file://{folder}/store")
        with feedkit.Producer(store, feed=FEED, primary_key="id", indexes=["word"],
                              work_dir=folder / "work") as producer:
            v1 = producer.publish(_table(300, 0, kind == "str"))
            with feedkit.Consumer(store, feed=FEED, cache_dir=folder / "held", watch=False):
                pass
            v2 = producer.publish(_table(320, 9, kind == "str"))
        key = names.manifest_key(FEED, v2)
        m = Manifest.from_bytes(store.get_bytes(key), key)
        assert m.delta is not None and m.state_format == 2 and m.parent == v1
        blob = store.get_bytes(m.delta.key)
        assert blob[:8] == b"FEEDKITD"
        cache = FeedCache(folder / "held", FEED)
        base = StateFile(cache.base_path(v1))
        loader = Loader(store, FEED, cache)
        files = loader._apply([base], m)
        truth = served(files)
        assert len(truth) == m.record_count
        files[0].path.unlink()
        out[kind] = Seed(store, cache, loader, base, m, blob, truth)
    return out


def _apply(seed: Seed, blob: bytes, raw_size: int) -> list[StateFile] | None:
    m, path = seed.manifest, seed.store.root / seed.manifest.delta.key  # type: ignore[union-attr]
    path.chmod(0o600)
    path.write_bytes(blob)
    info = BlobInfo(m.delta.key, len(blob), hashlib.sha256(blob).hexdigest(),  # type: ignore[union-attr]
                    raw_size)
    final = seed.cache.overlay_path(seed.base.version, m.version)
    before = sorted(p.name for p in seed.cache.dir.iterdir())
    try:
        files = seed.loader._apply([seed.base], dataclasses.replace(m, delta=info))
    except IntegrityError as exc:
        assert FEED in str(exc)
        assert sorted(p.name for p in seed.cache.dir.iterdir()) == before
        return None
    files[0].verify(records=True)
    assert served(files) == seed.truth
    final.unlink()
    return files


@fuzz_settings(examples=150)
@given(kind=st.sampled_from(["int", "str"]), damage=byte_mutations(),
       raw_delta=st.sampled_from([0, 0, 0, -1, 1, -(1 << 10), 1 << 30]))
def test_a_damaged_delta_is_refused_or_serves_the_manifests_state(
        seeds: dict[str, Seed], kind: str, damage: Mutation, raw_delta: int) -> None:
    seed = seeds[kind]
    assert seed.manifest.delta is not None
    _apply(seed, damage(seed.blob), max(0, seed.manifest.delta.raw_size + raw_delta))


def test_the_seeds_apply(seeds: dict[str, Seed]) -> None:
    """Undamaged, every seed applies (so the property above is not vacuous)."""
    for seed in seeds.values():
        assert seed.manifest.delta is not None
        assert _apply(seed, seed.blob, seed.manifest.delta.raw_size) is not None
