"""One function per syscall: the transition over the arena, for both backends.

Ranges are in pages, [a, b), and every range edge must be a cell edge: the interpreter splits
cells before calling (concrete.py), the Z3 encoding chooses its cells that way (symbolic.py).
Each function returns (return value, new state); byte-level argument checks (alignment,
zero length) are in `concrete.run_syscall`, since proofs only issue aligned ranges.
"""
from __future__ import annotations

from typing import Any

from . import arena, rules
from .eras import Era
from .errno import EINVAL, ENOMEM, EAGAIN, SIGBUS, SIGSEGV
from .state import Block, Cell, State, cells, hole
from .syscalls import (MADV_COLLAPSE, MADV_HUGEPAGE, PMD_PAGES, Execve, Fork, Khugepaged,
                       Madvise, Mmap, Munmap, PrctlGet, PrctlSet, Syscall, Sysfs, Touch,
                       UffdClose, UffdCopy, UffdRegister, UffdUnregister)


def _in(B: Any, c: Cell, a: Any, b: Any) -> Any:
    return B.and_(a <= c.start, c.end <= b)


def _hits(B: Any, block_cells: tuple[Cell, ...], a: Any, b: Any) -> Any:
    return B.or_(*(_in(B, c, a, b) for c in block_cells))


def _first_error(B: Any, errs: list[Any]) -> Any:
    """The first non-zero value of `errs`, or 0."""
    out: Any = 0
    for e in reversed(errs):
        out = B.ite(e == 0, out, e)
    return out


def _enter(B: Any, era: Era, st: State, cs: list[Cell], which: list[Any],
           flags: list[Any] | None = None) -> list[Any]:
    """khugepaged_enter_vma() (rules.khugepaged_enter_vma, which lists the call sites) on the
    VMA of each cell marked in `which`, as the cells `cs` lay it out, with `flags` per cell
    (default: the cell's own): one term per call that may register the mm."""
    if B.is_true(st.mm.registered):
        return []  # the bit is never cleared: nothing left to decide
    calls = []
    for i, (c, w) in enumerate(zip(cs, which)):
        if B.is_false(w):
            continue
        f = c.flags if flags is None else flags[i]
        # the VMA's extent matters only if the rest allows (the answer is monotonic in it)
        if not B.is_false(rules.khugepaged_enter_vma(B, era, f, st.mm, st.sysfs,
                                                      B.not_(c.av == 0), B.T)):
            calls.append((i, c, w, f))
    if not calls:
        return []
    views = arena.vma_views(B, cs)
    return [B.and_(w, rules.khugepaged_enter_vma(B, era, f, st.mm, st.sysfs, B.not_(c.av == 0),
                                                  views[i].fits))
            for i, c, w, f in calls]


def _enter_merges(B: Any, era: Era, st: State, old: list[Cell], new: list[Cell], mod: list[Any]
                  ) -> list[Any]:
    """khugepaged_enter_vma() on every VMA that a merge of the operation produced (vma_merge(),
    vma_merge_existing_range(): arena.merges)."""
    if B.is_true(st.mm.registered):
        return []
    return _enter(B, era, st, new, arena.merges(B, old, new, mod))


def _registered(B: Any, st: State, entered: list[Any]) -> State:
    """`st` with MMF_VM_HUGEPAGE set by any of the `entered` calls (it is never cleared)."""
    if not entered:
        return st
    return B.put(st, mm=B.put(st.mm, registered=B.or_(st.mm.registered, *entered)))


def _unmap_pmds(B: Any, st: State, a: Any, b: Any) -> tuple[list[Any], list[Any]]:
    """PMD state after [a, b) is unmapped: a THP it touches is gone (split where part of it
    stays mapped, which leaves a PTE table); a PTE table is freed once no VMA is left in its
    PMD (free_pgtables between the neighbouring VMAs)."""
    thp, ptable = [], []
    for blk in st.blocks:
        hit = _hits(B, blk.cells, a, b)
        kept = B.or_(*(B.and_(c.mapped, B.not_(_in(B, c, a, b))) for c in blk.cells))
        thp.append(B.and_(blk.thp, B.not_(hit)))
        ptable.append(B.and_(B.or_(blk.ptable, blk.thp), kept, B.not_(thp[-1])))
    return thp, ptable


def mmap(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED) of [a, b): whatever was there is unmapped
    (its page tables freed where no VMA is left in the PMD), then a fresh VMA with
    rules.new_vma_flags() is merged with its neighbours where mergeable (mmap_region)."""
    f = rules.new_vma_flags(B, era, st.mm)
    thp, ptable = _unmap_pmds(B, st, a, b)
    old = cells(st)
    mod = [_in(B, c, a, b) for c in old]
    cs = [B.select(m, Cell(c.start, c.end, B.T, B.F, f.hg, f.nh, f.um, f.uw, 0, B.F), c)
          for c, m in zip(old, mod)]
    cs = arena.remerge(B, era, cs, mod, "new")
    st2 = arena.regroup(B, st, cs, thp, ptable)
    # khugepaged_enter_vma() on the expanded VMA (6.1 mmap_region() after vma_expand(), 6.12+
    # vma_merge_new_range()), else on the new one, which has no anon_vma and so never registers
    return 0, _registered(B, st2, _enter(B, era, st2, cs, mod))


def munmap(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """munmap of [a, b): no error for holes; a partly unmapped THP is split."""
    thp, ptable = _unmap_pmds(B, st, a, b)
    old = cells(st)
    mod = [_in(B, c, a, b) for c in old]
    cs = [B.select(m, hole(c.start, c.end), c) for c, m in zip(old, mod)]
    return 0, arena.regroup(B, st, arena.remerge(B, era, cs, mod), thp, ptable)


def madvise(B: Any, era: Era, st: State, a: Any, b: Any, advice: int) -> tuple[Any, State]:
    """madvise(): madvise_walk_vmas over [a, b) in address order, stopping at the first error
    of a VMA; holes give ENOMEM at the end, after the mapped parts were advised."""
    if not rules.madvise_behavior_valid(era, advice):
        return -EINVAL, st
    if advice == MADV_COLLAPSE:
        return madvise_collapse(B, era, st, a, b)
    old = cells(st)
    cs, mod, advised, errs, flags = [], [], [], [], []
    stopped = B.F
    for c in old:
        inr = B.and_(_in(B, c, a, b), c.mapped, B.not_(stopped))
        if B.is_false(inr):
            cs.append(c)
            mod.append(B.F)
            advised.append(B.F)
            errs.append(0)
            flags.append(c.flags)
            continue
        f, err = rules.hugepage_madvise(B, era, c.flags, advice)
        bad = B.not_(err == 0)
        apply = B.and_(inr, B.not_(bad))
        errs.append(B.ite(B.and_(inr, bad), err, 0))
        stopped = B.or_(stopped, B.and_(inr, bad))
        new = B.put(c, hg=B.ite(apply, f.hg, c.hg), nh=B.ite(apply, f.nh, c.nh))
        mod.append(B.and_(apply, B.or_(B.not_(new.hg == c.hg), B.not_(new.nh == c.nh))))
        advised.append(apply)
        flags.append(f)
        cs.append(new)
    holes = B.or_(*(B.and_(_in(B, c, a, b), B.not_(c.mapped)) for c in old))
    ret = B.ite(stopped, _first_error(B, errs), B.ite(holes, -ENOMEM, 0))
    cs = arena.remerge(B, era, cs, mod)
    st2 = arena.split_thps(B, arena.regroup(B, st, cs, [bl.thp for bl in st.blocks],
                                            [bl.ptable for bl in st.blocks]))
    entered = _enter_merges(B, era, st2, old, cs, mod)
    if advice == MADV_HUGEPAGE:
        if era.hugepage_madvise_registers:
            # hugepage_madvise(), before madvise_update_vma(): on every advised VMA as it was
            # before the split, with the new flags -- also when they did not change
            entered += _enter(B, era, st, old, advised, flags)
        else:
            # Debian 6.12 madvise_update_vma(): on the piece, after an actual change
            entered += _enter(B, era, st2, cs, mod)
    return ret, _registered(B, st2, entered)


def madvise_collapse(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """MADV_COLLAPSE (mm/khugepaged.c madvise_collapse, 6.1+) on each VMA of the range, with
    start/end clipped to it: EINVAL unless thp_vma_allowable(FORCED_COLLAPSE); EINVAL when the
    clipped range lies strictly inside one PMD (the unsigned hend - hstart wraps); then every
    aligned PMD in it is tried in order (rules.collapse_pmd) until one aborts the loop.  The
    VMA fails with the errno of its last failure, which ends the walk; collapsed PMDs stay."""
    old = cells(st)
    nb = len(st.blocks)
    views = arena.vma_views(B, old)
    first = arena.block_first(st)
    elig = [rules.thp_vma_allowable(B, era, rules.FORCED_COLLAPSE, c.flags, st.mm, st.sysfs,
                                    B.not_(c.av == 0), v.fits) for c, v in zip(old, views)]
    vma_of = [views[first[k]].vstart for k in range(nb)]  # VMA of each block, by its start
    tried, ok, abort, err = [], [], [], []
    for k, blk in enumerate(st.blocks):
        c0 = blk.cells[0]
        inside = B.and_(a <= c0.start, blk.cells[-1].end <= b, arena.in_one_vma(B, blk.cells))
        o, ab, e = rules.collapse_pmd(B, era, False, B.or_(c0.um, c0.uw), blk.thp, blk.ptable,
                                      blk.cow, B.or_(*(c.pop for c in blk.cells)),
                                      B.and_(*(c.pop for c in blk.cells)))
        earlier_abort = B.or_(*(B.and_(tried[j], abort[j], vma_of[j] == vma_of[k])
                                for j in range(k)))
        tried.append(B.and_(inside, elig[first[k]], B.not_(earlier_abort)))
        ok.append(o)
        abort.append(ab)
        err.append(e)
    vma_err = []
    for i, (c, v) in enumerate(zip(old, views)):
        e: Any = 0  # last_fail of this VMA
        for k in range(nb):
            e = B.ite(B.and_(tried[k], vma_of[k] == v.vstart, B.not_(ok[k])), err[k], e)
        lo, hi = B.ite(a <= v.vstart, v.vstart, a), B.ite(v.vend <= b, v.vend, b)
        boundary = B.or_(*(B.and_(lo <= k * PMD_PAGES, k * PMD_PAGES <= hi)
                           for k in range(nb + 1)))
        vma_err.append(B.ite(B.and_(_in(B, c, a, b), c.mapped),
                             B.ite(B.and_(elig[i], boundary), e, -EINVAL), 0))
    # An error of an earlier VMA ends the walk before this cell's VMA.
    before: list[Any] = [B.F]
    for i in range(1, len(old)):
        before.append(B.or_(before[i - 1], B.and_(B.not_(views[i].same),
                                                  B.not_(vma_err[i - 1] == 0))))
    stopped = B.or_(*(B.not_(e == 0) for e in vma_err))
    holes = B.or_(*(B.and_(_in(B, c, a, b), B.not_(c.mapped)) for c in old))
    ret = B.ite(stopped, _first_error(B, vma_err), B.ite(holes, -ENOMEM, 0))
    blocks = []
    for k, blk in enumerate(st.blocks):
        done = B.and_(tried[k], ok[k], B.not_(before[first[k]]))
        blocks.append(B.put(
            blk, thp=B.or_(blk.thp, done), ptable=B.and_(blk.ptable, B.not_(done)),
            # a new THP is mapped writable; one that already was (SCAN_PMD_MAPPED) is as it was
            cow=B.and_(blk.cow, B.not_(B.and_(done, B.not_(blk.thp)))),
            cells=tuple(B.put(c, pop=B.or_(c.pop, done)) for c in blk.cells)))
    return ret, B.put(st, blocks=tuple(blocks))


def touch(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """Write one byte to each page of [a, b) in order.  A write to an unmapped page raises
    SIGSEGV; to a not-present page of a VM_UFFD_MISSING VMA, SIGBUS (handle_userfault with
    UFFD_FEATURE_SIGBUS); either stops the walk.  Otherwise the first write into an empty PMD
    allocates a THP when rules.fault_huge_pmd allows, else a PTE is populated (do_anonymous_page).
    Both prepare an anon_vma."""
    old = cells(st)
    first = arena.block_first(st)
    cs, rets = [], []
    stopped = B.F
    eff, bus = [], []
    for c in old:
        inr = B.and_(_in(B, c, a, b), B.not_(stopped))
        stop = B.and_(inr, B.or_(B.not_(c.mapped), B.and_(c.um, B.not_(c.pop))))
        rets.append(B.ite(stop, B.ite(c.mapped, SIGBUS, SIGSEGV), 0))
        eff.append(B.and_(inr, B.not_(stop)))
        bus.append(B.and_(stop, c.mapped))
        stopped = B.or_(stopped, stop)
    ret = _first_error(B, rets)
    thp_fault, thp, ptable, huge_path = [], [], [], []
    for k, blk in enumerate(st.blocks):
        c0 = blk.cells[0]
        mine = range(first[k], first[k] + len(blk.cells))
        touched = B.or_(*(eff[i] for i in mine))
        sigbus = B.or_(*(bus[i] for i in mine))
        # the first write into the block finds pmd_none(): no THP and no PTE table yet
        pmd_none = B.and_(B.not_(blk.thp), B.not_(blk.ptable))
        one = arena.in_one_vma(B, blk.cells)
        # the huge path registers the mm (khugepaged_enter_vma) before it allocates the THP
        # or, in a VM_UFFD_MISSING VMA, hands the fault to userfaultfd with the PMD still none
        path = rules.huge_pmd_path(B, era, c0.flags, st.mm, st.sysfs, pmd_none, one)
        huge_path.append(B.and_(B.or_(touched, sigbus), path))
        hf = B.and_(touched, rules.fault_huge_pmd(B, era, c0.flags, st.mm, st.sysfs, pmd_none,
                                                  one))
        thp_fault.append(hf)
        thp.append(B.or_(blk.thp, hf))
        # a PTE fault allocates the page table before it finds VM_UFFD_MISSING (SIGBUS)
        sigbus_pte = B.and_(sigbus, B.not_(path))
        # a write to a present page (or into a THP) takes no fault; a new PTE needs the table
        pte_fault = B.and_(B.not_(blk.thp), B.not_(hf),
                           B.or_(*(B.and_(eff[i], B.not_(old[i].pop)) for i in mine)))
        ptable.append(B.or_(blk.ptable, pte_fault, sigbus_pte))
    blk_of = [k for k, blk in enumerate(st.blocks) for _ in blk.cells]
    for i, c in enumerate(old):
        cs.append(B.put(c, pop=B.or_(c.pop, eff[i], thp_fault[blk_of[i]])))
    # vmf_anon_prepare() runs before the uffd check: a SIGBUS write also gets an anon_vma
    wrote = [B.or_(eff[i], bus[i], thp_fault[blk_of[i]]) for i in range(len(old))]
    cs, next_av = _anon_vma_prepare(B, cs, wrote, st.next_av)
    st2 = B.put(arena.regroup(B, st, cs, thp, ptable), next_av=next_av)
    # a write makes its PTE writable (a new page, or wp_page_reuse of an exclusive COW page)
    st2 = B.put(st2, blocks=tuple(
        B.put(blk, cow=B.and_(blk.cow, *(B.not_(eff[i]) for i in
                                        range(first[k], first[k] + len(blk.cells)))))
        for k, blk in enumerate(st2.blocks)))
    return ret, _registered(B, st2, _enter(B, era, st2, cs,
                                           [huge_path[blk_of[i]] for i in range(len(old))]))


def _anon_vma_prepare(B: Any, cs: list[Cell], wrote: list[Any], next_av: Any
                      ) -> tuple[list[Cell], Any]:
    """Give each VMA written to for the first time an anon_vma (mm/rmap.c __anon_vma_prepare):
    find_mergeable_anon_vma() reuses the next VMA's, else the previous one's, when that VMA is
    adjacent, has one and has the same flags (anon_vma_compatible; such neighbours exist when a
    written VMA could not merge into an unwritten one, before 6.16); else a fresh one."""
    if all(B.is_false(w) for w in wrote):
        return cs, next_av
    n = len(cs)
    same = [B.F] + [B.and_(cs[i].mapped, cs[i - 1].mapped, B.not_(cs[i].brk))
                    for i in range(1, n)]
    need = [B.F] * n  # some cell of this cell's VMA is written
    after: list[Cell | None] = [None] * n  # first cell of the VMA after this cell's VMA
    for i in reversed(range(n)):
        nxt = B.and_(same[i + 1], need[i + 1]) if i + 1 < n else B.F
        need[i] = B.or_(B.and_(wrote[i], cs[i].av == 0), nxt)
        if i + 1 < n:
            after[i] = after[i + 1] if B.is_true(same[i + 1]) else (
                B.select(same[i + 1], after[i + 1] or cs[i + 1], cs[i + 1]))
    out: list[Cell] = []
    counter, cur, vneed = next_av, next_av, B.F
    for i, c in enumerate(cs):
        vneed = B.ite(same[i], vneed, need[i])  # the VMA's first cell knows for the whole VMA
        nb, pb = after[i], out[i - 1] if i else None
        use_next = _reusable(B, c, nb)
        use_prev = _reusable(B, c, pb)
        fresh = B.and_(B.not_(same[i]), vneed, B.not_(use_next), B.not_(use_prev))
        chosen = B.ite(use_next, nb.av if nb else 0, B.ite(use_prev, pb.av if pb else 0, counter))
        cur = B.ite(same[i], cur, chosen)
        counter = B.ite(fresh, counter + 1, counter)
        out.append(B.put(c, av=B.ite(B.and_(vneed, c.av == 0), cur, c.av)))
    return out, counter


def _reusable(B: Any, c: Cell, other: Cell | None) -> Any:
    """reusable_anon_vma(): an adjacent mapped VMA with an anon_vma and the same flags."""
    if other is None:
        return B.F
    return B.and_(c.mapped, other.mapped, B.not_(other.av == 0), other.hg == c.hg,
                  other.nh == c.nh, other.um == c.um, other.uw == c.uw)


def uffd_register(B: Any, era: Era, st: State, a: Any, b: Any, missing: bool, wp: bool
                  ) -> tuple[Any, State]:
    """UFFDIO_REGISTER (fs/userfaultfd.c userfaultfd_register, 6.12): EINVAL when no VMA
    intersects the range; holes are otherwise allowed.  A VMA already registered with every
    requested mode is skipped; others get exactly the requested mode, split to the range and
    merged (vma_modify_flags_uffd)."""
    old = cells(st)
    cs, mod = [], []
    for c in old:
        inr = B.and_(_in(B, c, a, b), c.mapped)
        skip = B.and_(B.or_(not missing, c.um), B.or_(not wp, c.uw))
        f = rules.userfaultfd_register(B, c.flags, missing, wp)
        apply = B.and_(inr, B.not_(skip))
        cs.append(B.put(c, um=B.ite(apply, f.um, c.um), uw=B.ite(apply, f.uw, c.uw)))
        mod.append(apply)
    some = B.or_(*(B.and_(_in(B, c, a, b), c.mapped) for c in old))
    return _relayout(B, era, st, B.ite(some, 0, -EINVAL), cs, mod, some)


def uffd_unregister(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """UFFDIO_UNREGISTER: EINVAL when no VMA intersects the range; registered VMAs in it lose
    their uffd flags, split and merged like register (userfaultfd_clear_vma)."""
    old = cells(st)
    some = B.or_(*(B.and_(_in(B, c, a, b), c.mapped) for c in old))
    sel = [B.and_(_in(B, c, a, b), c.mapped) for c in old]
    return _clear_uffd(B, era, st, sel, B.ite(some, 0, -EINVAL), some)


def uffd_close(B: Any, era: Era, st: State) -> tuple[Any, State]:
    """close() of the userfaultfd: userfaultfd_release() clears every VMA's uffd flags and
    merges what it can."""
    return _clear_uffd(B, era, st, [c.mapped for c in cells(st)], 0, B.T)


def _clear_uffd(B: Any, era: Era, st: State, sel: list[Any], ret: Any, ok: Any
                ) -> tuple[Any, State]:
    cs, mod = [], []
    for c, s in zip(cells(st), sel):
        f = rules.userfaultfd_unregister(B, c.flags)
        apply = B.and_(s, B.or_(c.um, c.uw))
        cs.append(B.put(c, um=B.ite(apply, f.um, c.um), uw=B.ite(apply, f.uw, c.uw)))
        mod.append(apply)
    return _relayout(B, era, st, ret, cs, mod, ok)


def _relayout(B: Any, era: Era, st: State, ret: Any, cs: list[Cell], mod: list[Any], ok: Any
              ) -> tuple[Any, State]:
    """Split the changed cells off and merge what can merge (vma_modify_flags_uffd, 6.1
    vma_merge/split_vma); each merge calls khugepaged_enter_vma() on the merged VMA."""
    old = cells(st)
    mod = [B.and_(ok, m) for m in mod]
    new = arena.remerge(B, era, cs, mod, "uffd")
    entered = _enter_merges(B, era, st, old, new, mod)
    cs = [B.select(ok, n, o) for n, o in zip(new, old)]
    st2 = arena.regroup(B, st, cs, [bl.thp for bl in st.blocks],
                        [bl.ptable for bl in st.blocks])
    return ret, _registered(B, arena.split_thps(B, st2), entered)


def uffd_copy(B: Any, era: Era, st: State, a: Any, b: Any) -> tuple[Any, State]:
    """UFFDIO_COPY into [a, b) (mm/userfaultfd.c mfill_atomic, 6.12; 6.1 __mcopy_atomic): the
    range must lie in one VMA registered with our uffd, else ENOENT.  Pages are filled in order
    until one is present or its PMD is a THP (EEXIST).  The ioctl returns 0 when all were
    copied, the errno when none was, and EAGAIN when only some were (userfaultfd_copy)."""
    old = cells(st)
    first = arena.block_first(st)
    blk_of = [k for k, blk in enumerate(st.blocks) for _ in blk.cells]
    inr = [_in(B, c, a, b) for c in old]
    # one VMA, registered: every cell of the range mapped, no VMA start after the first
    one = B.and_(*(B.or_(B.not_(x), c.mapped) for x, c in zip(inr, old)),
                 *(B.or_(B.not_(inr[i]), B.not_(inr[i - 1]), B.not_(old[i].brk))
                   for i in range(1, len(old))))
    registered = B.or_(*(B.and_(x, B.or_(c.um, c.uw)) for x, c in zip(inr, old)))
    ok = B.and_(one, registered)
    stopped, copied, errs, any_copied = B.F, [], [], B.F
    for i, c in enumerate(old):
        e = rules.uffdio_copy_page(B, B.T, c.pop, st.blocks[blk_of[i]].thp)
        live = B.and_(ok, inr[i], B.not_(stopped))
        fail = B.and_(live, B.not_(e == 0))
        errs.append(B.ite(fail, e, 0))
        copied.append(B.and_(live, B.not_(fail)))
        stopped = B.or_(stopped, fail)
        any_copied = B.or_(any_copied, copied[-1])
    err = _first_error(B, errs)
    ret = B.ite(B.not_(ok), rules.uffdio_copy_page(B, B.F, B.F, B.F),
                B.ite(err == 0, 0, B.ite(any_copied, -EAGAIN, err)))
    cs = [B.put(c, pop=B.or_(c.pop, copied[i])) for i, c in enumerate(old)]
    # 6.9+ uffd_mfill_lock() prepares the anon_vma of the VMA holding dst before any other
    # check; before, __mcopy_atomic() prepares it only once the range is valid
    at_dst = [B.and_(c.mapped, c.start <= a, a < c.end,
                     B.T if era.uffd_copy_prepares_anon_first else ok) for c in old]
    cs, next_av = _anon_vma_prepare(B, cs, at_dst, st.next_av)
    ptable = [B.or_(blk.ptable, *(copied[first[k] + j] for j in range(len(blk.cells))))
              for k, blk in enumerate(st.blocks)]
    st2 = arena.regroup(B, st, cs, [bl.thp for bl in st.blocks], ptable)
    st2 = B.put(st2, blocks=tuple(
        B.put(blk, cow=B.and_(blk.cow, *(B.not_(copied[first[k] + j])
                                        for j in range(len(blk.cells)))))
        for k, blk in enumerate(st2.blocks)))
    return ret, B.put(st2, next_av=next_av)


def khugepaged(B: Any, era: Era, st: State) -> tuple[Any, State]:
    """One full khugepaged scan (khugepaged_scan_mm_slot, default max_ptes_none=511): every
    aligned PMD inside a VMA that khugepaged may scan is collapsed when rules.collapse_pmd allows,
    provided the mm is on khugepaged's list.  The real thread needs time: conformance tunes
    scan_sleep_millisecs and waits."""
    old = cells(st)
    views = arena.vma_views(B, old)
    first = arena.block_first(st)
    blocks = []
    for k, blk in enumerate(st.blocks):
        c0 = blk.cells[0]
        elig = arena.khugepaged_eligible(B, era, c0, views[first[k]], st.mm, st.sysfs)
        ok, _, _ = rules.collapse_pmd(B, era, True, B.or_(c0.um, c0.uw), blk.thp, blk.ptable,
                                      blk.cow, B.or_(*(c.pop for c in blk.cells)),
                                   B.and_(*(c.pop for c in blk.cells)))
        done = B.and_(st.mm.registered, arena.in_one_vma(B, blk.cells), elig, ok,
                      B.not_(blk.thp))
        blocks.append(B.put(
            blk, thp=B.or_(blk.thp, done), ptable=B.and_(blk.ptable, B.not_(done)),
            cow=B.and_(blk.cow, B.not_(done)),
            cells=tuple(B.put(c, pop=B.or_(c.pop, done)) for c in blk.cells)))
    return 0, B.put(st, blocks=tuple(blocks))


def prctl_set(B: Any, era: Era, st: State, a2: Any, a3: Any, a4: Any, a5: Any
              ) -> tuple[Any, State]:
    ret, mm = rules.prctl_set_thp_disable(B, era, st.mm, a2, a3, a4, a5)
    return ret, B.put(st, mm=mm)


def prctl_get(B: Any, era: Era, st: State, a2: Any, a3: Any, a4: Any, a5: Any
              ) -> tuple[Any, State]:
    return rules.prctl_get_thp_disable(B, era, st.mm, a2, a3, a4, a5), st


def fork(B: Any, era: Era, st: State) -> tuple[State, State]:
    """fork(): (parent, child).  The child's VMAs keep their boundaries, flags and THPs
    (dup_mmap copies VMA by VMA without merging; copy_huge_pmd) but lose uffd flags; its mm
    comes from rules.mm_init.  Both sides' present PTEs become write-protected for COW
    (copy_present_pte), and so does a PMD-mapped THP (copy_huge_pmd: pmdp_set_wrprotect);
    they stay so in the parent until written.  A write-protected PMD that is split later gives
    write-protected PTEs (__split_huge_pmd_locked keeps pmd_write()), so `cow` survives the
    split; a write into the THP after the child is gone reuses it (do_huge_pmd_wp_page)."""
    st = B.put(st, blocks=tuple(
        B.put(blk, cow=B.or_(blk.cow, blk.thp,
                             B.and_(blk.ptable, B.or_(*(c.pop for c in blk.cells)))))
        for blk in st.blocks))
    def dup(c: Cell) -> Cell:
        f = rules.dup_userfaultfd(B, c.flags)
        return B.put(c, hg=f.hg, nh=f.nh, um=f.um, uw=f.uw)

    child = B.put(st, blocks=tuple(B.put(blk, cells=tuple(map(dup, blk.cells)))
                                   for blk in st.blocks),
                  mm=rules.mm_init(B, era, st.mm, fork=True))
    return st, child


def execve(B: Any, era: Era, st: State) -> State:
    """execve(): a new mm (rules.mm_init) with nothing mapped in the arena (the cells keep
    their bounds, so a symbolic state keeps its shape)."""
    blocks = tuple(Block(B.F, B.F, B.F, tuple(hole(c.start, c.end) for c in blk.cells))
                   for blk in st.blocks)
    return B.put(st, blocks=blocks, mm=rules.mm_init(B, era, st.mm, fork=False))
def transition(B: Any, era: Era, st: State, sc: Syscall, args: tuple[Any, ...]
               ) -> tuple[Any, State, State | None]:
    """Dispatch one syscall: (return value, new state, fork child or None).  `sc` gives the kind
    and its Python-level parameters (advice, uffd mode); `args` the backend values of its
    arguments: (a, b) in pages for ranged steps, (a2, a3, a4, a5) for prctl, (mode,) for sysfs."""
    t = type(sc)
    if t is Fork:
        parent, child = fork(B, era, st)
        return 0, parent, child
    if t is Execve:
        return 0, execve(B, era, st), None
    if t is Sysfs:
        return 0, B.put(st, sysfs=args[0]), None
    if t is Khugepaged:
        return (*khugepaged(B, era, st), None)
    if t is UffdClose:
        return (*uffd_close(B, era, st), None)
    if t is PrctlSet:
        return (*prctl_set(B, era, st, *args), None)
    if t is PrctlGet:
        return (*prctl_get(B, era, st, *args), None)
    if t is Madvise:
        return (*madvise(B, era, st, *args, sc.advice), None)
    if t is UffdRegister:
        return (*uffd_register(B, era, st, *args, sc.missing, sc.wp), None)
    fn = {Mmap: mmap, Munmap: munmap, Touch: touch, UffdUnregister: uffd_unregister,
          UffdCopy: uffd_copy}[t]
    return (*fn(B, era, st, *args), None)
