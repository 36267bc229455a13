"""Hostile input: whatever the service (or something posing as it) sends,
the toolkit gives a Task or a VeoError, stores it, shows it escaped and
bounded, never writes outside its media folder, never follows a non-http(s)
link, never sends the key to the video host, and bounds the video's size."""

from __future__ import annotations

import json
import socket
import string
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import ipywidgets
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import veo_nb
from reliability_helpers import SAMPLE_SHA256, sha256, wait_until
from scripted_server import Recorded, Reply, ScriptedServer
from veo_nb import Task, TaskRecord, Tracker, VeoClient, VeoError
from veo_nb.client import parse_task_body
from veo_nb.emulator._media import SAMPLES
from veo_nb.records import export
from veo_nb.store import Store

KEY = "sk-hostile-KEY-5e1f"
RESULT = "/v1/result/"
VIDEO = SAMPLES["16:9"].read_bytes()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
task_like = st.fixed_dictionaries(
    {"id": st.text(min_size=1) | json_values},
    optional={k: json_values for k in ("status", "model", "error", "video_url", "created",
                                        "actualDuration", "object")},
)


# ------------------------------------------------------------------ the parser


@settings(max_examples=400, deadline=None)
@given(value=json_values | task_like)
def test_any_json_gives_a_task_or_a_veo_error_that_can_be_stored(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        task = parse_task_body(body)
    except VeoError:
        return
    assert isinstance(task, Task)
    _store_and_frame(task)


@settings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=300) | st.text(alphabet="[]{}\",:0123456789e.-\\u", max_size=300)
       .map(str.encode))
def test_any_bytes_give_a_task_or_a_veo_error(body: bytes) -> None:
    try:
        assert isinstance(parse_task_body(body), Task)
    except VeoError:
        pass


@pytest.mark.parametrize("body", [
    b"[" * 100_000,  # nesting beyond the recursion limit
    b'{"id": "a", "created": 1' + b"0" * 400 + b"}",  # an int too large for a float
    b'{"id": "a", "actualDuration": -1' + b"0" * 400 + b"}",
    b'{"id": "a\\ud800", "error": "\\udfff", "model": "\\ud83d"}',  # lone surrogates
])
def test_edge_bodies(body: bytes) -> None:
    try:
        task = parse_task_body(body)
    except VeoError:
        return
    _store_and_frame(task)


def _store_and_frame(task: Task) -> None:
    """The task goes through the record, the store and the exports intact."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "h.sqlite") as store:
        record = TaskRecord.from_task(task)
        store.save(record)
        assert store.get(task.id) == record
        frame = store.tasks_frame()
        assert frame["error"].iloc[0] == task.error
        for suffix in (".csv", ".json"):
            export(frame, Path(tmp) / f"t{suffix}")
        repr(task)


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[ScriptedServer, dict[str, bytes]]]:
    """A server answering every request with ``current["body"]``."""
    current = {"body": b""}
    with ScriptedServer(repeat_last=True) as srv:
        srv.script(lambda rec: Reply(200, current["body"], {"Content-Type": "application/json"}))
        yield srv, current


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))
def test_any_body_over_real_http(echo: tuple[ScriptedServer, dict[str, bytes]], body: bytes) -> None:
    srv, current = echo
    current["body"] = body
    with VeoClient(KEY, srv.url, max_retries=0, timeout=10) as client:
        try:
            assert isinstance(client.get_result("vgen_1"), Task)
        except VeoError:
            pass


# ------------------------------------------------------------------ a hostile service


class HostileService:
    """A scripted API + video host: ``tasks[id]`` is the result body for
    ``id``, ``redirects[path]`` a redirect either host answers for ``path``;
    any other path gets the video."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.redirects: dict[str, str] = {}
        self.api = ScriptedServer(repeat_last=True).script(self._answer)
        self.cdn = ScriptedServer(repeat_last=True).script(self._answer)

    def _answer(self, rec: Recorded) -> Reply:
        if rec.path in self.redirects:
            return Reply.redirect(self.redirects[rec.path])
        if RESULT not in rec.path:
            return Reply(200, VIDEO, {"Content-Type": "video/mp4"})
        task_id = unquote(rec.path.split(RESULT, 1)[1])
        return Reply.json(self.tasks[task_id]) if task_id in self.tasks else Reply.json({}, 404)

    def client(self) -> VeoClient:
        return VeoClient(KEY, self.api.url, time_scale=0.01, max_retries=1, timeout=10)

    def close(self) -> None:
        self.api.close()
        self.cdn.close()


@pytest.fixture
def service() -> Iterator[HostileService]:
    svc = HostileService()
    yield svc
    svc.close()


HOSTILE_IDS = [
    "../../escape", "/etc/passwd", "a/b\\c", "..", ".", ".hidden", "x\x00y", "A" * 5000,
    "\u202egpj.mp4", "CON", "C:\\Windows\\evil", "~/home", "%2e%2e%2fsecret", "vgen_ok",
]


def test_hostile_ids_never_leave_the_media_folder(service: HostileService, tmp_path: Path) -> None:
    for task_id in HOSTILE_IDS:
        service.tasks[task_id] = {"id": task_id, "status": "completed",
                                  "video_url": f"{service.cdn.url}/v/x.mp4"}
    media = tmp_path / "deep" / "videos"
    with Tracker(service.client(), store=tmp_path / "h.sqlite", media_dir=media) as tracker:
        tracker.track_many(HOSTILE_IDS)
        wait_until(lambda: all(tracker.record(i).download_state == "saved" for i in HOSTILE_IDS),
                   what="every video saved")
        paths = {Path(tracker.record(i).video_path) for i in HOSTILE_IDS}
    assert len(paths) == len(HOSTILE_IDS)  # two ids never share a file
    assert all(p.parent == media.resolve() and sha256(p) == SAMPLE_SHA256["16:9"] for p in paths)
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in files if p.suffix == ".mp4"} == paths
    assert not [p for p in files if p.name.startswith(".") and p.suffix == ".part"]


MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
WEIRD = "\u202eRTL\u202c \x00NUL \x1b[31mANSI\x07 \ufeffBOM \u200bZW " + MARKUP


def test_hostile_strings_are_escaped_and_bounded_but_kept_raw(
    service: HostileService, tmp_path: Path
) -> None:
    huge = "E" * (1 << 20)
    bodies = {
        "markup" + MARKUP: {"status": "failed", "error": MARKUP, "model": MARKUP},
        "weird": {"status": WEIRD, "error": WEIRD, "model": WEIRD},
        "huge": {"status": "failed", "error": huge + MARKUP, "model": huge},
        "long-status": {"status": huge, "model": "m"},
    }
    for task_id, body in bodies.items():
        service.tasks[task_id] = {"id": task_id, **body}
    with Tracker(service.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v",
                 download=False) as tracker:
        tracker.track_many(list(bodies))
        wait_until(lambda: all(tracker.record(i).poll_count for i in bodies), what="polled")
        view = veo_nb.panel(tracker)
        view.update()
        widget_html = [w.value for w in _widgets_of(view) if isinstance(w, ipywidgets.HTML)]
        view.close()
        page = tracker._repr_html_()
        text = repr(tracker)
        frame = tracker.tasks().set_index("task_id")
        tasks = [tracker.get(i) for i in bodies]
    assert "&lt;script&gt;" in page and any("&lt;script&gt;" in h for h in widget_html)
    for html in (page, *widget_html):
        assert "<script" not in html and "<img" not in html
    for shown in (page, text, *map(repr, tasks), *widget_html):
        assert not set(shown) & set("\x00\x1b\x07\u202e\u202c\ufeff\u200b"), shown[:300]
        assert len(shown) < 20_000
    assert frame.loc["huge", "error"] == huge + MARKUP  # the data keeps the raw value
    assert frame.loc["weird", "error"] == WEIRD
    assert frame.loc["weird", "status_text"] == f"unknown: {WEIRD}"
    assert frame.loc["long-status", "status"] == "unknown"


def _widgets_of(root: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    """``root`` and every widget below it."""
    found, stack = [], [root]
    while stack:
        widget = stack.pop()
        found.append(widget)
        stack.extend(c for c in getattr(widget, "children", ()) if isinstance(c, ipywidgets.Widget))
    return found


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "javascript:alert(1)", "data:video/mp4;base64,AAAA",
    "ftp://127.0.0.1/x.mp4", "//no-scheme/x.mp4", "http://", "redirect:file:///etc/passwd",
    "redirect:javascript:alert(1)",
])
def test_non_http_video_links_are_refused(service: HostileService, tmp_path: Path,
                                          url: str) -> None:
    if url.startswith("redirect:"):
        service.redirects["/v/x.mp4"] = url.removeprefix("redirect:")
        url = f"{service.cdn.url}/v/x.mp4"
    service.tasks["t"] = {"id": "t", "status": "completed", "video_url": url}
    with Tracker(service.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
        tracker.track("t")
        wait_until(lambda: tracker.record("t").download_state in ("failed", "saved"),
                   what="the refusal")
        error = tracker.record("t").download_error
    assert "http" in error and ("must be an http" in error or "refusing a redirect" in error)
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_redirects_from_the_video_host_never_carry_the_key(
    service: HostileService, tmp_path: Path
) -> None:
    """A video link on the CDN, and one on the API's own origin (which gets
    the key), both redirecting to a third host: that host never gets the key."""
    with ScriptedServer(repeat_last=True) as other:
        other.script(lambda rec: Reply(200, VIDEO))
        service.redirects["/media/t.mp4"] = service.redirects["/v/u.mp4"] = f"{other.url}/f.mp4"
        service.tasks["on-api"] = {"id": "on-api", "status": "completed",
                                   "video_url": f"{service.api.url}/media/t.mp4"}
        service.tasks["on-cdn"] = {"id": "on-cdn", "status": "completed",
                                   "video_url": f"{service.cdn.url}/v/u.mp4"}
        with Tracker(service.client(), store=tmp_path / "h.sqlite",
                     media_dir=tmp_path / "v") as tracker:
            tracker.track_many(["on-api", "on-cdn"])
            wait_until(lambda: all(tracker.record(i).download_state == "saved"
                                   for i in ("on-api", "on-cdn")), what="both saved")
        media_on_api = [r for r in service.api.requests if r.path == "/media/t.mp4"]
        assert [r.headers.get("Authorization") for r in media_on_api] == [f"Bearer {KEY}"]
        assert other.hits() == 2
        assert not [r for r in other.requests + service.cdn.requests if "Authorization" in r.headers]


class EndlessVideo:
    """A video host that streams zeros until the client hangs up (no Content-Length)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/endless.mp4"
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n\r\n")
                try:
                    while True:
                        self.sent += conn.send(b"\0" * 65536)
                except OSError:
                    pass


def test_huge_and_endless_bodies_are_bounded(service: HostileService, tmp_path: Path) -> None:
    endless = EndlessVideo()
    huge = ScriptedServer(repeat_last=True).script(
        Reply(200, b"", {"Content-Length": str(10 * 1024**3)}))
    service.tasks["endless"] = {"id": "endless", "status": "completed", "video_url": endless.url}
    service.tasks["huge"] = {"id": "huge", "status": "completed", "video_url": f"{huge.url}/h.mp4"}
    limit = 1_000_000
    with Tracker(service.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v",
                 max_video_bytes=limit) as tracker:
        tracker.track_many(["endless", "huge"])
        wait_until(lambda: all(tracker.record(i).download_state == "failed"
                               for i in ("endless", "huge")), what="both refused")
        errors = [tracker.record(i).download_error for i in ("endless", "huge")]
    endless.sock.close()
    huge.close()
    assert all(f"max_bytes={limit}" in e for e in errors)
    assert endless.sent < 64 * limit  # stopped reading soon after the limit
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_printable_control_free_alphabet() -> None:
    """The escaping test above relies on these characters being invisible or dangerous."""
    assert not set("\u202e\x00\x1b\x07\ufeff\u200b") & set(string.printable.replace("\x0b", ""))


@pytest.mark.parametrize("url", ["http://cdn.example:99999/v.mp4", "https://cdn.example:abc/v.mp4",
                                 "http://[bad/v.mp4"])
def test_a_link_with_a_bad_port_fails_its_download_for_good(service: HostileService,
                                                            tmp_path: Path, url: str) -> None:
    """It passed the http(s) check, then raised a bare ValueError: the
    download stayed 'pending' forever, with no event and no error."""
    service.tasks["vgen_bad"] = {"id": "vgen_bad", "status": "completed", "video_url": url}
    with Tracker(service.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
        tracker.track("vgen_bad")
        wait_until(lambda: tracker.record("vgen_bad").download_state == "failed",
                   what="the download to fail")
        rec = tracker.record("vgen_bad")
        assert "port" in rec.download_error and "must be an http" in rec.download_error
        history = tracker.history()
        downloads = history[(history.task_id == "vgen_bad") & (history.kind == "download")]
        assert downloads.detail.str.startswith("failed").any()
        time.sleep(0.5)
        # not retried, it cannot work: nothing is left to do, the engine holds it no more
        assert "vgen_bad" not in tracker._engine.states
        assert tracker.wait(["vgen_bad"], timeout=5)[0].status_text == "completed"
