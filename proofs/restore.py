"""The two CRIU theorems: a restore gives back the dumped process, and leaves no window in
which a PMD still missing lazy pages can become a THP.

Both run a protocol (protocols.py) symbolically over every dump of an arena shape.  A restore
in which some syscall fails is aborted (CRIU stops at the first failure), and is reported as
such: criu-restore-original's verdict is then `aborted`, with the failing trace, and the
points of a restore after a failed step are not examined by no-collapse-window.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import z3

from vmaflags.conformance.driver import parse_line
from vmaflags.model import arena, concrete, rules
from vmaflags.model import step as S
from vmaflags.model import symbolic
from vmaflags.model.backend import Z3
from vmaflags.model.eras import Era
from vmaflags.model.observe import observe, vma_fact
from vmaflags.model.state import Mm, State, cells, empty_state, hole
from vmaflags.model.syscalls import (MADV_COLLAPSE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, PAGE,
                                     PMD_PAGES, Khugepaged, Madvise, Mmap, PrctlSet, Syscall,
                                     Touch, parse_step)

from . import engine as E
from .protocols import PROTOCOLS, Restore, pr_get
from .states import era_mm, era_modes, sane, vm_flags
from .verdict import (Verdict, count, coverage, final, minimal_model, observed, replay,
                      sat_or_vacuous, shape_text, vma_difference)

CRIU_SHAPE = (2, 2)


def dump_state(era: Era, shp: tuple[int, ...], backed: bool = False) -> tuple[State, Any]:
    """A dumped process: any layout of VMAs over the cells, any hg/nh per VMA, any prctl mode
    of the era, any sysfs mode; no uffd.  Adjacent VMAs differ in hg/nh (VMAs with equal flags
    that did not merge differ only in anon_vma, which no restore can reproduce: not part of
    the claim).  No THP, not on khugepaged's list, and `pop`: the pages written back before
    the lazy phase (protocols.Restore.written) -- unless `backed` (backing.py): THPs wherever
    a PMD lies inside one VMA, any khugepaged registration, and `pop` the pages present."""
    st = symbolic.state(shp, "dump")
    cs = cells(st)
    c = [sane(st), era_mm(era, st.mm), *([] if backed else [z3.Not(st.mm.registered)])]
    for i, x in enumerate(cs):
        c += [z3.Not(x.um), z3.Not(x.uw)]
        if i:
            p = cs[i - 1]
            c.append(z3.Implies(z3.And(x.mapped, p.mapped, x.brk),
                                z3.Or(x.hg != p.hg, x.nh != p.nh)))
    c += [z3.Implies(blk.thp, arena.in_one_vma(Z3, blk.cells)) if backed else z3.Not(blk.thp)
          for blk in st.blocks]
    return st, z3.And(*c)


def fresh_process(dump: State) -> State:
    """The restoring process's arena before its first step: nothing mapped, no prctl, the
    dump's cell bounds and sysfs mode."""
    return State(tuple(blk._replace(thp=Z3.F, ptable=Z3.F, cow=Z3.F, cells=tuple(
        hole(c.start, c.end) for c in blk.cells)) for blk in dump.blocks),
        Mm(Z3.F, Z3.F, Z3.F, Z3.F), dump.sysfs, 1)


@lru_cache(maxsize=None)
def restore_run(era: Era, protocol: str, shp: tuple[int, ...]
                ) -> tuple[State, Any, E.Run, Restore]:
    """The protocol's symbolic run over a symbolic dump (shared by the two CRIU theorems)."""
    dump, dump_ok = dump_state(era, shp)
    run = E.Run(era, [fresh_process(dump)])
    r = Restore(run, dump, PROTOCOLS[protocol])
    r.protocol.steps(r)
    return dump, dump_ok, run, r


def dump_dims(era: Era, dump: State) -> list[tuple[str, Any, list[int]]]:
    c = cells(dump)[0]
    return [("sysfs", dump.sysfs, [0, 1, 2]),
            ("saved PR_GET", pr_get(era, dump), era_modes(era)),
            ("vm_flags", Z3.ite(c.mapped, vm_flags(c), -1), [0, 1, 2])]


def _failed(run: E.Run) -> list[Any]:
    """Per restore step: it ran and failed (guarded-off steps return 0)."""
    return [Z3.not_(r == 0) if not isinstance(r, int) else r != 0 for r in run.rets]


def _steps_run(facts: list[Any], run: E.Run) -> tuple[str, list[str]]:
    """Each step of the protocol runs for some dump (a guard that never holds is dead)."""
    guards = [e[2] for e in run.log]
    runs = E.satisfiable_each(facts, [True if g is None else g for g in guards])
    dead = [n for n, ok in enumerate(runs, 1) if not ok]
    return (f"{len(guards) - len(dead)}/{len(guards)}",
            [f"restore step {n} never runs" for n in dead])


# --- what criu-restore-original compares ------------------------------------------------------

def _per_cell(pred: Callable[..., Any]) -> Callable[[Era, State, State], Any]:
    def compare(era: Era, dump: State, end: State) -> Any:
        dc, ec = cells(dump), cells(end)
        dv, ev = arena.vma_views(Z3, dc), arena.vma_views(Z3, ec)
        return z3.And(*(pred(d, e, x, y) for d, e, x, y in zip(dc, ec, dv, ev)))
    return compare


def _eligible(era: Era, dump: State, end: State) -> Any:
    """smaps THPeligible of each dumped VMA (5.0+)."""
    out = []
    for d, e, x, y in zip(cells(dump), cells(end), arena.vma_views(Z3, cells(dump)),
                          arena.vma_views(Z3, cells(end))):
        fd, fe = vma_fact(Z3, era, dump, d, x).eligible, vma_fact(Z3, era, end, e, y).eligible
        if fd is not None:
            out.append(z3.Implies(d.mapped, fd == fe))
    return z3.And(*out)


# Each compared observation, as a claim about the dump and the restored state.  With the
# kernel's rules THPeligible follows from hg/nh, the bounds and PR_GET (which tells every MMF
# state apart); it is compared because it is what smaps shows, and a PR_GET that hid a mode
# would leave it as the only witness (tests/test_proofs.py).
OBSERVATIONS: dict[str, Callable[[Era, State, State], Any]] = {
    "mapped": _per_cell(lambda d, e, x, y: d.mapped == e.mapped),
    "hg": _per_cell(lambda d, e, x, y: d.hg == e.hg),
    "nh": _per_cell(lambda d, e, x, y: d.nh == e.nh),
    "vma": _per_cell(lambda d, e, x, y: z3.Implies(d.mapped, z3.And(x.vstart == y.vstart,
                                                                     x.vend == y.vend))),
    "get": lambda era, dump, end: pr_get(era, dump) == pr_get(era, end),
    "eligible": _eligible,
}


def _observed(line: str, names: tuple[str, ...]) -> tuple:
    """The compared observations, from a replayed observation line."""
    _, obs = parse_line("0 " + line)

    def ranges(pick: Callable[[Any], bool]) -> tuple:
        out: list[list[int]] = []
        for v in obs.vmas:
            if pick(v):
                if out and out[-1][1] == v.start:
                    out[-1][1] = v.end
                else:
                    out.append([v.start, v.end])
        return tuple(map(tuple, out))

    has = lambda flag: (lambda v: flag in v.flags.split("+"))  # noqa: E731
    got = {"mapped": lambda: ranges(lambda v: True), "hg": lambda: ranges(has("hg")),
           "nh": lambda: ranges(has("nh")), "vma": lambda: tuple((v.start, v.end)
                                                                for v in obs.vmas),
           "get": lambda: obs.get,
           "eligible": lambda: tuple((v.start, v.end, v.eligible) for v in obs.vmas)}
    return tuple(got[n]() for n in names)


def _dump_script(era: Era, dump: State, m: z3.ModelRef) -> list[Syscall]:
    """A script that builds the dumped process (for replay on a kernel): its VMAs, their
    advice, its present pages, then its prctl mode.  `_dump_measures` counts its steps."""
    ev = lambda x: E.val(m, x)  # noqa: E731
    out: list[Syscall] = []
    cs = cells(dump)
    for c, v in zip(cs, arena.vma_views(Z3, cs)):
        if ev(c.mapped) and not ev(v.same):
            a, b = ev(v.vstart) * PAGE, ev(v.vend) * PAGE
            out.append(Mmap(a, b - a))
            if ev(c.hg):
                out.append(Madvise(a, b - a, MADV_HUGEPAGE))
            if ev(c.nh):
                out.append(Madvise(a, b - a, MADV_NOHUGEPAGE))
    for c in cs:
        if ev(c.mapped) and ev(c.pop):
            out.append(Touch(ev(c.start) * PAGE, (ev(c.end) - ev(c.start)) * PAGE))
    # last, so that in def-flags the VMAs above do not pick up nh from def_flags
    if ev(dump.mm.except_adv):
        out.append(PrctlSet(1, rules.PR_THP_DISABLE_EXCEPT_ADVISED))
    elif ev(dump.mm.disable) or ev(dump.mm.def_nh):
        out.append(PrctlSet(1, 0))
    return out


# --- the least counterexample -------------------------------------------------------------

def _dump_measures(dump: State) -> tuple[Any, list[tuple[str, Any]]]:
    """The number of steps of `_dump_script`, and what a smaller dump has fewer of: VMAs,
    advised VMAs, populated cells, prctl calls, PMDs (the arena it needs)."""
    cs = cells(dump)
    starts = [z3.And(c.mapped, z3.Not(v.same)) for c, v in zip(cs, arena.vma_views(Z3, cs))]
    pop = [z3.And(c.mapped, c.pop) for c in cs]
    prctl = count([z3.Or(dump.mm.except_adv, dump.mm.disable, dump.mm.def_nh)])
    steps = (count(starts) + count([z3.And(s, c.hg) for s, c in zip(starts, cs)])
             + count([z3.And(s, c.nh) for s, c in zip(starts, cs)]) + count(pop) + prctl)
    used = [z3.Or(*(c.mapped for blk in dump.blocks[k:] for c in blk.cells))
            for k in range(1, len(dump.blocks))]
    return steps, [("VMAs", count(starts)),
                   ("advised VMAs", count([z3.And(s, z3.Or(c.hg, c.nh))
                                           for s, c in zip(starts, cs)])),
                   ("populated cells", count(pop)), ("prctl calls", prctl),
                   ("PMDs", 1 + count(used))]


def _readable(dump: State) -> list[Any]:
    """Among equally small dumps: sysfs `madvise` (the usual default, so a replay needs no
    sysfs write), cell bounds on 1 MiB, then cell by cell mapped from the arena's start,
    the least flags and pages, the least mm bits (each a weighted sum: one objective)."""
    cs = cells(dump)

    def first(bits: list[Any]) -> Any:  # the earlier a true bit, the heavier
        return z3.Sum(*(z3.If(b, 2 ** (len(bits) - 1 - i), 0) for i, b in enumerate(bits)))

    return [z3.If(dump.sysfs == 1, 0, 1),
            count([c.start % (PMD_PAGES // 2) != 0 for c in cs]),
            first([z3.Not(c.mapped) for c in cs]),
            first([b for c in cs for b in (c.hg, c.nh, c.pop)]),
            first(list(dump.mm))]


Search = Callable[[tuple[int, ...], Any], tuple[list[Any], list[tuple[str, Any]], list[Any],
                                                Any, Any]]


def _least_of_bound(search: Search, shp: tuple[int, ...], one_pmd_first: bool = False
                    ) -> tuple[Any, z3.ModelRef, str]:
    """The least counterexample of the bound `shp`.  `search(shape)` gives the facts of a
    counterexample, the measures to minimise in order, readability preferences, a context
    (the symbolic run) and a tag saying which counterexamples the facts admit (it may take
    the tag of one PMD as a hint: what one PMD admits, its bound does).  With
    `one_pmd_first`, one PMD is tried first, where the formula is a fraction of the size
    (it pays for no-collapse-window's, quantified over the restore points): a trace there is
    one of the bound too, so if the bound admits the same kind (same tag) and none of it is
    smaller by the measures (one check), it is the least of the bound."""
    if one_pmd_first and len(shp) > 1:
        facts, measures, prefer, ctx, tag = search(shp[:1], None)
        if E.check(*facts)[0] == z3.sat:
            m, least = minimal_model(facts, measures, prefer)
            values = [E.val(m, t) for _, t in measures]
            bfacts, bmeasures, _, _, btag = search(shp, tag)
            if btag == tag and E.check(*bfacts, _lex_less([t for _, t in bmeasures], values)
                                        )[0] == z3.unsat:
                return ctx, m, least
    facts, measures, prefer, ctx, _ = search(shp, None)
    m, least = minimal_model(facts, measures, prefer)
    return ctx, m, least


def _lex_less(terms: list[Any], values: list[int]) -> Any:
    """The terms, in order, are lexicographically less than the values."""
    return z3.Or(*(z3.And(*(t == v for t, v in zip(terms[:i], values[:i])),
                          terms[i] < values[i]) for i in range(len(terms))))


def _steps(dump: State, restore_steps: list[Any], extra: Any = 0) -> list[tuple[str, Any]]:
    """The measures of a CRIU counterexample: its steps (the dump script's, the restore's
    that run, `extra`), then the dump's (_dump_measures)."""
    dump_steps, measures = _dump_measures(dump)
    return [("steps", dump_steps + count(restore_steps) + extra), *measures]


def _arena(dump: State, m: z3.ModelRef) -> int:
    """The PMDs the counterexample needs: up to the last one with a dumped VMA."""
    return max([1] + [k + 1 for k, blk in enumerate(dump.blocks)
                      if any(E.val(m, c.mapped) for c in blk.cells)])


def _criu_cex(era: Era, dump: State, run: E.Run, m: z3.ModelRef, upto: int | None = None,
              extra: list[Syscall] = ()) -> list[dict]:
    """The dumped process and the restore (up to step `upto`, then the adversary's `extra`
    steps), replayed in the arena the dump needs."""
    sysfs, blocks = E.val(m, dump.sysfs), _arena(dump, m)
    return (replay(era, _dump_script(era, dump, m), sysfs, blocks, "dump")
            + replay(era, run.trace(m, upto) + list(extra), sysfs, blocks, "restore",
                     adversary=len(extra)))


def _final(era: Era, steps: list[Syscall], sysfs: int, blocks: int) -> str:
    """The observation line after `steps` (of a fresh process if there are none)."""
    st = empty_state(blocks, sysfs)
    ret = 0
    for sc in steps:
        res = concrete.run_syscall(era, st, sc)
        st, ret = res.state, res.ret
    return observe(era, st, ret).text()


def _restored_difference(era: Era, cex: list[dict], sysfs: int, blocks: int,
                         observations: tuple[str, ...]) -> list[str]:
    """What the replayed restore gives back differently from the replayed dump, in the
    compared observations (uffd flags are not compared: the lazy phase is still to come)."""
    dumped = final(era, cex, "dump", sysfs, blocks)
    restored = final(era, cex, "restore", sysfs, blocks)
    out = vma_difference(("dumped", "restored"), dumped, restored, uffd=False,
                         eligible="eligible" in observations)
    if "get" in observations and dumped.get != restored.get:
        out.append(f"PR_GET: dumped {dumped.get}, restored {restored.get}")
    if not any(s["process"] == "restore" for s in cex):
        out.append("(the restore makes no syscall: the restored process is a fresh one)")
    return out


# The unbounded arguments (README.md): the bounded run of the row, the lemmas of restore-frame
# and hg-nh-exclusive in the same era (`vmaflags prove` runs them too, and reports the row as
# bounded if one of them is not proved), and how they compose.
PER_VMA = [
    "bounded [2x2]: every dump of up to 4 VMAs restores, without a failed step",
    "restore-frame L1-L3: a VMA's flags change only by steps on its range, per cell, and "
    "the mm only by the prctl steps, so each VMA of any dump ends as one alone does",
    "restore-frame L8: a step fails only for a cell of its range, so no step fails",
    "restore-frame L4 and hg-nh-exclusive (sane is inductive: one VMA, one set of flags): "
    "dumped neighbours differ in hg/nh, so their boundary comes back; none appears inside",
    "restore-frame R3: equal hg/nh, bounds and PR_GET give equal THPeligible",
]
PER_PMD = [
    "bounded [2x2]: at every point, every PMD with lazy pages is not a THP and either not "
    "in one VMA, THP-disabled (vma_thp_disabled), without a page table, or in a "
    "userfaultfd-armed VMA with a hole",
    "restore-frame R1, R2: such a PMD collapses neither by khugepaged nor by MADV_COLLAPSE, "
    "whatever its anon_vma and the sysfs mode",
    "restore-frame L1-L7: a PMD's cells, page table and THP change only by steps on ranges "
    "that meet it, per cell, and the mm only by the prctl steps, so each PMD of any dump "
    "goes through the states a PMD of the bounded arena does",
]


# --- criu-restore-original --------------------------------------------------------------------

def criu_restore_original(era: Era, protocol: str, shp: tuple[int, ...] = CRIU_SHAPE,
                          observations: tuple[str, ...] = tuple(OBSERVATIONS)) -> Verdict:
    """For every dump: every syscall of the restore succeeds, and afterwards each compared
    observation (OBSERVATIONS) equals the dump's."""
    dump, dump_ok, run, _ = restore_run(era, protocol, shp)
    facts = [dump_ok, *run.side]
    sat_or_vacuous("dumps", *facts)
    q, vac = coverage(facts, dump_dims(era, dump))
    q["restore steps"], dead = _steps_run(facts, run)
    vac += dead
    bound = shape_text(shp)
    same = z3.And(*(OBSERVATIONS[n](era, dump, run.last) for n in observations))
    failed = _failed(run)
    r, _ = E.check(*facts, z3.Or(*failed))
    if r == z3.sat:
        (cdump, crun, cfailed, _), m, least = _least_of_bound(
            _restore_search(era, protocol, observations, aborted=True), shp)
        k = next(n for n, f in enumerate(cfailed) if E.val(m, f))
        cex = _criu_cex(era, cdump, crun, m, upto=k + 1)
        step = [d for d in cex if d["process"] == "restore"][-1]
        ret = step["observation"].split()[0][4:]
        if ret == "0":
            return Verdict("unknown", "bounded", bound, cex, vac, quantified=q,
                           note="the failing restore step does not fail when replayed")
        rest, _ = E.check(*facts, z3.Not(z3.Or(*failed)), z3.Not(same))
        where = "proved" if rest == z3.unsat else "refuted" if rest == z3.sat else "unknown"
        return Verdict("aborted", "bounded", bound, cex, vac, quantified=q,
                       note=f"restore step {step['step']} ({step['syscall']}) returns "
                            f"{ret}: CRIU stops the restore; where no step fails: {where}",
                       difference=[f"restore step {step['step']}, {step['syscall']}: {ret}"],
                       minimal=least)
    r, _ = E.check(*facts, z3.Not(same))
    if r == z3.unsat:
        return Verdict("proved", "unbounded (per-VMA)", vacuity=vac, quantified=q,
                       argument=PER_VMA, cross_check=f"bounded [{bound}]: proved")
    if r != z3.sat:
        return Verdict("unknown", "bounded", bound, vacuity=vac, quantified=q, note=str(r))
    (dump, run, _, _), m, least = _least_of_bound(
        _restore_search(era, protocol, observations, aborted=False), shp)
    blocks = _arena(dump, m)
    cex = _criu_cex(era, dump, run, m)
    sysfs = E.val(m, dump.sysfs)
    if (_observed(_final(era, _dump_script(era, dump, m), sysfs, blocks), observations)
            == _observed(_final(era, run.trace(m), sysfs, blocks), observations)):
        return Verdict("unknown", "bounded", bound, cex, vac, quantified=q,
                       note="the solver's counterexample does not replay")
    differs = [n for n in observations if not E.val(m, OBSERVATIONS[n](era, dump, run.last))]
    return Verdict("refuted", "bounded", bound, cex, vac, quantified=q,
                   note="differs in " + ", ".join(differs), minimal=least,
                   difference=_restored_difference(era, cex, sysfs, blocks, observations))


def _restore_search(era: Era, protocol: str, observations: tuple[str, ...], aborted: bool
                    ) -> Search:
    """The restores that abort (the steps up to the first that fails), or that complete
    and differ in a compared observation, of the dumps of a shape (_least_of_bound)."""
    def search(shp: tuple[int, ...], _: Any) -> tuple:
        dump, dump_ok, run, _ = restore_run(era, protocol, shp)
        failed = _failed(run)
        guards = [True if g is None else g for _, _, g in run.log]
        same = z3.And(*(OBSERVATIONS[n](era, dump, run.last) for n in observations))
        if aborted:
            facts = [dump_ok, *run.side, z3.Or(*failed)]
            steps = [z3.And(g, *(z3.Not(f) for f in failed[:n]))
                     for n, g in enumerate(guards)]
        else:
            facts = [dump_ok, *run.side, z3.Not(z3.Or(*failed)), z3.Not(same)]
            steps = guards
        return facts, _steps(dump, steps), _readable(dump), (dump, run, failed, same), None
    return search


# --- no-collapse-window -----------------------------------------------------------------------

# What may turn a PMD into a THP besides the restore's own faults (a PMD that already is one
# stays one under either, so "already a THP" is part of both): one khugepaged scan, and
# MADV_COLLAPSE of the PMD (6.1+).  MADV_COLLAPSE can do all khugepaged can (it ignores sysfs
# and max_ptes_none), so khugepaged decides only the eras before 6.1.
ADVERSARIES = ("khugepaged", "collapse")


@dataclass
class Window:
    """no-collapse-window over the dumps of one arena shape: the restore's run, and an
    adversary built once on a state h that is the restore's state at point j."""

    dump: State
    run: E.Run
    rst: Restore
    facts: list[Any]  # the dumps and the run
    failed: list[Any]  # per restore step: it ran and failed
    h: State
    j: Any
    at: list[Any]  # j == n: h is the state after n steps, none of which failed
    lazy_blk: list[Any]  # per PMD: it holds lazy pages
    bad: list[Any]  # per (PMD, adversary) of `where`: the PMD with lazy pages becomes a THP
    where: list[tuple[int, str]]

    @property
    def points(self) -> list[Any]:
        return [*self.facts, self.j >= 0, self.j < len(self.run.states), *self.at]


def window(era: Era, protocol: str, shp: tuple[int, ...], adversaries: tuple[str, ...]
           ) -> Window:
    dump, dump_ok, run, rst = restore_run(era, protocol, shp)
    if not rst.protocol.lazy:
        raise ValueError(f"{protocol} is not a lazy restore")
    failed = _failed(run)
    h = symbolic.state(shp, "h")
    j = z3.Int(E.fresh("point"))
    at = [z3.Implies(j == n, z3.And(*(_eq(x, y) for x, y in zip(
        symbolic.values(h).values(), symbolic.values(st).values())),
        *(z3.Not(f) for f in failed[:n])))
        for n, st in enumerate(run.states)]
    _, scanned = S.khugepaged(Z3, era, h._replace(mm=h.mm._replace(registered=True)))
    first = arena.block_first(dump)
    lazy_blk = [z3.Or(*(rst.lazy(first[k] + i) for i in range(len(blk.cells))))
                for k, blk in enumerate(dump.blocks)]
    bad, where = [], []
    for k, blk in enumerate(h.blocks):
        made = {"khugepaged": scanned.blocks[k].thp}
        if era.madv_collapse:
            _, after = S.madvise(Z3, era, h, k * PMD_PAGES, (k + 1) * PMD_PAGES, MADV_COLLAPSE)
            made["collapse"] = after.blocks[k].thp
        for what in adversaries:
            if what in made:
                bad.append(z3.And(lazy_blk[k], made[what]))
                where.append((k, what))
    return Window(dump, run, rst, [dump_ok, *run.side], failed, h, j, at, lazy_blk, bad,
                  where)


def no_collapse_window(era: Era, protocol: str, shp: tuple[int, ...] = CRIU_SHAPE,
                       adversaries: tuple[str, ...] = ADVERSARIES) -> Verdict:
    """At every point of a lazy restore (before each step and after the last) that the
    restore reaches without a failed step: no PMD holding lazy pages (protocols.Restore.lazy:
    UFFDIO_COPY brings them after the restore) is a THP, or becomes one by a khugepaged scan
    or by MADV_COLLAPSE on it (any process may ask: process_madvise).  A THP there has
    zero-filled them, and the later UFFDIO_COPY fails with EEXIST.  khugepaged is assumed to
    have the mm on its list."""
    w = window(era, protocol, shp, adversaries)
    dump, run, rst, facts, failed = w.dump, w.run, w.rst, w.facts, w.failed
    lazy_blk, where, h = w.lazy_blk, w.where, w.h
    bound = shape_text(shp)
    sat_or_vacuous("dumps", *facts)
    q, vac = coverage(facts, dump_dims(era, dump))
    q["restore steps"], dead = _steps_run(facts, run)
    vac += dead
    # every point is examined: reached by some dump without a failed step, with lazy pages
    some_lazy = z3.Or(*lazy_blk)
    if E.check(*facts, z3.Or(*failed))[0] == z3.unsat:
        reached = len(run.states) if E.check(*facts, some_lazy)[0] == z3.sat else 0
    else:
        reached = sum(E.check(*facts, some_lazy, *(z3.Not(f) for f in failed[:n]))[0]
                      == z3.sat for n in range(len(run.states)))
    q["points"] = f"{reached}/{len(run.states)}"
    if reached < len(run.states):
        vac.append(f"only {reached} of {len(run.states)} restore points reached with lazy "
                   "pages")
    if rst.protocol.parent:
        # some dump has a PMD, inside one VMA, with both written and lazy pages
        partial = z3.Or(*(z3.And(*(d.mapped for d in blk.cells),
                                 *(z3.Not(d.brk) for d in blk.cells[1:]),
                                 z3.Or(*(d.pop for d in blk.cells)),
                                 z3.Or(*(z3.Not(d.pop) for d in blk.cells)))
                          for blk in dump.blocks))
        if E.check(*facts, partial)[0] != z3.sat:
            vac.append("no dump has a PMD with written and lazy pages")
    exist = [a for a in ADVERSARIES if a != "collapse" or era.madv_collapse]
    q["adversaries"] = f"{len({w for _, w in where})}/{len(exist)}"
    if not where:
        vac.append("no adversary exists in this era")
    r, _ = E.check(*w.points, z3.Or(*w.bad))
    if r == z3.unsat:
        # the per-PMD invariant of the unbounded argument (PER_PMD), on the same points
        broken = z3.Or(*(z3.And(lazy_blk[k], z3.Not(_safe_pmd(era, h, k)))
                         for k in range(len(h.blocks))))
        if E.check(*w.points, broken)[0] == z3.unsat:
            return Verdict("proved", "unbounded (per-PMD)", vacuity=vac, quantified=q,
                           argument=PER_PMD, cross_check=f"bounded [{bound}]: proved")
        return Verdict("proved", "bounded", bound, vacuity=vac, quantified=q,
                       note="the per-PMD invariant does not hold: no unbounded argument")
    if r != z3.sat:
        return Verdict("unknown", "bounded", bound, vacuity=vac, quantified=q, note=str(r))
    w, m, least = _least_of_bound(_window_search(era, protocol, adversaries, w), shp,
                                  one_pmd_first=True)
    # MADV_COLLAPSE first where both would: its replay on a kernel needs no khugepaged timing
    found = [x for b, x in zip(w.bad, w.where) if E.val(m, b)]
    k, what = min(found, key=lambda x: (x[1] != "collapse", x))
    point = E.val(m, w.j)
    if E.val(m, w.h.blocks[k].thp):
        what = "is a THP"
    extra = {"is a THP": [], "khugepaged": [Khugepaged()],
             "collapse": [Madvise(k * PMD_PAGES * PAGE, PMD_PAGES * PAGE, MADV_COLLAPSE)]}[what]
    blocks = _arena(w.dump, m)
    cex = _criu_cex(era, w.dump, w.run, m, upto=point, extra=extra)
    taken = len([d for d in cex if d["process"] == "restore"]) - len(extra)
    note = f"PMD {k} after restore step {taken}: {what}"
    sysfs = E.val(m, w.dump.sysfs)
    thp, assumed = _replays_thp(era, w.run.trace(m, point), sysfs, blocks, k, what)
    if not thp:
        return Verdict("unknown", "bounded", bound, cex, vac, quantified=q,
                       note=note + "; does not replay")
    return Verdict("refuted", "bounded", bound, cex, vac, quantified=q, note=note,
                   minimal=least, difference=_window_difference(
                       cex, k, taken, what, assumed, rst.protocol.parent))


def _window_search(era: Era, protocol: str, adversaries: tuple[str, ...], built: Window
                   ) -> Search:
    """The counterexamples of no-collapse-window over the dumps of a shape
    (_least_of_bound; `built`: the window of one shape, already built), measured by their
    steps (the dump's, the restore's before the point, the adversary's unless the PMD
    already is a THP), then by the dump.  Only traces whose replay shows the THP by itself
    (a collapse, or khugepaged with the mm on its list, which the theorem assumes) if there
    are any: the tag says whether the facts ask for one."""
    def search(shp: tuple[int, ...], tag: Any) -> tuple:
        w = (built if shp == tuple(len(b.cells) for b in built.dump.blocks)
             else window(era, protocol, shp, adversaries))
        h = w.h
        already = z3.Or(*(z3.And(w.lazy_blk[k], h.blocks[k].thp)
                          for k in range(len(h.blocks))))
        shown = z3.Or(already, h.mm.registered, *(b for b, (_, x) in zip(w.bad, w.where)
                                                  if x == "collapse"))
        facts = [*w.points, z3.Or(*w.bad)]
        if not tag:  # True from one PMD holds for the bound
            tag = E.check(*facts, shown)[0] == z3.sat
        if tag:
            facts.append(shown)
        guards = [True if g is None else g for _, _, g in w.run.log]
        restore = [z3.And(w.j > n, g) for n, g in enumerate(guards)]
        return (facts, _steps(w.dump, restore, z3.If(already, 0, 1)), _readable(w.dump), w,
                tag)
    return search


def _window_difference(cex: list[dict], k: int, taken: int, what: str, assumed: bool,
                       parent: bool) -> list[str]:
    """PMD k is a THP while pages of the dump in it are still to come by UFFDIO_COPY (the
    dumped VMAs there, less the pages the dump wrote, if the restore writes them back)."""
    lo, hi = k * PMD_PAGES * PAGE, (k + 1) * PMD_PAGES * PAGE
    dump = [d for d in cex if d["process"] == "dump"]
    vmas = observed(dump[-1]).vmas if dump else ()
    lazy = [(max(v.start, lo), min(v.end, hi)) for v in vmas if v.start < hi and v.end > lo]
    if parent:
        for d in dump:
            sc = parse_step(d["syscall"])
            if isinstance(sc, Touch):
                lazy = [piece for a, b in lazy for piece in ((a, min(b, sc.off)),
                                                            (max(a, sc.off + sc.len), b))
                        if piece[0] < piece[1]]
    by = {"is a THP": f"after restore step {taken}",
          "khugepaged": "by khugepaged" + (" (the mm put on its list, as the theorem "
                                           "assumes)" if assumed else ""),
          "collapse": "by MADV_COLLAPSE"}[what]
    return [f"PMD {k} ({lo:#x}-{hi:#x}) is a THP {by} while "
            + ", ".join(f"{a:#x}-{b:#x}" for a, b in lazy) + " of it await UFFDIO_COPY"]


def pmd_guards(B: Any, era: Era, st: State, k: int) -> dict[str, Any]:
    """What keeps PMD k, not a THP, from becoming one by itself or by an adversary
    (restore-frame R1, R2), by name: not in one VMA, THP-disabled there, no page table, or
    in a userfaultfd-armed VMA with a hole (report/timeline.py shows which hold)."""
    blk = st.blocks[k]
    c0 = blk.cells[0]
    return {"split": B.not_(arena.in_one_vma(B, blk.cells)),
            "disabled": rules.vma_thp_disabled(B, era, c0.flags, st.mm, True),
            "no-ptes": B.not_(blk.ptable),
            "uffd": B.and_(B.or_(c0.um, c0.uw), B.not_(B.and_(*(c.pop for c in blk.cells))))}


def _safe_pmd(era: Era, st: State, k: int) -> Any:
    """PMD k is safe: not a THP, and one of its guards holds."""
    return z3.And(z3.Not(st.blocks[k].thp), z3.Or(*pmd_guards(Z3, era, st, k).values()))


def _replays_thp(era: Era, steps: list[Syscall], sysfs: int, blocks: int, k: int,
                 what: str) -> tuple[bool, bool]:
    """The interpreter, run on the trace, shows PMD k as a THP (after the adversary, which
    for khugepaged runs with the mm on khugepaged's list, as the theorem assumes); and
    whether that needed the assumption (the trace did not put the mm on the list)."""
    st = empty_state(blocks, sysfs)
    for sc in steps:
        st = concrete.run_syscall(era, st, sc).state
    assumed = what == "khugepaged" and not st.mm.registered
    if what == "khugepaged":
        st = st._replace(mm=st.mm._replace(registered=True))
        st = concrete.run_syscall(era, st, Khugepaged()).state
    elif what == "collapse":
        sc = Madvise(k * PMD_PAGES * PAGE, PMD_PAGES * PAGE, MADV_COLLAPSE)
        st = concrete.run_syscall(era, st, sc).state
    return bool(st.blocks[k].thp), assumed


def _eq(a: Any, b: Any) -> Any:
    return a == b if z3.is_expr(a) or z3.is_expr(b) else z3.BoolVal(a == b)
