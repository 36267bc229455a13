"""``Emulator(state_path=...)``: tasks, links, ports and the service id
survive a restart, even a SIGKILL and a new process; real time keeps running
while no emulator is up; one live emulator owns the file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from veo_nb import ValidationError
from veo_nb.emulator import Emulator, EmulatorStateError, EmulatorStateInUse

SCALE = 0.02  # 30 s → 0.6 s, [duration: 300] → 6 s
TIMEOUT = 10

CHILD = r"""
import json, sys, time
from veo_nb.emulator import Emulator
emu = Emulator(time_scale=float(sys.argv[2]), failure_rate=0, video_size="sample",
               state_path=sys.argv[1]).start()
emu.advance(100.0)  # this process's clock runs ahead: only wall-clock times may reach the file
print(json.dumps({"base_url": emu.base_url, "media_url": emu.media_url,
                  "api_key": emu.api_key, "service_id": emu.service_id}), flush=True)
time.sleep(600)
"""


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _create(base_url: str, key: str, prompt: str) -> str:
    response = requests.post(f"{base_url}/v1/veo/videos", headers=_auth(key), timeout=TIMEOUT,
                             json={"model": "veo_3_1_fast", "prompt": prompt})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _result(base_url: str, key: str, task_id: str) -> requests.Response:
    return requests.get(f"{base_url}/v1/result/{task_id}", headers=_auth(key), timeout=TIMEOUT)


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _emulator(state: Path, **options: Any) -> Emulator:
    options = {"time_scale": SCALE, "failure_rate": 0, "video_size": "sample", **options}
    return Emulator(state_path=state, **options)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock")
def test_tasks_survive_a_sigkill_and_finish_on_the_wall_clock(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(state), str(SCALE)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        old = json.loads(child.stdout.readline())
        base, key = old["base_url"], old["api_key"]
        assert old["service_id"].startswith("emulator:")

        done = _create(base, key, "a short one [duration: 10]")  # 0.2 s
        deadline = time.monotonic() + 30
        time.sleep(0.3)
        while (body := _result(base, key, done).json())["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(30 * SCALE)
        old_url = body["video_url"]
        old_video = requests.get(old_url, timeout=TIMEOUT).content

        created_after = time.time()
        running = _create(base, key, "a long one [duration: 300]")  # 6 s
        created_before = time.time()

        with pytest.raises(EmulatorStateInUse) as busy:  # the child owns the file
            _emulator(state).start()
        assert str(state) in str(busy.value) and f"process {child.pid}" in str(busy.value)
        assert "stop that emulator" in str(busy.value)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()

    time.sleep(1.0)  # no emulator is up; the service's clock keeps running
    ports_free = _free(_port(old["base_url"])) and _free(_port(old["media_url"]))
    with _emulator(state) as emulator:
        restarted = time.time()
        assert emulator.service_id == old["service_id"]
        assert emulator.api_key == key  # a generated key is kept too
        assert emulator.task_ids() == [done, running]
        if ports_free:
            assert (emulator.base_url, emulator.media_url) == (old["base_url"], old["media_url"])
        answer = _result(emulator.base_url, key, running)
        assert answer.status_code == 200 and answer.json()["status"] in ("queued", "processing")
        finished = _result(emulator.base_url, key, done).json()
        assert finished["status"] == "completed"
        assert finished["video_url"].split("/v/")[1] == old_url.split("/v/")[1]  # same token
        if emulator.media_url == old["media_url"]:
            assert finished["video_url"] == old_url
            assert requests.get(old_url, timeout=TIMEOUT).content == old_video

        assert restarted < created_after + 6.0 - 1.0, "the restart came too late to tell"
        while emulator.peek(running)["status"] != "completed":
            assert time.time() < created_before + 30
            time.sleep(0.01)
        completed_at = time.time()
        # 6 s after its creation in the killed process, not 6 s after the restart
        assert created_after + 6.0 - 0.05 <= completed_at <= created_before + 6.0 + 0.5
        assert _result(emulator.base_url, key, running).json()["status"] == "completed"
    saved = json.loads(state.read_text())
    assert saved["version"] == 1 and len(saved["tasks"]) == 2


def test_one_live_emulator_owns_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "emulator.json"
    first = _emulator(state).start()
    try:
        second = _emulator(state)
        with pytest.raises(EmulatorStateInUse, match="this process") as busy:
            second.start()
        assert isinstance(busy.value, RuntimeError) and str(state) in str(busy.value)
        with pytest.raises(RuntimeError):
            _ = second.base_url  # it did not start
        task_id = _create(first.base_url, first.api_key, "a cat")
    finally:
        first.stop()
    with second:  # free once the first one stopped
        assert second.service_id == first.service_id
        assert second.task_ids() == [task_id]
    assert Emulator().service_id is None


def test_the_file_holds_wall_clock_times_and_is_saved_at_each_create(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    with _emulator(state) as emulator:
        emulator.advance(50.0)  # the emulator's clock is not the wall clock
        assert json.loads(state.read_text())["tasks"] == []
        before = time.time()
        task_id = _create(emulator.base_url, emulator.api_key, "a cat [duration: 300]")
        saved = json.loads(state.read_text())  # saved before the answer
        assert saved["service_id"] == emulator.service_id
        assert saved["ports"] == [_port(emulator.base_url), _port(emulator.media_url)]
        (task,) = saved["tasks"]
        assert task["plan"]["task_id"] == task_id and task["last_poll"] is None
        assert before <= task["plan"]["started_at"] <= time.time()
        assert task["plan"]["end"] - task["plan"]["started_at"] == pytest.approx(300 * SCALE)
        assert task["plan"]["resolution"] == "720p" and task["plan"]["mode"] == "text"
        _result(emulator.base_url, emulator.api_key, task_id)
        polled = time.time()
    task = json.loads(state.read_text())["tasks"][0]  # saved again at stop()
    assert polled - 1 <= task["last_poll"] <= polled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emulator.json", "emulator.json.lock"]
    assert state.stat().st_mode & 0o077 == 0  # it holds the key: owner-only


def test_a_restart_keeps_the_polling_rule_and_falls_back_to_free_ports(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    with _emulator(state, time_scale=1.0) as emulator:
        key = emulator.api_key
        task_id = _create(emulator.base_url, key, "a cat")
        assert _result(emulator.base_url, key, task_id).status_code == 200
        old_port = _port(emulator.base_url)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        with _emulator(state, time_scale=1.0) as emulator:
            assert _port(emulator.base_url) != old_port
            too_soon = _result(emulator.base_url, key, task_id)  # last poll was a moment ago
            assert too_soon.status_code == 429
            assert emulator.stats.interval_violations == 1


def test_an_explicit_key_wins_over_the_saved_one(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    with _emulator(state) as emulator:
        task_id = _create(emulator.base_url, emulator.api_key, "a cat")
    with _emulator(state, api_key="my-key") as emulator:
        assert emulator.api_key == "my-key"
        assert _result(emulator.base_url, "my-key", task_id).status_code == 200
    assert json.loads(state.read_text())["api_key"] == "my-key"


CORRUPT = {
    "not JSON": "{not json",
    "not an object": "[1, 2]",
    "another version": json.dumps({"version": 2, "tasks": []}),
    "no version": json.dumps({"tasks": []}),
    "missing fields": json.dumps({"version": 1, "tasks": []}),
    "bad task": json.dumps({"version": 1, "service_id": "emulator:x", "api_key": "k",
                            "ports": [0, 0], "tasks": [{"plan": {"task_id": 5}}]}),
    "bad ports": json.dumps({"version": 1, "service_id": "emulator:x", "api_key": "k",
                             "ports": "8000", "tasks": []}),
    "not UTF-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_an_unreadable_state_file_raises_a_clear_validation_error(
    tmp_path: Path, content: str | bytes
) -> None:
    state = tmp_path / "emulator.json"
    if isinstance(content, bytes):
        state.write_bytes(content)
    else:
        state.write_text(content)
    emulator = _emulator(state)
    with pytest.raises(EmulatorStateError) as error:
        emulator.start()
    assert isinstance(error.value, ValidationError)
    assert str(state) in str(error.value) and "delete it" in str(error.value)
    state.unlink()  # the lock was released: with the file gone, the same emulator starts
    with emulator:
        assert emulator.task_ids() == []


def test_a_saved_task_with_a_wrong_field_type_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    with _emulator(state) as emulator:
        _create(emulator.base_url, emulator.api_key, "a cat")
    data = json.loads(state.read_text())
    data["tasks"][0]["plan"]["end"] = "soon"
    state.write_text(json.dumps(data))
    with pytest.raises(EmulatorStateError, match="invalid entry"):
        _emulator(state).start()
