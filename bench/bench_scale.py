"""P11: a history of 200,000 finished tasks costs what 2,000 do.

For each backend (SQLite, and PostgreSQL on a throwaway server), a store is
seeded with N finished tasks (completed, their videos saved) plus 20 tasks
running on the emulator (polled a moment ago, so none is due while we
measure), for N = 2,000 and N = 200,000. A fresh interpreter (a kernel)
then, in turn:

* opens a :class:`~veo_nb.Tracker` on the store (open time);
* builds a panel over it, its UI thread ticking every second (build time),
  and moves to the next page with the Next button (page change time);
* stays idle 10 s, the poller following the store and the panel ticking
  (CPU seconds per second: "idle CPU");
* reports its resident memory growth since its imports (kernel RSS growth);
* times ``tracker.tasks()`` against ``pandas.read_sql`` of the same rows
  (the tracked tasks' stored columns), best of 3 each.

Ratios are the 200,000-task figures over the 2,000-task ones, measured in
the same run; ``tasks()`` is compared with ``read_sql`` at 200,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench._common import BenchResult, best_of

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SIZES = (2_000, 200_000)
RUNNING = 20
IDLE_S = 10.0
PAGE_SIZE = 20


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _seed(store_url: str, n: int, running: list[str], video: Path) -> None:
    """N finished tasks and the running ones, written in bulk with the store's
    own SQL."""
    from veo_nb._store_query import FILL_TALLIES
    from veo_nb.models import TaskStatus
    from veo_nb.records import TaskRecord, from_unix
    from veo_nb._store_sql import _ALL_FIELDS, _record_row, _upsert_sql
    from veo_nb.store import open_store

    now = time.time()
    start = now - n * 2.0 - 3600
    rows = []
    for i in range(n):
        created = start + i * 2.0
        rows.append(_record_row(TaskRecord(
            task_id=f"vgen_done_{i:07d}", label=f"shot {i % 500}",
            prompt=f"Scene {i}: a slow dolly shot through a misty forest at dawn, cinematic",
            model="veo_3_1_fast", resolution="720p", aspect_ratio="16:9", mode="text",
            status=TaskStatus.COMPLETED if i % 10 else TaskStatus.FAILED,
            status_text="completed" if i % 10 else "failed",
            created_at=from_unix(created), first_seen_at=from_unix(created),
            started_at=from_unix(created + 20), finished_at=from_unix(created + 150),
            video_url=f"https://cdn.example/{i}.mp4" if i % 10 else None,
            url_expires_at=from_unix(created + 86_550),
            video_path=str(video) if i % 10 else None,
            download_state="saved" if i % 10 else "none",
            error=None if i % 10 else "the service's safety filter blocked this prompt",
            poll_count=4, last_polled_at=from_unix(created + 150),
            owner=f"student{i % 30:02d}", service=None,
            raw={"id": f"vgen_done_{i:07d}", "status": "completed", "amount": 0.4},
        )))
    for j, task_id in enumerate(running):
        rows.append(_record_row(TaskRecord(
            task_id=task_id, prompt=f"running {j}", model="veo_3_1_fast", mode="text",
            status=TaskStatus.PROCESSING, status_text="processing",
            created_at=from_unix(now - 5), first_seen_at=from_unix(now - 5),
            started_at=from_unix(now - 4), poll_count=1, last_polled_at=from_unix(now),
            owner="teacher")))
    store, _ = open_store(store_url, ROOT)
    try:
        sql = _upsert_sql(_ALL_FIELDS)
        for begin in range(0, len(rows), 20_000):
            store._tx(lambda cur, chunk=rows[begin:begin + 20_000]: cur.executemany(sql, chunk))
        # rows written in bulk: the header's tallies counted once, as a migration does
        store._tx(lambda cur: (cur.execute("DELETE FROM tallies"), cur.execute(FILL_TALLIES)))
        if store_url.startswith("postgresql"):
            # A store that grew over months has been analysed by autovacuum many
            # times; one filled in seconds has not yet (its planner would guess).
            store._tx(lambda cur: cur.execute("ANALYZE tasks"))
    finally:
        store.close()


def child() -> None:
    """One kernel's figures, printed as JSON (run in a fresh interpreter)."""
    store_url, media, key, base_url = sys.argv[1:5]
    import ipywidgets  # noqa: F401 - what a notebook has imported before
    import pandas as pd

    from veo_nb import Tracker, VeoClient, VeoPanel
    from veo_nb._store_query import FRAME_COLUMNS

    client = VeoClient(key, base_url)
    rss0 = _rss_mb()
    cpu0, t0 = time.process_time(), time.perf_counter()
    tracker = Tracker(client, store=store_url, media_dir=media)
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    panel = VeoPanel(tracker, page_size=PAGE_SIZE, refresh_every=1.0)
    built = time.perf_counter() - t1
    t2 = time.perf_counter()
    panel.pager.next.click()
    paged = time.perf_counter() - t2
    time.sleep(2.0)  # the first ticks after the build
    cpu1, w1 = time.process_time(), time.perf_counter()
    time.sleep(IDLE_S)
    idle = (time.process_time() - cpu1) / (time.perf_counter() - w1)
    rss = _rss_mb() - rss0
    rows = len(tracker.tasks())
    ours = best_of(tracker.tasks, 3)
    sql = f"SELECT {', '.join(FRAME_COLUMNS)} FROM tasks WHERE tracked = 1 ORDER BY first_seen_at"
    if store_url.startswith("postgresql"):
        import psycopg

        conn: Any = psycopg.connect(store_url)
    else:
        import sqlite3

        conn = sqlite3.connect(store_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas prefers SQLAlchemy; a DB-API connection is fine
        base = best_of(lambda: pd.read_sql(sql, conn), 3)
    conn.close()
    live = len(tracker.live_records())
    panel.close()
    tracker.close()
    print(json.dumps({"open_s": opened, "build_s": built, "page_s": paged, "idle_cpu": idle,
                      "rss_mb": rss, "tasks_s": ours, "read_sql_s": base, "rows": rows,
                      "live": live, "cpu_total_s": time.process_time() - cpu0}), flush=True)


def _measure(store_url: str, media: Path, emu: Any) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", "from bench.bench_scale import child; child()", store_url,
         str(media), emu.api_key, emu.base_url],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"bench_scale child failed: {out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _backend(name: str, urls: dict[int, str], emu: Any, tmp: Path) -> list[BenchResult]:
    video = tmp / "video.mp4"
    video.write_bytes(b"\0" * 1024)
    client = emu.client()
    figures = {}
    for n in SIZES:
        running = [client.create_video(f"running {j} [duration: 3600]").id for j in range(RUNNING)]
        _seed(urls[n], n, running, video)
        figures[n] = _measure(urls[n], tmp / f"media-{name}-{n}", emu)
    small, large = figures[SIZES[0]], figures[SIZES[-1]]
    detail = (f"{SIZES[0]:,} / {SIZES[-1]:,} finished tasks + {RUNNING} running: "
              f"{json.dumps(small)} / {json.dumps(large)}")
    results = []
    for key, label, unit, bound in (
            ("open_s", "open time", "s", None), ("rss_mb", "kernel RSS growth", "MB", 60.0),
            ("idle_cpu", "idle CPU", "cores", 0.01), ("build_s", "panel build", "s", None),
            ("page_s", "page change", "s", None)):
        results.append(BenchResult(
            f"P11 {name}: {label}, 200,000 vs 2,000 finished tasks", large[key], unit,
            baseline=small[key], ratio=large[key] / small[key] if small[key] > 0 else float("inf"),
            target=1.5, detail=detail if key == "open_s" else ""))
        if bound is not None:  # and an absolute bound at 200,000
            results.append(BenchResult(
                f"P11 {name}: {label} at 200,000 finished tasks, against {bound:g} {unit}",
                large[key], unit, baseline=bound, ratio=large[key] / bound, target=1.0))
    results.append(BenchResult(
        f"P11 {name}: tasks() vs read_sql of the same {large['rows']:,} rows", large["tasks_s"], "s",
        baseline=large["read_sql_s"], ratio=large["tasks_s"] / large["read_sql_s"], target=1.2,
        detail=f"engine holds {large['live']} live tasks of {large['rows']:,}"))
    return results


def run() -> list[BenchResult]:
    from veo_nb.emulator import Emulator

    sys.path.insert(0, str(TESTS))
    import pg_cluster

    results: list[BenchResult] = []
    with Emulator(failure_rate=0.0, seed=11, video_size="sample") as emu, \
            tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        results += _backend("SQLite", {n: str(tmp / f"store-{n}.sqlite") for n in SIZES}, emu, tmp)
        bin_dir = pg_cluster.find_bin()
        if bin_dir is None:
            results.append(BenchResult("P11 PostgreSQL", float("nan"), "",
                                       detail="not run: no PostgreSQL server "
                                              "(apt-get install -y postgresql)"))
            return results
        cluster = pg_cluster.start_cluster(bin_dir)
        try:
            urls = {n: pg_cluster.new_database(cluster.url) for n in SIZES}
            results += _backend("PostgreSQL", urls, emu, tmp)
        finally:
            cluster.stop()
    return results
