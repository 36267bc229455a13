"""The panel in a classroom, in a real JupyterLab and Chromium.

* While a cell blocks in ``tracker.wait()`` (Run All: the panel in one
  cell, a long wait in the next), a click on Pause and switches to the
  Gallery and History tabs take effect within 2 s, and so does ▶ Play: JupyterLab 4.4+ sends
  widget messages to a kernel subshell (ipykernel >= 7.1), so the kernel
  handles them while the cell runs. (ipykernel 7.4 routes a comm's messages
  to the subshell the kernel last sent from on it, the main shell for a
  panel built by a cell: ``veo_nb.widgets.kernel`` undoes that; without it
  a plain ipywidgets Button waited 23 s behind ``time.sleep(25)``.)
* A kernel restart mid-task in demo mode, then Run All again: the task of
  the first run completes (the embedded emulator's state survives in
  ``veo_nb_data/demo/``) and is never shown as failed or not found.
* Run All twice: the second run's tasks are on page 1, above the first's.
* The Submit form refuses first/last-frame mode without a first-frame URL
  (a message; nothing created); a double click on Submit creates one task;
  a double click on Resume leaves polling on.
* Projector mode at 1280×720 and 150 % zoom: no row's progress bar
  overlaps its prompt text.

Each test writes a small notebook of its own into a folder of its own.
"""

from __future__ import annotations

import time

import pytest

from chromium import KernelTraffic
from notebook_page import (
    cell_busy,
    cell_output,
    execute,
    kernel_state,
    open_and_run_all,
    restart_kernel_via_menu,
    run_all_via_menu,
    write_notebook,
)
from panel_page import (
    JS_PANEL,
    click_play,
    click_tab,
    live_panel,
    open_form,
    panel_text,
    play_button_state,
    row_text,
    rows_text,
    shown,
    video_states,
    wait_for_panel,
)
from servers import wait_for

pytestmark = pytest.mark.timeout(300)

#: An emulator of the tests' own, 100x faster than the service (30 s -> 0.3 s).
EMULATOR = """
import veo_nb
from veo_nb.emulator import Emulator
emu = Emulator(time_scale=0.01, failure_rate=0, video_size="sample").start()
tracker = veo_nb.Tracker(emu.client(), store="h.sqlite", media_dir="videos")
"""


def _statuses(text: str) -> set[str]:
    low = text.lower()
    return {w for w in ("queued", "processing", "completed", "failed", "not found") if w in low}


def _notebook(lab, name: str, *cells: str) -> str:
    relpath = f"{name}/{name}.ipynb"
    write_notebook(lab.root_dir / relpath, *cells)
    return relpath


def test_pause_and_tabs_answer_while_a_cell_blocks_in_wait(lab, page) -> None:
    relpath = _notebook(
        lab, "blocking",
        EMULATOR.replace('"sample"', "3_000_000")   # over 2 MB: a card, played on a click
        + 'quick = tracker.submit("A quick fox [duration: 130]")\n'
                   'slow = tracker.submit("A slow pan [duration: 60000]")',   # 600 s here
        "veo_nb.panel(tracker)",
        "tracker.wait([slow.id], timeout=900)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    wait_for(lambda: "completed" in row_text(page, "quick fox")
             and play_button_state(page, "quick fox") == {"enabled": True}, timeout=60,
             what="the quick task's card while the last cell waits")
    assert cell_busy(page, 2), "the wait() cell is not running"
    assert "auto-refresh on" in panel_text(page)

    # Pause: the kernel must handle the click (it stops the tracker and redraws).
    pause = live_panel(page).locator(".veo-pause")
    assert pause.inner_text().strip() == "Pause"
    clicked = time.monotonic()
    pause.click()
    wait_for(lambda: pause.inner_text().strip() == "Resume"
             and "auto-refresh paused" in panel_text(page), timeout=2, interval=0.05,
             what="Pause to take effect while the cell blocks")
    paused_in = time.monotonic() - clicked

    # ▶ Play on the card (made by the panel's thread after the cell started).
    assert video_states(page, loaded_only=False) == []
    clicked = time.monotonic()
    assert click_play(page, "quick fox")
    wait_for(lambda: video_states(page, loaded_only=False), timeout=2, interval=0.05,
             what="▶ Play to make a player while the cell blocks")
    played_in = time.monotonic() - clicked
    videos = wait_for(lambda: video_states(page), timeout=30, what="the played video to load")
    assert all(abs(v["duration"] - 8.0) < 0.5 for v in videos), videos

    # The Gallery shows the finished video's card.
    clicked = time.monotonic()
    click_tab(page, "Gallery")
    wait_for(lambda: shown(page, ".veo-gallery") and shown(page, ".veo-gallery .veo-media")
             and not shown(page, ".veo-row"), timeout=2, interval=0.05,
             what="the Gallery with the finished video to show")
    gallery_in = time.monotonic() - clicked
    # The History tab is filled by the kernel when it is selected.
    clicked = time.monotonic()
    click_tab(page, "History")
    wait_for(lambda: "Summary per model" in panel_text(page) and "History: the newest"
             in panel_text(page), timeout=2, interval=0.05,
             what="the History tab's tables (made by the kernel on selection)")
    history_in = time.monotonic() - clicked
    # All of it while the wait() cell was still running ([*]; the kernel's
    # status says idle once a subshell answered a widget message).
    assert cell_busy(page, 2), ("the wait() cell ended before the checks did: "
                                + repr(cell_output(page, 2)[-2000:]))
    print(f"while blocked: Pause {paused_in:.2f} s, Play {played_in:.2f} s, "
          f"Gallery {gallery_in:.2f} s, History {history_in:.2f} s")


DEMO = """
import veo_nb
client = veo_nb.connect(time_scale=TIME_SCALE)   # no VEO_API_KEY: demo mode, one emulator per kernel
assert client.demo
tracker = veo_nb.Tracker(client)
"""


def _header(page) -> str:
    return page.evaluate("() => { const p = %s; const h = p && p.querySelector('.veo-header');"
                         " return h ? h.innerText : ''; }" % JS_PANEL)


def _wait_cells_done(page, count: int, *, timeout: float = 60) -> None:
    wait_for(lambda: not any(cell_busy(page, i) for i in range(count)), timeout=timeout,
             what="every cell to have run")


def test_a_kernel_restart_mid_task_in_demo_mode_then_run_all_completes_the_task(lab, page) -> None:
    relpath = _notebook(
        lab, "restart",
        DEMO.replace("TIME_SCALE", "0.05")
        + 'run = 1 + len(tracker.records())\n'
          'tracker.submit(f"A lighthouse at night, run {run} [duration: 400]")  # 20 s here',
        "veo_nb.panel(tracker)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    first = wait_for(lambda: (t := row_text(page, "run 1")) and _statuses(t) & {"queued", "processing"}
                     and t, timeout=60, what="the first run's task in flight")

    # Kernel > Restart Kernel…, then Run All again.
    _wait_cells_done(page, 2)
    pid = execute(page, "import os; print(os.getpid())", relpath).strip()
    kernel = kernel_state(page, relpath)["id"]
    before = lab.api("GET", f"api/kernels/{kernel}")["last_activity"]
    restart_kernel_via_menu(page)
    wait_for(lambda: lab.api("GET", f"api/kernels/{kernel}")["execution_state"] == "idle"
             and kernel_state(page, relpath)["status"] == "idle"
             and lab.api("GET", f"api/kernels/{kernel}")["last_activity"] != before,
             timeout=60, what="the restarted kernel to be idle")
    assert "completed" not in _statuses(row_text(page, "run 1")), first  # still unfinished
    run_all_via_menu(page)
    wait_for(lambda: row_text(page, "run 2"), timeout=60, what="the second run's row")
    _wait_cells_done(page, 2)
    assert execute(page, "import os; print(os.getpid())", relpath).strip() != pid  # a new process

    seen: list[set[str]] = []

    def finished() -> bool:
        seen.append(_statuses(row_text(page, "run 1")))
        return "completed" in seen[-1] or "failed" in seen[-1] or "not found" in seen[-1]

    wait_for(finished, timeout=90, interval=0.3, what="the first run's task to finish")
    assert all(not s & {"failed", "not found"} for s in seen), seen
    assert seen[-1] == {"completed"}, seen
    header = _header(page)
    assert "failed" not in header and "not found" not in header, header
    rows = rows_text(page)
    assert "run 2" in rows[0] and "run 1" in rows[1], rows  # newest first


def test_run_all_again_puts_the_new_runs_tasks_on_page_one_above_the_old_ones(lab, page) -> None:
    relpath = _notebook(
        lab, "rerun",
        DEMO.replace("TIME_SCALE", "0.01")
        + 'run = 1 + len(tracker.records()) // 3\n'
          'for i in range(3):\n'
          '    tracker.submit(f"run {run} clip {i} [duration: 6000]")',
        "veo_nb.panel(tracker, page_size=4)")
    open_and_run_all(page, lab, relpath)
    wait_for(lambda: len(rows_text(page)) == 3, timeout=90, what="the first run's three rows")
    _wait_cells_done(page, 2)
    run_all_via_menu(page)

    def second_run_shown() -> list[str]:
        rows = rows_text(page)
        return rows if any("run 2" in r for r in rows) else []

    rows = wait_for(second_run_shown, timeout=90, what="the second run's rows")
    rows = wait_for(lambda: (r := rows_text(page)) and len(r) == 4 and r, timeout=30,
                    what="a full first page")
    runs = ["run 2" if "run 2" in r else "run 1" if "run 1" in r else "?" for r in rows]
    assert runs == ["run 2", "run 2", "run 2", "run 1"], rows
    assert [r for r in rows if "run 2" in r] == sorted((r for r in rows if "run 2" in r),
                                                       key=lambda r: r.split("clip ")[1],
                                                       reverse=True), rows  # newest first
    assert "page 1 of 2" in panel_text(page)


def _message(page) -> str:
    return page.evaluate("() => { const p = %s; const m = p && p.querySelector('.veo-message');"
                         " return m ? m.innerText : ''; }" % JS_PANEL)


def test_submit_refuses_a_mode_without_its_inputs_and_double_clicks_act_once(lab, page) -> None:
    relpath = _notebook(lab, "forms", EMULATOR, "veo_nb.panel(tracker)")
    traffic = KernelTraffic().attach(page)
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    _wait_cells_done(page, 2)
    panel = live_panel(page)
    open_form(page, "Submit a prompt")
    panel.get_by_placeholder("Describe the video…").fill("A castle in the fog")
    mode = panel.get_by_label("mode", exact=True)
    mode.select_option(label="first/last frame")
    panel.get_by_placeholder("first frame image URL (required)").wait_for()
    submit = panel.locator(".veo-submit")

    submit.click()
    wait_for(lambda: "needs a first-frame image URL" in _message(page), timeout=10,
             what="the refusal")
    page.wait_for_timeout(1000)
    assert execute(page, "print(emu.stats.creates, len(tracker.records()))", relpath).split() \
        == ["0", "0"]
    assert "0 tasks" in _header(page)

    mode.select_option(label="text only")
    page.wait_for_timeout(800)  # past the guard of the last click
    clicks = traffic.clicks
    submit.dblclick()
    wait_for(lambda: "submitted vgen_" in _message(page), timeout=10, what="the submission")
    page.wait_for_timeout(2000)  # the second click has reached the kernel
    assert traffic.clicks - clicks == 2, "the double click did not send two clicks"
    # Unguarded, the second click would have said "type a prompt first".
    assert "submitted vgen_" in _message(page), _message(page)
    assert execute(page, "print(emu.stats.creates, len(tracker.records()))", relpath).split() \
        == ["1", "1"]

    pause = panel.locator(".veo-pause")
    pause.click()
    wait_for(lambda: pause.inner_text().strip() == "Resume", timeout=10, what="Pause")
    page.wait_for_timeout(800)
    clicks = traffic.clicks
    pause.dblclick()  # Resume, double-clicked
    wait_for(lambda: pause.inner_text().strip() == "Pause", timeout=10, what="Resume")
    page.wait_for_timeout(2000)
    assert traffic.clicks - clicks == 2, "the double click did not send two clicks"
    assert pause.inner_text().strip() == "Pause" and "auto-refresh on" in panel_text(page)
    assert execute(page, "print(tracker.running)", relpath).strip() == "True"


# JS: for each row of the live panel, the overlaps of its progress bar with
# its prompt text (each line box of it) and with its text block, and of its
# video with both; plus what was measured, so an empty page cannot pass.
JS_OVERLAPS = """() => {
    const p = %s;
    const cross = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5
                            && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
    const out = {rows: 0, prompts: 0, bars: 0, overlaps: [], clipped: 0, fonts: [],
                 overflows: [], width: 0};
    for (const row of p.querySelectorAll('.veo-row')) {
        out.rows += 1;
        const info = row.querySelector('.veo-row-info');
        const bar = row.querySelector('.veo-bar');
        const prompt = info.querySelector('.veo-prompt');
        const media = row.querySelector('.veo-media');
        const bars = bar ? [bar.getBoundingClientRect()] : [];
        out.bars += bars.filter(b => b.width > 0 && b.height > 0).length;
        const lines = prompt ? [...prompt.getClientRects()] : [];
        out.prompts += lines.length ? 1 : 0;
        const infoBox = info.getBoundingClientRect();
        const mediaBox = media ? [media.getBoundingClientRect()] : [];
        for (const b of bars) {
            lines.forEach((l, i) => { if (cross(b, l)) out.overlaps.push(`bar/prompt line ${i}`); });
            if (cross(b, infoBox)) out.overlaps.push('bar/text');
        }
        for (const m of mediaBox) {
            if (cross(m, infoBox)) out.overlaps.push('video/text');
            for (const b of bars) if (cross(m, b)) out.overlaps.push('video/bar');
        }
        if (info.scrollWidth > info.clientWidth + 2) out.clipped += 1;
        const edge = row.getBoundingClientRect().right + 1;
        for (const part of [infoBox, ...bars, ...mediaBox]) {
            if (part.right > edge) out.overflows.push(Math.round(part.width));
        }
        out.width = Math.round(row.getBoundingClientRect().width);
        const text = info.querySelector('.widget-html-content > div');
        out.fonts.push(text ? getComputedStyle(text).fontSize : '');
    }
    return out;
}""" % JS_PANEL

LONG = ("A slow aerial shot over a coastline at dawn, waves breaking on black rocks, "
        "gulls circling, the light turning from blue to gold")


def test_projector_mode_at_150_percent_zoom_keeps_bars_off_the_prompt(lab, open_page) -> None:
    # 150 % zoom on a 1280x720 screen: 853x480 CSS pixels, 1.5 device pixels each.
    page = open_page(lab, width=853, height=480, device_scale_factor=1.5)
    relpath = _notebook(
        lab, "projector",
        EMULATOR + f'tracker.submit("{LONG} [duration: 130]", label="finished")\n'
                   f'tracker.submit("{LONG} [duration: 60000]", label="running")',
        "veo_nb.panel(tracker)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    wait_for(lambda: page.evaluate("() => devicePixelRatio") == 1.5, timeout=5, what="the zoom")
    wait_for(lambda: "completed" in row_text(page, "finished")
             and page.evaluate("() => !!document.querySelector('.veo-panel .veo-row video')"),
             timeout=60, what="the finished row with its video")
    assert page.evaluate(JS_OVERLAPS)["fonts"] == ["14px", "14px"]  # normal size first
    live_panel(page).locator("button", has_text="Projector").click()
    wait_for(lambda: page.evaluate(JS_OVERLAPS)["fonts"] == ["20px", "20px"], timeout=10,
             what="projector mode's 20px text in both rows")
    page.wait_for_timeout(1000)  # the larger video and columns laid out
    found = page.evaluate(JS_OVERLAPS)
    assert found["rows"] == 2 and found["prompts"] == 2 and found["bars"] == 2, found
    assert found["overlaps"] == [] and found["clipped"] == 0, found
    # the large (640 px) video beside JupyterLab's open file browser at this
    # zoom stuck out of its row before it was bounded by the row's width
    assert not found["overflows"], found
