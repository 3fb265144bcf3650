"""CRIU-style restore protocols, written in the model's syscall language.

Each protocol restores a dumped process into a fresh one, VMA by VMA, the way CRIU's restorer
does (criu/mem.c, criu/pie/restorer.c; spec §8).  `Restore` turns the steps into symbolic
steps over a symbolic dump, so the theorems quantify over every dump of the arena; a step
that depends on the dump ("if this VMA had hg") is guarded by that condition.

The dump: cells of the arena, each mapped or not; cells of a VMA share its hg/nh; `pop` marks
the pages saved by the pre-dump (the rest arrive later through userfaultfd: lazy pages);
PR_GET_THP_DISABLE as read by the parasite (dump_misc).
"""
from __future__ import annotations

from typing import Any, Callable

from vmaflags.model import arena
from vmaflags.model.backend import Z3
from vmaflags.model import rules
from vmaflags.model.state import State, cells
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, Madvise,
                                     Mmap, PrctlSet, Touch, UffdRegister)

from .engine import Run


class Restore:
    """The restorer process, stepping symbolically over a symbolic dump."""

    def __init__(self, run: Run, dump: State):
        self.run, self.dump = run, dump
        self.cs = cells(dump)
        self.views = arena.vma_views(Z3, self.cs)
        self.saved_get = rules.thp_disable_value(Z3, run.era, dump.mm)

    def each_vma(self, action: Callable[[int], None]) -> None:
        """`action(i)` for every cell i that starts a dumped VMA, in address order."""
        for i in range(len(self.cs)):
            action(i)

    def _vma(self, i: int) -> tuple[Any, Any, Any]:
        c, v = self.cs[i], self.views[i]
        return Z3.and_(c.mapped, Z3.not_(v.same)), v.vstart, v.vend

    def mmap(self, i: int) -> None:
        starts, a, b = self._vma(i)
        self.run.do(Mmap(0, 0), (a, b), starts)

    def madvise(self, i: int, advice: int, when: Any = True) -> None:
        starts, a, b = self._vma(i)
        self.run.do(Madvise(0, 0, advice), (a, b), Z3.and_(starts, when))

    def register(self, i: int) -> None:
        starts, a, b = self._vma(i)
        self.run.do(UffdRegister(0, 0, True, False), (a, b), starts)

    def populate(self) -> None:
        """Write the pre-dumped pages back (the restorer copies them in: write faults)."""
        for c in self.cs:
            self.run.do(Touch(0, 0), (c.start, c.end), Z3.and_(c.mapped, c.pop))

    def reapply_madv(self, i: int) -> None:
        """CRIU: every saved madv bit is set again with madvise(); nothing is cleared."""
        c = self.cs[i]
        self.madvise(i, MADV_HUGEPAGE, c.hg)
        self.madvise(i, MADV_NOHUGEPAGE, c.nh)

    def prctl(self, a2: Any, a3: Any = 0) -> None:
        self.run.do(PrctlSet(), (a2, a3, 0, 0))


def naive(r: Restore) -> None:
    """No protection: the pre-dumped pages go in before the range is registered."""
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    r.each_vma(r.reapply_madv)
    _restore_mode(r)


def criu_2017(r: Restore) -> None:
    """CRIU 3.5-3.18 lazy restore (Rapoport, June 2017)."""
    r.prctl(1)  # maybe_disable_thp(): no collapse while the premapped VMAs are filled
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)  # enable_uffd(): UFFDIO_REGISTER_MODE_MISSING
    r.prctl(0)
    r.each_vma(r.reapply_madv)


def criu_3_19(r: Restore) -> None:
    """CRIU 3.19+ (21ce76263 "Restore THP_DISABLE prctl."): the saved PR_GET value goes back
    as prctl(PR_SET_THP_DISABLE, thp_disabled, 0, 0, 0), a protobuf bool."""
    r.prctl(1)
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    r.prctl(Z3.ite(r.saved_get == 0, 0, 1))
    r.each_vma(r.reapply_madv)


def criu_fixed(r: Restore) -> None:
    """As criu-3.19, but a saved 3 (6.18 EXCEPT_ADVISED) is restored with
    PR_THP_DISABLE_EXCEPT_ADVISED."""
    r.prctl(1)
    r.each_vma(r.mmap)
    r.populate()
    r.each_vma(r.register)
    _restore_mode(r)
    r.each_vma(r.reapply_madv)


def clr_2017(r: Restore) -> None:
    """The seed thread's proposal: MADV_NOHUGEPAGE right after mmap instead of the prctl, and
    afterwards MADV_HUGEPAGE, MADV_NOHUGEPAGE or MADV_CLR_HUGEPAGE per dumped VMA."""
    for i in range(len(r.cs)):
        r.mmap(i)
        r.madvise(i, MADV_NOHUGEPAGE)
    r.populate()
    r.each_vma(r.register)
    for i, c in enumerate(r.cs):
        r.madvise(i, MADV_HUGEPAGE, c.hg)
        r.madvise(i, MADV_NOHUGEPAGE, c.nh)
        r.madvise(i, MADV_CLR_HUGEPAGE, Z3.and_(Z3.not_(c.hg), Z3.not_(c.nh)))
    _restore_mode(r)


def _restore_mode(r: Restore) -> None:
    """prctl(PR_SET_THP_DISABLE, saved != 0, saved == 3 ? PR_THP_DISABLE_EXCEPT_ADVISED : 0)"""
    r.prctl(Z3.ite(r.saved_get == 0, 0, 1), Z3.ite(r.saved_get == 3, 2, 0))


PROTOCOLS: dict[str, Callable[[Restore], None]] = {
    "naive": naive,
    "criu-2017": criu_2017,
    "criu-3.19": criu_3_19,
    "criu-fixed": criu_fixed,
    "clr-2017": clr_2017,
}
