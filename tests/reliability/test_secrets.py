"""Secrets: with a distinctive API key, a full demo run leaves the key
nowhere — logs, exceptions, reprs, HTML, DataFrames, exports, the SQLite
files, widget state, an executed notebook — and sends it to no host but
the API, redirects included."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from urllib.parse import quote, quote_plus

import ipywidgets
import nbformat
import pytest
from nbclient import NotebookClient

import veo_nb
from reliability_helpers import captured_logs, wait_until
from scripted_server import Reply, ScriptedServer
from veo_nb import Tracker, VeoClient, VeoError
from veo_nb.emulator import Emulator

KEY = "sk-veo-Zq8XsecretK3yW1thSymb0ls+/=-_~x42"
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_quickstart.ipynb"


def _forms(key: str) -> list[bytes]:
    """The key as it could leak: plain, base64 (also of 'Bearer key'), URL-encoded, JSON-escaped."""
    texts = [key, quote(key, safe=""), quote_plus(key), json.dumps(key)[1:-1],
             base64.b64encode(key.encode()).decode(),
             base64.b64encode(f"Bearer {key}".encode()).decode(),
             base64.urlsafe_b64encode(key.encode()).decode()]
    return sorted({t.encode() for t in texts} | {t.encode("utf-16-le") for t in texts})


def _leaks(blob: bytes | str, where: str) -> list[str]:
    data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
    return [f"{where}: {form[:12]!r}…" for form in _forms(KEY) if form in data]


def _all_widget_state() -> str:
    states = []
    with warnings.catch_warnings():  # Widget.widgets is deprecated, but still the registry
        warnings.simplefilter("ignore", DeprecationWarning)
        every = list(ipywidgets.Widget.widgets.values())
    for widget in every:
        try:
            states.append(widget.get_state())
        except Exception as exc:  # noqa: BLE001 - a closed widget: its repr is enough
            states.append({"error": repr(exc)})
    return json.dumps(states, default=repr)


def test_a_full_demo_run_leaks_the_key_nowhere(tmp_path: Path) -> None:
    found: list[str] = []
    errors: list[str] = []
    with Emulator(time_scale=0.01, failure_rate=0.3, seed=8, api_key=KEY) as emu, \
            captured_logs(logging.DEBUG) as logs:
        client = emu.client()
        tracker = Tracker(client, store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
        view = veo_nb.panel(tracker)
        try:
            tracker.start()
            ids = [tracker.submit(p).id for p in
                   ("a fox", "a boat [fail]", "a lake [no-video]", f"echo {KEY[:6]} [fail: no]")]
            tracker.wait(ids, timeout=300)
            wait_until(lambda: all(tracker.record(i).download_state in ("saved", "none")
                                   for i in ids), what="videos saved")
            view.refresh_now()
            view.update()
            for bad in (lambda: client.get_result("vgen_nope"),
                        lambda: client.create_video(""),
                        lambda: VeoClient("wrong-" + KEY[:8], emu.base_url).get_result(ids[0]),
                        lambda: VeoClient(None, emu.base_url).get_result(ids[0]),
                        lambda: tracker.track("vgen_unknown")):
                try:
                    bad()
                except VeoError as exc:
                    errors.append(f"{exc!s} {exc!r} {getattr(exc, 'body_excerpt', '')}")
            shown = [repr(client), str(client), repr(vars(client)), repr(tracker),
                     tracker._repr_html_(), repr(view), *(repr(tracker.get(i)) for i in ids),
                     tracker.tasks().to_string(), tracker.history().to_string(),
                     tracker.summary().to_string(), _all_widget_state()]
            exports = [tracker.export(tmp_path / f"out/{what}.{fmt}", what)
                       for what in ("tasks", "history", "summary") for fmt in ("csv", "json", "parquet")]
        finally:
            view.close()
            tracker.close()
        log_text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in logs)
        assert emu.stats.media_requests > 0 and emu.stats.media_auth_headers == 0
    assert errors and len(logs) > 50
    found += _leaks("\n".join(errors), "exceptions") + _leaks(log_text, "logs")
    found += [leak for i, text in enumerate(shown) for leak in _leaks(text, f"view {i}")]
    for path in [*exports, *tmp_path.glob("h.sqlite*")]:
        found += _leaks(path.read_bytes(), path.name)
    assert found == []


def test_an_executed_notebook_leaks_the_key_nowhere(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "VEO_TIME_SCALE": "0.01"}
    with Emulator(time_scale=0.01, seed=2, api_key=KEY) as emu:
        env.update(VEO_API_KEY=KEY, VEO_BASE_URL=emu.base_url, VEO_LOG="debug")
        env.pop("VEO_DEMO", None)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
        assert emu.stats.creates > 0 and emu.stats.media_auth_headers == 0
    outputs = json.dumps([cell.get("outputs", []) for cell in nb.cells])
    assert "real VEO service" in outputs  # it used the key, not demo mode
    found = _leaks(outputs, "outputs")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            found += _leaks(path.read_bytes(), str(path.relative_to(tmp_path)))
    assert found == []


@pytest.mark.parametrize("video_on_api_host", [False, True])
def test_the_key_goes_only_to_the_api(tmp_path: Path, video_on_api_host: bool) -> None:
    """A redirect chain from the video link through two more hosts: none but
    the API's own origin ever sees an Authorization header."""
    with ScriptedServer(repeat_last=True) as api, ScriptedServer(repeat_last=True) as hop, \
            ScriptedServer(repeat_last=True) as third:
        third.script(lambda rec: Reply(200, b"\0\0\0\x18ftypmp42"))
        hop.script(lambda rec: Reply.redirect(f"{third.url}/final.mp4", 307))
        start = f"{api.url if video_on_api_host else hop.url}/start.mp4"
        api.script(lambda rec: Reply.redirect(f"{hop.url}/next.mp4") if rec.path == "/start.mp4"
                   else Reply.json({"id": "t", "status": "completed", "video_url": start}))
        with VeoClient(KEY, api.url, time_scale=0.01) as client:
            path = client.download(client.get_result("t"), tmp_path)
        assert path.read_bytes().startswith(b"\0\0\0\x18ftyp")
        assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in api.requests)
        others = hop.requests + third.requests
        assert others and not [r for r in others if "Authorization" in r.headers]
        assert not [r for r in others for leak in _leaks(repr(r), "request") if leak]


def test_the_leak_detector_finds_every_form() -> None:
    for form in _forms(KEY):
        assert _leaks(b"<" + form + b">", "sample")


DB_PASSWORD = "pg-Pa55w0rd-Xq7secret"


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["address", "query"])
def test_the_database_password_appears_nowhere(tmp_path: Path, pg_db_url: str, form: str) -> None:
    """A PostgreSQL store URL with a password, in the address or as
    ``?password=`` (the test server trusts any): the password is in no repr,
    store key, log, error, frame, export, widget state or thread name, and a
    wrong URL's error does not quote it either."""
    if form == "address":
        url = pg_db_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
    else:
        url = f"{pg_db_url}?password={DB_PASSWORD}&application_name=veo"
    found: list[str] = []
    with Emulator(time_scale=0.01, failure_rate=0.3, seed=3) as emu, \
            captured_logs(logging.DEBUG) as logs:
        tracker = Tracker(emu.client(), store=url, media_dir=tmp_path / "v")
        view = veo_nb.panel(tracker)
        try:
            ids = [tracker.submit(p).id for p in ("a fox", "a boat [fail]")]
            tracker.wait(ids, timeout=120)
            view.update()
            shown = [repr(tracker), tracker._repr_html_(), tracker.store_key, repr(tracker.store),
                     tracker.store.url, tracker.tasks().to_string(),
                     tracker.history().to_string(), tracker.summary().to_string(), repr(view),
                     _all_widget_state(), " ".join(t.name for t in threading.enumerate()),
                     "\n".join(repr(e) for e in tracker.recent_errors())]
            exports = [tracker.export(tmp_path / f"out/{what}.csv", what)
                       for what in ("tasks", "history", "summary")]
        finally:
            view.close()
            tracker.close()
        errors = []
        host, _, rest = url.rpartition(":")
        for bad in (f"{host}:1/{rest.partition('/')[2]}",
                    url.replace("/veo_test_", "/missing_veo_test_")):
            with pytest.raises(VeoError) as info:
                Tracker(emu.client(), store=bad, media_dir=tmp_path / "v")
            errors.append(f"{info.value!s} {info.value!r}")
        log_text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in logs)
    texts = {"logs": log_text, "errors": "\n".join(errors), **{f"view {i}": t for i, t in
                                                              enumerate(shown)}}
    texts.update({p.name: p.read_text() for p in exports})
    found = [where for where, text in texts.items() if DB_PASSWORD in text]
    assert "***" in tracker.store.url and found == []
