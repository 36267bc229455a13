"""Measure widget traffic: what ipywidgets would send to the browser.

ipywidgets 8 opens one comm per widget through ``comm.create_comm``.
:func:`record_traffic` replaces that factory with one returning a
:class:`RecordingComm`, which records every message's size (its JSON
content plus binary buffers) instead of sending it, and how many of those
bytes are video (``Message.video_bytes``: a ``Video`` widget's buffers, the
only buffers the panel sends, unless the widget plays from a URL; and
``data:video/…`` URLs inside ``HTML`` widgets). Used by the panel's tests
and the benchmarks; handy to check a view of your own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import comm
from comm.base_comm import BaseComm


@dataclass(frozen=True)
class Message:
    """One comm message: its comm id, type (``comm_open``, ``comm_msg``,
    ``comm_close``), size in bytes, JSON content and how many of its bytes
    are video."""

    comm_id: str
    msg_type: str
    nbytes: int
    data: dict[str, Any] | None
    video_bytes: int = 0


@dataclass
class Traffic:
    """Every message sent while recording, in order (thread-safe)."""

    messages: list[Message] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def mark(self) -> int:
        """A position to measure from (see :meth:`since`)."""
        with self._lock:
            return len(self.messages)

    def since(self, mark: int = 0) -> list[Message]:
        """The messages sent after ``mark``."""
        with self._lock:
            return self.messages[mark:]

    def bytes_since(self, mark: int = 0) -> int:
        """Bytes sent after ``mark``."""
        return sum(m.nbytes for m in self.since(mark))

    def video_bytes_since(self, mark: int = 0) -> int:
        """Bytes of video sent after ``mark``."""
        return sum(m.video_bytes for m in self.since(mark))


def _size(data: Any, buffers: Iterable[Any] | None) -> int:
    body = len(json.dumps(data, default=repr, separators=(",", ":")))
    return body + sum(memoryview(b).nbytes for b in buffers or ())


def _video_bytes(data: Any, buffers: Iterable[Any] | None) -> int:
    state = data.get("state", {}) if isinstance(data, dict) else {}
    carried = 0 if state.get("format") == "url" else sum(memoryview(b).nbytes for b in buffers or ())
    for value in state.values():
        if isinstance(value, str) and "data:video/" in value:
            carried += len(value) - value.index("data:video/")
    return carried


class RecordingComm(BaseComm):
    """A comm that records what it would send into a :class:`Traffic`."""

    def __init__(self, traffic: Traffic, **kwargs: Any) -> None:
        self.traffic = traffic
        super().__init__(**kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        self.traffic.add(Message(self.comm_id, msg_type, _size(data, buffers),
                                 data if isinstance(data, dict) else None,
                                 _video_bytes(data, buffers)))


@contextmanager
def record_traffic() -> Iterator[Traffic]:
    """Record the messages of every widget created inside the ``with`` block
    (for as long as those widgets live)."""
    traffic = Traffic()
    previous = comm.create_comm

    def create(**kwargs: Any) -> BaseComm:
        return RecordingComm(traffic, **kwargs)

    comm.create_comm = create
    try:
        yield traffic
    finally:
        comm.create_comm = previous
