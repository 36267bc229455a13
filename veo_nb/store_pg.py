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
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ._log import logger
from ._class import STUDENTS, TALLY_TRIGGER, TEACHERS
from .errors import OwnershipError, ValidationError
from ._schema import (
    CREATED_INDEX,
    HISTORY_INDEXES,
    LEDGER_INDEXES,
    LEDGER_TABLE,
    PG_OWNER,
    REUSE_TABLE,
    SCHEMA_VERSION,
    SEED_LEDGER,
    SPENT_INDEX,
    WORD_INDEX,
    Step,
    backfill_derived,
)
from ._store_query import FILL_TALLIES, FOLD_SQL, TALLIES_TABLE
from .store import BaseStore, StoreError, check_version

_T = TypeVar("_T")

#: The URL schemes this backend accepts.
SCHEMES = ("postgresql", "postgres")
#: Connections per store and process (reads do not wait for a long write).
POOL_SIZE = 4
#: The channel writers notify and followers listen to.
CHANNEL = "veo_nb_changes"
#: ICU's root collation: its ``LOWER`` folds every script whatever the database's locale.
_ICU_ROOT = "und-x-icu"
#: Seconds a call waits for the server, connection problems retried
#: included, before it raises :class:`~veo_nb.store.StoreError`; a slow
#: answer of a server that still answers a probe gets this long again.
RETRY_S = 10.0
#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT_S = 10
#: Seconds a call waits while the server is known not to answer (an earlier
#: call timed out and none has succeeded since): close() and the poller's
#: looks fail fast instead of waiting :data:`RETRY_S` each.
HUNG_RETRY_S = 1.0
#: Seconds the liveness probe of a slow call waits for a new connection
#: (it starts this long before the call's deadline).
PROBE_TIMEOUT_S = 3
#: Connection settings so that a silent network is noticed by the OS too
#: (keepalives, and unacknowledged data given up after 10 s).
CONNECT_KWARGS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 5,
    "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000,
}
#: Session settings of every pooled connection: a lock wait, or a client
#: that went silent inside a transaction (a frozen kernel holding the
#: revision counter's row), never stalls the other processes for long.
SESSION_SQL = ("SET lock_timeout = '10s'", "SET idle_in_transaction_session_timeout = '30s'")
#: Query parameters of a URL that hold a secret.
_SECRET_PARAMS = ("password", "sslpassword")

_REAL = "DOUBLE PRECISION"
#: The schema, created in one step: a PostgreSQL store starts at the
#: current version; later versions add steps here and in ``MIGRATIONS``.
PG_MIGRATIONS: dict[int, tuple[Step, ...]] = {
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
    5: (REUSE_TABLE.format(real=_REAL), SPENT_INDEX),
    6: (f"ALTER TABLE tasks ADD COLUMN amount {_REAL}",
        f"ALTER TABLE tasks ADD COLUMN progress {_REAL}", backfill_derived,
        *(index.format(way=" DESC NULLS LAST", tail=" DESC") for index in (CREATED_INDEX, WORD_INDEX)),
        *HISTORY_INDEXES, TALLIES_TABLE.format(real=_REAL), FILL_TALLIES),
    7: (LEDGER_TABLE.format(real=_REAL, owner=PG_OWNER), *LEDGER_INDEXES, *SEED_LEDGER),
}


#: Who this session is on a class store: its role, whether it is a student
#: (not a teacher), and whether a trigger keeps the tallies.
_SESSION = (
    f"SELECT session_user, CASE WHEN to_regrole('{STUDENTS}') IS NULL THEN false "
    f"WHEN to_regrole('{TEACHERS}') IS NOT NULL AND pg_has_role(session_user, '{TEACHERS}', "
    f"'MEMBER') THEN false ELSE pg_has_role(session_user, '{STUDENTS}', 'MEMBER') END, "
    "EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'tasks'::regclass "
    f"AND tgname = '{TALLY_TRIGGER}_update')"
)


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` is a URL this backend takes."""
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def redact_url(url: str, *, mark: str = "***") -> str:
    """``url`` with its password, in the address or as a ``?password=``
    parameter, replaced by ``mark`` (user, host, port, database and other
    parameters kept: they say which store it is); ``mark=""`` drops it."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = quote(unquote(parts.username or ""), safe="")
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:{mark}@{host}" if mark else f"{user}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
        kept = [(name, mark if name.lower() in _SECRET_PARAMS else value)
                for name, value in pairs if mark or name.lower() not in _SECRET_PARAMS]
        query = urlencode(kept, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secrets in ``url`` (its password, raw and decoded), to scrub from
    any text a driver produces."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_PARAMS]
    return sorted({form for secret in found if secret
                   for form in (secret, unquote(secret), quote(secret, safe=""))},
                  key=len, reverse=True)


class _Deadlines:
    """The connections in use and when each must have answered: a thread
    looks at those past their deadline and, unless a fresh connection to
    the same server answers at once (the call is slow, not hung: it gets
    another :data:`RETRY_S`), cuts their socket. A frozen server or a
    silent network otherwise leaves libpq waiting for the OS's TCP timeout,
    about 15 minutes, and the kernel with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, list[Any]] = {}  # id -> [deadline, conn, probe]
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, conn: Any, deadline: float, probe: Callable[[], bool]) -> Iterator[None]:
        """While the block runs, ``conn`` must answer by ``deadline``
        (``time.monotonic()``); ``probe()`` says whether its server is alive."""
        entry = [deadline, conn, probe]
        key = id(entry)
        with self._lock:
            self._watched[key] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="veo_nb-pg-deadlines",
                                                daemon=True)
                self._thread.start()
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(key, None)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                entries = list(self._watched.values())
            late = [e for e in entries if e[0] <= now]
            for entry in late:
                if entry[2]():
                    entry[0] = time.monotonic() + RETRY_S
                else:
                    _cut(entry[1])
                    entry[0] = float("inf")
            pending = [e[0] for e in entries if e[0] > now]
            self._wake.clear()
            self._wake.wait(min([*pending, now + 5.0]) - now if pending else None)


def _cut(conn: Any) -> None:
    """Shut the socket of ``conn`` down under libpq: its blocked read returns
    at once and psycopg raises ``OperationalError``; the pool then drops it."""
    try:
        dup = os.dup(conn.pgconn.socket)
    except Exception:  # noqa: BLE001 - already closed: nothing is waiting on it
        return
    sock = socket.socket(fileno=dup)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_DEADLINES = _Deadlines()


@functools.lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    """The shared SQL with psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", "%s")


def _configure(conn: Any) -> None:
    """Every pooled connection's session settings (:data:`SESSION_SQL`)."""
    for sql in SESSION_SQL:
        conn.execute(sql)


class _Cursor:
    """A psycopg cursor that takes the shared ``?`` SQL."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cur.execute(_dialect(sql), params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._cur.executemany(_dialect(sql), rows)
        return self._cur


def _fold_sql(cur: Any) -> str:
    """How this server lowers searched text for every script: ``LOWER`` with
    ICU's root collation where the server has it (in a ``C`` locale, the
    default of many clusters, ``LOWER`` folds ASCII only), else ``LOWER``."""
    found = cur.execute("SELECT 1 FROM pg_collation WHERE collname = ?", (_ICU_ROOT,)).fetchone()
    return f'LOWER(({{}}) COLLATE "{_ICU_ROOT}")' if found else FOLD_SQL


class PostgresStore(BaseStore):
    """Task records and events in a PostgreSQL database, shared by any number
    of processes and machines. ``url`` is a ``postgresql://`` URL of an
    existing database; the tables are created on first use."""

    _GREATEST = "GREATEST"
    _TIE = "task_id"
    shared = True
    _role: str = ""
    _student = False  # a student of a class store (set when connected)

    def _nulls(self, descending: bool) -> str:
        return " NULLS LAST" if descending else " NULLS FIRST"

    def _lock_task(self, cur: Any, task_id: str) -> None:
        # Two processes writing one task at once (both tracking it) would both
        # read its tallies before either wrote: the second one waits here.
        cur.execute("SELECT pg_advisory_xact_lock(1, hashtext(?))", (task_id,))

    def _lock_spending(self, cur: Any, since: float) -> None:
        # The day's reservations queue here: each reads the ledger after the
        # one before it committed.
        cur.execute("SELECT pg_advisory_xact_lock(2, hashtext(?))", (f"veo_nb spending {since}",))

    _NOW = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"

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
        self._secrets = url_secrets(url)
        self._key = redact_url(url, mark="")
        self._listeners: list[Callable[[], None]] = []
        self._listen_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._hung = False  # the last call found the server silent
        try:
            # One direct connection first: a wrong URL fails at once, clearly,
            # and the tables are made or migrated before the pool opens.
            with psycopg.connect(url, **CONNECT_KWARGS) as conn, \
                    _DEADLINES.watch(conn, time.monotonic() + RETRY_S - PROBE_TIMEOUT_S,
                                     self._alive):
                with conn.transaction(), conn.cursor() as raw:
                    cur = _Cursor(raw)
                    self._migrate(cur)
                    self._role, self._student, self.tallies_kept = cur.execute(_SESSION).fetchone()
                    self._FOLD = _fold_sql(cur)
            self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=True,
                                        kwargs={"autocommit": True, **CONNECT_KWARGS},
                                        configure=_configure, timeout=RETRY_S, name=self._key)
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
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _alive(self) -> bool:
        """Whether the server answers a new connection at once (a slow call
        is then left to finish)."""
        try:
            with self._psycopg.connect(self._url, **{**CONNECT_KWARGS,
                                                     "connect_timeout": PROBE_TIMEOUT_S}) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure: the server does not answer
            return False

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
                if callable(sql):
                    sql(cur)
                else:
                    cur.execute(sql)
        if version != SCHEMA_VERSION:
            cur.execute("INSERT INTO meta (name, value) VALUES ('schema', ?) ON CONFLICT (name) "
                        "DO UPDATE SET value = excluded.value", (SCHEMA_VERSION,))

    def _run(self, body: Callable[[Any], _T], *, write: bool) -> _T:
        """``body(cursor)`` on a pooled connection (in one transaction for a
        write), again after a dropped connection; raises
        :class:`~veo_nb.store.StoreError` once the server has not answered
        for :data:`RETRY_S` (:data:`HUNG_RETRY_S` while it is known silent)."""
        psycopg = self._psycopg
        deadline = time.monotonic() + (HUNG_RETRY_S if self._hung else RETRY_S)
        while True:
            try:
                wait = max(deadline - time.monotonic(), 0.05)
                with self._pool.connection(timeout=wait) as conn, \
                        _DEADLINES.watch(conn, deadline - PROBE_TIMEOUT_S, self._alive):
                    if write:
                        with conn.transaction(), conn.cursor() as cur:
                            result = body(_Cursor(cur))
                    else:
                        with conn.cursor() as cur:
                            result = body(_Cursor(cur))
                self._hung = False
                return result
            except psycopg.errors.InsufficientPrivilege as exc:  # a class store's guard
                raise OwnershipError(f"the PostgreSQL store {self._key} refused: "
                                     f"{self._clean(exc)}") from None
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                    psycopg.errors.DeadlockDetected) as exc:
                if self._closed.is_set() or time.monotonic() > deadline:
                    self._hung = not self._closed.is_set()
                    raise StoreError(f"the PostgreSQL store {self._key} failed: "
                                     f"{self._clean(exc)}") from None
                logger.debug("veo_nb: PostgreSQL store %s: %s; retrying", self._key,
                             self._clean(exc))
                time.sleep(0.2)

    def _transact(self, body: Callable[[Any], _T]) -> _T:
        return self._run(body, write=True)

    def manages_all(self) -> bool:
        """Whether this session is a teacher of a class store (``veo-nb
        class``); a store without a class set-up has none."""
        return bool(self._read(lambda cur: cur.execute(
            f"SELECT to_regrole('{TEACHERS}') IS NOT NULL "
            f"AND pg_has_role(session_user, '{TEACHERS}', 'MEMBER')").fetchone()[0]))

    def may_write(self, owner: str | None) -> bool:
        """Whether this session may record polls and downloads of a task of
        ``owner``: a student of a class store (``veo-nb class``) only of
        their own tasks (row-level security refuses the others' rows)."""
        return not self._student or owner == self._role

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
                with psycopg.connect(self._url, autocommit=True, **CONNECT_KWARGS) as conn:
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
            pool.close(timeout=HUNG_RETRY_S if self._hung else 5.0)

    def close(self) -> None:
        """Close the connections; the store cannot be used afterwards."""
        self._closed.set()
        self._close_pool()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=5)

    def __repr__(self) -> str:
        return f"PostgresStore({self._key!r})"
