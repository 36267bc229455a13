"""The live panel: :func:`panel` and :class:`VeoPanel`.

``veo_nb.panel(tracker)`` (or ``tracker.panel()``) shows every tracked task
and keeps itself up to date while the notebook stays free for other cells.

How it stays cheap: the tracker's ``on_change`` callbacks (from its poller
threads) only wake one shared UI thread, ``veo_nb-panel-ui``; each tick
compares the records of the rows on the visible page with the ones they last
showed (records are immutable and replaced on every change), updates the
changed rows and the running clocks, and assigns a widget trait only when its
value differs. Row widgets exist only for the visible page (cached per task
id), so 500 tasks cost the same as 20.

Only core ipywidgets are used (no custom JavaScript): JupyterLab 4,
Notebook 7, VS Code, Colab and Voilà all render it. Without a widget
frontend the panel shows a plain-text (and escaped HTML) table.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..errors import ValidationError
from .._log import logger
from ..records import TaskRecord
from .controls import ExportBar, SubmitForm, TrackForm
from .._tables import esc, fmt_seconds, html_table, text_table
from .format import status_counts_html
from .rows import RowView, VideoCache, close_tree, set_if_changed
from .views import GalleryView, HistoryView, Pager

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

#: Name of the one UI thread shared by every open panel of the process.
UI_THREAD_NAME = "veo_nb-panel-ui"
#: Rows of the text fallback (``repr``) and of the HTML fallback.
FALLBACK_ROWS = 50
#: Shortest pause between two ticks, however many changes arrive.
MIN_TICK_GAP_S = 0.1
_STATUS_FILTERS: tuple[tuple[str, str], ...] = (
    ("all statuses", ""), ("queued", "queued"), ("processing", "processing"),
    ("completed", "completed"), ("failed", "failed"), ("unknown", "unknown"),
)


class _Ticker:
    """The single UI thread of the process: ticks every open panel that asked
    for automatic refresh, and ends when none is left."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._panels: weakref.WeakSet[VeoPanel] = weakref.WeakSet()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, panel: VeoPanel) -> None:
        with self._lock:
            self._panels.add(panel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=UI_THREAD_NAME, daemon=True)
                self._thread.start()

    def remove(self, panel: VeoPanel) -> None:
        """Stop ticking ``panel``; when it was the last one, end the thread."""
        with self._lock:
            self._panels.discard(panel)
            thread = self._thread if not self._panels else None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                panels = list(self._panels)
                if not panels:
                    self._thread = None
                    return
            for panel in panels:
                try:
                    panel.update()
                except Exception:  # noqa: BLE001 - one broken panel must not stop the others
                    logger.exception("veo_nb panel: refresh failed")
            time.sleep(MIN_TICK_GAP_S)
            self._wake.wait(min(p.refresh_every or 1.0 for p in panels))
            self._wake.clear()


_ticker = _Ticker()
# The latest panel made by panel() for each tracker (id -> panel), so that
# re-running the cell replaces the previous panel instead of adding one.
_latest: weakref.WeakValueDictionary[int, VeoPanel] = weakref.WeakValueDictionary()


class VeoPanel(widgets.VBox):
    """A live dashboard of a :class:`~veo_nb.Tracker` (an ipywidgets ``VBox``).

    Shows a header (counts per status, auto-refresh state, next poll, demo
    mode), then tabs: **Tasks** (controls and one row per task, paginated),
    **Gallery** (finished videos) and **History** (summary and events).

    ``page_size``: task rows per page. ``gallery_page_size``: videos per
    gallery page. ``refresh_every``: seconds between two UI ticks (changes
    reported by the tracker are shown at once); ``None`` for no UI thread at
    all (call :meth:`update` yourself). ``start``: start the tracker's
    background poller if it is not running (a tracker has at most one).

    :meth:`close` stops this panel's updates and closes its widgets; the
    tracker keeps polling and keeps all data (``tracker.stop()`` stops polling).
    """

    def __init__(self, tracker: Tracker, *, page_size: int = 20, gallery_page_size: int = 6,
                 refresh_every: float | None = 1.0, start: bool = True) -> None:
        if page_size < 1 or gallery_page_size < 1:
            raise ValidationError("page_size and gallery_page_size must be at least 1")
        if refresh_every is not None and not refresh_every > 0:
            raise ValidationError(f"refresh_every must be positive seconds or None, got {refresh_every!r}")
        self.tracker = tracker
        self.page_size = page_size
        self.refresh_every = refresh_every
        self._lock = threading.RLock()
        self._closed = False
        self._records: list[TaskRecord] = []
        self._visible: list[TaskRecord] = []
        self._rows: OrderedDict[str, RowView] = OrderedDict()
        self._shown: tuple[str, ...] = ()
        self._videos = VideoCache(capacity=3 * page_size + gallery_page_size)

        self.header = widgets.HTML()
        self.polling = widgets.Label(style={"text_color": "#555"})
        self.message = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh now", icon="refresh")
        self.pause_button = widgets.Button(icon="pause")
        self.status_filter = widgets.Dropdown(options=_STATUS_FILTERS, value="",
                                              layout=widgets.Layout(width="150px"))
        self.search = widgets.Text(placeholder="search id, label, prompt, model, error",
                                   layout=widgets.Layout(width="300px"))
        self.submit_form = SubmitForm(tracker, self.report, self.show_task)
        self.track_form = TrackForm(tracker, self.report, self.show_task)
        self.export_bar = ExportBar(tracker, self.report)
        forms = widgets.Accordion(
            [self.submit_form.widget, self.track_form.widget, self.export_bar.widget],
            titles=("Submit a prompt", "Track task ids", "Export"), selected_index=None)
        self.rows_box = widgets.VBox()
        self.pager = Pager(self.update)
        self.gallery = GalleryView(self._videos, gallery_page_size)
        self.history = HistoryView(tracker)
        tasks_tab = widgets.VBox([
            widgets.HBox([self.refresh_button, self.pause_button, self.status_filter, self.search],
                         layout=widgets.Layout(flex_flow="row wrap")),
            forms, self.message, self.rows_box, self.pager.widget,
        ])
        self.tabs = widgets.Tab([tasks_tab, self.gallery.widget, self.history.widget],
                                titles=("Tasks", "Gallery", "History"))
        super().__init__([self.header, self.polling, self.tabs])

        self.refresh_button.on_click(lambda _: self.refresh_now())
        self.pause_button.on_click(lambda _: self.toggle_polling())
        self.status_filter.observe(lambda _: self._filter_changed(), names="value")
        self.search.observe(lambda _: self._filter_changed(), names="value")
        self.tabs.observe(lambda _: self._tab_changed(), names="selected_index")

        if start and not tracker.running:
            tracker.start()
        self._unsubscribe = tracker.on_change(lambda _task: _ticker.wake())
        self.update()
        if refresh_every is not None:
            _ticker.add(self)

    # ------------------------------------------------------------------ commands

    def report(self, text: str, ok: bool = True) -> None:
        """Show a one-line message under the controls (escaped)."""
        colour = "#1b5e20" if ok else "#b71c1c"
        set_if_changed(self.message, "value", f'<span style="color:{colour}">{esc(text)}</span>')

    def refresh_now(self) -> None:
        """Poll every due task now (``tracker.refresh()``) and redraw."""
        try:
            changed = self.tracker.refresh()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self.report(f"refresh failed: {exc}", False)
        else:
            self.report(f"refreshed: {len(changed)} task(s) changed", True)
        self.update()

    def toggle_polling(self) -> None:
        """Pause (``tracker.stop()``) or resume (``tracker.start()``) polling."""
        if self.tracker.running:
            self.tracker.stop()
            self.report("polling paused: tasks keep running on the service", True)
        else:
            self.tracker.start()
            self.report("polling resumed", True)
        self.update()

    def show_task(self, task_id: str) -> None:
        """Go to the page that shows ``task_id`` (when the filter shows it)."""
        with self._lock:
            self._records = self.tracker.records()
            ids = [r.task_id for r in self._filtered()]
            if task_id in ids:
                self.pager.page = ids.index(task_id) // self.page_size
        self.update()

    def close(self) -> None:
        """Stop updating, unsubscribe from the tracker and close the panel's
        widgets. The tracker keeps polling and keeps every record; make a new
        panel to see it again."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._unsubscribe()
        _ticker.remove(self)
        if _latest.get(id(self.tracker)) is self:
            del _latest[id(self.tracker)]
        with self._lock:
            for row in self._rows.values():
                row.close()
            self._rows.clear()
            self.gallery.close()
            self._videos.close()
            for child in self.children:
                close_tree(child)
            self.layout.close()
            super().close()

    # ------------------------------------------------------------------ drawing

    def update(self) -> None:
        """Apply the tracker's current state: changed rows, clocks, header."""
        with self._lock:
            if self._closed:
                return
            now = time.time()
            self._records = self.tracker.records()
            shown = self._filtered()
            note = f" · {len(shown)} of {len(self._records)} tasks"
            page = shown[self.pager.fit(len(shown), self.page_size, note)]
            self._show_rows(page, now)
            self._update_header(now)
            set_if_changed(self.pause_button, "description",
                           "Pause" if self.tracker.running else "Resume")
            set_if_changed(self.pause_button, "icon", "pause" if self.tracker.running else "play")
            if self.tabs.selected_index == 1:
                self.gallery.update(self._records, now)
            self._videos.trim(set(self._shown) | self.gallery.shown_ids())

    def _filtered(self) -> list[TaskRecord]:
        status = self.status_filter.value
        needle = self.search.value.strip().lower()
        if not status and not needle:
            return self._records
        return [
            r for r in self._records
            if (not status or r.status.value == status)
            and (not needle or any(needle in (v or "").lower() for v in (
                r.task_id, r.label, r.prompt, r.model, r.error)))
        ]

    def _show_rows(self, page: list[TaskRecord], now: float) -> None:
        ids = tuple(r.task_id for r in page)
        newly = set(ids) - set(self._shown)
        for record in page:
            row = self._rows.get(record.task_id)
            if row is None:
                row = self._rows[record.task_id] = RowView(record.task_id)
            self._rows.move_to_end(record.task_id)
            row.update(record, now, self.tracker.expected_window(record.task_id), self._videos,
                       newly_shown=record.task_id in newly)
        if ids != self._shown:
            self.rows_box.children = tuple(self._rows[i].widget for i in ids)
            self._shown = ids
            # keep the rows of about three pages (least recently shown go first)
            extra = len(self._rows) - 3 * self.page_size
            for task_id in [i for i in self._rows if i not in ids][: max(0, extra)]:
                self._rows.pop(task_id).close()

    def _update_header(self, now: float) -> None:
        # Two widgets: the counts change with statuses, the poll countdown every tick.
        counts = Counter(r.status_text for r in self._records)
        demo = (' · <span style="background:#fff3cd;padding:1px 6px;border-radius:4px">'
                "demo mode: embedded emulator, nothing is billed</span>"
                if getattr(self.tracker.client, "demo", False) else "")
        set_if_changed(self.header, "value", (
            f"<b>veo_nb</b> · {len(self._records)} tasks: "
            f"{status_counts_html(dict(sorted(counts.items())))}{demo}"
        ))
        if self.tracker.running:
            due = self.tracker.next_poll_at()
            polling = ("auto-refresh on · nothing to poll" if due is None else
                       f"auto-refresh on · next poll in {fmt_seconds(due.timestamp() - now)}")
        else:
            polling = "auto-refresh paused (polling stopped)"
        set_if_changed(self.polling, "value", polling)

    def _filter_changed(self) -> None:
        self.pager.page = 0
        self.update()

    def _tab_changed(self) -> None:
        if self.tabs.selected_index == 2:
            self.history.refresh()
        self.update()

    # ------------------------------------------------------------------ fallbacks

    def _fallback_title(self) -> str:
        return f"veo_nb panel: {len(self._records)} tasks (as of {time.strftime('%H:%M:%S')})"

    def __repr__(self) -> str:
        with self._lock:
            return text_table(self._fallback_title(), self._records, time.time(), FALLBACK_ROWS)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return None
        with self._lock:
            now = time.time()
            data["text/plain"] = text_table(self._fallback_title(), self._records, now, FALLBACK_ROWS)
            data["text/html"] = html_table(self._fallback_title(), self._records, now, FALLBACK_ROWS)
        return data


def panel(tracker: Tracker | None = None, *, replace: bool = True, **options: Any) -> VeoPanel:
    """A live :class:`VeoPanel` over ``tracker`` (default: a new
    :class:`~veo_nb.Tracker` on :func:`veo_nb.connect`).

    Starts the tracker's poller if needed (one per tracker and store, however
    many panels). With ``replace`` (the default), the panel this function
    made before for the same tracker is closed, so re-running the cell never
    piles up panels; pass ``replace=False`` to keep several live panels of
    one tracker. Every open panel shares one UI thread. ``options``: see
    :class:`VeoPanel` (``page_size``, ``gallery_page_size``,
    ``refresh_every``, ``start``).
    """
    if tracker is None:
        from ..tracker import Tracker

        tracker = Tracker()
    previous = _latest.get(id(tracker))
    if replace and previous is not None and previous.tracker is tracker:
        previous.close()
    made = VeoPanel(tracker, **options)
    _latest[id(tracker)] = made
    return made


__all__ = ["panel", "VeoPanel"]
