"""The gateway's dialects (issue #18): every answer integrations of the real
gateway were seen to handle, served by the emulator over HTTP and read
through a Tracker. Each task ends completed with its video saved, or failed
with the service's own reason; none is lost, none stays unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

import veo_nb
from veo_nb import AuthenticationError, TaskStatus, Tracker
from veo_nb.emulator import Emulator
from veo_nb.emulator._dialects import AMOUNTS, DIALECTS, REFUSED_REASON
from veo_nb.records import NO_LINK_YET, TOTAL_ROW

SCALE = 0.01
REASON = "the prompt was flagged by the moderation model"
PROMPTS = ("a fox in the snow [duration: 125]", "a boat at dawn [duration: 140]",
           f"a storm [fail: {REASON}] [duration: 130]")


def _run(tmp_path: Path, dialects: list[str], prompts: tuple[str, ...] = PROMPTS,
         **tracker_kw) -> tuple[Emulator, list, Tracker]:
    emu = Emulator(time_scale=SCALE, failure_rate=0, video_size="sample", dialects=dialects)
    emu.start()
    tracker = Tracker(emu.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "videos",
                      **tracker_kw)
    ids = [tracker.submit(p).id for p in prompts]
    done = tracker.wait(ids, timeout=120)
    return emu, done, tracker


SHAPES = ["envelope", "result_url", "url", "message_error", "object_error", "synonyms",
          "transient_401", "transient_404", "created_202", "amount",
          # round 2 (issue #28)
          "output_url", "download_url", "video_urls", "outputs", "nested_link", "relative_link",
          "late_link", "reason_fields", "status_reason", "transient_status"]


@pytest.mark.slow
@pytest.mark.parametrize("dialect", SHAPES)
def test_each_dialect_ends_every_task_completed_or_failed_with_its_reason(
        tmp_path: Path, dialect: str) -> None:
    emu, done, tracker = _run(tmp_path, [dialect])
    try:
        by_prompt = {t.raw.get("prompt") or tracker.record(t.id).prompt: t for t in done}
        for prompt, task in by_prompt.items():
            record = tracker.record(task.id)
            assert record.status is not TaskStatus.UNKNOWN
            if "[fail" in prompt:
                assert record.status is TaskStatus.FAILED and record.error == REASON, record
            else:
                assert record.status is TaskStatus.COMPLETED, record
                assert record.download_state == "saved" and Path(record.video_path).is_file()
        assert emu.stats.interval_violations == 0
        # the key went with a video request only to the API's own origin
        stats = emu.stats
        assert stats.media_auth_headers == (stats.media_requests if dialect == "relative_link"
                                            else 0)
        if dialect == "late_link":  # the completed answer without its link was asked again
            notes = tracker.history().query("kind == 'note'").detail.tolist()
            assert sum(n.startswith(NO_LINK_YET) for n in notes) == 2, notes
        if dialect == "amount":
            frame = tracker.tasks()
            assert list(frame.amount) == [AMOUNTS["veo_3_1_fast"]] * 3
            summary = tracker.summary()
            total = summary[summary.model == TOTAL_ROW].amount.iloc[0]
            assert total == pytest.approx(3 * AMOUNTS["veo_3_1_fast"])
            view = veo_nb.panel(tracker)
            try:
                assert "cost reported by the service: 1.05 (3 tasks)" in view.header.value
            finally:
                view.close()
    finally:
        tracker.close()
        emu.stop()


@pytest.mark.slow
def test_all_dialects_at_once(tmp_path: Path) -> None:
    emu, done, tracker = _run(tmp_path, ["all"], PROMPTS * 3)
    try:
        records = [tracker.record(t.id) for t in done]
        assert sorted(r.status.value for r in records) == ["completed"] * 6 + ["failed"] * 3
        assert all(r.error == REASON for r in records if r.status is TaskStatus.FAILED)
        assert all(r.download_state == "saved" for r in records
                   if r.status is TaskStatus.COMPLETED)
    finally:
        tracker.close()
        emu.stop()


@pytest.mark.slow
def test_a_transient_404_of_a_known_task_is_shown_and_checked_again(tmp_path: Path) -> None:
    """The third and fourth polls say 404: the task was known, so it is
    shown as still checked, not failed; the next answer ends it normally."""
    emu, done, tracker = _run(tmp_path, ["transient_404"], ("a long pan [duration: 280]",))
    try:
        (task,) = done
        history = tracker.history()
        notes = history[history.kind == "note"].detail.tolist()
        assert any(n.startswith("not found (since ") and "still checking" in n for n in notes)
        assert (history.http_status == 404).sum() >= 1
        assert tracker.record(task.id).status is TaskStatus.COMPLETED
        assert tracker.record(task.id).error is None
    finally:
        tracker.close()
        emu.stop()


@pytest.mark.slow
def test_a_create_refused_at_once_is_failed_with_its_reason_and_not_polled(tmp_path: Path) -> None:
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample",
                  dialects=["failed_create", "created_202"]) as emu, \
            Tracker(emu.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
        task = tracker.submit("[refused] something the policy refuses")
        assert task.status is TaskStatus.FAILED and task.error == REFUSED_REASON
        (done,) = tracker.wait([task.id], timeout=10)
        assert done.error == REFUSED_REASON
        assert emu.stats.polls_by_task.get(task.id, 0) == 0


def test_a_wrong_key_is_an_authentication_error_with_the_gateways_words(tmp_path: Path) -> None:
    """401 with the gateway's body, or its 'login failed' at HTTP 200: an
    AuthenticationError before anything is tracked, never 'no task id'."""
    for dialects in ([], ["business_errors"]):
        with Emulator(time_scale=SCALE, video_size="sample", dialects=dialects) as emu:
            client = veo_nb.VeoClient("not-the-key", emu.base_url, time_scale=SCALE)
            with pytest.raises(AuthenticationError) as info:
                client.create_video("a fox")
            said = str(info.value)
            assert ("登录验证失败" in said) if dialects else ("invalid API key" in said)
            assert "no task id" not in said and "not-the-key" not in said
            with pytest.raises(AuthenticationError):
                client.get_result("vgen_000000000000")
            with Tracker(client, store=tmp_path / f"h{len(dialects)}.sqlite",
                         media_dir=tmp_path / "v") as tracker:
                with pytest.raises(AuthenticationError):
                    tracker.submit("a fox")
                assert tracker.records() == []
            client.close()


def test_every_dialect_is_documented_and_an_unknown_one_is_refused() -> None:
    from veo_nb import ValidationError
    from veo_nb.emulator import _dialects

    for name in DIALECTS:
        assert f"``{name}``" in _dialects.__doc__
    with pytest.raises(ValidationError, match="unknown emulator dialect"):
        Emulator(dialects=["envelopes"])


@pytest.mark.slow
def test_a_task_the_service_lost_is_checked_for_a_bounded_time_then_failed_and_track_revives_it(
        tmp_path: Path) -> None:
    """A 404 for a task the service answered before is not the end: it is
    checked with backoff until its expected window plus 30 min (scaled),
    then failed with a reason that says what happened. track() checks it
    again, and it completes once the service knows it again. A typo still
    fails at its first 404."""
    from polling import until
    from veo_nb.records import LOST_REASON, NOT_FOUND_REASON

    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
        task = tracker.submit("a task the gateway loses [duration: 2000]")
        until(lambda: tracker.record(task.id).poll_count >= 1)
        emu.hide(task.id)
        until(lambda: (tracker.record(task.id).error or "").startswith("not found (since "),
              timeout=30)
        assert tracker.record(task.id).status is not TaskStatus.FAILED
        until(lambda: tracker.record(task.id).status is TaskStatus.FAILED, timeout=60)
        lost = tracker.record(task.id)
        assert lost.error.startswith(LOST_REASON) and "track() it" in lost.error
        emu.hide(task.id, hidden=False)
        tracker.track(task.id)
        (done,) = tracker.wait([task.id], timeout=60)
        assert done.status is TaskStatus.COMPLETED and done.video_path is not None
        typo = tracker.track("vgen_never_made")
        assert typo.status is TaskStatus.FAILED and typo.error == NOT_FOUND_REASON
        assert emu.stats.interval_violations == 0


def test_an_unknown_model_is_sent_with_one_warning_and_register_model_teaches_it(
        tmp_path: Path) -> None:
    """Models come and go on the service: a name veo_nb does not know is
    sent (the service decides), with one warning that names the known
    models and what could not be checked; register_model() adds it to the
    table, its checks and the panel's form."""
    from veo_nb import APIError, UnknownModelWarning, register_model
    from veo_nb._spec import MODELS

    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        client = emu.client()
        with pytest.warns(UnknownModelWarning, match="veo_3_1_fast.*could not be checked"):
            with pytest.raises(APIError, match="HTTP 400"):  # this emulator does not offer it
                client.create_video("a fox", model="veo_3_1_lite", resolution="4K")
        assert emu.stats.rejected_creates == 1  # it was sent
        try:
            register_model("veo_3_1_lite", resolutions=("720p",))
            with pytest.raises(veo_nb.ValidationError, match="does not offer 1080p"):
                client.create_video("a fox", model="veo_3_1_lite", resolution="1080p")
            with Tracker(client, store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
                task = tracker.submit("a fox [duration: 121]", model="veo_3_1_lite")
                assert tracker.record(task.id).model == "veo_3_1_lite"
                view = veo_nb.panel(tracker)
                try:
                    form = view.submit_form
                    assert "veo_3_1_lite" in form.model.options
                    form.model.value = "veo_3_1_lite"
                    assert list(form.resolution.options) == ["720p"]
                finally:
                    view.close()
        finally:
            MODELS.pop("veo_3_1_lite", None)
