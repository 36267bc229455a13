"""Store: SQLite round trips, no status regression, schema versions,
concurrent writers (threads and processes) and crash safety."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from veo_nb import store as store_module
from veo_nb.errors import VeoError
from veo_nb.models import TaskStatus
from veo_nb._store_query import TaskFilter, TaskQuery
from veo_nb.records import NOT_FOUND_REASON, Event, TaskRecord, history_frame, tasks_frame
from veo_nb.store import SCHEMA_VERSION, Store, StoreError

T0 = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def full_record(task_id: str = "task-1") -> TaskRecord:
    return TaskRecord(
        task_id=task_id, label="café ☕", prompt="a <cat> & \"dog\"\nsecond line",
        model="veo_3_1_fast", resolution="720p", aspect_ratio="16:9", mode="reference",
        status=TaskStatus.COMPLETED, status_text="completed",
        created_at=at(0), first_seen_at=at(1), started_at=at(30), finished_at=at(200),
        video_url="https://cdn.example/v.mp4?sig=a%20b", url_expires_at=at(200 + 86400),
        video_path="/videos/task-1.mp4", error=None, download_state="saved",
        download_error=None, tracked=True, poll_count=4, last_polled_at=at(200),
        next_poll_at=None, request={"model": "veo_3_1_fast", "input_reference": ["https://x/1.png"]},
        raw={"id": task_id, "status": "completed", "nested": {"a": [1, 2.5, None]}},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "deep" / "folder" / "veo.db") as s:
        yield s


def test_creates_folders_and_round_trips_a_record(store: Store) -> None:
    assert store.path.exists()
    record = full_record()
    store.save(record)
    assert store.get("task-1") == record
    assert store.get("missing") is None
    assert store.records() == [record]


def test_round_trips_events_with_the_record(store: Store) -> None:
    events = [
        Event("task-1", "status", "queued", at(1)),
        Event("task-1", "poll_error", None, at(31), http_status=503, attempt=2, detail="HTTP 503 ☁"),
        Event("task-1", "status", "Rendering", at(61)),
    ]
    store.save(full_record(), events[:2])
    store.append_events(events[2:])
    assert store.event_count() == 3
    pd.testing.assert_frame_equal(store.events_frame(), history_frame(events))
    pd.testing.assert_frame_equal(store.tasks_frame(), tasks_frame([full_record()]))


def test_records_are_ordered_by_first_sight_and_filtered(store: Store) -> None:
    first = dataclasses.replace(full_record("b"), first_seen_at=at(1))
    second = dataclasses.replace(full_record("a"), first_seen_at=at(2), tracked=False)
    store.save(second)
    store.save(first)
    assert [r.task_id for r in store.records()] == ["b"]
    assert [r.task_id for r in store.records(tracked_only=False)] == ["b", "a"]
    assert list(store.tasks_frame()["task_id"]) == ["b", "a"]
    assert list(store.tasks_frame(tracked_only=True)["task_id"]) == ["b"]


def test_empty_store_frames(store: Store) -> None:
    pd.testing.assert_frame_equal(store.events_frame(), history_frame([]))
    pd.testing.assert_frame_equal(store.tasks_frame(), tasks_frame([]))


def test_terminal_status_never_regresses(tmp_path: Path) -> None:
    path = tmp_path / "veo.db"
    done = full_record()
    stale = dataclasses.replace(
        done, status=TaskStatus.PROCESSING, status_text="processing", finished_at=None,
        video_url=None, url_expires_at=None, raw={"id": "task-1", "status": "processing"},
        first_seen_at=at(5), poll_count=9, label="renamed",
    )
    with Store(path) as one, Store(path) as other:
        one.save(done)
        other.save(stale, [Event("task-1", "status", "processing", at(300))])
        kept = one.get("task-1")
    assert kept is not None
    assert kept.status is TaskStatus.COMPLETED and kept.status_text == "completed"
    assert (kept.finished_at, kept.video_url, kept.raw) == (done.finished_at, done.video_url, done.raw)
    assert kept.first_seen_at == done.first_seen_at
    assert (kept.poll_count, kept.label) == (9, "renamed")  # other fields follow the writer


def test_terminal_may_replace_terminal_and_progress_is_saved(store: Store) -> None:
    queued = dataclasses.replace(full_record(), status=TaskStatus.QUEUED, status_text="queued",
                                 finished_at=None)
    store.save(queued)
    store.save(full_record())
    assert store.get("task-1") == full_record()
    failed = dataclasses.replace(full_record(), status=TaskStatus.FAILED, status_text="failed",
                                 error="policy")
    store.save(failed)
    assert store.get("task-1") == failed


def test_schema_version_and_wal(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_refuses_a_store_from_a_newer_release(tmp_path: Path) -> None:
    path = tmp_path / "veo.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer veo_nb") as info:
        Store(path)
    assert isinstance(info.value, VeoError)


def test_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite at all, " * 100)
    with pytest.raises(StoreError, match="not a usable veo_nb store"):
        Store(path)


def test_migrations_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "veo.db"
    with Store(path) as old:
        old.save(full_record())
    step = ("ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",)
    later = SCHEMA_VERSION + 1
    monkeypatch.setattr(store_module, "MIGRATIONS", {**store_module.MIGRATIONS, later: step})
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", later)
    with Store(path) as new:
        assert new.get("task-1") == full_record()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == later
        assert conn.execute("SELECT priority FROM tasks").fetchone() == (0,)
    finally:
        conn.close()


def test_threads_share_one_store(store: Store) -> None:
    def work(n: int) -> None:
        for i in range(25):
            record = dataclasses.replace(full_record(f"t{n}"), poll_count=i)
            store.save(record, [Event(f"t{n}", "status", "processing", at(i))])
            store.records()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.event_count() == 150
    assert sorted(r.poll_count for r in store.records()) == [24] * 6


WRITER = """
import sys
from datetime import datetime, timezone
from veo_nb.models import TaskStatus
from veo_nb.records import Event, TaskRecord
from veo_nb.store import Store

path, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store(path) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(count):
        now = datetime.now(timezone.utc)
        record = TaskRecord(task_id=f"{worker}-{i % 5}", status=TaskStatus.PROCESSING,
                            status_text="processing", first_seen_at=now, poll_count=i)
        store.save(record, [Event(record.task_id, "status", "processing", now, detail=str(i)),
                            Event("shared", "note", None, now, attempt=i, detail=worker)])
"""


@pytest.mark.parametrize("workers", [2, 4])
def test_processes_write_the_same_store_at_once(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "shared.db"
    per_worker = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}", str(per_worker)],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(workers)
    ]
    for proc in procs:  # every writer has opened the store (at once: schema set-up races too)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors
    with Store(path) as store:
        assert store.event_count() == 2 * per_worker * workers
        assert len(store.records()) == 5 * workers
        notes = store.events_frame().query("kind == 'note'")
        for n in range(workers):
            attempts = sorted(notes.loc[notes["detail"] == f"w{n}", "attempt"])
            assert attempts == list(range(per_worker))
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


CRASHER = """
import sys
from datetime import datetime, timezone
from veo_nb.records import Event
from veo_nb.store import Store

path, batch = sys.argv[1], int(sys.argv[2])
with Store(path) as store:
    seq = 0
    while True:
        now = datetime.now(timezone.utc)
        store.append_events([Event("t", "note", None, now, attempt=seq + k) for k in range(batch)])
        seq += batch
        print(seq, flush=True)
"""


def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    rng = random.Random(1)
    batch = 50
    for iteration in range(3):
        path = tmp_path / f"crash{iteration}.db"
        child = subprocess.Popen([sys.executable, "-c", CRASHER, str(path), str(batch)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        wanted, reported = rng.randint(3, 40), 0
        deadline = time.monotonic() + 60
        while reported < wanted * batch and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the writer stopped before it was killed"
            reported = int(line)
        time.sleep(rng.uniform(0, 0.02))  # land somewhere inside a later write
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read().split()
        child.wait()
        assert child.returncode == -signal.SIGKILL
        reported = int(rest[-1]) if rest else reported
        with Store(path) as store:
            assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            count = store.event_count()
            # committed but killed before it could print: at most one more batch
            assert count in (reported, reported + batch)
            attempts = store.events_frame()["attempt"]
            assert list(attempts) == list(range(count))


def test_a_version_1_store_stays_readable_and_is_migrated(tmp_path: Path) -> None:
    """A store written by veo_nb 0.1 (schema 1): its tasks and events read the
    same, with no service recorded, and the file is brought to the new schema."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for sql in store_module.MIGRATIONS[1]:
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO tasks (task_id, label, prompt, model, status, status_text, created_at, "
        "first_seen_at, download_state, tracked, poll_count, last_polled_at, request, raw) "
        "VALUES ('vgen_old', 'fox', 'a fox', 'veo_3_1_fast', 'processing', 'processing', "
        "1748779200, 1748779201, 'none', 1, 3, 1748779290, '{}', '{\"id\": \"vgen_old\"}')")
    conn.execute("INSERT INTO events (task_id, kind, status, observed_at) "
                 "VALUES ('vgen_old', 'status', 'processing', 1748779290)")
    conn.commit()
    conn.close()
    with Store(path) as store:
        record = store.get("vgen_old")
        assert (record.label, record.status, record.poll_count) == ("fox", TaskStatus.PROCESSING, 3)
        assert record.service is None and record.owner is None
        assert store.row("vgen_old").contact_at == 1748779290  # the last poll counts as contact
        assert list(store.events_frame().task_id) == ["vgen_old"]
        assert list(store.tasks_frame().task_id) == ["vgen_old"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def _panel_rows(store: Store) -> dict[str, TaskRecord]:
    """Three tasks as a panel sorts and filters them, written to ``store``."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = {
        "a": TaskRecord("a", prompt="a fox", created_at=t0, first_seen_at=t0, label="zebra",
                        status=TaskStatus.COMPLETED, status_text="completed", owner="ann"),
        "b": TaskRecord("b", prompt="a boat", created_at=t0 + timedelta(seconds=5),
                        first_seen_at=t0, resolution="1080p", aspect_ratio="9:16"),
        "c": TaskRecord("c", prompt="Ant hill", created_at=t0 + timedelta(seconds=9),
                        first_seen_at=t0, label="Ant", status=TaskStatus.PROCESSING,
                        status_text="processing", owner="bob"),
        "d": TaskRecord("d", prompt="typo", first_seen_at=t0 + timedelta(seconds=7),
                        status=TaskStatus.FAILED, status_text="failed", error=NOT_FOUND_REASON),
    }
    for record in rows.values():
        store.save(record)
    return rows


def test_the_database_sorts_filters_searches_and_counts_a_panel_page(store: Store) -> None:
    _panel_rows(store)

    def ids(**query: object) -> list[str]:
        return [r.task_id for r in store.page(TaskQuery(**query), 0, 10)]

    assert ids() == ["c", "d", "b", "a"]  # newest first (created, else first seen)
    assert ids(descending=False) == ["a", "b", "d", "c"]
    assert ids(sort="status", descending=False) == ["b", "c", "a", "d"]  # queued … not found
    assert ids(sort="label", descending=False) == ["c", "a", "d", "b"]  # unlabelled last
    assert ids(sort="label") == ["a", "c", "d", "b"]
    assert ids(status="not found") == ["d"] and ids(status="failed") == []
    assert ids(owner="bob") == ["c"]
    assert ids(search="9:16") == ["b"] and ids(search="ANT") == ["c"]
    assert ids(search="not found") == ["d"] and ids(search="%") == []
    assert ids(completed=True) == ["a"]
    assert [r.task_id for r in store.page(TaskQuery(), 1, 2)] == ["d", "b"]
    assert store.count(TaskQuery(search=" a b")) == 1 and store.count(TaskQuery(search="a")) == 3
    assert store.position(TaskQuery(), "b") == 2 and store.position(TaskQuery(owner="ann"), "b") is None
    overview = store.overview()
    assert overview.total == 4 and overview.owners == ("ann", "bob") and overview.completed == 1
    assert overview.counts == {"completed": 1, "queued": 1, "processing": 1, "not found": 1}


def test_tasks_are_read_as_a_frame_without_a_record_each_and_filtered(store: Store) -> None:
    rows = _panel_rows(store)
    store.save(dataclasses.replace(rows["a"], raw={"amount": 2.5, "progress": 100}))
    frame = store.frame()
    from_records = tasks_frame(store.records())
    pd.testing.assert_frame_equal(frame, from_records)
    assert frame.loc[frame.task_id == "a", "amount"].item() == 2.5
    t5 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc)
    assert list(store.frame(TaskFilter(since=t5)).task_id) == ["b", "c", "d"]
    assert list(store.frame(TaskFilter(status=("queued", "not found"))).task_id) == ["b", "d"]
    assert list(store.frame(TaskFilter(owner="bob")).task_id) == ["c"]
    assert list(store.frame(TaskFilter(limit=2)).task_id) == ["c", "d"]


def test_a_version_5_store_gains_the_indexes_costs_and_tallies_of_a_long_history(
        tmp_path: Path) -> None:
    """A store written before schema 6: its costs become columns the database
    sums, the panel's indexes exist, and the header's tallies count what was
    already there."""
    path = tmp_path / "v5.sqlite"
    conn = sqlite3.connect(path)
    for version in range(1, 6):
        for sql in store_module.MIGRATIONS[version]:
            if isinstance(sql, str):
                conn.execute(sql)
            else:
                sql(conn)
    conn.execute("PRAGMA user_version = 5")
    for i, (status, error, raw) in enumerate([
            ("completed", None, '{"amount": 0.5, "progress": 100}'),
            ("completed", None, '{"amount": 1.25}'), ("processing", None, '{"progress": 40}'),
            ("failed", NOT_FOUND_REASON, "{}")]):
        conn.execute(
            "INSERT INTO tasks (task_id, status, status_text, error, first_seen_at, "
            "download_state, tracked, poll_count, request, raw, owner) "
            f"VALUES ('vgen_{i}', ?, ?, ?, {1748779200 + i}, 'none', 1, 1, '{{}}', ?, 'ada')",
            (status, status, error, raw))
    conn.commit()
    conn.close()
    with Store(path) as store:
        overview = store.overview()
        assert overview.counts == {"completed": 2, "processing": 1, "not found": 1}
        assert (overview.amount, overview.costed, overview.completed) == (1.75, 2, 2)
        frame = store.frame()
        assert frame["progress"].fillna(-1).tolist() == [100.0, -1, 40.0, -1]
        assert store.spent_since(0) == (0, None, None)  # tracked ids, none submitted through a request
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"tasks_created", "tasks_word", "tasks_owner", "tasks_live"} <= indexes
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
