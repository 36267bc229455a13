"""What the tracker remembers about each task, and the pandas views of it.

:class:`TaskRecord` is one task as the tracker knows it (the service's answer
plus what happened locally: when it was first seen, polls, the download).
:class:`Event` is one line of a task's history. The functions
:func:`tasks_frame`, :func:`history_frame`, :func:`summary_frame` and
:func:`export` turn them into DataFrames and files; the :class:`~veo_nb.store.Store`
builds the same frames straight from SQLite.

Every timestamp is a timezone-aware UTC :class:`~datetime.datetime`; in
DataFrames timestamps have the dtype ``datetime64[ns, UTC]`` and ``status`` is an
ordered categorical (``queued < processing < completed < failed``, then
``unknown`` for any status string the service may add later).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

import numpy as np
import pandas as pd

from . import _answers
from ._spec import URL_LIFETIME_S, Mode, payload_mode
from ._spending import UNCONFIRMED_PREFIX
from .errors import ValidationError
from .models import Task, TaskStatus, _as_float, _as_text

#: Why a task reported ``completed`` without a ``video_url`` counts as failed.
NO_VIDEO_REASON = "completed without a video (the service's safety filter may have blocked it)"
#: How the ``error`` of a task answered ``completed`` without a link, and
#: polled again for it, starts.
NO_LINK_YET = "completed without a video link yet: asking again"
#: The error of a task id its service answered 404 for: a typo or a test paste,
#: not a failed generation (kept out of the success statistics).
NOT_FOUND_REASON = "the service does not know this id (404)"
#: How the ``error`` of a task still checked after 404s starts.
STILL_CHECKING = "not found (since "
#: How the ``error`` of a task that the service knew, then answered 404 for
#: too long, starts (``track()`` checks it again).
LOST_REASON = "not found (404) on every poll since "
#: Values of :attr:`TaskRecord.download_state`.
DOWNLOAD_STATES: tuple[str, ...] = ("none", "pending", "saved", "failed", "expired")
#: Values of :attr:`Event.kind`.
EVENT_KINDS: tuple[str, ...] = ("status", "poll_error", "download", "gave_up", "note", "error")
#: Categories of the ``status`` column, in order.
STATUS_CATEGORIES: tuple[str, ...] = tuple(s.value for s in TaskStatus)
#: The ordered categorical dtype of every ``status`` column.
STATUS_DTYPE = pd.CategoricalDtype(list(STATUS_CATEGORIES), ordered=True)
#: The leading columns of :func:`tasks_frame`, in order.
TASK_COLUMNS: tuple[str, ...] = (
    "task_id", "label", "prompt", "model", "resolution", "aspect_ratio", "mode",
    "status", "created_at", "first_seen_at", "started_at", "finished_at",
    "queued_s", "processing_s", "total_s", "video_url", "url_expires_at",
    "video_path", "error",
)
#: The columns that follow :data:`TASK_COLUMNS` in :func:`tasks_frame`.
TASK_EXTRA_COLUMNS: tuple[str, ...] = (
    "status_text", "download_state", "download_error", "tracked", "poll_count",
    "last_polled_at", "next_poll_at", "owner", "service", "amount", "progress",
)
#: The columns of :func:`history_frame`, in order.
HISTORY_COLUMNS: tuple[str, ...] = (
    "task_id", "status", "observed_at", "kind", "http_status", "attempt", "detail", "owner",
)
#: The columns of :func:`summary_frame`, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "count", "finished", "completed", "failed", "not_found", "success_rate",
    "median_s", "p90_s", "amount", "unconfirmed",
)
#: The ``model`` of :func:`summary_frame`'s total row (only when the service
#: reported what tasks cost).
TOTAL_ROW = "(all models)"
#: File suffixes :func:`export` accepts.
EXPORT_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".json")

_UTC_NS = "datetime64[ns, UTC]"
#: |microseconds| a ``datetime64[ns]`` can hold (about the years 1677-2262).
_NS_LIMIT_US = float(pd.Timestamp.max.value // 1000)


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True)
class TaskRecord:
    """One task as the tracker knows it. Immutable: update with
    :func:`dataclasses.replace`.

    ``status_text`` is the status as the service spelled it (``status`` is
    ``UNKNOWN`` for strings this version does not know). ``created_at`` is the
    service's creation time; ``first_seen_at``, ``started_at`` and
    ``finished_at`` are when this machine first saw the task, saw it
    processing and saw it finish. ``request`` holds the create parameters as
    sent (``{}`` for a task tracked by id) and ``raw`` the last JSON body.
    ``service`` is the service the task belongs to (see
    :attr:`VeoClient.service <veo_nb.VeoClient.service>`; ``None`` in stores
    written before veo_nb recorded it), ``owner`` who submitted or tracked it,
    ``key_fingerprint`` a short hash of the API key that created it (never
    the key itself), ``saved_on`` the machine whose ``media_dir`` holds the
    saved video (a store may be shared by several).
    """

    task_id: str
    label: str | None = None
    prompt: str | None = None
    model: str | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    mode: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    status_text: str = TaskStatus.QUEUED.value
    created_at: datetime | None = None
    first_seen_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    video_url: str | None = None
    url_expires_at: datetime | None = None
    video_path: str | None = None
    error: str | None = None
    download_state: str = "none"
    download_error: str | None = None
    tracked: bool = True
    poll_count: int = 0
    last_polled_at: datetime | None = None
    next_poll_at: datetime | None = None
    request: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    service: str | None = None
    owner: str | None = None
    key_fingerprint: str | None = None
    saved_on: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task is ``completed`` or ``failed``."""
        return self.status.is_terminal

    @property
    def queued_s(self) -> float | None:
        """Seconds from creation (or first sight) until seen processing."""
        return _seconds_between(self.created_at or self.first_seen_at, self.started_at)

    @property
    def processing_s(self) -> float | None:
        """Seconds from seen processing until seen finished."""
        return _seconds_between(self.started_at, self.finished_at)

    @property
    def total_s(self) -> float | None:
        """Seconds from creation (or first sight) until seen finished."""
        return _seconds_between(self.created_at or self.first_seen_at, self.finished_at)

    @property
    def amount(self) -> float | None:
        """What the task cost, as the service reported it (``amount`` in its
        last answer), or None where it reports none."""
        return _answers.amount(self.raw)

    @property
    def progress(self) -> float | None:
        """The service's progress percentage in its last answer, or None."""
        return _answers.progress(self.raw)

    @property
    def task(self) -> Task:
        """The record as a :class:`~veo_nb.Task` (``video_path`` set once saved)."""
        saved = self.download_state == "saved" and self.video_path
        return Task(
            id=self.task_id,
            object=_as_text(self.raw.get("object", "video")),
            created=self.created_at,
            model=self.model,
            status=self.status,
            video_url=self.video_url,
            actual_duration=_as_float(self.raw.get("actualDuration")),
            error=self.error,
            raw=MappingProxyType(dict(self.raw)),
            video_path=Path(self.video_path) if saved and self.video_path else None,
            amount=self.amount,
            progress=self.progress,
        )

    @classmethod
    def from_task(
        cls,
        task: Task,
        *,
        prompt: str | None = None,
        label: str | None = None,
        request: Mapping[str, Any] | None = None,
        mode: Mode | str | None = None,
        now: datetime | None = None,
        url_lifetime_s: float = URL_LIFETIME_S,
    ) -> TaskRecord:
        """A fresh record for a task seen for the first time at ``now``.

        ``request`` is the create payload as sent; model, resolution, aspect
        ratio, prompt and (unless given) mode are taken from it. A task that is
        already processing or finished gets ``started_at``/``finished_at`` =
        ``now``, and a completed one's link expires ``url_lifetime_s`` later
        (pass the scaled lifetime for the emulator).
        """
        now = now or utcnow()
        request = dict(request or {})
        if mode is None and request:
            mode = payload_mode(request)
        terminal = task.status.is_terminal
        started = now if terminal or task.status is TaskStatus.PROCESSING else None
        finished = now if terminal else None
        expires = (
            now + timedelta(seconds=url_lifetime_s)
            if task.status is TaskStatus.COMPLETED and task.video_url
            else None
        )
        return cls(
            task_id=task.id,
            label=label,
            prompt=prompt if prompt is not None else _as_text(request.get("prompt")),
            model=task.model or _as_text(request.get("model")),
            resolution=_as_text(request.get("resolution")),
            aspect_ratio=_as_text(request.get("aspect_ratio")),
            mode=None if mode is None else str(mode),
            status=task.status,
            status_text=task.status_text,
            created_at=task.created,
            first_seen_at=now,
            started_at=started,
            finished_at=finished,
            video_url=task.video_url,
            url_expires_at=expires,
            error=task.error,
            request=request,
            raw=dict(task.raw),
        )


@dataclass(frozen=True)
class Event:
    """One line of a task's history.

    ``kind`` is one of :data:`EVENT_KINDS`: ``"status"`` (a status was
    observed; ``status`` is the string as sent), ``"poll_error"`` (a poll
    failed; ``http_status`` and ``attempt`` say how), ``"download"``,
    ``"gave_up"``, ``"note"`` or ``"error"`` (an unexpected error of a worker
    thread; ``task_id`` is empty when no task was involved). ``detail`` is
    free text (an error message, a path).
    """

    task_id: str
    kind: str
    status: str | None = None
    observed_at: datetime = field(default_factory=utcnow)
    http_status: int | None = None
    attempt: int | None = None
    detail: str | None = None


def to_unix(value: datetime | None) -> float | None:
    """Unix seconds of a datetime (a naive one is taken as UTC), or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


@overload
def from_unix(value: float) -> datetime: ...
@overload
def from_unix(value: float | None) -> datetime | None: ...
def from_unix(value: float | None) -> datetime | None:
    """A UTC datetime from unix seconds, or None."""
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def utc_column(seconds: Any) -> pd.Series:
    """A ``datetime64[ns, UTC]`` column from unix seconds (NaN/None, and
    times outside what it can hold, → NaT), exact to the microsecond (until
    the year 2106, where float seconds run out)."""
    micros = np.round(np.asarray(seconds, dtype="float64") * 1e6)
    micros = np.where(np.abs(micros) < _NS_LIMIT_US, micros, np.nan)  # beyond 1677-2262: NaT
    column: pd.Series = pd.Series(pd.to_datetime(micros, unit="us", utc=True).astype(_UTC_NS))
    return column


def status_column(values: Any) -> pd.Categorical:
    """The ordered status categorical for server strings: known statuses
    (case and spaces ignored) map to themselves, other strings to
    ``"unknown"``, missing values stay missing."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    lookup = np.array(
        [STATUS_CATEGORIES.index(TaskStatus.parse(u).value) for u in uniques] + [-1],
        dtype=np.int8,
    )
    return pd.Categorical.from_codes(lookup[codes], dtype=STATUS_DTYPE)


def history_from_rows(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """The history frame of ``rows`` that hold the :data:`HISTORY_COLUMNS`
    in order, with ``observed_at`` in unix seconds and ``status`` as sent."""
    table = np.array(rows, dtype=object).reshape(len(rows), len(HISTORY_COLUMNS))
    raw = {name: table[:, i] for i, name in enumerate(HISTORY_COLUMNS)}
    frame = {
        "task_id": pd.Series(raw["task_id"], dtype=object),
        "status": status_column(raw["status"]),
        "observed_at": utc_column(raw["observed_at"]),
        "kind": pd.Series(raw["kind"], dtype=object),
        "http_status": pd.array(raw["http_status"].astype("float64"), dtype="Int64"),
        "attempt": pd.array(raw["attempt"].astype("float64"), dtype="Int64"),
        "detail": pd.Series(raw["detail"], dtype=object),
        "owner": pd.Series(raw["owner"], dtype=object),
    }
    history: pd.DataFrame = pd.DataFrame(frame, columns=list(HISTORY_COLUMNS))
    return history


def history_frame(events: Iterable[Event], owners: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """One row per event: task_id, status, observed_at, kind, http_status,
    attempt, detail, and the ``owner`` of its task (from ``owners``: task id
    → owner)."""
    owners = owners or {}
    return history_from_rows([
        (e.task_id, e.status, to_unix(e.observed_at), e.kind, e.http_status, e.attempt, e.detail,
         owners.get(e.task_id))
        for e in events
    ])


def tasks_frame(records: Iterable[TaskRecord]) -> pd.DataFrame:
    """One row per task: the columns of :data:`TASK_COLUMNS` (durations in
    seconds), then :data:`TASK_EXTRA_COLUMNS`."""
    records = list(records)
    stamps = ("created_at", "first_seen_at", "started_at", "finished_at",
              "url_expires_at", "last_polled_at", "next_poll_at")
    durations = ("queued_s", "processing_s", "total_s")
    numbers = ("amount", "progress")
    texts = [c for c in TASK_COLUMNS + TASK_EXTRA_COLUMNS
             if c not in stamps + durations + numbers + ("status", "tracked", "poll_count")]
    columns: dict[str, Any] = {
        name: pd.Series([getattr(r, name) for r in records], dtype=object) for name in texts
    }
    for name in stamps:
        columns[name] = utc_column([to_unix(getattr(r, name)) for r in records])
    for name in durations + numbers:
        columns[name] = pd.Series([getattr(r, name) for r in records], dtype="float64")
    columns["status"] = status_column([r.status.value for r in records])
    columns["tracked"] = pd.Series([r.tracked for r in records], dtype=bool)
    columns["poll_count"] = pd.Series([r.poll_count for r in records], dtype="int64")
    tasks: pd.DataFrame = pd.DataFrame(columns)[list(TASK_COLUMNS + TASK_EXTRA_COLUMNS)]
    return tasks


def summary_frame(records: Iterable[TaskRecord] | pd.DataFrame) -> pd.DataFrame:
    """Per model: count, finished, completed, failed, not_found (ids the
    service did not know: typos, not failed generations, so they count in
    neither ``finished`` nor ``failed``), success_rate (completed /
    finished), the median and 90th percentile of the time to finish
    (``total_s`` of completed tasks), in seconds, ``amount``, what the
    service said the tasks cost (NaN where it said nothing), and
    ``unconfirmed``, creates whose answer never came (they may have been
    billed: :mod:`veo_nb._spending`). When the service reported costs, a last
    row (:data:`TOTAL_ROW`) sums every model. ``records`` may be a
    :func:`tasks_frame` already built."""
    tasks = records if isinstance(records, pd.DataFrame) else tasks_frame(records)
    model = tasks["model"].fillna("(unknown)").astype(object)
    rows = []
    groups = [(name, tasks.index[model == name]) for name in sorted(set(model))]
    if tasks["amount"].notna().any():
        groups.append((TOTAL_ROW, tasks.index))
    for name, index in groups:
        group = tasks.loc[index]
        completed = group["status"] == TaskStatus.COMPLETED.value
        not_found = int((group["error"] == NOT_FOUND_REASON).sum())
        failed = int((group["status"] == TaskStatus.FAILED.value).sum()) - not_found
        finished = int(completed.sum()) + failed
        times = group.loc[completed, "total_s"].dropna()
        amounts = group["amount"].dropna()
        rows.append((
            name, len(group), finished, int(completed.sum()), failed, not_found,
            int(completed.sum()) / finished if finished else math.nan,
            times.median() if len(times) else math.nan,
            times.quantile(0.9) if len(times) else math.nan,
            math.fsum(amounts) if len(amounts) else math.nan,
            int(group["task_id"].astype(str).str.startswith(UNCONFIRMED_PREFIX).sum()),
        ))
    frame: pd.DataFrame = pd.DataFrame.from_records(rows, columns=list(SUMMARY_COLUMNS))
    frame["model"] = frame["model"].astype(object)
    for column in ("count", "finished", "completed", "failed", "not_found", "unconfirmed"):
        frame[column] = frame[column].astype("int64")
    for column in ("success_rate", "median_s", "p90_s", "amount"):
        frame[column] = frame[column].astype("float64")
    return frame


def reported_cost(records: Iterable[TaskRecord]) -> tuple[float, int]:
    """The sum of the amounts the service reported for ``records`` (NaN when
    it reported none), and for how many of them it reported one."""
    amounts = [a for a in (r.amount for r in records) if a is not None]
    return (math.fsum(amounts) if amounts else math.nan), len(amounts)


#: A CSV cell starting with one of these is a formula to a spreadsheet.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula
    (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return:
    prompts, labels and server errors are untrusted) prefixed with ``'``, as
    OWASP's CSV-injection guidance advises. Only for CSV: DataFrames, Parquet
    and JSON keep the exact text."""
    out: pd.DataFrame = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype != object and not pd.api.types.is_string_dtype(column.dtype):
            continue
        risky = column.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
        if risky.any():
            out[name] = column.astype(object).where(~risky, "'" + column.astype(str))
    return out


def export(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path``, the format chosen by the suffix: ``.csv``,
    ``.parquet`` (needs pyarrow) or ``.json`` (records, ISO dates). Parent
    folders are created. Returns the path written.

    In CSV only, text that a spreadsheet would run as a formula gets a leading
    ``'`` (see :func:`csv_safe`); the other formats keep every string exact."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValidationError(
            f"cannot export to {path.name!r}: use a file name ending in "
            f"{', '.join(EXPORT_SUFFIXES)}"
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ValidationError(
            "exporting to .parquet needs pyarrow: pip install pyarrow "
            "(or export to .csv or .json)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        csv_safe(frame).to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", date_format="iso", date_unit="us", indent=1)
    return path

