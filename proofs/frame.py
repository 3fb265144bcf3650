"""restore-frame: the lemmas that let the two CRIU theorems go from the bounded arena to any
number of VMAs and PMDs (README.md, "The unbounded argument").

One-step lemmas, for every step kind a restore takes, from every sane state of the shape:
  L1 frame      a ranged step changes no cell outside its range (mapped, hg, nh, um, uw);
  L2 uniform    cells of its range in the same state end in the same state (a per-cell rule);
  L3 mm         only PR_SET_THP_DISABLE changes the prctl state of the mm;
  L4 no-split   no step puts a VMA boundary between two cells of one VMA that its range does
                not separate (and a write never does);
  L5 thp        a PMD becomes a THP only by a write fault that rules.fault_huge_pmd allows;
  L6 ptable     a PMD gets a page table only by a write, or by splitting its THP;
  L7 pages      a page becomes present only by a write to it, or by its PMD becoming a THP;
  L8 fails      a step fails only for a cell of its range: a hole, a VMA that
                rules.hugepage_madvise refuses, or a write to a missing page of a
                VM_UFFD_MISSING VMA.
Rule-level lemmas, over every input of the rules:
  R1 disabled   a VMA that vma_thp_disabled() covers gets no THP from any user;
  R2 no-collapse a PMD with no page table, or with a hole in a userfaultfd-armed VMA, does not
                collapse (khugepaged or MADV_COLLAPSE);
  R3 eligible   PR_GET_THP_DISABLE tells every prctl state of the era apart, so equal hg/nh,
                bounds and PR_GET mean equal smaps THPeligible under one sysfs mode.
"""
from __future__ import annotations

from typing import Any

import z3

from vmaflags.model import arena, rules
from vmaflags.model.backend import PY, Z3
from vmaflags.model.eras import Era
from vmaflags.model.state import cells
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
                                     Madvise, Mmap, PrctlSet, Syscall, Touch, UffdRegister)

from . import engine as E
from .states import _reachable_mms, inputs, state, state_dims
from .verdict import Verdict, coverage, enabled, sat_or_vacuous, shape_text

SHAPE = (2, 2)


def restore_kinds(era: Era) -> list[Syscall]:
    """The step kinds the restore protocols take (protocols.py)."""
    out: list[Syscall] = [Mmap(0, 0), Touch(0, 0), Madvise(0, 0, MADV_HUGEPAGE),
                          Madvise(0, 0, MADV_NOHUGEPAGE), UffdRegister(0, 0, True, False),
                          PrctlSet()]
    if era.clr_hugepage is not None:
        out.insert(4, Madvise(0, 0, MADV_CLR_HUGEPAGE))
    return out


def _flags(c: Any) -> tuple:
    return (c.mapped, c.hg, c.nh, c.um, c.uw)


def _same(a: tuple, b: tuple) -> Any:
    return z3.And(*(x == y for x, y in zip(a, b)))


def step_lemmas(era: Era, shp: tuple[int, ...] = SHAPE) -> tuple[dict[str, Any], list, Any]:
    """The one-step lemmas as claims about one nondeterministic restore step."""
    st, pre = state(shp, era)
    run = E.Run(era, [st])
    kinds = restore_kinds(era)
    choice = run.step(kinds)
    post = run.last
    facts = [pre, *run.side]
    kind = {i: sc for i, sc in enumerate(kinds)}
    is_touch = z3.Or(*(choice.pick == i for i, sc in kind.items() if isinstance(sc, Touch)))
    ranged = [i for i, sc in kind.items() if hasattr(sc, "off")]
    pc, qc = cells(st), cells(post)

    def in_range(c: Any) -> Any:
        return z3.Or(*(z3.And(choice.pick == i, choice.args[i][0] <= c.start,
                              c.end <= choice.args[i][1]) for i in ranged))

    inr = [in_range(c) for c in pc]
    lemmas: dict[str, Any] = {}
    lemmas["L1 frame"] = z3.And(*(z3.Implies(z3.Not(r), _same(_flags(a), _flags(b)))
                                  for r, a, b in zip(inr, pc, qc)))
    lemmas["L2 uniform"] = z3.And(*(
        z3.Implies(z3.And(inr[i], inr[j], _same(_flags(pc[i]), _flags(pc[j]))),
                   _same(_flags(qc[i]), _flags(qc[j])))
        for i in range(len(pc)) for j in range(i + 1, len(pc))))
    not_prctl = z3.And(*(choice.pick != i for i, sc in kind.items()
                         if isinstance(sc, PrctlSet)))
    lemmas["L3 mm"] = z3.Implies(not_prctl, z3.And(
        st.mm.def_nh == post.mm.def_nh, st.mm.disable == post.mm.disable,
        st.mm.except_adv == post.mm.except_adv))
    lemmas["L4 no-split"] = z3.And(*(
        z3.Implies(z3.And(pc[i].mapped, pc[i - 1].mapped, z3.Not(pc[i].brk),
                          z3.Or(is_touch, inr[i] == inr[i - 1])),
                   z3.Not(qc[i].brk))
        for i in range(1, len(pc))))
    first = arena.block_first(st)
    thp, ptable, pages = [], [], []
    for k, (b0, b1) in enumerate(zip(st.blocks, post.blocks)):
        c0 = b0.cells[0]
        allowed = rules.fault_huge_pmd(Z3, era, c0.flags, st.mm, st.sysfs,
                                       z3.And(z3.Not(b0.thp), z3.Not(b0.ptable)),
                                       arena.in_one_vma(Z3, b0.cells))
        thp.append(z3.Implies(z3.And(z3.Not(b0.thp), b1.thp), z3.And(is_touch, allowed)))
        ptable.append(z3.Implies(z3.And(z3.Not(b0.ptable), z3.Not(b0.thp), b1.ptable),
                                 is_touch))
        for j, (a, b) in enumerate(zip(b0.cells, b1.cells)):
            pages.append(z3.Implies(z3.And(z3.Not(a.pop), b.pop),
                                    z3.Or(z3.And(is_touch, inr[first[k] + j]), b1.thp)))
    errs = []
    for c in pc:
        e = [z3.Not(c.mapped)]
        for i, sc in kind.items():
            if isinstance(sc, Madvise):
                _, err = rules.hugepage_madvise(Z3, era, c.flags, sc.advice)
                e.append(z3.And(choice.pick == i, z3.Not(err == 0) if z3.is_expr(err)
                                else z3.BoolVal(err != 0)))
        e.append(z3.And(is_touch, c.um, z3.Not(c.pop)))
        errs.append(z3.Or(*e))
    lemmas["L8 fails"] = z3.Implies(run.rets[-1] != 0, z3.Or(
        z3.Or(*(choice.pick == i for i, sc in kind.items() if isinstance(sc, PrctlSet))),
        *(z3.And(r, e) for r, e in zip(inr, errs))))
    lemmas["L5 thp"] = z3.And(*thp)
    lemmas["L6 ptable"] = z3.And(*ptable)
    lemmas["L7 pages"] = z3.And(*pages)
    return lemmas, facts, (st, choice, run)


def rule_lemmas(era: Era) -> dict[str, Any]:
    x = inputs(era)
    out = {}
    allowed = []
    for forced in (False, True):
        off = rules.vma_thp_disabled(Z3, era, x.f, x.mm, forced)
        for u in rules.USERS:
            if (u == rules.FORCED_COLLAPSE) != forced or u == rules.SMAPS:
                continue
            a = rules.thp_vma_allowable(Z3, era, u, x.f, x.mm, x.sysfs, x.anon, x.fits)
            if a is not None:
                allowed.append(z3.Implies(off, z3.Not(a)))
    # disabled for MADV_COLLAPSE (forced) means disabled for everyone
    allowed.append(z3.Implies(rules.vma_thp_disabled(Z3, era, x.f, x.mm, True),
                              rules.vma_thp_disabled(Z3, era, x.f, x.mm, False)))
    out["R1 disabled"] = z3.And(x.ok, z3.Not(z3.And(*allowed)))
    n = E.fresh("pmd")
    thp, ptable, cow, armed, any_pop, all_pop = (z3.Bool(f"{n}_{v}") for v in (
        "thp", "ptable", "cow", "armed", "any", "all"))
    blocked = []
    for khugepaged in (True, False):
        ok, _, _ = rules.collapse_pmd(Z3, era, khugepaged, armed, thp, ptable, cow, any_pop,
                                      all_pop)
        blocked.append(z3.Implies(z3.And(z3.Not(thp), z3.Or(
            z3.Not(ptable), z3.And(armed, z3.Not(all_pop)))), z3.Not(ok)))
    out["R2 no-collapse"] = z3.Not(z3.And(*blocked))
    mms = sorted(_reachable_mms(era))
    values = [rules.thp_disable_value(PY, era, m) for m in mms]
    out["R3 eligible"] = z3.BoolVal(len(set(values)) < len(values))
    return out


def restore_frame(era: Era) -> Verdict:
    """Every lemma above, in this era: one-step ones on every sane state of the shape and every
    restore step kind, rule-level ones on every input."""
    lemmas, facts, (st, choice, run) = step_lemmas(era)
    sat_or_vacuous("pre-states", *facts)
    q, vac = coverage(facts, state_dims(era, st))
    q["step kinds"], bad = enabled(facts, choice, run.rets[-1])
    vac += bad
    failed = [name for name, claim in lemmas.items()
              if E.check(*facts, z3.Not(claim))[0] != z3.unsat]
    failed += [name for name, counter in rule_lemmas(era).items()
               if E.check(counter)[0] != z3.unsat]
    if failed:
        return Verdict("refuted", "one-step", shape_text(SHAPE),
                       [{"lemma": name} for name in failed], vac, "fails: " + ", ".join(failed),
                       quantified=q)
    return Verdict("proved", "one-step", shape_text(SHAPE), vacuity=vac, quantified=q,
                   argument=[*lemmas, *rule_lemmas_names()])


def rule_lemmas_names() -> list[str]:
    return ["R1 disabled", "R2 no-collapse", "R3 eligible"]
