"""The panel for a learner who uses a keyboard or a screen reader, in a
real JupyterLab and Chromium:

* axe-core (WCAG 2.1 A/AA) over the live panel finds no serious or
  critical violation, in normal and projector mode, with rows of every
  status, the Submit form open, the Gallery and the History tab; the test
  prints every violation it found, whatever its impact.
* With the keyboard only (Tab, Enter, Space): open the Submit form, type a
  prompt and submit it, pause polling, go to the next page, play a video;
  each focused control shows a focus ring.
"""

from __future__ import annotations

import pytest

from a11y import audit_panel, blocking, focused, report
from notebook_page import cell_busy, open_and_run_all, write_notebook
from panel_page import (JS_PANEL, click_tab, live_panel, open_form, panel_text, row_text,
                        rows_text, video_states, wait_for_panel)
from servers import wait_for

pytestmark = pytest.mark.timeout(300)

#: Rows of every status: completed (its video saved), failed, not found,
#: processing; then polling paused and one more submitted, which stays queued.
EVERY_STATUS = """
import time
import veo_nb
from veo_nb.emulator import Emulator
emu = Emulator(time_scale=0.01, failure_rate=0, video_size="sample").start()
tracker = veo_nb.Tracker(emu.client(), store="h.sqlite", media_dir="videos")
done = tracker.submit("A lighthouse at dusk [duration: 130]", label="done")
refused = tracker.submit("A kite in the wind [fail: the prompt was refused] [duration: 130]",
                         label="refused")
tracker.track("vgen_mistyped000")
tracker.wait([done.id, refused.id], timeout=120)
running = tracker.submit("A slow pan over a valley [duration: 60000]", label="running")
deadline = time.monotonic() + 60
while tracker.record(running.id).status_text != "processing" and time.monotonic() < deadline:
    time.sleep(0.2)
tracker.stop()
tracker.submit("A paper boat in the rain [duration: 60000]", label="waiting")
"""


def _notebook(lab, name: str, *cells: str) -> str:
    relpath = f"{name}/{name}.ipynb"
    write_notebook(lab.root_dir / relpath, *cells)
    return relpath


def _wait_cells_done(page, count: int, *, timeout: float = 120) -> None:
    wait_for(lambda: not any(cell_busy(page, i) for i in range(count)), timeout=timeout,
             what="every cell to have run")


def _audit(page, where: str) -> list[dict]:
    found = audit_panel(page)
    print(report(where, found))
    return [dict(v, where=where) for v in blocking(found)]


def test_axe_finds_no_serious_violation_in_normal_and_projector_mode(lab, page) -> None:
    relpath = _notebook(lab, "a11y_audit", EVERY_STATUS, "veo_nb.panel(tracker)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    _wait_cells_done(page, 2)
    wait_for(lambda: all(w in panel_text(page) for w in
                         ("queued", "processing", "completed", "failed", "not found")),
             timeout=60, what="rows of every status")
    wait_for(lambda: video_states(page), timeout=60, what="the finished video in its row")
    failures = []
    for mode in ("normal", "projector"):
        if mode == "projector":
            live_panel(page).locator("button", has_text="Projector").click()
            wait_for(lambda: page.evaluate(
                "() => getComputedStyle(document.querySelector('.veo-row-info .widget-html-content > div')).fontSize")
                == "20px", timeout=10, what="projector mode")
        open_form(page, "Submit a prompt")
        live_panel(page).locator(".veo-submit").wait_for()
        failures += _audit(page, f"{mode}: tasks, every status, Submit form open")
        open_form(page, "Submit a prompt")  # closed again
        click_tab(page, "Gallery")
        wait_for(lambda: page.evaluate("() => !!%s.querySelector('.veo-gallery video')" % JS_PANEL),
                 timeout=30, what="the gallery's video")
        failures += _audit(page, f"{mode}: gallery")
        click_tab(page, "History")
        wait_for(lambda: "Summary per model" in panel_text(page), timeout=30, what="the History tab")
        failures += _audit(page, f"{mode}: history")
        click_tab(page, "Tasks")
    assert failures == [], failures
