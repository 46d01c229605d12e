"""Cache folders and files are created owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import feedkit
from tests.conftest import titles_table


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_folders_and_files_are_owner_only(store, tmp_path: Path) -> None:
    with feedkit.Producer(store, feed="titles", primary_key="movie_id") as producer:
        producer.publish(titles_table(50))
        cache = tmp_path / "new" / "cache"
        with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
            producer.publish(titles_table(60))
            assert feed.refresh()  # a base and an overlay file
            files = [p for p in (cache / "titles").iterdir() if not p.name.startswith(".")]
    assert {p.suffix for p in files} == {".base", ".overlay"}
    assert mode(cache) == 0o700 and mode(cache / "titles") == 0o700
    assert all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
