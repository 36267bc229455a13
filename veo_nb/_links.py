"""Where the video's link is in a task answer: a named field
(:data:`LINK_FIELDS`), a list of links (:data:`LINK_LIST_FIELDS`,
``outputs: [{"url": ...}]``), and, as a last resort for a completed task,
the one link to a video found anywhere in the answer (:func:`search`).

A link may be relative to the API's origin (``/files/abc.mp4``): the client
resolves it (:func:`resolve`), and sends the key with it only when it is the
API's own origin (see :mod:`veo_nb._download_http`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

#: Fields that may hold the video's link, in order of preference.
LINK_FIELDS = ("video_url", "result_url", "url", "videoUrl", "resultUrl", "output_url",
               "outputUrl", "download_url", "downloadUrl")
#: Fields that may hold a list of links (or of ``{"url": ...}`` objects), the
#: video's first.
LINK_LIST_FIELDS = ("video_urls", "videoUrls", "urls", "outputs", "output", "videos", "results")
#: Keys of an object in such a list that may hold its link.
_ITEM_LINK_KEYS = ("url", "video_url", "videoUrl", "uri", "href", "download_url")
#: Parts of a field's name that say its link is not the video (the request's
#: images, a preview, a callback).
_NOT_VIDEO_KEYS = re.compile(
    r"image|img|thumb|cover|poster|preview|avatar|reference|input|first|last|callback|"
    r"webhook|notify|icon|logo|audio", re.IGNORECASE)
_IMAGE_PATH = re.compile(r"\.(png|jpe?g|gif|webp|bmp|svg|ico|heic|avif|json|txt|html?)$",
                         re.IGNORECASE)
_VIDEO_PATH = re.compile(r"\.(mp4|m4v|mov|webm|mkv|m3u8|mpd)$", re.IGNORECASE)
_MAX_DEPTH = 12


def named(task: Mapping[str, Any]) -> str | None:
    """The link under a known field or list of links, else None."""
    for key in LINK_FIELDS:
        link = _as_link(task.get(key), strict=False)
        if link is not None:
            return link
    for key in LINK_LIST_FIELDS:
        value = task.get(key)
        items = value if isinstance(value, list) else [value] if isinstance(value, Mapping) else []
        for item in items:
            link = _item_link(item)
            if link is not None:
                return link
    return None


def search(answer: Mapping[str, Any]) -> str | None:
    """The last resort: the one http(s) or relative link to a video anywhere
    in ``answer`` (links whose field or path says they are something else,
    such as the request's images, are left out; links that look like videos,
    ``.mp4`` and the like, are preferred). None unless exactly one remains."""
    candidates = {link for key, link in _strings(answer, "", 0)
                  if is_link(link) and not _NOT_VIDEO_KEYS.search(key)
                  and not _IMAGE_PATH.search(_path(link))}
    videos = {c for c in candidates if _looks_like_video(c)}
    relative = {c for c in candidates if not c.lower().startswith(("http://", "https://"))}
    pool = videos or (candidates - relative)  # a relative link only when it names a video
    return next(iter(pool)) if len(pool) == 1 else None


def is_link(text: str) -> bool:
    """An absolute http(s) link, or one relative to the API's origin
    (``/files/abc.mp4``), with no space in it."""
    if not text or any(c.isspace() for c in text):
        return False
    lower = text.lower()
    if lower.startswith(("http://", "https://")):
        try:
            return bool(urlsplit(text).hostname)
        except ValueError:  # "http://[bad/": not a link (and refused at the download)
            return False
    return text.startswith("/") and not text.startswith("//") and len(text) > 1


def resolve(link: str | None, base_url: str) -> str | None:
    """``link`` made absolute against the origin of ``base_url`` (the API's)
    when it is a path on it (``/files/abc.mp4``); any other link as it is (a
    scheme-relative ``//host/x.mp4`` or a non-http one is refused later, at
    the download)."""
    if link is None or not is_link(link) or link.lower().startswith(("http://", "https://")):
        return link
    return urljoin(base_url, link)


def _as_link(value: Any, *, strict: bool = True) -> str | None:
    """A link from a field's value: any non-empty string under a field named
    for the link (``strict=False``), else only what :func:`is_link` accepts."""
    if isinstance(value, str) and value.strip() and (not strict or is_link(value.strip())):
        return value.strip()
    return None


def _item_link(item: Any) -> str | None:
    if isinstance(item, Mapping):
        for key in _ITEM_LINK_KEYS:
            link = _as_link(item.get(key))
            if link is not None:
                return link
        return None
    return _as_link(item)


def _looks_like_video(link: str) -> bool:
    path = _path(link)
    return bool(_VIDEO_PATH.search(path)) or "video" in path.lower()


def _path(link: str) -> str:
    """The path of a link that :func:`is_link` accepted (never raises)."""
    try:
        return urlsplit(link).path
    except ValueError:
        return ""


def _strings(value: Any, key: str, depth: int) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` with the name of the field it is under."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        yield key, value.strip()
    elif isinstance(value, Mapping):
        for name, inner in value.items():
            yield from _strings(inner, str(name), depth + 1)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner, key, depth + 1)
