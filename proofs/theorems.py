"""The theorem catalogue: each theorem is a function of the era returning a verdict.

Every theorem drives the model's own transitions (step.transition) or rules with the Z3
backend.  "proved" means the negation is unsatisfiable over all states of the stated kind
(`induction`: an inductive invariant, or one step from every well-formed state, which covers
any number of steps; `bounded`: all states/runs up to the printed bound).  "refuted" comes with
a counterexample the solver found, shortest first, replayed through the concrete interpreter
(which must show the same violation).  Each check also proves its assumptions satisfiable and
each transition it quantifies over enabled (vacuity).
"""
from __future__ import annotations

import time
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any, Callable

import z3

from vmaflags.model import arena, rules
from vmaflags.model import step as S
from vmaflags.model import symbolic
from vmaflags.model.backend import PY, Z3
from vmaflags.model.eras import Era
from vmaflags.model.state import Flags, Mm, State, cells, hole
from vmaflags.model.syscalls import (MADV_CLR_HUGEPAGE, MADV_COLLAPSE, PMD_PAGES, Execve, Fork,
                                     Khugepaged, Madvise, Mmap, PrctlSet, Syscall)

from . import engine as E
from .protocols import PROTOCOLS, Restore


@dataclass
class Verdict:
    verdict: str  # proved | refuted | unknown
    method: str  # induction | bounded
    bound: str | None = None
    counterexample: Any = None  # list of steps (dicts) or None
    vacuity: list[str] = field(default_factory=list)  # problems found; empty = not vacuous
    note: str = ""


class Vacuous(Exception):
    pass


def _sat_or_vacuous(what: str, *facts: Any) -> None:
    r, _ = E.check(*facts)
    if r != z3.sat:
        raise Vacuous(f"{what}: unsatisfiable")


def _enabled(run: E.Run, choice: E.Choice, base: list[Any]) -> list[str]:
    """Each option of a nondeterministic step succeeds (returns 0) in some state."""
    bad = []
    for i, sc in enumerate(choice.options):
        r, _ = E.check(*base, choice.pick == i, run.rets[-1] == 0)
        if r != z3.sat:
            bad.append(f"{sc.name} never succeeds")
    return bad


def _sane(st: State) -> Any:
    """Well formed and no VMA with both hg and nh (the invariant hg-nh-exclusive proves)."""
    return z3.And(symbolic.wellformed(st),
                  *(z3.Not(z3.And(c.hg, c.nh)) for c in cells(st)))


def _era_mm(era: Era, mm: Mm) -> Any:
    """The prctl state an mm can be in, in this era: one that PR_SET_THP_DISABLE (as the model
    has it) leads to from a fresh mm, for some arguments.  The registration bit is free."""
    fresh = Mm(False, False, False, False)
    reachable = {rules.prctl_set_thp_disable(PY, era, fresh, a2, a3, 0, 0)[1]
                 for a2 in (0, 1) for a3 in (0, 1, 2)}
    return z3.Or(*(z3.And(mm.def_nh == r.def_nh, mm.disable == r.disable,
                          mm.except_adv == r.except_adv) for r in reachable))


def _state(shp: tuple[int, ...], era: Era) -> tuple[State, Any]:
    st = symbolic.state(shp)
    return st, z3.And(_sane(st), _era_mm(era, st.mm))


# --- replaying counterexamples ------------------------------------------------------------------

def replay(era: Era, steps: list[Syscall], sysfs: int, arena_blocks: int, process: str
           ) -> list[dict]:
    """Run a trace on the concrete interpreter from a fresh process; one dict per step."""
    from vmaflags.model import concrete
    from vmaflags.model.syscalls import SYSFS_MODES, Script

    script = Script(tuple(steps), arena_blocks)
    out = []
    for n, (sc, o) in enumerate(zip(steps, concrete.run(era, script, sysfs)), 1):
        d = {"process": process, "step": n, "syscall": sc.text(), "observation": o.obs.text(),
             "sysfs": SYSFS_MODES[sysfs], "arena": arena_blocks}
        if o.child is not None:
            d["child"] = o.child.text()
        out.append(d)
    return out


def _sysfs(m: z3.ModelRef, st: State) -> int:
    return E.val(m, st.sysfs)


# --- bounded search from the empty process ------------------------------------------------------

def bmc(era: Era, shp: tuple[int, ...], depth: int, bad: Callable[[E.Run], Any],
        options: Callable[[bool], list[Syscall]]) -> tuple[E.Run, z3.ModelRef] | None:
    """Shortest run from a fresh process (any sysfs mode) whose last step makes `bad` true;
    `options(last)` gives the syscalls a step may take."""
    for k in range(1, depth + 1):
        for nice in (True, False):
            st0, wf = E.empty(shp)
            run = E.Run(era, [st0])
            for j in range(k):
                run.step(options(j == k - 1))
            facts = [wf, *run.side, bad(run)]
            if nice:  # readable traces first: cell bounds on 1 MiB boundaries
                facts += [c.start % (PMD_PAGES // 2) == 0 for c in cells(st0)]
            r, m = E.check(*facts)
            if r == z3.sat:
                return run, m
    return None


def _trace(era: Era, run: E.Run, m: z3.ModelRef, shp: tuple[int, ...], process: str = "run"
           ) -> list[dict]:
    return replay(era, run.trace(m), _sysfs(m, run.states[0]), len(shp), process)


# --- the theorems -------------------------------------------------------------------------------

def hg_nh_exclusive(era: Era) -> Verdict:
    """Induction: the invariant holds in a fresh process and every step of every kind keeps it,
    in the parent and in a fork child.  Per cell, so one PMD of two cells covers any arena."""
    shp = (2,)
    st, pre = _state(shp, era)
    run = E.Run(era, [st])
    choice = run.step(E.alphabet(era))
    post, child = run.last, run.children[-1]
    _sat_or_vacuous("pre-state", pre, *run.side)
    vac = _enabled(run, choice, [pre, *run.side])
    st0, wf0 = E.empty(shp)
    base, _ = E.check(wf0, z3.Not(_sane(st0)))
    r, m = E.check(pre, *run.side, z3.Not(z3.And(_sane(post), _sane(child))))
    if base == z3.unsat and r == z3.unsat:
        return Verdict("proved", "induction", vacuity=vac)
    found = bmc(era, shp, 4, lambda rn: z3.Or(*(z3.And(c.hg, c.nh) for c in cells(rn.last))),
                lambda last: E.alphabet(era))
    if found:
        rn, mm = found
        return Verdict("refuted", "bounded", "4 steps", _trace(era, rn, mm, shp), vac)
    return Verdict("unknown", "bounded", "4 steps", None, vac,
                   "not inductive, and no violation within 4 steps")


def prctl_transparent(era: Era) -> Verdict:
    """Two runs of one sequence, the first with PR_SET_THP_DISABLE toggles added anywhere.
    Induction on the relation "same cells, same vm_flags, same def_flags" (the prctl's mm bits
    may differ); a violation is searched from a fresh process, shortest first."""
    shp = (2,)
    common = E.alphabet(era, [k for k in (type(x) for x in E.ALPHABET) if k is not PrctlSet])

    def related(a: State, b: State) -> Any:
        return z3.And(*(z3.And(x.start == y.start, x.end == y.end, E.flags_equal(x, y))
                        for x, y in zip(cells(a), cells(b))),
                      a.mm.def_nh == b.mm.def_nh)

    def product_step(ra: E.Run, rb: E.Run, toggle: Any) -> None:
        """Both runs take the same syscall, or (toggle) the first takes a prctl alone."""
        pa, pb = ra.last, rb.last
        ca = ra.step(common)
        rb.states.append(pb)
        rb.log.append(None)
        # the second run takes the first run's syscall with the same arguments
        post_b: Any = None
        for i, sc in enumerate(common):
            _, p, _ = S.transition(Z3, era, pb, sc, ca.args[i])
            post_b = p if post_b is None else E.merge(ca.pick == i, p, post_b)
        a_common, ret_common = ra.states.pop(), ra.rets.pop()
        ra.children.pop()
        ra.log.pop()
        a2 = [z3.Int(E.fresh("t")) for _ in range(4)]
        rt, pt = S.prctl_set(Z3, era, pa, *a2)
        ra.side.append(z3.And(*(z3.And(x >= 0, x <= 3) for x in a2)))
        ra.states.append(E.merge(toggle, pt, a_common))
        ra.rets.append(Z3.ite(toggle, rt, ret_common))
        ra.children.append(None)
        ra.log.append(("toggle", toggle, ca, a2))
        rb.states[-1] = E.merge(toggle, pb, post_b)

    # induction
    a, pre_a = _state(shp, era)
    b, pre_b = _state(shp, era)
    ra, rb = E.Run(era, [a]), E.Run(era, [b])
    toggle = z3.Bool(E.fresh("toggle"))
    product_step(ra, rb, toggle)
    pre = [pre_a, pre_b, related(a, b), a.sysfs == b.sysfs, *ra.side]
    _sat_or_vacuous("related pre-states", *pre)
    r, _ = E.check(*pre, z3.Not(related(ra.last, rb.last)))
    if r == z3.unsat:
        return Verdict("proved", "induction")

    # shortest violation from a fresh process
    for k in range(1, 5):
        for nice in (True, False):
            st0, wf = E.empty(shp)
            ra, rb = E.Run(era, [st0]), E.Run(era, [st0])
            toggles = [z3.Bool(E.fresh("toggle")) for _ in range(k)]
            for t in toggles:
                product_step(ra, rb, t)
            facts = [wf, *ra.side, z3.Not(z3.And(*(E.flags_equal(x, y) for x, y in
                                                    zip(cells(ra.last), cells(rb.last)))))]
            if nice:
                facts += [c.start % (PMD_PAGES // 2) == 0 for c in cells(st0)]
            r, m = E.check(*facts)
            if r == z3.sat:
                cex = _two_runs(era, ra, m, shp)
                flags = [tuple(v.split(":")[1] for v in line.split("vmas=")[1].split(",") if v)
                         for line in (next(d["observation"] for d in reversed(cex)
                                           if d["process"] == p)
                                      for p in ("with toggles", "without toggles"))]
                if flags[0] == flags[1]:
                    return Verdict("unknown", "bounded", f"{k} steps", cex,
                                   note="the solver's counterexample does not replay")
                return Verdict("refuted", "bounded", f"{k} steps", cex)
    return Verdict("unknown", "bounded", "4 steps", note="not inductive; no violation found")


def _two_runs(era: Era, ra: E.Run, m: z3.ModelRef, shp: tuple[int, ...]) -> list[dict]:
    with_t, without = [], []
    for entry in ra.log:
        _, toggle, choice, a2 = entry
        if E.val(m, toggle):
            with_t.append(PrctlSet(*(E.val(m, x) for x in a2)))
        else:
            sc = choice.concrete(m)
            with_t.append(sc)
            without.append(sc)
    sysfs = _sysfs(m, ra.states[0])
    return (replay(era, with_t, sysfs, len(shp), "with toggles")
            + replay(era, without, sysfs, len(shp), "without toggles"))


def _dump(era: Era, shp: tuple[int, ...]) -> tuple[State, Any]:
    """A dumped process: any layout of VMAs over the cells, any hg/nh per VMA, any prctl mode
    of the era, any sysfs mode; no uffd; `pop` = pre-dumped pages.  Adjacent VMAs differ in
    hg/nh (VMAs with equal flags that did not merge differ only in anon_vma, which no restore
    can reproduce: not part of the claim)."""
    st = symbolic.state(shp, "dump")
    cs = cells(st)
    c = [_sane(st), _era_mm(era, st.mm), z3.Not(st.mm.registered)]
    for i, x in enumerate(cs):
        c += [z3.Not(x.um), z3.Not(x.uw)]
        if i:
            p = cs[i - 1]
            c.append(z3.Implies(z3.And(x.mapped, p.mapped, x.brk),
                                z3.Or(x.hg != p.hg, x.nh != p.nh)))
    for blk in st.blocks:
        c.append(z3.Not(blk.thp))
    return st, z3.And(*c)


@lru_cache(maxsize=None)
def _restore(era: Era, protocol: str, shp: tuple[int, ...]) -> tuple[State, Any, E.Run]:
    """The protocol's symbolic run over a symbolic dump (shared by the two CRIU theorems)."""
    dump, dump_ok = _dump(era, shp)
    st0 = State(tuple(blk._replace(thp=Z3.F, ptable=Z3.F, cow=Z3.F, cells=tuple(
        hole(c.start, c.end) for c in blk.cells))
        for blk in dump.blocks), Mm(Z3.F, Z3.F, Z3.F, Z3.F), dump.sysfs, 1)
    run = E.Run(era, [st0])
    PROTOCOLS[protocol](Restore(run, dump))
    return dump, dump_ok, run


def _dump_script(era: Era, dump: State, m: z3.ModelRef) -> list[Syscall]:
    """A script that builds the dumped process (for replay on a kernel): its VMAs, their
    advice, the pre-dumped pages, then its prctl mode."""
    from vmaflags.model.syscalls import Touch

    ev = lambda x: E.val(m, x)  # noqa: E731
    out: list[Syscall] = []
    cs = cells(dump)
    views = arena.vma_views(Z3, cs)
    for c, v in zip(cs, views):
        if ev(c.mapped) and not ev(v.same):
            a, b = ev(v.vstart), ev(v.vend)
            out.append(Mmap(a * 4096, (b - a) * 4096))
            if ev(c.hg):
                out.append(Madvise(a * 4096, (b - a) * 4096, 14))
            if ev(c.nh):
                out.append(Madvise(a * 4096, (b - a) * 4096, 15))
    for c in cs:
        if ev(c.mapped) and ev(c.pop):
            a, b = ev(c.start), ev(c.end)
            out.append(Touch(a * 4096, (b - a) * 4096))
    # last, so that in def-flags the VMAs above do not pick up nh from def_flags
    if ev(dump.mm.except_adv):
        out.append(PrctlSet(1, 2))
    elif ev(dump.mm.disable) or ev(dump.mm.def_nh):
        out.append(PrctlSet(1, 0))
    return out


def _criu_cex(era: Era, dump: State, run: E.Run, m: z3.ModelRef, shp: tuple[int, ...],
              upto: int | None = None, extra: list[Syscall] = ()) -> list[dict]:
    sysfs = _sysfs(m, dump)
    return (replay(era, _dump_script(era, dump, m), sysfs, len(shp), "dump")
            + replay(era, run.trace(m, upto) + list(extra), sysfs, len(shp), "restore"))


CRIU_SHAPE = (2, 2)


def criu_restore_original(era: Era, protocol: str) -> Verdict:
    """After the protocol, every cell shows the dumped mapping, hg/nh and VMA boundaries, the
    process the dumped PR_GET value, and every VMA the dumped smaps THPeligible."""
    shp = CRIU_SHAPE
    dump, dump_ok, run = _restore(era, protocol, shp)
    _sat_or_vacuous("dumps", dump_ok, *run.side)
    end = run.last
    dv = arena.vma_views(Z3, cells(dump))
    ev = arena.vma_views(Z3, cells(end))
    same = [rules.thp_disable_value(Z3, era, dump.mm) == rules.thp_disable_value(Z3, era, end.mm)]
    for d, e, x, y in zip(cells(dump), cells(end), dv, ev):
        same.append(z3.And(d.mapped == e.mapped, d.hg == e.hg, d.nh == e.nh))
        same.append(z3.Implies(d.mapped, z3.And(x.vstart == y.vstart, x.vend == y.vend)))
        from vmaflags.model.observe import vma_fact
        fd, fe = vma_fact(Z3, era, dump, d, x).eligible, vma_fact(Z3, era, end, e, y).eligible
        if fd is not None:
            same.append(z3.Implies(d.mapped, fd == fe))
    bound = f"arena {len(shp)} PMDs x {shp[0]} cells (up to {sum(shp)} VMAs)"
    vac = []
    r, m = E.check(dump_ok, *run.side, z3.Not(z3.And(*same)))
    if r == z3.unsat:
        # vacuity: a dump with some hg or nh VMA and a set prctl mode exists
        rr, _ = E.check(dump_ok, *run.side, z3.Or(*(c.hg for c in cells(dump))),
                        z3.Or(*(c.nh for c in cells(dump))),
                        rules.thp_disable_value(Z3, era, dump.mm) != 0)
        if rr != z3.sat:
            vac.append("no dump with hg, nh and a prctl mode")
        return Verdict("proved", "bounded", bound, vacuity=vac)
    if r == z3.sat:
        cex = _criu_cex(era, dump, run, m, shp)
        if _final(cex, "dump") == _final(cex, "restore"):
            return Verdict("unknown", "bounded", bound, cex,
                           note="the solver's counterexample does not replay")
        return Verdict("refuted", "bounded", bound, cex)
    return Verdict("unknown", "bounded", bound, note=str(r))


def _final(cex: list[dict], process: str) -> tuple:
    """What criu-restore-original compares, from the last replayed line of `process`: PR_GET
    and per VMA its range, hg/nh and THPeligible (uffd flags and AnonHugePages left out)."""
    from vmaflags.conformance.driver import parse_line

    line = [d for d in cex if d["process"] == process][-1]["observation"]
    _, obs = parse_line("0 " + line)
    keep = lambda f: "+".join(x for x in f.split("+") if x in ("hg", "nh")) or "-"  # noqa
    return obs.get, tuple((v.start, v.end, keep(v.flags), v.eligible) for v in obs.vmas)


def no_collapse_window(era: Era, protocol: str) -> Verdict:
    """Before every step of the restore, and after the last: no PMD holding lazy pages (dumped
    but not pre-dumped: UFFDIO_COPY brings them later) is a THP, or becomes one by a khugepaged
    scan or by MADV_COLLAPSE on it (any other process may ask: process_madvise).  A THP there
    has zero-filled them, and the later UFFDIO_COPY fails with EEXIST.  khugepaged is assumed to
    have the mm on its list."""
    shp = CRIU_SHAPE
    dump, dump_ok, run = _restore(era, protocol, shp)
    # The adversary is built once, on a state h that is one of the restore's states.
    h = symbolic.state(shp, "h")
    j = z3.Int(E.fresh("point"))
    at = [z3.Implies(j == n, z3.And(*(_eq(x, y) for x, y in zip(
        symbolic.values(h).values(), symbolic.values(st).values()))))
        for n, st in enumerate(run.states)]
    _, scanned = S.khugepaged(Z3, era, h._replace(mm=h.mm._replace(registered=True)))
    bad, where = [], []
    for k, blk in enumerate(h.blocks):
        lazy = z3.Or(*(z3.And(d.mapped, z3.Not(d.pop)) for d in dump.blocks[k].cells))
        collapsed = [("is a THP", blk.thp), ("khugepaged", scanned.blocks[k].thp)]
        if era.madv_collapse:
            _, after = S.madvise(Z3, era, h, k * PMD_PAGES, (k + 1) * PMD_PAGES, MADV_COLLAPSE)
            collapsed.append(("collapse", after.blocks[k].thp))
        for what, c in collapsed:
            bad.append(z3.And(lazy, c))
            where.append((k, what))
    facts = [dump_ok, *run.side, j >= 0, j < len(run.states), *at]
    bound = f"arena {len(shp)} PMDs x {shp[0]} cells, every point of the restore"
    r, m = E.check(*facts, z3.Or(*bad))
    if r == z3.unsat:
        vac = []
        # vacuity: some dump has a PMD with both pre-dumped and lazy pages in one VMA
        partial = z3.Or(*(z3.And(*(d.mapped for d in blk.cells),
                                 *(z3.Not(d.brk) for d in blk.cells[1:]),
                                 z3.Or(*(d.pop for d in blk.cells)),
                                 z3.Or(*(z3.Not(d.pop) for d in blk.cells)))
                          for blk in dump.blocks))
        if E.check(dump_ok, *run.side, partial)[0] != z3.sat:
            vac.append("no dump has a PMD with pre-dumped and lazy pages")
        return Verdict("proved", "bounded", bound, vacuity=vac)
    if r != z3.sat:
        return Verdict("unknown", "bounded", bound, note=str(r))
    k, what = next(w for b, w in zip(bad, where)
                   if E.val(m, b))
    point = E.val(m, j)
    extra = {"is a THP": [], "khugepaged": [Khugepaged()],
             "collapse": [Madvise(k * PMD_PAGES * 4096, PMD_PAGES * 4096, MADV_COLLAPSE)]}[what]
    return Verdict("refuted", "bounded", bound,
                   _criu_cex(era, dump, run, m, shp, upto=point, extra=extra),
                   note=f"PMD {k} after restore step {point}: {what}")


def _user_elig(era: Era, f: Flags, mm: Mm, sysfs: Any, anon: Any, fits: Any) -> list[Any]:
    return [e for e in (rules.thp_vma_allowable(Z3, era, u, f, mm, sysfs, anon, fits)
                        for u in rules.USERS) if e is not None]


def _inputs(era: Era) -> tuple[Flags, Mm, Any, Any, Any, Any]:
    n = E.fresh("in")
    f = Flags(*(z3.Bool(f"{n}_{x}") for x in Flags._fields))
    mm = Mm(*(z3.Bool(f"{n}_mm_{x}") for x in Mm._fields))
    sysfs, anon, fits = z3.Int(f"{n}_sysfs"), z3.Bool(f"{n}_anon"), z3.Bool(f"{n}_fits")
    ok = z3.And(z3.Not(z3.And(f.hg, f.nh)), _era_mm(era, mm), sysfs >= 0, sysfs <= 2)
    return f, mm, sysfs, anon, fits, ok


def clr_is_neutral(era: Era) -> Verdict:
    """For every VMA and process state: MADV_CLR_HUGEPAGE leaves the hg/nh of a fresh mmap
    (rules.new_vma_flags) and, for every user, the same eligibility.  One step from every
    state: unbounded.  A violation is searched as a trace: mmap, advice, CLR."""
    f, mm, sysfs, anon, fits, ok = _inputs(era)
    cleared, _ = rules.hugepage_madvise(Z3, era, f, MADV_CLR_HUGEPAGE)
    fresh = rules.new_vma_flags(Z3, era, mm)._replace(um=f.um, uw=f.uw)
    _sat_or_vacuous("inputs", ok, z3.Or(f.hg, f.nh))
    same = z3.And(cleared.hg == fresh.hg, cleared.nh == fresh.nh,
                  *(a == b for a, b in zip(_user_elig(era, cleared, mm, sysfs, anon, fits),
                                           _user_elig(era, fresh, mm, sysfs, anon, fits))))
    r, _ = E.check(ok, z3.Not(same))
    if r == z3.unsat:
        return Verdict("proved", "induction")
    shp = (1,)

    def bad(rn: E.Run) -> Any:
        c = cells(rn.last)[0]
        fr = rules.new_vma_flags(Z3, era, rn.last.mm)
        return z3.And(c.mapped, z3.Or(c.hg != fr.hg, c.nh != fr.nh))

    clr = [sc for sc in E.alphabet(era, [Madvise]) if sc.advice == -1]
    found = bmc(era, shp, 4, bad,
                lambda last: clr if last else E.alphabet(era, [Mmap, PrctlSet, Madvise]))
    if found is None:
        return Verdict("unknown", "bounded", "4 steps", note="rule differs, no trace found")
    rn, m = found
    fr = rules.new_vma_flags(Z3, era, rn.last.mm)
    fresh_text = "hg" if E.val(m, fr.hg) else "nh" if E.val(m, fr.nh) else "-"
    return Verdict("refuted", "induction", None, _trace(era, rn, m, shp),
                   note=f"after the CLR the VMA differs from a fresh mmap now ({fresh_text})")


def no_return_to_neither(era: Era) -> Verdict:
    """One madvise step from every well-formed state never takes a mapped cell from hg or nh
    to neither (per cell: unbounded).  A violation is searched from a fresh process."""
    shp = (2,)
    st, pre = _state(shp, era)
    run = E.Run(era, [st])
    madv = E.alphabet(era, [Madvise])
    choice = run.step(madv)
    _sat_or_vacuous("pre-state", pre, *run.side)
    vac = _enabled(run, choice, [pre, *run.side])
    keep = z3.And(*(z3.Implies(z3.And(a.mapped, z3.Or(a.hg, a.nh)), z3.Or(b.hg, b.nh))
                    for a, b in zip(cells(st), cells(run.last))))
    r, _ = E.check(pre, *run.side, z3.Not(keep))
    if r == z3.unsat:
        return Verdict("proved", "induction", vacuity=vac)

    def bad(rn: E.Run) -> Any:
        return z3.Or(*(z3.And(a.mapped, z3.Or(a.hg, a.nh), b.mapped, z3.Not(b.hg),
                              z3.Not(b.nh))
                       for a, b in zip(cells(rn.states[-2]), cells(rn.last))))

    found = bmc(era, shp, 3, bad,
                lambda last: madv if last else E.alphabet(era, [Mmap, Madvise]))
    if found is None:
        return Verdict("unknown", "bounded", "3 steps", vacuity=vac)
    rn, m = found
    return Verdict("refuted", "bounded", f"{len(rn.choices)} steps", _trace(era, rn, m, shp),
                   vac)


def eligibility_monotone(era: Era) -> Verdict:
    """For every user, VMA and process state: MADV_NOHUGEPAGE, or turning a prctl disable
    mode on (PR_SET_THP_DISABLE(1, 0) and, in 6.18, (1, EXCEPT_ADVISED)), never makes a THP
    allowed that was not.  In def-flags the prctl acts on VMAs created afterwards, so there
    the comparison is on rules.new_vma_flags.  Rule level: unbounded."""
    f, mm, sysfs, anon, fits, ok = _inputs(era)
    nohuge, _ = rules.hugepage_madvise(Z3, era, f, 15)
    claims = [z3.Implies(x, y) for x, y in zip(_user_elig(era, nohuge, mm, sysfs, anon, fits),
                                                _user_elig(era, f, mm, sysfs, anon, fits))]
    for a3 in ((0, 2) if era.except_advised else (0,)):
        _, off = rules.prctl_set_thp_disable(Z3, era, mm, 0, 0, 0, 0)
        _, on = rules.prctl_set_thp_disable(Z3, era, off, 1, a3, 0, 0)
        for g_on, g_off in ((f, f), (rules.new_vma_flags(Z3, era, on),
                                     rules.new_vma_flags(Z3, era, off))):
            claims += [z3.Implies(x, y) for x, y in
                       zip(_user_elig(era, g_on, on, sysfs, anon, fits),
                           _user_elig(era, g_off, off, sysfs, anon, fits))]
    _sat_or_vacuous("inputs", ok)
    r, m = E.check(ok, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "induction")
    return Verdict("refuted", "induction", None, [_values(m, f, mm, sysfs, anon, fits)])


def _values(m: z3.ModelRef, f: Flags, mm: Mm, sysfs: Any, anon: Any, fits: Any) -> dict:
    ev = lambda x: E.val(m, x)  # noqa: E731
    return {"vmflags": {k: ev(v) for k, v in f._asdict().items()},
            "mm": {k: ev(v) for k, v in mm._asdict().items()},
            "sysfs": ev(sysfs), "anon_vma": ev(anon), "pmd_fits": ev(fits)}


def except_advised_as_madvise(era: Era) -> Verdict:
    """Rule level, every VMA: EXCEPT_ADVISED under sysfs `always` allows a THP to the page
    fault and to khugepaged exactly when no prctl under sysfs `madvise` does."""
    f, mm, sysfs, anon, fits, ok = _inputs(era)
    _, exc = rules.prctl_set_thp_disable(Z3, era, Mm(Z3.F, Z3.F, Z3.F, mm.registered),
                                         1, 2, 0, 0)
    plain = Mm(Z3.F, Z3.F, Z3.F, mm.registered)
    claims = [rules.thp_vma_allowable(Z3, era, u, f, exc, rules.SYSFS_ALWAYS, anon, fits)
              == rules.thp_vma_allowable(Z3, era, u, f, plain, rules.SYSFS_MADVISE, anon, fits)
              for u in (rules.PAGEFAULT, rules.KHUGEPAGED)]
    _sat_or_vacuous("inputs", ok, exc.except_adv)
    r, m = E.check(ok, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "induction")
    return Verdict("refuted", "induction", None, [_values(m, f, mm, sysfs, anon, fits)])


def collapse_ignores_sysfs(era: Era) -> Verdict:
    """MADV_COLLAPSE from the same state under two sysfs modes: same return value, same new
    state.  Every state of the shape, every cell-aligned range."""
    shp = (2, 2)
    st, pre = _state(shp, era)
    other = z3.Int(E.fresh("sysfs"))
    args, aok = E.arg_choices(st, Madvise(0, 0, MADV_COLLAPSE), E.fresh("c"))
    r1, p1 = S.madvise(Z3, era, st, *args, MADV_COLLAPSE)
    r2, p2 = S.madvise(Z3, era, st._replace(sysfs=other), *args, MADV_COLLAPSE)
    v1, v2 = symbolic.values(p1), symbolic.values(p2)
    same = z3.And(r1 == r2, *(_eq(v1[k], v2[k]) for k in v1 if k != "sysfs"))
    assumptions = [pre, aok, other >= 0, other <= 2, other != st.sysfs]
    _sat_or_vacuous("states", *assumptions, r1 == 0, z3.Or(*(b.thp for b in p1.blocks)))
    bound = f"arena {len(shp)} PMDs x {shp[0]} cells"
    r, m = E.check(*assumptions, z3.Not(same))
    if r == z3.unsat:
        return Verdict("proved", "bounded", bound)
    return Verdict("refuted", "bounded", bound,
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}])


def _eq(a: Any, b: Any) -> Any:
    return a == b if z3.is_expr(a) or z3.is_expr(b) else z3.BoolVal(a == b)


def disable_inherited(era: Era) -> Verdict:
    """From every state: a fork child and an exec'ed image read the same PR_GET_THP_DISABLE
    value; in the def-flags eras, while it reads 1, every VMA the new image maps has nh.
    One step from every state: unbounded."""
    shp = (1,)
    st, pre = _state(shp, era)
    get = rules.thp_disable_value(Z3, era, st.mm)
    _, _, child = S.transition(Z3, era, st, Fork(), ())
    _, img, _ = S.transition(Z3, era, st, Execve(), ())
    c0 = cells(img)[0]
    _, mapped, _ = S.transition(Z3, era, img, Mmap(0, 0), (c0.start, c0.end))
    claims = [rules.thp_disable_value(Z3, era, child.mm) == get,
              rules.thp_disable_value(Z3, era, img.mm) == get]
    if era.def_flags:
        claims.append(z3.Implies(get == 1, cells(mapped)[0].nh))
    _sat_or_vacuous("states", pre, get != 0)
    r, m = E.check(pre, z3.Not(z3.And(*claims)))
    if r == z3.unsat:
        return Verdict("proved", "induction")
    return Verdict("refuted", "induction", None,
                   [{k: E.val(m, v) for k, v in symbolic.values(st).items()}])


@dataclass(frozen=True)
class Theorem:
    id: str
    statement: str
    check: Callable[..., Verdict]
    protocols: bool = False  # checked once per restore protocol


THEOREMS: dict[str, Theorem] = {t.id: t for t in (
    Theorem("hg-nh-exclusive", "no reachable state has a VMA with both hg and nh",
            hg_nh_exclusive),
    Theorem("prctl-transparent", "PR_SET_THP_DISABLE toggles anywhere leave every vm_flags as "
            "the same sequence without them", prctl_transparent),
    Theorem("criu-restore-original", "the restore yields the dumped VmFlags, VMA boundaries, "
            "PR_GET value and per-VMA eligibility", criu_restore_original, protocols=True),
    Theorem("no-collapse-window", "no PMD still missing dumped pages can become a THP during "
            "the restore", no_collapse_window, protocols=True),
    Theorem("clr-is-neutral", "after MADV_CLR_HUGEPAGE a VMA's flags and eligibility equal a "
            "fresh mmap's", clr_is_neutral),
    Theorem("no-return-to-neither", "without CLR no madvise takes a VMA with hg or nh back to "
            "neither", no_return_to_neither),
    Theorem("eligibility-monotone", "setting nh or a disable mode never raises eligibility for "
            "any user", eligibility_monotone),
    Theorem("except-advised-as-madvise", "EXCEPT_ADVISED under sysfs always = no prctl under "
            "madvise, for fault and khugepaged", except_advised_as_madvise),
    Theorem("collapse-ignores-sysfs", "MADV_COLLAPSE's result does not depend on the sysfs "
            "mode", collapse_ignores_sysfs),
    Theorem("disable-inherited", "fork and execve keep PR_GET; in def-flags the new image's "
            "VMAs have nh", disable_inherited),
)}


def run_one(theorem: Theorem, era: Era, protocol: str | None) -> tuple[Verdict, float]:
    t0 = time.perf_counter()
    try:
        v = theorem.check(era, protocol) if protocol else theorem.check(era)
    except Vacuous as e:
        v = Verdict("unknown", "induction", vacuity=[str(e)], note="vacuous")
    return v, time.perf_counter() - t0


__all__ = ["THEOREMS", "Theorem", "Verdict", "run_one", "PROTOCOLS", "cells", "rules", "Z3",
           "Syscall"]
