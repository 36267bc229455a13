"""mkdocs hooks of the reference site (``mkdocs.yml``): the README is the
home page (its links into ``docs/`` made relative to the site), and Sphinx
roles in the docstrings (``:class:`~veo_nb.Tracker```) read as code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj):<code>~?([\w.]+)</code>")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """The home page is the README, its ``docs/…`` links pointing into the site."""
    if page.file.src_uri == "index.md":
        return README.read_text(encoding="utf-8").replace("](docs/", "](")
    return markdown


def on_page_content(html: str, **_: Any) -> str:
    """``:class:`~veo_nb.Tracker``` in a docstring reads as ``Tracker``."""
    return _ROLE.sub(lambda m: f"<code>{m.group(1).rsplit('.', 1)[-1]}</code>", html)
