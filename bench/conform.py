"""Benchmark the random conformance against a bare C madvise + smaps loop, in the same run.

1. bare: a static C loop that alternates MADV_HUGEPAGE / MADV_NOHUGEPAGE on 2 MiB and reads
   /proc/self/smaps after each call (one iteration = the cheapest possible checked step);
2. conformance: random sequences (conformance/sequences.py; as many as `vmaflags conform`
   draws by default), every step run on the kernel by the executor and through the model and
   compared; live sysfs mode only (no root needed);
3. bare again, so that a change in machine load during the run shows.
As root it holds the sysfs guard's lock, so no other conformance run switches THP modes meanwhile.

Prints checked transitions/s, the bare loop's iterations/s and the ratio (target >= 0.5 and
>= 5,000 transitions/s), the CPU split between Python (model, hypothesis, driver) and the
executors, and how well this machine runs two CPU-bound processes at once.

Run: .venv/bin/python bench/conform.py [EXAMPLES] [--seed S] [--workers W]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

from hypothesis import Phase, find, settings
from hypothesis.errors import NoSuchExample

from vmaflags.conformance import driver, sequences, sysfs
from vmaflags.conformance.command import DEFAULT_EXAMPLES
from vmaflags.conformance.strategies import coded_scripts
from vmaflags.model import ERAS, concrete, parse_script

BARE_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
static char buf[1 << 20];
int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000;
	size_t pmd = 2UL << 20;
	char *a = mmap(NULL, 3 * pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return 1;
	a = (char *)(((unsigned long)a + pmd - 1) & ~(pmd - 1));
	int fd = open("/proc/self/smaps", O_RDONLY);
	if (fd < 0)
		return 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		if (madvise(a, pmd, (i & 1) ? MADV_NOHUGEPAGE : MADV_HUGEPAGE))
			return 1;
		lseek(fd, 0, SEEK_SET);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.9f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
"""


def build_bare(tmp: pathlib.Path) -> pathlib.Path:
    src, exe = tmp / "bare.c", tmp / "bare"
    src.write_text(BARE_C)
    subprocess.run(["cc", "-static", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def bare_rate(exe: pathlib.Path, iterations: int = 20000) -> float:
    out = subprocess.run([str(exe), str(iterations)], check=True, capture_output=True, text=True)
    return iterations / float(out.stdout)


def executor_floor(steps: int = 2000) -> float:
    """Seconds per step of an executor that only observes (prctl_get + status + smaps)."""
    script = parse_script("arena 2\nmmap 0 4M\n" + "prctl_get\n" * steps)
    t0 = time.perf_counter()
    driver.run_kernel(script)
    return (time.perf_counter() - t0) / (steps + 1)


def model_cost(seed: int, examples: int = 200) -> float:
    """Seconds per transition of the model alone, caches cleared, on scripts of the same kind."""
    drawn: list = []

    def keep(s: object) -> bool:
        drawn.append(s)
        return False

    with contextlib.suppress(NoSuchExample):
        find(coded_scripts(2), keep, settings=settings(max_examples=examples, database=None,
                                                        phases=(Phase.generate,)),
             random=random.Random(seed))
    concrete.clear_caches()
    era = ERAS["mmf-except-advised"]
    t0 = time.process_time()
    n = sum(len(concrete.run(era, s)) for s in drawn)
    return (time.process_time() - t0) / n


def cpu_scaling() -> float:
    """Throughput of two CPU-bound processes relative to one (2.0 = two real cores)."""
    code = ("import time;t=time.perf_counter();x=0\n"
            "for i in range(3_000_000): x+=i\nprint(time.perf_counter()-t)")
    one = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)
    ps = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    two = max(float(p.communicate()[0]) for p in ps)
    return 2 * one / two


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("examples", nargs="?", type=int, default=DEFAULT_EXAMPLES)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--era", default="mmf-except-advised")
    a = ap.parse_args()
    # The guard's lock (root only) keeps other conformance runs from switching THP modes under us.
    lock = sysfs.SysfsGuard() if sysfs.writable() is None else contextlib.nullcontext()
    with lock, tempfile.TemporaryDirectory() as d:
        mode = sysfs.read("enabled")
        exe = build_bare(pathlib.Path(d))
        scaling = cpu_scaling()
        floor = executor_floor()
        model = model_cost(a.seed + 1000)
        before = bare_rate(exe)
        c0, t0 = os.times(), time.perf_counter()
        r = sequences.run(ERAS[a.era], a.examples, a.seed, [mode], None, a.workers)
        driver.close_servers()  # reaped, so that the executors' CPU time counts below
        c1, wall = os.times(), time.perf_counter() - t0
        after = bare_rate(exe)
    bare = (before + after) / 2
    rate = r.transitions / wall
    own = (c1.user - c0.user + c1.system - c0.system) / r.transitions * 1e6
    kids = (c1.children_user - c0.children_user + c1.children_system - c0.children_system
            ) / r.transitions * 1e6
    print(f"machine: {os.cpu_count()} CPUs, two CPU-bound processes run at {scaling:.2f}x one")
    print(f"bare C madvise+smaps loop: {before:,.0f} / {after:,.0f} iterations/s "
          f"(before / after), {1e6 / bare:.0f} us each")
    print(f"random conformance: {r.examples} sequences, {r.transitions} transitions in "
          f"{wall:.1f} s, sysfs {mode}, era {a.era}, seed {a.seed}: "
          f"{len(r.divergences)} divergence(s), {len(r.flaky)} flaky")
    print(f"  CPU per checked transition: {own + kids:.0f} us = {own:.0f} us in this process "
          f"(Python: model, hypothesis, driver) + {kids:.0f} us in its children (the other "
          f"worker process and every executor)")
    print(f"  of which, measured apart: model alone {model * 1e6:.0f} us per transition; an "
          f"executor that only observes {floor * 1e6:.0f} us per step "
          f"({bare * floor:.2f} bare-loop iterations)")
    print(f"checked transitions/s: {rate:,.0f} (target 5,000)")
    print(f"ratio to the bare loop: {rate / bare:.2f} (target 0.5)")
    return 0 if not r.divergences else 1


if __name__ == "__main__":
    sys.exit(main())
