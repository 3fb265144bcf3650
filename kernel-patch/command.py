"""`vmaflags kernel build` and `vmaflags kernel list`.  Exit codes of build: 0 built (or
cached), 1 the build failed, 2 bad input, 4 SKIP (a tool or the source cannot be had here)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from .build import BuildError, build, cached
from .source import Skip
from .spec import KERNELS, kernel

SKIP = 4  # as kselftest and KTAP


def _err(msg: str) -> None:
    print(f"vmaflags: {msg}", file=sys.stderr)


def build_command(name: str, jobs: int | None) -> int:
    try:
        kernel(name)
    except ValueError as e:
        _err(str(e))
        return 2
    if jobs is not None and jobs < 1:
        _err("--jobs must be >= 1")
        return 2
    try:
        b = build(name, jobs)
    except Skip as e:
        _err(f"SKIP: {e}")
        return SKIP
    except BuildError as e:
        _err(f"{e} (log: {e.log})")
        return 1
    m, s = divmod(round(b.seconds), 60)
    how = "cached" if b.cached else f"built in {m}m{s:02d}s"
    print(f"{b.name} {b.release} ({how})")
    print(f"bzImage: {b.image} ({b.image.stat().st_size / 1e6:.1f} MB)")
    print(f"config: {b.config}")
    for n, p in b.selftests.items():
        print(f"kselftest {n}: {p}")
    print(f"log: {b.log}")
    return 0


def list_command() -> int:
    t = Table("kernel", "source", "series", "cached")
    for name, k in KERNELS.items():
        b = cached(name)
        t.add_row(name, k.version, ", ".join(k.series), "yes" if b else "no")
    Console(highlight=False).print(t)
    return 0
