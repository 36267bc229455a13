"""When is a task next due? Pure functions, no clock and no I/O.

Times are *ages*: seconds since the task was created. ``low`` and ``high``
are the expected finishing window, already multiplied by the time scale.

The schedule of one task, for poll interval ``P``:

* one early check at ``low / 2`` (catches requests that fail at once);
* nothing else before ``low``; from ``low`` on, polls at ``low + P``,
  ``low + 2P``, … exactly ``P`` apart, so a task finishing at any age
  ``>= low`` is seen at most ``P`` after it finished - the same worst case as
  a fixed ``P`` loop, for far fewer requests;
* every ``P`` up to ``2 × high``, then an exponential back-off (each gap
  doubles, capped at ``10 × P``);
* no poll after ``give_up_age``: the caller records that it gave up.

Two polls of one task are never closer than ``P`` (the service's rule).
The tracker and ``bench/bench_requests.py`` both use these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._spec import ESTIMATES_S, MIN_POLL_INTERVAL_S, Mode

#: Completions of one (model, mode) seen before the observed times replace
#: the documented lower bound.
MIN_SAMPLES = 5
#: The percentile of observed finishing ages used as the learned ``low``.
LEARN_PERCENTILE = 10.0
#: Back-off after ``2 × high`` (and after errors) never exceeds this many intervals.
MAX_BACKOFF_FACTOR = 10.0
#: Default give-up age in unscaled seconds: one hour after creation.
GIVE_UP_AFTER_S = 3600.0


def documented_window(mode: Mode | str | None, time_scale: float = 1.0) -> tuple[float, float]:
    """The documented (low, high) finishing window of ``mode``, scaled.

    Unknown or missing modes get the widest documented window.
    """
    try:
        low, high = ESTIMATES_S[Mode(mode)] if mode is not None else _widest()
    except ValueError:
        low, high = _widest()
    return low * time_scale, high * time_scale


def _widest() -> tuple[float, float]:
    return (
        min(low for low, _ in ESTIMATES_S.values()),
        max(high for _, high in ESTIMATES_S.values()),
    )


def default_poll_interval(time_scale: float = 1.0) -> float:
    """The documented minimum interval (30 s), scaled."""
    return MIN_POLL_INTERVAL_S * time_scale


def learned_window(
    documented: tuple[float, float],
    finish_ages: Sequence[float],
    *,
    min_samples: int = MIN_SAMPLES,
    percentile: float = LEARN_PERCENTILE,
) -> tuple[float, float]:
    """The window to schedule with, given observed finishing ages.

    With fewer than ``min_samples`` observations the documented window is
    returned. Otherwise ``low`` becomes the ``percentile`` of the
    observations, bounded to ``[0.5 × documented low, documented high]``;
    ``high`` stays documented.
    """
    low, high = documented
    ages = sorted(a for a in finish_ages if math.isfinite(a) and a >= 0)
    if len(ages) < min_samples:
        return documented
    return min(max(_percentile(ages, percentile), 0.5 * low), high), high


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    pos = (len(sorted_values) - 1) * q / 100.0
    below = math.floor(pos)
    above = min(below + 1, len(sorted_values) - 1)
    frac = pos - below
    return sorted_values[below] * (1 - frac) + sorted_values[above] * frac


def next_poll_age(
    last_age: float | None,
    *,
    low: float,
    high: float,
    poll_interval: float,
    give_up_age: float,
) -> float | None:
    """The age at which to poll next, or ``None`` to give up.

    ``last_age`` is the age of the last contact with the service about this
    task (the create response or the last poll), ``None`` when there was none:
    then the answer is ``0`` (poll at once). The result is never earlier than
    ``last_age + poll_interval``; ``give_up_age`` itself gets one last poll.
    """
    if last_age is None:
        return 0.0
    if last_age >= give_up_age:
        return None
    p = poll_interval
    if last_age < low / 2:
        wanted = low / 2
    elif last_age < low:
        wanted = low + p
    elif last_age < 2 * high:
        wanted = last_age + p
    else:
        gap = min(max(last_age - 2 * high, p), MAX_BACKOFF_FACTOR * p)
        wanted = last_age + gap
    return min(max(wanted, last_age + p), max(give_up_age, last_age + p))


def error_backoff(attempt: int, poll_interval: float) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failed poll (1, 2, …):
    ``P``, ``2P``, ``4P``, … capped at ``10 × P``."""
    return poll_interval * min(2.0 ** max(attempt - 1, 0), MAX_BACKOFF_FACTOR)


def default_wait_timeout(high: float, poll_interval: float) -> float:
    """How long ``Tracker.wait`` waits by default: twice the high estimate,
    plus three intervals of slack for the last poll and the download."""
    return 2 * high + 3 * poll_interval
