"""What a restore does to THP backing and to khugepaged's list: criu-thp-kept,
criu-khugepaged-registered and criu-no-new-thp-in-nh.

Real CRIU in a test VM (`vmaflags vm criu`, conformance/vm/README.md "CRIU in the loop",
findings 3-5) restores a dumped THP as 4 KiB pages, leaves a lazily restored mm off
khugepaged's list, and makes THPs in `nh` VMAs when a plain restore writes pages under sysfs
`always`.  These theorems state each for every dump of the arena and every protocol of
protocols.py; the solver finds the counterexamples, which are replayed on the interpreter.

The run: the protocol over a dump that has THPs and khugepaged registration wherever the
kernel allows them (restore.dump_state, `backed`: `pop` are the pages present), then, for a
lazy restore, CRIU's lazy phase (`lazy_phase`).  Which pages the restore itself writes
follows CRIU's page images (conformance/vm/criu.py restore_input): a plain restore writes
every dumped page; a lazy one with a parent only the pre-dumped pages not written since
(PE_PARENT; `parent` is free per cell); a lazy one without a parent none.  Only restores that
complete count (CRIU stops at the first failed step; no restored process is left).

Not modelled: the restored process running during the lazy phase (its own faults, which the
daemon answers first, and UFFDIO_ZEROPAGE for pages the dump does not have), and khugepaged
or MADV_COLLAPSE during the restore (no-collapse-window is about those).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import z3

from vmaflags.model import arena, concrete, rules, symbolic
from vmaflags.model.backend import PY, Z3
from vmaflags.model.eras import Era
from vmaflags.model.observe import Vma, observe
from vmaflags.model.state import State, cells, empty_state
from vmaflags.model.syscalls import (MADV_HUGEPAGE, MADV_NOHUGEPAGE, PAGE, PMD_PAGES,
                                     Khugepaged, Syscall, UffdClose, UffdCopy)

from . import engine as E
from .protocols import PROTOCOLS, Protocol, Restore
from .restore import (CRIU_SHAPE, Search, _arena, _failed, _least_of_bound, _readable, _steps,
                      _steps_run, dump_dims, dump_state, fresh_process)
from .verdict import Verdict, coverage, minimal_model, replay, sat_or_vacuous, shape_text, vma_text


@dataclass(frozen=True)
class BackingRun:
    dump: State
    dump_ok: Any
    run: E.Run  # the protocol's steps, then its lazy phase
    lazy_from: int  # index of the first step of the lazy phase (= len(run.log) if none)


@lru_cache(maxsize=None)
def backing_run(era: Era, protocol: str, shp: tuple[int, ...]) -> BackingRun:
    """The protocol's symbolic run over a backed dump, with its lazy phase (shared by the
    three theorems)."""
    dump, dump_ok = dump_state(era, shp, backed=True)
    p = PROTOCOLS[protocol]
    written = dump
    if p.lazy and p.parent:  # only the parent's pages: pop and pre-dumped
        written = dump._replace(blocks=tuple(blk._replace(cells=tuple(
            c._replace(pop=Z3.and_(c.pop, z3.Bool(E.fresh("parent")))) for c in blk.cells))
            for blk in dump.blocks))
    run = E.Run(era, [fresh_process(dump)])
    p.steps(Restore(run, written, p))
    lazy_from = len(run.log)
    if p.lazy:
        lazy_phase(run, dump)
    return BackingRun(dump, dump_ok, run, lazy_from)


def lazy_phase(run: E.Run, dump: State) -> None:
    """CRIU's lazy-pages daemon once the restore is done (criu/uffd.c, v3.5+): UFFDIO_COPY of
    every dumped page that is not there yet (handle_requests -> xfer_pages -> uffd_copy; an
    EEXIST is uffd_recoverable_error), then close() of the userfaultfd (lpi_fini) -- as
    conformance/vm/criu.py lazy_phase does on one dump, cell by cell."""
    for i, c in enumerate(cells(dump)):
        there = cells(run.last)[i].pop
        run.do(UffdCopy(0, 0), (c.start, c.end), Z3.and_(c.mapped, c.pop, Z3.not_(there)))
    run.do(UffdClose(), ())


# --- the claims, for both backends: the solver's run and the interpreter's replay -------------

def thp_lost(B: Any, era: Era, dump: State, st: State) -> Any:
    """A PMD that is a THP in the dump is not one in `st`."""
    return B.or_(*(B.and_(d.thp, B.not_(e.thp)) for d, e in zip(dump.blocks, st.blocks)))


def has_thp(B: Any, era: Era, dump: State) -> Any:
    return B.or_(*(blk.thp for blk in dump.blocks))


def scanned(B: Any, era: Era, st: State) -> Any:
    """The mm is on khugepaged's list (MMF_VM_HUGEPAGE) and khugepaged scans a PMD of it that
    holds a page: inside one VMA that thp_vma_allowable(KHUGEPAGED) allows (flags, prctl,
    sysfs, an anon_vma, an aligned PMD: arena.khugepaged_eligible).  Without such a PMD the
    list changes nothing a restore could be asked to keep."""
    cs = cells(st)
    views, first = arena.vma_views(B, cs), arena.block_first(st)
    return B.and_(st.mm.registered, B.or_(*(
        B.and_(arena.in_one_vma(B, blk.cells),
               arena.khugepaged_eligible(B, era, blk.cells[0], views[first[k]], st.mm,
                                         st.sysfs),
               B.or_(*(c.pop for c in blk.cells)))
        for k, blk in enumerate(st.blocks))))


def unlisted(B: Any, era: Era, dump: State, st: State) -> Any:
    """The dumped mm is on khugepaged's list with a PMD to scan, `st`'s mm is not."""
    return B.and_(scanned(B, era, dump), B.not_(st.mm.registered))


def disabled_pmd(B: Any, era: Era, dump: State, k: int) -> Any:
    """PMD k of the dump holds a VMA that is THP-disabled there: nh, or a prctl mode that
    disables it (rules.vma_thp_disabled, as the page fault and khugepaged ask)."""
    return B.or_(*(B.and_(c.mapped, rules.vma_thp_disabled(B, era, c.flags, dump.mm, False))
                   for c in dump.blocks[k].cells))


def has_disabled_pmd(B: Any, era: Era, dump: State) -> Any:
    return B.or_(*(B.and_(disabled_pmd(B, era, dump, k), B.not_(blk.thp))
                   for k, blk in enumerate(dump.blocks)))


def new_thp(B: Any, era: Era, dump: State, st: State) -> Any:
    """A PMD that is THP-disabled and not a THP in the dump is a THP in `st`."""
    return B.or_(*(B.and_(disabled_pmd(B, era, dump, k), B.not_(d.thp), e.thp)
                   for k, (d, e) in enumerate(zip(dump.blocks, st.blocks))))


# How a replayed violation is told: (era, dumped state, violating state, its restore step
# number, the restore's steps) -> the note (which PMD, what happened to it) and what refutes
# the claim in the replayed states (Verdict.difference).
Describe = Callable[[Era, State, State, int, list[Syscall]], tuple[str, list[str]]]


def _pmd(k: int) -> str:
    return f"PMD {k} ({k * PMD_PAGES * PAGE:#x}-{(k + 1) * PMD_PAGES * PAGE:#x})"


def _vma_at(era: Era, st: State, k: int) -> str:
    """The VMA over PMD k as smaps shows it, with its AnonHugePages."""
    v: Vma | None = next((v for v in observe(era, st, 0).vmas
                          if v.start <= k * PMD_PAGES * PAGE < v.end), None)
    return "no VMA" if v is None else f"{vma_text(v)} AnonHugePages {v.anon_huge_kb} kB"


def _lost_thp(era: Era, dump: State, st: State, n: int, steps: list[Syscall]
              ) -> tuple[str, list[str]]:
    k = next(k for k, (d, e) in enumerate(zip(dump.blocks, st.blocks)) if d.thp and not e.thp)
    now = "4 KiB pages" if all(c.pop for c in st.blocks[k].cells) else "not a THP"
    return (f"PMD {k} is a THP in the dump, {now} after the restore",
            [f"{_pmd(k)}: dumped {_vma_at(era, dump, k)}; restored {_vma_at(era, st, k)}"])


def _unlisted(era: Era, dump: State, st: State, n: int, steps: list[Syscall]
              ) -> tuple[str, list[str]]:
    scan = [concrete.run_syscall(era, x, Khugepaged()).state for x in (dump, st)]
    lost = [k for k, (d, e) in enumerate(zip(*(x.blocks for x in scan))) if d.thp and not e.thp]
    why = ["the dumped mm is on khugepaged's list (MMF_VM_HUGEPAGE), the restored one not"]
    if lost:
        k = lost[0]
        why.append(f"after a khugepaged scan, {_pmd(k)}: dumped {_vma_at(era, scan[0], k)}; "
                   f"restored {_vma_at(era, scan[1], k)}")
    return "the restored mm is not on khugepaged's list after the restore", why


def _new_thp(era: Era, dump: State, st: State, n: int, steps: list[Syscall]
             ) -> tuple[str, list[str]]:
    k = next(k for k, (d, e) in enumerate(zip(dump.blocks, st.blocks))
             if disabled_pmd(PY, era, dump, k) and not d.thp and e.thp)
    why = "nh" if any(c.mapped and c.nh for c in dump.blocks[k].cells) else "THP-disabled"
    return (f"PMD {k} ({why} in the dump) is a THP from restore step {n}",
            [f"{_pmd(k)} is a THP after restore step {n} ({steps[n - 1].text()}): "
             f"{_vma_at(era, st, k)}; dumped {_vma_at(era, dump, k)}"])


@dataclass(frozen=True)
class Claim:
    premise: str  # a coverage dimension: some dump has it and some has not
    has: Callable[[Any, Era, State], Any]
    violated: Callable[[Any, Era, State, State], Any]  # (dump, a state of the restore)
    every_point: bool  # at every point of the restore, else after its lazy phase
    describe: Describe
    observe: tuple[Syscall, ...] = ()  # appended to both traces: what makes it visible


CLAIMS = {
    "criu-thp-kept": Claim("dumped THP", has_thp, thp_lost, False, _lost_thp),
    "criu-khugepaged-registered": Claim("listed with a PMD to scan", scanned, unlisted, False,
                                        _unlisted, (Khugepaged(),)),
    "criu-no-new-thp-in-nh": Claim("THP-disabled PMD", has_disabled_pmd, new_thp, True,
                                   _new_thp),
}


def criu_thp_kept(era: Era, protocol: str, shp: tuple[int, ...] = CRIU_SHAPE) -> Verdict:
    """For every dump whose restore completes: every PMD that is a THP in the dump is one after
    the restore and its lazy phase."""
    return _check(era, protocol, shp, "criu-thp-kept")


def criu_khugepaged_registered(era: Era, protocol: str, shp: tuple[int, ...] = CRIU_SHAPE
                               ) -> Verdict:
    """For every dump whose restore completes: if the dumped mm is on khugepaged's list with a
    PMD to scan (`scanned`), the restored mm is on it after the restore and its lazy phase."""
    return _check(era, protocol, shp, "criu-khugepaged-registered")


def criu_no_new_thp_in_nh(era: Era, protocol: str, shp: tuple[int, ...] = CRIU_SHAPE
                          ) -> Verdict:
    """For every dump whose restore completes: no PMD that the dump has THP-disabled (nh, or
    the prctl) and not as a THP is a THP at any point of the restore or its lazy phase."""
    return _check(era, protocol, shp, "criu-no-new-thp-in-nh")


@lru_cache(maxsize=None)
def _assumptions(era: Era, protocol: str, shp: tuple[int, ...]
                 ) -> tuple[list[Any], dict[str, str], list[str], tuple[str, list[str]]]:
    """What the three theorems assume of a run (every dump whose restore completes) and what
    that quantifies over, computed once per run."""
    b = backing_run(era, protocol, shp)
    facts = [b.dump_ok, *b.run.side, *(z3.Not(f) for f in _failed(b.run))]
    sat_or_vacuous("dumps whose restore completes", *facts)
    q, vac = coverage(facts, dump_dims(era, b.dump))
    return facts, q, vac, _steps_run(facts, b.run)


def _check(era: Era, protocol: str, shp: tuple[int, ...], name: str) -> Verdict:
    claim = CLAIMS[name]
    b = backing_run(era, protocol, shp)
    dump, run = b.dump, b.run
    facts, q_dump, vac_dump, (steps_run, dead) = _assumptions(era, protocol, shp)
    q_premise, vac_premise = coverage(facts, [
        (claim.premise, Z3.ite(claim.has(Z3, era, dump), 1, 0), [0, 1])])
    q = {**q_dump, **q_premise, "restore steps": steps_run}
    vac = vac_dump + vac_premise + dead
    bound = shape_text(shp)
    r, _ = E.check(*facts, z3.Or(*_violations(era, claim, b)))
    if r == z3.unsat:
        return Verdict("proved", "bounded", bound, vacuity=vac, quantified=q)
    if r != z3.sat:
        return Verdict("unknown", "bounded", bound, vacuity=vac, quantified=q, note=str(r))
    # The least counterexample of the bound, one PMD first (_least_of_bound).
    (b, builder, buildable), m, least = _least_of_bound(_search(era, protocol, claim), shp,
                                                       one_pmd_first=True)
    if buildable:
        least = "of the dumps the dump script builds, " + least
    sysfs, n = E.val(m, b.dump.sysfs), _arena(b.dump, m)
    dump_steps, steps = builder.trace(m), b.run.trace(m)
    observe_ = list(claim.observe)
    cex = (replay(era, dump_steps + observe_, sysfs, n, "dump", observer=len(observe_))
           + replay(era, steps + observe_, sysfs, n, "restore", observer=len(observe_)))
    told = _replayed(era, claim, dump_steps, steps, sysfs, n, len(b.run.trace(m, b.lazy_from)))
    if told is None:
        return Verdict("unknown", "bounded", bound, cex, vac, quantified=q,
                       note="the solver's counterexample does not replay")
    note, difference = told
    return Verdict("refuted", "bounded", bound, cex, vac, quantified=q, note=note,
                   minimal=least, difference=difference)


def _violations(era: Era, claim: Claim, b: BackingRun) -> list[Any]:
    """The claim's violation at each point it is about."""
    points = b.run.states[1:] if claim.every_point else [b.run.last]
    return [claim.violated(Z3, era, b.dump, st) for st in points]


def _search(era: Era, protocol: str, claim: Claim) -> Search:
    """The counterexamples of a claim over the dumps of a shape whose restore completes, for
    restore._least_of_bound: measured as the CRIU rows are (restore._steps), with the same
    preferences, and for criu-no-new-thp-in-nh first a THP that lasts.  Only dumps the dump
    script builds (not every dump is built so: a THP in an nh VMA, say), if there are any:
    the tag says whether the facts ask for that."""
    def search(shp: tuple[int, ...], tag: Any) -> tuple:
        b = backing_run(era, protocol, shp)
        builder, built = dump_builder(era, protocol, shp)
        viol = _violations(era, claim, b)
        facts = [b.dump_ok, *b.run.side, *(z3.Not(f) for f in _failed(b.run)), z3.Or(*viol)]
        if not tag:  # True from one PMD holds for the bound
            tag = E.check(*facts, built)[0] == z3.sat
        if tag:
            facts.append(built)
        guards = [True if g is None else g for _, _, g in b.run.log]
        prefer = ([z3.If(viol[-1], 0, 1)] if claim.every_point else []) + _readable(b.dump)
        return (facts, _steps(b.dump, guards, 2 * len(claim.observe)), prefer,
                (b, builder, tag), tag)
    return search


def _build(r: Restore) -> None:
    """The dumped process, as the counterexamples' "dump" script builds it: each VMA mapped
    and advised, its present pages written, then its prctl mode (so that in def-flags the
    VMAs do not get nh from def_flags)."""
    for i, c in enumerate(r.cs):
        r.mmap(i)
        r.madvise(i, MADV_HUGEPAGE, c.hg)
        r.madvise(i, MADV_NOHUGEPAGE, c.nh)
    r.populate()
    mm = r.dump.mm
    r.prctl(1, rules.PR_THP_DISABLE_EXCEPT_ADVISED, when=mm.except_adv)
    r.prctl(1, 0, when=Z3.and_(Z3.not_(mm.except_adv), Z3.or_(mm.disable, mm.def_nh)))


@lru_cache(maxsize=None)
def dump_builder(era: Era, protocol: str, shp: tuple[int, ...]) -> tuple[E.Run, Any]:
    """The dump script's symbolic run over the backed dump, and the condition that it builds
    exactly that dump: a counterexample that meets it replays from a script (not every dump
    does: a THP in an nh VMA, say, needs another order of steps)."""
    dump = backing_run(era, protocol, shp).dump
    run = E.Run(era, [fresh_process(dump)])
    _build(Restore(run, dump, Protocol("dump", "the dumped process", False, False, _build)))
    same = [_eq(x, y) for x, y in zip(symbolic.values(dump).values(),
                                      symbolic.values(run.last).values())]
    return run, z3.And(*same, *(z3.Not(f) for f in _failed(run)))


def _eq(a: Any, b: Any) -> Any:
    return a == b if z3.is_expr(a) or z3.is_expr(b) else z3.BoolVal(a == b)


def _states(era: Era, steps: list[Syscall], sysfs: int, blocks: int) -> list[State]:
    st = empty_state(blocks, sysfs)
    out = [st]
    for sc in steps:
        st = concrete.run_syscall(era, st, sc).state
        out.append(st)
    return out


def _replayed(era: Era, claim: Claim, dump_steps: list[Syscall], steps: list[Syscall],
              sysfs: int, blocks: int, lazy_from: int) -> tuple[str, list[str]] | None:
    """The violation, as the interpreter shows it on the two scripts (None if it does not):
    the claim's own account of it (which PMD, after which restore step) and what refutes."""
    dump = _states(era, dump_steps, sysfs, blocks)[-1]
    states = _states(era, steps, sysfs, blocks)[1:]
    points = list(enumerate(states, 1)) if claim.every_point else [(len(states),
                                                                      states[-1])]
    hit = next(((n, st) for n, st in points if claim.violated(PY, era, dump, st)), None)
    if hit is None:
        return None
    note, difference = claim.describe(era, dump, hit[1], hit[0], steps)
    phase = " and its lazy phase" if lazy_from < len(steps) and not claim.every_point else ""
    return note + phase, difference
