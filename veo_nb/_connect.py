"""``veo_nb.connect()``: the real service when a key is configured, otherwise
an embedded emulator (demo mode) so notebooks and teaching demos run offline."""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from ._log import logger
from ._schedule import documented_window
from .client import VeoClient

#: Demo mode's clock runs this much faster than the real service: 2–5 min
#: become about 15–45 s (including the short queued phase).
DEMO_TIME_SCALE = 0.12
#: Share of demo tasks that fail at random, as some do on the real service.
DEMO_FAILURE_RATE = 0.1

_lock = threading.Lock()
_demo_emulator: Any = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _embedded_emulator(time_scale: float, failure_rate: float) -> tuple[Any, bool]:
    """The process-wide demo emulator, started on first use and stopped at
    exit; the flag says whether this call started it."""
    global _demo_emulator
    from .emulator import Emulator

    with _lock:
        emu = _demo_emulator
        if emu is not None and (emu.time_scale, emu.failure_rate) == (time_scale, failure_rate):
            return emu, False
        emu = Emulator(time_scale=time_scale, failure_rate=failure_rate).start()
        atexit.register(emu.stop)
        _demo_emulator = emu
        return emu, True


def connect(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    demo: bool | None = None,
    time_scale: float | None = None,
    failure_rate: float | None = None,
    quiet: bool = False,
    **client_kwargs: Any,
) -> VeoClient:
    """Return a ready :class:`VeoClient`.

    - With an API key (``api_key``, ``VEO_API_KEY``, or a Colab secret of that
      name) it talks to the real service (or to ``base_url`` / ``VEO_BASE_URL``).
    - Without one, or with ``demo=True`` / ``VEO_DEMO=1``, it starts an
      embedded emulator on 127.0.0.1 (one per process, shared by every call)
      whose clock runs :data:`DEMO_TIME_SCALE` times as fast, and says so in
      one line when it starts (``quiet=True`` silences it).
      ``failure_rate`` is the share of demo tasks that fail at random
      (default ``VEO_DEMO_FAILURE_RATE``, else 0.1; prompts with ``[fail]``
      fail whatever it is).

    ``time_scale`` (or ``VEO_TIME_SCALE``) tells a client of a standalone
    ``veo-nb emulator`` how fast that emulator's clock runs. Other keyword
    arguments (``timeout``, ``max_retries``) go to :class:`VeoClient`.
    """
    forced = demo is True or (demo is None and _truthy(os.environ.get("VEO_DEMO")))
    if not forced:
        scale = time_scale
        if scale is None:
            scale = float(os.environ.get("VEO_TIME_SCALE") or 1.0)
        client = VeoClient(api_key, base_url, time_scale=scale, **client_kwargs)
        if client.has_api_key:
            return client
        client.close()
    if failure_rate is None:
        failure_rate = float(os.environ.get("VEO_DEMO_FAILURE_RATE") or DEMO_FAILURE_RATE)
    emu, started = _embedded_emulator(time_scale or DEMO_TIME_SCALE, failure_rate)
    if started and not quiet:
        low, high = documented_window(None, emu.time_scale)
        why = "VEO_DEMO is set" if forced else "no VEO_API_KEY set"
        print(
            f"veo_nb demo mode ({why}): an embedded emulator at {emu.base_url}; "
            f"tasks finish in about {low:.0f}–{high + max(emu.queue_s) * emu.time_scale:.0f} s "
            "and nothing is billed."
        )
    logger.info("connected to the embedded emulator at %s", emu.base_url)
    return emu.client(**client_kwargs)
