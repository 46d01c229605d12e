"""feedkit-producer end to end: the daemon as a subprocess, a real SqlCatalog, a real store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.types import LongType

import feedkit
from feedkit import names
from feedkit.manifest import Announcement, Manifest

from ..conftest import titles_table
from .conftest import append_rows, catalog_properties, create_table

TABLE = "muse.titles"
FEED = "muse.titles"


def write_config(root: Path, feeds: list[dict[str, Any]], *, work_dir: bool = True) -> Path:
    lines = [f'[store]\nurl = "{root / "store"}"\n', "[catalog]", 'name = "local"']
    lines += [f'{k} = "{v}"' for k, v in catalog_properties(root).items()]
    if work_dir:
        lines.append(f'\n[producer]\nwork_dir = "{root / "work"}"')
    for feed in feeds:
        lines.append("\n[[feed]]")
        for k, v in feed.items():
            lines.append(f"{k} = {_toml(v)}")
    path = root / "producer.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def feed_entry(**extra: Any) -> dict[str, Any]:
    return {"name": FEED, "table": TABLE, "primary_key": "movie_id", "poll_interval": 0.2,
            **extra}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feedkit.producer.cli", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def announced(root: Path, feed: str = FEED) -> int | None:
    path = root / "store" / names.announcement_key(feed)
    if not path.exists():
        return None
    return Announcement.from_bytes(path.read_bytes(), str(path)).version


def manifest(root: Path, version: int, feed: str = FEED) -> Manifest:
    key = names.manifest_key(feed, version)
    return Manifest.from_bytes((root / "store" / key).read_bytes(), key)


def store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "store").rglob("*") if p.is_file())


def consumer(root: Path, feed: str = FEED, **kw: Any) -> feedkit.Consumer:
    store = feedkit.open_store(str(root / "store"))
    return feedkit.Consumer(store, feed=feed, cache_dir=root / "cache", **kw)


@pytest.fixture
def root(tmp_path: Path, catalog: Any) -> Path:
    create_table(catalog, TABLE, titles_table(2000))
    return tmp_path


def test_once_publishes_then_has_nothing_to_do(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry()])
    first = cli("once", "--config", str(config), cwd=root)
    assert first.returncode == 0, first.stderr
    version = announced(root)
    assert version is not None
    m = manifest(root, version)
    snapshot_id = catalog.load_table(TABLE).current_snapshot().snapshot_id
    assert m.source["table"] == TABLE and m.source["snapshot_id"] == snapshot_id
    assert m.record_count == 2000 and m.snapshot is not None
    assert "event=published" in first.stderr and f"iceberg_snapshot={snapshot_id}" in first.stderr
    assert "rows_read=2000" in first.stderr and "bytes_written=" in first.stderr

    files = store_files(root)
    again = cli("once", "--config", str(config), cwd=root)
    assert again.returncode == 0, again.stderr
    assert announced(root) == version and store_files(root) == files
    assert "event=read" not in again.stderr  # no new Iceberg snapshot -> no read

    with consumer(root, watch=False) as feed:
        assert feed.version == version
        assert feed.get(1999).title == "title 1999"


def test_restart_publishes_a_delta_and_nothing_when_unchanged(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry()])
    assert cli("once", "--config", str(config), cwd=root).returncode == 0
    v1 = announced(root)

    append_rows(catalog.load_table(TABLE), titles_table(100, start=5000))
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 0, out.stderr
    v2 = announced(root)
    m2 = manifest(root, v2)
    assert v2 > v1 and m2.parent == v1 and m2.delta is not None and m2.snapshot is None
    assert "plan=append" in out.stderr and "from=work_dir" in out.stderr
    assert m2.record_count == 2100

    # Without its work dir the daemon restores from the store, still publishing a delta.
    import shutil

    shutil.rmtree(root / "work")
    table = catalog.load_table(TABLE)
    table.delete("movie_id < 10")
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 0, out.stderr
    v3 = announced(root)
    m3 = manifest(root, v3)
    assert "from=store" in out.stderr and "plan=full" in out.stderr
    assert m3.parent == v2 and m3.delta is not None and m3.snapshot is None
    assert m3.record_count == 2090

    with consumer(root, watch=False) as feed:
        assert feed.version == v3 and feed.get(5) is None and feed.get(5099).year == 1950 + 5099 % 70


def test_refusals_announce_nothing_and_force_passes_ratio_rules(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry(max_change_ratio=0.1, min_records=1500)])
    assert cli("once", "--config", str(config), cwd=root).returncode == 0
    v1 = announced(root)
    table = catalog.load_table(TABLE)

    # 25% of the records deleted: refused by max_change_ratio (min_records=1500 still passes).
    table.delete("movie_id < 500")
    files = store_files(root)
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 1
    assert "event=refused" in out.stderr and "max_change_ratio" in out.stderr
    assert "rule=max_change_ratio " in out.stderr and "min_records:" not in out.stderr
    assert "25.0%" in out.stderr and "500 removed" in out.stderr and FEED in out.stderr
    assert announced(root) == v1 and store_files(root) == files

    # --force publishes past both ratio rules.
    out = cli("once", "--config", str(config), "--force", cwd=root)
    assert out.returncode == 0, out.stderr
    v2 = announced(root)
    assert v2 > v1 and manifest(root, v2).record_count == 1500


def test_min_records_refuses_a_shrunken_table(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry(min_records=1000)])
    assert cli("once", "--config", str(config), cwd=root).returncode == 0
    v1 = announced(root)
    catalog.load_table(TABLE).delete("movie_id >= 100")
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 1 and "min_records" in out.stderr and "100 records" in out.stderr
    assert announced(root) == v1


def test_key_rules_are_not_forced(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry()])
    assert cli("once", "--config", str(config), cwd=root).returncode == 0
    v1 = announced(root)
    append_rows(catalog.load_table(TABLE), titles_table(5, start=10))  # keys 10..14 again
    for args in ((), ("--force",)):
        out = cli("once", "--config", str(config), *args, cwd=root)
        assert out.returncode == 1, out.stderr
        assert "duplicate keys" in out.stderr and "10" in out.stderr
        assert announced(root) == v1


def test_custom_validator_refuses_and_is_not_forced(root: Path, catalog: Any) -> None:
    (root / "checks.py").write_text(textwrap.dedent("""
        from feedkit.producer import ValidationResult

        def title_1_present(summary):
            rec = summary.state.get(1)
            if rec is None:
                return ValidationResult.failed("title 1 is missing", records=summary.record_count)
            return ValidationResult.ok()
    """))
    config = write_config(root, [feed_entry(validators=["checks:title_1_present"])])
    env = {"PYTHONPATH": str(root)}
    assert cli("once", "--config", str(config), cwd=root, env=env).returncode == 0
    v1 = announced(root)
    catalog.load_table(TABLE).delete("movie_id == 1")
    for args in ((), ("--force",)):
        out = cli("once", "--config", str(config), *args, cwd=root, env=env)
        assert out.returncode == 1
        assert "checks:title_1_present" in out.stderr and "title 1 is missing" in out.stderr
        assert announced(root) == v1


def test_config_errors_exit_2_and_name_the_key(root: Path) -> None:
    config = write_config(root, [feed_entry(tabel="x")])
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 2 and "feed[0].tabel" in out.stderr
    config = write_config(root, [feed_entry(validators=["nowhere.at_all:fn"])])
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 2 and "nowhere.at_all" in out.stderr


def test_schema_evolution_publishes_a_snapshot_consumers_follow(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry()])
    assert cli("once", "--config", str(config), cwd=root).returncode == 0
    with consumer(root, watch=False) as feed:
        v1 = feed.version
        assert feed.get(7)._fields == ("movie_id", "title", "year", "score", "country")

        table = catalog.load_table(TABLE)
        with table.update_schema() as update:
            update.add_column("views", LongType())
            update.rename_column("country", "region")
            update.delete_column("score")
        table = catalog.load_table(TABLE)
        extra = titles_table(10, start=9000).drop_columns(["score"]).rename_columns(
            ["movie_id", "title", "year", "region"])
        extra = extra.append_column("views", pa.array(range(10), pa.int64()))
        table.append(extra.select(table.schema().column_names).cast(table.schema().as_arrow()))

        out = cli("once", "--config", str(config), cwd=root)
        assert out.returncode == 0, out.stderr
        assert "plan=full" in out.stderr and "schema" in out.stderr
        v2 = announced(root)
        m2 = manifest(root, v2)
        assert m2.snapshot is not None and m2.delta is None
        assert [c["name"] for c in m2.schema] == ["movie_id", "title", "year", "region", "views"]

        assert feed.refresh() and feed.version == v2 > v1
        old = feed.get(7)
        assert old._fields == ("movie_id", "title", "year", "region", "views")
        assert old.region == ("DE", "US", "FR", "BR")[7 % 4] and old.views is None
        assert feed.get(9003).views == 3 and len(feed) == 2010


def test_projection_and_one_failing_feed_does_not_stop_the_others(root: Path) -> None:
    config = write_config(root, [
        feed_entry(name="broken", table="muse.missing"),
        feed_entry(name="titles.small", columns=["title", "movie_id"], indexes=["title"]),
    ])
    out = cli("once", "--config", str(config), cwd=root)
    assert out.returncode == 1
    assert "event=failed feed=broken" in out.stderr and "muse.missing" in out.stderr
    assert announced(root, "broken") is None
    with consumer(root, "titles.small", watch=False) as feed:
        rec = feed.get(42)
        assert rec._fields == ("title", "movie_id") and rec.title == "title 42"
        assert [r.movie_id for r in feed.find("title", "title 42")] == [42]


def _start(config: Path, root: Path) -> tuple[subprocess.Popen[str], Path]:
    log = root / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedkit.producer.cli", "run", "--config", str(config)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True)  # noqa: SIM115
    return proc, log


def _wait_for(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.02)


def test_run_follows_commits_and_stops_on_sigterm(root: Path, catalog: Any) -> None:
    # A long poll interval: the file-system watch is what must notice the commits.
    config = write_config(root, [feed_entry(poll_interval=60.0)])
    proc, log = _start(config, root)
    try:
        _wait_for(lambda: announced(root) is not None, 60, "the first version", log)
        _wait_for(lambda: "event=watching" in log.read_text(), 10, "the watch", log)
        with consumer(root, poll_interval=0.2) as feed:
            assert feed.get(2500) is None
            append_rows(catalog.load_table(TABLE), titles_table(10, start=2500))
            _wait_for(lambda: feed.get(2500) is not None, 30, "the appended record", log)
            table = catalog.load_table(TABLE)
            table.overwrite(titles_table(2000).set_column(
                1, "title", pc.utf8_upper(titles_table(2000)["title"])).cast(
                    table.schema().as_arrow()))
            _wait_for(lambda: feed.get(3).title == "TITLE 3", 30, "the overwrite", log)
            assert feed.get(2500) is None  # the overwrite replaced the whole table
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "plan=append" in text and "plan=full" in text and "event=stopped" in text


def test_sigterm_mid_cycle_leaves_no_half_announcement(tmp_path: Path, catalog: Any) -> None:
    table = catalog.create_table(TABLE, schema=titles_table(1).schema)
    for i in range(6):  # six data files, read batch by batch
        table.append(titles_table(100_000, start=i * 100_000))
    config = write_config(tmp_path, [feed_entry()])
    proc, log = _start(config, tmp_path)
    try:
        _wait_for(lambda: "event=read" in log.read_text(), 60, "the read", log)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    version = announced(tmp_path)
    if "event=abandoned" in text:
        assert version is None and "event=published" not in text
    else:  # the cycle got past its read before the signal: it must have finished whole
        assert version is not None and "event=published" in text
        with consumer(tmp_path, watch=False) as feed:
            assert len(feed) == 600_000
    assert not list((tmp_path / "work").rglob(".spill.*"))


def _run_on_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command with its stdout and stderr on a pseudo-terminal; return (rc, output)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path, catalog: Any) -> None:
    table = catalog.create_table(TABLE, schema=titles_table(1).schema)
    for i in range(3):
        table.append(titles_table(50_000, start=i * 50_000))
    config = write_config(tmp_path, [feed_entry()])
    rc, output = _run_on_terminal(
        [sys.executable, "-m", "feedkit.producer.cli", "once", "--config", str(config)], tmp_path)
    assert rc == 0, output
    # The bar's first frame (later ones are rate-limited, and the bar is cleared at the end).
    assert f"{FEED}:" in output and "/150k" in output and "rows/s" in output

    append_rows(catalog.load_table(TABLE), titles_table(10, start=900_000))
    piped = cli("once", "--config", str(config), cwd=tmp_path)
    assert piped.returncode == 0 and "event=published" in piped.stderr
    assert "rows/s" not in piped.stderr and "\r" not in piped.stderr


def test_run_refuses_then_goes_on_watching(root: Path, catalog: Any) -> None:
    config = write_config(root, [feed_entry(max_change_ratio=0.1, poll_interval=60.0)])
    proc, log = _start(config, root)
    try:
        _wait_for(lambda: announced(root) is not None, 60, "the first version", log)
        _wait_for(lambda: "event=watching" in log.read_text(), 10, "the watch", log)
        v1 = announced(root)
        table = catalog.load_table(TABLE)
        table.delete("movie_id < 500")  # 25% of the records: refused
        _wait_for(lambda: "event=refused" in log.read_text(), 30, "the refusal", log)
        assert announced(root) == v1 and proc.poll() is None
        # The rows come back, with 10 new ones: a 0.5% change from the announced version.
        append_rows(catalog.load_table(TABLE), titles_table(500))
        append_rows(catalog.load_table(TABLE), titles_table(10, start=3000))
        _wait_for(lambda: announced(root) != v1, 30, "the next version", log)
        with consumer(root, watch=False) as feed:
            assert len(feed) == 2010 and feed.get(3).title == "title 3"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "rule=max_change_ratio" in text and "25.0%" in text


def test_once_publishes_to_s3(tmp_path: Path, catalog: Any, s3_server: Any) -> None:
    create_table(catalog, TABLE, titles_table(1000))
    url = s3_server.url()
    config = write_config(tmp_path, [feed_entry()])
    text = config.read_text().replace(
        f'url = "{tmp_path / "store"}"', f'url = "{url}"\nendpoint_url = "{s3_server.endpoint}"')
    config.write_text(text)
    out = cli("once", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "event=published" in out.stderr
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out.stderr
    store = feedkit.open_store(url, endpoint_url=s3_server.endpoint)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert len(feed) == 1000 and feed.get(999).title == "title 999"
        m = manifest_from(store, feed.version)
        assert m.source["table"] == TABLE
        assert os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in m.to_bytes()


def manifest_from(store: feedkit.BlobStore, version: int) -> Manifest:
    key = names.manifest_key(FEED, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def test_a_feed_from_a_new_empty_table_follows_its_first_rows(tmp_path: Path,
                                                              catalog: Any) -> None:
    from feedkit.producer.config import load_config
    from feedkit.producer.daemon import Daemon

    table = catalog.create_table(TABLE, schema=titles_table(1).schema)  # no rows, no snapshot
    config = load_config(write_config(tmp_path, [feed_entry(max_change_ratio=0.1)]))
    assert Daemon(config).once() == 0
    v1 = announced(tmp_path)
    assert v1 is not None and manifest(tmp_path, v1).record_count == 0
    append_rows(table, titles_table(3))
    assert Daemon(config).once() == 0  # was refused: "300.0% of records changed (3 of 0"
    v2 = announced(tmp_path)
    assert v2 != v1 and manifest(tmp_path, v2).record_count == 3
    with consumer(tmp_path, watch=False) as feed:
        assert feed.version == v2 and feed.get(2).title == "title 2"
