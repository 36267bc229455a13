"""The emulated service behind the HTTP servers: its tasks and clock, what
the API answers (Bearer auth, creates, polls under the 30 s rule, the
gateway's dialects), which file a media link serves, and the counters every
answer updates. One lock guards tasks and counters together, so a stats
snapshot agrees with the tasks it counts.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .._spec import (
    BASE_URL,
    CREATE_PATH,
    MIN_POLL_INTERVAL_S,
    MODELS,
    RESULT_PATH,
    URL_LIFETIME_S,
    build_create_payload,
)
from ..errors import ValidationError
from ._dialects import REFUSED_REASON, Dialects, gateway_401
from ._media import MediaLibrary
from ._stats import Counters, EmulatorStats, MediaRequest
from ._tasks import TaskState, plan_task

logger = logging.getLogger("veo_nb.emulator")

#: The real service's path prefix, kept so URLs differ only by scheme and host.
API_PREFIX = urlsplit(BASE_URL).path.rstrip("/")
_RESULT_PREFIX = RESULT_PATH.split("{", 1)[0]
#: A poll this much earlier than the minimum interval is still accepted (clock jitter).
POLL_TOLERANCE = 0.02
_MEDIA_PATH = re.compile(r"^/v/([^/]+)/([^/]+)\.mp4$")


@dataclass(frozen=True)
class Reply:
    """One API answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error_reply(status: int, kind: str, message: str, *headers: tuple[str, str]) -> Reply:
    """An error answer in the service's ``{"error": {"message", "type"}}`` shape."""
    return Reply(status, {"error": {"message": message, "type": kind}}, headers)


def _retry_after(wait: float) -> str:
    """``Retry-After`` for a wait in seconds: whole seconds, or a decimal below 1 s."""
    if wait >= 1:
        return str(math.ceil(wait))
    return f"{max(math.ceil(wait * 100), 1) / 100:.2f}"


def _payload_from_request(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a decoded create body with the client's rules (plus the
    service's own: ``model`` is required, ``image_urls`` aliases ``input_reference``)."""
    if data.get("model") is None:
        raise ValidationError(f"model is required: use one of {', '.join(MODELS)}")
    refs, alias = data.get("input_reference"), data.get("image_urls")
    if refs is not None and alias is not None:
        raise ValidationError("pass input_reference or its alias image_urls, not both")
    refs = refs if refs is not None else alias
    if refs is not None and not isinstance(refs, (str, list)):
        raise ValidationError(
            f"input_reference must be a list of image URLs, not {type(refs).__name__}"
        )
    options = {k: data[k] for k in ("resolution", "aspect_ratio") if data.get(k) is not None}
    return build_create_payload(
        data.get("prompt"),
        model=data["model"],
        reference_images=refs,
        first_image=data.get("first_image"),
        last_image=data.get("last_image"),
        **options,
    )


class Service:
    """The emulator's service (see the module docstring), called from the
    HTTP handler threads. ``media_url()`` gives the media host's origin for
    video links; ``on_create()`` runs after each accepted create, before it
    is answered (the emulator saves its state file there)."""

    def __init__(
        self,
        *,
        api_key: str,
        time_scale: float,
        failure_rate: float,
        queue_s: tuple[float, float],
        latency_s: float,
        seed: int | None,
        media: MediaLibrary,
        dialects: Dialects,
        media_url: Callable[[], str],
        on_create: Callable[[], None],
    ) -> None:
        #: The only key the API accepts.
        self.api_key = api_key
        self._time_scale = time_scale
        self._failure_rate = failure_rate
        self._queue_s = queue_s
        #: Seconds added to every API answer.
        self.latency_s = latency_s
        self._dialects = dialects
        self._rng = random.Random(seed)
        self._media = media
        self._media_url = media_url
        self._on_create = on_create
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._counters = Counters()
        self._clock_offset = 0.0
        self._hidden: set[str] = set()

    # -- the clock and the scaled rules ----------------------------------------

    def now(self) -> float:
        """The service's clock (monotonic, moved on by :meth:`advance`)."""
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValidationError("the clock only moves forward")
        with self._lock:
            self._clock_offset += seconds

    @property
    def min_poll_interval_s(self) -> float:
        """The scaled 30 s rule."""
        return MIN_POLL_INTERVAL_S * self._time_scale

    @property
    def url_lifetime_s(self) -> float:
        """How long (scaled) a video link works after its task completed."""
        return URL_LIFETIME_S * self._time_scale

    # -- the tasks ---------------------------------------------------------------

    def load(self, tasks: list[TaskState]) -> None:
        """Replace every task with ``tasks`` (loaded from a state file)."""
        with self._lock:
            self._tasks = {task.plan.task_id: task for task in tasks}

    def copy_tasks(self) -> list[TaskState]:
        """A copy of every task, oldest first (for the state file)."""
        with self._lock:
            return [replace(task) for task in self._tasks.values()]

    def task_ids(self) -> list[str]:
        """Ids of every task, oldest first."""
        with self._lock:
            return list(self._tasks)

    def peek(self, task_id: str) -> dict[str, Any]:
        """The result body ``task_id`` would get now (KeyError when unknown)."""
        now = self.now()
        with self._lock:
            task = self._tasks[task_id]
            return task.plan.body(now, self._video_url(task))

    def hide(self, task_id: str, hidden: bool) -> None:
        """Answer 404 for a known ``task_id``, or know it again."""
        with self._lock:
            if task_id not in self._tasks:
                raise KeyError(task_id)
            (self._hidden.add if hidden else self._hidden.discard)(task_id)

    def stats(self, faults: Mapping[str, int]) -> EmulatorStats:
        """A consistent snapshot of the counters, with ``faults`` injected."""
        now = self.now()
        with self._lock:
            statuses = Counter(t.plan.status_at(now) for t in self._tasks.values())
            return self._counters.snapshot(statuses, faults)

    def _video_url(self, task: TaskState) -> str:
        return f"{self._media_url()}/v/{task.plan.task_id}/{task.token}.mp4"

    # -- the API -----------------------------------------------------------------

    def handle_api(
        self, method: str, target: str, authorization: str | None, body: bytes, now: float
    ) -> Reply:
        """Route one API request; every answer of the API goes through here."""
        self._count("requests_total")
        path = urlsplit(target).path
        if not path.startswith(API_PREFIX + "/"):
            return self._not_found(f"no such endpoint: {path}")
        denied = self._check_auth(authorization)
        if denied is not None:
            return denied
        route = path[len(API_PREFIX):]
        if route == CREATE_PATH:
            if method != "POST":
                return error_reply(405, "invalid_request", f"use POST for {CREATE_PATH}")
            return self._create(body)
        if route.startswith(_RESULT_PREFIX):
            if method != "GET":
                return error_reply(405, "invalid_request", f"use GET for {RESULT_PATH}")
            return self._poll(unquote(route[len(_RESULT_PREFIX):]), now)
        return self._not_found(f"no such endpoint: {path}")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters.totals[name] += 1

    def _not_found(self, message: str) -> Reply:
        self._count("not_found")
        return error_reply(404, "not_found", message)

    def _check_auth(self, authorization: str | None) -> Reply | None:
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            if hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return None
            if "business_errors" in self._dialects:  # the gateway's 'login failed' at HTTP 200
                reply = Reply(200, {"code": "204", "msg": "登录验证失败"})
            else:
                reply = Reply(401, gateway_401("invalid API key"))
        else:
            reply = Reply(401, gateway_401(
                "missing API key: send the header 'Authorization: Bearer <API key>'"),
                (("WWW-Authenticate", "Bearer"),))
        self._count("auth_failures")
        return reply

    def _create(self, body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            return self._reject(f"the body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return self._reject(f"the body must be a JSON object, not {type(data).__name__}")
        try:
            payload = _payload_from_request(data)
        except ValidationError as exc:
            return self._reject(str(exc))
        created = int(time.time())
        with self._lock:
            refusal = self._dialects.balance_refusal(str(payload["prompt"]))
            if refusal is not None:  # nothing created, nothing billed
                self._counters.totals["rejected_creates"] += 1
                return Reply(*refusal)
            task_id = f"vgen_{self._rng.getrandbits(48):012x}"
            while task_id in self._tasks:
                task_id = f"vgen_{self._rng.getrandbits(48):012x}"
            plan = plan_task(
                self._rng,
                task_id=task_id,
                created=created,
                payload=payload,
                now=self.now(),
                time_scale=self._time_scale,
                failure_rate=self._failure_rate,
                queue_s=self._queue_s,
            )
            refused = self._dialects.refused_at_create(plan.prompt)
            if refused:  # answered "failed" at once, with its reason
                now = self.now()
                plan = replace(plan, processing_at=now, end=now, error=REFUSED_REASON,
                               has_video=False)
            self._tasks[task_id] = TaskState(plan, secrets.token_urlsafe(16))
            self._counters.totals["creates"] += 1
        self._on_create()  # before answering: a task the client heard of survives a crash
        logger.debug("created %s (%s, ends in %.2f s)", task_id, plan.mode, plan.end - plan.started_at)
        answer: dict[str, Any] = {
            "id": task_id, "object": "video", "created": created,
            "model": plan.model, "status": "failed" if refused else "queued",
        }
        if refused:
            answer["error"] = REFUSED_REASON
        return Reply(202 if "created_202" in self._dialects else 200,
                     self._dialects.result(answer, None))

    def _reject(self, message: str) -> Reply:
        self._count("rejected_creates")
        return error_reply(400, "invalid_request", message)

    def _poll(self, task_id: str, now: float) -> Reply:
        counters = self._counters
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task_id in self._hidden:
                counters.totals["not_found"] += 1
                return error_reply(404, "not_found", f"task not found: {task_id}")
            counters.totals["polls"] += 1
            counters.polls_by_task[task_id] += 1
            interval = self.min_poll_interval_s
            if task.last_poll is not None:
                wait = task.last_poll + interval - now
                if wait > interval * POLL_TOLERANCE:
                    counters.totals["interval_violations"] += 1
                    counters.violations_by_task[task_id] += 1
                    return error_reply(
                        429, "rate_limit_exceeded",
                        f"too many requests: poll a task at most once every {interval:g} s",
                        ("Retry-After", _retry_after(wait)),
                    )
            if task.reported_terminal:
                counters.totals["polls_after_terminal"] += 1
            task.last_poll = now
            number = counters.polls_by_task[task_id]
            instead = (self._dialects.balance_refusal(task.plan.prompt, number)
                       or self._dialects.transient(task_id, number))
            if instead is not None:
                return Reply(*instead)
            body = task.plan.body(now, self._video_url(task))
            first_final = not task.reported_terminal
            task.reported_terminal = body["status"] in ("completed", "failed")
            plan = task.plan
            span = plan.end - plan.processing_at
            progress = 100 * (now - plan.processing_at) / span if span > 0 else None
            return Reply(200, self._dialects.result(body, progress, first_final=first_final))

    # -- the media host --------------------------------------------------------

    def media_file(self, path: str, now: float) -> Path | int:
        """The file behind a media path, or the HTTP status to answer instead."""
        match = _MEDIA_PATH.match(path)
        if match is None:
            return 404
        task_id, token = unquote(match.group(1)), unquote(match.group(2))
        with self._lock:
            task = self._tasks.get(task_id)
            if (
                task is None
                or not hmac.compare_digest(token.encode(), task.token.encode())
                or task.plan.status_at(now) != "completed"
                or not task.plan.has_video
            ):
                return 404
            if now >= task.plan.end + self.url_lifetime_s:
                return 403
            plan = task.plan
        return self._media.path_for(plan.prompt, plan.aspect_ratio, plan.resolution)

    def record_media(self, request: MediaRequest) -> None:
        """Count and log one media request (before it is answered)."""
        with self._lock:
            self._counters.record_media(request)

    def count_media_bytes(self, sent: int) -> None:
        """Count ``sent`` body bytes sent by the media host."""
        with self._lock:
            self._counters.totals["media_bytes_sent"] += sent
