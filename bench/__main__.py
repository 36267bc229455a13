"""Run every ``bench/bench_*.py`` module's ``run()`` and print the figures side by side.

Each module's ``run()`` returns a list of :class:`bench._common.BenchResult`.
Results are also written to ``bench/results/<name>.json``. Exit status 1 when
a ratio misses its target.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if any(o in n for o in args.only)]
    failed = False
    (HERE / "results").mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        results = module.run()
        for r in results:
            ratio = "" if r.ratio is None else f"  ratio {r.ratio:.3f}"
            target = "" if r.target is None else f" (target {'≥' if r.higher_is_better else '≤'} {r.target})"
            verdict = {True: "  OK", False: "  MISSED", None: ""}[r.passed]
            base = "" if r.baseline is None else f"  baseline {r.baseline:.4g} {r.unit}"
            print(f"  {r.name}: {r.value:.4g} {r.unit}{base}{ratio}{target}{verdict}")
            if r.detail:
                print(f"    {r.detail}")
            failed |= r.passed is False
        out = HERE / "results" / f"{name.removeprefix('bench_')}.json"
        out.write_text(json.dumps([r.as_dict() for r in results], indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
