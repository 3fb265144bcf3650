"""Theorems about the syscall contract the restore relies on around its own steps: what each
syscall may return, what a fork child and an exec'ed image get, that a userfaultfd leaves no
trace once unregistered or closed, and what /proc/PID/status says of the prctl.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import z3

from vmaflags.model import arena, rules, symbolic
from vmaflags.model import step as S
from vmaflags.model.backend import Z3
from vmaflags.model.eras import Era
from vmaflags.model.errno import (EAGAIN, EBUSY, EEXIST, EINVAL, ENOENT, ENOMEM, SIGBUS,
                                  SIGSEGV)
from vmaflags.model.state import State, cells
from vmaflags.model.syscalls import (MADV_COLLAPSE, PMD_PAGES, Execve, Fork, Khugepaged,
                                     Madvise, Mmap, Munmap, PrctlGet, PrctlSet, Sysfs, Touch,
                                     UffdClose, UffdCopy, UffdRegister, UffdUnregister)

from . import engine as E
from .states import era_modes, inputs, sane, state, state_dims
from .verdict import Verdict, coverage, enabled, sat_or_vacuous, shape_text


@lru_cache(maxsize=None)
def any_step(era: Era, shp: tuple[int, ...]) -> tuple[State, Any, E.Run, E.Choice]:
    """One step of every kind of the language from every sane state of the shape (shared by
    the theorems of one era that need it: hg-nh-exclusive, documented-returns)."""
    st, pre = state(shp, era)
    run = E.Run(era, [st])
    return st, pre, run, run.step(E.alphabet(era))


def returns(era: Era, kind: type) -> tuple[int, ...]:
    """What a step of `kind` may return: 0 or an error its man page lists (man-pages 6.03),
    PR_GET's values, or the signal a bad write raises.  UFFDIO_COPY's EEXIST is not in the
    man page; the kernel returns it for a page already there (mfill_atomic_install_pte)."""
    return {
        Madvise: (0, -EINVAL, -ENOMEM, -EAGAIN, -EBUSY),
        Mmap: (0, -EINVAL, -ENOMEM), Munmap: (0, -EINVAL, -ENOMEM),
        Touch: (0, SIGBUS, SIGSEGV),
        PrctlSet: (0, -EINVAL), PrctlGet: (-EINVAL, *era_modes(era)),
        UffdRegister: (0, -EINVAL, -EBUSY), UffdUnregister: (0, -EINVAL),
        UffdCopy: (0, -EAGAIN, -EINVAL, -ENOENT, -EEXIST),
    }.get(kind, (0,))


def documented_returns(era: Era) -> Verdict:
    """One step of every kind from every sane state returns only what `returns` allows."""
    shp = (2,)
    st, pre, run, choice = any_step(era, shp)
    facts = [pre, *run.side]
    sat_or_vacuous("pre-states", *facts)
    q, vac = coverage(facts, state_dims(era, st))
    q["step kinds"], bad = enabled(facts, choice, run.rets[-1])
    ret = run.rets[-1]
    claim = z3.And(*(z3.Implies(choice.pick == i,
                                z3.Or(*(ret == v for v in returns(era, type(sc)))))
                     for i, sc in enumerate(choice.options)))
    r, m = E.check(*facts, z3.Not(claim))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac + bad, quantified=q)
    sc = choice.concrete(m)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{"syscall": sc.text(), "returns": E.val(m, ret)}], vac + bad,
                   f"{sc.name} returns {E.val(m, ret)}", quantified=q)


def _flags(c: Any) -> tuple:
    return (c.mapped, c.hg, c.nh, c.um, c.uw)


def fork_and_exec(era: Era) -> Verdict:
    """From every sane state: a fork child has the parent's VMAs (bounds, hg, nh, pages,
    THPs) without uffd flags (kernel/fork.c dup_mmap, dup_userfaultfd without
    UFFD_FEATURE_EVENT_FORK), is on khugepaged's list iff the parent is (khugepaged_fork),
    and the parent keeps its VMAs; present PTEs end write-protected in both
    (copy_present_pte); an exec'ed image has no VMA in the arena and is not on khugepaged's
    list (fs/exec.c: a new mm)."""
    shp = (2,)
    st, pre = state(shp, era)
    _, parent, child = S.transition(Z3, era, st, Fork(), ())
    _, img, _ = S.transition(Z3, era, st, Execve(), ())
    claims = [child.mm.registered == st.mm.registered, z3.Not(img.mm.registered)]
    for b0, bp, bc, bi in zip(st.blocks, parent.blocks, child.blocks, img.blocks):
        claims += [bc.thp == b0.thp, bp.thp == b0.thp, z3.Not(bi.thp), z3.Not(bi.ptable)]
        # copy_present_pte() write-protects a present PTE in both (private COW mapping),
        # copy_huge_pmd() a PMD THP
        shared = z3.Or(b0.thp, z3.And(b0.ptable, z3.Or(*(c.pop for c in b0.cells))))
        claims += [z3.Implies(shared, z3.And(bp.cow, bc.cow))]
        for c0, cp, cc, ci in zip(b0.cells, bp.cells, bc.cells, bi.cells):
            claims += [cp.start == c0.start, cc.start == c0.start, cc.end == c0.end,
                       *(x == y for x, y in zip(_flags(cp), _flags(c0))),
                       cc.mapped == c0.mapped, cc.brk == c0.brk, cc.hg == c0.hg,
                       cc.nh == c0.nh, z3.Not(cc.um), z3.Not(cc.uw), cc.pop == c0.pop,
                       z3.Not(ci.mapped)]
    sat_or_vacuous("states", pre)
    q, vac = coverage([pre], state_dims(era, st))
    r, m = E.check(pre, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}],
                   vac, quantified=q)


def uffd_leaves_no_trace(era: Era) -> Verdict:
    """From every sane state without uffd flags: UFFDIO_REGISTER of a range (each mode), then
    UFFDIO_UNREGISTER of the same range or close() of the userfaultfd, leaves every cell's
    mapping and flags as they were (what a restored process has once the lazy pages are in
    and the lazy-pages daemon closes its userfaultfd)."""
    shp = (2,)
    st, pre = state(shp, era)
    (a, b), aok = E.arg_choices(st, UffdRegister(0, 0), E.fresh("r"))
    modes = [(True, False), (False, True), (True, True)]
    mode, last = z3.Int(E.fresh("mode")), z3.Int(E.fresh("last"))
    regs = [S.transition(Z3, era, st, UffdRegister(0, 0, m, w), (a, b)) for m, w in modes]
    mid, ret = regs[0][1], regs[0][0]
    for n in (1, 2):
        mid, ret = E.merge(mode == n, regs[n][1], mid), Z3.ite(mode == n, regs[n][0], ret)
    unreg = S.transition(Z3, era, mid, UffdUnregister(0, 0), (a, b))[1]
    close = S.transition(Z3, era, mid, UffdClose(), ())[1]
    end = E.merge(last == 1, close, unreg)
    facts = [pre, aok, mode >= 0, mode <= 2, last >= 0, last <= 1,
             *(z3.And(z3.Not(c.um), z3.Not(c.uw)) for c in cells(st))]
    sat_or_vacuous("states", *facts)
    q, vac = coverage(facts, state_dims(era, st))
    ok = E.satisfiable_each(facts, [z3.And(mode == n, ret == 0) for n in range(3)])
    q["uffd modes"] = f"{sum(ok)}/3"
    vac += [f"mode {modes[n]} never registers" for n in range(3) if not ok[n]]
    same = z3.And(*(z3.And(*(x == y for x, y in zip(_flags(c), _flags(d))))
                    for c, d in zip(cells(st), cells(end))))
    r, m = E.check(*facts, z3.Not(same))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    mw = modes[E.val(m, mode)]
    trace = [UffdRegister(E.val(m, a) * 4096, (E.val(m, b) - E.val(m, a)) * 4096, *mw).text(),
             ("uffd_close" if E.val(m, last) else "uffd_unregister")]
    return Verdict("refuted", "one-step", shape_text(shp), [{"steps": trace}], vac,
                   quantified=q)


def status_shows_prctl(era: Era) -> Verdict:
    """Rule level: /proc/PID/status THP_enabled is 0 exactly when the prctl disables THP
    completely, i.e. PR_GET_THP_DISABLE returns 1 (Documentation/filesystems/proc.rst:
    "returns 0 when PR_SET_THP_DISABLE is set on the process"; 6.18: "to disable THP
    completely, not just partially")."""
    x = inputs(era)
    get = rules.thp_disable_value(Z3, era, x.mm)
    status = rules.task_thp_status(Z3, era, x.mm)
    sat_or_vacuous("inputs", x.ok)
    q, vac = coverage([x.ok], [("prctl mode", get, era_modes(era))])
    r, m = E.check(x.ok, z3.Not((status == 0) == (get == 1)))
    if r == z3.unsat:
        return Verdict("proved", "rule-level", vacuity=vac, quantified=q)
    return Verdict("refuted", "rule-level", None, [x.values(m)], vac, quantified=q)


def pages_arrive(era: Era) -> Verdict:
    """From every sane state: a write to mapped pages, none a missing page of a
    VM_UFFD_MISSING VMA, succeeds and leaves them present with an anon_vma (what CRIU's
    restore_priv_vma_content relies on); UFFDIO_COPY of missing pages inside one registered
    VMA, in PMDs that are not THPs, succeeds and leaves them present (the lazy phase).  Either
    leaves a sane state whose PMDs it wrote to are not write-protected (a written PTE is
    writable: do_wp_page / a new page)."""
    shp = (2, 2)
    st, pre = state(shp, era)
    cs = cells(st)
    claims, dims = [], []
    for sc in (Touch(0, 0), UffdCopy(0, 0)):
        (a, b), aok = E.arg_choices(st, sc, E.fresh("r"))
        ret, post, _ = S.transition(Z3, era, st, sc, (a, b))
        inr = [z3.And(a <= c.start, c.end <= b) for c in cs]
        if isinstance(sc, Touch):
            ready = [z3.Implies(x, z3.And(c.mapped, z3.Not(z3.And(c.um, z3.Not(c.pop)))))
                     for x, c in zip(inr, cs)]
        else:
            ready = [z3.Implies(x, z3.And(c.mapped, z3.Or(c.um, c.uw), z3.Not(c.pop)))
                     for x, c in zip(inr, cs)]
            ready += [z3.Implies(z3.And(inr[i - 1], inr[i]), z3.Not(cs[i].brk))
                      for i in range(1, len(cs))]
            first = arena.block_first(st)
            ready += [z3.Implies(z3.Or(*(inr[first[k] + j] for j in range(len(blk.cells)))),
                                 z3.Not(blk.thp))
                      for k, blk in enumerate(st.blocks)]
        first = arena.block_first(st)
        written = [z3.Or(*(inr[first[k] + j] for j in range(len(blk.cells))))
                   for k, blk in enumerate(st.blocks)]
        done = z3.And(ret == 0, sane(post),
                      *(z3.Implies(x, z3.And(c.pop, c.av > 0))
                        for x, c in zip(inr, cells(post))),
                      *(z3.Implies(w, z3.Not(blk.cow)) for w, blk in zip(written, post.blocks)))
        claims.append(z3.Implies(z3.And(aok, *ready), done))
        dims.append(z3.And(aok, *ready))
    sat_or_vacuous("states", pre, *dims)
    q, vac = coverage([pre], state_dims(era, st))
    r, m = E.check(pre, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}], vac,
                   quantified=q)


def collapse_fills_holes(era: Era) -> Verdict:
    """From every sane state: a PMD inside one VMA that is not userfaultfd-armed, with a page
    table and a writable present page, that the rules allow to collapse, becomes a THP with
    every page present (zero-filled where there was none) by one khugepaged scan (the mm on
    its list) and by MADV_COLLAPSE of it (6.1+); and no PMD becomes one that is not inside one
    VMA the rules allow, or (khugepaged) whose mm is off its list or that holds no page
    (max_ptes_none 511).  So the adversaries of no-collapse-window are real ones."""
    shp = (2,)
    st, pre = state(shp, era)
    blk = st.blocks[0]
    c0 = blk.cells[0]
    one = arena.in_one_vma(Z3, blk.cells)
    base = [one, z3.Not(c0.um), z3.Not(c0.uw), z3.Not(blk.thp), blk.ptable,
            z3.Not(blk.cow), z3.Or(*(c.pop for c in blk.cells))]
    claims, cases = [], []
    users = [(rules.KHUGEPAGED, Khugepaged(), ())]
    if era.madv_collapse:
        users.append((rules.FORCED_COLLAPSE, Madvise(0, 0, MADV_COLLAPSE), (0, PMD_PAGES)))
    for user, sc, args in users:
        allowed = rules.thp_vma_allowable(Z3, era, user, c0.flags, st.mm, st.sysfs,
                                          z3.Not(c0.av == 0), True)
        ret, post, _ = S.transition(Z3, era, st, sc, args)
        made = z3.And(z3.Not(blk.thp), post.blocks[0].thp)
        need = [one, allowed]
        if user == rules.KHUGEPAGED:
            need += [st.mm.registered, z3.Or(*(c.pop for c in blk.cells))]
        ready = z3.And(*base, *need)
        cases.append(ready)
        claims += [z3.Implies(ready, z3.And(ret == 0, post.blocks[0].thp,
                                            *(c.pop for c in post.blocks[0].cells))),
                   z3.Implies(made, z3.And(*need))]
    sat_or_vacuous("states", pre)
    ready = E.satisfiable_each([pre], cases)
    q = {"adversaries ready": f"{sum(ready)}/{len(cases)}"}
    vac = [f"{users[n][1].name} is never ready" for n, ok in enumerate(ready) if not ok]
    r, m = E.check(pre, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp),
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}], vac,
                   quantified=q)


def sysfs_is_global(era: Era) -> Verdict:
    """From every sane state, a write of each mode to transparent_hugepage/enabled sets that
    mode and changes no VMA, page or mm bit (mm/huge_memory.c enabled_store: a global flag)."""
    shp = (2,)
    st, pre = state(shp, era)
    mode = z3.Int(E.fresh("mode"))
    ret, post, _ = S.transition(Z3, era, st, Sysfs(0), (mode,))
    facts = [pre, mode >= 0, mode <= 2]
    sat_or_vacuous("states", *facts)
    q, vac = coverage(facts, [("mode written", mode, [0, 1, 2])])
    before, after = symbolic.values(st), symbolic.values(post)
    claim = z3.And(ret == 0, post.sysfs == mode,
                   *(_eq(before[k], after[k]) for k in before if k != "sysfs"))
    r, m = E.check(*facts, z3.Not(claim))
    if r == z3.unsat:
        return Verdict("proved", "one-step", shape_text(shp), vacuity=vac, quantified=q)
    return Verdict("refuted", "one-step", shape_text(shp), [{"mode": E.val(m, mode)}], vac,
                   quantified=q)


def _eq(a: Any, b: Any) -> Any:
    return a == b if z3.is_expr(a) or z3.is_expr(b) else z3.BoolVal(a == b)
