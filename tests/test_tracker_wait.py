"""Ctrl-C during wait() and interpreter exit: the waiting stops, the tracking
does not, and a tracker never keeps a process alive."""

from __future__ import annotations

import _thread
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from veo_nb.emulator import Emulator
from veo_nb.tracker import Tracker


def test_ctrl_c_stops_the_wait_not_the_tracking(
    tmp_path: Path, veo_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite",
                 media_dir=tmp_path / "v") as tracker:
        task = tracker.submit("a long pan over a glacier [duration: 250]")
        tracker.start()
        timer = threading.Timer(0.5, _thread.interrupt_main)  # what Ctrl-C does
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                tracker.wait(timeout=60)
        finally:
            timer.cancel()
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
