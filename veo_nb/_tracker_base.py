"""The state every :class:`~veo_nb.Tracker` is made of (its engine, client,
store, settings) and what reads it: one task's record, what is in flight,
when the next poll is due. :class:`TrackerBase` is the root of the tracker's
parts (:mod:`veo_nb._tracking`, :mod:`veo_nb._submitting`)."""

from __future__ import annotations

import getpass
import os
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _reuse, _schedule, _spending
from ._connect import truthy
from ._engine import (
    Engine,
    Settings,
    TokenBucket,
    attach,
)
from ._log import logger
from ._paths import DEFAULT_DATA_DIR, DEMO_DATA_DIR, remove_stale_partials
from ._spec import MIN_POLL_INTERVAL_S, URL_LIFETIME_S
from .errors import (
    ValidationError,
)
from .models import Task
from .records import Event, TaskRecord, from_unix
from .store import BaseStore, open_store, store_kind

if TYPE_CHECKING:  # pragma: no cover

    from .client import VeoClient

#: Environment variable naming who submits tasks (default: the JupyterHub
#: user, else the login name).
OWNER_ENV = "VEO_NB_OWNER"


def default_owner() -> str | None:
    """Who submits tasks from this process: ``VEO_NB_OWNER``, else the
    JupyterHub user (``JUPYTERHUB_USER``), else the login name."""
    for name in (OWNER_ENV, "JUPYTERHUB_USER"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return None


class TrackerBase:
    """A tracker's state and its reads (see :class:`~veo_nb.Tracker`)."""

    def __init__(
        self,
        client: VeoClient | None = None,
        *,
        store: BaseStore | str | Path | None = None,
        media_dir: str | Path | None = None,
        poll_interval: float | None = None,
        expected_duration: tuple[float, float] | None = None,
        max_workers: int = 32,
        max_requests_per_second: float | None = None,
        give_up_after: float | None = None,
        download: bool = True,
        max_video_bytes: int | None = None,
        start: bool = True,
        owner: str | None = None,
        reuse: bool | None = None,
        max_tasks_per_day: int | None = None,
        max_amount_per_day: float | None = None,
    ) -> None:
        if not isinstance(store, BaseStore):
            store_kind(store)  # a bad store URL is refused before anything starts
        #: The daily caps (new tasks, reported amount) of this store; None: none.
        self.caps: tuple[float | None, float | None] = (
            _spending.cap_from(max_tasks_per_day, _spending.MAX_TASKS_ENV, integer=True),
            _spending.cap_from(max_amount_per_day, _spending.MAX_AMOUNT_ENV, integer=False))
        if client is None:
            from ._connect import connect

            client = connect()
        scale = float(client.time_scale)
        if poll_interval is None:
            poll_interval = _schedule.default_poll_interval(scale)
        if not poll_interval > 0:
            raise ValidationError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if client.is_documented_service and poll_interval < MIN_POLL_INTERVAL_S:
            warnings.warn(
                f"poll_interval={poll_interval:g} s is below the service's 30 s minimum; "
                "using 30 s (faster polling gets rate-limited)",
                stacklevel=2,
            )
            poll_interval = MIN_POLL_INTERVAL_S
        if expected_duration is not None:
            low, high = (float(v) for v in expected_duration)
            if not 0 <= low <= high or high <= 0:
                raise ValidationError(
                    f"expected_duration must be (low, high) seconds with 0 <= low <= high, "
                    f"got {expected_duration!r}"
                )
            expected_duration = (low, high)
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValidationError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        if max_requests_per_second is not None and not max_requests_per_second > 0:
            raise ValidationError(
                f"max_requests_per_second must be positive or None, got {max_requests_per_second!r}"
            )
        data_dir = DEMO_DATA_DIR if client.demo else DEFAULT_DATA_DIR
        opened, own = open_store(store, data_dir / "history.sqlite")
        media = Path(media_dir if media_dir is not None else data_dir / "videos")
        removed = remove_stale_partials(media)
        if removed:
            logger.info("veo_nb: removed %d partial download(s) left in %s", removed, media)
        settings = Settings(
            client=client,
            poll_interval=float(poll_interval),
            expected=expected_duration,
            give_up_after=(_schedule.GIVE_UP_AFTER_S * scale if give_up_after is None
                           else float(give_up_after)),
            download=download,
            max_video_bytes=max_video_bytes,
            media_dir=media,
            bucket=TokenBucket(max_requests_per_second) if max_requests_per_second else None,
            owner=owner if owner is not None else default_owner(),
            url_lifetime=URL_LIFETIME_S * scale,
        )
        self._engine: Engine = attach(opened, own, settings, polling=start)
        if reuse is None and os.environ.get(_reuse.REUSE_ENV, "").strip():
            reuse = truthy(os.environ[_reuse.REUSE_ENV])
        #: Whether re-running a notebook cell reuses what its last run created.
        self.reuse: bool = (not client.demo) if reuse is None else bool(reuse)
        self._manages_all: bool | None = None
        self._closed = False
        self._detach = weakref.finalize(self, self._engine.detach)

    @property
    def client(self) -> VeoClient:
        """The client the store's engine polls with (the newest tracker's)."""
        return self._engine.client

    @property
    def store(self) -> BaseStore:
        """The store holding the history."""
        return self._engine.store

    @property
    def media_dir(self) -> Path:
        """Where videos are saved."""
        return self._engine.settings.media_dir

    @property
    def time_scale(self) -> float:
        """The clock factor of the service (1.0 for the real one)."""
        return self.client.time_scale

    @property
    def poll_interval(self) -> float:
        """Seconds between two polls of one task (never less)."""
        return self._engine.settings.poll_interval

    @property
    def owner(self) -> str | None:
        """Who this tracker records as the submitter of its tasks."""
        return self._engine.settings.owner

    @property
    def closed(self) -> bool:
        """True once :meth:`~veo_nb.Tracker.close` was called (on this tracker, or on the
        newest tracker of its store)."""
        return self._closed or self._engine.closed

    @property
    def store_key(self) -> str:
        """Identifies the store (its resolved path): trackers and panels with
        the same key share one history."""
        return self._engine.key

    @property
    def running(self) -> bool:
        """True while the store's poller polls (it does unless stopped)."""
        return self._engine.running

    def get(self, task_id: str) -> Task:
        """The latest known state of ``task_id`` (``video_path`` set once saved)."""
        return self.record(task_id).task

    def record(self, task_id: str) -> TaskRecord:
        """Everything known about ``task_id`` (see :class:`~veo_nb.TaskRecord`)."""
        found = self._engine.lookup(task_id)
        if found is None:
            raise KeyError(f"{task_id!r} is not known to this tracker: track() it first")
        return found

    def _unsaved(self) -> dict[str, TaskRecord]:
        """Tracked records the store does not have yet (a write that failed
        and is being retried): views show them too."""
        with self._engine.lock:
            return {i: s.record for i, s in self._engine.states.items()
                    if s.record.tracked and s.pending is not None}

    def live_records(self) -> list[TaskRecord]:
        """The records of the tasks in flight, held in memory: still polled,
        or their video still to fetch (finished tasks are read from the
        store when asked for)."""
        return self._engine.records()

    def next_poll_at(self) -> datetime | None:
        """When the next poll is due (UTC), or None when nothing is being polled."""
        with self._engine.lock:
            dues = [s.due for s in self._engine.states.values()
                    if s.due is not None and s.record.tracked]
        return from_unix(min(dues)) if dues else None

    def rate_limited_until(self) -> datetime | None:
        """Until when (UTC) the service asked us to wait (a 429's
        ``Retry-After``, shared by every process of the store, at most 15
        minutes ahead), or None when it did not: no poll is sent before."""
        now = time.time()
        gate = self._engine.gate(now)
        return from_unix(gate) if gate > now else None

    def on_change(self, callback: Callable[[Task], Any]) -> Callable[[], None]:
        """Call ``callback(task)`` for every change (status, download saved or
        failed, removed or erased), including changes another process on the
        same store made (a finished task another process erased comes with
        its id only, status unknown: this kernel no longer held it). It runs
        on the tracker's worker threads (or the one
        that called :meth:`~veo_nb.Tracker.remove`): keep it short, and hand
        widget updates to the widget. Exceptions are logged, never
        propagated. Returns a function that unsubscribes."""
        return self._engine.on_change(callback)

    def expected_window(self, task: str | TaskRecord) -> tuple[float, float]:
        """``(low, high)``: seconds after creation within which ``task`` (an
        id, or a record already read, such as a page's) is expected to
        finish. ``expected_duration`` when given; otherwise the documented
        estimate of the task's mode × ``time_scale``, whose ``low`` is
        refined once 5 tasks of the same model and mode have finished. The
        schedule polls by it and the panel's progress bars show it."""
        return self._engine.window(self.record(task) if isinstance(task, str) else task)

    def recent_errors(self) -> list[Event]:
        """The newest unexpected errors of the tracker's worker threads (a bug,
        a broken store), oldest first, as ``"error"`` events; they are also in
        :meth:`~veo_nb.Tracker.history` (``task_id`` is empty when no task was involved). The
        same error of one task is recorded at most once every five minutes."""
        with self._engine.lock:
            return list(self._engine.errors)

    def _tagged(self, record: TaskRecord) -> TaskRecord:
        """``record`` with this tracker's service, key fingerprint and owner
        filled in where unknown."""
        client = self.client
        return replace(record, service=record.service or client.service,
                       key_fingerprint=record.key_fingerprint or client.key_fingerprint,
                       owner=record.owner or self.owner)

    def _is_tracked(self, task_id: str) -> bool:
        found = self._engine.lookup(task_id)
        return found is not None and found.tracked

    def _known(self, ids: list[str]) -> dict[str, TaskRecord]:
        """The tracked records of ``ids``: in memory, else in the store."""
        states = None
        while states is None:
            stored, missing = self._engine.stored(ids)
            with self._engine.lock:
                states = self._engine.merged(ids, stored, missing)
        return {i: st.record for i, st in states.items() if st is not None and st.record.tracked}
