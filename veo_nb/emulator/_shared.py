"""One demo service per folder: a second process (a second notebook's
kernel in demo mode) uses the emulator that the first one runs, instead of
starting its own.

A demo emulator keeps its tasks in a state file (``veo_nb_data/demo/``) that
one live process owns. A second process on the same folder shares the
history next to it, so its tasks must live on the same service: with an
emulator of its own and no state file, they were recorded under a service
that no later process serves, and stayed "queued" forever. Here the second
process talks to the owner's emulator over HTTP (the ports, key and service
id are in the state file), and takes the state file over, on the same API
port, as soon as the owner ends, so its tracker goes on as if nothing
happened and later kernels load every task.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests

from .._log import logger
from ..client import VeoClient
from ._server import Emulator
from ._service import API_PREFIX
from ._state import EmulatorStateInUse, SavedState, StateFile

#: Seconds between two attempts to take the state file over.
TAKEOVER_EVERY_S = 2.0
#: Seconds to wait for the owner's emulator to answer.
READY_TIMEOUT_S = 5.0


class SharedEmulator:
    """The emulator another live process of this folder owns (see the module
    docstring): :meth:`client` talks to it; when the owner ends, this
    process starts the emulator itself, from the same state file and on the
    same API port."""

    def __init__(self, state_path: Path, saved: SavedState, options: dict[str, Any]) -> None:
        self.state_path = state_path
        self.api_port = saved.ports[0]
        self.api_key = saved.api_key
        self.service_id = saved.service_id
        self.time_scale = saved.time_scale or float(options["time_scale"])
        self.base_url = f"http://127.0.0.1:{self.api_port}{API_PREFIX}"
        self._options = {**options, "time_scale": self.time_scale}
        self.owned: Emulator | None = None  # once taken over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._take_over, daemon=True,
                                        name="veo_nb-demo-takeover")
        self._thread.start()

    @classmethod
    def join(cls, state_path: Path, options: dict[str, Any]) -> SharedEmulator | None:
        """The owner's emulator, once it answers with the key its state file
        names; None when it does not (then the caller runs its own)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                saved = StateFile(state_path).load(0.0)
            except Exception:  # noqa: BLE001 - mid-replace, or unreadable: try again
                saved = None
            if saved is not None and _answers(saved):
                return cls(state_path, saved, options)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def client(self, **kwargs: Any) -> VeoClient:
        """A client of the shared demo service (as :meth:`Emulator.client`)."""
        options: dict[str, Any] = {"api_key": self.api_key, "base_url": self.base_url,
                                   "time_scale": self.time_scale, "demo": True,
                                   "service": self.service_id}
        options.update(kwargs)
        return VeoClient(**options)

    def _take_over(self) -> None:
        while not self._stop.wait(TAKEOVER_EVERY_S):
            emu = Emulator(state_path=self.state_path, port=self.api_port, **self._options)
            try:
                emu.start()
            except (EmulatorStateInUse, OSError):  # still owned, or its port not free yet
                continue
            self.owned = emu
            logger.info("veo_nb demo mode: took the demo emulator over at %s", emu.base_url)
            return

    def stop(self) -> None:
        """Stop watching the owner (and the emulator, once taken over)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.owned is not None:
            self.owned.stop()


def _answers(saved: SavedState) -> bool:
    """Whether an emulator with ``saved``'s key answers on its API port (a
    404 for an id it never made is its answer)."""
    url = f"http://127.0.0.1:{saved.ports[0]}{API_PREFIX}/v1/result/vgen_probe"
    try:
        answer = requests.get(url, headers={"Authorization": f"Bearer {saved.api_key}"},
                              timeout=2)
    except requests.RequestException:
        return False
    return answer.status_code == 404
