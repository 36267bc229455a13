"""The panel in Notebook 7 (``jupyter notebook``), in a real Chromium.

A finished demo task with a 15 MB video (``VEO_DEMO_VIDEO_SIZE``, read by
``veo_nb.connect()`` in demo mode): the notebook opens, Run All from the
menu, the panel renders and the task finishes by itself; its card shows
and no byte of the video has passed through the kernel's websocket (well
under 1 MB in all); after a click on ▶ Play the video plays (readyState >=
1, 8 s long) and at least its 15 MB came through the kernel once.
"""

from __future__ import annotations

import pytest

from panel_page import check_big_demo_video

pytestmark = pytest.mark.timeout(300)


def test_a_big_demo_video_plays_after_its_click_and_only_then_passes_the_kernel(
        notebook7, open_page) -> None:
    print(check_big_demo_video(notebook7, open_page))
