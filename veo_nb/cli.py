"""The ``veo-nb`` command.

``veo-nb emulator`` runs the emulator standalone until Ctrl-C and prints the
environment lines that point veo_nb (or anything else) at it.
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``veo-nb``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ValueError as exc:  # invalid emulator options
        print(f"veo-nb {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
