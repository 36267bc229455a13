"""The polling engine: one per store per process, shared by every
:class:`~veo_nb.Tracker` made on that store.

It holds each tracked task's state, follows the store (changes written by
other processes show up here within :data:`FOLLOW_EVERY_S`), decides when a
task is due, takes the store's poll claim before polling it, polls on a
bounded pool, and writes every answer to the store *before* memory shows it.
Downloads are in :mod:`veo_nb._downloads`, waiting in :mod:`veo_nb._waiting`.

Threads, precisely:

* one thread per engine, ``veo_nb-poller:<store>``: every
  :data:`FOLLOW_EVERY_S` it reads what other processes changed (a cheap
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
* only tasks of this client's service (and API key) are polled; the others
  are followed.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _schedule
from ._exit import on_exit
from ._log import logger
from .errors import APIError, NotFoundError, RateLimitError, VeoError, _excerpt
from .models import Task, TaskStatus
from .records import (
    LOST_REASON,
    NO_VIDEO_REASON,
    NOT_FOUND_REASON,
    STILL_CHECKING,
    Event,
    TaskRecord,
    from_unix,
    to_unix,
)
from ._store_sql import POLL_FIELDS, Row

if TYPE_CHECKING:  # pragma: no cover
    from ._downloads import Downloads
    from .client import VeoClient
    from .store import BaseStore

#: Seconds between two looks at the store for other processes' changes.
FOLLOW_EVERY_S = 0.2
#: The shortest gap between two looks, however often other processes write.
FOLLOW_MIN_GAP_S = 0.1
#: The least time a claim outlives its holder's next due time (seconds).
CLAIM_GRACE_S = 10.0
#: Unexpected worker errors kept in memory (see ``Tracker.recent_errors``).
RECENT_ERRORS = 50
#: The same unexpected error of one task is recorded at most this often (seconds).
ERROR_EVENT_GAP_S = 300.0
#: Pauses before retrying a store write that failed (seconds), the last one repeated.
WRITE_RETRY_S = (0.2, 1.0, 5.0, 30.0)
#: ``status_text`` of a tracked id before its first poll.
NOT_POLLED = "not polled yet"
#: How long a task the service knew keeps being checked after 404s, past its
#: expected window (seconds, on the service's clock).
NOT_FOUND_GRACE_S = 30 * 60
_GAVE_UP = "gave up polling"
_TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED)

# Within one process: the last contact with the service per (service, task
# id), so that two engines (two stores) never poll a task sooner than the
# interval either. time.monotonic(); inf while a poll is in flight.
_contact_lock = threading.Lock()
_last_contact: dict[tuple[str, str], float] = {}


def refused_backoff(poll_interval: float) -> float:
    """The least time before a process asks again for a claim it was just
    refused (seconds): a quarter of the interval, between 50 ms and 5 s. It
    only matters when the row does not say when the claim ends (another
    machine whose clock runs ahead stamped the contact): otherwise the next
    attempt waits for the claim's end anyway."""
    return min(max(poll_interval / 4, 0.05), 5.0)


def holder_dead(holder: str | None) -> bool:
    """Whether the process holding a claim is known to be gone: it ran on this
    machine, in this pid namespace, and its pid is free (a crashed or
    restarted kernel). A holder on another machine or in another container
    with the same host name, or a pid now used by another process, counts as
    alive: its claim then simply runs out."""
    if not holder:
        return False
    parts = holder.split(":")
    if len(parts) != 4 or holder == process_id():
        return False  # an older release's holder says no namespace: let its claim run out
    host, pid_text, _, space = parts
    if host != socket.gethostname() or not pid_text.isdigit() or space != _pid_space():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's, or not ours to ask
        return False
    return False


def process_id() -> str:
    """Who this process is in the store's claims: host, pid, a random part
    (a pid can be reused after a crash) and its pid namespace (containers
    that share a host name do not share pids)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:  # also after a fork
        _PROCESS = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}:{_pid_space()}")
    return _PROCESS[1]


def _pid_space() -> str:
    """This process's pid namespace (Linux), or ``""`` where it cannot tell."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


_PROCESS: tuple[int, str] | None = None


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


class Engine:
    """Task states, schedule, claims and the poller thread of one store in
    one process (see the module docstring). Made by :func:`attach`."""

    def __init__(self, store: BaseStore, own_store: bool, settings: Settings, *, polling: bool) -> None:
        from ._downloads import Downloads

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
        is adopted)."""
        client = self.client
        return (record.service in (None, client.service)
                and record.key_fingerprint in (None, client.key_fingerprint))

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
        gate = self.store.rate_limited_until(self.client.service)
        changed: list[Task] = []
        now = time.time()
        with self.lock:  # no store I/O under the lock: readers never wait for the store
            for row in rows:
                task = self.apply_row(row, now)
                if task is not None:
                    changed.append(task)
            for task_id in gone:  # erased by another process: views drop them too
                erased = self.states.pop(task_id, None)
                if erased is not None:
                    changed.append(erased.record.task)
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

    # ------------------------------------------------------------------ writes

    def commit(self, task_id: str, write: Write) -> TaskState | None:
        """Write to the store first; only then show it in memory. A failed
        write is kept and retried (memory keeps the last stored record, and
        the task is not polled meanwhile); the error is recorded."""
        try:
            row = self.store.write(write.record, write.events, fields=write.fields,
                                   claim=write.claim, reopen=write.reopen)
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
        gate = max(self.gate_until, now + self.client.rate_limited_until - time.monotonic())
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
                        futures.append(self.pool.submit(self._poll_guarded, task_id))
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
                    futures.append(self.pool.submit(self._poll_guarded, task_id))
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
                    follow_in = FOLLOW_EVERY_S
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

    # ------------------------------------------------------------------ one poll

    def _poll_guarded(self, task_id: str) -> Task | None:
        return self.guarded(task_id, self._poll, "polling", "due", "polling")

    def _poll(self, task_id: str) -> Task | None:
        settings = self.settings
        client, interval = settings.client, settings.poll_interval
        key = (client.service, task_id)
        mono = time.monotonic()
        with _contact_lock:
            previous = _last_contact.get(key)
            wait = 0.0 if previous is None else previous + interval - mono
            if wait <= 0:
                _last_contact[key] = math.inf
        if wait > 0:  # another store of this process polled it a moment ago
            with self.lock:
                state = self.states.get(task_id)
                if state is not None and state.due is not None:
                    state.due = time.time() + min(wait, interval)
            return None
        reached = False
        try:
            if settings.bucket is not None:
                settings.bucket.acquire()
            # The claim is taken right before the one attempt goes out (the
            # client neither retries nor waits at its 429 gate): a claim's
            # lease covers that request, never a wait or a retry after it.
            sent = time.time()
            with self.lock:
                state = self.states.get(task_id)
                holder = None if state is None else state.poller
            row = self.store.claim_poll(task_id, self.me, now=sent, interval=interval,
                                        until=sent + settings.claim_s,
                                        orphan=holder if holder_dead(holder) else None)
            if row is None:  # another process polls it, or did so a moment ago
                self._claim_refused(task_id)
                return None
            reached = True
            try:
                task = client.get_result(task_id, retry=False)
            except APIError as exc:
                reached = exc.reached
                raise
        except NotFoundError as exc:
            return self._on_not_found(task_id, exc)
        except RateLimitError as exc:
            wait_s = max(exc.retry_after or interval, interval if exc.reached else 0.0)
            if exc.reached:
                self._share_gate(exc.retry_after)
            return self._on_poll_error(task_id, exc, wait_s, reached=exc.reached)
        except VeoError as exc:
            return self._on_poll_error(task_id, exc, None, reached=reached)
        finally:
            with _contact_lock:
                if reached:
                    _last_contact[key] = time.monotonic()
                elif previous is None:
                    _last_contact.pop(key, None)
                else:
                    _last_contact[key] = previous
        return self._on_answer(task_id, task)

    def _claim_refused(self, task_id: str) -> None:
        """Another process holds the task's claim, or polled it less than one
        interval ago (its claim changes no revision, so memory may not know
        yet): read its row and look again when that claim runs out, never
        sooner than :func:`refused_backoff` from now. (Without this, the
        worker would hand the job straight back to the dispatcher: a write
        transaction on the shared store per turn, a core spent.)"""
        row = self.store.row(task_id)
        now = time.time()
        with self.lock:
            state = self.states.get(task_id)
            if state is None:
                return
            task = None if row is None else self.apply_row(row, now, force=True)
            if state.pending is None:
                self.reschedule(state, now)
                if state.due is not None:
                    state.due = max(state.due, now + refused_backoff(self.settings.poll_interval))
        if task is not None:
            self.notify(task)

    def _share_gate(self, retry_after: float | None) -> None:
        if retry_after is None:
            return
        until = time.time() + retry_after
        with self.lock:
            self.gate_until = max(self.gate_until, until)
        try:
            self.store.limit_rate(self.client.service, until)
        except Exception:  # noqa: BLE001 - the client's own gate still holds
            logger.debug("veo_nb: could not share the rate limit", exc_info=True)

    def _claim(self, due: float | None, contact: float) -> dict[str, Any]:
        """The claim columns written with a poll's outcome: the contact, and
        our claim until the next due time plus the grace."""
        until = None if due is None else due + self.settings.grace
        return {"contact_at": contact, "poller": self.me if until else None, "poll_until": until}

    def _on_answer(self, task_id: str, task: Task) -> Task | None:
        """Record one poll's answer; return the task if its status changed."""
        now = time.time()
        stamp = from_unix(now)
        with self.lock:
            state = self.states.get(task_id)
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
                service=rec.service or self.client.service,
            )
            fields = (*POLL_FIELDS, "service")
            claim = self._claim(None, now)
            due: float | None = None
            learned: tuple[tuple[str | None, str | None], float] | None = None
            if status.is_terminal:
                new = replace(new, finished_at=rec.finished_at or stamp)
                if status is TaskStatus.COMPLETED:
                    # The link's 24 h started at the finish, somewhere after
                    # the previous contact: count from there (never too late).
                    finished_after = state.t0 + (previous_age if previous_age is not None else age)
                    new = replace(new, url_expires_at=from_unix(
                        finished_after + self.settings.url_lifetime))
                    if previous_age is not None:
                        learned = ((new.model, new.mode), previous_age)
                    if self.settings.download and rec.download_state == "none":
                        new = replace(new, download_state="pending")
                        fields = (*fields, "download_state")
                        events.append(Event(task_id, "download", task.status_text,
                                            observed_at=stamp, detail="pending"))
                        # who saw it finish downloads it: the others see the claim
                        # with the completion, and do not race for the video
                        claim.update(downloader=self.me,
                                     download_until=now + self.downloads.claim_s)
            else:
                probe = replace(state, last_age=age)
                due = self.next_due(probe)
                if due is None:
                    new, gave_up = self._give_up(new, age, stamp)
                    events.append(gave_up)
            new = replace(new, next_poll_at=from_unix(due))
            if due is not None:
                claim = self._claim(due, now)

        def saved(st: TaskState) -> None:
            st.errors = 0
            st.not_found_since = None
            st.last_age = age
            st.due = due
            if learned is not None:
                self.observed.setdefault(learned[0], []).append(learned[1])
            self.downloads.schedule(st, time.time())

        # a cleared "not found (since...), still checking" is worth showing too
        shown = changed or (rec.error or None) != (new.error or None)
        self.commit(task_id, Write(new, events, fields, claim, saved, shown))
        return new.task if changed else None

    def _give_up(self, rec: TaskRecord, age: float, stamp: datetime) -> tuple[TaskRecord, Event]:
        message = (f"{_GAVE_UP} after {age:.0f} s without a final status "
                   "(the task may still finish: track() it again to resume)")
        logger.warning("veo_nb: %s: %s", rec.task_id, message)
        return replace(rec, error=message), Event(rec.task_id, "gave_up", rec.status_text,
                                                  observed_at=stamp, detail=message)

    def _on_poll_error(self, task_id: str, exc: VeoError, delay: float | None, *,
                       reached: bool) -> Task | None:
        now = time.time()
        stamp = from_unix(now)
        with self.lock:
            state = self.states.get(task_id)
            if state is None:
                return None
            errors = state.errors + 1
            if delay is None:
                delay = _schedule.error_backoff(errors, self.settings.poll_interval)
            rec = state.record
            events = [Event(task_id, "poll_error", rec.status_text, observed_at=stamp,
                            http_status=getattr(exc, "status_code", None),
                            attempt=errors, detail=str(exc))]
            due: float | None = now + delay
            if now - state.t0 >= state.deadline:
                due = None
                rec, gave_up = self._give_up(rec, now - state.t0, stamp)
                events.append(gave_up)
            new = replace(rec, next_poll_at=from_unix(due))
            if reached:
                new = replace(new, last_polled_at=stamp)
            contact = now if reached else (state.contact_at or 0.0)

        def saved(st: TaskState) -> None:
            st.errors = errors
            st.due = due
            if reached:
                st.last_age = now - st.t0

        fields = ("next_poll_at", "error", "last_polled_at")
        self.commit(task_id, Write(new, events, fields, self._claim(due, contact), saved,
                                   notify=False))
        logger.warning("veo_nb: polling %s failed (attempt %d): %s", task_id, errors, exc)
        return None

    def _on_not_found(self, task_id: str, exc: NotFoundError) -> Task | None:
        """A 404. For an id the service never answered and this store did not
        create (a typo), the end: "not found". For a task it knew (it
        answered before, or this store created it), a gateway may answer 404
        for a while: keep checking with backoff, shown as "not found (since
        HH:MM), still checking", until the end of its expected window plus
        :data:`NOT_FOUND_GRACE_S`; then fail it saying what happened."""
        stamp_s = time.time()
        stamp = from_unix(stamp_s)
        service = self.client.service
        with self.lock:
            state = self.states.get(task_id)
            if state is None:
                return None
            rec = state.record
            poll_error = Event(task_id, "poll_error", None, observed_at=stamp, http_status=404,
                               attempt=state.errors + 1, detail=str(exc))
            due: float | None = None
            errors = state.errors
            since = state.not_found_since
            known = bool(rec.request) or (rec.poll_count > 0 and rec.status_text != NOT_POLLED
                                          and not rec.is_terminal)
            if rec.service is None and rec.poll_count:
                # A task of a store written before services were recorded, that
                # some service answered before: it may belong to another one.
                # A 404 from this service must not finish it.
                message = (f"not known to {service} (404); it may belong to another service: "
                           "left as it was")
                new = replace(rec, error=message, next_poll_at=None, last_polled_at=stamp)
                events = [poll_error, Event(task_id, "note", rec.status_text, observed_at=stamp,
                                            detail=message)]
                fields: tuple[str, ...] = ("error", "next_poll_at", "last_polled_at")
            else:
                if known:  # a gateway may answer 404 for a while: check until this
                    since = stamp_s if since is None else since
                    until = (max(state.t0 + self.window(rec)[1], since)
                             + NOT_FOUND_GRACE_S * self.client.time_scale)
                    shown_since = from_unix(since).strftime("%H:%M UTC")
                if known and stamp_s < until:
                    errors += 1
                    due = min(stamp_s + _schedule.error_backoff(errors, self.settings.poll_interval),
                              max(until, stamp_s + self.settings.poll_interval))
                    message = f"{STILL_CHECKING}{shown_since}), still checking"
                    events = [poll_error]
                    if state.not_found_since is None:
                        events.append(Event(task_id, "note", rec.status_text, observed_at=stamp,
                                            detail=f"{message}: the service knew this task"))
                    new = replace(rec, error=message, next_poll_at=from_unix(due),
                                  last_polled_at=stamp, poll_count=rec.poll_count + 1)
                    fields = ("error", "next_poll_at", "last_polled_at", "poll_count")
                else:  # a typo, or a task the service lost
                    message = NOT_FOUND_REASON if not known else (
                        f"{LOST_REASON}{shown_since}, though the service knew this task "
                        "before: it may have been lost on the service (ask the provider "
                        "about this id); track() it to check again")
                    new = replace(rec, status=TaskStatus.FAILED,
                                  status_text=TaskStatus.FAILED.value, error=message,
                                  finished_at=stamp, next_poll_at=None,
                                  poll_count=rec.poll_count + 1, last_polled_at=stamp,
                                  service=rec.service or service)
                    events = [poll_error, Event(task_id, "status", "failed", observed_at=stamp,
                                                detail=message)]
                    fields = (*POLL_FIELDS, "service")

        def saved(st: TaskState) -> None:
            st.due = due
            st.errors = errors
            st.last_age = stamp_s - st.t0
            st.not_found_since = since if due is not None else None

        self.commit(task_id, Write(new, events, fields, self._claim(due, stamp_s), saved))
        return new.task


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


__all__ = ["Engine", "Settings", "TaskState", "Write", "attach", "engines", "process_id", "NOT_POLLED"]
