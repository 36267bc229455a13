"""What views read from a store (a mixin of :class:`~veo_nb.store.BaseStore`):
pages of the panel, its header's counts, the live tasks an engine loads,
rows by id, and the tasks and events as DataFrames. Each is one query, on
the indexes of schema 6, that costs what it returns, not the whole history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pandas as pd

from ._store_query import (
    FOLD_SQL,
    FRAME_COLUMNS,
    GAVE_UP_SQL,
    LIVE_SQL,
    OVERVIEW_SQL,
    UNCONFIRMED_SQL,
    Overview,
    TaskFilter,
    TaskQuery,
    frame_from,
    overview_from,
)
from ._store_sql import _SELECT_EVENTS, _SELECT_ROWS, Row, _stored_row
from .records import TaskRecord, history_from_rows

_T = TypeVar("_T")


class StoreViews:
    """The read side of a store for views; the store provides :meth:`_read`."""

    #: The last ``ORDER BY`` key of first-sight order (ties).
    _TIE = "rowid"
    #: How the backend lowers searched text for every script (see :meth:`TaskQuery.where`).
    _FOLD = FOLD_SQL

    def _read(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

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
        where, params = query.where(self._FOLD)
        sql = (f"{_SELECT_ROWS} WHERE {where} ORDER BY {query.order(self._nulls)} "
               "LIMIT ? OFFSET ?")
        found = self._read(lambda cur: cur.execute(sql, (*params, limit, offset)).fetchall())
        return [_stored_row(r).record for r in found]

    def count(self, query: TaskQuery) -> int:
        """How many tracked tasks ``query`` shows."""
        where, params = query.where(self._FOLD)
        return int(self._read(lambda cur: cur.execute(
            f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]))

    def position(self, query: TaskQuery, task_id: str) -> int | None:
        """Where ``task_id`` is in ``query``'s order (0 first), None when the
        query does not show it."""
        where, params = query.where(self._FOLD)
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
