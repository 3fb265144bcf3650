"""Benchmark: wall time of the whole theorem catalogue (`vmaflags prove`), and its slowest
obligations.  Target (issue 3): <= 10 s on a 2-core machine.
Run: .venv/bin/python bench/prove.py
"""
from __future__ import annotations

import time

from vmaflags.model import ERAS
from vmaflags.proofs.command import obligations, run


def main() -> None:
    jobs = obligations(None, list(ERAS.values()))
    t0 = time.perf_counter()
    rows = run(jobs, show_progress=False)
    wall = time.perf_counter() - t0
    work = sum(r.seconds for r in rows)
    print(f"{len(rows)} obligations in {wall:.2f} s wall ({work:.2f} s of solver work), "
          f"{sum(r.ok for r in rows)} as expected")
    for r in sorted(rows, key=lambda r: -r.seconds)[:5]:
        print(f"  {r.seconds:5.2f} s  {r.name}  {r.verdict} ({r.method})")


if __name__ == "__main__":
    main()
