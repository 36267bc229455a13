"""The panel over 500 tasks: widget traffic and kernel time of a refresh in
which one task changed, against building the whole panel anew.

Setup, kept honest:

* A store is seeded with 500 *processing* tasks (created within the last
  20 s, so every row on the visible page has a running clock, the worst case
  for a tick). Five of them, on the first page (newest first), are real
  emulator tasks that have already finished; their records say the tracker
  gave up polling them.
* A real :class:`~veo_nb.Tracker` resumes the store (its poller runs on the
  real service's clock: every seeded task was polled just now, so none is
  due again during the run, except the five, last polled a minute ago) and
  a real panel shows it, with every widget comm replaced by a recording one
  (:func:`veo_nb.widgets.traffic.record_traffic`: JSON bytes of each message
  plus binary buffers).
* One change: ``tracker.track(id)`` re-arms one of the five; the poller polls
  it over HTTP, and it turns *completed* (with a video link: its row and a
  gallery card gain a video card, no video bytes). Then, at least
  1 s after the previous tick (so every visible clock has moved), one
  ``panel.update()`` (what the UI thread runs) is measured: bytes sent and
  kernel time. Repeated for each of the five; the largest bytes and the
  median time are reported.
* Baseline, same run: building a new panel over the same tracker (what a
  re-render costs; the measured panel is closed first, as a new panel of a
  history closes the older one): its bytes, and the best of 3 build times.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench._common import BenchResult
from veo_nb.models import TaskStatus
from veo_nb.records import TaskRecord, utcnow

TASKS = 500
TARGETS = 5
PAGE_SIZE = 20


def _seed(store_path: Path, targets: list[str]) -> None:
    from veo_nb.store import Store

    now = utcnow()
    on_first_page = {TASKS - 3 - 3 * i: task_id for i, task_id in enumerate(targets)}
    with Store(store_path) as store:
        for i in range(TASKS):
            created = now - timedelta(seconds=20 - i * 0.01)
            gave_up = i in on_first_page
            store.save(TaskRecord(
                task_id=on_first_page.get(i, f"vgen_seeded_{i:04d}"),
                label=f"shot {i}",
                prompt=f"Scene {i}: a slow dolly shot through a misty forest at dawn, cinematic",
                model="veo_3_1_fast", resolution="720p", aspect_ratio="16:9", mode="text",
                status=TaskStatus.PROCESSING, status_text="processing",
                created_at=created, first_seen_at=created, started_at=created,
                # a target's last poll is over the 30 s interval ago: re-armed, it is due at once
                poll_count=2, last_polled_at=now - timedelta(seconds=60 if gave_up else 0),
                error="gave up polling after 3600 s (bench seed)" if gave_up else None,
            ))


def _until(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("bench_panel: condition not met in time")
        time.sleep(0.02)


def run() -> list[BenchResult]:
    from veo_nb.emulator import Emulator
    from veo_nb import VeoPanel
    from veo_nb.widgets.traffic import record_traffic
    from veo_nb.tracker import Tracker

    with tempfile.TemporaryDirectory() as folder, \
            Emulator(time_scale=0.01, failure_rate=0.0) as emu:
        maker = emu.client()
        targets = [maker.create_video(f"target {i} [duration: 130]").id for i in range(TARGETS)]
        maker.close()
        _until(lambda: all(emu.peek(t)["status"] == "completed" for t in targets))
        store = Path(folder) / "bench.sqlite"
        _seed(store, targets)
        # The tracker's clock is the real service's (30 s between two polls
        # of a task), so the seeded tasks, polled just now, stay unpolled.
        tracker = Tracker(emu.client(time_scale=1.0), store=store, media_dir=Path(folder) / "v",
                          download=False, expected_duration=(0.0, 1800.0))
        try:
            with record_traffic() as traffic:
                mark = traffic.mark()
                started = time.perf_counter()
                shown = VeoPanel(tracker, page_size=PAGE_SIZE, refresh_every=None)
                first_build_s = time.perf_counter() - started
                first_build_bytes = traffic.bytes_since(mark)
                assert tracker.running and len(tracker.records()) == TASKS

                tick_bytes: list[int] = []
                tick_s: list[float] = []
                last_tick = time.monotonic()
                for target in targets:
                    tracker.track(target)
                    _until(lambda: tracker.record(target).status is TaskStatus.COMPLETED)
                    time.sleep(max(0.0, last_tick + 1.05 - time.monotonic()))
                    mark = traffic.mark()
                    started = time.perf_counter()
                    shown.update()
                    tick_s.append(time.perf_counter() - started)
                    tick_bytes.append(traffic.bytes_since(mark))
                    last_tick = time.monotonic()
                    assert shown._rows[target].media.children, "the finished task shows no card"
                messages = len(traffic.since(mark))
                shown.close()

                rebuild_bytes: list[int] = []
                rebuild_s: list[float] = []
                for _ in range(3):
                    mark = traffic.mark()
                    started = time.perf_counter()
                    again = VeoPanel(tracker, page_size=PAGE_SIZE, refresh_every=None)
                    rebuild_s.append(time.perf_counter() - started)
                    rebuild_bytes.append(traffic.bytes_since(mark))
                    again.close()
        finally:
            tracker.close()

    full_bytes = min(rebuild_bytes)
    full_s = min(rebuild_s)
    worst_bytes = max(tick_bytes)
    tick = statistics.median(tick_s)
    return [
        BenchResult(
            name="widget traffic of a refresh, 1 of 500 tasks changed",
            value=worst_bytes, unit="bytes", baseline=full_bytes,
            ratio=worst_bytes / full_bytes, target=0.02,
            detail=(f"largest of {TARGETS} ticks (last one: {messages} messages; every visible "
                    f"row's clock moving, the changed row and the gallery gain its video card) "
                    f"vs building the panel anew ({PAGE_SIZE} rows per page)"),
        ),
        BenchResult(
            name="kernel time of a refresh tick, 500 tasks (1 changed)",
            value=tick * 1000, unit="ms", baseline=full_s * 1000, ratio=tick / full_s,
            detail=f"median of {TARGETS} ticks vs the best of 3 full re-renders",
        ),
        BenchResult(
            name="time to build the panel over 500 tasks",
            value=first_build_s, unit="s",
            detail=(f"first build {first_build_s:.3f} s ({first_build_bytes} bytes of widget "
                    f"messages), later builds best {full_s:.3f} s"),
        ),
    ]
