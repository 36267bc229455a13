"""The notebooks in notebooks/ run top to bottom on a real kernel, offline, in
demo mode, and show the live panel; the committed files carry no outputs.

Each notebook runs from a temporary copy of notebooks/ (so its veo_nb_data/
folder lands there, not in the repository) with no VEO_* variable set (the
suite's conftest removes them), so ``veo_nb.connect()`` starts the embedded
emulator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
#: Every notebook, translations (notebooks/<lang>/) included.
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts and "veo_nb_data" not in p.parts)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO / "notebooks").with_suffix("")) for p in paths]


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_classroom_demo.ipynb",
            "03_history_analysis.ipynb"} <= names, names
    assert (REPO / "notebooks" / "zh" / "01_quickstart.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_is_clean(path: Path) -> None:
    """No outputs, execution counts or saved widget state (base64 videos) in git."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} of {path.name} has outputs"
            assert cell.execution_count is None, f"cell {i} of {path.name} has a count"
    assert "widgets" not in nb.metadata, f"{path.name} carries saved widget state"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "/work/shared" not in path.read_text()


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    work = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", work,
                    ignore=shutil.ignore_patterns("veo_nb_data", ".ipynb_checkpoints"))
    before = sorted(p.name for p in (REPO / "notebooks").iterdir())

    assert "VEO_API_KEY" not in os.environ  # removed by tests/conftest.py
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))

    copy = work / path.relative_to(REPO / "notebooks")
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(copy.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    views = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert views, f"{path.name}: no widget view among the outputs (the panel was not shown)"
    if path.parent.name == "zh":  # the panel, and the tables after it, in Chinese
        assert any("veo_nb 面板" in o["data"].get("text/plain", "") for o in views), views
        assert any("成功率" in o.get("data", {}).get("text/html", "") for o in outputs)
    if path.name != "01_quickstart.ipynb" and importlib.util.find_spec("matplotlib"):
        assert any("image/png" in o.get("data", {}) for o in outputs), (
            f"{path.name}: matplotlib is installed but no plot was drawn")
    stderr = "".join(o.get("text", "") for o in outputs
                     if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr, stderr

    # The notebook's data went to the temporary copy, not the repository.
    assert sorted(p.name for p in (REPO / "notebooks").iterdir()) == before
    assert (copy.parent / "veo_nb_data").is_dir(), "expected the notebook's data next to it"

    # Keep the executed copy for a person to look at when something is off.
    (tmp_path / f"executed_{path.name}").write_text(json.dumps(nb, indent=1))


def test_notebooks_match_their_generator() -> None:
    """notebooks/*.ipynb are written by scripts/make_notebooks.py: edit the cells
    there and run it, so the committed files stay clean and reviewable."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_notebooks.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_run_all_ten_times_in_one_kernel_stays_flat(tmp_path: Path) -> None:
    """A teacher rehearsing: the quickstart, Run All ten times in one kernel,
    with real-size videos. Six runs once left 6 live panels, 10× the widgets
    and 600 MB more memory."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from runall import run_all

    probes = run_all(10, tmp_path)
    first, last = probes[0], probes[-1]
    print(f"\nwidgets {[p.widgets for p in probes]}\nrss MB {[round(p.rss_mb) for p in probes]}")
    assert last.widgets <= 1.2 * first.widgets
    assert last.rss_mb - first.rss_mb <= 60
    for probe in probes:  # one poller per store, whatever the number of trackers made
        assert len(probe.pollers) == len(set(probe.pollers)) and len(probe.pollers) == 1
    videos = list((tmp_path / "notebooks" / "veo_nb_data").rglob("*.mp4"))
    assert len(videos) >= 10 * 4 and min(v.stat().st_size for v in videos) >= 3_000_000


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_executed_quickstart_stays_small_with_real_size_videos(tmp_path: Path) -> None:
    """nbclient saves widget state with the outputs: with 10 MB videos the
    executed quickstart weighed 54 MB; no video's bytes go into it now."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from runall import executed_size

    assert executed_size(tmp_path) <= 2_000_000
