"""Binder: a fresh environment built from exactly binder/requirements.txt and
binder/postBuild runs the quickstart notebook top to bottom.

This is what mybinder.org does (repo2docker installs requirements.txt, then
runs postBuild from the repository root), minus the container: a new virtual
environment in a temporary folder, a copy of the repository's files, and the
notebook executed by that environment's own ``jupyter nbconvert`` and kernel.
It downloads packages from PyPI and takes a minute or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _repo_files() -> list[str]:
    """The tracked files (as in the working tree): what Binder would clone."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "-z"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and (REPO / p).is_file()]


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}",
            pytrace=False,
        )


def test_binder_environment_runs_the_quickstart(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files Binder would see")

    # 1. The repository as Binder would clone it.
    checkout = tmp_path / "repo"
    for rel in _repo_files():
        dest = checkout / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    assert (checkout / "binder" / "requirements.txt").is_file()
    assert (checkout / "binder" / "postBuild").is_file()
    assert (checkout / "notebooks" / "01_quickstart.ipynb").is_file()

    # 2. A fresh environment from exactly binder/requirements.txt + postBuild.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("VEO_", "PYTHON", "JUPYTER", "VIRTUAL_ENV", "PIP_REQUIRE", "MPL"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter" / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter" / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter" / "runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        MPLCONFIGDIR=str(tmp_path / "mpl"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
          "-r", "binder/requirements.txt"], cwd=checkout, env=env, timeout=600)
    _run(["bash", "binder/postBuild"], cwd=checkout, env=env, timeout=600)

    # The package comes from the checkout, not from anywhere else.
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", "import veo_nb, sys; print(veo_nb.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    assert Path(probe.stdout.strip()).resolve().is_relative_to(checkout.resolve()), probe.stdout

    # 3. The quickstart, executed by that environment's nbconvert and kernel,
    #    from the notebooks folder (as Binder's labpath opens it).
    notebooks = checkout / "notebooks"
    out = tmp_path / "executed.ipynb"
    _run([str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
          "--ExecutePreprocessor.timeout=600",
          "--ExecutePreprocessor.kernel_name=python3",
          "--output", str(out), "01_quickstart.ipynb"],
         cwd=notebooks, env=env, timeout=900)

    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    mimes = {m for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []) for m in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes, mimes
