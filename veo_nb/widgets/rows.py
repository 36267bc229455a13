"""A task's row in the panel.

Rows are built once per task id and updated in place: a trait is assigned
only when its value changes (every assignment is a message to the
frontend). The row's video is its task's shared
:class:`~veo_nb.widgets.media.MediaView` (a card until played).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from .._i18n import _
from ..records import TaskRecord
from .format import Look, row_html, timing
from .media import MediaCache
from .tree import close_tree, set_if_changed


class RowView:
    """The widgets of one task's row: text (badge, label, model, resolution,
    aspect ratio, id, prompt, error, path), a progress bar against the
    estimate window with elapsed time / ETA / link countdown, the video card
    once there is one, and a ✕ button that removes the task from the view.
    The parts wrap onto several lines when the row is narrow (zoom, projector)."""

    def __init__(self, task_id: str, look: Look, on_remove: Callable[[str], None]) -> None:
        self.task_id = task_id
        self.record: TaskRecord | None = None
        self.look = look
        self.info = widgets.HTML(layout=widgets.Layout(flex="1 1 320px", min_width="240px"),
                                 _dom_classes=("veo-row-info",))
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="95%"),
                                         _dom_classes=("veo-bar",))
        self.clock = widgets.Label(style={"font_size": look.font_size})
        # Never a scroll box (a keyboard could not scroll it); min_width 0 lets
        # it shrink below its video's width all the same (a flex item that
        # does not clip would otherwise keep its content's width).
        self.media = widgets.Box(layout=widgets.Layout(flex="0 1 auto", overflow="visible",
                                                       min_width="0"))
        self.remove = widgets.Button(description="✕", tooltip=_("remove this task from the view"),
                                     layout=widgets.Layout(width="36px"),
                                     _dom_classes=("veo-remove",))
        self.remove.on_click(lambda _: on_remove(task_id))
        self.timing_box = widgets.VBox([self.bar, self.clock],
                                       layout=widgets.Layout(width=f"{look.timing_width}px"))
        self.widget = widgets.HBox(
            [self.info, self.timing_box, self.media, self.remove],
            layout=widgets.Layout(border_bottom="1px solid #bdbdbd", padding="6px 0",
                                  align_items="flex-start", flex_flow="row wrap",
                                  grid_gap="4px 12px"),
            _dom_classes=("veo-row",),
        )

    def update(self, record: TaskRecord, now: float, window: tuple[float, float],
               media: MediaCache, *, polling: bool) -> None:
        """Bring the row to ``record`` at time ``now``, touching only what changed."""
        if record is not self.record:
            set_if_changed(self.info, "value", row_html(record, self.look))
            self.record = record
        shown = timing(record, now, window, polling=polling)
        set_if_changed(self.bar, "value", shown.progress)
        set_if_changed(self.bar, "bar_style", shown.bar_style)
        set_if_changed(self.clock, "value", shown.text)
        view = media.view(record, now)
        wanted = () if view is None else (view.widget,)
        if self.media.children != wanted:
            self.media.children = wanted

    def set_look(self, look: Look) -> None:
        """Redraw for ``look`` (text size, timing column width)."""
        self.look = look
        self.record = None  # the next update redraws the text
        set_if_changed(self.timing_box.layout, "width", f"{look.timing_width}px")
        set_if_changed(self.clock.style, "font_size", look.font_size)

    def close(self) -> None:
        """Close the row's widgets (its video card belongs to the :class:`MediaCache`)."""
        close_tree(self.widget, keep=self.media.children)
