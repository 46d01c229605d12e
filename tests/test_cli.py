"""The ``feedkit`` command line: click's CliRunner for each command, and the installed entry
point as a real process (also without pyarrow and pyiceberg)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import feedkit
from feedkit import admin, names
from feedkit.cli import main
from tests.conftest import titles_table, truth
from tests.test_admin import (
    FEED,
    leave_temporary,
    publish_versions,
    write_unannounced_version,
)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def entry_point() -> str:
    """The installed ``feedkit`` script of this interpreter's environment."""
    path = Path(sys.executable).parent / "feedkit"
    found = str(path) if path.exists() else shutil.which("feedkit")
    assert found, "the feedkit entry point is not installed: pip install -e ."
    return found


@pytest.fixture
def published(store, tmp_path):
    versions, tables = publish_versions(store, 4, snapshot_every=3)
    return str(tmp_path / "store"), versions, tables


def test_versions_prints_a_table_and_json(published) -> None:
    url, versions, tables = published
    text = ok("versions", url, FEED).output.splitlines()
    assert text[0] == f"feed {FEED}: announced {versions[-1]}"
    assert text[1].split() == ["VERSION", "CREATED", "RECORDS", "SNAPSHOT", "DELTA", "ICEBERG",
                               "SNAPSHOT"]
    assert [line.split()[0] for line in text[2:]] == [str(v) for v in versions[::-1]]
    assert text[2].endswith("announced") and str(tables[-1].num_rows) in text[2].split()
    assert "5003" in text[2].split()  # the Iceberg snapshot id from the manifest's source
    doc = json.loads(ok("versions", url, FEED, "--json", "--limit", "2").output)
    assert [v["version"] for v in doc["versions"]] == versions[:-3:-1]
    assert doc["announced"] == versions[-1] and doc["pinned"] is None
    assert doc["versions"][0]["record_count"] == tables[-1].num_rows


def test_inspect_defaults_to_the_announced_version(published) -> None:
    url, versions, _ = published
    text = ok("inspect", url, FEED).output
    assert f"version           {versions[-1]} (announced)" in text
    assert "key               movie_id (int)" in text and "indexes           country" in text
    assert "\n  movie_id  int64   int" in text and "fresh load" in text
    doc = json.loads(ok("inspect", url, FEED, "--version", versions[1], "--json").output)
    assert doc["version"] == versions[1] and doc["parent"] == versions[0]
    assert doc["announced"] is False and doc["source"]["snapshot_id"] == 5001


def test_get_prints_the_record_as_json(published, tmp_path) -> None:
    url, versions, tables = published
    rows = truth(tables[-1], "movie_id")
    key = sorted(rows)[5]
    assert json.loads(ok("get", url, FEED, key).output) == rows[key]
    old = truth(tables[0], "movie_id")
    gone = next(k for k in old if k not in rows)
    out = ok("get", url, FEED, gone, "--version", versions[0], "--compact",
             "--cache-dir", tmp_path / "kept").output
    assert out.count("\n") == 1 and json.loads(out) == old[gone]
    assert (tmp_path / "kept" / FEED).is_dir()

    missing = run("get", url, FEED, gone)
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr == (f"Error: feed '{FEED}' version {versions[-1]}: no record with "
                              f"key {gone}\n")
    bad = run("get", url, FEED, "abc")
    assert bad.exit_code == 2 and "'movie_id' is int" in bad.stderr


def test_diff_counts_and_shows_examples(published) -> None:
    url, versions, tables = published
    old, new = truth(tables[0], "movie_id"), truth(tables[2], "movie_id")
    doc = json.loads(ok("diff", url, FEED, versions[0], versions[2], "--show", "2",
                        "--json").output)
    assert doc["added"] == len(set(new) - set(old)) and doc["removed"] == len(set(old) - set(new))
    assert doc["changed"] == sum(1 for k in set(old) & set(new) if old[k] != new[k])
    assert len(doc["examples"]["changed"]) == 2
    for c in doc["examples"]["changed"]:
        assert c["old"] == old[c["key"]] and c["new"] == new[c["key"]]
    text = ok("diff", url, FEED, versions[0], versions[2], "--show", "1").output
    assert f"added      {doc['added']}\n" in text and "changed key " in text
    assert "\n  - {" in text and "\n  + {" in text


def test_pin_and_unpin_move_the_announcement(published) -> None:
    url, versions, _ = published
    text = ok("pin", url, FEED, versions[1], "--reason", "bad data").output
    assert text.startswith(f"feed {FEED}: announced version {versions[1]} (was {versions[-1]})")
    assert f": bad data (latest {versions[-1]})" in text
    store = feedkit.open_store(url)
    found = admin.read_announcement(store, FEED)
    assert found is not None
    a = found[0]
    assert a.version == versions[1] and a.pinned is not None
    assert a.pinned.reason == "bad data" and a.pinned.latest == versions[-1]
    listing = ok("versions", url, FEED).output
    assert "announced, pinned" in listing and "latest (before the pin)" in listing

    doc = json.loads(ok("unpin", url, FEED, "--json").output)
    assert doc["changed"] and doc["announcement"]["version"] == versions[-1]
    assert "pinned" not in doc["announcement"] and doc["previous"]["pinned"]["reason"] == "bad data"
    assert "is not pinned" in ok("unpin", url, FEED).output


def test_gc_dry_run_lists_and_gc_deletes(published, tmp_path) -> None:
    url, versions, _ = published  # snapshots at versions 0 and 3
    before = sorted(p for p in (tmp_path / "store").rglob("*.zst"))
    dry = ok("gc", url, FEED, "--keep", "1", "--dry-run").output
    assert dry.startswith(f"feed {FEED}: retained 1 version(s) ({versions[-1]} .. "
                          f"{versions[-1]}); would delete 3 manifest(s)")
    assert sorted(p for p in (tmp_path / "store").rglob("*.zst")) == before
    doc = json.loads(ok("gc", url, FEED, "--keep", "1", "--json").output)
    assert doc["deleted_versions"] == versions[:3] and doc["retained"] == [versions[-1]]
    left = sorted(p.name for p in (tmp_path / "store").rglob("*.json"))
    assert left == [f"{versions[-1]:020d}.json", "announced.json"]
    assert run("gc", url, FEED, "--keep", "0").exit_code == 2
    assert run("gc", url, FEED).exit_code == 2  # --keep is required


def test_unpin_returns_to_the_version_before_the_pin_not_to_an_unannounced_one(
        published, store, tmp_path) -> None:
    url, versions, tables = published
    orphan = write_unannounced_version(store, tmp_path, tables[-1].slice(5))
    ok("pin", url, FEED, versions[0])
    text = ok("unpin", url, FEED).output
    assert text == (f"feed {FEED}: unpinned, announced version {versions[-1]} "
                    f"(was pinned to {versions[0]})\n")
    found = admin.read_announcement(store, FEED)
    assert found is not None and found[0].version == versions[-1] != orphan
    assert "announced before the pin" in ok("unpin", "--help").output


def test_gc_removes_old_temporary_files_of_failed_writes(published, tmp_path) -> None:
    url, versions, _ = published
    root = tmp_path / "store"
    old = leave_temporary(root, names.snapshot_key(FEED, versions[-1] + 1), b"x" * 10,
                          age=2 * 3600)
    recent = leave_temporary(root, names.manifest_key(FEED, versions[-1] + 1), b"{",
                             age=10 * 60)
    key = str(old.relative_to(root))
    dry = ok("gc", url, FEED, "--keep", "10", "--dry-run").output
    assert "would delete 0 manifest(s) and 0 blob(s) and 1 temporary file(s), 10 B" in dry
    assert f"  {key}  10 B (temporary file of a failed write)" in dry
    assert old.exists()
    doc = json.loads(ok("gc", url, FEED, "--keep", "10", "--json").output)
    assert doc["deleted_temporaries"] == [{"key": key, "size": 10}]
    assert not old.exists() and recent.exists()
    ok("gc", url, FEED, "--keep", "10", "--temp-age", "5")
    assert not recent.exists()
    assert run("gc", url, FEED, "--keep", "1", "--temp-age", "-1").exit_code == 2
    assert "--temp-age" in ok("gc", "--help").output


@pytest.mark.parametrize("command", [["versions"], ["inspect"], ["get", "1"], ["diff", "1", "2"],
                                     ["pin", "1"], ["unpin"], ["gc", "--keep", "1"]])
def test_no_command_creates_a_missing_store_folder(command, tmp_path) -> None:
    missing = tmp_path / "no" / "store"
    for url in (str(missing), missing.as_uri()):
        result = run(command[0], url, FEED, *command[1:])
        assert result.exit_code == 1, result.output
        assert result.stderr == (f"Error: feed '{FEED}': no store at {missing.as_uri()} (no such "
                                 "folder; check the path: feedkit commands never create one)\n")
    assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_bytes(b"x")
    result = run(command[0], tmp_path / "file", FEED, *command[1:])
    assert result.exit_code == 1 and "(not a folder; check the path" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["versions", "{url}", "nosuch"], "Error: feed 'nosuch': no versions in"),
    (["versions", "", FEED], "Error: store URL '' is empty"),
    (["versions", "file://", FEED], "Error: store URL 'file://' names no folder"),
    (["inspect", "{url}", FEED, "--version", "7"], "Error: feed 'titles': no version 7"),
    (["pin", "{url}", FEED, "7"], "Error: feed 'titles': no version 7"),
    (["versions", "{url}", "Bad Name"], "Error: invalid feed name 'Bad Name'"),
    (["versions", "ftp://x/y", FEED], "unsupported scheme 'ftp'"),
    (["versions", "{url}", FEED, "--endpoint-url", "http://x"], "unknown options"),
])
def test_errors_are_one_line_and_exit_code_1(published, args, message) -> None:
    url = published[0]
    result = run(*[a.format(url=url) for a in args])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.output


def test_the_installed_entry_point_runs_as_a_process(published) -> None:
    url, versions, tables = published
    exe = entry_point()
    out = subprocess.run([exe, "versions", f"file://{url}", FEED, "--json"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["announced"] == versions[-1]
    missing = subprocess.run([exe, "get", url, FEED, "--", "-5"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == (f"Error: feed '{FEED}' version {versions[-1]}: no record "
                                      "with key -5")
    usage = subprocess.run([exe, "pin", url], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


LEAN = r"""
import sys
sys.modules["pyarrow"] = None      # importing these now raises ImportError
sys.modules["pyiceberg"] = None
from feedkit.cli import main
main()
"""


def test_the_cli_needs_neither_pyarrow_nor_pyiceberg(published, tmp_path) -> None:
    url, versions, tables = published
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def lean(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", LEAN, *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=60)

    key = tables[-1]["movie_id"][0].as_py()
    got = lean("get", url, FEED, key)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == truth(tables[-1], "movie_id")[key]
    for args in (["diff", url, FEED, versions[0], versions[-1], "--show", "1"],
                 ["pin", url, FEED, versions[0]], ["unpin", url, FEED],
                 ["inspect", url, FEED], ["gc", url, FEED, "--keep", "1"]):
        done = lean(*args)
        assert done.returncode == 0, (args, done.stderr)
    assert not feedkit.open_store(url).exists(names.manifest_key(FEED, versions[0]))


def test_a_watching_consumer_follows_pin_and_unpin_from_the_command_line(store, tmp_path) -> None:
    """The rollback as an operator does it: `feedkit pin` then `feedkit unpin` in a process,
    a watching consumer moving back and forth within a poll or two."""
    import time

    url = str(tmp_path / "store")
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(100))
        v2 = producer.publish(titles_table(100, seed=1))
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", poll_interval=0.2) as feed:
        assert feed.version == v2

        def wait_for(version: int | None) -> None:
            deadline = time.monotonic() + 10
            while feed.version != version and time.monotonic() < deadline:
                time.sleep(0.05)
            assert feed.version == version

        pin = subprocess.run([entry_point(), "pin", url, FEED, str(v1), "--reason", "test"],
                             capture_output=True, text=True, timeout=60)
        assert pin.returncode == 0, pin.stderr
        wait_for(v1)
        assert feed.get(5).score == titles_table(100)["score"][5].as_py()
        unpin = subprocess.run([entry_point(), "unpin", url, FEED], capture_output=True,
                               text=True, timeout=60)
        assert unpin.returncode == 0, unpin.stderr
        wait_for(v2)


def test_commands_work_on_an_s3_store_with_endpoint_url(s3_server, s3_store, tmp_path) -> None:
    url = s3_store.url
    versions, tables = publish_versions(s3_store, 4, snapshot_every=2, n=500)  # snapshots: 0, 2
    assert [v for v in versions if admin.inspect_version(s3_store, FEED, v).manifest.snapshot] \
        == [versions[0], versions[2]]
    endpoint = ["--endpoint-url", s3_server.endpoint]
    doc = json.loads(ok("versions", url, FEED, "--json", *endpoint).output)
    assert [v["version"] for v in doc["versions"]] == versions[::-1]
    got = json.loads(ok("get", url, FEED, "7", "--version", versions[1], *endpoint).output)
    assert got == truth(tables[1], "movie_id")[7]
    assert ok("pin", url, FEED, versions[1], *endpoint).output.startswith(
        f"feed {FEED}: announced version {versions[1]}")
    gc = json.loads(ok("gc", url, FEED, "--keep", "1", "--json", *endpoint).output)
    # Retained: the newest (3, back to its snapshot at 2), the pinned 1 (back to 0).
    assert gc["retained"] == versions and gc["deleted_versions"] == []
    ok("unpin", url, FEED, *endpoint)
    gc = json.loads(ok("gc", url, FEED, "--keep", "1", "--json", *endpoint).output)
    assert gc["retained"] == versions[2:] and gc["deleted_versions"] == versions[:2]
    assert not s3_store.list(f"{FEED}/snapshots/{versions[0]:020d}")
    with feedkit.Consumer(s3_store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        assert feed.version == versions[-1] and feed.get(7).title == "title 7"
