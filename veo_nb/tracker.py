"""The polling engine: :class:`Tracker` and :func:`generate`.

Data flows one way: the tracker asks the service (through a
:class:`~veo_nb.client.VeoClient`), writes every change to its
:class:`~veo_nb.store.Store`, and views read from the tracker or the store.

Threads, precisely:

* ``refresh()`` polls every due task concurrently on a bounded pool
  (``max_workers``) and returns when those polls are answered.
* ``start()`` runs a daemon thread named ``veo_nb-poller:<store path>`` that
  sleeps until the next task is due (or until ``track``/``submit`` wake it)
  and dispatches polls without waiting for slow ones. One poller per store
  file per process: ``start()`` on a second tracker over the same store stops
  the first tracker's poller and takes over.
* finished videos are downloaded on a small separate pool.
* ``on_change`` callbacks run on those worker threads.

Nothing blocks the Jupyter kernel unless you call ``wait``, ``refresh`` or
:func:`generate`; no asyncio is used, so it works inside Jupyter's running
event loop.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _schedule, records as _records
from ._log import logger
from ._paths import remove_stale_partials, video_path_in
from ._tables import html_table
from ._spec import MIN_POLL_INTERVAL_S, URL_LIFETIME_S, build_create_payload
from .errors import (
    DownloadError,
    NotFoundError,
    RateLimitError,
    ResultExpiredError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
    VeoError,
    _excerpt,
)
from .models import Task, TaskStatus
from .records import Event, TaskRecord, from_unix, to_unix, utcnow
from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .client import VeoClient
    from .widgets import VeoPanel

#: Where the tracker keeps its history and videos unless told otherwise.
DEFAULT_DATA_DIR = Path("veo_nb_data")
#: Why a task reported ``completed`` without a ``video_url`` counts as failed.
NO_VIDEO_REASON = "completed without a video (the service's safety filter may have blocked it)"
#: The error of a task id the service answers 404 for.
NOT_FOUND_REASON = "the service does not know this id (404)"
#: ``status_text`` of a tracked id before its first poll.
NOT_POLLED = "not polled yet"
_GAVE_UP = "gave up polling"
#: Tasks shown by the tracker's HTML representation (the most recent ones).
REPR_ROWS = 20
#: Parallel downloads per tracker.
DOWNLOAD_WORKERS = 4
#: Unexpected worker errors kept by :meth:`Tracker.recent_errors`.
RECENT_ERRORS = 50
#: The same unexpected error of one task is recorded at most this often (seconds).
ERROR_EVENT_GAP_S = 300.0
_DEFAULT = object()
_TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED)

# Process-wide state: the running poller per store file, and the last contact
# with the service per (base URL, task id), so that two trackers in one
# process never poll a task sooner than the interval.
_registry_lock = threading.RLock()
_pollers: dict[str, weakref.ReferenceType[Tracker]] = {}
_contact_lock = threading.Lock()
_last_contact: dict[tuple[str, str], float] = {}  # time.monotonic(); inf while in flight


@dataclass
class _TaskState:
    """What the tracker keeps in memory about one task besides its record."""

    record: TaskRecord
    t0: float  # unix time of age 0 (creation)
    last_age: float | None  # age of the last contact; None = poll at once
    due: float | None = None  # unix time of the next poll; None = not polling
    errors: int = 0  # consecutive failed polls
    polling: bool = False
    deadline: float = math.inf  # age after which polling gives up
    dl_due: float | None = None  # unix time of the next download attempt
    dl_attempts: int = 0
    downloading: bool = False


class _TokenBucket:
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


def _given_up(record: TaskRecord) -> bool:
    """Whether the tracker gave up polling this (unfinished) task."""
    return not record.is_terminal and (record.error or "").startswith(_GAVE_UP)


def _t0(record: TaskRecord) -> float:
    """Unix time of a task's age 0. The service's ``created`` is whole seconds,
    so when we saw the task within a second of it (we created it), our own
    clock is the precise one."""
    created, seen = to_unix(record.created_at), to_unix(record.first_seen_at)
    if seen is None:
        return created if created is not None else time.time()
    if created is None or seen - created < 1.0:
        return seen
    return created


def _shutdown(stop: threading.Event, wake: threading.Event,
              pools: Sequence[ThreadPoolExecutor]) -> None:
    """Stop a tracker's threads (also run by ``weakref.finalize`` at exit)."""
    stop.set()
    wake.set()
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)


class Tracker:
    """Follows VEO tasks until they finish, saves their videos, keeps history.

    ``client``: a :class:`~veo_nb.client.VeoClient`; ``None`` calls
    :func:`veo_nb.connect` (the real service with ``VEO_API_KEY``, else the
    embedded emulator).
    ``store``: a :class:`~veo_nb.store.Store`, a path, or ``None`` for
    ``./veo_nb_data/history.sqlite``. A new tracker on an existing store
    resumes its unfinished tasks and pending downloads.
    ``media_dir``: where videos are saved (default ``./veo_nb_data/videos/``);
    partial downloads a killed process left there (hidden ``.part`` files
    untouched for a minute) are deleted.
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
    """

    def __init__(
        self,
        client: VeoClient | None = None,
        *,
        store: Store | str | Path | None = None,
        media_dir: str | Path | None = None,
        poll_interval: float | None = None,
        expected_duration: tuple[float, float] | None = None,
        max_workers: int = 32,
        max_requests_per_second: float | None = None,
        give_up_after: float | None = None,
        download: bool = True,
        max_video_bytes: int | None = None,
    ) -> None:
        if client is None:
            from ._connect import connect

            client = connect()
        self.client = client
        scale = float(client.time_scale)
        #: The clock factor of the service (1.0 for the real one).
        self.time_scale = scale
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
        self._poll_interval = float(poll_interval)
        if expected_duration is not None:
            low, high = (float(v) for v in expected_duration)
            if not 0 <= low <= high or high <= 0:
                raise ValidationError(
                    f"expected_duration must be (low, high) seconds with 0 <= low <= high, "
                    f"got {expected_duration!r}"
                )
            expected_duration = (low, high)
        self._expected = expected_duration
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValidationError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        if max_requests_per_second is not None and not max_requests_per_second > 0:
            raise ValidationError(
                f"max_requests_per_second must be positive or None, got {max_requests_per_second!r}"
            )
        self._bucket = _TokenBucket(max_requests_per_second) if max_requests_per_second else None
        self._give_up_after = (
            _schedule.GIVE_UP_AFTER_S * scale if give_up_after is None else float(give_up_after)
        )
        self._download = download
        self._max_video_bytes = max_video_bytes
        self._url_lifetime = URL_LIFETIME_S * scale

        self._own_store = not isinstance(store, Store)
        if store is None:
            store = DEFAULT_DATA_DIR / "history.sqlite"
        self.store: Store = store if isinstance(store, Store) else Store(store)
        self.media_dir = Path(media_dir if media_dir is not None else DEFAULT_DATA_DIR / "videos")
        removed = remove_stale_partials(self.media_dir)
        if removed:
            logger.info("veo_nb: removed %d partial download(s) left in %s", removed, self.media_dir)
        self._key = str(Path(self.store.path).resolve())

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._states: dict[str, _TaskState] = {}
        self._observed: dict[tuple[str | None, str | None], list[float]] = {}
        self._callbacks: list[Callable[[Task], Any]] = []
        self._errors: deque[Event] = deque(maxlen=RECENT_ERRORS)
        self._error_seen: dict[tuple[str, str, str], float] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="veo_nb-poll")
        self._dl_pool = ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="veo_nb-download")
        self._finalizer = weakref.finalize(
            self, _shutdown, self._stop, self._wake, (self._pool, self._dl_pool)
        )
        self._load()

    # ------------------------------------------------------------------ facts

    @property
    def poll_interval(self) -> float:
        """Seconds between two polls of one task (never less)."""
        return self._poll_interval

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def store_key(self) -> str:
        """Identifies the store (its resolved path): trackers and panels with
        the same key share one history."""
        return self._key

    @property
    def running(self) -> bool:
        """True while this tracker's background poller runs."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def get(self, task_id: str) -> Task:
        """The latest known state of ``task_id`` (``video_path`` set once saved)."""
        return self.record(task_id).task

    def record(self, task_id: str) -> TaskRecord:
        """Everything known about ``task_id`` (see :class:`~veo_nb.TaskRecord`)."""
        with self._lock:
            state = self._states.get(task_id)
            if state is not None:
                return state.record
        stored = self.store.get(task_id)
        if stored is None:
            raise KeyError(f"{task_id!r} is not known to this tracker: track() it first")
        return stored

    def records(self) -> list[TaskRecord]:
        """Every tracked task's record, in the order first seen."""
        with self._lock:
            return [s.record for s in self._states.values() if s.record.tracked]

    def next_poll_at(self) -> datetime | None:
        """When the next poll is due (UTC), or None when nothing is being polled."""
        with self._lock:
            dues = [s.due for s in self._states.values() if s.due is not None and s.record.tracked]
        return from_unix(min(dues)) if dues else None

    def tasks(self) -> pd.DataFrame:
        """One row per tracked task (columns of :func:`veo_nb.records.tasks_frame`)."""
        return _records.tasks_frame(self.records())

    def history(self) -> pd.DataFrame:
        """Every event of the store: status changes, poll errors, downloads."""
        return self.store.events_frame()

    def summary(self) -> pd.DataFrame:
        """Per model: counts, success rate, median and p90 time to finish."""
        return _records.summary_frame(self.records())

    def export(self, path: str | Path, what: str = "tasks") -> Path:
        """Write ``tasks()``, ``history()`` or ``summary()`` to ``path``
        (``.csv``, ``.parquet`` or ``.json``); returns the path."""
        frames = {"tasks": self.tasks, "history": self.history, "summary": self.summary}
        if what not in frames:
            raise ValidationError(f"what must be one of {', '.join(frames)}, got {what!r}")
        return _records.export(frames[what](), path)

    def panel(self, **options: Any) -> VeoPanel:
        """A live panel over this tracker: the same as ``veo_nb.panel(self, **options)``."""
        from .widgets import panel

        return panel(self, **options)

    def on_change(self, callback: Callable[[Task], Any]) -> Callable[[], None]:
        """Call ``callback(task)`` for every change (status, download saved or
        failed). It runs on the tracker's worker threads: keep it short, and
        hand widget updates to the widget. Exceptions are logged, never
        propagated. Returns a function that unsubscribes."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ adding tasks

    def track(self, task_or_id: Task | str, *, prompt: str | None = None,
              label: str | None = None) -> Task:
        """Follow a task created elsewhere (a :class:`~veo_nb.Task` or its id).

        A new unfinished task is polled at once, so an unknown id (404) or an
        early failure shows immediately; the returned task is the answer of
        that poll. Tracking a task again re-arms one the tracker gave up on.
        """
        return self.track_many([task_or_id], prompt=prompt, label=label)[0]

    def track_many(self, tasks_or_ids: Iterable[Task | str], *, prompt: str | None = None,
                   label: str | None = None) -> list[Task]:
        """:meth:`track` several tasks; their first polls run concurrently."""
        items = list(tasks_or_ids)
        to_poll: list[str] = []
        ids: list[str] = []
        for item in items:
            task = item if isinstance(item, Task) else None
            task_id = item.id if task is not None else item
            if not isinstance(task_id, str) or not task_id:
                raise ValidationError(f"a task id must be a non-empty string, got {task_id!r:.80}")
            ids.append(task_id)
            if self._add(task_id, task, prompt=prompt, label=label):
                to_poll.append(task_id)
        futures = [self._submit_poll(i) for i in to_poll]
        for future in futures:
            if future is not None:
                future.result()
        self._wake.set()
        return [self.get(i) for i in ids]

    def _add(self, task_id: str, task: Task | None, *, prompt: str | None,
             label: str | None) -> bool:
        """Start or resume tracking; True when it should be polled at once."""
        now = time.time()
        with self._lock:
            state = self._states.get(task_id) or self._resume_state(self.store.get(task_id))
            if state is not None:
                rec = state.record
                changes: dict[str, Any] = {"tracked": True}
                if label is not None:
                    changes["label"] = label
                if prompt is not None:
                    changes["prompt"] = prompt
                if _given_up(rec):
                    changes["error"] = None
                self._states[task_id] = state
                state.record = replace(rec, **changes)
                if not rec.is_terminal and state.due is None and not state.polling:
                    state.due, state.errors = now, 0
                    state.deadline = now - state.t0 + self._give_up_after
                self._schedule_download(state, now)
                state.record = replace(state.record, next_poll_at=from_unix(state.due))
                self.store.save(state.record, [Event(task_id, "note", detail="tracked again")])
                return False
            if task is None:
                record = TaskRecord(task_id, label=label, prompt=prompt,
                                    status=TaskStatus.UNKNOWN, status_text=NOT_POLLED,
                                    first_seen_at=from_unix(now))
            else:
                record = TaskRecord.from_task(task, prompt=prompt, label=label,
                                              now=from_unix(now),
                                              url_lifetime_s=self._url_lifetime)
            if record.status is TaskStatus.COMPLETED and not record.video_url:
                record = replace(record, status=TaskStatus.FAILED,
                                 status_text=TaskStatus.FAILED.value, error=NO_VIDEO_REASON)
            if record.status is TaskStatus.COMPLETED and self._download:
                record = replace(record, download_state="pending")
            poll_now = not record.is_terminal
            state = _TaskState(record, t0=_t0(record), last_age=None,
                               deadline=self._give_up_after)
            state.due = now if poll_now else None
            state.record = replace(record, next_poll_at=from_unix(state.due))
            self._states[task_id] = state
            self._schedule_download(state, now)
            event = (Event(task_id, "status", task.status_text, detail="tracked")
                     if task is not None else Event(task_id, "note", detail="tracked"))
            self.store.save(state.record, [event])
        return poll_now

    def submit(self, prompt: str, *, label: str | None = None, **create_kwargs: Any) -> Task:
        """Create a video task (``model``, ``resolution``, ``aspect_ratio``,
        ``reference_images``, ``first_image``, ``last_image`` as for
        :meth:`VeoClient.create_video <veo_nb.client.VeoClient.create_video>`)
        and track it. Its first poll comes at the schedule's early check:
        the create response already told its status."""
        request = build_create_payload(prompt, **create_kwargs)
        sent = time.time()
        task = self.client.create_video(prompt, **create_kwargs)
        now = time.time()
        record = TaskRecord.from_task(task, label=label, request=request, now=from_unix(sent),
                                      url_lifetime_s=self._url_lifetime)
        with self._lock:
            state = _TaskState(record, t0=sent, last_age=now - sent,
                               deadline=self._give_up_after)
            state.due = self._next_due(state)
            state.record = replace(record, next_poll_at=from_unix(state.due))
            self._states[task.id] = state
            self.store.save(state.record, [
                Event(task.id, "status", task.status_text, observed_at=from_unix(now),
                      detail="created")
            ])
        self._wake.set()
        self._notify(state.record.task)
        return state.record.task

    def submit_many(self, prompts_or_dataframe: Iterable[str] | pd.DataFrame,
                    **defaults: Any) -> pd.DataFrame:
        """Submit many tasks; returns one row per input with ``task_id`` and
        ``error``. A row that is refused (validation, HTTP error) is reported
        in ``error`` and in one summary warning; the others go on.

        A DataFrame's columns are per-row keyword arguments of :meth:`submit`
        (``prompt`` required; ``label``, ``model``, ``resolution``, …);
        ``defaults`` apply where a row has no value."""
        import pandas as pd

        if isinstance(prompts_or_dataframe, pd.DataFrame):
            rows = [
                {k: v for k, v in row.items() if not _missing(v)}
                for row in prompts_or_dataframe.to_dict("records")
            ]
        else:
            rows = [{"prompt": p} for p in prompts_or_dataframe]
        out = []
        for row in rows:
            kwargs = {**defaults, **row}
            prompt, label = kwargs.pop("prompt", None), kwargs.pop("label", None)
            try:
                task_id, error = self.submit(prompt, label=label, **kwargs).id, None
            except (VeoError, TypeError) as exc:
                task_id, error = None, str(exc)
            out.append({"prompt": prompt, "label": label, "task_id": task_id, "error": error})
        frame = pd.DataFrame(out, columns=["prompt", "label", "task_id", "error"])
        failed = frame["error"].notna()
        if failed.any():
            first = frame.loc[failed, "error"].iloc[0]
            warnings.warn(
                f"{int(failed.sum())} of {len(frame)} rows were not submitted "
                f"(see the 'error' column); first error: {first}",
                stacklevel=2,
            )
        return frame

    def untrack(self, task_id: str) -> None:
        """Stop following ``task_id`` (it stays in the store's history)."""
        self.remove([task_id])

    def remove(self, task_ids: Iterable[str] | str, *, delete: bool = False) -> int:
        """Stop following ``task_ids`` and hide them from ``tasks()`` and the
        panel; with ``delete=True`` also erase their records and events from
        the store (for typos and test runs; the service keeps the tasks).
        Returns how many were removed; unknown ids raise :class:`KeyError`."""
        ids = [task_ids] if isinstance(task_ids, str) else list(dict.fromkeys(task_ids))
        with self._lock:
            unknown = [i for i in ids if i not in self._states]
            if unknown:
                raise KeyError(f"not tracked: {', '.join(map(repr, unknown))}")
            states = [self._states.pop(i) for i in ids]
            for state in states:
                state.record = replace(state.record, tracked=False, next_poll_at=None)
            self._cond.notify_all()
        if delete:
            self.store.delete(ids)
        else:
            for state in states:
                self.store.save(state.record, [Event(state.record.task_id, "note",
                                                      detail="untracked")])
        return len(states)

    # ------------------------------------------------------------------ polling

    def refresh(self) -> list[Task]:
        """Poll every tracked unfinished task that is due, concurrently, and
        start downloads of newly finished videos. Returns the tasks whose
        status changed."""
        futures, _ = self._dispatch()
        changed = [f.result() for f in futures]
        return [t for t in changed if t is not None]

    def start(self) -> Tracker:
        """Poll in the background (a daemon thread) until :meth:`stop`.

        Idempotent. If another tracker in this process polls the same store,
        its poller is stopped and this one takes over (it first reloads the
        store, so nothing the other one recorded is lost)."""
        if self._closed:
            raise RuntimeError("this tracker is closed")
        with _registry_lock:
            if self.running:
                return self
            ref = _pollers.get(self._key)
            other = ref() if ref is not None else None
            if other is not None and other is not self:
                other.stop()
            self._load()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"veo_nb-poller:{self._key}", daemon=True
            )
            self._thread.start()
            _pollers[self._key] = weakref.ref(self)
        return self

    def stop(self) -> None:
        """Stop the background poller (tasks keep running on the service)."""
        thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._thread = None
        with _registry_lock:
            ref = _pollers.get(self._key)
            if ref is not None and ref() in (self, None):
                del _pollers[self._key]

    def close(self) -> None:
        """Stop polling, wait for requests and downloads in flight, and close
        the store if this tracker opened it."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._finalizer.detach()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._dl_pool.shutdown(wait=True, cancel_futures=True)
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                _, wake_at = self._dispatch()
            except Exception as exc:  # noqa: BLE001 - the poller must survive anything
                if self._closed or (isinstance(exc, RuntimeError) and "shutdown" in str(exc)):
                    return  # the pools refuse work at interpreter exit
                self._record_error("", "the poller's dispatch", exc)
                wake_at = time.time() + self._poll_interval
            timeout = self._poll_interval * 10 if wake_at is None else wake_at - time.time()
            self._wake.wait(max(0.0, timeout))

    def _dispatch(self) -> tuple[list[Future[Task | None]], float | None]:
        """Start every due poll and download; return the poll futures and the
        unix time when something is due next."""
        if self._closed:
            return [], None
        now = time.time()
        gate = self.client.rate_limited_until - time.monotonic()
        futures: list[Future[Task | None]] = []
        wake: list[float] = []
        with self._lock:
            for task_id, state in self._states.items():
                if state.due is not None and not state.polling:
                    if gate > 0:
                        wake.append(now + gate)
                    elif state.due <= now:
                        futures.append(self._start_poll(task_id, state))
                    else:
                        wake.append(state.due)
                if state.dl_due is not None and not state.downloading:
                    if state.dl_due <= now:
                        state.downloading = True
                        self._dl_pool.submit(self._download_guarded, task_id)
                    else:
                        wake.append(state.dl_due)
        return futures, min(wake) if wake else None

    def _start_poll(self, task_id: str, state: _TaskState) -> Future[Task | None]:
        state.polling = True
        return self._pool.submit(self._poll_guarded, task_id)

    def _submit_poll(self, task_id: str) -> Future[Task | None] | None:
        with self._lock:
            state = self._states.get(task_id)
            if state is None or state.polling or state.due is None:
                return None
            return self._start_poll(task_id, state)

    def _poll_guarded(self, task_id: str) -> Task | None:
        return self._guarded(task_id, self._poll, "polling", "due", "polling")

    def _guarded(self, task_id: str, job: Callable[[str], Task | None], what: str,
                 due_attr: str, busy_attr: str) -> Task | None:
        """Run ``job(task_id)`` on a worker thread so that nothing it raises
        kills that thread or the task: an unexpected error is logged and the
        job retried one poll interval later (``due_attr``); ``busy_attr`` is
        cleared and waiters are woken whatever happens."""
        changed: Task | None = None
        try:
            changed = job(task_id)
        except Exception as exc:  # noqa: BLE001 - one task's bug must not stop the others
            self._record_error(task_id, what, exc)
            with self._lock:
                state = self._states.get(task_id)
                # A poll is only retried while the task is still scheduled
                # (due is None once it finished or was given up on).
                if state is not None and (due_attr != "due" or state.due is not None):
                    setattr(state, due_attr, time.time() + self._poll_interval)
        finally:
            with self._lock:
                state = self._states.get(task_id)
                if state is not None:
                    setattr(state, busy_attr, False)
                self._cond.notify_all()
            self._wake.set()
        if changed is not None:
            self._notify(changed)
        return changed

    def _poll(self, task_id: str) -> Task | None:
        key = (self.client.base_url, task_id)
        p = self._poll_interval
        mono = time.monotonic()
        wait = self.client.rate_limited_until - mono
        with _contact_lock:
            last = _last_contact.get(key)
            if last is not None:
                wait = max(wait, last + p - mono)
            if wait <= 0:
                _last_contact[key] = math.inf
        if wait > 0:
            with self._lock:
                state = self._states.get(task_id)
                if state is not None and state.due is not None:
                    state.due = time.time() + min(wait, p)
            return None
        try:
            if self._bucket is not None:
                self._bucket.acquire()
            try:
                task = self.client.get_result(task_id)
            finally:
                with _contact_lock:
                    _last_contact[key] = time.monotonic()
        except NotFoundError as exc:
            return self._on_not_found(task_id, exc)
        except RateLimitError as exc:
            return self._on_poll_error(task_id, exc, max(exc.retry_after or p, p))
        except VeoError as exc:
            return self._on_poll_error(task_id, exc, None)
        return self._apply(task_id, task)

    def _apply(self, task_id: str, task: Task) -> Task | None:
        """Record one poll's answer; return the task if its status changed."""
        now = time.time()
        stamp = from_unix(now)
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                return None
            rec = state.record
            previous_age = state.last_age
            age = now - state.t0
            status, error = task.status, task.error
            events: list[Event] = []
            changed = task.status_text != rec.status_text or status is not rec.status
            if status is TaskStatus.COMPLETED and not task.video_url:
                status, error = TaskStatus.FAILED, NO_VIDEO_REASON
            if changed:
                events.append(Event(task_id, "status", task.status_text, observed_at=stamp,
                                    detail=NO_VIDEO_REASON if error == NO_VIDEO_REASON else error))
            new = replace(
                rec,
                status=status,
                status_text=status.value if error == NO_VIDEO_REASON else task.status_text,
                model=task.model or rec.model,
                created_at=task.created or rec.created_at,
                video_url=task.video_url,
                error=error,
                raw=dict(task.raw),
                poll_count=rec.poll_count + 1,
                last_polled_at=stamp,
                started_at=rec.started_at or (
                    stamp if status in (TaskStatus.PROCESSING, *_TERMINAL) else None),
            )
            state.errors = 0
            if status.is_terminal:
                state.due = None
                new = replace(new, finished_at=rec.finished_at or stamp)
                if status is TaskStatus.COMPLETED:
                    # The link's 24 h started at the finish, somewhere after
                    # the previous contact: count from there (never too late).
                    finished_after = state.t0 + (previous_age if previous_age is not None else age)
                    new = replace(new, url_expires_at=from_unix(finished_after + self._url_lifetime))
                    if previous_age is not None:
                        self._observed.setdefault((new.model, new.mode), []).append(previous_age)
                    if self._download and rec.download_state == "none":
                        new = replace(new, download_state="pending")
                        events.append(Event(task_id, "download", task.status_text,
                                            observed_at=stamp, detail="pending"))
                        state.dl_due = now
            else:
                state.last_age = age
                state.due = self._next_due(state)
                if state.due is None:
                    new, gave_up = self._give_up(new, age, stamp)
                    events.append(gave_up)
            state.record = new = replace(new, next_poll_at=from_unix(state.due))
            self.store.save(new, events)
            if state.dl_due is not None and not state.downloading and state.dl_due <= now:
                state.downloading = True
                self._dl_pool.submit(self._download_guarded, task_id)
        return new.task if changed else None

    def expected_window(self, task_id: str) -> tuple[float, float]:
        """``(low, high)``: seconds after creation within which ``task_id`` is
        expected to finish. ``expected_duration`` when given; otherwise the
        documented estimate of the task's mode × ``time_scale``, whose ``low``
        is refined once 5 tasks of the same model and mode have finished.
        The schedule polls by it and the panel's progress bars show it."""
        return self._window(self.record(task_id))

    def _window(self, rec: TaskRecord) -> tuple[float, float]:
        if self._expected is not None:
            return self._expected
        with self._lock:
            observed = list(self._observed.get((rec.model, rec.mode), ()))
        return _schedule.learned_window(
            _schedule.documented_window(rec.mode, self.time_scale), observed
        )

    def _next_due(self, state: _TaskState) -> float | None:
        low, high = self._window(state.record)
        age = _schedule.next_poll_age(state.last_age, low=low, high=high,
                                      poll_interval=self._poll_interval,
                                      give_up_age=state.deadline)
        return None if age is None else state.t0 + age

    def _give_up(self, rec: TaskRecord, age: float, stamp: datetime) -> tuple[TaskRecord, Event]:
        message = (f"{_GAVE_UP} after {age:.0f} s without a final status "
                   "(the task may still finish: track() it again to resume)")
        logger.warning("veo_nb: %s: %s", rec.task_id, message)
        return replace(rec, error=message), Event(rec.task_id, "gave_up", rec.status_text,
                                                  observed_at=stamp, detail=message)

    def _on_poll_error(self, task_id: str, exc: VeoError, delay: float | None) -> Task | None:
        now = time.time()
        stamp = from_unix(now)
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                return None
            state.errors += 1
            if delay is None:
                delay = _schedule.error_backoff(state.errors, self._poll_interval)
            rec = state.record
            events = [Event(task_id, "poll_error", rec.status_text, observed_at=stamp,
                            http_status=getattr(exc, "status_code", None),
                            attempt=state.errors, detail=str(exc))]
            state.due = now + delay
            if now - state.t0 >= state.deadline:
                state.due = None
                rec, gave_up = self._give_up(rec, now - state.t0, stamp)
                events.append(gave_up)
            state.record = replace(rec, next_poll_at=from_unix(state.due))
            self.store.save(state.record, events)
        logger.warning("veo_nb: polling %s failed (attempt %d): %s", task_id, state.errors, exc)
        return None

    def _on_not_found(self, task_id: str, exc: NotFoundError) -> Task | None:
        stamp = utcnow()
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                return None
            state.due = None
            state.record = replace(
                state.record, status=TaskStatus.FAILED, status_text=TaskStatus.FAILED.value,
                error=NOT_FOUND_REASON, finished_at=stamp, next_poll_at=None,
                poll_count=state.record.poll_count + 1, last_polled_at=stamp,
            )
            self.store.save(state.record, [
                Event(task_id, "poll_error", None, observed_at=stamp, http_status=404,
                      attempt=1, detail=str(exc)),
                Event(task_id, "status", "failed", observed_at=stamp, detail=NOT_FOUND_REASON),
            ])
            return state.record.task

    # ------------------------------------------------------------------ downloads

    def _schedule_download(self, state: _TaskState, now: float) -> None:
        """Arm the download of a completed task whose video is not on disk."""
        rec = state.record
        if not self._download or rec.status is not TaskStatus.COMPLETED or not rec.video_url:
            return
        if rec.download_state == "saved" and rec.video_path and Path(rec.video_path).is_file():
            return
        if rec.download_state in ("pending", "failed", "saved") and state.dl_due is None:
            if rec.download_state == "saved":
                state.record = replace(rec, download_state="pending", video_path=None)
            state.dl_due = now

    def _download_guarded(self, task_id: str) -> None:
        self._guarded(task_id, self._download_once, "downloading", "dl_due", "downloading")

    def _download_once(self, task_id: str) -> Task | None:
        with self._lock:
            state = self._states.get(task_id)
            if state is None or self._closed:
                return None
            rec = state.record
            state.dl_due = None
        expires = to_unix(rec.url_expires_at)
        if expires is not None and time.time() >= expires:
            return self._download_done(task_id, "expired", error="the video link expired "
                                       "(24 h after completion) before it could be downloaded")
        dest = video_path_in(self.media_dir, task_id)
        try:
            path = self.client.download(rec.task, dest, max_bytes=self._max_video_bytes)
        except ResultExpiredError as exc:
            return self._download_done(task_id, "expired", error=str(exc))
        except (DownloadError, VeoError, OSError) as exc:
            return self._download_done(task_id, "failed", error=str(exc))
        return self._download_done(task_id, "saved", path=path)

    def _download_done(self, task_id: str, outcome: str, *, path: Path | None = None,
                       error: str | None = None) -> Task | None:
        now = time.time()
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                return None
            attempt = None
            if outcome == "failed":
                state.dl_attempts += 1
                attempt = state.dl_attempts
                retry = now + _schedule.error_backoff(attempt, self._poll_interval)
                expires = to_unix(state.record.url_expires_at)
                state.dl_due = retry if expires is None else min(retry, expires)
                logger.warning("veo_nb: download of %s failed (attempt %d): %s",
                               task_id, attempt, error)
            state.record = replace(state.record, download_state=outcome, download_error=error,
                                   video_path=str(path) if path else state.record.video_path)
            self.store.save(state.record, [
                Event(task_id, "download", state.record.status_text, observed_at=from_unix(now),
                      attempt=attempt, detail=f"{outcome}: {path if path else error}")
            ])
            return state.record.task

    # ------------------------------------------------------------------ waiting

    def wait(self, task_ids: Iterable[str] | str | None = None, timeout: Any = _DEFAULT) -> list[Task]:
        """Block until the tasks (default: every tracked one) finish; return them.

        Works with or without :meth:`start` (without, it polls by itself).
        ``timeout`` defaults to twice the longest expected duration plus slack;
        pass ``None`` to wait forever. Raises :class:`~veo_nb.TaskTimeoutError`
        (with ``unfinished``: id → last status) when time runs out or the
        tracker gave up on a task. Ctrl-C stops the waiting, not the tasks:
        they keep running (and billing) on the service, which has no cancel.
        """
        ids = self._targets(task_ids)
        return list(self._iter_finished(ids, timeout, ordered=True))

    def as_completed(self, task_ids: Iterable[str] | str | None = None,
                     timeout: Any = _DEFAULT) -> Iterator[Task]:
        """Yield the tasks (default: every tracked one) as each finishes.
        Timeout and Ctrl-C as for :meth:`wait`."""
        ids = self._targets(task_ids)
        return self._iter_finished(ids, timeout, ordered=False)

    def _targets(self, task_ids: Iterable[str] | str | None) -> list[str]:
        if task_ids is None:
            return [r.task_id for r in self.records()]
        ids = [task_ids] if isinstance(task_ids, str) else [getattr(i, "id", i) for i in task_ids]
        with self._lock:
            unknown = [i for i in ids if i not in self._states]
        if unknown:
            raise KeyError(f"not tracked: {', '.join(map(repr, unknown))}; track() them first")
        return ids

    def _default_timeout(self, ids: Sequence[str]) -> float:
        with self._lock:
            highs = [self._window(self._states[i].record)[1] for i in ids if i in self._states]
        return _schedule.default_wait_timeout(max(highs, default=0.0), self._poll_interval)

    def _iter_finished(self, ids: list[str], timeout: Any, *, ordered: bool) -> Iterator[Task]:
        if timeout is _DEFAULT:
            timeout = self._default_timeout(ids)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        pending = list(dict.fromkeys(ids))
        try:
            while pending:
                wake_at = None if self.running else self._dispatch()[1]
                with self._cond:
                    states = {i: self._states.get(i) for i in pending}
                    done = [i for i, st in states.items() if st is not None and st.record.is_terminal]
                    if done and (not ordered or len(done) == len(pending)):
                        ready = [states[i].record.task for i in done]  # type: ignore[union-attr]
                    else:
                        ready = []
                        stuck = [i for i, st in states.items() if st is None or (
                            i not in done and st.due is None and not st.polling)]
                        left = None if deadline is None else deadline - time.monotonic()
                        if stuck or (left is not None and left <= 0):
                            unfinished = {i: "untracked" if st is None else st.record.status_text
                                          for i, st in states.items() if i not in done}
                            why = ("the tracker gave up on (or untracked) some tasks" if stuck
                                   else f"timed out after {timeout:.3g} s")
                            raise TaskTimeoutError(
                                f"{why}: {len(unfinished)} task(s) unfinished "
                                f"({', '.join(unfinished)}); they keep running on the service; "
                                "wait() again, track() them again or call start() to follow them",
                                unfinished,
                            )
                        self._cond.wait(self._wait_time(left, wake_at))
                for i in done if ready else ():
                    pending.remove(i)
                yield from ready
        except KeyboardInterrupt:
            with self._lock:
                running = [i for i in pending
                           if i in self._states and not self._states[i].record.is_terminal]
            message = (f"stopped waiting; {len(running)} task(s) still running on the service: "
                       f"{', '.join(running)}. The API has no cancel (they are still billed); "
                       "the tracker keeps following them.")
            print(message, file=sys.stderr)
            logger.warning("veo_nb: %s", message)
            raise

    def _wait_download(self, task_id: str, deadline: float | None) -> TaskRecord:
        """Block until ``task_id``'s download is saved or expired (polling
        downloads by itself when no poller runs)."""
        while True:
            wake_at = None if self.running else self._dispatch()[1]
            with self._cond:
                state = self._states[task_id]
                rec = state.record
                if rec.download_state in ("saved", "expired", "none"):
                    return rec
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if rec.download_state == "failed":
                        raise DownloadError(f"could not save the video of {task_id}: "
                                            f"{rec.download_error}")
                    raise TaskTimeoutError(f"the video of {task_id} is still downloading",
                                           {task_id: "downloading"})
                self._cond.wait(self._wait_time(left, wake_at))

    def _wait_time(self, left: float | None, wake_at: float | None) -> float:
        """How long a waiter sleeps: until the deadline or the next due time
        (at most one interval, so a poller that stops meanwhile is noticed)."""
        waits = [self._poll_interval, *(w for w in (
            left, None if wake_at is None else wake_at - time.time()) if w is not None)]
        return max(0.0, min(waits))

    # ------------------------------------------------------------------ plumbing

    def _load(self) -> None:
        """Adopt the store's tracked tasks: resume unfinished ones and pending
        downloads. A task already in memory is replaced only by a newer record."""
        now = time.time()
        for rec in self.store.records(tracked_only=True):
            with self._lock:
                state = self._states.get(rec.task_id)
                if state is not None and (
                    state.polling or state.downloading
                    or (rec.poll_count <= state.record.poll_count
                        and rec.download_state == state.record.download_state)
                ):
                    continue
                state = self._resume_state(rec)
                if state is not None:
                    self._states[rec.task_id] = state
                    self._schedule_download(state, now)

    def _resume_state(self, rec: TaskRecord | None) -> _TaskState | None:
        if rec is None:
            return None
        t0 = _t0(rec)
        never = rec.poll_count == 0 and rec.status_text == NOT_POLLED
        last = to_unix(rec.last_polled_at) or (None if never else to_unix(rec.first_seen_at))
        state = _TaskState(rec, t0=t0, last_age=None if last is None else last - t0,
                           deadline=self._give_up_after)
        if not rec.is_terminal and not _given_up(rec):
            # past its deadline: one last poll, which records the giving up
            state.due = self._next_due(state) or time.time()
        return state

    def recent_errors(self) -> list[Event]:
        """The newest unexpected errors of the tracker's worker threads (a bug,
        a broken store), oldest first, as ``"error"`` events; they are also in
        :meth:`history` (``task_id`` is empty when no task was involved). The
        same error of one task is recorded at most once per
        :data:`ERROR_EVENT_GAP_S` seconds, so a failing task cannot flood it."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, task_id: str, action: str, exc: BaseException) -> None:
        """Log an unexpected worker error and keep it as an ``"error"`` event."""
        logger.error("veo_nb: %s%s failed unexpectedly", action,
                     f" of {task_id}" if task_id else "", exc_info=exc)
        key = (task_id, action, type(exc).__name__)
        now = time.monotonic()
        with self._lock:
            last = self._error_seen.get(key)
            if last is not None and now - last < ERROR_EVENT_GAP_S:
                return
            self._error_seen[key] = now
            event = Event(task_id, "error", None,
                          detail=_excerpt(f"{action} failed: {type(exc).__name__}: {exc}", 500))
            self._errors.append(event)
        try:
            self.store.append_events([event])
        except Exception:  # noqa: BLE001 - the store itself may be what is broken
            logger.exception("veo_nb: could not record the error in the store")

    def _notify(self, task: Task) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(task)
            except Exception:  # noqa: BLE001 - a view's bug must not stop polling
                logger.exception("veo_nb: on_change callback %r failed", callback)

    def _counts(self) -> Counter[str]:
        with self._lock:
            return Counter(
                "gave up" if _given_up(r) else r.status_text
                for r in (s.record for s in self._states.values()) if r.tracked
            )

    def __repr__(self) -> str:
        counts = self._counts()
        parts = ", ".join(f"{n} {_excerpt(s, 40)}" for s, n in sorted(counts.items())) or "no tasks"
        state = "polling" if self.running else "not polling"
        return f"<Tracker: {sum(counts.values())} tasks ({parts}); {state}; store {self._key}>"

    def _repr_html_(self) -> str:
        # The last REPR_ROWS tasks as an escaped table (the panel's fallback table).
        records = self.records()
        shown = html_table(f"veo_nb {self!r}", records[-REPR_ROWS:], time.time(), REPR_ROWS)
        hidden = len(records) - REPR_ROWS
        return shown if hidden <= 0 else f"<p>… {hidden} earlier tasks</p>{shown}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


_default: Tracker | None = None


def default_tracker() -> Tracker:
    """The process's tracker on the default store, made on first use (with
    :func:`veo_nb.connect`) and reused afterwards until it is closed: what
    ``veo_nb.panel()`` shows when given no tracker."""
    global _default
    with _registry_lock:
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
            timeout = tracker._default_timeout([task.id])
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        (done,) = tracker.wait([task.id], timeout=timeout)
        if done.status is TaskStatus.FAILED:
            raise TaskFailedError(done)
        rec = tracker._wait_download(task.id, deadline)
        if rec.download_state == "expired":
            raise DownloadError(f"could not save the video of {task.id}: {rec.download_error}")
        return rec.task
    finally:
        if own:
            tracker.close()


__all__ = ["Tracker", "default_tracker", "generate", "NO_VIDEO_REASON", "NOT_FOUND_REASON"]
