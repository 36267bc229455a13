"""The tolerant reader of the service's answers: one place that knows every
shape the gateway (and integrations of it) were seen to send.

The documented answer is a task object at the top level: ``id``,
``status`` (``queued``/``processing``/``completed``/``failed``),
``video_url``, ``error``. Public integrations of the same gateway also
handle, and so does this reader:

* the task inside an envelope, ``{"code": 0, "msg": "success", "data": {...}}``;
* the id under ``task_id`` (or ``taskId``);
* the link under ``result_url`` or ``url`` instead of ``video_url``;
* the failure reason as an object (``{"message", "code", "type"}``), or
  under ``message``/``msg``;
* statuses in other casings and words (``Succeeded``, ``IN_PROGRESS``,
  ``pending``...), mapped to the four; a word still unknown is kept and shown
  as ``unknown: <word>``;
* ``amount`` (what the task cost) and ``progress`` (percent) as numbers or
  numeric strings;
* a business error at HTTP 200, ``{"code": "204", "msg": "登录验证失败"}``
  (login failed), with no task in it: see :func:`business_error`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

#: Status words seen on gateways of this kind, by the status they mean.
STATUS_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("queued", "pending", "submitted", "waiting", "queue", "created",
                     "not_start", "not_started"), "queued"),
    **dict.fromkeys(("processing", "running", "in_progress", "generating", "started",
                     "progress"), "processing"),
    **dict.fromkeys(("completed", "succeeded", "success", "successful", "done", "finished",
                     "complete"), "completed"),
    **dict.fromkeys(("failed", "failure", "fail", "error", "cancelled", "canceled",
                     "expired", "timeout", "rejected"), "failed"),
}
#: Fields that may hold the video's link, in order of preference.
LINK_FIELDS = ("video_url", "result_url", "url", "videoUrl", "resultUrl")
#: Fields that may hold the task id.
ID_FIELDS = ("id", "task_id", "taskId")
#: Business codes that mean "success" in an envelope.
_OK_CODES = frozenset({"0", "200", "success", "ok"})
#: Words of a business error that mean the key or login was refused.
_AUTH_WORDS = re.compile(
    r"登录|认证|鉴权|令牌|密钥|未授权|auth|login|token|api[\s_-]?key|unauthori[sz]ed|"
    r"forbidden|credential|permission", re.IGNORECASE)
_AUTH_CODES = frozenset({"204", "401", "403", "authenticationerror", "unauthorized"})


def normalise_status(value: Any) -> tuple[str | None, str | None]:
    """``(status, word)``: one of the four statuses (None when unknown) and
    the word as sent (None when there was none)."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    key = re.sub(r"[\s-]+", "_", value.strip().lower())
    return STATUS_SYNONYMS.get(key), value


def task_object(data: Any) -> Mapping[str, Any] | None:
    """The task in an answer: the top level when it names a task, else a
    ``data`` (or ``result``) envelope's content; None when neither does."""
    if not isinstance(data, Mapping):
        return None
    if _names_a_task(data):
        return data
    for key in ("data", "result"):
        inner = data.get(key)
        if isinstance(inner, Mapping) and _names_a_task(inner):
            return inner
    return None


def _names_a_task(data: Mapping[str, Any]) -> bool:
    return any(isinstance(data.get(k), str) and data.get(k) for k in ID_FIELDS)


def task_id(task: Mapping[str, Any]) -> str | None:
    """The task's id (``id``, else ``task_id``/``taskId``)."""
    for key in ID_FIELDS:
        value = task.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def video_link(task: Mapping[str, Any]) -> str | None:
    """The video's link: ``video_url``, else ``result_url``, else ``url``."""
    for key in LINK_FIELDS:
        value = task.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def reason(task: Mapping[str, Any], *, failed: bool) -> str | None:
    """Why the task failed: ``error`` (a string, or an object's ``message``),
    else, for a failed task, ``message``/``msg``."""
    error = task.get("error")
    if isinstance(error, Mapping):
        text = _text(error.get("message")) or _text(error.get("msg"))
        code = _text(error.get("code"))
        if text:
            return text
        return code or None
    if _text(error):
        return _text(error)
    if failed:
        return _text(task.get("message")) or _text(task.get("msg"))
    return None


def number(value: Any) -> float | None:
    """A finite number from a JSON number or a numeric string (``"0.35"``,
    ``"45%"``), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip().rstrip("%").strip()
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def amount(raw: Mapping[str, Any]) -> float | None:
    """What the task cost, as the service reported it (``amount``), or None."""
    return number(raw.get("amount"))


def progress(raw: Mapping[str, Any]) -> float | None:
    """The service's progress percentage (0–100), or None."""
    value = number(raw.get("progress"))
    return None if value is None else min(max(value, 0.0), 100.0)


def business_error(data: Any) -> tuple[str, bool] | None:
    """For an answer with no task in it that carries the gateway's own
    error (``{"code": "204", "msg": "登录验证失败"}``, or ``{"error": {...}}``):
    ``(message, is_authentication)``. None when the answer says nothing of
    the kind (then it is simply not a task)."""
    if not isinstance(data, Mapping) or task_object(data) is not None:
        return None
    error = data.get("error")
    code = _text(data.get("code"))
    message = (_text(data.get("msg")) or _text(data.get("message"))
               or (reason(data, failed=True) if error else None))
    if isinstance(error, Mapping):
        code = code or _text(error.get("code")) or _text(error.get("type"))
    if not message and not code:
        return None
    if code is not None and code.lower() in _OK_CODES and not error:
        return None
    text = message or f"code {code}"
    if code and message:
        text = f"{message} (code {code})"
    auth = bool((code and code.lower() in _AUTH_CODES) or _AUTH_WORDS.search(message or ""))
    return text, auth


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (Mapping, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text.strip() or None
