"""ProducerSettings: one frozen config for Producer's keywords and the daemon's [[feed]]."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import feedkit
from feedkit.producer import Producer
from feedkit.producer.config import FeedConfig
from feedkit.producer.settings import ProducerSettings, SettingsError

from ..conftest import titles_table


def test_settings_are_normalised_and_frozen() -> None:
    s = ProducerSettings(feed="t", primary_key="movie_id", indexes=("a", "b", "a"))
    assert s.primary_key == ("movie_id",) and s.indexes == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.snapshot_every = 3  # type: ignore[misc]


@pytest.mark.parametrize("setting, value", [
    ("primary_key", None), ("primary_key", ()), ("primary_key", ("a", "a")),
    ("snapshot_every", 0), ("batch_rows", -1), ("min_records", -1),
    ("max_change_ratio", -0.5), ("max_change_ratio", float("nan")), ("max_delta_ratio", -1),
    ("compression_level", 23), ("format", 3), ("allow_unsigned", "yes"),
])
def test_each_rule_names_the_feed_and_the_setting(setting: str, value: object) -> None:
    args = {"feed": "muse.t", "primary_key": "id", setting: value}
    with pytest.raises(SettingsError) as info:
        ProducerSettings(**args)  # type: ignore[arg-type]
    assert info.value.setting == setting and "'muse.t'" in str(info.value)
    assert isinstance(info.value, feedkit.ConfigurationError)


def test_feed_config_is_settings_with_the_daemons_fields() -> None:
    cfg = FeedConfig(feed="muse.t", table="muse.t", primary_key="id", poll_interval=2)
    assert isinstance(cfg, ProducerSettings) and cfg.name == "muse.t"
    with pytest.raises(SettingsError, match="poll_interval"):
        FeedConfig(feed="muse.t", table="muse.t", primary_key="id", poll_interval=0)


def test_a_producer_from_settings_follows_them(store: feedkit.BlobStore, tmp_path: Path) -> None:
    settings = ProducerSettings(feed="titles", primary_key="movie_id", snapshot_every=2,
                                min_records=10)
    with Producer.from_settings(store, settings, work_dir=tmp_path / "w") as p:
        assert p.settings is settings and p.snapshot_every == 2
        p.publish(titles_table(50))
        with pytest.raises(feedkit.RefusedError, match="min_records"):
            p.publish(titles_table(5))
