"""Records as plain text and as escaped HTML: the fallback tables shown by
``repr`` and ``_repr_html_`` of the tracker and the panel, and the escaping
and formatting helpers every view shares. No widgets, no I/O.

Every string that came from the service or the user goes through
:func:`esc` before it reaches HTML, and through :func:`short` (bounded, control
characters shown as escapes) before it is shown at all.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._i18n import N_, _
from .errors import _excerpt
from .records import TaskRecord, to_unix


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML content and quoted attributes
    (``None`` becomes ``""``)."""
    return "" if value is None else html.escape(str(value), quote=True)


def short(value: Any, limit: int) -> str:
    """One line of at most ``limit`` characters (control characters shown as
    escapes), not yet escaped."""
    return "" if value is None else _excerpt(value, limit)


#: Status and download-state words shown translated; any other word (one of
#: the service's own) is shown as it came.
WORDS: frozenset[str] = frozenset((
    N_("queued"), N_("processing"), N_("completed"), N_("failed"), N_("not found"),
    N_("unknown"), N_("none"), N_("pending"), N_("saved"), N_("expired"),
    # the kinds of events (history's ``kind``) and the summary's model placeholders
    N_("status"), N_("poll_error"), N_("download"), N_("gave_up"), N_("note"), N_("error"),
    N_("(unknown)"), N_("(all models)"),
))


def word(text: str | None) -> str:
    """A status, download state or event kind in the language shown
    (``unknown: <word>`` keeps the service's word)."""
    if not text:
        return ""
    if text in WORDS:
        return _(text)
    head, sep, rest = text.partition(": ")
    return f"{_(head)}: {rest}" if sep and head in WORDS else text


def fmt_amount(amount: float) -> str:
    """An amount the service reported (its own unit): up to 2 decimals, no
    trailing zeros (``1.55``, ``12``)."""
    return f"{amount:,.2f}".rstrip("0").rstrip(".")


def fmt_seconds(seconds: float | None) -> str:
    """A duration for people in the language shown: ``"45s"``, ``"2m 05s"``,
    ``"3h 07m"`` (``"45秒"``, ``"2分05秒"``, ``"3小时07分"``); ``"–"`` for None."""
    if seconds is None:
        return "–"
    s = max(0, int(round(seconds)))
    if s < 60:
        return _("{s}s").format(s=s)
    if s < 3600:
        return _("{m}m {s:02d}s").format(m=s // 60, s=s % 60)
    return _("{h}h {m:02d}m").format(h=s // 3600, m=s % 3600 // 60)


def gate_text(until: datetime | None) -> str:
    """What a view says of the service's 429 gate (see
    :meth:`~veo_nb.Tracker.rate_limited_until`): "the service asked us to
    wait until 13:42" in local time, or "" when there is none."""
    if until is None:
        return ""
    return _("the service asked us to wait until {time}").format(
        time=until.astimezone().strftime("%H:%M"))


#: Columns of the plain-text and HTML fallback tables: (title, width); the
#: titles are shown translated.
TABLE_COLUMNS: tuple[tuple[str, int], ...] = (
    (N_("task"), 24), (N_("label"), 14), (N_("status"), 10), (N_("time"), 10), (N_("video"), 8),
    (N_("prompt"), 40), (N_("error"), 40),
)


def _pad(text: str, width: int) -> str:
    """``text`` padded to ``width`` columns (a CJK character takes two)."""
    wide = sum(1 for c in text if unicodedata.east_asian_width(c) in "WF")
    return text + " " * max(0, width - len(text) - wide)


def _more(n: int) -> str:
    return _("… and {n} more").format(n=n)


def table_cells(record: TaskRecord, now: float) -> tuple[str, ...]:
    """One row of the fallback tables, unescaped and shortened."""
    if record.is_terminal:
        elapsed = record.total_s
    else:
        start = to_unix(record.created_at) or to_unix(record.first_seen_at)
        elapsed = None if start is None else now - start
    values = (record.task_id, record.label, word(record.status_text), fmt_seconds(elapsed),
              word(record.download_state), record.prompt, record.error)
    return tuple(short(v or "", width) for v, (_, width) in zip(values, TABLE_COLUMNS))


def text_table(title: str, records: Sequence[TaskRecord], now: float, limit: int, *,
               total: int | None = None) -> str:
    """A plain-text table of at most ``limit`` records under ``title`` (of
    ``total`` tasks: default, as many as ``records``)."""
    total = len(records) if total is None else total
    widths = [w for _, w in TABLE_COLUMNS]
    lines = [title, "  ".join(_pad(_(t), w) for (t, _w), w in zip(TABLE_COLUMNS, widths)).rstrip()]
    for record in records[:limit]:
        cells = table_cells(record, now)
        lines.append("  ".join(_pad(c, w) for c, w in zip(cells, widths)).rstrip())
    if total > limit:
        lines.append(_more(total - min(limit, len(records))))
    return "\n".join(lines)


def html_table(title: str, records: Sequence[TaskRecord], now: float, limit: int, *,
               total: int | None = None) -> str:
    """The same table as :func:`text_table`, as escaped HTML."""
    total = len(records) if total is None else total
    head = "".join(f"<th>{esc(_(t))}</th>" for t, _w in TABLE_COLUMNS)
    rows = [
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in table_cells(r, now)) + "</tr>"
        for r in records[:limit]
    ]
    more = f"<p>{esc(_more(total - min(limit, len(records))))}</p>" if total > limit else ""
    return (f"<p><b>{esc(title)}</b></p><table><tr>{head}</tr>{''.join(rows)}</table>{more}")


class Table:
    """A DataFrame of veo_nb (``tasks()``, ``history()``, ``summary()`` or a
    part of one) for people: what :func:`veo_nb.table` returns. In a notebook
    it shows as an escaped HTML table in local time to the second, numbers
    rounded, blanks for missing values, long text wrapped with the whole of it
    on hover; ``.frame`` is that table as strings, ``repr`` its plain text."""

    def __init__(self, frame: Any, *, tasks: Any = None, title: str = "",
                 limit: int | None = None) -> None:
        from .widgets.format import readable

        self.frame = readable(frame, tasks=tasks)
        self.title = title
        self.limit = limit

    def _repr_html_(self) -> str:
        from .widgets.format import table_html

        return table_html(self.frame, title=self.title, limit=self.limit)

    def __repr__(self) -> str:
        shown = self.frame if self.limit is None else self.frame.head(self.limit)
        return (f"{self.title}\n" if self.title else "") + shown.to_string(index=False)
