"""Throw-away notebook servers for the real-browser tests: JupyterLab,
Notebook 7 and Voilà, one function each, all returning a :class:`Server`
(``base_url``, ``token``, ``url(path)``, ``notebook_url(relpath)``, the
REST API, the log, ``stop()``).

Nothing here reads the user's home or Jupyter settings: every Jupyter
directory and HOME point into a temporary folder, and the user's VEO_*
settings never reach the kernels (demo mode, no random failures).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Env vars of the user that must not leak into the test server's kernels.
DROP_ENV = ("VEO_API_KEY", "VEO_BASE_URL", "VEO_DEMO", "VEO_TIME_SCALE", "VEO_LOG",
            "VEO_DEMO_VIDEO_SIZE", "VEO_DEMO_FAILURE_RATE", "VEO_NB_STORE", "VEO_NB_OWNER",
            "VEO_NB_LANG")


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


def log_tail(path: Path) -> str:
    """The last 6000 characters of a server's log ("" when there is none)."""
    try:
        return path.read_text(errors="replace")[-6000:]
    except OSError:
        return ""


@dataclass
class Server:
    """A notebook server started for the tests.

    ``kind``: ``"lab"``, ``"notebook"`` (Notebook 7) or ``"voila"``.
    ``notebook``: for a Voilà serving one notebook, its path (relative to
    ``root_dir``); it is then at ``/``.
    """

    kind: str
    root_dir: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)
    notebook: str | None = None
    _workspaces: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "", **query: str) -> str:
        """``path`` on this server, with the token (and ``query``)."""
        query = {**query, "token": self.token}
        return f"{self.base_url}/{path.lstrip('/')}?{urllib.parse.urlencode(query)}"

    def notebook_url(self, relpath: str) -> str:
        """Where a person opens the notebook ``relpath`` (relative to ``root_dir``).

        JupyterLab: in a workspace of its own, reset, so that no tab of an
        earlier test is restored next to it. Notebook 7: ``/notebooks/…``.
        Voilà: ``/`` when it serves that one notebook, else ``/voila/render/…``
        (each visit runs the notebook in a new kernel).
        """
        quoted = urllib.parse.quote(relpath)
        if self.kind == "lab":
            self._workspaces += 1
            return (f"{self.base_url}/lab/workspaces/t{self._workspaces}/tree/{quoted}"
                    f"?reset&token={self.token}")
        if self.kind == "notebook":
            return self.url(f"notebooks/{quoted}")
        if self.notebook is not None:
            if Path(relpath) != Path(self.notebook):
                raise ValueError(f"this Voilà serves {self.notebook} only, not {relpath}")
            return self.url("")
        return self.url(f"voila/render/{quoted}")

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def restart_kernel(self, kernel_id: str) -> None:
        """What the Restart Kernel command does (``POST /api/kernels/ID/restart``)."""
        self.api("POST", f"api/kernels/{kernel_id}/restart")

    def shutdown_kernels(self, kernel_ids: Iterable[str] = ()) -> None:
        """Shut down ``kernel_ids`` and, where the server lists them (not
        Voilà), every session and kernel: a tracker in a kernel keeps polling."""
        if self.kind != "voila":
            for session in self.api("GET", "api/sessions") or []:
                self._quietly("DELETE", f"api/sessions/{session['id']}")
            kernel_ids = [*kernel_ids, *(k["id"] for k in self.api("GET", "api/kernels") or [])]
        for kernel_id in dict.fromkeys(kernel_ids):
            self._quietly("DELETE", f"api/kernels/{kernel_id}")

    def _quietly(self, method: str, path: str) -> None:
        try:
            self.api(method, path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # already gone
                raise

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def server_env(tmp: Path) -> dict[str, str]:
    """An environment for a notebook server that keeps everything in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
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
    # No random demo failures: a deliberate [fail: ...] task still fails, and
    # every other task ends with a video to assert on.
    env["VEO_DEMO_FAILURE_RATE"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    # The panel in English whatever the machine's locale (a test of another
    # language asks for it: panel(lang=...)).
    env["LANGUAGE"] = "en"
    # Prefer this interpreter's scripts (the venv) for the kernel and jupyter.
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _as_root() -> list[str]:
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def _launch(kind: str, cmd: list[str], root_dir: Path, tmp: Path, env: dict[str, str],
            port: int, token: str, ready_path: str, *, notebook: str | None = None,
            timeout: float) -> Server:
    log_path = tmp / f"{kind}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()  # the child has its own copy
    server = Server(kind, root_dir, port, token, proc, log_path, env, notebook)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url(ready_path), timeout=5) as r:
                return r.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code in (403, 404)  # it answers: up
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, timeout=timeout, interval=0.3, what=f"{kind} to answer on {ready_path}")
    except BaseException:
        server.stop()
        raise
    return server


def _jupyter_server(kind: str, root_dir: Path, tmp: Path, extra: list[str],
                    timeout: float) -> Server:
    env = server_env(tmp)
    # The JupyterLab news pop-up covers part of the page (Notebook 7 has it too).
    subprocess.run(
        [_bin("jupyter"), "labextension", "disable",
         "@jupyterlab/apputils-extension:announcements"],
        env=env, check=True, capture_output=True, timeout=120,
    )
    token = secrets.token_hex(16)
    port = free_port()
    cmd = [
        _bin("jupyter"), "lab" if kind == "lab" else "notebook",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        *extra,
        *_as_root(),
    ]
    return _launch(kind, cmd, root_dir, tmp, env, port, token, "api/status", timeout=timeout)


def start_lab(root_dir: Path, tmp: Path, *, timeout: float = 120.0) -> Server:
    """JupyterLab serving ``root_dir``; returns once ``/api/status`` answers.
    ``window.jupyterapp`` is exposed (the tests run kernel code through it)."""
    return _jupyter_server("lab", root_dir, tmp,
                           ["--LabApp.news_url=", "--LabApp.expose_app_in_browser=True"], timeout)


def start_notebook(root_dir: Path, tmp: Path, *, timeout: float = 120.0) -> Server:
    """Notebook 7 (``jupyter notebook``) serving ``root_dir``, same flags as Lab."""
    return _jupyter_server("notebook", root_dir, tmp,
                           ["--JupyterNotebookApp.expose_app_in_browser=True"], timeout)


def start_voila(path: Path, tmp: Path, *, timeout: float = 120.0,
                extra: Iterable[str] = ()) -> Server:
    """Voilà serving ``path``: one notebook (then at ``/``, as ``voila
    NAME.ipynb`` does) or a folder (each notebook at ``/voila/render/NAME``,
    so one server serves every notebook of a test module).

    Voilà runs every cell before the page shows, in a new kernel per visit,
    with the notebook's folder as the working directory; by default it serves
    no ``.mp4`` file from disk (``file_allowlist``)."""
    path = Path(path).resolve()
    root_dir = path.parent if path.is_file() else path
    env = server_env(tmp)
    token = secrets.token_hex(16)
    port = free_port()
    cmd = [
        _bin("voila"), str(path),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        f"--Voila.token={token}",
        *extra,
    ]
    notebook = path.name if path.is_file() else None
    # A path that exists on no Voilà ("/" of a one-notebook Voilà runs it).
    return _launch("voila", cmd, root_dir, tmp, env, port, token, "voila/files/.veo-ready",
                   notebook=notebook, timeout=timeout)
