"""Shared checks of the reliability suite: truth from the emulator, intact
videos, logs, and waiting for a condition without timing upper bounds."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

from veo_nb import TaskRecord
from veo_nb.emulator import Emulator
from veo_nb.emulator._media import SAMPLES
from veo_nb.tracker import NO_VIDEO_REASON

#: SHA-256 of the video the media host serves, per aspect ratio.
SAMPLE_SHA256 = {ratio: hashlib.sha256(path.read_bytes()).hexdigest()
                 for ratio, path in SAMPLES.items()}
#: A generous bound for conditions that take a second or two on an idle machine.
DEADLINE_S = 120.0


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wait_until(condition: Callable[[], object], *, timeout: float = DEADLINE_S,
               what: str = "condition") -> None:
    """Poll ``condition`` every 50 ms until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


def truth_mismatch(emu: Emulator, rec: TaskRecord) -> str | None:
    """Why ``rec`` disagrees with the emulator's final truth for its task, or None."""
    true = emu.peek(rec.task_id)
    status, error = true["status"], true["error"]
    if status == "completed" and not true["video_url"]:
        status, error = "failed", NO_VIDEO_REASON
    if status not in ("completed", "failed"):
        return f"{rec.task_id} is not finished on the emulator ({status})"
    if error and (rec.error or "").startswith(f"{error} Support codes: "):
        error = rec.error  # the support_codes dialect adds Veo's codes, the reader names them
    if (rec.status_text, rec.error) != (status, error):
        return f"{rec.task_id}: tracker says {(rec.status_text, rec.error)}, truth {(status, error)}"
    return None


def served_sha256(url: str) -> str:
    """SHA-256 of the body the media host serves at ``url`` (asked again
    until a whole body arrives, since the host may be injecting faults)."""
    for _ in range(100):
        try:
            resp = requests.get(url, timeout=30)
        except requests.RequestException:
            continue
        if resp.ok and len(resp.content) == int(resp.headers["Content-Length"]):
            return hashlib.sha256(resp.content).hexdigest()
    raise AssertionError(f"the media host never served a whole body at {url}")


def mismatches(emu: Emulator, records: list[TaskRecord],
               media_dir: Path) -> tuple[list[str], list[str]]:
    """The disagreements of ``records`` with the emulator's truth (lost or
    wrong tasks), then with the videos its media host serves (lost or broken
    videos); checked concurrently."""
    with ThreadPoolExecutor(16) as pool:
        tasks = list(pool.map(lambda r: truth_mismatch(emu, r), records))
        videos = list(pool.map(lambda r: video_mismatch(r, media_dir), records))
    return [m for m in tasks if m], [m for m in videos if m]


def video_mismatch(rec: TaskRecord, media_dir: Path) -> str | None:
    """Why a completed task's saved video is not what the media host serves
    for it, or None."""
    if rec.status_text != "completed":
        return None
    if rec.download_state != "saved" or not rec.video_path:
        return f"{rec.task_id}: download {rec.download_state} ({rec.download_error})"
    path = Path(rec.video_path)
    if path.parent != media_dir.resolve():
        return f"{rec.task_id}: saved outside the media folder: {path}"
    if sha256(path) != served_sha256(rec.video_url or ""):
        return f"{rec.task_id}: {path.name} is not the video the host serves"
    return None


@contextmanager
def captured_logs(level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """Collect the ``veo_nb`` logger's records at ``level`` and above."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("veo_nb")
    handler, old_level = Collect(level), log.level
    log.addHandler(handler)
    log.setLevel(level)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
