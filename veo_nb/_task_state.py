"""What the engine keeps about each task (:class:`TaskState`), how it polls
(:class:`Settings`), one store-first write (:class:`Write`), and the request
rate bucket."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import Event, TaskRecord, to_unix

if TYPE_CHECKING:  # pragma: no cover
    from .client import VeoClient

#: The least time a claim outlives its holder's next due time (seconds).
CLAIM_GRACE_S = 10.0
#: ``status_text`` of a tracked id before its first poll.
NOT_POLLED = "not polled yet"
_GAVE_UP = "gave up polling"


class TokenBucket:
    """At most ``rate`` requests per second across threads (bursts up to ``rate``)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


@dataclass
class Settings:
    """How the engine polls and downloads: set by the newest tracker on the store."""

    client: VeoClient
    poll_interval: float
    expected: tuple[float, float] | None
    give_up_after: float
    download: bool
    max_video_bytes: int | None
    media_dir: Path
    bucket: TokenBucket | None
    owner: str | None
    url_lifetime: float

    @property
    def grace(self) -> float:
        """How long past its due time a claim outlives a silent poller: one
        interval, but at least :data:`CLAIM_GRACE_S`, so that a busy machine's
        poller, late by a second, is not raced by every other process. (A
        poller found dead on this machine loses its claims at once.)"""
        return max(self.poll_interval, CLAIM_GRACE_S)

    @property
    def claim_s(self) -> float:
        """How long a claim taken just before a poll lasts (the request's
        timeout plus the grace)."""
        return self.client.timeout + self.grace


@dataclass
class Write:
    """One write for :meth:`Engine.commit`: ``fields`` of ``record`` (None:
    all), ``events`` and the claim columns in ``claim``; ``on_saved(state)``
    runs (lock held) once the store has it, then callbacks hear of it when
    ``notify``. Kept and retried when it fails."""

    record: TaskRecord
    events: list[Event]
    fields: tuple[str, ...] | None
    claim: dict[str, Any]
    on_saved: Callable[[TaskState], None] | None = None
    notify: bool = True
    attempts: int = 0
    reopen: bool = False  # may turn a finished task back into a running one
    replaces: str | None = None  # the "may have been billed" entry erased with it


@dataclass
class TaskState:
    """What the engine keeps in memory about one task besides its record."""

    record: TaskRecord
    rev: int
    t0: float  # unix time of age 0 (creation)
    last_age: float | None  # age of the last contact; None = poll at once
    contact_at: float | None = None  # unix time of the last contact any process recorded
    poller: str | None = None
    poll_until: float | None = None
    downloader: str | None = None
    download_until: float | None = None
    due: float | None = None  # unix time of the next poll (or claim check); None = not polling
    errors: int = 0  # consecutive failed polls
    polling: bool = False
    deadline: float = math.inf  # age after which polling gives up
    dl_due: float | None = None  # unix time of the next download attempt
    dl_attempts: int = 0
    downloading: bool = False
    pending: Write | None = None
    pending_due: float | None = None
    flushing: bool = False
    not_found_since: float | None = None  # unix time of the first 404 of a task the service knew
    linkless: int = 0  # answers in a row that said "completed" without a video link


def given_up(record: TaskRecord) -> bool:
    """Whether polling gave up on this (unfinished) task."""
    return not record.is_terminal and (record.error or "").startswith(_GAVE_UP)


def age_zero(record: TaskRecord) -> float:
    """Unix time of a task's age 0. The service's ``created`` is whole seconds,
    so when we saw the task within a second of it (we created it), our own
    clock is the precise one."""
    created, seen = to_unix(record.created_at), to_unix(record.first_seen_at)
    if seen is None:
        return created if created is not None else time.time()
    if created is None or seen - created < 1.0:
        return seen
    return created
