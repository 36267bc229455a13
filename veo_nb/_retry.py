"""When :class:`~veo_nb.VeoClient` tries again, and how long it waits first.

Exponential backoff with jitter, ``Retry-After`` (delta seconds or an HTTP
date), the 429 gate that every thread of one client shares, sleeps that
:meth:`~veo_nb.VeoClient.close` interrupts, and the test that tells a
failure which provably never left (safe to retry even a create) from one
the service may have seen.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from ._log import logger
from .errors import APIConnectionError, RateLimitError

#: A ``Retry-After`` (or shared 429 wait) longer than this is not slept
#: through: :class:`RateLimitError` is raised at once, carrying ``retry_after``.
MAX_RETRY_AFTER_WAIT_S = 60.0

#: The longest wait a ``Retry-After`` may ask for (15 minutes at ``time_scale``
#: 1): a longer one (an HTTP date years ahead, ``10**9`` seconds) is cut to
#: this, and so is every gate shared through a store, so that one answer never
#: stops polling for good (see :func:`gate_cap_s`).
MAX_RETRY_AFTER_S = 15 * 60.0

#: Transport failures of one attempt: retryable by the rules of the caller.
READ_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_BACKOFF_FLOOR_S = 0.05


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds (``"3"``,
    ``"0.5"``) or an HTTP date. ``None`` when absent or unreadable; never
    negative, never more than :data:`MAX_RETRY_AFTER_S`."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def gate_cap_s(time_scale: float) -> float:
    """The longest 429 gate for a client on ``time_scale`` (its clock, as the
    emulator's): :data:`MAX_RETRY_AFTER_S` scaled."""
    return MAX_RETRY_AFTER_S * time_scale


def never_sent(exc: BaseException) -> bool:
    """True when ``exc`` proves the request never left: connect timeout,
    refused connection or DNS failure (safe to retry even a create)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError):
            return True
        if isinstance(item, BaseException):
            stack.extend(item.args)
            stack.extend((item.__cause__, item.__context__, getattr(item, "reason", None)))
    return False


class RetryClock:
    """One client's waits between attempts: backoff scaled by ``time_scale``,
    the shared 429 gate, and ``min_interval_s`` (the poll interval) before
    retrying a read the service may have handled. :meth:`close` ends every
    wait at once (it then raises :class:`~veo_nb.APIConnectionError`)."""

    def __init__(self, *, time_scale: float, min_interval_s: float) -> None:
        self._time_scale = time_scale
        self._min_interval_s = min_interval_s
        self._gate_lock = threading.Lock()
        self._rate_limited_until = 0.0
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Interrupt every pending and future wait."""
        self._closed.set()

    @property
    def rate_limited_until(self) -> float:
        """A :func:`time.monotonic` value before which no API request is sent."""
        with self._gate_lock:
            return self._rate_limited_until

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt + 1``: exponential, capped, jittered."""
        delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) * self._time_scale
        return float(max(_BACKOFF_FLOOR_S, delay * random.uniform(0.5, 1.0)))

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise as soon as the client is closed."""
        if self._closed.wait(max(0.0, seconds)):
            raise APIConnectionError("the client was closed")

    def retry_wait(self, attempt: int, retries: int, *, reached: bool,
                   idempotent: bool) -> float | None:
        """Seconds before retrying a failed attempt, or None to give up."""
        if attempt >= retries:
            return None
        if not reached:
            return self.backoff(attempt)
        if not idempotent:
            return None
        return max(self.backoff(attempt), self._min_interval_s)

    def note_rate_limit(self, retry_after: float) -> None:
        """Close the gate for ``retry_after`` seconds (a 429's ``Retry-After``),
        at most :func:`gate_cap_s`."""
        wait = min(retry_after, gate_cap_s(self._time_scale))
        with self._gate_lock:
            self._rate_limited_until = max(self._rate_limited_until, time.monotonic() + wait)

    def wait_for_gate(self, patient: bool = True) -> None:
        """Block until the shared 429 wait is over (or, when it is too long or
        not ``patient``, raise without sending anything)."""
        while True:
            remaining = self.rate_limited_until - time.monotonic()
            if remaining <= 0:
                return
            if remaining > MAX_RETRY_AFTER_WAIT_S or not patient:
                raise RateLimitError(
                    f"rate limited by the service for another {remaining:.1f} s; "
                    "try again later",
                    retry_after=remaining, reached=False,
                )
            logger.debug("waiting %.2f s for the service's rate limit", remaining)
            self.sleep(remaining)
