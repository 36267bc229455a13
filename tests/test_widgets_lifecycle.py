"""The panel's lifecycle as a teacher's notebook lives it: Run All again and
again leaves one live panel per history (the older outputs read as one
line), closing releases every widget, a stale panel never fights the newer
tracker, and failures of the panel's refresh are said in the panel."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from test_widgets_support import (
    finished,
    large_buffers,
    media_of,
    new_tracker,
    open_widgets,
    threads,
    until,
)
from veo_nb import panel
from veo_nb.tracker import default_tracker
from veo_nb.widgets import UI_THREAD_NAME
from veo_nb.widgets.live import FAILING_AFTER
from veo_nb.widgets.traffic import record_traffic
from veo_nb.widgets.tree import walk

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
REPLACED = "This veo_nb panel was replaced by a newer panel of the same history."

pytest_plugins = ["test_widgets_support"]  # the fixtures


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    yield InteractiveShell.instance()
    InteractiveShell.clear_instance()


def test_a_new_panel_of_the_same_history_replaces_the_older_output(shell, tracker, emulator,
                                                                   make_panel, tmp_path):
    from IPython.display import display
    from IPython.utils.capture import capture_output

    tracker.submit("a fox [duration: 130]")
    with capture_output() as captured:
        first = make_panel(tracker)
        display(first)
        again = make_panel(tracker)  # the same cell run again
        display(again)
        rerun = new_tracker(tmp_path, emulator)  # Run All: a new tracker on the same store
        newest = make_panel(rerun)
        elsewhere = make_panel(new_tracker(tmp_path / "other", emulator))
    try:
        assert first._closed and again._closed and not newest._closed and not elsewhere._closed
        assert first.comm is None and first.header.comm is None
        outputs = captured.outputs
        shown = [o for o in outputs if not o.update]
        assert [WIDGET_VIEW in o.data for o in shown] == [True, True]
        updates = [o for o in outputs if o.update]
        assert [o.transient["display_id"] for o in updates] == [
            o.transient["display_id"] for o in shown]
        for update in updates:
            assert update.data == {"text/plain": REPLACED,
                                   "text/html": f'<p style="color:#424242"><i>{REPLACED}</i></p>'}
        assert repr(first) == REPLACED and first._repr_mimebundle_()["text/plain"] == REPLACED
        assert len(threads(UI_THREAD_NAME)) == 1
    finally:
        elsewhere.tracker.close()
        rerun.close()


def test_panel_without_a_tracker_shows_the_default_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEO_DEMO", "1")
    p = panel(refresh_every=None)
    try:
        assert p.tracker is default_tracker()
        assert (tmp_path / "veo_nb_data").resolve() in Path(p.tracker.store_key).parents
        assert "demo mode" in p.header.value
    finally:
        p.close()
        p.tracker.close()


def test_closing_leaves_no_widget_open_and_no_video_bytes(big_tracker, make_panel):
    before = open_widgets()
    ids = finished(big_tracker, ["one [duration: 130]", "two [duration: 130]"])
    big_tracker.track("vgen_unknown00001")
    p = make_panel(big_tracker, page_size=1)
    for mode in ("reference", "first_last", "text"):  # every input of the submit form
        p.submit_form.mode.value = mode
    for index in (0, 1, 2, 3):
        p.forms.selected_index = index
    p.media._views[ids[1]].play.click()  # the gallery's card
    p.pager.next.click()
    p.pager.next.click()
    p.tabs.selected_index = 1
    p.tabs.selected_index = 2
    p.manage.clear.click()  # leaves a question open
    p.set_size("large")
    assert open_widgets() > before + 50
    tree = list(walk(p))
    p.close()
    assert open_widgets() == before
    assert all(w.comm is None for w in tree)
    assert large_buffers(p) == [] and p.children == ()
    assert ids  # the tracker keeps everything
    assert len(big_tracker.records()) == 3


def test_a_stale_panel_never_takes_polling_from_the_newer_tracker(tracker, emulator, tmp_path,
                                                                   make_panel):
    task = tracker.submit("long [duration: 3000]").id
    old = make_panel(tracker, refresh_every=None)
    newer = new_tracker(tmp_path, emulator)
    try:
        assert newer.running
        old.pause_button.click()
        time.sleep(0.6)
        old.pause_button.click()  # resume from the old panel
        assert newer.running and tracker.running
        polls = emulator.stats.polls_by_task.get(task, 0)
        until(lambda: emulator.stats.polls_by_task.get(task, 0) >= polls + 3)
        assert emulator.stats.interval_violations == 0  # one poller for the store
        old.close()
        old.toggle_polling()  # a closed panel's button, called anyway
        assert newer.running
        assert "this panel is closed" in old.message.value
        newer.stop()
        old.toggle_polling()
        assert not newer.running  # nor does it resume
    finally:
        newer.close()


def test_a_closed_tracker_makes_the_panel_say_so(tmp_path, emulator, make_panel):
    tr = new_tracker(tmp_path, emulator)
    p = make_panel(tr, refresh_every=None)
    tr.close()
    p.refresh_button.click()
    assert "tracker is closed" in p.message.value
    p.update()
    assert "tracker is closed" in p.header.value


def test_refresh_failures_are_shown_in_the_panel_and_keep_being_said(tracker, make_panel):
    tracker.submit("a fox [duration: 3000]")
    p = make_panel(tracker, refresh_every=0.2)
    p.tabs.selected_index = 2  # the History tab reads the store on its refreshes
    tracker.store.close()  # the history file goes away under the panel
    until(lambda: "panel refresh failed: ProgrammingError" in p.message.value
          or "keeps failing" in p.message.value)
    text = until(lambda: (t := p.message.value) and "keeps failing" in t and t)
    assert re.search(r"keeps failing \((\d+) times since \d\d:\d\d:\d\d;", text)
    assert int(re.search(r"\((\d+) times", text).group(1)) >= FAILING_AFTER
    assert "Cannot operate on a closed database" in text and "polling goes on" in text


def test_the_trackers_worker_errors_are_said_once(tracker, make_panel):
    tracker.submit("a fox [duration: 200]")
    p = make_panel(tracker, refresh_every=0.2)
    tracker.store.close()  # the poller can no longer record what it sees
    until(lambda: tracker.recent_errors())
    text = until(lambda: (t := p.message.value) and "tracker error at" in t and t)
    assert "see tracker.recent_errors()" in text and "ProgrammingError" in text
    said = -1
    while said != len(tracker.recent_errors()):  # the poll and the poller loop each fail once
        said = len(tracker.recent_errors())
        time.sleep(0.6)
    errors = tracker.recent_errors()
    assert len({(e.task_id, e.detail) for e in errors}) == len(errors)  # none twice
    p.report("something else", True)
    time.sleep(1.0)  # several ticks: the same errors are not said again
    assert len(tracker.recent_errors()) == said and "something else" in p.message.value


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_running_the_notebook_again_leaves_one_live_panel_under_nbclient(tmp_path):
    from nbclient import NotebookClient

    setup = ("import veo_nb, ipywidgets\n"
             "from veo_nb.emulator import Emulator\n"
             "emu = Emulator(time_scale=0.01, failure_rate=0, video_size='sample').start()")
    run = ("tracker = veo_nb.Tracker(emu.client(), store='h.sqlite', media_dir='videos')\n"
           "tracker.submit('a fox [duration: 130]')\n"
           "veo_nb.panel(tracker)")
    count = ("from ipywidgets.widgets import widget\n"
             "import veo_nb.widgets.live as live\n"
             "print(len(live._live), sum(1 for w in widget._instances.values()"
             " if isinstance(w, veo_nb.VeoPanel)))")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (setup, run, run, run, count)]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    # a re-run's submit also says (in demo mode) what a real key would have reused
    outputs = [[o for o in cell.outputs if o["output_type"] != "stream"] for cell in nb.cells]
    for replaced in outputs[1:3]:
        (out,) = replaced
        assert out["data"]["text/plain"] == REPLACED and WIDGET_VIEW not in out["data"]
    (live,) = outputs[3]
    assert WIDGET_VIEW in live["data"]
    assert nb.cells[4].outputs[0]["text"].split() == ["1", "1"]
    assert "text/html" in live["data"] and json.dumps(live["data"]).count("vgen_") >= 3


def _refs(value: object) -> set[str]:
    """The model ids a widget state names (``IPY_MODEL_…``)."""
    return set(re.findall(r"IPY_MODEL_(\w+)", json.dumps(value)))


def test_a_widget_made_after_the_panel_names_no_older_model(tmp_path, big_tracker, emulator,
                                                           make_panel):
    """A page that connects to a kernel with a live panel (a Voilà page
    loading, a reloaded tab) builds the widgets of before its restore from
    one snapshot and the later ones from their comm_open; a new widget that
    names an older model which that page has not built yet fails there for
    good (jupyter-widgets/ipywidgets#4026): Voilà showed rows without their
    video cards. So every widget the panel opens after it is built (rows,
    cards, players shown at once, a player after a click, the gallery)
    names only models opened in the same step, before it."""
    small = new_tracker(tmp_path / "small", emulator)
    for tr in (big_tracker, small):  # 3 MB videos: a card and ▶ Play; samples: shown at once
        with record_traffic() as traffic:
            p = make_panel(tr, refresh_every=None, page_size=3, gallery_page_size=2)
            ids = [tr.submit(f"late {i} [duration: 130]").id for i in range(4)]
            steps = [lambda: until(lambda: p.update() or all(
                (view := media_of(p, i)) is not None and view.plan.kind for i in ids[1:])),
                lambda: media_of(p, ids[-1]).play.click(),
                lambda: setattr(p.tabs, "selected_index", 1),
                lambda: p.gallery.pager.next.click(),
                lambda: p.pager.next.click()]
            counts = []
            for step in steps:
                mark = traffic.mark()
                step()
                opened: set[str] = set()
                for message in traffic.since(mark):
                    if message.msg_type == "comm_open":
                        older = _refs(message.data) - opened
                        assert not older, (message.data["state"]["_model_name"], older)
                        opened.add(message.comm_id)
                counts.append(len(opened))
            # the new rows and cards, and on the big videos a player after the click
            assert counts[0] >= 4 * 8 and (tr is small or counts[1] >= 2), counts
    small.close()


def test_after_a_page_starts_a_restore_the_panel_sends_its_state_again(tracker, make_panel):
    """A page that connects drops updates that reach a widget between its
    snapshot and the moment it has built that widget (all of them until
    every widget is built, when the snapshot request fails), so a row that
    finished meanwhile could read "processing" there for good. When a page
    opens its control comm (what ipywidgets' ``request_states`` comes on),
    the panel sends its rows' state again, twice, and never a video again."""
    import comm
    from ipywidgets import Widget
    from veo_nb.widgets import kernel

    (task_id,) = finished(tracker, ["shown at once [duration: 130]"])
    with record_traffic() as traffic:
        p = make_panel(tracker, refresh_every=0.2)
        row = p._rows[task_id]
        player = media_of(p, task_id).player
        assert player is not None  # a sample: shown at once, its bytes sent once

        def resent(mark: int = 0) -> list:  # whole states (send_state), not one changed trait
            return [m for m in traffic.since(mark) if m.msg_type == "comm_msg"
                    and m.comm_id == row.info.comm.comm_id and "_model_name" in m.data["state"]]

        time.sleep(kernel.RESEND_AFTER_S[0] + 1)
        assert not resent()  # no page restored: nothing sent again
        started = time.monotonic()
        control = comm.create_comm(target_name="jupyter.widget.control")
        previous = Widget._control_comm
        Widget.handle_control_comm_opened(control, {"metadata": {"version": "1.0.0"}})
        mark = traffic.mark()
        until(lambda: len(resent(mark)) >= 1, timeout=10)
        first = time.monotonic() - started
        assert resent(mark)[0].data["state"]["value"] == row.info.value
        until(lambda: len(resent(mark)) >= 2, timeout=15)
        assert first >= kernel.RESEND_AFTER_S[0] - 0.1
        assert time.monotonic() - started >= kernel.RESEND_AFTER_S[1] - 0.1
        # every row and card widget again, but no video and no layout
        again = {m.comm_id for m in traffic.since(mark)}
        assert {row.clock.comm.comm_id, row.media.comm.comm_id, p.rows_box.comm.comm_id} <= again
        assert player.comm.comm_id not in again and row.info.layout.comm.comm_id not in again
        assert traffic.video_bytes_since(mark) == 0
    Widget._control_comm = previous


@pytest.mark.slow
@pytest.mark.notebook
def test_a_cell_that_updates_the_panel_leaves_its_clicks_to_the_frontend(tmp_path):
    """ipykernel 7.4 re-points a comm at the subshell of the request that
    last sent on it. The panel dropped those routes only when it was built,
    so after a cell called ``p.toggle_polling()`` (or ``update()``, a form,
    ``set_size()``...) a click on Pause waited for the running cell (6 s for
    a 6 s cell). Here, in a real kernel, every comm of the panel must route
    a click where the frontend sent it (a subshell), after such calls."""
    from nbclient import NotebookClient

    setup = ("import veo_nb\n"
             "from veo_nb.emulator import Emulator\n"
             "emu = Emulator(time_scale=0.01, failure_rate=0, video_size='sample').start()\n"
             "tracker = veo_nb.Tracker(emu.client(), store='h.sqlite', media_dir='videos')\n"
             "tracker.submit('a fox [duration: 130]')\n"
             "p = veo_nb.panel(tracker)\n"
             "p")
    calls = ("p.toggle_polling(); p.toggle_polling(); p.set_size('large'); p.set_size('normal')\n"
             "p.search.value = 'fox'; p.update(); p.refresh_now()")
    check = ("from veo_nb.widgets.tree import walk\n"
             "comms = [w.comm for w in walk(p) if getattr(w, 'comm', None) is not None]\n"
             "routed = [c for c in comms if c._reply_subshell_for({}, 'a-subshell') != 'a-subshell']\n"
             "print(len(comms), len(routed))")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (setup, calls, check)]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    comms, routed = map(int, nb.cells[2].outputs[0]["text"].split())
    assert comms > 20 and routed == 0, (comms, routed)
