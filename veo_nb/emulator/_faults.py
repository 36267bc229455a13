"""Fault injection for the emulator: what a flaky network, a proxy and an
overloaded service do to a client.

Pass ``Emulator(faults=FaultConfig(...))``. Every fault is decided with one
seeded :class:`random.Random` and counted (``Emulator.stats.faults``).

Most faults happen *in front of* the service, like a failing proxy or load
balancer: the request never reaches the task logic, so it is not counted as
a poll and cannot change a task. Two happen *behind* it, after the service
handled an API request (a create really created its task, a poll was
counted and its time recorded for the polling rule), to the answer on its
way back: it is lost, or it comes late. Either way a task's true life
(``Emulator.peek``) is the same with or without faults, and tests can
compare against it; answers lost or late let the reliability suite catch
clients that retry too fast (the retry is a poll too soon, answered 429 and
counted as an interval violation) or create a task twice.

Kinds (the keys of ``stats.faults``):

* ``error``: a 5xx answer (a JSON 500, or a proxy's HTML 502/503/504 page).
* ``reset``: the connection is reset (TCP RST) without any answer;
  ``reset_mid_response``: reset after part of the status line and headers.
* ``truncate``: a media body stops before its ``Content-Length``, then the
  connection closes.
* ``drip``: a media body is dribbled out slowly (over ``drip_s`` seconds).
* ``latency``: an API answer delayed by ``latency_s`` plus up to ``jitter_s``.
* ``lost_answer`` (behind the service): the API request was handled, then
  the connection is reset instead of sending the answer.
* ``slow_answer`` (behind the service): the API request was handled when it
  arrived, and its answer is sent ``slow_answer_s`` seconds later, so a
  client with a shorter timeout gives up on a request that took effect.
* ``storm_429``: a 429 with ``Retry-After`` during a rate-limit storm
  (:meth:`Emulator.storm`); ``storms`` counts the storms.
* ``down``: a down window (:meth:`Emulator.pause`; connections are refused
  until :meth:`Emulator.resume`).
"""

from __future__ import annotations

import json
import math
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, BinaryIO, Callable

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from ._http import Handler

#: Proxy error pages, as nginx would send them (status, reason).
_PROXY_PAGES = ((502, "Bad Gateway"), (503, "Service Temporarily Unavailable"),
                (504, "Gateway Time-out"))
_DRIP_STEPS = 20


@dataclass(frozen=True)
class FaultConfig:
    """What goes wrong, and how often (rates are shares of requests, 0–1).

    ``error_rate`` and ``reset_rate`` apply to API and media requests;
    ``truncate_rate`` and ``drip_rate`` to media bodies; ``latency_s`` and
    ``jitter_s`` (seconds) to API answers. ``lost_answer_rate`` and
    ``slow_answer_rate`` apply to API requests the service handled: their
    answer is lost (connection reset) or held for ``slow_answer_s`` seconds
    (the default outlasts :class:`veo_nb.VeoClient`'s 30 s timeout).
    ``seed`` makes the faults reproducible (None = random).
    """

    seed: int | None = None
    error_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    drip_rate: float = 0.0
    drip_s: float = 0.5
    latency_s: float = 0.0
    jitter_s: float = 0.0
    lost_answer_rate: float = 0.0
    slow_answer_rate: float = 0.0
    slow_answer_s: float = 35.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValidationError(f"{f.name} must be a number >= 0, got {value!r}")
            if f.name.endswith("_rate") and value > 1:
                raise ValidationError(f"{f.name} must be between 0 and 1, got {value!r}")


def _reset(handler: Handler) -> None:
    """Close the handler's connection with a TCP RST (no orderly FIN)."""
    handler.close_connection = True
    sock = handler.connection
    try:
        handler.wfile.flush()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class Faults:
    """Decides, injects and counts faults; shared by the emulator's handler threads."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._storm_until = 0.0
        self._storm_header: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Faults injected so far, by kind."""
        with self._lock:
            return dict(self._counts)

    def count(self, kind: str) -> None:
        """Count one fault of ``kind`` (also used by the emulator's down windows)."""
        with self._lock:
            self._counts[kind] += 1

    def storm(self, seconds: float, *, retry_after: str | None = None) -> None:
        """Answer every API request with 429 + ``Retry-After`` for ``seconds``
        (the header is ``retry_after`` when given, else the seconds left)."""
        if not seconds > 0:
            raise ValidationError(f"a storm lasts a positive number of seconds, got {seconds!r}")
        with self._lock:
            self._storm_until = max(self._storm_until, time.monotonic() + seconds)
            self._storm_header = retry_after
            self._counts["storms"] += 1

    def _draw(self, *rates: float) -> int | None:
        """Index of the rate that fires for one request (one draw), or None."""
        with self._lock:
            roll = self._rng.random()
        for index, rate in enumerate(rates):
            if roll < rate:
                return index
            roll -= rate
        return None

    def _choice(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)

    def intercept_api(self, handler: Handler) -> bool:
        """Inject a storm 429, a 5xx or a reset instead of answering; True if done."""
        with self._lock:
            storm_left, header = self._storm_until - time.monotonic(), self._storm_header
        if storm_left > 0:
            self.count("storm_429")
            _send_json(handler, 429, "rate_limit_exceeded",
                       "too many requests: the service is overloaded, retry later",
                       ("Retry-After", header or str(math.ceil(storm_left))))
            return True
        return self._intercept(handler, api=True)

    def intercept_media(self, handler: Handler,
                        record: Callable[[int], None]) -> bool:
        """Like :meth:`intercept_api` for the media host (no storms);
        ``record(status)`` logs the request (0 for a reset)."""
        return self._intercept(handler, api=False, record=record)

    def _intercept(self, handler: Handler, *, api: bool,
                   record: Callable[[int], None] | None = None) -> bool:
        fault = self._draw(self.config.error_rate, self.config.reset_rate)
        if fault is None:
            return False
        if fault == 0:
            self.count("error")
            kind = self._choice(len(_PROXY_PAGES) + 1)
            status = 500 if kind == len(_PROXY_PAGES) else _PROXY_PAGES[kind][0]
            if record is not None:
                record(status)
            if kind == len(_PROXY_PAGES):
                _send_json(handler, 500, "server_error", "internal server error, please retry")
            else:
                reason = _PROXY_PAGES[kind][1]
                page = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                        "</body>\r\n</html>\r\n").encode()
                handler._send(status, page, "text/html")
            return True
        if record is not None:
            record(0)
        if api and self._choice(2):
            self.count("reset_mid_response")
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/js")
        else:
            self.count("reset")
        _reset(handler)
        return True

    def api_delay(self) -> float:
        """Seconds to delay one API answer (0.0 without latency faults)."""
        latency, jitter = self.config.latency_s, self.config.jitter_s
        if not latency and not jitter:
            return 0.0
        self.count("latency")
        with self._lock:
            return latency + self._rng.uniform(0.0, jitter)

    def after_service(self, handler: Handler) -> float | None:
        """Decide what happens to the answer of an API request the service
        handled: None when it is lost (the connection was reset), else the
        seconds to hold it (0.0 without these faults)."""
        lost, slow = self.config.lost_answer_rate, self.config.slow_answer_rate
        fault = self._draw(lost, slow) if lost or slow else None
        if fault == 0:
            self.count("lost_answer")
            _reset(handler)
            return None
        if fault == 1:
            self.count("slow_answer")
            return self.config.slow_answer_s
        return 0.0

    def send_body(self, handler: Handler, source: BinaryIO,
                  first: int, count: int) -> int:
        """Send ``count`` bytes of ``source`` from ``first``: whole, cut short
        (then the connection closes) or dribbled. Returns the bytes sent."""
        fault = self._draw(self.config.truncate_rate, self.config.drip_rate)
        sock = handler.connection
        if fault is None:
            return int(sock.sendfile(source, first, count))
        if fault == 0:
            self.count("truncate")
            with self._lock:
                cut = self._rng.randrange(count) if count > 1 else 0
            sent = sock.sendfile(source, first, cut) if cut else 0
            handler.close_connection = True
            return sent
        self.count("drip")
        source.seek(first)
        step = max(1, math.ceil(count / _DRIP_STEPS))
        sent = 0
        while sent < count:
            piece = source.read(min(step, count - sent))
            sock.sendall(piece)
            sent += len(piece)
            time.sleep(self.config.drip_s / _DRIP_STEPS)
        return sent


def _send_json(handler: Handler, status: int, kind: str, message: str,
               *headers: tuple[str, str]) -> None:
    body = json.dumps({"error": {"message": message, "type": kind}}).encode()
    handler._send(status, body, "application/json; charset=utf-8", headers)
