"""The panel in a real JupyterLab, in a real Chromium.

The quickstart: one Run All, then: the panel renders, statuses advance by
themselves, a finished task's video loads (8 s long; after a click on its
▶ Play when it is too big to be shown at once), the failed task's error
that contains markup is shown as text and runs nothing, and a video that is
playing keeps playing (same element, time advancing) while other rows
update. Takes a screenshot of the live panel (docs/img/panel.png is written
when missing or with VEO_NB_UPDATE_SCREENSHOT=1).

A 15 MB video: no byte of it passes through the kernel's websocket until
▶ Play is clicked, then the file once, and it plays; showing the panel again
turns the first output into one line.
"""

from __future__ import annotations

import os
import shutil
import time

import nbformat
from pathlib import Path

import pytest

from chromium import KernelTraffic
from notebook_page import open_and_run_all, open_notebook, run_all_via_menu
from panel_page import (
    JS_PANEL,
    panel_text,
    row_text,
    video_states,
    wait_for_panel,
    wait_playable,
)
from servers import wait_for

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "panel.png"

# Text that identifies each row of the quickstart's tasks.
FOX = "A red fox trotting"
BOAT = "A paper boat drifting"
CLOUDS = "Timelapse of clouds"
BLOCKED = "Blocked"
SLOW = "slow drone flight"
ROWS = (FOX, BOAT, CLOUDS, BLOCKED, SLOW)
EXTRA = "An extra task so that a row updates"
TERMINAL = ("completed", "failed")
IN_FLIGHT = {"queued", "processing"}

pytestmark = pytest.mark.timeout(600)

# JS run in the page: the live panel (see panel_page.JS_PANEL).
JS_PANEL_FN = f"() => {JS_PANEL}"

JS_TAG_AND_PLAY = """async () => {
    const p = %s;
    const v = [...p.querySelectorAll('video')].find(v => v.readyState >= 1 && v.isConnected);
    if (!v) return null;
    v.__veoTag = 'watched';
    v.__veoEvents = [];
    for (const kind of ['emptied', 'loadstart', 'abort', 'pause']) {
        v.addEventListener(kind, () => v.__veoEvents.push(kind));
    }
    v.__veoProgress = 0;
    v.__veoLast = v.currentTime;
    v.addEventListener('timeupdate', () => {
        const d = v.currentTime - v.__veoLast;
        if (d > 0 && d < 2) v.__veoProgress += d;
        v.__veoLast = v.currentTime;
    });
    v.muted = true;
    v.loop = true;   // an 8 s clip: loop so it is still playing when the slow row updates
    await v.play();
    return v;
}""" % JS_PANEL


JS_KERNEL_EXECUTE = """(code) => {
    // Run code in the notebook's kernel without a cell (JupyterLab's own API).
    const nb = window.jupyterapp.shell.currentWidget;
    nb.sessionContext.session.kernel.requestExecute({code: code});
    return true;
}"""


def _screenshot_panel(page, path: Path) -> None:
    """The whole panel in one picture: JupyterLab scrolls the notebook inside
    its own container, so make the viewport tall enough for the panel first."""
    box = page.evaluate("""() => {
        const p = %s;
        p.scrollIntoView({block: 'start'});
        const r = p.getBoundingClientRect();
        return {height: r.height};
    }""" % JS_PANEL)
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"],
                            "height": int(min(4000, max(size["height"], box["height"] + 400)))})
    try:
        page.evaluate("() => %s.scrollIntoView({block: 'start'})" % JS_PANEL)
        page.wait_for_timeout(500)  # let layout settle after the resize
        handle = page.evaluate_handle(JS_PANEL_FN)
        handle.as_element().screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)


def _statuses(text: str) -> set[str]:
    low = text.lower()
    return {w for w in ("queued", "processing", "completed", "failed") if w in low}


def test_quickstart_panel_live_in_jupyterlab(lab, page, tmp_path: Path) -> None:
    started = time.monotonic()
    open_notebook(page, lab, "01_quickstart.ipynb")
    run_all_via_menu(page)

    # 1. The panel renders, with tasks still in flight.
    wait_for_panel(page)
    wait_for(lambda: all(row_text(page, n) for n in ROWS), timeout=90,
             what="a row for every submitted task")
    seen: dict[str, list[set[str]]] = {n: [] for n in ROWS}

    def observe() -> None:
        for n in ROWS:
            seen[n].append(_statuses(row_text(page, n)))

    # 2. Statuses advance with no user action, up to a loaded video.
    def first_task_done() -> bool:
        observe()
        return bool(seen[FOX][-1] & set(TERMINAL))

    wait_for(first_task_done, timeout=240, interval=0.5, what="the first task to finish")
    advanced = [n for n, states in seen.items()
                if any(s & IN_FLIGHT for s in states) and states[-1] & set(TERMINAL)]
    assert advanced, f"no row was seen going from queued/processing to finished: {seen}"

    # Small videos show at once; a bigger one plays after a click on its card.
    videos = wait_playable(page, FOX, timeout=180)
    assert all(abs(v["duration"] - 8.0) < 0.5 for v in videos), videos

    # A screenshot of the panel while it is live (the README's picture).
    shot = tmp_path / "panel.png"
    _screenshot_panel(page, shot)
    assert shot.stat().st_size > 10_000
    if not SCREENSHOT.exists() or os.environ.get("VEO_NB_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # 3. A playing video keeps playing across refresh ticks while other rows update.
    handle = page.evaluate_handle(JS_TAG_AND_PLAY)
    assert handle.json_value() is not None, "no loaded video to play"
    watch = [n for n in ROWS if _statuses(row_text(page, n)) & IN_FLIGHT]
    if not watch:
        # Every task already finished (on a slow machine the slow one may have
        # ended by now): give the panel a row to update.
        page.evaluate(JS_KERNEL_EXECUTE, f'tracker.submit("[duration: 250] {EXTRA}")')
        watch = [EXTRA]
    before = {n: row_text(page, n) for n in watch}
    row_changes = 0
    last = dict(before)

    def a_watched_row_finished() -> bool:
        nonlocal row_changes
        done = False
        for n in watch:
            text = row_text(page, n)
            if text != last[n]:
                row_changes += 1
                last[n] = text
            done = done or bool(_statuses(text) & set(TERMINAL))
        return done

    wait_for(a_watched_row_finished, timeout=240, interval=0.5,
             what=f"one of the rows {watch} to finish while the video plays")
    # The video plays on after the last row update, and was never replaced.
    t0 = handle.evaluate("v => v.__veoProgress")
    wait_for(lambda: handle.evaluate("v => v.__veoProgress") > t0 + 1.0, timeout=30,
             what="the watched video's currentTime to advance after the row updates")
    state = handle.evaluate("""v => ({
        connected: v.isConnected, tag: v.__veoTag, paused: v.paused,
        progress: v.__veoProgress, events: v.__veoEvents, readyState: v.readyState,
        sameAsInPanel: [...document.querySelectorAll('.veo-panel video')].includes(v)})""")
    assert state["connected"] and state["sameAsInPanel"], (
        f"the playing <video> was replaced during refreshes: {state}")
    assert state["tag"] == "watched"
    assert not state["paused"], state
    assert "emptied" not in state["events"] and "loadstart" not in state["events"], state
    assert row_changes >= 1, f"no other row updated while the video played: {before}"

    # 4. The failed task's markup is text, not HTML, and ran nothing.
    blocked_row = wait_for(lambda: (lambda r: r if "failed" in r.lower() else "")(
        row_text(page, BLOCKED)), timeout=120, what="the failed task's row")
    text = panel_text(page)
    assert "<b>Blocked</b>" in text, text[-2000:]
    assert "<script>" in text
    injected = page.evaluate("""() => {
        const p = %s;
        return {
            bold: [...p.querySelectorAll('b, strong')].filter(
                      b => b.innerText.trim() === 'Blocked').length,
            scripts: p.querySelectorAll('script').length,
            imgs: p.querySelectorAll('img[src="x"]').length,
            flag: window.veoXss === undefined ? null : window.veoXss,
        };
    }""" % JS_PANEL)
    assert injected == {"bold": 0, "scripts": 0, "imgs": 0, "flag": None}, injected
    assert page.dialogs == [], page.dialogs
    assert "Blocked" in blocked_row

    # 5. Everything settles.
    def all_done() -> bool:
        return all(_statuses(row_text(page, n)) & set(TERMINAL)
                   for n in (FOX, SLOW, BLOCKED))

    wait_for(all_done, timeout=240, what="every task to finish")
    assert page.evaluate("() => window.veoXss === undefined")
    print(f"whole test {time.monotonic() - started:.0f} s; screenshot {shot}")


BIG = 15 * 1024 * 1024
BIG_SETUP = f"""
import veo_nb
from veo_nb.emulator import Emulator
emu = Emulator(time_scale=0.01, failure_rate=0, video_size={BIG}).start()
tracker = veo_nb.Tracker(emu.client(), store="big/h.sqlite", media_dir="big/videos")
task = tracker.submit("A harbour at dusk, fifteen megabytes [duration: 130]")
tracker.wait([task.id], timeout=120)
import os; os.path.getsize(tracker.get(task.id).video_path)
"""
REPLACED = "replaced by a newer panel"


def test_a_big_video_passes_no_bytes_through_the_kernel_until_played(lab, page) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in
                (BIG_SETUP, "veo_nb.panel(tracker)", "veo_nb.panel(tracker)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, lab.root_dir / "big_video.ipynb")
    traffic = KernelTraffic().attach(page)
    open_and_run_all(page, lab, "big_video.ipynb")

    # The first panel's output becomes one line; the second one is live.
    wait_for(lambda: REPLACED in page.evaluate(
        "() => document.querySelector('.jp-Notebook').innerText"), timeout=240,
        what="the first panel's output to say it was replaced")
    card = wait_for(lambda: (t := row_text(page, "harbour")) and "MB" in t and t, timeout=60,
                    what="the finished row's card in the live panel")
    assert "completed" in card and "15.0 MB · 8 s · 720p · 16:9" in card, card
    assert page.evaluate("() => document.querySelectorAll('.veo-panel').length") == 1
    # At 150 % zoom on a 1280×720 screen (853×480 CSS pixels) the parts of a
    # row wrap instead of overlapping.
    page.set_viewport_size({"width": 853, "height": 480})
    page.wait_for_timeout(1000)
    overlaps = page.evaluate("""() => {
        const p = %s;
        const boxes = (row, sel) => [...row.querySelectorAll(sel)].map(e => e.getBoundingClientRect());
        const cross = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        let found = 0;
        for (const row of p.querySelectorAll('.veo-row')) {
            const [info] = boxes(row, '.veo-row-info');
            for (const other of [...boxes(row, '.veo-bar'), ...boxes(row, '.veo-media')]) {
                if (cross(info, other)) found += 1;
            }
            // text spilling out of its box would run under the bar
            const el = row.querySelector('.veo-row-info');
            if (el.scrollWidth > el.clientWidth + 2) found += 1;
        }
        return found;
    }""" % JS_PANEL)
    assert overlaps == 0
    page.wait_for_timeout(2000)  # a few refresh ticks
    before = traffic.nbytes
    assert before < 1024 * 1024, f"{before} bytes from the kernel before any play"
    assert video_states(page, loaded_only=False) == []

    videos = wait_playable(page, "harbour", timeout=120)
    assert all(abs(v["duration"] - 8.0) < 0.5 for v in videos), videos
    assert traffic.nbytes - before >= BIG, (before, traffic.nbytes)
    assert traffic.nbytes - before <= 1.05 * BIG + 200_000
    print(f"kernel to browser: {before} bytes before the click, {traffic.nbytes - before} after")
