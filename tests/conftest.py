"""Suite-wide fixtures: every test starts from an environment without the
user's VEO_* settings, so nothing reaches a real service or a real key."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers sit next to this file; make them importable whatever pytest's
# import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_cluster  # noqa: E402

_ENV = ("VEO_API_KEY", "VEO_BASE_URL", "VEO_DEMO", "VEO_TIME_SCALE", "VEO_LOG",
        "VEO_DEMO_VIDEO_SIZE", "VEO_DEMO_FAILURE_RATE", "VEO_DEMO_TIME_SCALE", "VEO_NB_STORE",
        "VEO_NB_OWNER")


@pytest.fixture(autouse=True)
def _clean_veo_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    # Defaults such as ./veo_nb_data/ (the store, demo mode's emulator state)
    # land in a folder of the test's, never in the checkout.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _english(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test sees the panel in English, whatever the machine's locale,
    unless it asks for another language (and the choice ends with the test)."""
    from veo_nb import set_language

    monkeypatch.setenv("VEO_NB_LANG", "en")
    yield
    set_language(None)


def _throwaway_server() -> Iterator[pg_cluster.Cluster]:
    cluster = pg_cluster.start_cluster(pg_cluster.require_postgres())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of the database ``veo`` on a throwaway PostgreSQL server, started
    once per session and stopped (folder removed) at its end. Skips when the
    server binaries or psycopg are missing; fails instead under CI=true."""
    for cluster in _throwaway_server():
        yield cluster.url


@pytest.fixture(scope="module")
def pg_server() -> Iterator[pg_cluster.Cluster]:
    """A throwaway PostgreSQL server of the test module's own (a class's
    roles are server-wide)."""
    yield from _throwaway_server()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a test run on both backends: a SQLite file, or a fresh
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return str(request.getfixturevalue("pg_db_url"))


@pytest.fixture(scope="module")
def class_server() -> Iterator[pg_cluster.Cluster]:
    """A throwaway PostgreSQL server of the module's own, for class stores:
    their roles are server-wide."""
    cluster = pg_cluster.start_cluster(pg_cluster.require_postgres())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_db_url(pg_url: str) -> Iterator[str]:
    """URL of a fresh, empty database on the session's server, dropped after the test."""
    url = pg_cluster.new_database(pg_url)
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)
