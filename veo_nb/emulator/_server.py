"""The emulator: a real HTTP server imitating the VEO service, plus a media host.

Two :class:`http.server.ThreadingHTTPServer` instances on 127.0.0.1 speak
HTTP/1.1 with keep-alive: the API (``POST {base_url}/v1/veo/videos``,
``GET {base_url}/v1/result/{id}``, Bearer auth) and, on another port, the
media host that serves finished videos the way a CDN would (no auth, an
unguessable path, Range requests, links that expire).

Every duration of the real service is multiplied by ``time_scale``: the
2–5 min of generation, the 30 s polling rule and the 24 h link lifetime.

With ``state_path`` the tasks, their links and the ports survive a restart
of the emulator, even in a new process (see :mod:`veo_nb.emulator._state`).

Deviation from the real service: ``Retry-After`` is normally whole seconds,
but when the scaled wait is below one second it is sent as a decimal
(``"0.25"``), which HTTP does not define; veo_nb's client accepts both.

This module holds :class:`Emulator`: its options, start and stop, ports and
state file. What the service answers is in :mod:`._service`, the servers and
request handlers in :mod:`._http`, the counters in :mod:`._stats`.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ._dialects import Dialects
from ._faults import FaultConfig, Faults
from ._http import ApiHandler, Handler, MediaHandler, Server
from ._media import MediaLibrary
from ._service import API_PREFIX, Service
from ._state import SavedState, StateFile
from ._stats import EmulatorStats

if TYPE_CHECKING:  # pragma: no cover
    from ..client import VeoClient

logger = logging.getLogger("veo_nb.emulator")


class Emulator:
    """A local imitation of the VEO service for demos and tests.

    Starts two HTTP servers on ``host``: the API at :attr:`base_url` (port
    ``port``, 0 = a free one) and the media host at :attr:`media_url`.
    Every duration of the service is multiplied by ``time_scale``.

    Keyword options:

    * ``failure_rate``: share of tasks that fail with a realistic message.
    * ``api_key``: the only key accepted; generated (``"emu-…"``) when None
      (with ``state_path``, generated once and kept in the state file).
    * ``seed``: makes ids, durations and failures reproducible (None = random).
    * ``latency_s``: sleep added to every API response (benchmarks).
    * ``queue_s``: (low, high) unscaled seconds a task stays ``queued``.
    * ``video_size``: how big served videos are. ``"realistic"`` (default):
      about what the service sends for the task's resolution (4 MB for
      720p, 12 MB for 1080p, 40 MB for 4K; exact figures in
      ``veo_nb.emulator._media.REALISTIC_SIZES``); ``"sample"``: the small
      clips as they are (about 20 KB); a number: that many bytes. Videos
      are padded with a trailing ``free`` box, so they stay valid 8-second
      MP4s; which clip a task gets depends on a hash of its prompt.
    * ``faults``: a :class:`FaultConfig`: 5xx, resets, truncated or slow
      bodies and latency in front of the service, lost or late answers
      behind it; tasks' true lives are unchanged. :meth:`storm` adds a
      rate-limit storm, :meth:`pause`/:meth:`resume` a down window on the
      same ports.
    * ``state_path``: a JSON file that keeps tasks (with their plans and
      video links), the service id, the key and the ports across restarts,
      even in a new process (a kernel restart in demo mode). :meth:`start`
      loads it and binds the ports used last time when they are free (so
      old video links keep working); it is saved after every create and
      at :meth:`stop`. Real time keeps running while no emulator is up: a
      task due 20 s after its creation, whose emulator stopped after 5 s
      and came back 3 s later, completes 12 s after the restart. One
      running emulator at a time may own the file: another one's
      :meth:`start` raises :class:`EmulatorStateInUse`; an unreadable file
      raises :class:`EmulatorStateError` (a :class:`veo_nb.ValidationError`).

    Prompt directives (the prompt is stored as sent): ``[fail]``, ``[fail:
    <message>]`` (fails with exactly that message), ``[no-video]`` (completes
    without a ``video_url``), ``[duration: <seconds>]`` (unscaled total).
    """

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        failure_rate: float = 0.1,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        latency_s: float = 0.0,
        queue_s: tuple[float, float] = (3.0, 20.0),
        video_size: str | int = "realistic",
        faults: FaultConfig | None = None,
        state_path: str | Path | None = None,
        dialects: str | Iterable[str] | None = None,
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValidationError(f"time_scale must be a positive number, got {time_scale!r}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValidationError(f"failure_rate must be between 0 and 1, got {failure_rate!r}")
        if latency_s < 0:
            raise ValidationError(f"latency_s must be >= 0, got {latency_s!r}")
        if not 0.0 <= queue_s[0] <= queue_s[1]:
            raise ValidationError(f"queue_s must be (low, high) with 0 <= low <= high, got {queue_s!r}")
        self.time_scale = float(time_scale)
        self.failure_rate = float(failure_rate)
        self._key_given = bool(api_key)
        self.host = host
        self.port = port
        self.latency_s = float(latency_s)
        self.queue_s = (float(queue_s[0]), float(queue_s[1]))
        self._media = MediaLibrary(video_size)
        self._faults = Faults(faults)
        self.dialects = Dialects(dialects)
        self._service = Service(
            api_key=api_key or "emu-" + secrets.token_urlsafe(18),
            time_scale=self.time_scale, failure_rate=self.failure_rate, queue_s=self.queue_s,
            latency_s=self.latency_s, seed=seed, media=self._media, dialects=self.dialects,
            media_url=lambda: self.media_url, on_create=self._save,
        )
        self._ports = (port, 0)
        self._live = False
        self._state = StateFile(state_path) if state_path is not None else None
        self._save_lock = threading.Lock()
        self._service_id: str | None = None
        self._api: Server | None = None
        self._cdn: Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def api_key(self) -> str:
        """The only key the API accepts (generated when not given; with
        ``state_path``, kept in the state file)."""
        return self._service.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self._service.api_key = value

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Emulator:
        """Start both servers (in daemon threads) and return ``self``.

        With ``state_path``: take the state file (or raise
        :class:`EmulatorStateInUse`), load it, prefer its ports, save it.
        """
        if self._api is not None:
            raise RuntimeError("this emulator is already running")
        state = self._state if self._state is not None and not self._state.locked else None
        if state is not None:  # a start, not a resume(): take and load the state file
            self._restore(state)
        try:
            self._api = self._bind(self._ports[0], ApiHandler, state is not None and not self.port)
            self._cdn = self._bind(self._ports[1], MediaHandler, state is not None)
        except BaseException:
            self._close_servers()
            if state is not None:
                state.unlock()
            raise
        self._ports = (self._api.server_address[1], self._cdn.server_address[1])
        self._live = True  # until stop(); pause() keeps the ports
        self._save()
        for server, name in ((self._api, "api"), (self._cdn, "media")):
            thread = threading.Thread(
                target=server.serve, name=f"veo-nb-emulator-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info("emulator API at %s, media at %s", self.base_url, self.media_url)
        return self

    def stop(self) -> None:
        """Stop both servers, close open connections, delete padded videos;
        with ``state_path``, save the state and release the file."""
        self._close_servers()
        self._live = False
        self._media.close()
        self._save()
        if self._state is not None:
            with self._save_lock:  # a request still being handled saves no more
                self._state.unlock()

    def pause(self) -> None:
        """Go down: close both servers and every open connection (connections
        are refused) but keep tasks, clock and ports for :meth:`resume`."""
        if self._api is None:
            raise RuntimeError("the emulator is not running")
        self._close_servers()
        self._faults.count("down")

    def resume(self) -> Emulator:
        """Come back up after :meth:`pause`, on the same ports."""
        return self.start()

    def storm(self, seconds: float, *, retry_after: str | None = None) -> None:
        """A rate-limit storm: every API request gets 429 with ``Retry-After``
        for ``seconds`` (counted in ``stats.faults``, not as interval
        violations). ``retry_after``: the header sent instead of the seconds
        left (a gateway asking for far more, e.g. an HTTP date years ahead)."""
        self._faults.storm(seconds, retry_after=retry_after)

    def _bind(self, port: int, handler: type[Handler], fallback: bool) -> Server:
        """A server on ``port``; on a free port instead if it is taken and ``fallback``."""
        try:
            return Server((self.host, port), handler, self._service, self._faults)
        except OSError:
            if not (fallback and port):
                raise
            logger.info("port %d is taken: the emulator listens on another one", port)
            return Server((self.host, 0), handler, self._service, self._faults)

    def _restore(self, state: StateFile) -> None:
        """Take the state file and load what it holds (nothing the first time)."""
        state.lock()
        try:
            saved = state.load(self._to_wall())
        except BaseException:
            state.unlock()
            raise
        if saved is None:
            self._service_id = self._service_id or f"emulator:{uuid.uuid4().hex}"
            return
        self._service_id = saved.service_id
        if not self._key_given:
            self.api_key = saved.api_key
        self._service.load(saved.tasks)
        self._ports = (self.port or saved.ports[0], saved.ports[1])
        logger.info("emulator state loaded from %s: %d tasks", state.path, len(saved.tasks))

    def _save(self) -> None:
        """Write the state file while this emulator owns it (a failure is
        logged: the emulator keeps serving)."""
        if self._state is None:
            return
        with self._save_lock:  # one writer at a time, so a later save never loses to an earlier one
            if not self._state.locked or self._service_id is None:
                return
            state = SavedState(self._service_id, self.api_key, self._ports,
                               self._service.copy_tasks(), time_scale=self.time_scale)
            try:
                self._state.save(state, self._to_wall())
            except OSError as exc:
                logger.warning("could not save the emulator state to %s: %s", self._state.path, exc)

    def _to_wall(self) -> float:
        """Wall-clock time minus emulator time, now."""
        return time.time() - self._service.now()

    def _close_servers(self) -> None:
        servers = [s for s in (self._api, self._cdn) if s is not None]
        for server in servers:
            server.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        for server in servers:
            server.close()
        self._api = self._cdn = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._api is not None else "stopped"
        return f"Emulator({where}, time_scale={self.time_scale})"

    # -- addresses and scaled rules ------------------------------------------

    def _origin(self, which: int) -> str:
        # The ports are kept while paused (resume() reuses them), so a
        # request finishing during pause() still builds its links.
        port = self._ports[which]
        if not self._live:
            raise RuntimeError("the emulator is not running: call start() first")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/kyyReactApiServer``."""
        return self._origin(0) + API_PREFIX

    @property
    def media_url(self) -> str:
        """The media host's origin, e.g. ``http://127.0.0.1:OTHERPORT``."""
        return self._origin(1)

    @property
    def service_id(self) -> str | None:
        """Which service this is: None without ``state_path``; with it,
        ``"emulator:<hex>"``, made once and kept in the state file (the same
        after a restart), known from the first :meth:`start`."""
        return self._service_id

    @property
    def min_poll_interval_s(self) -> float:
        """The scaled 30 s rule: a task polled sooner gets a 429."""
        return self._service.min_poll_interval_s

    @property
    def url_lifetime_s(self) -> float:
        """How long (scaled) a video link works after its task completed."""
        return self._service.url_lifetime_s

    def client(self, **kwargs: Any) -> VeoClient:
        """A :class:`veo_nb.client.VeoClient` for this emulator (key, base URL,
        ``time_scale``, ``demo=True`` and, with a state file, the stable
        ``service`` filled in; ``kwargs`` override)."""
        from ..client import VeoClient

        options: dict[str, Any] = {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "time_scale": self.time_scale,
            "demo": True,
        }
        if self.service_id is not None:  # the same service across restarts and ports
            options["service"] = self.service_id
        options.update(kwargs)
        return VeoClient(**options)

    # -- test helpers ----------------------------------------------------------

    @property
    def stats(self) -> EmulatorStats:
        """A consistent snapshot of the counters (see :class:`EmulatorStats`)."""
        return self._service.stats(self._faults.counts)

    def task_ids(self) -> list[str]:
        """Ids of every task created so far, oldest first."""
        return self._service.task_ids()

    def peek(self, task_id: str) -> dict[str, Any]:
        """The result body ``task_id`` would get now, without counting as a poll.

        Raises :class:`KeyError` for an unknown id.
        """
        return self._service.peek(task_id)

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward by ``seconds`` (already scaled):
        tasks progress and links expire as if that much time had passed."""
        self._service.advance(seconds)

    def hide(self, task_id: str, hidden: bool = True) -> None:
        """Answer 404 for ``task_id`` (as a gateway that lost track of a task
        it knew), or, with ``hidden=False``, know it again."""
        self._service.hide(task_id, hidden)
