"""The one UI thread of the process, ``veo_nb-panel-ui``: it ticks every
open panel that asked for automatic refresh, and ends when none is left."""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING

from .kernel import detach_from_requests

if TYPE_CHECKING:  # pragma: no cover
    from .live import VeoPanel

#: Name of the one UI thread shared by every open panel of the process.
UI_THREAD_NAME = "veo_nb-panel-ui"
#: Shortest pause between two ticks, however many changes arrive.
MIN_TICK_GAP_S = 0.1

class _Ticker:
    """The single UI thread of the process: ticks every open panel that asked
    for automatic refresh, and ends when none is left."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._panels: weakref.WeakSet[VeoPanel] = weakref.WeakSet()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, panel: VeoPanel) -> None:
        with self._lock:
            self._panels.add(panel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=UI_THREAD_NAME, daemon=True)
                self._thread.start()

    def remove(self, panel: VeoPanel) -> None:
        """Stop ticking ``panel``; when it was the last one, end the thread."""
        with self._lock:
            self._panels.discard(panel)
            thread = self._thread if not self._panels else None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        detach_from_requests()  # or ipykernel 7.4 routes the panel's clicks to the busy main shell
        while True:
            with self._lock:
                panels = list(self._panels)
                if not panels:
                    self._thread = None
                    return
            for panel in panels:
                panel._tick()
            time.sleep(MIN_TICK_GAP_S)
            self._wake.wait(min(p.refresh_every or 1.0 for p in panels))
            self._wake.clear()


#: The ticker of this process.
ticker = _Ticker()
