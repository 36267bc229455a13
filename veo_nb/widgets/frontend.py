"""Which notebook frontend shows the panel, and what the panel may use there.

The panel uses core ipywidgets only, but frontends differ in what they
render (documented upstream):

* **Colab**'s widget manager drops binary buffers, so a ``Video`` widget
  (whose value is always sent as a buffer, even a URL) never plays, and its
  ``Tab`` and ``Accordion`` misbehave (googlecolab/colabtools#3105, #3571,
  #4525; googlecolab/colab-cdn-widget-manager#30, #33). In Colab the panel
  plays videos in an ``HTML`` widget's ``<video>`` (a link, or a saved file
  as a ``data:`` URL, loaded on click), with a smaller cap on loaded bytes.
* **VS Code** cannot load local file paths in outputs
  (microsoft/vscode-jupyter#7422), so the panel never points the page at a
  file (it never does anywhere), and it plays no AAC audio (microsoft/vscode#158972):
  VEO clips play without sound there, and the panel says so.
* **Jupyter** (JupyterLab, Notebook 7, Voilà): everything works.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .._i18n import N_
from ..errors import ValidationError

MB = 1024 * 1024

#: Environment variables that VS Code sets in the processes it starts,
#: kernels included. ``VSCODE_PID`` is the one plotly (plotly/io/_renderers.py)
#: and tqdm check, confirmed by a VS Code maintainer in
#: microsoft/vscode-python#5875 ("VSCODE_PID would only be valid if the
#: jupyter notebook was started from within VS Code"); it is missing when the
#: kernel runs under WSL or in a container, where ``VSCODE_CWD`` and
#: ``VSCODE_IPC_HOOK_CLI`` are still set (holoviz/panel#5200). A JupyterLab
#: started from VS Code's terminal inherits them too: VS Code mode only
#: adds a note about sound there, and ``frontend="jupyter"`` overrides it.
VSCODE_ENV = ("VSCODE_PID", "VSCODE_CWD", "VSCODE_IPC_HOOK_CLI")


@dataclass(frozen=True)
class Frontend:
    """What the panel may use in one frontend."""

    name: str
    #: Widget messages may carry binary buffers (``Video`` widgets work).
    buffers: bool
    #: Default cap on the bytes of videos loaded for play at once.
    max_loaded_bytes: int
    #: Said next to a playing video, translated where shown ("" when nothing needs saying).
    playback_note: str = ""


FRONTENDS: dict[str, Frontend] = {
    "jupyter": Frontend("jupyter", buffers=True, max_loaded_bytes=256 * MB),
    # data: URLs are base64 (4/3 of the file) inside the widget's state.
    "colab": Frontend("colab", buffers=False, max_loaded_bytes=64 * MB),
    "vscode": Frontend("vscode", buffers=True, max_loaded_bytes=256 * MB,
                       playback_note=N_("no sound in VS Code (it plays no AAC audio)")),
}


def detect_frontend() -> str:
    """``"colab"`` inside Google Colab, ``"vscode"`` in a kernel started by
    VS Code, else ``"jupyter"``."""
    if "google.colab" in sys.modules:
        return "colab"
    if any(name in os.environ for name in VSCODE_ENV):
        return "vscode"
    return "jupyter"


def frontend(name: str | None = None) -> Frontend:
    """The :class:`Frontend` called ``name``, or the detected one for None."""
    chosen = detect_frontend() if name is None else name
    if chosen not in FRONTENDS:
        raise ValidationError(f"frontend must be one of {', '.join(FRONTENDS)} or None, got {name!r}")
    return FRONTENDS[chosen]
