"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a
private data folder under the temporary directory, a free port of 127.0.0.1,
trust authentication, no fsync. Never a mock.

``require_postgres()`` finds the binaries (and psycopg) or skips the test
with a message saying how to install them; under CI (``CI=true``) it fails
instead, since a CI run that skipped the PostgreSQL tests would prove nothing.
``start_cluster()`` starts a server with a database ``veo``; ``Cluster.stop()``
stops it and removes its folder, and is also registered with ``atexit`` so an
interrupted session does not leave a server running.
``new_database(url)`` / ``drop_database(url)`` make and drop a fresh, empty
database on the same server. ``Cluster.require_passwords()`` makes every role
but ``postgres`` log in with its password.

The PostgreSQL server refuses to run as root: when the tests run as root,
``initdb`` and ``pg_ctl`` run as the ``postgres`` user (``runuser``), which
owns the cluster's folder.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

#: Set to a folder holding initdb/pg_ctl/createdb to use those binaries
#: instead of the newest /usr/lib/postgresql/*/bin.
PG_BIN_ENV = "VEO_NB_PG_BIN"

#: The OS user that runs the server when the tests run as root.
SERVER_USER = "postgres"

INSTALL_HINT = "install them with `apt-get install -y postgresql`"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _version_key(bin_dir: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); 9.6 -> (9, 6)
    version = Path(bin_dir).parent.name
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def find_bin() -> Path | None:
    """The folder of the server binaries ($VEO_NB_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin), or None when there is no initdb there."""
    wanted = os.environ.get(PG_BIN_ENV)
    if wanted:
        candidates = [wanted]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


def _skip_or_fail(message: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def require_postgres() -> Path:
    """The server binaries' folder; skips (fails under CI) when the binaries
    or psycopg are missing."""
    bin_dir = find_bin()
    if bin_dir is None:
        where = os.environ.get(PG_BIN_ENV) or "/usr/lib/postgresql/*/bin"
        _skip_or_fail(
            f"no PostgreSQL server binaries found (no initdb in {where}; "
            f"${PG_BIN_ENV} overrides): {INSTALL_HINT} to run the PostgreSQL tests"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        _skip_or_fail(
            f"psycopg is not importable ({exc}): "
            "pip install -e '.[dev]' (or '.[postgres]') to run the PostgreSQL tests"
        )
    assert bin_dir is not None
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _env() -> dict[str, str]:
    # The user's PG* settings (PGDATA, PGPORT, PGHOST...) must not steer the tools.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


@dataclass
class Cluster:
    bin_dir: Path
    root: Path
    port: int = 0
    startup_seconds: float = 0.0
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/veo"

    def run(self, tool: str, *args: str, as_server: bool = True, timeout: float = 120) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if as_server and _as_root():
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        done = subprocess.run(
            cmd, cwd=self.root, env=_env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
                f"{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines) if lines else ""

    def start(self) -> None:
        began = time.monotonic()
        if _as_root():
            shutil.chown(self.root, user=SERVER_USER)
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                 "--no-sync", "-E", "UTF8", "--locale=C")
        # The free port may be taken between free_port() and the server's bind: retry.
        for attempt in range(3):
            self.port = free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c max_connections=200")
            try:
                self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                         "-w", "-t", "60", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.running = True
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "veo",
                 as_server=False)
        self.startup_seconds = time.monotonic() - began

    def require_passwords(self) -> None:
        """From now on every role but ``postgres`` must log in with its
        password (scram-sha-256), as on a class's real server; ``postgres``
        (the tests' administrator) stays trusted."""
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n"
                       "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        if _as_root():
            shutil.chown(hba, user=SERVER_USER)
        self.run("pg_ctl", "-D", str(self.data), "reload")

    def server_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, workers)."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True,
                                  check=False).stdout.split()
        return [main, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections stay open and nothing answers,
        as with a hung host or a silent network."""
        for pid in self.server_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        for pid in self.server_pids():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove the folder; safe to call twice."""
        atexit.unregister(self.stop)
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
                         "stop", timeout=60)
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass  # already gone; the folder goes all the same
        finally:
            self.running = False
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(bin_dir: Path | None = None) -> Cluster:
    """A running cluster with an empty database ``veo``; stop it with ``stop()``."""
    bin_dir = bin_dir or require_postgres()
    cluster = Cluster(bin_dir=bin_dir, root=Path(tempfile.mkdtemp(prefix="veo-nb-pg-")))
    atexit.register(cluster.stop)  # Ctrl-C, or a session that never reaches its teardown
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def new_database(url: str) -> str:
    """Create a fresh, empty database on the server of ``url``; its URL."""
    import psycopg
    from psycopg import sql

    name = f"veo_test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(url, name)


def drop_database(url: str) -> None:
    """Drop the database of ``url``, closing whatever connections it still has."""
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_with_database(url, "postgres"), autocommit=True,
                         connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
