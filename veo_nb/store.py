"""SQLite persistence of task records, their events, and who polls what.

One file holds one row per task and an append-only table of events. The file
is in WAL mode, so a notebook can read while a tracker writes, several
processes can write at once (each write waits for the others), and a process
killed mid-write loses nothing that was committed.

Several processes may follow the same tasks through one file. Three things
keep them from stepping on each other (see :mod:`veo_nb._engine`):

* **Claims.** Before a process polls a task it takes the task's *poll claim*
  with one conditional ``UPDATE``: it succeeds only when no other live
  process holds the claim (``poll_until`` passed) and the task's last contact
  with the service (``contact_at``) is at least one poll interval old. So
  each task is polled by at most one process per interval, whatever the
  number of processes. Downloads have a claim of their own.
* **Revisions.** Every write of a task row gives it the next store-wide
  revision number (``rev``). A follower asks for the rows newer than the
  last revision it has seen (:meth:`Store.changes`), and a cheap
  ``PRAGMA data_version`` tells it when to ask.
* **A shared rate-limit gate** per service (:meth:`Store.rate_limited_until`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Union
from urllib.parse import unquote

import pandas as pd

from . import _answers
from ._store_query import (
    FRAME_COLUMNS,
    ADD_TALLY_SQL,
    FILL_TALLIES,
    GAVE_UP_SQL,
    LIVE_SQL,
    OVERVIEW_SQL,
    TALLIES_TABLE,
    TALLY_SQL,
    UNCONFIRMED_SQL,
    WORD_SQL,
    Overview,
    TaskFilter,
    TaskQuery,
    frame_from,
    overview_from,
    tally_deltas,
    tally_of,
)
from .errors import ValidationError, VeoError
from .models import TaskStatus
from .records import (
    HISTORY_COLUMNS,
    Event,
    TaskRecord,
    from_unix,
    history_from_rows,
    to_unix,
)

#: The schema version this release writes (``PRAGMA user_version``).
SCHEMA_VERSION = 6
#: The spending cap counts the day's submitted tasks by first sight.
SPENT_INDEX = "CREATE INDEX tasks_first_seen ON tasks (first_seen_at)"
#: Which task each notebook cell's n-th identical submit created (reuse on
#: re-runs, :mod:`veo_nb._reuse`); ``{real}`` is the backend's float type.
REUSE_TABLE = """CREATE TABLE reuse (
    cell TEXT NOT NULL, request TEXT NOT NULL, n INTEGER NOT NULL,
    task_id TEXT NOT NULL, created_at {real} NOT NULL,
    PRIMARY KEY (cell, request, n)
)"""

#: Columns derived from a task's last answer, kept so that the database can
#: sum and read them (``amount``, ``progress``) without parsing ``raw``.
DERIVED_COLUMNS: tuple[str, ...] = ("amount", "progress")


def backfill_derived(cur: Any) -> None:
    """Fill :data:`DERIVED_COLUMNS` of the rows written before they existed."""
    rows = cur.execute("SELECT task_id, raw FROM tasks "
                       "WHERE raw LIKE '%amount%' OR raw LIKE '%progress%'").fetchall()
    updates = []
    for task_id, raw in rows:
        body = _json_object(raw)
        amount, progress = _answers.amount(body), _answers.progress(body)
        if amount is not None or progress is not None:
            updates.append((amount, progress, task_id))
    if updates:
        cur.executemany("UPDATE tasks SET amount = ?, progress = ? WHERE task_id = ?", updates)


#: A migration step: SQL, or a function of a cursor.
Step = Union[str, Callable[[Any], None]]
#: The panel's order (creation, else first sight; ties by first sight and id).
CREATED_INDEX = ("CREATE INDEX tasks_created ON tasks "
                 "((COALESCE(created_at, first_seen_at)){way}, first_seen_at{way}, task_id{tail})")
#: The status filter in the panel's order.
WORD_INDEX = (f"CREATE INDEX tasks_word ON tasks (({WORD_SQL}), "
              "(COALESCE(created_at, first_seen_at)){way}, first_seen_at{way}, task_id{tail})")
#: The indexes of a large history (schema 6) besides those two: the owner
#: filter, the header's counts, and the live tasks an engine loads.
HISTORY_INDEXES: tuple[str, ...] = (
    "CREATE INDEX tasks_owner ON tasks (owner)",
    f"CREATE INDEX tasks_live ON tasks (task_id) WHERE {LIVE_SQL}",
)

#: SQL steps that bring a store from version ``v - 1`` to version ``v``.
MIGRATIONS: dict[int, tuple[Step, ...]] = {
    1: (
        """CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            label TEXT, prompt TEXT, model TEXT, resolution TEXT,
            aspect_ratio TEXT, mode TEXT,
            status TEXT NOT NULL, status_text TEXT NOT NULL,
            created_at REAL, first_seen_at REAL, started_at REAL, finished_at REAL,
            video_url TEXT, url_expires_at REAL, video_path TEXT, error TEXT,
            download_state TEXT NOT NULL, download_error TEXT,
            tracked INTEGER NOT NULL, poll_count INTEGER NOT NULL,
            last_polled_at REAL, next_poll_at REAL,
            request TEXT NOT NULL, raw TEXT NOT NULL
        )""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT,
            observed_at REAL NOT NULL, http_status INTEGER, attempt INTEGER,
            detail TEXT
        )""",
        "CREATE INDEX events_task ON events (task_id)",
    ),
    # 2: which service each task belongs to (NULL: a store written before).
    2: ("ALTER TABLE tasks ADD COLUMN service TEXT",),
    # 3: several processes on one store: revisions, claims, the shared 429
    # gate, deletions followers must hear of; who submitted a task.
    3: (
        "ALTER TABLE tasks ADD COLUMN owner TEXT",
        "ALTER TABLE tasks ADD COLUMN key_fingerprint TEXT",
        "ALTER TABLE tasks ADD COLUMN rev INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN contact_at REAL",
        "ALTER TABLE tasks ADD COLUMN poller TEXT",
        "ALTER TABLE tasks ADD COLUMN poll_until REAL",
        "ALTER TABLE tasks ADD COLUMN downloader TEXT",
        "ALTER TABLE tasks ADD COLUMN download_until REAL",
        "CREATE INDEX tasks_rev ON tasks (rev)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value REAL NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('rev', 0)",
        "CREATE TABLE deleted (task_id TEXT NOT NULL, rev INTEGER NOT NULL)",
        "CREATE TABLE services (service TEXT PRIMARY KEY, rate_limited_until REAL NOT NULL)",
        "UPDATE tasks SET contact_at = last_polled_at",
    ),
    # 4: on which machine a saved video lies (a store shared by several).
    4: ("ALTER TABLE tasks ADD COLUMN saved_on TEXT",),
    # 5: what re-running a notebook cell reuses instead of paying again; the
    # day's spending (by first sight).
    5: (REUSE_TABLE.format(real="REAL"), SPENT_INDEX),
    # 6: a large history: costs the database can sum, and the indexes of a
    # page of the panel and of the live tasks (a kernel reads what is live).
    6: ("ALTER TABLE tasks ADD COLUMN amount REAL", "ALTER TABLE tasks ADD COLUMN progress REAL",
        backfill_derived, CREATED_INDEX.format(way="", tail=""),
        WORD_INDEX.format(way="", tail=""), *HISTORY_INDEXES,
        TALLIES_TABLE.format(real="REAL"), FILL_TALLIES),
}

#: Seconds SQLite waits for another writer before reporting "locked".
BUSY_TIMEOUT_S = 30.0

_TIMESTAMPS = frozenset({
    "created_at", "first_seen_at", "started_at", "finished_at", "url_expires_at",
    "last_polled_at", "next_poll_at",
})
_JSON = frozenset({"request", "raw"})
_COLUMNS: tuple[str, ...] = tuple(f.name for f in TaskRecord.__dataclass_fields__.values())
#: Columns only the store knows: the revision and the claims (see :class:`Row`).
_CLAIM_COLUMNS = ("rev", "contact_at", "poller", "poll_until", "downloader", "download_until")
#: What a poll's answer changes.
POLL_FIELDS: tuple[str, ...] = (
    "status", "status_text", "model", "created_at", "started_at", "finished_at",
    "video_url", "url_expires_at", "error", "raw", "poll_count", "last_polled_at",
    "next_poll_at",
)
#: What a download changes.
DOWNLOAD_FIELDS: tuple[str, ...] = ("download_state", "download_error", "video_path", "saved_on")
#: Fields kept from the stored row when it is terminal and the incoming one is not.
_STATUS_FIELDS = (
    "status", "status_text", "started_at", "finished_at", "video_url",
    "url_expires_at", "error", "raw",
)
_TERMINAL = tuple(s.value for s in TaskStatus if s.is_terminal)
_TERMINAL_SQL = ", ".join(f"'{s}'" for s in _TERMINAL)
_NEXT_REV = "(SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'rev')"


def _upsert_sql(fields: Sequence[str], reopen: bool = False) -> str:
    """Insert a record, or update only ``fields`` (and the revision) of the
    stored row, never turning a terminal status back into a running one
    (unless ``reopen``: the user asked to check a task again)."""
    keep = ("1 = 0" if reopen else
            f"tasks.status IN ({_TERMINAL_SQL}) AND excluded.status NOT IN ({_TERMINAL_SQL})")
    updates = []
    for name in (*fields, *(DERIVED_COLUMNS if "raw" in fields else ())):
        if name in _STATUS_FIELDS or name in DERIVED_COLUMNS:
            updates.append(f"{name} = CASE WHEN {keep} THEN tasks.{name} ELSE excluded.{name} END")
        elif name == "first_seen_at":
            updates.append(f"{name} = COALESCE(tasks.{name}, excluded.{name})")
        else:
            updates.append(f"{name} = excluded.{name}")
    return (
        f"INSERT INTO tasks ({', '.join(_COLUMNS + DERIVED_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _COLUMNS + DERIVED_COLUMNS)}) "
        f"ON CONFLICT (task_id) DO UPDATE SET {', '.join(updates)}"
    )


_ALL_FIELDS = tuple(c for c in _COLUMNS if c != "task_id")
_UPSERTS: dict[tuple[tuple[str, ...], bool], str] = {}
_INSERT_EVENT = (
    "INSERT INTO events (task_id, kind, status, observed_at, http_status, attempt, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_ROWS = f"SELECT {', '.join(_COLUMNS + _CLAIM_COLUMNS)} FROM tasks"
_BUMP_REV = "UPDATE meta SET value = value + 1 WHERE name = 'rev'"
#: How :meth:`BaseStore.write` sets each claim column.
_SET_CLAIM = {
    "contact_at": "contact_at = CASE WHEN contact_at IS NULL OR contact_at < ? "
                  "THEN ? ELSE contact_at END",
    **{k: f"{k} = ?" for k in ("poller", "poll_until", "downloader", "download_until")},
}
_SELECT_REV = "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'rev'"
_SELECT_EVENTS = (
    "SELECT " + ", ".join(f"e.{c}" for c in HISTORY_COLUMNS if c != "owner")
    + ", t.owner FROM events e LEFT JOIN tasks t ON t.task_id = e.task_id"
)

_T = TypeVar("_T")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+")


class StoreError(VeoError):
    """The store cannot be used or could not be written.

    Raised when a file was written by a newer veo_nb or is not a veo_nb store
    at all, and when a write failed for good (the disk is full, the file is
    locked by another process for longer than the busy timeout).
    ``task_ids`` lists the tasks the failed call created on the service
    anyway (they exist and are billed; the tracker keeps them in memory and
    retries the write). The message says what to do.
    """

    def __init__(self, message: str, *, task_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.task_ids = list(task_ids)


@dataclass(frozen=True)
class Row:
    """A stored task with what only the store knows: its revision, the last
    contact with the service (unix seconds), and who holds its poll and
    download claims until when (process ids, unix seconds)."""

    record: TaskRecord
    rev: int
    contact_at: float | None = None
    poller: str | None = None
    poll_until: float | None = None
    downloader: str | None = None
    download_until: float | None = None


def _record_row(record: TaskRecord) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name in _TIMESTAMPS:
            value = to_unix(value)
        elif name in _JSON:
            value = json.dumps(dict(value), ensure_ascii=False, default=str)
        elif name == "status":
            value = value.value
        elif name == "tracked":
            value = int(value)
        row.append(value)
    return (*row, record.amount, record.progress)


def _json_object(text: Any) -> dict[str, Any]:
    """A stored JSON column as a dict ({} for anything else)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _row_record(row: Sequence[Any]) -> TaskRecord:
    values: dict[str, Any] = {}
    for name, value in zip(_COLUMNS, row):
        if name in _TIMESTAMPS:
            value = from_unix(value)
        elif name in _JSON:
            value = json.loads(value)
        elif name == "status":
            value = TaskStatus.parse(value)
        elif name == "tracked":
            value = bool(value)
        values[name] = value
    return TaskRecord(**values)


def _stored_row(row: Sequence[Any]) -> Row:
    n = len(_COLUMNS)
    rev, contact_at, poller, poll_until, downloader, download_until = row[n:]
    return Row(_row_record(row[:n]), int(rev), contact_at, poller, poll_until,
               downloader, download_until)


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.task_id, event.kind, event.status, to_unix(event.observed_at),
        event.http_status, event.attempt, event.detail,
    )


def check_version(version: int, where: object) -> None:
    """Refuse a store written by a newer release (``version`` is its schema)."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} was written by a newer veo_nb (store schema {version}, this "
            f"release reads up to {SCHEMA_VERSION}): upgrade veo_nb (pip install -U "
            "veo_nb) or use another store"
        )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@dataclass
class StoreStats:
    """What one store object asked of its database, in this process: for the
    soak and the benchmarks (a claim refused again and again would show here
    as write transactions that poll nothing)."""

    #: Write transactions started (retries of one call count once).
    transactions: int = 0
    #: Poll and download claims asked for, and how many were refused.
    claim_attempts: int = 0
    claims_refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {"transactions": self.transactions, "claim_attempts": self.claim_attempts,
                "claims_refused": self.claims_refused}


class BaseStore:
    """What every store does, written once in SQL both SQLite and PostgreSQL
    speak (``?`` placeholders; a backend adapts them). A backend provides
    ``key``, :meth:`_transact` (one write transaction), :meth:`_read`,
    :meth:`version`, :meth:`close` and two dialect details."""

    #: The SQL for the larger of two numbers.
    _GREATEST = "MAX"
    #: The last ``ORDER BY`` key of :meth:`rows` (first sight ties).
    _TIE = "rowid"
    #: SQL for the database's clock (unix seconds) where several machines
    #: share the store; None: the caller's clock (one machine's file).
    _NOW: str | None = None
    _stats: StoreStats | None = None

    #: Whether several people share this store, so that a task's owner
    #: decides who may hide or erase it (SQLite: one user's file).
    shared: bool = False

    def manages_all(self) -> bool:
        """Whether this session may hide or erase anyone's task: always on a
        store that is not shared; on a class store, only its teachers."""
        return not self.shared

    @property
    def stats(self) -> StoreStats:
        """Counters of what this store object asked of the database."""
        if self._stats is None:
            self._stats = StoreStats()
        return self._stats

    def _tx(self, body: Callable[[Any], _T]) -> _T:
        """One write transaction, counted in :attr:`stats`."""
        self.stats.add("transactions")
        return self._transact(body)

    @property
    def key(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transact(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    def version(self) -> int:  # pragma: no cover - abstract
        """A number that changes whenever another process commits."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Close the store; it cannot be used afterwards."""
        raise NotImplementedError

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` soon after another process commits, where the
        backend can tell at once (PostgreSQL's ``LISTEN``); returns a function
        that unsubscribes. Followers also ask :meth:`version` regularly."""
        return lambda: None

    def _notify(self, cur: Any) -> None:
        """Tell the other processes a write is about to be committed (inside
        the transaction; nothing for a backend that cannot)."""

    def __enter__(self) -> BaseStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def write(
        self,
        record: TaskRecord,
        events: Iterable[Event] = (),
        *,
        fields: Sequence[str] | None = None,
        claim: dict[str, Any] | None = None,
        reopen: bool = False,
    ) -> Row:
        """Insert ``record`` or update ``fields`` of its stored row (default:
        all), append ``events`` and set the ``claim`` columns given
        (``contact_at``, ``poller``, ``poll_until``, ``downloader``,
        ``download_until``), in one transaction; return the stored row as it
        now is, with its new revision.

        A stored terminal status is never replaced by a running one (another
        process may have seen the end first), unless ``reopen`` (a task the
        user asked to check again); ``first_seen_at`` keeps its first value."""
        wanted = _ALL_FIELDS if fields is None else tuple(fields)
        sql = _UPSERTS.get((wanted, reopen))
        if sql is None:
            sql = _UPSERTS[wanted, reopen] = _upsert_sql(wanted, reopen)
        values = _record_row(record)
        event_rows = [_event_row(e) for e in events]
        claim = dict(claim or {})
        unknown = set(claim) - set(_CLAIM_COLUMNS[1:])
        if unknown:
            raise ValueError(f"not claim columns: {sorted(unknown)}")
        claim_values = [v for k, value in claim.items()
                        for v in ((value, value) if k == "contact_at" else (value,))]

        def body(cur: Any) -> Row:
            self._lock_task(cur, record.task_id)
            before = tally_of(cur.execute(TALLY_SQL, (record.task_id,)).fetchone())
            cur.execute(sql, values)
            if claim:  # the last contact never moves back (another clock may have set it)
                cur.execute(
                    f"UPDATE tasks SET {', '.join(_SET_CLAIM[k] for k in claim)} "
                    "WHERE task_id = ?", (*claim_values, record.task_id),
                )
            self._retally(cur, before, tally_of(
                cur.execute(TALLY_SQL, (record.task_id,)).fetchone()))
            if event_rows:
                cur.executemany(_INSERT_EVENT, event_rows)
            self._bump(cur)
            cur.execute(f"UPDATE tasks SET rev = {_NEXT_REV} WHERE task_id = ?", (record.task_id,))
            return _stored_row(cur.execute(
                f"{_SELECT_ROWS} WHERE task_id = ?", (record.task_id,)).fetchone())

        return self._tx(body)

    def _lock_task(self, cur: Any, task_id: str) -> None:
        """Make other writers of ``task_id`` wait for this transaction (its
        tallies are read before the write): SQLite writers already do."""

    @staticmethod
    def _retally(cur: Any, before: Any, after: Any) -> None:
        """Move a task's part of the tallies from ``before`` to ``after``."""
        deltas = tally_deltas(before, after)
        if deltas:
            cur.executemany(ADD_TALLY_SQL, deltas)

    def _bump(self, cur: Any) -> None:
        """Take the next revision for a write others must hear of. Writers
        queue on the counter's row from here to their commit, so revisions
        follow commit order: a write does its other work first, and bumps
        last, to hold that queue as briefly as it can."""
        cur.execute(_BUMP_REV)
        self._notify(cur)

    def save(self, record: TaskRecord, events: Iterable[Event] = ()) -> None:
        """Insert or update ``record`` and append ``events``, in one transaction.

        When the stored row is already ``completed``/``failed`` (perhaps
        written by another process) and ``record`` is not, the stored status,
        times, link, error and raw body are kept; other fields are updated.
        ``first_seen_at`` keeps its first value.
        """
        self.write(record, events)

    def append_events(self, events: Iterable[Event]) -> None:
        """Append ``events`` in one transaction."""
        rows = [_event_row(e) for e in events]
        if rows:
            self._tx(lambda cur: cur.executemany(_INSERT_EVENT, rows))

    def delete(self, task_ids: Iterable[str]) -> None:
        """Erase the records and events of ``task_ids``, in one transaction
        (followers in other processes hear of it through :meth:`changes`)."""
        rows = [(i,) for i in sorted(set(task_ids))]  # locked in one order

        def body(cur: Any) -> None:
            cur.executemany("DELETE FROM events WHERE task_id = ?", rows)
            for (task_id,) in rows:
                self._lock_task(cur, task_id)
                before = tally_of(cur.execute(TALLY_SQL, (task_id,)).fetchone())
                cur.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
                self._retally(cur, before, None)
            self._bump(cur)
            cur.executemany(f"INSERT INTO deleted (task_id, rev) VALUES (?, {_NEXT_REV})", rows)

        self._tx(body)

    # ------------------------------------------------------------------ claims

    def claim_poll(self, task_id: str, me: str, *, now: float, interval: float,
                   until: float, orphan: str | None = None) -> Row | None:
        """Take the poll claim of unfinished ``task_id`` for process ``me``
        until ``until``, recording ``now`` as its last contact; return the
        stored row. Refused (None) while another process holds an unexpired
        claim (unless it is ``orphan``, a holder known to be dead) or the
        last contact is less than ``interval`` seconds old.

        A store shared by several machines reads the time from the database
        server instead of ``now`` (:attr:`_NOW`): a machine whose clock runs
        ahead would otherwise poll sooner than one interval after another."""
        clock = self._NOW or "?"
        times = () if self._NOW else (now,)

        def body(cur: Any) -> Row | None:
            taken = cur.execute(
                f"UPDATE tasks SET poller = ?, poll_until = ?, contact_at = {clock} "
                f"WHERE task_id = ? AND status NOT IN ({_TERMINAL_SQL}) "
                "AND (poller IS NULL OR poller = ? OR poller = ? OR poll_until IS NULL "
                f"OR poll_until <= {clock}) AND (contact_at IS NULL OR contact_at <= {clock} - ?)",
                (me, until, *times, task_id, me, orphan or me, *times, *times, interval),
            ).rowcount
            return self._row(cur, task_id) if taken else None

        row = self._tx(body)
        self._count_claim(row is not None)
        return row

    def claim_download(self, task_id: str, me: str, *, now: float, until: float,
                       orphan: str | None = None) -> bool:
        """Take (or extend) the download claim of ``task_id`` for ``me`` until
        ``until``; False while another process (but ``orphan``, known to be
        dead) holds an unexpired one."""
        taken = bool(self._tx(lambda cur: cur.execute(
            "UPDATE tasks SET downloader = ?, download_until = ? WHERE task_id = ? "
            "AND (downloader IS NULL OR downloader = ? OR downloader = ? "
            "OR download_until IS NULL OR download_until <= ?)",
            (me, until, task_id, me, orphan or me, now),
        ).rowcount))
        self._count_claim(taken)
        return taken

    def _count_claim(self, taken: bool) -> None:
        self.stats.add("claim_attempts")
        if not taken:
            self.stats.add("claims_refused")

    def release(self, me: str, task_ids: Iterable[str] | None = None) -> None:
        """Give up the claims ``me`` holds (on ``task_ids``, default all), so
        other processes take those tasks over at once."""
        wanted = None if task_ids is None else set(task_ids)

        def body(cur: Any) -> None:
            # Task rows first, the revision counter last, as every write does:
            # the other order deadlocked with write() on PostgreSQL.
            held = [r[0] for r in cur.execute(
                "SELECT task_id FROM tasks WHERE poller = ? OR downloader = ?", (me, me))]
            ids = [(i,) for i in sorted(held) if wanted is None or i in wanted]
            if not ids:
                return
            for column, until in (("poller", "poll_until"), ("downloader", "download_until")):
                cur.executemany(f"UPDATE tasks SET {column} = NULL, {until} = NULL "
                                f"WHERE task_id = ? AND {column} = ?", [(i, me) for (i,) in ids])
            self._bump(cur)
            cur.executemany(f"UPDATE tasks SET rev = {_NEXT_REV} WHERE task_id = ?", ids)

        self._tx(body)

    def spent_since(self, since: float) -> tuple[int, float | None]:
        """Tasks submitted through this store (a create request recorded,
        "may have been billed" entries included) first seen at or after unix
        time ``since``, and the sum of the amounts the service reported for
        them (None when it reported none)."""
        n, amount, costed = self._read(lambda cur: cur.execute(
            "SELECT COUNT(*), SUM(amount), COUNT(amount) FROM tasks "
            "WHERE first_seen_at >= ? AND request <> '{}'", (since,)).fetchone())
        return int(n), (float(amount) if costed else None)

    def reused(self, cell: str, request: str, n: int) -> tuple[str, float] | None:
        """The task (id, unix time) that ``cell``'s ``n``-th submit of
        ``request`` created last, or None."""
        row = self._read(lambda cur: cur.execute(
            "SELECT task_id, created_at FROM reuse WHERE cell = ? AND request = ? AND n = ?",
            (cell, request, n)).fetchone())
        return None if row is None else (str(row[0]), float(row[1]))

    def remember(self, cell: str, request: str, n: int, task_id: str, created_at: float) -> None:
        """Record that ``cell``'s ``n``-th submit of ``request`` created ``task_id``."""
        self._tx(lambda cur: cur.execute(
            "INSERT INTO reuse (cell, request, n, task_id, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (cell, request, n) DO UPDATE SET task_id = excluded.task_id, "
            "created_at = excluded.created_at", (cell, request, n, task_id, created_at)))

    def rate_limited_until(self, service: str) -> float:
        """Unix time before which no process should send ``service`` a request
        (a 429's ``Retry-After``, shared by every process); 0.0 when none."""
        row = self._read(lambda cur: cur.execute(
            "SELECT rate_limited_until FROM services WHERE service = ?", (service,)).fetchone())
        return 0.0 if row is None else float(row[0])

    def limit_rate(self, service: str, until: float) -> None:
        """Record that ``service`` asked every client to wait until ``until``."""
        self._tx(lambda cur: cur.execute(
            "INSERT INTO services (service, rate_limited_until) VALUES (?, ?) "
            "ON CONFLICT (service) DO UPDATE SET rate_limited_until = "
            f"{self._GREATEST}(services.rate_limited_until, excluded.rate_limited_until)",
            (service, until)))

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _row(cur: Any, task_id: str) -> Row | None:
        found = cur.execute(f"{_SELECT_ROWS} WHERE task_id = ?", (task_id,)).fetchone()
        return None if found is None else _stored_row(found)

    def row(self, task_id: str) -> Row | None:
        """The stored row of ``task_id`` with its claims, or None."""
        return self._read(lambda cur: self._row(cur, task_id))

    def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of ``task_id``, or None."""
        row = self.row(task_id)
        return None if row is None else row.record

    def rows(self, *, tracked_only: bool = True) -> list[Row]:
        """Stored rows in the order first seen (only tracked ones, unless
        ``tracked_only=False``)."""
        where = "WHERE tracked = 1 " if tracked_only else ""
        found = self._read(lambda cur: cur.execute(
            f"{_SELECT_ROWS} {where}ORDER BY first_seen_at IS NULL, first_seen_at, {self._TIE}"
        ).fetchall())
        return [_stored_row(r) for r in found]

    def records(self, *, tracked_only: bool = True) -> list[TaskRecord]:
        """Stored records in the order they were first seen (only those still
        tracked, unless ``tracked_only=False``)."""
        return [r.record for r in self.rows(tracked_only=tracked_only)]

    def rows_of(self, task_ids: Sequence[str]) -> list[Row]:
        """The stored rows of ``task_ids`` (those the store has), read in
        batches."""
        ids = list(task_ids)
        found: list[Any] = []
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            found += self._read(lambda cur: cur.execute(
                f"{_SELECT_ROWS} WHERE task_id IN ({', '.join('?' for _ in batch)})",
                batch).fetchall())
        return [_stored_row(r) for r in found]

    def tracked_ids(self) -> list[str]:
        """The ids of every tracked task, in the order first seen."""
        return [r[0] for r in self._read(lambda cur: cur.execute(
            "SELECT task_id FROM tasks WHERE tracked = 1 "
            f"ORDER BY first_seen_at IS NULL, first_seen_at, {self._TIE}").fetchall())]

    def live_rows(self) -> list[Row]:
        """The rows an engine holds (in the order first seen): tracked tasks
        still to poll, or whose video is still to fetch (an index lists them,
        so this costs what the live work costs, not the whole history)."""
        found = self._read(lambda cur: cur.execute(
            f"{_SELECT_ROWS} WHERE {LIVE_SQL} "
            f"ORDER BY first_seen_at IS NULL, first_seen_at, {self._TIE}").fetchall())
        return [_stored_row(r) for r in found]

    def _nulls(self, descending: bool) -> str:
        """What puts tasks without a time last in a descending order and
        first in an ascending one (SQLite's own order of NULLs)."""
        return ""

    def page(self, query: TaskQuery, offset: int, limit: int) -> list[TaskRecord]:
        """Tracked tasks ``offset`` to ``offset + limit`` of ``query``'s order
        (see :class:`~veo_nb._store_query.TaskQuery`)."""
        where, params = query.where()
        sql = (f"{_SELECT_ROWS} WHERE {where} ORDER BY {query.order(self._nulls)} "
               "LIMIT ? OFFSET ?")
        found = self._read(lambda cur: cur.execute(sql, (*params, limit, offset)).fetchall())
        return [_stored_row(r).record for r in found]

    def count(self, query: TaskQuery) -> int:
        """How many tracked tasks ``query`` shows."""
        where, params = query.where()
        return int(self._read(lambda cur: cur.execute(
            f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]))

    def position(self, query: TaskQuery, task_id: str) -> int | None:
        """Where ``task_id`` is in ``query``'s order (0 first), None when the
        query does not show it."""
        where, params = query.where()
        ids = self._read(lambda cur: cur.execute(
            f"SELECT task_id FROM tasks WHERE {where} ORDER BY {query.order(self._nulls)}",
            params).fetchall())
        for index, (found,) in enumerate(ids):
            if found == task_id:
                return index
        return None

    def overview(self) -> Overview:
        """Counts per status word and owner, reported costs and unconfirmed
        creates of the tracked tasks: one aggregate over a covering index,
        and two small counts (a key range, the live tasks)."""
        def read(cur: Any) -> Overview:
            return overview_from(cur.execute(OVERVIEW_SQL).fetchall(),
                                 cur.execute(UNCONFIRMED_SQL).fetchone()[0],
                                 cur.execute(GAVE_UP_SQL).fetchall())

        return self._read(read)

    def frame(self, select: TaskFilter | None = None) -> pd.DataFrame:
        """The tasks ``select`` keeps (default: every tracked one) as the
        frame of :func:`veo_nb.records.tasks_frame`, built from the rows (no
        record per task), in the order first seen."""
        select = select or TaskFilter()
        where, params = select.sql()
        sql = f"SELECT {', '.join(FRAME_COLUMNS)} FROM tasks {where.format(tie=self._TIE)}"
        rows = self._read(lambda cur: cur.execute(sql, params).fetchall())
        return frame_from(rows, newest_first=select.limit is not None)

    def revision(self) -> int:
        """The newest revision written to the store."""
        return self._read(lambda cur: int(cur.execute(_SELECT_REV).fetchone()[0]))

    def changes(self, since: int) -> tuple[list[Row], list[str], int]:
        """Rows written after revision ``since`` (tracked or not), ids deleted
        after it, and the newest revision."""
        def read(cur: Any) -> tuple[list[Row], list[str], int]:
            newest = int(cur.execute(_SELECT_REV).fetchone()[0])
            rows = cur.execute(
                f"{_SELECT_ROWS} WHERE rev > ? AND rev <= ? ORDER BY rev", (since, newest)
            ).fetchall()
            gone = cur.execute(
                "SELECT task_id FROM deleted WHERE rev > ? AND rev <= ? ORDER BY rev",
                (since, newest)).fetchall()
            return [_stored_row(r) for r in rows], [g[0] for g in gone], newest

        return self._read(read)

    def event_count(self) -> int:
        """How many events the store holds."""
        return int(self._read(
            lambda cur: cur.execute("SELECT COUNT(*) FROM events").fetchone()[0]))

    def tasks_frame(self, *, tracked_only: bool = False) -> pd.DataFrame:
        """One row per stored task (see :func:`veo_nb.records.tasks_frame`)."""
        return self.frame(TaskFilter(tracked_only=tracked_only))

    def events_frame(self, limit: int | None = None) -> pd.DataFrame:
        """Every event (or the newest ``limit``), in the order written, with
        the owner of its task (see :func:`veo_nb.records.history_frame` for
        the columns)."""
        if limit is None:
            rows = self._read(lambda cur: cur.execute(_SELECT_EVENTS + " ORDER BY e.seq").fetchall())
        else:
            rows = self._read(lambda cur: cur.execute(
                _SELECT_EVENTS + " ORDER BY e.seq DESC LIMIT ?", (int(limit),)).fetchall())[::-1]
        return history_from_rows(rows)


class Store(BaseStore):
    """Task records and events in one SQLite file (created with its folders).

    Thread-safe; several processes may use the same file at once. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
            check_same_thread=False,
        )
        # Reads have a connection of their own: in WAL mode they never wait
        # for a writer, ours (queued on another process's lock) or theirs.
        self._read_lock = threading.RLock()
        self._reader = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._retry(self._open)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            self._reader.close()
            raise StoreError(
                f"{self.path} is not a usable veo_nb store ({exc}): "
                "pass another path, or move this file away"
            ) from exc
        except BaseException:
            self._conn.close()
            raise

    @property
    def key(self) -> str:
        """What names this store: its resolved path (trackers on the same key
        share one history)."""
        return str(self.path.resolve())

    def _open(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            check_version(version, self.path)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[step]:
                    if callable(sql):
                        sql(conn)
                    else:
                        conn.execute(sql)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry(self, action: Callable[[], _T], lock: threading.RLock | None = None) -> _T:
        """Run ``action`` under the lock (the writer's by default), again
        after a short pause while another process holds the write lock (up to
        the busy timeout)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.01
        while True:
            try:
                with lock or self._lock:
                    return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _transact(self, body: Callable[[Any], _T]) -> _T:
        """Run ``body(connection)`` in one write transaction (retried while
        another process holds the write lock) and return what it returns."""

        def transaction() -> _T:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(transaction)

    def _read(self, body: Callable[[Any], _T]) -> _T:
        return self._retry(lambda: body(self._reader), self._read_lock)

    def version(self) -> int:
        """A number that changes whenever another connection commits (SQLite's
        ``PRAGMA data_version``): cheap enough to ask several times a second."""
        return int(self._retry(lambda: self._conn.execute("PRAGMA data_version").fetchone()[0]))

    def close(self) -> None:
        """Close the file; the store cannot be used afterwards."""
        with self._lock, self._read_lock:
            self._conn.close()
            self._reader.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"


#: Environment variable naming the store when a tracker is given none: a path
#: for SQLite, or a ``postgresql://`` URL.
STORE_ENV = "VEO_NB_STORE"


def open_store(store: BaseStore | str | Path | None, default: Path) -> tuple[BaseStore, bool]:
    """The store a tracker uses, and whether the tracker opened it (and so
    closes it): ``store`` itself, a file path (SQLite), ``sqlite:///path``,
    a ``postgresql://`` URL, or for None ``VEO_NB_STORE``, else ``default``.
    A URL of any other kind is refused (it never becomes a file)."""
    if isinstance(store, BaseStore):
        return store, False
    kind, where = store_kind(store)
    if kind == "postgres":
        from .store_pg import PostgresStore

        return PostgresStore(where), True
    return Store(where if store is not None or kind != "default" else default), True


def store_kind(store: str | os.PathLike[str] | None) -> tuple[str, str]:
    """``("sqlite", path)``, ``("postgres", url)`` or ``("default", "")`` for
    a store argument (None: ``VEO_NB_STORE``, if set). Raises
    :class:`~veo_nb.ValidationError` for a URL of another kind, before
    anything is connected or created."""
    if store is None:
        store = os.environ.get(STORE_ENV, "").strip() or None
        if store is None:
            return "default", ""
    text = os.fspath(store)
    scheme, sep, rest = text.partition("://")
    if not (sep and _SCHEME.fullmatch(scheme)):
        return "sqlite", text
    if scheme.lower() == "sqlite":  # as SQLAlchemy: sqlite:///relative, sqlite:////absolute
        return "sqlite", unquote(rest[1:] if rest.startswith("/") else rest)
    from .store_pg import SCHEMES, redact_url

    if scheme.lower() in SCHEMES:
        return "postgres", text
    raise ValidationError(
        f"store={redact_url(text)!r}: {scheme}:// is not a supported store; use a file "
        "path or sqlite:///path/to/history.sqlite (SQLite, the default), or "
        "postgresql://user@host:5432/database (PostgreSQL, pip install 'veo_nb[postgres]')"
    )
