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
from panel_page import (JS_PANEL, click_tab, live_panel, open_form, panel_text,
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
    relpath = _notebook(lab, "a11y_audit", EVERY_STATUS, "veo_nb.panel(tracker, start=False)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    _wait_cells_done(page, 2)
    wait_for(lambda: all(w in " ".join(rows_text(page)) for w in
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
        open_form(page, "hide")
        click_tab(page, "Gallery")
        wait_for(lambda: page.evaluate("() => !!%s.querySelector('.veo-gallery video')" % JS_PANEL),
                 timeout=30, what="the gallery's video")
        failures += _audit(page, f"{mode}: gallery")
        click_tab(page, "History")
        wait_for(lambda: "Summary per model" in panel_text(page), timeout=30, what="the History tab")
        failures += _audit(page, f"{mode}: history")
        click_tab(page, "Tasks")
    assert failures == [], failures


def _tab_to(page, wanted, what: str, *, key: str = "Tab", limit: int = 60) -> list[dict]:
    """Press ``key`` (Tab, Shift+Tab) until the focused element satisfies
    ``wanted``; return every element focused on the way (each must be in the
    panel and show a focus ring)."""
    seen = []
    for _ in range(limit):
        page.keyboard.press(key)
        page.wait_for_timeout(60)
        now = focused(page)
        seen.append(now)
        assert now and now["inPanel"], f"the focus left the panel looking for {what}: {seen}"
        assert now["outline"], f"no visible focus ring on {now}"
        if wanted(now):
            return seen
    raise AssertionError(f"{what} not reached with {key} in {limit} presses: {seen}")


def _text_is(text: str):
    return lambda f: f["tag"] == "button" and f["text"].strip() == text


KEYBOARD = """
import veo_nb
from veo_nb.emulator import Emulator
emu = Emulator(time_scale=0.01, failure_rate=0, video_size=3_000_000).start()   # a card, played on a click
tracker = veo_nb.Tracker(emu.client(), store="h.sqlite", media_dir="videos")
for i in range(3):
    tracker.submit(f"A quick clip {i} [duration: 130]", label=f"clip {i}")
tracker.wait(timeout=120)
"""


def test_submit_pause_page_and_play_with_the_keyboard_only(lab, page) -> None:
    relpath = _notebook(lab, "a11y_keys", KEYBOARD, "veo_nb.panel(tracker, page_size=3)")
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    _wait_cells_done(page, 2)
    # The user arrives at the panel's first control (as from the cell above); keys only from here.
    page.evaluate("() => [...%s.querySelectorAll('button, select, input, textarea, [tabindex=\"0\"]')]"
                  ".find(e => e.offsetParent !== null && !e.disabled).focus()" % JS_PANEL)
    assert focused(page)["inPanel"]

    # Open the Submit form (its header is a button of the accordion), type, submit.
    order = _tab_to(page, lambda f: "Submit a prompt" in f["text"], "the Submit form's header")
    page.keyboard.press("Enter")
    _tab_to(page, lambda f: f["tag"] == "textarea", "the prompt box")
    page.keyboard.type("A paper boat in the rain [duration: 130]")
    _tab_to(page, _text_is("Submit"), "Submit")
    page.keyboard.press("Enter")
    wait_for(lambda: "submitted vgen_" in panel_text(page), timeout=30, what="the submission")
    wait_for(lambda: len(rows_text(page)) == 3 and "paper boat" in rows_text(page)[0], timeout=30,
             what="the new task on top of page 1")

    # Pause polling (Space on the button), back up the tab order.
    _tab_to(page, _text_is("Pause"), "Pause", key="Shift+Tab")
    page.keyboard.press("Space")
    wait_for(lambda: "auto-refresh paused" in panel_text(page), timeout=10, what="Pause")
    assert focused(page)["text"] == "Resume", focused(page)  # the focus stays on the button

    # The next page.
    _tab_to(page, _text_is("Next"), "Next")
    page.keyboard.press("Enter")
    wait_for(lambda: "page 2 of 2" in panel_text(page), timeout=10, what="page 2")
    wait_for(lambda: any("clip 0" in r for r in rows_text(page)), timeout=10, what="page 2's row")

    # Play the video of the row on page 2.
    _tab_to(page, lambda f: "Play" in f["text"], "▶ Play")
    page.keyboard.press("Enter")
    videos = wait_for(lambda: video_states(page), timeout=30, what="the video to load")
    assert all(abs(v["duration"] - 8.0) < 0.5 for v in videos), videos
    wait_for(lambda: page.evaluate("() => [...%s.querySelectorAll('video')].some(v => !v.paused)"
                                   % JS_PANEL), timeout=10, what="the video to play")
    print("tab order to the Submit form:", [f["text"] or f["tag"] for f in order])


#: EVERY_STATUS with a Chinese class's prompts and labels.
EVERY_STATUS_ZH = EVERY_STATUS
for english, chinese in (("A lighthouse at dusk", "黄昏时的灯塔"), ('label="done"', 'label="灯塔"'),
                         ("A kite in the wind", "风中的风筝"), ('label="refused"', 'label="风筝"'),
                         ("the prompt was refused", "提示词未通过审核"),
                         ("A slow pan over a valley", "山谷上空的慢镜头"), ('label="running"', 'label="山谷"'),
                         ("A paper boat in the rain", "雨中的纸船"), ('label="waiting"', 'label="纸船"')):
    EVERY_STATUS_ZH = EVERY_STATUS_ZH.replace(english, chinese)


def test_the_panel_in_simplified_chinese(lab, page, tmp_path) -> None:
    relpath = _notebook(lab, "zh_panel", EVERY_STATUS_ZH,
                        'veo_nb.panel(tracker, lang="zh_CN", start=False)')
    open_and_run_all(page, lab, relpath)
    wait_for_panel(page)
    _wait_cells_done(page, 2)
    wait_for(lambda: all(w in " ".join(rows_text(page))
                         for w in ("排队中", "生成中", "已完成", "失败", "未找到")),
             timeout=60, what="rows of every status, in Chinese")
    text = panel_text(page)
    for shown in ("个任务", "立即刷新", "继续", "投影模式", "提交提示词", "视频库", "第 1 页，共 1 页",
                  "自动刷新已暂停", "未查询（已暂停）"):
        assert shown in text, (shown, text[:800])
    assert "auto-refresh" not in text and "Refresh now" not in text, text[:800]
    wait_for(lambda: video_states(page), timeout=60, what="the finished video in its row")
    failures = _audit(page, "zh_CN: tasks")
    click_tab(page, "历史")
    wait_for(lambda: "各模型汇总" in panel_text(page), timeout=30, what="the History tab in Chinese")
    failures += _audit(page, "zh_CN: history")
    click_tab(page, "任务")
    assert failures == [], failures
    shot = tmp_path / "panel_zh.png"
    live_panel(page).screenshot(path=str(shot))
    print(f"the panel in Chinese: {shot}")
