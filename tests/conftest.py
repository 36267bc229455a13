"""Suite-wide fixtures: every test starts from an environment without the
user's VEO_* settings, so nothing reaches a real service or a real key."""

from __future__ import annotations

import pytest

_ENV = ("VEO_API_KEY", "VEO_BASE_URL", "VEO_DEMO", "VEO_TIME_SCALE", "VEO_LOG")


@pytest.fixture(autouse=True)
def _clean_veo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
