"""What an API answer means: a successful body read into a
:class:`~veo_nb.Task`, an HTTP error or a lost connection turned into the
matching :class:`~veo_nb.APIError` with a short, redacted excerpt of what
the server said."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import requests

from ._answers import BALANCE_HINT, is_balance_refusal
from ._apikey import API_KEY_ENV
from ._retry import never_sent, parse_retry_after
from ._urls import public_url
from .errors import (
    APIError,
    AuthenticationError,
    InsufficientBalanceError,
    NotFoundError,
    RateLimitError,
    _excerpt,
)
from .models import Task

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_TAG = re.compile(r"<[^>]*>")


def parse_task_body(
    body: bytes,
    *,
    status_code: int = 200,
    where: str = "response",
    redact: Callable[[str], str] = str,
) -> Task:
    """The :class:`~veo_nb.Task` in a successful API answer's ``body``.

    Any bytes give a task or an :class:`~veo_nb.APIError` (never another
    exception): not JSON, not an object, no id, nesting too deep. Lone UTF-16
    surrogates (``"\\ud800"``, valid JSON but not valid text) become U+FFFD
    so the task can be stored, logged and displayed. ``where`` starts error
    messages; ``redact`` removes secrets from text quoted in them.
    """
    text = redact(body.decode("utf-8", errors="replace"))  # before any excerpt cuts it
    excerpt = _body_excerpt(text)
    try:
        data = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):
            data = _replace_lone_surrogates(data)
        return Task.from_json(data)
    except (ValueError, RecursionError) as exc:
        problem = (
            "with a body nested too deeply" if isinstance(exc, RecursionError)
            else "with a body that is not JSON (a proxy page or a cut-off response?)"
        )
        raise APIError(
            f"{where}: HTTP {status_code} {problem}: {excerpt}",
            status_code=status_code,
            body_excerpt=excerpt,
        ) from None
    except APIError as exc:  # the same kind: an AuthenticationError stays one
        raise type(exc)(
            f"{where}: {redact(str(exc))}", status_code=status_code, body_excerpt=excerpt
        ) from None


def http_error(
    resp: requests.Response, method: str, path: str, redact: Callable[[str], str]
) -> APIError:
    """The error a non-2xx answer to ``method path`` stands for."""
    status = resp.status_code
    # Redact the whole body first: a key cut in half by an excerpt no
    # longer matches, and its first half would leak.
    text = redact(resp.content.decode("utf-8", errors="replace"))
    excerpt = _body_excerpt(text)
    detail = _excerpt(_server_message(text) or excerpt, 200)
    detail = detail or resp.reason or ""
    message = f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
    if 400 <= status < 500 and is_balance_refusal(text, rate_limited=status == 429):
        return InsufficientBalanceError(
            f"{message} — {BALANCE_HINT} (not retried)",
            status_code=status,
            body_excerpt=excerpt,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"{message} — the API key was rejected; check {API_KEY_ENV}",
            status_code=status,
            body_excerpt=excerpt,
        )
    if status == 404:
        return NotFoundError(
            f"{message} — the service does not know this task id",
            status_code=status,
            body_excerpt=excerpt,
        )
    if status == 429:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        hint = f"retry after {retry_after:.1f} s" if retry_after is not None else "slow down"
        return RateLimitError(
            f"{message} — too many requests; {hint} (poll each task at most every 30 s)",
            body_excerpt=excerpt,
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        location = public_url(resp.headers.get("Location", ""))
        message += f" — redirected to {location!r}; is base_url right?"
    return APIError(message, status_code=status, body_excerpt=excerpt)


def connection_message(
    method: str, path: str, exc: Exception, *, idempotent: bool, base_url: str,
    redact: Callable[[str], str],
) -> str:
    """What went wrong when ``method path`` to ``base_url`` got no answer."""
    what = "could not reach" if never_sent(exc) else "lost the connection to"
    message = f"{method} {path}: {what} {base_url} ({type(exc).__name__})"
    if not idempotent and not never_sent(exc):
        message += (
            "; the task may or may not have been created (not retried, to avoid "
            "creating two videos)"
        )
    return redact(message)


def _replace_lone_surrogates(value: Any) -> Any:
    """``value`` (decoded JSON) with every lone surrogate in its strings
    replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


def _body_excerpt(text: str) -> str:
    """A short one-line excerpt; HTML pages are reduced to their text."""
    if text.lstrip().startswith("<"):
        text = _TAG.sub(" ", text)
    return _excerpt(text, 200)


def _server_message(text: str) -> str | None:
    """The error message inside a JSON error body, if there is one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key in ("error", "message", "detail", "msg"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("message") or value.get("msg") or value.get("detail")
        if isinstance(value, str) and value.strip():
            return value
    return None
