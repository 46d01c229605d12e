"""An announcement naming another feed than the one it is stored under (a copied or
misplaced file) is refused: when parsed, by feedkit's admin functions and commands, by a
Consumer (which keeps serving its last good version), and by a Producer."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import feedkit
from feedkit import admin, names
from feedkit.cli import main
from feedkit.manifest import Announcement
from tests.conftest import titles_table, truth
from tests.test_admin import FEED

OTHER = "other.feed"


def misplace_announcement(store: feedkit.BlobStore) -> bytes:
    """Copy OTHER's announcement over FEED's (with the compare-and-swap a writer uses)."""
    foreign = store.get_bytes(names.announcement_key(OTHER))
    found = store.read_if_changed(names.announcement_key(FEED))
    assert found is not None
    store.replace_if_match(names.announcement_key(FEED), foreign, found[1])
    return foreign


@pytest.fixture
def two_feeds(store: feedkit.BlobStore) -> tuple[int, int, int]:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(50))
        v2 = producer.publish(titles_table(60))
    with feedkit.Producer(store, feed=OTHER, primary_key="movie_id") as producer:
        other = producer.publish(titles_table(5, start=1000))
    assert v1 and v2 and other
    return v1, v2, other


def test_an_announcement_of_another_feed_is_refused_when_parsed() -> None:
    data = Announcement("other", 3).to_bytes()
    for where in ("titles/announced.json", "/var/feeds/titles/announced.json",
                  "s3://bucket/prefix/titles/announced.json"):
        with pytest.raises(feedkit.IntegrityError,
                           match=f"announcement {where} names feed 'other'.*feed 'titles'"):
            Announcement.from_bytes(data, where)
    with pytest.raises(feedkit.IntegrityError, match="names feed 'other'.*'titles'"):
        Announcement.from_bytes(data, "somewhere", feed="titles")
    assert Announcement.from_bytes(data, "other/announced.json").feed == "other"
    assert Announcement.from_bytes(data, "x", feed="other").version == 3
    # Not the name of an announcement: nothing to check it against.
    assert Announcement.from_bytes(data, "where").feed == "other"
    assert Announcement.from_bytes(data, "announced.json").feed == "other"


def test_admin_and_the_command_line_refuse_it(store, tmp_path, two_feeds) -> None:
    v1, v2, _ = two_feeds
    misplace_announcement(store)
    key = names.announcement_key(FEED)
    with pytest.raises(feedkit.IntegrityError, match=f"{key} names feed '{OTHER}'.*'{FEED}'"):
        admin.list_versions(store, FEED)
    before = store.get_bytes(key)
    with pytest.raises(feedkit.IntegrityError, match=f"names feed '{OTHER}'"):
        admin.pin(store, FEED, v1)
    with pytest.raises(feedkit.IntegrityError, match=f"names feed '{OTHER}'"):
        admin.collect_garbage(store, FEED, keep=1)
    assert store.get_bytes(key) == before  # nothing written
    url = str(tmp_path / "store")
    for args in (["versions", url, FEED], ["inspect", url, FEED], ["get", url, FEED, "1"],
                 ["unpin", url, FEED], ["gc", url, FEED, "--keep", "1"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert f"names feed '{OTHER}', but it is the announcement of feed '{FEED}'" \
            in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert store.get_bytes(key) == before


def test_a_consumer_keeps_serving_and_a_new_one_refuses_to_open(store, tmp_path,
                                                                 two_feeds) -> None:
    _, v2, _ = two_feeds
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == v2
        failures = feed.metrics()["refresh_failures"]
        misplace_announcement(store)
        with pytest.raises(feedkit.IntegrityError, match=f"names feed '{OTHER}'.*'{FEED}'"):
            feed.refresh()
        assert feed.version == v2  # the last good version
        assert {k: r._asdict() for k, r in feed.items()} == truth(titles_table(60), "movie_id")
        assert feed.metrics()["refresh_failures"] == failures + 1
        assert f"names feed '{OTHER}'" in (feed.metrics()["last_error"] or "")
    with (pytest.raises(feedkit.IntegrityError, match=f"names feed '{OTHER}'.*'{FEED}'"),
          feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "fresh", watch=False)):
        pass


def test_a_producer_refuses_to_publish_on_it(store, two_feeds) -> None:
    misplace_announcement(store)
    before = store.list(names.manifests_prefix(FEED))
    with (feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer,
          pytest.raises(feedkit.IntegrityError, match=f"names feed '{OTHER}'")):
        producer.publish(titles_table(70))
    assert store.list(names.manifests_prefix(FEED)) == before


def test_read_only_use_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    store = feedkit.open_store(missing)
    with pytest.raises(feedkit.VersionNotFoundError, match="no versions"):
        admin.list_versions(store, FEED)
    with pytest.raises(feedkit.VersionNotFoundError, match="nothing announced"):
        admin.inspect_version(store, FEED)
    with pytest.raises(feedkit.VersionNotFoundError, match="nothing announced"):
        admin.unpin(store, FEED)
    assert admin.collect_garbage(store, FEED, keep=1).deleted_versions == []
    with pytest.raises(feedkit.VersionNotFoundError, match="nothing announced"):
        feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False).open()
    assert not missing.exists()
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        assert producer.publish(titles_table(3))  # a writer creates it
    assert (missing / names.announcement_key(FEED)).is_file()
