"""Pure formatting for the panel: badges, timing, rows (escaping and the
fallback tables come from :mod:`veo_nb._tables`).

Every string that came from the service or the user goes through
:func:`~veo_nb._tables.esc` before it reaches an HTML widget or attribute.
No widgets here, so everything is cheap to test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._urls import is_http_url
from .._tables import esc, fmt_seconds, short
from ..models import TaskStatus
from ..records import TaskRecord, to_unix

#: Icon, background and text colour of each status badge (the word is always shown too).
STATUS_STYLE: dict[TaskStatus, tuple[str, str, str]] = {
    TaskStatus.QUEUED: ("◷", "#eceff1", "#37474f"),
    TaskStatus.PROCESSING: ("⟳", "#e3f2fd", "#0d47a1"),
    TaskStatus.COMPLETED: ("✓", "#e8f5e9", "#1b5e20"),
    TaskStatus.FAILED: ("✗", "#ffebee", "#b71c1c"),
    TaskStatus.UNKNOWN: ("?", "#fff8e1", "#795548"),
}
#: Characters of a prompt shown in a row (the whole prompt is in the hover title).
PROMPT_CHARS = 90
#: Characters of an error message shown in a row.
ERROR_CHARS = 600


def shown_path(path: str) -> str:
    """``path`` relative to the working directory (the notebook's folder) when
    it lies below it, so the panel shows ``veo_nb_data/videos/…``."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def badge_html(record: TaskRecord) -> str:
    """A status badge that reads as text (icon + the status word) and colour."""
    icon, background, colour = STATUS_STYLE[record.status]
    return (
        f'<span style="background:{background};color:{colour};border-radius:9px;'
        f'padding:1px 8px;font-weight:600;white-space:nowrap">{icon} '
        f"{esc(short(record.status_text, 40))}</span>"
    )


def id_html(task_id: str) -> str:
    """The task id, selected whole by one click (easy to copy)."""
    return (
        f'<code style="user-select:all;-webkit-user-select:all;cursor:text" '
        f'title="click to select, then copy">{esc(task_id)}</code>'
    )


def playable_url(record: TaskRecord, now: float) -> str | None:
    """The record's video URL if it is http(s) and not yet expired, else None."""
    url = record.video_url
    if not is_http_url(url):
        return None
    expires = to_unix(record.url_expires_at)
    return url if expires is None or now < expires else None


@dataclass(frozen=True)
class Timing:
    """What the timing column of a row shows at one instant."""

    progress: float  # 0..1 of the window's high end
    bar_style: str  # a FloatProgress bar_style
    text: str


def timing(record: TaskRecord, now: float, window: tuple[float, float]) -> Timing:
    """Elapsed time against ``window`` (the tracker's expected ``(low, high)``
    finishing window of the task), an ETA, and for a finished video not yet
    saved the link's countdown."""
    low, high = window
    start = to_unix(record.created_at) or to_unix(record.first_seen_at)
    if record.is_terminal:
        took = record.total_s
        progress = 1.0 if took is None else min(1.0, took / high) if high else 1.0
        text = f"took {fmt_seconds(took)}"
        if record.status is TaskStatus.COMPLETED and record.download_state != "saved":
            expires = to_unix(record.url_expires_at)
            if expires is not None:
                left = expires - now
                text += f" · link expires in {fmt_seconds(left)}" if left > 0 else " · link expired"
        style = "success" if record.status is TaskStatus.COMPLETED else "danger"
        return Timing(round(progress, 2), style, text)
    elapsed = max(0.0, now - start) if start is not None else 0.0
    progress = min(1.0, elapsed / high) if high else 0.0
    if elapsed < low:
        eta, style = f"ETA {fmt_seconds(low - elapsed)}–{fmt_seconds(high - elapsed)}", "info"
    elif elapsed < high:
        eta, style = f"ETA ≤ {fmt_seconds(high - elapsed)}", "info"
    else:
        eta, style = f"{fmt_seconds(elapsed - high)} over the estimate", "warning"
    return Timing(round(progress, 2), style, f"{fmt_seconds(elapsed)} · {eta}")


def row_html(record: TaskRecord) -> str:
    """The text part of a task row: status badge, label, model, id, prompt
    (shortened; whole on hover), error, download state and local path."""
    prompt = record.prompt or ""
    parts = [
        badge_html(record),
        f"<b>{esc(short(record.label, 60))}</b>" if record.label else "",
        f'<span style="color:#666">{esc(short(record.model, 40))}</span>' if record.model else "",
        id_html(record.task_id),
    ]
    lines = [" ".join(p for p in parts if p)]
    if prompt:
        lines.append(f'<span title="{esc(prompt)}">{esc(short(prompt, PROMPT_CHARS))}</span>')
    if record.error:
        lines.append(
            f'<span style="color:#b71c1c">error: {esc(short(record.error, ERROR_CHARS))}</span>'
        )
    if record.download_state in ("failed", "expired") and record.download_error:
        lines.append(
            f'<span style="color:#b71c1c">download {esc(record.download_state)}: '
            f"{esc(short(record.download_error, ERROR_CHARS))}</span>"
        )
    if record.download_state == "saved" and record.video_path:
        lines.append(
            f'<span style="color:#666">saved: <code>{esc(shown_path(record.video_path))}</code></span>'
        )
    elif record.download_state == "pending":
        lines.append('<span style="color:#666">saving the video…</span>')
    return '<div style="line-height:1.5">' + "<br>".join(lines) + "</div>"


def status_counts_html(counts: dict[str, int]) -> str:
    """``3 completed · 1 failed`` with each count in its status colour."""
    if not counts:
        return "no tasks yet"
    out = []
    for text, n in counts.items():
        _, _, colour = STATUS_STYLE[TaskStatus.parse(text)]
        out.append(f'<span style="color:{colour}"><b>{n}</b> {esc(short(text, 40))}</span>')
    return " · ".join(out)


