"""The widget tree the panel builds for each frontend: Jupyter (tabs, Video
widgets), Colab (no Tab/Accordion, no binary buffers: videos in HTML
``<video>`` elements, a saved file as a data: URL) and VS Code (no file
paths anywhere, a note that clips play without sound)."""

from __future__ import annotations

import base64
import json
import re
import sys
import types
from pathlib import Path

import ipywidgets as widgets
import pytest

from test_widgets_support import (
    MB,
    finished,
    media_of,
)
from veo_nb.widgets.frontend import VSCODE_ENV, detect_frontend
from veo_nb.widgets.traffic import record_traffic
from veo_nb.widgets.tree import walk

pytest_plugins = ["test_widgets_support"]  # the fixtures


@pytest.fixture
def no_frontend_hints(monkeypatch):
    for name in VSCODE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    return monkeypatch


def test_the_frontend_is_detected_from_the_kernels_environment(no_frontend_hints):
    assert detect_frontend() == "jupyter"
    for name in VSCODE_ENV:
        no_frontend_hints.setenv(name, "1")
        assert detect_frontend() == "vscode"
        no_frontend_hints.delenv(name)
    no_frontend_hints.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert detect_frontend() == "colab"


def _played_everything(p, ids) -> list[widgets.Widget]:
    for i in ids:
        media_of(p, i).play.click()
    p.tabs.selected_index = 1
    p.tabs.selected_index = 2
    p.forms.selected_index = 0
    return list(walk(p))


def test_colab_gets_no_tabs_no_accordions_and_no_binary_buffers(big_tracker, make_panel):
    ids = finished(big_tracker, ["one [duration: 130]", "two [duration: 130]"])
    with record_traffic() as traffic:
        p = make_panel(big_tracker, frontend="colab", stream="any")
        view = media_of(p, ids[0])
        view.play.click()  # from the link
        p.close()
        p = make_panel(big_tracker, frontend="colab")
        tree = _played_everything(p, ids)  # from the saved files
    types_used = {type(w) for w in tree}
    assert not types_used & {widgets.Tab, widgets.Accordion, widgets.Video, widgets.Image}
    assert widgets.ToggleButtons in types_used
    assert not any(m.data and m.data.get("buffer_paths") for m in traffic.messages)
    assert traffic.video_bytes_since(0) >= 4 * 2 * MB  # two 3 MB files as base64
    players = [media_of(p, i).player for i in ids]
    assert all(isinstance(pl, widgets.HTML) for pl in players)
    src = players[0].value.split('src="', 1)[1].split('"', 1)[0]
    assert base64.b64decode(src.removeprefix("data:video/mp4;base64,")) == \
        Path(big_tracker.record(ids[0]).video_path).read_bytes()
    assert "64.0 MB" in p.videos.value  # Colab's smaller cap
    # the Tasks/Gallery/History switch shows one page at a time
    p.tabs.selected_index = 1
    assert [pg.layout.display for pg in p.tabs.pages] == ["none", "", "none"]
    p.forms.selected_index = None
    assert all(pg.layout.display == "none" for pg in p.forms.pages)


def test_colab_streams_a_link_in_an_html_video_element(big_tracker, make_panel):
    (task_id,) = finished(big_tracker, ["one [duration: 130]"])
    url = big_tracker.record(task_id).video_url
    p = make_panel(big_tracker, frontend="colab", stream="any")
    view = media_of(p, task_id)
    view.play.click()
    assert isinstance(view.player, widgets.HTML)
    assert f'src="{url.replace("&", "&amp;")}"' in view.player.value and " autoplay " in view.player.value
    assert "0 MB of 64.0 MB" in p.videos.value


def test_jupyter_gets_keyboard_reachable_switches_and_video_widgets(big_tracker, make_panel):
    ids = finished(big_tracker, ["one [duration: 130]"])
    p = make_panel(big_tracker, frontend="jupyter")
    tree = _played_everything(p, ids)
    types_used = {type(w) for w in tree}
    # ipywidgets' Tab and Accordion headers are not in the Tab key's order.
    assert {widgets.ToggleButtons, widgets.Video} <= types_used
    assert not types_used & {widgets.Tab, widgets.Accordion}
    assert "256.0 MB" in p.videos.value and "sound" not in media_of(p, ids[0]).card.value


def test_vscode_never_points_at_files_and_says_there_is_no_sound(big_tracker, make_panel):
    ids = finished(big_tracker, ["one [duration: 130]", "two [duration: 130]"])
    with record_traffic() as traffic:
        p = make_panel(big_tracker, frontend="vscode")
        tree = _played_everything(p, ids)
    assert widgets.Video in {type(w) for w in tree}
    assert all(media_of(p, i).player.format == "mp4" for i in ids)  # bytes, never a path
    state = json.dumps([m.data for m in traffic.messages if m.data], default=repr)
    sources = re.findall(r'(?:src|href)=\\"([^"\\]*)', state)
    assert all(s.startswith(("http://", "https://", "data:")) for s in sources), sources
    assert "file:" not in state
    assert "no sound in VS Code" in media_of(p, ids[0]).card.value


def test_the_frontend_option_overrides_detection(tracker, make_panel, no_frontend_hints):
    no_frontend_hints.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert make_panel(tracker).frontend.name == "colab"
    assert make_panel(tracker, frontend="jupyter").frontend.name == "jupyter"
