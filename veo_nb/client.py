"""The HTTP client of the VEO service: create a task, read its result, save its video.

:class:`VeoClient` only speaks HTTP. Polling schedules, persistence and views
live in the tracker, the store and the panel.

Retries, precisely:

* ``get_result`` (a read) is retried on connection errors, timeouts, broken
  bodies, 5xx and 429, with exponential backoff and jitter, honouring
  ``Retry-After``, up to ``max_retries`` times.
* ``create_video`` is **not** retried once the request may have reached the
  server (5xx, read timeouts, connections reset mid-request): a retry could
  create and bill a second video. It is retried only on 429 (the service did
  not create anything) and on failures that happen before the request was
  sent: refused connections, DNS failures and connect timeouts.
* ``download`` is retried on connection errors, timeouts, truncated bodies,
  5xx and 429; each attempt starts over into a fresh temporary file.

The API key is sent as ``Authorization: Bearer <key>`` to the API only: never
to the video host (unless it is the API's own scheme, host and port), never
through a redirect to another host. It never appears in ``repr``, logs or
exception messages; server text that echoes it is redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import timezone
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from . import _spec
from ._exit import on_exit
from ._log import logger
from ._paths import PARTIAL_PREFIX, PARTIAL_SUFFIX, video_path_in
from ._images import Uploader, resolve_image
from ._urls import check_http_url, is_http_url, origin, public_url, service_of
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    DownloadError,
    MissingAPIKeyError,
    NotFoundError,
    RateLimitError,
    ResultExpiredError,
    ValidationError,
    _excerpt,
)
from .models import Task

try:
    _VERSION = _dist_version("veo_nb")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _VERSION = "0"

#: Name of the environment variable (and Colab secret) holding the API key.
API_KEY_ENV = "VEO_API_KEY"
#: Name of the environment variable overriding the base URL.
BASE_URL_ENV = "VEO_BASE_URL"
#: Default bound on a downloaded video's size (bytes).
DEFAULT_MAX_BYTES = 2 * 1024**3
#: A ``Retry-After`` (or shared 429 wait) longer than this is not slept
#: through: :class:`RateLimitError` is raised at once, carrying ``retry_after``.
MAX_RETRY_AFTER_WAIT_S = 60.0

_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_BACKOFF_FLOOR_S = 0.05
_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_EXPIRED = (403, 404, 410)
_POOL_SIZE = 64
_READ_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class _Secret:
    """Holds the API key; its repr never shows it (debuggers, ``vars(client)``)."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>" if self.value else "<unset>"


class _Truncated(Exception):
    """The body ended before Content-Length bytes arrived (retryable)."""


def _colab_secret(name: str) -> str | None:
    """The Colab secret ``name``, or None outside Colab or on any error."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    except Exception:  # noqa: BLE001 - not in Colab, no access granted, secret missing
        return None
    return value if isinstance(value, str) else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds (``"3"``,
    ``"0.5"``) or an HTTP date. ``None`` when absent or unreadable; never negative."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


class VeoClient:
    """A connection to the VEO service (or to its emulator).

    ``api_key`` defaults to the ``VEO_API_KEY`` environment variable, then to
    a Colab secret of that name. ``base_url`` defaults to ``VEO_BASE_URL``,
    then to the documented service. A missing key is reported by the first
    call that needs it, with instructions.

    ``timeout`` is per HTTP request (seconds), ``max_retries`` the number of
    retries after the first attempt, ``time_scale`` shrinks retry backoff and
    the poll interval (the emulator runs at a fraction of real time; always
    1.0 for the documented service). ``demo`` marks a client of the embedded
    emulator; ``service`` names the service (see :attr:`service`).

    One client is safe to share between threads and keeps its connections
    alive; close it (or use it as a context manager) when done.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        time_scale: float = 1.0,
        demo: bool = False,
        service: str | None = None,
        uploader: Uploader | None = None,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV) or _colab_secret(API_KEY_ENV)
        if api_key is not None and not isinstance(api_key, str):
            raise ValidationError(f"api_key must be a string, not {type(api_key).__name__}")
        self.__api_key = _Secret((api_key or "").strip() or None)
        url = base_url or os.environ.get(BASE_URL_ENV) or _spec.BASE_URL
        self._base_url = check_http_url(url, "base_url").rstrip("/")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValidationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValidationError(f"max_retries must be an integer ≥ 0, got {max_retries!r}")
        if (
            not isinstance(time_scale, (int, float))
            or isinstance(time_scale, bool)
            or not time_scale > 0
        ):
            raise ValidationError(f"time_scale must be a positive number, got {time_scale!r}")
        if service is not None and (not isinstance(service, str) or not service.strip()):
            raise ValidationError(f"service must be a non-empty string or None, got {service!r:.80}")
        self._timeout = float(timeout)
        self._max_retries = max_retries
        self._time_scale = float(time_scale)
        if self._time_scale != 1.0 and self.is_documented_service:
            warnings.warn(
                f"time_scale={self._time_scale:g} ignored for the real service {_spec.BASE_URL} "
                "(its clock runs at real time; a left-over VEO_TIME_SCALE of the emulator?)",
                stacklevel=2,
            )
            self._time_scale = 1.0
        self._demo = bool(demo)
        if uploader is not None and not callable(uploader):
            raise ValidationError(f"uploader must be a function (data, filename) -> URL, "
                                  f"got {type(uploader).__name__}")
        self.uploader: Uploader | None = uploader
        self._service = service.strip() if service is not None else service_of(self._base_url)
        self._gate_lock = threading.Lock()
        self._rate_limited_until = 0.0
        self._closed = threading.Event()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"veo_nb/{_VERSION} python-requests/{requests.__version__}"
        on_exit(self, VeoClient.close)  # stops downloads and retry waits at interpreter exit

    # ------------------------------------------------------------------ facts

    @property
    def base_url(self) -> str:
        """The API base URL, without trailing slash."""
        return self._base_url

    @property
    def timeout(self) -> float:
        """Timeout of one HTTP request, in seconds."""
        return self._timeout

    @property
    def max_retries(self) -> int:
        """How many times a retryable failure is retried."""
        return self._max_retries

    @property
    def time_scale(self) -> float:
        """Factor applied to retry backoff (1.0 for the real service)."""
        return self._time_scale

    @property
    def min_poll_interval_s(self) -> float:
        """The service's rule, scaled: never poll one task more often (seconds)."""
        return _spec.MIN_POLL_INTERVAL_S * self._time_scale

    @property
    def service(self) -> str:
        """Which service this client talks to: ``service=`` when given (the
        demo emulator's stable id), else the normalised origin of
        ``base_url`` (``localhost`` and ``127.0.0.1`` are one). The tracker
        records it per task and only polls tasks of its own service."""
        return self._service

    @property
    def demo(self) -> bool:
        """True for a client of the embedded emulator (demo mode)."""
        return self._demo

    @property
    def is_documented_service(self) -> bool:
        """True when ``base_url`` points at the provider's documented host."""
        return origin(self._base_url)[1] == origin(_spec.BASE_URL)[1]

    @property
    def has_api_key(self) -> bool:
        """Whether an API key is configured (the key itself is never exposed)."""
        return self.__api_key.value is not None

    @property
    def key_fingerprint(self) -> str | None:
        """A short one-way hash of the API key (``None`` without a key): the
        tracker records it per task, so that a process polls only tasks its
        key created. It cannot be turned back into the key."""
        key = self.__api_key.value
        if key is None:
            return None
        return hashlib.sha256(b"veo_nb key fingerprint\0" + key.encode()).hexdigest()[:16]

    @property
    def rate_limited_until(self) -> float:
        """A :func:`time.monotonic` value before which this client sends no API
        request, set from a 429's ``Retry-After`` (0.0 when never limited)."""
        with self._gate_lock:
            return self._rate_limited_until

    def __repr__(self) -> str:
        key = "set" if self.__api_key.value else "unset"
        demo = ", demo=True" if self._demo else ""
        return f"VeoClient(base_url={self._base_url!r}, api_key={key}{demo})"

    __str__ = __repr__

    # ------------------------------------------------------------------ API

    def create_video(
        self,
        prompt: str,
        *,
        model: str = _spec.DEFAULT_MODEL,
        resolution: str = "720p",
        aspect_ratio: str = "16:9",
        reference_images: Sequence[str] | str | None = None,
        first_image: str | None = None,
        last_image: str | None = None,
    ) -> Task:
        """Start generating an 8 s video and return the new (``queued``) task.

        Modes: text only; ``reference_images`` (1–3 image URLs); or
        ``first_image`` with optional ``last_image``. Arguments are checked
        against the model table before anything is sent
        (:class:`~veo_nb.ValidationError` says what to change).

        Not retried once the request may have reached the service (that could
        create two videos); a :class:`~veo_nb.APIConnectionError` or 5xx
        :class:`~veo_nb.APIError` therefore means "unknown whether created".
        """
        images = self.image_urls(reference_images=reference_images, first_image=first_image,
                                 last_image=last_image)
        payload = _spec.build_create_payload(
            prompt,
            model=model,
            resolution=resolution,
            aspect_ratio=aspect_ratio,
            unknown_models="send",
            **images,
        )
        return self._call("POST", _spec.CREATE_PATH, payload=payload, idempotent=False)

    def image_urls(self, *, reference_images: Any = None, first_image: Any = None,
                   last_image: Any = None) -> dict[str, Any]:
        """The image arguments of a create as URLs: each http(s) URL as it is,
        each local file, bytes or PIL image uploaded with :attr:`uploader`
        (see :mod:`veo_nb._images`). Raises :class:`~veo_nb.ValidationError`
        before any request for a local image without an uploader, or a URL
        the service cannot reach (loopback, private: only the emulator may)."""
        local_ok = self._demo or service_of(self._base_url).startswith(("http://127.0.0.1",
                                                                        "https://127.0.0.1"))

        def url(value: Any, what: str) -> Any:
            if value is None:
                return None
            return resolve_image(value, what, uploader=self.uploader, local_ok=local_ok)

        refs = reference_images
        if refs is not None and not isinstance(refs, (list, tuple)):
            refs = [refs]
        return {
            "reference_images": None if refs is None else [
                url(v, f"reference_images[{i}]") for i, v in enumerate(refs)],
            "first_image": url(first_image, "first_image"),
            "last_image": url(last_image, "last_image"),
        }

    def get_result(self, task_id: str, *, retry: bool = True) -> Task:
        """The task's current state (``queued``, ``processing``, ``completed``
        with ``video_url``, or ``failed`` with ``error``).

        Poll a task at most every 30 s (the service rate-limits faster polling).
        Raises :class:`~veo_nb.NotFoundError` for an unknown id.

        A failure before the request left (refused connection, DNS, connect
        timeout) is retried at once, with backoff. A failure after which the
        service may have handled the poll (a timeout, a reset, a 5xx) counts
        as a poll: it is retried only after :attr:`min_poll_interval_s`.

        ``retry=False`` makes exactly one attempt, sent at once or not at all
        (it does not wait out a 429's ``Retry-After`` either: it raises
        :class:`~veo_nb.RateLimitError`), so that a caller that schedules
        polls itself, like the tracker, knows when each poll went out; every
        error's ``reached`` says whether the service may have seen it.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValidationError(f"task_id must be a non-empty string, got {task_id!r:.80}")
        segment = quote(task_id, safe="")
        if segment in (".", ".."):  # a dot segment would be resolved away by the URL
            segment = segment.replace(".", "%2E")
        path = _spec.RESULT_PATH.format(id=segment)
        return self._call("GET", path, payload=None, idempotent=True,
                          retries=None if retry else 0)

    def download(
        self, task: Task | str, dest: str | os.PathLike[str], *, max_bytes: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Save a completed task's MP4 and return its path.

        ``task`` is a :class:`~veo_nb.Task` with a ``video_url`` (or the URL
        itself). ``dest`` is a folder (an existing directory, or a path ending
        in ``/``; the file is then named after the task id) or a file path.
        The file appears only complete: the body goes to a hidden ``.part``
        file next to it, renamed once every byte arrived. Bodies larger than
        ``max_bytes`` (default 2 GiB) are refused.

        ``progress(bytes_so_far)`` is called after every chunk written.

        Raises :class:`~veo_nb.ResultExpiredError` when the link is gone
        (links last 24 h after completion), :class:`~veo_nb.DownloadError`
        for other failures; no partial file is left behind.
        """
        if isinstance(task, Task):
            if not task.video_url:
                raise DownloadError(
                    f"task {task.id} has no video_url (status {task.status_text!r}"
                    + (f", error: {_excerpt(task.error, 120)}" if task.error else "")
                    + "): only completed tasks with a video can be downloaded"
                )
            url, name = task.video_url, task.id
        else:
            url = task
            name = PurePosixPath(urlsplit(url).path).stem if isinstance(url, str) else ""
        url = check_http_url(url, "video_url")
        limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            raise ValidationError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        attempt = 0
        while True:
            try:
                target = self._target_path(dest, name or "video")
                self._download_once(url, target, limit, progress)
                return target
            except (*_READ_ERRORS, _Truncated, _RetryableStatus) as exc:
                reason = str(exc) if isinstance(exc, (_Truncated, _RetryableStatus)) else type(exc).__name__
                delay = exc.retry_after if isinstance(exc, _RetryableStatus) else None
                if attempt >= self._max_retries or (delay or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise DownloadError(
                        f"could not download {public_url(url)} after {attempt + 1} attempts: "
                        f"{self._redact(reason)}"
                    ) from exc
                self._sleep(self._backoff(attempt) if delay is None else delay)
                attempt += 1
                logger.debug("download retry %d of %s (%s)", attempt, public_url(url), reason)
            except OSError as exc:  # the local side: folder, disk full, permissions
                raise DownloadError(f"could not save the video to {os.fspath(dest)!r}: {exc}") from exc

    def close(self) -> None:
        """Close pooled connections; interrupts pending retry waits."""
        self._closed.set()
        self._session.close()

    def __enter__(self) -> VeoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _require_key(self) -> str:
        if not self.__api_key.value:
            raise MissingAPIKeyError(
                f"no API key: set the {API_KEY_ENV} environment variable "
                f"(e.g. os.environ['{API_KEY_ENV}'] = '...' or a Colab secret named "
                f"{API_KEY_ENV}), or pass VeoClient(api_key=...). "
                "For demo mode without a key, use veo_nb.connect()."
            )
        return self.__api_key.value

    def _redact(self, text: str) -> str:
        key = self.__api_key.value
        return text.replace(key, "***") if key else text

    def _backoff(self, attempt: int) -> float:
        delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) * self._time_scale
        return float(max(_BACKOFF_FLOOR_S, delay * random.uniform(0.5, 1.0)))

    def _sleep(self, seconds: float) -> None:
        if self._closed.wait(max(0.0, seconds)):
            raise APIConnectionError("the client was closed")

    def _note_rate_limit(self, retry_after: float) -> None:
        with self._gate_lock:
            self._rate_limited_until = max(
                self._rate_limited_until, time.monotonic() + retry_after
            )

    def _wait_for_gate(self, patient: bool = True) -> None:
        """Block until the shared 429 wait is over (or, when it is too long or
        not ``patient``, raise without sending anything)."""
        while True:
            remaining = self.rate_limited_until - time.monotonic()
            if remaining <= 0:
                return
            if remaining > MAX_RETRY_AFTER_WAIT_S or not patient:
                raise RateLimitError(
                    f"rate limited by the service for another {remaining:.1f} s; "
                    "try again later",
                    retry_after=remaining, reached=False,
                )
            logger.debug("waiting %.2f s for the service's rate limit", remaining)
            self._sleep(remaining)

    def _call(
        self, method: str, path: str, *, payload: dict[str, Any] | None, idempotent: bool,
        retries: int | None = None,
    ) -> Task:
        """Send one API request, retrying up to ``retries`` times (default
        ``max_retries``; 0: one attempt, not delayed by the 429 gate either)
        by these rules: a failure before the request left (refused, DNS,
        connect timeout) is retried with backoff; one after which the service
        may have handled it (timeouts, resets, 5xx) only for a read, and never
        sooner than one poll interval after that attempt; a 429 after its
        ``Retry-After``."""
        headers = {"Authorization": f"Bearer {self._require_key()}", "Accept": "application/json"}
        url = self._base_url + path
        retries = self._max_retries if retries is None else retries
        attempt = 0
        while True:
            self._wait_for_gate(patient=retries > 0)
            started = time.monotonic()
            try:
                resp = self._session.request(
                    method,
                    url,
                    json=payload,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
            except _READ_ERRORS as exc:
                reached = not _never_sent(exc)
                wait = self._retry_wait(attempt, retries, reached=reached, idempotent=idempotent)
                logger.debug(
                    "%s %s failed: %s (attempt %d, %s)",
                    method, path, type(exc).__name__, attempt + 1,
                    "giving up" if wait is None else f"retrying in {wait:.2f} s",
                )
                if wait is None:
                    raise APIConnectionError(
                        self._connection_message(method, path, exc, idempotent), reached=reached
                    ) from exc
                self._sleep(wait)
                attempt += 1
                continue
            logger.debug(
                "%s %s -> %d in %.3f s (attempt %d)",
                method, path, resp.status_code, time.monotonic() - started, attempt + 1,
            )
            if 200 <= resp.status_code < 300:
                return self._parse_task(resp, method, path)
            error = self._http_error(resp, method, path)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if resp.status_code == 429:
                if retry_after is not None:
                    self._note_rate_limit(retry_after)
                # the service refused the request: retried after the shared gate
                wait = 0.0 if retry_after is not None else self._backoff(attempt)
                if attempt >= retries or (retry_after or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise error
            elif resp.status_code >= 500:
                wait = self._retry_wait(attempt, retries, reached=True, idempotent=idempotent)
                if wait is None or (retry_after or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise error
                wait = max(wait, retry_after or 0.0)
            else:
                raise error
            self._sleep(wait)
            attempt += 1

    def _retry_wait(self, attempt: int, retries: int, *, reached: bool,
                    idempotent: bool) -> float | None:
        """Seconds before retrying a failed attempt, or None to give up."""
        if attempt >= retries:
            return None
        if not reached:
            return self._backoff(attempt)
        if not idempotent:
            return None
        return max(self._backoff(attempt), self.min_poll_interval_s)

    def _connection_message(
        self, method: str, path: str, exc: Exception, idempotent: bool
    ) -> str:
        what = "could not reach" if _never_sent(exc) else "lost the connection to"
        message = f"{method} {path}: {what} {self._base_url} ({type(exc).__name__})"
        if not idempotent and not _never_sent(exc):
            message += (
                "; the task may or may not have been created (not retried, to avoid "
                "creating two videos)"
            )
        return self._redact(message)

    def _parse_task(self, resp: requests.Response, method: str, path: str) -> Task:
        return parse_task_body(
            resp.content, status_code=resp.status_code, where=f"{method} {path}",
            redact=self._redact,
        )

    def _http_error(self, resp: requests.Response, method: str, path: str) -> APIError:
        status = resp.status_code
        # Redact the whole body first: a key cut in half by an excerpt no
        # longer matches, and its first half would leak.
        text = self._redact(resp.content.decode("utf-8", errors="replace"))
        excerpt = _body_excerpt(text)
        detail = _excerpt(_server_message(text) or excerpt, 200)
        detail = detail or resp.reason or ""
        message = f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
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

    def _target_path(self, dest: str | os.PathLike[str], name: str) -> Path:
        raw = os.fspath(dest)
        separators = tuple(s for s in (os.sep, os.altsep, "/") if s)
        if raw.endswith(separators) or Path(raw).is_dir():
            folder = Path(raw).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
            return video_path_in(folder, name)
        target = Path(raw).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _open_media(self, url: str) -> requests.Response:
        """GET ``url`` (streamed), following at most 5 redirects by hand so that
        every hop's scheme is checked and the key never leaves the API's origin."""
        api_origin = origin(self._base_url)
        trusted = True  # every hop so far was on the API's own origin
        for _hop in range(_MAX_REDIRECTS + 1):
            trusted = trusted and is_http_url(url) and origin(url) == api_origin
            key = self.__api_key.value
            headers = {"Authorization": f"Bearer {key}"} if trusted and key else {}
            logger.debug("download GET %s", public_url(url))
            resp = self._session.get(
                url, headers=headers, stream=True, timeout=self._timeout, allow_redirects=False
            )
            if resp.status_code not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            resp.close()
            nxt = urljoin(url, resp.headers["Location"])
            if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                raise DownloadError(
                    f"refusing a redirect from {public_url(url)} to a non-http(s) URL "
                    f"({urlsplit(nxt).scheme}:)"
                )
            url = nxt
        raise DownloadError(f"more than {_MAX_REDIRECTS} redirects while downloading; giving up")

    def _download_once(self, url: str, target: Path, limit: int,
                       progress: Callable[[int], None] | None) -> None:
        resp = self._open_media(url)
        with resp:
            status = resp.status_code
            where = public_url(resp.url or url)
            if status in _EXPIRED:
                raise ResultExpiredError(
                    f"the video link {where} is gone (HTTP {status}): links expire 24 h "
                    "after completion and cannot be renewed; generate the video again"
                )
            if status == 429 or status >= 500:
                raise _RetryableStatus(
                    f"HTTP {status} from the video host",
                    parse_retry_after(resp.headers.get("Retry-After")),
                )
            if not 200 <= status < 300:
                raise DownloadError(f"HTTP {status} from the video host for {where}")
            expected = _content_length(resp)
            if expected is not None and expected > limit:
                raise DownloadError(
                    f"the video is {expected} bytes, more than max_bytes={limit}"
                )
            identity = resp.headers.get("Content-Encoding", "identity").lower() in ("", "identity")
            tmp = tempfile.NamedTemporaryFile(
                dir=target.parent, delete=False, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX
            )
            done = False
            try:
                with tmp:
                    written = 0
                    for chunk in resp.iter_content(chunk_size=_CHUNK):
                        if self._closed.is_set():
                            raise DownloadError("the client was closed during the download")
                        written += len(chunk)
                        if written > limit:
                            raise DownloadError(
                                f"the video from {where} is larger than max_bytes={limit}"
                            )
                        tmp.write(chunk)
                        if progress is not None:
                            progress(written)
                    if expected is not None and identity and written != expected:
                        raise _Truncated(f"got {written} of {expected} bytes")
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.chmod(tmp.name, 0o644)  # temp files are created 0600; a video is not a secret
                os.replace(tmp.name, target)
                done = True
                logger.debug("saved %d bytes from %s to %s", written, where, target)
            finally:
                if not done:
                    try:
                        os.unlink(tmp.name)
                    except FileNotFoundError:
                        pass


class _RetryableStatus(Exception):
    """A 429/5xx from the video host (retryable), with its Retry-After."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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


def _never_sent(exc: BaseException) -> bool:
    """True when ``exc`` proves the request never left: connect timeout,
    refused connection or DNS failure (safe to retry even a create)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError):
            return True
        if isinstance(item, BaseException):
            stack.extend(item.args)
            stack.extend((item.__cause__, item.__context__, getattr(item, "reason", None)))
    return False


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


_TAG = re.compile(r"<[^>]*>")


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
