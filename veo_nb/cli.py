"""The ``veo-nb`` command.

``veo-nb emulator`` runs the emulator standalone until Ctrl-C and prints the
environment lines that point veo_nb (or anything else) at it.
``veo-nb class setup`` makes a PostgreSQL database a class store (see
:mod:`veo_nb._class`) and prints the ``jupyterhub_config.py`` lines.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence


def _emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    emulator = Emulator(
        time_scale=args.time_scale,
        failure_rate=args.failure_rate,
        api_key=args.api_key,
        port=args.port,
        seed=args.seed,
    )
    try:
        emulator.start()
    except OSError as exc:
        print(f"veo-nb emulator: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"VEO emulator running (time_scale={emulator.time_scale:g}, "
          f"failure_rate={emulator.failure_rate:g})")
    print(f"  base URL:  {emulator.base_url}")
    print(f"  media URL: {emulator.media_url}")
    print(f"  API key:   {emulator.api_key}")
    print("Use it with:")
    print(f"  export VEO_BASE_URL={emulator.base_url}")
    print(f"  export VEO_API_KEY={emulator.api_key}")
    if emulator.time_scale != 1.0:
        print(f"  export VEO_TIME_SCALE={emulator.time_scale:g}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    finally:
        emulator.stop()
    return 0


#: What a hub admin adds to jupyterhub_config.py (printed by ``veo-nb class setup``).
HUB_CONFIG = """\
# jupyterhub_config.py: each student's server gets their own database role
import json
with open({path!r}) as f:
    VEO_STORES = json.load(f)          # user name -> postgresql:// URL (keep this file private)
c.Spawner.environment.update({{
    "VEO_NB_STORE": lambda spawner: VEO_STORES.get(spawner.user.name, ""),
    "VEO_NB_OWNER": lambda spawner: spawner.user.name,
}})"""


def _class_setup(args: argparse.Namespace) -> int:
    import json
    import os

    from . import _class

    students = [s.strip() for s in args.students.split(",") if s.strip()]
    if args.print_sql:
        names = [args.teacher, *students]
        placeholders = {n: "<password of " + n + ">" for n in names}
        for sql in (*_class.role_sql(args.teacher, students, placeholders), "BEGIN",
                    *_class.policy_sql(), "COMMIT"):
            print(sql.strip() + ";")
        return 0
    store = args.store or os.environ.get("VEO_NB_STORE", "")
    if not store.startswith(("postgresql://", "postgres://")):
        print("veo-nb class setup: give --store postgresql://admin@host/db (a role that may "
              "create roles), or set VEO_NB_STORE", file=sys.stderr)
        return 2
    urls = _class.set_up(store, args.teacher, students)
    fd = os.open(args.credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        json.dump(urls, out, indent=2)
    print(f"class store ready: teacher {args.teacher}, {len(students)} students; each one's "
          f"store URL (with their own password) is in {args.credentials} (mode 600).")
    print("Add to jupyterhub_config.py:\n")
    print(HUB_CONFIG.format(path=os.path.abspath(args.credentials)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``veo-nb``."""
    parser = argparse.ArgumentParser(prog="veo-nb", description="veo_nb command-line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    emu = commands.add_parser(
        "emulator",
        help="run the VEO service emulator until Ctrl-C",
        description="Run the VEO service emulator (API + media host) on 127.0.0.1 until Ctrl-C.",
    )
    emu.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    emu.add_argument("--time-scale", type=float, default=1.0,
                     help="multiply every service duration by this (default: 1, real time)")
    emu.add_argument("--failure-rate", type=float, default=0.1,
                     help="share of tasks that fail (default: 0.1)")
    emu.add_argument("--api-key", default=None, help="the key to accept (default: generated)")
    emu.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    emu.set_defaults(run=_emulator)
    klass = commands.add_parser(
        "class", help="set up a PostgreSQL store for a class",
        description="Make a PostgreSQL database a class store: a role per student and the "
                    "teacher, and row-level security so that a student can read the whole "
                    "class's history but change or erase only their own tasks.")
    steps = klass.add_subparsers(dest="step", required=True, metavar="STEP")
    setup = steps.add_parser("setup", help="create the roles, tables and policies")
    setup.add_argument("--store", default=None,
                       help="postgresql:// URL of a role that may create roles (default: "
                            "VEO_NB_STORE)")
    setup.add_argument("--teacher", required=True, help="the teacher's hub user name")
    setup.add_argument("--students", required=True,
                       help="the students' hub user names, separated by commas")
    setup.add_argument("--credentials", default="veo_nb_class.json",
                       help="where to write each person's store URL (default: "
                            "veo_nb_class.json, mode 600)")
    setup.add_argument("--print-sql", action="store_true",
                       help="print the SQL instead of running it (passwords as placeholders; "
                            "the tables must exist: a first tracker makes them)")
    setup.set_defaults(run=_class_setup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veo-nb``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ValueError as exc:  # invalid emulator options, or a bad name (ValidationError)
        print(f"veo-nb {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
