"""P10: what re-running a cell costs a submit: the reuse lookup (the request's
key, the store's reuse entry, the earlier task's record and whether it can
still give its video) on a history of
100,000 events and 10,000 tasks, each of which an earlier cell run created,
on SQLite and on PostgreSQL (a throwaway server). Target: at most 2 ms per
submit (issue #19); the ratio is to that budget. Best of 3 runs of 500
lookups, against the same lookups on an empty history for reference.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench._common import BenchResult
from bench.bench_history import make_events
from veo_nb import TaskRecord, TaskStatus
from veo_nb._reuse import request_key
from veo_nb.store import BaseStore, open_store
from veo_nb.tracker import Tracker

N_TASKS = 10_000
LOOKUPS = 500
BUDGET_S = 0.002
CELL = "cell:3f1c0a2e-bench"


def _fill(store: BaseStore, tasks: int, events: bool) -> list[str]:
    keys = []
    records = []
    for i in range(tasks):
        request = {"model": "veo_3_1_fast", "prompt": f"take {i}", "resolution": "720p",
                   "aspect_ratio": "16:9"}
        keys.append(request_key("https://svc:443", "abc", "ana", request))
        records.append(TaskRecord(f"vgen_{i:08d}", prompt=request["prompt"], request=request,
                                  status=TaskStatus.COMPLETED, status_text="completed"))
    for record in records:
        store.save(record)
    for i, key in enumerate(keys):
        store.remember(CELL, key, 0, f"vgen_{i:08d}", time.time())
    if events:
        store.append_events(make_events())
    return keys


def _lookup_s(tracker: Tracker, keys: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for key in keys[:LOOKUPS]:
            tracker._earlier((CELL, key, 0))
        best = min(best, (time.perf_counter() - start) / LOOKUPS)
    return best


def _measure(url: str, empty_url: str, tmp: Path) -> tuple[float, float]:
    from veo_nb.emulator import Emulator

    with Emulator(video_size="sample") as emu:
        results = []
        for where, tasks in ((url, N_TASKS), (empty_url, LOOKUPS)):
            store, _ = open_store(where, tmp / "unused")
            keys = _fill(store, tasks, events=tasks == N_TASKS)
            with Tracker(emu.client(), store=store, media_dir=tmp / "v", start=False) as tracker:
                results.append(_lookup_s(tracker, keys))
            store.close()
    return results[0], results[1]


def run() -> list[BenchResult]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import pg_cluster

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("SQLite", str(Path(tmp) / "big.sqlite"), str(Path(tmp) / "small.sqlite"))]
        cluster = pg_cluster.start_cluster(pg_cluster.require_postgres())
        try:
            backends.append(("PostgreSQL", pg_cluster.new_database(cluster.url),
                             pg_cluster.new_database(cluster.url)))
            for name, big, small in backends:
                per_submit, empty = _measure(big, small, Path(tmp))
                out.append(BenchResult(
                    name=f"P10 reuse lookup per submit ({name}, 100k events)",
                    value=per_submit * 1000, unit="ms", baseline=BUDGET_S * 1000,
                    ratio=per_submit / BUDGET_S, target=1.0,
                    detail=f"{N_TASKS} tasks and reuse entries; on an empty history "
                           f"{empty * 1000:.3f} ms; budget 2 ms"))
        finally:
            cluster.stop()
    return out
