"""Defects of 0.2 found by review (issue #24), each shown on a real store
(SQLite file or a throwaway PostgreSQL server) and the emulator over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from polling import until
from veo_nb import Tracker
from veo_nb.emulator import Emulator
from veo_nb.store import open_store

SCALE = 0.01  # the 30 s rule -> 0.3 s

#: Another machine's process, as it names itself in the store's claims.
ELSEWHERE = "another-machine:4242:feedbeef"


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store: a SQLite file, or a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return request.getfixturevalue("pg_db_url")


@pytest.mark.slow
def test_a_refused_claim_waits_for_the_claim_to_end(tmp_path: Path, shared: str) -> None:
    """Another machine's process took the poll claim (which changes no
    revision, so this process does not know). Before, the refused poll went
    straight back to the dispatcher: tens of thousands of claim transactions
    and a core spent until the claim ended. Now one refusal, then one look
    when the claim runs out. (Here the other process took the task while
    this one was paused, and this one is resumed.)"""
    hold_s = 3.0
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        client = emu.client()
        task_id = client.create_video("held elsewhere [duration: 250]").id
        with Tracker(client, store=shared, media_dir=tmp_path / "videos") as tracker:
            tracker.track(task_id)
            until(lambda: tracker.record(task_id).poll_count >= 1)
            tracker.stop()  # paused: this process gives its claims to the others
            time.sleep(1.0)  # ... and its follower reads that release before the claim below
            other, _ = open_store(shared, tmp_path / "unused")
            with other:
                now = time.time()
                assert other.claim_poll(task_id, ELSEWHERE, now=now, interval=0.0,
                                        until=now + hold_s) is not None
                tracker.start()
                stats = tracker.store.stats
                before = stats.as_dict()
                cpu = time.process_time()
                polls = emu.stats.polls_by_task.get(task_id, 0)
                time.sleep(hold_s - 0.5)
                cpu = time.process_time() - cpu
                during = {k: v - before[k] for k, v in stats.as_dict().items()}
                assert emu.stats.polls_by_task.get(task_id, 0) == polls  # nothing sent meanwhile
                # once the claim ran out, this process polls it again
                until(lambda: emu.stats.polls_by_task.get(task_id, 0) > polls, timeout=30)
    assert during["claims_refused"] <= 2, during
    assert during["transactions"] <= 4, during
    assert cpu < 0.5 * hold_s, f"{cpu:.2f} s of CPU while another process held the claim"
    assert emu.stats.interval_violations == 0
