"""History frame speed: ``Store.events_frame()`` against a bare ``pandas.read_sql``.

A temporary store holds 100,000 events over 1,000 tasks (a mix of statuses,
poll errors with HTTP codes, details). Both sides read the same rows (each
event with its task's owner) from the same file; ours also converts timestamps to ``datetime64[ns, UTC]``, statuses
to the ordered categorical and the integer columns to ``Int64``. Best of 3.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from bench._common import BenchResult, best_of
from veo_nb.records import HISTORY_COLUMNS, Event
from veo_nb.store import Store

N_EVENTS = 100_000
N_TASKS = 1_000
#: The rows history() reads, as a bare query: every event with its task's owner.
HISTORY_SQL = (
    "SELECT " + ", ".join(f"e.{c}" for c in HISTORY_COLUMNS if c != "owner")
    + ", t.owner FROM events e LEFT JOIN tasks t ON t.task_id = e.task_id ORDER BY e.seq"
)


def make_events(n: int = N_EVENTS, seed: int = 0) -> list[Event]:
    """``n`` plausible events, reproducibly."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    statuses = ["queued", "processing", "completed", "failed", "Rendering"]
    events = []
    for i in range(n):
        at = start + timedelta(seconds=i * 3.0 + rng.random())
        task_id = f"task-{rng.randrange(N_TASKS):05d}"
        if rng.random() < 0.1:
            code = rng.choice([429, 500, 502, 503])
            events.append(Event(task_id, "poll_error", None, at, code, rng.randint(1, 4),
                                f"HTTP {code} from the service"))
        else:
            events.append(Event(task_id, "status", rng.choice(statuses), at))
    return events


def run() -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        with Store(path) as store:
            store.append_events(make_events())
            assert store.event_count() == N_EVENTS
            conn = sqlite3.connect(path)
            try:
                base = best_of(lambda: pd.read_sql(HISTORY_SQL, conn))
                ours = best_of(store.events_frame)
            finally:
                conn.close()
    return [
        BenchResult(
            name="history() over 100k events",
            value=ours,
            unit="s",
            baseline=base,
            ratio=ours / base,
            target=2.0,
            detail="Store.events_frame() vs pandas.read_sql of the same rows (no dtype conversion)",
        )
    ]
