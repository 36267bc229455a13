"""Page actions on the veo_nb panel in a real browser, for every frontend
that renders ipywidgets (JupyterLab, Notebook 7, Voilà): find the live
panel, read a row, click ▶ Play, read the state of the panel's videos.
(Opening and running notebooks: :mod:`notebook_page`; counting what the
kernel sends: :class:`chromium.KernelTraffic`.)

The panel marks its parts with CSS classes (``veo-panel``, ``veo-row``,
``veo-row-info``, ``veo-owner``, ``veo-bar``, ``veo-media``, ``veo-play``,
``veo-player``, ``veo-message``, ``veo-pause``, ``veo-submit``,
``veo-gallery``...), so selectors here never depend on the layout. A panel
that was replaced is no longer a widget (its output is one line of text),
so the live panel is the last ``.veo-panel`` of the page.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from chromium import KernelTraffic
from notebook_page import open_and_run_all, write_notebook
from servers import Server, wait_for

__all__ = ["BIG", "BIG_VIDEO_SETUP", "JS_COUNTS", "JS_PANEL", "JS_ROWS_BY_OWNER",
           "check_big_demo_video", "KernelTraffic", "NEEDLE", "class_counts", "click_play",
           "panel_text", "row_text", "rows_text", "video_states", "wait_for_panel",
           "wait_playable"]

#: The live panel (JS expression).
JS_PANEL = "(() => { const all = document.querySelectorAll('.veo-panel'); " \
           "return all.length ? all[all.length - 1] : null; })()"


# JS: the students of the live panel's rows (their `.veo-owner`, "by NAME")
# with the status word of each of their rows.
JS_ROWS_BY_OWNER = """() => {
    const p = %s;
    const out = {};
    if (!p) return out;
    for (const row of p.querySelectorAll('.veo-row')) {
        const owner = row.querySelector('.veo-owner');
        const name = owner ? owner.innerText.replace(/^by /, '') : '';
        const text = row.innerText.toLowerCase();
        const status = ['completed', 'failed', 'processing', 'queued'].find(s => text.includes(s));
        (out[name] = out[name] || []).push(status || '');
    }
    return out;
}""" % JS_PANEL

# JS: the counts per student: the table in `.veo-class-counts` if the
# notebook marks it, else the table outside the panel whose header has the
# columns "owner" and "total" -> {owner: {column: number}}.
JS_COUNTS = """() => {
    const marked = document.querySelector('.veo-class-counts table');
    const tables = marked ? [marked] : [...document.querySelectorAll('table')].filter(t =>
        !t.closest('.veo-panel'));
    for (const t of tables) {
        const head = [...t.querySelectorAll('thead th')].map(th => th.innerText.trim());
        if (!head.includes('owner') || !head.includes('total')) continue;
        const out = {};
        for (const tr of t.querySelectorAll('tbody tr')) {
            const cells = [...tr.querySelectorAll('td')].map(td => td.innerText.trim());
            const row = {};
            head.forEach((h, i) => { if (h !== 'owner') row[h] = Number(cells[i]); });
            out[cells[head.indexOf('owner')]] = row;
        }
        return out;
    }
    return null;
}"""


def class_counts(page: Any, column: str | None = None) -> dict[str, dict[str, float]] | None:
    """The class dashboard's counts per student, once they agree with the
    panel's rows: the same students, each with as many tasks (``column``: and
    as many rows with that status); None until then."""
    rows, counts = page.evaluate(JS_ROWS_BY_OWNER), page.evaluate(JS_COUNTS)
    if not counts or sorted(counts) != sorted(rows):
        return None
    for name, statuses in rows.items():
        if counts[name].get("total") != len(statuses):
            return None
        if column and counts[name].get(column, 0) != statuses.count(column):
            return None
    return dict(counts)


#: A demo notebook's first cell with one 15 MB video (Notebook 7 and Voilà
#: tests, see :func:`check_big_demo_video`); NEEDLE finds its row. The task
#: takes 1.3 s: under Voilà it often finishes while the page connects.
BIG = 15_000_000
NEEDLE = "harbour at dusk"
BIG_VIDEO_SETUP = f"""
import os
os.environ["VEO_DEMO_VIDEO_SIZE"] = "{BIG}"   # read by connect() in demo mode
import veo_nb
client = veo_nb.connect(time_scale=0.01)   # no VEO_API_KEY: demo mode
assert client.demo
tracker = veo_nb.Tracker(client)
tracker.submit("A harbour at dusk, fifteen megabytes [duration: 130]")
"""


def panel_text(page: Any) -> str:
    """The live panel's text ("" while there is none)."""
    return page.evaluate(f"() => {{ const p = {JS_PANEL}; return p ? p.innerText : ''; }}")


def wait_for_panel(page: Any, *, timeout: float = 180) -> str:
    """Wait until a panel is on the page; return its text."""
    return wait_for(lambda: panel_text(page), timeout=timeout, what="the panel to render")


def row_text(page: Any, needle: str) -> str:
    """The text of the live panel's row that contains ``needle`` ("" if none)."""
    return page.evaluate(
        f"""(needle) => {{
            const p = {JS_PANEL};
            if (!p) return '';
            const row = [...p.querySelectorAll('.veo-row')].find(r => r.innerText.includes(needle));
            return row ? row.innerText : '';
        }}""", needle)


def rows_text(page: Any) -> list[str]:
    """The text of each row of the live panel, top to bottom."""
    return page.evaluate(
        f"""() => {{
            const p = {JS_PANEL};
            return p ? [...p.querySelectorAll('.veo-row')].map(r => r.innerText) : [];
        }}""")


def click_play(page: Any, needle: str = "") -> bool:
    """Click ▶ Play in the row of the live panel that contains ``needle``
    (any row when empty); False when no enabled Play button is there."""
    return page.evaluate(
        f"""(needle) => {{
            const p = {JS_PANEL};
            if (!p) return false;
            const rows = [...p.querySelectorAll('.veo-row')].filter(r => r.innerText.includes(needle));
            for (const row of rows) {{
                const button = row.querySelector('.veo-play');
                if (button && !button.disabled) {{ button.click(); return true; }}
            }}
            return false;
        }}""", needle)


def video_states(page: Any, *, loaded_only: bool = True) -> list[dict[str, Any]]:
    """``readyState``, ``duration`` and the start of the source of each
    ``<video>`` in the live panel (only those with metadata, by default)."""
    return page.evaluate(
        f"""(loadedOnly) => {{
            const p = {JS_PANEL};
            if (!p) return [];
            return [...p.querySelectorAll('video')]
                .filter(v => !loadedOnly || v.readyState >= 1)
                .map(v => ({{readyState: v.readyState, duration: v.duration,
                            src: (v.currentSrc || v.src || '').slice(0, 40)}}));
        }}""", loaded_only)


def wait_playable(page: Any, needle: str = "", *, timeout: float = 120) -> list[dict[str, Any]]:
    """Wait until the live panel has a video with metadata, clicking ▶ Play in
    the row with ``needle`` when a click is needed; return the videos' states."""
    def playable() -> list[dict[str, Any]]:
        states = video_states(page)
        if not states:
            click_play(page, needle)
        return states

    return wait_for(playable, timeout=timeout, interval=0.5,
                    what="a finished task's <video> to load (readyState >= 1)")


def play_button_state(page: Any, needle: str) -> dict[str, Any] | None:
    """``{enabled}`` of ▶ Play in the live panel's row with ``needle``, or
    None when that row has no Play button (yet)."""
    return page.evaluate(
        f"""(needle) => {{
            const p = {JS_PANEL};
            if (!p) return null;
            const row = [...p.querySelectorAll('.veo-row')].find(r => r.innerText.includes(needle));
            const button = row && row.querySelector('.veo-play');
            return button ? {{enabled: !button.disabled}} : null;
        }}""", needle)


def check_big_video_waits_for_play(page: Any, traffic: KernelTraffic, needle: str, size: int,
                                   *, timeout: float = 180) -> tuple[int, int]:
    """The finished task in the row with ``needle`` has a video of ``size``
    bytes: assert that its card shows with ▶ Play enabled and no
    ``<video>`` anywhere in the panel, that the kernel sent the page well
    under 1 MB so far (a few refresh ticks included), and that after a click
    on ▶ Play the video loads (readyState >= 1, about 8 s long) and at
    least ``size`` bytes (at most 5 % more) came through the kernel's
    websocket, the video playing from those bytes (a ``blob:`` URL).
    Returns the bytes before and after the click."""
    mb = size / (1024 * 1024)
    card = wait_for(lambda: (t := row_text(page, needle)) and f"{mb:.1f} MB" in t and t,
                    timeout=timeout, what=f"the card of a {mb:.1f} MB video in the row {needle!r}")
    assert "completed" in card and "8 s" in card, card
    assert play_button_state(page, needle) == {"enabled": True}, card
    page.wait_for_timeout(2000)  # a few refresh ticks of the panel
    before = traffic.nbytes
    assert traffic.frames > 0, "no kernel websocket frame seen: the counter is not attached"
    assert before < 1024 * 1024, f"{before} bytes from the kernel before any play"
    assert video_states(page, loaded_only=False) == [], "a <video> before ▶ Play was clicked"

    assert click_play(page, needle), "no enabled ▶ Play to click"
    videos = wait_for(lambda: video_states(page), timeout=120, interval=0.5,
                      what="the played video to load (readyState >= 1)")
    assert all(v["readyState"] >= 1 and abs(v["duration"] - 8.0) < 0.5 for v in videos), videos
    # From the widget's bytes (a blob: URL), not from a file URL (Voilà serves no .mp4).
    assert all(v["src"].startswith("blob:") for v in videos), videos
    sent = traffic.nbytes - before
    assert size <= sent <= 1.05 * size + 200_000, (before, traffic.nbytes)
    return before, sent


def live_panel(page: Any) -> Any:
    """A Playwright locator of the live panel (the last ``.veo-panel``)."""
    return page.locator(".veo-panel").last


def click_tab(page: Any, title: str) -> None:
    """Click the panel's tab ``title`` ("Tasks", "Gallery", "History")."""
    live_panel(page).locator(".veo-switch button", has_text=title).first.click()


def open_form(page: Any, title: str) -> None:
    """Open the panel's form ``title`` ("Submit a prompt", "Track task ids", ...;
    "hide" closes the one open)."""
    live_panel(page).locator(".veo-switch button", has_text=title).first.click()


def shown(page: Any, selector: str) -> bool:
    """True when an element of the live panel matching ``selector`` is
    displayed (it and every parent, up to the panel, laid out with a size)."""
    return page.evaluate(
        f"""(sel) => {{
            const p = {JS_PANEL};
            const el = p && p.querySelector(sel);
            if (!el) return false;
            const r = el.getBoundingClientRect();
            return el.getClientRects().length > 0 && r.width > 0 && r.height > 0;
        }}""", selector)


def check_big_demo_video(server: Server, open_page: Callable[[Server], Any]) -> str:
    """Write a demo notebook of BIG_VIDEO_SETUP and a panel on ``server``,
    open and run it in a new page, and run
    :func:`check_big_video_waits_for_play` on its 15 MB video. Returns a
    line saying the bytes before and after the click, and the time taken."""
    started = time.monotonic()
    write_notebook(server.root_dir / "big" / "big.ipynb", BIG_VIDEO_SETUP,
                   "veo_nb.panel(tracker)")
    page = open_page(server)
    traffic = KernelTraffic().attach(page)
    open_and_run_all(page, server, "big/big.ipynb")
    text = wait_for_panel(page)
    assert "demo mode" in text, text[:500]
    before, sent = check_big_video_waits_for_play(page, traffic, NEEDLE, BIG)
    return (f"{server.kind}: {before} bytes from the kernel before the click, {sent} after; "
            f"{time.monotonic() - started:.0f} s")
