"""The API reference site (``make docs``, mkdocs.yml): it documents exactly
``veo_nb.__all__``, every public name has a docstring, and ``mkdocs build
--strict`` succeeds without a warning, and fails on a broken cross-reference or
a public name left out of the reference.

The reference pages (docs/reference/) name each object with a mkdocstrings
directive, ``::: veo_nb.NAME``, on a line of its own; the docstrings keep their
Sphinx roles, which docs/griffe_ext.py turns into cross-references.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import veo_nb

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: A mkdocstrings directive: ``::: identifier`` on a line of its own.
DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)
#: A log line of level WARNING (or worse), colours or not.
WARNING = re.compile(r"(?:\x1b\[[\d;]*m)*\s*(?:WARNING|ERROR)\b")


def _directives(docs: Path = DOCS) -> list[str]:
    return [ident for page in sorted(docs.rglob("*.md"))
            for ident in DIRECTIVE.findall(page.read_text(encoding="utf-8"))]


def test_the_reference_lists_exactly_the_public_names() -> None:
    idents = _directives()
    assert idents, "no '::: veo_nb.NAME' directive under docs/"
    outside = [i for i in idents if not re.fullmatch(r"veo_nb\.\w+", i)]
    assert not outside, f"directives for something other than a name of veo_nb: {outside}"
    names = [i.removeprefix("veo_nb.") for i in idents]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"documented more than once: {twice}"
    missing = [n for n in veo_nb.__all__ if n not in names]
    assert not missing, f"public names (veo_nb.__all__) missing from docs/reference/: {missing}"
    extra = [n for n in names if n not in veo_nb.__all__]
    assert not extra, f"documented but not in veo_nb.__all__: {extra}"


def test_every_public_name_has_a_docstring() -> None:
    """As the site sees them: griffe reads the source (a dataclass without a
    docstring still has a ``__doc__``, its signature, at run time)."""
    import griffe

    extensions = griffe.load_extensions(f"{DOCS / 'griffe_ext.py'}:SphinxRoles")
    package = griffe.load("veo_nb", search_paths=[str(REPO)], extensions=extensions,
                          docstring_parser="sphinx")
    assert isinstance(package.filepath, Path)
    assert package.filepath.resolve().parent == REPO / "veo_nb", "not this checkout's veo_nb"
    empty = [name for name in veo_nb.__all__
             if name not in package.members
             or not (package[name].docstring and package[name].docstring.value.strip())]
    assert not empty, f"public names without a docstring: {empty}"


def test_sphinx_roles_become_links_to_the_site_or_code(tmp_path: Path) -> None:
    """docs/griffe_ext.py on a small package: names the site documents become
    links, names outside it code, and a name that is nowhere stays a link (which
    the strict build reports as broken)."""
    import griffe

    package = tmp_path / "rolespkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""A package."""\nfrom .mod import Thing\n__all__ = ["Thing"]\n', encoding="utf-8")
    (package / "_private.py").write_text(
        'def helper():\n    """Helps."""\n', encoding="utf-8")
    (package / "mod.py").write_text(
        "import time\n\n"
        "class Thing:\n"
        '    """:meth:`go`, :class:`~rolespkg.Thing`, :meth:`Thing.go <rolespkg.Thing.go>`,\n'
        "    :class:`KeyError`, :func:`time.monotonic`, :mod:`gettext`,\n"
        "    :mod:`rolespkg._private`, :func:`~rolespkg._private.helper`,\n"
        '    :func:`nowhere`, :meth:`_hidden`, :attr:`!go`."""\n\n'
        "    def go(self):\n"
        '        """Goes (see :meth:`stop`)."""\n\n'
        "    def _hidden(self):\n"
        '        """Private."""\n',
        encoding="utf-8")
    extensions = griffe.load_extensions(f"{DOCS / 'griffe_ext.py'}:SphinxRoles")
    loaded = griffe.load("rolespkg", search_paths=[str(tmp_path)], extensions=extensions)
    doc = loaded["mod.Thing"].docstring.value
    for expected in ["[`go`][rolespkg.mod.Thing.go]", "[`Thing`][rolespkg.Thing]",
                     "[`Thing.go`][rolespkg.Thing.go]",
                     "`KeyError`,", "`time.monotonic`,", "`gettext`,",
                     "`rolespkg._private`,", "`helper`,",
                     "[`nowhere`][nowhere]", "`_hidden`,", "`go`."]:
        assert expected in doc, (expected, doc)
    assert ":meth:" not in doc and ":class:" not in doc
    # a member that does not exist: a broken link, not a quiet code span
    assert loaded["mod.Thing.go"].docstring.value == "Goes (see [`stop`][stop])."


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the checkout at ``root``, as ``make docs`` runs it
    (``python -m``: the checkout's own veo_nb comes first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_site_builds_strict_without_warnings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = _build(REPO, site)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    warnings = [line for line in output.splitlines() if WARNING.match(line)]
    assert not warnings, output
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert {"index.html", "ARCHITECTURE.html", "notebooks/01_quickstart.html",
            "notebooks/zh/01_quickstart.html"} <= pages, sorted(pages)
    reference = "".join((site / "reference" / p).read_text(encoding="utf-8")
                        for p in os.listdir(site / "reference"))
    for name in veo_nb.__all__:
        assert f'id="veo_nb.{name}"' in reference, f"veo_nb.{name} has no entry on the site"
    for method in ("submit", "track", "remove", "record", "wait", "tasks"):  # from every part
        assert f'id="veo_nb.Tracker.{method}"' in reference, f"Tracker.{method} is not on the site"
    # The Sphinx roles became links, none is left as text.
    assert not re.search(r":(class|meth|func|data|attr|mod|exc):`", reference)
    assert 'href="records.html#veo_nb.Task"' in reference


def _copy_checkout(dest: Path) -> Path:
    """What the build reads, copied: the package, docs/, the notebooks, the README."""
    skip = shutil.ignore_patterns("__pycache__", "veo_nb_data", ".ipynb_checkpoints")
    for folder in ("veo_nb", "docs", "notebooks"):
        shutil.copytree(REPO / folder, dest / folder, ignore=skip)
    for file in ("mkdocs.yml", "README.md"):
        shutil.copy2(REPO / file, dest / file)
    return dest


def _break_a_reference(root: Path) -> str:
    errors = root / "veo_nb" / "errors.py"
    source = errors.read_text(encoding="utf-8")
    head = 'class VeoError(Exception):\n    """'
    assert head in source, "VeoError's docstring moved: update this test"
    errors.write_text(source.replace(head, head + "See :class:`~veo_nb.NoSuchError`. ", 1),
                      encoding="utf-8")
    return "veo_nb.NoSuchError"


def _leave_a_name_out(root: Path) -> str:
    name = veo_nb.__all__[-1]
    line = re.compile(rf"^:::\s+veo_nb\.{name}\s*$\n?", re.MULTILINE)
    for page in (root / "docs").rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        if line.search(text):
            page.write_text(line.sub("", text), encoding="utf-8")
            return name
    raise AssertionError(f"no '::: veo_nb.{name}' under docs/")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("spoil", [_break_a_reference, _leave_a_name_out],
                         ids=["broken-cross-reference", "undocumented-public-name"])
def test_the_strict_build_fails(tmp_path: Path, spoil: object) -> None:
    root = _copy_checkout(tmp_path / "checkout")
    culprit = spoil(root)  # type: ignore[operator]
    proc = _build(root, tmp_path / "site")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    warnings = [line for line in output.splitlines() if WARNING.match(line)]
    assert any(culprit in line for line in warnings), output
