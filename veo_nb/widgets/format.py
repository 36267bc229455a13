"""Pure formatting for the panel and for notebooks: badges, timing, rows,
video cards, and readable tables (escaping and the fallback tables come from
:mod:`veo_nb._tables`).

Every string that came from the service or the user goes through
:func:`~veo_nb._tables.esc` before it reaches an HTML widget or attribute.
No widgets here, so everything is cheap to test.

For notebooks: :func:`readable` turns ``tracker.tasks()``, ``history()`` or
``summary()`` into a table for people (local time to the second, rounded
numbers, blanks instead of ``<NA>``, the label and prompt beside each id) and
:func:`table_html` renders it as escaped HTML (long text shortened, whole on
hover)::

    from IPython.display import HTML
    from veo_nb.widgets.format import readable, table_html
    HTML(table_html(readable(tracker.history(), tasks=tracker.records())))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dateutil import tz as _tz

from .._i18n import N_, _, html_lang
from .._spec import VIDEO_DURATION_S
from .._tables import esc, fmt_seconds, short, word
from .._urls import is_http_url
from ..models import TaskStatus
from ..records import TaskRecord, to_unix
from ..tracker import NOT_FOUND_REASON

#: What the header, the filter and the badge call a task the service does
#: not know (a mistyped or foreign id): not a failure.
NOT_FOUND = "not found"
#: Icon, background and text colour of each status badge (the word is always shown too).
STATUS_STYLE: dict[TaskStatus, tuple[str, str, str]] = {
    TaskStatus.QUEUED: ("◷", "#eceff1", "#263238"),
    TaskStatus.PROCESSING: ("⟳", "#e3f2fd", "#0d47a1"),
    TaskStatus.COMPLETED: ("✓", "#e8f5e9", "#1b5e20"),
    TaskStatus.FAILED: ("✗", "#ffebee", "#b71c1c"),
    TaskStatus.UNKNOWN: ("?", "#fff8e1", "#5d4037"),
}
NOT_FOUND_STYLE = ("∅", "#f5f5f5", "#424242")
#: Characters of a prompt shown in a row (the whole prompt is in the hover title).
PROMPT_CHARS = 90
#: Characters of an error message shown in a row.
ERROR_CHARS = 600
#: Characters of a table cell shown (the rest is in its hover title).
CELL_CHARS = 160
#: Characters of a hover title (a title is HTML too: keep it bounded).
TITLE_CHARS = 2000
#: Table columns whose text may be long: shortened, whole on hover, wrapped.
TEXT_COLUMNS = ("label", "prompt", "error", "detail", "download_error", "video_url", "video_path")


#: The panel's style sheet (in an HTML widget, scoped to ``.veo-panel``): a
#: focus ring a keyboard user sees on every control, the chosen page and the
#: projector toggle underlined (not told by shade alone), and ``veo-sr-only`` for
#: text meant for screen readers only (the live announcements).
PANEL_CSS = """<style>
.veo-panel :focus-visible { outline: 3px solid #1a56db !important; outline-offset: 1px; }
.veo-panel .veo-media :focus-visible { outline-offset: -3px; }
.veo-panel input:focus-visible, .veo-panel textarea:focus-visible {
  outline: 3px solid #1a56db !important; }
.veo-panel .jupyter-button.mod-active { font-weight: 700; text-decoration: underline;
  text-underline-offset: 3px; }
.veo-panel .veo-sr-only { position: absolute !important; width: 1px; height: 1px;
  overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap; }
</style>"""
#: Names of tasks said in one announcement (the others are counted).
ANNOUNCED_NAMES = 3


@dataclass(frozen=True)
class Look:
    """Sizes and colours of the panel: ``normal`` for a laptop, ``large``
    for a projector (bigger text and videos, black text on white)."""

    name: str
    font_size: str
    muted: str  # secondary text (still readable: at least WCAG AA on white)
    video_width: int
    video_max_height: int
    timing_width: int


LOOKS: dict[str, Look] = {
    "normal": Look("normal", "14px", "#424242", 320, 240, 230),
    "large": Look("large", "20px", "#000000", 640, 480, 320),
}


def shown_path(path: str) -> str:
    """``path`` relative to the working directory (the notebook's folder) when
    it lies below it, so the panel shows ``veo_nb_data/videos/…``."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def is_not_found(record: TaskRecord) -> bool:
    """True for a task the service answered 404 for (a mistyped or foreign id)."""
    return record.error == NOT_FOUND_REASON


def status_word(record: TaskRecord) -> str:
    """The status a person reads: the service's word, or ``not found``."""
    return NOT_FOUND if is_not_found(record) else record.status_text


def _style(status: str) -> tuple[str, str, str]:
    return NOT_FOUND_STYLE if status == NOT_FOUND else STATUS_STYLE[TaskStatus.parse(status)]


def badge_html(record: TaskRecord) -> str:
    """A status badge that reads as text (icon + the status word, in the
    language shown) and colour."""
    status = status_word(record)
    icon, background, colour = _style(status)
    return (
        f'<span style="background:{background};color:{colour};border-radius:9px;'
        f'padding:1px 8px;font-weight:600;white-space:nowrap">{icon} '
        f"{esc(short(word(status), 40))}</span>"
    )


def id_html(task_id: str) -> str:
    """The task id, selected whole by one click (easy to copy)."""
    return (
        f'<code class="veo-id" style="user-select:all;-webkit-user-select:all;cursor:text" '
        f'title="{esc(_("click to select, then copy"))}">{esc(task_id)}</code>'
    )


def playable_url(record: TaskRecord, now: float) -> str | None:
    """The record's video URL if it is http(s) and not yet expired, else None."""
    url = record.video_url
    if not is_http_url(url):
        return None
    expires = to_unix(record.url_expires_at)
    return url if expires is None or now < expires else None


def format_text(record: TaskRecord) -> str:
    """``1080p · 16:9`` (what is known of resolution and aspect ratio)."""
    return " · ".join(esc(short(v, 12)) for v in (record.resolution, record.aspect_ratio) if v)


@dataclass(frozen=True)
class Timing:
    """What the timing column of a row shows at one instant."""

    progress: float  # 0..1 of the window's high end
    bar_style: str  # a FloatProgress bar_style
    text: str


def timing(record: TaskRecord, now: float, window: tuple[float, float], *,
           polling: bool = True) -> Timing:
    """Elapsed time against ``window`` (the tracker's expected ``(low, high)``
    finishing window of the task), an ETA, and for a finished video not yet
    saved the link's countdown. A finished task's bar is full. While the
    tracker is not ``polling``, an unfinished task is never called late: its
    status is simply not being checked."""
    low, high = window
    start = to_unix(record.created_at) or to_unix(record.first_seen_at)
    if record.is_terminal:
        text = _("took {duration}").format(duration=fmt_seconds(record.total_s))
        if record.status is TaskStatus.COMPLETED and record.download_state != "saved":
            expires = to_unix(record.url_expires_at)
            if expires is not None:
                left = expires - now
                text += " · " + (_("link expires in {duration}").format(duration=fmt_seconds(left))
                                 if left > 0 else _("link expired"))
        style = "success" if record.status is TaskStatus.COMPLETED else "danger"
        return Timing(1.0, style, text)
    elapsed = max(0.0, now - start) if start is not None else 0.0
    progress = min(1.0, elapsed / high) if high else 0.0
    if not polling:
        eta, style = _("not polling (paused)"), "info"
    elif elapsed < low:
        eta, style = _("ETA {low}–{high}").format(low=fmt_seconds(low - elapsed),
                                                 high=fmt_seconds(high - elapsed)), "info"
    elif elapsed < high:
        eta, style = _("ETA ≤ {duration}").format(duration=fmt_seconds(high - elapsed)), "info"
    else:
        eta, style = _("{duration} over the estimate").format(
            duration=fmt_seconds(elapsed - high)), "warning"
    return Timing(round(progress, 2), style, f"{fmt_seconds(elapsed)} · {eta}")


def owner_html(owner: str | None, look: Look = LOOKS["normal"]) -> str:
    """``by <owner>`` (who submitted or tracked the task), escaped; "" without one."""
    if not owner:
        return ""
    return (f'<span class="veo-owner" style="color:{look.muted};white-space:nowrap" '
            f'title="{esc(_("submitted by"))}">'
            f'{esc(_("by {owner}").format(owner=short(owner, 40)))}</span>')


def row_html(record: TaskRecord, look: Look = LOOKS["normal"]) -> str:
    """The text part of a task row: status badge, label, owner, model,
    resolution and aspect ratio, id, prompt (shortened; whole on hover),
    error, download state and local path."""
    prompt = record.prompt or ""
    muted = f"color:{look.muted}"
    details = " · ".join(p for p in (esc(short(record.model, 40)), format_text(record)) if p)
    parts = [
        badge_html(record),
        f"<b>{esc(short(record.label, 60))}</b>" if record.label else "",
        owner_html(record.owner, look),
        f'<span style="{muted}">{details}</span>' if details else "",
        id_html(record.task_id),
    ]
    lines = [" ".join(p for p in parts if p)]
    if prompt:
        lines.append(f'<span class="veo-prompt" title="{esc(short(prompt, TITLE_CHARS))}">'
                     f"{esc(short(prompt, PROMPT_CHARS))}</span>")
    if is_not_found(record):
        lines.append(f'<span style="{muted}">'
                     f'{esc(_("the service does not know this id: check it for typos, or dismiss it"))}'
                     "</span>")
    elif record.error:  # the service's own words, as they came
        lines.append(
            f'<span class="veo-error" style="color:#b71c1c">{esc(_("error:"))} '
            f"{esc(short(record.error, ERROR_CHARS))}</span>"
        )
    if record.download_state in ("failed", "expired") and record.download_error:
        state = _("download failed:") if record.download_state == "failed" else _("download expired:")
        lines.append(
            f'<span style="color:#b71c1c">{esc(state)} '
            f"{esc(short(record.download_error, ERROR_CHARS))}</span>"
        )
    if record.download_state == "saved" and record.video_path:
        lines.append(
            f'<span style="{muted}">{esc(_("saved:"))} '
            f"<code>{esc(shown_path(record.video_path))}</code></span>"
        )
    elif record.download_state == "pending":
        lines.append(f'<span style="{muted}">{esc(_("saving the video…"))}</span>')
    return (f'<div lang="{html_lang()}" style="line-height:1.5;font-size:{look.font_size};color:#000;'
            'overflow-wrap:anywhere">' + "<br>".join(lines) + "</div>")


def status_counts_html(counts: Mapping[str, int]) -> str:
    """``3 completed · 1 failed · 1 not found`` with each count in its status colour."""
    if not counts:
        return esc(_("no tasks yet"))
    out = []
    for text, n in counts.items():
        colour = _style(text)[2]
        out.append(f'<span style="color:{colour}"><b>{n}</b> {esc(short(word(text), 40))}</span>')
    return " · ".join(out)


def task_name(record: TaskRecord) -> str:
    """What a task is called in a sentence: its label, else the start of its prompt, else its id."""
    return short(record.label or record.prompt or record.task_id, 40)


def changes_text(before: Mapping[str, str], records: Sequence[TaskRecord]) -> str:
    """What the panel tells a screen reader after a refresh: the tasks whose
    status changed since ``before`` (task id -> status word), grouped by their
    new status (``2 tasks completed: fox, boat.``); "" when none did. New
    tasks are not said (the message line says what a submit or track did)."""
    moved: dict[str, list[str]] = {}
    for record in records:
        now = status_word(record)
        old = before.get(record.task_id)
        if old is not None and old != now:
            moved.setdefault(now, []).append(task_name(record))
    sentences = []
    for status, names in moved.items():
        shown = _(", ").join(names[:ANNOUNCED_NAMES])
        if len(names) > ANNOUNCED_NAMES:
            shown = _("{names} and {n} more").format(names=shown, n=len(names) - ANNOUNCED_NAMES)
        said = _("{n} task {status}: {names}.") if len(names) == 1 else \
            _("{n} tasks {status}: {names}.")
        sentences.append(said.format(n=len(names), status=short(word(status), 40), names=shown))
    return " ".join(sentences)


def megabytes(nbytes: int) -> str:
    """``15.0 MB`` (one decimal; ``0.02 MB`` below 0.1 MB; ``0 MB``)."""
    mb = nbytes / (1024 * 1024)
    if nbytes == 0:
        return "0 MB"
    return f"{mb:.2f} MB" if mb < 0.1 else f"{mb:.1f} MB"


def card_html(record: TaskRecord, size: int | None, note: str, look: Look) -> str:
    """The text of a video card: size, duration, resolution and aspect
    ratio, the label (or prompt, or id; the whole prompt on hover), and
    ``note`` (why it does not play yet, or where it plays from)."""
    facts = [megabytes(size) if size is not None else "",
             _("{seconds} s").format(seconds=f"{VIDEO_DURATION_S:g}"), format_text(record)]
    line = " · ".join(f for f in facts if f)
    caption = record.label or record.prompt or record.task_id
    extra = f'<br><span style="color:{look.muted}">{esc(note)}</span>' if note else ""
    return (f'<div lang="{html_lang()}" style="font-size:{look.font_size};line-height:1.4">'
            f'<b>{line}</b><br>'
            f'<span title="{esc(short(record.prompt, TITLE_CHARS))}">'
            f"{esc(short(caption, PROMPT_CHARS // 2))}</span>{extra}</div>")


# ---------------------------------------------------------------- tables


def local_zone() -> Any:
    """The machine's time zone (with its daylight-saving rules)."""
    return _tz.tzlocal()


#: Column headings of the panel's tables that are shown translated (the
#: DataFrames keep their column names).
HEADINGS: frozenset[str] = frozenset((
    N_("task_id"), N_("label"), N_("prompt"), N_("model"), N_("status"), N_("observed_at"),
    N_("kind"), N_("http_status"), N_("attempt"), N_("detail"), N_("owner"), N_("count"),
    N_("finished"), N_("completed"), N_("failed"), N_("not_found"), N_("success_rate"),
    N_("median_s"), N_("p90_s"), N_("amount"), N_("unconfirmed"),
    # tracker.tasks() shown with veo_nb.table()
    N_("resolution"), N_("aspect_ratio"), N_("mode"), N_("created_at"), N_("first_seen_at"),
    N_("started_at"), N_("finished_at"), N_("queued_s"), N_("processing_s"), N_("total_s"),
    N_("video_url"), N_("url_expires_at"), N_("video_path"), N_("error"), N_("status_text"),
    N_("download_state"), N_("download_error"), N_("tracked"), N_("poll_count"),
    N_("last_polled_at"), N_("next_poll_at"), N_("service"), N_("progress"),
))


def heading(column: str) -> str:
    """A table column's heading in the language shown."""
    return _(column) if column in HEADINGS else column


def _labels(tasks: pd.DataFrame | Iterable[TaskRecord]) -> dict[str, tuple[Any, Any]]:
    if isinstance(tasks, pd.DataFrame):
        return {i: (lab, p) for i, lab, p in zip(tasks["task_id"], tasks["label"], tasks["prompt"])}
    return {r.task_id: (r.label, r.prompt) for r in tasks}


def _cell(value: Any, column: str) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if column == "success_rate":
            return f"{value:.0%}"
        return f"{value:.1f}" if column.endswith("_s") else f"{value:.4g}"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if column in ("status", "download_state", "kind", "model"):
        return word(str(value))
    return str(value)


def readable(frame: pd.DataFrame, *, tasks: pd.DataFrame | Iterable[TaskRecord] | None = None,
             zone: Any = None) -> pd.DataFrame:
    """A copy of ``frame`` (``tracker.tasks()``, ``history()`` or
    ``summary()``) for people, every cell a string: timestamps in local time
    (``zone``, default the machine's) to the second, seconds to one decimal,
    success rates as percentages, blanks instead of ``None``/``NaN``/``<NA>``.
    With ``tasks`` (records or a tasks DataFrame) and a ``task_id`` column
    without labels, the task's ``label`` and ``prompt`` are put beside it."""
    zone = zone or local_zone()
    out: pd.DataFrame = pd.DataFrame(index=frame.index)
    labels = _labels(tasks) if tasks is not None and "task_id" in frame and "label" not in frame else None
    for column in frame.columns:
        series = frame[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            shown = series.dt.tz_convert(zone).dt.strftime(_("%Y-%m-%d %H:%M:%S"))
            out[column] = shown.where(series.notna(), "")
        else:
            out[column] = [_cell(v, column) for v in series.astype(object)]
        if column == "task_id" and labels is not None:
            found = [labels.get(i, (None, None)) for i in series]
            out["label"] = [_cell(lab, "label") for lab, _ in found]
            out["prompt"] = [_cell(p, "prompt") for _, p in found]
    return out


def table_html(frame: pd.DataFrame, *, title: str = "", limit: int | None = None,
               cell_chars: int = CELL_CHARS) -> str:
    """``frame`` (best after :func:`readable`) as an escaped HTML table:
    long text cells shortened to ``cell_chars`` and wrapped, the whole text
    (up to :data:`TITLE_CHARS`) on hover; at most ``limit`` rows."""
    shown = frame if limit is None else frame.head(limit)
    head = "".join(f'<th style="text-align:left" scope="col">{esc(heading(c))}</th>'
                   for c in shown.columns)
    rows = []
    for values in shown.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(shown.columns, values):
            text = "" if value is None else str(value)
            if column in TEXT_COLUMNS and len(text) > cell_chars:
                cells.append(f'<td title="{esc(short(text, TITLE_CHARS))}" style="max-width:28em;'
                             f'white-space:normal;overflow-wrap:anywhere">'
                             f"{esc(short(text, cell_chars))}</td>")
            else:
                wrap = "white-space:normal;overflow-wrap:anywhere;max-width:28em" \
                    if column in TEXT_COLUMNS else "white-space:nowrap"
                cells.append(f'<td style="{wrap}">{esc(short(text, cell_chars))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<h4>{esc(title)}</h4>" if title else ""
    return (f'{caption}<table style="border-collapse:collapse;font-size:inherit">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def events_table(history: pd.DataFrame, tasks: Sequence[TaskRecord], limit: int) -> pd.DataFrame:
    """The newest ``limit`` events of ``history``, newest first, readable,
    with the label and prompt of each task beside its id."""
    newest = history.tail(limit).iloc[::-1]
    return readable(newest, tasks=tasks)
