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
frontend sends them. :func:`forget_routes` makes the panel's comms ignore
the route that a cell's update on the main shell would give them. Nothing
changes for kernels without these hooks.

A page that connects to the kernel while the panel changes can miss
updates (see :func:`restore_token`); :class:`Resender` says when the panel
sends its state again.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

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


def _frontends_choice(data: Any, default: Any) -> Any:
    """A comm's reply route that is always the frontend's own choice."""
    return default


def forget_routes(widgets: Any) -> None:
    """Let the frontend choose, for good, where these widgets' comm messages
    go: ipykernel 7.4 re-points a comm at the subshell of whatever request
    last sent on it, so one update from a cell on the main shell (a call of
    ``update()``, ``toggle_polling()``, a form, a trait the user set) sent
    the next clicks to the busy main shell (see the module docstring). Each
    comm's routing is replaced once; idempotent and cheap, so it is applied
    to every widget of the panel, new ones included, after each update."""
    for widget in widgets:
        comm = getattr(widget, "comm", None)
        if comm is None or getattr(comm, "_reply_subshell_lock", None) is None:
            continue
        if vars(comm).get("_reply_subshell_for") is not _frontends_choice:
            comm._reply_subshell_for = _frontends_choice


#: Seconds after a page began its restore at which the panel sends its
#: state again: soon after a quick restore, and after the 4 s a page waits
#: before it falls back to asking each widget for its state.
RESEND_AFTER_S = (2.0, 8.0)


def restore_token() -> object:
    """What changes each time a page starts building the kernel's widgets
    (a Voilà page loading, a reloaded tab, a reconnect): the control comm
    ipywidgets 8 opens for that page's ``request_states``; None before any.

    A page drops the updates that reach a widget between its snapshot and
    the moment it has built that widget (and, when the snapshot request
    fails, every update until all widgets are built), so a value that does
    not change again would stay stale there: see :class:`Resender`."""
    return getattr(widgets.Widget, "_control_comm", None)


class Resender:
    """When a page has started a restore (:func:`restore_token` changed),
    says when to send the panel's state again (at :data:`RESEND_AFTER_S`)."""

    def __init__(self) -> None:
        self._token = restore_token()
        self._due: list[float] = []

    def due(self, now: float) -> bool:
        """True once per planned resend that is due at monotonic ``now``."""
        token = restore_token()
        if token is not self._token:
            self._token = token
            self._due = [now + s for s in RESEND_AFTER_S]
        if self._due and self._due[0] <= now:
            self._due.pop(0)
            return True
        return False
