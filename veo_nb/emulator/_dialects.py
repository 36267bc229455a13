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
``message_error``      a failure's reason under ``message`` (``error`` null)
``object_error``       ``error`` as ``{"message", "code", "type"}``
``synonyms``           statuses as ``PENDING``, ``Running``, ``IN_PROGRESS``,
                       ``Succeeded``, ``SUCCESS``, ``done``, ``Error``...
``business_errors``    a wrong key answered HTTP 200 ``{"code": "204",
                       "msg": "登录验证失败"}`` (login failed)
``transient_401``      the second poll of a task answered 401 (gateway body)
``transient_404``      the second and third polls of a task answered 404
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

from ..errors import ValidationError

#: Every dialect, in the order of the table above.
DIALECTS: tuple[str, ...] = (
    "envelope", "result_url", "url", "message_error", "object_error", "synonyms",
    "business_errors", "transient_401", "transient_404", "created_202", "failed_create",
    "amount",
)
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

    def transient(self, poll_number: int) -> int | None:
        """The HTTP status a known task's ``poll_number``-th poll (1, 2, ...)
        is answered with instead of its state, or None."""
        if "transient_401" in self and poll_number == 2:
            return 401
        if "transient_404" in self and poll_number in (3, 4):
            return 404
        return None

    def result(self, body: dict[str, Any], progress: float | None) -> dict[str, Any]:
        """A task answer (create or result) as the enabled dialects shape it."""
        task_id = str(body.get("id", ""))
        out = dict(body)
        status = out.get("status")
        if "amount" in self and out.get("model") in AMOUNTS:
            out["amount"] = AMOUNTS[str(out["model"])]
            if status == "processing" and progress is not None:
                out["progress"] = round(progress)
        link = self._pick(task_id, ("result_url", "url"))
        if link is not None and "video_url" in out:
            out[link] = out.pop("video_url")
        form = self._pick(task_id, ("message_error", "object_error"))
        if form is not None and status == "failed" and out.get("error"):
            reason = out["error"]
            if form == "message_error":
                out["error"], out["message"] = None, reason
            else:
                out["error"] = {"message": reason, "code": "generation_failed",
                                "type": "server_error"}
        if "synonyms" in self and isinstance(status, str) and status in _SYNONYMS:
            words = _SYNONYMS[status]
            out["status"] = words[_hash(task_id) % len(words)]
        if "envelope" in self:
            return {"code": 0, "msg": "success", "data": out}
        return out


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:4], "big")
