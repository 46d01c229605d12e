"""gunicorn settings for examples/service/app.py: ``gunicorn -c examples/service/gunicorn.conf.py``.

Command-line options override these (``--bind``, ``--workers``, ``--preload``). The
choices are explained in docs/DEPLOYMENT.md.
"""

from __future__ import annotations

import os
import sys
from typing import Any

wsgi_app = "app:app"
pythonpath = os.path.dirname(os.path.abspath(__file__))  # where app.py is

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
# Sync workers: a lookup is microseconds of CPU and no I/O, so one request at a time
# per process costs nothing and keeps every worker's memory the shared mapping.
worker_class = "sync"

# preload_app: open the Consumer once in the master, before forking. The workers start
# with its version already mapped (the same pages) and each re-arms its own refresher.
# Off: every worker opens its own Consumer on the shared cache folder. Both share pages.
preload_app = os.environ.get("FEEDKIT_PRELOAD", "1") not in ("0", "false", "no")

timeout = 30           # a worker silent this long is killed and replaced
graceful_timeout = 10  # SIGTERM: in-flight requests get this long to finish


def _close_feed() -> None:
    app = sys.modules.get("app")
    if app is not None:
        app.feed.close()  # stops the refresher and the watch, releases the mappings


def worker_exit(server: Any, worker: Any) -> None:
    _close_feed()  # in the worker that is exiting


def on_exit(server: Any) -> None:
    _close_feed()  # in the master (it holds a Consumer only with preload_app)
