"""What a panel reads from the store and draws (a mixin of
:class:`~veo_nb.widgets.live.VeoPanel`): the visible page and the gallery's,
and the header's counts (the store's running tallies), read again only when
the store's revision or the view moved; rows, header, messages for screen
readers, and the plain-text and HTML fallbacks."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from .._i18n import N_, _, html_lang
from .._log import logger
from .._store_query import Overview, TaskQuery
from .._tables import esc, fmt_amount, fmt_seconds, gate_text, text_table, word
from ..errors import ValidationError
from ..records import TaskRecord
from .format import LOOKS, Look, changes_text, status_counts_html, status_word
from .rows import RowView
from .ticker import ticker
from .tree import set_if_changed

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker
    from .media import MediaCache
    from .views import GalleryView, Pager

#: Values of the ``sort`` option, and the order each starts with (descending?).
SORTS: dict[str, bool] = {"created": True, "status": False, "label": False}
#: Rows of the text fallback (``repr``) and of the HTML fallback.
FALLBACK_ROWS = 50
#: Seconds between two reads of today's spending (shown when a cap is set).
SPEND_EVERY_S = 10.0
#: The owner filter's first option (every owner, and tasks without one); shown translated.
ALL_OWNERS = (N_("all owners"), "")
#: Changes (task ids) heard from the tracker and not yet shown.
_CHANGES_KEPT = 1000

class PanelDrawing:
    """Reading and drawing; the panel provides its widgets and state (the
    widgets are ``Any``: ipywidgets is untyped)."""

    tracker: Tracker
    look: Look
    page_size: int
    media: MediaCache
    gallery: GalleryView
    pager: Pager
    header: Any
    polling: Any
    pause_button: Any
    announce: Any
    empty: Any
    rows_box: Any
    search: Any
    sort: Any
    order: Any
    status_filter: Any
    owner_filter: Any
    _lock: threading.RLock
    _closed: bool
    _closed_line: str
    _overview: Overview
    _matching: int
    _page_records: list[TaskRecord]
    _gallery_records: list[TaskRecord]
    _changes: deque[str]
    _read: tuple[Any, ...] | None
    _counted: object
    _said: dict[str, str] | None
    _keep: set[str]
    _rows: OrderedDict[str, RowView]
    _shown: tuple[str, ...]
    _owners: tuple[str, ...]
    _syncing_owners: int | None
    _spend: tuple[float, dict[str, Any]] | None
    _last_error: object

    tabs: Any
    projector: Any
    history: Any
    videos: Any

    def update(self) -> None:  # pragma: no cover - the panel's
        raise NotImplementedError

    def report(self, text: str, ok: bool = True) -> None:  # pragma: no cover - the panel's
        raise NotImplementedError

    def _remove_clicked(self, task_id: str) -> None:  # pragma: no cover - the panel's
        raise NotImplementedError

    def _heard(self, task: Any) -> None:
        """``on_change`` (a poller thread): note the task, wake the UI thread."""
        self._changes.append(task.id)
        ticker.wake()

    def _query(self) -> TaskQuery:
        """What the Tasks tab shows, as the store's query."""
        return TaskQuery(status=self.status_filter.value, owner=self.owner_filter.value,
                         search=self.search.value, sort=self.sort.value,
                         descending=self.order.value)

    def _read_store(self) -> list[str]:
        """Read what changed from the store: the header's counts and the
        visible pages, when the store's revision or the view moved. Returns
        the ids of the tasks the tracker said changed (for announcements). When
        the store cannot be read, the last pages read stay shown (the
        tracker's poller fails on it too, and the panel says its error)."""
        store = self.tracker.store
        changed = list(dict.fromkeys(self._changes.popleft() for _ in range(len(self._changes))))
        if self.tracker.closed:
            return changed  # its store is closed too: the last page read stays shown
        try:
            self._read_pages(store)
        except Exception:  # noqa: BLE001 - the tracker records and says what broke the store
            logger.debug("veo_nb panel: could not read the store", exc_info=True)
        return changed

    def _read_pages(self, store: Any) -> None:
        revision, query = store.revision(), self._query()
        if (revision, query) != self._counted:  # the counts are tallies: a handful of rows
            self._overview = self.tracker.overview()
            self._matching = (self._overview.total if query == TaskQuery(sort=query.sort,
                                                                         descending=query.descending)
                              else store.count(query))
            self._counted = (revision, query)
        rows = self.pager.clamp(self._matching, self.page_size)
        cards = self.gallery.pager.clamp(self._overview.completed, self.gallery.per_page)
        view = (revision, query, rows.start, cards.start)
        if view != self._read:
            self._page_records = store.page(query, rows.start, self.page_size)
            gallery = TaskQuery(sort=query.sort, descending=query.descending, completed=True)
            self._gallery_records = store.page(gallery, cards.start, self.gallery.per_page)
            self._read = view

    def _announce(self, changed: list[str]) -> None:
        """Tell screen readers which tasks changed status since the last
        update (a polite live region: said when the reader is idle)."""
        records = [r for r in (self._known(i) for i in changed) if r is not None]
        if self._said is None:  # the first update: the tasks in flight and those shown
            self._said = {r.task_id: status_word(r) for r in self.tracker.live_records()}
        else:
            text = changes_text(self._said, records)
            if text:
                set_if_changed(self.announce, "value",
                               f'<div role="status" aria-live="polite" lang="{html_lang()}">'
                               f"{esc(text)}</div>")
        self._said.update({r.task_id: status_word(r) for r in records})
        for record in self._page_records:
            self._said.setdefault(record.task_id, status_word(record))

    def _known(self, task_id: str) -> TaskRecord | None:
        """``task_id``'s record, or None once it is gone from the history."""
        try:
            record = self.tracker.record(task_id)
        except KeyError:
            return None
        return record if record.tracked else None

    def _sync_owners(self, seen: tuple[str, ...]) -> None:
        """Offer each owner of a tracked task (sorted, case-insensitively)
        in the owner filter; the chosen one stays chosen, and stays offered
        while it is chosen even when none of its tasks is left."""
        owners = set(seen)
        if self.owner_filter.value:
            owners.add(self.owner_filter.value)
        wanted = tuple(sorted(owners, key=lambda o: (o.casefold(), o)))
        if wanted == self._owners:
            return
        self._owners = wanted
        value = self.owner_filter.value
        self._syncing_owners = threading.get_ident()
        try:
            with self.owner_filter.hold_sync():  # one message: no flash of "all owners"
                self.owner_filter.options = ((_(ALL_OWNERS[0]), ""), *((o, o) for o in wanted))
                self.owner_filter.value = value
        finally:
            self._syncing_owners = None

    def _page(self) -> list[TaskRecord]:
        """The rows of the current page, plus the rows whose video the user
        played that newer tasks pushed off it (kept until the user moves)."""
        note = " · " + _("{n} of {total} tasks").format(n=self._matching,
                                                        total=self._overview.total)
        self.pager.fit(self._matching, self.page_size, note)
        page = self._page_records
        ids = {r.task_id for r in page}
        kept = [r for r in (self._known(i) for i in sorted(self._keep - ids)) if r is not None]
        self._keep = self.media.played_ids() & (ids | {r.task_id for r in kept})
        return page + kept

    def _show_rows(self, page: list[TaskRecord], now: float, polling: bool) -> None:
        ids = tuple(r.task_id for r in page)
        for record in page:
            row = self._rows.get(record.task_id)
            if row is None:
                row = self._rows[record.task_id] = RowView(record.task_id, self.look,
                                                           self._remove_clicked)
            self._rows.move_to_end(record.task_id)
            row.update(record, now, self.tracker.expected_window(record), self.media,
                       polling=polling)
        if ids != self._shown:
            self.rows_box.children = tuple(self._rows[i].widget for i in ids)
            self._shown = ids
            # keep the rows of about three pages (least recently shown go first)
            extra = len(self._rows) - 3 * self.page_size
            for task_id in [i for i in self._rows if i not in ids][: max(0, extra)]:
                self._rows.pop(task_id).close()

    def _show_empty(self, shown: bool) -> None:
        if shown:
            text = ""
        elif not self._overview.total:
            text = _("No tasks yet: submit a prompt or paste task ids above.")
        else:
            parts = []
            if self.search.value.strip():
                parts.append(f"“{self.search.value.strip()}”")
            if self.status_filter.value:
                parts.append(_("status {status}").format(status=word(self.status_filter.value)))
            if self.owner_filter.value:
                parts.append(_("owner {owner}").format(owner=self.owner_filter.value))
            text = _("No task matches {what} (of {total} tasks): change the search or the "
                     "filter.").format(what=_(" with ").join(parts), total=self._overview.total)
        set_if_changed(self.empty, "value",
                       f'<i style="font-size:{self.look.font_size}">{esc(text)}</i>' if text else "")

    def _update_header(self, now: float, polling: bool) -> None:
        # Two widgets: the counts change with statuses, the poll countdown every tick.
        overview = self._overview
        demo = (' · <span style="background:#fff3cd;padding:1px 6px;border-radius:4px">'
                f'{esc(_("demo mode: embedded emulator, nothing is billed"))}</span>'
                if getattr(self.tracker.client, "demo", False) else "")
        closed = esc(_("this panel's tracker is closed"))
        stale = f' · <b style="color:#b71c1c">{closed}</b>' if self.tracker.closed else ""
        cost = (" · " + esc(_("cost reported by the service: {amount} ({n} tasks)").format(
            amount=fmt_amount(overview.amount), n=overview.costed)) if overview.costed else "")
        cost += self._spend_html()
        tasks = esc(_("{n} tasks:").format(n=overview.total))
        set_if_changed(self.header, "value", (
            f'<div lang="{html_lang()}" style="font-size:{self.look.font_size}"><b>veo_nb</b> · '
            f"{tasks} {status_counts_html(dict(sorted(overview.counts.items())))}"
            f"{cost}{demo}{stale}</div>"))
        if polling:
            due = self.tracker.next_poll_at()
            line = (_("auto-refresh on · nothing to poll") if due is None else
                    _("auto-refresh on · next poll in {duration}").format(
                        duration=fmt_seconds(due.timestamp() - now)))
        else:
            line = _("auto-refresh paused (polling stopped)")
        gate = gate_text(self.tracker.rate_limited_until())
        set_if_changed(self.polling, "value", f"{line} · {gate}" if gate else line)
        set_if_changed(self.pause_button, "description", _("Pause") if polling else _("Resume"))
        set_if_changed(self.pause_button, "icon", "pause" if polling else "play")

    def _spend_html(self) -> str:
        """Today's spending against the daily cap, when one is set (read from
        the store at most every :data:`SPEND_EVERY_S`)."""
        if self.tracker.caps == (None, None):
            return ""
        now = time.monotonic()
        if self._spend is None or now - self._spend[0] > SPEND_EVERY_S:
            try:
                self._spend = (now, self.tracker.spending())
            except Exception:  # noqa: BLE001 - the store's trouble is said elsewhere
                return ""
        spent = self._spend[1]
        parts = []
        if spent["max_tasks"] is not None:
            parts.append(_("{n} of {cap} new tasks").format(n=spent["tasks"],
                                                            cap=f"{spent['max_tasks']:.0f}"))
        if spent["max_amount"] is not None:
            parts.append(_("amount {amount} of {cap}").format(
                amount=fmt_amount(spent["amount"] or 0.0), cap=fmt_amount(spent["max_amount"])))
        full = (spent["max_tasks"] is not None and spent["tasks"] >= spent["max_tasks"]) or (
            spent["max_amount"] is not None and (spent["amount"] or 0) >= spent["max_amount"])
        style = ' style="color:#b71c1c"' if full else ""
        today = _("today: {spending}").format(spending=_(", ").join(parts))
        return f' · <span class="veo-spend"{style}>{esc(today)}</span>'

    def _show_errors(self) -> None:
        """Say the tracker's newest unexpected worker error, once."""
        errors = self.tracker.recent_errors()
        if not errors or errors[-1] is self._last_error:
            return
        newest = self._last_error = errors[-1]
        when = newest.observed_at.astimezone().strftime("%H:%M:%S") if newest.observed_at else "?"
        self.report(_("tracker error at {time} ({n} recent, see tracker.recent_errors()): "
                      "{error}").format(time=when, n=len(errors), error=newest.detail), False)

    def _fallback_title(self) -> str:
        title = _("veo_nb panel: {n} tasks (as of {time})").format(
            n=self._overview.total, time=time.strftime("%H:%M:%S"))
        gate = gate_text(self.tracker.rate_limited_until())
        return f"{title} · {gate}" if gate else title

    def _fallback_rows(self) -> list[TaskRecord]:
        """The rows of the text and HTML fallbacks: the newest tasks."""
        return self.tracker.store.page(TaskQuery(), 0, FALLBACK_ROWS)

    def _closed_bundle(self) -> dict[str, str]:
        return {"text/plain": self._closed_line,
                "text/html": f'<p style="color:#424242"><i>{esc(self._closed_line)}</i></p>'}

    def __repr__(self) -> str:
        if self._closed:
            return self._closed_line
        with self._lock:
            return text_table(self._fallback_title(), self._fallback_rows(), time.time(),
                              FALLBACK_ROWS, total=self._overview.total)

    # ------------------------------------------------------------------ moving around

    def show_task(self, task_id: str) -> None:
        """Go to the page that shows ``task_id`` (when the filter shows it),
        unless a video the user played is on the current page."""
        with self._lock:
            if not (self.media.played_ids() & set(self._shown)):
                index = self.tracker.store.position(self._query(), task_id)
                if index is not None:
                    self.pager.page = index // self.page_size
                    self._keep.clear()
        self.update()

    def set_size(self, size: str) -> None:
        """``"normal"`` or ``"large"`` (projector mode)."""
        if size not in LOOKS:
            raise ValidationError(f"size must be one of {', '.join(LOOKS)}, got {size!r}")
        with self._lock:
            self.look = LOOKS[size]
            set_if_changed(self.projector, "value", size == "large")
            for row in self._rows.values():
                row.set_look(self.look)
            self.media.set_look(self.look)
            self.gallery.set_look(self.look)
            self._apply_look()
        self.update()

    def _apply_look(self) -> None:
        for label in (self.polling, self.videos):
            set_if_changed(label.style, "font_size", self.look.font_size)
            set_if_changed(label.style, "text_color", self.look.muted)

    def _owner_changed(self, _change: dict[str, Any]) -> None:
        if self._syncing_owners != threading.get_ident():  # a choice, not the options' refill
            self._navigate()

    def _navigate(self) -> None:
        self.pager.page = 0
        self._page_changed()

    def _page_changed(self) -> None:
        self._keep.clear()
        self.update()

    def _sort_changed(self, change: dict[str, Any]) -> None:
        with self.order.hold_trait_notifications():
            self.order.value = SORTS[change["new"]]
        self._navigate()

    def _tab_changed(self) -> None:
        if self.tabs.selected_index == 2:
            self.history.refresh()
        self.update()
