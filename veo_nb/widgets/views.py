"""Parts of the panel around the rows: the pager, tabs that work in every
frontend, the Gallery and the History tab."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .._i18n import _
from ..records import TaskRecord
from .format import Look, events_table, readable, table_html
from .media import MediaCache
from .tree import close_tree, set_if_changed

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

#: Events shown in the History tab (the newest ones); tracker.history() has all.
HISTORY_ROWS = 200
#: Seconds between two refreshes of the History tab while it is shown.
HISTORY_EVERY_S = 5.0


class Pager:
    """Prev / Next buttons and a "page i of n" label, as two bars (``top``
    and ``bottom``) that show the same page."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.page = 0
        self.pages = 1
        self._on_change = on_change
        self.bars = tuple(self._bar() for _ in range(2))
        self.top, self.bottom = (bar for bar, _, _, _ in self.bars)

    def _bar(self) -> tuple[widgets.HBox, widgets.Button, widgets.Label, widgets.Button]:
        prev = widgets.Button(description=_("Prev"), icon="chevron-left",
                              tooltip=_("previous page"),
                              layout=widgets.Layout(width="90px"), _dom_classes=("veo-prev",))
        nxt = widgets.Button(description=_("Next"), icon="chevron-right",
                             tooltip=_("next page"),
                             layout=widgets.Layout(width="90px"), _dom_classes=("veo-next",))
        label = widgets.Label()
        prev.on_click(lambda _: self.go(self.page - 1))
        nxt.on_click(lambda _: self.go(self.page + 1))
        box = widgets.HBox([prev, label, nxt], layout=widgets.Layout(align_items="center"),
                           _dom_classes=("veo-pager",))
        return box, prev, label, nxt

    @property
    def label(self) -> widgets.Label:
        """The label of the top bar."""
        return self.bars[0][2]

    @property
    def prev(self) -> widgets.Button:
        """The Prev button of the top bar."""
        return self.bars[0][1]

    @property
    def next(self) -> widgets.Button:
        """The Next button of the top bar."""
        return self.bars[0][3]

    def go(self, page: int) -> None:
        """Show ``page`` (clamped) and redraw."""
        self.page = max(0, min(page, self.pages - 1))
        self._on_change()

    def clamp(self, items: int, per_page: int) -> slice:
        """Clamp the page to ``items`` (no widget is touched); return the
        slice of items on the page."""
        self.pages = max(1, -(-items // per_page))
        self.page = min(self.page, self.pages - 1)
        return slice(self.page * per_page, (self.page + 1) * per_page)

    def fit(self, items: int, per_page: int, note: str = "") -> slice:
        """Clamp the page to ``items``; update the labels and buttons; return
        the slice of items on the page."""
        shown = self.clamp(items, per_page)
        for _box, prev, label, nxt in self.bars:
            set_if_changed(label, "value", _("page {page} of {pages}").format(
                page=self.page + 1, pages=self.pages) + note)
            set_if_changed(prev, "disabled", self.page == 0)
            set_if_changed(nxt, "disabled", self.page >= self.pages - 1)
        return shown


class Switcher:
    """Pages shown one at a time, chosen with ``ToggleButtons`` (with a "hide"
    button when ``optional``: then no page may be shown).

    Not ipywidgets' ``Tab`` or ``Accordion``: their headers cannot be reached
    with the Tab key (ipywidgets 8), and Colab renders them badly
    (googlecolab/colabtools#3105, #3571); toggle buttons are buttons, in the
    tab order, pressed with Enter or Space in every frontend."""

    HIDE = -1

    def __init__(self, pages: Sequence[widgets.Widget], titles: Sequence[str], *,
                 optional: bool = False) -> None:
        self.pages = tuple(pages)
        options = [(t, i) for i, t in enumerate(titles)]
        if optional:
            options.append((_("hide"), self.HIDE))
        self.buttons = widgets.ToggleButtons(options=options, value=self.HIDE if optional else 0,
                                             style={"button_width": "auto"},
                                             _dom_classes=("veo-switch",))
        self.container = widgets.VBox(list(pages))
        self.widget = widgets.VBox([self.buttons, self.container])
        self.buttons.observe(lambda _: self._show(), names="value")
        self._show()

    @property
    def selected_index(self) -> int | None:
        """The page shown (None: none)."""
        value: int = self.buttons.value
        return None if value == self.HIDE else value

    @selected_index.setter
    def selected_index(self, index: int | None) -> None:
        self.buttons.value = self.HIDE if index is None else index

    def observe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the page shown changes."""
        self.buttons.observe(lambda _: callback(), names="value")

    def _show(self) -> None:
        chosen = self.selected_index
        for i, page in enumerate(self.pages):
            set_if_changed(page.layout, "display", "" if i == chosen else "none")


class GalleryView:
    """Finished videos as cards, a page at a time. It fills itself on every
    refresh, shown or not: a card carries no video bytes (the cards are the
    rows' :class:`~veo_nb.widgets.media.MediaView`, so a played video plays
    in both places from one widget)."""

    def __init__(self, media: MediaCache, per_page: int, look: Look,
                 on_page: Callable[[], None]) -> None:
        self._media = media
        self.per_page = per_page
        self.look = look
        self._ids: tuple[str, ...] = ()
        self.pager = Pager(on_page)
        self.grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns=self._columns(), grid_gap="12px"))
        self.empty = widgets.HTML(f"<i>{_('No finished videos yet.')}</i>")
        self.widget = widgets.VBox([self.empty, self.pager.top, self.grid, self.pager.bottom],
                                   _dom_classes=("veo-gallery",))

    def _columns(self) -> str:
        return f"repeat(auto-fill, minmax({self.look.video_width + 10}px, 1fr))"

    def shown_ids(self) -> set[str]:
        """Ids whose cards are on the current gallery page."""
        return set(self._ids)

    def show(self, page: Sequence[TaskRecord], total: int, now: float) -> None:
        """Show ``page``, the completed tasks of the current page (its pager
        fitted to ``total`` completed tasks)."""
        self.pager.fit(total, self.per_page)
        views = [v for v in (self._media.view(r, now) for r in page) if v is not None]
        self._ids = tuple(v.task_id for v in views)
        set_if_changed(self.grid, "children", tuple(v.widget for v in views))
        set_if_changed(self.empty.layout, "display", "none" if total else "")

    def set_look(self, look: Look) -> None:
        """Resize the columns for ``look``."""
        self.look = look
        set_if_changed(self.grid.layout, "grid_template_columns", self._columns())

    def close(self) -> None:
        """Close the gallery's own widgets (the cards belong to the media cache)."""
        close_tree(self.widget, keep=self.grid.children)


class HistoryView:
    """``tracker.summary()`` and the newest events of ``tracker.history()`` as
    readable tables (:func:`~veo_nb.widgets.format.readable`), refreshed while
    the tab is shown (every :data:`HISTORY_EVERY_S`) and by its button."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._refreshed = -HISTORY_EVERY_S
        self.button = widgets.Button(description=_("Refresh history"), icon="refresh")
        self.summary = widgets.HTML()
        self.events = widgets.HTML(layout=widgets.Layout(overflow="auto"))
        self.button.on_click(lambda _: self.refresh())
        self.widget = widgets.VBox([self.button, self.summary, self.events],
                                   _dom_classes=("veo-history",))

    def due(self) -> bool:
        """True when the shown tables are older than :data:`HISTORY_EVERY_S`."""
        return time.monotonic() - self._refreshed >= HISTORY_EVERY_S

    def refresh(self) -> None:
        """Read the summary and the history again (raises what the store raises)."""
        store = self._tracker.store
        summary = self._tracker.summary()
        history = self._tracker.history(HISTORY_ROWS)
        tasks = [row.record for row in store.rows_of(sorted(set(history["task_id"])))]
        newest = events_table(history, tasks, HISTORY_ROWS)
        set_if_changed(self.summary, "value",
                       table_html(readable(summary), title=_("Summary per model")))
        set_if_changed(self.events, "value", table_html(
            newest, title=_("History: the newest {n} of {total} events").format(
                n=len(newest), total=store.event_count())))
        self._refreshed = time.monotonic()
