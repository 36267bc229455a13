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

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote

from . import _ledger
from ._schema import MIGRATIONS, SCHEMA_VERSION
from ._store_query import ADD_TALLY_SQL, TALLY_SQL, tally_deltas, tally_of
from ._store_sql import (
    _ALL_FIELDS,
    _BUMP_REV,
    _CLAIM_COLUMNS,
    _INSERT_DELETED,
    _INSERT_EVENT,
    _NEXT_REV,
    _SELECT_REV,
    _SELECT_ROWS,
    _SET_CLAIM,
    _UPSERTS,
    Row,
    _event_row,
    _record_row,
    _stored_row,
    _upsert_sql,
)
from ._store_claims import StoreClaims
from ._store_views import StoreViews
from .errors import ValidationError, VeoError
from .records import Event, TaskRecord

#: Seconds SQLite waits for another writer before reporting "locked".
BUSY_TIMEOUT_S = 30.0

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


class BaseStore(StoreViews, StoreClaims, _ledger.StoreLedger):
    """What every store does, written once in SQL both SQLite and PostgreSQL
    speak (``?`` placeholders; a backend adapts them). A backend provides
    ``key``, :meth:`_transact` (one write transaction), :meth:`_read`,
    :meth:`version`, :meth:`close` and two dialect details."""

    #: The SQL for the larger of two numbers.
    _GREATEST = "MAX"
    #: Seconds between two looks at the store for other processes' changes
    #: (a cheap revision check first).
    follow_every = 0.2
    _stats: StoreStats | None = None

    #: Whether several people share this store, so that a task's owner
    #: decides who may hide or erase it (SQLite: one user's file).
    shared: bool = False

    #: Whether the database keeps the tallies itself (a class store's
    #: trigger), so that a write does not.
    tallies_kept: bool = False

    def manages_all(self) -> bool:
        """Whether this session may hide or erase anyone's task: always on a
        store that is not shared; on a class store, only its teachers."""
        return not self.shared

    def may_write(self, owner: str | None) -> bool:
        """Whether this session may record polls and downloads of a task of
        ``owner``: always, but on a class store as a student (their own
        tasks only; a classmate's they follow)."""
        return True

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
        replaces: str | None = None,
    ) -> Row:
        """Insert ``record`` or update ``fields`` of its stored row (default:
        all), append ``events`` and set the ``claim`` columns given
        (``contact_at``, ``poller``, ``poll_until``, ``downloader``,
        ``download_until``), in one transaction; return the stored row as it
        now is, with its new revision.

        A stored terminal status is never replaced by a running one (another
        process may have seen the end first), unless ``reopen`` (a task the
        user asked to check again); ``first_seen_at`` keeps its first value.
        ``replaces`` names the "may have been billed" entry this task's first
        write erases in the same transaction (its create is linked to the
        task in the spending ledger)."""
        claim = dict(claim or {})
        unknown = set(claim) - set(_CLAIM_COLUMNS[1:])
        if unknown:
            raise ValueError(f"not claim columns: {sorted(unknown)}")
        event_rows = [_event_row(e) for e in events]

        def body(cur: Any) -> Row:
            if replaces is not None:
                self._erase(cur, [replaces])
            self._put(cur, record, event_rows, fields, claim, reopen)
            if replaces is not None:
                _ledger.add_link(cur, replaces, record.task_id, time.time())
            if fields is None or "raw" in fields:  # an amount the service reported
                cur.execute(_ledger.NOTE_AMOUNT, (time.time(), record.task_id))
            self._bump(cur)
            if replaces is not None:
                cur.execute(_INSERT_DELETED, (replaces,))
            cur.execute(f"UPDATE tasks SET rev = {_NEXT_REV} WHERE task_id = ?", (record.task_id,))
            return _stored_row(cur.execute(
                f"{_SELECT_ROWS} WHERE task_id = ?", (record.task_id,)).fetchone())

        return self._tx(body)

    def _put(self, cur: Any, record: TaskRecord, event_rows: Sequence[tuple[Any, ...]],
             fields: Sequence[str] | None, claim: dict[str, Any], reopen: bool) -> None:
        """:meth:`write`'s work on one task, but for the revision and the ledger."""
        wanted = _ALL_FIELDS if fields is None else tuple(fields)
        sql = _UPSERTS.get((wanted, reopen))
        if sql is None:
            sql = _UPSERTS[wanted, reopen] = _upsert_sql(wanted, reopen)
        self._lock_task(cur, record.task_id)
        before = self._tally(cur, record.task_id)
        cur.execute(sql, _record_row(record))
        if claim:  # the last contact never moves back (another clock may have set it)
            cur.execute(
                f"UPDATE tasks SET {', '.join(_SET_CLAIM[k] for k in claim)} "
                "WHERE task_id = ?", (*(v for k, value in claim.items()
                                        for v in ((value, value) if k == "contact_at"
                                                  else (value,))), record.task_id),
            )
        after = self._tally(cur, record.task_id)
        if event_rows:
            cur.executemany(_INSERT_EVENT, event_rows)
        # Shared rows last (the tallies, then the revision counter): held
        # from here to the commit, other writers queue on them.
        self._retally(cur, before, after)

    def _lock_task(self, cur: Any, task_id: str) -> None:
        """Make other writers of ``task_id`` wait for this transaction (its
        tallies are read before the write): SQLite writers already do."""

    def _tally(self, cur: Any, task_id: str) -> Any:
        """What ``task_id`` adds to the tallies now (None where the database
        keeps them itself)."""
        return None if self.tallies_kept else tally_of(
            cur.execute(TALLY_SQL, (task_id,)).fetchone())

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
        ids = sorted(set(task_ids))

        def body(cur: Any) -> None:
            self._erase(cur, ids)
            self._bump(cur)
            cur.executemany(_INSERT_DELETED, [(i,) for i in ids])

        self._tx(body)

    def _erase(self, cur: Any, task_ids: Sequence[str]) -> None:
        """Delete the rows and events of ``task_ids`` (sorted: locked in one
        order) and their part of the tallies; the caller bumps the revision
        and records them in ``deleted``."""
        rows = [(i,) for i in task_ids]
        cur.executemany("DELETE FROM events WHERE task_id = ?", rows)
        for (task_id,) in rows:
            self._lock_task(cur, task_id)
            before = self._tally(cur, task_id)
            if cur.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,)).rowcount:
                self._retally(cur, before, None)  # (row-level security may keep a row)

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

def _lower(value: Any) -> Any:
    """SQLite's ``LOWER`` as :meth:`str.lower` (the search's needle is lowered
    so): SQLite's own lowers ASCII only, and ``Über`` was missed."""
    return value.lower() if isinstance(value, str) else value


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
        for conn in (self._conn, self._reader):  # LOWER folds every script, not ASCII only
            conn.create_function("lower", 1, _lower, deterministic=True)
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
