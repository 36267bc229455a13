"""Chromium through Playwright, as seen to work on these machines, and what
the tests measure in it: pages that record their console and dialogs and the
kernels they talked to, and the bytes the kernel sends over its websocket.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

#: Where Debian's Chromium lives; VEO_NB_CHROMIUM overrides.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Chromium flags that were seen to work on these machines (root, no GPU,
#: no network beyond localhost needed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
]

_KERNEL_SOCKET = re.compile(r"/api/kernels/([0-9a-f-]{36})/channels")


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when there is none."""
    wanted = os.environ.get("VEO_NB_CHROMIUM") or DEFAULT_CHROMIUM
    if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
        return wanted
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright: Any, executable: str) -> Any:
    """A headless Chromium with the flags above."""
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                      headless=True)


def new_page(browser: Any, *, width: int = 1400, height: int = 1000,
             device_scale_factor: float = 1.0, timeout_ms: int = 60_000) -> Any:
    """A page in a fresh context. ``page.console_messages`` and
    ``page.dialogs`` collect what the page said (dialogs are dismissed);
    ``page.kernel_ids`` the ids of the kernels it opened a websocket to.
    Close it with ``page.context.close()``.

    A zoom of Z % on a W×H screen is ``width=W*100/Z, height=H*100/Z,
    device_scale_factor=Z/100`` (what the browser's zoom does)."""
    context = browser.new_context(viewport={"width": width, "height": height},
                                  device_scale_factor=device_scale_factor)
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    page.console_messages = []
    page.dialogs = []
    page.kernel_ids = []
    page.on("console", lambda m: page.console_messages.append(f"{m.type}: {m.text}"))

    def on_dialog(d: Any) -> None:
        page.dialogs.append(d.message)
        d.dismiss()

    def on_socket(ws: Any) -> None:
        match = _KERNEL_SOCKET.search(ws.url)
        if match and match.group(1) not in page.kernel_ids:
            page.kernel_ids.append(match.group(1))

    page.on("dialog", on_dialog)
    page.on("websocket", on_socket)
    return page


@dataclass
class KernelTraffic:
    """Bytes of the frames the page receives on kernel websockets (what the
    kernel sends to the browser: outputs, widget messages and their buffers),
    and the button clicks the page sends the kernel (widget ``click``
    events). Attach before the page connects to the kernel."""

    frames: int = 0
    nbytes: int = 0
    clicks: int = 0
    _sockets: list[Any] = field(default_factory=list, repr=False)

    def attach(self, page: Any) -> KernelTraffic:
        page.on("websocket", self._on_socket)
        return self

    def _on_socket(self, ws: Any) -> None:
        if _KERNEL_SOCKET.search(ws.url):
            self._sockets.append(ws)
            ws.on("framereceived", self._on_frame)
            ws.on("framesent", self._on_sent)

    def _on_frame(self, payload: Any) -> None:
        self.frames += 1
        self.nbytes += len(payload.encode() if isinstance(payload, str) else payload)

    def _on_sent(self, payload: Any) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        if b'"comm_msg"' in data:
            self.clicks += len(re.findall(rb'"event":\s*"click"', data))
