"""``veo_nb.connect()``: the real service when a key is configured, otherwise
an embedded emulator (demo mode) so notebooks and teaching demos run offline."""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from ._log import logger
from ._paths import DEMO_DATA_DIR
from ._schedule import documented_window
from .client import VeoClient
from .errors import ValidationError

#: Demo mode's clock runs this much faster than the real service: 2–5 min
#: become about 15–45 s (including the short queued phase).
DEMO_TIME_SCALE = 0.12
#: Share of demo tasks that fail at random, as some do on the real service.
DEMO_FAILURE_RATE = 0.1
#: Environment variable choosing the size of demo videos.
DEMO_VIDEO_SIZE_ENV = "VEO_DEMO_VIDEO_SIZE"
#: Environment variable setting demo mode's clock (rehearsals, tests).
DEMO_TIME_SCALE_ENV = "VEO_DEMO_TIME_SCALE"

_lock = threading.Lock()
_demo_emulator: Any = None


def truthy(value: str | None) -> bool:
    """Whether an environment value says yes (``1``, ``true``, ``yes``, ``on``)."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def demo_video_size() -> str | int:
    """What the demo emulator serves: ``VEO_DEMO_VIDEO_SIZE`` (``sample``,
    ``realistic`` or a number of bytes), by default the small samples."""
    value = (os.environ.get(DEMO_VIDEO_SIZE_ENV) or "sample").strip().lower()
    if value in ("sample", "realistic"):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValidationError(
            f"{DEMO_VIDEO_SIZE_ENV}={value!r}: use 'sample', 'realistic' or a number of bytes"
        ) from None


def _embedded_emulator(time_scale: float, failure_rate: float) -> tuple[Any, bool]:
    """The process-wide demo emulator, started on first use and stopped at
    exit; the flag says whether this call started it.

    Its tasks, clock and links live in ``veo_nb_data/demo/emulator.json``, so
    after a kernel restart the tasks of the last session are still known and
    finish normally. When another running kernel owns that file, this one
    uses that kernel's emulator (the same demo service, so every task of the
    shared history stays served), and takes it over when that kernel ends;
    only when it does not answer does this one run an emulator of its own."""
    global _demo_emulator
    from .emulator import Emulator, EmulatorStateInUse
    from .emulator._shared import SharedEmulator

    with _lock:
        emu = _demo_emulator
        if emu is not None and (isinstance(emu, SharedEmulator)  # the folder's one demo service
                                or (emu.time_scale, emu.failure_rate) == (time_scale, failure_rate)):
            return emu, False
        options: dict[str, Any] = {"time_scale": time_scale, "failure_rate": failure_rate,
                                   "video_size": demo_video_size()}
        state_path = (DEMO_DATA_DIR / "emulator.json").resolve()
        try:
            emu = Emulator(state_path=state_path, **options).start()
        except EmulatorStateInUse as exc:
            emu = SharedEmulator.join(state_path, options)
            if emu is None:
                logger.warning("veo_nb: %s, and it does not answer: this kernel runs an "
                               "emulator of its own, whose tasks only it serves", exc)
                emu = Emulator(**options).start()
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
      fail whatever it is). Its videos are small samples unless
      ``VEO_DEMO_VIDEO_SIZE`` says ``realistic`` (about 4/12/40 MB for
      720p/1080p/4K) or a number of bytes; ``VEO_DEMO_TIME_SCALE`` sets its
      clock (default :data:`DEMO_TIME_SCALE`). Its state is kept in
      ``veo_nb_data/demo/``, so unfinished demo tasks survive a kernel restart.

    ``time_scale`` (or ``VEO_TIME_SCALE``) tells a client of a standalone
    ``veo-nb emulator`` how fast that emulator's clock runs. Other keyword
    arguments (``timeout``, ``max_retries``) go to :class:`VeoClient`.
    """
    forced = demo is True or (demo is None and truthy(os.environ.get("VEO_DEMO")))
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
    if time_scale is None and os.environ.get(DEMO_TIME_SCALE_ENV):
        time_scale = float(os.environ[DEMO_TIME_SCALE_ENV])
    emu, started = _embedded_emulator(time_scale or DEMO_TIME_SCALE, failure_rate)
    from .emulator._shared import SharedEmulator

    if started and not quiet and isinstance(emu, SharedEmulator):
        print(f"veo_nb demo mode: using the demo emulator of another kernel in this folder "
              f"({emu.base_url}), so both share its tasks; nothing is billed.")
    elif started and not quiet:
        low, high = documented_window(None, emu.time_scale)
        why = "VEO_DEMO is set" if forced else "no VEO_API_KEY set"
        print(
            f"veo_nb demo mode ({why}): an embedded emulator at {emu.base_url}; "
            f"tasks finish in about {low:.0f}–{high + max(emu.queue_s) * emu.time_scale:.0f} s "
            "and nothing is billed."
        )
    logger.info("connected to the embedded emulator at %s", emu.base_url)
    demo_client: VeoClient = emu.client(**client_kwargs)
    return demo_client
