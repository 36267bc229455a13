"""Crashes: a tracker process killed with SIGKILL at random points (while
polling, while downloading) loses nothing already recorded, leaves no
partial video under a final name, and the next tracker finishes the work.
Several processes writing one store at once corrupt nothing."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import mismatches, served_sha256, sha256, wait_until
from veo_nb import Tracker
from veo_nb._paths import PARTIAL_PREFIX, PARTIAL_SUFFIX, STALE_PARTIAL_S, video_path_in
from veo_nb.emulator import Emulator, FaultConfig
from veo_nb.store import Store

SCALE = 0.01
KILLS = int(os.environ.get("VEO_CRASH_KILLS", "20"))

TRACKER_CHILD = r"""
import sys, time
from veo_nb.client import VeoClient
from veo_nb.tracker import Tracker
base, key, scale, store, media, *ids = sys.argv[1:]
tracker = Tracker(VeoClient(key, base, time_scale=float(scale)), store=store, media_dir=media)
tracker.track_many(ids)
tracker.start()
print("ready", flush=True)
time.sleep(600)
"""

WRITER_CHILD = r"""
import sys
from veo_nb import TaskRecord, TaskStatus
from veo_nb.records import Event
from veo_nb.store import Store
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store(path) as store:
    for i in range(n):
        status = TaskStatus.COMPLETED if i % 3 == 2 else TaskStatus.PROCESSING
        store.save(TaskRecord(f"{tag}-{i % 20}", status=status, status_text=status.value,
                              poll_count=i, error="x" * (i % 50)),
                   [Event(f"{tag}-{i % 20}", "status", status.value, detail=f"{tag}:{i}:a"),
                    Event("shared", "note", detail=f"{tag}:{i}:b")])
        store.save(TaskRecord("shared", poll_count=i))
        if i % 25 == 0:
            assert len(store.events_frame()) >= 2 * i
print("done", flush=True)
"""


def _events(path: Path) -> list[tuple]:
    """Every event row, read like an outside tool would (no veo_nb code)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def _visible_videos(media: Path) -> list[Path]:
    return [p for p in media.glob("*") if not p.name.startswith(PARTIAL_PREFIX)] \
        if media.exists() else []


def _partials(media: Path) -> list[Path]:
    return list(media.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}")) if media.exists() else []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(11)
    store, media = tmp_path / "h.sqlite", tmp_path / "videos"
    faults = FaultConfig(seed=1, drip_rate=0.7, drip_s=0.8)  # slow bodies: kills land mid-download
    killed_mid_download = 0
    with Emulator(time_scale=SCALE, failure_rate=0.2, seed=4, faults=faults) as emu:
        client = emu.client()
        ids: list[str] = []
        hashes: dict[str, str] = {}

        def served(name: str) -> str:
            """What the media host serves for the task whose video is ``name``."""
            if name not in hashes:
                task_id = next(i for i in ids if video_path_in(media, i).name == name)
                hashes[name] = served_sha256(emu.peek(task_id)["video_url"])
            return hashes[name]

        for round_ in range(KILLS):
            new = [client.create_video(f"round {round_} [duration: {rng.randint(121, 200)}]",
                                       aspect_ratio=rng.choice(["16:9", "9:16"])).id
                   for _ in range(2)]
            ids += new
            child = subprocess.Popen(
                [sys.executable, "-c", TRACKER_CHILD, emu.base_url, emu.api_key, str(SCALE),
                 str(store), str(media), *new],
                stdout=subprocess.PIPE, text=True,
            )
            try:
                assert child.stdout.readline().strip() == "ready"
                time.sleep(rng.uniform(0.05, 1.0))
                before = _events(store)
                killed_mid_download += bool(_partials(media))
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=60)
                child.stdout.close()
            Store(store).close()  # opens cleanly
            assert _integrity(store) == "ok"
            after = _events(store)
            assert after[:len(before)] == before, f"round {round_}: recorded events lost"
            for video in _visible_videos(media):
                assert sha256(video) == served(video.name), f"partial video {video.name}"
        print(f"\n{KILLS} kills, {killed_mid_download} while a download was in progress, "
              f"{len(_events(store))} events kept")
        assert killed_mid_download > 0

        stale = _partials(media)
        old = time.time() - 2 * STALE_PARTIAL_S
        for path in stale:
            os.utime(path, (old, old))
        fresh = media / f"{PARTIAL_PREFIX}another-process{PARTIAL_SUFFIX}"
        media.mkdir(exist_ok=True)
        fresh.write_bytes(b"a download running elsewhere")
        with Tracker(client, store=store, media_dir=media) as tracker:
            assert not [p for p in stale if p.exists()]
            assert fresh.exists()
            tracker.start()
            tracker.wait(ids, timeout=300)
            wait_until(lambda: all(tracker.record(i).download_state in ("saved", "none")
                                   for i in ids), what="every video saved")
            records = [tracker.record(i) for i in ids]
        assert mismatches(emu, records, media) == ([], [])


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_writing_one_store(tmp_path: Path, processes: int) -> None:
    path, n = tmp_path / "h.sqlite", 150
    children = [
        subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(path), f"p{i}", str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]
    results = [child.communicate(timeout=300) for child in children]
    assert [(c.returncode, out.strip()) for c, (out, _) in zip(children, results)] == \
        [(0, "done")] * processes, [err for _, err in results]
    assert _integrity(path) == "ok"
    events = _events(path)
    details = [row[-1] for row in events]
    expected = {f"p{p}:{i}:{s}" for p in range(processes) for i in range(n) for s in "ab"}
    assert len(details) == len(expected) and set(details) == expected
    with Store(path) as store:
        assert len(store.records(tracked_only=False)) == processes * 20 + 1
        assert store.get("shared").poll_count == n - 1
