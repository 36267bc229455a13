"""The panel in a real JupyterLab, in a real Chromium.

The quickstart (``notebooks/01_quickstart.ipynb``): one Run All, then: the
panel renders, statuses advance by themselves, a finished task's video
loads (8 s long; after a click on its ▶ Play when it is too big to be
shown at once), a failed task's error that contains markup is shown as
text and runs nothing, and a video that is playing keeps playing (same
element, time advancing) while other rows update. Rows are told apart by
the panel's own parts (``.veo-row``, ``.veo-id``, ``.veo-error``...), not
by the notebook's prompts. Takes a screenshot of the live panel
(docs/img/panel.png is written when missing or with
VEO_NB_UPDATE_SCREENSHOT=1).

A 15 MB video: no byte of it passes through the kernel's websocket until
▶ Play is clicked, then the file once, and it plays; showing the panel again
turns the first output into one line.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from chromium import KernelTraffic
from notebook_page import open_and_run_all, write_notebook
from panel_page import (
    JS_PANEL,
    check_big_video_waits_for_play,
    row_text,
    wait_for_panel,
    wait_playable,
)
from servers import wait_for

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "panel.png"

EXTRA = "An extra task so that a row updates"
TERMINAL = {"completed", "failed"}
IN_FLIGHT = {"queued", "processing"}

pytestmark = pytest.mark.timeout(600)

# JS run in the page: the live panel (see panel_page.JS_PANEL).
JS_PANEL_FN = f"() => {JS_PANEL}"

# JS: {task id: the row's text} of the live panel's rows.
JS_ROWS_BY_ID = """() => {
    const p = %s;
    const out = {};
    if (!p) return out;
    for (const row of p.querySelectorAll('.veo-row')) {
        const id = row.querySelector('.veo-id');
        if (id) out[id.innerText.trim()] = row.innerText;
    }
    return out;
}""" % JS_PANEL

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

# JS: what a failed task's error could have injected into the page. Every
# `.veo-error` must be text only.
JS_INJECTED = """() => {
    const p = %s;
    const errors = [...p.querySelectorAll('.veo-error')];
    return {
        errors: errors.map(e => e.innerText),
        elements: errors.reduce((n, e) => n + e.children.length, 0),
        scripts: p.querySelectorAll('script').length,
        imgs: p.querySelectorAll('.veo-row-info img').length,
        flag: window.veoXss === undefined ? null : window.veoXss,
    };
}""" % JS_PANEL


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


def _status(text: str) -> str:
    """The status word of a row's text ("" when none is there yet)."""
    low = text.lower()
    return next((w for w in ("completed", "failed", "processing", "queued", "not found")
                 if w in low), "")


def _rows(page) -> dict[str, str]:
    return page.evaluate(JS_ROWS_BY_ID)


def test_quickstart_panel_live_in_jupyterlab(lab, page, tmp_path: Path) -> None:
    started = time.monotonic()
    open_and_run_all(page, lab, "01_quickstart.ipynb")

    # 1. The panel renders, with tasks still in flight.
    wait_for_panel(page)
    rows = wait_for(lambda: (r := _rows(page)) and len(r) >= 3 and r, timeout=90,
                    what="a row for each of the quickstart's tasks")
    seen: dict[str, list[str]] = {}

    def observe() -> dict[str, str]:
        now = _rows(page)
        for task_id, text in now.items():
            seen.setdefault(task_id, []).append(_status(text))
        return now

    # 2. Statuses advance with no user action.
    wait_for(lambda: any(s in TERMINAL for s in map(_status, observe().values())),
             timeout=240, interval=0.5, what="a first task to finish")
    advanced = [i for i, states in seen.items()
                if set(states) & IN_FLIGHT and states[-1] in TERMINAL]
    assert advanced, f"no row was seen going from queued/processing to finished: {seen}"

    # Small videos show at once; a bigger one plays after a click on its card.
    videos = wait_playable(page, timeout=180)
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
    watch = [i for i, text in _rows(page).items() if _status(text) in IN_FLIGHT]
    if not watch:
        # Every task already finished (on a slow machine the slow one may have
        # ended by now): give the panel a row to update.
        page.evaluate(JS_KERNEL_EXECUTE, f'tracker.submit("[duration: 250] {EXTRA}")')
        wait_for(lambda: row_text(page, EXTRA), timeout=60, what="the extra task's row")
        watch = [i for i, text in _rows(page).items() if EXTRA in text]
    before = {i: row_text(page, i) for i in watch}
    row_changes = 0
    last = dict(before)

    def a_watched_row_finished() -> bool:
        nonlocal row_changes
        done = False
        for i in watch:
            text = row_text(page, i)
            if text != last[i]:
                row_changes += 1
                last[i] = text
            done = done or _status(text) in TERMINAL
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

    # 4. A failed task's error with markup (the quickstart's deliberate one)
    # is text, not HTML, and ran nothing.
    wait_for(lambda: any(_status(t) == "failed" for t in _rows(page).values()), timeout=120,
             what="the failed task's row")
    injected = page.evaluate(JS_INJECTED)
    assert any("<" in e and ">" in e for e in injected["errors"]), injected
    assert (injected["elements"], injected["scripts"], injected["imgs"], injected["flag"]) \
        == (0, 0, 0, None), injected
    assert page.dialogs == [], page.dialogs

    # 5. Everything settles.
    wait_for(lambda: all(_status(t) in TERMINAL for t in _rows(page).values()), timeout=240,
             what="every task to finish")
    assert page.evaluate("() => window.veoXss === undefined")
    print(f"whole test {time.monotonic() - started:.0f} s; {len(rows)} rows; screenshot {shot}")


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
    write_notebook(lab.root_dir / "big_video.ipynb", BIG_SETUP, "veo_nb.panel(tracker)",
                   "veo_nb.panel(tracker)")
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
    before, sent = check_big_video_waits_for_play(page, traffic, "harbour", BIG)
    print(f"kernel to browser: {before} bytes before the click, {sent} after")
