"""The tolerant reader of the service's answers: one place that knows every
shape the gateway (and integrations of it) were seen to send.

The documented answer is a task object at the top level: ``id``,
``status`` (``queued``/``processing``/``completed``/``failed``),
``video_url``, ``error``. Public integrations of the same gateway also
handle, and so does this reader:

* the task inside an envelope, ``{"code": 0, "msg": "success", "data": {...}}``;
* the id under ``task_id`` (or ``taskId``);
* the link under other fields (``result_url``, ``url``, ``output_url``,
  ``download_url``...), in a list (``video_urls``, ``outputs: [{"url"}]``),
  relative to the API's origin, or, as a last resort for a completed task,
  the one link to a video anywhere in the answer (see :mod:`veo_nb._links`);
* the failure reason as an object (``{"message", "code", "type"}``), under
  ``failReason``, ``failMsg``, ``fail_msg``, ``detail``, ``reason``,
  ``message`` or ``msg``, or attached to the status (``failed: <reason>``);
* statuses in other casings and words (``Succeeded``, ``IN_PROGRESS``,
  ``pending``...), mapped to the four; a word still unknown is kept and shown
  as ``unknown: <word>``;
* ``amount`` (what the task cost) and ``progress`` (percent) as numbers or
  numeric strings;
* a business error at HTTP 200, ``{"code": "204", "msg": "登录验证失败"}``
  (login failed), with no task in it: see :func:`business_error`; an
  empty balance or a spent quota (``余额不足``, ``额度``, ``insufficient
  balance``, ``quota``) is told apart from other errors
  (:func:`is_balance_refusal`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from . import _links, _safety

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
#: Fields that may hold a failed task's reason, after ``error``, in order of preference.
REASON_FIELDS = ("failReason", "fail_reason", "failMsg", "fail_msg", "detail", "reason",
                 "message", "msg")
#: Fields that may hold the task id.
ID_FIELDS = ("id", "task_id", "taskId")
#: Business codes that mean "success" in an envelope.
_OK_CODES = frozenset({"0", "200", "success", "ok"})
#: Words of a business error that mean the key or login was refused.
_AUTH_WORDS = re.compile(
    r"登录|认证|鉴权|令牌|密钥|未授权|auth|login|token|api[\s_-]?key|unauthori[sz]ed|"
    r"forbidden|credential|permission", re.IGNORECASE)
_AUTH_CODES = frozenset({"204", "401", "403", "authenticationerror", "unauthorized"})
#: Words of an error that mean the account's balance or quota is spent.
_BALANCE_WORDS = re.compile(
    r"余额不足|余额已用|额度|欠费|请充值|insufficient[\s_-]*(balance|quota|funds|credits?)|"
    r"\bquota\b|\bbalance\b|out of credits?|billing hard limit", re.IGNORECASE)
#: What an error of a spent balance adds to the service's words.
BALANCE_HINT = "the account's balance or quota is spent: top it up, then try again"
#: Words of a quota that is a rate (requests per minute...), not a balance.
_PER_TIME = re.compile(r"\brate\b|per[\s_-]?(second|minute|min|hour)|\brpm\b|\bqps\b",
                       re.IGNORECASE)
#: A reason attached to a status word: ``failed: <reason>``.
_ATTACHED = re.compile(r"^\s*([A-Za-z_ -]+?)\s*[:：]\s*(.*)$", re.DOTALL)


def normalise_status(value: Any) -> tuple[str | None, str | None]:
    """``(status, word)``: one of the four statuses (None when unknown) and
    the word as sent (None when there was none)."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    status = STATUS_SYNONYMS.get(_status_key(value))
    if status is None:
        attached = _ATTACHED.match(value)
        if attached is not None:
            status = STATUS_SYNONYMS.get(_status_key(attached.group(1)))
    return status, value


def attached_reason(value: Any) -> str | None:
    """The reason sent with a status word (``failed: quota of the model
    exceeded`` gives ``quota of the model exceeded``), else None."""
    if not isinstance(value, str) or STATUS_SYNONYMS.get(_status_key(value)):
        return None
    attached = _ATTACHED.match(value)
    if attached is None or STATUS_SYNONYMS.get(_status_key(attached.group(1))) is None:
        return None
    return _text(attached.group(2))


def _status_key(word: str) -> str:
    return re.sub(r"[\s-]+", "_", word.strip().lower())


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


def video_link(task: Mapping[str, Any], *, completed: bool) -> str | None:
    """The video's link: a field named for it (``video_url`` first, see
    :data:`veo_nb._links.LINK_FIELDS`) or a list of links; for a
    ``completed`` task without one, the one link to a video in the answer
    (:func:`veo_nb._links.search`). It may be relative to the API's origin."""
    link = _links.named(task)
    if link is None and completed:
        link = _links.search(task)
    return link


def reason(task: Mapping[str, Any], *, failed: bool) -> str | None:
    """Why the task failed: ``error`` (a string, or an object's ``message``),
    else, for a failed task, the first of :data:`REASON_FIELDS`, else the
    reason attached to its status (``failed: <reason>``). Safety filter
    support codes in it are explained (:func:`veo_nb._safety.explain`)."""
    text = _reason(task, failed=failed)
    return None if text is None else _safety.explain(text)


def _reason(task: Mapping[str, Any], *, failed: bool) -> str | None:
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
        for key in REASON_FIELDS:
            text = _text(task.get(key))
            if text:
                return text
        return attached_reason(task.get("status"))
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


def business_error(data: Any) -> tuple[str, str | None] | None:
    """For an answer with no task in it that carries the gateway's own
    error (``{"code": "204", "msg": "登录验证失败"}``, or ``{"error": {...}}``):
    ``(message, kind)``, ``kind`` being ``"auth"`` (the key or login was
    refused), ``"balance"`` (see :func:`is_balance_refusal`) or None. None
    when the answer says nothing of the kind (then it is simply not a task)."""
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
    text = _safety.explain(message) if message else f"code {code}"
    if code and message:
        text = f"{message} (code {code})"
    if is_balance_refusal(text) or is_balance_refusal(_text(data.get("type")) or ""):
        return text, "balance"
    auth = bool((code and code.lower() in _AUTH_CODES) or _AUTH_WORDS.search(message or ""))
    return text, "auth" if auth else None


def is_balance_refusal(text: str, *, rate_limited: bool = False) -> bool:
    """Whether an error's ``text`` says the account's balance or quota is
    spent (``余额不足``, ``额度``, ``insufficient balance``, ``quota``...).
    For a 429 (``rate_limited``), a quota per minute or second is a rate
    limit, not a spent balance."""
    if rate_limited and _PER_TIME.search(text):
        return False
    return bool(_BALANCE_WORDS.search(text))


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (Mapping, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text.strip() or None
