"""The panel under Voilà, in a real Chromium. Voilà runs every cell before
its page shows and by default serves no ``.mp4`` file from disk: the panel
plays a saved video through widget bytes, not a file URL, so it plays there
too.

A finished demo task with a 15 MB video: its card shows, no byte of it has
passed through the kernel's websocket (well under 1 MB in all) until a
click on ▶ Play; then it plays (readyState >= 1, 8 s long) and its 15 MB
came through once.
"""

from __future__ import annotations

import time

import pytest

from chromium import KernelTraffic
from notebook_page import open_notebook, write_notebook
from panel_page import check_big_video_waits_for_play, wait_for_panel

pytestmark = pytest.mark.timeout(300)

BIG = 15_000_000
NEEDLE = "harbour at dusk"
SETUP = f"""
import os
os.environ["VEO_DEMO_VIDEO_SIZE"] = "{BIG}"   # read by connect() in demo mode
import veo_nb
client = veo_nb.connect(time_scale=0.01)   # no VEO_API_KEY: demo mode
assert client.demo
tracker = veo_nb.Tracker(client)
tracker.submit("A harbour at dusk, fifteen megabytes [duration: 130]")
"""


def test_a_big_demo_video_plays_after_its_click_and_only_then_passes_the_kernel(
        voila, open_page) -> None:
    started = time.monotonic()
    write_notebook(voila.root_dir / "big" / "big.ipynb", SETUP, "veo_nb.panel(tracker)")
    page = open_page(voila)
    traffic = KernelTraffic().attach(page)
    open_notebook(page, voila, "big/big.ipynb")
    text = wait_for_panel(page)
    assert "demo mode" in text, text[:500]
    before, sent = check_big_video_waits_for_play(page, traffic, NEEDLE, BIG)
    print(f"Voilà: {before} bytes from the kernel before the click, {sent} after; "
          f"{time.monotonic() - started:.0f} s")
