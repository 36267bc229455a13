"""The one exception hierarchy of veo_nb: everything raised on purpose is a
:class:`VeoError`.

Messages say what went wrong and what to change. They never contain the API
key: the client redacts it from anything the server sent back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .models import Task


class VeoError(Exception):
    """Base class of every error veo_nb raises on purpose."""


class ValidationError(VeoError, ValueError):
    """A request or an argument is invalid; the message says what to change."""


class APIError(VeoError):
    """The service answered with an HTTP error or a body that is not the JSON
    we expect (e.g. a proxy's HTML error page).

    ``status_code`` is the HTTP status (``None`` when no response arrived),
    ``body_excerpt`` a short, key-free excerpt of the body. ``reached`` is
    False only when the request provably never reached the service (a
    refused connection, a DNS failure, a connect timeout): otherwise the
    service may have handled it, so a poll counts against the 30 s rule.
    ``refused`` is True for an error that says the service refused the
    request before processing anything (:class:`~veo_nb.InsufficientBalanceError`).
    """

    #: Whether the service said it refused the request before processing it.
    refused = False

    def __init__(
        self, message: str, *, status_code: int | None = None, body_excerpt: str = "",
        reached: bool = True,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body_excerpt = body_excerpt
        self.reached = reached


class APIConnectionError(APIError):
    """The service could not be reached (connection refused or reset, timeout)."""


class AuthenticationError(APIError):
    """401/403 from the API, or no API key configured (see ``VEO_API_KEY``)."""


class MissingAPIKeyError(AuthenticationError):
    """No API key is configured: set ``VEO_API_KEY`` (or use ``veo_nb.connect()``
    for demo mode without a key)."""


class NotFoundError(APIError):
    """404: the service does not know this task id."""


class InsufficientBalanceError(APIError):
    """The service refused the request because the account's balance or
    quota is spent (``余额不足``, ``额度``, ``insufficient balance``,
    ``quota``), at HTTP 200 or 4xx; the message quotes the service's words.
    Never retried: top up the account, then submit (or poll) again.

    A clear refusal: the service processed nothing, so nothing was billed
    and no task was created (``refused`` is True; ``status_code`` is the
    HTTP status it came with)."""

    #: The service refused the request before processing it.
    refused = True


class RateLimitError(APIError):
    """429: too many requests. ``retry_after`` is the server's wait in seconds, if given."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        body_excerpt: str = "",
        retry_after: float | None = None,
        reached: bool = True,
    ) -> None:
        super().__init__(message, status_code=status_code, body_excerpt=body_excerpt,
                         reached=reached)
        self.retry_after = retry_after


class DownloadError(VeoError):
    """A finished video could not be downloaded and saved."""


class ResultExpiredError(DownloadError):
    """The video link is gone (403/404/410 from the video host after its 24 h)."""


class TaskTimeoutError(VeoError, TimeoutError):
    """A wait ran out before every task finished.

    ``unfinished`` maps each unfinished task id to its last known status.
    The tasks keep running on the service (it has no cancel).
    """

    def __init__(self, message: str, unfinished: Mapping[str, str]) -> None:
        super().__init__(message)
        self.unfinished = dict(unfinished)


class TaskFailedError(VeoError):
    """Generation failed; ``task`` is the failed :class:`~veo_nb.Task`."""

    def __init__(self, task: Task) -> None:
        reason = task.error or "no reason given"
        super().__init__(f"task {task.id} failed: {reason}")
        self.task = task


def _excerpt(text: Any, limit: int = 200) -> str:
    """A one-line, bounded excerpt of a body for messages: whitespace runs
    become one space, invisible or control characters (NUL, ANSI escapes,
    RTL overrides) are shown as escapes such as ``\\x1b`` or ``\\u202e``."""
    flat = " ".join(str(text).split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    if flat.isprintable():
        return flat
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


__all__ = [
    "VeoError",
    "ValidationError",
    "APIError",
    "APIConnectionError",
    "AuthenticationError",
    "MissingAPIKeyError",
    "NotFoundError",
    "RateLimitError",
    "InsufficientBalanceError",
    "DownloadError",
    "ResultExpiredError",
    "TaskTimeoutError",
    "TaskFailedError",
]


class SpendingCapError(VeoError):
    """A submit would pass the history's daily spending cap
    (``Tracker(max_tasks_per_day=...)``, ``VEO_NB_MAX_TASKS_PER_DAY``...);
    nothing was sent. The message says the cap, what was spent today, and
    how to raise it."""


class OwnershipError(VeoError, PermissionError):
    """A change to someone else's task on a shared store: refused by veo_nb
    before anything was touched, or by the database of a class store (see
    ``veo-nb class``). The message says whose tasks they are and what to do."""
