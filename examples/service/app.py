"""A Flask service answering lookups from a feedkit feed: the example of docs/DEPLOYMENT.md.

Run it under gunicorn with the config beside it (see README.md in this folder)::

    FEEDKIT_STORE=file:///tmp/fk-service/store FEEDKIT_CACHE_DIR=/tmp/fk-service/cache \\
        gunicorn -c examples/service/gunicorn.conf.py

Configured by the environment (read once, when the module is imported):

- ``FEEDKIT_STORE`` (required): the store's URL, ``file:///path`` or ``s3://bucket/prefix``.
- ``FEEDKIT_FEED``: the feed (default ``demo.titles``, what ``publish.py`` writes).
- ``FEEDKIT_CACHE_DIR``: the cache folder, one for every worker of the host (default
  ``/var/cache/feedkit``).
- ``FEEDKIT_POLL_INTERVAL``: seconds between reads of the announcement (default 5).
- ``FEEDKIT_REFRESH_TIMEOUT``: seconds one refresh may take in all (default 30).
- ``FEEDKIT_MAX_STALENESS``: seconds without a successful check before ``/readyz``
  answers 503 (default: ``3 * poll_interval + refresh_timeout``).

Routes:

- ``GET /titles/<movie_id>``: the record and the version it comes from (404 when absent).
- ``GET /readyz``: readiness, ``Consumer.health()``: 200 when fresh, else 503.
- ``GET /livez``: liveness: the process answers (never fails because the store does).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify

import feedkit

STORE_URL = os.environ["FEEDKIT_STORE"]
FEED_NAME = os.environ.get("FEEDKIT_FEED", "demo.titles")
CACHE_DIR = os.environ.get("FEEDKIT_CACHE_DIR", "/var/cache/feedkit")
POLL_INTERVAL = float(os.environ.get("FEEDKIT_POLL_INTERVAL", "5"))
REFRESH_TIMEOUT = float(os.environ.get("FEEDKIT_REFRESH_TIMEOUT", "30"))
MAX_STALENESS = float(os.environ["FEEDKIT_MAX_STALENESS"]) \
    if os.environ.get("FEEDKIT_MAX_STALENESS") else None

# Opened at import, and open() blocks until a version is served, so a worker never
# accepts a request before it has data. With gunicorn's preload_app this runs once, in
# the master, and the forked workers inherit the consumer (and its mapped pages); each
# worker then runs its own refresher. Without preload every worker opens its own, and
# the shared CACHE_DIR makes them build each version once and map the same files.
feed = feedkit.Consumer(feedkit.open_store(STORE_URL), feed=FEED_NAME, cache_dir=CACHE_DIR,
                        poll_interval=POLL_INTERVAL, refresh_timeout=REFRESH_TIMEOUT).open()

app = Flask(__name__)


@app.get("/titles/<int:movie_id>")
def title(movie_id: int) -> Any:
    # One view for the whole request: the record and the version reported agree even
    # if a refresh swaps versions meanwhile.
    with feed.view() as view:
        record, version = view.get(movie_id), view.version
    if record is None:
        return jsonify(version=version, error=f"no title {movie_id}"), 404
    return jsonify(version=version, record=record._asdict())


@app.get("/readyz")
def ready() -> Any:
    health = feed.health(max_staleness=MAX_STALENESS)
    return jsonify(health.to_dict()), 200 if health.ok else 503


@app.get("/livez")
def live() -> Any:
    return jsonify(pid=os.getpid())
