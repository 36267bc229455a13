"""What views ask of a store, answered by the database: a page of tasks
sorted and filtered, the counts of a header, the tasks an engine must hold
(the live ones), and ``tasks()`` as a DataFrame built from the rows without a
:class:`~veo_nb.records.TaskRecord` per task.

A history only grows (a class store gains thousands of tasks a term); these
queries keep what a view costs to what it shows. The indexes they use are in
the store's migrations (schema 6): the panel's order (creation time), the
status a person reads, the owner, and the live tasks (a partial index).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from ._spending import UNCONFIRMED_PREFIX
from .models import TaskStatus
from .records import (
    NOT_FOUND_REASON,
    TASK_COLUMNS,
    TASK_EXTRA_COLUMNS,
    TaskRecord,
    status_column,
    to_unix,
    utc_column,
)

#: The status a person reads (the panel's word): ``not found`` for an id the
#: service never knew, else the service's word.
NOT_FOUND_WORD = "not found"
#: Values of :attr:`TaskQuery.sort`.
SORTS: tuple[str, ...] = ("created", "status", "label")
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in TaskStatus if s.is_terminal)
WORD_SQL = (f"(CASE WHEN error = '{NOT_FOUND_REASON}' THEN '{NOT_FOUND_WORD}' "
            "ELSE status_text END)")
#: What an engine holds in memory: tracked tasks still to poll, or whose video
#: is still to fetch (the partial index ``tasks_live`` has the same WHERE).
LIVE_SQL = (f"tracked = 1 AND (status NOT IN ({_TERMINAL_SQL}) "
            "OR download_state IN ('pending', 'failed'))")
_CREATED = "COALESCE(created_at, first_seen_at)"
_RANK = (f"(CASE {WORD_SQL} WHEN 'queued' THEN 0 WHEN 'processing' THEN 1 "
         f"WHEN 'completed' THEN 2 WHEN 'failed' THEN 3 WHEN '{NOT_FOUND_WORD}' THEN 4 ELSE 5 END)")
_SEP = "\x1f"  # between the searched fields: a needle never spans two of them
_SEARCHED = ("task_id", "label", "owner", "prompt", "model", "resolution", "aspect_ratio",
             "error", WORD_SQL)
_SEARCH_SQL = f" || '{_SEP}' || ".join(f"COALESCE({c}, '')" for c in _SEARCHED)
#: How a backend lowers the searched text by default (a ``{}`` for it): SQL's
#: ``LOWER``, which each store makes fold every script (see ``fold``).
FOLD_SQL = "LOWER({})"
_GAVE_UP_SQL = f"status NOT IN ({_TERMINAL_SQL}) AND error LIKE 'gave up polling%'"
_STAMPS = ("created_at", "first_seen_at", "started_at", "finished_at", "url_expires_at",
           "last_polled_at", "next_poll_at")
#: The stored columns ``tasks()`` reads, in order.
FRAME_COLUMNS: tuple[str, ...] = tuple(
    c for c in TASK_COLUMNS + TASK_EXTRA_COLUMNS if c not in ("queued_s", "processing_s", "total_s"))


@dataclass(frozen=True)
class TaskQuery:
    """Which tracked tasks a view shows, and in which order.

    ``status``: a status word (``queued`` … ``failed``, ``not found``, or
    any word the service used), "" for all; ``owner``: "" for all;
    ``search``: text found (case-insensitively) in the id, label, owner,
    prompt, model, resolution, aspect ratio, error or status; ``completed``:
    only completed tasks (the gallery). ``sort``: ``"created"`` (creation,
    else first-seen time), ``"status"`` (queued, processing, completed,
    failed, not found, other) or ``"label"`` (unlabelled last); ties newest
    first."""

    status: str = ""
    owner: str = ""
    search: str = ""
    sort: str = "created"
    descending: bool = True
    completed: bool = False

    def where(self, fold: str = FOLD_SQL) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters; ``fold`` lowers the searched
        text in the backend's SQL (a ``{}`` for it) as :meth:`str.lower` does
        the needle, for every script (``Über``, ``Москва``), not ASCII only."""
        terms, params = ["tracked = 1"], []
        if self.status:
            terms.append(f"{WORD_SQL} = ?")
            params.append(self.status)
        if self.owner:
            terms.append("owner = ?")
            params.append(self.owner)
        needle = self.search.strip().lower()
        if needle:
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            terms.append(f"{fold.format(_SEARCH_SQL)} LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if self.completed:
            terms.append("status = 'completed'")
        return " AND ".join(terms), params

    def order(self, nulls: Callable[[bool], str] | None = None) -> str:
        """The SQL ``ORDER BY`` list (``nulls(descending)`` gives the
        backend's words that put tasks without a time where Python would)."""
        def by_created(descending: bool) -> str:
            way = "DESC" if descending else "ASC"
            tail = nulls(descending) if nulls is not None else ""
            return f"{_CREATED} {way}{tail}, first_seen_at {way}{tail}, task_id {way}"

        if self.sort == "created":
            return by_created(self.descending)
        way = "DESC" if self.descending else "ASC"
        if self.sort == "status":
            return f"{_RANK} {way}, {by_created(True)}"
        return (f"(label IS NULL OR label = '') ASC, LOWER(label) {way}, "
                f"{by_created(True)}")


@dataclass(frozen=True)
class Overview:
    """The header of a view, from one aggregate query: how many tracked
    tasks there are per status word and per owner, what the service said
    they cost, and how many creates were never confirmed."""

    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    amount: float = math.nan
    costed: int = 0
    unconfirmed: int = 0
    completed: int = 0  # tasks whose status is completed (the gallery's)
    #: Per status word, how many of its tasks polling gave up on.
    gave_up_words: dict[str, int] = field(default_factory=dict)

    @property
    def gave_up(self) -> int:
        """How many tracked tasks polling gave up on."""
        return sum(self.gave_up_words.values())


NOT_FOUND_FLAG = f"(CASE WHEN error = '{NOT_FOUND_REASON}' THEN 1 ELSE 0 END)"
#: Running totals of the tracked tasks per (service's status word, not found,
#: owner), kept by every write of a task in the same transaction: the
#: header's counts cost what a handful of rows cost, however long the history.
TALLIES_TABLE = """CREATE TABLE tallies (
    status_text TEXT NOT NULL, not_found INTEGER NOT NULL, owner TEXT NOT NULL,
    tasks INTEGER NOT NULL, completed INTEGER NOT NULL, costed INTEGER NOT NULL,
    amount {real} NOT NULL,
    PRIMARY KEY (status_text, not_found, owner)
)"""
#: The tallies of a store that had none (one aggregate, at its migration).
FILL_TALLIES = (
    f"INSERT INTO tallies SELECT status_text, {NOT_FOUND_FLAG}, COALESCE(owner, ''), COUNT(*), "
    "SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), COUNT(amount), "
    "COALESCE(SUM(amount), 0) FROM tasks WHERE tracked = 1 "
    f"GROUP BY status_text, {NOT_FOUND_FLAG}, COALESCE(owner, '')"
)
#: What one task adds to the tallies (read before and after each write).
TALLY_SQL = (f"SELECT status_text, {NOT_FOUND_FLAG}, COALESCE(owner, ''), tracked, status, amount "
             "FROM tasks WHERE task_id = ?")
#: Adds a delta to one tally row.
ADD_TALLY_SQL = (
    "INSERT INTO tallies (status_text, not_found, owner, tasks, completed, costed, amount) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (status_text, not_found, owner) DO UPDATE SET "
    "tasks = tallies.tasks + excluded.tasks, completed = tallies.completed + excluded.completed, "
    "costed = tallies.costed + excluded.costed, amount = tallies.amount + excluded.amount"
)
OVERVIEW_SQL = ("SELECT status_text, not_found, owner, tasks, completed, costed, amount "
                "FROM tallies WHERE tasks <> 0")
#: Creates never confirmed: a range of the primary key.
UNCONFIRMED_SQL = (f"SELECT COUNT(*) FROM tasks WHERE task_id >= '{UNCONFIRMED_PREFIX}' "
                   f"AND task_id < '{UNCONFIRMED_PREFIX[:-1]}.' AND tracked = 1")
#: The status word of each task polling gave up on: unfinished, so in ``tasks_live``.
GAVE_UP_SQL = f"SELECT {WORD_SQL} FROM tasks WHERE {LIVE_SQL} AND {_GAVE_UP_SQL}"

Tally = tuple[tuple[str, int, str], tuple[int, int, int, float]]


def tally_of(row: Sequence[Any] | None) -> Tally | None:
    """What a task (a row of :data:`TALLY_SQL`, or None) adds to the tallies."""
    if row is None or not row[3]:
        return None
    status_text, not_found, owner, _tracked, status, amount = row
    return ((str(status_text), int(not_found), str(owner)),
            (1, int(status == "completed"), int(amount is not None), float(amount or 0.0)))


def tally_deltas(before: Tally | None, after: Tally | None) -> list[tuple[Any, ...]]:
    """The :data:`ADD_TALLY_SQL` rows that turn ``before`` into ``after``,
    in key order (writers lock tally rows in one order: no deadlock)."""
    if before == after:
        return []
    deltas: dict[tuple[str, int, str], list[float]] = {}
    for tally, sign in ((before, -1), (after, 1)):
        if tally is not None:
            total = deltas.setdefault(tally[0], [0, 0, 0, 0.0])
            for i, value in enumerate(tally[1]):
                total[i] += sign * value
    return [(*key, int(v[0]), int(v[1]), int(v[2]), float(v[3]))
            for key, v in sorted(deltas.items()) if any(v)]


def overview_from(rows: Sequence[Sequence[Any]], unconfirmed: int,
                  gave_up: Sequence[Sequence[Any]]) -> Overview:
    """An :class:`Overview` from the rows of :data:`OVERVIEW_SQL`, the count
    of :data:`UNCONFIRMED_SQL` and the rows of :data:`GAVE_UP_SQL` (one per task)."""
    counts: dict[str, int] = {}
    owners: set[str] = set()
    amounts: list[float] = []
    costed = completed = 0
    for status_text, not_found, owner, n, n_completed, n_costed, amount in rows:
        word = NOT_FOUND_WORD if not_found else status_text
        counts[word] = counts.get(word, 0) + int(n)
        completed += int(n_completed)
        if owner and n:
            owners.add(owner)
        if n_costed:
            amounts.append(float(amount))
            costed += int(n_costed)
    return Overview(
        total=sum(counts.values()), counts={w: n for w, n in counts.items() if n},
        owners=tuple(sorted(owners, key=lambda o: (o.casefold(), o))),
        amount=math.fsum(amounts) if costed else math.nan, costed=costed,
        unconfirmed=int(unconfirmed), completed=completed,
        gave_up_words=dict(Counter(str(word) for (word,) in gave_up)))


@dataclass(frozen=True)
class TaskFilter:
    """What ``tracker.tasks()`` keeps: tasks created (else first seen) at or
    after ``since`` (a datetime, an ISO date or time, unix seconds), of a ``status`` word (or several), of an ``owner``; at
    most the ``limit`` most recently seen. Untracked tasks only with
    ``tracked_only=False``."""

    since: datetime | str | float | None = None
    status: str | Sequence[str] | None = None
    owner: str | None = None
    limit: int | None = None
    tracked_only: bool = True

    def since_unix(self) -> float:
        """``since`` as unix seconds (a naive time or date is UTC); raises
        :class:`ValueError` for what is not a time."""
        since = self.since
        if isinstance(since, str):
            since = pd.Timestamp(since).to_pydatetime()
        if isinstance(since, datetime):
            return float(to_unix(since) or 0.0)
        if isinstance(since, bool) or not isinstance(since, (int, float)):
            raise ValueError(f"not a time: {since!r}")
        return float(since)

    def keeps(self, record: TaskRecord) -> bool:
        """Whether ``record`` passes the filter (``limit`` aside)."""
        if self.tracked_only and not record.tracked:
            return False
        if self.since is not None:
            created = to_unix(record.created_at or record.first_seen_at)
            if created is None or created < self.since_unix():
                return False
        if self.status:
            words = [self.status] if isinstance(self.status, str) else list(self.status)
            word = NOT_FOUND_WORD if record.error == NOT_FOUND_REASON else record.status_text
            if word not in words:
                return False
        return self.owner is None or record.owner == self.owner

    def sql(self) -> tuple[str, list[Any]]:
        """``WHERE … ORDER BY … [LIMIT]`` for :data:`FRAME_COLUMNS` (the
        ``limit`` newest are read newest first: :func:`frame_from` puts them
        back in first-seen order)."""
        terms: list[str] = []
        params: list[Any] = []
        if self.tracked_only:
            terms.append("tracked = 1")
        if self.since is not None:
            terms.append(f"{_CREATED} >= ?")
            params.append(self.since_unix())
        if self.status:
            words = [self.status] if isinstance(self.status, str) else list(self.status)
            terms.append(f"{WORD_SQL} IN ({', '.join('?' for _ in words)})")
            params.extend(words)
        if self.owner is not None:
            terms.append("owner = ?")
            params.append(self.owner)
        where = f"WHERE {' AND '.join(terms)} " if terms else ""
        if self.limit is not None:
            return (f"{where}ORDER BY first_seen_at IS NULL DESC, first_seen_at DESC, "
                    f"{{tie}} DESC LIMIT {int(self.limit)}", params)
        return f"{where}ORDER BY first_seen_at IS NULL, first_seen_at, {{tie}}", params


def frame_from(rows: Sequence[Sequence[Any]], *, newest_first: bool = False) -> pd.DataFrame:
    """The ``tasks()`` frame of rows holding :data:`FRAME_COLUMNS` in order
    (times as unix seconds), built column by column (no record per row)."""
    if newest_first:
        rows = rows[::-1]
    table = np.array(rows, dtype=object).reshape(len(rows), len(FRAME_COLUMNS))
    raw = {name: table[:, i] for i, name in enumerate(FRAME_COLUMNS)}
    columns: dict[str, Any] = {}
    micros: dict[str, Any] = {}
    for name in FRAME_COLUMNS:
        values = raw[name]
        if name in _STAMPS:
            micros[name] = np.round(values.astype("float64") * 1e6)
            columns[name] = utc_column(values.astype("float64"))
        elif name == "status":
            columns[name] = status_column(values)
        elif name == "tracked":
            columns[name] = pd.Series(values.astype(bool), dtype=bool)
        elif name == "poll_count":
            columns[name] = pd.Series(values.astype("int64"), dtype="int64")
        elif name in ("amount", "progress"):
            columns[name] = pd.Series(values.astype("float64"), dtype="float64")
        else:
            columns[name] = pd.Series(values, dtype=object)
    start = np.where(np.isnan(micros["created_at"]), micros["first_seen_at"], micros["created_at"])
    for name, begin, end in (("queued_s", start, micros["started_at"]),
                             ("processing_s", micros["started_at"], micros["finished_at"]),
                             ("total_s", start, micros["finished_at"])):
        with np.errstate(invalid="ignore"):
            columns[name] = pd.Series(np.maximum(0.0, (end - begin) / 1e6), dtype="float64")
    frame: pd.DataFrame = pd.DataFrame(columns)[list(TASK_COLUMNS + TASK_EXTRA_COLUMNS)]
    return frame


__all__ = ["ADD_TALLY_SQL", "FILL_TALLIES", "FRAME_COLUMNS", "GAVE_UP_SQL", "LIVE_SQL",
           "NOT_FOUND_WORD", "OVERVIEW_SQL", "Overview", "SORTS", "TALLIES_TABLE", "TALLY_SQL",
           "TaskFilter", "TaskQuery", "UNCONFIRMED_SQL", "WORD_SQL", "frame_from",
           "overview_from", "tally_deltas", "tally_of"]
