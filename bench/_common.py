"""Shared bits of the benchmarks: one result type and a side-by-side timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BenchResult:
    """One figure. ``ratio`` is ours / baseline, measured in the same run;
    ``target`` the largest (or, with ``higher_is_better``, smallest) ratio allowed."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: float | None = None
    higher_is_better: bool = False
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of ``repeat`` wall-clock runs of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
