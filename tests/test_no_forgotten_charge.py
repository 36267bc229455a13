"""Issue 28: a create that may have reached the service is never forgotten.
Whatever the create's outcome but a clear refusal (the request never left,
or the service answered a readable 4xx error), its "may have been billed"
entry stays, says why, and counts in spending()."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from polling import until
from scripted_server import Reply, ScriptedServer
from veo_nb import APIError, Tracker, VeoClient
from veo_nb._spending import UNCONFIRMED

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _tracker(url: str, store_url: str, tmp_path: Path, **client: float) -> Tracker:
    return Tracker(VeoClient(KEY, url, max_retries=0, **client), store=store_url,
                   media_dir=tmp_path / "v", start=False)


def _late(seconds: float) -> Reply:
    """A good answer, sent ``seconds`` after the request arrived."""
    return replace(Reply.json({"id": "vgen_0123456789ab", "status": "queued"}), delay_s=seconds)


def _entry_says(tracker: Tracker, words: str) -> None:
    (entry,) = tracker.records()
    assert entry.status_text == UNCONFIRMED
    assert "may have been created and billed" in entry.error and words in entry.error
    assert list(tracker.tasks().task_id) == [entry.task_id]
    assert tracker.spending()["tasks"] == 1


UNREADABLE = {
    "a numeric id": (Reply.json({"id": 12345, "status": "queued"}), "no task id"),
    "a 202 with an empty body": (Reply(202), "HTTP 202"),
    "a proxy's page at 200": (Reply.text("<html><body>Gateway</body></html>",
                                         content_type="text/html"), "not JSON"),
    "a JSON array": (Reply.json([{"id": "vgen_1"}]), "got list"),
    "a reset": (Reply(reset=True), "lost the connection"),
    "a 502": (Reply.text("bad gateway", status=502), "HTTP 502"),
}


@pytest.mark.parametrize("shape", list(UNREADABLE))
def test_an_unreadable_answer_keeps_the_entry(shape: str, server: ScriptedServer, store_url: str,
                                              tmp_path: Path) -> None:
    reply, words = UNREADABLE[shape]
    server.script(reply)
    with _tracker(server.url, store_url, tmp_path) as tracker:
        with pytest.raises(APIError):
            tracker.submit("a fox")
        assert server.hits() == 1
        _entry_says(tracker, words)
    with _tracker(server.url, store_url, tmp_path) as again:  # and it is in the store_url
        _entry_says(again, words)


def test_a_timeout_keeps_the_entry(server: ScriptedServer, store_url: str, tmp_path: Path) -> None:
    server.script(_late(3.0))
    with _tracker(server.url, store_url, tmp_path, timeout=0.5) as tracker:
        with pytest.raises(APIError):
            tracker.submit("a fox")
        _entry_says(tracker, "lost the connection")


def test_ctrl_c_during_the_create_keeps_the_entry(server: ScriptedServer, store_url: str,
                                                  tmp_path: Path) -> None:
    server.script(_late(3.0))
    with _tracker(server.url, store_url, tmp_path) as tracker:
        # a real SIGINT to the main thread, blocked reading the answer
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                tracker.submit("a fox")
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        _entry_says(tracker, "interrupted (Ctrl-C)")


CHILD = """
import signal, sys
from veo_nb import Tracker, VeoClient
url, key, store, media = sys.argv[1:]
signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))  # a notebook's clean exit
tracker = Tracker(VeoClient(key, url, max_retries=0), store=store, media_dir=media, start=False)
tracker.submit("a fox")
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_an_exit_or_a_kill_during_the_create_keeps_the_entry(
        stop: signal.Signals, server: ScriptedServer, store_url: str, tmp_path: Path) -> None:
    server.script(_late(30.0))
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.url, KEY, store_url,
                              str(tmp_path / "v")], stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: server.hits() == 1, timeout=60)  # the create is on its way
        child.send_signal(stop)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == (3 if stop == signal.SIGTERM else -signal.SIGKILL)
    with _tracker(server.url, store_url, tmp_path) as tracker:
        _entry_says(tracker, "the process exited" if stop == signal.SIGTERM else "no answer yet")


REFUSED = {
    "400": Reply.json({"error": {"message": "prompt too long"}}, status=400),
    "422": Reply.json({"detail": "bad resolution"}, status=422),
    "401": Reply.json({"error": {"message": "invalid API key"}}, status=401),
    "429": Reply.json({"error": {"message": "slow down"}}, status=429),
}


@pytest.mark.parametrize("status", list(REFUSED))
def test_a_clear_refusal_leaves_nothing(status: str, server: ScriptedServer, store_url: str,
                                        tmp_path: Path) -> None:
    server.script(REFUSED[status])
    with _tracker(server.url, store_url, tmp_path) as tracker:
        with pytest.raises(APIError, match=f"HTTP {status}"):
            tracker.submit("a fox")
        assert tracker.records() == [] and tracker.tasks().empty
        assert tracker.spending()["tasks"] == 0


def test_a_request_that_never_left_leaves_nothing(store_url: str, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with _tracker(f"http://127.0.0.1:{port}", store_url, tmp_path) as tracker:
        with pytest.raises(APIError, match="could not reach"):
            tracker.submit("a fox")
        assert tracker.records() == [] and tracker.spending()["tasks"] == 0


def test_the_entry_goes_in_the_real_tasks_first_write(server: ScriptedServer, store_url: str,
                                                      tmp_path: Path) -> None:
    server.script(Reply.json({"id": "vgen_0123456789ab", "status": "queued"}))
    with _tracker(server.url, store_url, tmp_path) as tracker:
        task = tracker.submit("a fox")
        assert [r.task_id for r in tracker.records()] == [task.id]
        assert [r.task_id for r in tracker.store.records()] == [task.id]
        assert tracker.spending()["tasks"] == 1
