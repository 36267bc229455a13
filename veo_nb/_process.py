"""Who this process is in the store's claims, and whether a claim's holder
is known to be gone (a crashed or restarted kernel on this machine)."""

from __future__ import annotations

import os
import secrets
import socket

def holder_dead(holder: str | None) -> bool:
    """Whether the process holding a claim is known to be gone: it ran on this
    machine, in this pid namespace, and its pid is free (a crashed or
    restarted kernel). A holder on another machine or in another container
    with the same host name, or a pid now used by another process, counts as
    alive: its claim then simply runs out."""
    if not holder:
        return False
    parts = holder.split(":")
    if len(parts) != 4 or holder == process_id():
        return False  # an older release's holder says no namespace: let its claim run out
    host, pid_text, _, space = parts
    if host != socket.gethostname() or not pid_text.isdigit() or space != _pid_space():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's, or not ours to ask
        return False
    return False


def process_id() -> str:
    """Who this process is in the store's claims: host, pid, a random part
    (a pid can be reused after a crash) and its pid namespace (containers
    that share a host name do not share pids)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:  # also after a fork
        _PROCESS = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}:{_pid_space()}")
    return _PROCESS[1]


def _pid_space() -> str:
    """This process's pid namespace (Linux), or ``""`` where it cannot tell."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


_PROCESS: tuple[int, str] | None = None
