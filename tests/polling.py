"""``until``: the one way the tests wait for something that happens on
another thread or process (a bound, never a timed assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(cond: Callable[[], Any], timeout: float = 30.0, step: float = 0.02) -> Any:
    """Call ``cond`` until it returns something truthy and return that; fail
    after ``timeout`` seconds (generous: the machines are shared)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)
