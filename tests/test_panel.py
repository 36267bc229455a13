"""The panel, widget-level (no browser), over a real Tracker and the emulator
over real HTTP (time_scale 0.01: 30 s -> 0.3 s, 2-5 min -> 1.2-3 s).

Timing: only generous deadlines (poll until a condition holds) and lower
bounds; the machine may be slow and shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import pytest

import veo_nb.widgets as panel_mod
from veo_nb.emulator import Emulator
from veo_nb import VeoPanel, panel
from veo_nb.widgets.traffic import record_traffic
from veo_nb.tracker import Tracker

DEADLINE = 30.0
XSS = "<img src=x onerror=alert(1)>"


def until(cond: Callable[[], Any], timeout: float = DEADLINE, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def tracker(tmp_path: Path, veo_emulator: Emulator) -> Iterator[Tracker]:
    tr = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "videos")
    yield tr
    tr.close()


@pytest.fixture
def make_panel() -> Iterator[Callable[..., VeoPanel]]:
    made: list[VeoPanel] = []

    def make(tr: Tracker, **options: Any) -> VeoPanel:
        p = panel(tr, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
    until(lambda: not threads(panel_mod.UI_THREAD_NAME), timeout=15)


def row_text(p: VeoPanel, task_id: str) -> str:
    row = p._rows.get(task_id)
    return row.info.value if row is not None and row.widget in p.rows_box.children else ""


def shown_ids(p: VeoPanel) -> list[str]:
    by_widget = {id(r.widget): i for i, r in p._rows.items()}
    return [by_widget[id(w)] for w in p.rows_box.children]


def video_of(p: VeoPanel, task_id: str) -> widgets.Video | None:
    row = p._rows.get(task_id)
    return row.media.children[0] if row is not None and row.media.children else None


def tree_comm_ids(widget: widgets.Widget) -> set[str]:
    ids: set[str] = set()
    stack = [widget]
    while stack:
        w = stack.pop()
        ids.add(w.comm.comm_id)
        stack.extend(getattr(w, "children", ()))
        stack.extend(s for s in (getattr(w, "layout", None), getattr(w, "style", None))
                     if isinstance(s, widgets.Widget))
    return ids


def test_rows_advance_by_themselves_and_the_video_comes_from_the_file(tracker, make_panel):
    task = tracker.submit("A red fox in the snow [duration: 200]", label="fox")
    p = make_panel(tracker)
    assert tracker.running
    seen: list[str] = []

    def finished() -> bool:
        text = row_text(p, task.id)
        seen.append(text)
        return "✓ completed" in text

    until(finished)
    assert any("queued" in t or "processing" in t for t in seen)
    assert "fox" in seen[-1]
    saved = until(lambda: tracker.record(task.id).download_state == "saved" and tracker.record(task.id))
    video = until(lambda: (v := video_of(p, task.id)) is not None and v.format == "mp4" and v)
    assert video.value == Path(saved.video_path).read_bytes()
    until(lambda: "saved:" in row_text(p, task.id))
    assert p._rows[task.id].bar.bar_style == "success"
    assert "took" in p._rows[task.id].clock.value


def test_a_failed_tasks_markup_is_escaped(tracker, make_panel):
    task = tracker.submit(f"[fail: {XSS}] a neon street")
    p = make_panel(tracker)
    text = until(lambda: (t := row_text(p, task.id)) and "failed" in t and t)
    assert "error: &lt;img src=x onerror=alert(1)&gt;" in text
    assert "<img" not in text
    assert 'title="[fail: &lt;img src=x onerror=alert(1)&gt;] a neon street"' in text
    assert p._rows[task.id].bar.bar_style == "danger"

    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "&lt;img" in bundle["text/html"] and "<img" not in bundle["text/html"]
    assert task.id in bundle["text/plain"] and XSS in bundle["text/plain"]
    assert repr(p) == bundle["text/plain"]


def test_submit_form_offers_valid_combinations_and_shows_errors_escaped(tracker, make_panel):
    p = make_panel(tracker)
    form = p.submit_form
    form.model.value = "veo_3_1_fast_stable"
    assert list(form.resolution.options) == ["720p", "1080p"]
    assert [v for _, v in form.mode.options] == ["text", "first_last"]
    form.model.value = "veo_3_1_fast"
    form.resolution.value = "4K"
    form.mode.value = "reference"
    assert form.images.children == (form.reference_images,)
    form.model.value = "veo_3_1_pro_stable"  # no 4K: falls back, keeps the mode
    assert form.resolution.value == "720p" and form.mode.value == "reference"
    form.mode.value = "first_last"
    assert form.images.children == (form.first_image, form.last_image)

    form.prompt.value = "a castle"
    form.first_image.value = "javascript:<b>boom</b>"
    form.button.click()
    assert "submit failed" in p.message.value
    assert "&lt;b&gt;boom" in p.message.value and "<b>" not in p.message.value
    assert tracker.records() == []

    form.mode.value = "text"
    form.label.value = "castle"
    form.button.click()
    (rec,) = tracker.records()
    assert rec.label == "castle" and rec.model == "veo_3_1_pro_stable" and rec.resolution == "720p"
    assert f"submitted {rec.task_id}" in p.message.value
    assert form.prompt.value == ""
    until(lambda: rec.task_id in shown_ids(p))


def test_track_pasted_ids_filter_and_search(tracker, make_panel, veo_emulator):
    other = veo_emulator.client()
    fox = other.create_video("a fox [duration: 130]").id
    bad = other.create_video("[fail: nope] an owl").id
    other.close()
    p = make_panel(tracker)
    p.track_form.ids.value = f"{fox},\n  {bad}  {fox}"
    p.track_form.button.click()
    assert "tracking 2 task(s)" in p.message.value
    assert p.track_form.ids.value == ""
    assert shown_ids(p) == [fox, bad]
    until(lambda: tracker.record(fox).status.value == "completed"
          and tracker.record(bad).status.value == "failed")

    p.status_filter.value = "failed"
    until(lambda: shown_ids(p) == [bad])
    p.status_filter.value = ""
    p.search.value = fox[-8:].upper()  # tracked by id: no prompt, but the id matches
    until(lambda: shown_ids(p) == [fox])
    p.search.value = "nope"  # matches the error
    until(lambda: shown_ids(p) == [bad])
    p.search.value = ""
    until(lambda: shown_ids(p) == [fox, bad])

    p.track_form.button.click()
    assert "paste one or more task ids" in p.message.value


def test_export_to_a_variable_and_to_csv(tracker, make_panel, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    tracker.submit("a fox [duration: 130]")
    p = make_panel(tracker)
    shell = InteractiveShell.instance()
    try:
        p.export_bar.name.value = "my_tasks"
        p.export_bar.to_variable.click()
        frame = shell.user_ns["my_tasks"]
        assert isinstance(frame, pd.DataFrame) and len(frame) == 1
        assert "my_tasks = tracker.tasks() (1 rows)" in p.message.value
        p.export_bar.name.value = "1 bad<name>"
        p.export_bar.to_variable.click()
        assert "not a valid Python variable name" in p.message.value
        assert "&lt;name&gt;" in p.message.value
    finally:
        InteractiveShell.clear_instance()
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    p.export_bar.name.value = "again"
    p.export_bar.to_variable.click()
    assert "needs IPython" in p.message.value

    p.export_bar.path.value = str(tmp_path / "out" / "tasks")
    p.export_bar.to_csv.click()
    written = tmp_path / "out" / "tasks.csv"
    assert f"wrote {written}" in p.message.value
    assert pd.read_csv(written)["task_id"].tolist() == [r.task_id for r in tracker.records()]
    p.export_bar.to_parquet.click()
    assert (tmp_path / "out" / "tasks.parquet").exists()


def test_pause_stops_polling_and_resume_restarts_it(tracker, make_panel, veo_emulator):
    task = tracker.submit("a long one [duration: 6000]")
    p = make_panel(tracker)
    until(lambda: veo_emulator.stats.polls_by_task.get(task.id, 0) >= 2)
    assert p.pause_button.description == "Pause"
    p.pause_button.click()
    assert not tracker.running
    assert p.pause_button.description == "Resume" and "paused" in p.polling.value
    time.sleep(0.5)  # a poll already in flight may still land
    before = veo_emulator.stats.polls_by_task.get(task.id, 0)
    time.sleep(1.5)  # five poll intervals
    assert veo_emulator.stats.polls_by_task.get(task.id, 0) == before
    p.pause_button.click()
    assert tracker.running and p.pause_button.description == "Pause"
    until(lambda: veo_emulator.stats.polls_by_task.get(task.id, 0) > before)
    until(lambda: "next poll in" in p.polling.value)


def test_re_creating_the_panel_adds_no_pollers_or_ui_threads(tracker, make_panel):
    tracker.submit("a fox [duration: 130]")
    first = make_panel(tracker)
    second = make_panel(tracker)
    third = make_panel(tracker)
    assert first._closed and second._closed and not third._closed
    kept = make_panel(tracker, replace=False)
    assert not third._closed and not kept._closed
    assert len(threads("veo_nb-poller")) == 1
    assert len(threads(panel_mod.UI_THREAD_NAME)) == 1
    assert first.comm is None and first.header.comm is None  # widgets closed


def test_close_stops_the_ui_thread_and_keeps_the_tracker_polling(tracker):
    task = tracker.submit("a fox [duration: 200]")
    p = panel(tracker)
    assert threads(panel_mod.UI_THREAD_NAME)
    p.close()
    until(lambda: not threads(panel_mod.UI_THREAD_NAME))
    assert tracker.running
    until(lambda: tracker.record(task.id).status.value == "completed")
    p.update()  # a closed panel ignores updates
    p.close()


def test_one_changed_task_only_sends_messages_for_its_row(tracker, make_panel):
    quick = [tracker.submit(f"quick {i} [duration: 130]").id for i in range(3)]
    tracker.wait(quick, timeout=DEADLINE)
    until(lambda: all(tracker.record(i).download_state == "saved" for i in quick))
    slow = tracker.submit("slow [duration: 400]").id
    with record_traffic() as traffic:
        p = make_panel(tracker)
    assert traffic.since(), "the recording comm saw nothing"
    mark = traffic.mark()
    until(lambda: video_of(p, slow) is not None, timeout=DEADLINE)
    time.sleep(1.5)  # a few more ticks after the change
    row = p._rows[slow]
    allowed = tree_comm_ids(row.widget) | tree_comm_ids(video_of(p, slow)) | {p.header.comm.comm_id, p.polling.comm.comm_id}
    sent = traffic.since(mark)
    assert sent, "no messages for the changed row"
    strangers = [m for m in sent if m.comm_id not in allowed]
    assert strangers == []
    updates = {m.comm_id for m in sent if m.msg_type == "comm_msg"}
    assert row.info.comm.comm_id in updates  # the status changed in place
    for other in quick:
        assert not tree_comm_ids(p._rows[other].widget) & {m.comm_id for m in sent}


def test_pages_build_rows_only_for_the_visible_page(tracker, make_panel, veo_emulator):
    other = veo_emulator.client()
    ids = [other.create_video(f"clip {i} [duration: 130]").id for i in range(25)]
    other.close()
    tracker.track_many(ids)
    p = make_panel(tracker, page_size=10, gallery_page_size=4)
    assert len(p.rows_box.children) == 10 and len(p._rows) == 10
    assert "page 1 of 3" in p.pager.label.value and p.pager.prev.disabled
    p.pager.next.click()
    p.pager.next.click()
    assert shown_ids(p) == ids[20:] and p.pager.next.disabled
    first_rows = dict(p._rows)
    p.pager.prev.click()
    assert shown_ids(p) == ids[10:20]
    assert all(p._rows[i] is first_rows[i] for i in ids[10:20] if i in first_rows)
    until(lambda: all(tracker.record(i).download_state == "saved" for i in ids))
    until(lambda: all(video_of(p, i) is not None for i in ids[10:20]))
    # videos (and their bytes) only for the rows shown, and the gallery is lazy
    assert len(p._videos) == 10

    p.tabs.selected_index = 1
    until(lambda: len(p.gallery.grid.children) == 4)
    assert "page 1 of 7" in p.gallery.pager.label.value
    assert len(p._videos) <= 14
    p.tabs.selected_index = 2
    assert "veo_3_1_fast" in p.history.summary.value
    assert "completed" in p.history.events.value


def test_no_ipython_widgets_frontend_still_gives_a_table(tracker):
    tracker.submit("a <b>bold</b> fox [duration: 130]", label="x<y")
    p = panel(tracker, refresh_every=None, start=False)
    try:
        assert not tracker.running
        text = repr(p)
        assert "x<y" in text and "a <b>bold</b> fox" in text
        html = p._repr_mimebundle_()["text/html"]
        assert "x&lt;y" in html and "&lt;b&gt;bold" in html and "<b>bold" not in html
        assert not threads(panel_mod.UI_THREAD_NAME)
    finally:
        p.close()


def test_package_level_panel_and_tracker_panel_are_the_same_view(veo_emulator, tmp_path) -> None:
    """``veo_nb.panel`` is the function in a fresh import, and ``tracker.panel()``
    builds the same view (re-running it replaces the previous panel)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import veo_nb, inspect; print(inspect.isfunction(veo_nb.panel))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "True"
    tracker = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite",
                      media_dir=tmp_path / "v")
    try:
        first = tracker.panel(refresh_every=None)
        second = tracker.panel(refresh_every=None)
        assert isinstance(second, VeoPanel) and second.tracker is tracker
        assert first is not second
        second.close()
    finally:
        tracker.close()
