"""Faults behind the service, over real HTTP: the emulator handles an API
request, then loses its answer or sends it late."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from veo_nb import ValidationError
from veo_nb.emulator import Emulator, FaultConfig

CREATE = {"model": "veo_3_1_fast", "prompt": "a cat on a skateboard"}


def _session(emulator: Emulator) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {emulator.api_key}"
    return session


@pytest.fixture
def losing() -> Iterator[Emulator]:
    """An emulator (real-time polling rule: 30 s) that loses every API answer."""
    faults = FaultConfig(seed=1, lost_answer_rate=1.0)
    with Emulator(time_scale=1.0, failure_rate=0, faults=faults) as emulator:
        yield emulator


def test_a_create_whose_answer_is_lost_still_creates_the_task(losing: Emulator) -> None:
    with _session(losing) as session:
        for n in (1, 2):
            with pytest.raises(requests.ConnectionError):
                session.post(f"{losing.base_url}/v1/veo/videos", json=CREATE, timeout=10)
            assert len(losing.task_ids()) == n
    stats = losing.stats
    assert stats.creates == 2 and stats.faults["lost_answer"] == 2
    assert losing.peek(losing.task_ids()[0])["status"] == "queued"


def test_a_poll_whose_answer_is_lost_counts_and_a_quick_retry_is_a_violation(losing: Emulator) -> None:
    with _session(losing) as session:
        with pytest.raises(requests.ConnectionError):
            session.post(f"{losing.base_url}/v1/veo/videos", json=CREATE, timeout=10)
        (task_id,) = losing.task_ids()
        url = f"{losing.base_url}/v1/result/{task_id}"
        with pytest.raises(requests.ConnectionError):
            session.get(url, timeout=10)
        stats = losing.stats
        assert stats.polls_by_task[task_id] == 1 and stats.interval_violations == 0
        with pytest.raises(requests.ConnectionError):  # the client retries at once
            session.get(url, timeout=10)
    stats = losing.stats
    assert stats.polls_by_task[task_id] == 2
    assert stats.interval_violations == 1 and stats.violations_by_task == {task_id: 1}
    assert stats.faults["lost_answer"] == 3


def test_lost_answers_are_for_api_requests_only(losing: Emulator) -> None:
    with _session(losing) as session, pytest.raises(requests.ConnectionError):
        session.post(f"{losing.base_url}/v1/veo/videos", json=CREATE, timeout=10)
    (task_id,) = losing.task_ids()
    losing.advance(1000)
    video = requests.get(losing.peek(task_id)["video_url"], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert losing.stats.faults == {"lost_answer": 1}


def test_a_slow_answer_outlives_a_shorter_client_timeout_but_the_poll_counted() -> None:
    faults = FaultConfig(seed=1, slow_answer_rate=1.0, slow_answer_s=0.5)
    with Emulator(time_scale=0.01, failure_rate=0, faults=faults) as emulator, \
            _session(emulator) as session:
        start = time.monotonic()
        created = session.post(f"{emulator.base_url}/v1/veo/videos", json=CREATE, timeout=10)
        assert created.status_code == 200 and time.monotonic() - start >= 0.5
        task_id = created.json()["id"]
        with pytest.raises(requests.ReadTimeout):
            session.get(f"{emulator.base_url}/v1/result/{task_id}", timeout=0.2)
        # counted when it arrived, not when the late answer goes out
        assert emulator.stats.polls_by_task[task_id] == 1
        assert emulator.stats.faults["slow_answer"] == 2


def test_answer_faults_are_drawn_from_the_seeded_rng() -> None:
    def outcomes() -> list[bool]:
        faults = FaultConfig(seed=7, lost_answer_rate=0.5)
        with Emulator(time_scale=0.01, failure_rate=0, seed=1, faults=faults) as emulator, \
                _session(emulator) as session:
            lost = []
            for _ in range(30):
                try:
                    session.post(f"{emulator.base_url}/v1/veo/videos", json=CREATE, timeout=10)
                except requests.ConnectionError:
                    lost.append(True)
                else:
                    lost.append(False)
            assert len(emulator.task_ids()) == 30
            assert emulator.stats.faults.get("lost_answer", 0) == sum(lost)
            return lost

    first = outcomes()
    assert first == outcomes()
    assert 5 <= sum(first) <= 25


@pytest.mark.parametrize("bad", [{"lost_answer_rate": 1.5}, {"slow_answer_rate": -0.1},
                                 {"slow_answer_s": -1}, {"slow_answer_s": float("inf")}])
def test_bad_answer_fault_options_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        FaultConfig(**bad)
