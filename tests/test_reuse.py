"""Re-running a notebook does not pay again (issue #19): the quickstart and
the classroom notebooks run 5 times in one kernel by nbclient, then again
after a kernel restart, against an emulator that counts creates, as with a
real key. Exactly one run's worth of tasks is created."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from veo_nb.emulator import Emulator

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.01

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _runs(nb: nbformat.NotebookNode, folder: Path, emu: Emulator, times: int,
          *, env: dict[str, str] | None = None) -> tuple[list[int], list[str]]:
    """Execute ``nb`` ``times`` times in one kernel, then once more after a
    kernel restart; the emulator's create count after each run, and every
    printed line of the last two runs."""
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("VEO_")}
    kernel_env.update(VEO_API_KEY=emu.api_key, VEO_BASE_URL=emu.base_url,
                      VEO_TIME_SCALE=str(SCALE), MPLBACKEND="agg", **(env or {}))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    counts: list[int] = []
    printed: list[str] = []

    def run_all() -> None:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.clear_display_id_mapping(index)
                client.execute_cell(cell, index)
        counts.append(emu.stats.creates)
        printed.extend(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.outputs)

    with client.setup_kernel(env=kernel_env):
        for _ in range(times):
            run_all()
        run_sync(client.km.restart_kernel)(now=True, newports=False)
        run_sync(client.kc.wait_for_ready)(timeout=60)
        run_all()
    return counts, printed


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["01_quickstart", "02_classroom_demo"])
def test_running_a_notebook_again_and_again_creates_one_runs_worth(tmp_path: Path,
                                                                   name: str) -> None:
    work = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", work,
                    ignore=shutil.ignore_patterns("veo_nb_data", ".ipynb_checkpoints"))
    nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        counts, printed = _runs(nb, work, emu, 5)
    first = counts[0]
    assert first > 0 and counts == [first] * 6, counts
    assert any("reused vgen_" in text and "new=True" in text for text in printed)


@pytest.mark.timeout(600)
def test_the_same_prompt_twice_in_one_cell_is_two_tasks_once(tmp_path: Path) -> None:
    """Identical submits within one run are all created (the same prompt
    gives different videos); a re-run reuses both; new=True creates."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import veo_nb\n"
                                  "tracker = veo_nb.Tracker(store='h.sqlite', media_dir='v')"),
        nbformat.v4.new_code_cell("a = tracker.submit('the same fox [duration: 121]')\n"
                                  "b = tracker.submit('the same fox [duration: 121]')\n"
                                  "print('ids', a.id, b.id, a.id != b.id)"),
    ]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        counts, printed = _runs(nb, tmp_path, emu, 3)
        ids = {line.split()[1:3].__str__() for text in printed for line in text.splitlines()
               if line.startswith("ids ")}
    assert counts == [2, 2, 2, 2], counts
    assert len(ids) == 1  # the same two tasks every run, restart included


@pytest.mark.timeout(600)
def test_demo_mode_creates_again_and_says_a_real_key_would_have_reused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import veo_nb\n"
        "tracker = veo_nb.Tracker(veo_nb.connect(demo=True, quiet=True), store='h.sqlite')\n"
        "t = tracker.submit('a demo fox [duration: 121]')")]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        _, printed = _runs(nb, tmp_path, emu, 2)
    assert any("with a real key" in text and "would have been reused" in text
               for text in printed), printed


@pytest.mark.timeout(600)
def test_a_classmate_running_the_same_notebook_makes_tasks_of_their_own(tmp_path: Path) -> None:
    """One history, one key, the same notebook (the same cells): Ben's run
    creates his own task instead of reusing Ana's, and each one's re-runs
    reuse their own."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import veo_nb\n"
        "tracker = veo_nb.Tracker(store='h.sqlite', media_dir='v')\n"
        "t = tracker.submit('the class fox [duration: 121]')\n"
        "print('mine', t.id, tracker.record(t.id).owner)")]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        ana, said_ana = _runs(nb, tmp_path, emu, 2, env={"VEO_NB_OWNER": "ana"})
        ben, said_ben = _runs(nb, tmp_path, emu, 2, env={"VEO_NB_OWNER": "ben"})
    assert ana == [1, 1, 1] and ben == [2, 2, 2], (ana, ben)

    def mine(printed: list[str]) -> set[tuple[str, str]]:
        return {tuple(line.split()[1:3]) for text in printed for line in text.splitlines()
                if line.startswith("mine ")}
    (ana_id, ana_owner), = mine(said_ana)
    (ben_id, ben_owner), = mine(said_ben)
    assert (ana_owner, ben_owner) == ("ana", "ben") and ana_id != ben_id
