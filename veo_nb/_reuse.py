"""Re-running a notebook cell must not pay again: which cell is running, and
which of its submits is which.

When a cell runs again (re-run, Run All, Run All after a kernel restart),
its *n*-th submit of a request identical to its last run's *n*-th (same
store, service, key, owner, model, prompt and options) returns the task that run
created instead of creating, and billing, another. Identical requests within
one run are all created (the same prompt gives different videos).

A cell is known by the id the frontend sends with the execute request
(``cellId``: JupyterLab, Notebook 7, VS Code) or, where none is sent
(nbclient, the classic notebook), by a hash of its source. A run is the
kernel's execution count. Outside a notebook's kernel there are no cells, and
nothing is reused.

A task that can never give its video is not reused (:func:`why_not_reused`):
it failed, completed without a video, or its link expired (or can never be
downloaded) before the video was saved. A saved video whose file was deleted
while its link still works is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from typing import Any

from ._downloads import HOST
from ._paths import saved_file_present
from ._urls import is_http_url
from .errors import _excerpt
from .models import TaskStatus
from .records import NO_VIDEO_REASON, TaskRecord, to_unix

#: Environment variable that turns reuse on (1) or off (0) in every mode.
REUSE_ENV = "VEO_NB_REUSE"

_lock = threading.Lock()
#: (store key, cell) -> (the run it counts, identical requests seen in that run)
_runs: dict[tuple[str, str], tuple[int, Counter[str]]] = {}


def current_cell() -> tuple[str, int] | None:
    """``(cell, run)`` of the notebook cell this kernel runs now, or None
    outside a notebook's kernel (scripts, plain Python, a thread of ours)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if shell is None or kernel is None:
        return None
    try:
        parent = kernel.get_parent() or {}
    except Exception:  # noqa: BLE001 - a kernel without it: fall back to the source
        parent = {}
    if (parent.get("header") or {}).get("msg_type") not in (None, "execute_request"):
        return None  # a widget's click (the panel's form creates new tasks)
    cell_id = (parent.get("metadata") or {}).get("cellId")
    if isinstance(cell_id, str) and cell_id:
        return f"cell:{cell_id}", int(shell.execution_count)
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    if not history:
        return None
    source = str(history[-1])
    return "source:" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:32], \
        int(shell.execution_count)


def request_key(service: str, key_fingerprint: str | None, owner: str | None,
                request: dict[str, Any]) -> str:
    """What makes two submits the same request. The owner is part of it: on a
    class's shared store, a classmate running the same notebook with the same
    key makes tasks of their own, never reuses yours."""
    text = json.dumps({"service": service, "key": key_fingerprint, "owner": owner,
                       "request": request}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def slot(store_key: str, cell: tuple[str, int], request: str) -> int:
    """Which identical submit of ``request`` this is in this run of the cell
    (0, 1, ...); a new run of the cell starts again at 0."""
    name, run = cell
    with _lock:
        seen_run, counts = _runs.get((store_key, name), (None, Counter()))
        if seen_run != run:
            counts = Counter()
            _runs[store_key, name] = (run, counts)
        n = counts[request]
        counts[request] += 1
        return n


def seen(store_key: str, cell: tuple[str, int], request: str) -> int:
    """How many identical submits of ``request`` this run of the cell has
    made so far (what :func:`slot` would return next)."""
    name, run = cell
    with _lock:
        seen_run, counts = _runs.get((store_key, name), (None, Counter()))
        return counts[request] if seen_run == run else 0


def why_not_reused(record: TaskRecord) -> str | None:
    """Why an earlier run's task ``record`` can never give the cell its video
    (a re-run then creates a new task, and prints this), or None when it can
    be reused: still running, or completed with its video saved (here, or on
    the machine that fetched it), or with a link that still works."""
    name = f"the earlier task {record.task_id}"
    if record.status is TaskStatus.FAILED and record.error != NO_VIDEO_REASON:
        return f"{name} failed" + (f": {_excerpt(record.error, 160)}" if record.error else "")
    if record.status not in (TaskStatus.COMPLETED, TaskStatus.FAILED):
        return None
    if record.status is TaskStatus.FAILED or not record.video_url:
        return f"{name} {NO_VIDEO_REASON}"
    if record.download_state == "saved" and (record.saved_on not in (None, HOST)
                                             or saved_file_present(record.video_path)):
        return None
    expires = to_unix(record.url_expires_at)
    if record.download_state == "expired" or (
            expires is not None and time.time() >= expires):
        return f"{name}'s video expired before it was saved"
    if not is_http_url(record.video_url):
        return f"{name}'s video link can never be downloaded"
    return None
