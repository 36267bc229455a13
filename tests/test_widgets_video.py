"""Video delivery: a card until the user plays a video, streaming from the
service's link where allowed, a saved file's bytes once on click, a cap on
loaded bytes, nothing kept once a video leaves the page or the panel closes.

Over real trackers and the emulator over real HTTP, with 3 MB videos (above
the 2 MB that are shown at once). What reaches the browser is counted by the
traffic recorder; what the kernel reads, by the interpreter's ``open`` audit
events; what it holds, by walking the objects reachable from the panel.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import ipywidgets as widgets

from test_widgets_support import (
    MB,
    file_opens,
    finished,
    large_buffers,
    media_of,
    shown_ids,
    until,
)
from veo_nb.models import TaskStatus
from veo_nb.records import TaskRecord, utcnow
from veo_nb.store import Store
from veo_nb.tracker import Tracker
from veo_nb.widgets.format import LOOKS
from veo_nb.widgets.frontend import FRONTENDS
from veo_nb.widgets.media import MediaCache, stream_url
from veo_nb.widgets.traffic import record_traffic

pytest_plugins = ["test_widgets_support"]  # the fixtures


def test_no_video_is_sent_or_read_until_played_and_freed_when_it_leaves(big_tracker, make_panel):
    ids = finished(big_tracker, ["one [duration: 130]", "two [duration: 130]"])
    paths = {i: big_tracker.record(i).video_path for i in ids}
    size = Path(paths[ids[0]]).stat().st_size
    assert size == 3 * MB
    with record_traffic() as traffic, file_opens() as opened:
        p = make_panel(big_tracker, page_size=1, gallery_page_size=1)
        p.pager.next.click()
        p.tabs.selected_index = 1
        p.gallery.pager.next.click()
        p.tabs.selected_index = 0
        p.pager.prev.click()
        assert traffic.video_bytes_since(0) == 0
        assert traffic.bytes_since(0) < 300_000
        assert not set(paths.values()) & set(opened)
        assert large_buffers(p) == []  # the kernel holds no video bytes either

        newest = ids[1]
        view = media_of(p, newest)
        assert "<b>3.0 MB · 8 s · 720p · 16:9</b>" in view.card.value
        assert view.player is None and not view.play.disabled
        assert "0 · 0 MB of 256.0 MB" in p.videos.value
        mark = traffic.mark()
        view.play.click()
        sent = traffic.video_bytes_since(mark)
        assert opened.count(paths[newest]) == 1 and paths[ids[0]] not in opened
        assert isinstance(view.player, widgets.Video) and view.player.format == "mp4"
        assert bytes(view.player.value) == Path(paths[newest]).read_bytes()
        assert size <= sent <= traffic.bytes_since(mark) <= 1.05 * size
        assert "from the saved file" in view.card.value
        assert "1 · 3.0 MB of 256.0 MB" in p.videos.value
        assert large_buffers(p) == [size]
        view.play.click()  # already playing: nothing more
        assert traffic.video_bytes_since(mark) == sent

        player = weakref.ref(view.player)
        p.pager.next.click()  # its row leaves the page (and its card is not in the gallery)
        assert newest not in shown_ids(p) and view.player is None
        assert "0 · 0 MB of 256.0 MB" in p.videos.value
        gc.collect()
        assert player() is None and large_buffers(p) == []


def test_the_emulators_http_link_streams_only_when_allowed(big_tracker, make_panel):
    (task_id,) = finished(big_tracker, ["one [duration: 130]"])
    record = big_tracker.record(task_id)
    p = make_panel(big_tracker, stream="any")
    with record_traffic() as traffic, file_opens() as opened:
        view = media_of(p, task_id)
        view.play.click()
    assert isinstance(view.player, widgets.Video) and view.player.format == "url"
    assert bytes(view.player.value).decode() == record.video_url
    assert record.video_url.startswith("http://127.0.0.1:")
    assert record.video_path not in opened and traffic.video_bytes_since(0) == 0
    assert "from the link" in view.card.value and "1 · 0 MB" in p.videos.value
    p.close()
    never = make_panel(big_tracker, stream="never")
    view = media_of(never, task_id)
    view.play.click()
    assert view.player.format == "mp4"


def _seed(store_path: Path, records: list[TaskRecord]) -> None:
    with Store(store_path) as store:
        for record in records:
            store.save(record)


def test_a_valid_https_link_streams_by_default(tmp_path, emulator, make_panel):
    now = utcnow()
    done = TaskRecord(task_id="vgen_https00001", prompt="a fox", model="veo_3_1_fast",
                      resolution="1080p", aspect_ratio="16:9", mode="text",
                      status=TaskStatus.COMPLETED, status_text="completed",
                      created_at=now - timedelta(minutes=3), finished_at=now,
                      video_url="https://cdn.example/v/fox.mp4?sig=1",
                      url_expires_at=now + timedelta(hours=23))
    _seed(tmp_path / "h.sqlite", [done])
    with Tracker(emulator.client(), store=tmp_path / "h.sqlite", media_dir=tmp_path / "v",
                 download=False) as tr:
        p = make_panel(tr)
        view = media_of(p, done.task_id)
        assert "1080p · 16:9" in view.card.value and view.player is None
        view.play.click()
        assert view.player.format == "url"
        assert bytes(view.player.value).decode() == done.video_url


def test_where_a_video_plays_from(tmp_path):
    """The policy on its own: link while valid and allowed, else the saved file."""
    now = time.time()
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 1000)
    saved = TaskRecord(task_id="t", status=TaskStatus.COMPLETED, status_text="completed",
                       video_url="https://cdn.example/v.mp4", download_state="saved",
                       video_path=str(video), url_expires_at=utcnow() + timedelta(hours=1))
    http = replace(saved, video_url="http://127.0.0.1:9/v.mp4")
    expired = replace(saved, url_expires_at=utcnow() - timedelta(seconds=1))
    assert stream_url(saved, now, "https") == saved.video_url
    assert stream_url(http, now, "https") is None and stream_url(http, now, "any") == http.video_url
    assert stream_url(saved, now, "never") is None and stream_url(expired, now, "any") is None

    cache = MediaCache(FRONTENDS["jupyter"], stream="https", max_loaded_bytes=None,
                       look=LOOKS["normal"], capacity=10, report=lambda *_: None,
                       lock=threading.RLock())
    assert cache.plan(saved, now).kind == "stream"
    assert cache.plan(http, now).kind == "file" and cache.plan(expired, now).size == 1000
    unsaved = replace(http, download_state="pending", video_path=None)
    assert cache.plan(unsaved, now).note == "saving the video…"
    assert "stream='any'" in cache.plan(replace(unsaved, download_state="failed"), now).note
    gone = replace(expired, download_state="expired", video_path=None)
    assert cache.plan(gone, now).note == "no video to play"


def test_loaded_bytes_are_capped_least_recently_played_first(big_tracker, make_panel):
    ids = finished(big_tracker, [f"clip {i} [duration: 130]" for i in range(3)])
    p = make_panel(big_tracker, max_loaded_bytes=7 * MB)
    views = [media_of(p, i) for i in ids]
    for view in views[:2]:
        view.play.click()
    assert "2 · 6.0 MB of 7.0 MB" in p.videos.value
    views[2].play.click()
    assert views[0].player is None and views[1].player is not None and views[2].player is not None
    assert p.media.loaded_ids() == {ids[1], ids[2]} and large_buffers(p) == [3 * MB, 3 * MB]
    assert "2 · 6.0 MB of 7.0 MB" in p.videos.value
    assert views[0].widget.children == (views[0].card, views[0].play)  # its card, playable again
    p.close()

    small = make_panel(big_tracker, max_loaded_bytes=2 * MB)
    view = media_of(small, ids[0])
    # no ▶ Play: the card says why
    assert view.play is None and view.widget.children == (view.card,)
    assert "too large to play here" in view.card.value
    small.media.play(view)  # as a click that came before the cap was lowered
    assert view.player is None and large_buffers(small) == []
    assert "too large to play here" in small.message.value


def test_a_playing_video_is_never_reassigned(big_tracker, make_panel):
    (played,) = finished(big_tracker, ["watch me [duration: 130]"])
    with record_traffic() as traffic:
        p = make_panel(big_tracker, refresh_every=0.2)
        view = media_of(p, played)
        view.play.click()
        player = view.player
        others = [big_tracker.submit(f"other {i} [duration: 150]").id for i in range(2)]
        big_tracker.wait(others, timeout=30)
        until(lambda: all(media_of(p, i) is not None for i in others))
        time.sleep(1.0)
    assert view.player is player and player.comm is not None
    to_player = [m for m in traffic.messages if m.comm_id == player.comm.comm_id]
    assert [m.msg_type for m in to_player] == ["comm_open"]  # never updated after it opened


def test_small_videos_show_at_once_without_a_click(tracker, make_panel):
    (task_id,) = finished(tracker, ["tiny [duration: 130]"])
    p = make_panel(tracker)
    view = media_of(p, task_id)
    assert isinstance(view.player, widgets.Video) and not view.clicked
    assert view.play not in view.widget.children
    assert p.media.played_ids() == set()


def test_a_closed_panel_holds_no_video_bytes(big_tracker, make_panel):
    (task_id,) = finished(big_tracker, ["one [duration: 130]"])
    p = make_panel(big_tracker)
    media_of(p, task_id).play.click()
    player = weakref.ref(media_of(p, task_id).player)
    assert large_buffers(p) == [3 * MB]
    p.close()
    gc.collect()
    # ``p`` is still referenced here, as Out[] would hold it in a notebook.
    assert player() is None and large_buffers(p) == []
