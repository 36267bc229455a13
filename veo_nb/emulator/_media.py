"""The emulator's media host (its "CDN"): sample MP4s served with Range support.

Completed videos live at ``/v/<task id>/<token>.mp4`` where the token is
random and unguessable. Links answer 403 once expired and 404 when unknown.
Bodies are streamed from files with :meth:`socket.socket.sendfile`, so even
a padded 200 MB video costs no memory.
"""

from __future__ import annotations

import re
import struct
import tempfile
import threading
from pathlib import Path

from ..errors import ValidationError

MEDIA_DIR = Path(__file__).resolve().parent / "media"
#: The sample clip for each aspect ratio.
SAMPLES = {"16:9": MEDIA_DIR / "sample_16x9.mp4", "9:16": MEDIA_DIR / "sample_9x16.mp4"}

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def pad_mp4(source: Path, dest: Path, size: int) -> None:
    """Write ``source`` to ``dest`` followed by a trailing ``free`` box so
    ``dest`` is exactly ``size`` bytes and still a valid MP4.

    The padding is a sparse hole (zeros) on file systems that support it, so
    even very large files are written instantly.
    """
    data = source.read_bytes()
    pad = size - len(data)
    if pad == 0:
        dest.write_bytes(data)
        return
    if pad < 8:
        raise ValidationError(
            f"video_size_bytes must be the sample's size ({len(data)}) or at least "
            f"{len(data) + 8} bytes, got {size}"
        )
    if pad < 2**32:
        header = struct.pack(">I4s", pad, b"free")
    else:
        header = struct.pack(">I4sQ", 1, b"free", pad)
    with dest.open("wb") as out:
        out.write(data + header)
        out.truncate(size)


class MediaLibrary:
    """The video file served for each aspect ratio, optionally padded to a
    fixed size (built lazily in a private temporary folder)."""

    def __init__(self, video_size_bytes: int | None) -> None:
        self._size = video_size_bytes
        self._lock = threading.Lock()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._padded: dict[str, Path] = {}

    def path_for(self, aspect_ratio: str) -> Path:
        """The file to serve for a task with ``aspect_ratio``."""
        sample = SAMPLES[aspect_ratio]
        if self._size is None:
            return sample
        with self._lock:
            if aspect_ratio not in self._padded:
                if self._dir is None:
                    self._dir = tempfile.TemporaryDirectory(prefix="veo-nb-emulator-")
                dest = Path(self._dir.name) / sample.name
                pad_mp4(sample, dest, self._size)
                self._padded[aspect_ratio] = dest
            return self._padded[aspect_ratio]

    def close(self) -> None:
        """Delete the padded copies, if any."""
        with self._lock:
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None
            self._padded.clear()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Interpret a ``Range`` header for a body of ``size`` bytes.

    Returns ``(first, last)`` (inclusive) for one satisfiable range, ``None``
    to send the whole body (no header, or a form we do not serve, such as
    several ranges), or ``"unsatisfiable"`` for a 416.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if not match:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix range: the last N bytes
        count = int(last_text)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - count), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        return "unsatisfiable"
    return first, min(last, size - 1)
