"""The emulator over real HTTP, with plain ``requests``.

Timing-sensitive checks lean on :meth:`Emulator.advance` (move the clock)
or poll until a condition holds before a generous deadline, so they stay
reliable on a slow, shared machine.
"""

from __future__ import annotations

import http.client
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from veo_nb._spec import ESTIMATES_S, Mode
from veo_nb.emulator import Emulator
from veo_nb.emulator._service import _retry_after
from veo_nb.emulator._tasks import Directives, plan_task, seconds_text

TIMEOUT = 10
RESULT_KEYS = {"id", "object", "created", "model", "status", "video_url", "error"}


class Api:
    """A tiny ``requests`` wrapper around one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emulator.api_key}"

    def create(self, prompt: str = "a cat on a skateboard", **fields: Any) -> requests.Response:
        body = {"model": "veo_3_1_fast", "prompt": prompt, **fields}
        return self.session.post(f"{self.emulator.base_url}/v1/veo/videos", json=body, timeout=TIMEOUT)

    def create_id(self, prompt: str = "a cat on a skateboard", **fields: Any) -> str:
        response = self.create(prompt, **fields)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def result(self, task_id: str) -> requests.Response:
        return self.session.get(f"{self.emulator.base_url}/v1/result/{task_id}", timeout=TIMEOUT)

    def finished(self, task_id: str) -> dict[str, Any]:
        """Jump the clock past any task's end and poll once."""
        self.emulator.advance(1000 * self.emulator.time_scale)
        response = self.result(task_id)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def api(veo_emulator: Emulator) -> Iterator[Api]:
    client = Api(veo_emulator)
    yield client
    client.session.close()


def wait_for(condition: Callable[[], bool], deadline_s: float = 20.0, step_s: float = 0.05) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(step_s)


# -- the fixture and the lifecycle -------------------------------------------


def test_fixture_gives_a_fast_emulator_that_never_fails_at_random(veo_emulator: Emulator) -> None:
    assert veo_emulator.time_scale == 0.01
    assert veo_emulator.failure_rate == 0.0
    assert veo_emulator.min_poll_interval_s == pytest.approx(0.3)
    assert veo_emulator.url_lifetime_s == pytest.approx(864.0)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/kyyReactApiServer", veo_emulator.base_url)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", veo_emulator.media_url)
    assert veo_emulator.media_url not in veo_emulator.base_url
    assert veo_emulator.api_key.startswith("emu-")


def test_create_answers_like_the_service(api: Api) -> None:
    before = int(time.time())
    body = api.create(model="veo_3_1_pro").json()
    assert set(body) == {"id", "object", "created", "model", "status"}
    assert re.fullmatch(r"vgen_[0-9a-f]{12}", body["id"])
    assert body["object"] == "video" and body["model"] == "veo_3_1_pro"
    assert body["status"] == "queued"
    assert before <= body["created"] <= int(time.time())
    assert api.emulator.task_ids() == [body["id"]]


def test_statuses_advance_on_the_real_clock() -> None:
    # queued for 1 s, then processing until 2.5 s (time_scale 0.01)
    with Emulator(time_scale=0.01, failure_rate=0, queue_s=(100, 100)) as emulator:
        api = Api(emulator)
        task_id = api.create_id("a slow pan over hills [duration: 250]")
        seen: list[str] = []
        end = time.monotonic() + 30
        while not seen or seen[-1] not in ("completed", "failed"):
            assert time.monotonic() < end, f"still {seen[-1]} at the deadline"
            response = api.result(task_id)
            assert response.status_code == 200, response.text
            body = response.json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
                if body["status"] != "completed":
                    assert set(body) == RESULT_KEYS
                    assert body["video_url"] is None and body["error"] is None
            time.sleep(emulator.min_poll_interval_s)  # measured from the answer: never too soon
        assert seen == ["queued", "processing", "completed"]
        assert set(body) == RESULT_KEYS | {"actualDuration"}
        assert body["actualDuration"] == 8 and body["error"] is None
        assert body["video_url"].startswith(emulator.media_url + "/v/" + task_id + "/")
        assert emulator.stats.interval_violations == 0


def test_plans_follow_the_documented_estimates() -> None:
    rng = random.Random(7)
    payloads = {
        Mode.TEXT: {},
        Mode.REFERENCE: {"input_reference": ["https://example.com/a.png"]},
        Mode.FIRST_LAST: {"first_image": "https://example.com/a.png"},
    }
    for mode, extra in payloads.items():
        low, high = ESTIMATES_S[mode]
        for _ in range(200):
            payload = {"model": "veo_3_1_fast", "prompt": "x", "aspect_ratio": "16:9",
                       "resolution": "720p", **extra}
            plan = plan_task(
                rng, task_id="vgen_0", created=0, payload=payload, now=100.0,
                time_scale=0.5, failure_rate=0.5, queue_s=(3.0, 20.0),
            )
            assert plan.mode is mode
            queued = (plan.processing_at - 100.0) / 0.5
            assert 3.0 <= queued <= 20.0
            total = (plan.end - 100.0) / 0.5
            if plan.error is None:
                assert low <= total <= high
            else:  # fails during processing
                assert queued < total < high
                if mode is not Mode.TEXT and "http" in plan.error:
                    assert "https://example.com/a.png" in plan.error


def test_directives_are_read_from_the_prompt() -> None:
    assert Directives.parse("a cat") == Directives()
    assert Directives.parse("a cat [FAIL]") == Directives(fail=True)
    assert Directives.parse("[fail: <b>boom</b> & [x]] a cat").fail_message == "<b>boom</b> & [x]"
    assert Directives.parse("[no-video] a cat").no_video
    assert Directives.parse("a cat [duration: 12.5]").duration_s == 12.5
    assert Directives.parse("a cat [duration: 0]").duration_s is None


# -- auth, validation, unknown ids -------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Basic abc", 401), ("Bearer ", 401), ("Bearer wrong-key", 401)],
)
def test_bad_keys_are_refused(veo_emulator: Emulator, header: str | None, status: int) -> None:
    """As the gateway answers: 401 with {"error": {"code": "AuthenticationError", ...}}."""
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (("POST", "/v1/veo/videos"), ("GET", "/v1/result/vgen_000000000000")):
        response = requests.request(
            method, veo_emulator.base_url + path, headers=headers,
            json={"model": "veo_3_1_fast", "prompt": "x"}, timeout=TIMEOUT,
        )
        assert response.status_code == status
        error = response.json()["error"]
        assert error["message"] and error["code"] == "AuthenticationError"
    assert veo_emulator.stats.auth_failures == 2
    assert veo_emulator.stats.creates == 0


URL = "https://example.com/a.png"
INVALID_CREATES = {
    "no model": {"prompt": "x"},
    "unknown model": {"model": "veo_9", "prompt": "x"},
    "empty prompt": {"model": "veo_3_1_fast", "prompt": "  "},
    "prompt not a string": {"model": "veo_3_1_fast", "prompt": 5},
    "unknown resolution": {"model": "veo_3_1_fast", "prompt": "x", "resolution": "8K"},
    "4K on a stable model": {"model": "veo_3_1_pro_stable", "prompt": "x", "resolution": "4K"},
    "aspect ratio with suffix": {"model": "veo_3_1_fast", "prompt": "x", "aspect_ratio": "16:9-720p"},
    "four references": {"model": "veo_3_1_fast", "prompt": "x", "input_reference": [URL] * 4},
    "reference not a URL": {"model": "veo_3_1_fast", "prompt": "x", "input_reference": ["a.png"]},
    "references as an object": {"model": "veo_3_1_fast", "prompt": "x", "input_reference": {"a": URL}},
    "references on fast_stable": {"model": "veo_3_1_fast_stable", "prompt": "x", "image_urls": [URL]},
    "both modes": {"model": "veo_3_1_fast", "prompt": "x", "input_reference": [URL], "first_image": URL},
    "last without first": {"model": "veo_3_1_fast", "prompt": "x", "last_image": URL},
    "alias and field": {"model": "veo_3_1_fast", "prompt": "x", "input_reference": [URL], "image_urls": [URL]},
}


@pytest.mark.parametrize("body", list(INVALID_CREATES.values()), ids=list(INVALID_CREATES))
def test_invalid_creates_get_400(api: Api, body: dict[str, Any]) -> None:
    response = api.session.post(f"{api.emulator.base_url}/v1/veo/videos", json=body, timeout=TIMEOUT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and error["message"]
    assert api.emulator.stats.rejected_creates == 1
    assert api.emulator.task_ids() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_bodies_that_are_not_a_json_object_get_400(api: Api, raw: bytes) -> None:
    response = api.session.post(
        f"{api.emulator.base_url}/v1/veo/videos", data=raw,
        headers={"Content-Type": "application/json"}, timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


def test_oversized_and_chunked_bodies_are_refused(api: Api) -> None:
    url = f"{api.emulator.base_url}/v1/veo/videos"
    port = int(api.emulator.base_url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:  # announce a huge body without sending it: refused before it is read
        conn.putrequest("POST", "/kyyReactApiServer/v1/veo/videos")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
        huge = conn.getresponse()
        assert huge.status == 413 and huge.getheader("Connection") == "close"
    finally:
        conn.close()
    chunked = api.session.post(url, data=iter([b'{"model": "veo_3_1_fast"}']), timeout=TIMEOUT)
    assert chunked.status_code == 411
    assert api.create().status_code == 200


def test_valid_variants_are_accepted(api: Api) -> None:
    assert api.create(resolution="4k").status_code == 200
    assert api.create(image_urls=[URL, URL]).status_code == 200
    assert api.create(first_image=URL, last_image=URL, aspect_ratio="9:16").status_code == 200
    assert api.create(model="veo_3_1_fast_stable", first_image=URL).status_code == 200
    assert api.create(resolution=None, extra_field=1).status_code == 200


def test_unknown_ids_and_paths_get_404(api: Api) -> None:
    response = api.result("vgen_ffffffffffff")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert api.session.get(api.emulator.base_url + "/v1/nothing", timeout=TIMEOUT).status_code == 404
    origin = api.emulator.base_url.rsplit("/", 1)[0]
    assert api.session.get(origin + "/v1/result/x", timeout=TIMEOUT).status_code == 404
    assert api.emulator.stats.not_found == 3


# -- the polling rule ---------------------------------------------------------


def test_polling_too_soon_gets_429_and_counts_as_a_violation() -> None:
    with Emulator(time_scale=1.0, failure_rate=0) as emulator:
        api = Api(emulator)
        task_id = api.create_id()
        assert api.result(task_id).status_code == 200
        too_soon = api.result(task_id)
        assert too_soon.status_code == 429
        assert too_soon.json()["error"]["type"] == "rate_limit_exceeded"
        assert 25 <= int(too_soon.headers["Retry-After"]) <= 30
        stats = emulator.stats
        assert stats.interval_violations == 1
        assert stats.violations_by_task == {task_id: 1}
        assert stats.polls_by_task == {task_id: 2}
        emulator.advance(30)
        assert api.result(task_id).status_code == 200
        assert emulator.stats.interval_violations == 1


def test_scaled_retry_after_is_a_decimal_below_one_second() -> None:
    assert _retry_after(29.2) == "30"
    assert _retry_after(1.0) == "1"
    assert _retry_after(0.2512) == "0.26"
    assert _retry_after(0.0001) == "0.01"
    with Emulator(time_scale=0.03, failure_rate=0) as emulator:  # 0.9 s interval
        api = Api(emulator)
        task_id = api.create_id()
        api.result(task_id)
        too_soon = api.result(task_id)
        assert too_soon.status_code == 429
        assert 0 < float(too_soon.headers["Retry-After"]) <= 0.9


def test_polling_at_the_interval_is_fine(api: Api) -> None:
    task_id = api.create_id()
    for _ in range(4):
        assert api.result(task_id).status_code == 200
        time.sleep(api.emulator.min_poll_interval_s)
    stats = api.emulator.stats
    assert stats.interval_violations == 0 and stats.polls_by_task[task_id] == 4


def test_polls_after_a_terminal_status_are_counted(api: Api) -> None:
    task_id = api.create_id()
    assert api.finished(task_id)["status"] == "completed"
    api.emulator.advance(1)
    api.result(task_id)
    assert api.emulator.stats.polls_after_terminal == 1


# -- outcomes -----------------------------------------------------------------


def test_fail_directive_fails_with_a_realistic_message(api: Api) -> None:
    body = api.finished(api.create_id("a cat [fail]"))
    assert body["status"] == "failed"
    assert isinstance(body["error"], str) and len(body["error"]) > 10
    assert body["video_url"] is None and "actualDuration" not in body


@pytest.mark.parametrize(("time_scale", "said"), [(0.12, "72"), (0.01, "6"), (1.0, "600")])
def test_time_in_failure_messages_runs_on_the_scaled_clock(time_scale: float, said: str) -> None:
    with Emulator(time_scale=time_scale, failure_rate=0, seed=3) as emulator:
        api = Api(emulator)
        ids = [api.create_id(f"a cat {i} [fail]") for i in range(40)]
        emulator.advance(1000 * time_scale)
        errors = {api.result(task_id).json()["error"] for task_id in ids}
    timeouts = {e for e in errors if "timed out" in e}
    assert timeouts == {f"Generation timed out after {said} seconds."}
    assert len(errors) >= 3  # the other realistic messages are still drawn


def test_seconds_in_messages_are_rounded_sensibly() -> None:
    assert [seconds_text(s) for s in (600.0, 72.0, 71.6, 10.0, 7.8, 6.0, 0.6, 0.06)] == [
        "600", "72", "72", "10", "7.8", "6", "0.6", "0.06"]


def test_fail_directive_with_a_message_fails_with_exactly_it(api: Api) -> None:
    message = '<script>alert("x")</script> & <b>bold</b>'
    body = api.finished(api.create_id(f"a cat [fail: {message}]"))
    assert body["status"] == "failed" and body["error"] == message


def test_no_video_directive_completes_without_a_url(api: Api) -> None:
    body = api.finished(api.create_id("a cat [no-video]"))
    assert body["status"] == "completed"
    assert body["video_url"] is None and body["error"] is None
    assert body["actualDuration"] == 8


def test_failure_rate_is_the_share_of_failures_and_seeds_reproduce() -> None:
    outcomes = []
    for _ in range(2):
        with Emulator(time_scale=0.01, failure_rate=0.3, seed=42) as emulator:
            api = Api(emulator)
            ids = [api.create_id() for _ in range(150)]
            emulator.advance(10)
            outcomes.append([(i, emulator.peek(i)["status"], emulator.peek(i)["error"]) for i in ids])
            assert emulator.stats.status_counts["failed"] == sum(
                status == "failed" for _, status, _ in outcomes[-1]
            )
            assert emulator.stats.polls == 0  # peek is not a poll
    assert outcomes[0] == outcomes[1]
    share = sum(status == "failed" for _, status, _ in outcomes[0]) / 150
    assert 0.15 <= share <= 0.45


# -- the media host -------------------------------------------------------------


def test_video_is_served_with_ranges_and_without_the_key(api: Api) -> None:
    url = api.finished(api.create_id())["video_url"]
    full = requests.get(url, timeout=TIMEOUT)
    assert full.status_code == 200
    assert full.headers["Content-Type"] == "video/mp4"
    assert full.headers["Accept-Ranges"] == "bytes"
    size = int(full.headers["Content-Length"])
    assert size == len(full.content) and full.content[4:8] == b"ftyp"

    part = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=TIMEOUT)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert part.content == full.content[:100]
    tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=TIMEOUT)
    assert tail.status_code == 206 and tail.content == full.content[-10:]
    rest = requests.get(url, headers={"Range": f"bytes={size - 5}-"}, timeout=TIMEOUT)
    assert rest.status_code == 206 and rest.content == full.content[-5:]
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=TIMEOUT)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size

    stats = api.emulator.stats
    assert stats.media_requests == 6 and stats.media_auth_headers == 0
    assert not any(r.authorization for r in stats.media_log)

    requests.get(url, headers={"Authorization": "Bearer leaked"}, timeout=TIMEOUT)
    stats = api.emulator.stats
    assert stats.media_auth_headers == 1 and stats.media_log[-1].authorization


def test_media_paths_must_match_a_completed_task(api: Api) -> None:
    media = api.emulator.media_url
    task_id = api.create_id("a slow one [duration: 300]")
    api.result(task_id)
    # before completion the link does not exist yet; tokens must match
    url = api.finished(task_id)["video_url"]
    wrong_token = re.sub(r"/[^/]+\.mp4$", "/guess.mp4", url)
    assert requests.get(wrong_token, timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{media}/v/vgen_ffffffffffff/x.mp4", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{media}/other", timeout=TIMEOUT).status_code == 404
    running = api.create_id("still running [duration: 300]")
    token = url.rsplit("/", 1)[1]
    assert requests.get(f"{media}/v/{running}/{token}", timeout=TIMEOUT).status_code == 404


def test_links_expire_after_their_lifetime(api: Api) -> None:
    url = api.finished(api.create_id())["video_url"]
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    api.emulator.advance(api.emulator.url_lifetime_s)
    expired = requests.get(url, timeout=TIMEOUT)
    assert expired.status_code == 403
    assert "expired" in expired.text


# -- server behaviour ---------------------------------------------------------------


def test_connections_are_kept_alive(api: Api) -> None:
    task_id = api.create_id()
    port = int(api.emulator.base_url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    headers = {"Authorization": f"Bearer {api.emulator.api_key}"}
    try:
        conn.request("GET", f"/kyyReactApiServer/v1/result/{task_id}", headers=headers)
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        for _ in range(3):
            conn.request("GET", "/kyyReactApiServer/v1/result/vgen_ffffffffffff", headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 404
        assert sock is not None and conn.sock is sock
    finally:
        conn.close()


def test_many_concurrent_polls(veo_emulator: Emulator) -> None:
    api = Api(veo_emulator)
    ids = [api.create_id() for _ in range(60)]
    statuses: list[int] = []

    def poll(task_id: str) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {veo_emulator.api_key}"
            url = f"{veo_emulator.base_url}/v1/result/{task_id}"
            statuses.append(session.get(url, timeout=TIMEOUT).status_code)

    threads = [threading.Thread(target=poll, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert statuses == [200] * 60
    assert veo_emulator.stats.polls == 60


def test_latency_is_added_to_api_answers() -> None:
    with Emulator(time_scale=0.01, failure_rate=0, latency_s=0.2) as emulator:
        start = time.monotonic()
        Api(emulator).create_id()
        assert time.monotonic() - start >= 0.2


def test_advance_moves_tasks_forward(api: Api) -> None:
    task_id = api.create_id("[duration: 300]")
    assert api.emulator.peek(task_id)["status"] == "queued"
    api.emulator.advance(0.5)  # past the scaled queue (<= 0.2 s)
    assert api.emulator.peek(task_id)["status"] == "processing"
    with pytest.raises(ValueError):
        api.emulator.advance(-1)
    with pytest.raises(KeyError):
        api.emulator.peek("vgen_nope")


def test_lifecycle_start_stop_and_options() -> None:
    emulator = Emulator(api_key="my-key")
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    with emulator:
        assert emulator.api_key == "my-key"
        base_url = emulator.base_url
        with pytest.raises(RuntimeError):
            emulator.start()
    emulator.stop()  # stopping twice is harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + "/v1/result/x", timeout=TIMEOUT)
    for bad in ({"time_scale": 0}, {"failure_rate": 1.5}, {"latency_s": -1}, {"queue_s": (5, 1)}):
        with pytest.raises(ValueError):
            Emulator(**bad)


def test_client_is_wired_to_the_emulator(veo_emulator: Emulator) -> None:
    with veo_emulator.client(max_retries=1) as client:
        assert client.demo and client.base_url == veo_emulator.base_url
        assert client.time_scale == veo_emulator.time_scale
        task = client.create_video("a cat [duration: 100]")
        assert client.get_result(task.id).id == task.id


# -- the command ------------------------------------------------------------------


def test_emulator_command_prints_how_to_use_it_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "veo_nb.cli", "emulator", "--api-key", "k1", "--seed", "1",
         "--time-scale", "0.01", "--failure-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job ignores SIGINT, and its children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        assert process.stdout is not None
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = process.stdout.readline()
            assert line, f"the command ended early: {process.stderr.read() if process.stderr else ''}"
            lines.append(line.strip())
        text = "\n".join(lines)
        base_url = re.search(r"export VEO_BASE_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
        assert "export VEO_API_KEY=k1" in text and "media URL: http://127.0.0.1:" in text
        assert "export VEO_TIME_SCALE=0.01" in text  # so connect() scales its polling
        response = requests.post(
            base_url + "/v1/veo/videos", json={"model": "veo_3_1_fast", "prompt": "x"},
            headers={"Authorization": "Bearer k1"}, timeout=TIMEOUT,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_emulator_command_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    from veo_nb.cli import main

    assert main(["emulator", "--failure-rate", "2"]) == 2
    assert "failure_rate" in capsys.readouterr().err
