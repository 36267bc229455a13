"""A class on one PostgreSQL history, with the database itself keeping each
student's work safe from the others: roles, row-level security and guards.

``veo-nb class setup`` (or :func:`set_up`, :func:`policy_sql`) run by the
teacher (with a role that may create roles) makes, and run again upgrades:

* the schema (the same tables every tracker makes on first use);
* a group role ``veo_nb_teachers`` with the teacher in it, and a group role
  ``veo_nb_students`` with one login role per student (named as the hub's
  user, so that a task's ``owner`` is its student's role);
* the privileges: everyone reads the whole class's history; a student writes
  only the tables :data:`STUDENT_WRITES` names, every other table of the
  schema (one added later too) is read-only to them;
* row-level security on every table a student writes, so that whatever
  client connects (veo_nb, psql):

  - a student changes, claims, polls, downloads and deletes only their own
    tasks (an ``UPDATE`` of a classmate's row touches no row, whatever the
    column; veo_nb's upsert of one is refused with SQLSTATE 42501): a
    classmate's task is polled by its owner's processes or the teacher's,
    and another student's tracker only follows it;
  - events are appended, and deleted, for one's own tasks only;
  - what re-runs reuse (``reuse``) is one's own, never a classmate's;
  - a deletion followers hear of (``deleted``) is only of a task that is gone,
    at the current revision;
  - the shared 429 gate of a service (``services``) is set at most
    :data:`GATE_MAX_S` ahead and never dropped, so nobody freezes the class's
    polling for longer;
  - the revision counter (``meta``) only ever goes up by one (a guard);
  - the header's counts (``tallies``) are kept by the database itself, a
    ``SECURITY DEFINER`` trigger on ``tasks`` (students cannot write them);
  - the teacher manages every task.
  - the spending ledger is append-only: rows are inserted as oneself, never
    changed or deleted (:func:`ledger_sql`).

Tables belong to the role that ran the set-up; students never get
``TRUNCATE``, ``DROP``, schema changes or the right to create objects. A
kernel open while the class is upgraded must be restarted (set-up gives
everyone a new password anyway).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ._retry import MAX_RETRY_AFTER_S
from ._store_query import ADD_TALLY_SQL, FILL_TALLIES, NOT_FOUND_FLAG
from .errors import ValidationError

#: Group roles of a class.
TEACHERS, STUDENTS = "veo_nb_teachers", "veo_nb_students"
#: What a student may write, table by table (each one under row-level
#: security below); every other table of the schema they only read.
STUDENT_WRITES = {
    "tasks": "INSERT, UPDATE, DELETE",
    "events": "INSERT, DELETE",
    "reuse": "INSERT, UPDATE, DELETE",
    "deleted": "INSERT",
    "services": "INSERT, UPDATE",
    "meta": "UPDATE",
}
#: How far ahead (seconds) a student's process may close a service's shared
#: 429 gate: past it, the gate is refused (that process keeps its own). The
#: store never writes one past :data:`~veo_nb._retry.MAX_RETRY_AFTER_S`; the
#: 5 minutes more leave room for the clocks of the hub's machines.
GATE_MAX_S = int(MAX_RETRY_AFTER_S) + 5 * 60
#: The name of the statement triggers (``<name>_insert``, ``_update``,
#: ``_delete``) that keep ``tallies``.
TALLY_TRIGGER = "veo_nb_tally"
#: Each such trigger's transition tables (a trigger that has them has one
#: event) and what each table's rows add to the tallies.
_TALLIED = {
    "INSERT": ("NEW TABLE AS new_rows", (("new_rows", 1),)),
    "UPDATE": ("OLD TABLE AS old_rows NEW TABLE AS new_rows", (("old_rows", -1), ("new_rows", 1))),
    "DELETE": ("OLD TABLE AS old_rows", (("old_rows", -1),)),
}
#: What a ``SECURITY DEFINER`` function resolves names in (no schema a
#: student could put objects in before it).
_PINNED = "SET search_path = public, pg_temp"
_TEACHER = f"pg_has_role(session_user, '{TEACHERS}', 'MEMBER')"


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (a hub user name may hold any character)."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 63:
        raise ValidationError(f"not a usable role name: {name!r} (1 to 63 characters, no NUL)")
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _tally_sql(parts: Sequence[tuple[str, int]]) -> str:
    """Add to ``tallies`` what the rows of each ``(table, sign)`` count, in
    key order (as :meth:`~veo_nb.store.BaseStore.write` would: no deadlock)."""
    rows = " UNION ALL ".join(
        f"SELECT status_text, {NOT_FOUND_FLAG} AS nf, COALESCE(owner, '') AS who, {sign} AS n, "
        f"{sign} * (CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS c, "
        f"{sign} * (CASE WHEN amount IS NULL THEN 0 ELSE 1 END) AS k, "
        f"{sign} * COALESCE(amount, 0) AS a FROM {table} WHERE tracked = 1"
        for table, sign in parts)
    return ("INSERT INTO tallies (status_text, not_found, owner, tasks, completed, costed, "
            "amount) SELECT status_text, nf, who, SUM(n), SUM(c), SUM(k), SUM(a) "
            f"FROM ({rows}) d GROUP BY status_text, nf, who HAVING SUM(n) <> 0 OR SUM(c) <> 0 "
            "OR SUM(k) <> 0 OR SUM(a) <> 0 ORDER BY status_text, nf, who "
            + ADD_TALLY_SQL[ADD_TALLY_SQL.index("ON CONFLICT"):])


def _privileges_sql() -> list[str]:
    """Teachers write every table of the schema; students read every one
    and write only :data:`STUDENT_WRITES` (earlier grants are taken back)."""
    return [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {TEACHERS}, {STUDENTS}",
        f"""DO $p$ DECLARE t text; BEGIN
            FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
                EXECUTE format('REVOKE ALL ON %I FROM {TEACHERS}, {STUDENTS}', t);
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO {TEACHERS}', t);
                EXECUTE format('GRANT SELECT ON %I TO {STUDENTS}', t);
            END LOOP;
        END $p$""",
        *(f"GRANT {writes} ON {table} TO {STUDENTS}" for table, writes in STUDENT_WRITES.items()),
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {TEACHERS}, {STUDENTS}",
    ]


def _guards_sql() -> list[str]:
    """The tallies kept by the database, the revision counter's guard, and
    what an older set-up made instead (the column guard of ``tasks``)."""
    branches = "\n".join(
        f"{'IF' if i == 0 else 'ELSIF'} TG_OP = '{op}' THEN {_tally_sql(parts)};"
        for i, (op, (_, parts)) in enumerate(_TALLIED.items()))
    return [
        "DROP TRIGGER IF EXISTS veo_nb_guard ON tasks",
        "DROP FUNCTION IF EXISTS veo_nb_guard()",
        f"""CREATE OR REPLACE FUNCTION veo_nb_tally() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER {_PINNED} AS $t$
        BEGIN
            {branches}
            END IF;
            RETURN NULL;
        END $t$""",
        "REVOKE ALL ON FUNCTION veo_nb_tally() FROM PUBLIC",
        *(sql for op, (tables, _) in _TALLIED.items() for sql in (
            f"DROP TRIGGER IF EXISTS {TALLY_TRIGGER}_{op.lower()} ON tasks",
            f"CREATE TRIGGER {TALLY_TRIGGER}_{op.lower()} AFTER {op} ON tasks "
            f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION veo_nb_tally()")),
        # the counts as they are now (a student may have written them before);
        # writers wait for the commit since the triggers above were made
        "DELETE FROM tallies",
        FILL_TALLIES,
        # and no gate closed for longer than a student may close one now
        "UPDATE services SET rate_limited_until = EXTRACT(EPOCH FROM clock_timestamp()) "
        f"+ {GATE_MAX_S} WHERE rate_limited_until > EXTRACT(EPOCH FROM clock_timestamp()) "
        f"+ {GATE_MAX_S}",
        f"""CREATE OR REPLACE FUNCTION veo_nb_bump() RETURNS trigger LANGUAGE plpgsql
        {_PINNED} AS $b$
        BEGIN
            IF NOT {_TEACHER} AND (NEW.name IS DISTINCT FROM OLD.name
                                   OR NEW.value IS DISTINCT FROM OLD.value + 1) THEN
                RAISE EXCEPTION 'veo_nb: % may only add one to the revision', session_user
                    USING ERRCODE = '42501';
            END IF;
            RETURN NEW;
        END $b$""",
        "DROP TRIGGER IF EXISTS veo_nb_bump ON meta",
        "CREATE TRIGGER veo_nb_bump BEFORE UPDATE ON meta FOR EACH ROW EXECUTE FUNCTION veo_nb_bump()",
    ]


def _policies_sql() -> list[str]:
    """Row-level security on every table a student writes."""
    own = f"(tasks.owner = session_user OR {_TEACHER})"
    others = f"EXISTS (SELECT 1 FROM tasks WHERE tasks.task_id = {{0}}.task_id AND NOT {own})"
    gate = (f"(rate_limited_until <= EXTRACT(EPOCH FROM clock_timestamp()) + {GATE_MAX_S} "
            f"OR {_TEACHER})")
    policies = {
        "tasks": [
            "veo_read FOR SELECT USING (true)",
            f"veo_add FOR INSERT WITH CHECK (owner = session_user OR {_TEACHER})",
            f"veo_own FOR UPDATE USING {own} WITH CHECK {own}",
            f"veo_delete FOR DELETE USING {own}",
        ],
        "events": [
            "veo_read FOR SELECT USING (true)",
            f"veo_add FOR INSERT WITH CHECK (NOT {others.format('events')})",
            f"veo_delete FOR DELETE USING (NOT {others.format('events')})",
        ],
        "deleted": [
            "veo_read FOR SELECT USING (true)",
            "veo_add FOR INSERT WITH CHECK (NOT EXISTS (SELECT 1 FROM tasks WHERE "
            "tasks.task_id = deleted.task_id) AND rev = (SELECT value FROM meta WHERE name = 'rev'))",
        ],
        # one's own tasks only (a row whose task is gone may be replaced)
        "reuse": [
            "veo_read FOR SELECT USING (true)",
            f"veo_own FOR ALL USING (NOT {others.format('reuse')}) WITH CHECK (EXISTS (SELECT 1 "
            f"FROM tasks WHERE tasks.task_id = reuse.task_id AND {own}))",
        ],
        "services": [f"veo_gate FOR ALL USING (true) WITH CHECK {gate}"],
        "meta": ["veo_read FOR SELECT USING (true)",
                 f"veo_bump FOR UPDATE USING (name = 'rev' OR {_TEACHER}) "
                 f"WITH CHECK (name = 'rev' OR {_TEACHER})"],
    }
    return [
        # the policies of an older set-up go first, whatever their names
        f"""DO $d$ DECLARE p record; BEGIN
            FOR p IN SELECT policyname, tablename FROM pg_policies WHERE schemaname = 'public'
                    AND tablename IN ({", ".join(_literal(t) for t in policies)})
                    AND policyname LIKE 'veo\\_%' LOOP
                EXECUTE format('DROP POLICY %I ON %I', p.policyname, p.tablename);
            END LOOP;
        END $d$""",
        *(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY" for table in policies),
        *(f"CREATE POLICY {policy.replace(' FOR ', f' ON {table} FOR ', 1)}"
          for table, rules in policies.items() for policy in rules),
    ]


def policy_sql() -> list[str]:
    """The privileges, guards and policies (idempotent: run again, they are
    replaced; in one transaction, see :func:`set_up`). The tables must exist."""
    return [*_privileges_sql(), *_guards_sql(), *_policies_sql(), *ledger_sql()]


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
        f"({_TEACHER} OR CASE kind "
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
        for sql in role_sql(teacher, students, passwords):
            conn.execute(sql)
        with conn.transaction():  # the trackers at work never see half a set-up
            for sql in policy_sql():
                conn.execute(sql)
    return {name: person_url(url, name, passwords[name]) for name in names}


def person_url(url: str, role: str, password: str) -> str:
    """``url`` with ``role`` and ``password`` as its user."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{quote(role, safe='')}:{quote(password, safe='')}@{host}",
                       parts.path, parts.query, parts.fragment))

