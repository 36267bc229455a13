"""Images from the notebook: a local file, bytes or a PIL image wherever the
service wants an image URL.

The gateway fetches reference, first and last frames itself, by URL: every
integration of it found sends http(s) URLs it can reach (and its sibling
routes refuse inline base64). So a local image goes through an *uploader* the
user configures: a callable ``uploader(data: bytes, filename: str) -> str``
that stores the bytes where the service can fetch them and returns that
public URL (see the README for S3-compatible storage with a presigned GET
URL, and for a plain HTTP image host).

A URL the gateway cannot reach (``localhost``, loopback, private, link-local
and other reserved addresses) is refused before the create is sent, and so
before it is billed; only the emulator, which runs here, may use them.

A re-run of a notebook cell that reuses its earlier task must not upload (or
pay) again: :func:`read_images` reads each local image once, before anything
is sent, and :func:`key_url` names it by the SHA-256 of its bytes, so that
the reuse key is the same on every run while each upload's URL is new.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._urls import check_http_url, inet_aton, public_url
from .errors import ValidationError

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``uploader(data, filename) -> public http(s) URL`` (see the module docstring).
Uploader = Callable[[bytes, str], str]
#: The largest image read from a file or given as bytes (the gateway's limit
#: is lower still for most models).
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: The README section that says how to set an uploader.
HOW_TO = ("set VeoClient(uploader=...) to a function that stores the image where the service "
          "can fetch it and returns its URL (README: 'Images from the notebook')")


#: The image arguments of a create.
IMAGE_ARGS = ("reference_images", "first_image", "last_image")


@dataclasses.dataclass(frozen=True, repr=False)
class LocalImage:
    """A local image read into memory (a path, bytes or a PIL image), to be
    uploaded only when a task is created; :func:`resolve_image` takes it."""

    data: bytes
    name: str

    def __repr__(self) -> str:
        return f"LocalImage({self.name!r}, {len(self.data)} bytes)"


def read_images(images: dict[str, Any]) -> dict[str, Any]:
    """``images`` (any of :data:`IMAGE_ARGS`) with each local image read once
    into a :class:`LocalImage` and each URL as given; nothing is uploaded.
    Raises :class:`~veo_nb.ValidationError` for an image that cannot be read."""
    def read(value: Any, what: str) -> Any:
        if value is None or isinstance(value, LocalImage) or (
                isinstance(value, str) and "://" in value):
            return value
        return LocalImage(*_image_bytes(value, what))

    out = dict(images)
    refs = out.get("reference_images")
    if refs is not None:
        refs = refs if isinstance(refs, (list, tuple)) else [refs]
        out["reference_images"] = [read(v, f"reference_images[{i}]") for i, v in enumerate(refs)]
    for what in ("first_image", "last_image"):
        if what in out:
            out[what] = read(out[what], what)
    return out


def key_url(value: Any) -> Any:
    """What stands for image ``value`` (as :func:`read_images` returns it) in
    the request a re-run's reuse is keyed on: a URL as it is, a local image as
    a URL naming the SHA-256 of its bytes on a host that never resolves
    (``.invalid``), so the request is checked as the real one is."""
    if isinstance(value, LocalImage):
        return f"https://local-image.invalid/sha256/{hashlib.sha256(value.data).hexdigest()}"
    if isinstance(value, list):
        return [key_url(v) for v in value]
    return value


def resolve_image(value: Any, what: str, *, uploader: Uploader | None, local_ok: bool) -> str:
    """The URL to send for image ``value`` (named ``what`` in errors): an
    http(s) URL as it is, or a local path, bytes or PIL image uploaded with
    ``uploader``. Raises :class:`~veo_nb.ValidationError` before anything is
    sent: no uploader for a local image, an image too large, a URL the service
    cannot reach (unless ``local_ok``: the emulator)."""
    if isinstance(value, str) and "://" in value:
        return check_reachable(check_http_url(value, what), what, local_ok=local_ok)
    data, name = _image_bytes(value, what)
    if uploader is None:
        raise ValidationError(f"{what} is a local image ({name}), and the service fetches "
                              f"images by URL: {HOW_TO}")
    try:
        url = uploader(data, name)
    except Exception as exc:  # noqa: BLE001 - the user's code: say which image it was
        raise ValidationError(f"the uploader failed for {what} ({name}): "
                              f"{type(exc).__name__}: {exc}") from exc
    url = check_http_url(url, f"the URL the uploader returned for {what}")
    return check_reachable(url, f"the URL the uploader returned for {what}", local_ok=local_ok)


def check_reachable(url: str, what: str, *, local_ok: bool) -> str:
    """``url``, unless the service could not fetch it from the internet (then
    a :class:`~veo_nb.ValidationError`, before anything is sent), or
    ``local_ok``. Its host is read as the resolver reads it: a number in any
    ``inet_aton`` spelling (``127.1``, ``0x7f000001``, ``2130706433``), an IP
    literal (IPv4-mapped IPv6 too), else a name resolved here; it is refused
    when it does not resolve or when ANY of its addresses is loopback,
    private, link-local, reserved, multicast or unspecified."""
    if local_ok:
        return url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if host.endswith((".localhost", ".local", ".internal")):  # never public; not always resolved
        raise _unreachable(url, what, f"{host!r} names this machine or a local network")
    for found in _addresses(url, what, host, parts.port):
        # an IPv4-mapped IPv6 address (::ffff:127.0.0.1) reaches its IPv4 one
        mapped = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
        address = mapped or found
        kind = _not_public(address)
        if kind is not None:
            raise _unreachable(url, what, f"{host!r} is {address.compressed}: {kind}")
    return url


def _addresses(url: str, what: str, host: str, port: int | None) -> set[_IPAddress]:
    """Every address ``host`` stands for, as a connection to it would pick one."""
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    number = inet_aton(host)
    if number is not None:
        return {number}
    try:
        found = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValidationError(
            f"{what} {public_url(url)!r}: its host {host!r} does not resolve here ({reason}), "
            "so nothing was sent: check the spelling of the URL, use a public http(s) URL, "
            f"or pass the file and {HOW_TO}") from None
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found}


def _not_public(address: _IPAddress) -> str | None:
    """Why the internet cannot reach ``address`` (``"loopback"``, ``"private"``
    …), or None for a public one."""
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def _unreachable(url: str, what: str, why: str) -> ValidationError:
    return ValidationError(
        f"{what} {public_url(url)!r} points at this machine or a private network ({why}), "
        "which the service cannot reach, and nothing was sent: use a public http(s) URL, "
        f"or pass the file and {HOW_TO}")


def _image_bytes(value: Any, what: str) -> tuple[bytes, str]:
    """The bytes and a file name of a local image: a path, bytes, a PIL image
    or a :class:`LocalImage` already read."""
    if isinstance(value, LocalImage):
        return value.data, value.name
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, name = bytes(value), "image"
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        try:
            if not os.fspath(value) or not path.is_file():
                raise FileNotFoundError(2, "not a file")
            size = path.stat().st_size
        except OSError as exc:
            raise ValidationError(f"{what} must be an http(s) URL, an image file, bytes or a "
                                  f"PIL image; {os.fspath(value)!r:.120} is neither a URL nor "
                                  f"a file that can be read ({exc.strerror})") from None
        if size > MAX_IMAGE_BYTES:
            raise ValidationError(f"{what} {path.name} is {size} bytes, over "
                                  f"{MAX_IMAGE_BYTES} bytes: use a smaller image")
        try:
            data, name = path.read_bytes(), path.name
        except OSError as exc:
            raise ValidationError(f"{what}: cannot read {path.name} ({exc.strerror})") from None
    elif callable(getattr(value, "save", None)) and hasattr(value, "mode"):  # a PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data, name = buffer.getvalue(), "image.png"
    else:
        raise ValidationError(f"{what} must be an http(s) URL, an image file, bytes or a PIL "
                              f"image, not {type(value).__name__}")
    if not data:
        raise ValidationError(f"{what} ({name}) is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValidationError(f"{what} ({name}) is {len(data)} bytes, over {MAX_IMAGE_BYTES}")
    return data, name
