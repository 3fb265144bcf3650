"""Benchmark: `vmaflags reproduce` for every refuted or aborted row with a trace: the solver
(one obligation, as `vmaflags prove` runs it), rendering both C files, and compiling the
standalone program with `cc -O2 -Wall -Werror`.  Minimum of RUNS per row (the machine is
shared).
Run: .venv/bin/python bench/reproduce.py [RUNS]
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

from vmaflags.conformance import reproduce, reproduce_c
from vmaflags.model import ERAS
from vmaflags.proofs.command import obligations, run


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cc = shutil.which("cc")
    rows = [r for r in run(obligations(None, list(ERAS.values())), show_progress=False)
            if r.verdict in ("refuted", "aborted") and r.theorem in reproduce.REFUTATIONS]
    totals = {"solve": [], "render": [], "cc": []}
    with tempfile.TemporaryDirectory() as d:
        for r in rows:
            t = {k: [] for k in totals}
            for _ in range(runs):
                t0 = time.perf_counter()
                row = reproduce.row(r.theorem, r.era, r.protocol)
                t1 = time.perf_counter()
                p = reproduce.build(row)
                src = reproduce_c.standalone(p)
                reproduce_c.kselftest(p)
                t2 = time.perf_counter()
                t["solve"].append(t1 - t0)
                t["render"].append(t2 - t1)
                if cc:
                    path = f"{d}/{p.slug}.c"
                    with open(path, "w") as f:
                        f.write(src)
                    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", path[:-2], path],
                                   check=True)
                    t["cc"].append(time.perf_counter() - t2)
            for k, v in t.items():
                if v:
                    totals[k].append(min(v))
            print(f"  {min(t['solve']):5.2f} s solve  {min(t['render']) * 1000:5.1f} ms render"
                  + (f"  {min(t['cc']):5.2f} s cc" if t["cc"] else "") + f"  {r.name}")
    for k, v in totals.items():
        if v:
            print(f"{k}: {min(v):.3f}-{max(v):.3f} s per row, {sum(v) / len(v):.3f} s mean "
                  f"over {len(v)} rows")


if __name__ == "__main__":
    main()
