"""Requests per task: the tracker's adaptive schedule against a fixed 30 s loop.

Two measurements, side by side:

1. **Exact, virtual clock.** Durations are drawn uniformly from the
   documented windows of every mode (text and reference images 2–5 min,
   first/last frame 3–5 min). Each task is "polled" with the very
   ``veo_nb._schedule.next_poll_age`` the tracker uses, and with a fixed loop
   polling every 30 s after the create call. No HTTP: this counts the
   schedule itself, at full (real-service) scale.
2. **Real, on the emulator.** The same comparison over HTTP on an emulator
   whose clock runs 100× fast: a ``Tracker`` submits tasks (reference-image
   and first/last-frame mode, durations from their windows, fixed with
   ``[duration: s]``) while a plain fixed loop polls an identical set;
   requests are counted by the emulator (``stats.polls_by_task``).
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from pathlib import Path

from bench._common import BenchResult
from veo_nb import _schedule
from veo_nb._spec import ESTIMATES_S, MIN_POLL_INTERVAL_S, Mode

P = MIN_POLL_INTERVAL_S
SAMPLES_PER_MODE = 20_000


def fixed_loop(finish: float, p: float = P) -> tuple[int, float]:
    """(requests, detection delay) of a loop polling every ``p`` after creation."""
    polls = max(1, math.ceil(finish / p))
    return polls, polls * p - finish


def adaptive(finish: float, low: float, high: float, p: float = P) -> tuple[int, float]:
    """(requests, detection delay) of the tracker's schedule for a task that
    finishes at ``finish``; the create response counts as contact at age 0."""
    polls, last = 0, 0.0
    give_up = _schedule.GIVE_UP_AFTER_S
    while True:
        nxt = _schedule.next_poll_age(last, low=low, high=high, poll_interval=p, give_up_age=give_up)
        if nxt is None:  # pragma: no cover - finish is within the window
            raise AssertionError("gave up inside the documented window")
        polls, last = polls + 1, nxt
        if nxt >= finish:
            return polls, nxt - finish


def simulate(seed: int = 1) -> dict[str, tuple[float, float, float, float]]:
    """Per mode: (mean fixed requests, mean adaptive requests, worst fixed delay,
    worst adaptive delay)."""
    rng = random.Random(seed)
    out = {}
    for mode in Mode:
        low, high = ESTIMATES_S[mode]
        fixed_n = ada_n = 0
        fixed_worst = ada_worst = 0.0
        for _ in range(SAMPLES_PER_MODE):
            finish = rng.uniform(low, high)
            n, d = fixed_loop(finish)
            fixed_n, fixed_worst = fixed_n + n, max(fixed_worst, d)
            n, d = adaptive(finish, low, high)
            ada_n, ada_worst = ada_n + n, max(ada_worst, d)
        out[mode.value] = (fixed_n / SAMPLES_PER_MODE, ada_n / SAMPLES_PER_MODE, fixed_worst, ada_worst)
    return out


def emulator_check(n: int = 12, time_scale: float = 0.01, seed: int = 2) -> tuple[float, float]:
    """Mean requests per task over HTTP: (fixed loop, tracker)."""
    from veo_nb.emulator import Emulator
    from veo_nb.tracker import Tracker

    rng = random.Random(seed)
    image = "http://images.example/cat.png"
    modes = [({"reference_images": [image]}, Mode.REFERENCE), ({"first_image": image}, Mode.FIRST_LAST)]
    plans = [(kw, round(rng.uniform(*ESTIMATES_S[mode]), 1)) for i in range(n)
             for kw, mode in [modes[i % 2]]]
    p = P * time_scale
    with Emulator(time_scale=time_scale, failure_rate=0.0, seed=seed) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        client = emu.client()
        fixed_ids = [client.create_video(f"fixed [duration: {d}]", **kw).id for kw, d in plans]

        def loop(task_id: str) -> None:
            while True:
                time.sleep(p * 1.05)  # a little slack: the emulator counts arrivals
                if client.get_result(task_id).is_terminal:
                    return

        threads = [threading.Thread(target=loop, args=(i,)) for i in fixed_ids]
        for t in threads:
            t.start()
        tracker = Tracker(client, store=Path(tmp) / "h.sqlite", media_dir=Path(tmp) / "v",
                          download=False)
        try:
            ids = [tracker.submit(f"adaptive [duration: {d}]", **kw).id for kw, d in plans]
            tracker.wait(ids, timeout=60)
        finally:
            tracker.close()
        for t in threads:
            t.join()
        polls = emu.stats.polls_by_task
        fixed = sum(polls.get(i, 0) for i in fixed_ids) / n
        ours = sum(polls.get(i, 0) for i in ids) / n
        if emu.stats.interval_violations:
            raise AssertionError(f"{emu.stats.interval_violations} interval violations")
    return fixed, ours


def run() -> list[BenchResult]:
    sim = simulate()
    fixed_total = sum(v[0] for v in sim.values())
    ada_total = sum(v[1] for v in sim.values())
    fixed_worst = max(v[2] for v in sim.values())
    ada_worst = max(v[3] for v in sim.values())
    per_mode = "; ".join(
        f"{m}: {a:.2f} vs {f:.2f} ({a / f:.2f})" for m, (f, a, _, _) in sim.items()
    )
    results = [
        BenchResult(
            name="requests per task (virtual clock, all modes)",
            value=ada_total / len(sim),
            unit="requests",
            baseline=fixed_total / len(sim),
            ratio=ada_total / fixed_total,
            target=0.6,
            detail=f"fixed 30 s loop vs adaptive, {SAMPLES_PER_MODE} uniform durations per mode; {per_mode}",
        ),
        BenchResult(
            name="worst detection delay (virtual clock)",
            value=ada_worst,
            unit="s",
            baseline=fixed_worst,
            ratio=ada_worst / fixed_worst,
            target=1.0,
            detail="seconds between finishing and being seen, worst case over all samples",
        ),
    ]
    fixed, ours = emulator_check()
    results.append(
        BenchResult(
            name="requests per task (emulator over HTTP, both image modes)",
            value=ours,
            unit="requests",
            baseline=fixed,
            ratio=ours / fixed,
            target=0.6,
            detail="time_scale=0.01, counted by the emulator; fixed loop sleeps 1.05 × interval",
        )
    )
    return results
