"""The pure scheduling rules of veo_nb._schedule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veo_nb import _schedule as s
from veo_nb._spec import ESTIMATES_S, Mode


def poll_ages(low, high, p, give_up, first=0.0):
    """Every poll age of one never-finishing task, starting from contact at ``first``."""
    ages, last = [], first
    while True:
        nxt = s.next_poll_age(last, low=low, high=high, poll_interval=p, give_up_age=give_up)
        if nxt is None:
            return ages
        ages.append(nxt)
        last = nxt
        assert len(ages) < 10_000


def test_documented_windows_are_scaled():
    assert s.documented_window(Mode.TEXT, 0.01) == pytest.approx((1.2, 3.0))
    assert s.documented_window("first_last") == ESTIMATES_S[Mode.FIRST_LAST]
    assert s.documented_window(None) == (120.0, 300.0)
    assert s.documented_window("no-such-mode") == (120.0, 300.0)
    assert s.default_poll_interval(0.5) == 15.0


def test_never_contacted_means_poll_now():
    assert s.next_poll_age(None, low=120, high=300, poll_interval=30, give_up_age=3600) == 0.0


def test_the_documented_schedule():
    ages = poll_ages(120, 300, 30, 3600)
    # one early check, then every 30 s from low + P up to 2 × high
    assert ages[:3] == [60, 150, 180]
    dense = [a for a in ages if a <= 600]
    assert dense == [60] + list(range(150, 601, 30))
    # then the gaps double and stop at 10 × P
    tail = [b - a for a, b in zip(ages, ages[1:]) if a >= 600]
    assert tail[:6] == [30, 30, 60, 120, 240, 300]
    assert max(tail) == 300
    assert ages[-1] == 3600


def test_submitted_task_is_not_polled_before_an_interval():
    # contact at age 0 (the create response); low/2 below P is pushed to P
    assert s.next_poll_age(0.0, low=40, high=100, poll_interval=30, give_up_age=500) == 30


def test_late_tracked_task_keeps_the_interval_from_its_first_poll():
    # tracked at age 145 (polled at once): the grid point 150 is too close
    assert s.next_poll_age(145, low=120, high=300, poll_interval=30, give_up_age=3600) == 175


@settings(max_examples=300, deadline=None)
@given(
    low=st.floats(1, 500),
    span=st.floats(0, 500),
    p=st.floats(0.5, 100),
    first=st.floats(0, 400),
    give_up_factor=st.floats(1, 20),
)
def test_polls_are_never_closer_than_the_interval(low, span, p, first, give_up_factor):
    high = low + span
    give_up = max(2 * high, first + p) * give_up_factor
    ages = [first] + poll_ages(low, high, p, give_up, first)
    gaps = [b - a for a, b in zip(ages, ages[1:])]
    assert all(g >= p * (1 - 1e-9) for g in gaps)
    assert all(g <= max(s.MAX_BACKOFF_FACTOR * p, low) + 1e-6 for g in gaps)
    assert ages[-1] <= give_up + p + 1e-6


@settings(max_examples=300, deadline=None)
@given(
    low=st.floats(1, 500),
    span=st.floats(0, 500),
    p=st.floats(0.5, 100),
    where=st.floats(0, 1),
)
def test_detection_delay_is_at_most_one_interval_inside_the_window(low, span, p, where):
    high = low + span
    finish = low + where * span
    ages = poll_ages(low, high, p, 10 * high + 10 * p)
    seen = next(a for a in ages if a >= finish)
    assert seen - finish <= p * (1 + 1e-9)


def test_few_polls_before_low():
    ages = poll_ages(120, 300, 30, 3600)
    assert [a for a in ages if a < 120] == [60]


def test_learned_window_needs_enough_samples():
    assert s.learned_window((120, 300), [130, 140, 150, 160]) == (120, 300)


def test_learned_window_uses_a_low_percentile_within_bounds():
    low, high = s.learned_window((120, 300), [200, 210, 220, 230, 240, 250])
    assert 200 <= low <= 210 and high == 300
    assert s.learned_window((120, 300), [1, 2, 3, 4, 5])[0] == 60  # 0.5 × documented low
    assert s.learned_window((120, 300), [900] * 6)[0] == 300  # documented high
    assert s.learned_window((120, 300), [math.nan, -1, 150, 150, 150, 150]) == (120, 300)


def test_error_backoff_doubles_and_is_capped():
    assert [s.error_backoff(n, 3) for n in (1, 2, 3, 4, 5, 9)] == [3, 6, 12, 24, 30, 30]


def test_default_wait_timeout():
    assert s.default_wait_timeout(3.0, 0.3) == pytest.approx(6.9)
