"""P6: the panel over 30 finished tasks with 15 MB saved videos: what reaches
the browser and what the kernel holds before anything is played, and what
playing one video costs.

Setup, kept honest:

* The emulator makes 30 real tasks whose videos are 15 MB MP4s (a valid clip
  padded at its end); a real :class:`~veo_nb.Tracker` polls them over HTTP
  and saves every video, as in class.
* Ours: a real panel (10 rows per page, 6 cards per gallery page) is built
  with every widget comm replaced by a recording one
  (:func:`veo_nb.widgets.traffic.record_traffic`), then paged through (all 3
  pages), switched to the Gallery and paged through it (all 5 pages), and
  back. Measured: the bytes of every widget message (and how many are
  video), and the kernel's resident memory (``/proc/self/statm``) before and
  after, after a garbage collection. Then one video is played from its card
  (the emulator's links are plain http, so by default the saved file is
  sent): the bytes that click sends, against the file's size.
* Baseline, same run, same files: today's design, which built a ``Video``
  widget from each saved file's bytes as soon as its row or card was shown
  (one widget per video, shared by rows and gallery): the same recording
  comm and the same memory probe, around building those 30 widgets.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

from bench._common import BenchResult

TASKS = 30
VIDEO_BYTES = 15 * 1024 * 1024
PAGE_SIZE = 10
GALLERY_PAGE_SIZE = 6
MB = 1024 * 1024


def _rss() -> int:
    """The process's resident memory, in bytes (after a garbage collection)."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _browse(panel) -> None:
    """What a person does: every task page, the Gallery and its pages, back."""
    for _ in range(panel.pager.pages - 1):
        panel.pager.next.click()
    panel.tabs.selected_index = 1
    for _ in range(panel.gallery.pager.pages - 1):
        panel.gallery.pager.next.click()
    panel.tabs.selected_index = 0
    panel.pager.go(0)


def run() -> list[BenchResult]:
    import ipywidgets as widgets

    from veo_nb import VeoPanel
    from veo_nb.emulator import Emulator
    from veo_nb.tracker import Tracker
    from veo_nb.widgets.traffic import record_traffic

    with tempfile.TemporaryDirectory() as folder, \
            Emulator(time_scale=0.01, failure_rate=0.0, video_size=VIDEO_BYTES) as emu:
        tracker = Tracker(emu.client(), store=Path(folder) / "bench.sqlite",
                          media_dir=Path(folder) / "videos")
        try:
            ids = [tracker.submit(f"shot {i}: a slow pan over a harbour at dusk [duration: 130]").id
                   for i in range(TASKS)]
            tracker.wait(ids, timeout=300)
            paths = [Path(tracker.record(i).video_path) for i in ids]
            assert all(p.stat().st_size == VIDEO_BYTES for p in paths), "videos not all saved"

            with record_traffic() as traffic:
                before = _rss()
                shown = VeoPanel(tracker, page_size=PAGE_SIZE, gallery_page_size=GALLERY_PAGE_SIZE,
                                 refresh_every=None)
                _browse(shown)
                grown = _rss() - before
                sent = traffic.bytes_since(0)
                video_sent = traffic.video_bytes_since(0)
                view = shown.media._views[shown._shown[0]]
                mark = traffic.mark()
                view.play.click()
                played = traffic.bytes_since(mark)
                assert view.player is not None, "the click played nothing"
                shown.close()

            with record_traffic() as traffic:
                before = _rss()
                old = [widgets.Video(value=p.read_bytes(), format="mp4") for p in paths]
                old_grown = _rss() - before
                old_sent = traffic.bytes_since(0)
                for video in old:
                    video.close()
                del old
        finally:
            tracker.close()

    return [
        BenchResult(
            name="bytes sent to the browser before any play, 30 tasks × 15 MB",
            value=sent, unit="bytes", baseline=old_sent, ratio=sent / old_sent,
            target=round(MB / old_sent, 5),
            detail=(f"{sent / MB:.2f} MB ({video_sent} of them video) for the panel shown, its "
                    f"3 pages, the Gallery's 5 pages, vs {old_sent / MB:.0f} MB when every shown "
                    f"video was sent (target: ≤ 1 MB)"),
        ),
        BenchResult(
            name="kernel memory growth for the same",
            value=grown / MB, unit="MB", baseline=old_grown / MB, ratio=grown / old_grown,
            target=round(100 * MB / old_grown, 4),
            detail="resident memory after vs before, after gc (target: ≤ 100 MB)",
        ),
        BenchResult(
            name="bytes sent to play one 15 MB video",
            value=played, unit="bytes", baseline=VIDEO_BYTES, ratio=played / VIDEO_BYTES,
            target=1.05,
            detail="one click on ▶ Play (the saved file, once) vs the file's size",
        ),
    ]
