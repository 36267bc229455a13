"""Render the emulator's sample videos (``make media``).

Writes two small, playable 8-second MP4s into ``veo_nb/emulator/media/``:
``sample_16x9.mp4`` (320x180) and ``sample_9x16.mp4`` (180x320). Each is
ffmpeg's ``testsrc`` pattern, which shows a running frame counter, encoded as
H.264 yuv420p with the ``moov`` box up front (``+faststart``) so browsers can
start playing before the whole file arrived. The files are committed as
package data; run this script again only to change them.

Uses the ffmpeg binary shipped by ``imageio-ffmpeg`` (a dev dependency).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

MEDIA = Path(__file__).resolve().parent.parent / "veo_nb" / "emulator" / "media"
DURATION_S = 8
FPS = 24
#: Output file name → frame size.
CLIPS = {
    "sample_16x9.mp4": (320, 180),
    "sample_9x16.mp4": (180, 320),
}


def render(out: Path, width: int, height: int) -> None:
    """Render one clip to ``out`` (overwritten)."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi",
        "-i", f"testsrc=size={width}x{height}:rate={FPS}:duration={DURATION_S}",
        "-c:v", "libx264", "-preset", "veryslow", "-crf", "34",
        "-pix_fmt", "yuv420p", "-g", str(2 * FPS),
        "-movflags", "+faststart",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-an", str(out),
    ]
    subprocess.run(cmd, check=True)


def main() -> int:
    """Render every clip and print its size."""
    MEDIA.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in CLIPS.items():
        out = MEDIA / name
        render(out, width, height)
        print(f"{out}: {out.stat().st_size} bytes, {width}x{height}, {DURATION_S} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
