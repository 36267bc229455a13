"""Page actions on the veo_nb panel in a real browser, for any frontend that
renders ipywidgets (JupyterLab here; Notebook 7 and Voilà can reuse them):
open a notebook and run it, find the live panel, read a row, click ▶ Play,
read the state of the panel's videos, count what the kernel sends.

The panel marks its parts with CSS classes (``veo-panel``, ``veo-row``,
``veo-media``, ``veo-play``, ``veo-player``, ``veo-message``), so selectors
here never depend on the layout. A panel that was replaced is no longer a
widget (its output is one line of text), so the live panel is the last
``.veo-panel`` of the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jlab_helpers import run_all_via_menu, wait_for, wait_kernel_idle

#: The live panel (JS expression).
JS_PANEL = "(() => { const all = document.querySelectorAll('.veo-panel'); " \
           "return all.length ? all[all.length - 1] : null; })()"


def open_and_run_all(page: Any, url: str, *, ready: Callable[[Any], None] = wait_kernel_idle,
                     timeout: float = 120) -> None:
    """Open the notebook at ``url``, wait until ``ready(page)`` (JupyterLab's
    status bar says the kernel is idle, by default) and Run All from the menu."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    ready(page)
    run_all_via_menu(page)


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


@dataclass
class KernelTraffic:
    """Bytes of the frames the page receives on kernel websockets (what the
    kernel sends to the browser: outputs, widget messages and their buffers).
    Attach before the page connects to the kernel."""

    frames: int = 0
    nbytes: int = 0
    _sockets: list[Any] = field(default_factory=list, repr=False)

    def attach(self, page: Any) -> KernelTraffic:
        page.on("websocket", self._on_socket)
        return self

    def _on_socket(self, ws: Any) -> None:
        if "/api/kernels/" in ws.url:
            self._sockets.append(ws)
            ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: Any) -> None:
        self.frames += 1
        self.nbytes += len(payload.encode() if isinstance(payload, str) else payload)
