"""Signed manifests: producers with a key sign, consumers with the key refuse anything else
and keep serving the version they have; the key never shows in manifests or logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import feedkit
from feedkit import names
from feedkit.manifest import Manifest
from feedkit.signing import Signer, signer_from
from tests.conftest import titles_table

KEY = "k3y-for-the-feedkit-tests-0123456789"
OTHER = "another-key-entirely-0123456789abcdef"


def manifest_doc(store_dir: Path, feed: str, version: int) -> dict:
    return json.loads((store_dir / names.manifest_key(feed, version)).read_text())


def rewrite_manifest(store_dir: Path, feed: str, version: int, doc: dict) -> None:
    path = store_dir / names.manifest_key(feed, version)
    path.unlink()
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))


def test_a_signing_producer_signs_and_a_keyed_consumer_loads(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = feedkit.open_store(str(tmp_path / "store"))
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", signing_key=KEY) as p:
        v1 = p.publish(titles_table(100))
        v2 = p.publish(titles_table(120))
    doc = manifest_doc(tmp_path / "store", "titles", v2)
    sig = doc["signature"]
    assert sig["alg"] == "hmac-sha256" and sig["key_id"] == Signer(KEY.encode()).key_id
    assert len(sig["mac"]) == 64
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False,
                          signing_key=KEY) as feed:
        assert feed.version == v2 and feed.get(110).title == "title 110"
        feed.pin(v1)  # older signed versions load too
        assert len(feed) == 100
    # A consumer without a key does not check, and still loads a signed feed.
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c2", watch=False) as feed:
        assert feed.version == v2
    # The key is in no stored object and no log line.
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
    assert KEY not in caplog.text
    assert KEY not in repr(signer_from(KEY))


@pytest.mark.parametrize("case", ["unsigned", "other-key", "tampered", "signature-stripped"])
def test_a_keyed_consumer_refuses_and_keeps_its_version(tmp_path: Path, case: str) -> None:
    store_dir = tmp_path / "store"
    store = feedkit.open_store(str(store_dir))
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", signing_key=KEY,
                          work_dir=tmp_path / "work") as p:
        v1 = p.publish(titles_table(100))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False,
                          signing_key=KEY) as feed:
        assert feed.version == v1
        key = None if case == "unsigned" else KEY
        # An unsigned producer must be told to build on a signed feed (allow_unsigned).
        with feedkit.Producer(store, feed="titles", primary_key="movie_id", signing_key=key,
                              allow_unsigned=key is None, work_dir=tmp_path / "work") as p:
            v2 = p.publish(titles_table(150))
        if case == "other-key":  # signed again by someone holding another key
            path = store_dir / names.manifest_key("titles", v2)
            resigned = Signer(OTHER.encode()).sign(Manifest.from_bytes(path.read_bytes(), "m"))
            rewrite_manifest(store_dir, "titles", v2, json.loads(resigned.to_bytes()))
        elif case == "tampered":  # a field changed after signing
            doc = manifest_doc(store_dir, "titles", v2)
            doc["created_at"] = "2001-01-01T00:00:00.000+00:00"
            rewrite_manifest(store_dir, "titles", v2, doc)
        elif case == "signature-stripped":
            doc = manifest_doc(store_dir, "titles", v2)
            del doc["signature"]
            rewrite_manifest(store_dir, "titles", v2, doc)
        with pytest.raises(feedkit.IntegrityError) as err:
            feed.refresh()
        expected = {"unsigned": "not signed", "other-key": "signed with key",
                    "tampered": "signature mismatch", "signature-stripped": "not signed"}[case]
        assert expected in str(err.value) and names.manifest_key("titles", v2) in str(err.value)
        assert feed.version == v1 and len(feed) == 100 and feed.get(120) is None
    # A fresh keyed consumer has nothing it may serve.
    with pytest.raises(feedkit.IntegrityError):
        feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "fresh", watch=False,
                         signing_key=KEY).open()


def test_turning_signing_on_for_an_existing_feed(tmp_path: Path) -> None:
    store = feedkit.open_store(str(tmp_path / "store"))
    with feedkit.Producer(store, feed="titles", primary_key="movie_id") as p:
        v1 = p.publish(titles_table(100))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as plain:
        assert plain.version == v1
        # A new producer with a key builds on the unsigned history; its versions are signed.
        with feedkit.Producer(store, feed="titles", primary_key="movie_id", signing_key=KEY,
                              snapshot_every=2) as p:
            v2 = p.publish(titles_table(110))
            assert "signature" in manifest_doc(tmp_path / "store", "titles", v2)
            assert plain.refresh() and plain.version == v2  # keyless consumers follow
            # A keyed consumer needs a signed path: v2's delta stands on unsigned v1.
            with pytest.raises(feedkit.IntegrityError, match="not signed"):
                feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "k1", watch=False,
                                 signing_key=KEY).open()
            v3 = p.publish(titles_table(120))  # the first signed snapshot
        assert manifest_doc(tmp_path / "store", "titles", v3)["snapshot"] is not None
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "k2", watch=False,
                          signing_key=KEY) as keyed:
        assert keyed.version == v3 and len(keyed) == 120


def test_keys_from_the_environment_and_files(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY.encode() + b"\n")
    assert signer_from(key_file).key_id == Signer(KEY.encode()).key_id  # type: ignore[union-attr]
    with pytest.raises(feedkit.ConfigurationError, match="too short"):
        signer_from("short")
    with pytest.raises(feedkit.ConfigurationError, match="cannot read"):
        signer_from(tmp_path / "missing")
    # FEEDKIT_SIGNING_KEY_FILE in a producer process signs; read at construction.
    store_dir = tmp_path / "store"
    script = ("import feedkit, pyarrow as pa, sys; "
              "s = feedkit.open_store(sys.argv[1]); "
              "p = feedkit.Producer(s, feed='t', primary_key='k'); "
              "print(p.publish(pa.table({'k': [1, 2]})))")
    env = dict(os.environ, FEEDKIT_SIGNING_KEY_FILE=str(key_file),
               PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("FEEDKIT_SIGNING_KEY", None)
    out = subprocess.run([sys.executable, "-c", script, str(store_dir)], env=env,
                         capture_output=True, text=True, check=True).stdout
    version = int(out.strip())
    data = (store_dir / names.manifest_key("t", version)).read_bytes()
    m = Manifest.from_bytes(data, "m")
    Signer(KEY.encode()).verify(m, "m")  # raises if not signed with the file's key
    with pytest.raises(feedkit.IntegrityError):
        Signer(OTHER.encode()).verify(m, "m")
