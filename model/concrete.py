"""The concrete interpreter: run a script on the model, observing after every step.

It splits cells at the syscall's range edges, runs the transition of `step.py` with the Python
backend, and coalesces cells again, so the state stays as small as the VMA layout.
"""
from __future__ import annotations

from typing import NamedTuple

from . import step as S
from .backend import PY
from .eras import Era
from .errno import EINVAL
from .observe import Observation, observe
from .state import Block, Cell, State, empty_state
from .syscalls import (PAGE, PMD_PAGES, Execve, Fork, Khugepaged, Madvise, Mmap, Munmap, PrctlGet,
                       PrctlSet, Script, ScriptError, Syscall, Sysfs, Touch, UffdClose, UffdCopy,
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
                    out.append(c._replace(end=p))
                    c = c._replace(start=p, brk=False)
            out.append(c)
        blocks.append(blk._replace(cells=tuple(out)))
    return st._replace(blocks=tuple(blocks))


def coalesce(st: State) -> State:
    """Join neighbouring cells of a block that are in the same state."""
    blocks = []
    for blk in st.blocks:
        out = [blk.cells[0]]
        for c in blk.cells[1:]:
            p = out[-1]
            if not c.brk and p[2:] == c._replace(brk=p.brk)[2:]:
                out[-1] = p._replace(end=c.end)
            else:
                out.append(c)
        blocks.append(blk._replace(cells=tuple(out)) if len(out) != len(blk.cells) else blk)
    return st._replace(blocks=tuple(blocks))


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


def run_syscall(era: Era, st: State, sc: Syscall) -> Result:
    """One syscall: byte-level argument checks, then the transition in step.py."""
    t = type(sc)
    if t in (PrctlSet, PrctlGet):
        fn = S.prctl_set if t is PrctlSet else S.prctl_get
        ret, st2 = fn(PY, era, st, sc.a2, sc.a3, sc.a4, sc.a5)
        return Result(ret, st2, None)
    if t is Fork:
        parent, child = S.fork(PY, era, st)
        return Result(0, parent, child)
    if t is Execve:
        return Result(0, S.execve(PY, era, st), None)
    if t is Sysfs:
        return Result(0, st._replace(sysfs=sc.mode), None)
    if t is Khugepaged:
        ret, st2 = S.khugepaged(PY, era, st)
        return Result(ret, st2, None)
    if t is UffdClose:
        ret, st2 = S.uffd_close(PY, era, st)
        return Result(ret, coalesce(st2), None)
    a, b = _pages(st, sc.off, sc.len)
    aligned = sc.off % PAGE == 0
    if t is Madvise:
        # do_madvise(): invalid advice, then unaligned start, are EINVAL; empty ranges are 0
        if not S.rules.madvise_behavior_valid(era, sc.advice) or not aligned:
            return Result(-EINVAL, st, None)
        if a == b:
            return Result(0, st, None)
    elif t in (Mmap, Munmap):
        if not aligned or a == b:  # MAP_FIXED needs an aligned address; len 0 is EINVAL
            return Result(-EINVAL, st, None)
    elif t in (UffdRegister, UffdUnregister, UffdCopy):
        if not aligned or sc.len % PAGE or a == b:  # validate_range() in fs/userfaultfd.c
            return Result(-EINVAL, st, None)
    elif t is Touch and a == b:
        return Result(0, st, None)
    st = split(st, a, b)
    if t is Mmap:
        ret, st2 = S.mmap(PY, era, st, a, b)
    elif t is Munmap:
        ret, st2 = S.munmap(PY, era, st, a, b)
    elif t is Touch:
        ret, st2 = S.touch(PY, era, st, a, b)
    elif t is Madvise:
        ret, st2 = S.madvise(PY, era, st, a, b, sc.advice)
    elif t is UffdRegister:
        ret, st2 = S.uffd_register(PY, era, st, a, b, sc.missing, sc.wp)
    elif t is UffdUnregister:
        ret, st2 = S.uffd_unregister(PY, era, st, a, b)
    else:
        ret, st2 = S.uffd_copy(PY, era, st, a, b)
    return Result(ret, coalesce(st2), None)


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


__all__ = ["Block", "Result", "Outcome", "run", "run_syscall", "split", "coalesce"]
