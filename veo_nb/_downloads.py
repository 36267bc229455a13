"""Saving finished videos: one download per video across every process on a
store, retried until the link expires.

A completed task's video is fetched by the process that takes its download
claim in the store (:meth:`veo_nb.store.Store.claim_download`), into that
process's ``media_dir`` under a name derived safely from the task id; the
other processes see its ``video_path`` once it is saved. The claim is renewed
while bytes arrive, so a slow 40 MB download keeps it, and it runs out
:meth:`Downloads.claim_s` after a killed process's last renewal, when another
process takes the download over. A link that expires (24 h after completion)
before the video could be saved is recorded as ``expired``, never silently
lost; a link that is not a valid http(s) URL fails for good.

Processes on several machines may share a store (PostgreSQL): a video is
still fetched once, by whichever process claims it, onto that machine
(``saved_on``). The other machines do not fetch it again; their views play
it from the service's link while the link lives (24 h).
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import _schedule
from ._engine import Write, holder_dead
from ._log import logger
from ._paths import saved_file_present, video_path_in
from .errors import DownloadError, ResultExpiredError, ValidationError, VeoError
from .models import Task, TaskStatus
from .records import Event, from_unix, to_unix
from ._store_sql import DOWNLOAD_FIELDS

if TYPE_CHECKING:  # pragma: no cover
    from ._engine import Engine, TaskState

#: Parallel downloads per store and process.
DOWNLOAD_WORKERS = 4
#: This machine, as recorded in ``saved_on``: a video saved elsewhere (a
#: store shared by several machines) is played there, or here from its link.
HOST = socket.gethostname()
#: Download states after which nothing is attempted again.
_SETTLED = ("saved", "expired")


class _ClaimLost(Exception):
    """A download's claim was taken by another process while this one
    stalled (a frozen kernel, a suspended laptop): it stops, the other one
    saves the video, and nobody downloads it twice."""


class Downloads:
    """The downloads of one :class:`~veo_nb._engine.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pool = ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="veo_nb-download")
        self._hopeless: set[str] = set()  # ids whose link can never work

    @property
    def claim_s(self) -> float:
        """How long a download claim lasts after its last renewal (seconds)."""
        return max(10 * self._engine.settings.poll_interval, 5.0)

    def shutdown(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def schedule(self, state: TaskState, now: float) -> None:
        """Arm (or disarm) the download of a completed task whose video is not
        on disk, after what the task's record now says (the engine's lock is
        held): when another process saved it meanwhile, nothing is attempted."""
        if state.downloading:
            return
        rec = state.record
        if not self._wanted(state):
            state.dl_due = None
            return
        if rec.download_state == "saved":  # deleted or moved: not saved, fetch it again
            state.record = replace(rec, download_state="pending", video_path=None)
        due = now if state.dl_due is None else state.dl_due
        if (state.downloader not in (None, self._engine.me)
                and (state.download_until or 0.0) > now and not holder_dead(state.downloader)):
            due = max(due, state.download_until or now)  # another process is on it
        state.dl_due = due

    def _wanted(self, state: TaskState) -> bool:
        """Whether this process should (still) fetch ``state``'s video."""
        rec = state.record
        if (not self._engine.settings.download or rec.status is not TaskStatus.COMPLETED
                or not rec.video_url or rec.task_id in self._hopeless
                or not self._engine.store.may_write(rec.owner)):
            return False
        if rec.download_state == "saved":
            # saved on another machine sharing the store: not ours to fetch
            return rec.saved_on in (None, HOST) and not saved_file_present(rec.video_path)
        return rec.download_state not in ("expired", "none")

    def dispatch(self, task_id: str, state: TaskState, now: float) -> list[float]:
        """Start ``state``'s download if due; return when it is due otherwise."""
        if state.dl_due is None or state.downloading:
            return []
        if state.dl_due > now:
            return [state.dl_due]
        state.downloading = True
        self._pool.submit(self._engine.guarded, task_id, self._download, "downloading",
                          "dl_due", "downloading")
        return []

    def _download(self, task_id: str) -> Task | None:
        engine = self._engine
        with engine.lock:
            state = engine.states.get(task_id)
            if state is None or engine.closed:
                return None
            state.dl_due = None
            rec = state.record
            holder = state.downloader
        expires = to_unix(rec.url_expires_at)
        if expires is not None and time.time() >= expires:
            return self._done(task_id, "expired", error="the video link expired (24 h after "
                              "completion) before it could be downloaded")
        now = time.time()
        if not engine.store.claim_download(task_id, engine.me, now=now, until=now + self.claim_s,
                                           orphan=holder if holder_dead(holder) else None):
            self._someone_else(task_id)
            return None
        row = engine.store.row(task_id)
        if (row is not None and row.record.download_state == "saved"
                and saved_file_present(row.record.video_path)):
            self._someone_else(task_id)  # saved meanwhile by another process
            return None
        renewed = [now]

        def renew(_written: int) -> None:
            if time.time() - renewed[0] > self.claim_s / 3:
                renewed[0] = time.time()
                if not engine.store.claim_download(task_id, engine.me, now=renewed[0],
                                                   until=renewed[0] + self.claim_s):
                    raise _ClaimLost  # stalled past the claim: another process took it over

        dest = video_path_in(engine.settings.media_dir, task_id)
        try:
            path = engine.client.download(rec.task, dest, max_bytes=engine.settings.max_video_bytes,
                                          progress=renew)
        except _ClaimLost:
            logger.info("veo_nb: another process took the download of %s over", task_id)
            self._someone_else(task_id)
            return None
        except ResultExpiredError as exc:
            return self._done(task_id, "expired", error=str(exc))
        except ValidationError as exc:  # not a usable link: trying again cannot help
            self._hopeless.add(task_id)
            return self._done(task_id, "failed", error=str(exc), retry=False)
        except (DownloadError, VeoError, OSError) as exc:
            return self._done(task_id, "failed", error=str(exc))
        return self._done(task_id, "saved", path=path)

    def _someone_else(self, task_id: str) -> None:
        """Another process holds the download (or saved it): follow its row and
        look again when its claim runs out."""
        engine = self._engine
        row = engine.store.row(task_id)
        with engine.lock:
            state = engine.states.get(task_id)
            if state is None or row is None:
                return
            state.downloader, state.download_until = row.downloader, row.download_until
            if row.record.download_state in _SETTLED:
                task = engine.apply_row(row, time.time(), force=True)
            else:
                task = None
                state.dl_due = max(time.time(), row.download_until or 0.0) + 0.05
        if task is not None:
            engine.notify(task)

    def _done(self, task_id: str, outcome: str, *, path: Path | None = None,
              error: str | None = None, retry: bool = True) -> Task | None:
        engine = self._engine
        now = time.time()
        with engine.lock:
            state = engine.states.get(task_id)
            if state is None:
                return None
            attempt = None
            due: float | None = None
            if outcome == "failed":
                attempt = state.dl_attempts + 1
                if retry:
                    due = now + _schedule.error_backoff(attempt, engine.settings.poll_interval)
                    expires = to_unix(state.record.url_expires_at)
                    due = due if expires is None else min(due, expires)
                logger.warning("veo_nb: download of %s failed (attempt %d): %s",
                               task_id, attempt, error)
            new = replace(state.record, download_state=outcome, download_error=error,
                          video_path=str(path) if path else state.record.video_path,
                          saved_on=HOST if path else state.record.saved_on)
            event = Event(task_id, "download", new.status_text, observed_at=from_unix(now),
                          attempt=attempt, detail=f"{outcome}: {path if path else error}")

        def saved(st: TaskState) -> None:
            if attempt is not None:
                st.dl_attempts = attempt
            st.dl_due = due

        engine.commit(task_id, Write(new, [event], DOWNLOAD_FIELDS,
                                     {"downloader": None, "download_until": None}, saved))
        return new.task
