"""Veo's safety filter support codes: a failure whose message ends with
``Support codes: 58061214`` gets the code's category beside the service's
own words (``Support codes: 58061214 (child)``); an unknown code stays as it is.

The table copies Google Cloud's published mapping, "Safety filter code
categories" in *Responsible AI and usage guidelines for Veo*
(https://cloud.google.com/vertex-ai/generative-ai/docs/video/responsible-ai-and-usage-guidelines,
now also under docs.cloud.google.com/gemini-enterprise-agent-platform/models/video/).
"""

from __future__ import annotations

import re

#: Support code → safety category, as published (see the module docstring).
SUPPORT_CODES: dict[str, str] = {
    **dict.fromkeys(("58061214", "17301594"), "child"),
    **dict.fromkeys(("29310472", "15236754"), "celebrity"),
    **dict.fromkeys(("64151117", "42237218"), "video safety violation"),
    "62263041": "dangerous content",
    **dict.fromkeys(("57734940", "22137204"), "hate"),
    **dict.fromkeys(("74803281", "29578790", "42876398"), "other"),
    **dict.fromkeys(("89371032", "49114662", "63429089", "72817394", "60599140"),
                    "prohibited content"),
    **dict.fromkeys(("35561574", "35561575"), "third-party content"),
    **dict.fromkeys(("90789179", "43188360"), "sexual"),
    "78610348": "toxic",
    **dict.fromkeys(("61493863", "56562880"), "violence"),
    "32635315": "vulgar",
}
_PREFIX = re.compile(r"support\s+codes?\s*[:：]\s*", re.IGNORECASE)
#: One listed code, with the category already written after it, if any, and
#: the separator before the next one.
_LISTED = re.compile(r"(\d+)(\s*\([^)]*\))?(\s*(?:[,;/、]|and)?\s*)", re.IGNORECASE)


def explain(message: str) -> str:
    """``message`` with each known support code followed by its category
    in parentheses (once: an explained message stays as it is)."""
    out: list[str] = []
    at = 0
    for prefix in _PREFIX.finditer(message):
        if prefix.start() < at:
            continue
        out.append(message[at:prefix.end()])
        at = prefix.end()
        while (code := _LISTED.match(message, at)) is not None:
            number, named, gap = code.groups()
            category = SUPPORT_CODES.get(number)
            out.append(number + (named or (f" ({category})" if category else "")))
            at = code.end(2) if named else code.end(1)
            after = at + len(gap)
            if not message[after:after + 1].isdigit():  # the list ends here
                break
            out.append(gap)
            at = after
    out.append(message[at:])
    return "".join(out)
