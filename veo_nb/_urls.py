"""URL checks shared by validation, the client and the views."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ValidationError


def public_url(url: str) -> str:
    """``url`` without query string, fragment or user info (for logs and
    messages): CDN links carry access tokens in their query."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_http_url(value: Any) -> bool:
    """True for an ``http://`` or ``https://`` URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def check_http_url(value: Any, what: str) -> str:
    """Return ``value`` stripped, or raise :class:`ValidationError` naming
    ``what`` unless it is an http(s) URL with a host."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be an http(s) URL string, got {value!r:.80}")
    url = value.strip()
    if not is_http_url(url):
        raise ValidationError(
            f"{what} must be an http:// or https:// URL, got {public_url(url)!r:.120}"
        )
    return url
