"""The engine's work (a mixin of :class:`~veo_nb._engine.Engine`): writes to
the store first, retried when they fail; the poller thread's loop, which
follows the store and starts what is due; and the guard every worker job runs
under."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ._retry import gate_cap_s
from ._task_state import TaskState, Write
from .models import Task

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Iterable

    from ._downloads import Downloads
    from ._polls import Polls
    from ._task_state import Settings
    from .client import VeoClient
    from .store import BaseStore

#: The shortest gap between two looks, however often other processes write.
FOLLOW_MIN_GAP_S = 0.1
#: Pauses before retrying a store write that failed (seconds), the last one repeated.
WRITE_RETRY_S = (0.2, 1.0, 5.0, 30.0)


class EngineWork:
    """Writes, dispatch and the poller loop; the engine provides the state."""

    store: BaseStore
    settings: Settings
    lock: threading.RLock
    cond: threading.Condition
    states: dict[str, TaskState]
    pool: ThreadPoolExecutor
    downloads: Downloads
    polls: Polls
    polling: bool
    closed: bool
    gate_until: float
    _stop: threading.Event
    _wake: threading.Event

    @property
    def client(self) -> VeoClient:  # pragma: no cover - the engine's
        raise NotImplementedError

    def follow(self) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def notify(self, task: Task) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def settle(self, task_id: str) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def wake(self) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    def record_error(self, task_id: str, action: str,
                     exc: BaseException) -> None:  # pragma: no cover - the engine's
        raise NotImplementedError

    @property
    def gate_cap_s(self) -> float:
        """The longest 429 gate this engine keeps, shares or reads from the
        store (:func:`~veo_nb._retry.gate_cap_s` of its client's clock)."""
        return gate_cap_s(self.client.time_scale)

    def gate(self, now: float) -> float:
        """Unix time before which no poll is sent: the 429 gate shared through
        the store (as last read), or the client's own, whichever ends later."""
        return max(self.gate_until, now + self.client.rate_limited_until - time.monotonic())

    def commit(self, task_id: str, write: Write) -> TaskState | None:
        """Write to the store first; only then show it in memory. A failed
        write is kept and retried (memory keeps the last stored record, and
        the task is not polled meanwhile); the error is recorded."""
        try:
            row = self.store.write(write.record, write.events, fields=write.fields,
                                   claim=write.claim, reopen=write.reopen,
                                   replaces=write.replaces)
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors, a full disk, a closed store
            self._write_failed(task_id, write, exc)
            return None
        with self.lock:
            state = self.states.get(task_id)
            if state is None:
                return None
            state.pending = state.pending_due = None
            if row.rev > state.rev:
                state.record, state.rev = row.record, row.rev
                state.contact_at = row.contact_at
                state.poller, state.poll_until = row.poller, row.poll_until
                state.downloader, state.download_until = row.downloader, row.download_until
            if write.on_saved is not None:
                write.on_saved(state)
            self.settle(task_id)
            self.cond.notify_all()
            task = state.record.task
        self.wake()
        if write.notify:
            self.notify(task)
        return state

    def _write_failed(self, task_id: str, write: Write, exc: BaseException) -> None:
        with self.lock:
            state = self.states.get(task_id)
            if state is not None:
                write.attempts += 1
                state.pending = write
                state.due = None
                pause = WRITE_RETRY_S[min(write.attempts, len(WRITE_RETRY_S)) - 1]
                state.pending_due = time.time() + pause
        self.record_error(task_id, "saving to the store", exc)

    def _flush(self, task_id: str) -> None:
        """Retry a pending write (on a worker thread)."""
        with self.lock:
            state = self.states.get(task_id)
            write = None if state is None else state.pending
        try:
            if write is not None:
                self.commit(task_id, write)
        finally:
            with self.lock:
                if state is not None:
                    state.flushing = False
                    self.settle(task_id)

    # ------------------------------------------------------------------ dispatch

    def dispatch(self) -> tuple[list[Future[Task | None]], float | None]:
        """Start every due poll, download and write retry; return the poll
        futures and the unix time when something is due next."""
        if self.closed:
            return [], None
        now = time.time()
        gate = self.gate(now)
        futures: list[Future[Task | None]] = []
        wake: list[float] = []
        with self.lock:
            for task_id, state in self.states.items():
                if state.pending is not None:
                    if state.pending_due is not None and not state.flushing:
                        if state.pending_due <= now:
                            state.flushing = True
                            self.pool.submit(self._flush, task_id)
                        else:
                            wake.append(state.pending_due)
                    continue
                if state.due is not None and not state.polling:
                    if gate > now:
                        wake.append(gate)
                    elif state.due <= now:
                        state.polling = True
                        futures.append(self.pool.submit(self.polls.run, task_id))
                    else:
                        wake.append(state.due)
                wake.extend(self.downloads.dispatch(task_id, state, now))
        return futures, min(wake) if wake else None

    def poll_now(self, task_ids: Iterable[str]) -> list[Future[Task | None]]:
        """Start polls of ``task_ids`` that are due (a newly tracked id is)."""
        futures = []
        now = time.time()
        with self.lock:
            for task_id in task_ids:
                state = self.states.get(task_id)
                if (state is not None and not state.polling and state.pending is None
                        and state.due is not None and state.due <= now):
                    state.polling = True
                    futures.append(self.pool.submit(self.polls.run, task_id))
        return futures

    def _run(self) -> None:
        followed = -math.inf  # time.monotonic() of the last look at the store
        while not self._stop.is_set():
            self._wake.clear()
            wake_at: float | None = None
            # Woken for every write of every process (NOTIFY), a follower
            # still looks at most every FOLLOW_MIN_GAP_S: many processes on a
            # busy store would otherwise spend the machine on looking.
            follow_in = FOLLOW_MIN_GAP_S - (time.monotonic() - followed)
            try:
                if follow_in <= 0:
                    followed = time.monotonic()
                    self.follow()
                    follow_in = self.store.follow_every
                if self.polling:
                    wake_at = self.dispatch()[1]
            except Exception as exc:  # noqa: BLE001 - the poller must survive anything
                if self.closed or (isinstance(exc, RuntimeError) and "shutdown" in str(exc)):
                    return  # the pools refuse work at interpreter exit
                self.record_error("", "the poller", exc)
            timeout = follow_in if wake_at is None else min(follow_in, wake_at - time.time())
            self._wake.wait(max(0.0, timeout))

    def guarded(self, task_id: str, job: Callable[[str], Task | None], what: str,
                due_attr: str, busy_attr: str) -> Task | None:
        """Run ``job(task_id)`` on a worker thread so that nothing it raises
        kills that thread or the task: an unexpected error is recorded and
        the job retried one poll interval later (``due_attr``); ``busy_attr``
        is cleared and waiters are woken whatever happens."""
        changed: Task | None = None
        try:
            changed = job(task_id)
        except Exception as exc:  # noqa: BLE001 - one task's bug must not stop the others
            self.record_error(task_id, what, exc)
            with self.lock:
                state = self.states.get(task_id)
                # A poll is only retried while the task is still scheduled
                # (due is None once it finished or was given up on).
                if state is not None and (due_attr != "due" or state.due is not None):
                    setattr(state, due_attr, time.time() + self.settings.poll_interval)
        finally:
            with self.lock:
                state = self.states.get(task_id)
                if state is not None:
                    setattr(state, busy_attr, False)
                    self.settle(task_id)
                self.cond.notify_all()
            self.wake()
        return changed
