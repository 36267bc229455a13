"""Emulator state that survives a restart: ``Emulator(state_path=...)``.

The state file is JSON, ``{"version": 1, ...}``: the service id, the API key,
the ports last used and every task (its plan, the token of its video link,
its last poll, whether a poll reported it finished). Times in the file are
wall-clock (:func:`time.time`) values, converted from and to the emulator's
monotonic clock when saved and loaded, so time keeps running while no
emulator is up, as it does for the real service. The file is replaced
atomically (a temporary file, then :func:`os.replace`), so a process killed
mid-save leaves the previous state.

Only one live process may own a state file: the owner holds an exclusive
:func:`fcntl.flock` on ``<state_path>.lock``, which the kernel releases when
the process ends, however it ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ValidationError, VeoError
from ._tasks import TaskState

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Version of the state file's format.
STATE_VERSION = 1


class EmulatorStateInUse(VeoError, RuntimeError):
    """Another running emulator owns this state file; the message names the
    file and says what to do."""


class EmulatorStateError(ValidationError):
    """The state file cannot be read (not JSON, another format or version);
    the message names the file and says what to do."""


@dataclass
class SavedState:
    """What a state file holds, with task times on the emulator's clock."""

    service_id: str
    api_key: str
    ports: tuple[int, int]
    tasks: list[TaskState]
    #: The clock's speed of the emulator that saved it (None in older files).
    time_scale: float | None = None


class StateFile:
    """One state file: its lock, and loading and saving its contents."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the file's lock."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Take the exclusive lock, or raise :class:`EmulatorStateInUse`."""
        if fcntl is None:  # pragma: no cover - Windows
            raise ValidationError("state_path needs POSIX file locks (fcntl), which this system lacks")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = "this process" if holder == str(os.getpid()) else f"process {holder or '?'}"
            raise EmulatorStateInUse(
                f"the emulator state file {self.path} is in use by a running emulator "
                f"({who}): stop that emulator first (Emulator.stop(), or end its process), "
                "or pass another state_path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (harmless when not held)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def load(self, to_wall: float) -> SavedState | None:
        """The saved state, or None when there is no file yet. ``to_wall``
        is wall-clock time minus emulator time now.

        Raises :class:`EmulatorStateError` when the file cannot be read back.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._unreadable(f"cannot be read ({exc})") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._unreadable(f"is not valid JSON ({exc})") from exc
        version = data.get("version") if isinstance(data, dict) else None
        if version != STATE_VERSION:
            raise self._unreadable(
                f"has format version {version!r}, this veo_nb reads version {STATE_VERSION}"
            )
        try:
            api_port, media_port = data["ports"]
            state = SavedState(
                service_id=str(data["service_id"]),
                api_key=str(data["api_key"]),
                ports=(int(api_port), int(media_port)),
                tasks=[TaskState.from_json(task, to_wall) for task in data["tasks"]],
                time_scale=float(data["time_scale"]) if data.get("time_scale") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable(f"holds an invalid entry ({exc!r})") from exc
        return state

    def save(self, state: SavedState, to_wall: float) -> None:
        """Replace the file with ``state`` atomically (``to_wall`` as for :meth:`load`)."""
        data = {
            "version": STATE_VERSION,
            "service_id": state.service_id,
            "api_key": state.api_key,
            "ports": list(state.ports),
            "tasks": [task.to_json(to_wall) for task in state.tasks],
            "time_scale": state.time_scale,
        }
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:  # owner-only, like the lock: the file holds the API key
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)

    def _unreadable(self, why: str) -> EmulatorStateError:
        return EmulatorStateError(
            f"the emulator state file {self.path} {why}: move it away or delete it "
            "to start with no tasks, or pass another state_path"
        )
