"""How task records become the store's rows and back, and the SQL both
backends share (``?`` placeholders; :mod:`veo_nb.store_pg` adapts them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._schema import DERIVED_COLUMNS
from .models import TaskStatus
from .records import HISTORY_COLUMNS, Event, TaskRecord, from_unix, to_unix

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
#: Records an erased task for the followers (after the revision's bump).
_INSERT_DELETED = f"INSERT INTO deleted (task_id, rev) VALUES (?, {_NEXT_REV})"
_SELECT_REV = "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'rev'"
_SELECT_EVENTS = (
    "SELECT " + ", ".join(f"e.{c}" for c in HISTORY_COLUMNS if c != "owner")
    + ", t.owner FROM events e LEFT JOIN tasks t ON t.task_id = e.task_id"
)



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
