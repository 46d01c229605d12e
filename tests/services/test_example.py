"""examples/service, run as its README says: publish.py, then gunicorn with the example's
config (with and without preload_app); lookups, readiness, a new version, a clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.harness import Server, free_port, get_json

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "service"
RECORDS = 5_000
POLL_INTERVAL = 1.0


def publish(store: Path, revision: int) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "publish.py"), str(store),
                    "--records", str(RECORDS), "--revision", str(revision)],
                   check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("preload", ["1", "0"], ids=["preload", "per-worker"])
def test_example_service_serves_follows_and_stops(tmp_path: Path, preload: str) -> None:
    store = tmp_path / "store"
    publish(store, revision=1)
    port = free_port()
    env = dict(os.environ, FEEDKIT_STORE=f"file://{store}",
               FEEDKIT_CACHE_DIR=str(tmp_path / "cache"), FEEDKIT_POLL_INTERVAL=str(POLL_INTERVAL),
               FEEDKIT_PRELOAD=preload, WORKERS="2", XDG_RUNTIME_DIR=str(tmp_path))
    server = Server([sys.executable, "-m", "gunicorn", "-c", str(EXAMPLE / "gunicorn.conf.py"),
                     "--bind", f"127.0.0.1:{port}"], env, tmp_path / "gunicorn.log", port,
                    ready_path="/readyz")
    try:
        server.wait_ready()
        status, body = get_json(port, "/titles/7")
        assert status == 200, body
        assert body["record"] == {"movie_id": 7, "title": "Title 7", "year": 1957, "revision": 1}
        status, body = get_json(port, f"/titles/{RECORDS + 1}")
        assert status == 404 and body["error"] == f"no title {RECORDS + 1}", body
        status, body = get_json(port, "/readyz")
        assert status == 200 and body["ok"] and body["versions_behind"] == 0, body
        assert get_json(port, "/livez")[0] == 200

        publish(store, revision=2)
        deadline = time.monotonic() + POLL_INTERVAL + 2
        in_a_row = 0  # answers showing revision 2, in a row: both workers moved
        while in_a_row < 20:
            assert time.monotonic() < deadline, f"revision 2 not served in time: {body}"
            status, body = get_json(port, "/titles/7")
            in_a_row = in_a_row + 1 if body["record"]["revision"] == 2 else 0
        status, body = get_json(port, "/readyz")
        assert status == 200 and body["version"] == body["announced_version"], body
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    assert not server.group()
    assert "Traceback" not in server.log_tail(100_000), server.log_tail()
