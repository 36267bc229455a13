"""Ctrl-C during wait() and interpreter exit: the waiting stops, the tracking
does not, and a tracker never keeps a process alive."""

from __future__ import annotations

import _thread
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from veo_nb.emulator import Emulator
from veo_nb.records import TaskRecord
from veo_nb.store import Store
from veo_nb.tracker import Tracker


def test_ctrl_c_stops_the_wait_not_the_tracking(
    tmp_path: Path, veo_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite",
                 media_dir=tmp_path / "v") as tracker:
        task = tracker.submit("a long pan over a glacier [duration: 900]")  # outlasts the 0.5 s, even on a busy machine
        tracker.start()
        # interrupt_main() does nothing where SIGINT is ignored (a shell's background job)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.5, _thread.interrupt_main)  # what Ctrl-C does
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                tracker.wait(timeout=60)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        said = capsys.readouterr().err
        assert task.id in said and "no cancel" in said
        assert tracker.running  # the poller goes on after the interrupted wait
        done = tracker.wait(timeout=60)
        assert [t.id for t in done] == [task.id] and done[0].is_terminal


def test_a_running_tracker_does_not_keep_the_interpreter_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from veo_nb.emulator import Emulator
        from veo_nb.tracker import Tracker
        emu = Emulator(time_scale=0.01, failure_rate=0).start()
        tracker = Tracker(emu.client(), store={str(tmp_path / "h.sqlite")!r},
                          media_dir={str(tmp_path / "v")!r}).start()
        tracker.submit("a slow sunrise [duration: 290]")
        print("submitted", flush=True)
        # no stop(), no close(): the script just ends
    """)
    # A poller that kept the process alive would hit the timeout.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "submitted" in out.stdout and "Traceback" not in out.stderr


def test_a_tracker_polls_by_itself_without_start(tmp_path: Path, veo_emulator: Emulator) -> None:
    """submit() then tasks() later: it said 'queued' forever when nothing
    called start() (no panel, no wait())."""
    import time

    tracker = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
    try:
        task = tracker.submit("on its own [duration: 130]")
        deadline = time.monotonic() + 30
        while tracker.tasks().set_index("task_id").loc[task.id, "video_path"] is None:
            assert time.monotonic() < deadline, "never finished without start()"
            time.sleep(0.05)
        assert tracker.record(task.id).status_text == "completed"
    finally:
        tracker.close()


def test_start_false_leaves_polling_to_refresh(tmp_path: Path, veo_emulator: Emulator) -> None:
    import time

    with Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v",
                 start=False) as tracker:
        task = tracker.submit("driven by hand [duration: 125]")
        assert not tracker.running
        time.sleep(2.0)  # past its finish: nothing polled it
        assert veo_emulator.stats.polls_by_task.get(task.id, 0) == 0
        assert tracker.record(task.id).status_text == "queued"
        while not tracker.record(task.id).is_terminal:
            tracker.refresh()
            time.sleep(0.05)
        assert veo_emulator.stats.interval_violations == 0


def test_wait_returns_once_the_videos_are_saved(tmp_path: Path) -> None:
    """wait() returned before the videos were saved, so tasks() right after
    often had no video_path; downloads=False waits for statuses only."""
    from veo_nb.emulator import FaultConfig

    slow = FaultConfig(seed=3, drip_rate=1.0, drip_s=0.5)  # every video takes 0.5 s
    with Emulator(time_scale=0.01, failure_rate=0, faults=slow) as emu, \
            Tracker(emu.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tr:
        first = [tr.submit(f"clip {i} [duration: {125 + 10 * i}]").id for i in range(3)]
        done = tr.wait(first, timeout=60)
        assert all(t.video_path is not None and t.video_path.is_file() for t in done)
        frame = tr.tasks().set_index("task_id")
        assert frame.loc[first, "video_path"].notna().all()
        fast = tr.submit("statuses only [duration: 125]").id
        (early,) = tr.wait([fast], timeout=60, downloads=False)
        assert early.status_text == "completed" and early.video_path is None
        assert [t.id for t in tr.as_completed([fast], timeout=60)] == [fast]
        assert tr.get(fast).video_path is not None


@pytest.mark.slow
def test_track_many_returns_with_the_first_answers_not_after_later_polls(tmp_path: Path) -> None:
    """track_many waited until no poll of its ids was in flight. With a short
    interval, slow answers and many ids, re-polls are always in flight, so it
    returned only after a whole request timeout, or a lucky gap (200 ids at
    0.5 s: 7.3 s, though every first answer was in after 0.55 s). Here a
    round of polls takes longer than the interval: it must return once every
    task has its first answer, not after several rounds."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    with Emulator(time_scale=0.5 / 30, failure_rate=0, latency_s=0.3,
                  video_size="sample") as emu:
        client = emu.client(timeout=60)
        with ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(lambda i: client.create_video(f"many {i} [duration: 900]").id,
                                range(200)))
        with Tracker(client, store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
            began = time.monotonic()
            tasks = tracker.track_many(ids)
            took = time.monotonic() - began
            polls = sum(emu.stats.polls_by_task.values())
            answered = [tracker.record(i).poll_count >= 1 for i in ids]
    assert all(answered) and [t.id for t in tasks] == ids
    # one round of first polls, and the re-polls that began meanwhile; not
    # round after round until a moment with no poll in flight
    assert polls <= 2 * len(ids), f"{polls} polls in {took:.1f} s before track_many returned"


def test_wait_takes_a_task_another_process_just_wrote(tmp_path: Path, veo_emulator: Emulator) -> None:
    """wait() of every tracked task, right after another process stored a new
    one that this tracker has not followed yet: it waits for it too (it was
    taken for given up before)."""
    with Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite",
                 media_dir=tmp_path / "v") as tracker:
        task = veo_emulator.client().create_video("from the next notebook [duration: 130]")
        with Store(tmp_path / "h.sqlite") as other:  # another process's connection
            other.save(TaskRecord.from_task(task, prompt="from the next notebook"))
        done = tracker.wait(timeout=60)
        assert [t.id for t in done] == [task.id] and done[0].is_terminal
