"""The message catalog: every word the panel, its text fallback and the
summary tables show goes through :func:`_` (gettext), so it reads in the
reader's language.

Languages: English (the messages as written in the code) and Simplified
Chinese (``veo_nb/locale/zh_CN/LC_MESSAGES/veo_nb.po``, compiled to the
``.mo`` next to it that :mod:`gettext` reads). Which one is shown:

1. ``veo_nb.panel(..., lang="zh_CN")`` or :func:`set_language` (for this kernel);
2. else ``VEO_NB_LANG``;
3. else the kernel's locale: ``LANGUAGE``, ``LC_ALL``, ``LANG``;
4. else English.

A value that names no language of the catalog (``fr_FR``, ``C``) is skipped.

Adding a string: write ``_("text with {placeholders}")`` (``N_()`` where the
text is chosen before the language is known, then ``_()`` where it is shown),
run ``scripts/compile_catalogs.py --update`` (it adds the new entry to every
``.po``), translate it there, and run ``scripts/compile_catalogs.py`` (it
writes the ``.mo``). ``tests/test_i18n.py`` fails while a string is missing
or untranslated, or a ``.mo`` is stale. Values are formatted into the
translated text *after* translation, and escaped there when it is HTML.
"""

from __future__ import annotations

import gettext
import os
import threading
from pathlib import Path

#: Where the catalogs are: ``locale/<lang>/LC_MESSAGES/veo_nb.mo``.
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "veo_nb"
#: The languages of the catalog (English is the code's own text).
LANGUAGES: tuple[str, ...] = ("en", "zh_CN")
#: Environment variables read for the language, in order.
LANGUAGE_ENV: tuple[str, ...] = ("VEO_NB_LANG", "LANGUAGE", "LC_ALL", "LANG")

_lock = threading.Lock()
_chosen: str | None = None
_catalogs: dict[str, gettext.NullTranslations] = {}


def normalize(tag: str | None) -> str | None:
    """The catalog language a locale name or language tag means (``zh``,
    ``zh-CN``, ``zh_CN.UTF-8``, ``zh-Hans`` -> ``zh_CN``; ``en_US`` -> ``en``),
    or None when the catalog has no such language."""
    if not tag:
        return None
    base = tag.split(".", 1)[0].split("@", 1)[0].replace("-", "_").strip()
    parts = base.lower().split("_")
    if parts[0] == "en":
        return "en"
    if parts[0] == "zh" and not {"tw", "hk", "mo", "hant"} & set(parts[1:]):
        return "zh_CN"
    return None


def _from_environment() -> str:
    for name in LANGUAGE_ENV:
        for tag in os.environ.get(name, "").split(":"):  # LANGUAGE is a list
            found = normalize(tag)
            if found is not None:
                return found
    return "en"


def language() -> str:
    """The language shown now (see the module's docstring for the order)."""
    return _chosen or _from_environment()


def set_language(lang: str | None) -> str:
    """Show veo_nb in ``lang`` (``"en"``, ``"zh_CN"``, or a locale name such
    as ``"zh-CN"``) in this process; None goes back to the environment's.
    Returns the language chosen. Raises ``ValueError`` for a language the
    catalog does not have."""
    global _chosen
    found = normalize(lang) if lang is not None else None
    if lang is not None and found is None:
        raise ValueError(f"veo_nb has no {lang!r} catalog; languages: {', '.join(LANGUAGES)}")
    with _lock:
        _chosen = found
    return language()


def html_lang() -> str:
    """The language shown now as an HTML ``lang`` value (``en``, ``zh-CN``):
    the panel's HTML says it, so a screen reader reads it with the right voice."""
    return language().replace("_", "-")


def catalog(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of ``lang`` (English: the messages as written)."""
    with _lock:
        found = _catalogs.get(lang)
        if found is None:
            found = (gettext.NullTranslations() if lang == "en" else
                     gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang]))
            _catalogs[lang] = found
        return found


def _(message: str) -> str:
    """``message`` in the language shown now (as written when untranslated)."""
    return catalog(language()).gettext(message)


def N_(message: str) -> str:
    """Marks ``message`` for the catalog without translating it yet (for
    texts chosen at import time; translate them with :func:`_` where shown)."""
    return message
