"""Tracking tasks by id, and removing them (a part of :class:`~veo_nb.Tracker`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._engine import (
    NOT_POLLED,
    TaskState,
    Write,
    age_zero,
    given_up,
)
from .errors import (
    OwnershipError,
    ValidationError,
)
from .models import Task, TaskStatus
from .records import LOST_REASON, NO_VIDEO_REASON, Event, TaskRecord, from_unix
from .store import StoreError

if TYPE_CHECKING:  # pragma: no cover

    pass

from ._tracker_base import TrackerBase

#: What a re-track may change in a stored row.
_TRACK_FIELDS = ("tracked", "label", "prompt", "error", "next_poll_at", "owner", "service",
                 "key_fingerprint")
#: What tracking a task lost after 404s again also writes (it runs again).
_REOPEN_FIELDS = ("status", "status_text", "finished_at")


def lost_after_404s(record: TaskRecord) -> bool:
    """Whether ``record`` failed because the service, which knew it, answered
    404 for too long (``track()`` then checks it again)."""
    return record.status is TaskStatus.FAILED and (record.error or "").startswith(LOST_REASON)


class Tracking(TrackerBase):
    """track(), track_many(), untrack() and remove() (see :class:`~veo_nb.Tracker`)."""

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
        (the tasks are followed in memory meanwhile). A student of a class
        store follows a classmate's task without writing it (its owner's
        processes and the teacher's poll it)."""
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
            if state is not None and not self.store.may_write(state.record.owner):
                return True  # a classmate's task on a class store: followed, never written
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

    def may_change(self, record: TaskRecord) -> bool:
        """Whether this session may hide or erase ``record``: its own task,
        or any on a store that is not shared or of which it is a teacher."""
        if record.owner in (None, self.owner):
            return True
        if self._manages_all is None:
            self._manages_all = self.store.manages_all()
        return self._manages_all
