"""Tracker processes on one store, for the multi-process tests, the soak and
the P8/P9 benchmarks: each child is a real Python process with its own
tracker, talking to an emulator over real HTTP.

A child prints one JSON line per event: ``{"ready": ...}`` once tracking,
then ``{"done": ...}`` with what it saw (statuses, errors, video paths, when
it first saw each task finished, how many polls it sent itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The child: ``base key scale store media mode timeout [ids...]``. ``mode``
#: is ``track`` (track the ids itself), ``follow`` (wait for them to appear
#: through the store), ``submit:N`` (create N tasks and print their ids), or
#: ``stdin`` / ``stdin-follow``: print ``{"up": true}``, then track / follow
#: the ids of one line read from stdin (so that a benchmark starts every
#: process before the tasks exist, and sees every change as it happens).
CHILD = r"""
import json, sys, threading, time
from veo_nb import Tracker, VeoClient

base, key, scale, store, media, mode, timeout, *ids = sys.argv[1:]


class Counting(VeoClient):
    "Counts the polls this process sends itself."
    polls = 0

    def get_result(self, task_id, **kw):
        Counting.polls += 1
        return super().get_result(task_id, **kw)


seen = {}
lock = threading.Lock()


def watch(task):
    if task.is_terminal:
        with lock:
            seen.setdefault(task.id, time.time())


client = Counting(key, base, time_scale=float(scale), timeout=5)
tracker = Tracker(client, store=store, media_dir=media)
tracker.on_change(watch)
if mode.startswith("stdin"):
    print(json.dumps({"up": True}), flush=True)
    ids = sys.stdin.readline().split()
if mode in ("track", "stdin"):
    tracker.track_many(ids)
elif mode.startswith("submit:"):
    ids = [tracker.submit(f"mp {i} [duration: {125 + (i * 37) % 160}]").id
           for i in range(int(mode.split(":")[1]))]
else:
    while not set(ids) <= {r.task_id for r in tracker.records()}:
        time.sleep(0.02)
print(json.dumps({"ready": ids}), flush=True)
done = tracker.wait(ids, timeout=float(timeout))
for task in done:
    watch(task)
records = {r.task_id: r for r in tracker.records()}
print(json.dumps({"done": {
    i: {"status": records[i].status_text, "error": records[i].error,
        "video_path": records[i].video_path, "download": records[i].download_state,
        "finished_at": records[i].finished_at.timestamp() if records[i].finished_at else None,
        "seen_at": seen.get(i)}
    for i in ids}, "polls": Counting.polls}), flush=True)
tracker.close()
"""


@dataclass
class Child:
    """One tracker process; ``lines`` are the JSON objects it printed."""

    proc: subprocess.Popen
    lines: list[dict[str, Any]] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _up: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, emu: Any, store: str | Path, media: Path, mode: str, ids: list[str] = (),
              *, timeout: float = 120.0) -> Child:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, emu.base_url, emu.api_key, str(emu.time_scale),
             str(store), str(media), mode, str(timeout), *ids],
            stdin=subprocess.PIPE if mode.startswith("stdin") else None, stdout=subprocess.PIPE,
            text=True,
        )
        child = cls(proc)
        child._reader = threading.Thread(target=child._read, daemon=True)
        child._reader.start()
        return child

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))
            if "ready" in self.lines[-1]:
                self._ready.set()
            if "up" in self.lines[-1]:
                self._up.set()

    def up(self, timeout: float = 120.0) -> None:
        """Wait until a ``stdin`` child follows the store."""
        if not self._up.wait(timeout):
            raise AssertionError(f"child {self.proc.pid} never came up")

    def send(self, ids: list[str], timeout: float = 120.0) -> None:
        """Once a ``stdin`` child is up, give it the ids to track or follow."""
        self.up(timeout)
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(ids) + "\n")
        self.proc.stdin.flush()

    def ready(self, timeout: float = 60.0) -> list[str]:
        """The ids the child follows, once it follows them."""
        if not self._ready.wait(timeout):
            raise AssertionError(f"child {self.proc.pid} never got ready")
        return next(line["ready"] for line in self.lines if "ready" in line)

    def result(self, timeout: float = 180.0) -> dict[str, Any]:
        """The child's ``done`` line, after it exited cleanly."""
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=30)
        assert code == 0, f"child {self.proc.pid} exited with {code}"
        return next(line for line in self.lines if "done" in line)

    def kill(self) -> None:
        """SIGKILL, as a crashed or restarted kernel."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


def media_gets(emu: Any) -> dict[str, int]:
    """Successful media GETs per task id, from the emulator's log."""
    counts: dict[str, int] = {}
    for request in emu.stats.media_log:
        if request.method == "GET" and request.status in (200, 206):
            task_id = request.path.split("/")[2]
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts
