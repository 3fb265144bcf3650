"""Hypothesis strategies for syscall sequences over the arena (random conformance and tests).

Offsets and lengths are drawn from a few PMD-relevant sizes (whole and half blocks, single
pages at block edges) so that splits, merges and THP fits happen often.
"""
from __future__ import annotations

from hypothesis import strategies as st

from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, MADV_HUGEPAGE,
                                     MADV_NOHUGEPAGE, PAGE, PMD, Execve, Fork, Madvise, Mmap,
                                     Munmap, PrctlGet, PrctlSet, Script, Touch, UffdClose,
                                     UffdCopy, UffdRegister, UffdUnregister)

_PIECES = (PAGE, 2 * PAGE, PMD // 2, PMD - PAGE)


def ranges(blocks: int) -> st.SearchStrategy[tuple[int, int]]:
    """(offset, length) inside an arena of `blocks` PMDs, page aligned."""
    size = blocks * PMD

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, int]:
        off = draw(st.integers(0, blocks - 1)) * PMD + draw(st.sampled_from((0, *_PIECES)))
        off = min(off, size - PAGE)
        length = draw(st.integers(0, blocks)) * PMD + draw(st.sampled_from((0, *_PIECES)))
        return off, max(PAGE, min(length, size - off))

    return build()


def steps(blocks: int, sysfs: bool = False, exec_fork: bool = True) -> st.SearchStrategy:
    """One syscall of the script language (no sysfs or khugepaged steps: those need root and
    time on a live kernel; sysfs comes in as the run's starting mode instead)."""
    r = ranges(blocks)
    small = st.sampled_from((0, 1, 2, 3))
    options = [
        r.map(lambda x: Mmap(*x)),
        r.map(lambda x: Munmap(*x)),
        r.map(lambda x: Touch(*x)),
        st.tuples(r, st.sampled_from((MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE,
                                      MADV_CLR_HUGEPAGE))).map(lambda x: Madvise(*x[0], x[1])),
        st.tuples(small, small, st.sampled_from((0, 0, 0, 1)), st.just(0)).map(
            lambda x: PrctlSet(*x)),
        st.just(PrctlGet()),
        st.tuples(r, st.sampled_from(((True, False), (False, True), (True, True)))).map(
            lambda x: UffdRegister(*x[0], *x[1])),
        r.map(lambda x: UffdUnregister(*x)),
        r.map(lambda x: UffdCopy(*x)),
        st.just(UffdClose()),
    ]
    if exec_fork:
        options += [st.just(Fork()), st.just(Execve())]
    return st.one_of(*options)


def scripts(blocks: int = 2, max_steps: int = 12, exec_fork: bool = True
            ) -> st.SearchStrategy[Script]:
    return st.lists(steps(blocks, exec_fork=exec_fork), min_size=1, max_size=max_steps).map(
        lambda xs: Script(tuple(xs), blocks))
