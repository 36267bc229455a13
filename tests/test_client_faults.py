"""VeoClient against a scripted real HTTP server: error mapping, retries,
the 429 gate, resets, truncated and oversized downloads, redirects."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from scripted_server import Reply, ScriptedServer
from veo_nb import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    DownloadError,
    NotFoundError,
    RateLimitError,
    ResultExpiredError,
    Task,
    TaskStatus,
    ValidationError,
)
from veo_nb._retry import MAX_RETRY_AFTER_S
from veo_nb.client import VeoClient, parse_retry_after

KEY = "sk-test-SECRET-KEY-9f8e7d"
TASK = {"id": "vgen_abc123def456", "object": "video", "created": 1761635478,
        "model": "veo_3_1_fast", "status": "processing", "video_url": None, "error": None}
OK = Reply.json(TASK)
CREATED = Reply.json({**TASK, "status": "queued"})


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def cdn() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def make(srv: ScriptedServer, **kw) -> VeoClient:
    kw.setdefault("max_retries", 4)
    kw.setdefault("time_scale", 0.01)  # backoff at its floor (~50 ms)
    kw.setdefault("timeout", 10.0)
    return VeoClient(api_key=KEY, base_url=srv.url, **kw)


# --------------------------------------------------------------- error mapping


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_not_retried_and_redacted(srv: ScriptedServer, status: int, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="veo_nb")
    srv.script(Reply.json({"error": {"message": f"invalid key {KEY}"}}, status))
    with make(srv) as c, pytest.raises(AuthenticationError) as info:
        c.get_result("vgen_1")
    err = info.value
    assert err.status_code == status
    assert "VEO_API_KEY" in str(err) and str(status) in str(err)
    assert "invalid key" in str(err)
    for text in (str(err), err.body_excerpt, repr(err), caplog.text):
        assert KEY not in text
    assert srv.hits() == 1
    assert srv.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def key_fragments(text: str, size: int = 6) -> list[str]:
    """Every run of ``size`` characters of KEY found in ``text``."""
    return [KEY[i:i + size] for i in range(len(KEY) - size + 1) if KEY[i:i + size] in text]


@pytest.mark.parametrize("pad", [150, 170, 185, 195])
def test_key_echo_cut_by_the_excerpt_is_still_redacted(srv: ScriptedServer, pad: int) -> None:
    # the key straddles the 200-character excerpt limit: redacting after
    # truncation left its first half in the message
    srv.script(Reply.json({"error": "x" * pad + f" Authorization: Bearer {KEY} rejected"}, 401))
    with make(srv) as c, pytest.raises(AuthenticationError) as info:
        c.get_result("vgen_1")
    for text in (str(info.value), info.value.body_excerpt):
        assert key_fragments(text) == []


def test_404_is_not_found(srv: ScriptedServer) -> None:
    srv.script(Reply.json({"error": "task not found"}, 404))
    with make(srv) as c, pytest.raises(NotFoundError, match="task not found") as info:
        c.get_result("vgen_missing")
    assert info.value.status_code == 404
    assert srv.hits() == 1


def test_task_id_is_quoted(srv: ScriptedServer) -> None:
    srv.script(OK)
    with make(srv) as c:
        c.get_result("a/b?c#d e")
    assert srv.requests[0].path.endswith("/v1/result/a%2Fb%3Fc%23d%20e")


def test_json_error_message_extracted(srv: ScriptedServer) -> None:
    srv.script(Reply.json({"message": "the prompt field is required"}, 400))
    with make(srv) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1")
    assert type(info.value) is APIError  # (a spent quota is InsufficientBalanceError)
    assert info.value.status_code == 400
    assert "400" in str(info.value) and "prompt field is required" in str(info.value)
    assert srv.hits() == 1


def gaps(srv: ScriptedServer) -> list[float]:
    """Seconds between consecutive requests, as the server saw them."""
    times = [r.at for r in srv.requests]
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_retried_then_succeeds(srv: ScriptedServer, status: int) -> None:
    srv.script(Reply.text("oops", status), Reply.text("oops", status), OK)
    with make(srv) as c:
        task = c.get_result("vgen_abc123def456")
        interval = c.min_poll_interval_s
    assert task.status is TaskStatus.PROCESSING
    assert srv.hits() == 3
    # the service may have counted each answered poll: never a retry within the interval
    assert min(gaps(srv)) >= interval


@pytest.mark.parametrize(
    "broken",
    [Reply.text("oops", 503), Reply(reset=True), Reply(200, b"{}", reset_after_headers=True),
     Reply(200, json.dumps(TASK).encode(), delay_s=1.0)],
    ids=["503", "reset", "reset-after-headers", "read-timeout"],
)
def test_retry_false_raises_at_once_a_poll_that_may_have_arrived(
    srv: ScriptedServer, broken: Reply
) -> None:
    srv.script(broken, OK)
    with make(srv, timeout=0.3) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1", retry=False)
    assert info.value.reached is True
    time.sleep(0.05)
    assert srv.hits() == 1


def test_refused_connection_is_marked_not_reached() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = VeoClient(api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=4)
    start = time.monotonic()
    with c, pytest.raises(APIConnectionError) as info:
        c.get_result("vgen_1", retry=False)
    assert info.value.reached is False
    assert time.monotonic() - start < 0.5  # one attempt, no backoff


def test_retry_false_neither_retries_a_429_nor_waits_at_the_gate(srv: ScriptedServer) -> None:
    """A poll whose sender took a claim must go out then or not at all: a
    storm's Retry-After waited out inside the call sent it after the claim
    ran out, next to another process's poll."""
    srv.script(Reply.json({"error": "busy"}, 429, Retry_After="1"), OK)
    with make(srv) as c:
        with pytest.raises(RateLimitError) as info:
            c.get_result("vgen_1", retry=False)
        assert info.value.reached is True and info.value.retry_after == 1.0
        start = time.monotonic()
        with pytest.raises(RateLimitError) as gated:
            c.get_result("vgen_1", retry=False)  # the gate is closed: nothing is sent
        assert gated.value.reached is False and time.monotonic() - start < 0.2
    assert srv.hits() == 1


def test_5xx_exhausted_raises_api_error_with_excerpt(srv: ScriptedServer) -> None:
    srv.script(*[Reply.json({"error": "upstream overloaded"}, 503)] * 3)
    with make(srv, max_retries=2) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1")
    assert info.value.status_code == 503
    assert "upstream overloaded" in str(info.value)
    assert srv.hits() == 3


HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>"
)


def test_html_502_gives_api_error_with_excerpt(srv: ScriptedServer) -> None:
    srv.script(Reply.text(HTML_502, 502, "text/html"))
    with make(srv, max_retries=0) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1")
    err = info.value
    assert not isinstance(err, json.JSONDecodeError)
    assert err.status_code == 502
    assert "502" in str(err) and "Bad Gateway" in str(err)
    assert "Bad Gateway" in err.body_excerpt and "<" not in err.body_excerpt


@pytest.mark.parametrize(
    "reply",
    [
        Reply.text(HTML_502.replace("502 Bad Gateway", "Welcome"), 200, "text/html"),
        Reply(200, b'{"id": "vgen_1", "status": "proc', {"Content-Type": "application/json"}),
        Reply.json({"status": "completed"}),
        Reply.json(["vgen_1"]),
        Reply(200, b"\xff\xfe\x00garbage"),
    ],
    ids=["html", "truncated-json", "no-id", "list", "binary"],
)
def test_unexpected_2xx_bodies_give_api_error(srv: ScriptedServer, reply: Reply) -> None:
    srv.script(reply)
    with make(srv) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1")
    assert info.value.status_code == 200
    assert srv.hits() == 1


def test_echoed_key_redacted_from_bad_2xx_body(srv: ScriptedServer) -> None:
    srv.script(Reply.json({"echo": f"Bearer {KEY}"}))
    with make(srv) as c, pytest.raises(APIError) as info:
        c.get_result("vgen_1")
    assert KEY not in str(info.value) and KEY not in info.value.body_excerpt


def test_redirect_from_api_is_an_error_and_not_followed(srv: ScriptedServer, cdn: ScriptedServer) -> None:
    srv.script(Reply.redirect(cdn.url + "/elsewhere?token=abc", 301))
    with make(srv) as c, pytest.raises(APIError, match="301") as info:
        c.get_result("vgen_1")
    assert "token=abc" not in str(info.value)
    assert cdn.hits() == 0


# --------------------------------------------------------------- 429 and the gate


def test_429_retry_after_seconds_waits(srv: ScriptedServer) -> None:
    srv.script(Reply.json({"error": "slow down"}, 429, Retry_After="0.3"), OK)
    with make(srv) as c:
        start = time.monotonic()
        c.get_result("vgen_1")
        assert c.rate_limited_until >= start + 0.3
    gap = srv.requests[1].at - srv.requests[0].at
    assert gap >= 0.3
    assert srv.hits() == 2


def test_429_retry_after_http_date_waits(srv: ScriptedServer) -> None:
    # An HTTP date has 1 s resolution: the next whole second + 1 s is a wait
    # of just over 1 s, less the time the answer takes to arrive.
    srv.script(
        lambda rec: Reply.json({}, 429, Retry_After=formatdate(math.ceil(time.time()) + 1, usegmt=True)),
        OK,
    )
    with make(srv) as c:
        c.get_result("vgen_1")
    assert srv.requests[1].at - srv.requests[0].at >= 0.7


def test_429_exhausted_raises_rate_limit_error(srv: ScriptedServer) -> None:
    srv.script(*[Reply.json({"error": "slow down"}, 429, Retry_After="0.05")] * 2)
    with make(srv, max_retries=1) as c, pytest.raises(RateLimitError) as info:
        c.get_result("vgen_1")
    assert info.value.status_code == 429
    assert info.value.retry_after == pytest.approx(0.05)
    assert srv.hits() == 2


def test_429_without_retry_after_uses_backoff(srv: ScriptedServer) -> None:
    srv.script(Reply.json({}, 429), OK)
    with make(srv) as c:
        c.get_result("vgen_1")
        assert c.rate_limited_until == 0.0
    assert srv.hits() == 2


def test_long_retry_after_raises_at_once_and_gates_later_calls(srv: ScriptedServer) -> None:
    srv.script(Reply.json({}, 429, Retry_After="3600"))
    with make(srv, time_scale=1.0) as c:
        with pytest.raises(RateLimitError) as info:
            c.get_result("vgen_1")
        # an hour is cut to the cap (15 min): one answer never stops us for good
        assert info.value.retry_after == pytest.approx(MAX_RETRY_AFTER_S) == 900
        assert time.monotonic() + 800 < c.rate_limited_until <= time.monotonic() + 900
        with pytest.raises(RateLimitError):  # refused without sending
            c.get_result("vgen_2")
    assert srv.hits() == 1


def test_gate_is_shared_between_threads(srv: ScriptedServer) -> None:
    srv.repeat_last = True
    srv.script(Reply.json({}, 429, Retry_After="0.5"), OK)
    with make(srv) as c:
        first = threading.Thread(target=c.get_result, args=("vgen_a",))
        first.start()
        deadline = time.monotonic() + 10
        while srv.hits() < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        while c.rate_limited_until == 0.0 and time.monotonic() < deadline:
            time.sleep(0.005)
        others = [threading.Thread(target=c.get_result, args=(f"vgen_{i}",)) for i in range(4)]
        for t in others:
            t.start()
        for t in [first, *others]:
            t.join(10)
    assert srv.hits() == 6
    limited_at = srv.requests[0].at
    assert all(r.at >= limited_at + 0.5 for r in srv.requests[1:])


# --------------------------------------------------------------- connections


@pytest.mark.parametrize("kind", ["reset", "reset_after_headers", "truncated_body"])
def test_get_result_retries_broken_connections(srv: ScriptedServer, kind: str) -> None:
    body = json.dumps(TASK).encode()
    broken = {
        "reset": Reply(reset=True),
        "reset_after_headers": Reply(200, body, reset_after_headers=True),
        "truncated_body": Reply(200, body, truncate_at=10),
    }[kind]
    srv.script(broken, OK)
    with make(srv) as c:
        assert c.get_result("vgen_abc123def456").id == "vgen_abc123def456"
        interval = c.min_poll_interval_s
    assert srv.hits() == 2
    assert gaps(srv)[0] >= interval


def test_get_result_connection_errors_exhausted(srv: ScriptedServer) -> None:
    srv.script(*[Reply(reset=True)] * 3)
    with make(srv, max_retries=2) as c, pytest.raises(APIConnectionError) as info:
        c.get_result("vgen_1")
    assert KEY not in str(info.value)
    assert srv.hits() == 3


def test_read_timeout_retried_one_interval_after_giving_up(srv: ScriptedServer) -> None:
    # the service handled the slow poll: the retry must wait out the interval
    srv.script(Reply(200, json.dumps(TASK).encode(), delay_s=1.0), OK)
    with make(srv, timeout=0.3, time_scale=0.02) as c:
        c.get_result("vgen_1")
        interval = c.min_poll_interval_s
    assert srv.hits() == 2
    assert gaps(srv)[0] >= interval + 0.25


@pytest.mark.parametrize(
    "broken",
    [Reply.text("boom", 500), Reply.text("boom", 503), Reply(reset=True),
     Reply(200, b"{}", reset_after_headers=True), Reply(200, b"{}", delay_s=1.0)],
    ids=["500", "503", "reset", "reset-after-headers", "read-timeout"],
)
def test_create_not_retried_once_it_may_have_arrived(srv: ScriptedServer, broken: Reply) -> None:
    srv.script(broken, CREATED)
    with make(srv, timeout=0.3) as c, pytest.raises(APIError) as info:
        c.create_video("a cat")
    if isinstance(info.value, APIConnectionError):
        assert "may or may not have been created" in str(info.value)
    time.sleep(0.05)
    assert srv.hits() == 1


def test_create_retried_on_429(srv: ScriptedServer) -> None:
    srv.script(Reply.json({"error": "busy"}, 429, Retry_After="0.1"), CREATED)
    with make(srv) as c:
        task = c.create_video("a cat")
    assert task.status is TaskStatus.QUEUED
    assert srv.hits() == 2


def test_create_retried_when_the_connection_was_refused() -> None:
    with socket.socket() as s:  # a free port, with nobody listening yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers: list[ScriptedServer] = []

    def start_later() -> None:
        time.sleep(0.3)
        servers.append(ScriptedServer(port=port).script(CREATED))

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with VeoClient(api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=8, time_scale=0.5) as c:
            task = c.create_video("a cat")
        assert task.id == TASK["id"]
        assert servers[0].hits() == 1
    finally:
        starter.join()
        for s in servers:
            s.close()


def test_refused_connection_exhausted(srv: ScriptedServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with VeoClient(api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=1,
                   time_scale=0.01) as c, pytest.raises(APIConnectionError, match="could not reach"):
        c.get_result("vgen_1")


# --------------------------------------------------------------- downloads

VIDEO = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MiB


def video_task(url: str) -> Task:
    return Task.from_json({**TASK, "status": "completed", "video_url": url})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_into_folder(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, VIDEO, {"Content-Type": "video/mp4"}))
    with make(srv) as c:
        path = c.download(video_task(cdn.url + "/v/vgen_abc123def456.mp4?token=t"), tmp_path)
    assert path == tmp_path.resolve() / "vgen_abc123def456.mp4"
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == ["vgen_abc123def456.mp4"]
    assert "Authorization" not in cdn.requests[0].headers
    assert srv.hits() == 0


def test_download_to_file_path_and_new_folder(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, b"abc"), Reply(200, b"xyz"))
    with make(srv) as c:
        file_path = c.download(video_task(cdn.url + "/a.mp4"), tmp_path / "sub" / "mine.mp4")
        folder_path = c.download(video_task(cdn.url + "/b.mp4"), str(tmp_path / "new") + "/")
    assert file_path == (tmp_path / "sub" / "mine.mp4").resolve() and file_path.read_bytes() == b"abc"
    assert folder_path.parent == (tmp_path / "new").resolve() and folder_path.read_bytes() == b"xyz"


@pytest.mark.parametrize("how", ["rst", "fin", "chunked"])
def test_truncated_download_retried_then_saved(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path, how: str
) -> None:
    cut = Reply(200, VIDEO, truncate_at=len(VIDEO) // 2, fin=how == "fin", chunked=how == "chunked")
    cdn.script(cut, Reply(200, VIDEO))
    with make(srv) as c:
        path = c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == [path.name]
    assert cdn.hits() == 2


def test_truncated_download_gives_up_and_leaves_nothing(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    cdn.script(*[Reply(200, VIDEO, truncate_at=1000, fin=True)] * 3)
    with make(srv, max_retries=2) as c, pytest.raises(DownloadError, match="3 attempts"):
        c.download(video_task(cdn.url + "/v.mp4?sig=SECRETSIG"), tmp_path)
    assert leftovers(tmp_path) == []
    assert cdn.hits() == 3


def test_content_length_larger_than_body(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    lying = Reply(200, b"x" * 500, {"Content-Length": "1000"}, truncate_at=500, fin=True)
    cdn.script(lying, lying)
    with make(srv, max_retries=1) as c, pytest.raises(DownloadError):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert leftovers(tmp_path) == []


def test_max_bytes_by_content_length(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, VIDEO))
    with make(srv) as c, pytest.raises(DownloadError, match="max_bytes"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path, max_bytes=1024 * 1024)
    assert leftovers(tmp_path) == []
    assert cdn.hits() == 1


def test_max_bytes_while_streaming(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, VIDEO, chunked=True))  # no Content-Length to check up front
    with make(srv) as c, pytest.raises(DownloadError, match="max_bytes"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path, max_bytes=1024 * 1024)
    assert leftovers(tmp_path) == []
    assert cdn.hits() == 1


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_links_are_expired_not_retried(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path, status: int, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="veo_nb")
    cdn.script(Reply.text("<Error>AccessDenied</Error>", status, "application/xml"))
    with make(srv) as c, pytest.raises(ResultExpiredError, match="24 h") as info:
        c.download(video_task(cdn.url + "/v.mp4?Signature=CDNTOKEN"), tmp_path)
    assert "CDNTOKEN" not in str(info.value) and "CDNTOKEN" not in caplog.text
    assert cdn.hits() == 1
    assert leftovers(tmp_path) == []


def test_5xx_from_video_host_retried(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply.text("busy", 503, Retry_After="0.1"), Reply(200, b"video"))
    with make(srv) as c:
        assert c.download(video_task(cdn.url + "/v.mp4"), tmp_path).read_bytes() == b"video"
    assert cdn.hits() == 2


def test_redirect_to_another_host_drops_authorization(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    # A video link on the API's own origin may carry the key; once redirected
    # elsewhere (even back again) it never does.
    srv.script(Reply.redirect(cdn.url + "/real.mp4?token=1"), Reply(200, b"video"))
    cdn.script(Reply.redirect(srv.url + "/again.mp4"))
    with make(srv) as c:
        path = c.download(video_task(srv.url + "/files/v.mp4"), tmp_path)
    assert path.read_bytes() == b"video"
    assert srv.requests[0].headers.get("Authorization") == f"Bearer {KEY}"
    assert "Authorization" not in cdn.requests[0].headers
    assert "Authorization" not in srv.requests[1].headers


def test_relative_redirect_followed(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply.redirect("/moved/v.mp4", 307), Reply(200, b"video"))
    with make(srv) as c:
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert cdn.requests[1].path == "/moved/v.mp4"


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/v.mp4", "gopher://x/"])
def test_redirect_to_non_http_refused(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path, target: str
) -> None:
    cdn.script(Reply.redirect(target))
    with make(srv) as c, pytest.raises(DownloadError, match="non-http"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert cdn.hits() == 1
    assert leftovers(tmp_path) == []


def test_too_many_redirects(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.repeat_last = True
    cdn.script(Reply.redirect("/loop"))
    with make(srv) as c, pytest.raises(DownloadError, match="redirects"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert cdn.hits() == 6


@pytest.mark.parametrize("url", ["ftp://cdn.example.com/v.mp4", "file:///tmp/v.mp4", "/v.mp4", ""])
def test_non_http_video_url_rejected_before_any_request(
    srv: ScriptedServer, tmp_path: Path, url: str
) -> None:
    with make(srv) as c, pytest.raises(ValidationError):
        c.download(url, tmp_path)
    assert srv.hits() == 0


def test_task_without_video_cannot_be_downloaded(srv: ScriptedServer, tmp_path: Path) -> None:
    task = Task.from_json({**TASK, "status": "failed", "error": "safety filter"})
    with make(srv) as c, pytest.raises(DownloadError, match="safety filter"):
        c.download(task, tmp_path)
    assert leftovers(tmp_path) == []


def test_download_by_url_string(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, b"video"))
    with make(srv) as c:
        path = c.download(cdn.url + "/x/vgen_zz9.mp4?t=1", tmp_path)
    assert path.name == "vgen_zz9.mp4"


def test_download_bad_max_bytes(srv: ScriptedServer, tmp_path: Path) -> None:
    with make(srv) as c, pytest.raises(ValidationError):
        c.download(video_task("https://cdn.example.com/v.mp4"), tmp_path, max_bytes=0)


def test_download_logs_have_no_query_strings(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="veo_nb")
    cdn.script(Reply.text("x", 500), Reply(200, b"video"))
    with make(srv) as c:
        c.download(video_task(cdn.url + "/v.mp4?X-Amz-Signature=CDNTOKEN"), tmp_path)
    assert "/v.mp4" in caplog.text
    assert "CDNTOKEN" not in caplog.text
    assert os.listdir(tmp_path) == ["vgen_abc123def456.mp4"]


def test_unwritable_destination_is_download_error(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    with make(srv) as c, pytest.raises(DownloadError, match="could not save"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path / "a_file" / "v.mp4")
    assert cdn.hits() == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.25", 0.25), (" 7 ", 7.0), ("-3", 0.0), ("0", 0.0), (None, None), ("", None),
     ("soon", None), ("nan", None), ("inf", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
     ("900", 900.0), ("901", 900.0), ("1000000000", 900.0), ("1e308", 900.0),
     ("Tue, 01 Jan 2030 00:00:00 GMT", 900.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_future_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=now) == pytest.approx(90, abs=1)


def test_saved_video_is_world_readable(srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path) -> None:
    cdn.script(Reply(200, b"video"))
    with make(srv) as c:
        path = c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert path.stat().st_mode & 0o777 == 0o644


def test_video_host_asking_for_a_long_wait_fails_fast(
    srv: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    cdn.script(Reply.text("busy", 503, Retry_After="3600"))
    with make(srv) as c, pytest.raises(DownloadError, match="503"):
        c.download(video_task(cdn.url + "/v.mp4"), tmp_path)
    assert cdn.hits() == 1
