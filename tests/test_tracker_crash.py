"""A process killed with SIGKILL mid-download leaves no partial video, and the
next tracker on the same store finishes the download."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from veo_nb._paths import video_path_in
from veo_nb.emulator import Emulator
from veo_nb.tracker import Tracker

CHILD = r"""
import sys, time
from pathlib import Path
from veo_nb.client import VeoClient
from veo_nb.tracker import Tracker
base, key, store, media, task_id = sys.argv[1:6]
client = VeoClient(key, base, time_scale=0.01)
tr = Tracker(client, store=store, media_dir=media)
tr.track(task_id)
print("tracked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_download(tmp_path):
    size = 300 * 1024 * 1024  # sparse on the emulator side; takes a moment to copy
    with Emulator(time_scale=0.01, failure_rate=0.0, video_size=size) as emu:
        client = emu.client()
        task = client.create_video("big [duration: 125]")
        emu.advance(2.0)  # finished
        store, media = tmp_path / "h.sqlite", tmp_path / "v"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, emu.base_url, emu.api_key, str(store), str(media), task.id],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert child.stdout.readline().strip() == "tracked"
            deadline = time.monotonic() + 30
            while not any(media.glob(".*.part")) and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        final = video_path_in(media, task.id)
        assert not final.exists()  # no partial file under the video's name
        tracker = Tracker(client, store=store, media_dir=media)
        try:
            assert tracker.record(task.id).download_state in ("pending", "failed")
            tracker.refresh()
            deadline = time.monotonic() + 60
            while tracker.record(task.id).download_state != "saved":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert final.stat().st_size == size
            assert emu.stats.polls_by_task[task.id] == 1  # not polled again
        finally:
            tracker.close()
