"""Task / TaskStatus parsing, against the provider's own example bodies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from veo_nb import APIError, Task, TaskStatus

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_processing_example_body() -> None:
    task = Task.from_json(load("result_processing.json"))
    assert task.id == "vgen_abc123def456"
    assert task.object == "video"
    assert task.model == "veo_3_1_fast"
    assert task.status is TaskStatus.PROCESSING
    assert not task.is_terminal
    assert task.video_url is None and task.error is None and task.actual_duration is None
    assert task.created == datetime(2025, 10, 28, 7, 11, 18, tzinfo=timezone.utc)
    assert task.created.utcoffset() == timedelta(0)


def test_completed_example_body() -> None:
    task = Task.from_json(load("result_completed.json"))
    assert task.status is TaskStatus.COMPLETED
    assert task.is_terminal
    assert task.video_url == "https://cdn.example.com/videos/vgen_abc123def456.mp4"
    assert task.actual_duration == 8.0
    assert task.error is None
    assert task.created is not None and task.created.tzinfo is not None
    assert task.created.timestamp() == 1761635478
    assert task.raw["actualDuration"] == 8


def test_failed_body() -> None:
    task = Task.from_json({"id": "vgen_x", "status": "failed", "error": "content policy"})
    assert task.status is TaskStatus.FAILED and task.is_terminal
    assert task.error == "content policy"
    assert "content policy" in repr(task)


def test_unknown_status_is_kept_and_not_terminal() -> None:
    task = Task.from_json({"id": "vgen_x", "status": "Upscaling"})
    assert task.status is TaskStatus.UNKNOWN
    assert task.status_text == "unknown: Upscaling"  # visible as such, the word kept
    assert not task.is_terminal
    assert "Upscaling" in repr(task)


def test_status_case_and_whitespace_tolerated() -> None:
    assert Task.from_json({"id": "a", "status": " COMPLETED "}).status is TaskStatus.COMPLETED


def test_unknown_fields_kept_in_raw_and_raw_is_read_only() -> None:
    body = {**load("result_completed.json"), "progress": 42, "extra": {"a": 1}}
    task = Task.from_json(body)
    assert task.raw["progress"] == 42 and task.raw["extra"] == {"a": 1}
    with pytest.raises(TypeError):
        task.raw["progress"] = 1  # type: ignore[index]


@pytest.mark.parametrize("field", ["object", "created", "model", "status", "video_url", "actualDuration", "error"])
def test_nulls_tolerated(field: str) -> None:
    body = {**load("result_completed.json"), field: None}
    task = Task.from_json(body)
    assert task.id == "vgen_abc123def456"
    if field == "status":
        assert task.status is TaskStatus.UNKNOWN and not task.is_terminal


def test_odd_field_types_tolerated() -> None:
    task = Task.from_json(
        {"id": "a", "created": "not a number", "actualDuration": "8.5", "status": 3, "error": 7}
    )
    assert task.created is None
    assert task.actual_duration == 8.5
    assert task.status is TaskStatus.UNKNOWN
    assert task.error == "7"
    assert Task.from_json({"id": "a", "created": float("nan"), "actualDuration": True}).created is None
    assert Task.from_json({"id": "a", "created": 1e30}).created is None


@pytest.mark.parametrize(
    "body",
    [None, [], "vgen_1", 42, {}, {"id": None}, {"id": ""}, {"id": 12}, {"status": "completed"}],
)
def test_bad_bodies_raise_api_error(body: object) -> None:
    with pytest.raises(APIError):
        Task.from_json(body)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (TaskStatus.QUEUED, False),
        (TaskStatus.PROCESSING, False),
        (TaskStatus.COMPLETED, True),
        (TaskStatus.FAILED, True),
        (TaskStatus.UNKNOWN, False),
    ],
)
def test_status_is_terminal(status: TaskStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal


def test_status_parse_and_str() -> None:
    assert TaskStatus.parse("queued") is TaskStatus.QUEUED
    assert TaskStatus.parse(None) is TaskStatus.UNKNOWN
    assert TaskStatus.parse("whatever") is TaskStatus.UNKNOWN
    assert str(TaskStatus.COMPLETED) == "completed"


def test_task_repr_hides_the_signed_query_of_the_video_url():
    task = Task(id="vgen_1", status=TaskStatus.COMPLETED,
                video_url="https://cdn.example/v/vgen_1.mp4?X-Amz-Signature=SECRET&Expires=1")
    assert "SECRET" not in repr(task) and "Expires" not in repr(task)
    assert "https://cdn.example/v/vgen_1.mp4" in repr(task)
