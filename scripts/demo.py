"""``make demo``: JupyterLab on the quickstart notebook, in demo mode.

Picks a free port on 127.0.0.1 and a fresh token, prints the quickstart's
own URL (not the launcher's) and opens it in the browser when there is one.
Demo mode (``VEO_DEMO=1``): the notebooks talk to the embedded emulator,
offline, with no API key and nothing billed.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
QUICKSTART = "01_quickstart.ipynb"


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(port: int, token: str) -> list[str]:
    """The ``jupyter lab`` command line serving the quickstart."""
    args = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.default_url=/lab/tree/{QUICKSTART}",
        f"--ServerApp.root_dir={NOTEBOOKS}",
    ]
    if hasattr(os, "getuid") and os.getuid() == 0:
        args.append("--allow-root")  # containers and CI machines run as root
    return args


def main() -> None:
    port = int(os.environ.get("VEO_DEMO_PORT") or free_port())
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/lab/tree/{QUICKSTART}?token={token}"
    print(f"veo_nb demo (embedded emulator, offline, nothing billed): open\n    {url}\n"
          "Ctrl-C stops it.", flush=True)
    os.environ["VEO_DEMO"] = "1"
    os.chdir(NOTEBOOKS)
    os.execv(sys.executable, command(port, token))


if __name__ == "__main__":
    main()
