"""Who polls and who downloads each task, and when the service lets anyone
ask (a mixin of :class:`~veo_nb.store.BaseStore`): one conditional ``UPDATE``
takes a claim, so that one process polls a task per interval and one fetches
its video, whatever the number of processes on the store (see
:mod:`veo_nb._engine`); a 429's gate is shared, and bounded, per service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._retry import MAX_RETRY_AFTER_S
from ._store_sql import _NEXT_REV, _TERMINAL_SQL, Row

if TYPE_CHECKING:  # pragma: no cover
    from .store import StoreStats

_T = TypeVar("_T")


class StoreClaims:
    """The claims and the 429 gate; the store provides :meth:`_tx`,
    :meth:`_read`, :meth:`_row`, :meth:`_bump`, :attr:`stats`, :attr:`_NOW`
    and :attr:`_GREATEST`."""

    #: The SQL function of the larger of two values.
    _GREATEST: str

    #: SQL for the database's clock (unix seconds) where several machines
    #: share the store; None: the caller's clock (one machine's file).
    _NOW: str | None = None

    @property
    def stats(self) -> StoreStats:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tx(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _row(cur: Any, task_id: str) -> Row | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bump(self, cur: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, body: Callable[[Any], _T]) -> _T:  # pragma: no cover - abstract
        raise NotImplementedError

    def rate_limited_until(self, service: str, *, horizon: float = MAX_RETRY_AFTER_S) -> float:
        """Unix time before which no process should send ``service`` a request
        (a 429's ``Retry-After``, shared by every process); 0.0 when none. A
        gate more than ``horizon`` seconds ahead (written by veo_nb 0.3, which
        kept any ``Retry-After``, or by a clock far ahead) is brought back to
        now + ``horizon`` in the store, so that it expires."""
        row = self._read(lambda cur: cur.execute(
            "SELECT rate_limited_until FROM services WHERE service = ?", (service,)).fetchone())
        until, bound = (0.0 if row is None else float(row[0])), time.time() + horizon
        if until <= bound:
            return until
        self._tx(lambda cur: cur.execute(
            "UPDATE services SET rate_limited_until = ? WHERE service = ? "
            "AND rate_limited_until > ?", (bound, service, bound)))
        return bound

    def limit_rate(self, service: str, until: float, *,
                   horizon: float = MAX_RETRY_AFTER_S) -> None:
        """Record that ``service`` asked every client to wait until ``until``
        (at most ``horizon`` seconds from now): a gate stored further ahead
        than that is replaced, another one kept when it ends later."""
        bound = time.time() + horizon
        self._tx(lambda cur: cur.execute(
            "INSERT INTO services (service, rate_limited_until) VALUES (?, ?) "
            "ON CONFLICT (service) DO UPDATE SET rate_limited_until = CASE "
            "WHEN services.rate_limited_until > ? THEN excluded.rate_limited_until ELSE "
            f"{self._GREATEST}(services.rate_limited_until, excluded.rate_limited_until) END",
            (service, min(until, bound), bound)))

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
