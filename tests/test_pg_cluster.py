"""The throwaway PostgreSQL server of the tests (``pg_url``, ``pg_db_url``):
a real server, fresh databases, and the two features the future store leans
on, LISTEN/NOTIFY (followers) and FOR UPDATE SKIP LOCKED (claims)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

import pg_cluster

pytestmark = pytest.mark.postgres


def _connect(url: str, **kwargs):
    import psycopg

    return psycopg.connect(url, connect_timeout=10, **kwargs)


def _user_tables(url: str) -> list[str]:
    with _connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return [name for (name,) in rows]


def _database_exists(server_url: str, name: str) -> bool:
    with _connect(server_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_server_is_a_real_postgresql(pg_url: str) -> None:
    with _connect(pg_url) as conn:
        (version,) = conn.execute("SELECT version()").fetchone()
        (database,) = conn.execute("SELECT current_database()").fetchone()
        (host,) = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert version.startswith("PostgreSQL "), version
    assert database == "veo"
    assert host.startswith("127.0.0.1")
    assert urlsplit(pg_url).hostname == "127.0.0.1"


@pytest.mark.parametrize("round_", [1, 2])
def test_pg_db_url_is_fresh_and_empty(pg_url: str, pg_db_url: str, round_: int) -> None:
    # The second round would see the first round's table if databases were reused.
    assert urlsplit(pg_db_url).path != urlsplit(pg_url).path
    assert _user_tables(pg_db_url) == []
    with _connect(pg_db_url) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
    assert _user_tables(pg_db_url) == ["leftover"]
    assert _user_tables(pg_url) == []


def test_new_databases_are_distinct_and_dropped(pg_url: str, pg_db_url: str) -> None:
    other = pg_cluster.new_database(pg_url)
    name = urlsplit(other).path.lstrip("/")
    assert other != pg_db_url
    assert _database_exists(pg_url, name)
    with _connect(pg_db_url) as conn:
        conn.execute("CREATE TABLE only_here (id int)")
    assert _user_tables(other) == []
    # A connection still open does not stop the drop.
    with _connect(other):
        pg_cluster.drop_database(other)
    assert not _database_exists(pg_url, name)


def _poll_notifies(conn, want: int, seconds: float) -> list:
    """Notifications that reach ``conn`` within ``seconds`` (psycopg >= 3.1:
    they arrive with the results of any statement)."""
    got: list = []
    conn.add_notify_handler(got.append)
    try:
        deadline = time.monotonic() + seconds
        while len(got) < want and time.monotonic() < deadline:
            conn.execute("SELECT 1")
            if len(got) < want:
                time.sleep(0.02)
    finally:
        conn.remove_notify_handler(got.append)
    return got


def test_listen_notify_across_two_connections(pg_db_url: str) -> None:
    with _connect(pg_db_url, autocommit=True) as follower, _connect(pg_db_url) as writer:
        follower.execute("LISTEN veo_tasks")
        # Inside a transaction, NOTIFY is delivered on COMMIT only.
        writer.execute("SELECT pg_notify('veo_tasks', 'task-1')")
        assert _poll_notifies(follower, 1, 0.3) == []
        writer.commit()
        (note,) = _poll_notifies(follower, 1, 5.0)
        assert (note.channel, note.payload) == ("veo_tasks", "task-1")
        assert note.pid == writer.info.backend_pid
        # A channel nobody listens to reaches nobody.
        writer.execute("NOTIFY other_channel, 'x'")
        writer.commit()
        assert _poll_notifies(follower, 1, 0.3) == []


def test_for_update_skip_locked_lets_a_second_claimer_pass(pg_db_url: str) -> None:
    import psycopg

    with _connect(pg_db_url) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY)")
        setup.execute("INSERT INTO jobs VALUES (1), (2)")
        setup.commit()

    claim = "SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with _connect(pg_db_url) as first, _connect(pg_db_url) as second, \
            _connect(pg_db_url) as third:
        for conn in (first, second, third):
            conn.execute("SET lock_timeout = '5s'")
        assert first.execute(claim).fetchone() == (1,)
        assert second.execute(claim).fetchone() == (2,)
        assert third.execute(claim).fetchone() is None
        # Without SKIP LOCKED the row really is locked.
        with pytest.raises(psycopg.errors.LockNotAvailable):
            third.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        third.rollback()
        first.commit()  # releases row 1
        assert third.execute(claim).fetchone() == (1,)
        second.rollback()
        third.rollback()


def test_missing_binaries_skip_here_but_fail_under_ci(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path) -> None:
    monkeypatch.setenv(pg_cluster.PG_BIN_ENV, str(tmp_path / "no-such-bin"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y postgresql"):
        pg_cluster.require_postgres()
    for value in ("true", "1", "YES"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match=r"CI=true but .*apt-get install -y postgresql"):
            pg_cluster.require_postgres()
