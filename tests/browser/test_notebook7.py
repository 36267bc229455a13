"""The panel in Notebook 7 (``jupyter notebook``), in a real Chromium.

A finished demo task with a 15 MB video (``VEO_DEMO_VIDEO_SIZE``, read by
``veo_nb.connect()`` in demo mode): the notebook opens, Run All from the
menu, the panel renders and the task finishes by itself; its card shows
and no byte of the video has passed through the kernel's websocket (well
under 1 MB in all); after a click on ▶ Play the video plays (readyState >=
1, 8 s long) and at least its 15 MB came through the kernel once.
"""

from __future__ import annotations

import time

import pytest

from chromium import KernelTraffic
from notebook_page import open_and_run_all, write_notebook
from panel_page import BIG, BIG_VIDEO_SETUP as SETUP, NEEDLE, check_big_video_waits_for_play, wait_for_panel

pytestmark = pytest.mark.timeout(300)



def test_a_big_demo_video_plays_after_its_click_and_only_then_passes_the_kernel(
        notebook7, open_page) -> None:
    started = time.monotonic()
    write_notebook(notebook7.root_dir / "big" / "big.ipynb", SETUP, "veo_nb.panel(tracker)")
    page = open_page(notebook7)
    traffic = KernelTraffic().attach(page)
    open_and_run_all(page, notebook7, "big/big.ipynb")
    text = wait_for_panel(page)
    assert "demo mode" in text, text[:500]
    before, sent = check_big_video_waits_for_play(page, traffic, NEEDLE, BIG)
    print(f"Notebook 7: {before} bytes from the kernel before the click, {sent} after; "
          f"{time.monotonic() - started:.0f} s")
