"""TaskRecord, Event and the DataFrame builders (no SQLite involved)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veo_nb import records as rec
from veo_nb.errors import ValidationError
from veo_nb.models import Task, TaskStatus
from veo_nb.records import (
    HISTORY_COLUMNS,
    STATUS_CATEGORIES,
    SUMMARY_COLUMNS,
    TASK_COLUMNS,
    Event,
    TaskRecord,
    export,
    history_frame,
    summary_frame,
    tasks_frame,
)

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
UTC_NS = "datetime64[ns, UTC]"
REQUEST = {"model": "veo_3_1_fast", "prompt": "a cat", "resolution": "720p", "aspect_ratio": "16:9"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def finished(task_id: str, model: str, status: TaskStatus, total: float) -> TaskRecord:
    return TaskRecord(
        task_id=task_id, model=model, status=status, status_text=status.value,
        created_at=T0, first_seen_at=at(1), started_at=at(total / 2), finished_at=at(total),
    )


def test_from_task_takes_parameters_from_the_request() -> None:
    task = Task.from_json({"id": "t1", "status": "queued", "created": T0.timestamp()})
    record = TaskRecord.from_task(task, label="cat", request=REQUEST, now=at(2))
    assert record.task_id == "t1" and record.label == "cat"
    assert (record.prompt, record.model, record.resolution, record.aspect_ratio) == (
        "a cat", "veo_3_1_fast", "720p", "16:9")
    assert record.mode == "text"
    assert record.status is TaskStatus.QUEUED and record.status_text == "queued"
    assert record.created_at == T0 and record.first_seen_at == at(2)
    assert record.started_at is None and record.finished_at is None
    assert record.request == REQUEST and record.raw["id"] == "t1"
    assert record.download_state == "none" and record.tracked and record.poll_count == 0


def test_from_task_of_a_task_tracked_by_id() -> None:
    task = Task.from_json({"id": "t2", "status": "completed", "model": "veo_3_1_pro",
                           "video_url": "https://cdn/x.mp4", "created": T0.timestamp()})
    record = TaskRecord.from_task(task, mode="reference", now=at(60), url_lifetime_s=100)
    assert record.request == {} and record.prompt is None and record.model == "veo_3_1_pro"
    assert record.mode == "reference"
    assert record.started_at == record.finished_at == at(60)
    assert record.url_expires_at == at(160)
    assert record.total_s == 60.0


def test_mode_comes_from_the_payload() -> None:
    task = Task.from_json({"id": "t3", "status": "queued"})
    record = TaskRecord.from_task(task, request={**REQUEST, "first_image": "https://x/a.png"})
    assert record.mode == "first_last"
    assert record.first_seen_at is not None and record.first_seen_at.tzinfo is timezone.utc


def test_records_are_frozen_and_updated_with_replace() -> None:
    record = TaskRecord(task_id="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = TaskStatus.FAILED  # type: ignore[misc]
    assert dataclasses.replace(record, poll_count=3).poll_count == 3


def test_durations() -> None:
    record = TaskRecord(task_id="t", created_at=T0, first_seen_at=at(5),
                        started_at=at(40), finished_at=at(190))
    assert (record.queued_s, record.processing_s, record.total_s) == (40.0, 150.0, 190.0)
    no_created = dataclasses.replace(record, created_at=None)
    assert (no_created.queued_s, no_created.total_s) == (35.0, 185.0)
    unfinished = TaskRecord(task_id="t", first_seen_at=T0)
    assert (unfinished.queued_s, unfinished.processing_s, unfinished.total_s) == (None, None, None)


def test_task_view_of_a_record() -> None:
    raw = {"id": "t", "object": "video", "status": "Rendering", "actualDuration": 8.0}
    record = TaskRecord(task_id="t", status=TaskStatus.UNKNOWN, status_text="unknown: Rendering",
                        model="m", created_at=T0, video_url="https://cdn/v.mp4",
                        video_path="/tmp/v.mp4", download_state="pending", raw=raw)
    task = record.task
    assert (task.id, task.model, task.created, task.actual_duration) == ("t", "m", T0, 8.0)
    assert task.status is TaskStatus.UNKNOWN and task.status_text == "unknown: Rendering"
    assert task.video_path is None
    saved = dataclasses.replace(record, download_state="saved").task
    assert saved.video_path == Path("/tmp/v.mp4")


def test_event_defaults_to_now() -> None:
    event = Event("t", "note", detail="hello")
    assert event.observed_at.tzinfo is timezone.utc
    assert (event.status, event.http_status, event.attempt) == (None, None, None)


def _check_task_dtypes(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns[: len(TASK_COLUMNS)]) == TASK_COLUMNS
    assert tuple(frame.columns[len(TASK_COLUMNS):]) == rec.TASK_EXTRA_COLUMNS
    for name in ("created_at", "first_seen_at", "started_at", "finished_at",
                 "url_expires_at", "last_polled_at", "next_poll_at"):
        assert str(frame[name].dtype) == UTC_NS, name
    status = frame["status"].dtype
    assert isinstance(status, pd.CategoricalDtype) and status.ordered
    assert tuple(status.categories) == STATUS_CATEGORIES
    assert tuple(STATUS_CATEGORIES) == ("queued", "processing", "completed", "failed", "unknown")
    for name in ("queued_s", "processing_s", "total_s"):
        assert frame[name].dtype == "float64"


def test_tasks_frame() -> None:
    records = [
        finished("a", "veo_3_1_fast", TaskStatus.COMPLETED, 200),
        TaskRecord(task_id="b", label="<b>x</b> & \"y\"", prompt="line1\nline2, ok",
                   status=TaskStatus.UNKNOWN, status_text="Rendering", first_seen_at=at(3)),
    ]
    frame = tasks_frame(records)
    _check_task_dtypes(frame)
    assert list(frame["task_id"]) == ["a", "b"]
    assert list(frame["status"].astype(str)) == ["completed", "unknown"]
    assert list(frame["status_text"]) == ["completed", "Rendering"]
    assert frame.loc[0, "total_s"] == 200.0 and frame.loc[0, "processing_s"] == 100.0
    assert pd.isna(frame.loc[1, "total_s"])
    assert frame.loc[0, "finished_at"] == pd.Timestamp(at(200))
    assert frame.loc[1, "label"] == "<b>x</b> & \"y\""
    assert frame.loc[1, "prompt"] == "line1\nline2, ok"
    assert frame["status"].min() == "completed"  # ordered: comparisons work


def test_empty_frames_have_their_dtypes() -> None:
    _check_task_dtypes(tasks_frame([]))
    history = history_frame([])
    assert tuple(history.columns) == HISTORY_COLUMNS and len(history) == 0
    assert str(history["observed_at"].dtype) == UTC_NS
    assert isinstance(history["status"].dtype, pd.CategoricalDtype)
    summary = summary_frame([])
    assert tuple(summary.columns) == SUMMARY_COLUMNS and len(summary) == 0


def test_history_frame() -> None:
    events = [
        Event("a", "status", "queued", at(0)),
        Event("a", "status", "Rendering", at(30)),
        Event("a", "poll_error", None, at(60), http_status=503, attempt=2, detail="HTTP 503"),
        Event("a", "status", " COMPLETED ", at(90)),
    ]
    frame = history_frame(events)
    assert tuple(frame.columns) == HISTORY_COLUMNS
    assert str(frame["observed_at"].dtype) == UTC_NS
    assert frame["status"].dtype.ordered
    assert list(frame["status"].astype(object).where(frame["status"].notna(), None)) == [
        "queued", "unknown", None, "completed"]
    assert str(frame["http_status"].dtype) == "Int64" and str(frame["attempt"].dtype) == "Int64"
    assert frame.loc[2, "http_status"] == 503 and pd.isna(frame.loc[0, "http_status"])
    assert list(frame["observed_at"]) == [pd.Timestamp(at(s)) for s in (0, 30, 60, 90)]
    assert frame.loc[2, "detail"] == "HTTP 503"


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(timezone.utc)))
def test_timestamps_are_exact_to_the_microsecond(moment: datetime) -> None:
    frame = history_frame([Event("t", "note", observed_at=moment)])
    assert frame.loc[0, "observed_at"].to_pydatetime() == moment
    assert rec.from_unix(rec.to_unix(moment)) == moment


def test_summary_frame() -> None:
    records = [
        finished("a", "fast", TaskStatus.COMPLETED, 100),
        finished("b", "fast", TaskStatus.COMPLETED, 200),
        finished("c", "fast", TaskStatus.COMPLETED, 300),
        finished("d", "fast", TaskStatus.FAILED, 50),
        TaskRecord(task_id="e", model="fast", status=TaskStatus.PROCESSING),
        TaskRecord(task_id="f", model="pro", status=TaskStatus.QUEUED),
    ]
    summary = summary_frame(records).set_index("model")
    fast = summary.loc["fast"]
    assert (fast["count"], fast["finished"], fast["completed"], fast["failed"]) == (5, 4, 3, 1)
    assert fast["success_rate"] == 0.75
    assert fast["median_s"] == 200.0 and fast["p90_s"] == pytest.approx(280.0)
    pro = summary.loc["pro"]
    assert pro["count"] == 1 and pro["finished"] == 0
    assert pd.isna(pro["success_rate"]) and pd.isna(pro["median_s"])


def _sample_frames() -> dict[str, pd.DataFrame]:
    records = [
        finished("a", "fast", TaskStatus.COMPLETED, 100),
        TaskRecord(task_id="b", prompt='quote " comma , newline\n', first_seen_at=at(1)),
    ]
    events = [Event("a", "status", "queued", at(0)),
              Event("a", "poll_error", None, at(1), http_status=429, attempt=1, detail="slow down")]
    return {"tasks": tasks_frame(records), "history": history_frame(events)}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_export_round_trip(tmp_path: Path, suffix: str) -> None:
    for name, frame in _sample_frames().items():
        path = export(frame, tmp_path / "out" / f"{name}{suffix}")
        assert path.exists()
        stamp = "finished_at" if name == "tasks" else "observed_at"
        text = "prompt" if name == "tasks" else "detail"
        if suffix == ".csv":
            back = pd.read_csv(path)
            back[stamp] = pd.to_datetime(back[stamp], utc=True)
        elif suffix == ".parquet":
            back = pd.read_parquet(path)
            assert back["status"].dtype == frame["status"].dtype
        else:
            rows = json.loads(path.read_text())
            assert isinstance(rows, list) and set(rows[0]) == set(frame.columns)
            back = pd.DataFrame(rows)
            back[stamp] = pd.to_datetime(back[stamp], utc=True)
        assert list(back.columns) == list(frame.columns)
        assert list(back["task_id"]) == list(frame["task_id"])
        assert list(back["status"].astype(str)) == list(frame["status"].astype(str))
        assert back[stamp].iloc[0] == frame[stamp].iloc[0]
        assert list(back[text].fillna("")) == list(frame[text].fillna(""))


def test_export_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"\.csv, \.parquet, \.json"):
        export(tasks_frame([]), tmp_path / "out.xlsx")


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = rec.importlib.util.find_spec
    monkeypatch.setattr(rec.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(ValidationError, match="pip install pyarrow"):
        export(tasks_frame([]), tmp_path / "out.parquet")
