"""Server limits are bounded (issue 28, defect 3): one 429 with a huge
``Retry-After`` (an HTTP date years ahead, 10**9 seconds) must not close the
store's shared rate gate for good, nor may a gate a store of 0.3 kept: the
task still completes and its video is saved, after a restart too. Through
``Tracker`` against the emulator over real HTTP, on both backends."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path

import pytest
from polling import until

from veo_nb import TaskStatus, Tracker
from veo_nb._retry import MAX_RETRY_AFTER_S
from veo_nb.emulator import Emulator
from veo_nb.store import open_store

#: The 30 s rule -> 0.06 s, the 15-minute cap on a 429's wait -> 1.8 s.
SCALE = 0.002
CAP_S = MAX_RETRY_AFTER_S * SCALE
#: A gate veo_nb 0.3 kept from a ``Retry-After`` of an HTTP date in 2030.
IN_2030 = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return str(request.getfixturevalue("pg_db_url"))


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emulator:
        yield emulator


def old_gate(store_url: str, service: str, until_unix: float) -> None:
    """Write the gate as veo_nb 0.3 did: whatever the service asked for."""
    sql = ("INSERT INTO services (service, rate_limited_until) VALUES ({0}, {0}) "
           "ON CONFLICT (service) DO UPDATE SET rate_limited_until = excluded.rate_limited_until")
    if store_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute(sql.format("%s"), (service, until_unix))
    else:
        with sqlite3.connect(store_url) as conn:
            conn.execute(sql.format("?"), (service, until_unix))
        conn.close()


def stored_gate(store_url: str, service: str, tmp_path: Path) -> float:
    store, _ = open_store(store_url, tmp_path / "unused")
    try:
        return store.rate_limited_until(service)
    finally:
        store.close()


@pytest.mark.parametrize("header", ["1000000000", formatdate(IN_2030, usegmt=True)])
def test_a_huge_retry_after_closes_the_gate_for_at_most_the_cap(
        store_url: str, emu: Emulator, tmp_path: Path, header: str) -> None:
    media = tmp_path / "v"
    with Tracker(emu.client(), store=store_url, media_dir=media) as tracker:
        task = tracker.submit("a fox in the snow [duration: 300]")
        emu.storm(1.0, retry_after=header)  # the next poll gets 429 + that header
        until(lambda: emu.stats.faults.get("storm_429", 0) >= 1)
        gate = until(tracker.rate_limited_until)
        assert gate.timestamp() <= time.time() + CAP_S + 0.5
    # "a restart": a new tracker on the same store (a new engine reads its gate)
    assert stored_gate(store_url, emu.client().service, tmp_path) <= time.time() + CAP_S
    with Tracker(emu.client(), store=store_url, media_dir=media) as tracker:
        done = tracker.wait([task.id], timeout=60)
        record = tracker.record(task.id)
    assert [t.id for t in done] == [task.id] and record.status is TaskStatus.COMPLETED
    assert record.download_state == "saved" and Path(record.video_path).is_file()
    assert tracker.rate_limited_until() is None


def test_a_gate_stored_by_0_3_years_ahead_expires(
        store_url: str, emu: Emulator, tmp_path: Path) -> None:
    task = emu.client().create_video("a harbour at dawn [duration: 1500]")
    with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v", start=False):
        pass  # the tables exist (0.3 had them too)
    old_gate(store_url, emu.client().service, IN_2030)
    with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v") as tracker:
        tracker.track(task.id, label="harbour")
        gate = tracker.rate_limited_until()
        assert gate is not None and gate.timestamp() <= time.time() + CAP_S
        done = tracker.wait([task.id], timeout=60)
        record = tracker.record(task.id)
    assert [t.id for t in done] == [task.id] and record.download_state == "saved"
    assert emu.stats.polls_by_task[task.id] >= 2  # not only track()'s first look
    assert stored_gate(store_url, emu.client().service, tmp_path) <= time.time() + CAP_S
