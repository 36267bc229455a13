"""The browser-test machinery on its own, without veo_nb: JupyterLab starts,
a notebook runs from the Run menu, a widget updated from a background thread
reaches the page, and an ipywidgets Video plays. When this test fails the
problem is the environment (browser, JupyterLab, widgets), not veo_nb."""

from __future__ import annotations

from pathlib import Path

import nbformat

from notebook_page import open_notebook, run_all_via_menu
from servers import wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "veo_nb" / "emulator" / "media" / "sample_16x9.mp4"

CODE = f'''
import threading, time
import ipywidgets as w
from IPython.display import display
label = w.Label("tick 0")
label.add_class("smoke-label")
video = w.Video.from_file({str(SAMPLE)!r}, autoplay=True, loop=True, muted=True)
display(w.VBox([label, video]))
def ticker():
    for i in range(1, 200):
        time.sleep(0.5)
        label.value = f"tick {{i}}"
threading.Thread(target=ticker, daemon=True).start()
'''


def test_widgets_render_update_and_play(lab, page) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, lab.root_dir / "smoke.ipynb")

    open_notebook(page, lab, "smoke.ipynb")
    run_all_via_menu(page)

    label = page.locator(".smoke-label")
    label.wait_for(timeout=90_000)
    first = wait_for(lambda: label.inner_text() if "tick" in label.inner_text() else "",
                     timeout=60, what="the label")
    wait_for(lambda: label.inner_text() != first, timeout=60,
             what="a background-thread update to reach the page")

    page.wait_for_selector("video", timeout=60_000)
    state = wait_for(
        lambda: page.evaluate(
            "() => { const v = document.querySelector('video');"
            " return v && v.readyState >= 1 ? {rs: v.readyState, d: v.duration} : null; }"
        ),
        timeout=60, what="the video's metadata",
    )
    assert abs(state["d"] - 8.0) < 0.5, state
