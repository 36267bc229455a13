"""Fixtures and helpers shared by the panel's widget-level tests (no tests here).

Every tracker is real and talks to the emulator over real HTTP (time_scale
0.01: 30 s -> 0.3 s, 2-5 min -> 1.2-3 s). Timing: only generous deadlines
(poll until a condition holds) and lower bounds; the machine may be slow
and shared.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest

from polling import until  # noqa: F401 - the panel tests import it from here
from veo_nb import VeoPanel, panel
from veo_nb.emulator import Emulator
from veo_nb.tracker import Tracker
from veo_nb.widgets import UI_THREAD_NAME
from veo_nb.widgets.media import MediaView
from veo_nb.widgets.tree import walk

DEADLINE = 30.0
XSS = "<img src=x onerror=alert(1)>"
MB = 1024 * 1024


def threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def new_tracker(folder: Path, emulator: Emulator, **options: Any) -> Tracker:
    return Tracker(emulator.client(), store=folder / "h.sqlite", media_dir=folder / "videos",
                   **options)


@contextmanager
def running_emulator(video_size: str | int) -> Iterator[Emulator]:
    """An emulator at time_scale 0.01 that never fails at random, serving
    videos of ``video_size``."""
    emulator = Emulator(time_scale=0.01, failure_rate=0.0, video_size=video_size).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def _tracker_on(folder: Path, emulator: Emulator) -> Iterator[Tracker]:
    tr = new_tracker(folder, emulator)
    yield tr
    tr.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The emulator serving its small sample videos (about 20 KB: shown at once)."""
    with running_emulator("sample") as emu:
        yield emu


@pytest.fixture
def tracker(tmp_path: Path, emulator: Emulator) -> Iterator[Tracker]:
    yield from _tracker_on(tmp_path, emulator)


@pytest.fixture
def big_emulator() -> Iterator[Emulator]:
    """The emulator serving 3 MB videos (bigger than what the panel sends unasked)."""
    with running_emulator(3 * MB) as emu:
        yield emu


@pytest.fixture
def big_tracker(tmp_path: Path, big_emulator: Emulator) -> Iterator[Tracker]:
    yield from _tracker_on(tmp_path, big_emulator)


def created_elsewhere(emulator: Emulator, prompts: list[str]) -> list[str]:
    """Ids of tasks created by another client (as pasted ids are)."""
    other = emulator.client()
    try:
        return [other.create_video(p).id for p in prompts]
    finally:
        other.close()


@pytest.fixture
def make_panel() -> Iterator[Callable[..., VeoPanel]]:
    made: list[VeoPanel] = []

    def make(tr: Tracker, **options: Any) -> VeoPanel:
        p = panel(tr, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
    until(lambda: not threads(UI_THREAD_NAME), timeout=15)


def finished(tr: Tracker, prompts: list[str]) -> list[str]:
    """Submit ``prompts`` and wait until each is completed with its video saved."""
    ids = [tr.submit(p).id for p in prompts]
    tr.wait(ids, timeout=DEADLINE)
    until(lambda: all(tr.record(i).download_state == "saved" for i in ids))
    return ids


def row_text(p: VeoPanel, task_id: str) -> str:
    row = p._rows.get(task_id)
    return row.info.value if row is not None and row.widget in p.rows_box.children else ""


def shown_ids(p: VeoPanel) -> list[str]:
    by_widget = {id(r.widget): i for i, r in p._rows.items()}
    return [by_widget[id(w)] for w in p.rows_box.children]


def media_of(p: VeoPanel, task_id: str) -> MediaView | None:
    """The video card (or player) in ``task_id``'s row, if any."""
    row = p._rows.get(task_id)
    if row is None or not row.media.children:
        return None
    return p.media._views.get(task_id)


def player_of(p: VeoPanel, task_id: str) -> widgets.Widget | None:
    view = media_of(p, task_id)
    return None if view is None else view.player


def tree_comm_ids(widget: widgets.Widget) -> set[str]:
    return {w.comm.comm_id for w in walk(widget) if w.comm is not None}


def tree_types(widget: widgets.Widget) -> set[type]:
    return {type(w) for w in walk(widget)}


def open_widgets() -> int:
    """How many widgets of the process are open (ipywidgets' registry)."""
    from ipywidgets.widgets import widget as registry

    return len(registry._instances)


def large_buffers(root: object, limit: int = MB) -> list[int]:
    """Sizes of the bytes-like objects of at least ``limit`` bytes reachable
    from ``root`` (not through modules, classes or function globals)."""
    gc.collect()
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    seen: set[int] = set()
    stack = [root]
    found = []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type)) or id(obj) in module_dicts:
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray, memoryview)):
            size = memoryview(obj).nbytes
            if size >= limit:
                found.append(size)
            continue
        if isinstance(obj, (types.FunctionType, types.MethodType, threading.Thread)):
            continue  # code and globals; threads reach the whole process
        stack.extend(gc.get_referents(obj))
    return found


@contextmanager
def file_opens() -> Iterator[list[str]]:
    """Record the path of every file the process opens (``open`` audit
    events of the interpreter) inside the ``with`` block."""
    seen: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if recording[0] and event == "open" and isinstance(args[0], (str, Path)):
            seen.append(str(args[0]))

    _hooks.append(hook)
    try:
        yield seen
    finally:
        recording[0] = False
        _hooks.remove(hook)


_hooks: list[Callable[[str, tuple[Any, ...]], None]] = []


def _dispatch(event: str, args: tuple[Any, ...]) -> None:
    for hook in list(_hooks):
        hook(event, args)


sys.addaudithook(_dispatch)  # audit hooks cannot be removed: one dispatcher per process
