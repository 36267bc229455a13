"""The panel, widget-level (no browser), over a real Tracker and the emulator
over real HTTP: rows, forms, filters, sorting, paging, removing, exporting,
projector mode, the History and Gallery tabs. (Videos: test_widgets_video.py;
frontends: test_widgets_frontends.py; lifecycle: test_widgets_lifecycle.py.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from test_widgets_support import (
    DEADLINE,
    XSS,
    created_elsewhere,
    finished,
    media_of,
    row_text,
    shown_ids,
    threads,
    tree_comm_ids,
    until,
)
from veo_nb import VeoPanel, panel
from veo_nb.store import Store
from veo_nb.tracker import NOT_FOUND_REASON, Tracker
from veo_nb.widgets import UI_THREAD_NAME
from veo_nb.widgets.controls import SETTLE_S
from veo_nb.widgets.traffic import record_traffic

pytest_plugins = ["test_widgets_support"]  # the fixtures


def settle() -> None:
    """Wait out the double-click guard between two deliberate clicks."""
    time.sleep(SETTLE_S + 0.05)


def test_rows_advance_by_themselves_and_finish_with_a_full_bar(tracker, make_panel):
    task = tracker.submit("A red fox in the snow [duration: 200]", label="fox",
                          resolution="1080p", aspect_ratio="9:16")
    p = make_panel(tracker)
    assert tracker.running
    seen: list[str] = []

    def done() -> bool:
        text = row_text(p, task.id)
        seen.append(text)
        return "✓ completed" in text

    until(done)
    assert any("queued" in t or "processing" in t for t in seen)
    assert "fox" in seen[-1] and "1080p · 9:16" in seen[-1]
    until(lambda: "saved:" in row_text(p, task.id))
    row = p._rows[task.id]
    assert row.bar.bar_style == "success" and row.bar.value == 1.0
    assert "took" in row.clock.value
    assert media_of(p, task.id) is not None
    p.search.value = "1080P"  # resolution and aspect ratio are searched too
    assert shown_ids(p) == [task.id]
    p.search.value = "16:9"
    assert shown_ids(p) == []


def test_a_failed_tasks_markup_is_escaped(tracker, make_panel):
    task = tracker.submit(f"[fail: {XSS}] a neon street")
    p = make_panel(tracker)
    text = until(lambda: (t := row_text(p, task.id)) and "failed" in t and t)
    assert "error: &lt;img src=x onerror=alert(1)&gt;" in text
    assert 'class="veo-error"' in text  # what the browser tests check is text only
    assert "<img" not in text
    assert 'title="[fail: &lt;img src=x onerror=alert(1)&gt;] a neon street"' in text
    assert p._rows[task.id].bar.bar_style == "danger" and p._rows[task.id].bar.value == 1.0

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

    settle()
    form.mode.value = "text"
    form.label.value = "castle"
    form.button.click()
    (rec,) = tracker.records()
    assert rec.label == "castle" and rec.model == "veo_3_1_pro_stable" and rec.resolution == "720p"
    assert f"submitted {rec.task_id}" in p.message.value
    assert form.prompt.value == ""
    until(lambda: rec.task_id in shown_ids(p))


def test_each_mode_requires_its_inputs_and_nothing_is_sent_otherwise(tracker, make_panel,
                                                                     emulator):
    p = make_panel(tracker)
    form = p.submit_form
    form.prompt.value = "a lighthouse"
    form.mode.value = "first_last"
    form.button.click()
    assert "needs a first-frame image URL" in p.message.value
    form.mode.value = "reference"
    for urls, count in (("", 0), ("https://a/1.png https://a/2.png, https://a/3.png\nhttps://a/4.png", 4)):
        settle()
        form.reference_images.value = urls
        form.button.click()
        assert f"needs 1 to 3 image URLs, got {count}" in p.message.value
    assert tracker.records() == [] and emulator.stats.creates == 0

    settle()
    form.reference_images.value = "https://img.example/a.png,https://img.example/b.png\n"
    form.button.click()
    (rec,) = tracker.records()
    assert rec.mode == "reference"
    assert rec.request["input_reference"] == ["https://img.example/a.png",
                                              "https://img.example/b.png"]
    settle()
    form.mode.value = "first_last"
    form.prompt.value = "a harbour"
    form.first_image.value = "  https://img.example/first.png "
    form.button.click()
    assert [r.mode for r in tracker.records()] == ["reference", "first_last"]
    assert emulator.stats.creates == 2


def test_double_clicks_act_once(tracker, make_panel, emulator):
    p = make_panel(tracker)
    p.submit_form.prompt.value = "a fox"
    p.submit_form.button.click()
    p.submit_form.button.click()  # the second click of a double click
    assert len(tracker.records()) == 1 and emulator.stats.creates == 1
    assert "submitted" in p.message.value and "failed" not in p.message.value
    assert not p.submit_form.button.disabled

    p.pause_button.click()
    assert not tracker.running
    settle()
    p.pause_button.click()  # Resume ...
    p.pause_button.click()  # ... double-clicked
    assert tracker.running and p.pause_button.description == "Pause"


def test_track_pasted_ids_filter_and_search(tracker, make_panel, emulator):
    fox, bad = created_elsewhere(emulator, ["a fox [duration: 130]", "[fail: nope] an owl"])
    p = make_panel(tracker)
    p.track_form.ids.value = f"{fox},\n  {bad}  {fox}"
    p.track_form.button.click()
    assert "tracking 2 task(s)" in p.message.value
    assert p.track_form.ids.value == ""
    until(lambda: tracker.record(fox).status.value == "completed"
          and tracker.record(bad).status.value == "failed")
    assert set(shown_ids(p)) == {fox, bad}

    p.status_filter.value = "failed"
    until(lambda: shown_ids(p) == [bad])
    p.status_filter.value = ""
    p.search.value = fox[-8:].upper()  # tracked by id: no prompt, but the id matches
    until(lambda: shown_ids(p) == [fox])
    p.search.value = "nope"  # matches the error
    until(lambda: shown_ids(p) == [bad])
    p.search.value = "<zebra>"
    until(lambda: shown_ids(p) == [])
    assert "No task matches “&lt;zebra&gt;”" in p.empty.value
    p.search.value = ""
    until(lambda: set(shown_ids(p)) == {fox, bad})
    assert p.empty.value == ""

    settle()
    p.track_form.button.click()
    assert "paste one or more task ids" in p.message.value


def test_unknown_ids_are_not_failures_and_are_dismissed_in_one_click(tracker, make_panel,
                                                                     emulator):
    real = tracker.submit("a real one [duration: 130]").id
    p = make_panel(tracker)
    p.track_form.ids.value = "vgen_typo000001 vgen_typo000002"
    p.track_form.button.click()
    until(lambda: all(tracker.record(i).error == NOT_FOUND_REASON
                      for i in ("vgen_typo000001", "vgen_typo000002")))
    until(lambda: "<b>2</b> not found" in p.header.value)
    assert "failed" not in p.header.value
    assert "∅ not found" in row_text(p, "vgen_typo000001")
    assert p.manage.dismiss.layout.display == ""
    assert p.manage.dismiss.description == "Dismiss 2 not found"
    p.status_filter.value = "failed"
    until(lambda: shown_ids(p) == [])
    p.status_filter.value = "not found"
    until(lambda: len(shown_ids(p)) == 2)
    p.status_filter.value = ""

    p.manage.dismiss.click()
    assert [r.task_id for r in tracker.records()] == [real]
    assert tracker.store.get("vgen_typo000001") is None  # nothing kept of a typo
    until(lambda: shown_ids(p) == [real])
    assert p.manage.dismiss.layout.display == "none"
    assert "not found" not in p.header.value


def test_remove_a_row_and_clear_finished_after_confirming(tracker, make_panel):
    done = finished(tracker, ["one [duration: 130]", "two [duration: 130]"])
    failed = tracker.submit("[fail: no] three").id
    slow = tracker.submit("four [duration: 5000]").id
    tracker.wait([failed], timeout=DEADLINE)
    p = make_panel(tracker)
    p._rows[done[0]].remove.click()
    assert done[0] not in [r.task_id for r in tracker.records()]
    assert tracker.store.get(done[0]) is not None  # untracked, still in the history
    until(lambda: done[0] not in shown_ids(p))

    p.manage.clear.click()
    assert p.confirm.pending and "Remove 2 finished task(s)" in p.confirm.question.value
    assert len(tracker.records()) == 3  # nothing happens before the answer
    p.confirm.no.click()
    assert not p.confirm.pending and len(tracker.records()) == 3
    settle()
    p.manage.clear.click()
    p.confirm.yes.click()
    assert [r.task_id for r in tracker.records()] == [slow]
    assert "removed 2 finished task(s)" in p.message.value
    until(lambda: shown_ids(p) == [slow])

    p.manage.delete.value = True  # erase from the store too: asks even for one row
    p._rows[slow].remove.click()
    assert p.confirm.pending and tracker.records()
    settle()
    p.confirm.yes.click()
    assert tracker.records() == [] and tracker.store.get(slow) is None
    until(lambda: "No tasks yet" in p.empty.value)


def test_export_to_a_variable_asks_before_shadowing(tracker, make_panel, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    tracker.submit("a fox [duration: 130]")
    p = make_panel(tracker)
    bar = p.export_bar
    shell = InteractiveShell.instance()
    try:
        bar.name.value = "my_tasks"
        bar.to_variable.click()
        frame = shell.user_ns["my_tasks"]
        assert isinstance(frame, pd.DataFrame) and len(frame) == 1
        assert "my_tasks = tracker.tasks() (1 rows)" in p.message.value
        settle()
        bar.to_variable.click()  # replacing its own export: no question
        assert not p.confirm.pending and shell.user_ns["my_tasks"] is not frame

        shell.user_ns["tracker"] = tracker
        bar.name.value = "tracker"
        settle()
        bar.to_variable.click()
        assert p.confirm.pending and "already exists" in p.confirm.question.value
        assert shell.user_ns["tracker"] is tracker
        p.confirm.no.click()
        bar.name.value = "list"
        settle()
        bar.to_variable.click()
        assert "is a Python builtin" in p.confirm.question.value
        bar.what.value = "history"
        p.confirm.yes.click()
        assert list(shell.user_ns["list"].columns)[:3] == ["task_id", "status", "observed_at"]

        bar.name.value = "1 bad<name>"
        settle()
        bar.to_variable.click()
        assert "not a valid Python variable name" in p.message.value
        assert "&lt;name&gt;" in p.message.value
    finally:
        InteractiveShell.clear_instance()
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    bar.name.value = "again"
    settle()
    bar.to_variable.click()
    assert "needs IPython" in p.message.value


def test_export_files_refuse_unknown_types_and_ask_before_overwriting(tracker, make_panel,
                                                                      tmp_path):
    tracker.submit("a fox [duration: 130]")
    p = make_panel(tracker)
    bar = p.export_bar
    bar.path.value = str(tmp_path / "my results.xlsx")
    bar.to_file.click()
    assert ".xlsx files are not supported: end the name with one of .csv, .parquet, .json" in p.message.value
    assert not list(tmp_path.glob("my results*"))
    bar.path.value = str(tmp_path / "no_type")
    settle()
    bar.to_file.click()
    assert "has no type" in p.message.value

    out = tmp_path / "out" / "tasks.csv"
    bar.path.value = str(out)
    settle()
    bar.to_file.click()
    assert f"wrote {out}" in p.message.value
    assert pd.read_csv(out)["task_id"].tolist() == [r.task_id for r in tracker.records()]
    before = out.read_bytes()
    bar.what.value = "summary"
    settle()
    bar.to_file.click()
    assert p.confirm.pending and "overwrite" in p.confirm.question.value
    assert out.read_bytes() == before
    p.confirm.yes.click()
    assert list(pd.read_csv(out).columns)[:2] == ["model", "count"]
    for what, suffix in (("history", ".json"), ("tasks", ".parquet")):
        bar.what.value = what
        bar.path.value = str(tmp_path / f"x{suffix}")
        settle()
        bar.to_file.click()
        assert (tmp_path / f"x{suffix}").exists(), p.message.value


def test_pause_stops_polling_and_a_paused_row_is_never_late(tracker, make_panel, emulator):
    task = tracker.submit("a long one [duration: 6000]")
    p = make_panel(tracker)
    until(lambda: emulator.stats.polls_by_task.get(task.id, 0) >= 2)
    assert p.pause_button.description == "Pause"
    p.pause_button.click()
    assert not tracker.running
    assert p.pause_button.description == "Resume" and "paused" in p.polling.value
    time.sleep(0.5)  # a poll already in flight may still land
    before = emulator.stats.polls_by_task.get(task.id, 0)
    time.sleep(3.5)  # past the 1.2-3 s estimate, and ten poll intervals
    assert emulator.stats.polls_by_task.get(task.id, 0) == before
    p.update()
    row = p._rows[task.id]
    assert "not polling (paused)" in row.clock.value and "over the estimate" not in row.clock.value
    assert row.bar.bar_style == "info"
    p.pause_button.click()
    assert tracker.running and p.pause_button.description == "Pause"
    until(lambda: emulator.stats.polls_by_task.get(task.id, 0) > before)
    until(lambda: "over the estimate" in p._rows[task.id].clock.value)
    assert p._rows[task.id].bar.bar_style == "warning"


def test_newest_first_with_sort_order_and_pagers_at_top_and_bottom(tracker, make_panel,
                                                                   emulator):
    ids = created_elsewhere(emulator, [f"clip {i} [duration: 5000]" for i in range(5)])
    tracker.track_many(ids)
    newest = tracker.submit("zz newest [duration: 5000]", label="b-label").id
    p = make_panel(tracker, page_size=2)
    assert shown_ids(p) == [newest, ids[4]]  # the run's new task is on the first page
    assert p.pager.top.children[1].value == p.pager.bottom.children[1].value
    assert "page 1 of 3" in p.pager.bottom.children[1].value
    p.pager.bottom.children[2].click()  # Next at the bottom ...
    assert shown_ids(p) == [ids[3], ids[2]]
    assert "page 2 of 3" in p.pager.top.children[1].value  # ... moves the top bar too
    p.order.value = False  # oldest first, back to page 1
    assert shown_ids(p) == [ids[0], ids[1]] and p.pager.page == 0
    p.sort.value = "label"  # A→Z, unlabelled tasks last
    assert p.order.value is False and shown_ids(p)[0] == newest
    p.sort.value = "created"
    assert p.order.value is True and shown_ids(p) == [newest, ids[4]]


def test_submitting_never_moves_the_view_from_a_played_video(big_tracker, make_panel):
    done = finished(big_tracker, [f"clip {i} [duration: 130]" for i in range(3)])
    p = make_panel(big_tracker, page_size=2, gallery_page_size=1)
    assert shown_ids(p) == [done[2], done[1]]
    p.pager.next.click()
    assert shown_ids(p) == [done[0]]
    view = media_of(p, done[0])
    view.play.click()
    player = view.player
    assert player is not None
    p.submit_form.prompt.value = "a new one [duration: 5000]"
    p.submit_form.button.click()
    assert p.pager.page == 1 and done[0] in shown_ids(p)
    # Three tasks pushed it down a page: its row stays while it is loaded.
    new = [big_tracker.submit(f"more {i} [duration: 5000]").id for i in range(2)]
    p.update()
    assert done[0] in shown_ids(p) and view.player is player
    assert "page 2 of 3" in p.pager.label.value
    p.pager.prev.click()  # moving on lets it go
    assert shown_ids(p) == [new[1], new[0]] and view.player is None


def test_rows_exist_only_for_the_visible_page_and_the_gallery_fills_itself(tracker, make_panel,
                                                                           emulator):
    ids = created_elsewhere(emulator, [f"clip {i} [duration: 130]" for i in range(25)])
    tracker.track_many(ids)
    p = make_panel(tracker, page_size=10, gallery_page_size=4)
    assert len(p.rows_box.children) == 10 and len(p._rows) == 10
    assert "page 1 of 3" in p.pager.label.value and p.pager.prev.disabled
    p.pager.next.click()
    p.pager.next.click()
    assert shown_ids(p) == ids[4::-1] and p.pager.next.disabled
    first_rows = dict(p._rows)
    p.pager.prev.click()
    assert shown_ids(p) == ids[14:4:-1]
    assert all(p._rows[i] is first_rows[i] for i in ids[5:15] if i in first_rows)
    until(lambda: all(tracker.record(i).download_state == "saved" for i in ids))
    until(lambda: all(media_of(p, i) is not None for i in ids[5:15]))
    # The gallery filled itself while the Tasks tab was shown.
    assert p.tabs.selected_index == 0
    # the UI thread labels the pager, then fills the grid
    until(lambda: "page 1 of 7" in p.gallery.pager.label.value
          and len(p.gallery.grid.children) == 4)
    # small videos are loaded at once, but only for the rows and cards shown
    until(lambda: len(p.media.loaded_ids()) == 14)
    assert p.media.loaded_ids() == set(shown_ids(p)) | p.gallery.shown_ids()
    p.tabs.selected_index = 2
    assert "veo_3_1_fast" in p.history.summary.value
    assert "completed" in p.history.events.value


def test_one_changed_task_only_sends_messages_for_its_row(tracker, make_panel):
    quick = finished(tracker, [f"quick {i} [duration: 130]" for i in range(3)])
    slow = tracker.submit("slow [duration: 400]").id
    with record_traffic() as traffic:
        p = make_panel(tracker)
    assert traffic.since(), "the recording comm saw nothing"
    mark = traffic.mark()
    until(lambda: media_of(p, slow) is not None, timeout=DEADLINE)
    time.sleep(1.5)  # a few more ticks after the change
    row = p._rows[slow]
    allowed = (tree_comm_ids(row.widget) | tree_comm_ids(p.gallery.widget)
               | {p.header.comm.comm_id, p.polling.comm.comm_id, p.videos.comm.comm_id,
                  p.announce.comm.comm_id})  # "1 task completed: slow…" for screen readers
    sent = traffic.since(mark)
    assert sent, "no messages for the changed row"
    strangers = [m for m in sent if m.comm_id not in allowed]
    assert strangers == []
    updates = {m.comm_id for m in sent if m.msg_type == "comm_msg"}
    assert row.info.comm.comm_id in updates  # the status changed in place
    for other in quick:
        assert not tree_comm_ids(p._rows[other].widget) & {m.comm_id for m in sent}


def test_projector_mode_has_large_text_and_videos_and_rows_that_wrap(tracker, make_panel):
    done = finished(tracker, ["a fox [duration: 130]"])[0]
    p = make_panel(tracker, size="large")
    row = p._rows[done]
    assert "font-size:20px" in row.info.value and "color:#000000" in row.info.value
    assert row.widget.layout.flex_flow == "row wrap"
    assert media_of(p, done).player.layout.width == "640px"
    assert p.projector.value
    p.projector.value = False
    assert "font-size:14px" in row.info.value
    assert media_of(p, done).player.layout.width == "320px"
    assert row.timing_box.layout.width == "230px"
    with pytest.raises(Exception, match="size must be one of normal, large"):
        VeoPanel(tracker, size="huge", refresh_every=None)


def test_history_tab_shows_readable_tables(tracker, make_panel):
    finished(tracker, ["a fox on a <b>hill</b> [duration: 130]"])
    p = make_panel(tracker)
    tracker.track("vgen_unknown0001")
    p.tabs.selected_index = 2
    events = p.history.events.value
    assert "&lt;b&gt;hill" in events and "<b>hill" not in events  # the prompt beside the id
    assert "&lt;NA&gt;" not in events and "None" not in events and "NaT" not in events
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<", events)  # local time, to the second
    assert not re.search(r"\d\d:\d\d:\d\d[.+]", events)  # no microseconds, no UTC offset
    summary = p.history.summary.value
    assert "100%" in summary and "nan" not in summary.lower()


def test_no_ipython_widgets_frontend_still_gives_a_table(tracker):
    tracker.submit("a <b>bold</b> fox [duration: 130]", label="x<y")
    p = panel(tracker, refresh_every=None, start=False)
    try:
        text = repr(p)
        assert "x<y" in text and "a <b>bold</b> fox" in text
        html = p._repr_mimebundle_()["text/html"]
        assert "x&lt;y" in html and "&lt;b&gt;bold" in html and "<b>bold" not in html
        assert not threads(UI_THREAD_NAME)
    finally:
        p.close()


def test_package_level_panel_and_tracker_panel_are_the_same_view(emulator, tmp_path) -> None:
    """``veo_nb.panel`` is the function in a fresh import, and ``tracker.panel()``
    builds the same view."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import veo_nb, inspect; print(inspect.isfunction(veo_nb.panel), "
         "veo_nb.VeoPanel.__module__)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["True", "veo_nb.widgets.live"]
    tracker = Tracker(emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
    try:
        first = tracker.panel(refresh_every=None)
        second = tracker.panel(refresh_every=None)
        assert isinstance(second, VeoPanel) and second.tracker is tracker
        assert first is not second
        second.close()
    finally:
        tracker.close()


def test_bad_options_raise_validation_errors(tracker):
    from veo_nb import ValidationError

    for options, message in (({"stream": "sometimes"}, "stream must be one of https, any, never"),
                             ({"frontend": "emacs"}, "frontend must be one of jupyter, colab, vscode"),
                             ({"sort": "size"}, "sort must be one of created, status, label"),
                             ({"max_loaded_bytes": -1}, "max_loaded_bytes must be")):
        with pytest.raises(ValidationError, match=message):
            VeoPanel(tracker, refresh_every=None, start=False, **options)
    assert Path(tracker.store.path).exists()


def test_rows_show_their_owner_escaped_and_the_owner_filter_offers_each_owner(tmp_path,
                                                                               emulator,
                                                                               make_panel):
    from test_widgets_support import new_tracker

    owners = ("ana", "<b>ben</b>", "chloé")
    trackers = []
    ids = {}
    try:
        for i, owner in enumerate(owners[:2]):  # students submitting to one shared store
            tr = new_tracker(tmp_path, emulator, owner=owner)
            trackers.append(tr)
            ids[owner] = tr.submit(f"clip {i} [duration: 5000]").id
        tracker = trackers[-1]
        assert {r.task_id: r.owner for r in tracker.records()} == {v: k for k, v in ids.items()}
        p = make_panel(tracker)
        assert "by ana" in row_text(p, ids["ana"])
        # the parts the browser tests select by
        for part in ("veo-owner", "veo-id", "veo-prompt"):
            assert f'class="{part}"' in row_text(p, ids["ana"])
        assert "by &lt;b&gt;ben&lt;/b&gt;" in row_text(p, ids["<b>ben</b>"])
        assert "<b>ben</b>" not in row_text(p, ids["<b>ben</b>"])
        # each owner once, sorted (Dropdown labels are text: nothing to escape)
        assert list(p.owner_filter.options) == [("all owners", ""), ("<b>ben</b>", "<b>ben</b>"),
                                                ("ana", "ana")]

        p.owner_filter.value = "ana"
        assert shown_ids(p) == [ids["ana"]] and p.pager.page == 0
        p.owner_filter.value = ""
        p.search.value = "BEN"  # search looks in the owner too
        assert shown_ids(p) == [ids["<b>ben</b>"]]
        p.owner_filter.value = "ana"
        assert shown_ids(p) == []
        assert "No task matches “BEN” with owner ana" in p.empty.value
        p.search.value = ""

        # A new owner is offered as soon as their task appears; the choice stays.
        tr = new_tracker(tmp_path, emulator, owner=owners[2])
        trackers.append(tr)
        ids[owners[2]] = tr.submit("clip 2 [duration: 5000]").id
        until(lambda: ("chloé", "chloé") in p.owner_filter.options)
        assert p.owner_filter.value == "ana" and shown_ids(p) == [ids["ana"]]
        assert [v for _, v in p.owner_filter.options] == ["", "<b>ben</b>", "ana", "chloé"]
        p.owner_filter.value = ""
        assert set(shown_ids(p)) == set(ids.values())
        assert "by chloé" in row_text(p, ids["chloé"])
    finally:
        for tr in trackers:
            tr.close()


def test_the_chosen_owner_stays_offered_when_their_tasks_leave_the_view(tmp_path, emulator,
                                                                       make_panel):
    from test_widgets_support import new_tracker

    first = new_tracker(tmp_path, emulator, owner="dana")
    task = first.submit("one [duration: 5000]")
    tracker = new_tracker(tmp_path, emulator, owner="eli")
    try:
        other = tracker.submit("two [duration: 5000]")
        p = make_panel(tracker)
        p.owner_filter.value = "dana"
        assert shown_ids(p) == [task.id]
        tracker.remove([task.id])
        until(lambda: shown_ids(p) == [])
        assert p.owner_filter.value == "dana" and ("dana", "dana") in p.owner_filter.options
        assert "No task matches owner dana (of 1 tasks)" in p.empty.value
        p.owner_filter.value = ""  # once another is chosen, dana is no longer offered
        until(lambda: list(p.owner_filter.options) == [("all owners", ""), ("eli", "eli")])
        assert shown_ids(p) == [other.id]
    finally:
        first.close()
        tracker.close()


def test_status_changes_are_announced_politely_not_every_tick(tracker, make_panel):
    old = finished(tracker, ["an old clip [duration: 130]"])[0]
    task = tracker.submit(f"{XSS} a fox [duration: 200]", label=f"fox {XSS}")
    p = make_panel(tracker)
    # What was there when the panel opened is not announced.
    assert p.announce.value == ""
    assert "veo-sr-only" in p.announce._dom_classes  # read by screen readers, not shown
    said: list[str] = []

    def completed() -> bool:
        said.append(p.announce.value)
        return "completed" in said[-1]

    until(completed)
    text = said[-1]
    assert text.startswith('<div role="status" aria-live="polite" lang="en">'), text
    assert "1 task completed: fox &lt;img" in text and "<img" not in text, text
    assert old not in text and "old clip" not in text
    # Clocks tick every second; the announcement changes only with a status.
    time.sleep(2.5)
    assert p.announce.value == text


def test_the_header_and_rows_follow_a_finished_task_erased_by_another_process(
        tracker, make_panel, emulator):
    """Finished tasks are no longer held in memory, so erasing one elsewhere
    changes no task this kernel holds: the panel sees the store's revision
    move and reads its counts and page again."""
    ids = created_elsewhere(emulator, [f"clip {i} [duration: 125]" for i in range(3)])
    tracker.track_many(ids)
    tracker.wait(ids, timeout=DEADLINE)
    until(lambda: not tracker.live_records())
    p = make_panel(tracker, refresh_every=None)
    assert "<b>3</b>" in p.header.value and len(shown_ids(p)) == 3
    with Store(tracker.store.path) as other:  # another kernel, on the same history
        other.delete(ids[:1])
    until(lambda: (p.update(), "<b>2</b>" in p.header.value and len(shown_ids(p)) == 2)[1])
    assert ids[0] not in shown_ids(p) and "2 tasks" in p.header.value


def test_the_header_and_the_text_fallback_say_until_when_the_service_asked_us_to_wait(
        tracker, make_panel, emulator):
    """A 429 asking for years closes the gate for 15 minutes at most (scaled:
    9 s here), and the panel says until when, in local time and translated."""
    from email.utils import formatdate

    from veo_nb import set_language

    task = tracker.submit("a fox under a 429 [duration: 300]")
    p = make_panel(tracker, refresh_every=None)
    emulator.storm(2.0, retry_after=formatdate(time.time() + 4 * 365 * 86400, usegmt=True))
    gate = until(tracker.rate_limited_until)
    assert gate.timestamp() <= time.time() + 900 * 0.01
    said = f"the service asked us to wait until {gate.astimezone():%H:%M}"
    p.update()
    assert p.polling.value.endswith(" · " + said) and "next poll in" in p.polling.value
    assert said in repr(p) and said in p._repr_mimebundle_()["text/html"]
    set_language("zh_CN")
    p.update()
    assert f"服务要求我们等到 {gate.astimezone():%H:%M} 再发送请求" in p.polling.value
    set_language("en")
    tracker.wait([task.id], timeout=DEADLINE)  # the gate expired: polled, done, saved
    assert tracker.record(task.id).download_state == "saved"
    until(lambda: (p.update(), "asked us to wait" not in p.polling.value)[1])
    assert "asked us to wait" not in repr(p)
