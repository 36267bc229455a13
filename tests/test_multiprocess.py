"""Several processes on one store, each with its own tracker, against one
emulator over real HTTP; the 30 s rule is counted at the server.

Three processes each followed the same 8 tasks before: 32 polls came sooner
than the interval, and two of them still showed every task queued when
they stopped. Now each task is polled by one process per interval (the
store's claims), every video is fetched once, and every process sees every
final status (the others follow the store)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mp_helpers import Child, media_gets
from veo_nb import Tracker
from veo_nb.emulator import Emulator
from veo_nb.store import open_store

SCALE = 0.01  # the 30 s rule -> 0.3 s

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store every process opens: a SQLite file, or a PostgreSQL database
    on a real throwaway server."""
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return request.getfixturevalue("pg_db_url")


def _truth(emu: Emulator, task_id: str) -> str:
    return emu.peek(task_id)["status"]


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_on_one_store_share_the_polling(tmp_path: Path, processes: int,
                                                  shared: str) -> None:
    with Emulator(time_scale=SCALE, failure_rate=0.2, seed=processes, video_size="sample") as emu:
        client = emu.client()
        ids = [client.create_video(f"shared {i} [duration: {125 + 20 * i}]").id for i in range(8)]
        media = tmp_path / "videos"
        children = [Child.start(emu, shared, media, "track", ids) for _ in range(processes)]
        results = [c.result() for c in children]
        stats = emu.stats
        truth = {i: _truth(emu, i) for i in ids}
        gets = media_gets(emu)
    assert stats.interval_violations == 0
    for result in results:  # every process saw every final status
        assert {i: result["done"][i]["status"] for i in ids} == truth
    completed = [i for i in ids if truth[i] == "completed"]
    assert completed
    assert all(gets.get(i) == 1 for i in completed), gets  # each video fetched once
    paths = {r["done"][i]["video_path"] for r in results for i in completed}
    assert len(paths) == len(completed) and all(Path(p).is_file() for p in paths)
    polls = sum(r["polls"] for r in results)
    # as many polls as one process would send, not N times as many
    assert polls == sum(stats.polls_by_task.values())
    assert polls <= 8 * 9


def test_a_killed_poller_is_taken_over(tmp_path: Path, shared: str) -> None:
    """The polling process is SIGKILLed (a kernel restart): another live
    process takes its tasks over within one interval plus the claim's
    expiry, without breaking the interval."""
    with Emulator(time_scale=SCALE, failure_rate=0, seed=7, video_size="sample") as emu:
        media = tmp_path / "videos"
        poller = Child.start(emu, shared, media, "submit:6", timeout=60)
        ids = poller.ready()
        follower = Child.start(emu, shared, media, "follow", ids)
        follower.ready()
        time.sleep(0.3)
        poller.kill()
        killed_at = time.time()
        view, _ = open_store(shared, tmp_path / "unused")
        with view:
            unfinished = [r.record.task_id for r in view.rows() if not r.record.is_terminal]
        result = follower.result()
        stats = emu.stats
    assert stats.interval_violations == 0
    assert all(result["done"][i]["status"] == "completed" for i in ids)
    assert all(result["done"][i]["download"] == "saved" for i in ids)
    assert unfinished and result["polls"] > 0  # the follower took over
    for task_id in unfinished:  # and saw each finish well within interval + claim expiry
        finished = result["done"][task_id]["finished_at"]
        assert finished > killed_at


def test_a_followers_wait_returns_when_the_poller_records_completion(
        tmp_path: Path, veo_emulator: Emulator, shared: str) -> None:
    """A process that does not poll (another one holds the claims) still
    waits for the tasks, and learns of each final status within about a
    second of the poller recording it."""
    media = tmp_path / "videos"
    with Tracker(veo_emulator.client(), store=shared, media_dir=media) as poller:
        ids = [poller.submit(f"followed {i} [duration: {130 + 30 * i}]").id for i in range(4)]
        follower = Child.start(veo_emulator, shared, media, "follow", ids)
        follower.ready()
        result = follower.result()
        records = {i: poller.record(i) for i in ids}
    assert result["polls"] == 0  # it never polled: it followed
    for task_id in ids:
        seen = result["done"][task_id]
        assert seen["status"] == records[task_id].status_text == "completed"
        assert seen["video_path"] == records[task_id].video_path
        assert 0 <= seen["seen_at"] - records[task_id].finished_at.timestamp() < 1.5
    assert veo_emulator.stats.interval_violations == 0
