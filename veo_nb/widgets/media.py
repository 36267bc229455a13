"""How the panel delivers videos: a card first, bytes only on the user's click.

A real clip is 3–60 MB, so no video reaches the browser, and no video file
is read by the kernel, until the user asks to play it. Each finished task
gets one :class:`MediaView`, shared by its row and its gallery card: a card
(▶ Play, size, duration, resolution, aspect ratio) until played, then a
player, chosen at the click:

1. **Stream** while the service's link is valid and streamable (``stream``:
   ``"https"`` links only, the default; ``"any"`` also plain ``http://``,
   e.g. the emulator on the same machine; ``"never"``): the browser fetches
   the video from the link with Range requests, nothing passes the kernel.
   An ``http://`` link is not streamed by default: on Binder, a hub or Colab
   the browser is not on the kernel's machine and may not reach it.
2. Otherwise **the saved file**: its bytes once (a ``Video`` widget's
   buffer; in Colab, which drops buffers, a ``data:`` URL in an ``HTML``
   widget). Files under :data:`INLINE_MAX_BYTES` (the demo's samples) are
   shown at once, without a click.

Loaded players are capped (``max_loaded_bytes``, least recently played
first back to its card) and are unloaded, their widget closed and every
reference dropped, as soon as their task is on no visible page; a player is
never given a new value, so a playing video keeps playing across refreshes.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets

from .._i18n import _
from .._paths import saved_file_present
from .._tables import esc
from ..errors import ValidationError
from ..models import TaskStatus
from ..records import TaskRecord
from .format import Look, card_html, megabytes, playable_url
from .frontend import Frontend
from .tree import close_tree, set_if_changed

#: Saved videos up to this size are shown at once (sent without a click).
INLINE_MAX_BYTES = 2 * 1024 * 1024
#: Values of the panel's ``stream`` option.
STREAM_POLICIES = ("https", "any", "never")


@dataclass(frozen=True)
class Plan:
    """How a task's video would play right now: ``kind`` is ``"stream"``
    (from ``url``), ``"file"`` (the saved file's bytes) or ``""`` (it
    cannot: ``note`` says why)."""

    kind: str
    url: str | None = None
    path: str | None = None
    size: int | None = None
    note: str = ""


def saved_size(record: TaskRecord) -> int | None:
    """Bytes of the record's saved video (``os.stat``, the file is not read),
    or None when there is none."""
    if record.download_state != "saved" or not record.video_path:
        return None
    try:
        return os.stat(record.video_path).st_size
    except OSError:
        return None


def stream_url(record: TaskRecord, now: float, stream: str) -> str | None:
    """The link the browser may stream ``record``'s video from under the
    ``stream`` policy, or None."""
    url = playable_url(record, now)
    if url is None or stream == "never":
        return None
    if stream == "https" and not url.lower().startswith("https://"):
        return None
    return url


class MediaView:
    """One task's video as the page shows it (``widget``): a card (size,
    duration, resolution, aspect ratio, label or prompt) with a ▶ Play
    button while it can play here (else the card says why), or once played,
    the player above the card."""

    def __init__(self, record: TaskRecord, plan: Plan, card: str, look: Look,
                 on_play: Callable[[MediaView], None]) -> None:
        self.task_id = record.task_id
        self.record, self.plan = record, plan
        self._on_play = on_play
        # The card names no model older than itself: a page connecting to the
        # kernel (a Voila page loading, a reloaded tab) builds the widgets
        # opened before its restore from one snapshot, and a widget opened
        # meanwhile that names one it has not built yet fails there for good
        # (ipywidgets' get_model throws, jupyter-widgets/ipywidgets#4026). So
        # no layout or style is shared with older cards; the card's box, text
        # and button share one layout of their own, at most the row's width
        # (a projector's 640 px video beside an open file browser at 150 %
        # zoom stuck out of its row).
        # Never a scroll box: a keyboard could not scroll it (WCAG 2.1.1);
        # min_width 0: it still shrinks with its row.
        self.layout = widgets.Layout(flex="0 1 auto", width=f"{look.video_width}px",
                                     max_width="100%", overflow="visible", min_width="0")
        self.card = widgets.HTML(card, layout=self.layout)
        #: ▶ Play, made when the video can first play here (None before).
        self.play: widgets.Button | None = None
        self.player: widgets.Widget | None = None
        #: Video bytes the kernel holds for the player (0 when streaming).
        self.nbytes = 0
        #: True when the user asked for the player (not a small video shown at once).
        self.clicked = False
        self.widget = widgets.VBox(self._card_parts(self.layout), layout=self.layout,
                                   _dom_classes=("veo-media",))

    def _card_parts(self, layout: widgets.Layout | None = None) -> tuple[widgets.Widget, ...]:
        """The card, and ▶ Play when the video can play (made now if it was
        not: with ``layout`` when made with the card, else a layout of its own)."""
        if not self.plan.kind:
            return (self.card,)
        if self.play is None:
            self.play = widgets.Button(
                description="▶ " + _("Play"), button_style="primary", tooltip=_("play this video"),
                layout=layout or widgets.Layout(width=self.layout.width, max_width="100%"),
                _dom_classes=("veo-play",))
            self.play.on_click(lambda _: self._on_play(self))
        return (self.card, self.play)

    @property
    def loaded(self) -> bool:
        """True while a player is shown."""
        return self.player is not None

    def show(self, record: TaskRecord, plan: Plan, card: str) -> None:
        """Bring the card to ``record`` and ``plan`` (the player, if any, is kept)."""
        self.record, self.plan = record, plan
        set_if_changed(self.card, "value", card)
        if self.player is None:
            set_if_changed(self.widget, "children", self._card_parts())

    def set_width(self, width: str) -> None:
        """Resize the card (and its button)."""
        set_if_changed(self.layout, "width", width)
        if self.play is not None:  # its own layout when made after the card
            set_if_changed(self.play.layout, "width", width)

    def attach(self, player: widgets.Widget, nbytes: int, *, clicked: bool) -> None:
        """Show ``player`` (holding ``nbytes`` of video in the kernel)."""
        self.player, self.nbytes, self.clicked = player, nbytes, clicked
        self.widget.children = (player, self.card)

    def detach(self) -> None:
        """Back to the card: close the player and drop every reference to it."""
        player, self.player, self.nbytes, self.clicked = self.player, None, 0, False
        if player is not None:
            self.widget.children = self._card_parts()
            close_tree(player)

    def close(self) -> None:
        """Close the player and the card's widgets."""
        self.detach()
        close_tree(self.widget)
        if self.play is not None:  # when not shown at the end
            close_tree(self.play)


class MediaCache:
    """The :class:`MediaView` of each finished task, shared by rows and gallery,
    and the players loaded at once (at most ``max_loaded_bytes`` of video in
    the kernel; the least recently played goes back to its card first).

    ``capacity``: cards kept while not shown (older ones are closed).
    ``report(text, ok)``: where a refusal to play is said. ``lock``: held
    while a click loads a player (the panel's, shared with its refreshes).
    ``changed()``: called after a click loaded a player (the panel redraws).
    """

    def __init__(self, frontend: Frontend, *, stream: str, max_loaded_bytes: int | None,
                 look: Look, capacity: int, report: Callable[[str, bool], None],
                 lock: threading.RLock, changed: Callable[[], None] = lambda: None) -> None:
        if stream not in STREAM_POLICIES:
            raise ValidationError(f"stream must be one of {', '.join(STREAM_POLICIES)}, got {stream!r}")
        cap = frontend.max_loaded_bytes if max_loaded_bytes is None else max_loaded_bytes
        if not isinstance(cap, int) or cap < 0:
            raise ValidationError(f"max_loaded_bytes must be a number of bytes >= 0 or None, got {cap!r}")
        self.frontend = frontend
        self.stream = stream
        self.max_loaded_bytes = cap
        self.look = look
        self.capacity = capacity
        self._report = report
        self._lock = lock
        self._changed = changed
        self._views: OrderedDict[str, MediaView] = OrderedDict()
        self._loaded: OrderedDict[str, MediaView] = OrderedDict()  # least recently played first
        #: Video bytes put into widget messages since the panel opened.
        self.sent_bytes = 0

    def __len__(self) -> int:
        return len(self._views)

    @property
    def loaded_bytes(self) -> int:
        """Video bytes the kernel holds for the loaded players."""
        return sum(v.nbytes for v in self._loaded.values())

    def loaded_ids(self) -> set[str]:
        """Tasks whose video is loaded for play."""
        return set(self._loaded)

    def played_ids(self) -> set[str]:
        """Tasks whose video the user asked to play (and is still loaded)."""
        return {i for i, v in self._loaded.items() if v.clicked}

    def usage_text(self) -> str:
        """``videos loaded for play: 1 · 15.0 MB of 256.0 MB`` (streamed videos hold 0 MB)."""
        return _("videos loaded for play: {n} · {loaded} of {cap}").format(
            n=len(self._loaded), loaded=megabytes(self.loaded_bytes),
            cap=megabytes(self.max_loaded_bytes))

    def plan(self, record: TaskRecord, now: float) -> Plan:
        """How ``record``'s video would play at ``now``."""
        size = saved_size(record)
        url = stream_url(record, now, self.stream)
        if url is not None:
            return Plan("stream", url=url, size=size)
        if size is not None:
            held = self._held(size)
            if held > self.max_loaded_bytes:
                return Plan("", size=size, note=_(
                    "too large to play here ({size} > the cap of {cap}: raise max_loaded_bytes)"
                ).format(size=megabytes(held), cap=megabytes(self.max_loaded_bytes)))
            return Plan("file", path=record.video_path, size=size)
        if record.download_state == "pending":
            return Plan("", note=_("saving the video…"))
        if playable_url(record, now) is not None:
            return Plan("", note=_("its link is plain http://, which this browser may not reach: "
                                   "panel(stream='any') plays it"))
        if record.download_state == "saved" and saved_file_present(record.video_path):
            return Plan("", note=_("saved in a folder this account cannot read (another "
                                   "user's?), and its link has expired"))
        return Plan("", note=_("no video to play"))

    def _held(self, size: int) -> int:
        # What the kernel holds for a file of ``size``: its bytes, or in
        # Colab the base64 data: URL.
        return size if self.frontend.buffers else 4 * -(-size // 3) + 32

    def view(self, record: TaskRecord, now: float) -> MediaView | None:
        """The card (or player) of a completed ``record``; None for other tasks.
        A small saved video is loaded at once."""
        if record.status is not TaskStatus.COMPLETED:
            return None
        plan = self.plan(record, now)
        view = self._views.get(record.task_id)
        if view is None:
            view = self._views[record.task_id] = MediaView(
                record, plan, self._card(record, plan, None), self.look, self.play)
        else:
            view.show(record, plan, self._card(record, plan, view))
        self._views.move_to_end(record.task_id)
        if (not view.loaded and plan.kind == "file" and plan.size is not None
                and plan.size <= INLINE_MAX_BYTES):
            self._load(view, plan, autoplay=False)
        return view

    def _card(self, record: TaskRecord, plan: Plan, view: MediaView | None) -> str:
        note = plan.note if not plan.kind else self._note(view)
        return card_html(record, plan.size, note, self.look)

    def _redraw(self, view: MediaView) -> None:
        assert view.record is not None
        view.show(view.record, view.plan, self._card(view.record, view.plan, view))

    def _note(self, view: MediaView | None) -> str:
        if view is None or not view.loaded:
            return _(self.frontend.playback_note) if self.frontend.playback_note else ""
        origin = _("from the link") if view.nbytes == 0 else _("from the saved file")
        note = self.frontend.playback_note
        return " · ".join(t for t in (origin, _(note) if note else "") if t)

    def play(self, view: MediaView) -> None:
        """What ▶ Play does: load ``view``'s player (nothing when already loaded)."""
        with self._lock:
            if view.loaded or view.task_id not in self._views:
                return
            plan = self.plan(view.record, time.time())
            if not plan.kind:
                self._report(_("cannot play {id}: {why}").format(id=view.task_id, why=plan.note),
                             False)
                return
            view.plan = plan
            self._load(view, plan, autoplay=True)
            self._redraw(view)
            self._changed()

    def _load(self, view: MediaView, plan: Plan, *, autoplay: bool) -> None:
        if plan.kind == "stream":
            assert plan.url is not None
            player, nbytes = self._stream_player(plan.url, autoplay), 0
        else:
            assert plan.path is not None and plan.size is not None
            self._make_room(self._held(plan.size))
            try:
                data = Path(plan.path).read_bytes()
            except OSError as exc:
                self._report(_("cannot play {id}: {why}").format(id=view.task_id, why=exc), False)
                return
            player, nbytes = self._file_player(data, autoplay)
            self.sent_bytes += nbytes
        view.attach(player, nbytes, clicked=autoplay)
        self._loaded[view.task_id] = view

    def _make_room(self, nbytes: int) -> None:
        for task_id in list(self._loaded):
            if self.loaded_bytes + nbytes <= self.max_loaded_bytes:
                return
            self.unload(task_id)

    def _video_layout(self) -> widgets.Layout:
        look = self.look
        return widgets.Layout(width=f"{look.video_width}px", max_width="100%",
                              max_height=f"{look.video_max_height}px")

    def _stream_player(self, url: str, autoplay: bool) -> widgets.Widget:
        if not self.frontend.buffers:
            return self._html_player(esc(url), autoplay)
        return widgets.Video(value=url.encode(), format="url", autoplay=autoplay, loop=False,
                             width=str(self.look.video_width), layout=self._video_layout(),
                             _dom_classes=("veo-player",))

    def _file_player(self, data: bytes, autoplay: bool) -> tuple[widgets.Widget, int]:
        if not self.frontend.buffers:
            url = "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")
            return self._html_player(url, autoplay), len(url)
        return widgets.Video(value=data, format="mp4", autoplay=autoplay, loop=False,
                             width=str(self.look.video_width), layout=self._video_layout(),
                             _dom_classes=("veo-player",)), len(data)

    def _html_player(self, src: str, autoplay: bool) -> widgets.HTML:
        # ``src`` is escaped (a link) or a data: URL (base64: nothing to escape).
        # The size lives in the widget's layout, so a resize never rewrites
        # the <video> element (which would stop it).
        flag = " autoplay" if autoplay else ""
        return widgets.HTML(
            f'<video controls playsinline preload="metadata"{flag} src="{src}" '
            'style="width:100%;max-height:70vh"></video>',
            layout=widgets.Layout(width=f"{self.look.video_width}px", max_width="100%"),
            _dom_classes=("veo-player",))

    def set_look(self, look: Look) -> None:
        """Resize the players and redraw the cards for ``look``."""
        self.look = look
        for view in self._views.values():
            view.set_width(f"{look.video_width}px")
            if view.player is not None:
                set_if_changed(view.player.layout, "width", f"{look.video_width}px")
                if isinstance(view.player, widgets.Video):
                    set_if_changed(view.player.layout, "max_height", f"{look.video_max_height}px")
                    set_if_changed(view.player, "width", str(look.video_width))
            self._redraw(view)

    def unload(self, task_id: str) -> None:
        """Put ``task_id``'s video back to its card, freeing its bytes."""
        view = self._loaded.pop(task_id, None)
        if view is not None:
            view.detach()
            self._redraw(view)

    def trim(self, shown: Iterable[str]) -> None:
        """Unload the players of tasks not in ``shown`` (on no visible page)
        and close the least recently shown cards beyond ``capacity``."""
        visible = set(shown)
        for task_id in [i for i in self._loaded if i not in visible]:
            self.unload(task_id)
        for task_id in list(self._views):
            if len(self._views) <= self.capacity:
                break
            if task_id not in visible:
                self._views.pop(task_id).close()

    def close(self) -> None:
        """Unload every player and close every card."""
        for view in self._views.values():
            view.close()
        self._views.clear()
        self._loaded.clear()
