"""The store's schema: its version, and the steps that bring an older store
to it (both backends: SQLite here, PostgreSQL's first steps in
:mod:`veo_nb.store_pg`). A step is SQL, or a function of a cursor (a backfill
that needs Python)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Union

from . import _answers
from ._store_query import FILL_TALLIES, LIVE_SQL, TALLIES_TABLE, WORD_SQL

#: The schema version this release writes (``PRAGMA user_version``).
SCHEMA_VERSION = 7
#: The spending cap counts the day's submitted tasks by first sight.
SPENT_INDEX = "CREATE INDEX tasks_first_seen ON tasks (first_seen_at)"
#: Which task each notebook cell's n-th identical submit created (reuse on
#: re-runs, :mod:`veo_nb._reuse`); ``{real}`` is the backend's float type.
REUSE_TABLE = """CREATE TABLE reuse (
    cell TEXT NOT NULL, request TEXT NOT NULL, n INTEGER NOT NULL,
    task_id TEXT NOT NULL, created_at {real} NOT NULL,
    PRIMARY KEY (cell, request, n)
)"""

#: The spending ledger, append-only (:mod:`veo_nb._ledger`); ``{real}`` is
#: the backend's float type, ``{owner}`` the default of who wrote a row.
LEDGER_TABLE = """CREATE TABLE ledger (
    entry TEXT PRIMARY KEY, kind TEXT NOT NULL, ref TEXT, task_id TEXT,
    at {real} NOT NULL, seen {real}, model TEXT, resolution TEXT, amount {real},
    owner TEXT{owner}
)"""
#: The owner column's default on PostgreSQL (students insert only their own rows).
PG_OWNER = " NOT NULL DEFAULT session_user"
#: What the day's sums and the link of a create to its amounts read.
LEDGER_INDEXES = ("CREATE INDEX ledger_at ON ledger (at)",
                  "CREATE INDEX ledger_ref ON ledger (ref)")
#: The columns every ledger insert gives (``owner`` takes its default).
LEDGER_COLUMNS = "entry, kind, ref, task_id, at, seen, model, resolution, amount"
#: The unique entry of an amount reported for a task (SQL of a ``tasks`` row).
LEDGER_AMOUNT_ENTRY = "'amount:' || task_id || ':' || CAST(amount AS TEXT)"
#: The ledger of a store that had none: every submitted task is a create,
#: and its amount, if reported, the amount of that create.
SEED_LEDGER: tuple[str, ...] = (
    f"INSERT INTO ledger ({LEDGER_COLUMNS}) SELECT task_id, 'create', NULL, task_id, "
    "COALESCE(first_seen_at, created_at, 0), first_seen_at, model, resolution, NULL "
    "FROM tasks WHERE request <> '{}'",
    f"INSERT INTO ledger ({LEDGER_COLUMNS}) SELECT {LEDGER_AMOUNT_ENTRY}, 'amount', task_id, "
    "task_id, "
    "COALESCE(first_seen_at, created_at, 0), COALESCE(finished_at, first_seen_at), model, "
    "resolution, amount FROM tasks WHERE request <> '{}' AND amount IS NOT NULL",
)
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
    # 7 (issue 28, the spending ledger): what the caps count, append-only,
    # seeded with every task submitted before.
    7: (LEDGER_TABLE.format(real="REAL", owner=""), *LEDGER_INDEXES, *SEED_LEDGER),
}


def _json_object(text: Any) -> dict[str, Any]:
    """A stored JSON column as a dict ({} for anything else)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
