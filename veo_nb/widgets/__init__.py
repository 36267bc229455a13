"""The live panel: ``veo_nb.panel(tracker)`` and :class:`VeoPanel`.

``veo_nb.panel(tracker)`` (or ``tracker.panel()``) shows every tracked task
and keeps itself up to date while the notebook stays free for other cells.
The parts: :mod:`.live` (the panel and its UI thread), :mod:`.rows` (a
task's row), :mod:`.media` (video cards and players), :mod:`.views`
(pager, tabs, gallery, history), :mod:`.controls` (forms and button
guards), :mod:`.format` (pure formatting, also for notebooks),
:mod:`.frontend` (what Jupyter, Colab and VS Code allow), :mod:`.traffic`
(measuring what widgets send).

Only core ipywidgets are used (no custom JavaScript): JupyterLab 4,
Notebook 7, VS Code, Colab and Voilà all render it. Without a widget
frontend the panel shows a plain-text (and escaped HTML) table.
"""

from .live import VeoPanel, panel
from .ticker import UI_THREAD_NAME

__all__ = ["panel", "VeoPanel", "UI_THREAD_NAME"]
