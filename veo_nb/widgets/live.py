"""The live panel (:class:`VeoPanel`, :func:`panel`) and its UI thread.

How it stays cheap: the tracker's ``on_change`` callbacks (from its poller
threads) only wake one shared UI thread, ``veo_nb-panel-ui``. The store
sorts, filters and pages: each tick reads the visible page (an indexed query
of ``page_size`` rows) and the header's counts (the store's running tallies,
a handful of rows) again only when the store's revision or the view moved;
an idle tick reads one number. Rows are updated in place, assigning a
widget trait only when its value differs, and exist only for the visible page
(cached per task id), so 200,000 tasks cost what 20 do. A finished video is a
card until the user plays it (see :mod:`veo_nb.widgets.media`).

One live panel per history: a new panel over a tracker with the same
``store_key`` (the same tracker, or a new one made by running the notebook
again) closes the older panel, whose output then reads as one line saying
so. Closing releases every widget and every video byte.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import ipywidgets as widgets

from .._i18n import N_, _, html_lang, set_language
from .._log import logger
from .._store_query import Overview
from .._tables import esc, html_table, text_table
from ..errors import ValidationError
from ..records import TaskRecord
from .controls import Clicks, ConfirmBar, ExportBar, ManageBar, SubmitForm, TrackForm
from .drawing import _CHANGES_KEPT, ALL_OWNERS, FALLBACK_ROWS, SORTS, PanelDrawing
from .format import LOOKS, NOT_FOUND, PANEL_CSS
from .frontend import frontend as frontend_named
from .kernel import Resender, forget_routes
from .media import MediaCache
from .rows import RowView
from .ticker import ticker
from .tree import close_tree, set_if_changed, walk
from .views import GalleryView, HistoryView, Pager, Switcher

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

# The live panel of each history (store_key -> panel).
_live: dict[str, weakref.ref[VeoPanel]] = {}
_live_lock = threading.Lock()
#: Failed refreshes in a row after which the panel says its refresh keeps failing.
FAILING_AFTER = 3
_STATUS_FILTERS: tuple[tuple[str, str], ...] = (
    (N_("all statuses"), ""), (N_("queued"), "queued"), (N_("processing"), "processing"),
    (N_("completed"), "completed"), (N_("failed"), "failed"), (N_("not found"), NOT_FOUND),
    (N_("unknown"), "unknown"),
)
#: What the sort menu calls each sort.
_SORT_LABELS: dict[str, str] = {"created": N_("created"), "status": N_("status"),
                                "label": N_("label")}
class _Form(Protocol):
    widget: widgets.Widget

    def close(self) -> None: ...


F = TypeVar("F", bound=_Form)



class _Lazy(Generic[F]):
    """A form built on first use, shown in its own (at first empty) box."""

    def __init__(self, make: Callable[[], F]) -> None:
        self._make = make
        self._form: F | None = None
        self.page = widgets.VBox()

    def get(self) -> F:
        if self._form is None:
            self._form = self._make()
            self.page.children = (self._form.widget,)
        return self._form

    def close(self) -> None:
        if self._form is not None:
            self._form.close()


class VeoPanel(PanelDrawing, widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped: VBox is Any
    """A live dashboard of a :class:`~veo_nb.Tracker` (an ipywidgets ``VBox``).

    Shows a header (counts per status, polling state, next poll, videos
    loaded, demo mode) and a message line, then tabs: **Tasks** (controls,
    filters by status and by owner, search, forms and one row per task,
    newest first, paginated), **Gallery**
    (finished videos) and **History** (summary and events as readable tables).

    Options:

    * ``page_size``: task rows per page; ``gallery_page_size``: cards per gallery page.
    * ``refresh_every``: seconds between two UI ticks (changes reported by the
      tracker are shown at once); ``None`` for no UI thread (call :meth:`update`).
    * ``start``: start the tracker's background poller if it is not running.
    * ``stream``: where videos play from while the service's link is valid:
      ``"https"`` (default: https links stream in the browser, nothing passes
      the kernel), ``"any"`` (also http links, e.g. the emulator when the
      browser runs on the kernel's machine), ``"never"`` (always the saved file).
    * ``max_loaded_bytes``: cap on the video bytes loaded for play at once
      (default 256 MB, 64 MB in Colab); the least recently played goes back
      to its card.
    * ``frontend``: ``"jupyter"``, ``"colab"`` or ``"vscode"`` (default:
      detected); Colab gets no tabs and no binary buffers.
    * ``size``: ``"normal"`` or ``"large"`` (projector: bigger text and
      videos, black text); the Projector button switches too.
    * ``sort``: ``"created"`` (default), ``"status"`` or ``"label"``;
      ``descending``: the order (default newest first, A→Z, queued first).
    * ``lang``: the language of the panel and of veo_nb's tables in this
      kernel, ``"en"`` or ``"zh_CN"`` (default: ``VEO_NB_LANG``, else the
      kernel's locale, else English; see :mod:`veo_nb._i18n`).

    Only one panel per history is live: making another closes this one.
    :meth:`close` stops its updates and releases its widgets and videos; the
    tracker keeps polling and keeps all data (``tracker.stop()`` stops polling).
    """

    #: The VBox trait (ipywidgets is untyped), as this panel uses it.
    children: tuple[Any, ...]

    def __init__(self, tracker: Tracker, *, page_size: int = 20, gallery_page_size: int = 6,
                 refresh_every: float | None = 1.0, start: bool = True, stream: str = "https",
                 max_loaded_bytes: int | None = None, frontend: str | None = None,
                 size: str = "normal", sort: str = "created",
                 descending: bool | None = None, lang: str | None = None) -> None:
        self._lock = threading.RLock()
        self._closed = True  # until built (ipywidgets' __del__ calls close())
        if page_size < 1 or gallery_page_size < 1:
            raise ValidationError("page_size and gallery_page_size must be at least 1")
        if refresh_every is not None and not refresh_every > 0:
            raise ValidationError(f"refresh_every must be positive seconds or None, got {refresh_every!r}")
        if size not in LOOKS:
            raise ValidationError(f"size must be one of {', '.join(LOOKS)}, got {size!r}")
        if sort not in SORTS:
            raise ValidationError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if lang is not None:
            try:
                set_language(lang)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
        self.tracker = tracker
        self.frontend = frontend_named(frontend)
        self.page_size = page_size
        self.refresh_every = refresh_every
        self.look = LOOKS[size]
        self._clicks = Clicks(self._lock)
        self._closed_line = ""
        self._display_id = uuid.uuid4().hex
        self._displayed = False
        self._overview = Overview()
        self._matching = 0  # tasks the filters show
        self._page_records: list[TaskRecord] = []
        self._gallery_records: list[TaskRecord] = []
        self._changes: deque[str] = deque(maxlen=_CHANGES_KEPT)
        self._read: tuple[Any, ...] | None = None  # (revision, view) of the page last read
        self._counted: object = None  # (revision, view) the overview was read for
        self._rows: OrderedDict[str, RowView] = OrderedDict()
        self._shown: tuple[str, ...] = ()
        self._keep: set[str] = set()
        self._failures = 0
        self._failing_since = 0.0
        self._last_error: object = None
        self._resender = Resender()
        self._spend: tuple[float, dict[str, Any]] | None = None

        # First what validates options and builds no widget.
        self.media = MediaCache(self.frontend, stream=stream, max_loaded_bytes=max_loaded_bytes,
                                look=self.look, capacity=3 * page_size + gallery_page_size,
                                report=self.report, lock=self._lock, changed=self.update)
        self.header = widgets.HTML(_dom_classes=("veo-header",))
        self.polling = widgets.Label()
        self.videos = widgets.Label(_dom_classes=("veo-videos",))
        self.message = widgets.HTML(_dom_classes=("veo-message",))
        # Read by screen readers only: what changed, said politely (not every tick).
        self.announce = widgets.HTML(_dom_classes=("veo-sr-only", "veo-announce"))
        self._said: dict[str, str] | None = None
        styles = widgets.HTML(PANEL_CSS, _dom_classes=("veo-sr-only",))
        self.confirm = ConfirmBar(self._clicks, self.report)
        self.refresh_button = widgets.Button(description=_("Refresh now"), icon="refresh")
        self.pause_button = widgets.Button(icon="pause", _dom_classes=("veo-pause",))
        # Each menu has a description: its <label> names the <select> for screen readers.
        named = {"description_width": "initial"}
        self.status_filter = widgets.Dropdown(options=[(_(t), v) for t, v in _STATUS_FILTERS],
                                              value="", description=_("status"), style=named,
                                              layout=widgets.Layout(width="200px"))
        # Filled with each owner seen (a shared store holds every student's tasks).
        self.owner_filter = widgets.Dropdown(options=((_(ALL_OWNERS[0]), ""),), value="",
                                             description=_("owner"), style=named,
                                             layout=widgets.Layout(width="200px"),
                                             _dom_classes=("veo-owner-filter",))
        self._owners: tuple[str, ...] = ()
        self._syncing_owners: int | None = None  # the thread setting the options
        self.search = widgets.Text(placeholder=_("id, label, owner, prompt, model, 1080p, 9:16, error"),
                                   description=_("search"), style=named,
                                   layout=widgets.Layout(width="360px"))
        self.sort = widgets.Dropdown(options=[(_(_SORT_LABELS[s]), s) for s in SORTS], value=sort,
                                     description=_("sort"), style=named,
                                     layout=widgets.Layout(width="170px"))
        self.order = widgets.Dropdown(options=(("↓ " + _("descending"), True),
                                               ("↑ " + _("ascending"), False)),
                                      value=SORTS[sort] if descending is None else descending,
                                      description=_("order"), style=named,
                                      layout=widgets.Layout(width="190px"))
        self.projector = widgets.ToggleButton(value=size == "large", description=_("Projector"),
                                              icon="desktop",
                                              tooltip=_("larger text and videos, high contrast"))
        # The forms are built when first opened (a third of the panel's widgets).
        self._submit = _Lazy(lambda: SubmitForm(tracker, self.report, self.show_task, self._clicks))
        self._track = _Lazy(lambda: TrackForm(tracker, self.report, self.show_task, self._clicks))
        self.manage = ManageBar(tracker, self.report, self.confirm, self._clicks, self.update)
        self._export = _Lazy(lambda: ExportBar(tracker, self.report, self.confirm, self._clicks))
        self._lazy: dict[int, _Lazy[Any]] = {0: self._submit, 1: self._track, 3: self._export}
        self.forms = Switcher(
            [self._submit.page, self._track.page, self.manage.widget, self._export.page],
            (_("Submit a prompt"), _("Track task ids"), _("Remove & archive"), _("Export")),
            optional=True)
        self.empty = widgets.HTML(_dom_classes=("veo-empty",))
        self.rows_box = widgets.VBox(_dom_classes=("veo-rows",))
        self.pager = Pager(self._page_changed)
        self.gallery = GalleryView(self.media, gallery_page_size, self.look, self.update)
        self.history = HistoryView(tracker)
        toolbar = widgets.HBox(
            [self.refresh_button, self.pause_button, self.status_filter, self.owner_filter,
             self.search,
             self.sort, self.order, self.projector, self.manage.dismiss],
            layout=widgets.Layout(flex_flow="row wrap", grid_gap="4px"))
        tasks_tab = widgets.VBox([toolbar, self.forms.widget, self.pager.top, self.empty,
                                  self.rows_box, self.pager.bottom])
        self.tabs = Switcher([tasks_tab, self.gallery.widget, self.history.widget],
                             (_("Tasks"), _("Gallery"), _("History")))
        status_line = widgets.HBox([self.polling, self.videos],
                                   layout=widgets.Layout(flex_flow="row wrap", grid_gap="0 24px"))
        super().__init__([styles, self.header, status_line, self.message, self.announce,
                          self.confirm.widget, self.tabs.widget], _dom_classes=("veo-panel",))

        self._clicks.bind(self.refresh_button, self.refresh_now)
        self._clicks.bind(self.pause_button, self.toggle_polling)
        for control in (self.status_filter, self.search, self.order):
            control.observe(lambda _: self._navigate(), names="value")
        self.owner_filter.observe(self._owner_changed, names="value")
        self.sort.observe(self._sort_changed, names="value")
        self.projector.observe(lambda change: self.set_size("large" if change["new"] else "normal"),
                               names="value")
        self.tabs.observe(self._tab_changed)
        self.forms.observe(self._form_opened)
        self._apply_look()

        if start and not tracker.running:
            tracker.start()
        self._unsubscribe = tracker.on_change(self._heard)
        self._closed = False
        self.update()
        if refresh_every is not None:
            ticker.add(self)  # before the older panel leaves: the UI thread goes on
        with _live_lock:
            ref = _live.get(tracker.store_key)
            _live[tracker.store_key] = weakref.ref(self)
        older = ref() if ref is not None else None
        if older is not None:
            older.close(replaced=True)
        forget_routes(walk(self))  # built on the main shell: clicks still go to a subshell

    # ------------------------------------------------------------------ commands

    def report(self, text: str, ok: bool = True) -> None:
        """Show a one-line message under the header (escaped)."""
        colour = "#1b5e20" if ok else "#b71c1c"
        # role=status: a screen reader says what a click did, without moving the focus.
        set_if_changed(self.message, "value",
                       f'<div role="status" lang="{html_lang()}" '
                       f'style="color:{colour};font-size:{self.look.font_size}">'
                       f"{esc(text)}</div>")

    def _stale(self) -> str | None:
        """Why this panel must not act on its tracker any more, or None."""
        if self._closed:
            return _("this panel is closed: use the newest panel of this history")
        if self.tracker.closed:
            return _("this panel's tracker is closed: make a new tracker and panel")
        return None

    def refresh_now(self) -> None:
        """Poll every due task now (``tracker.refresh()``) and redraw."""
        stale = self._stale()
        if stale:
            self.report(stale, False)
            return
        try:
            changed = self.tracker.refresh()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            outcome = (_("refresh failed: {error}").format(error=exc), False)
        else:
            outcome = (_("refreshed: {n} task(s) changed").format(n=len(changed)), True)
        self.update()
        self.report(*outcome)  # after the redraw: what the click did is what it says

    def toggle_polling(self) -> None:
        """Pause (``tracker.stop()``) or resume (``tracker.start()``) polling.
        Trackers of one store share one poller, so this acts on the newest
        tracker of the history too; a closed panel or tracker does nothing."""
        stale = self._stale()
        if stale:
            self.report(stale, False)
            return
        if self.tracker.running:
            self.tracker.stop()
            self.report(_("polling paused: tasks keep running on the service"), True)
        else:
            self.tracker.start()
            self.report(_("polling resumed"), True)
        self.update()

    def close(self, *, replaced: bool = False) -> None:
        """Stop updating, unsubscribe from the tracker, close every widget and
        drop every video. The tracker keeps polling and keeps every record;
        make a new panel to see it again. The panel's output becomes one line
        (``replaced``: a newer panel of the same history took over)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._unsubscribe()
        ticker.remove(self)
        with _live_lock:
            ref = _live.get(self.tracker.store_key)
            if ref is not None and ref() in (self, None):
                del _live[self.tracker.store_key]
        with self._lock:
            for row in self._rows.values():
                row.close()
            self._rows.clear()
            self._page_records = []
            self._gallery_records = []
            self._shown = ()
            self.gallery.close()
            self.media.close()
            self.manage.close()
            for lazy in self._lazy.values():
                lazy.close()
            for child in self.children:
                close_tree(child)
            self.layout.close()
            super().close()
            self.children = ()
            # ipywidgets hides a closed widget's _repr_mimebundle_; ours says it is closed.
            self.__dict__.pop("_repr_mimebundle_", None)
        self._closed_line = (
            _("This veo_nb panel was replaced by a newer panel of the same history.")
            if replaced else _("This veo_nb panel is closed."))
        if self._displayed:
            from IPython.display import update_display

            update_display(self._closed_bundle(), raw=True,  # type: ignore[no-untyped-call]  # IPython.display is untyped
                           display_id=self._display_id)

    # ------------------------------------------------------------------ drawing

    def _tick(self) -> None:
        """One UI tick: :meth:`update`, with its failures shown in the panel."""
        try:
            self.update()
        except Exception as exc:  # noqa: BLE001 - shown in the panel, the others keep ticking
            if self._failures == 0:
                logger.exception("veo_nb panel: refresh failed")
                self._failing_since = time.time()
            self._failures += 1
            what = f"{type(exc).__name__}: {exc}"
            if self._failures >= FAILING_AFTER:
                since = time.strftime("%H:%M:%S", time.localtime(self._failing_since))
                self.report(_("the panel's refresh keeps failing ({n} times since {since}; "
                              "polling goes on, tracker.tasks() still works): {error}").format(
                                  n=self._failures, since=since, error=what), False)
            else:
                self.report(_("panel refresh failed: {error}").format(error=what), False)
        else:
            if self._failures:
                self._failures = 0
                self.report(_("the panel refreshes again"), True)

    def update(self) -> None:
        """Apply the tracker's current state: changed rows, clocks, header, gallery."""
        with self._lock:
            if self._closed:
                return
            now = time.time()
            polling = self.tracker.running
            changed = self._read_store()
            self._announce(changed)
            self._sync_owners(self._overview.owners)
            page = self._page()
            self._show_rows(page, now, polling)
            self._show_empty(bool(page))
            self._update_header(now, polling)
            self.gallery.show(self._gallery_records, self._overview.completed, now)
            self.media.trim(set(self._shown) | self.gallery.shown_ids())
            set_if_changed(self.videos, "value", self.media.usage_text())
            self.manage.not_found(self._overview.counts.get(NOT_FOUND, 0))
            self._show_errors()
            if self.tabs.selected_index == 2 and self.history.due():
                self.history.refresh()
            if self._resender.due(time.monotonic()):
                self._send_state_again()
            forget_routes(walk(self))  # a cell may have sent this update: clicks stay free

    def _send_state_again(self) -> None:
        # A page that connected meanwhile may have dropped some updates
        # (veo_nb.widgets.kernel.restore_token): the state of every widget
        # again, except layouts and styles (they change only on a click) and
        # players (a playing video's widget is never touched).
        for w in walk(self):
            if not isinstance(w, (widgets.Layout, widgets.Style, widgets.Video)) \
                    and "veo-player" not in getattr(w, "_dom_classes", ()):
                w.send_state()

    def _remove_clicked(self, task_id: str) -> None:
        self._clicks.run(self._rows[task_id].remove, lambda: self.manage.remove_one(task_id))

    @property
    def submit_form(self) -> SubmitForm:
        """The Submit form (built on first use)."""
        return self._submit.get()

    @property
    def track_form(self) -> TrackForm:
        """The Track form (built on first use)."""
        return self._track.get()

    @property
    def export_bar(self) -> ExportBar:
        """The Export form (built on first use)."""
        return self._export.get()

    def _form_opened(self) -> None:
        index = self.forms.selected_index
        lazy = None if index is None else self._lazy.get(index)
        if lazy is not None:
            lazy.get()

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        if self._closed:
            return self._closed_bundle()
        data: dict[str, Any] | None = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return None
        with self._lock:
            now = time.time()
            rows, total = self._fallback_rows(), self._overview.total
            data["text/plain"] = text_table(self._fallback_title(), rows, now, FALLBACK_ROWS,
                                            total=total)
            data["text/html"] = html_table(self._fallback_title(), rows, now, FALLBACK_ROWS,
                                           total=total)
        return data

    def _ipython_display_(self) -> None:
        """Display with a display id, so that closing can replace the output
        with one line (in JupyterLab, Notebook, Colab, VS Code and nbclient)."""
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        if bundle is None:
            return
        self._displayed = not self._closed
        display(bundle, raw=True, display_id=self._display_id)  # type: ignore[no-untyped-call]  # IPython.display is untyped


def panel(tracker: Tracker | None = None, **options: Any) -> VeoPanel:
    """A live :class:`VeoPanel` over ``tracker`` (default: the process's
    tracker on the default store, :func:`veo_nb.tracker.default_tracker`).

    Starts the tracker's poller if needed. The panel shown before for the
    same history (same tracker, or a new tracker on the same store, as
    running the notebook again makes) is closed, so re-running cells never
    piles up live panels. ``options``: see :class:`VeoPanel`.
    """
    if tracker is None:
        from ..tracker import default_tracker

        tracker = default_tracker()
    return VeoPanel(tracker, **options)
