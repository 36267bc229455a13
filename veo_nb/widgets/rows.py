"""A task's row in the panel, and the per-panel cache of video widgets.

Rows and videos are built once per task id and updated in place: a trait is
assigned only when its value changes (every assignment is a message to the
frontend), and a video widget, once shown in a row, is never recreated or
given a new value on a refresh, so a playing video keeps playing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..models import TaskStatus
from ..records import TaskRecord, to_unix
from .format import playable_url, row_html, timing

#: Seconds after a task is seen completed during which the row waits for the
#: background download (usually quick) before showing the video from its URL:
#: one video widget per row instead of a URL video swapped for the file's.
DOWNLOAD_GRACE_S = 5.0
#: Larger saved videos are played from their URL (while valid) instead of
#: sending the file's bytes to the browser.
MAX_INLINE_BYTES = 200 * 1024 * 1024
#: Pixel width of an inline video.
VIDEO_WIDTH = "320"
#: Tallest an inline video may be (portrait videos are letterboxed).
VIDEO_MAX_HEIGHT = "240px"


def set_if_changed(widget: widgets.Widget, name: str, value: Any) -> None:
    """Assign ``widget.name = value`` only when it differs (one message fewer)."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)


def close_tree(widget: widgets.Widget, keep: Iterable[widgets.Widget] = ()) -> None:
    """Close ``widget``, its children, layouts and styles, except the widgets in ``keep``."""
    spared = {id(w) for w in keep}
    stack = [widget]
    while stack:
        w = stack.pop()
        if id(w) in spared:
            continue
        stack.extend(getattr(w, "children", ()))
        for part in ("layout", "style"):
            sub = getattr(w, part, None)
            if isinstance(sub, widgets.Widget):
                sub.close()
        w.close()


class VideoCache:
    """One :class:`ipywidgets.Video` per task id, shared by the rows and the gallery.

    A saved video is sent as the file's bytes (read once, when first shown);
    before that, an http(s) link is played from its URL. Only the ``capacity``
    most recently shown videos are kept; older ones are closed unless shown.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._videos: OrderedDict[str, widgets.Video] = OrderedDict()
        self._from_file: set[str] = set()

    def __len__(self) -> int:
        return len(self._videos)

    def get(self, record: TaskRecord, now: float, *, upgrade: bool) -> widgets.Video | None:
        """The video of ``record``, building it when possible (None when there is
        nothing to play yet). ``upgrade``: replace a URL video by the saved
        file's (only pass it when the row is newly shown, never on a refresh)."""
        task_id = record.task_id
        video = self._videos.get(task_id)
        if video is not None and (task_id in self._from_file or not upgrade
                                  or record.download_state != "saved"):
            self._videos.move_to_end(task_id)
            return video
        built = self._build(record, now)
        if built is None:
            return video
        if video is not None:
            close_tree(video)
        self._videos[task_id] = built
        return built

    def _build(self, record: TaskRecord, now: float) -> widgets.Video | None:
        # A 9:16 video would stand 570 px tall at this width: cap the height
        # (the frame letterboxes inside the box).
        layout = {"width": f"{VIDEO_WIDTH}px", "max_height": VIDEO_MAX_HEIGHT}
        if record.download_state == "saved" and record.video_path:
            path = Path(record.video_path)
            try:
                if path.stat().st_size <= MAX_INLINE_BYTES:
                    data = path.read_bytes()
                    self._from_file.add(record.task_id)
                    return widgets.Video(value=data, format="mp4", width=VIDEO_WIDTH,
                                         autoplay=False, loop=False, layout=layout)
            except OSError:
                pass  # moved or unreadable: fall back to the link below
        elif record.download_state == "pending":
            finished = to_unix(record.finished_at)
            if finished is not None and now - finished < DOWNLOAD_GRACE_S:
                return None
        url = playable_url(record, now)
        if url is None:
            return None
        self._from_file.discard(record.task_id)
        return widgets.Video(value=url.encode(), format="url", width=VIDEO_WIDTH,
                             autoplay=False, loop=False, layout=layout)

    def trim(self, shown: set[str]) -> None:
        """Close the least recently used videos beyond capacity, except ``shown`` ones."""
        for task_id in list(self._videos):
            if len(self._videos) <= self.capacity:
                break
            if task_id not in shown:
                close_tree(self._videos.pop(task_id))
                self._from_file.discard(task_id)

    def close(self) -> None:
        """Close every cached video."""
        for video in self._videos.values():
            close_tree(video)
        self._videos.clear()
        self._from_file.clear()


class RowView:
    """The widgets of one task's row: text (badge, label, model, id, prompt,
    error, path), a progress bar against the estimate window with elapsed
    time / ETA / link countdown, and the video once there is one."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.record: TaskRecord | None = None
        self.info = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="200px"))
        self.clock = widgets.Label()
        self.media = widgets.Box()
        timing_box = widgets.VBox([self.bar, self.clock], layout=widgets.Layout(width="230px"))
        self.widget = widgets.HBox(
            [self.info, timing_box, self.media],
            layout=widgets.Layout(border_bottom="1px solid #e0e0e0", padding="4px 0",
                                  align_items="center"),
        )

    def update(self, record: TaskRecord, now: float, window: tuple[float, float],
               videos: VideoCache, *, newly_shown: bool) -> None:
        """Bring the row to ``record`` at time ``now``, touching only what changed."""
        if record is not self.record:
            set_if_changed(self.info, "value", row_html(record))
            self.record = record
        shown = timing(record, now, window)
        set_if_changed(self.bar, "value", shown.progress)
        set_if_changed(self.bar, "bar_style", shown.bar_style)
        set_if_changed(self.clock, "value", shown.text)
        if record.status is TaskStatus.COMPLETED:
            video = videos.get(record, now, upgrade=newly_shown)
            if video is not None and self.media.children != (video,):
                self.media.children = (video,)

    def close(self) -> None:
        """Close the row's widgets (its video belongs to the :class:`VideoCache`)."""
        close_tree(self.widget, keep=self.media.children)
