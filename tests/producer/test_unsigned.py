"""A producer without a signing key refuses to publish on top of a signed version (every
consumer holding the key would refuse it) unless told to, with ``allow_unsigned``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit.producer import Producer
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon

from ..conftest import titles_table
from .conftest import append_rows, create_table
from .test_daemon import TABLE, announced, feed_entry, manifest, store_files, write_config

FEED = TABLE
KEY = "k3y-for-the-feedkit-tests-0123456789"


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDKIT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("FEEDKIT_SIGNING_KEY_FILE", raising=False)


def test_a_keyless_producer_refuses_to_build_on_a_signed_version(tmp_path: Path) -> None:
    store = feedkit.open_store(str(tmp_path / "store"))
    with Producer(store, feed=FEED, primary_key="movie_id", signing_key=KEY) as p:
        v1 = p.publish(titles_table(100))
    files = store_files(tmp_path)
    with Producer(store, feed=FEED, primary_key="movie_id", work_dir=tmp_path / "w") as p:
        for publish in (p.publish, p.append):
            with pytest.raises(feedkit.ConfigurationError) as info:
                publish(titles_table(10, start=500))
            message = str(info.value)
            assert f"feed {FEED!r}" in message and f"version {v1} is signed" in message
            for fix in ("signing_key", "FEEDKIT_SIGNING_KEY", "allow_unsigned=True"):
                assert fix in message, (fix, message)
        assert p.metrics()["cycles"]["failed"] == 2
    assert store_files(tmp_path) == files and announced(tmp_path) == v1  # nothing written
    # Told to, it publishes an unsigned version; with the key, a signed one.
    with Producer(store, feed=FEED, primary_key="movie_id", allow_unsigned=True) as p:
        v2 = p.publish(titles_table(110))
    assert v2 is not None and manifest(tmp_path, v2).signature is None
    with Producer(store, feed=FEED, primary_key="movie_id", signing_key=KEY) as p:
        v3 = p.publish(titles_table(120))
    assert manifest(tmp_path, v3).signature is not None  # type: ignore[arg-type]


def test_the_daemon_refuses_until_its_feed_allows_unsigned(
        tmp_path: Path, catalog: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    create_table(catalog, TABLE, titles_table(100))
    config = write_config(tmp_path, [feed_entry()])
    with monkeypatch.context() as env:
        env.setenv("FEEDKIT_SIGNING_KEY", KEY)
        assert Daemon(load_config(config)).once() == 0
    v1 = announced(tmp_path)
    assert manifest(tmp_path, v1).signature is not None  # type: ignore[arg-type]

    append_rows(catalog.load_table(TABLE), titles_table(5, start=1000))
    assert Daemon(load_config(config)).once() == 1  # the key is gone: refused
    assert announced(tmp_path) == v1
    failed = [r.getMessage() for r in caplog.records if "event=failed" in r.getMessage()]
    assert failed and "ConfigurationError" in failed[-1] and "allow_unsigned" in failed[-1]

    config = write_config(tmp_path, [feed_entry(allow_unsigned=True)])
    assert Daemon(load_config(config)).once() == 0
    v2 = announced(tmp_path)
    assert v2 != v1 and manifest(tmp_path, v2).signature is None  # type: ignore[arg-type]
    assert manifest(tmp_path, v2).record_count == 105  # type: ignore[arg-type]
