"""connect(): the real service with a key, the embedded emulator without one."""

from __future__ import annotations

import time

import pytest

import veo_nb
from veo_nb import _connect, _spec


@pytest.fixture
def fresh_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """No demo emulator started yet in this process (as in a new kernel)."""
    monkeypatch.setattr(_connect, "_demo_emulator", None)


def test_without_a_key_connect_gives_a_working_demo_client(
    fresh_demo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    client = veo_nb.connect()
    line = capsys.readouterr().out.strip()
    assert client.demo and client.has_api_key
    assert client.base_url.startswith("http://127.0.0.1:")
    assert "demo mode" in line and "VEO_API_KEY" in line and line.count("\n") == 0
    task = client.create_video("a lighthouse at dusk")
    assert client.get_result(task.id).id == task.id
    # One emulator per process, shared by every call, announced once.
    assert veo_nb.connect().base_url == client.base_url
    assert capsys.readouterr().out == ""


def test_with_a_key_connect_targets_the_documented_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEO_API_KEY", "sk-test-not-real")
    client = veo_nb.connect()
    assert not client.demo
    assert client.base_url == _spec.BASE_URL
    assert client.is_documented_service
    assert "sk-test-not-real" not in repr(client)


def test_base_url_and_time_scale_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEO_API_KEY", "k")
    monkeypatch.setenv("VEO_BASE_URL", "http://127.0.0.1:9/kyyReactApiServer/")
    monkeypatch.setenv("VEO_TIME_SCALE", "0.5")
    client = veo_nb.connect()
    assert client.base_url == "http://127.0.0.1:9/kyyReactApiServer"
    assert client.time_scale == 0.5 and not client.is_documented_service


def test_veo_demo_forces_demo_mode_even_with_a_key(
    fresh_demo: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VEO_API_KEY", "sk-real-looking")
    monkeypatch.setenv("VEO_DEMO", "1")
    client = veo_nb.connect()
    assert client.demo and client.base_url.startswith("http://127.0.0.1:")
    assert "VEO_DEMO is set" in capsys.readouterr().out


def test_demo_failure_rate_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEO_DEMO_FAILURE_RATE", "0")
    client = veo_nb.connect(quiet=True)
    tasks = [client.create_video(f"a calm sea, take {i} [duration: 1]") for i in range(20)]
    deadline = time.monotonic() + 60
    results = []
    for task in tasks:
        while (result := client.get_result(task.id)).status.value not in ("completed", "failed"):
            assert time.monotonic() < deadline, result
            time.sleep(client.time_scale * 31)
        results.append(result)
    assert all(r.status.value == "completed" for r in results)


def test_demo_tasks_survive_a_kernel_restart(tmp_path):
    """A restart ends the embedded emulator; the next kernel's emulator loads
    its state from veo_nb_data/demo/, so an unfinished task is still known and
    completes (it became 'failed (404)' before)."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    kernel = textwrap.dedent("""
        import sys, time
        import veo_nb
        client = veo_nb.connect(demo=True, time_scale=0.02, failure_rate=0, quiet=True)
        tracker = veo_nb.Tracker(client)
        if sys.argv[1] == "submit":
            task = tracker.submit("a long pan [duration: 200]")
            print(task.id, flush=True)
            time.sleep(60)  # killed meanwhile, like a kernel restart
        else:
            (done,) = tracker.wait(timeout=60)
            print(done.id, done.status_text, done.error, done.video_path is not None, flush=True)
    """)
    first = subprocess.Popen([sys.executable, "-c", kernel, "submit"], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
    try:
        task_id = first.stdout.readline().strip()
        assert task_id.startswith("vgen_")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        first.stdout.close()
    second = subprocess.run([sys.executable, "-c", kernel, "resume"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [task_id, "completed", "None", "True"]


@pytest.mark.slow
def test_a_second_demo_kernel_in_the_folder_shares_the_first_ones_service(tmp_path):
    """Two notebooks open in demo mode in one folder share its history. The
    second kernel's emulator had no state file, so its tasks were recorded
    under a service no later process served: "queued" forever, and a later
    kernel's wait() raised TaskTimeoutError. Now the second kernel uses the
    first one's emulator, takes it over when the first one ends (its wait()
    completes), and a later kernel finishes everything."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    kernel = textwrap.dedent("""
        import sys, time
        import veo_nb
        client = veo_nb.connect(demo=True, time_scale=0.02, failure_rate=0)
        tracker = veo_nb.Tracker(client)
        if sys.argv[1] == "first":
            print("up", flush=True)
            time.sleep(120)  # killed meanwhile, like a kernel restart
        elif sys.argv[1] == "second":
            task = tracker.submit("the second notebook's fox [duration: 200]")
            print(task.id, flush=True)
            (done,) = tracker.wait([task.id], timeout=90)
            print(done.status_text, done.video_path is not None, flush=True)
        else:
            done = tracker.wait(timeout=60)
            print(" ".join(f"{t.id}:{t.status_text}" for t in done), flush=True)
    """)

    def start(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", kernel, role], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("first")
    second = None
    try:
        assert "an embedded emulator" in first.stdout.readline()  # it owns the folder's state
        assert first.stdout.readline().strip() == "up"
        second = start("second")
        banner = second.stdout.readline()
        assert "another kernel in this folder" in banner, banner
        task_id = second.stdout.readline().strip()
        assert task_id.startswith("vgen_")
        os.kill(first.pid, signal.SIGKILL)  # the first notebook's kernel restarts
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert out.split() == ["completed", "True"]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    later = subprocess.run([sys.executable, "-c", kernel, "later"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr
    assert f"{task_id}:completed" in later.stdout.split()
