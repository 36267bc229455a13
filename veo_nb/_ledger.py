"""The spending ledger: an append-only table of what a store's creates may
have cost, that removing or deleting tasks never changes (see
:mod:`veo_nb._spending`).

Rows are only ever inserted, each with a unique ``entry``:

* ``create``: one per create about to be sent (``entry`` is its
  ``unconfirmed-…`` entry's id), with the ``amount`` it is expected to cost
  (the last amount seen for its model and resolution; NULL when unknown),
  written in the same transaction as the entry and the cap check;
* ``void:<entry>``: the service clearly refused that create (it is not
  spent), written by whoever wrote the create and before any real task
  replaced its entry (a void of another kind does not count);
* ``id:<task id>``: the real task that replaced the entry (its first write);
* ``amount:<task id>:<amount>``: an amount the service reported for a task
  (its ``ref`` is the create's entry), the largest one counting.

On a class store everyone may read and insert rows (as themselves), nobody
update or delete one (:mod:`veo_nb._class`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ._schema import LEDGER_AMOUNT_ENTRY as _AMOUNT_ENTRY
from ._schema import LEDGER_COLUMNS as _COLUMNS
from ._store_sql import _INSERT_DELETED, _NEXT_REV, _SELECT_ROWS, Row, _stored_row

if TYPE_CHECKING:  # pragma: no cover
    from .records import TaskRecord

_T = TypeVar("_T")

#: The amount a task's stored row reports, once per amount (``?``: now, the task).
NOTE_AMOUNT = (
    f"INSERT INTO ledger ({_COLUMNS}) SELECT {_AMOUNT_ENTRY}, 'amount', "
    "COALESCE((SELECT l.ref FROM ledger l WHERE l.entry = 'id:' || tasks.task_id), task_id), "
    "task_id, COALESCE(first_seen_at, created_at, 0), ?, model, resolution, amount "
    "FROM tasks WHERE task_id = ? AND amount IS NOT NULL AND request <> '{}' "
    "ON CONFLICT (entry) DO NOTHING"
)
_INSERT = f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Today's creates (not voided): how many, what the service reported for
#: them, and what those it reported nothing for are expected to cost.
_SPENT = (
    "SELECT COUNT(*), SUM(paid), COUNT(paid), SUM(CASE WHEN paid IS NULL THEN expected END) "
    "FROM (SELECT c.entry, MAX(c.amount) AS expected, MAX(a.amount) AS paid FROM ledger c "
    "LEFT JOIN ledger a ON a.ref = c.entry AND a.kind = 'amount' "
    "WHERE c.kind = 'create' AND c.at >= ? AND NOT EXISTS (SELECT 1 FROM ledger v "
    "WHERE v.entry = 'void:' || c.entry AND COALESCE(v.owner, '') = COALESCE(c.owner, '') "
    "AND NOT EXISTS (SELECT 1 FROM ledger i WHERE i.kind = 'id' AND i.ref = c.entry)) "
    "GROUP BY c.entry) s"
)
_EXPECTED = ("SELECT amount FROM ledger WHERE kind = 'amount' AND model = ? AND resolution = ? "
             "ORDER BY seen DESC LIMIT 1")


class Spent(NamedTuple):
    """A day's spending: ``tasks`` created (or maybe created), the
    ``amount`` the service reported for them (None: none), and the
    ``reserved`` amount: what the others are expected to cost (None: none
    known)."""

    tasks: int
    amount: float | None
    reserved: float | None


def spent(cur: Any, since: float) -> Spent:
    """What the ledger holds for the creates sent at or after unix time ``since``."""
    n, paid, costed, expected = cur.execute(_SPENT, (since,)).fetchone()
    return Spent(int(n), float(paid) if costed else None,
                 None if expected is None else float(expected))


def expected_cost(cur: Any, model: str | None, resolution: str | None) -> float | None:
    """The last amount the service reported for a task of ``model`` and
    ``resolution`` (None: none yet)."""
    found = cur.execute(_EXPECTED, (model, resolution)).fetchone()
    return None if found is None else float(found[0])


def add_creates(cur: Any, entries: Sequence[Any], expected: Sequence[float | None],
                now: float) -> None:
    """The ``create`` rows of ``entries`` (records of "may have been billed" entries)."""
    cur.executemany(_INSERT, [
        (e.task_id, "create", None, e.task_id, now, now, e.model, e.resolution, cost)
        for e, cost in zip(entries, expected)])


def add_voids(cur: Any, entry_ids: Sequence[str], now: float) -> None:
    """The ``void`` rows of creates the service clearly refused."""
    cur.executemany(_INSERT, [(f"void:{e}", "void", e, e, now, now, None, None, None)
                              for e in entry_ids])


def add_link(cur: Any, entry_id: str, task_id: str, now: float) -> None:
    """The ``id`` row: ``task_id`` is the create of entry ``entry_id``."""
    cur.execute(_INSERT + " ON CONFLICT (entry) DO NOTHING",
                (f"id:{task_id}", "id", entry_id, task_id, now, now, None, None, None))


class StoreLedger:
    """The ledger's store calls (a mixin of :class:`~veo_nb.store.BaseStore`,
    which provides :meth:`_tx`, :meth:`_read`, :meth:`_put`, :meth:`_erase`
    and :meth:`_bump`)."""

    def _tx(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    def _put(self, cur: Any, record: TaskRecord, event_rows: Sequence[tuple[Any, ...]],
             fields: Sequence[str] | None, claim: dict[str, Any],
             reopen: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _erase(self, cur: Any, task_ids: Sequence[str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bump(self, cur: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _lock_spending(self, cur: Any, since: float) -> None:
        """Make other reservations of the day wait for this transaction
        (SQLite: ``BEGIN IMMEDIATE`` already makes every writer wait)."""

    def spent_since(self, since: float) -> Spent:
        """What the creates sent through this store at or after unix time
        ``since`` spent (every process and user counted; removing tasks
        changes nothing)."""
        return self._read(lambda cur: spent(cur, since))

    def reserve(self, entries: Sequence[TaskRecord], since: float,
                check: Callable[[Spent, list[float | None]], None]) -> list[Row]:
        """In one transaction: read what was spent since ``since``, call
        ``check(spent, expected costs of entries)`` (it raises to refuse:
        nothing is written), then store ``entries`` ("may have been billed"
        entries of creates about to be sent) and their ``create`` rows in the
        ledger. Returns the stored rows."""
        def body(cur: Any) -> list[Row]:
            self._lock_spending(cur, since)
            costs = {(e.model, e.resolution): expected_cost(cur, e.model, e.resolution)
                     for e in entries}
            expected = [costs[e.model, e.resolution] for e in entries]
            check(spent(cur, since), expected)
            for entry in entries:
                self._put(cur, entry, (), None, {}, False)
            add_creates(cur, entries, expected, time.time())
            self._bump(cur)
            ids = [(e.task_id,) for e in entries]
            cur.executemany(f"UPDATE tasks SET rev = {_NEXT_REV} WHERE task_id = ?", ids)
            return [_stored_row(cur.execute(f"{_SELECT_ROWS} WHERE task_id = ?", i).fetchone())
                    for i in ids]

        return self._tx(body)

    def unreserve(self, entry_ids: Sequence[str]) -> None:
        """Erase the entries of creates the service clearly refused (or that
        were never sent), and void their ``create`` rows, in one transaction."""
        ids = sorted(set(entry_ids))
        if not ids:
            return

        def body(cur: Any) -> None:
            add_voids(cur, ids, time.time())  # (a class store checks the entry is there)
            self._erase(cur, ids)
            self._bump(cur)
            cur.executemany(_INSERT_DELETED,
                            [(i,) for i in ids])

        self._tx(body)
