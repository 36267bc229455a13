"""What the emulator counts: :class:`EmulatorStats` (the snapshot
:attr:`Emulator.stats` returns), :class:`MediaRequest` (one entry of the
media host's log) and :class:`Counters` (the running counts behind them)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Media requests kept in :attr:`EmulatorStats.media_log`.
MEDIA_LOG_SIZE = 10_000


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
    ``rejected_creates`` (400s, and empty-balance refusals), ``auth_failures``
    (401/403), ``polls`` and
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


class Counters:
    """The running counts behind :class:`EmulatorStats`. Not locked: the
    service changes and reads them under the lock that guards its tasks, so
    a snapshot agrees with the tasks it counts."""

    def __init__(self) -> None:
        #: Totals by :class:`EmulatorStats` field name (``"creates"``, …).
        self.totals: Counter[str] = Counter()
        self.polls_by_task: Counter[str] = Counter()
        self.violations_by_task: Counter[str] = Counter()
        self.media_log: deque[MediaRequest] = deque(maxlen=MEDIA_LOG_SIZE)

    def record_media(self, request: MediaRequest) -> None:
        """Count one media request and log it."""
        self.totals["media_requests"] += 1
        self.totals["media_auth_headers"] += request.authorization
        self.media_log.append(request)

    def snapshot(
        self, status_counts: Mapping[str, int], faults: Mapping[str, int]
    ) -> EmulatorStats:
        """The counts now, with the tasks per status and the faults injected."""
        return EmulatorStats(
            **{name: self.totals[name] for name in _COUNTERS},
            polls_by_task=MappingProxyType(dict(self.polls_by_task)),
            violations_by_task=MappingProxyType(dict(self.violations_by_task)),
            status_counts=MappingProxyType(dict(status_counts)),
            media_log=tuple(self.media_log),
            faults=MappingProxyType(dict(faults)),
        )
