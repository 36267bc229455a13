"""The polling engine: one per store per process, shared by every
:class:`~veo_nb.Tracker` made on that store.

It holds each tracked task's state, follows the store (changes written by
other processes show up here within the store's ``follow_every``), decides when a
task is due, takes the store's poll claim before polling it, polls on a
bounded pool, and writes every answer to the store *before* memory shows it.
One poll and its answer handlers are in :mod:`veo_nb._polls`, downloads in
:mod:`veo_nb._downloads`, waiting in :mod:`veo_nb._waiting`.

Threads, precisely:

* one thread per engine, ``veo_nb-poller:<store>``: every
  ``store.follow_every`` (0.2 s, and at once on a PostgreSQL ``NOTIFY``)
  it reads what other processes changed (a cheap
  revision check first) and, unless polling is paused, starts the polls and
  downloads that are due, without waiting for slow ones;
* polls run on a pool of ``max_workers`` threads, downloads on a small pool;
* ``on_change`` callbacks run on those threads.

Rules every poll keeps, whatever the number of trackers and processes:

* one task is polled at most once per ``poll_interval``: the store's claim
  (:meth:`veo_nb.store.Store.claim_poll`) refuses a poll sooner than one
  interval after the last contact any process recorded, and a claim held by
  a live process; inside one process a guard per (service, task) does the
  same across stores;
* a poll that may have reached the service counts as a contact even when
  its answer was lost; only a request that provably never left is retried
  sooner (by the client);
* a 429's ``Retry-After`` pauses every process's polls of that service;
* only tasks of this client's service (and API key) are polled, and on a
  class store a student's own (:meth:`~veo_nb.store.BaseStore.may_write`);
  the others are followed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _schedule
from ._exit import on_exit
from ._log import logger
from .errors import _excerpt
from .models import Task, TaskStatus
from .records import (
    Event,
    TaskRecord,
    to_unix,
)
from ._engine_work import EngineWork
from ._process import holder_dead, process_id
from ._store_sql import Row
from ._task_state import (
    NOT_POLLED,
    Settings,
    TaskState,
    TokenBucket,
    Write,
    age_zero,
    given_up,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._downloads import Downloads
    from ._polls import Polls
    from .client import VeoClient
    from .store import BaseStore

#: Unexpected worker errors kept in memory (see ``Tracker.recent_errors``).
RECENT_ERRORS = 50
#: The same unexpected error of one task is recorded at most this often (seconds).
ERROR_EVENT_GAP_S = 300.0



class Engine(EngineWork):
    """Task states, schedule, claims and the poller thread of one store in
    one process (see the module docstring). Made by :func:`attach`."""

    def __init__(self, store: BaseStore, own_store: bool, settings: Settings, *, polling: bool) -> None:
        from ._downloads import Downloads
        from ._polls import Polls

        self.store = store
        self.key = store.key
        self.me = process_id()
        self.settings = settings
        self._own_store = own_store
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.states: dict[str, TaskState] = {}
        self.observed: dict[tuple[str | None, str | None], list[float]] = {}
        self.callbacks: list[Callable[[Task], Any]] = []
        self.errors: deque[Event] = deque(maxlen=RECENT_ERRORS)
        self._error_seen: dict[tuple[str, str, str], float] = {}
        self.rev = 0
        self._version: int | None = None
        self.gate_until = 0.0  # unix time; the shared 429 gate of our service
        self.closed = False
        self.polling = polling
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.pool = ThreadPoolExecutor(32, thread_name_prefix="veo_nb-poll")
        self.downloads: Downloads = Downloads(self)
        self.polls: Polls = Polls(self)
        self._facades = 0
        self.rev = self._load()
        self._thread = threading.Thread(target=self._run, name=f"veo_nb-poller:{self.key}",
                                        daemon=True)
        self._thread.start()
        self._unsubscribe = store.subscribe(self.wake)  # PostgreSQL: woken at once by NOTIFY
        on_exit(self, Engine._at_exit)

    # ------------------------------------------------------------------ facts

    @property
    def client(self) -> VeoClient:
        return self.settings.client

    @property
    def running(self) -> bool:
        """True while polling is on and the poller thread runs."""
        return self.polling and self._thread.is_alive() and not self._stop.is_set()

    def mine(self, record: TaskRecord) -> bool:
        """Whether this engine's client may poll ``record``: its service, and
        the key that created it (a store written before either was recorded
        is adopted), and a task this session may write (on a class store, a
        student's own: a classmate's is only followed)."""
        client = self.client
        return (record.service in (None, client.service)
                and record.key_fingerprint in (None, client.key_fingerprint)
                and self.store.may_write(record.owner))

    def records(self) -> list[TaskRecord]:
        """The records this engine holds (the live tasks: still polled, or
        their video still to fetch), in the order first seen."""
        with self.lock:
            return [s.record for s in self.states.values() if s.record.tracked]

    def lookup(self, task_id: str) -> TaskRecord | None:
        """``task_id``'s newest record: the one in memory, else the store's
        (None when the store has none). A finished task read from the store
        that turns out to need work here (its saved video was deleted) is
        taken back into memory, which fetches it again."""
        with self.lock:
            state = self.states.get(task_id)
            if state is not None:
                return state.record
        row = self.store.row(task_id)
        if row is None:
            return None
        with self.lock:
            if task_id not in self.states and row.record.tracked:
                self.apply_row(row, time.time())
            state = self.states.get(task_id)
            return row.record if state is None else state.record

    def stored(self, task_ids: Iterable[str]) -> tuple[dict[str, TaskState], set[str]]:
        """States of those of ``task_ids`` that are not in memory but tracked
        in the store (finished tasks; not kept), and the ids that were not in
        memory when the store was read (an id in neither left memory after
        that read: read again). Call without the lock."""
        with self.lock:
            missing = {i for i in task_ids if i not in self.states}
        rows = self.store.rows_of(sorted(missing)) if missing else []
        states = {row.record.task_id: TaskState(row.record, row.rev, t0=age_zero(row.record),
                                                last_age=None)
                  for row in rows if row.record.tracked}
        return states, missing

    def merged(self, task_ids: Iterable[str], stored: dict[str, TaskState],
               missing: set[str]) -> dict[str, TaskState | None] | None:
        """Each id's state: in memory, else from ``stored`` (what
        :meth:`stored` read), else None (not tracked); None as a whole when a
        task left memory after the store was read (read again). Lock held."""
        states = {i: self.states.get(i) or stored.get(i) for i in task_ids}
        if any(st is None and i not in missing for i, st in states.items()):
            return None
        return states

    def settle(self, task_id: str) -> None:
        """Drop ``task_id`` from memory when nothing is left to do for it here
        (finished, its video saved or not wanted, no write pending, nothing in
        flight): the store has it, and a long history costs no memory (lock
        held)."""
        state = self.states.get(task_id)
        if (state is not None and state.record.is_terminal and state.due is None
                and state.dl_due is None and not state.polling and not state.downloading
                and state.pending is None and not state.flushing):
            del self.states[task_id]

    def window(self, rec: TaskRecord) -> tuple[float, float]:
        """The expected (low, high) finishing window of ``rec`` (seconds of age)."""
        if self.settings.expected is not None:
            return self.settings.expected
        with self.lock:
            observed = list(self.observed.get((rec.model, rec.mode), ()))
        return _schedule.learned_window(
            _schedule.documented_window(rec.mode, self.client.time_scale), observed
        )

    def next_due(self, state: TaskState) -> float | None:
        """When the schedule polls ``state`` next (unix), None to give up."""
        low, high = self.window(state.record)
        age = _schedule.next_poll_age(state.last_age, low=low, high=high,
                                      poll_interval=self.settings.poll_interval,
                                      give_up_age=state.deadline)
        return None if age is None else state.t0 + age

    # ------------------------------------------------------------------ lifecycle

    def attach(self) -> None:
        with self.lock:
            self._facades += 1

    def detach(self) -> None:
        """A tracker let go of this engine; the last one closes it."""
        with self.lock:
            self._facades -= 1
            last = self._facades <= 0
        if last:
            self.close()

    def start(self) -> None:
        """Turn polling on (the poller thread follows the store either way)."""
        if self.closed:
            raise RuntimeError("this tracker is closed")
        with self.lock:
            self.polling = True
        self.wake()

    def stop(self) -> None:
        """Turn polling off and give this process's claims to the others."""
        with self.lock:
            self.polling = False
            self.cond.notify_all()
        self._release()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, wait for polls and downloads in flight, release
        the claims and close the store if the engine opened it."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.polling = False
            self.cond.notify_all()
        _forget(self)
        self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.downloads.shutdown(wait=True)
        self._release()
        if self._own_store:
            self.store.close()

    def _at_exit(self) -> None:
        """At interpreter exit: stop at once, let the others take over."""
        self._stop.set()
        self._wake.set()
        self.polling = False
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.downloads.shutdown(wait=False)
        if not self.closed:
            self._release()

    def _release(self) -> None:
        try:
            self.store.release(self.me)
        except Exception:  # noqa: BLE001 - claims expire by themselves anyway
            logger.debug("veo_nb: could not release claims", exc_info=True)

    # ------------------------------------------------------------------ callbacks, errors

    def on_change(self, callback: Callable[[Task], Any]) -> Callable[[], None]:
        with self.lock:
            self.callbacks.append(callback)

        def unsubscribe() -> None:
            with self.lock:
                if callback in self.callbacks:
                    self.callbacks.remove(callback)

        return unsubscribe

    def notify(self, task: Task) -> None:
        with self.lock:
            callbacks = list(self.callbacks)
        for callback in callbacks:
            try:
                callback(task)
            except Exception:  # noqa: BLE001 - a view's bug must not stop polling
                logger.exception("veo_nb: on_change callback %r failed", callback)

    def record_error(self, task_id: str, action: str, exc: BaseException) -> None:
        """Log an unexpected worker error and keep it as an ``"error"`` event
        (the same one of one task at most every :data:`ERROR_EVENT_GAP_S`)."""
        logger.error("veo_nb: %s%s failed unexpectedly", action,
                     f" of {task_id}" if task_id else "", exc_info=exc)
        key = (task_id, action, type(exc).__name__)
        now = time.monotonic()
        with self.lock:
            last = self._error_seen.get(key)
            if last is not None and now - last < ERROR_EVENT_GAP_S:
                return
            self._error_seen[key] = now
            event = Event(task_id, "error", None,
                          detail=_excerpt(f"{action} failed: {type(exc).__name__}: {exc}", 500))
            self.errors.append(event)
        try:
            self.store.append_events([event])
        except Exception:  # noqa: BLE001 - the store itself may be what is broken
            logger.debug("veo_nb: could not record the error in the store", exc_info=True)

    # ------------------------------------------------------------------ states from the store

    def _load(self) -> int:
        """Adopt the store's live tasks (still to poll, or their video still
        to fetch); returns the revision read up to."""
        newest = self.store.revision()
        rows = self.store.live_rows()
        now = time.time()
        with self.lock:
            for row in rows:
                self.apply_row(row, now)
        return newest

    def follow(self) -> None:
        """Apply what other processes wrote since we last looked."""
        version = self.store.version()
        if version == self._version:
            return
        rows, gone, newest = self.store.changes(self.rev)
        gate = self.store.rate_limited_until(self.client.service, horizon=self.gate_cap_s)
        changed: list[Task] = []
        now = time.time()
        with self.lock:  # no store I/O under the lock: readers never wait for the store
            for row in rows:
                task = self.apply_row(row, now)
                if task is not None:
                    changed.append(task)
            for task_id in gone:  # erased by another process: views drop them too
                erased = self.states.pop(task_id, None)
                # a finished task was not held here: only its id is left to tell
                changed.append(erased.record.task if erased is not None else
                               TaskRecord(task_id, status=TaskStatus.UNKNOWN).task)
            self.rev = max(self.rev, newest)
            self.gate_until = max(self.gate_until, gate)
            # Only now: had reading or applying failed, the next look reads again.
            self._version = version
            if rows or gone:
                self.cond.notify_all()
        for task in changed:
            self.notify(task)

    def apply_row(self, row: Row, now: float, *, force: bool = False,
                  keep: bool = False) -> Task | None:
        """Bring memory to a stored row newer than what it holds (or, with
        ``force``, as new: claims change no revision) (lock held); return the
        task when something a view shows changed. A finished task is then
        dropped from memory (:meth:`settle`), unless ``keep``: the caller
        writes it next."""
        rec = row.record
        state = self.states.get(rec.task_id)
        if state is not None and row.rev <= state.rev and not force:
            return None
        if not rec.tracked:
            if state is not None:
                del self.states[rec.task_id]
                return rec.task
            return None
        if state is None:
            state = self.states[rec.task_id] = TaskState(
                rec, row.rev, t0=age_zero(rec), last_age=None,
                deadline=self.settings.give_up_after)
            old = None
        else:
            old = state.record
            state.record, state.rev = rec, row.rev
        state.contact_at = row.contact_at if row.contact_at is not None else to_unix(
            rec.last_polled_at)
        state.poller, state.poll_until = row.poller, row.poll_until
        state.downloader, state.download_until = row.downloader, row.download_until
        if state.contact_at is not None:
            state.last_age = state.contact_at - state.t0
        elif rec.poll_count or rec.status_text != NOT_POLLED:
            seen = to_unix(rec.first_seen_at)
            state.last_age = None if seen is None else seen - state.t0
        if not state.polling and state.pending is None:
            self.reschedule(state, now)
        self.downloads.schedule(state, now)
        if not keep:
            self.settle(rec.task_id)
        if old is None or _shown(old) != _shown(rec):
            return rec.task
        return None

    def reschedule(self, state: TaskState, now: float) -> None:
        """Set when ``state`` is next polled (or its claim checked): never
        sooner than one interval after the last contact any process recorded,
        and not before another live process's claim runs out."""
        rec = state.record
        if rec.is_terminal or given_up(rec) or not self.mine(rec):
            state.due = None
            return
        due = self.next_due(state)
        if due is None:  # past its deadline: one last poll, which records the giving up
            due = now
        if state.contact_at is not None:
            due = max(due, state.contact_at + self.settings.poll_interval)
        if (state.poller not in (None, self.me) and (state.poll_until or 0.0) > now
                and not holder_dead(state.poller)):
            due = max(due, state.poll_until or now)
        state.due = due

def _shown(record: TaskRecord) -> tuple[Any, ...]:
    """What a view shows of a record: a change here is worth an ``on_change``."""
    return (record.status_text, record.error, record.download_state, record.video_path,
            record.label, record.prompt, record.tracked, record.video_url)


# ---------------------------------------------------------------------- registry

_registry_lock = threading.RLock()
_engines: dict[str, Engine] = {}


def attach(store: BaseStore, own_store: bool, settings: Settings, *, polling: bool) -> Engine:
    """The engine of ``store``'s key in this process: the running one, taken
    over with ``settings`` (the newest tracker's), or a new one."""
    with _registry_lock:
        engine = _engines.get(store.key)
        if engine is not None and not engine.closed:
            if own_store:
                store.close()  # the engine keeps the store it opened first
            with engine.lock:
                engine.settings = settings
                if polling:
                    engine.polling = True
                now = time.time()
                for state in engine.states.values():
                    if not state.polling and state.pending is None:
                        engine.reschedule(state, now)
                    engine.downloads.schedule(state, now)
            engine.attach()
            engine.wake()
            return engine
        engine = Engine(store, own_store, settings, polling=polling)
        engine.attach()
        _engines[store.key] = engine
        return engine


def _forget(engine: Engine) -> None:
    with _registry_lock:
        if _engines.get(engine.key) is engine:
            del _engines[engine.key]


def engines() -> list[Engine]:
    """The open engines of this process."""
    with _registry_lock:
        return list(_engines.values())


__all__ = ["Engine", "NOT_POLLED", "Settings", "TaskState", "TokenBucket", "Write", "age_zero",
           "attach", "engines", "given_up", "holder_dead", "process_id"]
