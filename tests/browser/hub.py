"""A real JupyterHub for the tests: ``jupyterhub`` from PyPI, its proxy
``configurable-http-proxy`` from npm (``make test`` installs it into
``.venv/node``), the dummy authenticator (any user name, one password) and the
simple local-process spawner (each user's server a process of ours, with a
home folder of its own under the test's temporary folder).

:func:`start_hub` writes a ``jupyterhub_config.py`` (the test's own lines,
then ``admin_lines`` as a hub admin would add them), starts the hub in a
session of its own and returns a :class:`Hub`: its REST API with a service
token (create users, spawn their servers, reach them through the proxy), and
:meth:`Hub.kernel`, a kernel on a user's server driven over its websocket as
a notebook frontend does. ``Hub.stop()`` stops the users' servers, then the
hub (and with it the proxy).

When the proxy is missing the test is skipped on a laptop (saying how to get
it) and fails under CI: a CI run that skipped the hub would prove nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from servers import free_port, log_tail, server_env, wait_for

REPO = Path(__file__).resolve().parents[2]
#: Where ``make test`` installs the proxy (Makefile: CHP); VEO_NB_CHP overrides.
PROXY = REPO / ".venv" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"


def proxy_path() -> str:
    """The proxy's executable; skips (fails under CI) when it is not installed."""
    wanted = Path(os.environ.get("VEO_NB_CHP") or PROXY)
    if wanted.is_file() and os.access(wanted, os.X_OK):
        return str(wanted)
    message = (f"no configurable-http-proxy at {wanted}: `make test` installs it with npm "
               "(apt-get install -y npm first), or set VEO_NB_CHP")
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class Hub:
    """A running hub: ``url`` is the proxy's public address (``/hub/…``,
    ``/user/NAME/…``), ``token`` a service token that may manage users and
    servers and reach every server."""

    url: str
    token: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    kernels: list[Kernel] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None, *,
                timeout: float = 60) -> Any:
        """``method`` ``path`` (``hub/api/…`` or ``user/NAME/api/…``) with the
        service token; the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/{path.lstrip('/')}", data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def spawn(self, user: str, *, timeout: float = 180) -> None:
        """Create ``user`` (if new) and start their server through the hub;
        returns once the server answers through the proxy."""
        try:
            self.request("POST", f"hub/api/users/{user}")
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: the user exists
                raise
        self.request("POST", f"hub/api/users/{user}/server")
        wait_for(lambda: self.request("GET", f"hub/api/users/{user}").get("server"),
                 timeout=timeout, interval=0.5, what=f"{user}'s server to be ready\n{self.log()}")
        wait_for(lambda: self.request("GET", f"user/{user}/api/status") is not None,
                 timeout=60, what=f"{user}'s server through the proxy")

    def put_notebook(self, user: str, name: str, notebook: dict[str, Any]) -> None:
        """Save ``notebook`` as ``name`` in ``user``'s home (the contents API)."""
        self.request("PUT", f"user/{user}/api/contents/{name}",
                     {"type": "notebook", "format": "json", "content": notebook})

    def kernel(self, user: str, notebook: str | None = None) -> Kernel:
        """A new kernel on ``user``'s server (a notebook's session when
        ``notebook`` is given, as opening it does), connected."""
        if notebook is None:
            kernel_id = self.request("POST", f"user/{user}/api/kernels", {"name": "python3"})["id"]
        else:
            session = self.request("POST", f"user/{user}/api/sessions", {
                "path": notebook, "name": notebook, "type": "notebook",
                "kernel": {"name": "python3"}})
            kernel_id = session["kernel"]["id"]
        kernel = Kernel(self, user, kernel_id)
        self.kernels.append(kernel)
        return kernel

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """Close the kernels' sockets, stop every user's server, then the hub."""
        for kernel in self.kernels:
            kernel.close()
        if self.process.poll() is None:
            try:
                for user in self.request("GET", "hub/api/users", timeout=10):
                    if user.get("server"):
                        self.request("DELETE", f"hub/api/users/{user['name']}/server",
                                     timeout=30)
            except (OSError, urllib.error.URLError, ValueError):
                pass  # the hub stops them on its way out too
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: hub and proxy
                self.process.wait(timeout=10)


class Kernel:
    """One kernel on a user's server, driven over its websocket through the
    proxy with the service token, as a notebook frontend drives it."""

    def __init__(self, hub: Hub, user: str, kernel_id: str) -> None:
        import websocket  # websocket-client

        self.user, self.id = user, kernel_id
        url = hub.url.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel_id}/channels"
        self._session = uuid.uuid4().hex
        self._ws = websocket.create_connection(
            url, header=[f"Authorization: token {hub.token}"], timeout=30)

    def run(self, code: str, *, timeout: float = 300) -> str:
        """Execute ``code``; its printed text. A raised exception fails the
        test with the kernel's traceback."""
        msg_id = uuid.uuid4().hex
        self._ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user,
                       "session": self._session, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        printed: list[str] = []
        error: list[str] = []
        replied = idle = False
        deadline = time.monotonic() + timeout
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}'s kernel: no answer within {timeout:.0f} s "
                                     f"to {code[:200]!r}; printed so far: {''.join(printed)}")
            message = _decode(self._ws.recv())
            if (message.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                error.append("\n".join(content["traceback"]))
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        if error:
            raise AssertionError(f"{self.user}'s kernel raised:\n{error[0]}\n"
                                 f"printed: {''.join(printed)}")
        return "".join(printed)

    def close(self) -> None:
        try:
            self._ws.close()
        except OSError:
            pass


def _decode(frame: str | bytes) -> dict[str, Any]:
    """A kernel message from the server's websocket: JSON text, or a binary
    frame (a message with buffers: a count, offsets, the JSON, the buffers)."""
    if isinstance(frame, str):
        return dict(json.loads(frame))
    count = struct.unpack_from("!I", frame)[0]
    offsets = struct.unpack_from(f"!{count}I", frame, 4)
    end = offsets[1] if count > 1 else len(frame)
    return dict(json.loads(frame[offsets[0]:end]))


def start_hub(tmp: Path, *, environment: dict[str, str], admin_lines: str,
              admin: str, timeout: float = 120) -> Hub:
    """A hub on 127.0.0.1 whose servers get ``environment`` (and whatever
    ``admin_lines``, appended to ``jupyterhub_config.py``, adds); ``admin``
    is a hub admin. Returns once the hub answers through the proxy."""
    proxy = proxy_path()
    tmp.mkdir(parents=True, exist_ok=True)
    port, hub_port, api_port = free_port(), free_port(), free_port()
    token, password = secrets.token_hex(16), secrets.token_urlsafe(12)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    config = f"""\
# The test's hub: loopback only, dummy authenticator, local processes.
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{tmp / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(tmp / 'cookie_secret')!r}
c.JupyterHub.pid_file = {str(tmp / 'hub.pid')!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{{admin!r}}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp / 'home' / '{username}')!r}
c.Spawner.cmd = [{_bin('jupyterhub-singleuser')!r}]
c.Spawner.args = {['--allow-root'] if as_root else []!r}
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment = {environment!r}
c.JupyterHub.load_roles = [{{"name": "driver", "services": ["driver"],
    "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
c.JupyterHub.services = [{{"name": "driver", "api_token": {token!r}}}]

{admin_lines}
"""
    (tmp / "jupyterhub_config.py").write_text(config)
    env = server_env(tmp / "hub-env")
    log_path = tmp / "hub.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([_bin("jupyterhub"), "-f", str(tmp / "jupyterhub_config.py")],
                                   cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    hub = Hub(f"http://127.0.0.1:{port}", token, password, process, log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited early:\n{hub.log()}")
        try:
            return hub.request("GET", "hub/api/", timeout=5) is not None
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_for(up, timeout=timeout, interval=0.5, what="the hub to answer through the proxy")
    except BaseException:
        hub.stop()
        raise
    return hub
