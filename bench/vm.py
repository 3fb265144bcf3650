"""Benchmark the test VMs: build (cached), boot, era identification and catalogue, and the
guest's random-sequence throughput, per kernel, under TCG on this machine.

Per SPEC: `resolve` (the cached bzImage or Debian package, or a build when not cached), boot
to the executor's READY line, identification plus every scenario (boot-to-verdict is boot +
this), then EXAMPLES random sequences with the era given (checked transitions/s in the guest).
Run: .venv/bin/python bench/vm.py [SPEC ...] [--examples N] [--seed S]
"""
from __future__ import annotations

import argparse
import time

from vmaflags.conformance import catalogue, host
from vmaflags.conformance import command as conform
from vmaflags.conformance.vm import kernels
from vmaflags.conformance.vm.guest import Guest

SPECS = ("debian-6.1", "debian-6.12", "patched-6.12", "def-flags-6.12", "def-flags-clr-6.12")


def one(spec: str, examples: int, seed: int) -> str:
    t0 = time.perf_counter()
    try:
        k = kernels.resolve(spec)
    except kernels.Skip as e:
        return f"{spec:<19} SKIP: {e}"
    t_resolve = time.perf_counter() - t0
    with Guest(k) as g, host.use(g):
        t1 = time.perf_counter()
        cat = conform.execute(None, False, catalogue.load(), 0, seed, workers=1)
        t_cat = time.perf_counter() - t1
        rnd = conform.execute(None, False, [], examples, seed, workers=1).random
        n, rate = (rnd.transitions, rnd.per_second) if rnd else (0, 0.0)
        return (f"{spec:<19} {t_resolve:6.2f} {g.boot_seconds:5.1f} {t_cat:6.1f} "
                f"{g.boot_seconds + t_cat:6.1f} {n:7d} {rate:6.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", default=list(SPECS))
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(f"{'kernel':<19} {'build':>6} {'boot':>5} {'catal.':>6} {'verdict':>6} "
          f"{'trans.':>7} {'tr/s':>6}")
    for spec in a.specs:
        print(one(spec, a.examples, a.seed), flush=True)
    print("seconds: build = resolve (cached), boot = to READY, catal. = identification\n"
          "and every scenario, verdict = boot + catal.; trans., tr/s: transitions checked\n"
          f"in {a.examples} random sequences, and per second in the guest")


if __name__ == "__main__":
    main()
