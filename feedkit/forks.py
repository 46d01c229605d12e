"""What feedkit objects do in a child process after ``os.fork()``.

A forked child holds a copy of every object but only the thread that forked: the
refresher threads, file-system watches and S3 connection pools of the parent are not
there, and a lock a parent thread held at the moment of the fork stays held forever.
Objects that own such things register a reset here; one ``os.register_at_fork`` hook
runs the resets in the child (gunicorn ``--preload``, ``multiprocessing``'s fork start
method, a plain fork). The parent is not touched.

Objects are held weakly: registering keeps nothing alive.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["on_fork_in_child"]

log = logging.getLogger("feedkit")

_Reset = tuple[bool, Callable[[Any], None]]
_resets: weakref.WeakKeyDictionary[Any, list[_Reset]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def on_fork_in_child(obj: Any, reset: Callable[[Any], None], *, late: bool = False) -> None:
    """Call ``reset(obj)`` in the child after every fork, for as long as ``obj`` lives.

    ``reset`` must not hold a strong reference to ``obj`` (pass an unbound function or a
    ``type(obj).method``): ``obj`` is handed to it. ``late`` resets run after all others,
    so one that starts threads (a consumer's refresher) finds the stores reset already.
    """
    with _lock:
        _resets.setdefault(obj, []).append((late, reset))


def _before() -> None:
    # Hold the registry's lock across the fork: the child then finds it in a known state.
    _lock.acquire()


def _after_in_parent() -> None:
    _lock.release()


def _after_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's copy was held at the fork
    registered = list(_resets.items())
    for phase in (False, True):
        for obj, resets in registered:
            for late, reset in resets:
                if late is not phase:
                    continue
                try:
                    reset(obj)
                except Exception:  # one object's reset never keeps the others from theirs
                    log.exception("feedkit: resetting %r after fork failed", obj)


os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                    after_in_child=_after_in_child)
