"""The concrete interpreter: run a script on the model, observing after every step.

It splits cells at the syscall's range edges, runs the transition of `step.py` with the Python
backend, and coalesces cells again, so the state stays as small as the VMA layout.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from . import step as S
from .backend import PY, clear_memos
from .eras import Era
from .errno import EINVAL
from .observe import Observation, observe, vma_lines
from .state import Block, Cell, State, empty_state
from .syscalls import (PAGE, PMD_PAGES, Execve, Fork, Khugepaged, Madvise, Mmap, Munmap, PrctlGet,
                       PrctlSet, Script, ScriptError, Syscall, Sysfs, UffdClose, UffdCopy,
                       UffdRegister, UffdUnregister)


def split(st: State, *pages: int) -> State:
    """Cut cells so that each page in `pages` starts a cell."""
    blocks = []
    for k, blk in enumerate(st.blocks):
        lo, hi = k * PMD_PAGES, (k + 1) * PMD_PAGES
        cuts = [p for p in pages if lo < p < hi]
        if not cuts:
            blocks.append(blk)
            continue
        out: list[Cell] = []
        for c in blk.cells:
            for p in cuts:
                if c.start < p < c.end:
                    out.append(PY.put(c, end=p))
                    c = PY.put(c, start=p, brk=False)
            out.append(c)
        blocks.append(PY.put(blk, cells=tuple(out)))
    return PY.put(st, blocks=tuple(blocks))


def coalesce(st: State) -> State:
    """Join neighbouring cells of a block that are in the same state (all fields equal but the
    bounds and `brk`, and no VMA starts at the second)."""
    blocks, changed = [], False
    for blk in st.blocks:
        out = [blk.cells[0]]
        for c in blk.cells[1:]:
            p = out[-1]
            if not c.brk and p.mapped == c.mapped and p[4:] == c[4:]:
                out[-1] = PY.put(p, end=c.end)
            else:
                out.append(c)
        if len(out) != len(blk.cells):
            blk, changed = PY.put(blk, cells=tuple(out)), True
        blocks.append(blk)
    return PY.put(st, blocks=tuple(blocks)) if changed else st


class Result(NamedTuple):
    ret: int
    state: State
    child: State | None  # fork: the child's state


def _pages(st: State, off: int, length: int) -> tuple[int, int]:
    """[a, b) in pages for a byte range, rounded out; ScriptError outside the arena."""
    a, b = off // PAGE, -(-(off + length) // PAGE)
    if b > len(st.blocks) * PMD_PAGES:
        raise ScriptError(f"range {off:#x}+{length:#x} leaves the arena")
    return a, b


def prepare(era: Era, st: State, sc: Syscall) -> tuple[State, tuple | None]:
    """The state split for `sc` and the transition's arguments, or (st, None) when the
    syscall's own argument checks already decide it (see _check_range)."""
    t = type(sc)
    if t in (PrctlSet, PrctlGet):
        return st, (sc.a2, sc.a3, sc.a4, sc.a5)
    if t is Sysfs:
        return st, (sc.mode,)
    if t in (Fork, Execve, Khugepaged, UffdClose):
        return st, ()
    a, b = _pages(st, sc.off, sc.len)
    if _check_range(era, sc, a, b) is not None:
        return st, None
    return split(st, a, b), (a, b)


@lru_cache(maxsize=1 << 16)
def run_syscall(era: Era, st: State, sc: Syscall) -> Result:
    """One syscall: the syscall's argument checks, then the transition in step.py.
    Memoised: states are immutable, and random conformance runs meet the same state and
    syscall again and again (every script starts from the empty arena)."""
    st2, args = prepare(era, st, sc)
    if args is None:
        a, b = _pages(st, sc.off, sc.len)
        return Result(_check_range(era, sc, a, b), st, None)
    ret, st3, child = S.transition(PY, era, st2, sc, args)
    return Result(ret, coalesce(st3), child)


def _check_range(era: Era, sc: Syscall, a: int, b: int) -> int | None:
    """The syscall's own argument checks, before it looks at any VMA; None if it goes on."""
    t, aligned = type(sc), sc.off % PAGE == 0
    if t is Madvise:
        # do_madvise(): invalid advice, then unaligned start, are EINVAL; empty ranges are 0
        if not S.rules.madvise_behavior_valid(era, sc.advice) or not aligned:
            return -EINVAL
        return 0 if a == b else None
    if t in (Mmap, Munmap):
        return -EINVAL if not aligned or a == b else None  # MAP_FIXED: aligned; len 0: EINVAL
    if t in (UffdRegister, UffdUnregister, UffdCopy):
        # fs/userfaultfd.c validate_range(): page-aligned start and length, length > 0
        return -EINVAL if not aligned or sc.len % PAGE or a == b else None
    return 0 if a == b else None  # touch of nothing


def clear_caches() -> None:
    """Forget every memoised result (tests that swap a rule for a mutant call this)."""
    run_syscall.cache_clear()
    vma_lines.cache_clear()
    clear_memos()


class Outcome(NamedTuple):
    """A step's observation, and the fork child's (the executor's `Nc` line) if any."""

    obs: Observation
    child: Observation | None


def run(era: Era, script: Script, sysfs: int = 1) -> list[Outcome]:
    """Run a whole script from a fresh process; one Outcome per step."""
    st = empty_state(script.arena, sysfs)
    out = []
    for sc in script.steps:
        r = run_syscall(era, st, sc)
        st = r.state
        child = None if r.child is None else observe(era, r.child, 0)
        out.append(Outcome(observe(era, st, r.ret), child))
    return out


__all__ = ["Block", "Result", "Outcome", "clear_caches", "run", "run_syscall", "split",
           "coalesce"]
