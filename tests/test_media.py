"""The emulator's sample MP4s are real 8-second videos, served per aspect
ratio and prompt, at the size ``video_size`` asks for."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from veo_nb import ValidationError
from veo_nb.emulator import Emulator
from veo_nb.emulator._media import (
    CLIPS,
    MIN_VIDEO_SIZE,
    REALISTIC_SIZES,
    SAMPLES,
    MediaLibrary,
    pad_mp4,
)

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``data[start:end]``; asserts
    that they tile the range exactly."""
    end = len(data) if end is None else end
    found = []
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        assert size >= header, f"bad box size {size} at {pos}"
        found.append((kind, pos + header, pos + size))
        pos += size
    assert pos == end, "boxes do not tile the file"
    return found


def find(data: bytes, path: list[bytes]) -> bytes:
    """The payload of the first box at ``path`` (e.g. [b"moov", b"mvhd"])."""
    start, end = 0, len(data)
    for kind in path:
        for box_kind, payload, box_end in boxes(data, start, end):
            if box_kind == kind:
                start, end = payload, box_end
                break
        else:
            raise AssertionError(f"no {kind!r} box")
    return data[start:end]


def duration_s(data: bytes) -> float:
    """The movie's duration from ``moov/mvhd``."""
    mvhd = find(data, [b"moov", b"mvhd"])
    if mvhd[0] == 1:
        timescale, duration = struct.unpack(">IQ", mvhd[20:32])
    else:
        timescale, duration = struct.unpack(">II", mvhd[12:20])
    return duration / timescale


def frame_size(data: bytes) -> tuple[int, int]:
    """Width and height of the (only) video track, from ``tkhd``; asserts
    that the H.264 sample entry (``stsd/avc1``) codes the same size."""
    tkhd = find(data, [b"moov", b"trak", b"tkhd"])
    width, height = struct.unpack(">II", tkhd[-8:])
    stsd = find(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    assert stsd[12:16] == b"avc1", "not an H.264 track"
    coded = struct.unpack(">HH", stsd[8 + 32 : 8 + 36])  # after the entry's header and 24 reserved bytes
    assert coded == (width >> 16, height >> 16)
    return coded


def check_video(data: bytes, aspect_ratio: str) -> None:
    """``data`` is a faststart 8-second MP4 of ``aspect_ratio``'s frame size."""
    kinds = [kind for kind, _, _ in boxes(data)]
    assert kinds[0] == b"ftyp"
    assert kinds.index(b"moov") < kinds.index(b"mdat"), "moov must come first (+faststart)"
    assert duration_s(data) == pytest.approx(8.0, abs=0.05)
    assert frame_size(data) == FRAME[aspect_ratio]


FRAME = {"16:9": (320, 180), "9:16": (180, 320)}
ALL_CLIPS = [(ratio, path) for ratio, paths in CLIPS.items() for path in paths]


@pytest.mark.parametrize(("aspect_ratio", "clip"), ALL_CLIPS, ids=[p.name for _, p in ALL_CLIPS])
def test_clips_are_small_8_second_faststart_mp4s(aspect_ratio: str, clip: Path) -> None:
    data = clip.read_bytes()
    check_video(data, aspect_ratio)
    assert len(data) < 100_000


def test_each_aspect_ratio_has_four_distinct_clips() -> None:
    for aspect_ratio, clips in CLIPS.items():
        assert len(clips) == 4
        assert len({clip.read_bytes() for clip in clips}) == 4, aspect_ratio
        assert SAMPLES[aspect_ratio] == clips[0]
        assert clips[0].name == f"sample_{aspect_ratio.replace(':', 'x')}.mp4"


def test_padding_keeps_a_valid_mp4(tmp_path: Path) -> None:
    sample = SAMPLES["16:9"]
    dest = tmp_path / "big.mp4"
    pad_mp4(sample, dest, 3_000_000)
    data = dest.read_bytes()
    assert len(data) == 3_000_000
    assert data.startswith(sample.read_bytes())
    assert boxes(data)[-1][0] == b"free"
    check_video(data, "16:9")
    with pytest.raises(ValueError, match="video_size"):
        pad_mp4(sample, dest, sample.stat().st_size + 3)


def test_padded_copies_are_built_lazily_once_per_clip_and_size() -> None:
    library = MediaLibrary(5_000_000)
    try:
        first = library.path_for("a red fox in snow", "16:9", "720p")
        assert library.path_for("a red fox in snow", "16:9", "4K") == first  # the size is fixed
        other = library.path_for("a lighthouse at dawn", "16:9", "720p")
        assert other != first and other.parent == first.parent
        assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, other.name])
        realistic = MediaLibrary("realistic")
        try:
            sizes = {res: realistic.path_for("a red fox in snow", "9:16", res).stat().st_size
                     for res in REALISTIC_SIZES}
            assert sizes == REALISTIC_SIZES
        finally:
            realistic.close()
    finally:
        library.close()
    assert not first.exists()  # close() deletes the copies


@pytest.mark.parametrize("bad", ["big", "Realistic", 100, MIN_VIDEO_SIZE - 1, True, 1.5e6, None])
def test_bad_video_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="video_size"):
        Emulator(video_size=bad)  # type: ignore[arg-type]


def _completed_video(
    emulator: Emulator, aspect_ratio: str, prompt: str = "a test card", resolution: str = "720p",
) -> requests.Response:
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    created = requests.post(
        f"{emulator.base_url}/v1/veo/videos",
        json={"model": "veo_3_1_fast", "prompt": prompt, "aspect_ratio": aspect_ratio,
              "resolution": resolution},
        headers=auth, timeout=10,
    ).json()
    emulator.advance(1000 * emulator.time_scale)
    result = requests.get(f"{emulator.base_url}/v1/result/{created['id']}", headers=auth, timeout=10)
    assert result.json()["status"] == "completed"
    return requests.get(result.json()["video_url"], timeout=30)


def test_realistic_sizes_are_about_what_the_service_sends() -> None:
    assert REALISTIC_SIZES == {"720p": 4_000_000, "1080p": 12_000_000, "4K": 40_000_000}


@pytest.mark.parametrize("resolution", list(REALISTIC_SIZES))
def test_the_default_serves_realistic_sizes_by_resolution(
    veo_emulator: Emulator, resolution: str
) -> None:
    video = _completed_video(veo_emulator, "9:16", "a red fox in snow", resolution)
    assert video.status_code == 200
    assert int(video.headers["Content-Length"]) == len(video.content) == REALISTIC_SIZES[resolution]
    check_video(video.content, "9:16")
    assert boxes(video.content)[-1][0] == b"free"


@pytest.mark.parametrize("aspect_ratio", list(CLIPS))
def test_sample_size_serves_the_clips_as_they_are(aspect_ratio: str) -> None:
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample") as emulator:
        video = _completed_video(emulator, aspect_ratio, resolution="4K")
        assert video.status_code == 200
        assert video.content in {clip.read_bytes() for clip in CLIPS[aspect_ratio]}
        check_video(video.content, aspect_ratio)


def test_emulator_serves_padded_videos_of_the_asked_size() -> None:
    with Emulator(time_scale=0.01, failure_rate=0, video_size=5_000_000) as emulator:
        for resolution in ("720p", "4K"):
            video = _completed_video(emulator, "9:16", resolution=resolution)
            assert video.status_code == 200
            assert int(video.headers["Content-Length"]) == len(video.content) == 5_000_000
            check_video(video.content, "9:16")


def test_the_clip_depends_on_the_prompt_and_only_on_it() -> None:
    # these two prompts fall on different clips (a SHA-256 of the prompt picks)
    fox, lighthouse = "a red fox in snow", "a lighthouse at dawn"
    served: dict[str, bytes] = {}
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample", seed=1) as emulator:
        for aspect_ratio in CLIPS:
            clips = {clip.read_bytes(): clip.name for clip in CLIPS[aspect_ratio]}
            first = _completed_video(emulator, aspect_ratio, fox).content
            second = _completed_video(emulator, aspect_ratio, lighthouse).content
            assert first != second
            for data in (first, second):
                assert data in clips
                check_video(data, aspect_ratio)
            assert _completed_video(emulator, aspect_ratio, fox).content == first
            served[aspect_ratio] = first
            spread = {_completed_video(emulator, aspect_ratio, f"prompt {i}").content
                      for i in range(12)}
            assert len(spread) >= 3
    # the same clip in other processes, whatever their hash() seed
    names = {clip.read_bytes(): clip.name for clip in CLIPS["16:9"]}
    code = "from veo_nb.emulator._media import clip_for; print(clip_for(%r, '16:9').name)" % fox
    for hash_seed in ("1", "2"):
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=60)
        assert child.stdout.strip() == names[served["16:9"]], child.stderr
