"""The panel under Voilà, in a real Chromium. Voilà runs every cell before
its page shows and by default serves no ``.mp4`` file from disk: the panel
plays a saved video through widget bytes, not a file URL, so it plays there
too.

A finished demo task with a 15 MB video: its card shows, no byte of it has
passed through the kernel's websocket (well under 1 MB in all) until a
click on ▶ Play; then it plays (readyState >= 1, 8 s long) and its 15 MB
came through once.

Tasks that finish while the page connects to its kernel: every row gets its
video card (ipywidgets builds the widgets of before its restore from one
snapshot; a card naming a model of that snapshot failed there for good).

The class dashboard (``notebooks/04_class_dashboard.ipynb``, in demo mode:
no database configured): the panel shows the class's tasks, each row with
its student, and the counts per student agree with the panel's rows and
follow the tasks live (a student's completed count appears as their task
finishes).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from notebook_page import open_and_run_all, open_notebook, write_notebook
from panel_page import JS_PANEL, JS_ROWS_BY_OWNER, check_big_demo_video, class_counts, rows_text, \
    wait_for_panel
from servers import wait_for

pytestmark = pytest.mark.timeout(300)

DASHBOARD = Path(__file__).resolve().parents[2] / "notebooks" / "04_class_dashboard.ipynb"


def test_a_big_demo_video_plays_after_its_click_and_only_then_passes_the_kernel(
        voila, open_page) -> None:
    print(check_big_demo_video(voila, open_page))


#: 24 demo tasks with 3 MB videos (a card and ▶ Play each, as a real clip
#: gets) finishing one every 0.5 s from 0.5 s to 12 s after they are
#: submitted: some before the page is there, some while it connects, some after.
STAGGERED = """
import os
os.environ["VEO_DEMO_VIDEO_SIZE"] = "3000000"
import veo_nb
client = veo_nb.connect(time_scale=0.01, failure_rate=0.0)
tracker = veo_nb.Tracker(client)
for i in range(24):
    tracker.submit(f"Storm number {i:02d} [duration: {50 * (i + 1)}]")
"""

# JS: per row of the live panel, "P" when it is completed with ▶ Play, "c"
# when completed without it, "." otherwise.
JS_CARDS = """() => { const p = %s; if (!p) return '';
    return [...p.querySelectorAll('.veo-row')].map(r => !r.innerText.toLowerCase().includes(
        'completed') ? '.' : r.querySelector('.veo-media .veo-play') ? 'P' : 'c').join(''); }""" % JS_PANEL


def test_tasks_finishing_while_the_page_connects_all_get_their_card(voila, open_page) -> None:
    write_notebook(voila.root_dir / "staggered" / "staggered.ipynb", STAGGERED,
                   "veo_nb.panel(tracker, page_size=30)")
    page = open_page(voila)
    open_and_run_all(page, voila, "staggered/staggered.ipynb")
    wait_for_panel(page)
    try:
        wait_for(lambda: page.evaluate(JS_CARDS) == "P" * 24, timeout=120, interval=0.5,
                 what="a card with ▶ Play in each of the 24 completed rows")
    finally:
        lost = [m for m in page.console_messages if "widget model not found" in m]
        cards = page.evaluate(JS_CARDS)
        print(f"rows {cards!r}; {len(lost)} 'widget model not found' in the console")
        for text, card in zip(rows_text(page), cards):
            if card != "P":
                print(f"  row without its card: {text!r}")

    assert not lost, lost[:3]


def test_the_class_dashboard_shows_counts_per_student_that_follow_the_panel(
        voila, open_page) -> None:
    started = time.monotonic()
    (voila.root_dir / "dashboard").mkdir()
    shutil.copy2(DASHBOARD, voila.root_dir / "dashboard" / DASHBOARD.name)
    page = open_page(voila)
    open_notebook(page, voila, f"dashboard/{DASHBOARD.name}")
    wait_for_panel(page)
    wait_for(lambda: page.evaluate(JS_ROWS_BY_OWNER), timeout=60, what="the panel's rows")
    by_owner = page.evaluate(JS_ROWS_BY_OWNER)
    students = sorted(by_owner)
    assert len(students) >= 2 and "" not in students, by_owner  # every row names its student

    counts = wait_for(lambda: class_counts(page), timeout=60,
                      what="counts per student that agree with the panel's rows")
    # Live: as the demo class's tasks finish (about 15-45 s in demo mode), the
    # completed counts follow the rows.
    counts = wait_for(lambda: (c := class_counts(page, "completed")) and any(
        v.get("completed", 0) > 0 for v in c.values()) and c, timeout=120, interval=0.5,
        what="a completed count per student that follows the panel")
    print(f"dashboard counts {counts}; {time.monotonic() - started:.0f} s")
