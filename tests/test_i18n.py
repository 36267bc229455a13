"""The panel in the reader's language: one gettext catalog (a .po per
language, compiled to the .mo that Python reads), English and Simplified
Chinese; the language from panel(lang=...), then VEO_NB_LANG, then the
locale, then English.

A test here fails when a text the code marks is missing from a catalog or
untranslated, when a .mo is stale, and when a panel rendered in Chinese (every
status, every form and tab open) shows an English word of its own: a string
that bypasses the catalog.
"""

from __future__ import annotations

import ast
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from test_widgets_support import finished, until
from veo_nb import language, set_language
from veo_nb._i18n import LANGUAGES, normalize
from veo_nb._tables import fmt_seconds
from veo_nb.errors import ValidationError
from veo_nb.widgets.format import readable
from veo_nb.widgets.tree import walk

pytest_plugins = ["test_widgets_support"]  # the fixtures

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import compile_catalogs  # noqa: E402

CATALOGS = {lang: REPO / "veo_nb" / "locale" / lang / "LC_MESSAGES" / "veo_nb.po"
            for lang in LANGUAGES if lang != "en"}


def _fields(text: str) -> set[str]:
    names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    return names | set(re.findall(r"%[A-Za-z]", text))


@pytest.mark.parametrize("lang", sorted(CATALOGS))
def test_every_marked_text_is_in_the_catalog_and_translated(lang: str) -> None:
    marked = compile_catalogs.marked_texts()
    assert len(marked) > 150, "the scan of _() calls found too little"
    with CATALOGS[lang].open("rb") as f:
        catalog = {m.id: m.string for m in read_po(f) if m.id}
    missing = sorted(set(marked) - set(catalog))
    assert not missing, f"not in {lang}.po (scripts/compile_catalogs.py --update): {missing}"
    unused = sorted(set(catalog) - set(marked))
    assert not unused, f"in {lang}.po but used nowhere: {unused}"
    untranslated = sorted(t for t in marked if not catalog[t].strip())
    assert not untranslated, f"untranslated in {lang}.po: {untranslated}"
    for text, translated in catalog.items():
        assert _fields(text) == _fields(translated), (text, translated)


def test_the_committed_mo_files_are_compiled_from_their_po() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "compile_catalogs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_language_comes_from_the_option_then_veo_nb_lang_then_the_locale(monkeypatch) -> None:
    for name in ("VEO_NB_LANG", "LANGUAGE", "LC_ALL", "LANG"):
        monkeypatch.delenv(name, raising=False)
    assert language() == "en"
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert language() == "zh_CN"
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")  # LC_ALL before LANG
    assert language() == "en"
    monkeypatch.setenv("LANGUAGE", "fr_FR:zh")  # a list: the first language the catalog has
    assert language() == "zh_CN"
    monkeypatch.setenv("VEO_NB_LANG", "en")
    assert language() == "en"
    assert set_language("zh-Hans") == "zh_CN"  # panel(lang=...) calls this
    assert language() == "zh_CN"
    assert set_language(None) == "en"
    monkeypatch.setenv("VEO_NB_LANG", "C")  # names no language: the next one counts
    monkeypatch.setenv("LANGUAGE", "")
    assert language() == "en"
    assert [normalize(t) for t in ("zh", "zh_CN.UTF-8", "zh-cn", "zh_TW", "en_GB", "C", "")] == \
        ["zh_CN", "zh_CN", "zh_CN", None, "en", None, None]
    with pytest.raises(ValueError, match="no 'fr' catalog"):
        set_language("fr")


def test_a_panel_with_an_unknown_language_is_refused(tracker, make_panel) -> None:
    with pytest.raises(ValidationError, match="no 'klingon' catalog"):
        make_panel(tracker, lang="klingon")


def test_durations_dates_and_numbers_follow_the_language() -> None:
    import pandas as pd

    frame = pd.DataFrame({"observed_at": pd.to_datetime(["2026-03-04 05:06:07"], utc=True),
                          "success_rate": [0.5], "tracked": [True]})
    english = readable(frame, zone="UTC").iloc[0].tolist()
    assert [fmt_seconds(s) for s in (45, 125, 11_220)] == ["45s", "2m 05s", "3h 07m"]
    set_language("zh_CN")
    assert [fmt_seconds(s) for s in (45, 125, 11_220)] == ["45秒", "2分05秒", "3小时07分"]
    assert readable(frame, zone="UTC").iloc[0].tolist() == ["2026年03月04日 05:06:07", "50%", "是"]
    assert english == ["2026-03-04 05:06:07", "50%", "yes"]


#: Words a Chinese panel may show in Latin letters: names of things (the
#: product, models, file types, units, programs) and Python a user types.
ALLOWED = {"veo_nb", "MB", "ID", "HTTP", "URL", "http", "https", "VS", "Code", "AAC", "IPython",
           "Python", "tracker", "tasks", "recent_errors", "max_loaded_bytes", "stream", "any",
           "panel", "csv", "parquet", "json", "p", "vgen", "veo", "fast", "pro", "stable",
           "K", "root"}
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r'title="([^"]*)"')
_DIRECTIVE = re.compile(r"\[[^\]]*\]")  # the emulator's [duration: ...] in prompts
_PATH = re.compile(r"\S*/\S*")  # saved videos' paths
_MODEL = re.compile(r"\bveo_\w+")  # model names, default export names


def _shown_texts(panel) -> list[str]:
    """Every text the panel's widgets show or say: values (HTML without its
    tags, with its hover titles), descriptions, placeholders, tooltips, menu
    options and the switches' labels. Of the History tab's events, the title
    and headings only: its ``detail`` column is what the tracker recorded, in
    the store (in English, for every reader of a shared history)."""
    events = panel.history.events.value
    out = re.findall(r"<h4>(.*?)</h4>|<th\b[^>]*>(.*?)</th>", events)
    out = [a or b for a, b in out]
    for w in walk(panel):
        if w is panel.history.events:
            continue
        chosen = ("value",) if not hasattr(w, "_options_labels") else ()  # a menu's value is a key
        for name in (*chosen, "description", "placeholder", "tooltip"):
            value = getattr(w, name, None)
            if isinstance(value, str) and not value.startswith("<style>"):
                out += _TITLE.findall(value) + [_TAG.sub(" ", value)]
        out += [str(o) for o in getattr(w, "_options_labels", ())]
    return out


def test_a_panel_in_chinese_shows_no_english_word_of_its_own(tracker, make_panel) -> None:
    done = finished(tracker, ["一只狐狸在雪地里奔跑 [duration: 130]"])[0]
    failed = tracker.submit("风中的风筝 [fail: 提示词被拒绝] [duration: 130]", label="风筝")
    running = tracker.submit("山谷上空的慢镜头 [duration: 60000]", label="山谷")
    typo = tracker.track("vgen_mistyped000")
    p = make_panel(tracker, lang="zh_CN")
    until(lambda: tracker.record(failed.id).status_text == "failed"
          and tracker.record(typo.id).error
          and tracker.record(running.id).status_text in ("queued", "processing"))
    p.update()
    p.submit_form, p.track_form, p.export_bar  # every form built
    p.forms.selected_index = 0
    p.tabs.selected_index = 2  # the History tab's tables
    p.tabs.selected_index = 0
    p.toggle_polling()  # "paused" texts too
    p.update()
    user_data = {"vgen_mistyped000", done, failed.id, running.id, typo.id}
    words = set()
    for text in _shown_texts(p):
        text = _PATH.sub(" ", text)
        for data in user_data:
            text = text.replace(data, " ")
        text = _DIRECTIVE.sub(" ", _PATH.sub(" ", _MODEL.sub(" ", text)))
        text = re.sub(r"&\w+;|&#x?\w+;", " ", text)
        words |= set(re.findall(r"[A-Za-z][A-Za-z_]*", text)) - ALLOWED
    assert not words, f"English in the zh_CN panel (a string outside the catalog?): {sorted(words)}"
    header = p.header.value
    assert "个任务" in header and "已完成" in header and "失败" in header and "未找到" in header
    assert "排队中" in header or "生成中" in header
    # a screen reader reads the rows, header and announcements with a Chinese voice
    assert 'lang="zh-CN"' in header and 'lang="zh-CN"' in p._rows[failed.id].info.value
    # the service's own words are shown as they came
    assert "错误： 提示词被拒绝" in p._rows[failed.id].info.value.replace("</span>", "")
    # the text fallback and its headings
    text = repr(p)
    assert "veo_nb 面板" in text and "任务" in text.splitlines()[1] and "已完成" in text
    assert "<th>提示词</th>" in p._repr_mimebundle_()["text/html"]


def test_an_error_from_the_service_is_shown_as_it_came(tracker, make_panel) -> None:
    failed = tracker.submit("a kite [fail: the prompt was refused] [duration: 130]")
    p = make_panel(tracker, lang="zh_CN")
    until(lambda: "失败" in p._rows[failed.id].info.value if failed.id in p._rows else False)
    info = p._rows[failed.id].info.value
    assert "错误： the prompt was refused" in info.replace('</span>', ''), info


def test_veo_nb_table_has_headings_and_statuses_in_the_language(tracker) -> None:
    import veo_nb

    finished(tracker, ["一只狐狸 [duration: 130]"])
    set_language("zh_CN")
    html = veo_nb.table(tracker.tasks())._repr_html_()
    assert ">总用时（秒）</th>" in html and ">状态</th>" in html and "<td" in html
    assert ">已完成</td>" in html
    assert "total_s" not in html
    summary = veo_nb.table(tracker.summary())._repr_html_()
    assert ">成功率</th>" in summary and "100%" in summary
    # the DataFrame itself keeps its column names (code reads them)
    assert "total_s" in veo_nb.table(tracker.tasks()).frame.columns


#: Keyword arguments whose text a widget shows or says.
SHOWN_KWARGS = ("description", "placeholder", "tooltip")


def _literal_text(node) -> bool:
    """True for a text written in the code (a literal or an f-string) with a
    letter in it; a call such as ``_("…")`` is not."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(re.search(r"[A-Za-z]", node.value))
    if isinstance(node, ast.JoinedStr):
        return any(_literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) or _literal_text(node.right)
    return False


def test_no_widget_is_given_a_text_that_bypasses_the_catalog() -> None:
    found = []
    for path in sorted((REPO / "veo_nb" / "widgets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg in SHOWN_KWARGS and _literal_text(kw.value):
                        found.append(f"{path.name}:{node.lineno} {kw.arg}=")
            elif isinstance(node, ast.Assign):  # button.description = "…"
                for target in node.targets:
                    if (isinstance(target, ast.Attribute) and target.attr in SHOWN_KWARGS
                            and _literal_text(node.value)):
                        found.append(f"{path.name}:{node.lineno} .{target.attr} =")
    assert not found, f"texts shown by widgets without _(): {found}"
