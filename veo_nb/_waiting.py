"""Waiting for tasks: what :meth:`Tracker.wait <veo_nb.Tracker.wait>` and
:meth:`Tracker.as_completed <veo_nb.Tracker.as_completed>` do.

A task is *done* once it is finished and, unless ``downloads=False``, its
video is saved or its download failed or expired (a failed download keeps
being retried in the background). Waiting works the same whoever polls: this
process's engine, or another process on the same store, whose writes the
engine follows. When this process's polling is off, the waiter polls by
itself, so ``wait()`` never hangs on a paused tracker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from . import _schedule
from ._engine import given_up
from ._log import logger
from ._spending import is_unconfirmed
from .errors import TaskTimeoutError
from .models import Task, TaskStatus
from .records import TaskRecord

if TYPE_CHECKING:  # pragma: no cover
    from ._engine import Engine, TaskState

#: Download states after which waiting for a finished video is over.
DOWNLOAD_OVER = ("saved", "expired", "failed", "none")


def done(state: TaskState, downloads: bool) -> bool:
    """Whether a waiter is done with ``state``'s task."""
    rec = state.record
    if not rec.is_terminal:
        return is_unconfirmed(rec)  # a "may have been billed" entry never changes
    return not downloads or rec.status is not TaskStatus.COMPLETED or rec.download_state in DOWNLOAD_OVER


def default_timeout(engine: Engine, ids: Sequence[str]) -> float:
    """Twice the longest expected duration of ``ids`` plus slack for the last
    poll and the download."""
    with engine.lock:
        highs = [engine.window(engine.states[i].record)[1] for i in ids if i in engine.states]
    return _schedule.default_wait_timeout(max(highs, default=0.0), engine.settings.poll_interval)


def _stuck(engine: Engine, state: TaskState | None) -> bool:
    """Nothing will ever finish this task here: untracked, or given up on."""
    if state is None:
        return True
    rec = state.record
    return not rec.is_terminal and (given_up(rec) or (
        engine.mine(rec) and state.due is None and not state.polling and state.pending is None))


def iter_done(engine: Engine, ids: list[str], timeout: float | None, *, ordered: bool,
              downloads: bool) -> Iterator[Task]:
    """Yield the tasks of ``ids`` as they are done (all at once, in ``ids``'
    order, when ``ordered``); raise :class:`TaskTimeoutError` once
    ``timeout`` seconds passed or a task can never finish."""
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    pending = list(dict.fromkeys(ids))
    # Done tasks read from the store, kept: an ordered wait wakes on every
    # change until its last task is done, and must not read them again each time.
    read_done: dict[str, TaskState] = {}
    try:
        while pending:
            wake_at = None if engine.running else engine.dispatch()[1]
            # Finished tasks live in the store only: read them first (a task
            # leaves memory only once the store has its final record).
            stored, missing = engine.stored(i for i in pending if i not in read_done)
            read_done.update((i, st) for i, st in stored.items() if done(st, downloads))
            stored.update(read_done)
            missing |= read_done.keys()
            with engine.cond:
                merged = engine.merged(pending, stored, missing)
                if merged is None:
                    continue  # finished and left memory after the store was read
                states = merged
                # Unfinished in the store but not yet in memory: written by another
                # process a moment ago; the engine follows it within a second.
                coming = {i for i, st in states.items() if st is not None and st is stored.get(i)
                          and not st.record.is_terminal}
                finished = [i for i, st in states.items() if st is not None and done(st, downloads)]
                if finished and (not ordered or len(finished) == len(pending)):
                    ready = [states[i].record.task for i in finished]  # type: ignore[union-attr]
                else:
                    ready = []
                    stuck = [i for i, st in states.items()
                             if i not in finished and i not in coming and _stuck(engine, st)]
                    left = None if deadline is None else deadline - time.monotonic()
                    if stuck or (left is not None and left <= 0):
                        raise _timeout_error(states, finished, stuck, timeout, downloads)
                    engine.cond.wait(_wait_time(engine, left, wake_at))
            for i in finished if ready else ():
                pending.remove(i)
            yield from ready
    except KeyboardInterrupt:
        with engine.lock:
            running = [i for i in pending
                       if i in engine.states and not engine.states[i].record.is_terminal]
        message = (f"stopped waiting; {len(running)} task(s) still running on the service: "
                   f"{', '.join(running)}. The API has no cancel (they are still billed); "
                   "the tracker keeps following them.")
        print(message, file=sys.stderr)
        logger.warning("veo_nb: %s", message)
        raise


def _timeout_error(states: dict[str, TaskState | None], finished: list[str], stuck: list[str],
                   timeout: float | None, downloads: bool) -> TaskTimeoutError:
    unfinished = {}
    for i, st in states.items():
        if i in finished:
            continue
        if st is None:
            unfinished[i] = "untracked"
        elif st.record.is_terminal:
            unfinished[i] = f"{st.record.status_text}, video {st.record.download_state}"
        else:
            unfinished[i] = st.record.status_text
    why = ("the tracker gave up on (or untracked) some tasks" if stuck
           else f"timed out after {timeout:.3g} s")
    videos = " (or their videos are still downloading: downloads=False waits for statuses only)" \
        if downloads else ""
    return TaskTimeoutError(
        f"{why}: {len(unfinished)} task(s) unfinished{videos} ({', '.join(unfinished)}); "
        "they keep running on the service; wait() again, track() them again or call "
        "start() to follow them",
        unfinished,
    )


def _wait_time(engine: Engine, left: float | None, wake_at: float | None) -> float:
    """How long a waiter sleeps: until the deadline or the next due time (at
    most one interval, so a poller that stops meanwhile is noticed)."""
    waits = [engine.settings.poll_interval, *(w for w in (
        left, None if wake_at is None else wake_at - time.time()) if w is not None)]
    return max(0.0, min(waits))


def until_saved(engine: Engine, task_id: str, deadline: float | None) -> TaskRecord:
    """Block until ``task_id``'s video is saved or expired (a failed download
    is retried meanwhile) and return its record; at ``deadline`` return a
    failed one, and raise :class:`TaskTimeoutError` for one still pending."""
    while True:
        wake_at = None if engine.running else engine.dispatch()[1]
        found = engine.lookup(task_id)
        if found is None:
            raise KeyError(f"{task_id!r} is not known to this tracker: track() it first")
        with engine.cond:
            state = engine.states.get(task_id)
            rec = found if state is None else state.record
            if rec.download_state in ("saved", "expired", "none"):
                return rec
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if rec.download_state == "failed":
                    return rec
                raise TaskTimeoutError(f"the video of {task_id} is still downloading",
                                       {task_id: "downloading"})
            engine.cond.wait(_wait_time(engine, left, wake_at))
