"""PostgreSQL persistence: the same history as :class:`~veo_nb.store.Store`,
on a database server that many machines share (a class on JupyterHub).

``Tracker(store="postgresql://user@host:5432/db")``, or ``VEO_NB_STORE`` in
the environment, keeps the history here behind the same interface: the same
tables and SQL, the same claims (a conditional ``UPDATE`` that PostgreSQL
re-checks on the locked row, so two processes never both win), revisions in
commit order (writers queue on the revision counter's row), and followers
that wake at once through ``LISTEN``/``NOTIFY`` (and ask for the revision
regularly too, in case a notification is lost with a connection).

Needs the ``postgres`` extra: ``pip install 'veo_nb[postgres]'`` (psycopg 3
and psycopg-pool). The database must exist; its tables are created and
migrated on first use (the schema version is in the ``meta`` table, and
concurrent first uses wait on an advisory lock).

The password in the URL never appears in :attr:`PostgresStore.key`, a
repr, a log or an error: it is replaced by ``***`` everywhere.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ._log import logger
from .errors import ValidationError
from .store import SCHEMA_VERSION, BaseStore, StoreError, check_version

_T = TypeVar("_T")

#: The URL schemes this backend accepts.
SCHEMES = ("postgresql", "postgres")
#: Connections per store and process (reads do not wait for a long write).
POOL_SIZE = 4
#: The channel writers notify and followers listen to.
CHANNEL = "veo_nb_changes"
#: Seconds a connection problem is retried before it is reported.
RETRY_S = 10.0
#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT_S = 10

_REAL = "DOUBLE PRECISION"
#: The schema, created in one step: a PostgreSQL store starts at the
#: current version; later versions add steps here and in ``MIGRATIONS``.
PG_MIGRATIONS: dict[int, tuple[str, ...]] = {
    4: (
        f"""CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            label TEXT, prompt TEXT, model TEXT, resolution TEXT,
            aspect_ratio TEXT, mode TEXT,
            status TEXT NOT NULL, status_text TEXT NOT NULL,
            created_at {_REAL}, first_seen_at {_REAL}, started_at {_REAL}, finished_at {_REAL},
            video_url TEXT, url_expires_at {_REAL}, video_path TEXT, error TEXT,
            download_state TEXT NOT NULL, download_error TEXT,
            tracked INTEGER NOT NULL, poll_count INTEGER NOT NULL,
            last_polled_at {_REAL}, next_poll_at {_REAL},
            request TEXT NOT NULL, raw TEXT NOT NULL,
            service TEXT, owner TEXT, key_fingerprint TEXT, saved_on TEXT,
            rev BIGINT NOT NULL DEFAULT 0, contact_at {_REAL},
            poller TEXT, poll_until {_REAL}, downloader TEXT, download_until {_REAL}
        )""",
        "CREATE INDEX tasks_rev ON tasks (rev)",
        f"""CREATE TABLE events (
            seq BIGSERIAL PRIMARY KEY,
            task_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT,
            observed_at {_REAL} NOT NULL, http_status INTEGER, attempt INTEGER,
            detail TEXT
        )""",
        "CREATE INDEX events_task ON events (task_id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('rev', 0)",
        "CREATE TABLE deleted (task_id TEXT NOT NULL, rev BIGINT NOT NULL)",
        f"CREATE TABLE services (service TEXT PRIMARY KEY, rate_limited_until {_REAL} NOT NULL)",
    ),
}


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` is a URL this backend takes."""
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (user, host, port and
    database kept: they say which store it is)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


@functools.lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    """The shared SQL with psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Cursor:
    """A psycopg cursor that takes the shared ``?`` SQL."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cur.execute(_dialect(sql), params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._cur.executemany(_dialect(sql), rows)
        return self._cur


class PostgresStore(BaseStore):
    """Task records and events in a PostgreSQL database, shared by any number
    of processes and machines. ``url`` is a ``postgresql://`` URL of an
    existing database; the tables are created on first use."""

    _GREATEST = "GREATEST"
    _TIE = "task_id"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ValidationError(
                f"a PostgreSQL store needs psycopg and psycopg-pool ({exc}): "
                "pip install 'veo_nb[postgres]'"
            ) from None
        if not is_postgres_url(url):
            raise ValidationError(f"not a postgresql:// URL: {redact_url(url)!r}")
        self._psycopg = psycopg
        self._url = url
        self._password = urlsplit(url).password
        self._key = redact_url(url).replace(":***@", "@")
        self._listeners: list[Callable[[], None]] = []
        self._listen_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        try:
            # One direct connection first: a wrong URL fails at once, clearly,
            # and the tables are made or migrated before the pool opens.
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                with conn.transaction(), conn.cursor() as cur:
                    self._migrate(_Cursor(cur))
            self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=True,
                                        kwargs={"autocommit": True,
                                                "connect_timeout": CONNECT_TIMEOUT_S},
                                        timeout=RETRY_S, name=self._key)
        except Exception as exc:  # noqa: BLE001 - psycopg and pool errors alike
            self._close_pool()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot use the PostgreSQL store {self._key}: "
                             f"{self._clean(exc)}") from None

    @property
    def key(self) -> str:
        """The database URL without its password: trackers on the same key share
        one history."""
        return self._key

    @property
    def url(self) -> str:
        """The database URL with its password redacted (``***``)."""
        return redact_url(self._url)

    def _clean(self, exc: BaseException) -> str:
        """An error's text with the password (should a driver quote it) removed."""
        text = f"{type(exc).__name__}: {exc}".strip()
        return text.replace(self._password, "***") if self._password else text

    def _migrate(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('veo_nb schema'))")
        if cur.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            version = 0
        else:
            found = cur.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            version = int(found[0]) if found else 0
        check_version(version, self._key)
        first = min(PG_MIGRATIONS)
        for step in range(max(version + 1, first), SCHEMA_VERSION + 1):
            for sql in PG_MIGRATIONS[step]:
                cur.execute(sql)
        if version != SCHEMA_VERSION:
            cur.execute("INSERT INTO meta (name, value) VALUES ('schema', ?) ON CONFLICT (name) "
                        "DO UPDATE SET value = excluded.value", (SCHEMA_VERSION,))

    def _run(self, body: Callable[[Any], _T], *, write: bool) -> _T:
        """``body(cursor)`` on a pooled connection (in one transaction for a
        write), again after a dropped connection, for up to :data:`RETRY_S`."""
        psycopg = self._psycopg
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                with self._pool.connection() as conn:
                    if write:
                        with conn.transaction(), conn.cursor() as cur:
                            return body(_Cursor(cur))
                    with conn.cursor() as cur:
                        return body(_Cursor(cur))
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                    psycopg.errors.DeadlockDetected) as exc:
                if self._closed.is_set() or time.monotonic() > deadline:
                    raise StoreError(f"the PostgreSQL store {self._key} failed: "
                                     f"{self._clean(exc)}") from None
                logger.debug("veo_nb: PostgreSQL store %s: %s; retrying", self._key,
                             self._clean(exc))
                time.sleep(0.2)

    def _transact(self, body: Callable[[Any], _T]) -> _T:
        return self._run(body, write=True)

    def _read(self, body: Callable[[Any], _T]) -> _T:
        return self._run(body, write=False)

    def _notify(self, cur: Any) -> None:
        cur.execute(f"NOTIFY {CHANNEL}")  # delivered when the transaction commits

    def version(self) -> int:
        """The store's newest revision: it changes with every write of any process."""
        return self.revision()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` as soon as another process commits (``LISTEN``),
        from a listener thread with a connection of its own."""
        with self._listen_lock:
            self._listeners.append(callback)
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, daemon=True,
                                                  name=f"veo_nb-listen:{self._key}")
                self._listener.start()

        def unsubscribe() -> None:
            with self._listen_lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def _listen(self) -> None:
        psycopg = self._psycopg
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            with self._listen_lock:
                                listeners = list(self._listeners)
                            for callback in listeners:
                                callback()
            except Exception as exc:  # noqa: BLE001 - reconnect; followers also poll
                if self._closed.is_set():
                    return
                logger.debug("veo_nb: listening on %s: %s", self._key, self._clean(exc))
                self._closed.wait(1.0)

    def _close_pool(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Close the connections; the store cannot be used afterwards."""
        self._closed.set()
        self._close_pool()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=5)

    def __repr__(self) -> str:
        return f"PostgresStore({self._key!r})"
