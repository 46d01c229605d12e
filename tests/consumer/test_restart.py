"""What a consumer serves when it starts from its cache folder, and what it trusts there:
a rollback holds across restarts, and a signing key covers cached versions too."""

from __future__ import annotations

from pathlib import Path

import pytest

import feedkit
from feedkit import admin
from tests.conftest import titles_table

KEY = b"k" * 32


def _publish_three(store: feedkit.BlobStore, tmp_path: Path, **kw: object) -> list[int]:
    with feedkit.Producer(store, feed="titles", primary_key="movie_id",
                          work_dir=tmp_path / "work", **kw) as p:  # type: ignore[arg-type]
        return [p.publish(titles_table(10 * (i + 1))) for i in range(3)]  # type: ignore[misc]


def test_a_rollback_holds_when_a_consumer_restarts_without_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = feedkit.open_store(f"file://{root}")
    cache = tmp_path / "cache"
    v1, v2, v3 = _publish_three(store, tmp_path)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
        assert feed.version == v3
        admin.pin(store, "titles", v1, reason="v2 and v3 are bad")
        assert feed.refresh() and feed.version == v1
    root.rename(tmp_path / "away")  # the store is unreachable
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
        assert feed.version == v1 and len(feed) == 10  # not v3, the newest it holds
        assert feed.metrics()["announced_version"] == v1
        health = feed.health()
        assert not health.ok and health.seconds_since_check is None and health.last_error


def test_without_a_remembered_announcement_the_newest_cached_version_serves(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = feedkit.open_store(f"file://{root}")
    cache = tmp_path / "cache"
    *_, v3 = _publish_three(store, tmp_path)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
        assert feed.version == v3
    (cache / "titles" / ".announced.json").write_bytes(b"{not json")  # damaged: ignored
    root.rename(tmp_path / "away")
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
        assert feed.version == v3


def _forge_unsigned_version(store: feedkit.BlobStore, tmp_path: Path, n: int) -> int:
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", allow_unsigned=True,
                          work_dir=tmp_path / "forger") as p:
        version = p.publish(titles_table(n, seed=99))
    assert version is not None
    return version


def test_a_keyed_consumer_never_serves_an_unsigned_version_a_keyless_one_built(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    *_, v3 = _publish_three(store, tmp_path, signing_key=KEY)
    forged = _forge_unsigned_version(store, tmp_path, 77)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as keyless:
        assert keyless.version == forged and len(keyless) == 77  # built in the shared folder
    with pytest.raises(feedkit.IntegrityError, match="not signed"):
        feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False,
                         signing_key=KEY).open()
    # A keyed consumer of the same folder serving v3 refuses to move to it.
    admin.pin(store, "titles", v3)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False,
                          signing_key=KEY) as keyed:
        assert keyed.version == v3
        admin.unpin(store, "titles")
        with pytest.raises(feedkit.IntegrityError, match="not signed"):
            keyed.refresh()
        assert keyed.version == v3 and len(keyed) == 30


def test_a_keyed_consumer_starting_from_the_cache_verifies_what_it_serves(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = feedkit.open_store(f"file://{root}")
    cache = tmp_path / "shared-cache"
    *_, v3 = _publish_three(store, tmp_path, signing_key=KEY)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False,
                          signing_key=KEY) as keyed:
        assert keyed.version == v3
    forged = _forge_unsigned_version(store, tmp_path, 55)
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as keyless:
        assert keyless.version == forged  # cached, and remembered as announced
    root.rename(tmp_path / "away")  # now start with the store unreachable
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False,
                          signing_key=KEY) as keyed:
        # The forged version is the newest cached and the announced one; its manifest
        # is unsigned, so the keyed consumer serves the newest version it can verify.
        assert keyed.version == v3 and len(keyed) == 30
    # A keyless consumer would serve the forged one: the key is what refused it.
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as keyless:
        assert keyless.version == forged
