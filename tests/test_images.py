"""Images from the notebook (issue #18): a local file, bytes or a PIL image
wherever an image URL goes, through the user's uploader; URLs the gateway
cannot reach refused before anything is sent."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

import veo_nb
from veo_nb import Tracker, ValidationError, VeoClient
from veo_nb.emulator import Emulator

#: A 1×1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


class Uploads:
    """An uploader that keeps what it was given and returns a public-looking URL."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, str]] = []

    def __call__(self, data: bytes, filename: str) -> str:
        self.got.append((data, filename))
        return f"https://images.example.org/{hashlib.sha256(data).hexdigest()[:16]}.png"


def test_local_images_go_through_the_uploader_and_reach_the_service_as_urls(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "frame.png"
    path.write_bytes(PNG)
    uploads = Uploads()
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(uploader=uploads), store=tmp_path / "h.sqlite",
                    media_dir=tmp_path / "v") as tracker:
        task = tracker.submit("from a file [duration: 121]", first_image=path, last_image=PNG)
        refs = tracker.submit("from PIL [duration: 121]",
                              reference_images=[Image.new("RGB", (4, 4)),
                                                "https://images.example.org/given.png"])
        first = tracker.record(task.id).request
        second = tracker.record(refs.id).request
    assert [name for _, name in uploads.got] == ["frame.png", "image", "image.png"]
    assert uploads.got[0][0] == PNG and uploads.got[2][0].startswith(b"\x89PNG")
    assert first["first_image"].startswith("https://images.example.org/")
    assert first["last_image"].startswith("https://images.example.org/")
    assert second["input_reference"][1] == "https://images.example.org/given.png"
    assert emu.stats.creates == 2


def test_without_an_uploader_a_local_image_is_refused_before_any_request(tmp_path: Path) -> None:
    path = tmp_path / "frame.png"
    path.write_bytes(PNG)
    with Emulator(time_scale=0.01, video_size="sample") as emu:
        client = emu.client()
        for image in (path, PNG, str(path)):
            with pytest.raises(ValidationError, match="uploader"):
                client.create_video("a fox", first_image=image)
        with pytest.raises(ValidationError, match="neither a URL nor a file"):
            client.create_video("a fox", first_image=str(tmp_path / "missing.png"))
        assert emu.stats.requests_total == 0


@pytest.mark.parametrize("url", ["http://localhost:8000/a.png", "http://127.0.0.1/a.png",
                                 "https://192.168.1.20/a.png", "http://10.0.0.5/a.png",
                                 "http://[::1]/a.png", "http://169.254.169.254/a.png",
                                 "http://printer.local/a.png"])
def test_urls_the_gateway_cannot_reach_are_refused_before_the_create(url: str) -> None:
    """Only for a client of the real service (or any non-local one): the
    create would be billed and then fail on the gateway's side. Nothing is
    sent: this client's host does not even exist."""
    client = VeoClient("sk-not-real", "https://gateway.invalid/kyyReactApiServer", max_retries=0)
    with pytest.raises(ValidationError, match="cannot reach"):
        client.create_video("a fox", first_image=url)
    with pytest.raises(ValidationError, match="cannot reach"):
        VeoClient("sk-not-real", "https://gateway.invalid/kyyReactApiServer",
                  uploader=lambda data, name: url).create_video("a fox", first_image=PNG)


def test_the_panel_offers_a_file_picker_when_an_uploader_is_set(tmp_path: Path) -> None:
    uploads = Uploads()
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample") as emu:
        with Tracker(emu.client(), store=tmp_path / "a.sqlite", media_dir=tmp_path / "v") as plain:
            view = veo_nb.panel(plain)
            try:
                assert view.submit_form.files is None
            finally:
                view.close()
        with Tracker(emu.client(uploader=uploads), store=tmp_path / "b.sqlite",
                     media_dir=tmp_path / "v") as tracker:
            view = veo_nb.panel(tracker)
            try:
                form = view.submit_form
                form.mode.value = "first_last"
                assert form.files in form.images.children
                form.files.value = ({"name": "f.png", "type": "image/png", "size": len(PNG),
                                     "content": memoryview(PNG),
                                     "last_modified": datetime.now(timezone.utc)},)
                form.prompt.value = "a fox from my photo [duration: 121]"
                form.submit()
                assert "submitted" in view.message.value, view.message.value
            finally:
                view.close()
            (record,) = tracker.records()
    assert uploads.got == [(PNG, "image")]
    assert record.request["first_image"].startswith("https://images.example.org/")


#: Image URLs the gateway cannot fetch, spelled as a resolver reads them: numbers
#: in every inet_aton form, IPv6 (IPv4-mapped too), and a name that resolves to
#: loopback.
UNREACHABLE = {
    "http://2130706433/a.png": "127.0.0.1: loopback",
    "http://0x7f000001/a.png": "127.0.0.1: loopback",
    "http://127.1/a.png": "127.0.0.1: loopback",
    "http://0177.0.0.1/a.png": "127.0.0.1: loopback",
    "http://0/a.png": "0.0.0.0: unspecified",
    "http://10.1/a.png": "10.0.0.1: private",
    "http://0xa9fea9fe/latest/meta-data": "169.254.169.254: link-local",
    "http://0xA9.0376.43518/a.png": "169.254.169.254: link-local",
    "http://[::ffff:127.0.0.1]/a.png": "127.0.0.1: loopback",
    "http://[::ffff:a9fe:a9fe]/a.png": "169.254.169.254: link-local",
    "http://[fe80::1]/a.png": "fe80::1: link-local",
    "http://224.0.0.1/a.png": "224.0.0.1: multicast",
    "http://localhost:8000/a.png": "127.0.0.1: loopback",  # resolved here, as the gateway would
}


@pytest.mark.parametrize("url", list(UNREACHABLE))
def test_numeric_and_resolved_hosts_are_refused_before_anything_is_billed(
        url: str, tmp_path: Path) -> None:
    # A client of a service that is not on loopback (0.0.0.0 reaches the
    # emulator here, yet is not the demo): its images must be fetchable.
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample") as emu, \
            Tracker(VeoClient(emu.api_key, emu.base_url.replace("127.0.0.1", "0.0.0.0"),
                              time_scale=0.01), store=tmp_path / "h.sqlite",
                    media_dir=tmp_path / "v") as tracker:
        with pytest.raises(ValidationError, match="cannot reach") as info:
            tracker.submit("a fox", reference_images=[url])
        assert UNREACHABLE[url] in str(info.value) and "public http(s) URL" in str(info.value)
        with pytest.raises(ValidationError, match="cannot reach"):
            tracker.submit("a fox", first_image=url)
        assert emu.stats.creates == 0 and emu.stats.requests_total == 0
        assert tracker.records() == [] and tracker.spending()["tasks"] == 0
        # the same tracker does reach the service: a public address is sent
        task = tracker.submit("a fox", reference_images=["http://93.184.216.34/a.png",
                                                         "https://[2606:4700::1111]/b.png"])
        assert emu.stats.creates == 1 and tracker.record(task.id).request["input_reference"]


def test_a_host_that_does_not_resolve_is_refused_before_anything_is_billed(tmp_path: Path) -> None:
    with Emulator(time_scale=0.01, failure_rate=0, video_size="sample") as emu, \
            Tracker(VeoClient(emu.api_key, emu.base_url.replace("127.0.0.1", "0.0.0.0"),
                              time_scale=0.01), store=tmp_path / "h.sqlite",
                    media_dir=tmp_path / "v") as tracker:
        with pytest.raises(ValidationError, match="does not resolve here") as info:
            tracker.submit("a fox", reference_images=["https://images.invalid/a.png?sig=SECRET"])
        assert "images.invalid" in str(info.value) and "SECRET" not in str(info.value)
        assert emu.stats.creates == 0 and tracker.records() == []


@pytest.mark.parametrize("host", [
    "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "0", "10.1", "0xA9.0376.43518",
    "00000000000177.1", "0X7F.1", "1.0x10000", "1.16777215", "0xffffffff", "037777777777",
    "8.8.8.8", "256.1.1.1", "1.2.3.4.5", "0x", "1..2", "09", "1e3", "+1", "4294967296",
    "1.16777216", "0x100.1", "040000000000", ".1", "", "images.example.org"])
def test_hosts_are_read_as_the_c_library_reads_them(host: str) -> None:
    import ipaddress
    import socket

    from veo_nb._urls import inet_aton

    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    assert inet_aton(host) == expected
