"""The app the service tests run under gunicorn (``feed_app:wsgi``) and uvicorn
(``feed_app:asgi``): one Consumer, opened when the module is imported.

Imported by the server, never by pytest. The test sets the environment:
``SERVICE_STORE`` (store URL), ``SERVICE_FEED``, ``SERVICE_CACHE`` (cache folder shared
by the workers) and ``SERVICE_POLL`` (``poll_interval``, seconds).

Routes (GET), each answering JSON with the worker's ``pid``:

- ``/get?key=K``: ``version`` and ``record`` (a dict, or null when absent) read from one
  ``view()``, so the record is the one of the version reported; ``seq`` counts this
  worker's requests (the test checks that a worker's version never goes back).
- ``/health``: the readiness report, 200 when ``ok`` else 503.
- ``/scan``: reads every record of the served version (so that every page of its state
  files is resident) and names those files, for the test's PSS measurement.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import feedkit

MAX_STALENESS = 10.0

FEED = feedkit.Consumer(feedkit.open_store(os.environ["SERVICE_STORE"]),
                        feed=os.environ["SERVICE_FEED"],
                        cache_dir=os.environ["SERVICE_CACHE"],
                        poll_interval=float(os.environ["SERVICE_POLL"])).open()

_seq = itertools.count(1)


def handle(path: str, query: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one request; shared by the WSGI and the ASGI app."""
    pid = os.getpid()
    if path == "/get":
        key = int(parse_qs(query)["key"][0])
        with FEED.view() as view:
            version, record = view.version, view.get(key)
        return 200, {"pid": pid, "seq": next(_seq), "version": version, "key": key,
                     "record": None if record is None else record._asdict()}
    if path == "/health":
        report = FEED.health(max_staleness=MAX_STALENESS).to_dict()
        return (200 if report["ok"] else 503), {**report, "pid": pid}
    if path == "/scan":
        with FEED.view() as view:
            records = sum(1 for _ in view.items())
            return 200, {"pid": pid, "version": view.version, "records": records,
                         "files": [str(f.path) for f in view.files]}
    return 404, {"pid": pid, "error": f"no route {path}"}


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    status, body = handle(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
    data = _encode(body)
    start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
               send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                FEED.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, body = handle(scope["path"], scope["query_string"].decode())
    data = _encode(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
