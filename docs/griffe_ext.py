"""A griffe extension for the API reference (mkdocs.yml loads it through mkdocstrings).

veo_nb's docstrings are written for Sphinx: ``:class:`~veo_nb.Tracker```,
``:meth:`submit```, ``:func:`connect```, ``:data:``, ``:attr:``, ``:mod:``.
mkdocstrings reads Markdown, where such a role is plain text, so this extension
rewrites each one, as the package is loaded, into what Sphinx would have made
of it:

- a name of veo_nb, resolved the way Sphinx resolves it (the object's own
  members, inherited ones included, then each enclosing scope, then the
  module's imports), becomes an autorefs cross-reference,
  ``[`Tracker`][veo_nb.tracker.Tracker]``, when the site documents it: a
  name of ``veo_nb.__all__`` or one of its public members. A name on the site
  that did not render (a member without a docstring) or that resolves to
  nothing (a typo, a renamed function) stays a link, a broken one, which
  fails ``mkdocs build --strict``;
- a name of veo_nb that exists but that the site does not document (a private
  module such as ``veo_nb._answers``, a helper outside ``__all__``) becomes a
  code span: a pointer for readers of the code, not a dead link;
- a name outside veo_nb (a builtin such as ``KeyError``, the standard library,
  another package) becomes a code span too, since the site has no inventory
  of those documentation sets.

``~`` keeps the last component as the text, ``text <target>`` gives the text,
``!`` suppresses the link; as in Sphinx.

It also makes the names that ``veo_nb/__init__.py`` loads lazily (through the
module ``__getattr__``: ``panel``, ``VeoPanel``) members of the package, so
``::: veo_nb.panel`` works: griffe reads the source and cannot see them.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import griffe

#: ``:role:`body``` with the roles of Sphinx's Python domain (``:py:`` prefix optional).
ROLE = re.compile(r":(?:py:)?(?P<role>class|meth|func|data|attr|mod|exc|obj|const|type):`(?P<body>[^`]+)`")
EXPLICIT = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", re.DOTALL)


class SphinxRoles(griffe.Extension):
    """Sphinx roles in docstrings to autorefs cross-references; lazy exports to members."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        _add_lazy_exports(pkg)
        documented = _documented_roots(pkg)
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value, documented)

    # griffe 1.x's name for on_package (2.0 renamed it); running both is harmless: a
    # rewritten docstring has no role left, a lazy export is a member by then.
    on_package_loaded = on_package


def _rewrite(obj: griffe.Object, text: str, documented: set[str]) -> str:
    return ROLE.sub(lambda match: _crossref(obj, match, documented), text)


def _exports(pkg: griffe.Module) -> list[str]:
    return [str(name) for name in pkg.exports or ()]


def _add_lazy_exports(pkg: griffe.Module) -> None:
    """Names of ``__all__`` the source does not bind, as aliases of what they are at run time."""
    missing = [name for name in _exports(pkg) if name not in pkg.members]
    if not missing:
        return
    module = importlib.import_module(pkg.path)
    for name in missing:
        value = getattr(module, name)  # an AttributeError here is a genuinely broken __all__
        target = f"{value.__module__}.{value.__qualname__}"
        pkg.set_member(name, griffe.Alias(name, target, parent=pkg))


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """Every object defined in the package (aliases are someone else's object)."""
    yield obj
    for member in obj.members.values():
        if not isinstance(member, griffe.Alias):
            yield from _objects(member)


def _documented_roots(pkg: griffe.Module) -> set[str]:
    """The paths under which the site documents objects: ``veo_nb.NAME`` for each
    name of ``__all__``, and the path where that object is defined."""
    roots = set()
    for name in _exports(pkg):
        roots.add(f"{pkg.path}.{name}")
        member = pkg.members.get(name)
        if member is not None:
            try:
                roots.add(member.final_target.path if isinstance(member, griffe.Alias)
                          else member.path)
            except griffe.AliasResolutionError:
                pass
    return roots


def _on_site(path: str, roots: set[str]) -> bool:
    """Whether ``path`` is a documented object or one of its public members."""
    return any(path == root or (path.startswith(root + ".") and not any(
        part.startswith("_") for part in path[len(root) + 1:].split(".")))
        for root in roots)


def _exists(pkg: griffe.Module, path: str) -> bool:
    try:
        pkg.modules_collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _crossref(obj: griffe.Object, match: re.Match[str], documented: set[str]) -> str:
    body = " ".join(match["body"].split())
    explicit = EXPLICIT.fullmatch(body)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        target = body.lstrip("~!")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    if body.startswith("!"):
        return f"`{title}`"
    path = _resolve(obj, target.lstrip(".~!").removesuffix("()"), module=match["role"] == "mod")
    if path is None or (_exists(obj.package, path) and not _on_site(path, documented)):
        return f"`{title}`"
    return f"[`{title}`][{path}]"


def _resolve(obj: griffe.Object, target: str, *, module: bool = False) -> str | None:
    """The full path of ``target`` as seen from ``obj``; None outside the package
    (``module``: the target is a module, as in ``:mod:``)."""
    root = obj.package.name
    first, _, rest = target.partition(".")
    if first == root:
        return target
    scope: griffe.Object | None = obj
    while scope is not None:
        members = scope.members
        if scope.is_class:
            try:
                members = scope.all_members
            except griffe.AliasResolutionError:
                pass
        if first in members:
            member = members[first]
            path = member.target_path if isinstance(member, griffe.Alias) else member.path
            if path != root and not path.startswith(root + "."):
                return None  # imported from elsewhere: dataclasses, time, ...
            return f"{path}.{rest}" if rest else path
        if scope.is_class and scope.name == first:
            return f"{scope.path}.{rest}" if rest else scope.path
        scope = scope.parent
    if hasattr(builtins, first) or ((rest or module) and _importable(first)):
        return None
    return target  # unknown: left as a link, which fails the strict build


def _importable(name: str) -> bool:
    """A top-level module outside veo_nb (the standard library, another package)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
