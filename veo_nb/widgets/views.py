"""The Gallery and History tabs of the panel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..models import TaskStatus
from ..records import TaskRecord
from .._tables import esc, short
from .format import PROMPT_CHARS, playable_url
from .rows import VideoCache, close_tree, set_if_changed

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

#: Events shown in the History tab (the newest ones); tracker.history() has all.
HISTORY_ROWS = 200


class Pager:
    """Prev / Next buttons and a "page i of n" label."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.page = 0
        self.pages = 1
        self.prev = widgets.Button(description="Prev", icon="chevron-left",
                                   layout=widgets.Layout(width="90px"))
        self.next = widgets.Button(description="Next", icon="chevron-right",
                                   layout=widgets.Layout(width="90px"))
        self.label = widgets.Label()
        self.prev.on_click(lambda _: self.go(self.page - 1))
        self.next.on_click(lambda _: self.go(self.page + 1))
        self._on_change = on_change
        self.widget = widgets.HBox([self.prev, self.label, self.next],
                                   layout=widgets.Layout(align_items="center"))

    def go(self, page: int) -> None:
        """Show ``page`` (clamped) and redraw."""
        self.page = max(0, min(page, self.pages - 1))
        self._on_change()

    def fit(self, items: int, per_page: int, note: str = "") -> slice:
        """Clamp the page to ``items``; update the label and buttons; return
        the slice of items on the page."""
        self.pages = max(1, -(-items // per_page))
        self.page = min(self.page, self.pages - 1)
        set_if_changed(self.label, "value", f"page {self.page + 1} of {self.pages}{note}")
        set_if_changed(self.prev, "disabled", self.page == 0)
        set_if_changed(self.next, "disabled", self.page >= self.pages - 1)
        return slice(self.page * per_page, (self.page + 1) * per_page)


class GalleryView:
    """Finished videos with their prompts, a page at a time (videos are the
    panel's cached widgets, so a video is sent to the browser once)."""

    def __init__(self, videos: VideoCache, per_page: int) -> None:
        self._videos = videos
        self._per_page = per_page
        self._cells: dict[str, widgets.VBox] = {}
        self._ids: tuple[str, ...] = ()
        self.pager = Pager(lambda: self._redraw())
        self.grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, minmax(330px, 1fr))", grid_gap="8px"))
        self.empty = widgets.HTML("<i>No finished videos yet.</i>")
        self.widget = widgets.VBox([self.empty, self.grid, self.pager.widget])
        self._records: list[TaskRecord] = []
        self._now = 0.0

    def shown_ids(self) -> set[str]:
        """Ids whose videos are on the current gallery page."""
        return set(self._ids)

    def update(self, records: Sequence[TaskRecord], now: float) -> None:
        """Show the completed tasks of ``records`` that have a video to play."""
        self._records = [
            r for r in records if r.status is TaskStatus.COMPLETED
            and ((r.download_state == "saved" and r.video_path) or playable_url(r, now))
        ]
        self._now = now
        self._redraw()

    def _redraw(self) -> None:
        page = self._records[self.pager.fit(len(self._records), self._per_page)]
        cells = []
        for record in page:
            video = self._videos.get(record, self._now, upgrade=record.task_id not in self._ids)
            if video is None:
                continue
            cell = self._cells.get(record.task_id)
            caption = (f'<div title="{esc(record.prompt)}" style="font-size:90%">'
                       f"{esc(short(record.label or record.prompt or record.task_id, PROMPT_CHARS))}"
                       "</div>")
            if cell is None:
                cell = self._cells[record.task_id] = widgets.VBox([video, widgets.HTML(caption)])
            else:
                if cell.children[0] is not video:
                    cell.children = (video, cell.children[1])
                set_if_changed(cell.children[1], "value", caption)
            cells.append(cell)
        ids = tuple(r.task_id for r in page)
        if ids != self._ids:
            for task_id in set(self._cells) - set(ids):
                old = self._cells.pop(task_id)
                close_tree(old, keep=old.children[:1])
            self._ids = ids
        set_if_changed(self.grid, "children", tuple(cells))
        empty_layout = "none" if self._records else ""
        set_if_changed(self.empty.layout, "display", empty_layout)

    def close(self) -> None:
        """Close the gallery's own widgets (videos belong to the cache)."""
        for cell in self._cells.values():
            close_tree(cell, keep=cell.children[:1])
        close_tree(self.widget, keep=self.grid.children)


class HistoryView:
    """``tracker.summary()`` and the newest events of ``tracker.history()``,
    refreshed on demand (the Refresh button, or opening the tab)."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self.button = widgets.Button(description="Refresh history", icon="refresh")
        self.summary = widgets.HTML()
        self.events = widgets.HTML()
        self.button.on_click(lambda _: self.refresh())
        self.widget = widgets.VBox([self.button, self.summary, self.events])

    def refresh(self) -> None:
        """Read the summary and the history again (pandas escapes their text)."""
        summary = self._tracker.summary()
        history = self._tracker.history()
        newest = history.tail(HISTORY_ROWS).iloc[::-1]
        set_if_changed(self.summary, "value",
                       "<h4>Summary per model</h4>" + summary.to_html(index=False, escape=True))
        set_if_changed(self.events, "value", (
            f"<h4>History: the newest {len(newest)} of {len(history)} events</h4>"
            + newest.to_html(index=False, escape=True, na_rep="")))
