"""Typed models of what the service returns: :class:`Task` and :class:`TaskStatus`."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import _answers
from ._urls import public_url
from .errors import APIError, AuthenticationError, InsufficientBalanceError, _excerpt


class TaskStatus(str, enum.Enum):
    """A task's status. ``UNKNOWN`` stands for any status string the service
    may add later; :attr:`Task.status_text` keeps the string as sent."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True for ``completed`` and ``failed``: the task will not change again."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)

    @classmethod
    def parse(cls, value: Any) -> TaskStatus:
        """The status for a server string, in any casing, synonyms included
        (``Succeeded``, ``IN_PROGRESS``, ``pending``...: see
        :data:`veo_nb._answers.STATUS_SYNONYMS`); unknown strings give ``UNKNOWN``."""
        status, _ = _answers.normalise_status(value)
        return cls.UNKNOWN if status is None else cls(status)

    def __str__(self) -> str:
        return self.value


#: What a business error's message adds, by its kind (see :func:`veo_nb._answers.business_error`).
_HINTS = {
    "auth": " — check the API key (VEO_API_KEY)",
    "balance": f" — {_answers.BALANCE_HINT}",
}


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, repr=False)
class Task:
    """One video-generation task as last reported by the service.

    Immutable. ``raw`` is the JSON object as received, including any field
    this version does not know. ``video_path`` is set by the tracker once the
    video is saved locally.
    """

    id: str
    object: str | None = "video"
    created: datetime | None = None
    model: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    video_url: str | None = None
    actual_duration: float | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    video_path: Path | None = None
    #: What the task cost, where the service reports it (``amount``).
    amount: float | None = None
    #: The service's progress percentage while it runs, where it reports one.
    progress: float | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task is ``completed`` or ``failed``."""
        return self.status.is_terminal

    @property
    def status_text(self) -> str:
        """The status; an unknown one as ``unknown: <the word as sent>``."""
        if self.status is not TaskStatus.UNKNOWN:
            return str(self.status.value)
        _, word = _answers.normalise_status(self.raw.get("status"))
        return f"unknown: {word}" if word else self.status.value

    def __repr__(self) -> str:
        parts = [f"id={_excerpt(self.id, 80)!r}", f"status={_excerpt(self.status_text, 40)!r}"]
        if self.model:
            parts.append(f"model={_excerpt(self.model, 80)!r}")
        if self.error:
            parts.append(f"error={_excerpt(self.error, 80)!r}")
        if self.video_path:
            parts.append(f"video_path={str(self.video_path)!r}")
        elif self.video_url:  # without its signed query, as everywhere else
            parts.append(f"video_url={_excerpt(public_url(self.video_url), 80)!r}")
        return f"Task({', '.join(parts)})"

    @classmethod
    def from_json(cls, data: Any) -> Task:
        """Build a task from a decoded JSON body, as the service (or a gateway
        in front of it) may shape it: see :mod:`veo_nb._answers` (envelopes,
        other id/link/reason fields, status synonyms, ``amount``/``progress``).

        Tolerant of ``null`` and unknown fields. Raises
        :class:`~veo_nb.AuthenticationError`,
        :class:`~veo_nb.InsufficientBalanceError` (an empty balance or spent
        quota) or :class:`~veo_nb.APIError` with the service's own message for
        a business error at HTTP 200, and
        :class:`~veo_nb.APIError` for a body that is not a task.
        """
        if not isinstance(data, Mapping):
            raise APIError(
                f"expected a JSON object describing a task, got {type(data).__name__}: "
                f"{_excerpt(repr(data), 120)}"
            )
        task = _answers.task_object(data)
        if task is None:
            said = _answers.business_error(data)
            if said is not None:
                message, kind = said
                error = {"auth": AuthenticationError,
                         "balance": InsufficientBalanceError}.get(kind or "", APIError)
                raise error(f"the service answered: {_excerpt(message, 200)}"
                            + _HINTS.get(kind or "", ""),
                            body_excerpt=_excerpt(repr(dict(data)), 200))
            raise APIError(
                f"the response has no task id: {_excerpt(repr(dict(data)), 120)}"
            )
        status = TaskStatus.parse(task.get("status"))
        return cls(
            id=_answers.task_id(task) or "",
            object=_as_text(task.get("object")),
            created=_as_datetime(task.get("created")),
            model=_as_text(task.get("model")),
            status=status,
            video_url=_answers.video_link(task, completed=status is TaskStatus.COMPLETED),
            actual_duration=_as_float(task.get("actualDuration")),
            error=_answers.reason(task, failed=status is TaskStatus.FAILED),
            raw=MappingProxyType(dict(task)),
            amount=_answers.amount(task),
            progress=_answers.progress(task),
        )
