"""The daemon's TOML config: a valid file parses into the right values, every mistake is a
ConfigurationError that names the file and the offending key."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit.producer.config import DaemonConfig, FeedConfig, load_config, parse_config

FULL = """\
[store]
url = "file:///var/lib/feedkit/store"

[catalog]
name = "local"
type = "sql"
uri = "sqlite:////var/lib/feedkit/warehouse/catalog.db"
warehouse = "file:///var/lib/feedkit/warehouse"

[[feed]]
name = "muse.dimensions"
table = "muse.title_dimensions"
primary_key = ["movie_id", "dimension_id"]
columns = ["movie_id", "dimension_id", "vals"]
indexes = ["dimension_id"]
snapshot_every = 10
max_change_ratio = 0.2
min_records = 1
poll_interval = 5.0
validators = ["mypkg.checks:no_empty_titles"]
"""


def minimal() -> dict[str, Any]:
    """The smallest valid document, as tomllib would return it."""
    return {
        "store": {"url": "file:///srv/store"},
        "catalog": {"name": "local", "type": "sql"},
        "feed": [{"name": "muse.titles", "table": "muse.titles", "primary_key": "movie_id"}],
    }


def write(tmp_path: Path, text: str, name: str = "producer.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(doc: dict[str, Any], *mentions: str) -> str:
    """Parse ``doc``, expect a ConfigurationError naming the source and ``mentions``."""
    with pytest.raises(feedkit.ConfigurationError) as info:
        parse_config(doc, source="/etc/feedkit/producer.toml")
    message = str(info.value)
    assert "/etc/feedkit/producer.toml" in message
    for m in mentions:
        assert m in message, (m, message)
    return message


# -- valid configs -------------------------------------------------------------------------


def test_full_config_parses_into_its_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert isinstance(config, DaemonConfig)
    assert config.source == str(tmp_path / "producer.toml")
    assert config.store.url == "file:///var/lib/feedkit/store"
    assert config.catalog.name == "local"
    assert config.catalog.properties == {
        "type": "sql",
        "uri": "sqlite:////var/lib/feedkit/warehouse/catalog.db",
        "warehouse": "file:///var/lib/feedkit/warehouse",
    }
    assert config.work_dir is None and config.compression_level == 3
    assert config.feeds == (FeedConfig(
        feed="muse.dimensions",
        table="muse.title_dimensions",
        primary_key=("movie_id", "dimension_id"),
        columns=("movie_id", "dimension_id", "vals"),
        indexes=("dimension_id",),
        snapshot_every=10,
        max_change_ratio=0.2,
        min_records=1,
        poll_interval=5.0,
        validators=("mypkg.checks:no_empty_titles",),
    ),)


def test_defaults_of_a_minimal_feed() -> None:
    config = parse_config(minimal())
    (feed,) = config.feeds
    assert feed.primary_key == ("movie_id",)  # a string key becomes a one-column tuple
    assert feed.columns is None and feed.indexes == () and feed.validators == ()
    assert feed.snapshot_every == 10 and feed.max_change_ratio is None
    assert feed.min_records == 0 and feed.poll_interval == 5.0
    assert config.work_dir is None and config.compression_level == 3


def test_primary_key_as_a_string_and_as_a_list() -> None:
    doc = minimal()
    doc["feed"][0]["primary_key"] = "movie_id"
    assert parse_config(doc).feeds[0].primary_key == ("movie_id",)
    doc["feed"][0]["primary_key"] = ["movie_id", "dimension_id"]
    assert parse_config(doc).feeds[0].primary_key == ("movie_id", "dimension_id")


def test_int_numbers_become_floats_where_floats_are_expected() -> None:
    doc = minimal()
    doc["feed"][0].update(poll_interval=2, max_change_ratio=1)
    feed = parse_config(doc).feeds[0]
    assert feed.poll_interval == 2.0 and isinstance(feed.poll_interval, float)
    assert feed.max_change_ratio == 1.0 and isinstance(feed.max_change_ratio, float)


def test_several_feeds_keep_their_order() -> None:
    doc = minimal()
    doc["feed"].append({"name": "muse.other", "table": "muse.other", "primary_key": ["a", "b"],
                        "max_change_ratio": 0})
    feeds = parse_config(doc).feeds
    assert [f.name for f in feeds] == ["muse.titles", "muse.other"]
    assert feeds[1].max_change_ratio == 0.0  # zero is a valid limit, not "no limit"


def test_catalog_keys_pass_through_unchanged() -> None:
    doc = minimal()
    doc["catalog"] = {"name": "glue", "type": "glue", "glue.region": "eu-west-1",
                      "s3.connect-timeout": 30, "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO"}
    catalog = parse_config(doc).catalog
    assert catalog.name == "glue"
    assert catalog.properties == {"type": "glue", "glue.region": "eu-west-1",
                                  "s3.connect-timeout": 30,
                                  "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO"}


def test_relative_store_and_work_dir_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(folder, """\
        [store]
        url = "data/store"
        [producer]
        work_dir = "../work"
        compression_level = 9
        [catalog]
        name = "local"
        [[feed]]
        name = "muse.titles"
        table = "muse.titles"
        primary_key = "movie_id"
        """)
    config = load_config(path)
    assert config.store.url == str((folder / "data" / "store").resolve())
    assert config.work_dir == (tmp_path / "work").resolve()
    assert config.compression_level == 9


def test_absolute_paths_and_urls_are_kept(tmp_path: Path) -> None:
    doc = minimal()
    doc["store"]["url"] = "s3://bucket/prefix"
    doc["producer"] = {"work_dir": "/var/lib/feedkit/work"}
    config = parse_config(doc, base_dir=tmp_path)
    assert config.store.url == "s3://bucket/prefix"
    assert config.work_dir == Path("/var/lib/feedkit/work")
    doc["store"]["url"] = "/srv/store"
    assert parse_config(doc, base_dir=tmp_path).store.url == "/srv/store"


# -- unknown keys --------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    doc = minimal()
    doc["stores"] = {}
    refused(doc, "unknown key stores")


def test_unknown_key_in_store() -> None:
    doc = minimal()
    doc["store"]["bucket"] = "b"
    refused(doc, "store.bucket")


def test_unknown_key_in_producer() -> None:
    doc = minimal()
    doc["producer"] = {"workdir": "/tmp/x"}
    refused(doc, "producer.workdir")


def test_unknown_key_in_a_feed_names_the_feed_index(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace('table = "muse.title_dimensions"',
                                        'tabel = "muse.title_dimensions"'))
    with pytest.raises(feedkit.ConfigurationError) as info:
        load_config(path)
    assert "feed[0].tabel" in str(info.value) and str(path) in str(info.value)


def test_unknown_key_in_the_second_feed() -> None:
    doc = minimal()
    doc["feed"].append({"name": "muse.b", "table": "muse.b", "primary_key": "id",
                        "max_change_ration": 0.1})
    refused(doc, "feed[1].max_change_ration")


# -- missing keys --------------------------------------------------------------------------


@pytest.mark.parametrize("section, mention", [
    ("store", "[store]"), ("catalog", "[catalog]"), ("feed", "[[feed]]"),
])
def test_missing_section(section: str, mention: str) -> None:
    doc = minimal()
    del doc[section]
    refused(doc, "missing", mention)


def test_missing_store_url() -> None:
    doc = minimal()
    doc["store"] = {}
    refused(doc, "missing key store.url")


@pytest.mark.parametrize("key", ["name", "table", "primary_key"])
def test_missing_feed_key(key: str) -> None:
    doc = minimal()
    del doc["feed"][0][key]
    refused(doc, f"missing key feed[0].{key}")


def test_catalog_without_a_name() -> None:
    doc = minimal()
    del doc["catalog"]["name"]
    refused(doc, "[catalog]", "name")


@pytest.mark.parametrize("feed", [[], {"name": "muse.titles"}])
def test_feed_must_be_a_non_empty_array_of_tables(feed: Any) -> None:
    doc = minimal()
    doc["feed"] = feed
    refused(doc, "[[feed]]")


# -- wrong types -------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, mention", [
    ("poll_interval", "5", "feed[0].poll_interval must be int or float"),
    ("primary_key", 3, "feed[0].primary_key must be str or array"),
    ("snapshot_every", True, "feed[0].snapshot_every must be int"),
    ("min_records", True, "feed[0].min_records must be int"),
    ("min_records", 1.5, "feed[0].min_records must be int"),
    ("max_change_ratio", False, "feed[0].max_change_ratio must be int or float"),
    ("max_change_ratio", "10%", "feed[0].max_change_ratio must be int or float"),
    ("columns", "movie_id", "feed[0].columns must be array"),
    ("indexes", "country", "feed[0].indexes must be array"),
    ("validators", "pkg.mod:f", "feed[0].validators must be array"),
    ("name", 7, "feed[0].name must be str"),
    ("table", ["muse", "titles"], "feed[0].table must be str"),
])
def test_wrong_type_in_a_feed(key: str, value: Any, mention: str) -> None:
    doc = minimal()
    doc["feed"][0][key] = value
    refused(doc, mention)


@pytest.mark.parametrize("key, value", [
    ("primary_key", []), ("primary_key", ""), ("primary_key", ["movie_id", 3]),
    ("columns", []), ("columns", ["movie_id", ""]), ("indexes", [1]), ("validators", [None]),
])
def test_string_lists_hold_non_empty_strings(key: str, value: Any) -> None:
    doc = minimal()
    doc["feed"][0][key] = value
    refused(doc, f"feed[0] (muse.titles).{key}")


def test_wrong_types_outside_feeds() -> None:
    doc = minimal()
    doc["store"]["url"] = 5
    refused(doc, "store.url must be str")
    doc = minimal()
    doc["producer"] = {"compression_level": True}
    refused(doc, "producer.compression_level must be int")
    doc = minimal()
    doc["producer"] = {"work_dir": 1}
    refused(doc, "producer.work_dir must be str")
    doc = minimal()
    doc["store"] = "file:///srv/store"
    refused(doc, "[store] must be a table")


# -- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Muse.Titles", "muse titles", "muse..titles", ".muse", ""])
def test_bad_feed_name(name: str) -> None:
    doc = minimal()
    doc["feed"][0]["name"] = name
    refused(doc, "feed[0].name", "invalid feed name")


def test_duplicate_feed_names() -> None:
    doc = minimal()
    doc["feed"].append(copy.deepcopy(doc["feed"][0]))
    refused(doc, "feed[1]", "'muse.titles'", "twice")


@pytest.mark.parametrize("key, value", [
    ("max_change_ratio", -0.1),
    ("max_change_ratio", float("nan")),
    ("min_records", -1),
    ("poll_interval", 0),
    ("poll_interval", -5.0),
    ("snapshot_every", 0),
])
def test_out_of_range_values(key: str, value: Any) -> None:
    doc = minimal()
    doc["feed"][0][key] = value
    refused(doc, "feed[0]", "muse.titles", f".{key} must be")


# -- the file itself -----------------------------------------------------------------------


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + "\nthis is not toml\n")
    with pytest.raises(feedkit.ConfigurationError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "TOML" in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(feedkit.ConfigurationError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("poll_interval = 5.0", 'poll_interval = "5"'))
    with pytest.raises(feedkit.ConfigurationError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "feed[0].poll_interval" in str(info.value)


def test_store_options_for_s3_are_kept() -> None:
    doc = minimal()
    doc["store"] = {"url": "s3://bucket/feeds", "endpoint_url": "http://127.0.0.1:9000",
                    "region": "eu-west-1", "read_timeout": 10}
    config = parse_config(doc)
    assert config.store.url == "s3://bucket/feeds"
    assert config.store.options == {"endpoint_url": "http://127.0.0.1:9000",
                                    "region": "eu-west-1", "read_timeout": 10}


# -- what a Producer would refuse, refused when the config is read -------------------------


@pytest.mark.parametrize("level", [23, 100, -(1 << 17) - 1, 3.5, True])
def test_compression_level_outside_zstds_range(level: Any) -> None:
    doc = minimal()
    doc["producer"] = {"compression_level": level}
    if isinstance(level, int) and not isinstance(level, bool):
        refused(doc, "producer.compression_level", str(level), "-131072..22")
    else:  # not an integer at all: the type check names it
        refused(doc, "producer.compression_level", "must be int")


@pytest.mark.parametrize("level", [-(1 << 17), -5, 0, 1, 22])
def test_compression_levels_zstd_accepts(level: int) -> None:
    doc = minimal()
    doc["producer"] = {"compression_level": level}
    assert parse_config(doc).compression_level == level


@pytest.mark.parametrize("key, value", [
    ("columns", ["movie_id", "title", "title"]),
    ("primary_key", ["movie_id", "movie_id"]),
    ("indexes", ["country", "country"]),
])
def test_a_column_named_twice(key: str, value: list[str]) -> None:
    doc = minimal()
    doc["feed"][0][key] = value
    refused(doc, f"feed[0] (muse.titles).{key}", repr(value[-1]), "more than once")


def test_allow_unsigned_is_a_feed_boolean() -> None:
    doc = minimal()
    assert parse_config(doc).feeds[0].allow_unsigned is False
    doc["feed"][0]["allow_unsigned"] = True
    assert parse_config(doc).feeds[0].allow_unsigned is True
    doc["feed"][0]["allow_unsigned"] = "yes"
    refused(doc, "feed[0].allow_unsigned must be bool")
