"""Safe local file names for videos, derived from task ids."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
from pathlib import Path

#: Where the tracker keeps its history and videos unless told otherwise.
DEFAULT_DATA_DIR = Path("veo_nb_data")
#: The same for demo mode (with the embedded emulator's state), apart from
#: the real service's history.
DEMO_DATA_DIR = DEFAULT_DATA_DIR / "demo"
#: A download in progress is a hidden ``.<random>.part`` file next to its video.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".", ".part"
#: A partial file untouched this long belongs to no live download.
STALE_PARTIAL_S = 60.0

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_STEM = 80


def safe_video_name(task_id: str) -> str:
    """A file name for ``task_id``'s video that cannot leave its folder.

    Ids made only of letters, digits, ``_`` and ``-`` (like ``vgen_abc123``)
    map to ``<id>.mp4``. Anything else (path separators, ``..``, NUL, odd
    Unicode, very long ids) is reduced to safe characters and suffixed with a
    short hash of the original id, so two different ids never share a file.
    """
    stem = _UNSAFE.sub("_", task_id).strip("_")[:_MAX_STEM]
    if stem != task_id or not stem:
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem = f"{stem or 'task'}-{digest}"
    return f"{stem}.mp4"


#: What ``stat`` says of a path that is not there (anything else it may say,
#: such as "permission denied", means something is there that is not ours).
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def saved_file_present(path: str | os.PathLike[str] | None) -> bool:
    """Whether a video recorded as saved at ``path`` is still there.

    A path this process may not look at (a classmate's private home folder on
    a shared JupyterHub host, a disconnected mount) counts as present: it is
    someone's saved video, not a missing one to fetch again, and looking at
    it never raises. Only a path that is provably gone counts as absent."""
    if not path:
        return False
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno not in _MISSING
    except ValueError:  # a NUL byte: not a path this machine could have written
        return False
    return True


def video_path_in(folder: str | Path, task_id: str) -> Path:
    """The path of ``task_id``'s video inside ``folder`` (never outside it)."""
    root = Path(folder).resolve()
    path = (root / safe_video_name(task_id)).resolve()
    if path.parent != root:  # pragma: no cover - safe_video_name forbids it
        raise ValueError(f"refusing a video path outside {root}")
    return path


def remove_stale_partials(folder: str | Path, older_than_s: float = STALE_PARTIAL_S) -> int:
    """Delete the partial downloads in ``folder`` left by a killed process
    (untouched for ``older_than_s`` seconds; younger ones may belong to a
    download running in another process). Returns how many were deleted."""
    removed = 0
    cutoff = time.time() - older_than_s
    for path in Path(folder).glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed
