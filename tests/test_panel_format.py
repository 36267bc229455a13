"""Pure helpers of the panel: escaping, durations, timing, pasted ids and
URLs, sorting, rows, video cards, readable tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from veo_nb.models import TaskStatus
import pandas as pd

from veo_nb.widgets.controls import split_ids, split_urls
from veo_nb.tracker import NOT_FOUND_REASON
from veo_nb._schedule import documented_window
from veo_nb._tables import esc, fmt_seconds, html_table, text_table
from veo_nb.widgets.format import (
    LOOKS,
    badge_html,
    card_html,
    playable_url,
    readable,
    row_html,
    status_counts_html,
    table_html,
    timing,
)
from veo_nb.records import TaskRecord

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rec(**kw) -> TaskRecord:
    base = dict(task_id="vgen_1", prompt="a fox", model="veo_3_1_fast", mode="text",
                created_at=T0, first_seen_at=T0)
    return TaskRecord(**{**base, **kw})


def test_esc_and_durations():
    assert esc('<a href="x">\'') == "&lt;a href=&quot;x&quot;&gt;&#x27;"
    assert esc(None) == ""
    assert [fmt_seconds(s) for s in (None, -3, 0, 59.4, 61, 3599, 3600 * 2 + 7 * 60)] == [
        "–", "0s", "0s", "59s", "1m 01s", "59m 59s", "2h 07m"]


def test_split_ids_and_urls_keep_order_without_duplicates():
    assert split_ids(" a,b\n\tc;  a ,, ") == ["a", "b", "c"]
    assert split_ids("  ") == []
    assert split_urls("https://a/1.png,https://a/2.png https://a/3.png\nhttps://a/1.png") == [
        "https://a/1.png", "https://a/2.png", "https://a/3.png"]
    assert split_urls("https://a/x.png?w=1;h=2") == ["https://a/x.png?w=1;h=2"]


def test_timing_against_the_documented_window():
    start = T0.timestamp()
    TEXT = documented_window("text", 1.0)  # (120, 300): what the tracker gives a text task
    early = timing(rec(status=TaskStatus.QUEUED), start + 60, TEXT)
    assert early.text == "1m 00s · ETA 1m 00s–4m 00s" and early.bar_style == "info"
    assert early.progress == 0.2
    late = timing(rec(status=TaskStatus.PROCESSING), start + 200, TEXT)
    assert late.text == "3m 20s · ETA ≤ 1m 40s"
    over = timing(rec(status=TaskStatus.PROCESSING), start + 400, TEXT)
    assert over.bar_style == "warning" and over.progress == 1.0 and "over the estimate" in over.text
    paused = timing(rec(status=TaskStatus.QUEUED), start + 400, TEXT, polling=False)
    assert paused.bar_style == "info" and paused.text == "6m 40s · not polling (paused)"
    scaled = timing(rec(status=TaskStatus.PROCESSING, mode="first_last"), start + 1.0, documented_window("first_last", 0.01))
    assert scaled.text == "1s · ETA 1s–2s"
    done = rec(status=TaskStatus.COMPLETED, finished_at=T0 + timedelta(seconds=150),
               video_url="https://cdn.example/v.mp4", url_expires_at=T0 + timedelta(hours=24),
               download_state="pending")
    t = timing(done, start + 3600, TEXT)
    assert t.text == "took 2m 30s · link expires in 23h 00m" and t.bar_style == "success"
    assert t.progress == 1.0  # a finished task's bar is full, quick or slow
    failed = timing(rec(status=TaskStatus.FAILED, finished_at=T0 + timedelta(seconds=10)),
                    start + 60, TEXT)
    assert failed.progress == 1.0 and failed.bar_style == "danger"
    assert timing(replace(done, download_state="saved"), start + 3600, TEXT).text == "took 2m 30s"
    assert "link expired" in timing(done, start + 90000, TEXT).text


def test_only_live_http_urls_play():
    done = rec(status=TaskStatus.COMPLETED, url_expires_at=T0 + timedelta(hours=1),
               video_url="https://cdn.example/v.mp4")
    assert playable_url(done, T0.timestamp()) == "https://cdn.example/v.mp4"
    assert playable_url(done, T0.timestamp() + 7200) is None
    assert playable_url(replace(done, video_url="javascript:alert(1)"), T0.timestamp()) is None
    assert playable_url(replace(done, video_url="file:///etc/passwd"), T0.timestamp()) is None


def test_every_server_or_user_string_is_escaped():
    nasty = '"><script>alert(1)</script>'
    r = rec(task_id=f"id{nasty}", label=nasty, prompt=nasty, model=nasty, error=nasty,
            status=TaskStatus.UNKNOWN, status_text=nasty, download_state="failed",
            download_error=nasty)
    for html in (row_html(r), badge_html(r), html_table("t" + nasty, [r], 0.0, 5)):
        assert "<script>" not in html and nasty not in html
        assert "&lt;script&gt;" in html
    assert nasty in text_table("t", [r], 0.0, 5)
    assert "… and 1 more" in text_table("t", [r, r], 0.0, 1)


def test_saved_paths_are_shown_relative_to_the_notebook_folder(tmp_path, monkeypatch) -> None:
    from veo_nb.widgets.format import shown_path

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "veo_nb_data" / "videos" / "vgen_1.mp4"
    assert shown_path(str(inside)) == "veo_nb_data/videos/vgen_1.mp4"
    assert shown_path("/elsewhere/v.mp4") == "/elsewhere/v.mp4"


def test_rows_show_resolution_aspect_and_unknown_ids_as_not_found():
    r = rec(resolution="1080p", aspect_ratio="9:16", label="fox")
    assert "veo_3_1_fast · 1080p · 9:16" in row_html(r)
    lost = rec(status=TaskStatus.FAILED, status_text="failed", error=NOT_FOUND_REASON)
    assert "∅ not found" in badge_html(lost) and "error:" not in row_html(lost)
    assert "<b>2</b> not found" in status_counts_html({"not found": 2})
    large = row_html(r, LOOKS["large"])
    assert "font-size:20px" in large and "color:#000000" in large


def test_video_cards_say_size_duration_and_format():
    card = card_html(rec(resolution="4K", aspect_ratio="16:9"), 41_943_040, "<why>", LOOKS["normal"])
    assert "40.0 MB · 8 s · 4K · 16:9" in card and "&lt;why&gt;" in card


def test_readable_tables_for_people(monkeypatch):
    from dateutil import tz

    history = pd.DataFrame({
        "task_id": ["vgen_1", "vgen_2"],
        "status": pd.Categorical(["completed", None]),
        "observed_at": pd.to_datetime(["2026-01-01 12:00:00.538838", None], utc=True),
        "http_status": pd.array([200, None], dtype="Int64"),
        "detail": ["<b>" + "x" * 400, None],
    })
    shown = readable(history, tasks=[rec(task_id="vgen_1", label="fox", prompt="a <i>fox</i>")],
                     zone=tz.gettz("Europe/Paris"))
    assert list(shown.columns) == ["task_id", "label", "prompt", "status", "observed_at",
                                   "http_status", "detail"]
    assert shown.iloc[0].tolist()[:5] == ["vgen_1", "fox", "a <i>fox</i>", "completed",
                                          "2026-01-01 13:00:00"]
    assert shown.iloc[1].tolist() == ["vgen_2", "", "", "", "", "", ""]
    summary = pd.DataFrame({"model": ["m"], "count": [3], "success_rate": [0.6667],
                            "median_s": [29.538838], "p90_s": [float("nan")]})
    assert readable(summary).iloc[0].tolist() == ["m", "3", "67%", "29.5", ""]
    html = table_html(shown, title="<t>")
    assert "<h4>&lt;t&gt;</h4>" in html and "<b>" not in html and "&lt;i&gt;fox" in html
    assert 'title="&lt;b&gt;xxxx' in html and "…" in html  # long text: whole on hover
