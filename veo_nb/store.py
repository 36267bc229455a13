"""SQLite persistence of task records and their events.

One file holds one row per task and an append-only table of events. The file
is in WAL mode, so a notebook can read while a tracker writes, several
processes can write at once (each write waits for the others), and a process
killed mid-write loses nothing that was committed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pandas as pd

from .errors import VeoError
from .models import TaskStatus
from .records import (
    HISTORY_COLUMNS,
    Event,
    TaskRecord,
    from_unix,
    history_from_rows,
    tasks_frame,
    to_unix,
)

#: The schema version this release writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1

#: SQL steps that bring a store from version ``v - 1`` to version ``v``.
#: A later release adds ``2: (...)`` and bumps :data:`SCHEMA_VERSION`.
MIGRATIONS: dict[int, tuple[str, ...]] = {
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
}

#: Seconds SQLite waits for another writer before reporting "locked".
BUSY_TIMEOUT_S = 30.0

_TIMESTAMPS = frozenset({
    "created_at", "first_seen_at", "started_at", "finished_at", "url_expires_at",
    "last_polled_at", "next_poll_at",
})
_JSON = frozenset({"request", "raw"})
_COLUMNS: tuple[str, ...] = tuple(f.name for f in TaskRecord.__dataclass_fields__.values())
#: Fields kept from the stored row when it is terminal and the incoming one is not.
_STATUS_FIELDS = (
    "status", "status_text", "started_at", "finished_at", "video_url",
    "url_expires_at", "error", "raw",
)
_TERMINAL = tuple(s.value for s in TaskStatus if s.is_terminal)


def _upsert_sql() -> str:
    terminal = ", ".join(f"'{s}'" for s in _TERMINAL)
    keep = f"tasks.status IN ({terminal}) AND excluded.status NOT IN ({terminal})"
    updates = []
    for name in _COLUMNS[1:]:
        if name in _STATUS_FIELDS:
            updates.append(
                f"{name} = CASE WHEN {keep} THEN tasks.{name} ELSE excluded.{name} END"
            )
        elif name == "first_seen_at":
            updates.append(f"{name} = COALESCE(tasks.{name}, excluded.{name})")
        else:
            updates.append(f"{name} = excluded.{name}")
    return (
        f"INSERT INTO tasks ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _COLUMNS)}) "
        f"ON CONFLICT (task_id) DO UPDATE SET {', '.join(updates)}"
    )


_UPSERT = _upsert_sql()
_INSERT_EVENT = (
    "INSERT INTO events (task_id, kind, status, observed_at, http_status, attempt, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_TASKS = f"SELECT {', '.join(_COLUMNS)} FROM tasks"

_T = TypeVar("_T")


class StoreError(VeoError):
    """The store file cannot be used: written by a newer veo_nb, or not a
    veo_nb store at all. The message says what to do."""


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
    return tuple(row)


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


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.task_id, event.kind, event.status, to_unix(event.observed_at),
        event.http_status, event.attempt, event.detail,
    )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
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
        try:
            self._retry(self._open)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(
                f"{self.path} is not a usable veo_nb store ({exc}): "
                "pass another path, or move this file away"
            ) from exc
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer veo_nb (store schema "
                    f"{version}, this release reads up to {SCHEMA_VERSION}): "
                    "upgrade veo_nb (pip install -U veo_nb) or use another store path"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[step]:
                    conn.execute(sql)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry(self, action: Callable[[], _T]) -> _T:
        """Run ``action`` under the lock, again after a short pause while
        another process holds the write lock (up to the busy timeout)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.01
        while True:
            try:
                with self._lock:
                    return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _transact(self, body: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``body(connection)`` in one write transaction (retried while
        another process holds the write lock)."""

        def transaction() -> None:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        self._retry(transaction)

    def _write(self, record: TaskRecord | None, events: Iterable[Event]) -> None:
        """Upsert ``record`` (if any) and append ``events`` in one transaction."""
        record_row = None if record is None else _record_row(record)
        event_rows = [_event_row(e) for e in events]

        def body(conn: sqlite3.Connection) -> None:
            if record_row is not None:
                conn.execute(_UPSERT, record_row)
            conn.executemany(_INSERT_EVENT, event_rows)

        self._transact(body)

    def save(self, record: TaskRecord, events: Iterable[Event] = ()) -> None:
        """Insert or update ``record`` and append ``events``, in one transaction.

        When the stored row is already ``completed``/``failed`` (perhaps
        written by another process) and ``record`` is not, the stored status,
        times, link, error and raw body are kept; other fields are updated.
        ``first_seen_at`` keeps its first value.
        """
        self._write(record, events)

    def append_events(self, events: Iterable[Event]) -> None:
        """Append ``events`` in one transaction."""
        self._write(None, events)

    def delete(self, task_ids: Iterable[str]) -> None:
        """Erase the records and events of ``task_ids``, in one transaction."""
        rows = [(i,) for i in task_ids]

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM events WHERE task_id = ?", rows)
            conn.executemany("DELETE FROM tasks WHERE task_id = ?", rows)

        self._transact(body)

    def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of ``task_id``, or None."""
        row = self._retry(
            lambda: self._conn.execute(f"{_SELECT_TASKS} WHERE task_id = ?", (task_id,)).fetchone()
        )
        return None if row is None else _row_record(row)

    def records(self, *, tracked_only: bool = True) -> list[TaskRecord]:
        """Stored records in the order they were first seen (only those still
        tracked, unless ``tracked_only=False``)."""
        where = "WHERE tracked = 1 " if tracked_only else ""
        rows = self._retry(
            lambda: self._conn.execute(
                f"{_SELECT_TASKS} {where}"
                "ORDER BY first_seen_at IS NULL, first_seen_at, rowid"
            ).fetchall()
        )
        return [_row_record(row) for row in rows]

    def event_count(self) -> int:
        """How many events the store holds."""
        return self._retry(lambda: self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def tasks_frame(self, *, tracked_only: bool = False) -> pd.DataFrame:
        """One row per stored task (see :func:`veo_nb.records.tasks_frame`)."""
        return tasks_frame(self.records(tracked_only=tracked_only))

    def events_frame(self) -> pd.DataFrame:
        """Every event, in the order written (see
        :func:`veo_nb.records.history_frame` for the columns)."""
        sql = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM events ORDER BY seq"
        rows = self._retry(lambda: self._conn.execute(sql).fetchall())
        return history_from_rows(rows)

    def close(self) -> None:
        """Close the file; the store cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"
