"""Benchmark the concrete interpreter.

1. cold: median time of one transition plus observation on a 4-VMA arena, memo caches cleared
   before every step (the issue's figure; target <= 20 us).
2. conformance workload: random scripts from the conformance strategy, run the way `conform`
   runs them (from a fresh process each, caches warm across scripts): transitions per second.
Run: .venv/bin/python bench/model_step.py [ROUNDS]
"""
from __future__ import annotations

import statistics
import sys
import time

from vmaflags.model import ERAS, concrete, parse_script
from vmaflags.model.observe import observe, vma_lines

SETUP = """arena 4
mmap 0 8M
madvise 2M 2M hugepage
madvise 6M 2M nohugepage
touch 0 1M
"""
# Steps that keep the layout at 4 VMAs, cycling through the main kinds of transition.
LOOP = ["madvise 4M 2M hugepage", "madvise 4M 2M nohugepage", "prctl_set 1 2 0 0",
        "prctl_get 0 0 0 0", "prctl_set 0 0 0 0", "touch 2M 8K", "madvise 2M 2M hugepage"]


def main(rounds: int = 2000) -> None:
    for era_id in ("mmf-except-advised", "def-flags", "mmf-clr"):
        era = ERAS[era_id]
        st = concrete.empty_state(4)
        for sc in parse_script(SETUP).steps:
            st = concrete.run_syscall(era, st, sc).state
        loop = parse_script("\n".join(LOOP)).steps
        for sc in loop * 20:  # warm up the interpreter and the rule memos
            observe(era, concrete.run_syscall.__wrapped__(era, st, sc).state, 0)
        samples = []
        for i in range(rounds):
            sc = loop[i % len(loop)]
            concrete.run_syscall.cache_clear()
            vma_lines.cache_clear()
            t0 = time.perf_counter()
            r = concrete.run_syscall(era, st, sc)
            observe(era, r.state, r.ret)
            samples.append(time.perf_counter() - t0)
        vmas = len(observe(era, st, 0).vmas)
        med = statistics.median(samples) * 1e6
        print(f"{era_id:20s} {vmas} VMAs  median {med:6.1f} us/transition+observation  "
              f"p90 {statistics.quantiles(samples, n=10)[-1] * 1e6:6.1f} us  "
              f"({1e6 / med:,.0f}/s)")


def workload(scripts: int = 2000) -> None:
    from hypothesis import HealthCheck, given, settings

    from vmaflags.conformance.strategies import scripts as script_strategy

    era = ERAS["mmf-except-advised"]
    concrete.clear_caches()
    drawn = []

    @settings(max_examples=scripts, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(script_strategy(blocks=4, max_steps=12))
    def collect(s):
        drawn.append(s)

    collect()
    t0 = time.perf_counter()
    n = sum(len(concrete.run(era, s)) for s in drawn)
    dt = time.perf_counter() - t0
    hits = concrete.run_syscall.cache_info()
    print(f"conformance workload: {len(drawn)} scripts, {n} transitions in {dt:.2f} s = "
          f"{n / dt:,.0f} transitions/s ({dt / n * 1e6:.1f} us each; step cache hit rate "
          f"{hits.hits / max(1, hits.hits + hits.misses):.0%})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    workload()
