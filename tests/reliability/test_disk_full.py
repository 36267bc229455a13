"""A full disk: a tracker whose process may not write files larger than a
limit (RLIMIT_FSIZE, the per-process stand-in for a disk that fills up:
the tests run as root, so permissions cannot simulate it) records a clear
local-save error on each task whose video does not fit, keeps polling and
finishing every other task, leaves no partial video in the media folder,
and saves every video intact once the space is back (limit raised)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import mismatches
from veo_nb.emulator import Emulator
from veo_nb.store import Store

SCALE = 0.01  # links last 24 h x 0.01 = 864 s, far longer than the test
VIDEO_BYTES = 4 * 2**20  # served videos, padded
# The child's largest writable file: a video does not fit, the SQLite store
# and its WAL do (a few hundred KB here; the WAL is checkpointed at ~4 MB).
LIMIT_BYTES = 3 * 2**20

# The tracker's process. SIGXFSZ is ignored so that a write past the limit
# fails with EFBIG (an OSError, like ENOSPC on a full disk) instead of
# killing the process. The limit is set before the tracker opens its store,
# so the store (and its WAL) also lives under it.
CHILD = r"""
import json, resource, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from reliability_helpers import wait_until
from veo_nb.client import VeoClient
from veo_nb.tracker import Tracker
from veo_nb._paths import PARTIAL_PREFIX, PARTIAL_SUFFIX

helpers, base, key, scale, store, media, limit = sys.argv[1:]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), hard))

media = Path(media)
seen = {"videos": set(), "max_partials": 0, "max_store_bytes": 0}

def look():
    names = [p.name for p in media.glob("*")] if media.exists() else []
    seen["videos"].update(n for n in names if not n.startswith(PARTIAL_PREFIX))
    seen["max_partials"] = max(seen["max_partials"],
                               sum(n.endswith(PARTIAL_SUFFIX) for n in names))
    sizes = [p.stat().st_size for p in Path(store).parent.glob(Path(store).name + "*")]
    seen["max_store_bytes"] = max([seen["max_store_bytes"], *sizes])

def failed_attempts(task_id):
    h = tracker.history()
    rows = h[(h["task_id"] == task_id) & (h["kind"] == "download")]
    return int(rows["detail"].str.startswith("failed:").sum())

def snapshot(ids):
    return {i: {"status": r.status_text, "error": r.error, "download_state": r.download_state,
                "download_error": r.download_error, "failed_attempts": failed_attempts(i)}
            for i in ids for r in [tracker.record(i)]}

tracker = Tracker(VeoClient(key, base, time_scale=float(scale)), store=store, media_dir=media)
tracker.start()
videos = [tracker.submit("first clip [duration: 130]", aspect_ratio="16:9").id,
          tracker.submit("second clip [duration: 130]", aspect_ratio="9:16").id,
          tracker.submit("finishes while the disk is full [duration: 250]").id]
others = [tracker.submit("refused [fail: refused by the safety filter] [duration: 150]").id,
          tracker.submit("no video [no-video] [duration: 200]").id]

def disk_full_settled():
    look()
    return (all(tracker.record(i).status_text == "failed" for i in others)
            and all(tracker.record(i).download_state == "failed" and failed_attempts(i) >= 2
                    for i in videos))

wait_until(disk_full_settled, what="every task finished and every download failed twice")
# A failed attempt removes its .part file; retries (every few tenths of a
# second) each make a new one for a moment, so wait for a quiet instant.
wait_until(lambda: look() or not list(media.glob(PARTIAL_PREFIX + "*" + PARTIAL_SUFFIX)),
           what="no partial file in the media folder")
full = {"tasks": snapshot(videos + others), "running": tracker.running,
        "videos_seen": sorted(seen["videos"]), "max_partials": seen["max_partials"],
        "store_bytes": seen["max_store_bytes"]}

resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is back
freed = time.monotonic()
wait_until(lambda: all(tracker.record(i).download_state == "saved" for i in videos),
           what="the downloads to resume")
resumed_s = time.monotonic() - freed
after = {"tasks": snapshot(videos + others), "running": tracker.running,
         "sizes": {i: Path(tracker.record(i).video_path).stat().st_size for i in videos}}
tracker.close()
print(json.dumps({"videos": videos, "others": others, "full": full, "after": after,
                  "resumed_s": resumed_s}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_disk_full_fails_clearly_then_resumes(tmp_path: Path) -> None:
    store, media = tmp_path / "h.sqlite", tmp_path / "videos"
    with Emulator(time_scale=SCALE, failure_rate=0.0, seed=5, video_size=VIDEO_BYTES) as emu:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(__file__).parent), emu.base_url, emu.api_key,
             str(SCALE), str(store), str(media), str(LIMIT_BYTES)],
            capture_output=True, text=True, timeout=600,
        )
        assert child.returncode == 0, child.stderr
        report = json.loads(child.stdout.strip().splitlines()[-1])
        full, after = report["full"], report["after"]

        # While the disk is full: a clear error on each task whose video does
        # not fit, saying it is the local save that failed and where.
        for task_id in report["videos"]:
            rec = full["tasks"][task_id]
            assert (rec["status"], rec["download_state"]) == ("completed", "failed"), rec
            assert "could not save the video" in rec["download_error"], rec
            assert str(media) in rec["download_error"], rec
            assert "File too large" in rec["download_error"], rec
            assert rec["failed_attempts"] >= 2  # still retrying, not given up
        # ... nothing else breaks: the other tasks reach their final status,
        # the poller keeps running, the store (its largest file well under
        # the limit, which applies per file) keeps being written ...
        assert {full["tasks"][i]["status"] for i in report["others"]} == {"failed"}
        assert full["tasks"][report["others"][0]]["error"] == "refused by the safety filter"
        assert full["running"]
        assert 0 < full["store_bytes"] < LIMIT_BYTES
        # ... and no video, partial or not, is visible under a final name.
        assert full["videos_seen"] == []
        assert full["max_partials"] <= len(report["videos"])

        # Space back: every download resumes and is saved intact, in time.
        assert after["running"]
        for task_id in report["videos"]:
            assert after["tasks"][task_id]["download_state"] == "saved"
            assert after["tasks"][task_id]["download_error"] is None
            assert after["sizes"][task_id] == VIDEO_BYTES
        with Store(store) as reopened:
            records = [reopened.get(i) for i in report["videos"] + report["others"]]
        assert mismatches(emu, records, media) == ([], [])
        assert all(r.url_expires_at.timestamp() > time.time() for r in records[:3])
        assert emu.stats.interval_violations == 0
        print(f"\ndownloads resumed {report['resumed_s']:.2f} s after the space came back; "
              f"largest store file {full['store_bytes']} bytes under a {LIMIT_BYTES}-byte limit")
