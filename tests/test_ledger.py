"""Issue 28: caps that are caps. The daily caps count an append-only
spending ledger (removing tasks lowers nothing), the check and the
reservation are one transaction with the entries (so concurrent submits, in
threads or processes, never pass a cap together), and ``submit_many`` is
all or nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from veo_nb import APIError, SpendingCapError, Tracker, UnknownModelWarning
from veo_nb._spending import day_start
from veo_nb.emulator import Emulator
from veo_nb.records import TaskRecord, from_unix
from veo_nb.store import BaseStore, Store
from veo_nb.models import TaskStatus

SCALE = 0.01


def test_removing_or_deleting_tasks_does_not_lower_the_days_spending(
        tmp_path: Path, store_url: str) -> None:
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                    max_tasks_per_day=2) as tracker:
        first, second = (tracker.submit(f"fox {i} [duration: 121]") for i in range(2))
        tracker.remove([first.id])
        tracker.remove([second.id], delete=True)
        assert tracker.spending()["tasks"] == 2
        with pytest.raises(SpendingCapError, match="2 were submitted today"):
            tracker.submit("a third fox")
        assert emu.stats.creates == 2


def _race(n: int, act: callable) -> list[BaseException | None]:  # type: ignore[valid-type]
    """Run ``act(i)`` in ``n`` threads released at once; each one's error or None."""
    gate = threading.Barrier(n)
    out: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            act(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def test_eight_concurrent_submits_under_a_cap_of_one_create_one(tmp_path: Path,
                                                                store_url: str) -> None:
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample", latency_s=0.05) as emu:
        trackers = [Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                            max_tasks_per_day=1, start=False) for _ in range(2)]
        try:
            errors = _race(8, lambda i: trackers[i % 2].submit(f"racing fox {i}"))
            assert emu.stats.creates == 1
            assert sum(e is None for e in errors) == 1
            assert all(isinstance(e, SpendingCapError) for e in errors if e is not None)
            assert trackers[0].spending()["tasks"] == 1
            assert len(trackers[0].records()) == 1
        finally:
            for tracker in trackers:
                tracker.close()


CHILD = """
import json, os, sys, time
from veo_nb import SpendingCapError, Tracker, VeoClient
base, key, store, media, go = sys.argv[1:]
tracker = Tracker(VeoClient(key, base, time_scale=0.01), store=store, media_dir=media,
                  max_tasks_per_day=1, start=False)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
try:
    print(json.dumps({"created": tracker.submit("a fox from a process").id}), flush=True)
except SpendingCapError as exc:
    print(json.dumps({"refused": str(exc)}), flush=True)
tracker.close()
"""


def test_eight_processes_under_a_cap_of_one_create_one(tmp_path: Path, store_url: str) -> None:
    go = tmp_path / "go"
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample", latency_s=0.05) as emu:
        children = [subprocess.Popen(
            [sys.executable, "-c", CHILD, emu.base_url, emu.api_key, store_url,
             str(tmp_path / "v"), str(go)], stdout=subprocess.PIPE, text=True)
            for _ in range(8)]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            go.touch()
            said = [json.loads(child.communicate(timeout=120)[0]) for child in children]
        finally:
            for child in children:
                child.kill()
                child.wait()
        assert sum("created" in s for s in said) == 1, said
        assert sum("refused" in s for s in said) == 7, said
        assert emu.stats.creates == 1


def test_submit_many_is_all_or_nothing_under_the_caps(tmp_path: Path, store_url: str) -> None:
    batch = pd.DataFrame({"prompt": ["left [duration: 121]", "right [duration: 121]"]})
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample", latency_s=0.05,
                  dialects=["amount"]) as emu:
        trackers = [Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                            max_tasks_per_day=3, start=False) for _ in range(2)]
        try:
            errors = _race(2, lambda i: trackers[i].submit_many(batch))
            assert emu.stats.creates == 2  # one batch whole, the other not at all
            assert sum(isinstance(e, SpendingCapError) for e in errors) == 1
            assert trackers[0].spending()["tasks"] == 2
        finally:
            for tracker in trackers:
                tracker.close()
        with Tracker(emu.client(), store=store_url, media_dir=tmp_path / "v",
                     max_amount_per_day=0.8) as tracker:  # 0.35 each, 0.7 reserved
            assert (tracker.spending()["amount"] or 0) + (tracker.spending()["reserved"] or 0) \
                == pytest.approx(0.7)
            with pytest.raises(SpendingCapError, match="about 0.35"):
                tracker.submit_many(batch.head(1))  # 0.7 + 0.35 crosses 0.8: nothing sent
            assert emu.stats.creates == 2


def _old_store(store: BaseStore) -> None:
    """Turn a store back into schema 6: no ledger."""
    def body(cur: object) -> None:
        cur.execute("DROP TABLE ledger")  # type: ignore[attr-defined]
        if isinstance(store, Store):
            cur.execute("PRAGMA user_version = 6")  # type: ignore[attr-defined]
        else:
            cur.execute("UPDATE meta SET value = 6 WHERE name = 'schema'")  # type: ignore[attr-defined]

    store._transact(body)


def test_a_schema_6_store_gains_a_ledger_of_its_submitted_tasks(tmp_path: Path,
                                                                store_url: str) -> None:
    from veo_nb.store import open_store

    now = time.time()
    opened, _ = open_store(store_url, tmp_path / "x.sqlite")
    try:
        for i, (raw, request) in enumerate([({"amount": 0.35}, {"model": "veo_3_1_fast"}),
                                            ({}, {"model": "veo_3_1_fast"}),
                                            ({"amount": 9.0}, {})]):  # tracked, not submitted
            opened.write(TaskRecord(f"vgen_{i}", status=TaskStatus.COMPLETED,
                                    status_text="completed", first_seen_at=from_unix(now),
                                    raw=raw, request=request, model="veo_3_1_fast",
                                    resolution="720p"))
        _old_store(opened)
    finally:
        opened.close()
    if store_url.endswith(".sqlite"):
        with sqlite3.connect(store_url) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
    opened, _ = open_store(store_url, tmp_path / "x.sqlite")
    try:
        assert opened.spent_since(day_start(now)) == (2, 0.35, None)
        opened.delete(["vgen_0", "vgen_1"])
        assert opened.spent_since(day_start(now)) == (2, 0.35, None)
    finally:
        opened.close()


def _psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.postgres
def test_on_a_class_store_students_only_append_to_the_ledger_as_themselves(
        pg_server: Any, tmp_path: Path) -> None:
    import pg_cluster

    from veo_nb._class import set_up

    urls = set_up(pg_cluster.new_database(pg_server.url), "teacher", ["ann", "ben"])
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample",
                  dialects=["amount"]) as emu:
        with Tracker(emu.client(), store=urls["ann"], media_dir=tmp_path / "a", owner="ann",
                     max_tasks_per_day=3) as ann:
            mine = ann.submit("ann's fox [duration: 121]")
            ann.wait([mine.id], timeout=60)
            with pytest.raises(APIError, match="HTTP 400"), \
                    pytest.warns(UnknownModelWarning):  # a refusal voids her create
                ann.submit("refused", model="veo_3_1_not_offered_to_ann")
            assert ann.spending()["tasks"] == 1 and ann.spending()["amount"] == 0.35
        with Tracker(emu.client(), store=urls["ben"], media_dir=tmp_path / "b", owner="ben",
                     max_tasks_per_day=3) as ben:
            ben.submit("ben's boat [duration: 121]")
            assert ben.spending()["tasks"] == 2
    create = _psql(urls["ben"], "SELECT entry FROM ledger WHERE kind = 'create' AND owner = 'ann'")
    entry = create.stdout.split()[2]
    for sql, said in (("DELETE FROM ledger", "permission denied"),
                      ("UPDATE ledger SET at = 0", "permission denied"),
                      ("TRUNCATE ledger", "permission denied"),
                      (f"INSERT INTO ledger (entry, kind, ref, at, owner) VALUES "
                       f"('void:{entry}', 'void', '{entry}', 0, 'ann')", "row-level security"),
                      (f"INSERT INTO ledger (entry, kind, ref, at) VALUES "
                       f"('void:{entry}', 'void', '{entry}', 0)", "row-level security"),
                      ("INSERT INTO ledger (entry, kind, task_id, at, amount) SELECT "
                       "'amount:x', 'amount', task_id, 0, 0.01 FROM tasks LIMIT 1",
                       "row-level security")):
        out = _psql(urls["ben"], sql)
        assert out.returncode != 0 and said in out.stderr, (sql, out.stdout, out.stderr)
    with Emulator(time_scale=SCALE, video_size="sample") as emu, \
            Tracker(emu.client(), store=urls["teacher"], media_dir=tmp_path / "t",
                    owner="teacher", max_tasks_per_day=3) as teacher:
        teacher.remove([r.task_id for r in teacher.records()], delete=True)
        assert teacher.spending()["tasks"] == 2  # the teacher's erasing lowers nothing either
