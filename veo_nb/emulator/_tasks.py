"""How the emulator plans a task's life: prompt directives, durations, failures.

A task's plan is fixed when it is created; its status at any moment is then a
pure function of the emulator's clock (:meth:`TaskPlan.status_at`), so no
background thread is needed. :class:`TaskState` adds what serving the task
changes (the last poll) and how it is written to a state file.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, get_type_hints

from .._spec import (
    ASPECT_RATIOS,
    ESTIMATES_S,
    RESOLUTIONS,
    VIDEO_DURATION_S,
    Mode,
    payload_mode,
)

#: ``[fail]`` or ``[fail: <message>]``; the message may hold one level of
#: nested brackets (``[fail: bad [x] input]``).
_FAIL = re.compile(r"\[\s*fail\s*(?::\s*((?:[^\[\]]|\[[^\[\]]*\])*?)\s*)?\]", re.IGNORECASE)
_NO_VIDEO = re.compile(r"\[\s*no[-_ ]video\s*\]", re.IGNORECASE)
_DURATION = re.compile(r"\[\s*duration\s*:\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*\]", re.IGNORECASE)

#: The service gives up on a generation after this long (seconds, unscaled).
GENERATION_TIMEOUT_S = 600.0
#: Failure messages of the kind the real service reports, for every mode
#: ({timeout_s} is :data:`GENERATION_TIMEOUT_S` on the emulator's clock).
_MESSAGES_ANY = (
    "Video generation failed: the prompt was flagged by the content safety policy. "
    "Please revise the prompt and try again.",
    "Video generation failed: the output was blocked by the safety filter "
    "(violence). No credits were charged.",
    "Internal error while generating the video. Please retry later.",
    "Upstream model overloaded (RESOURCE_EXHAUSTED): quota exceeded for "
    "veo generation, please retry later.",
    "Generation timed out after {timeout_s} seconds.",
)
#: Extra failure messages for requests that carry images ({url} is one of them).
_MESSAGES_IMAGES = (
    "Failed to fetch image from URL: {url} (HTTP 404 Not Found)",
    "The input image was rejected by the safety filter (photorealistic minors policy).",
    "Unsupported image format at {url}: use JPEG, PNG or WebP.",
)


@dataclass(frozen=True)
class Directives:
    """Deterministic outcomes asked for in a prompt (the prompt itself is kept as sent).

    ``fail`` wins over ``no_video``. ``fail_message`` is ``None`` for a bare
    ``[fail]`` (a realistic message is picked) and the exact text for
    ``[fail: <message>]``. ``duration_s`` is the unscaled total duration.
    """

    fail: bool = False
    fail_message: str | None = None
    no_video: bool = False
    duration_s: float | None = None

    @classmethod
    def parse(cls, prompt: str) -> Directives:
        """Read the directives out of ``prompt`` (case-insensitive)."""
        fail = _FAIL.search(prompt)
        duration = _DURATION.search(prompt)
        seconds = float(duration.group(1)) if duration else None
        return cls(
            fail=fail is not None,
            fail_message=fail.group(1) if fail and fail.group(1) is not None else None,
            no_video=_NO_VIDEO.search(prompt) is not None,
            duration_s=seconds if seconds and seconds > 0 else None,
        )


@dataclass(frozen=True)
class TaskPlan:
    """One task's fixed life: when it starts processing, when it ends, and how.

    Times are seconds on the emulator's clock (already scaled).
    ``error`` is set when the task fails, at ``end``. ``has_video`` is False
    for failures and for ``[no-video]`` completions.
    """

    task_id: str
    created: int
    model: str
    prompt: str
    aspect_ratio: str
    resolution: str
    mode: Mode
    started_at: float
    processing_at: float
    end: float
    error: str | None
    has_video: bool

    def status_at(self, now: float) -> str:
        """The status string the service reports at ``now``."""
        if now >= self.end:
            return "failed" if self.error is not None else "completed"
        return "processing" if now >= self.processing_at else "queued"

    def shifted(self, seconds: float) -> TaskPlan:
        """The same plan with its times moved by ``seconds`` (to another clock)."""
        return replace(
            self,
            started_at=self.started_at + seconds,
            processing_at=self.processing_at + seconds,
            end=self.end + seconds,
        )

    def body(self, now: float, video_url: str | None) -> dict[str, Any]:
        """The result endpoint's JSON body at ``now``, shaped like the provider's examples."""
        status = self.status_at(now)
        body: dict[str, Any] = {
            "id": self.task_id,
            "object": "video",
            "created": self.created,
            "model": self.model,
            "status": status,
            "video_url": video_url if status == "completed" and self.has_video else None,
        }
        if status == "completed":
            body["actualDuration"] = int(VIDEO_DURATION_S)
        body["error"] = self.error if status == "failed" else None
        return body


def plan_task(
    rng: random.Random,
    *,
    task_id: str,
    created: int,
    payload: dict[str, Any],
    now: float,
    time_scale: float,
    failure_rate: float,
    queue_s: tuple[float, float],
) -> TaskPlan:
    """Draw the life of a new task from ``rng`` (the caller holds its lock).

    The total duration is uniform over the documented estimate for the
    request's mode unless ``[duration: s]`` says otherwise; the queued phase
    is drawn from ``queue_s`` but never longer than half the total. A failing
    task fails at a random point of its processing phase.
    """
    prompt = payload["prompt"]
    mode = payload_mode(payload)
    directives = Directives.parse(prompt)
    low, high = ESTIMATES_S[mode]
    total = directives.duration_s or rng.uniform(low, high)
    queued = min(rng.uniform(*queue_s), total / 2)
    fails = directives.fail or rng.random() < failure_rate
    error: str | None = None
    end = total
    if fails:
        error = directives.fail_message or _failure_message(rng, payload, mode, time_scale)
        end = queued + rng.uniform(0.1, 0.9) * (total - queued)
    return TaskPlan(
        task_id=task_id,
        created=created,
        model=payload["model"],
        prompt=prompt,
        aspect_ratio=payload["aspect_ratio"],
        resolution=payload["resolution"],
        mode=mode,
        started_at=now,
        processing_at=now + queued * time_scale,
        end=now + end * time_scale,
        error=error,
        has_video=not fails and not directives.no_video,
    )


def seconds_text(seconds: float) -> str:
    """``seconds`` as a message would say it: whole seconds from 10 s up
    (``"72"``), two significant digits below (``"6"``, ``"0.6"``)."""
    return str(round(seconds)) if seconds >= 10 else f"{seconds:.2g}"


def _failure_message(
    rng: random.Random, payload: dict[str, Any], mode: Mode, time_scale: float
) -> str:
    timeout_s = seconds_text(GENERATION_TIMEOUT_S * time_scale)
    if mode is Mode.TEXT:
        return rng.choice(_MESSAGES_ANY).format(timeout_s=timeout_s)
    urls = list(payload.get("input_reference") or [])
    urls += [payload[k] for k in ("first_image", "last_image") if payload.get(k)]
    template = rng.choice(_MESSAGES_ANY + _MESSAGES_IMAGES)
    return template.format(url=rng.choice(urls), timeout_s=timeout_s)


@dataclass
class TaskState:
    """A task as the emulator serves it: its plan, the token of its video
    link, when it was last polled (emulator clock) and whether a poll has
    already reported it finished."""

    plan: TaskPlan
    token: str
    last_poll: float | None = None
    reported_terminal: bool = False

    def to_json(self, to_wall: float) -> dict[str, Any]:
        """A JSON-ready dict with every time moved to the wall clock
        (``to_wall`` = wall-clock time minus emulator time)."""
        plan = asdict(self.plan.shifted(to_wall))
        plan["mode"] = self.plan.mode.value
        last_poll = None if self.last_poll is None else self.last_poll + to_wall
        return {"plan": plan, "token": self.token, "last_poll": last_poll,
                "reported_terminal": self.reported_terminal}

    @classmethod
    def from_json(cls, data: Any, to_wall: float) -> TaskState:
        """Read back :meth:`to_json`'s dict; raises :class:`ValueError`,
        :class:`KeyError` or :class:`TypeError` when it is not one."""
        values = dict(data["plan"])
        values["mode"] = Mode(values["mode"])
        hints = get_type_hints(TaskPlan)
        names = {f.name for f in fields(TaskPlan)}
        if set(values) != names:
            raise ValueError(f"a task plan has the fields {sorted(names)}, not {sorted(values)}")
        for name, value in values.items():
            if not isinstance(value, hints[name]) and not (hints[name] is float and type(value) is int):
                raise TypeError(f"{name} of a task plan cannot be {value!r}")
        if values["aspect_ratio"] not in ASPECT_RATIOS or values["resolution"] not in RESOLUTIONS:
            raise ValueError(f"unknown aspect ratio or resolution in {values!r}")
        last_poll = data["last_poll"]
        if not (last_poll is None or isinstance(last_poll, (int, float))):
            raise TypeError(f"last_poll cannot be {last_poll!r}")
        if not isinstance(data["token"], str) or not isinstance(data["reported_terminal"], bool):
            raise TypeError("a task's token is a string and reported_terminal a boolean")
        return cls(
            plan=TaskPlan(**values).shifted(-to_wall),
            token=data["token"],
            last_poll=None if last_poll is None else last_poll - to_wall,
            reported_terminal=data["reported_terminal"],
        )
