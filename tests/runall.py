"""Run All again and again in one kernel, as a rehearsing teacher does: the
quickstart notebook executed N times by nbclient in one kernel, in demo mode
with real-size videos, measuring after each run what the kernel holds.

Used by tests/test_notebooks.py (the figures of the lifecycle issue) and by
bench P7. Nothing is mocked: a real kernel, the embedded emulator, real files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "01_quickstart.ipynb"

#: What the probe cell prints after each run: open widgets (every model the
#: kernel holds, layouts and styles included), the kernel's resident memory
#: in MB, and the poller threads per store.
PROBE = """
import json, threading
from ipywidgets.widgets import widget as _w
_pollers = [t.name for t in threading.enumerate() if t.name.startswith("veo_nb-poller:")]
with open("/proc/self/statm") as _f:
    _rss = int(_f.read().split()[1]) * __import__("os").sysconf("SC_PAGE_SIZE") / 2**20
print("PROBE " + json.dumps({"widgets": len(_w._instances), "rss_mb": _rss,
                             "pollers": _pollers}))
"""

#: Finished tasks of an earlier session in the quickstart's history, so the
#: panel's first page is full from the first run on (a rehearsing teacher's
#: history is never empty): then runs differ only by what they leave behind.
SEED = """
from veo_nb import TaskRecord, TaskStatus
from veo_nb.store import Store
from veo_nb.records import utcnow
with Store("veo_nb_data/quickstart.sqlite") as _store:
    for _i in range(24):
        _store.save(TaskRecord(f"vgen_earlier{_i:04d}", prompt=f"an earlier take {_i}",
                               status=TaskStatus.FAILED, status_text="failed",
                               error="from an earlier session", first_seen_at=utcnow()))
"""


@dataclass(frozen=True)
class Probe:
    """What the kernel held after one run."""

    widgets: int
    rss_mb: float
    pollers: list[str]


def _client(folder: Path, video_size: str, time_scale: float, timeout: float):
    """An nbclient client of a copy of the quickstart in ``folder``, and the
    demo-mode environment for its kernel."""
    from nbclient import NotebookClient

    work = folder / "notebooks"
    shutil.copytree(REPO / "notebooks", work,
                    ignore=shutil.ignore_patterns("veo_nb_data", ".ipynb_checkpoints"))
    nb = nbformat.read(QUICKSTART, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEO_")}
    env.update(VEO_DEMO="1", VEO_DEMO_VIDEO_SIZE=video_size, VEO_DEMO_FAILURE_RATE="0",
               VEO_DEMO_TIME_SCALE=str(time_scale), MPLBACKEND="agg")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    return client, env


def executed_size(folder: Path, *, video_size: str = "realistic",
                  time_scale: float = 0.02) -> int:
    """Bytes of the quickstart executed once by nbclient, outputs and saved
    widget state included (what a notebook saved after a run weighs)."""
    client, env = _client(folder, video_size, time_scale, 600)
    client.execute(env=env)
    return len(nbformat.writes(client.nb).encode())


def run_all(times: int, folder: Path, *, video_size: str = "realistic",
            time_scale: float = 0.02, timeout: float = 600) -> list[Probe]:
    """Execute the quickstart ``times`` times in one kernel, from a copy of
    notebooks/ in ``folder``; return a probe after each run."""
    client, env = _client(folder, video_size, time_scale, timeout)
    nb = client.nb
    probes: list[Probe] = []
    with client.setup_kernel(env=env):
        _run(client, SEED)
        for _ in range(times):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    # as a frontend does when it runs a cell again: its old outputs,
                    # and their display ids, are gone (nbclient keeps the ids)
                    client.clear_display_id_mapping(index)
                    client.execute_cell(cell, index)
            outputs = _run(client, PROBE)
            line = next(o["text"] for o in outputs if "PROBE " in o.get("text", ""))
            probes.append(Probe(**json.loads(line.split("PROBE ", 1)[1])))
    return probes


def _run(client, source: str) -> list[dict]:
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1)
    finally:
        client.nb.cells.pop()
    return cell.outputs
