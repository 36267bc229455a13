"""The public face of the polling engine: :class:`Tracker`, :func:`generate`
and :func:`default_tracker`.

Data flows one way: the tracker asks the service (through a
:class:`~veo_nb.client.VeoClient`), writes every change to its
:class:`~veo_nb.store.Store` first, and views read from the tracker or the
store. The work happens in :mod:`veo_nb._engine` (schedule, claims, the
poller thread), :mod:`veo_nb._downloads` and :mod:`veo_nb._waiting`; the
tracker itself is made of :mod:`veo_nb._tracker_base` (its state and reads),
:mod:`veo_nb._tracking` (track, remove) and :mod:`veo_nb._submitting`
(submit, reuse, caps).

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

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _spending, _waiting
from . import records as _records
from ._store_query import Overview, TaskFilter, TaskQuery
from ._submitting import Submitting
from ._tables import html_table
from ._tracker_base import default_owner
from .errors import (
    DownloadError,
    TaskFailedError,
    ValidationError,
    _excerpt,
)
from .models import Task, TaskStatus
from .records import NO_VIDEO_REASON, NOT_FOUND_REASON, TaskRecord

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .widgets import VeoPanel

#: Tasks shown by the tracker's HTML representation (the most recent ones).
REPR_ROWS = 20
_DEFAULT = object()


class Tracker(Submitting):
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

    def records(self) -> list[TaskRecord]:
        """Every tracked task's record, in the order first seen (tasks tracked
        by other processes on the same store included). This reads the whole
        history: :meth:`tasks` with filters, or the panel, read less."""
        unsaved = self._unsaved()
        stored = [r for r in self.store.records() if r.task_id not in unsaved]
        return stored + list(unsaved.values())

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


__all__ = ["Tracker", "default_owner", "default_tracker", "generate", "NO_VIDEO_REASON",
           "NOT_FOUND_REASON"]
