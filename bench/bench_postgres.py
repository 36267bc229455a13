"""P9: a class on one PostgreSQL store: eight "students", one "teacher".

On a throwaway PostgreSQL server (Debian's; tests/pg_cluster.py starts it)
and one emulator (its clock about 33× fast, so the 30 s rule is 0.9 s: eight students and a
teacher share the two cores here), side by
side in one run:

* one student process submits and follows 50 tasks (the baseline);
* then eight student processes on one store submit and follow 50 tasks each
  (400), while a teacher's dashboard process follows all of them;
* figures: requests per task of the class against the single student
  (target ≤ 1.1), interval violations at the emulator (target 0), how long
  after a student recorded a final status the dashboard saw it (p95, target
  ≤ 2 s), and ``history()`` over 100,000 events against a bare
  ``pandas.read_sql`` of the same rows (target ≤ 2).

Without the PostgreSQL server binaries the figures are reported as missing
(``make bench`` on a machine without ``apt-get install postgresql``).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from bench._common import BenchResult, best_of
from bench.bench_history import HISTORY_SQL, N_EVENTS, make_events
from veo_nb.emulator import Emulator
from veo_nb.store import open_store

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import pg_cluster  # noqa: E402
from mp_helpers import Child  # noqa: E402

SCALE = 0.03
STUDENTS = 8
PER_STUDENT = 50


def _class(emu: Emulator, url: str, media: Path, students: int) -> tuple[float, list[float]]:
    """Requests per task, and the dashboard's staleness, for ``students``
    processes submitting PER_STUDENT tasks each."""
    before = emu.stats.polls
    dashboard = Child.start(emu, url, media, "stdin-follow", timeout=300)
    dashboard.up()  # following the store before the first task exists
    kids = [Child.start(emu, url, media, f"submit:{PER_STUDENT}", timeout=300)
            for _ in range(students)]
    ids = [i for kid in kids for i in kid.ready(timeout=300)]
    dashboard.send(ids)
    finished = {}
    for kid in kids:
        for task_id, seen in kid.result(timeout=600)["done"].items():
            finished[task_id] = seen["finished_at"]
    board = dashboard.result(timeout=600)["done"]
    staleness = [board[i]["seen_at"] - finished[i] for i in ids]
    return (emu.stats.polls - before) / len(ids), staleness


def _history_ratio(url: str) -> tuple[float, float]:
    """``history()`` of 100k events vs a bare read_sql (seconds, best of 3)."""
    import psycopg

    store, _ = open_store(url, Path("unused"))
    try:
        store.append_events(make_events())
        assert store.event_count() == N_EVENTS
        with psycopg.connect(url) as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pandas prefers SQLAlchemy
            base = best_of(lambda: pd.read_sql(HISTORY_SQL, conn))
        ours = best_of(store.events_frame)
    finally:
        store.close()
    return ours, base


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def run() -> list[BenchResult]:
    try:
        bin_dir = pg_cluster.find_bin()
    except Exception as exc:  # noqa: BLE001 - reported as a missing figure
        return [BenchResult("P9 (PostgreSQL)", float("nan"), "", detail=f"not run: {exc}")]
    if bin_dir is None:
        return [BenchResult("P9 (PostgreSQL)", float("nan"), "",
                            detail="not run: no PostgreSQL server (apt-get install -y postgresql)")]
    cluster = pg_cluster.start_cluster(bin_dir)
    try:
        one, many, events = (pg_cluster.new_database(cluster.url) for _ in range(3))
        with Emulator(time_scale=SCALE, failure_rate=0.0, seed=9, video_size="sample") as emu, \
                tempfile.TemporaryDirectory() as tmp:
            single, _ = _class(emu, one, Path(tmp) / "one", 1)
            shared, staleness = _class(emu, many, Path(tmp) / "class", STUDENTS)
            violations = emu.stats.interval_violations
        ours, base = _history_ratio(events)
    finally:
        cluster.stop()
    p95 = _p95(staleness)
    tasks = STUDENTS * PER_STUDENT
    return [
        BenchResult("P9 requests per task, 8 students vs 1", shared, "requests/task",
                    baseline=single, ratio=shared / single, target=1.1,
                    detail=f"{tasks} tasks on one PostgreSQL store; one student {single:.2f}"),
        BenchResult("P9 interval violations (8 students)", violations, "polls", baseline=1.0,
                    ratio=float(violations), target=0.0,
                    detail="polls the emulator answered 429 for coming sooner than 0.3 s"),
        BenchResult("P9 dashboard staleness p95", p95, "s", baseline=2.0, ratio=p95 / 2.0,
                    target=1.0, detail=f"{tasks} tasks; max {max(staleness):.2f} s; "
                    "target p95 <= 2 s"),
        BenchResult("P9 history() over 100k events (PostgreSQL)", ours, "s", baseline=base,
                    ratio=ours / base, target=2.0,
                    detail="PostgresStore.events_frame() vs pandas.read_sql of the same rows"),
    ]
