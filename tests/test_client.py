"""VeoClient against the emulator (a real HTTP server plus a media host)."""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import veo_nb

from scripted_server import Reply, ScriptedServer
from veo_nb import (
    AuthenticationError,
    DownloadError,
    NotFoundError,
    ResultExpiredError,
    TaskStatus,
    VeoError,
)
from veo_nb._spec import BASE_URL
from veo_nb.client import VeoClient
from veo_nb.emulator import Emulator
from veo_nb.errors import MissingAPIKeyError

FINISH = 400.0  # unscaled seconds after which every emulated task has finished


def finish(emulator: Emulator) -> None:
    """Jump the emulator's clock past every task's end (and the poll interval)."""
    emulator.advance(FINISH * emulator.time_scale)


def test_create_poll_complete_and_download(veo_emulator: Emulator, tmp_path: Path) -> None:
    with veo_emulator.client() as client:
        task = client.create_video("a red fox running through snow", resolution="1080P")
        assert task.id.startswith("vgen_") and task.status is TaskStatus.QUEUED
        assert task.model == "veo_3_1_fast"
        assert task.created is not None and task.created.tzinfo is not None
        first = client.get_result(task.id)
        assert first.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING)
        finish(veo_emulator)
        done = client.get_result(task.id)
        assert done.status is TaskStatus.COMPLETED and done.is_terminal
        assert done.video_url and done.video_url.startswith(veo_emulator.media_url)
        assert done.actual_duration == 8
        path = client.download(done, tmp_path)
    assert path == tmp_path.resolve() / f"{task.id}.mp4"
    data = path.read_bytes()
    assert len(data) > 1000 and data[4:8] == b"ftyp"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    stats = veo_emulator.stats
    assert stats.creates == 1
    assert stats.media_requests == 1
    assert stats.media_auth_headers == 0
    assert stats.interval_violations == 0


def test_reference_and_first_last_modes_round_trip(veo_emulator: Emulator) -> None:
    with veo_emulator.client() as client:
        ref = client.create_video("a cat", reference_images=["https://img.example.com/a.png"])
        fl = client.create_video("a cat", model="veo_3_1_fast_stable",
                                 first_image="https://img.example.com/a.png",
                                 last_image="https://img.example.com/b.png", aspect_ratio="9:16")
        finish(veo_emulator)
        assert client.get_result(ref.id).status is TaskStatus.COMPLETED
        assert client.get_result(fl.id).status is TaskStatus.COMPLETED


def test_input_reference_is_what_goes_on_the_wire() -> None:
    urls = ["https://img.example.com/a.png", "https://img.example.com/b.png"]
    with ScriptedServer() as srv, VeoClient(api_key="k-123456", base_url=srv.url) as client:
        srv.script(Reply.json({"id": "vgen_1", "status": "queued"}))
        client.create_video("a cat", reference_images=urls)
        body = json.loads(srv.requests[0].body)
        assert body["input_reference"] == urls
        assert "first_image" not in body and "image_urls" not in body
        assert srv.requests[0].headers["Content-Type"] == "application/json"
        assert srv.requests[0].headers["User-Agent"].startswith("veo_nb/")


def test_failed_and_no_video_directives(veo_emulator: Emulator, tmp_path: Path) -> None:
    with veo_emulator.client() as client:
        failing = client.create_video("a cat [fail: the cat refused]")
        silent = client.create_video("a cat [no-video]")
        finish(veo_emulator)
        failed = client.get_result(failing.id)
        assert failed.status is TaskStatus.FAILED and failed.error == "the cat refused"
        empty = client.get_result(silent.id)
        assert empty.status is TaskStatus.COMPLETED and empty.video_url is None
        with pytest.raises(DownloadError, match="no video_url"):
            client.download(empty, tmp_path)
        with pytest.raises(DownloadError, match="the cat refused"):
            client.download(failed, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_expired_link_is_result_expired(veo_emulator: Emulator, tmp_path: Path) -> None:
    with veo_emulator.client() as client:
        task = client.create_video("a cat")
        finish(veo_emulator)
        done = client.get_result(task.id)
        veo_emulator.advance(veo_emulator.url_lifetime_s + 1)
        with pytest.raises(ResultExpiredError, match="24 h"):
            client.download(done, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert veo_emulator.stats.media_auth_headers == 0


def test_too_frequent_poll_waits_for_retry_after(veo_emulator: Emulator) -> None:
    with veo_emulator.client() as client:
        task = client.create_video("a cat")
        client.get_result(task.id)
        start = time.monotonic()
        client.get_result(task.id)  # too soon: 429 + Retry-After, waited out
        assert time.monotonic() - start >= veo_emulator.min_poll_interval_s * 0.5
        assert client.rate_limited_until > start
    stats = veo_emulator.stats
    assert stats.interval_violations >= 1
    assert stats.polls_by_task[task.id] >= 3


def test_wrong_key_is_authentication_error(veo_emulator: Emulator, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="veo_nb")
    wrong = "wrong-key-0123456789"
    with veo_emulator.client(api_key=wrong) as client, pytest.raises(AuthenticationError) as info:
        client.create_video("a cat")
    err = info.value
    assert err.status_code in (401, 403)
    assert "VEO_API_KEY" in str(err)
    for text in (str(err), repr(err), err.body_excerpt, caplog.text):
        assert wrong not in text
    assert veo_emulator.stats.creates == 0


def test_unknown_task_is_not_found(veo_emulator: Emulator) -> None:
    with veo_emulator.client() as client, pytest.raises(NotFoundError) as info:
        client.get_result("vgen_doesnotexist")
    assert info.value.status_code == 404


def test_missing_key_names_the_variable_and_sends_nothing(veo_emulator: Emulator) -> None:
    client = VeoClient(base_url=veo_emulator.base_url)
    assert "unset" in repr(client)
    with client:
        for call in (lambda: client.create_video("a cat"), lambda: client.get_result("vgen_1")):
            with pytest.raises(MissingAPIKeyError) as info:
                call()
            assert isinstance(info.value, AuthenticationError)
            message = str(info.value)
            assert "VEO_API_KEY" in message and "veo_nb.connect()" in message
    assert veo_emulator.stats.requests_total == 0


def test_key_never_in_repr_str_errors_or_logs(
    veo_emulator: Emulator, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="veo_nb")
    key = veo_emulator.api_key
    with veo_emulator.client() as client:
        assert key not in repr(client) and key not in str(client)
        assert "api_key=set" in repr(client)
        assert key not in repr(vars(client))  # stored privately (name-mangled), not as a plain field
        task = client.create_video("a cat")
        finish(veo_emulator)
        done = client.get_result(task.id)
        client.download(done, tmp_path)
        errors: list[VeoError] = []
        for call in (lambda: client.get_result("vgen_missing"),
                     lambda: client.download(done.video_url.replace(task.id, "vgen_x"), tmp_path)):
            try:
                call()
            except VeoError as exc:
                errors.append(exc)
        assert len(errors) == 2
    for text in [caplog.text, *map(str, errors), *map(repr, errors)]:
        assert key not in text
    assert "POST" in caplog.text  # logging is actually on


def test_env_var_fallbacks(veo_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEO_API_KEY", veo_emulator.api_key)
    monkeypatch.setenv("VEO_BASE_URL", veo_emulator.base_url + "/")
    with VeoClient(time_scale=0.01) as client:
        assert client.base_url == veo_emulator.base_url
        assert not client.is_documented_service
        assert client.create_video("a cat").status is TaskStatus.QUEUED
    # explicit arguments win over the environment
    with VeoClient(api_key="explicit-key", base_url="https://example.com/x/") as client:
        assert client.base_url == "https://example.com/x"


def test_defaults_without_environment() -> None:
    with VeoClient() as client:
        assert client.base_url == BASE_URL
        assert client.is_documented_service
        assert (client.timeout, client.max_retries, client.time_scale, client.demo) == (30.0, 4, 1.0, False)
        assert client.rate_limited_until == 0.0
        assert "api_key=unset" in repr(client)


def test_colab_secret_fallback(monkeypatch: pytest.MonkeyPatch, veo_emulator: Emulator) -> None:
    asked: list[str] = []

    def get(name: str) -> str:
        asked.append(name)
        return veo_emulator.api_key

    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)  # type: ignore[attr-defined]
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    with VeoClient(base_url=veo_emulator.base_url) as client:
        assert "api_key=set" in repr(client)
        client.create_video("a cat")
    assert asked == ["VEO_API_KEY"]

    def denied(name: str) -> str:
        raise RuntimeError("notebook access not granted")

    colab.userdata = types.SimpleNamespace(get=denied)  # type: ignore[attr-defined]
    with VeoClient(base_url=veo_emulator.base_url) as client:
        assert "api_key=unset" in repr(client)


def test_emulator_client_is_demo(veo_emulator: Emulator) -> None:
    with veo_emulator.client() as client:
        assert client.demo and client.time_scale == veo_emulator.time_scale
        assert "demo=True" in repr(client)


def test_many_threads_share_one_client(veo_emulator: Emulator) -> None:
    with veo_emulator.client() as client:
        with ThreadPoolExecutor(16) as pool:
            tasks = list(pool.map(lambda i: client.create_video(f"cat {i}"), range(32)))
            finish(veo_emulator)
            results = list(pool.map(lambda t: client.get_result(t.id), tasks))
    assert len({t.id for t in tasks}) == 32
    assert all(r.status is TaskStatus.COMPLETED for r in results)
    assert veo_emulator.stats.interval_violations == 0


def test_documented_service_ignores_a_scaled_clock(monkeypatch):
    with pytest.warns(UserWarning, match="time_scale=0.01 ignored"):
        client = VeoClient(api_key="k", time_scale=0.01)
    assert client.time_scale == 1.0 and client.min_poll_interval_s == 30.0
    monkeypatch.setenv("VEO_API_KEY", "k")
    monkeypatch.setenv("VEO_TIME_SCALE", "0.01")  # left over from the emulator
    with pytest.warns(UserWarning, match="ignored"):
        assert veo_nb.connect().time_scale == 1.0
    other = VeoClient(api_key="k", base_url="http://127.0.0.1:9/x", time_scale=0.01)
    assert other.time_scale == 0.01


@pytest.mark.parametrize("a, b", [
    ("http://localhost:8080/api", "http://127.0.0.1:8080/other"),
    ("HTTPS://Example.COM/x", "https://example.com:443/y"),
    ("http://[::1]:5000", "http://127.0.0.2:5000"),
])
def test_service_is_the_normalised_origin(a, b):
    assert VeoClient(api_key="k", base_url=a).service == VeoClient(api_key="k", base_url=b).service


def test_service_differs_by_port_and_can_be_named():
    one = VeoClient(api_key="k", base_url="http://127.0.0.1:8080")
    two = VeoClient(api_key="k", base_url="http://127.0.0.1:8081")
    assert one.service != two.service
    assert VeoClient(api_key="k", base_url="http://127.0.0.1:8080", service="emulator:x").service == "emulator:x"
