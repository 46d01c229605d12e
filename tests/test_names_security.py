"""Names that would leave a store's root or prefix, or a consumer's cache folder, are
refused with a ConfigurationError that names them, before anything touches the disk or
the network; nothing appears outside the folders feedkit was given."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit import ConfigurationError
from feedkit.cache import FeedCache
from feedkit.names import check_object_name, validate_feed

BAD_FEEDS: list[Any] = [
    "..", ".", "../escape", "a/b", "/abs", "a\0b", "a\nb", "A", "feed..x", ".hidden", "-x",
    "", "x" * 129, "ｆｅｅｄ", "feed/", "a b", None, 7, b"feed",
]
BAD_KEYS: list[Any] = [
    "", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "..", "a\0b", "a\nb",
    "a\x7fb", "\udc80", "x" * 1025, "a/" + "y" * 256, 7, None,
]


def tree(folder: Path) -> set[str]:
    """Every path under ``folder``, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", BAD_FEEDS)
def test_invalid_feed_names_are_refused_by_name(name: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        validate_feed(name)
    assert repr(name) in str(err.value)


@pytest.mark.parametrize("name", ["a", "muse.dimensions", "0-feed_v2", "x" * 128, "a.b-c_d"])
def test_valid_feed_names_pass(name: str) -> None:
    assert validate_feed(name) == name


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_object_names_are_refused_naming_store_and_key(key: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        check_object_name(key, "s3://bucket/prefix")
    message = str(err.value)
    assert "s3://bucket/prefix" in message
    assert repr(key)[:40] in message  # long names are shortened in the message


def test_object_names_at_the_limits_pass() -> None:
    part = "y" * 255
    assert check_object_name(f"feed/{part}", "s") == ["feed", part]
    assert check_object_name("/".join(["a" * 200] * 5), "s")  # 1004 bytes
    assert check_object_name("feed/versions/00000000000000000001.json", "s")[-1].endswith(".json")


LOCAL_OPERATIONS: dict[str, Callable[[feedkit.BlobStore, str, Path], Any]] = {
    "put_new_bytes": lambda s, k, src: s.put_new_bytes(k, b"x"),
    "put_new": lambda s, k, src: s.put_new(k, src),
    "get_bytes": lambda s, k, src: s.get_bytes(k),
    "download": lambda s, k, src: s.download(k, src.with_name("dl")),
    "exists": lambda s, k, src: s.exists(k),
    "delete": lambda s, k, src: s.delete(k),
    "read_if_changed": lambda s, k, src: s.read_if_changed(k),
    "replace_if_match": lambda s, k, src: s.replace_if_match(k, b"x", None),
    "watch": lambda s, k, src: s.watch(k, lambda: None),
    "list": lambda s, k, src: s.list(k + "/"),
}


@pytest.mark.parametrize("operation", sorted(LOCAL_OPERATIONS))
@pytest.mark.parametrize("key", ["../outside", "../../outside/x", "/tmp/outside", "a/../../outside",
                                 "a\0b", "x" * 2000])
def test_local_store_refuses_keys_leaving_its_folder(tmp_path: Path, operation: str,
                                                     key: str) -> None:
    root = tmp_path / "store"
    store = feedkit.open_store(f"file://{root}")
    src = tmp_path / "src"
    src.write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    before = tree(tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="invalid object name|too long"):
            LOCAL_OPERATIONS[operation](store, key, src)
    finally:
        store.close()
    assert tree(tmp_path) == before  # nothing written anywhere, inside the store or out


def test_local_store_url_with_a_nul_byte(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="null"):
        feedkit.open_store(f"file://{tmp_path}/a%00b")
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("url", ["s3://bucket/../other", "s3://bucket/a/../../b", "s3://bucket/a//b",
                                 "s3://bucket/a%00b"])
def test_s3_prefixes_follow_the_object_name_rules(url: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid object name"):
        feedkit.open_store(url, endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize("key", ["../other-feed/announced.json", "/abs", "a//b", "a\0b", "x" * 2000])
def test_s3_store_refuses_bad_keys_before_any_request(key: str) -> None:
    # Port 9 (discard) has no server: a request would fail with a StoreError, slowly.
    store = feedkit.open_store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9",
                               connect_timeout=0.2, read_timeout=0.2, max_attempts=1)
    try:
        for call in (lambda: store.get_bytes(key), lambda: store.put_new_bytes(key, b"x"),
                     lambda: store.exists(key), lambda: store.delete(key),
                     lambda: store.read_if_changed(key),
                     lambda: store.replace_if_match(key, b"x", None)):
            with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
                call()
    finally:
        store.close()


@pytest.mark.parametrize("feed", ["../escape", "a/b", "/abs", ".."])
def test_feed_cache_refuses_names_leaving_the_cache_folder(tmp_path: Path, feed: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(ConfigurationError) as err:
        FeedCache(cache, feed)
    assert repr(feed) in str(err.value)
    assert tree(tmp_path) == {"cache"}


def test_feed_cache_folder_with_a_nul_byte(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cache folder"):
        FeedCache(f"{tmp_path}/ca\0che", "feed")


def test_feed_cache_stays_inside_its_folder(tmp_path: Path) -> None:
    cache = FeedCache(tmp_path, "muse.dimensions")
    assert cache.dir == tmp_path / "muse.dimensions"
    assert oct(os.stat(cache.dir).st_mode & 0o777) == oct(0o700)
    for path in (cache.base_path(2**63 - 1), cache.overlay_path(1, 2), cache.scratch_path("x")):
        assert path.parent == cache.dir


@pytest.mark.parametrize("feed", ["../escape", "a/b", "/abs", "a\0b", "x" * 200])
def test_consumer_and_producer_refuse_bad_feed_names(tmp_path: Path, feed: str) -> None:
    store = feedkit.open_store(f"file://{tmp_path}/store")
    before = tree(tmp_path)
    with pytest.raises(ConfigurationError) as err:
        feedkit.Consumer(store, feed=feed, cache_dir=tmp_path / "cache", watch=False)
    assert repr(feed) in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        feedkit.Producer(store, feed=feed, primary_key="id", work_dir=tmp_path / "work")
    assert repr(feed) in str(err.value)
    assert tree(tmp_path) == before


def test_consumer_with_a_nul_byte_in_its_cache_folder(tmp_path: Path) -> None:
    store = feedkit.open_store(f"file://{tmp_path}/store")
    consumer = feedkit.Consumer(store, feed="feed", cache_dir=f"{tmp_path}/ca\0che", watch=False)
    with pytest.raises(ConfigurationError, match="cache folder"):
        consumer.open()


def test_producer_with_a_nul_byte_in_its_work_dir(tmp_path: Path) -> None:
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with pytest.raises(ConfigurationError, match="invalid work_dir") as err:
        feedkit.Producer(store, feed="titles", primary_key="id", work_dir=f"{tmp_path}/a\0b")
    assert "'titles'" in str(err.value)
