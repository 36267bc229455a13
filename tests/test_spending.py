"""Money (issue #19): a daily cap refuses a submit or a whole batch before
any request, and a create whose answer never came stays visible as "may have
been created and billed" until dismissed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import veo_nb
from veo_nb import Tracker
from veo_nb import SpendingCapError
from veo_nb._spending import UNCONFIRMED
from veo_nb.emulator import Emulator, FaultConfig

SCALE = 0.01


def test_the_daily_cap_refuses_a_submit_and_a_batch_before_any_request(
        tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                     max_tasks_per_day=3) as tracker:
            for i in range(3):
                tracker.submit(f"fox {i} [duration: 125]")
            requests = emu.stats.requests_total
            with pytest.raises(SpendingCapError, match="cap of this history is 3 new tasks and "
                                                       "3 were submitted today"):
                tracker.submit("one too many")
            assert emu.stats.requests_total == requests and emu.stats.creates == 3
            assert tracker.spending() == {"tasks": 3, "amount": None, "reserved": None,
                                          "max_tasks": 3.0, "max_amount": None}
        monkeypatch.setenv("VEO_NB_MAX_TASKS_PER_DAY", "5")  # a hub-wide setting
        with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v") as tracker:
            batch = pd.DataFrame({"prompt": [f"sweep {i}" for i in range(3)]})
            with pytest.raises(SpendingCapError, match="3 more would pass it"):
                tracker.submit_many(batch)  # 3 + 3 > 5: none of it
            assert emu.stats.creates == 3
            frame = tracker.submit_many(batch.head(2))
            assert frame.error.isna().all() and emu.stats.creates == 5
            view = veo_nb.panel(tracker)
            try:
                assert "today: 5 of 5 new tasks" in view.header.value
            finally:
                view.close()


def test_the_amount_cap_refuses_the_task_that_would_cross_it(tmp_path: Path, store_url: str) -> None:
    """Issue 28: the expected cost of a task (the last amount reported for
    its model and resolution) counts before it is sent, and so do today's
    tasks whose amount is not reported yet."""
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample",
                  dialects=["amount"]) as emu:
        with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                     max_amount_per_day=0.5) as tracker:
            first = tracker.submit("a costly fox [duration: 121]")  # cost unknown: sent
            tracker.wait([first.id], timeout=60)
            with pytest.raises(SpendingCapError, match="reported 0.35 .* about 0.35"):
                tracker.submit("a second one")  # 0.35 + 0.35 would cross 0.5
            assert emu.stats.creates == 1
        with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                     max_amount_per_day=1.0, start=False) as tracker:
            tracker.submit("a second one [duration: 300]")  # 0.7: under the cap
            spent = tracker.spending()
            assert spent["tasks"] == 2 and (spent["amount"] or 0) + (spent["reserved"] or 0) \
                == pytest.approx(0.7)
            with pytest.raises(SpendingCapError, match="about 0.35"):
                tracker.submit("a third one")  # 1.05 with the second's expected cost
            assert emu.stats.creates == 2


def test_a_create_whose_answer_never_came_stays_visible_until_dismissed(tmp_path: Path) -> None:
    """The service handles the create, then the answer is lost: the task
    exists (and would be billed) but its id never arrived. It shows in
    tasks(), summary() and the panel as 'may have been billed'; a create the
    service refused leaves nothing."""
    lost = FaultConfig(lost_answer_rate=1.0)
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample", faults=lost) as emu, \
            Tracker(emu.client(max_retries=0), store=tmp_path / "h.sqlite",
                    media_dir=tmp_path / "v") as tracker:
        with pytest.raises(veo_nb.APIError):
            tracker.submit("a fox whose id is lost")
        assert emu.stats.creates == 1
        (entry,) = tracker.records()
        assert entry.status_text == UNCONFIRMED and "may have been created and billed" in entry.error
        assert entry.task_id in set(tracker.tasks().task_id)
        assert int(tracker.summary().unconfirmed.sum()) == 1
        assert tracker.wait(timeout=5) == []  # nothing to wait for
        view = veo_nb.panel(tracker)
        try:
            view.update()
            assert "may have been created and billed" in str(view._rows[entry.task_id].widget)
        finally:
            view.close()
        emu_polls = sum(emu.stats.polls_by_task.values())
        tracker.remove(entry.task_id, delete=True)  # dismissed
        assert tracker.records() == [] and sum(emu.stats.polls_by_task.values()) == emu_polls
    with Emulator(time_scale=SCALE, video_size="sample") as emu, \
            Tracker(emu.client(), store=tmp_path / "h2.sqlite", media_dir=tmp_path / "v") as tracker:
        with pytest.raises(veo_nb.APIError, match="HTTP 400"), \
                pytest.warns(veo_nb.UnknownModelWarning):
            tracker.submit("refused by the service", model="veo_3_1_lite_not_offered")
        assert tracker.records() == []
