"""What a store may spend in a day: the spending cap, and the "may have been
billed" entries that keep every possibly billed create in sight.

**The cap.** ``Tracker(max_tasks_per_day=..., max_amount_per_day=...)``, or
``VEO_NB_MAX_TASKS_PER_DAY`` / ``VEO_NB_MAX_AMOUNT_PER_DAY`` (a teacher sets
them for a whole JupyterHub), caps the creates sent through one store per day
(since local midnight, every process and user of the store counted), and
their amount. A submit past the cap raises :class:`SpendingCapError` before
any request.

**The ledger.** What the caps count is an append-only table of the store
(:mod:`veo_nb._ledger`): one row per create sent, "may have been billed"
entries included, with the amount the service reported for it. Removing or
deleting tasks changes nothing in it; a create the service clearly refused is
voided (another row). The check and the reservation are one transaction with
the entries (SQLite ``BEGIN IMMEDIATE``; PostgreSQL an advisory transaction
lock of the day), so concurrent submits, in threads or processes, never pass
a cap together, and :meth:`~veo_nb.Tracker.submit_many` reserves its whole
batch before the first create, or sends nothing. The amount cap refuses a
task whose **expected cost** (the last amount reported for its model and
resolution) would cross it; today's creates whose amount is not reported yet
count at their expected cost (``spending()["reserved"]``).

**No invisible charge.** Before a create is sent, an entry for it is saved:
``unconfirmed-…``, status ``unknown``, status text :data:`UNCONFIRMED`. The
real task replaces it in the transaction of its first write. Any other
outcome but a clear refusal (the request provably never left, or the service
answered with a readable 4xx error, or rejected the key) keeps it: an
unreadable answer (a proxy page, an empty 202, a body without a task id), a
timeout or reset after sending, Ctrl-C, ``SystemExit``, a killed process. The
entry then stays in ``tasks()``, the panel and ``summary()``, saying the task
may have been created and billed and why, until the user dismisses it
(``tracker.remove(id, delete=True)`` or the panel's ✕).
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import (
    APIError,
    AuthenticationError,
    MissingAPIKeyError,
    SpendingCapError,
    ValidationError,
    VeoError,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._ledger import Spent

#: Environment variables of the caps.
MAX_TASKS_ENV = "VEO_NB_MAX_TASKS_PER_DAY"
MAX_AMOUNT_ENV = "VEO_NB_MAX_AMOUNT_PER_DAY"
#: The id prefix and status text of a "may have been billed" entry.
UNCONFIRMED_PREFIX = "unconfirmed-"
UNCONFIRMED = "unconfirmed"
#: The service recorded for such an entry: no engine polls it.
UNCONFIRMED_SERVICE = "unconfirmed"


def cap_from(value: float | int | None, env: str, *, integer: bool) -> float | None:
    """A cap from an argument, else the environment variable ``env``; None
    for no cap. Raises :class:`~veo_nb.ValidationError` for a bad value."""
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValidationError(f"{env}={text!r}: use a number, or unset it for no cap") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise ValidationError(f"a daily cap must be {kind} >= 0 (0: no new task), got {value!r}")
    return float(value)


def day_start(now: float) -> float:
    """Unix time of local midnight before ``now``."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0,
                                               microsecond=0).timestamp()


def check(caps: tuple[float | None, float | None], spent: Spent,
          expected: list[float | None]) -> None:
    """Raise :class:`SpendingCapError` when creates of the ``expected``
    costs (None: unknown) would pass ``caps`` (tasks, amount) given what was
    ``spent`` today."""
    max_tasks, max_amount = caps
    adding = len(expected)
    if max_tasks is not None and spent.tasks + adding > max_tasks:
        raise SpendingCapError(
            f"the daily cap of this history is {max_tasks:.0f} new tasks and {spent.tasks} were "
            f"submitted today: {adding} more would pass it, so nothing was sent. Raise it "
            f"with Tracker(max_tasks_per_day=...) or {MAX_TASKS_ENV}, or wait until midnight")
    if max_amount is None or (spent.amount is None and spent.reserved is None
                              and all(e is None for e in expected)):
        return
    so_far = (spent.amount or 0.0) + (spent.reserved or 0.0)
    more = sum(e for e in expected if e is not None)
    if so_far >= max_amount or so_far + more > max_amount:
        said = f"the service reported {spent.amount or 0.0:g} for today's tasks"
        if spent.reserved:
            said += f" and {spent.reserved:g} is expected for those not reported yet"
        raise SpendingCapError(
            f"the daily cap of this history is an amount of {max_amount:g} and {said}"
            + (f"; {adding} more would cost about {more:g}" if more else "")
            + f", so nothing was sent. Raise it with Tracker(max_amount_per_day=...) or "
            f"{MAX_AMOUNT_ENV}, or wait until midnight")


def refused(exc: BaseException) -> bool:
    """Whether a create that raised ``exc`` was clearly refused before the
    service processed it (nothing billed): it provably never left, or the
    service answered a readable 4xx error, rejected the key or refused for an
    empty balance (:attr:`~veo_nb.APIError.refused`). Anything else
    (an unreadable answer, a timeout, Ctrl-C, ``SystemExit``) may have
    created the task."""
    if not isinstance(exc, VeoError):
        return False  # KeyboardInterrupt, SystemExit, a bug: while or after sending
    if not isinstance(exc, APIError) or isinstance(exc, MissingAPIKeyError):
        return True  # refused by veo_nb before sending
    if not exc.reached:
        return True
    status = exc.status_code
    return ((status is not None and 400 <= status < 500) or exc.refused
            or isinstance(exc, AuthenticationError))


def why(exc: BaseException) -> str:
    """What an entry says of the failure ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C) while waiting for the answer"
    if isinstance(exc, SystemExit):
        return "the process exited while waiting for the answer"
    return str(exc) or type(exc).__name__


def unconfirmed_id() -> str:
    """A fresh id for a "may have been billed" entry."""
    return UNCONFIRMED_PREFIX + secrets.token_hex(6)


def unconfirmed_reason(sent: float, why: str | None = None) -> str:
    """What such an entry says."""
    at = datetime.fromtimestamp(sent).strftime("%H:%M:%S")
    return (f"may have been created and billed: the create was sent at {at} and the "
            f"service's answer with its id never arrived ({why or 'no answer yet'}); check "
            "with the provider, then dismiss this entry")


def is_unconfirmed(record: Any) -> bool:
    """Whether ``record`` is a "may have been billed" entry."""
    return str(getattr(record, "task_id", "")).startswith(UNCONFIRMED_PREFIX)
