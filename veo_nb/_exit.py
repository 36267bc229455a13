"""Run clean-up when the interpreter exits, *before* it joins worker threads.

``atexit`` and ``weakref.finalize`` callbacks run only after Python has
waited for every non-daemon thread, and :mod:`concurrent.futures` workers are
such threads: a download in flight would hold the exit until it finished.
Callbacks registered here run first, so they can tell those threads to stop.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - import first: its exit hook must run after ours
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._log import logger

_callbacks: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def on_exit(owner: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(owner)`` when the interpreter exits, before threads
    are joined, unless ``owner`` was garbage-collected first."""
    with _lock:
        _callbacks[owner] = callback


def _run() -> None:
    with _lock:
        items = list(_callbacks.items())
    for owner, callback in items:
        try:
            callback(owner)
        except Exception:  # noqa: BLE001 - exiting anyway; the others still run
            logger.exception("veo_nb: clean-up at exit failed")


# threading runs these hooks in reverse order of registration, before joining
# threads: registered after concurrent.futures' own hook, ours runs first.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_run)
else:  # pragma: no cover - an interpreter without the private hook
    atexit.register(_run)
