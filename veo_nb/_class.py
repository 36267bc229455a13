"""A class on one PostgreSQL history, with the database itself keeping each
student's work safe from the others: roles, row-level security and guards.

``veo-nb class setup`` (or :func:`setup_sql` / :func:`set_up`) run once by the
teacher (with a role that may create roles) makes:

* the schema (the same tables every tracker makes on first use);
* a group role ``veo_nb_teachers`` with the teacher in it, and a group role
  ``veo_nb_students`` with one login role per student (named as the hub's
  user, so that a task's ``owner`` is its student's role);
* the privileges: everyone reads the whole class's history and may record
  what polling needs (statuses, claims, downloads, events) on any task, since
  students may share one API key and each task is still polled once;
* row-level security and guards, so that whatever client connects:

  - a student may delete only their own tasks and their events;
  - a student may not relabel, re-prompt, hide (``tracked``), re-own or
    change the request of a classmate's task (a trigger refuses it with
    SQLSTATE 42501, *insufficient privilege*);
  - a student may record for re-runs to reuse (``reuse``) only tasks of their
    own, and may not drop or redirect a classmate's;
  - the teacher may manage every task;
  - the spending ledger is append-only: rows are inserted as oneself, never
    changed or deleted (:func:`ledger_sql`).

Tables belong to the role that ran the set-up; students never get
``TRUNCATE``, ``DROP`` or schema changes.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from .errors import ValidationError

#: Group roles of a class.
TEACHERS, STUDENTS = "veo_nb_teachers", "veo_nb_students"
#: The columns only a task's owner (or a teacher) may change.
OWNER_COLUMNS = ("owner", "label", "prompt", "tracked", "request")
_TABLES = ("tasks", "events", "meta", "deleted", "services", "reuse", "tallies")


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (a hub user name may hold any character)."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 63:
        raise ValidationError(f"not a usable role name: {name!r} (1 to 63 characters, no NUL)")
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def policy_sql() -> list[str]:
    """The privileges, policies and guards (idempotent: run again, they are
    replaced). The tables must exist."""
    guarded = ", ".join(f"NEW.{c}" for c in OWNER_COLUMNS)
    before = ", ".join(f"OLD.{c}" for c in OWNER_COLUMNS)
    teacher = f"pg_has_role(session_user, '{TEACHERS}', 'MEMBER')"
    own = f"(tasks.owner = session_user OR {teacher})"
    sql = [
        f"GRANT USAGE ON SCHEMA public TO {TEACHERS}, {STUDENTS}",
        *(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {TEACHERS}, {STUDENTS}"
          for t in _TABLES),
        f"GRANT USAGE, SELECT ON SEQUENCE events_seq_seq TO {TEACHERS}, {STUDENTS}",
        # the guard: a classmate's task keeps its owner's choices
        f"""CREATE OR REPLACE FUNCTION veo_nb_guard() RETURNS trigger LANGUAGE plpgsql AS $g$
        BEGIN
            IF OLD.owner IS DISTINCT FROM session_user AND NOT {teacher} THEN
                IF TG_OP = 'DELETE' THEN
                    RAISE EXCEPTION 'veo_nb: % may not delete the task % of %',
                        session_user, OLD.task_id, coalesce(OLD.owner, 'nobody')
                        USING ERRCODE = '42501';
                END IF;
                IF ({guarded}) IS DISTINCT FROM ({before}) THEN
                    RAISE EXCEPTION 'veo_nb: % may not change the task % of %',
                        session_user, OLD.task_id, coalesce(OLD.owner, 'nobody')
                        USING ERRCODE = '42501';
                END IF;
            END IF;
            RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
        END $g$""",
        "DROP TRIGGER IF EXISTS veo_nb_guard ON tasks",
        "CREATE TRIGGER veo_nb_guard BEFORE UPDATE OR DELETE ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION veo_nb_guard()",
        # row-level security: every row visible, deletions only of one's own
        "ALTER TABLE tasks ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE events ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE deleted ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE reuse ENABLE ROW LEVEL SECURITY",
        *(f"DROP POLICY IF EXISTS {p} ON {t}" for t, p in (
            ("tasks", "veo_read"), ("tasks", "veo_add"), ("tasks", "veo_poll"),
            ("tasks", "veo_delete"), ("events", "veo_read"), ("events", "veo_add"),
            ("events", "veo_delete"), ("deleted", "veo_read"), ("deleted", "veo_add"),
            ("reuse", "veo_read"), ("reuse", "veo_own"))),
        "CREATE POLICY veo_read ON tasks FOR SELECT USING (true)",
        # a new task is one's own; an upsert of an existing one is an update (guarded)
        "CREATE POLICY veo_add ON tasks FOR INSERT WITH CHECK (owner = session_user OR "
        f"{teacher} OR EXISTS (SELECT 1 FROM tasks old WHERE old.task_id = tasks.task_id))",
        "CREATE POLICY veo_poll ON tasks FOR UPDATE USING (true) WITH CHECK (true)",
        f"CREATE POLICY veo_delete ON tasks FOR DELETE USING {own}",
        "CREATE POLICY veo_read ON events FOR SELECT USING (true)",
        "CREATE POLICY veo_add ON events FOR INSERT WITH CHECK (true)",
        "CREATE POLICY veo_delete ON events FOR DELETE USING (NOT EXISTS (SELECT 1 FROM tasks "
        f"WHERE tasks.task_id = events.task_id AND NOT {own}))",
        "CREATE POLICY veo_read ON deleted FOR SELECT USING (true)",
        "CREATE POLICY veo_add ON deleted FOR INSERT WITH CHECK (NOT EXISTS (SELECT 1 FROM "
        "tasks WHERE tasks.task_id = deleted.task_id))",
        # what a re-run reuses: one's own tasks only (a row whose task is gone may be
        # replaced), so nobody can drop or redirect a classmate's
        "CREATE POLICY veo_read ON reuse FOR SELECT USING (true)",
        "CREATE POLICY veo_own ON reuse FOR ALL USING (NOT EXISTS (SELECT 1 FROM tasks "
        f"WHERE tasks.task_id = reuse.task_id AND NOT {own})) WITH CHECK (EXISTS (SELECT 1 "
        f"FROM tasks WHERE tasks.task_id = reuse.task_id AND {own}))",
    ]
    return [*sql, *ledger_sql()]


def ledger_sql() -> list[str]:
    """The spending ledger (:mod:`veo_nb._ledger`) is append-only for the
    whole class: everyone reads it and inserts rows as themselves (``owner``
    is the session's role), nobody updates or deletes one, so no student can
    lower what the daily caps count."""
    return [
        f"REVOKE ALL ON ledger FROM {TEACHERS}, {STUDENTS}",
        f"GRANT SELECT, INSERT ON ledger TO {TEACHERS}, {STUDENTS}",
        "ALTER TABLE ledger ENABLE ROW LEVEL SECURITY",
        "DROP POLICY IF EXISTS veo_read ON ledger",
        "DROP POLICY IF EXISTS veo_add ON ledger",
        "CREATE POLICY veo_read ON ledger FOR SELECT USING (true)",
        # each kind of row only as veo_nb writes it (see veo_nb._ledger)
        "CREATE POLICY veo_add ON ledger FOR INSERT WITH CHECK (owner = session_user AND "
        f"(pg_has_role(session_user, '{TEACHERS}', 'MEMBER') OR CASE kind "
        "WHEN 'create' THEN EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = ledger.entry) "
        "WHEN 'void' THEN EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = ledger.ref) "
        "WHEN 'id' THEN EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = ledger.task_id) "
        "WHEN 'amount' THEN EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = ledger.task_id "
        "AND t.amount = ledger.amount) ELSE false END))",
    ]


def role_sql(teacher: str, students: Sequence[str],
             passwords: dict[str, str]) -> list[str]:
    """The two group roles, then the login roles of the teacher and the
    students (created, or given their new password), each in its group."""
    sql = [f"DO $$ BEGIN CREATE ROLE {group} NOLOGIN; "
           "EXCEPTION WHEN duplicate_object THEN NULL; END $$" for group in (TEACHERS, STUDENTS)]
    for name, group in ((teacher, TEACHERS), *((s, STUDENTS) for s in students)):
        role, password = _ident(name), _literal(passwords[name])
        sql.append(f"DO $$ BEGIN CREATE ROLE {role} LOGIN PASSWORD {password}; "
                   f"EXCEPTION WHEN duplicate_object THEN ALTER ROLE {role} LOGIN PASSWORD "
                   f"{password}; END $$")
        sql.append(f"GRANT {group} TO {role}")
    return sql


def new_passwords(names: Sequence[str]) -> dict[str, str]:
    """A fresh password for each role."""
    return {name: secrets.token_urlsafe(18) for name in names}


def set_up(url: str, teacher: str, students: Sequence[str]) -> dict[str, str]:
    """Make ``url``'s database a class store (see the module docstring), as
    the role of ``url`` (one that may create roles). Returns each person's
    store URL, with their own role and password (keep it secret: it goes to
    their server's ``VEO_NB_STORE``)."""
    import psycopg

    from .store_pg import PostgresStore

    names = [teacher, *students]
    if len(set(names)) != len(names):
        raise ValidationError("the teacher and the students must all have different names")
    PostgresStore(url).close()  # the tables, as every tracker makes them
    passwords = new_passwords(names)
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in (*role_sql(teacher, students, passwords), *policy_sql()):
            conn.execute(sql)
    return {name: person_url(url, name, passwords[name]) for name in names}


def person_url(url: str, role: str, password: str) -> str:
    """``url`` with ``role`` and ``password`` as its user."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{quote(role, safe='')}:{quote(password, safe='')}@{host}",
                       parts.path, parts.query, parts.fragment))

