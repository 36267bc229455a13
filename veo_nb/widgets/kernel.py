"""What the panel's own thread must tell the kernel so that its buttons keep
answering while a cell runs.

JupyterLab 4.4+ sends widget messages to a kernel *subshell* (ipykernel 7.1+),
so a click is handled while the main shell executes a cell. ipykernel 7.4
added a routing rule: when the kernel sends a comm message, it remembers the
subshell of the request it is handling, and sends the comm's next incoming
messages there ("route the reply to the loop that sent it"). A thread the
user started has no request of its own, so ipykernel lends it the main
shell's: every update the panel's UI thread sent re-pointed the panel's comms
at the main shell, and clicks waited for the running cell to end.

:func:`detach_from_requests` gives the calling thread an empty request: its
messages then carry no parent, route nothing, and clicks go where the
frontend sends them. :func:`forget_routes` drops the route a comm took when
the panel was built by a cell on the main shell. Nothing changes for kernels
without these hooks.
"""

from __future__ import annotations

from typing import Any

from .._log import logger


def detach_from_requests() -> None:
    """Make the calling thread (a background thread of ours) belong to no
    kernel request, for ipykernel's comm routing (see the module docstring).
    Only this thread's context changes; other threads keep resolving to the
    running cell's request, as ``display()`` from threads needs."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:  # not in an IPython kernel
        return
    if not Kernel.initialized():
        return
    parent = getattr(Kernel.instance(), "_shell_parent", None)  # a ContextVar in ipykernel 7
    if parent is None or not hasattr(parent, "set"):
        return
    try:
        parent.set({})
    except Exception:  # noqa: BLE001 - a kernel that changed its internals: clicks may wait
        logger.debug("veo_nb panel: could not detach the UI thread from kernel requests",
                     exc_info=True)


def forget_routes(widgets: Any) -> None:
    """Let the frontend choose where the next messages of these widgets' comms
    go: drop the route ipykernel 7.4 remembered when they were created or
    updated by a cell running on the main shell (see the module docstring)."""
    for widget in widgets:
        comm = getattr(widget, "comm", None)
        lock = getattr(comm, "_reply_subshell_lock", None)
        if lock is None:
            continue
        with lock:
            vars(comm).pop("_reply_subshell_id", None)
