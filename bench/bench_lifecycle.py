"""P7: Run All again and again in one kernel, and what a saved run weighs.

The quickstart, executed ten times in one kernel by nbclient in demo mode
with real-size videos (tests/runall.py): open widgets (every model the
kernel holds) and the kernel's memory after run 10 against after run 1,
and the pollers per store. Then the quickstart executed once, with its
outputs and widget state, as nbclient saves it: its size in bytes against
the 2 MB the issue allows (54 MB with 10 MB videos in 0.1).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench._common import BenchResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runall import executed_size, run_all  # noqa: E402

RUNS = 10


def run() -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as tmp:
        probes = run_all(RUNS, Path(tmp) / "runs")
        size = executed_size(Path(tmp) / "once")
    first, last = probes[0], probes[-1]
    growth = last.rss_mb - first.rss_mb
    return [
        BenchResult("P7 open widgets after 10 Run Alls vs after 1", last.widgets, "widgets",
                    baseline=first.widgets, ratio=last.widgets / first.widgets, target=1.2,
                    detail="per run: " + ", ".join(str(p.widgets) for p in probes)),
        BenchResult("P7 kernel memory growth, run 1 to run 10", growth, "MB", baseline=60.0,
                    ratio=growth / 60.0, target=1.0,
                    detail=f"{first.rss_mb:.0f} -> {last.rss_mb:.0f} MB; target <= 60 MB"),
        BenchResult("P7 pollers per store after 10 Run Alls", len(last.pollers), "threads",
                    baseline=1.0, ratio=float(len(last.pollers)), target=1.0),
        BenchResult("P6 executed quickstart with real-size videos", size / 1e6, "MB",
                    baseline=2.0, ratio=size / 2e6, target=1.0,
                    detail="outputs and widget state as nbclient saves them; target <= 2 MB"),
    ]
