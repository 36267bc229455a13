"""The API reference site (``make docs``): it lists exactly what ``veo_nb``
exports, every exported name says what it is, and the strict build passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import veo_nb

ROOT = Path(__file__).resolve().parents[1]


def _documented() -> list[str]:
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    return [path.rsplit(".", 1)[-1] for path in re.findall(r"^::: ([\w.]+)$", text, re.M)]


def test_the_reference_lists_exactly_the_public_api() -> None:
    documented = _documented()
    assert len(documented) == len(set(documented)), "a name is listed twice"
    assert sorted(documented) == sorted(veo_nb.__all__)


def test_every_public_name_has_a_docstring() -> None:
    bare = [name for name in veo_nb.__all__
            if not (getattr(veo_nb, name).__doc__ or "").strip()]
    assert not bare, f"no docstring: {bare}"


@pytest.mark.slow
def test_the_site_builds_strictly_without_a_warning(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    out = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert not re.findall(r"^(?:WARNING|ERROR)\b.*$", log, re.M), log[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="veo_nb\.(?:widgets\.)?(\w+)"', reference))
    assert set(veo_nb.__all__) <= anchors, set(veo_nb.__all__) - anchors
    assert 'id="veo_nb.Tracker.submit"' in reference  # methods of the parts a Tracker is made of
    assert ":class:" not in reference  # Sphinx roles read as code
    assert (tmp_path / "site" / "notebooks" / "zh" / "01_quickstart" / "index.html").is_file()
