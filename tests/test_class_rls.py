"""A class where each student writes only their own work (issue #28, defects
4 and 5): as a student, with the real ``psql`` client, every column of a
classmate's task and every write to every shared table is refused, while
the student's own task and rows still work and the teacher manages
everything; a classmate's task finishes with only the teacher's tracker
open, and another student's tracker follows it without touching it.

A dedicated throwaway server (`class_server`): roles are server-wide."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_cluster
import pytest

from polling import until
from veo_nb import Tracker
from veo_nb._class import GATE_MAX_S, set_up
from veo_nb.emulator import Emulator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SCALE = 0.01
#: A table's rows as the administrator sees them (all of them, in one order).
_SNAPSHOT = "SELECT coalesce(json_agg(row_to_json(t)::text ORDER BY row_to_json(t)::text), '[]') FROM {} t"


def _psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                           "-c", sql], capture_output=True, text=True, timeout=60, check=False)


def _ok(url: str, sql: str) -> str:
    out = _psql(url, sql)
    assert out.returncode == 0, (sql, out.stderr)
    return out.stdout.strip()


def _tables(admin: str) -> list[str]:
    return _ok(admin, "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
                      "WHERE schemaname = 'public'").split()


def _snapshot(admin: str) -> dict[str, str]:
    return {t: _ok(admin, _SNAPSHOT.format(t)) for t in _tables(admin)}


def _refused(url: str, sql: str) -> None:
    """``sql`` as this role changes nothing: an error, or no row touched."""
    out = _psql(url, sql + " RETURNING 1")
    if out.returncode == 0:
        assert out.stdout.strip() == "", (sql, "was allowed", out.stdout)
    else:
        assert ("row-level security" in out.stderr or "permission denied" in out.stderr
                or "veo_nb:" in out.stderr), (sql, out.stderr)


@dataclass
class Klass:
    admin: str
    urls: dict[str, str]
    hers: str  # alice's finished task
    live: str  # alice's task that runs for hours
    his: str   # bob's finished task


@pytest.fixture(scope="module")
def klass(class_server: pg_cluster.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Klass]:
    admin = pg_cluster.new_database(class_server.url)
    urls = set_up(admin, "teacher", ["alice", "bob"])
    media = tmp_path_factory.mktemp("media")
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        with Tracker(emu.client(), store=urls["alice"], media_dir=media / "a", owner="alice") as a:
            hers = a.submit("alice's fox [duration: 121]").id
            live = a.submit("alice's long take [duration: 1000000]").id
            a.wait([hers], timeout=60)
        with Tracker(emu.client(), store=urls["bob"], media_dir=media / "b", owner="bob") as b:
            his = b.submit("bob's boat [duration: 121]").id
            b.wait([his], timeout=60)
    _ok(admin, "INSERT INTO services VALUES ('shared gate', 0) ON CONFLICT DO NOTHING")
    _ok(admin, "INSERT INTO deleted VALUES ('long gone', 1)")
    _ok(urls["alice"], f"INSERT INTO reuse VALUES ('cell', 'fox', 0, '{hers}', 0)")
    yield Klass(admin, urls, hers, live, his)


def _columns(admin: str) -> list[tuple[str, str]]:
    rows = _ok(admin, "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name) "
                      "FROM information_schema.columns WHERE table_name = 'tasks'")
    return [(c.split(":")[0], c.split(":")[1]) for c in rows.split(",")]


def _changed(column: str, kind: str) -> str:
    """A new value for ``column`` of SQL type ``kind``."""
    if kind == "text":
        return "'changed'" if column != "status" else "'failed'"
    return f"COALESCE({column}, 0) + 1"


def test_a_student_changes_no_column_of_a_classmates_task(klass: Klass) -> None:
    bob, alice = klass.urls["bob"], klass.urls["alice"]
    before = _snapshot(klass.admin)
    columns = _columns(klass.admin)
    assert {"status", "video_url", "key_fingerprint", "service", "poller", "rev"} <= \
        {c for c, _ in columns}
    for task in (klass.hers, klass.live):
        for column, kind in columns:
            _refused(bob, f"UPDATE tasks SET {column} = {_changed(column, kind)} "
                          f"WHERE task_id = '{task}'")
        _refused(bob, f"UPDATE tasks SET video_url = NULL, status = 'failed' WHERE task_id = '{task}'")
        # the upsert every write of veo_nb is: refused on her row whatever it says
        _refused(bob, "INSERT INTO tasks (task_id, status, status_text, download_state, tracked, "
                      "poll_count, request, raw, owner) VALUES "
                      f"('{task}', 'failed', 'failed', 'none', 1, 0, '{{}}', '{{}}', 'bob') "
                      "ON CONFLICT (task_id) DO UPDATE SET status = 'failed', video_url = NULL")
        _refused(bob, f"DELETE FROM tasks WHERE task_id = '{task}'")
    # a claim, as veo_nb takes it, on her live task: no row
    _refused(bob, f"UPDATE tasks SET poller = 'bob', poll_until = 1e12 WHERE task_id = '{klass.live}'")
    # a new task in her name, or his given to her
    _refused(bob, "INSERT INTO tasks (task_id, status, status_text, download_state, tracked, "
                  "poll_count, request, raw, owner) VALUES "
                  "('fake', 'queued', 'queued', 'none', 1, 0, '{}', '{}', 'alice')")
    _refused(bob, f"UPDATE tasks SET owner = 'alice' WHERE task_id = '{klass.his}'")
    assert _snapshot(klass.admin) == before
    # his own task, hers for her, and anyone's for the teacher: every column writable
    for url, task in ((bob, klass.his), (alice, klass.hers), (klass.urls["teacher"], klass.his)):
        for column, kind in columns:
            if column not in ("task_id", "owner", "status"):
                assert _ok(url, f"UPDATE tasks SET {column} = {column} WHERE task_id = '{task}' "
                                "RETURNING 1") == "1", column
        assert _ok(url, f"UPDATE tasks SET label = 'mine' WHERE task_id = '{task}' RETURNING 1") == "1"


_SHARED_WRITES = (
    # the 429 gate: none that freezes everyone, none dropped
    "INSERT INTO services VALUES ('frozen', 1e12)",
    "UPDATE services SET rate_limited_until = 1e12",
    "DELETE FROM services",
    # the header's counts: the database keeps them
    "INSERT INTO tallies VALUES ('completed', 0, 'bob', 100, 100, 0, 0)",
    "UPDATE tallies SET tasks = 0",
    "DELETE FROM tallies",
    # the revision counter: only ever one more
    "UPDATE meta SET value = 0 WHERE name = 'rev'",
    "UPDATE meta SET value = value + 1000 WHERE name = 'rev'",
    "UPDATE meta SET value = value - 1 WHERE name = 'rev'",
    "UPDATE meta SET value = value + 1 WHERE name = 'schema'",
    "UPDATE meta SET name = 'old' WHERE name = 'rev'",
    "INSERT INTO meta VALUES ('mine', 1)",
    "DELETE FROM meta",
    # events: append-only, and only of one's own tasks
    "INSERT INTO events (task_id, kind, observed_at, detail) VALUES ('{hers}', 'note', 0, 'x')",
    "UPDATE events SET detail = 'x'",
    "DELETE FROM events WHERE task_id = '{hers}'",
    # what re-runs reuse: her rows stay hers
    "INSERT INTO reuse VALUES ('cell', 'fox', 1, '{hers}', 0)",
    "UPDATE reuse SET task_id = '{his}'",
    "DELETE FROM reuse",
    # deletions followers hear of: no fake one, none withdrawn
    "INSERT INTO deleted VALUES ('{hers}', (SELECT value FROM meta WHERE name = 'rev'))",
    "INSERT INTO deleted VALUES ('never was', 1)",
    "UPDATE deleted SET rev = 0",
    "DELETE FROM deleted",
)


@pytest.mark.parametrize("sql", _SHARED_WRITES)
def test_a_student_cannot_write_the_shared_tables_against_the_class(klass: Klass, sql: str) -> None:
    before = _snapshot(klass.admin)
    _refused(klass.urls["bob"], sql.format(hers=klass.hers, his=klass.his))
    assert _snapshot(klass.admin) == before


def test_what_a_students_own_work_needs_still_works(klass: Klass) -> None:
    bob = klass.urls["bob"]
    rev = int(_ok(klass.admin, "SELECT value FROM meta WHERE name = 'rev'"))
    assert _ok(bob, "UPDATE meta SET value = value + 1 WHERE name = 'rev' RETURNING value") == \
        str(rev + 1)
    soon = time.time() + 60
    _ok(bob, f"INSERT INTO services VALUES ('emulator gate', {soon}) ON CONFLICT (service) "
             "DO UPDATE SET rate_limited_until = excluded.rate_limited_until")
    _ok(bob, f"INSERT INTO events (task_id, kind, observed_at) VALUES ('{klass.his}', 'note', 0)")
    _ok(bob, f"INSERT INTO reuse VALUES ('cell', 'boat', 0, '{klass.his}', 0)")
    _ok(bob, "DELETE FROM reuse WHERE request = 'boat'")
    # the teacher may set any gate, and change and count anyone's task
    _ok(klass.urls["teacher"], "INSERT INTO services VALUES ('teacher gate', 1e12)")
    assert _ok(klass.urls["teacher"], f"UPDATE tasks SET label = 'seen' WHERE task_id = "
                                      f"'{klass.hers}' RETURNING 1") == "1"


def test_every_table_has_row_level_security_or_no_student_write(klass: Klass) -> None:
    """So that a table added later (a ledger) is covered, or shows here."""
    for table in _tables(klass.admin):
        rls, writes = _ok(klass.admin, f"""SELECT c.relrowsecurity, has_table_privilege('bob', c.oid,
            'INSERT') OR has_table_privilege('bob', c.oid, 'UPDATE') OR has_table_privilege(
            'bob', c.oid, 'DELETE') OR has_table_privilege('bob', c.oid, 'TRUNCATE')
            FROM pg_class c WHERE c.oid = 'public.{table}'::regclass""").split("|")
        assert rls == "t" or writes == "f", table
        assert _ok(klass.admin, f"SELECT has_table_privilege('bob', 'public.{table}', 'SELECT')") == "t"
    # every SECURITY DEFINER function pins its search_path; nobody may add objects
    unpinned = _ok(klass.admin, "SELECT count(*) FROM pg_proc WHERE prosecdef AND NOT "
                                "coalesce(proconfig::text LIKE '%search_path=%', false)")
    assert unpinned == "0"
    assert int(_ok(klass.admin, "SELECT count(*) FROM pg_proc WHERE prosecdef")) > 0
    assert _ok(klass.admin, "SELECT has_schema_privilege('bob', 'public', 'CREATE')") == "f"


def _recount(admin: str) -> str:
    return _ok(admin, "SELECT coalesce(json_agg(r ORDER BY r), '[]') FROM (SELECT status_text || "
                      "'/' || owner || '/' || tasks || '/' || completed AS r FROM tallies "
                      "WHERE tasks <> 0) x"), _ok(
        admin, "SELECT coalesce(json_agg(r ORDER BY r), '[]') FROM (SELECT status_text || '/' || "
               "coalesce(owner, '') || '/' || count(*) || '/' || sum(CASE WHEN status = "
               "'completed' THEN 1 ELSE 0 END) AS r FROM tasks WHERE tracked = 1 "
               "GROUP BY status_text, owner) x")  # type: ignore[return-value]


def test_a_classmates_task_finishes_with_only_the_teachers_tracker(
        class_server: pg_cluster.Cluster, tmp_path: Path) -> None:
    admin = pg_cluster.new_database(class_server.url)
    urls = set_up(admin, "teacher", ["ana", "ben"])
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        ana = Tracker(emu.client(), store=urls["ana"], media_dir=tmp_path / "a", owner="ana")
        task = ana.submit("ana's heron [duration: 300]").id
        ana.close()  # her kernel stops before the video is ready
        ben = Tracker(emu.client(), store=urls["ben"], media_dir=tmp_path / "b", owner="ben")
        assert task in {r.task_id for r in ben.records()}  # he follows her task
        with Tracker(emu.client(), store=urls["teacher"], media_dir=tmp_path / "t",
                     owner="teacher") as teacher:
            done = teacher.wait([task], timeout=120)
            assert done[0].status_text == "completed"
            saved = teacher.record(task)
            assert saved.download_state == "saved" and saved.video_path
            assert Path(saved.video_path).parent == tmp_path / "t"
            until(lambda: ben.record(task).download_state == "saved", timeout=20)
        # ben never asked for her task's claims (nor polled or fetched it): no
        # refusal, no error; his own work goes on
        assert ben.store.stats.claim_attempts == 0
        assert ben.recent_errors() == []
        assert emu.stats.interval_violations == 0
        mine = ben.submit("ben's kite [duration: 121]").id
        ben.wait([mine], timeout=60)
        assert ben.record(mine).download_state == "saved"
        ben.remove([mine], delete=True)
        ben.close()
    assert _ok(admin, f"SELECT count(*) FROM events WHERE task_id = '{task}' AND kind = 'error'") == "0"
    counted, recounted = _recount(admin)
    assert counted == recounted and "ana" in counted and "ben" not in counted


def test_setting_the_class_up_again_upgrades_it(class_server: pg_cluster.Cluster, tmp_path: Path) -> None:
    admin = pg_cluster.new_database(class_server.url)
    urls = set_up(admin, "teacher", ["cleo"])
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(), store=urls["cleo"], media_dir=tmp_path, owner="cleo") as cleo:
        task = cleo.submit("cleo's owl [duration: 121]").id
        cleo.wait([task], timeout=60)
    # tallies and a gate an older class store let a student overwrite
    _ok(admin, "UPDATE tallies SET tasks = 42")
    _ok(admin, "INSERT INTO services VALUES ('frozen', 1e12)")
    urls = set_up(admin, "teacher", ["cleo", "dan"])
    counted, recounted = _recount(admin)
    assert counted == recounted and "cleo" in counted
    gate = float(_ok(admin, "SELECT rate_limited_until FROM services WHERE service = 'frozen'"))
    assert gate <= time.time() + GATE_MAX_S + 60
    _refused(urls["dan"], f"UPDATE tasks SET status = 'failed' WHERE task_id = '{task}'")
    assert _ok(urls["cleo"], f"UPDATE tasks SET label = 'owl' WHERE task_id = '{task}' "
                             "RETURNING owner") == "cleo"
    assert json.loads(_ok(admin, _SNAPSHOT.format("meta")))  # and the store still opens
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(), store=urls["dan"], media_dir=tmp_path / "d", owner="dan") as dan:
        assert dan.record(task).label == "owl"


def test_the_store_api_of_a_student_refuses_a_classmates_task_quietly(klass: Klass) -> None:
    """A claim the database refuses is "someone else's" (no error); a write
    of her row, or a gate that would freeze the class, raises OwnershipError."""
    from dataclasses import replace

    from veo_nb import OwnershipError, TaskStatus
    from veo_nb._retry import MAX_RETRY_AFTER_S
    from veo_nb.store_pg import PostgresStore

    before = _snapshot(klass.admin)
    with PostgresStore(klass.urls["bob"]) as bob:
        now = time.time()
        assert bob.claim_poll(klass.live, "bob:1", now=now, interval=0, until=now + 60) is None
        assert bob.claim_download(klass.hers, "bob:1", now=now, until=now + 60) is False
        hers = bob.get(klass.hers)
        assert hers is not None
        for fields in (None, ("status", "video_url"), ("key_fingerprint",), ("service",)):
            with pytest.raises(OwnershipError):
                bob.write(replace(hers, status=TaskStatus.FAILED, video_url=None,
                                  key_fingerprint="x", service="x"), fields=fields)
        with pytest.raises(OwnershipError):  # a client that would not bound it
            bob.limit_rate("frozen", now + 10 ** 9, horizon=10 ** 9)
        assert _snapshot(klass.admin) == before
        bob.limit_rate("frozen", now + 10 ** 9)  # the store bounds it: no freeze
        assert bob.rate_limited_until("frozen") <= time.time() + MAX_RETRY_AFTER_S
        bob.limit_rate("emulator", now + 60)  # a real 429's wait is shared
        assert bob.rate_limited_until("emulator") == pytest.approx(now + 60)
        # what its engine asks before polling or fetching anything
        assert not bob.may_write("alice") and bob.may_write("bob") and bob.tallies_kept
    with PostgresStore(klass.urls["teacher"]) as teacher:
        assert teacher.may_write("alice") and teacher.tallies_kept
