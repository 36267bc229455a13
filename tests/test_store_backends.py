"""The store's contract on both backends: SQLite (a file) and PostgreSQL (a
real throwaway server, see tests/pg_cluster.py): round trips, field-limited
writes, claims, revisions, the shared 429 gate, deletions, versions."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from veo_nb import TaskStatus, Tracker, ValidationError
from veo_nb.records import NOT_FOUND_REASON, Event, TaskRecord
from veo_nb.store import SCHEMA_VERSION, STORE_ENV, BaseStore, Store, StoreError, open_store

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStore]:
    if request.param == "sqlite":
        opened, _ = open_store(tmp_path / "h.sqlite", tmp_path / "unused")
    else:
        opened, _ = open_store(request.getfixturevalue("pg_db_url"), tmp_path / "unused")
    try:
        yield opened
    finally:
        opened.close()


def record(task_id: str = "vgen_1", **kw) -> TaskRecord:
    base = dict(label="fox", prompt="a <fox>", model="veo_3_1_fast", status=TaskStatus.QUEUED,
                status_text="queued", first_seen_at=T0, request={"prompt": "a <fox>"},
                raw={"id": task_id, "nested": [1, None]}, service="https://svc:443",
                owner="ada", key_fingerprint="abc123")
    base.update(kw)
    return TaskRecord(task_id, **base)


def test_round_trip_events_and_owner(store: BaseStore) -> None:
    row = store.write(record(), [Event("vgen_1", "status", "queued", observed_at=T0)])
    assert row.record == record() and row.rev >= 1
    assert store.get("vgen_1") == record()
    history = store.events_frame()
    assert list(history.owner) == ["ada"] and list(history.kind) == ["status"]
    assert list(store.tasks_frame().owner) == ["ada"]


def test_writes_touch_only_their_fields_and_never_regress(store: BaseStore) -> None:
    store.write(record())
    store.write(record(status=TaskStatus.COMPLETED, status_text="completed", label="ignored"),
                fields=("status", "status_text"))
    got = store.get("vgen_1")
    assert got.status is TaskStatus.COMPLETED and got.label == "fox"
    store.write(record(status=TaskStatus.PROCESSING, status_text="processing", label="new"))
    got = store.get("vgen_1")
    assert got.status is TaskStatus.COMPLETED and got.label == "new"  # terminal kept


def test_claims(store: BaseStore) -> None:
    # Real time, short spans: PostgreSQL reads claim times from the server's clock.
    store.write(record())
    t0 = time.time()
    assert store.claim_poll("vgen_1", "a", now=t0, interval=0.3, until=t0 + 0.5) is not None
    assert store.claim_poll("vgen_1", "b", now=t0, interval=0.3, until=t0 + 1) is None  # held
    assert store.claim_poll("vgen_1", "a", now=t0, interval=0.3, until=t0 + 1) is None  # too soon
    time.sleep(0.6)
    t1 = time.time()
    taken = store.claim_poll("vgen_1", "b", now=t1, interval=0.3, until=t1 + 1)  # expired
    assert taken is not None and taken.poller == "b" and abs(taken.contact_at - t1) < 1.0
    store.release("b")
    assert store.row("vgen_1").poller is None
    assert store.row("vgen_1").contact_at == taken.contact_at  # a release keeps the contact
    assert store.claim_download("vgen_1", "a", now=1.0, until=10.0)
    assert not store.claim_download("vgen_1", "b", now=5.0, until=20.0)
    assert store.claim_download("vgen_1", "b", now=11.0, until=20.0)
    store.write(record(status=TaskStatus.FAILED, status_text="failed"), fields=("status",))
    assert store.claim_poll("vgen_1", "c", now=999.0, interval=30.0, until=1e4) is None  # finished


def test_one_claim_wins_among_many_threads(store: BaseStore) -> None:
    store.write(record())
    winners = []

    def claim(me: str) -> None:
        if store.claim_poll("vgen_1", me, now=500.0, interval=30.0, until=600.0) is not None:
            winners.append(me)

    threads = [threading.Thread(target=claim, args=(f"p{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_changes_deletions_and_revisions(store: BaseStore) -> None:
    start = store.revision()
    store.write(record("vgen_1"))
    store.write(record("vgen_2"))
    rows, gone, newest = store.changes(start)
    assert [r.record.task_id for r in rows] == ["vgen_1", "vgen_2"] and gone == []
    store.delete(["vgen_1"])
    rows, gone, later = store.changes(newest)
    assert rows == [] and gone == ["vgen_1"] and later > newest
    assert store.get("vgen_1") is None and [r.task_id for r in store.records()] == ["vgen_2"]


def test_the_shared_rate_limit_gate(store: BaseStore) -> None:
    assert store.rate_limited_until("svc") == 0.0
    store.limit_rate("svc", 200.0)
    store.limit_rate("svc", 150.0)  # never shortened
    assert store.rate_limited_until("svc") == 200.0


def test_every_gate_expires_within_its_horizon(store: BaseStore) -> None:
    # One 429 asking for years (or a gate 0.3 stored so) froze polling for good.
    now = time.time()
    store.limit_rate("svc", now + 10**9)
    assert now < store.rate_limited_until("svc") <= time.time() + 900
    store.limit_rate("fast", now + 10**9, horizon=2.0)
    gate = store.rate_limited_until("fast", horizon=2.0)
    assert now < gate <= time.time() + 2.0
    time.sleep(0.05)
    assert store.rate_limited_until("fast", horizon=2.0) == gate  # clamped once: it expires
    store.limit_rate("fast", now + 0.5, horizon=2.0)  # a shorter one never shortens it
    assert store.rate_limited_until("fast", horizon=2.0) == gate


def test_a_url_of_another_kind_is_refused_and_never_becomes_a_file(tmp_path: Path, monkeypatch,
                                                                   veo_emulator) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("mysql://root@127.0.0.1:3306/veo", "redis://127.0.0.1/0", "https://x/y"):
        with pytest.raises(ValidationError, match="postgresql://user@host"):
            open_store(url, tmp_path / "default.sqlite")
    with pytest.raises(ValidationError, match="not a supported store"):
        Tracker(veo_emulator.client(), store="mongodb://u:pw@127.0.0.1/veo")
    with pytest.raises(ValidationError) as info:
        Tracker(store="mysql://root:pw@127.0.0.1/veo")  # refused before demo mode starts
    assert "pw" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no "mysql:" folder, no file


def test_sqlite_urls_and_the_environment(tmp_path: Path, monkeypatch) -> None:
    store, own = open_store(f"sqlite:///{tmp_path}/a.sqlite", tmp_path / "unused")
    assert isinstance(store, Store) and own and store.path == tmp_path / "a.sqlite"
    store.close()
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "from-env.sqlite"))
    store, _ = open_store(None, tmp_path / "default.sqlite")
    assert store.path == tmp_path / "from-env.sqlite"
    store.close()


@pytest.mark.postgres
def test_postgres_refuses_a_newer_schema_and_hides_the_password(pg_db_url: str,
                                                               tmp_path: Path) -> None:
    import psycopg

    secret = "S3cret-PASSWORD-zq9"
    url = pg_db_url.replace("postgres@", f"postgres:{secret}@")  # trust auth: accepted
    store, _ = open_store(url, tmp_path / "unused")
    assert secret not in store.key and secret not in repr(store) and "***" in store.url
    store.close()
    with psycopg.connect(pg_db_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = %s WHERE name = 'schema'", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer veo_nb") as info:
        open_store(url, tmp_path / "unused")
    assert secret not in str(info.value)
    broken = url.rsplit(":", 1)[0] + ":1/veo"  # nothing listens on port 1
    with pytest.raises(StoreError) as down:
        open_store(broken, tmp_path / "unused")
    assert secret not in str(down.value) and "cannot use the PostgreSQL store" in str(down.value)


def test_the_last_contact_never_moves_back(store: BaseStore) -> None:
    """A write naming an older contact (another machine's clock runs behind)
    keeps the newer one: the 30 s rule counts from the latest contact."""
    store.write(record(), claim={"contact_at": 2000.0})
    store.write(record(), claim={"contact_at": 1000.0, "poller": "late"})
    row = store.row("vgen_1")
    assert (row.contact_at, row.poller) == (2000.0, "late")
    store.write(record(), claim={"contact_at": 3000.0})
    assert store.row("vgen_1").contact_at == 3000.0


@pytest.mark.postgres
def test_a_machine_whose_clock_runs_ahead_cannot_poll_early(pg_db_url: str, tmp_path: Path) -> None:
    """Claims on a shared server compare the server's clock, not each
    machine's: a machine 60 s ahead passed the 30 s rule at once before."""
    here, _ = open_store(pg_db_url, tmp_path / "unused")
    ahead, _ = open_store(pg_db_url, tmp_path / "unused")
    with here, ahead:
        here.write(record())
        now = time.time()
        assert here.claim_poll("vgen_1", "here", now=now, interval=30.0, until=now + 1) is not None
        time.sleep(1.1)  # the claim ran out; the contact is 1 s old
        skewed = time.time() + 60.0
        assert ahead.claim_poll("vgen_1", "ahead", now=skewed, interval=30.0,
                                until=skewed + 40) is None


def _recount(store: BaseStore) -> tuple[dict[str, int], tuple[str, ...], int, int, float]:
    """The header's figures computed from every row (what the tallies must equal)."""
    frame = store.frame()
    words = frame["status_text"].where(frame["error"] != NOT_FOUND_REASON, "not found")
    owners = tuple(sorted({o for o in frame["owner"] if o}, key=lambda o: (o.casefold(), o)))
    amounts = frame["amount"].dropna()
    return (words.value_counts().to_dict(), owners, int((frame["status"] == "completed").sum()),
            len(amounts), float(amounts.sum()))


def test_the_headers_tallies_follow_every_write_and_deletion(store: BaseStore) -> None:
    """The panel's counts come from running tallies kept by each write: after
    inserts, status changes, partial writes, untracking, reopening, costs and
    deletions, in any order, they equal a count of the rows."""
    rng = random.Random(7)
    statuses = [("queued", TaskStatus.QUEUED, None), ("processing", TaskStatus.PROCESSING, None),
                ("completed", TaskStatus.COMPLETED, None), ("failed", TaskStatus.FAILED, "boom"),
                ("failed", TaskStatus.FAILED, NOT_FOUND_REASON), ("Succeeded", TaskStatus.UNKNOWN, None)]
    for step in range(300):
        task_id = f"vgen_{rng.randrange(40)}"
        text, status, error = rng.choice(statuses)
        action = rng.random()
        if action < 0.1:
            store.delete([task_id, f"vgen_{rng.randrange(40)}"])
            continue
        rec = record(task_id, status=status, status_text=text, error=error,
                     owner=rng.choice(["ada", "bo", None]),
                     raw={"amount": rng.choice([0.5, 1.25])} if rng.random() < 0.5 else {})
        if action < 0.3:
            store.write(rec, fields=("tracked",) if rng.random() < 0.5 else ("raw",),
                        reopen=False)
            store.write(dataclasses.replace(rec, tracked=rng.random() < 0.7), fields=("tracked",))
        else:
            store.write(rec, reopen=rng.random() < 0.2)
    overview = store.overview()
    counts, owners, completed, costed, amount = _recount(store)
    assert overview.counts == counts and overview.total == sum(counts.values())
    assert overview.owners == owners and overview.completed == completed
    assert overview.costed == costed and costed > 0
    assert overview.amount == pytest.approx(amount)


def test_search_folds_case_for_every_script(store: BaseStore) -> None:
    # SQLite's LOWER and LIKE fold ASCII only, and so does PostgreSQL in a C
    # locale: a lower-case needle missed every non-ASCII capital.
    from veo_nb._store_query import TaskQuery

    for n, (label, prompt) in enumerate([("Überblick", "a fox"), ("Élan", "a cat"),
                                         ("plain", "Москва at night"), ("ΣΟΦΙΑ", "an owl")]):
        store.write(record(f"vgen_{n}", label=label, prompt=prompt, tracked=True))

    def found(needle: str) -> list[str]:
        return [r.task_id for r in store.page(TaskQuery(search=needle), 0, 10)]

    assert found("überblick") == found("ÜBERBLICK") == found("Überblick") == ["vgen_0"]
    assert found("élan") == ["vgen_1"] and found("москва") == found("МОСКВА") == ["vgen_2"]
    assert found("σοφια") == ["vgen_3"] and store.count(TaskQuery(search="über")) == 1
    assert found("zürich") == [] and store.count(TaskQuery(search=" ÉLAN ")) == 1
