"""What a store may spend in a day: the spending cap, and the "may have been
billed" entries that keep every possibly billed create in sight.

**The cap.** ``Tracker(max_tasks_per_day=..., max_amount_per_day=...)``, or
``VEO_NB_MAX_TASKS_PER_DAY`` / ``VEO_NB_MAX_AMOUNT_PER_DAY`` (a teacher sets
them for a whole JupyterHub), caps the new tasks submitted through one store
per day (since local midnight, every process and user of the store counted),
and the ``amount`` the service reported for them. A submit past the cap
raises :class:`SpendingCapError` before any request.

**No invisible charge.** Before a create is sent, an entry for it is saved:
``unconfirmed-…``, status ``unknown``, status text :data:`UNCONFIRMED`. When
the answer comes, the real task replaces it. When it never comes (a timeout
or reset after sending, or a process killed before the id was saved), the
entry stays in ``tasks()``, the panel and ``summary()``, saying the task may
have been created and billed, until the user dismisses it
(``tracker.remove(id, delete=True)`` or the panel's ✕).
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from typing import Any

from .errors import SpendingCapError, ValidationError

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


def check(caps: tuple[float | None, float | None], spent: tuple[int, float | None],
          adding: int) -> None:
    """Raise :class:`SpendingCapError` when ``adding`` new tasks would pass
    ``caps`` (tasks, amount) given what was ``spent`` today."""
    max_tasks, max_amount = caps
    count, amount = spent
    if max_tasks is not None and count + adding > max_tasks:
        raise SpendingCapError(
            f"the daily cap of this history is {max_tasks:.0f} new tasks and {count} were "
            f"submitted today: {adding} more would pass it, so nothing was sent. Raise it "
            f"with Tracker(max_tasks_per_day=...) or {MAX_TASKS_ENV}, or wait until midnight")
    if max_amount is not None and amount is not None and amount >= max_amount:
        raise SpendingCapError(
            f"the daily cap of this history is an amount of {max_amount:g} and the service "
            f"reported {amount:g} for today's tasks, so nothing was sent. Raise it with "
            f"Tracker(max_amount_per_day=...) or {MAX_AMOUNT_ENV}, or wait until midnight")


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
