"""Shared fixtures: real temporary folders, a real local store, table builders."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import feedkit

from .s3server import S3Server


@pytest.fixture
def store(tmp_path: Path) -> feedkit.BlobStore:
    return feedkit.open_store(f"file://{tmp_path}/store")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's standalone server on 127.0.0.1 for the whole session (or FEEDKIT_S3_ENDPOINT)."""
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[feedkit.BlobStore]:
    """An S3 store on a fresh prefix of the test bucket."""
    store = feedkit.open_store(s3_server.url(), endpoint_url=s3_server.endpoint,
                               read_timeout=5.0, connect_timeout=2.0, max_attempts=2)
    yield store
    store.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def titles_table(n: int, *, seed: int = 0, start: int = 0) -> pa.Table:
    """A small Muse-like table: int key, five small fields."""
    rng = random.Random(seed)
    ids = list(range(start, start + n))
    return pa.table({
        "movie_id": pa.array(ids, pa.int64()),
        "title": [f"title {i}" for i in ids],
        "year": pa.array([1950 + i % 70 for i in ids], pa.int32()),
        "score": [rng.random() for _ in ids],
        "country": [("DE", "US", "FR", "BR")[i % 4] for i in ids],
    })


def truth(table: pa.Table, key: str | tuple[str, ...]) -> dict:
    """key -> row dict, the way Record._asdict() should look."""
    rows = table.to_pylist()
    if isinstance(key, str):
        return {r[key]: r for r in rows}
    return {tuple(r[k] for k in key): r for r in rows}
