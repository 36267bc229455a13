"""The names the older tests (and tests/test_make_demo.py) import from here;
the helpers themselves are in :mod:`servers` (JupyterLab, Notebook 7 and
Voilà servers), :mod:`chromium` (the browser) and :mod:`notebook_page`
(page actions)."""

from __future__ import annotations

from chromium import CHROMIUM_ARGS, DEFAULT_CHROMIUM, chromium_path
from notebook_page import open_notebook, run_all_via_menu, wait_kernel_idle
from servers import Server, free_port, server_env, start_lab, wait_for

#: JupyterLab's server is a :class:`servers.Server` of kind ``"lab"``.
LabServer = Server
#: The environment of a server that keeps everything in a temporary folder.
lab_env = server_env

__all__ = ["CHROMIUM_ARGS", "DEFAULT_CHROMIUM", "LabServer", "Server", "chromium_path",
           "free_port", "lab_env", "open_notebook", "run_all_via_menu", "start_lab",
           "wait_for", "wait_kernel_idle"]
