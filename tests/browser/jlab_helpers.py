"""Helpers for the real-browser tests: a throw-away JupyterLab server and the
few page actions the tests need (open a notebook, wait for the kernel, run all).

Nothing here reads the user's home or Jupyter settings: every Jupyter
directory and HOME point into a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where Debian's Chromium lives; VEO_NB_CHROMIUM overrides.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Chromium flags that were seen to work on these machines (root, no GPU,
#: no network beyond localhost needed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
]

#: Env vars of the user that must not leak into the test server's kernel.
_DROP_ENV = ("VEO_API_KEY", "VEO_BASE_URL", "VEO_DEMO", "VEO_TIME_SCALE", "VEO_LOG")


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when there is none."""
    wanted = os.environ.get("VEO_NB_CHROMIUM") or DEFAULT_CHROMIUM
    if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
        return wanted
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "condition",
) -> Any:
    """Call ``condition`` until it returns something truthy; return that.

    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


@dataclass
class LabServer:
    """A JupyterLab server started for one test session."""

    root_dir: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)
    _workspaces: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def notebook_url(self, relpath: str) -> str:
        """The notebook in a workspace of its own, reset, so that no tab of an
        earlier test is restored next to it."""
        self._workspaces += 1
        return (f"{self.base_url}/lab/workspaces/t{self._workspaces}/tree/{relpath}"
                f"?reset&token={self.token}")

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every session and kernel (a tracker in a kernel keeps polling)."""
        for session in self.api("GET", "api/sessions") or []:
            self.api("DELETE", f"api/sessions/{session['id']}")
        for kernel in self.api("GET", "api/kernels") or []:
            self.api("DELETE", f"api/kernels/{kernel['id']}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def lab_env(tmp: Path) -> dict[str, str]:
    """An environment for a JupyterLab server that keeps everything in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    home = tmp / "home"
    dirs = {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": tmp / "jupyter" / "config",
        "JUPYTER_DATA_DIR": tmp / "jupyter" / "data",
        "JUPYTER_RUNTIME_DIR": tmp / "jupyter" / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": tmp / "jupyter" / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": tmp / "jupyter" / "lab-workspaces",
        "IPYTHONDIR": tmp / "ipython",
        "MPLCONFIGDIR": tmp / "mpl",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # No random demo failures: the quickstart's deliberate [fail: ...] task
    # still fails, and every other task ends with a video to assert on.
    env["VEO_DEMO_FAILURE_RATE"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_lab(root_dir: Path, tmp: Path, *, timeout: float = 120.0) -> LabServer:
    """Start JupyterLab serving ``root_dir``; return once /api/status answers."""
    bin_dir = Path(sys.executable).parent
    jupyter = bin_dir / "jupyter"
    env = lab_env(tmp)
    # Prefer this interpreter's scripts (the venv) for the kernel and jupyter.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # The news pop-up covers part of the page.
    subprocess.run(
        [str(jupyter), "labextension", "disable",
         "@jupyterlab/apputils-extension:announcements"],
        env=env, check=True, capture_output=True, timeout=120,
    )
    token = secrets.token_hex(16)
    port = free_port()
    log_path = tmp / "jupyterlab.log"
    cmd = [
        str(jupyter), "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.news_url=",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = LabServer(root_dir, port, token, proc, log_path, env)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url("api/status"), timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, timeout=timeout, interval=0.3, what="JupyterLab /api/status")
    except BaseException:
        server.stop()
        raise
    return server


# --------------------------------------------------------------------------
# page actions


def open_notebook(page: Any, server: LabServer, relpath: str, *, timeout: float = 120) -> None:
    """Open ``relpath`` in JupyterLab and wait until its kernel is idle.

    "Run All" right after opening is flaky: the toolbar indicator reads idle
    before a kernel exists. The status bar's ``(ipykernel) | Idle`` text is
    what shows that the kernel is really there.
    """
    page.goto(server.notebook_url(relpath), wait_until="domcontentloaded",
              timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    wait_kernel_idle(page, timeout=timeout)


def kernel_status_text(page: Any) -> str:
    return page.evaluate(
        """() => {
            const bar = document.querySelector('#jp-main-statusbar');
            return bar ? bar.innerText : '';
        }"""
    )


def wait_kernel_idle(page: Any, *, timeout: float = 120) -> None:
    def idle() -> bool:
        text = kernel_status_text(page)
        return "Idle" in text and "ipykernel" in text.replace("\n", " ") or (
            "Python 3" in text and "Idle" in text
        )

    wait_for(idle, timeout=timeout, interval=0.5, what="the kernel to be Idle in the status bar")


def run_all(page: Any) -> None:
    """Run every cell through JupyterLab's own command."""
    page.evaluate(
        """() => {
            const app = window.jupyterapp || window.jupyterlab;
            if (app) { return app.commands.execute('notebook:run-all-cells'); }
            return null;
        }"""
    )


def run_all_via_menu(page: Any) -> None:
    """Run every cell through the Run menu, as a person would."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").filter(
        has_text=re.compile(r"^Run$")).first.click(timeout=30_000)
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click(
        timeout=30_000)
