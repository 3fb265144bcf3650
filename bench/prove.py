"""Benchmark: wall time of the whole theorem catalogue (`vmaflags prove`), and its slowest
obligations.  Target (issue 9): <= 10 s wall on this 2-core machine, shared with others, so
take the minimum of a few runs.
Run: .venv/bin/python bench/prove.py [RUNS]
"""
from __future__ import annotations

import sys
import time

from vmaflags.model import ERAS
from vmaflags.proofs.command import obligations, run


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    jobs = obligations(None, list(ERAS.values()))
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = run(jobs, show_progress=False)
        walls.append(time.perf_counter() - t0)
    work = sum(r.seconds for r in rows)
    print(f"{len(rows)} obligations in {min(walls):.2f} s wall (min of {runs}; "
          f"{', '.join(f'{w:.2f}' for w in walls)}), {work:.2f} s of solver work, "
          f"{sum(r.ok for r in rows)} as expected")
    for r in sorted(rows, key=lambda r: -r.seconds)[:8]:
        print(f"  {r.seconds:5.2f} s  {r.name}  {r.v.verdict} ({r.v.label})")


if __name__ == "__main__":
    main()
