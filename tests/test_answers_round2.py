"""The tolerant reader, round 2 (issue #28): empty-balance refusals, transient
statuses on reads, a completed answer without its link, and Veo's safety
support codes, each served by the emulator over HTTP and read through
VeoClient or a Tracker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import veo_nb
from veo_nb import InsufficientBalanceError, TaskStatus, Tracker
from veo_nb.emulator import Emulator
from veo_nb.emulator._dialects import BALANCE_REFUSALS, TRANSIENT_STATUSES
from veo_nb.records import NO_LINK_YET, NO_VIDEO_REASON

SCALE = 0.01
#: The service's own words in each of the emulator's balance refusals.
BALANCE_WORDS = ("余额不足", "insufficient balance", "额度已用尽", "exceeded your current quota")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return request.getfixturevalue("pg_db_url")


def _emulator(*dialects: str) -> Emulator:
    return Emulator(time_scale=SCALE, failure_rate=0, video_size="sample",
                    dialects=list(dialects)).start()


def test_balance_refusals_at_create_are_their_own_error_with_the_services_words_never_retried(
        tmp_path: Path, store: str) -> None:
    """HTTP 200 business error, 402, 403 and 429: each an
    InsufficientBalanceError quoting the service, sent once, nothing kept."""
    assert len(BALANCE_REFUSALS) == len(BALANCE_WORDS)
    emu = _emulator("balance")
    try:
        client = emu.client()
        with Tracker(client, store=store, media_dir=tmp_path / "v") as tracker:
            for turn, words in enumerate(BALANCE_WORDS):
                before = emu.stats.requests_total
                with pytest.raises(InsufficientBalanceError) as info:
                    (tracker.submit if turn % 2 else client.create_video)("[no-balance] a fox")
                error = info.value
                assert words in str(error), str(error)
                assert error.refused is True
                assert error.status_code == BALANCE_REFUSALS[turn][0]
                assert isinstance(error, veo_nb.APIError)
                assert emu.stats.requests_total == before + 1  # never retried
                assert emu.api_key not in str(error)
            assert emu.stats.creates == 0
            assert tracker.records() == []  # a clear refusal: nothing may have been billed
            assert tracker.spending()["tasks"] == 0
    finally:
        emu.stop()


def test_a_balance_refusal_on_a_read_is_not_retried_and_the_tracker_still_finishes(
        tmp_path: Path) -> None:
    emu = _emulator("balance")
    try:
        client = emu.client()
        task = client.create_video("[no-balance-later] a fox [duration: 121]")
        client.get_result(task.id)
        time.sleep(emu.min_poll_interval_s * 1.1)
        with pytest.raises(InsufficientBalanceError, match="余额不足"):
            client.get_result(task.id)  # retry=True: still one request
        assert emu.stats.polls_by_task[task.id] == 2
        with Tracker(client, store=tmp_path / "h.sqlite", media_dir=tmp_path / "v") as tracker:
            later = tracker.submit("[no-balance-later] a boat [duration: 121]")
            (done,) = tracker.wait([later.id], timeout=60)
            assert done.status is TaskStatus.COMPLETED and done.video_path is not None
            errors = tracker.history().query("kind == 'poll_error'").detail.tolist()
            assert any("insufficient balance" in e for e in errors), errors
        assert emu.stats.interval_violations == 0
    finally:
        emu.stop()


@pytest.mark.slow
def test_408_425_433_and_520_to_524_on_a_read_are_transient(tmp_path: Path) -> None:
    """The fifth poll of a task is answered with each transient status in
    turn: one attempt shows it; a read with retries polls again (one
    interval later) and returns the task."""
    emu = _emulator("transient_status")
    try:
        client = emu.client()
        interval = emu.min_poll_interval_s
        ids = [client.create_video(f"a fox {i} [duration: 400]").id
               for i in range(2 * len(TRANSIENT_STATUSES))]
        for _ in range(4):
            for task_id in ids:
                client.get_result(task_id, retry=False)
            time.sleep(interval * 1.1)
        once, retried = ids[:len(TRANSIENT_STATUSES)], ids[len(TRANSIENT_STATUSES):]
        seen = []
        for task_id in once:
            with pytest.raises(veo_nb.APIError) as info:
                client.get_result(task_id, retry=False)
            seen.append(info.value.status_code)
        assert sorted(seen) == sorted(TRANSIENT_STATUSES)
        for task_id in retried:
            assert client.get_result(task_id).id == task_id
            assert emu.stats.polls_by_task[task_id] == 6
        assert emu.stats.interval_violations == 0
    finally:
        emu.stop()


def test_a_completed_answer_without_a_link_is_asked_again_three_times_then_no_video(
        tmp_path: Path, store: str) -> None:
    emu = _emulator()
    try:
        with Tracker(emu.client(), store=store, media_dir=tmp_path / "v") as tracker:
            task = tracker.submit("a shadow [no-video] [duration: 121]")
            (done,) = tracker.wait([task.id], timeout=60)
            record = tracker.record(task.id)
            assert record.status is TaskStatus.FAILED and record.error == NO_VIDEO_REASON
            history = tracker.history()
            notes = history[(history.task_id == task.id) & (history.kind == "note")]
            asked = [n for n in notes.detail if n.startswith(NO_LINK_YET)]
            assert asked == [f"{NO_LINK_YET} ({i}/3)" for i in (1, 2, 3)]
            assert done.error == NO_VIDEO_REASON
        assert emu.stats.interval_violations == 0
    finally:
        emu.stop()


SAFETY = "Video generation failed: the output was blocked by the safety filter."


@pytest.mark.parametrize("dialects", [[], ["status_reason"], ["reason_fields", "envelope"]])
def test_safety_support_codes_get_their_published_category(
        tmp_path: Path, dialects: list[str]) -> None:
    emu = _emulator(*dialects)
    prompts = {
        f"a [fail: {SAFETY} Support codes: 58061214] [duration: 121]":
            f"{SAFETY} Support codes: 58061214 (child)",
        f"b [fail: {SAFETY} Support codes: 61493863, 32635315] [duration: 121]":
            f"{SAFETY} Support codes: 61493863 (violence), 32635315 (vulgar)",
        f"c [fail: {SAFETY} Support codes: 11112222] [duration: 121]":
            f"{SAFETY} Support codes: 11112222",
    }
    try:
        with Tracker(emu.client(), store=tmp_path / "h.sqlite",
                     media_dir=tmp_path / "v") as tracker:
            ids = {tracker.submit(p).id: want for p, want in prompts.items()}
            tracker.wait(list(ids), timeout=60)
            for task_id, want in ids.items():
                record = tracker.record(task_id)
                assert record.status is TaskStatus.FAILED and record.error == want, record
            frame = tracker.tasks()
            assert set(frame.error) == set(prompts.values())
    finally:
        emu.stop()


def test_the_emulators_safety_failures_carry_support_codes_that_are_explained(
        tmp_path: Path) -> None:
    from veo_nb._safety import SUPPORT_CODES

    emu = Emulator(time_scale=SCALE, failure_rate=1.0, video_size="sample", seed=7,
                   dialects=["support_codes"]).start()
    try:
        with Tracker(emu.client(), store=tmp_path / "h.sqlite",
                     media_dir=tmp_path / "v") as tracker:
            ids = [tracker.submit(f"scene {i} [duration: 121]").id for i in range(12)]
            tracker.wait(ids, timeout=60)
            coded = [tracker.record(i).error for i in ids
                     if "Support codes: " in (tracker.record(i).error or "")]
            assert coded, [tracker.record(i).error for i in ids]
            for error in coded:
                code = error.rsplit("Support codes: ", 1)[1].split()[0]
                category = SUPPORT_CODES.get(code)
                assert error.endswith(f"{code} ({category})" if category else code), error
    finally:
        emu.stop()


def test_a_link_relative_to_the_api_is_made_absolute_against_its_origin() -> None:
    from urllib.parse import urlsplit

    emu = _emulator("relative_link")
    try:
        client = emu.client()
        task = client.create_video("a fox [duration: 121]")
        emu.advance(200)
        done = client.get_result(task.id)
        api = urlsplit(emu.base_url)
        link = urlsplit(done.video_url)
        assert (link.scheme, link.netloc) == (api.scheme, api.netloc)
        assert link.path.startswith("/files/v/") and done.raw["video_url"] == link.path
    finally:
        emu.stop()


LINK = "https://cdn.example.com/v/abc.mp4"


@pytest.mark.parametrize(("answer", "link"), [
    ({"output_url": LINK}, LINK),
    ({"download_url": LINK}, LINK),
    ({"video_urls": [LINK, "https://cdn.example.com/v/b.mp4"]}, LINK),
    ({"outputs": [{"url": LINK, "type": "video/mp4"}]}, LINK),
    ({"result": {"files": [{"href": LINK}]}, "cover": "https://cdn.example.com/c.jpg",
      "input_reference": ["https://img.example.com/in.png"]}, LINK),
    ({"data": {"media": "/files/abc.mp4"}}, "/files/abc.mp4"),
    ({"a": LINK, "b": "https://cdn.example.com/v/other.mp4"}, None),  # two: no guess
    ({"first_image": "https://img.example.com/in.png"}, None),  # the request's image
    ({"callback_url": "https://hooks.example.com/x"}, None),
    ({"page": "/files/readme"}, None),  # a relative link only when it names a video
])
def test_the_last_resort_finds_the_one_video_link_of_a_completed_answer(
        answer: dict, link: str | None) -> None:
    task = veo_nb.Task.from_json({"id": "t1", "status": "completed", **answer})
    assert task.video_url == link
    running = veo_nb.Task.from_json({"id": "t1", "status": "processing", **answer})
    named = any(k in answer for k in ("output_url", "download_url", "video_urls", "outputs"))
    assert running.video_url == (link if named else None)


@pytest.mark.parametrize("field", ["failReason", "failMsg", "fail_msg", "detail", "reason"])
def test_a_failure_reason_under_other_fields(field: str) -> None:
    task = veo_nb.Task.from_json({"id": "t1", "status": "FAILED", "error": None,
                                  field: "the prompt was refused"})
    assert task.status is TaskStatus.FAILED and task.error == "the prompt was refused"


@pytest.mark.parametrize("status", ["failed: quota of the model exceeded",
                                    "FAILED：quota of the model exceeded",
                                    "error: quota of the model exceeded"])
def test_a_status_with_its_reason_attached_is_failed_with_that_reason(status: str) -> None:
    task = veo_nb.Task.from_json({"id": "t1", "status": status})
    assert task.status is TaskStatus.FAILED and task.status_text == "failed"
    assert task.error == "quota of the model exceeded"


@pytest.mark.parametrize("answer", [
    {"code": "500", "msg": "余额不足"}, {"code": 1001, "msg": "令牌额度已用尽"},
    {"error": {"message": "insufficient balance", "type": "billing"}},
    {"code": "429", "message": "You exceeded your current quota"},
])
def test_a_balance_refusal_at_http_200_is_its_own_error(answer: dict) -> None:
    with pytest.raises(InsufficientBalanceError) as info:
        veo_nb.Task.from_json(answer)
    said = answer.get("msg") or answer.get("message") or answer["error"]["message"]
    assert said in str(info.value) and info.value.refused


def test_other_business_errors_are_not_balance_refusals() -> None:
    for answer in ({"code": "204", "msg": "登录验证失败"},
                   {"code": "400", "msg": "load balancer error"},
                   {"code": "500", "msg": "internal error"}):
        with pytest.raises(veo_nb.APIError) as info:
            veo_nb.Task.from_json(answer)
        assert not isinstance(info.value, InsufficientBalanceError)
