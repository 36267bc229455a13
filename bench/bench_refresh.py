"""One ``Tracker.refresh()`` over 500 unfinished tasks against a naive loop.

The emulator runs in a separate process (so its threads do not share our
GIL) with 50 ms of latency on every API response and ``time_scale=0.001``
(a 30 ms poll interval, so neither side is rate-limited). Both sides poll the
same 500 ids once: ours with one ``refresh()``, the baseline with a
sequential ``requests.get`` loop on one keep-alive session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench._common import BenchResult
from veo_nb._spec import RESULT_PATH

TASKS = 500
LATENCY_S = 0.05
TIME_SCALE = 0.001

_CHILD = r"""
import json, sys
from veo_nb.emulator import Emulator
emu = Emulator(**json.loads(sys.argv[1])).start()
print(json.dumps({"base_url": emu.base_url, "api_key": emu.api_key}), flush=True)
sys.stdin.read()  # until the parent closes our stdin
emu.stop()
"""


@contextmanager
def emulator_process(**options: Any) -> Iterator[dict[str, str]]:
    """An :class:`~veo_nb.emulator.Emulator` in a child process; yields its
    ``base_url`` and ``api_key``."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        yield json.loads(child.stdout.readline())
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def run() -> list[BenchResult]:
    from veo_nb.client import VeoClient
    from veo_nb.tracker import Tracker

    with emulator_process(time_scale=TIME_SCALE, failure_rate=0.0, latency_s=LATENCY_S) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        client = VeoClient(emu["api_key"], emu["base_url"], time_scale=TIME_SCALE)
        with ThreadPoolExecutor(32) as pool:  # 500 creates, each 50 ms
            ids = list(pool.map(lambda i: client.create_video(f"t{i} [duration: 100000]").id,
                                range(TASKS)))
        # start=False: polling would otherwise start by itself, and the background
        # poller would already have done the polls that refresh() is to time.
        tracker = Tracker(client, store=Path(tmp) / "h.sqlite", media_dir=Path(tmp) / "v",
                          download=False, start=False)
        try:
            tracker.track_many(ids)  # the first poll of each (also warms the pools)
            time.sleep(3 * tracker.poll_interval + 0.2)  # every task due again
            polls_before = sum(r.poll_count for r in tracker.records())
            start = time.perf_counter()
            tracker.refresh()
            ours = time.perf_counter() - start
            polled = sum(r.poll_count for r in tracker.records()) - polls_before
        finally:
            tracker.close()

        session = requests.Session()
        headers = {"Authorization": f"Bearer {emu['api_key']}"}
        start = time.perf_counter()
        for task_id in ids:
            session.get(emu["base_url"] + RESULT_PATH.format(id=task_id), headers=headers,
                        timeout=30).json()
        naive = time.perf_counter() - start
        client.close()
    return [
        BenchResult(
            name=f"refresh() over {TASKS} unfinished tasks",
            value=ours,
            unit="s",
            baseline=naive,
            # a refresh that polled fewer than all of them timed less work: it fails
            ratio=ours / naive if polled == TASKS else float("inf"),
            target=0.1,
            detail=f"{polled} of {TASKS} polls in one refresh (max_workers=32) vs a sequential "
                   f"requests.get loop; emulator in a child process, {LATENCY_S * 1000:.0f} ms latency",
        )
    ]
