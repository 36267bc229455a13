"""P9 on a real JupyterHub: the class of ``bench_postgres`` (eight students,
one teacher, one PostgreSQL store, one API key), each person now a server
spawned by the hub with their own database role (``veo-nb class setup``;
the hub set up as ``tests/browser/test_hub_class.py`` does).

The teacher's kernel follows the class's store from before the first task;
then each student's kernel submits and follows PER_STUDENT tasks, all eight
at once, through the hub's API. Figures: requests per task of the class
against one bare student process on a plain store (the P9 baseline, target
≤ 1.1), interval violations at the emulator (target 0), and how long after a
student recorded a final status the teacher's kernel saw it (p95, target
≤ 2 s). ``bench_postgres`` reports the same class as bare processes.

Without the PostgreSQL server binaries or the hub's proxy (``make test``
installs it) the figures are reported as missing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

from bench._common import BenchResult
from bench.bench_postgres import PER_STUDENT, SCALE, STUDENTS, _p95
from veo_nb._class import set_up
from veo_nb.cli import HUB_CONFIG
from veo_nb.emulator import Emulator

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "browser"))

import pg_cluster  # noqa: E402
from mp_helpers import Child  # noqa: E402

#: The teacher's kernel: note when each task is first seen finished.
FOLLOW = """
import json, time, veo_nb
seen = {}
dashboard = veo_nb.Tracker()
dashboard.on_change(lambda task: task.is_terminal and seen.setdefault(task.id, time.time()))
"""
#: A student's kernel: submit, wait, say when each task was recorded finished.
SUBMIT = f"""
import json, veo_nb
tracker = veo_nb.Tracker()
ids = [tracker.submit(f"p9 hub {{i}} [duration: {{125 + (i * 37) % 160}}]").id
       for i in range({PER_STUDENT})]
tracker.wait(ids, timeout=600)
print(json.dumps({{i: tracker.record(i).finished_at.timestamp() for i in ids}}))
"""


def _missing(why: str) -> list[BenchResult]:
    return [BenchResult("P9 on JupyterHub", float("nan"), "", detail=f"not run: {why}")]


def run() -> list[BenchResult]:
    import hub as hubs

    bin_dir = pg_cluster.find_bin()
    if bin_dir is None:
        return _missing("no PostgreSQL server (apt-get install -y postgresql)")
    if not hubs.PROXY.is_file():
        return _missing(f"no configurable-http-proxy at {hubs.PROXY} (make test installs it)")
    students = [f"student{n}" for n in range(1, STUDENTS + 1)]
    cluster = pg_cluster.start_cluster(bin_dir)
    try:
        with Emulator(time_scale=SCALE, failure_rate=0.0, seed=9, video_size="sample") as emu, \
                tempfile.TemporaryDirectory() as tmp:
            before = emu.stats.polls
            alone = Child.start(emu, pg_cluster.new_database(cluster.url), Path(tmp) / "one",
                                f"submit:{PER_STUDENT}", timeout=300)
            alone.result(timeout=600)
            single = (emu.stats.polls - before) / PER_STUDENT
            urls = set_up(pg_cluster.new_database(cluster.url), "teacher", students)
            credentials = Path(tmp) / "veo_nb_class.json"
            credentials.write_text(json.dumps(urls))
            hub = hubs.start_hub(Path(tmp) / "hub", admin="teacher",
                                 admin_lines=HUB_CONFIG.format(path=str(credentials)),
                                 environment={"VEO_API_KEY": emu.api_key,
                                              "VEO_BASE_URL": emu.base_url,
                                              "VEO_TIME_SCALE": str(SCALE)})
            try:
                for user in ("teacher", *students):
                    hub.spawn(user)
                teacher = hub.kernel("teacher")
                teacher.run(FOLLOW)
                polls = emu.stats.polls
                finished: dict[str, float] = {}
                failures: list[BaseException] = []

                def student(name: str) -> None:
                    try:
                        finished.update(json.loads(hub.kernel(name).run(SUBMIT, timeout=900)))
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        failures.append(exc)

                threads = [threading.Thread(target=student, args=(s,)) for s in students]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if failures:
                    raise failures[0]
                shared = (emu.stats.polls - polls) / len(finished)
                teacher.run(f"dashboard.wait({sorted(finished)!r}, timeout=120, downloads=False)")
                seen = json.loads(teacher.run("print(json.dumps(seen))"))
            finally:
                hub.stop()
            violations = emu.stats.interval_violations
    finally:
        cluster.stop()
    staleness = [seen[i] - at for i, at in finished.items()]
    p95 = _p95(staleness)
    tasks = len(finished)
    return [
        BenchResult("P9 on JupyterHub: requests per task, 8 students vs 1", shared,
                    "requests/task", baseline=single, ratio=shared / single, target=1.1,
                    detail=f"{tasks} tasks from 8 hub-spawned servers on a class store; one "
                           f"bare student {single:.2f}"),
        BenchResult("P9 on JupyterHub: interval violations", violations, "polls",
                    baseline=1.0, ratio=float(violations), target=0.0,
                    detail=f"polls the emulator answered 429 for coming sooner than "
                           f"{30 * SCALE:.1f} s"),
        BenchResult("P9 on JupyterHub: dashboard staleness p95", p95, "s", baseline=2.0,
                    ratio=p95 / 2.0, target=1.0,
                    detail=f"{tasks} tasks, seen by the teacher's kernel; max "
                           f"{max(staleness):.2f} s; target p95 <= 2 s"),
    ]
