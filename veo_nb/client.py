"""The HTTP client of the VEO service: create a task, read its result, save its video.

:class:`VeoClient` only speaks HTTP. Polling schedules, persistence and views
live in the tracker, the store and the panel.

Retries, precisely:

* ``get_result`` (a read) is retried on connection errors, timeouts, broken
  bodies, 5xx, the transient 408, 425 and 433 (:data:`TRANSIENT_STATUSES`,
  with Cloudflare's 520–524 among the 5xx) and 429, with exponential backoff
  and jitter, honouring ``Retry-After``, up to ``max_retries`` times.
* An empty balance or a spent quota (:class:`~veo_nb.InsufficientBalanceError`)
  is never retried, neither a create nor a read.
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

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import _spec
from ._apikey import API_KEY_ENV as API_KEY_ENV
from ._apikey import ApiKey
from ._download_http import VideoDownloader
from ._exit import on_exit
from ._images import Uploader, resolve_image
from ._links import resolve
from ._log import logger
from ._responses import connection_message, http_error
from ._responses import parse_task_body as parse_task_body
from ._retry import MAX_RETRY_AFTER_WAIT_S as MAX_RETRY_AFTER_WAIT_S
from ._retry import READ_ERRORS, RetryClock, never_sent
from ._retry import parse_retry_after as parse_retry_after
from ._urls import check_http_url, origin, service_of
from .errors import (
    APIConnectionError,
    DownloadError,
    InsufficientBalanceError,
    ValidationError,
    _excerpt,
)
from .models import Task

try:
    _VERSION = _dist_version("veo_nb")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _VERSION = "0"

#: Name of the environment variable overriding the base URL.
BASE_URL_ENV = "VEO_BASE_URL"
#: HTTP statuses below 500 that a read treats as transient, like a 5xx: a
#: request timeout (408), too early (425), a gateway's "upstream busy" (433).
TRANSIENT_STATUSES = frozenset({408, 425, 433})
#: Default bound on a downloaded video's size (bytes).
DEFAULT_MAX_BYTES = 2 * 1024**3

_POOL_SIZE = 64


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
        self.__api_key = ApiKey.find(api_key)
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
        self._retry = RetryClock(time_scale=self._time_scale,
                                 min_interval_s=self.min_poll_interval_s)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"veo_nb/{_VERSION} python-requests/{requests.__version__}"
        self._downloader = VideoDownloader(
            self._session, self.__api_key, base_url=self._base_url, timeout=self._timeout,
            max_retries=self._max_retries, clock=self._retry,
        )
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
        return self.__api_key.fingerprint()

    @property
    def rate_limited_until(self) -> float:
        """A :func:`time.monotonic` value before which this client sends no API
        request, set from a 429's ``Retry-After`` (0.0 when never limited)."""
        return self._retry.rate_limited_until

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
        each local file, bytes or PIL image uploaded with the client's
        ``uploader``
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
        return self._downloader.save(url, dest, name or "video", limit, progress)

    def close(self) -> None:
        """Close pooled connections; interrupts pending retry waits."""
        self._retry.close()
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

    def _call(
        self, method: str, path: str, *, payload: dict[str, Any] | None, idempotent: bool,
        retries: int | None = None,
    ) -> Task:
        """Send one API request, retrying up to ``retries`` times (default
        ``max_retries``; 0: one attempt, not delayed by the 429 gate either)
        by these rules: a failure before the request left (refused, DNS,
        connect timeout) is retried with backoff; one after which the service
        may have handled it (timeouts, resets, 5xx, 408/425/433) only for a read, and never
        sooner than one poll interval after that attempt; a 429 after its
        ``Retry-After``."""
        headers = {"Authorization": f"Bearer {self.__api_key.require()}",
                   "Accept": "application/json"}
        url = self._base_url + path
        retries = self._max_retries if retries is None else retries
        attempt = 0
        while True:
            self._retry.wait_for_gate(patient=retries > 0)
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
            except READ_ERRORS as exc:
                reached = not never_sent(exc)
                wait = self._retry.retry_wait(attempt, retries, reached=reached,
                                              idempotent=idempotent)
                logger.debug(
                    "%s %s failed: %s (attempt %d, %s)",
                    method, path, type(exc).__name__, attempt + 1,
                    "giving up" if wait is None else f"retrying in {wait:.2f} s",
                )
                if wait is None:
                    raise APIConnectionError(
                        connection_message(method, path, exc, idempotent=idempotent,
                                           base_url=self._base_url, redact=self.__api_key.redact),
                        reached=reached,
                    ) from exc
                self._retry.sleep(wait)
                attempt += 1
                continue
            logger.debug(
                "%s %s -> %d in %.3f s (attempt %d)",
                method, path, resp.status_code, time.monotonic() - started, attempt + 1,
            )
            if 200 <= resp.status_code < 300:
                task = parse_task_body(resp.content, status_code=resp.status_code,
                                       where=f"{method} {path}", redact=self.__api_key.redact)
                link = resolve(task.video_url, self._base_url)
                return task if link == task.video_url else replace(task, video_url=link)
            error = http_error(resp, method, path, self.__api_key.redact)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if isinstance(error, InsufficientBalanceError):
                raise error
            if resp.status_code == 429:
                if retry_after is not None:
                    self._retry.note_rate_limit(retry_after)
                # the service refused the request: retried after the shared gate
                wait = 0.0 if retry_after is not None else self._retry.backoff(attempt)
                if attempt >= retries or (retry_after or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise error
            elif resp.status_code >= 500 or resp.status_code in TRANSIENT_STATUSES:
                wait = self._retry.retry_wait(attempt, retries, reached=True, idempotent=idempotent)
                if wait is None or (retry_after or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise error
                wait = max(wait, retry_after or 0.0)
            else:
                raise error
            self._retry.sleep(wait)
            attempt += 1
