"""Small helpers over widget trees: cheap updates, walking, closing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import ipywidgets as widgets


def set_if_changed(widget: widgets.Widget, name: str, value: Any) -> None:
    """Assign ``widget.name = value`` only when it differs (one message fewer)."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)


def walk(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    """``widget`` and every widget below it: children, layouts and styles."""
    stack = [widget]
    seen: set[int] = set()
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        yield w
        stack.extend(c for c in getattr(w, "children", ()) if isinstance(c, widgets.Widget))
        stack.extend(s for s in (getattr(w, "layout", None), getattr(w, "style", None))
                     if isinstance(s, widgets.Widget))


def close_tree(widget: widgets.Widget, keep: Iterable[widgets.Widget] = ()) -> None:
    """Close ``widget`` and everything below it (layouts and styles too),
    except the widgets in ``keep`` (children, layouts or styles) and what
    lies below them. Boxes lose their
    children, so a closed tree holds no reference to what it showed."""
    spared = {id(w) for w in keep}
    stack = [widget]
    while stack:
        w = stack.pop()
        if id(w) in spared:
            continue
        children = getattr(w, "children", ())
        stack.extend(c for c in children if isinstance(c, widgets.Widget))
        for part in ("layout", "style"):
            sub = getattr(w, part, None)
            if isinstance(sub, widgets.Widget) and id(sub) not in spared:
                sub.close()
        w.close()
        if children:
            w.children = ()
