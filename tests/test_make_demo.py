"""``make demo``'s script: JupyterLab on the quickstart's own URL, demo mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_demo_prints_and_serves_the_quickstarts_own_url(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "browser"))
    from jlab_helpers import free_port, lab_env

    env = lab_env(tmp_path)
    env.update(VEO_DEMO_PORT=str(free_port()), BROWSER="true",  # "opens" it with /bin/true
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert "offline" in proc.stdout.readline()
        url = proc.stdout.readline().strip()
        assert "/lab/tree/01_quickstart.ipynb?token=" in url, url
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    page = resp.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo server never answered"
                time.sleep(0.5)
        assert resp.status == 200 and "JupyterLab" in page
        api = url.replace("/lab/tree/01_quickstart.ipynb", "/api/contents/01_quickstart.ipynb")
        with urllib.request.urlopen(api, timeout=10) as resp:
            assert resp.status == 200  # served from notebooks/, the quickstart at its root
        kernels = url.split("/lab/")[0] + "/api/kernelspecs?" + url.split("?")[1]
        with urllib.request.urlopen(kernels, timeout=10) as resp:
            assert b"python3" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
