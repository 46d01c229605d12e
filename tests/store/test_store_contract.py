"""The store contract, run against every store implementation (one parametrised fixture)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import feedkit
from feedkit.store import BlobStore


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return feedkit.open_store(f"file://{tmp_path}/store")
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]


def atomic_conditional_writes(store: BlobStore, request: pytest.FixtureRequest) -> None:
    """Skip on moto: its If-Match / If-None-Match check and write are two steps, so truly
    concurrent writers can both pass (S3 and MinIO decide atomically)."""
    if store.url.startswith("s3://") and request.getfixturevalue("s3_server").kind == "moto":
        pytest.skip("moto's conditional writes are not atomic under concurrent requests")


def test_put_new_then_read(any_store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"x" * 1000)
    any_store.put_new("feed/snapshots/a.zst", src)
    assert any_store.get_bytes("feed/snapshots/a.zst") == b"x" * 1000
    dest = tmp_path / "copy"
    assert any_store.download("feed/snapshots/a.zst", dest) == 1000
    assert dest.read_bytes() == b"x" * 1000
    assert any_store.exists("feed/snapshots/a.zst")
    assert not any_store.exists("feed/snapshots/b.zst")


def test_create_only_refuses_a_second_write(any_store: BlobStore) -> None:
    any_store.put_new_bytes("feed/versions/1.json", b"first")
    with pytest.raises(feedkit.BlobExistsError, match="exists already"):
        any_store.put_new_bytes("feed/versions/1.json", b"second")
    assert any_store.get_bytes("feed/versions/1.json") == b"first"


def test_two_concurrent_writers_cannot_both_win(any_store: BlobStore,
                                                 request: pytest.FixtureRequest) -> None:
    atomic_conditional_writes(any_store, request)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        try:
            any_store.put_new_bytes("feed/versions/race.json", f"writer {i}".encode())
            results.append(f"won {i}")
        except feedkit.BlobExistsError:
            results.append("lost")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("lost") == 7
    assert any_store.get_bytes("feed/versions/race.json") == winners[0].replace("won", "writer").encode()


def test_missing_objects_raise_not_found(any_store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(feedkit.BlobNotFoundError, match="nope"):
        any_store.get_bytes("feed/nope")
    with pytest.raises(feedkit.BlobNotFoundError):
        any_store.download("feed/nope", tmp_path / "x")
    with pytest.raises(feedkit.BlobNotFoundError):
        any_store.read_if_changed("feed/announced.json")


def test_listing_is_sorted_and_prefixed(any_store: BlobStore) -> None:
    for name in ("b", "a", "c"):
        any_store.put_new_bytes(f"feed/versions/{name}.json", b"{}")
    any_store.put_new_bytes("other/versions/z.json", b"{}")
    assert any_store.list("feed/versions/") == [
        "feed/versions/a.json", "feed/versions/b.json", "feed/versions/c.json"]
    assert any_store.list("feed/versions/b") == ["feed/versions/b.json"]
    assert any_store.list("missing/") == []


def test_compare_and_swap_of_the_announcement(any_store: BlobStore) -> None:
    key = "feed/announced.json"
    etag1 = any_store.replace_if_match(key, b"v1", None)
    with pytest.raises(feedkit.ProducerFencedError):
        any_store.replace_if_match(key, b"v1-again", None)  # must not exist
    data, tag = any_store.read_if_changed(key)  # type: ignore[misc]
    assert (data, tag) == (b"v1", etag1)
    assert any_store.read_if_changed(key, etag1) is None  # unchanged
    etag2 = any_store.replace_if_match(key, b"v2", etag1)
    with pytest.raises(feedkit.ProducerFencedError, match="changed since"):
        any_store.replace_if_match(key, b"stale", etag1)
    assert any_store.read_if_changed(key, etag1) == (b"v2", etag2)


def test_racing_swaps_have_exactly_one_winner(any_store: BlobStore,
                                              request: pytest.FixtureRequest) -> None:
    atomic_conditional_writes(any_store, request)
    key = "feed/announced.json"
    etag = any_store.replace_if_match(key, b"v0", None)
    barrier = threading.Barrier(6)
    outcomes: list[bool] = []

    def swap(i: int) -> None:
        barrier.wait()
        try:
            any_store.replace_if_match(key, f"v{i}".encode(), etag)
            outcomes.append(True)
        except feedkit.ProducerFencedError:
            outcomes.append(False)

    threads = [threading.Thread(target=swap, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 5 + [True]


def test_object_names_cannot_escape_the_store(any_store: BlobStore) -> None:
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", "a\0b"):
        with pytest.raises(feedkit.ConfigurationError):
            any_store.get_bytes(bad)


def test_open_store_urls(tmp_path: Path) -> None:
    assert feedkit.open_store(f"file://{tmp_path}/s").url == (tmp_path / "s").as_uri()
    assert feedkit.open_store(tmp_path / "plain").url == (tmp_path / "plain").as_uri()
    with pytest.raises(feedkit.ConfigurationError, match="unsupported scheme"):
        feedkit.open_store("ftp://host/x")
    with pytest.raises(feedkit.ConfigurationError, match="no host"):
        feedkit.open_store("file://somehost/x")
    assert feedkit.open_store("file://localhost" + str(tmp_path / "h")).url == \
        (tmp_path / "h").as_uri()
    assert not (tmp_path / "s").exists()  # opening creates nothing: the first write does


@pytest.mark.parametrize("url", ["", " ", "\t\n", "file:", "file://", "file:///?x",
                                 "file://localhost", "file:%20", "file://localhost?x"])
def test_a_store_url_without_a_folder_is_a_configuration_error(url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Never the working directory: a blank setting must not make it a store."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(feedkit.ConfigurationError, match="store URL"):
        feedkit.open_store(url)
    assert list(tmp_path.iterdir()) == []
    assert feedkit.open_store(".").url == tmp_path.as_uri()  # the working directory, said so


@pytest.mark.parametrize(("url", "message"), [
    ("file:///data/feeds?x=1", "no query or fragment"),
    ("file:///data/feeds#top", "no query or fragment"),
    ("s3://[bucket/x", "Invalid IPv6"),
    (None, "a str or os.PathLike"),
    (b"/data/feeds", "a str or os.PathLike"),
])
def test_malformed_store_urls_are_configuration_errors(url: object, message: str) -> None:
    with pytest.raises(feedkit.ConfigurationError, match=message):
        feedkit.open_store(url)  # type: ignore[arg-type]


def test_local_watch_reports_changes(any_store: BlobStore) -> None:
    fired = threading.Event()
    key = "feed/announced.json"
    any_store.replace_if_match(key, b"v1", None)
    watch = any_store.watch(key, fired.set)
    if watch is None:
        pytest.skip("this store cannot watch")
    try:
        _, tag = any_store.read_if_changed(key)  # type: ignore[misc]
        any_store.replace_if_match(key, b"v2", tag)
        assert fired.wait(5)
    finally:
        watch.stop()
        any_store.close()
