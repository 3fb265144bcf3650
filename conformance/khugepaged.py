"""Keep khugepaged from scanning a script's mm the moment it is registered.

The model collapses only at a `khugepaged` step; the real khugepaged scans on its own time. With
the fast tuning that is every 10 ms, a ~1% chance to land between a step and its observation,
which the re-run absorbs.  But when khugepaged's mm list is empty, registering an mm wakes it at
once (`__khugepaged_enter`: `wakeup = list_empty(&khugepaged_scan.mm_head)`), so the collapse
lands right between the registering step and its observation, every time.  A keeper process
with a registered mm of its own keeps the list non-empty for the duration of a run.
`executor --serve` forks such a keeper too (see executor.c serve_keeper), for the server's
life; this one is for scripts that switch THP modes, started under `always`.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_KEEPER = """
import mmap, sys
m = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m[0] = 1                       # an anon_vma first (khugepaged registers only VMAs with one)
m.madvise(mmap.MADV_HUGEPAGE)  # khugepaged_enter_vma(): on the list (madvise or always)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def keeper() -> Iterator[None]:
    """A registered mm for as long as the block runs.  THP `enabled` must not be `never` when
    it starts (nothing registers then)."""
    p = subprocess.Popen([sys.executable, "-S", "-c", _KEEPER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("the khugepaged keeper did not start")
        yield
    finally:
        p.kill()
        p.wait()
