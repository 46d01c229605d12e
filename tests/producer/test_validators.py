"""Validators with a real local store: a refused version writes and announces nothing,
force skips only the threshold rules, custom validators see the candidate state."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import feedkit
from feedkit import names
from feedkit.manifest import Announcement, Manifest
from feedkit.producer import (
    CycleSummary,
    MaxChangeRatio,
    MinRecords,
    Producer,
    ValidationResult,
    load_validator,
)

from ..conftest import titles_table, truth

FEED = "val.titles"


def store_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "store"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def announced(store: feedkit.BlobStore, feed: str = FEED) -> int:
    key = names.announcement_key(feed)
    return Announcement.from_bytes(store.get_bytes(key), key).version


def manifest(store: feedkit.BlobStore, version: int, feed: str = FEED) -> Manifest:
    key = names.manifest_key(feed, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def without(table: pa.Table, ids: list[int]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["movie_id"], pa.array(ids, pa.int64()))))


def retitled(table: pa.Table, ids: set[int], title: str = "changed") -> pa.Table:
    titles = [title if i in ids else t
              for i, t in zip(table["movie_id"].to_pylist(), table["title"].to_pylist(),
                              strict=True)]
    return table.set_column(1, "title", pa.array(titles))


def with_duplicates(table: pa.Table, n: int) -> pa.Table:
    return pa.concat_tables([table, table.slice(0, n)])


@pytest.fixture
def producer(store: feedkit.BlobStore, tmp_path: Path) -> Iterator[Producer]:
    with Producer(store, feed=FEED, primary_key="movie_id", max_change_ratio=0.1,
                  min_records=900, work_dir=tmp_path / "work") as p:
        yield p


def expect_nothing_written(store: feedkit.BlobStore, tmp_path: Path, producer: Producer,
                           version: int, served: pa.Table) -> None:
    """The store, the announcement, the producer and a fresh consumer all stay at ``version``."""
    assert announced(store) == version
    assert producer.version == version
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "check-cache",
                          watch=False) as feed:
        assert feed.version == version and len(feed) == served.num_rows
        for key, row in truth(served, "movie_id").items():
            assert feed.get(key)._asdict() == row


# -- the threshold rules -------------------------------------------------------------------


def test_max_change_ratio_refuses_and_writes_nothing(store: feedkit.BlobStore, tmp_path: Path,
                                                     producer: Producer) -> None:
    v1_table = titles_table(1000)
    v1 = producer.publish(v1_table)
    assert v1 is not None
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == v1
        files, work = store_files(tmp_path), sorted(p.name for p in producer.work_dir.iterdir())

        bad = without(v1_table, list(range(150)))  # 15% removed, 850 records
        with pytest.raises(feedkit.RefusedError) as info:
            producer.publish(bad)
        message = str(info.value)
        assert FEED in message and "max_change_ratio" in message
        assert "15.0%" in message and "150 removed" in message and "150 of 1000" in message
        assert "limit 10.0%" in message
        assert "min_records" in message and "850 records, minimum 900" in message
        rules = {r.rule: r for r in info.value.results}
        assert set(rules) == {"max_change_ratio", "min_records"}
        assert rules["max_change_ratio"].details["removed"] == 150
        assert rules["max_change_ratio"].details["ratio"] == 0.15

        assert store_files(tmp_path) == files
        assert sorted(p.name for p in producer.work_dir.iterdir()) == work  # no leftovers
        assert feed.refresh() is False and feed.version == v1
        assert feed.get(0)._asdict() == truth(v1_table, "movie_id")[0]
    expect_nothing_written(store, tmp_path, producer, v1, v1_table)


def test_force_publishes_past_the_threshold_rules(store: feedkit.BlobStore, tmp_path: Path,
                                                  producer: Producer) -> None:
    v1 = producer.publish(titles_table(1000))
    small = titles_table(500)  # 50% removed and below min_records
    with pytest.raises(feedkit.RefusedError):
        producer.publish(small)
    v2 = producer.publish(small, force=True)
    assert v2 is not None and v2 > v1
    assert announced(store) == v2 and manifest(store, v2).record_count == 500
    expect_nothing_written(store, tmp_path, producer, v2, small)


def test_a_change_at_the_limit_passes(producer: Producer) -> None:
    table = titles_table(1000)
    producer.publish(table)
    v2 = producer.publish(without(table, list(range(100))))  # exactly 10%
    assert v2 is not None and producer.last_report.removed == 100


def test_min_records_refuses_even_the_first_version(store: feedkit.BlobStore,
                                                    tmp_path: Path) -> None:
    with Producer(store, feed=FEED, primary_key="movie_id", min_records=10) as p:
        with pytest.raises(feedkit.RefusedError) as info:
            p.publish(titles_table(5))
        assert FEED in str(info.value) and "min_records" in str(info.value)
        assert "5 records, minimum 10" in str(info.value)
        assert store_files(tmp_path) == [] and p.version is None
        assert p.publish(titles_table(10)) is not None


def test_first_version_passes_max_change_ratio(store: feedkit.BlobStore) -> None:
    with Producer(store, feed=FEED, primary_key="movie_id", max_change_ratio=0.0) as p:
        table = titles_table(200)
        v1 = p.publish(table)
        assert v1 is not None and announced(store) == v1
        assert p.publish(table) is None  # unchanged: no version, nothing to refuse
        with pytest.raises(feedkit.RefusedError, match="max_change_ratio"):
            p.publish(retitled(table, {3}))


def test_an_empty_first_version_does_not_wedge_max_change_ratio(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    # A new, empty table: the feed's first version holds no records.
    with Producer(store, feed=FEED, primary_key="movie_id", max_change_ratio=0.1,
                  work_dir=tmp_path / "work") as p:
        v1 = p.publish(titles_table(3).slice(0, 0))
        assert v1 is not None and manifest(store, v1).record_count == 0
        v2 = p.publish(titles_table(3))  # 3 added to nothing: no share to judge
        assert v2 is not None and announced(store) == v2
        # From then on the ratio is judged, with the right figures.
        with pytest.raises(feedkit.RefusedError) as info:
            p.publish(titles_table(4))
    assert "33.3% of records changed (1 of 3: 1 added, 0 changed, 0 removed)" in str(info.value)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == v2 and len(feed) == 3


def test_after_an_empty_version_min_records_judges_the_count(store: feedkit.BlobStore) -> None:
    with Producer(store, feed=FEED, primary_key="movie_id", max_change_ratio=0.1,
                  min_records=5) as p:
        assert p.publish(titles_table(3).slice(0, 0), force=True) is not None
        with pytest.raises(feedkit.RefusedError) as info:
            p.publish(titles_table(3))
        assert [r.rule for r in info.value.results] == ["min_records"]
        assert "3 records, minimum 5" in str(info.value)
        assert p.publish(titles_table(6)) is not None


def test_max_change_ratio_against_an_empty_state_says_so() -> None:
    summary = CycleSummary(feed=FEED, version=2, previous_version=1, record_count=3,
                           previous_record_count=0, added=3, changed=0, removed=0, source=None,
                           state=None)  # type: ignore[arg-type]  # the rule reads no record
    assert summary.change_ratio == 0.0
    result = MaxChangeRatio(0.1)(summary)
    assert result.passed
    assert result.message == ("version 1 had no records: 3 added, 0 changed, 0 removed; no "
                              "change ratio to judge (min_records judges the count)")
    assert result.details["ratio"] is None and result.details["previous_records"] == 0


def test_builtin_rules_refuse_bad_limits() -> None:
    with pytest.raises(feedkit.ConfigurationError):
        MaxChangeRatio(-0.5)
    with pytest.raises(feedkit.ConfigurationError):
        MaxChangeRatio(float("nan"))
    with pytest.raises(feedkit.ConfigurationError):
        MinRecords(-1)


# -- what force does not skip ----------------------------------------------------------------


def never(summary: CycleSummary) -> bool:
    return False


def failing(summary: CycleSummary) -> ValidationResult:
    return ValidationResult.failed("titles look wrong", bad=3)


def raising(summary: CycleSummary) -> ValidationResult:
    raise RuntimeError("checker crashed")


def returns_none(summary: CycleSummary) -> Any:
    return None


class NamedRule:
    rule = "no_empty_titles"

    def __call__(self, summary: CycleSummary) -> ValidationResult:
        return ValidationResult.failed("empty title")


def rule(fn: Any) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


@pytest.mark.parametrize("validator, name, text", [
    (never, rule(never), "returned False"),
    (failing, rule(failing), "titles look wrong"),
    (raising, rule(raising), "validator raised RuntimeError: checker crashed"),
    (returns_none, rule(returns_none), "validator returned NoneType"),
    (NamedRule(), "no_empty_titles", "empty title"),
])
def test_custom_validators_refuse_with_their_rule_name(store: feedkit.BlobStore, tmp_path: Path,
                                                       validator: Any, name: str,
                                                       text: str) -> None:
    table = titles_table(100)
    with Producer(store, feed=FEED, primary_key="movie_id") as plain:
        v1 = plain.publish(table)
    files = store_files(tmp_path)
    with Producer(store, feed=FEED, primary_key="movie_id", validators=[validator]) as p:
        for force in (False, True):  # force does not skip custom validators
            with pytest.raises(feedkit.RefusedError) as info:
                p.publish(retitled(table, {1}), force=force)
            message = str(info.value)
            assert FEED in message and f"refused by {name}: {text}" in message
            assert [r.rule for r in info.value.results] == [name]
            assert store_files(tmp_path) == files
        expect_nothing_written(store, tmp_path, p, v1, table)


def test_a_result_keeps_its_own_rule_name(store: feedkit.BlobStore) -> None:
    def check(summary: CycleSummary) -> ValidationResult:
        return ValidationResult(False, "too few countries", "countries")

    with Producer(store, feed=FEED, primary_key="movie_id", validators=[check]) as p, \
            pytest.raises(feedkit.RefusedError, match="refused by countries: too few countries"):
        p.publish(titles_table(10))


def test_every_failed_rule_is_reported(store: feedkit.BlobStore) -> None:
    passing = ValidationResult.ok
    with Producer(store, feed=FEED, primary_key="movie_id", min_records=50,
                  validators=[never, lambda s: passing(), failing]) as p, \
            pytest.raises(feedkit.RefusedError) as info:
        p.publish(titles_table(10))
    assert [r.rule for r in info.value.results] == ["min_records", rule(never), rule(failing)]
    assert "<lambda>" not in str(info.value)


def test_force_does_not_skip_key_rules(store: feedkit.BlobStore, tmp_path: Path,
                                       producer: Producer) -> None:
    table = titles_table(1000)
    v1 = producer.publish(table)
    files = store_files(tmp_path)
    for force in (False, True):
        with pytest.raises(feedkit.ValidationError) as info:
            producer.publish(with_duplicates(table, 3), force=force)
        assert not isinstance(info.value, feedkit.RefusedError)
        assert "duplicate keys" in str(info.value) and "movie_id" in str(info.value)
        assert store_files(tmp_path) == files
    expect_nothing_written(store, tmp_path, producer, v1, table)


def test_the_same_producer_publishes_after_a_refusal(store: feedkit.BlobStore, tmp_path: Path,
                                                     producer: Producer) -> None:
    table = titles_table(1000)
    v1 = producer.publish(table)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        with pytest.raises(feedkit.RefusedError):
            producer.publish(without(table, list(range(500))))
        with pytest.raises(feedkit.ValidationError):
            producer.publish(with_duplicates(table, 2))
        good = retitled(without(table, [7, 8]), {1, 2, 3})
        v2 = producer.publish(good)
        assert v2 is not None and v2 > v1 and announced(store) == v2
        m2 = manifest(store, v2)
        assert m2.parent == v1 and m2.delta is not None and m2.record_count == 998
        assert feed.refresh() is True and feed.version == v2
        assert feed.get(7) is None and feed.get(1).title == "changed"
        assert {k: r._asdict() for k, r in feed.items()} == truth(good, "movie_id")


# -- what a custom validator sees ------------------------------------------------------------


def test_a_validator_sees_the_candidate_state_and_its_figures(store: feedkit.BlobStore) -> None:
    seen: list[dict[str, Any]] = []

    def inspect(s: CycleSummary) -> bool:
        seen.append({
            "feed": s.feed, "version": s.version, "previous_version": s.previous_version,
            "record_count": s.record_count, "previous_record_count": s.previous_record_count,
            "added": s.added, "changed": s.changed, "removed": s.removed,
            "ratio": s.change_ratio, "source": s.source, "len": len(s.state),
            "state_version": s.state.version,
            "0": s.state.get(0), "10": s.state.get(10), "1001": s.state.get(1001),
            "1001 in": 1001 in s.state, "0 in": 0 in s.state,
            "jp": sorted(r.movie_id for r in s.state.find("country", "JP")),
        })
        return True

    with Producer(store, feed=FEED, primary_key="movie_id", indexes=["country"],
                  validators=[inspect]) as p:
        table = titles_table(1000)
        v1 = p.publish(table, source={"table": "muse.titles", "snapshot_id": 1})
        first = seen[-1]
        assert first["version"] == v1 and first["state_version"] == v1
        assert first["previous_version"] is None and first["previous_record_count"] is None
        assert first["record_count"] == 1000 and first["len"] == 1000
        assert first["added"] == 1000 and first["changed"] == first["removed"] == 0
        assert first["ratio"] == 0.0 and first["source"] == {"table": "muse.titles",
                                                             "snapshot_id": 1}
        assert first["10"].title == "title 10" and first["1001"] is None and first["jp"] == []

        # 10 removed (0..9), 5 changed (10..14), 3 added (1000..1002).
        new_rows = titles_table(3, start=1000)
        new_rows = new_rows.set_column(4, "country", pa.array(["JP"] * 3))
        table2 = pa.concat_tables([retitled(without(table, list(range(10))),
                                            set(range(10, 15))), new_rows])
        v2 = p.publish(table2, source={"table": "muse.titles", "snapshot_id": 2})
        second = seen[-1]
        assert second["version"] == v2 and second["state_version"] == v2
        assert second["previous_version"] == v1 and second["previous_record_count"] == 1000
        assert second["record_count"] == 993 and second["len"] == 993
        assert (second["added"], second["changed"], second["removed"]) == (3, 5, 10)
        assert second["ratio"] == pytest.approx(18 / 1000)
        assert second["source"]["snapshot_id"] == 2
        assert second["0"] is None and second["0 in"] is False
        assert second["10"]._asdict() == truth(table2, "movie_id")[10]
        assert second["10"].title == "changed"
        assert second["1001"]._asdict() == truth(table2, "movie_id")[1001]
        assert second["1001 in"] is True
        assert second["jp"] == [1000, 1001, 1002]
        assert p.last_report.added == 3 and p.last_report.changed == 5


def test_a_validator_can_refuse_on_what_it_looks_up(store: feedkit.BlobStore,
                                                    tmp_path: Path) -> None:
    def title_1_present(s: CycleSummary) -> ValidationResult:
        rec = s.state.get(1)
        if rec is None:
            return ValidationResult.failed("title 1 is missing", records=s.record_count)
        return ValidationResult.ok()

    table = titles_table(300)
    with Producer(store, feed=FEED, primary_key="movie_id", validators=[title_1_present]) as p:
        v1 = p.publish(table)
        with pytest.raises(feedkit.RefusedError, match="title 1 is missing") as info:
            p.publish(without(table, [1]), force=True)
        assert info.value.results[0].details == {"records": 299}
        v2 = p.publish(without(table, [2]))
        assert v2 is not None and v2 > v1
    assert announced(store) == v2


# -- load_validator --------------------------------------------------------------------------


@pytest.fixture
def checks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module ``feedkit_test_checks`` with a few validators in it."""
    name = "feedkit_test_checks"
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent("""
        from feedkit.producer import ValidationResult

        LIMIT = 3

        def no_empty_titles(summary):
            empty = []
            for key in range(summary.record_count):
                rec = summary.state.get(key)
                if rec is not None and not rec.title:
                    empty.append(key)
            if empty:
                return ValidationResult.failed(f"{len(empty)} empty titles", keys=empty[:5])
            return ValidationResult.ok()

        class Rules:
            @staticmethod
            def at_least_three(summary):
                return summary.record_count >= LIMIT
        """))
    monkeypatch.syspath_prepend(str(folder))
    yield name
    sys.modules.pop(name, None)


def test_load_validator_imports_a_function(store: feedkit.BlobStore, tmp_path: Path,
                                           checks_module: str) -> None:
    check = load_validator(f"{checks_module}:no_empty_titles")
    nested = load_validator(f"{checks_module}:Rules.at_least_three")
    assert callable(check) and check.__name__ == "no_empty_titles"
    assert nested.__name__ == "at_least_three"

    table = titles_table(50)
    with Producer(store, feed=FEED, primary_key="movie_id", validators=[check, nested]) as p:
        v1 = p.publish(table)
        empty = table.set_column(1, "title", pa.array(["" if i == 4 else f"title {i}"
                                                      for i in range(50)]))
        with pytest.raises(feedkit.RefusedError) as info:
            p.publish(empty)
        assert f"{checks_module}:no_empty_titles: 1 empty titles" in str(info.value)
        assert info.value.results[0].details == {"keys": [4]}
        with pytest.raises(feedkit.RefusedError, match=f"{checks_module}:Rules.at_least_three"):
            p.publish(titles_table(2))
        assert announced(store) == v1


@pytest.mark.parametrize("spec, mention", [
    ("feedkit_no_colon", "package.module:function"),
    (":no_module", "package.module:function"),
    ("json:", "package.module:function"),
    ("feedkit_no_such_module_xyz:check", "cannot import 'feedkit_no_such_module_xyz'"),
    ("json:no_such_function", "has no 'no_such_function'"),
    ("json.decoder:JSONDecoder.no_such_method", "has no 'JSONDecoder.no_such_method'"),
    ("math:pi", "not callable"),
])
def test_load_validator_errors(spec: str, mention: str) -> None:
    with pytest.raises(feedkit.ConfigurationError) as info:
        load_validator(spec)
    assert repr(spec) in str(info.value) and mention in str(info.value)


def test_load_validator_module_that_fails_to_import(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "feedkit_test_broken.py").write_text("import feedkit_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(feedkit.ConfigurationError, match="feedkit_missing_dependency_xyz"):
        load_validator("feedkit_test_broken:check")
    sys.modules.pop("feedkit_test_broken", None)
