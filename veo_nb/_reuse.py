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
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from typing import Any

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
