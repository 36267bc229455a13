"""A class on one PostgreSQL history (issue #21): a student reads the whole
class's history but changes or erases only their own tasks, and the database
itself refuses the rest, through veo_nb and through psql; the teacher manages
everything; with one shared key, each task is polled by its owner's processes
(the teacher's too) and followed by the others (tests/test_class_rls.py has
every table and column).

A dedicated throwaway server (`class_server`): roles are server-wide."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import veo_nb
from polling import until
from veo_nb import OwnershipError, Tracker
from veo_nb._class import set_up
from veo_nb.emulator import Emulator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SCALE = 0.01


def _psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, timeout=60, check=False)


def test_without_a_class_set_up_veo_nb_refuses_a_classmates_tasks(class_server, tmp_path: Path) -> None:
    import pg_cluster

    url = pg_cluster.new_database(class_server.url)
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        alice = Tracker(emu.client(), store=url, media_dir=tmp_path / "a", owner="alice")
        ids = [alice.submit(f"alice's fox {i} [duration: 121]").id for i in range(2)]
        alice.wait(ids, timeout=60)
        alice.close()
        with Tracker(emu.client(), store=url, media_dir=tmp_path / "b", owner="bob") as bob:
            mine = bob.submit("bob's boat [duration: 121]").id
            bob.wait([mine], timeout=60)
            with pytest.raises(OwnershipError, match="belong to alice"):
                bob.remove(ids + [mine], delete=True)
            assert {r.task_id for r in bob.store.records()} >= {*ids, mine}  # nothing touched
            view = veo_nb.panel(bob)
            try:
                view.manage.delete.value = True
                view.manage.clear_finished()
                assert "of yours (2 of classmates' stay)" in view.confirm.question.value
                view.confirm.yes.click()
                assert "removed 1 of yours finished task(s)" in view.message.value
                assert "2 of classmates&#x27; left as they are" in view.message.value
            finally:
                view.close()
            assert {r.task_id for r in bob.store.records()} == set(ids)
            assert bob.remove(ids, others=True) == 2  # a teacher without a class set-up


def test_the_database_refuses_a_student_and_lets_the_teacher_manage(class_server, tmp_path: Path) -> None:
    import pg_cluster

    admin = pg_cluster.new_database(class_server.url)
    urls = set_up(admin, "teacher", ["alice", "bob"])
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        key = emu.client()  # one key shared by the whole class
        alice = Tracker(key, store=urls["alice"], media_dir=tmp_path / "a", owner="alice")
        ids = [alice.submit(f"alice's fox {i} [duration: {121 + 20 * i}]").id for i in range(3)]
        bob = Tracker(emu.client(), store=urls["bob"], media_dir=tmp_path / "b", owner="bob")
        # bob follows alice's tasks; her process polls and fetches them, never his
        bob.track_many(ids)
        done = bob.wait(ids, timeout=120)
        assert bob.store.stats.claim_attempts == 0 and bob.recent_errors() == []
        assert all(t.status_text in ("completed", "failed") for t in done)
        final = {t.id: t.status_text for t in done}
        until(lambda: {r.task_id: r.status_text for r in alice.records()} == final, timeout=10)
        assert emu.stats.interval_violations == 0
        gets = [r for r in emu.stats.media_log if r.method == "GET" and r.status in (200, 206)]
        completed = [t.id for t in done if t.status_text == "completed"]
        assert sorted(r.path.split("/")[2] for r in gets) == sorted(completed)  # each once
        with pytest.raises(OwnershipError):
            bob.remove(ids[:1], delete=True, others=True)  # refused by PostgreSQL itself
        with pytest.raises(OwnershipError):
            bob.remove(ids[1:2], others=True)  # hiding too
        with pytest.raises(OwnershipError):  # under the API: row-level security keeps her row
            bob.store.delete(ids[:1])
        assert {r.task_id for r in alice.store.records()} == set(ids)
        assert alice.overview().total == len(ids)  # and the header's tallies still count it
        alice.close()
        bob.close()
    for sql in (f"UPDATE tasks SET label = 'mine now' WHERE task_id = '{ids[0]}'",
                f"UPDATE tasks SET owner = 'bob' WHERE task_id = '{ids[0]}'",
                f"UPDATE tasks SET tracked = 0 WHERE task_id = '{ids[0]}'"):
        out = _psql(urls["bob"], sql)  # row-level security: none of hers are his to change
        assert out.returncode == 0 and "UPDATE 0" in out.stdout, (sql, out.stdout, out.stderr)
    for table in ("tasks", "events"):  # row-level security: none of hers are his to delete
        out = _psql(urls["bob"], f"DELETE FROM {table} WHERE task_id = '{ids[0]}'")
        assert out.returncode == 0 and "DELETE 0" in out.stdout, out
    out = _psql(urls["bob"], f"SELECT count(*) FROM events WHERE task_id = '{ids[0]}'")
    assert int(out.stdout.split()[2]) > 0  # and he reads them all
    out = _psql(urls["bob"], "TRUNCATE tasks")
    assert out.returncode != 0 and "permission denied" in out.stderr
    out = _psql(urls["alice"], f"UPDATE tasks SET label = 'my fox' WHERE task_id = '{ids[0]}'")
    assert out.returncode == 0, out.stderr
    # what alice's re-runs reuse: hers to record; bob can neither drop nor redirect it
    out = _psql(urls["alice"], "INSERT INTO reuse (cell, request, n, task_id, created_at) "
                               f"VALUES ('cell', 'fox', 0, '{ids[0]}', 0)")
    assert out.returncode == 0, out.stderr
    for sql, said in (("DELETE FROM reuse", "DELETE 0"),
                      (f"UPDATE reuse SET task_id = '{ids[1]}'", "UPDATE 0")):
        out = _psql(urls["bob"], sql)
        assert out.returncode == 0 and said in out.stdout, (sql, out)
    out = _psql(urls["bob"], "INSERT INTO reuse (cell, request, n, task_id, created_at) "
                             f"VALUES ('cell', 'fox', 1, '{ids[1]}', 0)")
    assert out.returncode != 0 and "row-level security" in out.stderr, out
    with Emulator(time_scale=SCALE, video_size="sample") as emu:
        with Tracker(emu.client(), store=urls["teacher"], media_dir=tmp_path / "t",
                     owner="teacher") as teacher:
            assert teacher.remove(ids[:2], delete=True) == 2
            assert teacher.overview().total == 1
            assert {r.task_id for r in teacher.store.records(tracked_only=False)} == {ids[2]}


def test_the_setup_command_writes_private_credentials_and_the_hub_lines(
        class_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import stat

    import pg_cluster
    from veo_nb.cli import main

    admin = pg_cluster.new_database(class_server.url)
    creds = tmp_path / "class.json"
    assert main(["class", "setup", "--store", admin, "--teacher", "ms_lee",
                 "--students", "ana,ben", "--credentials", str(creds)]) == 0
    said = capsys.readouterr().out
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    urls = json.loads(creds.read_text())
    assert set(urls) == {"ms_lee", "ana", "ben"}
    assert "c.Spawner.environment.update" in said and str(creds) in said
    assert not any(u.split("@")[0].split(":")[-1] in said for u in urls.values())  # no password
    with Emulator(time_scale=SCALE, video_size="sample") as emu, \
            Tracker(emu.client(), store=urls["ana"], media_dir=tmp_path / "v", owner="ana") as ana:
        ana.submit("ana's first video [duration: 121]")
        assert [r.owner for r in ana.records()] == ["ana"]
    assert main(["class", "setup", "--teacher", "x", "--students", "y"]) == 2  # no store given
