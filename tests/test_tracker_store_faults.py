"""The tracker when its store is slow or failing: writes never block readers,
memory never shows what the store does not have, a failed write is retried,
and a created task is never lost without its id being reported.

The store is real SQLite; a failing write is a real ``sqlite3`` error raised
by a :class:`Store` subclass (the one thing that cannot be provoked on demand:
a disk that fails exactly once)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from polling import until

from veo_nb import StoreError, Tracker
from veo_nb.store import Store




class FlakyStore(Store):
    """A store whose next ``failures`` writes matching ``when`` raise
    ``database is locked``, as SQLite does once its busy timeout ran out."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures = 0
        self.when = lambda record, events: True
        self.failed = 0

    def write(self, record, events=(), **kw):
        events = list(events)
        if self.failures and self.when(record, events):
            self.failures -= 1
            self.failed += 1
            raise sqlite3.OperationalError("database is locked")
        return super().write(record, events, **kw)

    def reserve(self, entries, since, check):
        if self.failures and any(self.when(e, []) for e in entries):
            self.failures -= 1
            self.failed += 1
            raise sqlite3.OperationalError("database is locked")
        return super().reserve(entries, since, check)


@pytest.fixture
def flaky(tmp_path: Path):
    store = FlakyStore(tmp_path / "h.sqlite")
    yield store
    store.close()


def test_a_held_write_lock_does_not_block_readers(tmp_path: Path, veo_emulator) -> None:
    """Another process holds the write lock while a poll's answer must be
    written: records(), next_poll_at() and expected_window() answer at once
    (they waited out the busy timeout under the tracker's lock before)."""
    tracker = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
    try:
        task = tracker.submit("held [duration: 130]")
        blocker = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # an uncommitted write of another process
        try:
            time.sleep(1.0)  # the poller's writes wait for the lock meanwhile
            worst = 0.0
            for _ in range(20):
                start = time.monotonic()
                tracker.records()
                tracker.next_poll_at()
                tracker.expected_window(task.id)
                repr(tracker)
                worst = max(worst, time.monotonic() - start)
                time.sleep(0.05)
            assert worst < 0.2
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        (done,) = tracker.wait([task.id], timeout=60)
        assert done.is_terminal
    finally:
        tracker.close()


def test_a_failed_write_is_retried_and_memory_never_runs_ahead(flaky: FlakyStore, tmp_path: Path,
                                                              veo_emulator) -> None:
    tracker = Tracker(veo_emulator.client(), store=flaky, media_dir=tmp_path / "v")
    try:
        task = tracker.submit("flaky [duration: 130]")
        flaky.when = lambda record, events: record.status_text == "completed"
        flaky.failures = 1
        seen: list[tuple[str, str | None]] = []

        def check(_task):  # whenever memory changes, the store already has it
            seen.append((tracker.record(task.id).status_text,
                         (flaky.get(task.id) or tracker.record(task.id)).status_text))

        tracker.on_change(check)
        (done,) = tracker.wait([task.id], timeout=60)
        assert done.status_text == "completed" and flaky.failed == 1
        assert all(memory == stored for memory, stored in seen)
        history = tracker.history()
        statuses = history[(history.task_id == task.id) & (history.kind == "status")]
        assert list(statuses.status.astype(str)) == ["queued", "processing", "completed"]
        errors = [e for e in tracker.recent_errors() if e.task_id == task.id]
        assert errors and "database is locked" in errors[0].detail
        assert flaky.get(task.id).download_state == "saved"
    finally:
        tracker.close()


def test_submit_reports_a_created_task_it_could_not_save(flaky: FlakyStore, tmp_path: Path,
                                                         veo_emulator) -> None:
    tracker = Tracker(veo_emulator.client(), store=flaky, media_dir=tmp_path / "v")
    try:
        flaky.when = lambda record, events: not record.task_id.startswith("unconfirmed-")
        flaky.failures = 1
        with pytest.raises(StoreError) as info:
            tracker.submit("billed [duration: 130]")
        (task_id,) = info.value.task_ids
        assert task_id in veo_emulator.task_ids()  # it exists on the service
        assert task_id in str(info.value) and "billed" in str(info.value)
        # followed, and its "may have been billed" entry stays until the task is stored
        (entry,) = [r.task_id for r in tracker.records() if r.task_id != task_id]
        assert flaky.get(entry) is not None
        until(lambda: flaky.get(task_id) is not None)  # the write was retried
        assert flaky.get(entry) is None  # erased in that same write
        until(lambda: [r.task_id for r in tracker.records()] == [task_id])
        (done,) = tracker.wait([task_id], timeout=60)
        assert done.is_terminal and flaky.get(task_id).is_terminal
    finally:
        tracker.close()


def test_submit_many_reports_per_row_and_goes_on(flaky: FlakyStore, tmp_path: Path,
                                                 veo_emulator) -> None:
    tracker = Tracker(veo_emulator.client(), store=flaky, media_dir=tmp_path / "v")
    try:
        flaky.when = lambda record, events: (record.label == "second"
                                             and not record.task_id.startswith("unconfirmed-"))
        flaky.failures = 1
        frame = pd.DataFrame({"prompt": ["a [duration: 130]", "b [duration: 130]",
                                         "c [duration: 130]"],
                              "label": ["first", "second", "third"]})
        with pytest.warns(UserWarning, match="1 of 3 rows"):
            result = tracker.submit_many(frame)
        assert result.task_id.notna().all()  # every created task has its id
        assert result.error.isna().tolist() == [True, False, True]
        assert "could not be saved" in result.error.iloc[1]
        until(lambda: all(flaky.get(i) is not None for i in result.task_id))
    finally:
        tracker.close()


def test_a_request_the_store_cannot_record_is_not_sent(flaky: FlakyStore, tmp_path: Path,
                                                       veo_emulator) -> None:
    """Before a create is sent its request is saved (so that a lost answer
    leaves a visible 'may have been billed' entry); when even that cannot be
    saved, nothing is sent, and so nothing is billed unseen."""
    tracker = Tracker(veo_emulator.client(), store=flaky, media_dir=tmp_path / "v")
    try:
        flaky.when = lambda record, events: record.task_id.startswith("unconfirmed-")
        flaky.failures = 1
        with pytest.raises(StoreError, match="nothing was sent"):
            tracker.submit("never sent [duration: 130]")
        assert veo_emulator.stats.creates == 0 and tracker.records() == []
    finally:
        tracker.close()


def test_concurrent_writes_of_one_task_keep_the_newest(tmp_path: Path, veo_emulator) -> None:
    """Labels written from many threads while the task is polled: memory and
    store agree at the end."""
    tracker = Tracker(veo_emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v")
    try:
        task = tracker.submit("busy [duration: 130]")
        threads = [threading.Thread(target=tracker.track, args=(task.id,),
                                    kwargs={"label": f"l{i}"}) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tracker.wait([task.id], timeout=60)
        assert tracker.record(task.id) == tracker.store.get(task.id)
    finally:
        tracker.close()
