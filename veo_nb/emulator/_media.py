"""The emulator's media host (its "CDN"): sample MP4s served with Range support.

Completed videos live at ``/v/<task id>/<token>.mp4`` where the token is
random and unguessable. Links answer 403 once expired and 404 when unknown.
Bodies are streamed from files with :meth:`socket.socket.sendfile`, so even
a padded 200 MB video costs no memory.

Each aspect ratio has a few distinct 8-second clips (``scripts/make_media.py``
renders them); a task gets the one a hash of its prompt picks, so the same
prompt always gives the same clip. How big the served file is depends on
``Emulator(video_size=...)``: about the real service's size for the task's
resolution (:data:`REALISTIC_SIZES`), the small clip as it is, or a fixed
number of bytes.
"""

from __future__ import annotations

import hashlib
import re
import struct
import tempfile
import threading
from pathlib import Path

from ..errors import ValidationError

MEDIA_DIR = Path(__file__).resolve().parent / "media"
#: The clips of each aspect ratio, by file name (the first is ffmpeg's test
#: card with a frame counter, then bars, a Mandelbrot zoom and a spectrum).
CLIPS: dict[str, tuple[Path, ...]] = {
    ratio: tuple(sorted(MEDIA_DIR.glob(f"sample_{tag}*.mp4")))
    for ratio, tag in (("16:9", "16x9"), ("9:16", "9x16"))
}
#: The first clip of each aspect ratio (the test card), e.g. for fixtures
#: that need one known valid video.
SAMPLES: dict[str, Path] = {ratio: clips[0] for ratio, clips in CLIPS.items()}
#: Bytes of a served video by task resolution with ``video_size="realistic"``:
#: about what the service sends for 8 seconds.
REALISTIC_SIZES: dict[str, int] = {"720p": 4_000_000, "1080p": 12_000_000, "4K": 40_000_000}
#: The smallest ``video_size`` in bytes: every clip plus a ``free`` box header.
MIN_VIDEO_SIZE = max(path.stat().st_size for clips in CLIPS.values() for path in clips) + 8

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def clip_for(prompt: str, aspect_ratio: str) -> Path:
    """The clip served for ``prompt``: picked by a SHA-256 of the prompt
    (stable across processes and runs, unlike :func:`hash`)."""
    clips = CLIPS[aspect_ratio]
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
    return clips[int.from_bytes(digest[:8], "big") % len(clips)]


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
            f"video_size must be the clip's size ({len(data)}) or at least "
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
    """The video file served for each task, padded to the size ``video_size``
    asks for (built lazily, once per clip and size, in a private temporary folder).

    ``video_size``: ``"realistic"`` (:data:`REALISTIC_SIZES` by resolution),
    ``"sample"`` (the clips as they are) or a number of bytes
    (at least :data:`MIN_VIDEO_SIZE`).
    """

    def __init__(self, video_size: str | int) -> None:
        if isinstance(video_size, bool) or not (
            video_size in ("realistic", "sample")
            or (isinstance(video_size, int) and video_size >= MIN_VIDEO_SIZE)
        ):
            raise ValidationError(
                "video_size must be 'realistic', 'sample' or a number of bytes "
                f">= {MIN_VIDEO_SIZE}, got {video_size!r}"
            )
        self._size = video_size
        self._lock = threading.Lock()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._padded: dict[tuple[str, int], Path] = {}

    def path_for(self, prompt: str, aspect_ratio: str, resolution: str) -> Path:
        """The file to serve for a task with this prompt, aspect ratio and resolution."""
        clip = clip_for(prompt, aspect_ratio)
        if self._size == "sample":
            return clip
        size = REALISTIC_SIZES[resolution] if self._size == "realistic" else int(self._size)
        with self._lock:
            key = (clip.name, size)
            if key not in self._padded:
                if self._dir is None:
                    self._dir = tempfile.TemporaryDirectory(prefix="veo-nb-emulator-")
                dest = Path(self._dir.name) / f"{clip.stem}-{size}.mp4"
                pad_mp4(clip, dest, size)
                self._padded[key] = dest
            return self._padded[key]

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
