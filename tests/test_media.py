"""The emulator's sample MP4s are real 8-second videos, served per aspect ratio."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import requests

from veo_nb.emulator import Emulator
from veo_nb.emulator._media import SAMPLES, pad_mp4

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
    """Width and height of the (only) video track, from ``tkhd``."""
    tkhd = find(data, [b"moov", b"trak", b"tkhd"])
    width, height = struct.unpack(">II", tkhd[-8:])
    return width >> 16, height >> 16


@pytest.mark.parametrize(("aspect_ratio", "size"), [("16:9", (320, 180)), ("9:16", (180, 320))])
def test_samples_are_small_8_second_faststart_mp4s(aspect_ratio: str, size: tuple[int, int]) -> None:
    data = SAMPLES[aspect_ratio].read_bytes()
    kinds = [kind for kind, _, _ in boxes(data)]
    assert kinds[0] == b"ftyp"
    assert kinds.index(b"moov") < kinds.index(b"mdat"), "moov must come first (+faststart)"
    assert duration_s(data) == pytest.approx(8.0, abs=0.05)
    assert frame_size(data) == size
    assert len(data) < 100_000


def test_padding_keeps_a_valid_mp4(tmp_path: Path) -> None:
    sample = SAMPLES["16:9"]
    dest = tmp_path / "big.mp4"
    pad_mp4(sample, dest, 3_000_000)
    data = dest.read_bytes()
    assert len(data) == 3_000_000
    assert data.startswith(sample.read_bytes())
    assert boxes(data)[-1][0] == b"free"
    assert duration_s(data) == pytest.approx(8.0, abs=0.05)
    with pytest.raises(ValueError, match="video_size_bytes"):
        pad_mp4(sample, dest, sample.stat().st_size + 3)


def _completed_video(emulator: Emulator, aspect_ratio: str) -> requests.Response:
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    created = requests.post(
        f"{emulator.base_url}/v1/veo/videos",
        json={"model": "veo_3_1_fast", "prompt": "a test card", "aspect_ratio": aspect_ratio},
        headers=auth, timeout=10,
    ).json()
    emulator.advance(1000 * emulator.time_scale)
    result = requests.get(f"{emulator.base_url}/v1/result/{created['id']}", headers=auth, timeout=10)
    assert result.json()["status"] == "completed"
    return requests.get(result.json()["video_url"], timeout=10)


@pytest.mark.parametrize(("aspect_ratio", "size"), [("16:9", (320, 180)), ("9:16", (180, 320))])
def test_emulator_serves_the_clip_of_the_task_aspect_ratio(
    veo_emulator: Emulator, aspect_ratio: str, size: tuple[int, int]
) -> None:
    video = _completed_video(veo_emulator, aspect_ratio)
    assert video.status_code == 200
    assert video.content == SAMPLES[aspect_ratio].read_bytes()
    assert frame_size(video.content) == size


def test_emulator_serves_padded_videos_of_the_asked_size() -> None:
    with Emulator(time_scale=0.01, failure_rate=0, video_size_bytes=5_000_000) as emulator:
        video = _completed_video(emulator, "9:16")
        assert video.status_code == 200
        assert int(video.headers["Content-Length"]) == len(video.content) == 5_000_000
        assert frame_size(video.content) == (180, 320)
        assert duration_s(video.content) == pytest.approx(8.0, abs=0.05)
