"""The public face of the polling engine: :class:`Tracker`, :func:`generate`
and :func:`default_tracker`.

Data flows one way: the tracker asks the service (through a
:class:`~veo_nb.client.VeoClient`), writes every change to its
:class:`~veo_nb.store.Store` first, and views read from the tracker or the
store. The work happens in :mod:`veo_nb._engine` (schedule, claims, the
poller thread), :mod:`veo_nb._downloads` and :mod:`veo_nb._waiting`.

One store, one engine per process: every ``Tracker`` made on the same store
(re-running a cell, Run All, a second notebook section) shares one engine,
and the newest one's settings (client, interval, folders) take over. So an
older ``Tracker`` object still works, on the same live state, and there is
never more than one poller per store in a process. Across processes, the
store's claims make each task polled by at most one process per interval,
and every process sees every change within about a second.

Nothing blocks the Jupyter kernel unless you call ``wait``, ``refresh`` or
:func:`generate`; no asyncio is used, so it works inside Jupyter's running
event loop.
"""

from __future__ import annotations

import getpass
import math
import os
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _reuse, _schedule, _spending, _waiting, records as _records
from ._engine import (
    NOT_POLLED,
    Engine,
    Settings,
    TaskState,
    TokenBucket,
    Write,
    age_zero,
    attach,
    given_up,
)
from ._connect import truthy
from ._log import logger
from ._paths import DEFAULT_DATA_DIR, DEMO_DATA_DIR, remove_stale_partials
from ._spec import MIN_POLL_INTERVAL_S, URL_LIFETIME_S, build_create_payload
from ._tables import html_table
from .errors import (
    APIError,
    DownloadError,
    OwnershipError,
    TaskFailedError,
    ValidationError,
    VeoError,
    _excerpt,
)
from .models import Task, TaskStatus
from .records import LOST_REASON, NO_VIDEO_REASON, NOT_FOUND_REASON, Event, TaskRecord, from_unix
from ._store_query import Overview, TaskFilter, TaskQuery
from .store import BaseStore, StoreError, open_store, store_kind

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .client import VeoClient
    from .widgets import VeoPanel

#: Tasks shown by the tracker's HTML representation (the most recent ones).
REPR_ROWS = 20
#: Environment variable naming who submits tasks (default: the JupyterHub
#: user, else the login name).
OWNER_ENV = "VEO_NB_OWNER"
_DEFAULT = object()
#: What a re-track may change in a stored row.
_TRACK_FIELDS = ("tracked", "label", "prompt", "error", "next_poll_at", "owner", "service",
                 "key_fingerprint")
#: What tracking a task lost after 404s again also writes (it runs again).
_REOPEN_FIELDS = ("status", "status_text", "finished_at")


def lost_after_404s(record: TaskRecord) -> bool:
    """Whether ``record`` failed because the service, which knew it, answered
    404 for too long (``track()`` then checks it again)."""
    return record.status is TaskStatus.FAILED and (record.error or "").startswith(LOST_REASON)


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


class Tracker:
    """Follows VEO tasks until they finish, saves their videos, keeps history.

    ``client``: a :class:`~veo_nb.client.VeoClient`; ``None`` calls
    :func:`veo_nb.connect` (the real service with ``VEO_API_KEY``, else the
    embedded emulator).
    ``store``: a :class:`~veo_nb.store.Store` or
    :class:`~veo_nb.store_pg.PostgresStore`, a path (SQLite), a
    ``postgresql://`` URL, or ``None`` for ``VEO_NB_STORE`` if set, else
    ``./veo_nb_data/history.sqlite`` (``./veo_nb_data/demo/…`` in demo mode,
    so demo tasks never mix with real ones). A tracker on an existing store
    resumes its unfinished tasks and pending downloads; several trackers and
    processes (and, with PostgreSQL, machines) may share one store.
    ``media_dir``: where videos are saved (default: ``videos/`` next to the
    default store); partial downloads a killed process left there (hidden
    ``.part`` files untouched for a minute) are deleted.
    ``poll_interval``: seconds between two polls of one task (default 30 s ×
    the client's ``time_scale``); raised to 30 s, with a warning, for the
    documented service, which rate-limits faster polling.
    ``expected_duration``: ``(low, high)`` seconds a task takes; default: the
    documented estimate of each task's mode × ``time_scale``, refined from
    observed completions (after 5 per model and mode).
    ``max_workers``: concurrent polls. ``max_requests_per_second``: optional
    cap on polls per second across all workers.
    ``give_up_after``: seconds after creation when polling an unfinished task
    stops (default 1 h × ``time_scale``; a ``gave_up`` event is recorded and
    ``track()`` resumes it). ``download``: save finished videos (default
    True). ``max_video_bytes``: refuse larger videos (default: the client's).
    ``start``: poll in the background by itself (default); ``start=False``
    is for those who drive :meth:`refresh` themselves.
    ``owner``: recorded with every task this tracker submits or tracks
    (default :func:`default_owner`).
    ``reuse``: when a notebook cell runs again, its submits return the tasks
    its last run created instead of paying again (see :meth:`submit`);
    default ``VEO_NB_REUSE`` if set, else on, but off in demo mode (nothing is
    billed there, and a re-run demo shows live progress again).
    ``max_tasks_per_day``, ``max_amount_per_day``: the store's daily caps on
    new tasks and on the ``amount`` the service reports (default
    ``VEO_NB_MAX_TASKS_PER_DAY`` / ``VEO_NB_MAX_AMOUNT_PER_DAY``, else none):
    a submit past them raises :class:`~veo_nb.SpendingCapError` before any
    request (see :mod:`veo_nb._spending`).
    """

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

    # ------------------------------------------------------------------ facts

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
        """True once :meth:`close` was called (on this tracker, or on the
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

    def records(self) -> list[TaskRecord]:
        """Every tracked task's record, in the order first seen (tasks tracked
        by other processes on the same store included). This reads the whole
        history: :meth:`tasks` with filters, or the panel, read less."""
        unsaved = self._unsaved()
        stored = [r for r in self.store.records() if r.task_id not in unsaved]
        return stored + list(unsaved.values())

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

    def tasks(self, *, since: datetime | str | float | None = None,
              status: str | Iterable[str] | None = None, owner: str | None = None,
              limit: int | None = None) -> pd.DataFrame:
        """One row per tracked task, in the order first seen (columns of
        :func:`veo_nb.records.tasks_frame`), read straight from the store.

        Filters, to ask a long history for less: ``since`` (a datetime, an
        ISO date or time such as ``"2026-09-01"`` (UTC), or unix seconds:
        created, else first seen, at or after it), ``status``
        (a status word such as ``"completed"`` or ``"not found"``, or
        several), ``owner``, and ``limit`` (only the ``limit`` most
        recently seen)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ValidationError(f"limit must be a whole number >= 0 or None, got {limit!r}")
        words = None if status is None else (status if isinstance(status, str) else tuple(status))
        select = TaskFilter(since=since, status=words, owner=owner, limit=limit)
        if since is not None:
            try:
                select.since_unix()
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"since must be a datetime, an ISO date or time such as "
                                      f"'2026-09-01', or unix seconds ({exc})") from None
        frame = self.store.frame(select)
        unsaved = [r for r in self._unsaved().values() if select.keeps(r)]
        if not unsaved:
            return frame
        import pandas as pd

        extra = _records.tasks_frame(unsaved)
        frame = frame[~frame["task_id"].isin(extra["task_id"])]
        both: pd.DataFrame = pd.concat([frame, extra], ignore_index=True)
        return both if limit is None else both.tail(limit).reset_index(drop=True)

    def history(self, limit: int | None = None) -> pd.DataFrame:
        """Every event of the store (or the newest ``limit``): status
        changes, poll errors, downloads."""
        return self.store.events_frame(limit)

    def summary(self) -> pd.DataFrame:
        """Per model: counts, success rate, median and p90 time to finish."""
        return _records.summary_frame(self.tasks())

    def export(self, path: str | Path, what: str = "tasks") -> Path:
        """Write ``tasks()``, ``history()`` or ``summary()`` to ``path``
        (``.csv``, ``.parquet`` or ``.json``); returns the path. In CSV, text
        a spreadsheet would run as a formula gets a leading ``'``."""
        frames: dict[str, Callable[[], pd.DataFrame]] = {
            "tasks": self.tasks, "history": self.history, "summary": self.summary}
        if what not in frames:
            raise ValidationError(f"what must be one of {', '.join(frames)}, got {what!r}")
        return _records.export(frames[what](), path)

    def panel(self, **options: Any) -> VeoPanel:
        """A live panel over this tracker: the same as ``veo_nb.panel(self, **options)``."""
        from .widgets import panel

        return panel(self, **options)

    def on_change(self, callback: Callable[[Task], Any]) -> Callable[[], None]:
        """Call ``callback(task)`` for every change (status, download saved or
        failed, removed or erased), including changes another process on the
        same store made. It runs on the tracker's worker threads (or the one
        that called :meth:`remove`): keep it short, and hand
        widget updates to the widget. Exceptions are logged, never
        propagated. Returns a function that unsubscribes."""
        return self._engine.on_change(callback)

    def expected_window(self, task_id: str) -> tuple[float, float]:
        """``(low, high)``: seconds after creation within which ``task_id`` is
        expected to finish. ``expected_duration`` when given; otherwise the
        documented estimate of the task's mode × ``time_scale``, whose ``low``
        is refined once 5 tasks of the same model and mode have finished.
        The schedule polls by it and the panel's progress bars show it."""
        return self._engine.window(self.record(task_id))

    def recent_errors(self) -> list[Event]:
        """The newest unexpected errors of the tracker's worker threads (a bug,
        a broken store), oldest first, as ``"error"`` events; they are also in
        :meth:`history` (``task_id`` is empty when no task was involved). The
        same error of one task is recorded at most once every five minutes."""
        with self._engine.lock:
            return list(self._engine.errors)

    # ------------------------------------------------------------------ adding tasks

    def track(self, task_or_id: Task | str, *, prompt: str | None = None,
              label: str | None = None) -> Task:
        """Follow a task created elsewhere (a :class:`~veo_nb.Task` or its id).

        A new unfinished task is polled at once, so an unknown id (404) or an
        early failure shows immediately; the returned task is the answer of
        that poll. Tracking a task again re-arms one the tracker gave up on;
        its next poll still comes no sooner than one interval after the last
        one any process made.
        """
        return self.track_many([task_or_id], prompt=prompt, label=label)[0]

    def track_many(self, tasks_or_ids: Iterable[Task | str], *, prompt: str | None = None,
                   label: str | None = None) -> list[Task]:
        """:meth:`track` several tasks; their first polls run concurrently.
        Raises :class:`~veo_nb.StoreError` when the store could not be written
        (the tasks are followed in memory meanwhile)."""
        ids: list[str] = []
        unsaved: list[str] = []
        for item in list(tasks_or_ids):
            task = item if isinstance(item, Task) else None
            task_id = task.id if task is not None else item
            if not isinstance(task_id, str) or not task_id:
                raise ValidationError(f"a task id must be a non-empty string, got {task_id!r:.80}")
            ids.append(task_id)
            if not self._add(task_id, task, prompt=prompt, label=label):
                unsaved.append(task_id)
        for future in self._engine.poll_now(ids):
            future.result()
        self._first_answers(ids)
        self._engine.wake()
        if unsaved:
            raise StoreError(f"could not save {len(unsaved)} tracked task(s) to {self.store_key}; "
                             "they are followed in memory and the write is retried",
                             task_ids=unsaved)
        return [self.get(i) for i in ids]

    def _first_answers(self, ids: list[str]) -> None:
        """Wait (a request's time at most) while the poller thread, which may
        have picked a newly tracked id before us, is still polling it for the
        first time: the returned tasks are then the answers of those first
        polls. A later poll in flight (a short interval, slow answers) is
        not waited for."""
        engine = self._engine
        deadline = time.monotonic() + self.client.timeout

        def first_poll_running(task_id: str) -> bool:
            state = engine.states.get(task_id)
            return (state is not None and state.polling and not state.errors
                    and state.record.poll_count == 0 and not state.record.is_terminal)

        with engine.cond:
            while any(first_poll_running(i) for i in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                engine.cond.wait(left)

    def _tagged(self, record: TaskRecord) -> TaskRecord:
        """``record`` with this tracker's service, key fingerprint and owner
        filled in where unknown."""
        client = self.client
        return replace(record, service=record.service or client.service,
                       key_fingerprint=record.key_fingerprint or client.key_fingerprint,
                       owner=record.owner or self.owner)

    def _add(self, task_id: str, task: Task | None, *, prompt: str | None,
             label: str | None) -> bool:
        """Start or resume tracking; False when the store write failed."""
        engine = self._engine
        now = time.time()
        with engine.lock:
            known = task_id in engine.states
        row = None if known else self.store.row(task_id)
        with engine.lock:
            if task_id not in engine.states and row is not None:  # known to the store
                engine.apply_row(replace(row, record=replace(row.record, tracked=True)), now,
                                 keep=True)
            state = engine.states.get(task_id)
            if state is not None:
                rec = state.record
                changes: dict[str, Any] = {"tracked": True}
                if label is not None:
                    changes["label"] = label
                if prompt is not None:
                    changes["prompt"] = prompt
                if given_up(rec):
                    changes["error"] = None
                    state.deadline = now - state.t0 + engine.settings.give_up_after
                reopen = lost_after_404s(rec)
                if reopen:  # the service knew it, then said 404 for long: check again
                    changes.update(status=TaskStatus.UNKNOWN, status_text=NOT_POLLED, error=None,
                                   finished_at=None)
                    state.not_found_since = None
                    state.deadline = now - state.t0 + engine.settings.give_up_after
                state.record = replace(rec, **changes)
                if not state.polling and state.pending is None:
                    state.errors = 0
                    engine.reschedule(state, now)
                new = self._tagged(replace(state.record, next_poll_at=from_unix(state.due)))
                write = Write(new, [Event(task_id, "note", detail="tracked again")],
                              _TRACK_FIELDS + (_REOPEN_FIELDS if reopen else ()), {},
                              lambda st: engine.downloads.schedule(st, time.time()),
                              reopen=reopen)
            else:
                if task is None:
                    record = TaskRecord(task_id, label=label, prompt=prompt,
                                        status=TaskStatus.UNKNOWN, status_text=NOT_POLLED,
                                        first_seen_at=from_unix(now))
                else:
                    record = TaskRecord.from_task(task, prompt=prompt, label=label,
                                                  now=from_unix(now),
                                                  url_lifetime_s=engine.settings.url_lifetime)
                if record.status is TaskStatus.COMPLETED and not record.video_url:
                    record = replace(record, status=TaskStatus.FAILED,
                                     status_text=TaskStatus.FAILED.value, error=NO_VIDEO_REASON)
                if record.status is TaskStatus.COMPLETED and engine.settings.download:
                    record = replace(record, download_state="pending")
                due = None if record.is_terminal else now
                record = self._tagged(replace(record, next_poll_at=from_unix(due)))
                state = engine.states[task_id] = TaskState(
                    record, 0, t0=age_zero(record), last_age=None,
                    deadline=engine.settings.give_up_after)
                event = (Event(task_id, "status", task.status_text, detail="tracked")
                         if task is not None else Event(task_id, "note", detail="tracked"))

                def saved(st: TaskState) -> None:
                    st.due = due
                    engine.downloads.schedule(st, time.time())

                write = Write(record, [event], None, {}, saved)
        return engine.commit(task_id, write) is not None

    def submit(self, prompt: str, *, label: str | None = None, owner: str | None = None,
               new: bool = False, **create_kwargs: Any) -> Task:
        """Create a video task (``model``, ``resolution``, ``aspect_ratio``,
        ``reference_images``, ``first_image``, ``last_image`` as for
        :meth:`VeoClient.create_video <veo_nb.client.VeoClient.create_video>`)
        and track it. Its first poll comes at the schedule's early check:
        the create response already told its status. ``owner`` is recorded as
        who submitted it (default: the tracker's, see :func:`default_owner`).

        **A cell run again does not pay again**: in a notebook, when a cell
        runs again (a re-run, Run All, Run All after a kernel restart), its
        n-th submit of the same request (store, service, key, owner, model, prompt,
        options) returns the task its last run's n-th identical submit created,
        and one line says so. ``new=True`` creates another. A task that failed
        is not reused; identical submits within one run are all created. Off
        with ``Tracker(reuse=False)``; in demo mode off unless turned on.

        Raises :class:`~veo_nb.StoreError` (with the new id in ``task_ids``)
        when the task was created but could not be saved to the store: it
        exists and is billed; the tracker follows it in memory and retries
        the write."""
        engine = self._engine
        client = self.client
        images = {k: create_kwargs.pop(k) for k in ("reference_images", "first_image",
                                                    "last_image") if k in create_kwargs}
        if images:  # local images uploaded once, before anything is sent
            create_kwargs.update(client.image_urls(**images))
        request = build_create_payload(prompt, unknown_models="send", **create_kwargs)
        cell = None if new else _reuse.current_cell()
        place: tuple[str, str, int] | None = None
        if cell is not None:
            key = self._reuse_key(request, owner)
            place = (cell[0], key, _reuse.slot(self.store_key, cell, key))
            earlier = self._reusable(place)
            if earlier is not None:
                task_id, when = earlier
                if self.reuse:
                    print(f"reused {task_id} from {when} (same request in this cell); "
                          "submit(..., new=True) makes another")
                    return self.get(task_id) if self._is_tracked(task_id) else \
                        self.track(task_id)
                print(f"created a new task: in demo mode re-runs show live progress again; with "
                      f"a real key, {task_id} from {when} would have been reused (same request "
                      "in this cell; Tracker(reuse=True) or VEO_NB_REUSE=1 reuses here too)")
        self._check_caps(1)
        sent = time.time()
        placeholder = self._unconfirmed(prompt, label, owner, request, sent)
        try:
            task = client.create_video(prompt, **create_kwargs)
        except BaseException as exc:
            maybe_created = (isinstance(exc, APIError) and exc.reached
                             and (exc.status_code is None or exc.status_code >= 500))
            if maybe_created:  # the entry stays, and says why
                self._engine.commit(placeholder.task_id, Write(
                    replace(placeholder, error=_spending.unconfirmed_reason(sent, str(exc))),
                    [Event(placeholder.task_id, "note", _spending.UNCONFIRMED,
                           detail=f"no answer with the id: {exc}")], ("error",), {}))
            else:
                self._forget_unconfirmed(placeholder.task_id)
            raise
        now = time.time()
        record = self._tagged(replace(TaskRecord.from_task(
            task, label=label, request=request, now=from_unix(sent),
            url_lifetime_s=engine.settings.url_lifetime), owner=owner))
        with engine.lock:
            state = engine.states[task.id] = TaskState(
                record, 0, t0=sent, last_age=now - sent, contact_at=now,
                deadline=engine.settings.give_up_after)
            due = None if record.is_terminal else engine.next_due(state)  # refused at create
            state.record = record = replace(record, next_poll_at=from_unix(due))
        until = None if due is None else due + engine.settings.grace
        write = Write(record, [Event(task.id, "status", task.status_text,
                                     observed_at=from_unix(now), detail="created")],
                      None, {"contact_at": now, "poller": engine.me, "poll_until": until},
                      lambda st: setattr(st, "due", due))
        saved = engine.commit(task.id, write)
        self._forget_unconfirmed(placeholder.task_id)  # the real task replaces it
        if place is not None:
            try:
                self.store.remember(*place, task.id, sent)
            except Exception:  # noqa: BLE001 - the task exists; only its reuse is lost
                logger.warning("veo_nb: could not record %s for reuse on re-runs", task.id,
                               exc_info=True)
        if saved is None:
            raise StoreError(
                f"task {task.id} was created on the service (and is billed) but could not be "
                f"saved to {self.store_key}; the tracker follows it in memory and retries the "
                "write (keep this id)", task_ids=[task.id])
        return self.get(task.id)

    def _new_in_batch(self, rows: list[dict[str, Any]]) -> int:
        """How many of ``rows`` (keyword arguments of :meth:`submit`) would
        create a task: not those a re-run of the cell reuses, nor those the
        model table refuses."""
        cell = _reuse.current_cell() if self.reuse else None  # without reuse, every row creates
        ahead: Counter[str] = Counter()
        count = 0
        for row in rows:
            options = {k: v for k, v in row.items()
                       if k not in ("prompt", "label", "owner", "new")}
            try:
                request = build_create_payload(row.get("prompt"), unknown_models="send",
                                               **options)
            except (VeoError, TypeError):
                continue  # refused before sending: creates nothing
            if cell is not None and not row.get("new"):
                key = self._reuse_key(request, row.get("owner"))
                n = _reuse.seen(self.store_key, cell, key) + ahead[key]
                ahead[key] += 1
                if self._reusable((cell[0], key, n)) is not None:
                    continue
            count += 1
        return count

    def _reuse_key(self, request: dict[str, Any], owner: str | None) -> str:
        """What makes a submit of ``request`` (by ``owner``, default this
        tracker's) the same as an earlier run's (see :mod:`veo_nb._reuse`)."""
        client = self.client
        return _reuse.request_key(client.service, client.key_fingerprint, owner or self.owner,
                                  request)

    def may_change(self, record: TaskRecord) -> bool:
        """Whether this session may hide or erase ``record``: its own task,
        or any on a store that is not shared or of which it is a teacher."""
        if record.owner in (None, self.owner):
            return True
        if self._manages_all is None:
            self._manages_all = self.store.manages_all()
        return self._manages_all

    def _check_caps(self, adding: int) -> None:
        """Raise :class:`~veo_nb.SpendingCapError` when ``adding`` new tasks
        would pass the store's daily caps."""
        if self.caps == (None, None):
            return
        _spending.check(self.caps, self._spent_today(), adding)

    def _spent_today(self) -> tuple[int, float | None]:
        return self.store.spent_since(_spending.day_start(time.time()))

    def spending(self) -> dict[str, Any]:
        """Today's spending of this store (since local midnight, every process
        counted): ``tasks`` submitted, the ``amount`` the service reported
        (None when none), and the caps (``max_tasks``, ``max_amount``; None:
        none)."""
        count, amount = self._spent_today()
        return {"tasks": count, "amount": amount, "max_tasks": self.caps[0],
                "max_amount": self.caps[1]}

    def _unconfirmed(self, prompt: str, label: str | None, owner: str | None,
                     request: dict[str, Any], sent: float) -> TaskRecord:
        """Save the "may have been billed" entry of a create about to be sent
        (see :mod:`veo_nb._spending`); the real task replaces it."""
        record = self._tagged(TaskRecord(
            _spending.unconfirmed_id(), label=label, prompt=prompt, model=request.get("model"),
            resolution=request.get("resolution"), aspect_ratio=request.get("aspect_ratio"),
            status=TaskStatus.UNKNOWN, status_text=_spending.UNCONFIRMED,
            error=_spending.unconfirmed_reason(sent), first_seen_at=from_unix(sent),
            request=request, service=_spending.UNCONFIRMED_SERVICE, owner=owner))
        engine = self._engine
        with engine.lock:
            engine.states[record.task_id] = TaskState(record, 0, t0=sent, last_age=None)
        if engine.commit(record.task_id, Write(record, [], None, {}, notify=False)) is None:
            with engine.lock:
                engine.states.pop(record.task_id, None)  # and its pending write with it
            raise StoreError(
                f"could not record the request in {self.store_key} before sending it, so "
                "nothing was sent (no task was created or billed): try again once the store "
                "answers")
        return record

    def _forget_unconfirmed(self, task_id: str) -> None:
        """Erase a "may have been billed" entry the real task replaced; should
        the store fail now, the entry stays (visible, and dismissable)."""
        try:
            self.remove([task_id], delete=True, others=True)
        except Exception:  # noqa: BLE001 - the task itself is recorded (or reported)
            logger.warning("veo_nb: could not erase the entry %s of a task whose id arrived",
                           task_id, exc_info=True)

    def _reusable(self, place: tuple[str, str, int]) -> tuple[str, str] | None:
        """The task (id, local HH:MM) an earlier run of the cell created at
        ``place``, unless it failed or is gone."""
        try:
            found = self.store.reused(*place)
            record = None if found is None else self.store.get(found[0])
        except Exception:  # noqa: BLE001 - a store problem: create, as without reuse
            logger.warning("veo_nb: could not look up an earlier run's task", exc_info=True)
            return None
        if found is None or record is None or record.status is TaskStatus.FAILED:
            return None
        return found[0], datetime.fromtimestamp(found[1]).strftime("%H:%M")

    def _is_tracked(self, task_id: str) -> bool:
        found = self._engine.lookup(task_id)
        return found is not None and found.tracked

    def submit_many(self, prompts_or_dataframe: Iterable[str] | pd.DataFrame,
                    **defaults: Any) -> pd.DataFrame:
        """Submit many tasks; returns one row per input with ``task_id`` and
        ``error``. A row that is refused (validation, HTTP error) is reported
        in ``error`` and in one summary warning; the others go on. A task
        that was created but could not be saved has both its ``task_id`` and
        the store's ``error``.

        A DataFrame's columns are per-row keyword arguments of :meth:`submit`
        (``prompt`` required; ``label``, ``owner``, ``model``, ``resolution``, …);
        ``defaults`` apply where a row has no value."""
        import pandas as pd

        rows: list[dict[str, Any]]
        if isinstance(prompts_or_dataframe, pd.DataFrame):
            rows = [
                {str(k): v for k, v in row.items() if not _missing(v)}
                for row in prompts_or_dataframe.to_dict("records")
            ]
        else:
            rows = [{"prompt": p} for p in prompts_or_dataframe]
        if self.caps != (None, None):  # the whole batch first: none of it, or all
            self._check_caps(self._new_in_batch([{**defaults, **row} for row in rows]))
        out: list[dict[str, Any]] = []
        for row in rows:
            kwargs = {**defaults, **row}
            prompt, label = kwargs.pop("prompt", None), kwargs.pop("label", None)
            task_id: str | None
            error: str | None
            try:
                task_id, error = self.submit(prompt, label=label, **kwargs).id, None
            except StoreError as exc:
                task_id, error = (exc.task_ids[0] if exc.task_ids else None), str(exc)
            except (VeoError, TypeError) as exc:
                task_id, error = None, str(exc)
            out.append({"prompt": prompt, "label": label, "task_id": task_id, "error": error})
        frame: pd.DataFrame = pd.DataFrame(out, columns=["prompt", "label", "task_id", "error"])
        failed = frame["error"].notna()
        if failed.any():
            first = frame.loc[failed, "error"].iloc[0]
            warnings.warn(
                f"{int(failed.sum())} of {len(frame)} rows were not submitted or not saved "
                f"(see the 'error' column); first error: {first}",
                stacklevel=2,
            )
        return frame

    def untrack(self, task_id: str) -> None:
        """Stop following ``task_id`` (it stays in the store's history)."""
        self.remove([task_id])

    def remove(self, task_ids: Iterable[str] | str, *, delete: bool = False,
               others: bool = False) -> int:
        """Stop following ``task_ids`` and hide them from ``tasks()`` and the
        panel (in every process on the store); with ``delete=True`` also
        erase their records and events from the store (for typos and test
        runs; the service keeps the tasks). Returns how many were removed;
        unknown ids raise :class:`KeyError`.

        On a shared (PostgreSQL) store, tasks of another owner raise
        :class:`~veo_nb.OwnershipError` before anything is touched, unless
        this session is a teacher of a class store (``veo-nb class``), or
        ``others=True`` on a store without a class set-up (where the
        database does not know who may change what)."""
        engine = self._engine
        ids = [task_ids] if isinstance(task_ids, str) else list(dict.fromkeys(task_ids))
        known = self._known(ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise KeyError(f"not tracked: {', '.join(map(repr, unknown))}")
        records = [replace(known[i], tracked=False, next_poll_at=None) for i in ids]
        theirs = [r for r in records if not self.may_change(r)]
        if theirs and not others:
            owners = ", ".join(sorted({r.owner or "nobody" for r in theirs}))
            raise OwnershipError(
                f"{len(theirs)} of these {len(ids)} tasks belong to {owners}, not to "
                f"{self.owner or 'this session'}: nothing was removed. Remove only your own "
                "(the panel's Clear does), or, as the teacher of a store without a class "
                "set-up, pass others=True")
        if delete:
            self.store.delete(ids)
        else:
            for record in records:
                self.store.write(record, [Event(record.task_id, "note", detail="untracked")],
                                 fields=("tracked", "next_poll_at"),
                                 claim={"poller": None, "poll_until": None})
        with engine.lock:
            for task_id in ids:
                engine.states.pop(task_id, None)
            engine.cond.notify_all()
        for record in records:  # on_change: views drop them
            engine.notify(record.task)
        return len(ids)

    # ------------------------------------------------------------------ polling

    def refresh(self) -> list[Task]:
        """Read what other processes changed, poll every tracked unfinished
        task that is due (concurrently) and start downloads of newly finished
        videos. Returns the tasks whose status changed."""
        self._engine.follow()
        futures, _ = self._engine.dispatch()
        changed = [f.result() for f in futures]
        return [t for t in changed if t is not None]

    def start(self) -> Tracker:
        """Poll in the background (the default: only needed after
        :meth:`stop` or ``start=False``). Idempotent; one poller per store
        per process, however many trackers."""
        if self.closed:
            raise RuntimeError("this tracker is closed")
        self._engine.start()
        return self

    def stop(self) -> None:
        """Stop polling in this process (tasks keep running on the service;
        another process on the same store takes over their polling)."""
        self._engine.stop()

    def close(self) -> None:
        """Let go of the store: the last tracker of a store in this process
        stops polling, waits for requests and downloads in flight, and closes
        the store if it opened it."""
        if self._closed:
            return
        self._closed = True
        self._detach()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting

    def wait(self, task_ids: Iterable[str] | str | None = None, timeout: Any = _DEFAULT, *,
             downloads: bool = True) -> list[Task]:
        """Block until the tasks (default: every tracked one) are done; return
        them in order.

        Done means finished and, by default, its video saved (or its download
        failed or expired), so ``tasks()`` right after has every
        ``video_path``; ``downloads=False`` waits for statuses only. Works
        with or without polling in this process (another process may poll).
        ``timeout`` (covering downloads too) defaults to twice the longest
        expected duration plus slack; pass ``None`` to wait forever. Raises
        :class:`~veo_nb.TaskTimeoutError` (with ``unfinished``: id → last
        status) when time runs out or the tracker gave up on a task. Ctrl-C
        stops the waiting, not the tasks: they keep running (and billing) on
        the service, which has no cancel.
        """
        ids = self._targets(task_ids)
        return list(_waiting.iter_done(self._engine, ids, self._timeout(ids, timeout),
                                       ordered=True, downloads=downloads))

    def as_completed(self, task_ids: Iterable[str] | str | None = None,
                     timeout: Any = _DEFAULT, *, downloads: bool = True) -> Iterator[Task]:
        """Yield the tasks (default: every tracked one) as each is done.
        ``downloads``, timeout and Ctrl-C as for :meth:`wait`."""
        ids = self._targets(task_ids)
        return _waiting.iter_done(self._engine, ids, self._timeout(ids, timeout),
                                  ordered=False, downloads=downloads)

    def _timeout(self, ids: list[str], timeout: Any) -> float | None:
        return _waiting.default_timeout(self._engine, ids) if timeout is _DEFAULT else timeout

    def _known(self, ids: list[str]) -> dict[str, TaskRecord]:
        """The tracked records of ``ids``: in memory, else in the store."""
        while True:
            stored, missing = self._engine.stored(ids)
            with self._engine.lock:
                states = {i: self._engine.states.get(i) or stored.get(i) for i in ids}
            if all(st is not None or i in missing for i, st in states.items()):
                break  # else a task left memory after the store was read: read again
        return {i: st.record for i, st in states.items() if st is not None and st.record.tracked}

    def _targets(self, task_ids: Iterable[str] | str | None) -> list[str]:
        if task_ids is None:
            ids = list(dict.fromkeys([*self.store.tracked_ids(), *self._unsaved()]))
            return [i for i in ids if not _spending.is_unconfirmed(TaskRecord(i))]
        ids = [task_ids] if isinstance(task_ids, str) else [getattr(i, "id", i) for i in task_ids]
        known = self._known(ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise KeyError(f"not tracked: {', '.join(map(repr, unknown))}; track() them first")
        return ids

    # ------------------------------------------------------------------ display

    def overview(self) -> Overview:
        """Counts per status and owner, reported costs and unconfirmed
        creates of the tracked tasks, from one query of the store (what the
        panel's header shows)."""
        return self.store.overview()

    def __repr__(self) -> str:
        overview = self.overview()
        counts = Counter(overview.counts)
        counts.subtract(overview.gave_up_words)
        if overview.gave_up:
            counts["gave up"] = overview.gave_up
        parts = ", ".join(f"{n} {_excerpt(s, 40)}" for s, n in sorted(counts.items()) if n > 0)
        state = "polling" if self.running else "not polling"
        return (f"<Tracker: {overview.total} tasks ({parts or 'no tasks'}); {state}; "
                f"store {self.store_key}>")

    def _repr_html_(self) -> str:
        # The newest REPR_ROWS tasks as an escaped table (the panel's fallback table).
        newest = self.store.page(TaskQuery(), 0, REPR_ROWS)[::-1]
        return html_table(f"veo_nb {self!r}", newest, time.time(), REPR_ROWS,
                          total=self.overview().total)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


_default_lock = threading.Lock()
_default: Tracker | None = None


def default_tracker() -> Tracker:
    """The process's tracker on the default store, made on first use (with
    :func:`veo_nb.connect`) and reused afterwards until it is closed: what
    ``veo_nb.panel()`` shows when given no tracker."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Tracker()
        return _default


def generate(prompt: str, *, tracker: Tracker | None = None, timeout: Any = _DEFAULT,
             label: str | None = None, **create_kwargs: Any) -> Task:
    """Create one video, wait for it, save it, and return the finished task
    (its ``video_path`` is the local MP4).

    ``tracker`` defaults to a new :class:`Tracker` on :func:`veo_nb.connect`
    (closed afterwards). ``timeout`` as for :meth:`Tracker.wait`, covering
    the download too. Raises :class:`~veo_nb.TaskFailedError` when generation
    failed, :class:`~veo_nb.TaskTimeoutError` when time ran out (the task
    keeps running and stays tracked), :class:`~veo_nb.DownloadError` when the
    video could not be saved.
    """
    own = tracker is None
    tracker = tracker if tracker is not None else Tracker()
    try:
        task = tracker.submit(prompt, label=label, **create_kwargs)
        if timeout is _DEFAULT:
            timeout = tracker._timeout([task.id], timeout)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        (done,) = tracker.wait([task.id], timeout=timeout)
        if done.status is TaskStatus.FAILED:
            raise TaskFailedError(done)
        rec = _waiting.until_saved(tracker._engine, task.id, deadline)
        if rec.download_state != "saved":
            raise DownloadError(f"could not save the video of {task.id}: {rec.download_error}")
        return rec.task
    finally:
        if own:
            tracker.close()


__all__ = ["Tracker", "default_tracker", "generate", "NO_VIDEO_REASON", "NOT_FOUND_REASON"]
