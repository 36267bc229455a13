"""URL checks shared by validation, the client and the views.

None of these functions raises anything but :class:`ValidationError`:
``urllib.parse`` raises a bare ``ValueError`` for text such as
``http://[bad`` or a port like ``:99999``, and those are caught here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .errors import ValidationError, _excerpt

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: One part of an IPv4 address as ``inet_aton`` reads it: hex, octal or decimal.
_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _split(value: Any) -> SplitResult | None:
    """``urlsplit(value)`` with its port checked, or None when it is not a
    URL that parses (odd brackets, a port that is not 1–65535)."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises ValueError for ":abc" and ":99999"
    except ValueError:
        return None
    if port == 0:
        return None
    return parts


def public_url(url: str) -> str:
    """``url`` without query string, fragment or user info (for logs and
    messages): CDN links carry access tokens in their query."""
    parts = _split(url)
    if parts is None:  # not parseable: cut the query, fragment and user info by hand
        text = str(url)
        for mark in ("?", "#"):
            text = text.split(mark, 1)[0]
        scheme, sep, rest = text.partition("://")
        if sep:
            netloc, slash, path = rest.partition("/")
            text = scheme + sep + netloc.rpartition("@")[2] + slash + path
        return _excerpt(text, 200)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_http_url(value: Any) -> bool:
    """True for an ``http://`` or ``https://`` URL with a host and a valid port."""
    parts = _split(value)
    return parts is not None and parts.scheme.lower() in _DEFAULT_PORTS and bool(parts.hostname)


def check_http_url(value: Any, what: str) -> str:
    """Return ``value`` stripped, or raise :class:`ValidationError` naming
    ``what`` unless it is an http(s) URL with a host and a valid port."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be an http(s) URL string, got {value!r:.80}")
    url = value.strip()
    if not is_http_url(url):
        raise ValidationError(
            f"{what} must be an http:// or https:// URL with a host (and a port "
            f"from 1 to 65535, if any), got {public_url(url)!r:.120}"
        )
    return url


def _canonical_host(host: str) -> str:
    """Lower case, no trailing dot; every loopback spelling (``localhost``,
    ``127.x.x.x``, ``::1``) becomes ``127.0.0.1``: they reach the same server."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_loopback:
        return "127.0.0.1"
    return address.compressed


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, normalised: lower case, default
    port filled in, loopback spellings made one (see :func:`service_of`)."""
    parts = _split(url)
    if parts is None:
        raise ValidationError(f"not a URL: {public_url(url)!r:.120}")
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return scheme, _canonical_host(parts.hostname or ""), port


def service_of(url: str) -> str:
    """The normalised origin of a base URL, ``"https://host:443"``: two URLs
    that reach the same service (``localhost`` and ``127.0.0.1``, an explicit
    default port, upper case) give the same string."""
    scheme, host, port = origin(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` is under the C library's ``inet_aton`` rules,
    which resolvers and HTTP clients follow, or None when it is not one: 1 to 4
    parts between dots, each hex (``0x7f``), octal (a leading ``0``: ``0177``)
    or decimal, the last filling the bytes left (``127.1``, ``10.1``,
    ``2130706433``, ``0x7f000001`` and ``0177.0.0.1`` are all addresses)."""
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p[2:], 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10)
              for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)
