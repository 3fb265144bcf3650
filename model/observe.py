"""What /proc shows: per VMA (smaps) and per process (PR_GET_THP_DISABLE, status THP_enabled).

`cell_facts` is backend-generic (the proofs compare it between states); `observe` groups the
cells of a concrete state into the VMA lines smaps prints, in the executor's format.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

from . import arena, rules
from .backend import PY
from .eras import Era
from .state import Cell, State, cells
from .syscalls import PAGE, PMD_PAGES


class Fact(NamedTuple):
    view: arena.View
    eligible: Any  # smaps THPeligible of the cell's VMA (None before 5.0)
    anon_huge_kb: Any  # smaps AnonHugePages of the cell's VMA


def vma_fact(B: Any, era: Era, st: State, c: Cell, v: arena.View) -> Fact:
    """THPeligible and AnonHugePages of the VMA that cell `c` (seen as `v`) belongs to."""
    elig = rules.thp_vma_allowable(B, era, rules.SMAPS, c.flags, st.mm, st.sysfs,
                                   B.not_(c.av == 0), v.fits)
    kb: Any = 0
    for k, blk in enumerate(st.blocks):
        if B.is_false(blk.thp):
            continue
        inside = B.and_(blk.thp, v.vstart <= k * PMD_PAGES, (k + 1) * PMD_PAGES <= v.vend)
        kb = kb + B.ite(inside, 2048, 0)
    return Fact(v, elig, kb)


def cell_facts(B: Any, era: Era, st: State) -> list[Fact]:
    cs = cells(st)
    return [vma_fact(B, era, st, c, v) for c, v in zip(cs, arena.vma_views(B, cs))]


class Vma(NamedTuple):
    start: int  # bytes from the arena base
    end: int
    flags: str  # "hg", "nh+um", "-"
    eligible: int | None
    anon_huge_kb: int

    def text(self) -> str:
        e = "-" if self.eligible is None else str(self.eligible)
        return f"{self.start:#x}-{self.end:#x}:{self.flags}:{e}:{self.anon_huge_kb}"


class Observation(NamedTuple):
    """One executor output line, minus the step number."""

    ret: int
    get: int
    thp: int | None  # status THP_enabled
    vmas: tuple[Vma, ...]

    def text(self) -> str:
        from .errno import ret_text
        t = "-" if self.thp is None else str(self.thp)
        return (f"ret={ret_text(self.ret)} get={ret_text(self.get)} thp={t} "
                f"vmas={','.join(v.text() for v in self.vmas)}")


@functools.cache
def flag_text(hg: bool, nh: bool, um: bool, uw: bool) -> str:
    return "+".join(n for n, on in (("hg", hg), ("nh", nh), ("um", um), ("uw", uw)) if on) or "-"


@functools.lru_cache(maxsize=1 << 16)
def vma_lines(era: Era, st: State) -> tuple[Vma, ...]:
    """The arena's VMAs as smaps shows them.  Memoised (concrete.clear_caches() forgets): a
    step that fails or changes only the mm leaves the VMAs, and so the lines, as they were."""
    vmas = []
    cs = cells(st)
    for c, v in zip(cs, arena.vma_views(PY, cs)):
        if not c.mapped or v.same:
            continue
        f = vma_fact(PY, era, st, c, v)
        vmas.append(Vma(f.view.vstart * PAGE, f.view.vend * PAGE,
                        flag_text(c.hg, c.nh, c.um, c.uw),
                        None if f.eligible is None else int(f.eligible), f.anon_huge_kb))
    return tuple(vmas)


def observe(era: Era, st: State, ret: int) -> Observation:
    return Observation(ret, rules.thp_disable_value(PY, era, st.mm),
                       rules.task_thp_status(PY, era, st.mm), vma_lines(era, st))
