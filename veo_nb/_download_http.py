"""Saving a finished video from the video host to a file, for
:meth:`~veo_nb.VeoClient.download`.

Redirects are followed by hand (at most 5, http(s) only) so that the API key
goes to no host but the API's own origin; the body streams into a hidden
temporary file next to the target, renamed once every byte arrived; a body
over the size limit, a truncated one, a 429 or a 5xx is retried into a fresh
file. (Downloads the tracker schedules are in :mod:`veo_nb._downloads`.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from ._apikey import ApiKey
from ._log import logger
from ._paths import PARTIAL_PREFIX, PARTIAL_SUFFIX, video_path_in
from ._retry import MAX_RETRY_AFTER_WAIT_S, READ_ERRORS, RetryClock, parse_retry_after
from ._urls import is_http_url, origin, public_url
from .errors import DownloadError, ResultExpiredError

_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_EXPIRED = (403, 404, 410)


class _Truncated(Exception):
    """The body ended before Content-Length bytes arrived (retryable)."""


class _RetryableStatus(Exception):
    """A 429/5xx from the video host (retryable), with its Retry-After."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VideoDownloader:
    """Streams videos to files over one client's ``session``, sending
    ``api_key`` only to ``base_url``'s origin, retrying up to ``max_retries``
    times with ``clock``'s backoff (closing the clock stops a download)."""

    def __init__(
        self, session: requests.Session, api_key: ApiKey, *, base_url: str, timeout: float,
        max_retries: int, clock: RetryClock,
    ) -> None:
        self._session = session
        self._key = api_key
        self._api_origin = origin(base_url)
        self._timeout = timeout
        self._max_retries = max_retries
        self._clock = clock

    def save(
        self, url: str, dest: str | os.PathLike[str], name: str, limit: int,
        progress: Callable[[int], None] | None,
    ) -> Path:
        """Save ``url`` into ``dest`` (a folder, where the file is named after
        ``name``, or a file path) and return the file's path."""
        attempt = 0
        while True:
            try:
                target = _target_path(dest, name)
                self._save_once(url, target, limit, progress)
                return target
            except (*READ_ERRORS, _Truncated, _RetryableStatus) as exc:
                reason = str(exc) if isinstance(exc, (_Truncated, _RetryableStatus)) else type(exc).__name__
                delay = exc.retry_after if isinstance(exc, _RetryableStatus) else None
                if attempt >= self._max_retries or (delay or 0.0) > MAX_RETRY_AFTER_WAIT_S:
                    raise DownloadError(
                        f"could not download {public_url(url)} after {attempt + 1} attempts: "
                        f"{self._key.redact(reason)}"
                    ) from exc
                self._clock.sleep(self._clock.backoff(attempt) if delay is None else delay)
                attempt += 1
                logger.debug("download retry %d of %s (%s)", attempt, public_url(url), reason)
            except OSError as exc:  # the local side: folder, disk full, permissions
                raise DownloadError(f"could not save the video to {os.fspath(dest)!r}: {exc}") from exc

    def _open(self, url: str) -> requests.Response:
        """GET ``url`` (streamed), following at most 5 redirects by hand so that
        every hop's scheme is checked and the key never leaves the API's origin."""
        trusted = True  # every hop so far was on the API's own origin
        for _hop in range(_MAX_REDIRECTS + 1):
            trusted = trusted and is_http_url(url) and origin(url) == self._api_origin
            key = self._key.value
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

    def _save_once(self, url: str, target: Path, limit: int,
                   progress: Callable[[int], None] | None) -> None:
        resp = self._open(url)
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
                        if self._clock.closed:
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


def _target_path(dest: str | os.PathLike[str], name: str) -> Path:
    raw = os.fspath(dest)
    separators = tuple(s for s in (os.sep, os.altsep, "/") if s)
    if raw.endswith(separators) or Path(raw).is_dir():
        folder = Path(raw).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return video_path_in(folder, name)
    target = Path(raw).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None
