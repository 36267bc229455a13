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
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import random
import re
import secrets
import selectors
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._spec import (
    BASE_URL,
    CREATE_PATH,
    MIN_POLL_INTERVAL_S,
    MODELS,
    RESULT_PATH,
    URL_LIFETIME_S,
    build_create_payload,
)
from ..errors import ValidationError
from ._dialects import REFUSED_REASON, Dialects, gateway_401
from ._faults import FaultConfig, Faults
from ._media import MediaLibrary, parse_range
from ._state import SavedState, StateFile
from ._tasks import TaskState, plan_task

if TYPE_CHECKING:  # pragma: no cover
    from ..client import VeoClient

logger = logging.getLogger("veo_nb.emulator")

#: The real service's path prefix, kept so URLs differ only by scheme and host.
API_PREFIX = urlsplit(BASE_URL).path.rstrip("/")
_RESULT_PREFIX = RESULT_PATH.split("{", 1)[0]
#: A poll this much earlier than the minimum interval is still accepted (clock jitter).
POLL_TOLERANCE = 0.02
#: Largest create body accepted (bytes).
MAX_BODY_BYTES = 1 << 20
#: Media requests kept in :attr:`EmulatorStats.media_log`.
MEDIA_LOG_SIZE = 10_000
_MEDIA_PATH = re.compile(r"^/v/([^/]+)/([^/]+)\.mp4$")


@dataclass(frozen=True)
class MediaRequest:
    """One request the media host received."""

    method: str
    path: str
    status: int
    authorization: bool
    range: str | None


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of the emulator's counters (see :attr:`Emulator.stats`).

    API side: ``requests_total`` (every API request), ``creates`` (accepted),
    ``rejected_creates`` (400s), ``auth_failures`` (401/403), ``polls`` and
    ``polls_by_task`` (result requests for known ids, 429s included),
    ``interval_violations`` and ``violations_by_task`` (polls answered 429
    because they came sooner than ``min_poll_interval_s``),
    ``polls_after_terminal`` (polls of a task already reported completed or
    failed), ``not_found`` (404s), ``status_counts`` (tasks per status now).
    Media side: ``media_requests``, ``media_auth_headers`` (how many of them
    carried an ``Authorization`` header) and ``media_log`` (the last
    requests, oldest first) are recorded before the answer is sent;
    ``media_bytes_sent`` once a body has been sent.
    ``faults``: faults injected, by kind (see :mod:`veo_nb.emulator._faults`).
    """

    requests_total: int = 0
    creates: int = 0
    rejected_creates: int = 0
    auth_failures: int = 0
    polls: int = 0
    polls_by_task: Mapping[str, int] = field(default_factory=dict)
    interval_violations: int = 0
    violations_by_task: Mapping[str, int] = field(default_factory=dict)
    polls_after_terminal: int = 0
    not_found: int = 0
    status_counts: Mapping[str, int] = field(default_factory=dict)
    media_requests: int = 0
    media_auth_headers: int = 0
    media_bytes_sent: int = 0
    media_log: tuple[MediaRequest, ...] = ()
    faults: Mapping[str, int] = field(default_factory=dict)


_COUNTERS = (
    "requests_total", "creates", "rejected_creates", "auth_failures", "polls",
    "interval_violations", "polls_after_terminal", "not_found",
    "media_requests", "media_auth_headers", "media_bytes_sent",
)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, kind: str, message: str, *headers: tuple[str, str]) -> _Reply:
    return _Reply(status, {"error": {"message": message, "type": kind}}, headers)


def _retry_after(wait: float) -> str:
    """``Retry-After`` for a wait in seconds: whole seconds, or a decimal below 1 s."""
    if wait >= 1:
        return str(math.ceil(wait))
    return f"{max(math.ceil(wait * 100), 1) / 100:.2f}"


def _payload_from_request(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a decoded create body with the client's rules (plus the
    service's own: ``model`` is required, ``image_urls`` aliases ``input_reference``)."""
    if data.get("model") is None:
        raise ValidationError(f"model is required: use one of {', '.join(MODELS)}")
    refs, alias = data.get("input_reference"), data.get("image_urls")
    if refs is not None and alias is not None:
        raise ValidationError("pass input_reference or its alias image_urls, not both")
    refs = refs if refs is not None else alias
    if refs is not None and not isinstance(refs, (str, list)):
        raise ValidationError(
            f"input_reference must be a list of image URLs, not {type(refs).__name__}"
        )
    options = {k: data[k] for k in ("resolution", "aspect_ratio") if data.get(k) is not None}
    return build_create_payload(
        data.get("prompt"),
        model=data["model"],
        reference_images=refs,
        first_image=data.get("first_image"),
        last_image=data.get("last_image"),
        **options,
    )


class _Server(ThreadingHTTPServer):
    """A threading server that knows its emulator, sleeps until a connection
    arrives (no polling) and stops at once, dropping open keep-alive connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emulator: Emulator
    ) -> None:
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (slow on some machines).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def serve(self) -> None:
        """Accept connections until :meth:`stop` (a handler thread serves each)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stopping.is_set():
                        self._handle_request_noblock()  # type: ignore[attr-defined]  # BaseServer's accept-and-handle step, absent from typeshed

    def stop(self) -> None:
        """Make :meth:`serve` return, then close every connection and the socket."""
        self._stopping.set()
        self._wake_w.send(b"x")

    def close(self) -> None:
        """Close open connections and the listening socket (after :meth:`serve` returned)."""
        self._close_open_connections()
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (or a reset a fault injected) is normal: log
        it at debug level; report anything else as the stdlib does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("connection from %s ended abruptly", client_address, exc_info=True)
        else:
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def _close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "veo-nb-emulator"
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class _ApiHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def _serve(self) -> None:
        emulator = self.server.emulator
        arrived = emulator._now()
        body = self._read_body()
        if not isinstance(body, _Reply) and emulator._faults.intercept_api(self):
            return
        delay = emulator.latency_s + emulator._faults.api_delay()
        if isinstance(body, _Reply):  # the body could not be read: the connection ends
            reply = body
        else:
            reply = emulator._handle_api(
                self.command, self.path, self.headers.get("Authorization"), body, arrived
            )
            held = emulator._faults.after_service(self)
            if held is None:  # the answer is lost
                return
            delay += held
        if delay:
            time.sleep(delay)
        data = json.dumps(reply.body, separators=(",", ":")).encode()
        self._send(reply.status, data, "application/json; charset=utf-8", reply.headers)

    def _read_body(self) -> bytes | _Reply:
        close = ("Connection", "close")
        encoding = self.headers.get("Transfer-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return _error(411, "invalid_request", "send the body with a Content-Length", close)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return _error(400, "invalid_request", "invalid Content-Length header", close)
        if length > MAX_BODY_BYTES:
            return _error(
                413, "invalid_request", f"body larger than {MAX_BODY_BYTES} bytes", close
            )
        return self.rfile.read(length) if length else b""


class _MediaHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def _serve(self) -> None:
        emulator = self.server.emulator
        path = urlsplit(self.path).path
        found = emulator._media_file(path, emulator._now())

        def record(status: int) -> None:
            # Before answering, so a client that got its answer sees it counted.
            emulator._record_media(MediaRequest(
                method=self.command,
                path=path,
                status=status,
                authorization="Authorization" in self.headers,
                range=self.headers.get("Range"),
            ))

        if emulator._faults.intercept_media(self, record):
            return
        if found == 403:
            record(403)
            self._send_error_xml(403, "AccessDenied", "Request has expired")
            return
        if isinstance(found, int):
            record(404)
            self._send_error_xml(404, "NoSuchKey", "The specified key does not exist.")
            return
        size = found.stat().st_size
        wanted = parse_range(self.headers.get("Range"), size)
        if isinstance(wanted, str):  # "unsatisfiable"
            record(416)
            self._send(416, b"", "video/mp4", (("Content-Range", f"bytes */{size}"),))
            return
        status = 200 if wanted is None else 206
        first, last = (0, size - 1) if wanted is None else wanted
        record(status)
        emulator._count_media_bytes(self._stream(found, status, first, last, size))

    def _stream(self, file: Path, status: int, first: int, last: int, size: int) -> int:
        """Send ``file[first:last + 1]``; returns the body bytes sent."""
        count = last - first + 1
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(count))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if self.command == "HEAD" or count == 0:
            return 0
        try:
            with file.open("rb") as source:
                return self.server.emulator._faults.send_body(self, source, first, count)
        except OSError as exc:  # the client went away mid-body
            logger.debug("media body interrupted: %s", exc)
            self.close_connection = True
            return 0

    def _send_error_xml(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
        ).encode()
        self._send(status, body, "application/xml")


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
        self.api_key = api_key or "emu-" + secrets.token_urlsafe(18)
        self.host = host
        self.port = port
        self.latency_s = float(latency_s)
        self.queue_s = (float(queue_s[0]), float(queue_s[1]))
        self._rng = random.Random(seed)
        self._media = MediaLibrary(video_size)
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._counts: Counter[str] = Counter()
        self._polls_by_task: Counter[str] = Counter()
        self._violations_by_task: Counter[str] = Counter()
        self._media_log: deque[MediaRequest] = deque(maxlen=MEDIA_LOG_SIZE)
        self._clock_offset = 0.0
        self._faults = Faults(faults)
        self.dialects = Dialects(dialects)
        self._hidden: set[str] = set()
        self._ports = (port, 0)
        self._live = False
        self._state = StateFile(state_path) if state_path is not None else None
        self._save_lock = threading.Lock()
        self._service_id: str | None = None
        self._api: _Server | None = None
        self._cdn: _Server | None = None
        self._threads: list[threading.Thread] = []

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
            self._api = self._bind(self._ports[0], _ApiHandler, state is not None and not self.port)
            self._cdn = self._bind(self._ports[1], _MediaHandler, state is not None)
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

    def storm(self, seconds: float) -> None:
        """A rate-limit storm: every API request gets 429 with ``Retry-After``
        for ``seconds`` (counted in ``stats.faults``, not as interval violations)."""
        self._faults.storm(seconds)

    def _bind(self, port: int, handler: type[_Handler], fallback: bool) -> _Server:
        """A server on ``port``; on a free port instead if it is taken and ``fallback``."""
        try:
            return _Server((self.host, port), handler, self)
        except OSError:
            if not (fallback and port):
                raise
            logger.info("port %d is taken: the emulator listens on another one", port)
            return _Server((self.host, 0), handler, self)

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
        with self._lock:
            self._tasks = {task.plan.task_id: task for task in saved.tasks}
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
            with self._lock:
                tasks = [replace(task) for task in self._tasks.values()]
            state = SavedState(self._service_id, self.api_key, self._ports, tasks,
                               time_scale=self.time_scale)
            try:
                self._state.save(state, self._to_wall())
            except OSError as exc:
                logger.warning("could not save the emulator state to %s: %s", self._state.path, exc)

    def _to_wall(self) -> float:
        """Wall-clock time minus emulator time, now."""
        return time.time() - self._now()

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
        return MIN_POLL_INTERVAL_S * self.time_scale

    @property
    def url_lifetime_s(self) -> float:
        """How long (scaled) a video link works after its task completed."""
        return URL_LIFETIME_S * self.time_scale

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
        now = self._now()
        with self._lock:
            statuses = Counter(t.plan.status_at(now) for t in self._tasks.values())
            return EmulatorStats(
                **{name: self._counts[name] for name in _COUNTERS},
                polls_by_task=MappingProxyType(dict(self._polls_by_task)),
                violations_by_task=MappingProxyType(dict(self._violations_by_task)),
                status_counts=MappingProxyType(dict(statuses)),
                media_log=tuple(self._media_log),
                faults=MappingProxyType(self._faults.counts),
            )

    def task_ids(self) -> list[str]:
        """Ids of every task created so far, oldest first."""
        with self._lock:
            return list(self._tasks)

    def peek(self, task_id: str) -> dict[str, Any]:
        """The result body ``task_id`` would get now, without counting as a poll.

        Raises :class:`KeyError` for an unknown id.
        """
        now = self._now()
        with self._lock:
            task = self._tasks[task_id]
            return task.plan.body(now, self._video_url(task))

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward by ``seconds`` (already scaled):
        tasks progress and links expire as if that much time had passed."""
        if seconds < 0:
            raise ValidationError("the clock only moves forward")
        with self._lock:
            self._clock_offset += seconds

    def hide(self, task_id: str, hidden: bool = True) -> None:
        """Answer 404 for ``task_id`` (as a gateway that lost track of a task
        it knew), or, with ``hidden=False``, know it again."""
        with self._lock:
            if task_id not in self._tasks:
                raise KeyError(task_id)
            (self._hidden.add if hidden else self._hidden.discard)(task_id)

    # -- request handling (called from the handler threads) ------------------

    def _now(self) -> float:
        return time.monotonic() + self._clock_offset

    def _video_url(self, task: TaskState) -> str:
        return f"{self.media_url}/v/{task.plan.task_id}/{task.token}.mp4"

    def _handle_api(
        self, method: str, target: str, authorization: str | None, body: bytes, now: float
    ) -> _Reply:
        """Route one API request; every answer of the API goes through here."""
        with self._lock:
            self._counts["requests_total"] += 1
        path = urlsplit(target).path
        if not path.startswith(API_PREFIX + "/"):
            return self._not_found(f"no such endpoint: {path}")
        denied = self._check_auth(authorization)
        if denied is not None:
            return denied
        route = path[len(API_PREFIX):]
        if route == CREATE_PATH:
            if method != "POST":
                return _error(405, "invalid_request", f"use POST for {CREATE_PATH}")
            return self._create(body)
        if route.startswith(_RESULT_PREFIX):
            if method != "GET":
                return _error(405, "invalid_request", f"use GET for {RESULT_PATH}")
            return self._poll(unquote(route[len(_RESULT_PREFIX):]), now)
        return self._not_found(f"no such endpoint: {path}")

    def _not_found(self, message: str) -> _Reply:
        with self._lock:
            self._counts["not_found"] += 1
        return _error(404, "not_found", message)

    def _check_auth(self, authorization: str | None) -> _Reply | None:
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            if hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return None
            if "business_errors" in self.dialects:  # the gateway's 'login failed' at HTTP 200
                reply = _Reply(200, {"code": "204", "msg": "登录验证失败"})
            else:
                reply = _Reply(401, gateway_401("invalid API key"))
        else:
            reply = _Reply(401, gateway_401(
                "missing API key: send the header 'Authorization: Bearer <API key>'"),
                (("WWW-Authenticate", "Bearer"),))
        with self._lock:
            self._counts["auth_failures"] += 1
        return reply

    def _create(self, body: bytes) -> _Reply:
        try:
            data = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            return self._reject(f"the body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return self._reject(f"the body must be a JSON object, not {type(data).__name__}")
        try:
            payload = _payload_from_request(data)
        except ValidationError as exc:
            return self._reject(str(exc))
        created = int(time.time())
        with self._lock:
            task_id = f"vgen_{self._rng.getrandbits(48):012x}"
            while task_id in self._tasks:
                task_id = f"vgen_{self._rng.getrandbits(48):012x}"
            plan = plan_task(
                self._rng,
                task_id=task_id,
                created=created,
                payload=payload,
                now=self._now(),
                time_scale=self.time_scale,
                failure_rate=self.failure_rate,
                queue_s=self.queue_s,
            )
            refused = self.dialects.refused_at_create(plan.prompt)
            if refused:  # answered "failed" at once, with its reason
                now = self._now()
                plan = replace(plan, processing_at=now, end=now, error=REFUSED_REASON,
                               has_video=False)
            self._tasks[task_id] = TaskState(plan, secrets.token_urlsafe(16))
            self._counts["creates"] += 1
        self._save()  # before answering: a task the client heard of survives a crash
        logger.debug("created %s (%s, ends in %.2f s)", task_id, plan.mode, plan.end - plan.started_at)
        answer: dict[str, Any] = {
            "id": task_id, "object": "video", "created": created,
            "model": plan.model, "status": "failed" if refused else "queued",
        }
        if refused:
            answer["error"] = REFUSED_REASON
        return _Reply(202 if "created_202" in self.dialects else 200,
                      self.dialects.result(answer, None))

    def _reject(self, message: str) -> _Reply:
        with self._lock:
            self._counts["rejected_creates"] += 1
        return _error(400, "invalid_request", message)

    def _poll(self, task_id: str, now: float) -> _Reply:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task_id in self._hidden:
                self._counts["not_found"] += 1
                return _error(404, "not_found", f"task not found: {task_id}")
            self._counts["polls"] += 1
            self._polls_by_task[task_id] += 1
            interval = self.min_poll_interval_s
            if task.last_poll is not None:
                wait = task.last_poll + interval - now
                if wait > interval * POLL_TOLERANCE:
                    self._counts["interval_violations"] += 1
                    self._violations_by_task[task_id] += 1
                    return _error(
                        429, "rate_limit_exceeded",
                        f"too many requests: poll a task at most once every {interval:g} s",
                        ("Retry-After", _retry_after(wait)),
                    )
            if task.reported_terminal:
                self._counts["polls_after_terminal"] += 1
            task.last_poll = now
            transient = self.dialects.transient(self._polls_by_task[task_id])
            if transient == 401:
                return _Reply(401, gateway_401("token verification failed, please retry"))
            if transient == 404:
                return _error(404, "not_found", f"task not found: {task_id}")
            body = task.plan.body(now, self._video_url(task))
            task.reported_terminal = body["status"] in ("completed", "failed")
            plan = task.plan
            span = plan.end - plan.processing_at
            progress = 100 * (now - plan.processing_at) / span if span > 0 else None
            return _Reply(200, self.dialects.result(body, progress))

    def _media_file(self, path: str, now: float) -> Path | int:
        """The file behind a media path, or the HTTP status to answer instead."""
        match = _MEDIA_PATH.match(path)
        if match is None:
            return 404
        task_id, token = unquote(match.group(1)), unquote(match.group(2))
        with self._lock:
            task = self._tasks.get(task_id)
            if (
                task is None
                or not hmac.compare_digest(token.encode(), task.token.encode())
                or task.plan.status_at(now) != "completed"
                or not task.plan.has_video
            ):
                return 404
            if now >= task.plan.end + self.url_lifetime_s:
                return 403
            plan = task.plan
        return self._media.path_for(plan.prompt, plan.aspect_ratio, plan.resolution)

    def _record_media(self, request: MediaRequest) -> None:
        with self._lock:
            self._counts["media_requests"] += 1
            self._counts["media_auth_headers"] += request.authorization
            self._media_log.append(request)

    def _count_media_bytes(self, sent: int) -> None:
        with self._lock:
            self._counts["media_bytes_sent"] += sent
