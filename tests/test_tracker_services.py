"""Which service a task belongs to, and the interval rule across trackers,
stores and restarts, counted at the server (emulators over real HTTP)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from polling import until

import veo_nb
from veo_nb import TaskStatus, Tracker
from veo_nb.emulator import Emulator
from veo_nb.store import MIGRATIONS, Store

SCALE = 0.01




@pytest.fixture
def two_services():
    with Emulator(time_scale=SCALE, failure_rate=0, seed=1) as a, \
            Emulator(time_scale=SCALE, failure_rate=0, seed=2) as b:
        yield a, b


def test_a_tracker_never_polls_another_services_tasks(tmp_path: Path, two_services) -> None:
    a, b = two_services
    store = tmp_path / "h.sqlite"
    with Tracker(a.client(), store=store, media_dir=tmp_path / "v") as first:
        task = first.submit("on service a [duration: 280]")
        assert first.record(task.id).service == a.client().service
    # the same store, now on another service (demo -> real, or another emulator)
    with Tracker(b.client(), store=store, media_dir=tmp_path / "v") as second:
        time.sleep(1.0)  # several intervals
        second.refresh()
        rec = second.record(task.id)
        assert rec.status is not TaskStatus.FAILED and rec.error is None
        assert b.stats.not_found == 0 and b.stats.polls == 0  # never asked b about it
        assert [r.task_id for r in second.records()] == [task.id]  # still shown
    # back on its own service it finishes normally
    with Tracker(a.client(), store=store, media_dir=tmp_path / "v") as third:
        (done,) = third.wait([task.id], timeout=30)
        assert done.status is TaskStatus.COMPLETED
    assert a.stats.interval_violations == 0


def test_a_404_never_finishes_a_task_of_an_old_store(tmp_path: Path, veo_emulator) -> None:
    """Stores written before services were recorded: a task some service
    answered for, now polled on another one, is left as it was."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for sql in MIGRATIONS[1]:
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO tasks (task_id, status, status_text, first_seen_at, download_state, "
        "tracked, poll_count, last_polled_at, request, raw) VALUES ('vgen_elsewhere', "
        "'processing', 'processing', 1748779201, 'none', 1, 4, 1748779290, '{}', '{}')")
    conn.commit()
    conn.close()
    with Tracker(veo_emulator.client(), store=path, media_dir=tmp_path / "v") as tracker:
        until(lambda: tracker.record("vgen_elsewhere").error is not None)
        rec = tracker.record("vgen_elsewhere")
        assert rec.status is TaskStatus.PROCESSING
        assert "may belong to another service" in rec.error
        assert tracker.summary()["failed"].sum() == 0
    # while a pasted typo on our own service is marked as not found
    with Tracker(veo_emulator.client(), store=path, media_dir=tmp_path / "v") as tracker:
        typo = tracker.track("hello!!")
        assert typo.status is TaskStatus.FAILED and typo.error == veo_nb.tracker.NOT_FOUND_REASON
        summary = tracker.summary()
        assert summary["not_found"].sum() == 1 and summary["failed"].sum() == 0


def test_demo_mode_has_its_own_default_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEO_DEMO", "1")
    with Tracker() as tracker:
        assert Path(tracker.store_key) == (tmp_path / "veo_nb_data/demo/history.sqlite").resolve()
        assert tracker.media_dir == Path("veo_nb_data/demo/videos")
        assert tracker.client.service.startswith("emulator:")


def test_re_tracking_waits_for_the_interval_from_the_store(tmp_path: Path) -> None:
    """A new process tracking a task again must not poll it sooner than one
    interval after the last poll recorded in the store (it polled "now"
    before: 5 violations in 5)."""
    interval_scale = 0.1  # 30 s rule -> 3 s: slower than starting a tracker
    with Emulator(time_scale=interval_scale, failure_rate=0) as emu:
        store, media = tmp_path / "h.sqlite", tmp_path / "v"
        for i in range(5):
            task = emu.client().create_video(f"again {i} [duration: 290]")
            with Tracker(emu.client(), store=store, media_dir=media) as tracker:
                assert tracker.track(task.id).status_text == "queued"  # polled at once
            with Tracker(emu.client(), store=store, media_dir=media) as tracker:
                tracker.track(task.id, label="again")  # at once, in a "new process"
                assert tracker.record(task.id).poll_count == 1
        stats = emu.stats
        assert stats.polls == 5 and stats.interval_violations == 0


def test_two_spellings_of_one_host_share_the_interval(tmp_path: Path) -> None:
    """Two trackers on two stores in one process follow one task through
    localhost and 127.0.0.1: the in-process guard treats them as one service
    (33 violations in 100 polls before)."""
    with Emulator(time_scale=SCALE, failure_rate=0) as emu:
        other = emu.client(base_url=emu.base_url.replace("127.0.0.1", "localhost"))
        assert other.service == emu.client().service
        task = emu.client().create_video("shared [duration: 290]")
        with Tracker(emu.client(), store=tmp_path / "a.sqlite", media_dir=tmp_path / "va") as a, \
                Tracker(other, store=tmp_path / "b.sqlite", media_dir=tmp_path / "vb") as b:
            a.track(task.id)
            b.track(task.id)
            a.wait([task.id], timeout=30, downloads=False)
            b.wait([task.id], timeout=30, downloads=False)
        stats = emu.stats
        assert stats.polls_by_task[task.id] >= 4 and stats.interval_violations == 0


def test_exit_does_not_wait_for_downloads_in_flight(tmp_path: Path) -> None:
    """The script ends while a 40 MB video drips in: the interpreter exits at
    once (it waited 18 s for the download), and the next tracker finishes it."""
    script = textwrap.dedent(f"""
        import sys, time
        from veo_nb.emulator import Emulator, FaultConfig
        from veo_nb.tracker import Tracker
        emu = Emulator(time_scale=0.01, failure_rate=0, video_size=40_000_000,
                       faults=FaultConfig(seed=1, drip_rate=1.0, drip_s=30.0)).start()
        tracker = Tracker(emu.client(), store={str(tmp_path / "h.sqlite")!r},
                          media_dir={str(tmp_path / "v")!r})
        task = tracker.submit("a big one [duration: 125]")
        tracker.wait([task.id], timeout=30, downloads=False)
        while tracker.record(task.id).download_state != "pending" or not list(
                __import__("pathlib").Path({str(tmp_path / "v")!r}).glob(".*.part")):
            time.sleep(0.05)
        print("downloading", flush=True)
    """)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert "downloading" in out.stdout
    assert took < 10, f"exit took {took:.1f} s"
    rows = Store(tmp_path / "h.sqlite").rows()
    assert rows[0].record.download_state in ("pending", "failed")
