"""The gateway's dialects: answers the real service was seen to give that
differ from its documentation, so that veo_nb is tested against them too.

``Emulator(dialects=...)`` (or ``VEO_EMULATOR_DIALECTS``, comma-separated,
``all`` for every one) turns them on. Where several variants of one thing
exist (the link's field, the error's form), each task gets one of the
enabled ones, chosen by a hash of its id, so a run sees a mix.

=====================  ====================================================
``envelope``           answers inside ``{"code": 0, "msg": "success", "data": {...}}``
``result_url``         the link under ``result_url`` instead of ``video_url``
``url``                the link under ``url``
``output_url``         the link under ``output_url``
``download_url``       the link under ``download_url``
``video_urls``         the link in a list, ``video_urls: [...]``
``outputs``            the link in ``outputs: [{"url", "type"}]``
``nested_link``        the link deep in fields veo_nb does not name
                       (``task_result.videos[0].uri``), beside a cover image's
``relative_link``      the link relative to the API's origin
                       (``/files/v/<id>/<token>.mp4``, served by the API host)
``late_link``          the first ``completed`` answer without the link; the
                       next ones carry it
``message_error``      a failure's reason under ``message`` (``error`` null)
``object_error``       ``error`` as ``{"message", "code", "type"}``
``reason_fields``      a failure's reason under ``failReason``, ``failMsg``,
                       ``fail_msg``, ``detail`` or ``reason`` (``error`` null)
``status_reason``      a failure as ``status: "failed: <reason>"`` (``error`` null)
``support_codes``      a safety failure's reason ends with Veo's
                       ``Support codes: <code>``
``synonyms``           statuses as ``PENDING``, ``Running``, ``IN_PROGRESS``,
                       ``Succeeded``, ``SUCCESS``, ``done``, ``Error``...
``business_errors``    a wrong key answered HTTP 200 ``{"code": "204",
                       "msg": "登录验证失败"}`` (login failed)
``transient_401``      the second poll of a task answered 401 (gateway body)
``transient_404``      the third and fourth polls of a task answered 404
``transient_status``   the fifth poll of a task answered 408, 425, 433, 520,
                       521, 522, 523 or 524 (in turn, over the emulator's tasks)
``balance``            a prompt with ``[no-balance]`` refused at create, one
                       with ``[no-balance-later]`` at its second poll, as an
                       empty balance or spent quota, in turn at HTTP 200
                       (``{"code", "msg": "余额不足..."}``), 402, 403 and 429
``created_202``        creates answered 202
``failed_create``      a prompt with ``[refused]`` answered at create time
                       with ``status: failed`` and a reason
``amount``             results carry ``amount`` (what the task cost) and,
                       while processing, ``progress``
=====================  ====================================================

Without dialects, a wrong key gets the gateway's 401 body,
``{"error": {"code": "AuthenticationError", "message": ..., "type":
"Unauthorized"}}``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..errors import ValidationError

#: Every dialect, in the order of the table above.
DIALECTS: tuple[str, ...] = (
    "envelope", "result_url", "url", "output_url", "download_url", "video_urls", "outputs",
    "nested_link", "relative_link", "late_link", "message_error", "object_error",
    "reason_fields", "status_reason", "support_codes", "synonyms", "business_errors",
    "transient_401", "transient_404", "transient_status", "balance", "created_202",
    "failed_create", "amount",
)
#: The link's forms, one per task among the enabled ones.
LINK_FORMS = ("result_url", "url", "output_url", "download_url", "video_urls", "outputs",
              "nested_link", "relative_link")
#: A failure reason's forms, one per task among the enabled ones.
REASON_FORMS = ("message_error", "object_error", "reason_fields", "status_reason")
#: The fields of ``reason_fields``, one per task.
REASON_FIELDS = ("failReason", "failMsg", "fail_msg", "detail", "reason")
#: Where the API host serves ``relative_link`` videos (the media path follows).
RELATIVE_PREFIX = "/files"
#: The statuses of ``transient_status``, in turn.
TRANSIENT_STATUSES = (408, 425, 433, 520, 521, 522, 523, 524)
#: The prompt directives of ``balance``: refused at create, at the second poll.
NO_BALANCE, NO_BALANCE_LATER = "[no-balance]", "[no-balance-later]"
#: The refusals of ``balance``, in turn: (HTTP status, body).
BALANCE_REFUSALS: tuple[tuple[int, dict[str, Any]], ...] = (
    (200, {"code": "500", "msg": "余额不足，请充值后再试"}),
    (402, {"error": {"message": "insufficient balance: top up your account",
                     "type": "insufficient_balance"}}),
    (403, {"error": {"message": "该令牌额度已用尽 (this token's quota is used up)",
                     "type": "new_api_error"}}),
    (429, {"error": {"message": "You exceeded your current quota, please check your plan "
                                "and billing details.", "type": "insufficient_quota"}}),
)
#: Support codes ``support_codes`` appends (the last one is not in the table).
SUPPORT_CODES = ("58061214", "61493863", "29310472", "12345678")
#: Environment variable read when ``Emulator(dialects=None)``.
DIALECTS_ENV = "VEO_EMULATOR_DIALECTS"
#: The prompt directive that ``failed_create`` refuses at create time.
REFUSED_DIRECTIVE = "[refused]"
#: The reason given for such a refusal.
REFUSED_REASON = "prompt rejected by the content policy at submission"
#: What a task costs per model, in the service's unit, with ``amount``.
AMOUNTS = {"veo_3_1_fast": 0.35, "veo_3_1_pro": 1.2, "veo_3_1_pro_stable": 1.0,
           "veo_3_1_fast_stable": 0.3}
_SYNONYMS = {
    "queued": ("PENDING", "submitted", "Waiting"),
    "processing": ("Running", "IN_PROGRESS", "generating"),
    "completed": ("Succeeded", "SUCCESS", "done"),
    "failed": ("Error", "FAILED", "failure"),
}


def gateway_401(message: str) -> dict[str, Any]:
    """The gateway's body for a refused key."""
    return {"error": {"code": "AuthenticationError", "message": message, "type": "Unauthorized"}}


class Dialects:
    """The enabled dialects, and how each rewrites one answer."""

    def __init__(self, names: str | Iterable[str] | None = None) -> None:
        if names is None:
            names = os.environ.get(DIALECTS_ENV, "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        wanted = set(names)
        if "all" in wanted:
            wanted = set(DIALECTS)
        unknown = sorted(wanted - set(DIALECTS))
        if unknown:
            raise ValidationError(f"unknown emulator dialect(s) {', '.join(unknown)}: "
                                  f"use 'all' or some of {', '.join(DIALECTS)}")
        self.enabled = frozenset(wanted)
        self._balance_turn = 0
        self._transient_turn = 0

    def __bool__(self) -> bool:
        return bool(self.enabled)

    def __contains__(self, name: str) -> bool:
        return name in self.enabled

    def _pick(self, task_id: str, options: tuple[str, ...]) -> str | None:
        """One of the enabled ``options`` for this task (stable), or None."""
        chosen = [o for o in options if o in self.enabled]
        if not chosen:
            return None
        return chosen[_hash(task_id) % len(chosen)]

    def refused_at_create(self, prompt: str) -> bool:
        """Whether a create of ``prompt`` is answered ``failed`` at once."""
        return "failed_create" in self and REFUSED_DIRECTIVE in prompt.lower()

    def balance_refusal(self, prompt: str, poll_number: int = 0) -> tuple[int, dict[str, Any]] | None:
        """The empty-balance answer to a create (``poll_number`` 0) or to the
        ``poll_number``-th poll of a task of ``prompt``, or None. (The caller
        holds the service's lock: the forms come in turn.)"""
        if "balance" not in self:
            return None
        lower = prompt.lower()
        wanted = NO_BALANCE_LATER in lower if poll_number else NO_BALANCE in lower
        if not wanted or poll_number not in (0, 2):
            return None
        self._balance_turn += 1
        return BALANCE_REFUSALS[(self._balance_turn - 1) % len(BALANCE_REFUSALS)]

    def transient(self, task_id: str, poll_number: int) -> tuple[int, dict[str, Any]] | None:
        """The answer a known task's ``poll_number``-th poll (1, 2, ...) gets
        instead of its state, or None. (The caller holds the service's lock.)"""
        if "transient_401" in self and poll_number == 2:
            return 401, gateway_401("token verification failed, please retry")
        if "transient_404" in self and poll_number in (3, 4):
            return 404, {"error": {"message": f"task not found: {task_id}", "type": "not_found"}}
        if "transient_status" in self and poll_number == 5:
            self._transient_turn += 1
            status = TRANSIENT_STATUSES[(self._transient_turn - 1) % len(TRANSIENT_STATUSES)]
            return status, {"error": {"message": f"upstream busy (HTTP {status}), retry later",
                                      "type": "upstream_error"}}
        return None

    def result(self, body: dict[str, Any], progress: float | None, *,
               first_final: bool = False) -> dict[str, Any]:
        """A task answer (create or result) as the enabled dialects shape it;
        ``first_final``: the first answer that says the task ended."""
        task_id = str(body.get("id", ""))
        out = dict(body)
        status = out.get("status")
        if "amount" in self and out.get("model") in AMOUNTS:
            out["amount"] = AMOUNTS[str(out["model"])]
            if status == "processing" and progress is not None:
                out["progress"] = round(progress)
        if "late_link" in self and first_final and status == "completed":
            out["video_url"] = None
        link = self._pick(task_id, LINK_FORMS)
        if link is not None and "video_url" in out:
            _move_link(out, link)
        if "synonyms" in self and isinstance(status, str) and status in _SYNONYMS:
            words = _SYNONYMS[status]
            out["status"] = words[_hash(task_id) % len(words)]
        self._reason(out, task_id)
        if "envelope" in self:
            return {"code": 0, "msg": "success", "data": out}
        return out

    def _reason(self, out: dict[str, Any], task_id: str) -> None:
        """A failure's reason in the form this task's dialects give it."""
        reason = out.get("error")
        if not reason or out.get("status") not in ("failed", *_SYNONYMS["failed"]):
            return
        if "support_codes" in self and "safety" in str(reason).lower():
            code = SUPPORT_CODES[_hash(task_id) % len(SUPPORT_CODES)]
            reason = out["error"] = f"{reason} Support codes: {code}"
        form = self._pick(task_id, REASON_FORMS)
        if form == "message_error":
            out["error"], out["message"] = None, reason
        elif form == "object_error":
            out["error"] = {"message": reason, "code": "generation_failed", "type": "server_error"}
        elif form == "reason_fields":
            out["error"] = None
            out[REASON_FIELDS[_hash(task_id + "reason") % len(REASON_FIELDS)]] = reason
        elif form == "status_reason":
            out["error"], out["status"] = None, f"{out['status']}: {reason}"


def _move_link(out: dict[str, Any], form: str) -> None:
    """``out``'s ``video_url`` moved to where the ``form`` dialect puts it."""
    url = out.pop("video_url")
    if form == "video_urls":
        out["video_urls"] = [url] if url else []
    elif form == "outputs":
        out["outputs"] = [{"url": url, "type": "video/mp4"}] if url else []
    elif form == "nested_link":
        if url:
            cover = url.rsplit("/", 1)[0] + "/cover.jpg"
            out["task_result"] = {"videos": [{"uri": url, "duration": 8}],
                                  "cover_image_url": cover}
    elif form == "relative_link":
        out["video_url"] = RELATIVE_PREFIX + urlsplit(url).path if url else None
    else:
        out[form] = url


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:4], "big")
