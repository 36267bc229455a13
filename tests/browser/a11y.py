"""Accessibility checks in a real browser: axe-core (the engine of
``@axe-core/playwright``, shipped by the ``axe-playwright-python`` package
of the dev extra) run over the live panel only, and what a keyboard user
sees (the focused element and its outline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from panel_page import JS_PANEL

#: The WCAG 2.1 A and AA rules of axe-core.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
#: Impacts that fail the audit.
BLOCKING = ("serious", "critical")


def axe_source() -> str:
    """axe.min.js as the ``axe-playwright-python`` package ships it."""
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


def audit_panel(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations inside the live panel (the
    outermost widget box of its output: JupyterLab's own interface is not
    audited): ``[{id, impact, help, nodes: [html…]}]``."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source())
    return page.evaluate(
        f"""async (tags) => {{
            const root = {JS_PANEL};
            if (!root) throw new Error('no panel on the page');
            const r = await axe.run(root, {{runOnly: {{type: 'tag', values: tags}},
                                           resultTypes: ['violations']}});
            return r.violations.map(v => ({{id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.html.slice(0, 200))}}));
        }}""", WCAG_TAGS)


def blocking(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violations of impact serious or critical."""
    return [v for v in violations if v["impact"] in BLOCKING]


def report(where: str, violations: list[dict[str, Any]]) -> str:
    """One line per violation (or one line saying there is none), for the test's output."""
    if not violations:
        return f"axe {where}: 0 violations"
    return "\n".join(f"axe {where}: {v['impact']} {v['id']} ({v['help']}) x{len(v['nodes'])}: "
                     f"{v['nodes'][:2]}" for v in violations)


JS_FOCUSED = """() => {
    const el = document.activeElement;
    if (!el) return null;
    const style = getComputedStyle(el);
    const panel = %s;
    return {tag: el.tagName.toLowerCase(), text: (el.innerText || el.value || '').trim().slice(0, 60),
            label: el.getAttribute('aria-label') || el.title || '',
            classes: [...el.classList, ...(el.parentElement ? el.parentElement.classList : [])],
            inPanel: !!panel && panel.contains(el),
            outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
            shadow: style.boxShadow !== 'none'};
}""" % JS_PANEL


def focused(page: Any) -> dict[str, Any] | None:
    """What has the keyboard focus: tag, text, label, classes (its own and its
    parent's), whether it is in the live panel and whether a focus ring shows."""
    return page.evaluate(JS_FOCUSED)
