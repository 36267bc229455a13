"""A class on a real JupyterHub (issue #21), end to end.

A PostgreSQL server that asks every role for its password; ``veo-nb class
setup`` makes it a class store (a teacher, three students); a hub (dummy
authenticator, local-process spawner, npm's configurable-http-proxy) whose
``jupyterhub_config.py`` ends with the very lines the set-up command printed,
so each server's environment holds its user's own database role. Every
server shares one API key (of an emulator run by the test).

The teacher logs in through the hub's login page in Chromium and opens the
class dashboard (``notebooks/04_class_dashboard.ipynb``) with the server's
Voilà. Each student runs the classroom notebook (``02_classroom_demo``) in
their own kernel on their own server, through the hub's API. The dashboard's
rows appear live, each with its student, and its counts agree with them;
every task is polled within the 30 s rule and each video fetched once.
A student's attempt to erase a classmate's task fails at the database
(through veo_nb and through plain SQL with their own credentials); the
teacher's succeeds, and the dashboard follows.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from chromium import new_page
from hub import Hub, start_hub
from panel_page import JS_ROWS_BY_OWNER, class_counts, wait_for_panel
from servers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
TEACHER, STUDENTS = "ms_lee", ("ana", "ben", "chloe")
SCALE = 0.02  # tasks take 2.4-6 s; one poll per task every 0.6 s at most


def _code_cells(name: str) -> list[str]:
    notebook = json.loads((REPO / "notebooks" / name).read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def _set_up_class(tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Any, str, str]:
    """A password-checking server made a class store by the set-up command:
    the cluster, the teacher's store URL, and the lines it says to add to
    ``jupyterhub_config.py``."""
    import pg_cluster
    from veo_nb.cli import main

    cluster = pg_cluster.start_cluster(pg_cluster.require_postgres())
    try:
        admin = pg_cluster.new_database(cluster.url)
        credentials = tmp / "veo_nb_class.json"
        assert main(["class", "setup", "--store", admin, "--teacher", TEACHER,
                     "--students", ",".join(STUDENTS), "--credentials", str(credentials)]) == 0
        said = capsys.readouterr().out
        hub_lines = said.split("Add to jupyterhub_config.py:", 1)[1].strip()
        cluster.require_passwords()
        urls = json.loads(credentials.read_text())
    except BaseException:
        cluster.stop()
        raise
    return cluster, urls[TEACHER], hub_lines


def test_a_class_on_jupyterhub(tmp_path: Path, browser: Any,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    from veo_nb.emulator import Emulator

    began = time.monotonic()
    cluster, teacher_url, hub_lines = _set_up_class(tmp_path, capsys)
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        shared_key = {"VEO_API_KEY": emu.api_key, "VEO_BASE_URL": emu.base_url,
                      "VEO_TIME_SCALE": str(SCALE)}
        hub = start_hub(tmp_path / "hub", environment=shared_key, admin_lines=hub_lines,
                        admin=TEACHER)
        page = None
        try:
            for user in (TEACHER, *STUDENTS):
                hub.spawn(user)
            spawned = time.monotonic()
            # each server holds its own user's role, from the hub's spawner environment
            for user in STUDENTS:
                said = hub.kernel(user).run(
                    "import os, veo_nb\n"
                    "from urllib.parse import urlsplit\n"
                    "print(urlsplit(os.environ['VEO_NB_STORE']).username, "
                    "veo_nb.tracker.default_owner())")
                assert said.split() == [user, user], said

            page = new_page(browser)
            _teacher_opens_the_dashboard(hub, page)
            ids = _students_run_the_classroom_notebook(hub)
            rows = wait_for(lambda: (r := page.evaluate(JS_ROWS_BY_OWNER)) and sorted(r) == sorted(
                STUDENTS) and all(r[s] == ["completed"] * len(ids[s]) for s in STUDENTS) and r,
                timeout=120, interval=0.5, what="every student's rows, completed, on the dashboard")
            counts = wait_for(lambda: class_counts(page, "completed"), timeout=60,
                              what="counts per student that agree with the dashboard's rows")
            assert {s: counts[s]["completed"] for s in STUDENTS} == {
                s: len(ids[s]) for s in STUDENTS}, (counts, ids)
            assert emu.stats.interval_violations == 0
            fetched = sorted(r.path.split("/")[2] for r in emu.stats.media_log
                             if r.method == "GET" and r.status in (200, 206))
            assert fetched == sorted(i for s in STUDENTS for i in ids[s])  # each video once
            with psycopg.connect(teacher_url) as conn:  # each re-run would reuse its own
                assert sorted(conn.execute("SELECT task_id FROM reuse").fetchall()) == sorted(
                    (i,) for s in STUDENTS for i in ids[s])

            victim = ids["ben"][0]
            _a_student_cannot_erase_a_classmates_task(hub, victim)
            with psycopg.connect(teacher_url) as conn:  # still there, in the class's store
                assert conn.execute("SELECT owner FROM tasks WHERE task_id = %s",
                                    (victim,)).fetchone() == ("ben",)
            erased = hub.kernel(TEACHER).run(
                "import veo_nb\n"
                f"print(veo_nb.Tracker().remove([{victim!r}], delete=True))")
            assert erased.split()[-1] == "1", erased
            with psycopg.connect(teacher_url) as conn:
                assert conn.execute("SELECT count(*) FROM tasks WHERE task_id = %s",
                                    (victim,)).fetchone() == (0,)
            wait_for(lambda: class_counts(page) and page.evaluate(JS_ROWS_BY_OWNER)["ben"] == [
                "completed"] * (len(ids["ben"]) - 1), timeout=60,
                what="the dashboard to follow the teacher's erasure")
            print(f"hub class: {rows}; servers spawned in {spawned - began:.0f} s, "
                  f"all done in {time.monotonic() - began:.0f} s; polls "
                    f"{emu.stats.polls} for {len(emu.task_ids())} tasks")
        except BaseException:
            print(hub.log())
            raise
        finally:
            if page is not None:
                page.context.close()
            hub.stop()
            cluster.stop()


def _teacher_opens_the_dashboard(hub: Hub, page: Any) -> None:
    """The teacher logs in on the hub's page and opens the dashboard as a
    Voilà app on their own server; no student has a task yet."""
    dashboard = json.loads((REPO / "notebooks" / "04_class_dashboard.ipynb").read_text())
    hub.put_notebook(TEACHER, "04_class_dashboard.ipynb", dashboard)
    app = f"/user/{TEACHER}/voila/render/04_class_dashboard.ipynb"
    page.goto(f"{hub.url}/hub/login?next={quote(app)}")
    page.fill("input[name=username]", TEACHER)
    page.fill("input[name=password]", hub.password)
    page.click("[type=submit]")
    page.wait_for_url(f"**{app}*")
    wait_for_panel(page)
    assert page.evaluate(JS_ROWS_BY_OWNER) == {}
    assert "No tasks yet" in page.inner_text("body")


def _students_run_the_classroom_notebook(hub: Hub) -> dict[str, list[str]]:
    """Each student opens the classroom notebook on their server and runs
    every cell, all at once; the ids of each one's own tasks."""
    notebook = json.loads((REPO / "notebooks" / "02_classroom_demo.ipynb").read_text())
    cells = _code_cells("02_classroom_demo.ipynb")
    ids: dict[str, list[str]] = {}
    failures: list[BaseException] = []

    def run(student: str) -> None:
        try:
            hub.put_notebook(student, "02_classroom_demo.ipynb", notebook)
            kernel = hub.kernel(student, "02_classroom_demo.ipynb")
            for cell in cells:
                kernel.run(cell)
            said = kernel.run("print(*sorted(r.task_id for r in tracker.records() "
                              "if r.owner == tracker.owner))")
            ids[student] = said.split()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in STUDENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    if failures:
        raise failures[0]
    assert sorted(ids) == sorted(STUDENTS) and all(len(v) == 2 for v in ids.values()), ids
    return ids


def _a_student_cannot_erase_a_classmates_task(hub: Hub, victim: str) -> None:
    """Ana, in a new kernel of hers: veo_nb refuses before touching anything;
    forced past veo_nb, and with plain SQL on her own credentials, the
    database refuses or finds nothing of hers to delete."""
    said = hub.kernel("ana").run(f"""
import os, psycopg, veo_nb
tracker = veo_nb.Tracker()
for others in (False, True):
    try:
        tracker.remove([{victim!r}], delete=True, others=others)
    except veo_nb.OwnershipError as exc:
        print("refused:", exc)
with psycopg.connect(os.environ["VEO_NB_STORE"]) as conn:
    print("deleted", conn.execute("DELETE FROM tasks WHERE task_id = %s", ({victim!r},)).rowcount)
    print("updated", conn.execute("UPDATE tasks SET owner = 'ana', status = 'failed' "
                                  "WHERE task_id = %s", ({victim!r},)).rowcount)
""")
    lines = said.splitlines()
    assert "belong to ben" in lines[0], said  # veo_nb, before anything is touched
    assert lines[1].startswith("refused: the PostgreSQL store"), said  # the database
    # row-level security: a classmate's row is invisible to her DELETE and UPDATE
    assert "deleted 0" in lines and "updated 0" in lines, said
