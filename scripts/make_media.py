"""Render the emulator's sample videos (``make media``).

Writes small, playable 8-second MP4s into ``veo_nb/emulator/media/``: four
distinct clips per aspect ratio, ``sample_16x9*.mp4`` (320x180) and
``sample_9x16*.mp4`` (180x320). The emulator picks one by a hash of the
prompt, so a demo's videos do not all look the same:

* ``sample_<ratio>.mp4``: ffmpeg's ``testsrc`` pattern with a running frame counter;
* ``sample_<ratio>_bars.mp4``: SMPTE colour bars;
* ``sample_<ratio>_mandelbrot.mp4``: a zoom into the Mandelbrot set;
* ``sample_<ratio>_spectrum.mp4``: a colour spectrum whose hue turns once.

Each is H.264 yuv420p with the ``moov`` box up front (``+faststart``) so
browsers can start playing before the whole file arrived, no audio and no
metadata. Encoding is bit-exact and single-threaded, so running the script
again with the same ffmpeg writes the same bytes. The files are committed as
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
#: Aspect-ratio tag of the file names → frame size.
FRAMES = {"16x9": (320, 180), "9x16": (180, 320)}
#: File-name suffix → (lavfi source for a WxH frame, x264 CRF). Sources that
#: draw from a random generator (life, cellauto, gradients) are left out:
#: their frames change from run to run.
SOURCES = {
    "": ("testsrc=size={size}:rate={fps}:duration={duration}", 34),
    "_bars": ("smptebars=size={size}:rate={fps}:duration={duration}", 34),
    "_mandelbrot": ("mandelbrot=size={size}:rate={fps},trim=duration={duration}", 42),
    "_spectrum": ("colorspectrum=size={size}:rate={fps}:duration={duration},"
                  "hue=H=2*PI*t/{duration}", 34),
}


def render(out: Path, source: str, crf: int) -> None:
    """Render one clip of the lavfi ``source`` to ``out`` (overwritten)."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", source,
        "-threads", "1",  # x264's output depends on its thread count
        "-c:v", "libx264", "-preset", "veryslow", "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-g", str(2 * FPS),
        "-movflags", "+faststart",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-an", str(out),
    ]
    subprocess.run(cmd, check=True)


def main() -> int:
    """Render every clip and print its size."""
    MEDIA.mkdir(parents=True, exist_ok=True)
    for tag, (width, height) in FRAMES.items():
        for suffix, (template, crf) in SOURCES.items():
            out = MEDIA / f"sample_{tag}{suffix}.mp4"
            render(out, template.format(size=f"{width}x{height}", fps=FPS, duration=DURATION_S), crf)
            print(f"{out}: {out.stat().st_size} bytes, {width}x{height}, {DURATION_S} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
